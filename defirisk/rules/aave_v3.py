"""Aave V3 (and Spark) liquidationCall, vectorised over accounts.

HF = sum_j C_j p_j LT_j / sum_j D_j p_j; liquidatable when HF < 1 with collateral left.
Liquidator's choice (deterministic, the validator follows it): debt reserve = largest debt USD value,
collateral reserve = largest collateral USD value among reserves with LT > 0; ties go to the
alphabetically first symbol. Close factor by `params.version`:
  v3.0-3.2 (default): max repay = reserve debt * (50% if HF > 0.95 else 100%).
  v3.3+: whole reserve debt, but 50% of the account's TOTAL debt value when reserve collateral and
  reserve debt are each >= $2,000 and HF > 0.95; a call may not leave < $1,000 of debt or collateral
  in the reserves unless it clears one of them: the liquidator then repays the largest amount that
  leaves $1,000 of both (see docs/model.md).
Seized = repay * P_debt / P_coll * LB, capped by the balance (then repay = balance * P_coll / P_debt / LB).
The protocol fee (share of the bonus) goes to the treasury and is NOT sold.
When an account's collateral is gone its remaining debt is bad debt (v3.3+: burned as deficit; v3.0:
left unbacked on chain) and is written off the book so it is counted once.
E-mode: an account's `emode` category replaces LT/LB of the collateral assets listed in the category.
Version details (sources cited in docs/model.md):
  HF: v3.0-3.4 truncate the average LT to whole bps; v3.5+ use the exact weighted sum.
  Dust rule (v3.3+): the collateral left is balance - seized, the protocol fee included.
  Bad debt (v3.3+): "no collateral left" counts only collateral with LT > 0.
  E-mode (v3.0-3.5): an asset whose reserve (non-e-mode) LT is 0 stays at LT 0 inside an e-mode: no HF
  weight, never seized; v3.6+ (e-mode decoupled from the reserve configuration) gives it the category LT.
"""
from __future__ import annotations

import re

import numpy as np

from defirisk.errors import InputError
from defirisk.model import MarketParams
from defirisk.rules.base import BookState, Events, Rule, Step

CLOSE_FACTOR_HF = 0.95
MIN_BASE_MAX_CLOSE_FACTOR_USD = 2000.0
MIN_LEFTOVER_USD = 1000.0


def _asset_sum(xt: np.ndarray) -> np.ndarray:
    """Per-account sum over assets of an asset-major (k, n) array, in exactly the order numpy's
    `x.sum(axis=1)` adds a row of the account-major (n, k) array (its pairwise sum: plain left to right
    below 8 terms, eight interleaved partial sums up to 128), so both layouts give the same bits.
    Summing k contiguous account vectors is several times faster than k-term reductions per row."""
    k = xt.shape[0]
    if k == 0:
        return np.zeros(xt.shape[1])
    if k < 8:
        return xt.sum(axis=0)  # below 8 terms numpy adds left to right in either layout
    if k > 128:
        return np.ascontiguousarray(xt.T).sum(axis=1)
    r = [xt[j].copy() for j in range(8)]
    i = 8
    while i < k - (k % 8):
        for j in range(8):
            r[j] += xt[i + j]
        i += 8
    out = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for i in range(i, k):
        out += xt[i]
    return out


def _asset_argmax(xt: np.ndarray) -> np.ndarray:
    """`np.argmax(x, axis=1)` of the (n, k) array from its (k, n) transpose (first maximum wins)."""
    return np.argmax(xt, axis=0)


