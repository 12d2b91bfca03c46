"""Equilibrium mode: the path-consistent limit of sequential mode as rounds become short.

Sequential mode liquidates, in one round, every position liquidatable at the round's prices and then
sells all the seized collateral at once: the sale can carry the price far past other positions'
trigger prices, and those are then liquidated deeper (a larger close factor, more collateral per
dollar). As rounds become short the sales are spread out, and in the limit every liquidation happens
at the price at which its position becomes liquidatable along the descent. This module computes that
limit directly, as an event-driven descent (docs/model.md, "Equilibrium mode"):

1. Settle at the current prices: every position liquidatable now gets its protocol's call, call after
   call (at the same prices) until none is; their sold collateral joins the pending sale Q.
2. If Q is empty the cascade has stopped. Otherwise let V(lambda) be the market after selling lambda Q
   (every asset along its own routed curve, the same fraction of each asset's pending amount) as a
   continuous order flow (`AssetCurve.flow_sell`, the limit of ever smaller swaps; a constant-product
   pool keeps its fee, so one swap would differ; see docs/model.md, "Continuous flow"). If no
   position is liquidatable at V(1), sell all of Q. Else bisect lambda down to the first point at which
   one is, until every moved price is bracketed within `band` (relative; `tol` when band = 0), sell up
   to the lower end of the bracket (where a position is liquidatable), and go to 1.

So every liquidation happens at most `band` below the price at which its position became liquidatable
(default 1%: ten times finer than what one 12-second block moves prices in the default cascades);
band = 0 is the exact descent, up to `tol`, and costs a step per trigger. The flow is path independent,
so the result does not depend on where the descent splits its sales: the band only decides where each
liquidation happens. The shock itself is one swap (`apply_shock`), as in sequential mode. With one
asset moving (a single collateral sold, debt in assets without a venue) the liquidatable set only
grows as the price falls and the path is a line; curve.py then computes the band = 0 descent for all
shocks at once (compiled_descent.py). With several assets the path bends where a liquidation adds a sale of
another asset; the descent follows it event by event. Tests: sequential mode split k ways
(`run_split_sequential`) converges to the exact descent as k grows, and band -> 0 does too. Where a position owes an asset
whose price moved, or holds several collaterals of which the liquidator takes the largest, the
liquidatable set is not monotone along the path: the result says so (`monotone=False` and the assets
concerned) and the descent is still the limit of short rounds, not a fixed point of a monotone map.

Oracle lags (Maker's OSM) do not enter: every protocol sees the market price at once. The end state is
where selling the pending collateral leaves no position liquidatable: prices are self-consistent by
construction (the end price is V of exactly the sales that happened on the way).
"""
from __future__ import annotations

import math

import numpy as np

from defirisk.errors import ConvergenceError
from defirisk.solver import economics
from defirisk.rules import Events
from defirisk.rules.base import BookState
from defirisk.solver.engine import (MAX_CALLS_PER_PRICE, Prepared, _event_rows, _finish, apply_shock,
                                    liquidation_step, oracle_assumptions)
from defirisk.solver.result import CascadeResult

DEFAULT_BAND = 0.01  # a liquidation happens at most 1% below the price at which its position became liquidatable
MAX_BISECT = 200  # bisection halvings of lambda (2^-200: any tol reachable in double precision)


def _merge_rows(full: BookState, rows: np.ndarray, sub: BookState) -> BookState:
    """`full` with its `rows` replaced by the subset state `sub` (per-account `extra` arrays too)."""
    n = len(full.coll)
    coll, debt = full.coll.copy(), full.debt.copy()
    coll[rows], debt[rows] = sub.coll, sub.debt
    extra = dict(full.extra)
    for k, v in full.extra.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n:
            merged = v.copy()
            merged[rows] = sub.extra[k]
            extra[k] = merged
        else:
            extra[k] = sub.extra.get(k, v)
    return BookState(coll, debt, extra)


def _liquidation_rows(prep: Prepared, calls: list) -> list:
    """The liquidation table's parts from (book index, events, step) calls: one frame per book, books
    in the order of their first call (then book order), calls in the order they happened."""
    parts = []
    for bi, b in enumerate(prep.books):
        mine = [(ev, step) for i, ev, step in calls if i == bi]
        if mine:
            rnd = np.concatenate([np.full(len(ev), step, dtype=np.int64) for ev, step in mine])
            parts.append((min(step for _, step in mine), bi,
                          _event_rows(b, Events.concat([ev for ev, _ in mine]), rnd, prep.symbols)))
    return [df for *_, df in sorted(parts, key=lambda t: (t[0], t[1]))]


