"""Sales routed like an aggregator, through every pool of the book (docs/model.md, "Routes").

A venue whose `quote` is another volatile asset (wstETH/WETH, WBTC/WETH) is a *cross* venue: selling the
asset it is listed under into it pays the quote asset, which is then sold on along the quote's own
routes in the same round. A sale of asset A is split over A's paths -- its USD-quoted venues (one
aggregate, as before) and, for each quote w of a cross venue, A -> w then w's routes -- so that the
marginal USD price is equal on every path used:

    p0_A r_A(x_0)  =  mu_Aw(x_w) M_w  =  L_A   for every path used, sum of the x = the amount sold,

mu_Aw = the cross aggregate's mid in w per A (anchored at the snapshot's USD prices, as USD venues are),
M_w = w's USD market price after ALL of w's sales of the round (its own, and every proceeds routed into
it). L_A is found by bisection (log scale, to 1e-15); the M_w by Gauss-Seidel passes over the route
graph, bases before quotes, until no M moves by more than 1e-13 relative. Paths are direct and through
one intermediate asset; proceeds in w are sold along w's own paths, so chains (cbBTC -> WBTC -> WETH
-> USD) are followed hop by hop. A pool routes sales of the asset it is listed under only; the graph
of cross venues must be acyclic (checked).

Prices: an asset's USD market price is its best bid over its paths, computed quotes first:
m_A = max(p0_A r_A, max_w mu_Aw m_w), so an asset with only cross venues (wstETH paired with WETH)
moves with its quote. Pure numpy; no chain access.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from defirisk.errors import ConvergenceError, InputError
from defirisk.markets.impact import (MIN_REL, AssetCurve, ConstantProduct, Exponential, Linear, UniswapV3,
                                     build_venue_curve, root_decreasing)
from defirisk.solver.economics import curve_proceeds

ROUTE_TOL = 1e-13     # sweeps over several quotes: relative change of every M between sweeps
MAX_PASSES = 200
_LEVEL_STEPS = 200    # safeguarded secant steps (log scale)


def cross_key(j: int, w: int) -> tuple:
    """Key of the cross aggregate (base j, quote w) in a venue-state dict (USD aggregates use j)."""
    return ("x", j, w)


@dataclass(frozen=True, eq=False)
class Router:
    """The route graph of one snapshot: USD aggregates per asset and cross aggregates per (base, quote)."""

    symbols: tuple[str, ...]
    p0: np.ndarray
    usd: Mapping[int, AssetCurve]                 # j -> USD-quoted aggregate (may be absent)
    cross: Mapping[tuple[int, int], AssetCurve]    # (j, w) -> aggregate in w per j, p0 = p0_j / p0_w
    order: tuple[int, ...]                         # volatile assets, quotes before bases
    quotes_of: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    # -- state and prices --------------------------------------------------------------------------
    def init_state(self) -> dict:
        st = {j: c.init_state() for j, c in self.usd.items()}
        st.update({cross_key(j, w): c.init_state() for (j, w), c in self.cross.items()})
        return st

    @property
    def volatile(self) -> set[int]:
        return set(self.order)

    def prices(self, state: Mapping, base: np.ndarray) -> np.ndarray:
        """USD market prices: `base` for assets without venues, the best bid over paths for the rest."""
        m = np.array(base, dtype=float)
        for j in self.order:
            m[j] = self._bid(j, state, m)
        return m

    def _bid(self, j: int, state: Mapping, m: np.ndarray, net: bool = False) -> float:
        """Best bid for j over its paths: mid prices, or with net=True what the next token sold pays
        (each path's mid times its pools' 1 - fee; m then holds the quotes' net levels)."""
        g = _gamma if net else (lambda c: 1.0)
        best = g(self.usd[j]) * _agg_price(self.usd[j], state[j]) if j in self.usd else 0.0
        for w in self.quotes_of.get(j, ()):
            c = self.cross[j, w]
            best = max(best, g(c) * _agg_price(c, state[cross_key(j, w)]) * float(m[w]))
        return max(best, MIN_REL * float(self.p0[j]))

    # -- one routed round --------------------------------------------------------------------------
    def _split(self, j: int, total: float, state: Mapping, M: np.ndarray) -> tuple[float, dict]:
        """Amounts per path of j for a sale of `total`, given the quotes' net end levels M: (level, parts)
        with parts {None: usd amount, w: cross amount}. Every used path ends where the next token sold
        pays `level` USD: a pool pays (1 - fee) x its mid at the margin (constant product, V3), so the
        USD path ends at mid level / g and the path through w at mid level / (g_cross M_w)."""
        paths = []
        if j in self.usd:
            c, st = self.usd[j], state[j]
            g = _gamma(c)
            paths.append((None, lambda L, c=c, st=st, g=g: _agg_amount(c, st, L / g), g * _agg_price(c, st)))
        for w in self.quotes_of.get(j, ()):
            c, st, mw = self.cross[j, w], state[cross_key(j, w)], float(M[w])
            if mw <= 0:
                continue
            g = _gamma(c) * mw
            paths.append((w, lambda L, c=c, st=st, g=g: _agg_amount(c, st, L / g), g * _agg_price(c, st)))
        if total <= 0 or not paths:
            return (max((p[2] for p in paths), default=0.0), {p[0]: 0.0 for p in paths})
        top = max(p[2] for p in paths)

        def excess(u: float) -> float:      # u = log level; decreasing in u
            L = math.exp(u)
            return sum(f(L) for _, f, _ in paths) - total

        lo, hi = math.log(top * MIN_REL), math.log(top)
        if excess(lo) <= 0:                 # even the floor does not absorb it: everything stops there
            level = top * MIN_REL
        else:
            level = math.exp(_root_decreasing(excess, lo, hi))
        parts = {w: min(f(level), total) for w, f, _ in paths}
        rest = total - sum(parts.values())
        big = max(parts, key=lambda k: parts[k])  # the rounding remainder goes to the largest part
        parts[big] += rest
        return level, parts

    def _pass(self, state: Mapping, x: np.ndarray, M: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        """One pass bases before quotes with the quotes' end prices M: (plan, levels, inflows)."""
        inflow = np.zeros(len(x))
        levels = M.copy()
        plan = {}
        for j in self.order[::-1]:
            total = x[j] + inflow[j]
            if total <= 0:
                continue
            level, parts = self._split(j, total, state, M)
            plan[j] = parts
            levels[j] = level
            for w, amt in parts.items():
                if w is not None and amt > 0:
                    inflow[w] += _proceeds(self.cross[j, w], state[cross_key(j, w)], amt)
        for j in self.order:   # assets not sold: their bid moves with their quotes' end levels
            if j not in plan:
                levels[j] = self._bid(j, state, levels, net=True)
        return plan, levels, inflow

    def route(self, state: Mapping, market: np.ndarray, amounts: np.ndarray, *,
              arbitrage: bool = True) -> tuple[dict, np.ndarray, list]:
        """Sell `amounts` (tokens per asset) in one round along every route. Returns (new venue states,
        new market prices, [(asset j, path w or None, tokens sold into the path)]): proceeds in a volatile
        quote are sold on along its routes in the same round.

        The quotes' end prices M solve M_w = level_w(M): for one quote this is a decreasing equation in
        M_w (a higher M_w sends more down the path through w, so w ends lower), solved by a safeguarded
        secant; several quotes are swept quotes-first until none moves by more than ROUTE_TOL.
        With `arbitrage` the gaps the round left between an asset's paths are then closed (`close_gaps`;
        its legs carry a fourth field "arbitrage")."""
        x = np.asarray(amounts, dtype=float)
        if not (x > 0).any():
            return dict(state), market.copy(), []
        M = market.astype(float).copy()   # net levels (what the next token sold pays), quotes first
        for j in self.order:
            M[j] = self._bid(j, state, M, net=True)
        quotes = [w for w in self.order if any(w in ws for ws in self.quotes_of.values())]
        for _ in range(MAX_PASSES):
            moved = 0.0
            for w in quotes:
                top = max(self._bid(w, state, M, net=True), 1e-300)

                def gap(u: float, w=w) -> float:   # decreasing in u = log M_w
                    trial = M.copy()
                    trial[w] = math.exp(u)
                    return math.log(max(self._pass(state, x, trial)[1][w], 1e-300)) - u

                hi = math.log(top)
                if gap(hi) >= 0:
                    new = top
                else:
                    new = math.exp(_root_decreasing(gap, math.log(top * MIN_REL), hi))
                moved = max(moved, abs(new - M[w]) / max(M[w], 1e-300))
                M[w] = new
            if moved <= ROUTE_TOL or len(quotes) <= 1:
                break
        else:
            raise ConvergenceError(f"routing: the quotes' end prices did not settle in {MAX_PASSES} sweeps")
        plan, _, _ = self._pass(state, x, M)
        new = dict(state)
        legs = []
        for j, parts in plan.items():
            for w, amt in parts.items():
                if amt <= 0:
                    continue
                if w is None:
                    new[j], _ = self.usd[j].sell(new[j], amt)
                else:
                    k = cross_key(j, w)
                    new[k], _ = self.cross[j, w].sell(new[k], amt)
                legs.append((j, w, float(amt)))
        prices = self.prices(new, market)
        if arbitrage:
            new, prices, arb = self.close_gaps(new, prices)
            legs += arb
        return new, prices, legs

    # -- arbitrage between paths ---------------------------------------------------------------------
    def close_gaps(self, state: Mapping, market: np.ndarray) -> tuple[dict, np.ndarray, list]:
        """Arbitrage between an asset's USD aggregate and its path through a quote w (w with a USD
        aggregate): while one path's bid, net of fees, is above the other's ask, buy A on the cheap path
        and sell it on the dear one -- buying w for the cross pool on w's USD venues, or selling the w
        it pays there -- until bid = ask (the gap is then inside the fees). Buys move a venue up its
        curve (`_venue_buy`). One pass per (A, w), quotes first. Returns (states, prices, legs (A, w|None, signed tokens,
        "arbitrage"): negative = bought)."""
        new = dict(state)
        legs: list = []
        m = market.copy()
        for j in self.order:
            if j not in self.usd:
                continue
            for w in self.quotes_of.get(j, ()):
                if w not in self.usd:
                    continue
                trade = self._arb_pair(new, j, w)
                if trade is None:
                    continue
                new, pair_legs = trade
                legs += pair_legs
                m = self.prices(new, m)
        return new, m, legs

    def _arb_pair(self, st: dict, j: int, w: int):
        U, C, W = self.usd[j], self.cross[j, w], self.usd[w]
        kc = cross_key(j, w)
        gU, gC, gW = _gamma(U), _gamma(C), _gamma(W)
        pU, pC, pW = float(U.price(st[j])), float(C.price(st[kc])), float(W.price(st[w]))
        if gU * pU > pC * pW / (gC * gW) * (1 + 1e-12):
            # the USD pool is dear: buy A out of the cross pool (paying w, itself bought out of w's USD
            # venues) and sell it into the USD pool
            def after(z: float):
                c_st, paid = _buy(C, st[kc], z)            # w paid into the cross pool
                w_st, _ = _buy(W, st[w], paid)             # ... bought out of w's venues
                u_st, _ = U.sell(st[j], z)
                return u_st, c_st, w_st, paid

            w_cap = _buy_capacity(W, st[w])

            def gap(z: float) -> float:
                u_st, c_st, w_st, paid = after(z)
                if not paid <= w_cap:          # w's venues cannot supply the w: past what is feasible
                    return -1e300
                return (math.log(gU * float(U.price(u_st)))
                        - math.log(float(C.price(c_st)) * float(W.price(w_st)) / (gC * gW)))

            z_max = _buy_capacity(C, st[kc])
            z = z_max if gap(z_max) >= 0 else _root_decreasing(gap, 0.0, z_max)
            if after(z)[3] > w_cap:
                return None
            if z <= 0:
                return None
            u_st, c_st, w_st, paid = after(z)
            st = dict(st)
            st[j], st[kc], st[w] = u_st, c_st, w_st
            return st, [(j, w, -z, "arbitrage"), (j, None, z, "arbitrage"), (w, None, -paid, "arbitrage")]
        if gC * gW * pC * pW > pU / gU * (1 + 1e-12):
            # the path through w is dear: buy A out of the USD pool, sell it into the cross pool and the
            # w it pays into w's venues
            def after2(z: float):
                u_st, _ = _buy(U, st[j], z)
                c_st, _ = C.sell(st[kc], z)
                got = _proceeds(C, st[kc], z)
                w_st, _ = W.sell(st[w], got)
                return u_st, c_st, w_st, got

            def gap2(z: float) -> float:
                u_st, c_st, w_st, _ = after2(z)
                return (math.log(gC * gW * float(C.price(c_st)) * float(W.price(w_st)))
                        - math.log(float(U.price(u_st)) / gU))

            z_max = _buy_capacity(U, st[j])
            z = z_max if gap2(z_max) >= 0 else _root_decreasing(gap2, 0.0, z_max)
            if z <= 0:
                return None
            u_st, c_st, w_st, got = after2(z)
            st = dict(st)
            st[j], st[kc], st[w] = u_st, c_st, w_st
            return st, [(j, None, -z, "arbitrage"), (j, w, z, "arbitrage"), (w, None, got, "arbitrage")]
        return None


    def proceeds_usd(self, state: Mapping, market: np.ndarray, j: int, amount: float) -> float:
        """USD a liquidator gets for selling `amount` of j alone from `state` along its routes (the quote
        tokens it receives sold on along theirs, in the same split)."""
        if amount <= 0:
            return 0.0
        x = np.zeros(len(self.symbols))
        x[j] = amount
        new, _, legs = self.route(state, market, x)
        usd = 0.0
        for a, w, amt in legs:
            if w is None:
                usd += float(_proceeds(self.usd[a], state[a], amt))
        # USD comes only out of USD-quoted legs; the part of them that is j's own proceeds chain is all
        # of it here, since only j was sold
        return usd

    def reach(self, state: Mapping, market: np.ndarray, j: int, target: float) -> tuple[dict, np.ndarray, float, list]:
        """The exogenous sale of j along its routes that takes j's USD market price to `target` (a shock):
        (states, prices, tokens sold, legs). Bisection on the amount (log scale)."""
        if float(market[j]) <= target:
            return dict(state), market.copy(), 0.0, []

        def after(q: float):
            x = np.zeros(len(self.symbols))
            x[j] = q
            return self.route(state, market, x)

        # bracket, then Illinois regula falsi on g(q) = log m_j(q) - log target (smooth, decreasing)
        lo, g_lo = 0.0, math.log(float(market[j]) / target)
        hi = max(1e-9, float(self.usd[j].amount_to_price(state[j], target)) if j in self.usd else 1.0)
        while True:
            st, m, legs = after(hi)
            g_hi = math.log(max(float(m[j]), 1e-300) / target)
            if g_hi <= 0:
                break
            lo, g_lo = hi, g_hi
            hi *= 4.0
            if hi > 1e30:
                raise InputError(f"shock on {self.symbols[j]}: price {target:g} is beyond what its routes can reach")
        best = (st, m, hi, legs)
        side = 0
        for _ in range(200):
            if hi - lo <= 1e-15 * hi or g_hi == 0.0:
                break
            q = hi - g_hi * (hi - lo) / (g_hi - g_lo)
            if not (lo < q < hi):
                q = 0.5 * (lo + hi)
            st, m, legs = after(q)
            g = math.log(max(float(m[j]), 1e-300) / target)
            if g <= 0:
                hi, g_hi, best = q, g, (st, m, q, legs)
                if side == 1:
                    g_lo *= 0.5
                side = 1
            else:
                lo, g_lo = q, g
                if side == -1:
                    g_hi *= 0.5
                side = -1
            if abs(g) <= 1e-15:
                break
        return best[0], best[1], best[2], best[3]


# -- buying the base back out of a venue (arbitrage) ------------------------------------------------------
# A buy moves a venue UP its curve. Constant product: z base out for y quote in, the fee staying in the
# pool: (Q + g y)(B - z) = Q B. Uniswap V3: the net base input falls by z (the fee is charged on the
# quote side and does not move the price); above the pool's initial price the current range's liquidity
# is assumed to continue. Linear and exponential laws extend to negative cumulative amounts. Kinds whose
# law has no meaning above the initial price (sqrt, depth_curve) are bought back at most to it.

def _venue_buy(v, st: tuple, z: float) -> tuple[tuple, float]:
    """(state after buying z base out of venue v, quote paid in, in units of the venue's m0 x rel);
    z is clamped to the venue's capacity (`_venue_buy_capacity`)."""
    z = min(z, _venue_buy_capacity(v, st))
    if z <= 0:
        return st, 0.0
    if isinstance(v, ConstantProduct):
        B, Q = float(st[0]), float(st[1])
        y = (Q * B / (B - z) - Q) / v.gamma
        return (np.float64(B - z), np.float64(Q + y)), y / v.m0
    q0 = float(st[0])
    q1 = q0 - z
    new = (np.float64(q1),)
    if isinstance(v, UniswapV3):
        # quote paid = the area under the relative price between the two net inputs, plus the fee
        return new, _area(v, q1, q0) / v.gamma
    return new, _area(v, q1, q0)


def _area(v, q_lo: float, q_hi: float) -> float:
    """Integral of the venue's relative price over its state variable from q_lo to q_hi (a buy's cost:
    trapezoid on 65 points; the price is monotone and smooth between tick boundaries)."""
    xs = np.linspace(q_lo, q_hi, 65)
    ys = np.asarray(v.rel((xs,)), dtype=float)
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))


