"""The general cascade engine: shocks, sequential rounds, and the fixed-price iteration, over any mix of
protocols, assets and venues (docs/model.md has the equations). Equilibrium mode (the limit of
sequential mode as rounds become short) is in defirisk/solver/descent.py."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import pandas as pd

from defirisk.errors import ConvergenceError, InputError
from defirisk.markets.impact import AssetCurve
from defirisk.model import Snapshot
from defirisk.rules import Events
from defirisk.solver import economics
from defirisk.solver.books import Book, build_books
from defirisk.solver.oracles import OracleTrack
from defirisk.solver.routing import Router, build_router
from defirisk.solver.result import LIQUIDATION_COLUMNS, SALE_COLUMNS, CascadeResult, Totals

# sequential: rounds of one block; equilibrium: the path-consistent limit of sequential mode as rounds
# become short (descent.py); fixed-price: every position liquidated at the end prices (the earlier
# "equilibrium", kept as a comparison view and for the compiled curve).
MODES = ("sequential", "equilibrium", "fixed-price")
BLOCK_TIME_S = 12.0        # one sequential round = one block; oracle lags are counted in these rounds
MAX_CALLS_PER_PRICE = 200  # equilibrium: repeated liquidation calls on one account at a fixed price


@dataclass(frozen=True, eq=False)
class Prepared:
    """A snapshot compiled for solving (cacheable across shocks)."""

    snapshot: Snapshot
    symbols: tuple[str, ...]
    p0: np.ndarray
    curves: dict[int, AssetCurve]
    books: list[Book]
    lag_rounds: np.ndarray
    # cross venues (a quote that is itself volatile): every sale is routed (routing.py); None = every
    # venue is USD-quoted and `curves` alone is the market, as before
    router: Router | None = None

    @property
    def oracles(self) -> list:
        """Per book, how its protocol prices each asset from market prices (solver/oracles.py)."""
        return [b.oracle for b in self.books]

    def book_oracle0(self, bi: int) -> np.ndarray:
        """Book bi's oracle answers at the snapshot's market prices."""
        return self.books[bi].oracle.formula(self.p0)


def prepare(snapshot: Snapshot) -> Prepared:
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"expected a Snapshot, got {type(snapshot).__name__}")
    symbols = snapshot.symbols
    idx = {s: i for i, s in enumerate(symbols)}
    p0 = np.array([snapshot.assets[s].price_usd for s in symbols])
    curves, router = build_router(snapshot, symbols, p0)
    lag = np.array([math.ceil(snapshot.assets[s].oracle_lag_s / BLOCK_TIME_S - 1e-9) for s in symbols], dtype=np.int64)
    return Prepared(snapshot, symbols, p0, curves, build_books(snapshot), lag, router)


def resolve_shocks(prep: Prepared, shocks: Mapping[str, float], betas: Mapping[str, float] | None) -> np.ndarray:
    """Per-asset shock vector s (price -> p0 * (1 - s)). Betas move other assets by beta * s_driver,
    where the driver is the single explicitly shocked asset."""
    if not isinstance(shocks, Mapping) or not shocks:
        raise InputError("shocks: give at least one ASSET=fraction")
    idx = {s: i for i, s in enumerate(prep.symbols)}
    s = np.zeros(len(prep.symbols))
    for a, v in shocks.items():
        if a not in idx:
            raise InputError(f"shock on unknown asset {a!r} (assets: {', '.join(prep.symbols)})")
        v = float(v)
        if not math.isfinite(v) or not (0.0 <= v < 1.0):
            raise InputError(f"shock {a}={v}: must be a fraction in [0, 1)")
        s[idx[a]] = v
    if betas:
        if len(shocks) != 1:
            raise InputError("betas need exactly one shocked (driver) asset")
        (driver, sd), = shocks.items()
        for a, b in betas.items():
            if a not in idx:
                raise InputError(f"beta for unknown asset {a!r}")
            b = float(b)
            if not math.isfinite(b) or b < 0 or b * float(sd) >= 1.0:
                raise InputError(f"beta {a}={b}: must be >= 0 with beta * shock < 1")
            if a != driver:
                s[idx[a]] = max(s[idx[a]], b * float(sd))
    return s


def betas_from_correlation(corr: Mapping[str, Mapping[str, float]], vols: Mapping[str, float], driver: str) -> dict[str, float]:
    """Betas to `driver` from a correlation matrix and volatilities: beta_a = rho(a, driver) * vol_a / vol_driver."""
    if driver not in vols or vols[driver] <= 0:
        raise InputError(f"volatility of driver {driver!r} missing or not positive")
    return {a: float(corr[a][driver]) * float(vols[a]) / float(vols[driver]) for a in vols if a != driver}


def apply_shock(prep: Prepared, s: np.ndarray) -> tuple[dict[int, tuple], np.ndarray, list[dict]]:
    """Exogenous sale along each shocked volatile asset's own curve; non-volatile assets jump."""
    if prep.router is not None:
        return _apply_shock_routed(prep, s)
    states = {j: c.init_state() for j, c in prep.curves.items()}
    market = prep.p0.copy()
    rows = []
    for j in np.flatnonzero(s > 0):
        target = prep.p0[j] * (1.0 - s[j])
        if j in prep.curves:
            c = prep.curves[j]
            q = float(c.amount_to_price(states[j], target))
            if not math.isfinite(q):
                raise InputError(f"shock on {prep.symbols[j]}: price {target:g} is beyond what its venues can reach")
            before = float(c.price(states[j]))
            states[j], parts = c.sell(states[j], q)
            market[j] = float(c.price(states[j]))
            for v, amt in enumerate(parts):
                rows.append({"round": 0, "kind": "shock", "asset": prep.symbols[j], "venue": v, "amount": float(amt),
                             "price_before": before, "price_after": market[j]})
        else:
            market[j] = target
    return states, market, rows