# Aave V3 versions whose liquidation behaviour is modelled (aave/aave-v3-core for 3.0, aave-dao/aave-v3-origin
# for 3.1+). A patch suffix ("3.0.2", "3.3.0") is accepted and ignored: no patch changes the rules modelled.
KNOWN_VERSIONS = ("3.0", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7")
_VERSION_RE = re.compile(r"3\.(\d)(?:\.\d+)?")


def _version_tuple(raw, where: str) -> tuple[int, int]:
    """(3, minor) of an aave-v3 market's `params.version`; InputError unless it is a known version."""
    m = _VERSION_RE.fullmatch(raw) if isinstance(raw, str) else None
    if m is None or f"3.{m.group(1)}" not in KNOWN_VERSIONS:
        raise InputError(f"{where}, params.version: {raw!r} is not a known Aave V3 version; allowed: "
                         f"{', '.join(KNOWN_VERSIONS)} (a patch suffix such as 3.3.0 is accepted)")
    return (3, int(m.group(1)))


class AaveV3(Rule):
    protocol = "aave-v3"
    independent = True

    def __init__(self, market: MarketParams, symbols: tuple[str, ...], prices0=None):
        super().__init__(market, symbols, prices0)
        self.version = _version_tuple(market.params.get("version", "3.0"), self.where())
        # v3.5+ computes HF from the exact LT-weighted sum; earlier versions truncate the average LT.
        self.truncate_lt = self.version < (3, 5)
        # v3.0-3.5 apply an e-mode's LT only to assets whose reserve LT is not 0 (v3.6 decoupled them).
        self.emode_needs_base_lt = self.version < (3, 6)
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
            if self.emode_needs_base_lt:
                # v3.0-3.5 (GenericLogic.calculateUserAccountData, ValidationLogic.validateLiquidationCall)
                # test the reserve's own LT for != 0 before any e-mode override: such an asset keeps LT 0.
                mask = mask & (self.lt > 0)
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
    def _hf_weights(coll, debt, prices, lt, truncate=True):
        """Weighted collateral and debt as Aave computes HF (GenericLogic.calculateUserAccountData),
        over collateral with LT > 0. v3.0-3.4 (`truncate`): the average LT is an integer division in
        bps, truncated to whole bps before it multiplies total collateral, which can differ from the
        exact weighting by up to 1 bp of LT, enough to flip an account sitting at HF = 1. v3.5+: HF is
        the exact LT-weighted sum over debt (no average is formed)."""
        return AaveV3._hf_weights_t(coll.T, debt.T, prices, lt.T, truncate)

    @staticmethod
    def _hf_weights_t(ct, dt, prices, ltt, truncate=True):
        """`_hf_weights` on asset-major (k, n) arrays (same bits)."""
        pc = prices[:, None]
        cval = ct * pc * (ltt > 0)
        exact = _asset_sum(cval * ltt)
        if not truncate:
            return exact, _asset_sum(dt * pc)
        total = _asset_sum(cval)
        with np.errstate(divide="ignore", invalid="ignore"):
            # The epsilon absorbs float error in a weighted mean of integer bps (never a whole bp).
            avg_bps = np.floor(np.where(total > 0, exact * 1e4 / np.where(total > 0, total, 1.0), 0.0) + 1e-7)
        return total * avg_bps / 1e4, _asset_sum(dt * pc)

    def health(self, state: BookState, prices):
        wc, wd = self._hf_weights(state.coll, state.debt, prices, state.extra["lt"], self.truncate_lt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(wd > 0, wc / np.where(wd > 0, wd, 1.0), np.inf)

    def liquidatable(self, state, prices):
        lt = state.extra["lt"]
        wc, wd = self._hf_weights(state.coll, state.debt, prices, lt, self.truncate_lt)
        usable = ((state.coll > 0) & (lt > 0)).any(axis=1)
        return (wd > 0) & (wc < wd) & usable

    def liquidate(self, state: BookState, oracle, market, shared) -> Step:
        mask = self.liquidatable(state, oracle)
        if not mask.any():
            return Step(state, Events.empty())
        rows = np.flatnonzero(mask)
        ct, dt = state.coll[rows].T.copy(), state.debt[rows].T.copy()
        ltt, lbt = state.extra["lt"][rows].T.copy(), state.extra["lb"][rows].T.copy()
        ct2, dt2, ev = self._call(ct, dt, ltt, lbt, oracle, self._hf_weights_t(ct, dt, oracle, ltt, self.truncate_lt)[0])
        coll, debt = state.coll.copy(), state.debt.copy()
        coll[rows], debt[rows] = ct2.T, dt2.T
        return Step(state.evolve(coll=coll, debt=debt), ev.take(rows))

    def settle(self, state: BookState, prices, max_calls: int, market=None) -> Events | None:
        """Calls at fixed prices until none is liquidatable, as repeated `liquidate` would do (same
        bits), but each call only looks at the rows the previous call liquidated (the others cannot
        change), on asset-major copies of the book made once per book state. Aave's call uses its
        oracle only, so `market` is not needed."""
        ct, dt, ltt, lbt = self._transposed(state)
        wc, wd = self._hf_weights_t(ct, dt, prices, ltt, self.truncate_lt)
        usable = ((ct > 0) & (ltt > 0)).any(axis=0)
        rows = np.flatnonzero((wd > 0) & (wc < wd) & usable)
        if len(rows) == 0:
            return Events.empty()
        ct, dt, ltt, lbt, wc = ct[:, rows], dt[:, rows], ltt[:, rows], lbt[:, rows], wc[rows]
        evs = []
        for _ in range(max_calls):
            ct, dt, ev = self._call(ct, dt, ltt, lbt, prices, wc)
            if not len(ev):
                return Events.concat(evs)
            evs.append(ev.take(rows))
            wc, wd = self._hf_weights_t(ct, dt, prices, ltt, self.truncate_lt)
            keep = (wd > 0) & (wc < wd) & ((ct > 0) & (ltt > 0)).any(axis=0)
            if not keep.any():
                return Events.concat(evs)
            if not keep.all():
                rows, wc = rows[keep], wc[keep]
                ct, dt, ltt, lbt = ct[:, keep], dt[:, keep], ltt[:, keep], lbt[:, keep]
        return None

    def _transposed(self, state: BookState):
        """Asset-major copies of a book state, cached for the last state seen (the solver settles
        the same initial book at every iteration)."""
        cache = getattr(self, "_t_cache", None)
        if cache is None or cache[0] is not state:
            cache = (state, np.ascontiguousarray(state.coll.T), np.ascontiguousarray(state.debt.T),
                     np.ascontiguousarray(state.extra["lt"].T), np.ascontiguousarray(state.extra["lb"].T))
            self._t_cache = cache
        return cache[1:]

    def _call(self, ct, dt, ltt, lbt, oracle, wc):
        """One liquidationCall on every given account (all liquidatable), on asset-major (k, m)
        arrays that the caller owns (`ct`, `dt` are updated IN PLACE); `wc` = their `_hf_weights`
        collateral side. Returns the accounts' new (coll, debt), asset-major, and the events with
        local indices."""
        po = oracle[:, None]
        cval = ct * po * (ltt > 0)
        dval = dt * po
        total_debt = _asset_sum(dval)
        hf = wc / total_debt
        d = _asset_argmax(dval)
        c = _asset_argmax(cval)
        r = np.arange(ct.shape[1])
        pd_, pc = oracle[d], oracle[c]
        debt_res, coll_bal = dt[d, r], ct[c, r]
        LB = lbt[c, r]
        if self.version < (3, 3):
            max_repay = debt_res * np.where(hf > CLOSE_FACTOR_HF, 0.5, 1.0)
        else:
            capped = (coll_bal * pc >= MIN_BASE_MAX_CLOSE_FACTOR_USD) & (debt_res * pd_ >= MIN_BASE_MAX_CLOSE_FACTOR_USD) & (hf > CLOSE_FACTOR_HF)
            half_total = 0.5 * total_debt / pd_
            max_repay = np.where(capped & (debt_res * pd_ > 0.5 * total_debt), half_total, debt_res)
        repay, seized = self._seize(max_repay, pd_, pc, LB, coll_bal)
        fee_pct = self.fee[c]
        if self.version >= (3, 3):
            # Dust rule (LiquidationLogic.executeLiquidationCall, MUST_NOT_LEAVE_DUST): a call that clears
            # neither the reserve debt nor the collateral reserve must leave >= $1,000 of each. The
            # collateral left is balance - seized with the protocol fee INCLUDED in `seized` (the v3.3.0
            # release subtracts both the liquidator's part and the fee; only a pre-release review snapshot
            # subtracted the liquidator's part alone). Every smaller repay leaves more of both, so the
            # permitted partial repays are [0, r_max]: the liquidator (paid in proportion to the repay)
            # takes r_max = min(max repay, debt - $1,000, repay that leaves $1,000 of collateral). Only the
            # 50%-of-total cap can make a max call partial, and it needs both reserves >= $2,000, so
            # r_max > 0 there: the account is never skipped.
            partial = (repay < debt_res) & (seized < coll_bal)
            dusty = partial & (((debt_res - repay) * pd_ < MIN_LEFTOVER_USD) | ((coll_bal - seized) * pc < MIN_LEFTOVER_USD))
            if dusty.any():
                by_debt = debt_res - MIN_LEFTOVER_USD / pd_
                by_coll = (coll_bal - MIN_LEFTOVER_USD / pc) * pc / (pd_ * LB)
                r2 = np.maximum(np.minimum(np.minimum(max_repay, by_debt), by_coll), 0.0)
                r2, s2 = self._seize(r2, pd_, pc, LB, coll_bal)
                repay = np.where(dusty, r2, repay)
                seized = np.where(dusty, s2, seized)
        fee = (seized - seized / LB) * fee_pct
        sold = seized - fee
        ct2, dt2 = ct, dt  # updated in place: callers pass arrays they own (fresh row subsets)
        ct2[c, r] = np.maximum(coll_bal - seized, 0.0)
        dt2[d, r] = np.maximum(debt_res - repay, 0.0)
        ct2[c, r] = np.where(seized >= coll_bal, 0.0, ct2[c, r])  # exact zero when the reserve is cleared
        if self.version >= (3, 3):
            # hasNoCollateralLeft (LiquidationLogic): the account's total collateral as GenericLogic counts
            # it (LT > 0 only) was all seized; collateral with LT 0 left behind does not stop the deficit.
            no_coll = ~((ct2 > 0) & (ltt > 0)).any(axis=0)
        else:
            no_coll = _asset_sum(ct2) <= 0
        bad = np.where(no_coll, _asset_sum(dt2 * po), 0.0)
        dt2[:, no_coll] = 0.0
        did = seized > 0
        ev = Events(r[did], c[did], seized[did], sold[did], d[did], repay[did], (seized * pc)[did],
                    (repay * pd_)[did], bad[did])
        return ct2, dt2, ev

    @staticmethod
    def _seize(repay, pd_, pc, LB, coll_bal):
        seized = repay * pd_ / pc * LB
        over = seized > coll_bal
        seized = np.where(over, coll_bal, seized)
        repay = np.where(over, coll_bal * pc / pd_ / LB, repay)
        return repay, seized
