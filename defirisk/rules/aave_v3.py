"""Aave V3 (and Spark) liquidationCall, vectorised over accounts.

HF = sum_j C_j p_j LT_j / sum_j D_j p_j; liquidatable when HF < 1 with collateral left.
Liquidator's choice (deterministic, the validator follows it): debt reserve = largest debt USD value,
collateral reserve = largest collateral USD value among reserves with LT > 0; ties go to the
alphabetically first symbol. Close factor by `params.version`:
  v3.0-3.2 (default): max repay = reserve debt * (50% if HF > 0.95 else 100%).
  v3.3+: whole reserve debt, but 50% of the account's TOTAL debt value when reserve collateral and
  reserve debt are each >= $2,000 and HF > 0.95; a call may not leave < $1,000 of debt or collateral
  in the reserves unless it clears one of them (then the liquidator repays less: see docs/model.md).
Seized = repay * P_debt / P_coll * LB, capped by the balance (then repay = balance * P_coll / P_debt / LB).
The protocol fee (share of the bonus) goes to the treasury and is NOT sold.
When an account's collateral is gone its remaining debt is bad debt (v3.3+: burned as deficit; v3.0:
left unbacked on chain) and is written off the book so it is counted once.
E-mode: an account's `emode` category replaces LT/LB of the collateral assets listed in the category.
"""
from __future__ import annotations

import numpy as np

from defirisk.errors import InputError
from defirisk.model import MarketParams
from defirisk.rules.base import BookState, Events, Rule, Step

CLOSE_FACTOR_HF = 0.95
MIN_BASE_MAX_CLOSE_FACTOR_USD = 2000.0
MIN_LEFTOVER_USD = 1000.0


def _version_tuple(raw) -> tuple[int, int]:
    s = str(raw).lstrip("v")
    try:
        parts = [int(x) for x in s.split(".")[:2]]
    except ValueError:
        raise InputError(f"aave-v3 params.version: not a version like '3.0' or '3.3': {raw!r}") from None
    return (parts[0], parts[1] if len(parts) > 1 else 0)