def _apply_shock_routed(prep: Prepared, s: np.ndarray):
    """With cross venues a shock on A is an exogenous sale of A along A's routes until A's USD market
    price is p0 (1 - s): its proceeds in a volatile quote are sold on and move that quote's pools, and
    an asset priced only through a quote moves with it. Shocked assets are sold quotes first (WETH
    before wstETH); a later sale's proceeds can push an earlier asset below its own target."""
    rt = prep.router
    states = rt.init_state()
    market = prep.p0.copy()
    rows: list = []
    for j in np.flatnonzero((s > 0) & ~np.isin(np.arange(len(s)), list(rt.volatile))):
        market[j] = prep.p0[j] * (1.0 - s[j])      # no venue: the price jumps
    market = rt.prices(states, market)
    for j in rt.order:
        if s[j] <= 0:
            continue
        before = market.copy()
        states, market, _, legs = rt.reach(states, market, j, prep.p0[j] * (1.0 - s[j]))
        _leg_rows(prep, legs, before, market, 0, "shock", rows)
    return states, market, rows


def _leg_rows(prep: Prepared, legs, before, after, rnd, kind, rows) -> None:
    sym = prep.symbols
    for j, w, amt, *how in legs:
        rows.append({"round": rnd, "kind": how[0] if how else kind, "asset": sym[j], "venue": -2 if w is not None else 0,
                     "amount": amt,
                     "price_before": float(before[j]), "price_after": float(after[j]), "via": sym[w] if w is not None else ""})