def _venue_up_to(v, st: tuple, r: float) -> float:
    """Base tokens to buy out of venue v for its relative price to rise to r (0 if already there),
    in closed form; at most the venue's capacity."""
    if v.rel_f(_fl(st)) >= r:
        return 0.0
    cap = _venue_buy_capacity(v, st)
    if isinstance(v, ConstantProduct):
        B, Q, g, m = float(st[0]), float(st[1]), v.gamma, r * v.m0
        # m B'^2 - Q (1 - 1/g) B' - Q B / g = 0 for the reserve B' left after the buy
        b = Q * (1.0 - 1.0 / g)
        Bp = (b + math.sqrt(b * b + 4.0 * m * Q * B / g)) / (2.0 * m)
        return min(max(B - Bp, 0.0), cap)
    if isinstance(v, UniswapV3):
        w = v.w0 * math.sqrt(r)
        if w <= v.w0:
            net_r = v.gamma * v.q_f((0.0,), r)
        else:  # above the initial price: the first range's liquidity continued
            net_r = float(v.Ls[0]) * (1.0 / w - 1.0 / v.w0) if len(v.Ls) else -math.inf
        return min(max(float(st[0]) - net_r, 0.0), cap)
    if isinstance(v, Linear):
        return min(max(float(st[0]) - (1.0 - r) / v.k, 0.0), cap)
    if isinstance(v, Exponential):
        q_r = -v.depth * math.log((r - v.floor) / (1.0 - v.floor)) if r > v.floor else math.inf
        return min(max(float(st[0]) - q_r, 0.0), cap)
    q_r = float(v.q_of_r(np.float64(min(r, 1.0)))) if hasattr(v, "q_of_r") else 0.0
    return min(max(float(st[0]) - q_r, 0.0), cap)