class AaveV3(Rule):
    protocol = "aave-v3"
    independent = True

    def __init__(self, market: MarketParams, symbols: tuple[str, ...]):
        super().__init__(market, symbols)
        self.version = _version_tuple(market.params.get("version", "3.0"))
        k = len(symbols)
        self.lt = np.zeros(k)
        self.lb = np.ones(k)
        self.fee = np.zeros(k)
        self.known = np.zeros(k, dtype=bool)
        for sym in market.assets:
            j = self.index[sym]
            self.known[j] = True
            self.lt[j] = self.asset_param(sym, "liquidation_threshold", lo=0.0, hi=1.0)
            self.lb[j] = self.asset_param(sym, "liquidation_bonus", lo=1.0, hi=2.0, default=1.0)
            self.fee[j] = self.asset_param(sym, "liquidation_protocol_fee", lo=0.0, hi=1.0, default=0.0)
        # e-mode categories: id -> (lt, lb, asset mask)
        self.emode: dict[int, tuple[float, float, np.ndarray]] = {}
        for cid, spec in (market.params.get("emode_categories") or {}).items():
            where = f"{self.where()}, params.emode_categories.{cid}"
            try:
                lt, lb = float(spec["liquidation_threshold"]), float(spec["liquidation_bonus"])
                members = list(spec.get("assets", ()))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{where}: needs liquidation_threshold, liquidation_bonus, assets ({exc})") from None
            if not (0 <= lt <= 1 and 1 <= lb <= 2):
                raise InputError(f"{where}: liquidation_threshold must be in [0,1] and liquidation_bonus in [1,2]")
            mask = np.zeros(k, dtype=bool)
            for s in members:
                if s not in self.index:
                    raise InputError(f"{where}: unknown asset {s!r}")
                mask[self.index[s]] = True
            self.emode[int(cid)] = (lt, lb, mask)

    def check_book(self, coll, debt, accounts):
        used = (coll > 0).any(axis=0) | (debt > 0).any(axis=0)
        bad = used & ~self.known
        if bad.any():
            raise InputError(f"{self.where()}: asset {self.symbols[int(np.flatnonzero(bad)[0])]} has positions but no entry in markets.json")

    def init_extra(self, emode: np.ndarray) -> dict:
        lt, lb = self.account_params(emode)
        return {"lt": lt, "lb": lb}

    def account_params(self, emode_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-account (n, k) LT and LB matrices with e-mode overrides."""
        n = len(emode_ids)
        lt = np.broadcast_to(self.lt, (n, len(self.symbols))).copy()
        lb = np.broadcast_to(self.lb, (n, len(self.symbols))).copy()
        for cid in np.unique(emode_ids):
            if cid == 0:
                continue
            if int(cid) not in self.emode:
                raise InputError(f"{self.where()}: positions use e-mode category {int(cid)} not in params.emode_categories")
            clt, clb, mask = self.emode[int(cid)]
            rows = emode_ids == cid
            lt[np.ix_(rows, mask)] = clt
            lb[np.ix_(rows, mask)] = clb
        return lt, lb

    def weights(self, state: BookState, prices):
        """Exact LT-weighted collateral and debt (USD). Linear in each price, which the static
        liquidation-levels view relies on; the protocol's own decisions use `_hf_weights`."""
        lt = state.extra["lt"]
        return (state.coll * prices * lt).sum(axis=1), (state.debt * prices).sum(axis=1)

    @staticmethod
    def _hf_weights(coll, debt, prices, lt):
        """Weighted collateral as Aave computes it (GenericLogic, every v3 version): the average LT
        over LT>0 collateral is an integer division in bps, so it is truncated to whole bps before
        it multiplies total collateral. Accounts with several collateral assets can differ from the
        exact weighting by up to 1 bp of LT, enough to flip an account sitting at HF = 1."""
        cval = coll * prices * (lt > 0)
        total = cval.sum(axis=1)
        exact = (cval * lt).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            # The epsilon absorbs float error in a weighted mean of integer bps (never a whole bp).
            avg_bps = np.floor(np.where(total > 0, exact * 1e4 / np.where(total > 0, total, 1.0), 0.0) + 1e-7)
        return total * avg_bps / 1e4, (debt * prices).sum(axis=1)

    def health(self, state: BookState, prices):
        wc, wd = self._hf_weights(state.coll, state.debt, prices, state.extra["lt"])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(wd > 0, wc / np.where(wd > 0, wd, 1.0), np.inf)

    def liquidatable(self, state, prices):
        lt = state.extra["lt"]
        wc, wd = self._hf_weights(state.coll, state.debt, prices, lt)
        usable = ((state.coll > 0) & (lt > 0)).any(axis=1)
        return (wd > 0) & (wc < wd) & usable

    def liquidate(self, state: BookState, oracle, market, shared) -> Step:
        mask = self.liquidatable(state, oracle)
        if not mask.any():
            return Step(state, Events.empty())
        rows = np.flatnonzero(mask)
        C, D = state.coll[rows], state.debt[rows]
        lt, lb = state.extra["lt"][rows], state.extra["lb"][rows]
        C2, D2, ev = self._call(C, D, lt, lb, oracle, self._hf_weights(C, D, oracle, lt)[0])
        coll, debt = state.coll.copy(), state.debt.copy()
        coll[rows], debt[rows] = C2, D2
        return Step(state.evolve(coll=coll, debt=debt), ev.take(rows))

    def settle(self, state: BookState, prices, max_calls: int) -> Events | None:
        """Calls at fixed prices until none is liquidatable, as repeated `liquidate` would do, but each
        call only looks at the rows the previous call liquidated (the others cannot change)."""
        lt_all, lb_all = state.extra["lt"], state.extra["lb"]
        wc, wd = self._hf_weights(state.coll, state.debt, prices, lt_all)
        usable = ((state.coll > 0) & (lt_all > 0)).any(axis=1)
        rows = np.flatnonzero((wd > 0) & (wc < wd) & usable)
        if len(rows) == 0:
            return Events.empty()
        C, D, lt, lb = state.coll[rows], state.debt[rows], lt_all[rows], lb_all[rows]
        wc = wc[rows]
        evs = []
        for _ in range(max_calls):
            C, D, ev = self._call(C, D, lt, lb, prices, wc)
            if not len(ev):
                return Events.concat(evs)
            evs.append(ev.take(rows))
            wc, wd = self._hf_weights(C, D, prices, lt)
            keep = (wd > 0) & (wc < wd) & ((C > 0) & (lt > 0)).any(axis=1)
            if not keep.any():
                return Events.concat(evs)
            if not keep.all():
                rows, C, D, lt, lb, wc = rows[keep], C[keep], D[keep], lt[keep], lb[keep], wc[keep]
        return None

    def _call(self, C, D, lt, lb, oracle, wc):
        """One liquidationCall on every given row (all liquidatable; `wc` = their `_hf_weights`
        collateral side). Returns the rows' new (coll, debt) and the events with row-local indices."""
        cval = C * oracle * (lt > 0)
        dval = D * oracle
        total_debt = dval.sum(axis=1)
        hf = wc / total_debt
        d = np.argmax(dval, axis=1)
        c = np.argmax(cval, axis=1)
        r = np.arange(len(C))
        pd_, pc = oracle[d], oracle[c]
        debt_res, coll_bal = D[r, d], C[r, c]
        LB = lb[r, c]
        if self.version < (3, 3):
            max_repay = debt_res * np.where(hf > CLOSE_FACTOR_HF, 0.5, 1.0)
        else:
            capped = (coll_bal * pc >= MIN_BASE_MAX_CLOSE_FACTOR_USD) & (debt_res * pd_ >= MIN_BASE_MAX_CLOSE_FACTOR_USD) & (hf > CLOSE_FACTOR_HF)
            half_total = 0.5 * total_debt / pd_
            max_repay = np.where(capped & (debt_res * pd_ > 0.5 * total_debt), half_total, debt_res)
        repay, seized = self._seize(max_repay, pd_, pc, LB, coll_bal)
        if self.version >= (3, 3):
            # Dust rule: unless the call clears the debt or the collateral reserve, at least $1,000 of
            # each must remain; the liquidator then repays less (just enough debt left), else skips.
            partial = (repay < debt_res) & (seized < coll_bal)
            dusty = partial & (((debt_res - repay) * pd_ < MIN_LEFTOVER_USD) | ((coll_bal - seized) * pc < MIN_LEFTOVER_USD))
            if dusty.any():
                smaller = np.maximum(debt_res - MIN_LEFTOVER_USD / pd_, 0.0)
                r2, s2 = self._seize(np.minimum(max_repay, smaller), pd_, pc, LB, coll_bal)
                ok = ((debt_res - r2) * pd_ >= MIN_LEFTOVER_USD) & ((coll_bal - s2) * pc >= MIN_LEFTOVER_USD) & (r2 > 0)
                repay = np.where(dusty, np.where(ok, r2, 0.0), repay)
                seized = np.where(dusty, np.where(ok, s2, 0.0), seized)
        fee = (seized - seized / LB) * self.fee[c]
        sold = seized - fee
        C2, D2 = C.copy(), D.copy()
        C2[r, c] = np.maximum(coll_bal - seized, 0.0)
        D2[r, d] = np.maximum(debt_res - repay, 0.0)
        C2[r, c] = np.where(seized >= coll_bal, 0.0, C2[r, c])  # exact zero when the reserve is cleared
        no_coll = C2.sum(axis=1) <= 0
        bad = np.where(no_coll, (D2 * oracle).sum(axis=1), 0.0)
        D2[no_coll] = 0.0
        did = seized > 0
        ev = Events(r[did], c[did], seized[did], sold[did], d[did], repay[did], (seized * pc)[did],
                    (repay * pd_)[did], bad[did])
        return C2, D2, ev

    @staticmethod
    def _seize(repay, pd_, pc, LB, coll_bal):
        seized = repay * pd_ / pc * LB
        over = seized > coll_bal
        seized = np.where(over, coll_bal, seized)
        repay = np.where(over, coll_bal * pc / pd_ / LB, repay)
        return repay, seized