def _event_rows(book: Book, ev: Events, rnd, symbols) -> pd.DataFrame:
    return pd.DataFrame({
        "round": rnd if np.ndim(rnd) else np.full(len(ev), rnd, dtype=np.int64),
        "protocol": book.protocol, "market": book.market,
        "account": book.accounts[ev.account] if len(ev) else np.array([], dtype=object),
        "collateral_asset": np.asarray(symbols, dtype=object)[ev.coll_asset] if len(ev) else np.array([], dtype=object),
        "collateral_seized": ev.seized, "collateral_seized_usd": ev.seized_usd, "collateral_sold": ev.sold,
        "debt_asset": np.asarray(symbols, dtype=object)[ev.debt_asset] if len(ev) else np.array([], dtype=object),
        "debt_repaid": ev.repaid, "debt_repaid_usd": ev.repaid_usd, "bad_debt_usd": ev.bad_debt_usd,
    }, columns=list(LIQUIDATION_COLUMNS))


def _finish(prep, mode, s, shocked, end, rounds, iterations, liq_parts, sale_rows, assumptions) -> CascadeResult:
    liq = pd.concat(liq_parts, ignore_index=True) if liq_parts else pd.DataFrame(columns=list(LIQUIDATION_COLUMNS))
    num = [c for c in LIQUIDATION_COLUMNS if c not in ("protocol", "market", "account", "collateral_asset", "debt_asset")]
    liq[num] = liq[num].astype(float)
    liq["round"] = liq["round"].astype(np.int64)
    for col in ("collateral_seized", "collateral_seized_usd", "debt_repaid", "bad_debt_usd"):
        if len(liq) and not np.isfinite(liq[col].to_numpy()).all():
            raise ConvergenceError(f"{mode}: non-finite {col} in the liquidation record (NaN guard)")
    sales = pd.DataFrame(sale_rows, columns=list(SALE_COLUMNS))
    via = sales["via"].astype(object)
    sales["via"] = via.where(via.notna(), "")
    by_protocol = {p: Totals.of(g) for p, g in liq.groupby("protocol", sort=True)} if len(liq) else {}
    sym = prep.symbols
    if not np.isfinite(end).all():
        raise ConvergenceError(f"{mode}: non-finite end price")
    return CascadeResult(
        mode=mode, initial_prices={a: float(prep.p0[i]) for i, a in enumerate(sym)},
        shocks={a: float(s[i]) for i, a in enumerate(sym) if s[i] > 0},
        shocked_prices={a: float(shocked[i]) for i, a in enumerate(sym)},
        end_prices={a: float(end[i]) for i, a in enumerate(sym)}, rounds=rounds, converged=True,
        iterations=iterations, totals=Totals.of(liq), by_protocol=by_protocol, liquidations=liq, sales=sales,
        assumptions=assumptions)


def _sell_round(prep, states, market, sold, rnd, kind, rows, base_states=None):
    """Sell per-asset amounts in alphabetical order (= column order), one routed sale per asset (with
    cross venues: one routed round over every path, routing.py)."""
    if prep.router is not None:
        rt = prep.router
        base = states if base_states is None else base_states
        for j in np.flatnonzero(sold > 0):
            if j not in rt.volatile:
                rows.append({"round": rnd, "kind": kind, "asset": prep.symbols[j], "venue": -1, "amount": float(sold[j]),
                             "price_before": float(market[j]), "price_after": float(market[j])})
        before = market.copy()
        new, m, legs = rt.route(base, market, np.where(np.isin(np.arange(len(sold)), list(rt.volatile)), sold, 0.0))
        states.clear()
        states.update(new)
        market[:] = m
        _leg_rows(prep, legs, before, market, rnd, kind, rows)
        return
    for j in range(len(prep.symbols)):
        if sold[j] <= 0:
            continue
        if j not in prep.curves:
            rows.append({"round": rnd, "kind": kind, "asset": prep.symbols[j], "venue": -1, "amount": float(sold[j]),
                         "price_before": float(market[j]), "price_after": float(market[j])})
            continue
        c = prep.curves[j]
        st = states[j] if base_states is None else base_states[j]
        before = float(c.price(st))
        states[j], parts = c.sell(st, float(sold[j]))
        market[j] = float(c.price(states[j]))
        for v, amt in enumerate(parts):
            rows.append({"round": rnd, "kind": kind, "asset": prep.symbols[j], "venue": v, "amount": float(amt),
                         "price_before": before, "price_after": market[j]})