class _Descent:
    """The mutable state of one descent: venues, market prices, books, pending sales, records."""

    def __init__(self, prep: Prepared, s: np.ndarray, policy, record: bool, band: float):
        self.prep, self.policy, self.record, self.band = prep, policy, record, band
        self.states, self.market, self.sale_rows = apply_shock(prep, s)
        self.shocked = self.market.copy()
        self.books = [b.state0 for b in prep.books]
        self.pending = np.zeros(len(prep.symbols))
        self.calls: list = []  # (book index, events, descent step) in call order
        self.usd = 0.0
        self.bad = 0.0
        self.step = 0
        self.non_monotone: set[int] = set()
        self.venue_assets = np.array(sorted(prep.curves), dtype=np.int64)
        # each book's oracle answers at the snapshot (the deviation thresholds' reference)
        self.a0 = [prep.book_oracle0(bi) for bi in range(len(prep.books))]

    def oracle(self, bi: int, prices: np.ndarray) -> np.ndarray:
        """What book bi's protocol sees at market prices `prices` (solver/oracles.py, BookOracle.descent)."""
        o = self.prep.books[bi].oracle
        return prices if o.identity else o.descent(prices, self.a0[bi])

    # -- 1. settle at the current prices ------------------------------------------------------------
    def settle_here(self) -> bool:
        """Calls at the current prices until no position is liquidatable. After the first pass over
        every book, an independent rule's book is only called again on the rows just liquidated (at
        fixed prices nothing else in it can change); other books are called whole."""
        prep = self.prep
        active: dict[int, np.ndarray | None] = {bi: None for bi in range(len(prep.books))}
        first, any_liq = True, False
        for _ in range(MAX_CALLS_PER_PRICE):
            shared: dict = {}
            nxt: dict[int, np.ndarray | None] = {}
            for bi, rows in active.items():
                rule = prep.books[bi].rule
                full = self.books[bi]
                st = full if rows is None else rule.subset(full, rows)
                step = liquidation_step(prep, bi, st, self.oracle(bi, self.market), self.market, shared, self.states,
                                        self.policy)
                ev: Events = step.events
                if not len(ev):
                    continue
                any_liq = True
                if rows is None:
                    self.books[bi] = step.state
                else:
                    self.books[bi] = _merge_rows(full, rows, step.state)
                    ev = ev.take(rows)
                self._record(bi, ev)
                nxt[bi] = np.unique(ev.account) if rule.independent else None
            if not nxt:
                return any_liq
            active = nxt
        raise ConvergenceError(f"equilibrium: positions still liquidatable after {MAX_CALLS_PER_PRICE} calls "
                               f"at one price (descent step {self.step})")

    def _record(self, bi: int, ev: Events) -> None:
        np.add.at(self.pending, ev.coll_asset, ev.sold)
        self.usd += float(ev.seized_usd.sum())
        self.bad += float(ev.bad_debt_usd.sum())
        if self.record:
            self.calls.append((bi, ev, self.step))

    def liquidation_rows(self) -> list:
        return _liquidation_rows(self.prep, self.calls)

    # -- 2. sell the pending collateral up to the next trigger ----------------------------------------
    def _after(self, lam: float) -> tuple[dict, np.ndarray]:
        """Venue states and market prices after selling lam x the pending sale as a continuous order
        flow (`flow_sell`: path independent, so where the descent splits its sales does not matter)."""
        rt = self.prep.router
        if rt is not None:  # cross venues: one routed round of lam x the pending sale (routing.py)
            new, prices, _ = rt.route(self.states, self.market, lam * self.pending)
            return new, prices
        states, prices = dict(self.states), self.market.copy()
        for j in self.venue_assets:
            q = self.pending[j]
            if q > 0:
                c = self.prep.curves[j]
                states[j], _ = c.flow_sell(self.states[j], lam * q)
                prices[j] = float(c.price(states[j]))
        return states, prices

    def _candidates(self, prices: np.ndarray) -> list:
        """Per book: (rule, the state to test on, rows or None for a subset state) of the positions
        liquidatable at `prices` but not now. A position liquidatable now was left by the liquidators
        (it does not pay, docs/model.md "Liquidator economics"): it is not a trigger ahead."""
        out = []
        for bi, b in enumerate(self.prep.books):
            st = self.books[bi]
            if not len(st.coll):
                continue
            liq = b.rule.liquidatable(st, self.oracle(bi, prices))
            if liq.any():
                liq &= ~b.rule.liquidatable(st, self.oracle(bi, self.market))
            if liq.any():
                rows = np.flatnonzero(liq)
                if b.rule.independent:
                    out.append((bi, b.rule, b.rule.subset(st, rows), None))
                else:
                    out.append((bi, b.rule, st, rows))
        return out

    def _any(self, cands: list, prices: np.ndarray) -> bool:
        for bi, rule, st, rows in cands:
            liq = rule.liquidatable(st, self.oracle(bi, prices))
            if (liq if rows is None else liq[rows]).any():
                return True
        return False

    def advance(self, tol: float) -> None:
        """Sell pending collateral (as a continuous flow, `_after`) to the next price at which a position
        becomes liquidatable, or all of it if none does on the way."""
        self.step += 1
        assets_no_venue = np.flatnonzero(self.pending > 0)
        sold_on_venues = self.prep.router.volatile if self.prep.router is not None else self.prep.curves
        assets_no_venue = [j for j in assets_no_venue if j not in sold_on_venues]
        for j in assets_no_venue:  # sold outside the modelled venues: no price effect (as sequential)
            self._sale_rows(j, -1, self.pending[j], self.market[j], self.market[j])
            self.pending[j] = 0.0
        if not (self.pending > 0).any():
            return
        full_states, full_prices = self._after(1.0)
        cands = self._candidates(full_prices)
        if not cands:
            self._commit(1.0, full_states, full_prices)
            return
        lo, hi = 0.0, 1.0
        p_lo, (st_hi, p_hi) = self.market, (full_states, full_prices)
        moved = self.pending > 0
        gap = max(tol, self.band)
        for _ in range(MAX_BISECT):
            if np.all(np.abs(p_lo[moved] - p_hi[moved]) <= gap * p_lo[moved]):
                break
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            st_mid, p_mid = self._after(mid)
            if self._any(cands, p_mid):
                hi, st_hi, p_hi = mid, st_mid, p_mid
            else:
                lo, p_lo = mid, p_mid
        self._commit(hi, st_hi, p_hi)

    def _commit(self, lam: float, states: dict, prices: np.ndarray) -> None:
        rt = self.prep.router
        if rt is not None and self.record:
            for j, w, amt, *how in rt.route(self.states, self.market, lam * self.pending)[2]:
                self._sale_rows(j, -2 if w is not None else 0, amt, float(self.market[j]), float(prices[j]),
                                via=self.prep.symbols[w] if w is not None else "", kind=how[0] if how else "liquidation")
        for j in (self.venue_assets if rt is None else ()):
            q = self.pending[j]
            if q <= 0:
                continue
            if self.record:
                _, parts = self.prep.curves[j].flow_sell(self.states[j], lam * q)
                for v, amt in enumerate(parts):
                    self._sale_rows(j, v, float(amt), float(self.market[j]), float(prices[j]))
        self.pending = np.where(self.pending > 0, self.pending * (1.0 - lam), 0.0)
        if lam >= 1.0:
            self.pending[:] = 0.0
        self.states, self.market = states, prices

    def _sale_rows(self, j, venue, amount, before, after, via: str = "", kind: str = "liquidation") -> None:
        if self.record:
            self.sale_rows.append({"round": self.step, "kind": kind, "asset": self.prep.symbols[j],
                                   "venue": int(venue), "amount": float(amount), "price_before": float(before),
                                   "price_after": float(after), "via": via})

    def run(self, max_rounds: int, tol: float) -> None:
        for _ in range(max_rounds):
            self.settle_here()
            if not (self.pending > 0).any():
                return
            self.advance(tol)
        raise ConvergenceError(f"equilibrium: the descent still had sales pending after max_rounds={max_rounds} steps")

    def non_monotone_assets(self) -> list[str]:
        """Assets in which the liquidatable set is not monotone along this descent: owed (as debt) by a
        position of a book and moved by the cascade, or moved while an account of a multi-collateral
        rule holds it beside another collateral that moved (the liquidator's largest-collateral choice)."""
        prep = self.prep
        moved = self.market != prep.p0
        out: set[int] = set()
        for b in prep.books:
            st = b.state0
            if not len(st.coll):
                continue
            borrowers = (st.debt > 0).any(axis=1) & (st.coll > 0).any(axis=1)
            out.update(np.flatnonzero((st.debt[borrowers] > 0).any(axis=0) & moved))
            if b.protocol == "aave-v3":  # the liquidator seizes the largest collateral: a choice that can flip
                held = st.coll[borrowers] > 0
                multi = held.sum(axis=1) > 1
                if multi.any():
                    out.update(np.flatnonzero(held[multi].any(axis=0) & moved))
        return [prep.symbols[j] for j in sorted(out)]