def _venue_buy_capacity(v, st: tuple) -> float:
    """How much base a buy can take out: never a whole constant-product reserve; V3 up to 1000x its
    initial price on the first range; linear and exponential without bound; other kinds back to their
    initial state."""
    if isinstance(v, ConstantProduct):
        return 0.999 * float(st[0])
    if isinstance(v, UniswapV3):
        L0 = float(v.Ls[0]) if len(v.Ls) else 0.0
        return max(float(st[0]) + L0 * (1.0 - 1.0 / math.sqrt(1000.0)) / v.w0, 0.0)
    if isinstance(v, (Linear, Exponential)):
        return max(float(st[0]), 0.0) + 1e12
    return max(float(st[0]), 0.0)


def _buy(c: AssetCurve, st: tuple, z: float) -> tuple[tuple, float]:
    """Buy z base out of aggregate c, split so all its venues end at one relative price (the mirror of
    a routed sale; closed-form amounts per venue, the common price by bisection on a log scale).
    Returns (state, quote paid in c's units: quote tokens, or USD for a USD aggregate)."""
    if z <= 0:
        return st, 0.0
    z = min(z, _buy_capacity(c, st))
    if len(c.venues) == 1:
        new, paid = _venue_buy(c.venues[0], st[0], z)
        return (new,), c.p0 * paid

    def total(r: float) -> float:
        return sum(_venue_up_to(v, s, r) for v, s in zip(c.venues, st))

    lo = max(min(v.rel_f(_fl(s)) for v, s in zip(c.venues, st)), MIN_REL)
    hi = lo * 2.0
    while total(hi) < z and hi < 1e12:
        hi *= 2.0
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if not (lo < mid < hi) or hi - lo <= 1e-13 * hi:
            break
        if total(mid) < z:
            lo = mid
        else:
            hi = mid
    parts = [_venue_up_to(v, s, hi) for v, s in zip(c.venues, st)]
    scale = z / sum(parts) if sum(parts) > 0 else 0.0
    new, paid = [], 0.0
    for v, s, part in zip(c.venues, st, parts):
        ns, pd_ = _venue_buy(v, s, part * scale)
        new.append(ns)
        paid += pd_
    return tuple(new), c.p0 * paid