def liquidation_step(prep: Prepared, bi: int, state, oracle: np.ndarray, market: np.ndarray, shared: dict,
                     venue_states: dict, policy=None):
    """One liquidation call per liquidatable account of book `bi` (its protocol's rule): the Step.
    `venue_states` (the venues as they are now) and `policy` (who liquidates) are for liquidator
    economics; policy None = every liquidatable position is liquidated.

    With a gating policy (economics.py, docs/model.md "Liquidator economics") each call is judged alone
    against `venue_states`, the venues as they are at the start of the round: a call is kept only when
    selling its collateral pays the debt repaid, gas and the minimum profit; `shared` carries the round's
    capital use across books."""
    step = prep.books[bi].rule.liquidate(state, oracle, market, shared)
    if policy is None or not len(step.events):
        return step
    if not isinstance(policy, economics.LiquidatorPolicy):
        policy = economics.resolve_policy(policy)
        if policy is None:
            return step
    if not policy.gates:
        return step
    return economics.gate(prep, bi, state, step, oracle, market, shared, venue_states, policy)


def recovery_halflives(prep: Prepared, recovery: Mapping[str, float] | None) -> np.ndarray:
    """Per asset, the recovery half-life in seconds (inf = none), checked: only assets with venues
    have a price impact to recover."""
    out = np.full(len(prep.symbols), np.inf)
    if not recovery:
        return out
    if not isinstance(recovery, Mapping):
        raise InputError("recovery: give {ASSET: half-life seconds}")
    for a, h in recovery.items():
        if a not in prep.symbols:
            raise InputError(f"recovery for unknown asset {a!r} (assets: {', '.join(prep.symbols)})")
        j = prep.symbols.index(a)
        if j not in prep.curves:
            raise InputError(f"recovery for {a}: {a} has no venue, so no price impact to recover")
        try:
            h = float(h)
        except (TypeError, ValueError):
            raise InputError(f"recovery {a}={h!r}: half-life must be a number of seconds") from None
        if not (math.isfinite(h) and h > 0):
            raise InputError(f"recovery {a}={h!r}: half-life must be a positive number of seconds")
        out[j] = h
    return out


class _Recovery:
    """Price impact decaying toward the shocked price between sequential rounds (arbitrage refilling the
    pools): after dt seconds an asset's market is p_hat + (m - p_hat) * 0.5 ** (dt / half-life). A venue
    is put in the state a smaller sale from its post-shock state would have left at that price (the
    buy-back as one trade; a constant-product pool's in-pool fees of the bought-back part are dropped)."""

    def __init__(self, prep: Prepared, halflives: np.ndarray, states0: dict, shocked: np.ndarray):
        self.prep, self.h, self.states0, self.p_hat = prep, halflives, dict(states0), shocked.copy()
        self.assets = [j for j in sorted(prep.curves) if math.isfinite(halflives[j])]

    def __bool__(self) -> bool:
        return bool(self.assets)

    def price_after(self, m: np.ndarray, rounds: float) -> np.ndarray:
        out = m.copy()
        for j in self.assets:
            out[j] = self.p_hat[j] + (m[j] - self.p_hat[j]) * 0.5 ** (rounds * BLOCK_TIME_S / self.h[j])
        return out

    def apply(self, states: dict, market: np.ndarray, rounds: int, rnd: int, rows: list) -> None:
        if rounds <= 0:
            return
        target = self.price_after(market, rounds)
        for j in self.assets:
            if target[j] == market[j]:
                continue
            c, st0 = self.prep.curves[j], self.states0[j]
            before_q = float(c.amount_to_price(st0, market[j]))
            q = float(c.amount_to_price(st0, target[j]))
            states[j], _ = c.sell(st0, q)
            new = float(c.price(states[j]))
            rows.append({"round": rnd, "kind": "recovery", "asset": self.prep.symbols[j], "venue": -1,
                         "amount": q - before_q, "price_before": float(market[j]), "price_after": new})
            market[j] = new
        if self.prep.router is not None:  # prices through cross venues follow their quotes
            market[:] = self.prep.router.prices(states, market)

    def impact_left(self, market: np.ndarray, rtol: float = 1e-6) -> bool:
        return any(abs(market[j] - self.p_hat[j]) > rtol * self.p_hat[j] for j in self.assets)