def run_descent(prep: Prepared, s: np.ndarray, max_rounds: int, tol: float, policy=None,
                band: float = DEFAULT_BAND) -> CascadeResult:
    d = _Descent(prep, s, policy, record=True, band=band)
    d.run(max_rounds, tol)
    nm = d.non_monotone_assets()
    res = _finish(prep, "equilibrium", s, d.shocked, d.market, d.step, d.step, d.liquidation_rows(), d.sale_rows, {
        "tol": tol, "band": band,
        "round_meaning": "step of the descent at which the call happened (0 = at the shocked prices)",
        "oracle_lags": "ignored: every protocol's oracle follows the market at once",
        **({"oracles": oracle_assumptions(prep),
            "oracle_deviation": "an answer stays at its snapshot value until its formula has moved past the "
                                "deviation threshold, then follows it; heartbeats are not modelled"}
           if oracle_assumptions(prep) else {}),
        "monotone": not nm, "non_monotone_assets": nm})
    return economics.finish(res, prep, d.books, [d.oracle(bi, d.market) for bi in range(len(prep.books))],
                            d.market, policy)


def descent_totals(prep: Prepared, s: np.ndarray, max_rounds: int, tol: float, *, outcome: bool = True,
                   policy=None, band: float = DEFAULT_BAND):
    """(shocked prices, end prices, steps, liquidated collateral USD, bad debt USD) of the descent
    without building result tables (the curve's inner loop); the sums equal run_descent's totals."""
    d = _Descent(prep, s, policy, record=False, band=band)
    d.run(max_rounds, tol)
    if not (math.isfinite(d.usd) and math.isfinite(d.bad) and np.isfinite(d.market).all()):
        raise ConvergenceError("equilibrium: non-finite outcome (NaN guard)")
    usd, bad = (d.usd, d.bad) if outcome else (math.nan, math.nan)
    return d.shocked, d.market, d.step, usd, bad