def _buy_capacity(c: AssetCurve, st: tuple) -> float:
    return float(sum(_venue_buy_capacity(v, s) for v, s in zip(c.venues, st)))


def _fl(st) -> tuple:
    return tuple(float(a) for a in st)


def _agg_price(c: AssetCurve, st: tuple) -> float:
    """c.price(st) on plain floats (the venues' scalar twins: no numpy per call)."""
    return c.p0 * max(max(v.rel_f(_fl(s)) for v, s in zip(c.venues, st)), MIN_REL)


def _agg_amount(c: AssetCurve, st: tuple, price: float) -> float:
    """c.amount_to_price(st, price) on plain floats: tokens for every venue to reach `price`."""
    r = price / c.p0
    if r < MIN_REL * (1 + 1e-9):
        return math.inf
    return sum(v.q_f(_fl(s), r) for v, s in zip(c.venues, st))


def _gamma(curve: AssetCurve) -> float:
    """1 - fee at the margin of an aggregate: its lowest-fee pool's (kinds without a fee: 1)."""
    return max(float(getattr(v, "gamma", 1.0)) for v in curve.venues)


def _root_decreasing(f, lo: float, hi: float) -> float:
    """impact.root_decreasing on a log-scale variable (which may be negative): 1e-15 of its size."""
    return root_decreasing(f, lo, hi, done=lambda a, b: b - a <= 1e-15 * max(abs(a), abs(b), 1e-300),
                           steps=_LEVEL_STEPS)