def run_sequential(prep: Prepared, s: np.ndarray, max_rounds: int, policy=None,
                   recovery: Mapping[str, float] | None = None) -> CascadeResult:
    states, market, sale_rows = apply_shock(prep, s)
    shocked = market.copy()
    k = len(prep.symbols)
    rec = _Recovery(prep, recovery_halflives(prep, recovery), states, shocked)
    # market price history at change points: time t (end of round t; t = 0 right after the shock); with
    # recovery the market between entries is the entry recovered over the time since
    hist_t, hist_p = [0], [market.copy()]

    def lagged_at(r: int) -> np.ndarray:
        """The market prices the oracles of round r read: each asset's as it was lag_rounds ago."""
        out = prep.p0.copy()
        for j in range(k):
            t = r - 1 - prep.lag_rounds[j]
            if t >= 0:
                i = int(np.searchsorted(hist_t, t, side="right")) - 1
                out[j] = hist_p[i][j] if not rec else rec.price_after(hist_p[i], t - hist_t[i])[j]
        return out

    # per book: its oracle's answers (formulas of the lagged market, deviation and heartbeat)
    tracks = [OracleTrack(b.oracle, prep.p0) for b in prep.books]
    book_states = [b.state0 for b in prep.books]
    liq_parts, rounds, r, executed, r_state = [], 0, 1, 0, 0
    while True:
        executed += 1
        if executed > max_rounds:
            raise ConvergenceError(f"sequential: still liquidating after max_rounds={max_rounds} rounds")
        if rec:  # the pools refill over the blocks since the venues were last touched (round r = block r)
            rec.apply(states, market, r - r_state, r, sale_rows)
            r_state = r
        lagged = lagged_at(r)
        orcs = [tr.update(lagged, r * BLOCK_TIME_S) for tr in tracks]
        shared: dict = {}
        sold = np.zeros(k)
        any_liq = False
        for bi, b in enumerate(prep.books):
            step = liquidation_step(prep, bi, book_states[bi], orcs[bi], market, shared, states, policy)
            if len(step.events):
                any_liq = True
                book_states[bi] = step.state
                np.add.at(sold, step.events.coll_asset, step.events.sold)
                liq_parts.append(_event_rows(b, step.events, r, prep.symbols))
        if any_liq:
            rounds += 1
            _sell_round(prep, states, market, sold, r, "liquidation", sale_rows)
            if not np.array_equal(market, hist_p[-1]):
                hist_t.append(r)
                hist_p.append(market.copy())
            r += 1
            continue
        if rec and rec.impact_left(market) and any(
                len(st.coll) and b.rule.liquidatable(st, o).any() for b, st, o in zip(prep.books, book_states, orcs)):
            # positions the liquidators left (their sale did not pay) may pay once the pools refill:
            # evaluate the next block
            r += 1
            continue
        # Nothing this round: jump to the next round in which an oracle answer changes -- a lagged
        # price catching up, or a heartbeat refreshing an answer its deviation threshold held -- if any.
        nxt = {t + 1 + int(prep.lag_rounds[j]) for t in hist_t for j in range(k) if t + 1 + prep.lag_rounds[j] > r}
        final = lagged_at(max(nxt)) if nxt else lagged
        for tr in tracks:
            due = tr.next_heartbeat(final)
            if math.isfinite(due):
                nxt.add(max(r + 1, math.ceil(due / BLOCK_TIME_S - 1e-9)))
        nxt_r = None
        for rr in sorted(nxt):
            lg = lagged_at(rr)
            if any(tr.peek(lg, rr * BLOCK_TIME_S)[0].tolist() != o.tolist() for tr, o in zip(tracks, orcs)):
                nxt_r = rr
                break
        if nxt_r is None:
            break
        r = nxt_r
    assumptions = {"block_time_s": BLOCK_TIME_S,
                   "lag_rounds": {a: int(prep.lag_rounds[i]) for i, a in enumerate(prep.symbols) if prep.lag_rounds[i]},
                   "recovery_halflife_s": {prep.symbols[j]: float(rec.h[j]) for j in rec.assets}}
    oracles = oracle_assumptions(prep)
    if oracles:
        assumptions["oracles"] = oracles
    res = _finish(prep, "sequential", s, shocked, market, rounds, executed, liq_parts, sale_rows, assumptions)
    # positions still liquidatable at the last round's oracle (every lag caught up) that nobody liquidated
    return economics.finish(res, prep, book_states, orcs, market, policy)