def run_split_sequential(prep: Prepared, s: np.ndarray, k: int, max_rounds: int = 1_000_000) -> CascadeResult:
    """Sequential mode with every round split k ways, the process whose limit (k -> infinity) equilibrium
    mode computes: in each sub-round every position liquidatable at the current prices gets one call
    (oracle = market: no lags), and every liquidation's sold collateral is sold in k equal slices over
    the k sub-rounds that follow, one routed sale (one swap per venue) per asset and sub-round. k = 1 is
    sequential mode without oracle lags. As k -> infinity the slices become the continuous order flow
    equilibrium mode sells with (`AssetCurve.flow_sell`: on a constant-product pool with a fee, k swaps
    of x/k tend to the flow, not to one swap of x). The convergence reference of the tests
    (docs/model.md)."""
    if not (isinstance(k, int) and k >= 1):
        raise ValueError("k must be a positive integer")
    states, market, sale_rows = apply_shock(prep, s)
    shocked = market.copy()
    books = [b.state0 for b in prep.books]
    slices: list[np.ndarray] = []  # per future sub-round: amounts per asset
    calls, r = [], 0
    for r in range(1, max_rounds + 1):
        shared: dict = {}
        for bi, b in enumerate(prep.books):
            o = b.oracle
            orc = market if o.identity else o.descent(market, prep.book_oracle0(bi))
            step = liquidation_step(prep, bi, books[bi], orc, market, shared, states)
            if len(step.events):
                books[bi] = step.state
                calls.append((bi, step.events, r))
                per_slice = np.zeros(len(prep.symbols))
                np.add.at(per_slice, step.events.coll_asset, step.events.sold)
                per_slice /= k
                while len(slices) < k:
                    slices.append(np.zeros(len(prep.symbols)))
                for i in range(k):
                    slices[i] = slices[i] + per_slice
        if not slices:
            break
        sold = slices.pop(0)
        for j in np.flatnonzero(sold > 0):
            if j in prep.curves:
                c = prep.curves[j]
                states[j], _ = c.sell(states[j], float(sold[j]))
                market[j] = float(c.price(states[j]))
    else:
        raise ConvergenceError(f"split sequential: still liquidating after {max_rounds} sub-rounds")
    return _finish(prep, f"sequential/{k}", s, shocked, market, r, r, _liquidation_rows(prep, calls), sale_rows,
                   {"split": k})