def _proceeds(curve: AssetCurve, state, amount: float) -> float:
    return float(curve_proceeds(curve, state, np.array(amount)))


def build_router(snapshot, symbols: tuple[str, ...], p0: np.ndarray) -> tuple[dict, Router | None]:
    """Split every asset's venues into its USD aggregate and its cross aggregates (venues whose `quote`
    is a volatile asset). Returns ({j: USD AssetCurve}, Router or None when no venue is cross), so a
    book without cross pools takes exactly today's path."""
    idx = {s: i for i, s in enumerate(symbols)}
    volatile = {s for s, vs in snapshot.venues.items() if vs}
    usd_venues: dict[str, list] = {}
    cross_venues: dict[tuple[str, str], list] = {}
    for sym, vs in snapshot.venues.items():
        for i, v in enumerate(vs):
            q = v.params.get("quote")
            if q is not None and q != "USD" and q not in snapshot.assets:
                raise InputError(f"venues.json: asset {sym}, venue {i}, field quote: {q!r} is not in assets.csv")
            if q == sym:
                raise InputError(f"venues.json: asset {sym}, venue {i}, field quote: a pool cannot quote an asset in itself")
            if q in volatile:
                cross_venues.setdefault((sym, q), []).append((i, v))
            else:
                usd_venues.setdefault(sym, []).append((i, v))
    usd = {idx[s]: AssetCurve(s, snapshot.assets[s].price_usd,
                              tuple(build_venue_curve(v, snapshot.assets[s], i) for i, v in vs))
           for s, vs in usd_venues.items()}
    if not cross_venues:
        return usd, None
    cross = {}
    for (s, q), vs in cross_venues.items():
        ratio = snapshot.assets[s].price_usd / snapshot.assets[q].price_usd
        cross[idx[s], idx[q]] = AssetCurve(f"{s}/{q}", ratio, tuple(build_venue_curve(v, snapshot.assets[s], i) for i, v in vs))
    quotes_of: dict[int, list] = {}
    for (j, w) in sorted(cross):
        quotes_of.setdefault(j, []).append(w)
    order = _quotes_first(sorted({idx[s] for s in volatile}), quotes_of, symbols)
    return usd, Router(tuple(symbols), np.asarray(p0, dtype=float), usd, cross, order,
                       {j: tuple(ws) for j, ws in quotes_of.items()})


def _quotes_first(nodes: list[int], quotes_of: Mapping[int, list], symbols) -> tuple[int, ...]:
    out: list[int] = []
    mark: dict[int, int] = {}

    def visit(j: int, path: list[int]) -> None:
        if mark.get(j) == 2:
            return
        if mark.get(j) == 1:
            cyc = " -> ".join(symbols[a] for a in path[path.index(j):] + [j])
            raise InputError(f"venues.json: cross venues form a cycle ({cyc}): list each pool once, under the asset "
                             "liquidators sell into it")
        mark[j] = 1
        for w in quotes_of.get(j, ()):
            visit(w, path + [j])
        mark[j] = 2
        out.append(j)

    for j in nodes:
        visit(j, [])
    return tuple(out)