def oracle_assumptions(prep: Prepared) -> dict[str, dict[str, str]]:
    """{"protocol/market": {asset: how its oracle is made}} for the markets that say (markets.json)."""
    return {f"{b.protocol}/{b.market}": b.oracle.describe() for b in prep.books if b.oracle.specs}


def settle_at(prep: Prepared, prices: np.ndarray) -> tuple[np.ndarray, list[tuple[Book, Events]]]:
    """S(p): liquidate every position liquidatable at the fixed price vector p, by its protocol's own
    rule, call after call until none is liquidatable (or its collateral is gone)."""
    sold = np.zeros(len(prep.symbols))
    out = []
    for b in prep.books:
        ev = _settle_book(b, prices)
        if len(ev):
            np.add.at(sold, ev.coll_asset, ev.sold)
        out.append((b, ev))
    return sold, out


def _settle_book(b: Book, prices: np.ndarray) -> Events:
    if b.oracle.identity:
        ev = b.rule.settle(b.state0, prices, MAX_CALLS_PER_PRICE)
    else:  # the protocol sees its oracle formulas of the market prices (no deviation: fixed prices)
        ev = b.rule.settle(b.state0, b.oracle.formula(prices), MAX_CALLS_PER_PRICE, market=prices)
    if ev is None:
        raise ConvergenceError(f"equilibrium: {b.protocol}/{b.market} still liquidatable after {MAX_CALLS_PER_PRICE} calls at one price")
    return ev


@dataclass(frozen=True, eq=False)
class FixedPoint:
    """The monotone iteration's outcome before any tables are built."""

    states0: dict          # venue states right after the shock
    p_hat: np.ndarray      # shocked prices
    p: np.ndarray          # end prices (the greatest fixed point below p_hat, to tol)
    iterations: int
    first_seen: list       # per book: iteration at which each account was first liquidated (0 = never)
    sale_rows: list        # the shock's sale rows
    settled: tuple | None  # settle_at(p) when the last iteration already evaluated it at exactly p


def fixed_point(prep: Prepared, s: np.ndarray, max_rounds: int, tol: float) -> FixedPoint:
    """p_{k+1} = min(p_k, V(S(p_k))) from p_0 = p_hat until |p_{k+1} - p_k| <= tol p_k."""
    states0, p_hat, sale_rows = apply_shock(prep, s)
    p = p_hat.copy()
    first_seen = [np.zeros(len(b.accounts), dtype=np.int64) for b in prep.books]  # 0 = not yet liquidated
    it = 0
    while True:
        it += 1
        if it > max_rounds:
            raise ConvergenceError(f"equilibrium: no fixed point within max_rounds={max_rounds} iterations (tol={tol})")
        sold, evs = settle_at(prep, p)
        for bi, (b, ev) in enumerate(evs):
            if len(ev):
                f = first_seen[bi]
                f[ev.account[f[ev.account] == 0]] = it
        p_new = _prices_after(prep, states0, p_hat, sold)
        if np.isnan(p_new).any():
            raise ConvergenceError("equilibrium: NaN price")
        p_new = np.minimum(p, p_new)  # monotone from above: never step back up
        done = np.all(np.abs(p_new - p) <= tol * p)
        same = np.array_equal(p_new, p)
        p = p_new
        if done:
            # S is a function of p alone: when the last step did not move p, S(p) is already known
            return FixedPoint(states0, p_hat, p, it, first_seen, sale_rows, (sold, evs) if same else None)


def _prices_after(prep: Prepared, states0: dict, p_hat: np.ndarray, sold: np.ndarray) -> np.ndarray:
    """V(sold): market prices after selling `sold` from the post-shock venue states in one go."""
    if prep.router is not None:
        rt = prep.router
        x = np.where(np.isin(np.arange(len(sold)), list(rt.volatile)), sold, 0.0)
        return rt.route(states0, p_hat, x)[1] if (x > 0).any() else p_hat.copy()
    p_new = p_hat.copy()
    for j, c in prep.curves.items():
        if sold[j] > 0:
            st, _ = c.sell(states0[j], sold[j])
            p_new[j] = float(c.price(st))
    return p_new


def fixed_point_gap(prep: Prepared, fp: FixedPoint, sold: np.ndarray) -> dict[str, float]:
    """Assets whose end price is not a fixed point, p < V(S(p)) beyond the tolerance (the iteration
    stops there when S is not monotone): {asset: relative gap}. Empty when p = V(S(p))."""
    gaps = {}
    v = _prices_after(prep, fp.states0, fp.p_hat, sold)
    for j in (sorted(prep.router.volatile) if prep.router is not None else sorted(prep.curves)):
        if v[j] - fp.p[j] > 1e-9 * fp.p[j]:
            gaps[prep.symbols[j]] = float((v[j] - fp.p[j]) / fp.p[j])
    return gaps


def run_fixed_price(prep: Prepared, s: np.ndarray, max_rounds: int, tol: float) -> CascadeResult:
    fp = fixed_point(prep, s, max_rounds, tol)
    p, p_hat, it, states0, sale_rows = fp.p, fp.p_hat, fp.iterations, fp.states0, fp.sale_rows
    sold, evs = fp.settled or settle_at(prep, p)
    liq_parts = []
    for bi, (b, ev) in enumerate(evs):
        if len(ev):
            f = fp.first_seen[bi][ev.account]
            rnd = np.where(f > 0, f, it)
            liq_parts.append(_event_rows(b, ev, rnd, prep.symbols))
    end = p_hat.copy()
    states = dict(states0)
    _sell_round(prep, states, end, sold, 1, "liquidation", sale_rows, base_states=states0)
    gaps = fixed_point_gap(prep, fp, sold)
    return _finish(prep, "fixed-price", s, p_hat, p, it, it, liq_parts, sale_rows,
                   {"tol": tol, "round_meaning": "iteration of the monotone sequence at which the account was first liquidated",
                    "fixed_point": not gaps, "fixed_point_gap": gaps})


def equilibrium_totals(prep: Prepared, s: np.ndarray, max_rounds: int, tol: float, *, outcome: bool = True,
                       policy=None):
    """(shocked prices, end prices, steps, liquidated collateral USD, bad debt USD) of equilibrium mode
    (the descent, descent.py) without building the result tables: the curve's inner loop."""
    from defirisk.solver.descent import descent_totals

    return descent_totals(prep, s, max_rounds, tol, outcome=outcome, policy=policy)


def fixed_price_totals(prep: Prepared, s: np.ndarray, max_rounds: int, tol: float, *, outcome: bool = True):
    """(shocked prices, end prices, iterations, liquidated collateral USD, bad debt USD) of fixed-price
    mode without building the result tables (the curve's inner loop). The USD figures are the
    sums `solve(...).totals` reports (same events, same order); with outcome=False they are NaN."""
    fp = fixed_point(prep, s, max_rounds, tol)
    usd = bad = math.nan
    if outcome:
        _, evs = fp.settled or settle_at(prep, fp.p)
        evs = [ev for _, ev in evs if len(ev)]
        usd = float(np.concatenate([ev.seized_usd for ev in evs]).sum()) if evs else 0.0
        bad = float(np.concatenate([ev.bad_debt_usd for ev in evs]).sum()) if evs else 0.0
        if not (math.isfinite(usd) and math.isfinite(bad)):
            raise ConvergenceError("equilibrium: non-finite liquidation totals (NaN guard)")
    if not np.isfinite(fp.p).all():
        raise ConvergenceError("equilibrium: non-finite end price")
    return fp.p_hat, fp.p, fp.iterations, usd, bad


def solve(snapshot: Snapshot, shocks: Mapping[str, float], mode: str = "sequential", *, betas: Mapping[str, float] | None = None,
          max_rounds: int = 10_000, tol: float = 1e-12, prepared: Prepared | None = None,
          liquidators="all", band: float | None = None, recovery: Mapping[str, float] | None = None) -> CascadeResult:
    """Cascade after `shocks` ({asset: fraction}); see docs/model.md. Raises InputError on bad input and
    ConvergenceError when `max_rounds` is exhausted (never returns an unconverged result).

    liquidators: 'all' (default here: every liquidatable position is liquidated, the model without
    liquidator economics), 'profitable' (a call happens only when it pays the liquidator; the default of
    the `cascade` and `report` commands) or an economics.LiquidatorPolicy (gas, minimum profit, capital).
    Fixed-price mode liquidates every position at the end prices whatever this says (no venue state
    per call): its result records liquidators 'all'.

    band (equilibrium mode): each liquidation happens at most this fraction below the price at which
    its position became liquidatable (default descent.DEFAULT_BAND; 0 = the exact descent, slower).

    recovery ({asset: half-life seconds}, sequential mode): between rounds each asset's price impact
    decays toward its shocked price as arbitrage refills the pools. The other modes have no time: they
    record it as not applied."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not (isinstance(max_rounds, int) and max_rounds > 0):
        raise InputError("max_rounds must be a positive integer")
    if not (math.isfinite(tol) and 0 < tol < 1):
        raise InputError("tol must be in (0, 1)")
    policy = economics.resolve_policy(liquidators)
    prep = prepared or prepare(snapshot)
    s = resolve_shocks(prep, shocks, betas)
    halflives = recovery_halflives(prep, recovery)
    if mode == "sequential":
        return run_sequential(prep, s, max_rounds, policy, recovery)
    if np.isfinite(halflives).any():
        res = solve(snapshot, shocks, mode, betas=betas, max_rounds=max_rounds, tol=tol, prepared=prep,
                    liquidators=liquidators, band=band)
        return replace(res, assumptions={**res.assumptions, "recovery_halflife_s": "not applied: "
                                         f"{mode} mode has no time between liquidations (sequential mode only)"})
    if mode == "equilibrium":
        from defirisk.solver.descent import run_descent

        if band is None:
            from defirisk.solver.descent import DEFAULT_BAND as band
        if not (math.isfinite(band) and 0 <= band < 0.5):
            raise InputError(f"band must be a fraction in [0, 0.5), got {band!r}")
        return run_descent(prep, s, max_rounds, tol, policy=policy, band=float(band))
    res = run_fixed_price(prep, s, max_rounds, tol)
    return replace(res, assumptions={**res.assumptions, "liquidators": economics.ALL.describe(prep)})
