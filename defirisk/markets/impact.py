"""Market impact: how selling an asset moves its market price (pure, vectorised over numpy arrays).

Every venue is modelled by its *relative* curve r = mid(state) / mid(initial state) and the asset's
market price is `price_usd * r`: the venue gives the shape of the impact, the snapshot's oracle price
anchors its level (so a venue whose quote is itself priced in USD, or a reader's rounding, cannot
create a spurious jump at zero shock). Amounts are whole tokens of the asset being sold.

Venue kinds (parameters in venues.json, equations in docs/model.md):
- constant_product: Uniswap V2 style x*y=k; the fee stays in the pool (reserves grow by the full
  input), so two sales differ from one sale of their sum: the state is the reserves (B, Q). A
  continuous order flow (`flow_sell`, equilibrium mode's liquidation sales) keeps Q*B^g invariant.
- uniswap_v3: concentrated liquidity, exact across initialized ticks; the fee is taken from the input
  and does not move the price, so the state is the cumulative net input (path independent).
- linear:      r = 1 - lambda*q/p0                 (lambda: USD per token per token sold)
- exponential: r = floor + (1-floor)*exp(-q/depth) (Cont-Schaanning; depth in tokens, floor in [0,1))
- sqrt:        r = 1 - y*sigma*sqrt(q/volume)      (square-root law; volume in tokens)
- depth_curve: off-chain depth (aggregator quotes, order books): r = 1 - impact(q * reference_price),
  piecewise linear through the quoted (usd_sold, impact) points from (0, 0); past the last point the
  last segment's slope continues until the price reaches zero (path independent).
Linear, sqrt and depth_curve prices stop at zero.

Several venues for one asset form one aggregate curve: a sale is split so that all venues end at the
same relative price (what arbitrage between them enforces); fees enter through each venue's own
amount-to-price map, so a higher-fee pool takes a slightly larger gross amount for the same move.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from defirisk.errors import InputError
from defirisk.model import Asset, Venue, thaw

Q96 = 2.0 ** 96
MIN_TICK, MAX_TICK = -887272, 887272
_BISECT_STEPS = 200  # relative-price bisection for routed sales; 2^-200 is far below float eps
# A market never quotes zero: relative prices stop at MIN_REL (keeps seized = debt/price finite when a
# linear or sqrt law would reach zero); reaching below it needs an infinite sale.
MIN_REL = 1e-9


def _num(params: Mapping[str, Any], key: str, where: str, *, positive: bool = False, lo: float | None = None,
         hi: float | None = None, default: float | None = None) -> float:
    if key not in params:
        if default is not None:
            return default
        raise InputError(f"{where}: field {key} missing")
    try:
        v = float(params[key])
    except (TypeError, ValueError):
        raise InputError(f"{where}: field {key} is not a number: {params[key]!r}") from None
    if not math.isfinite(v) or (positive and v <= 0) or (lo is not None and v < lo) or (hi is not None and v >= hi):
        raise InputError(f"{where}: field {key} out of range: {params[key]!r}")
    return v


def _rel_width(lo: float, hi: float) -> bool:
    return hi - lo <= 1e-15 * max(hi, 1e-300)


def root_decreasing(f, lo: float, hi: float, *, f_lo: float | None = None, f_hi: float | None = None,
                    done=_rel_width, steps: int = _BISECT_STEPS) -> float:
    """Where a decreasing f crosses 0 in [lo, hi] (f(lo) > 0 >= f(hi)), returned on the side where
    f <= 0: Illinois regula falsi (the stale end's value halved), a bisection step whenever the secant
    leaves the bracket, until `done(lo, hi)` (default: 1e-15 relative width) or f = 0."""
    f_lo = f(lo) if f_lo is None else f_lo
    f_hi = f(hi) if f_hi is None else f_hi
    if f_hi > 0:
        return hi
    side = 0
    for _ in range(steps):
        if done(lo, hi) or f_hi == 0.0:
            break
        m = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        if not (lo < m < hi):
            m = 0.5 * (lo + hi)
        fm = f(m)
        if fm > 0.0:
            lo, f_lo = m, fm
            if side == -1:
                f_hi *= 0.5
            side = -1
        else:
            hi, f_hi = m, fm
            if side == 1:
                f_lo *= 0.5
            side = 1
    return hi


class _VenueCurve:
    """One venue. States are tuples of float arrays (broadcastable), vectorised over scenarios."""

    def init_state(self, shape=()) -> tuple:
        raise NotImplementedError

    def rel(self, state: tuple) -> np.ndarray:
        """Relative mid price, 1 at the initial state, non-increasing in the amount sold."""
        raise NotImplementedError

    def amount_to_rel(self, state: tuple, r: np.ndarray) -> np.ndarray:
        """Gross tokens to sell from `state` so the relative price falls to r (0 if already <= r)."""
        raise NotImplementedError

    def sell(self, state: tuple, x: np.ndarray) -> tuple:
        raise NotImplementedError

    # Scalar twins of rel/amount_to_rel on plain floats (states as tuples of floats): the routed sale
    # of one amount evaluates them a few dozen times, where numpy's per-call overhead would dominate.
    # Same float operations as the array versions, so the two agree to the last bit or so.
    def rel_f(self, st: tuple) -> float:
        raise NotImplementedError

    def q_f(self, st: tuple, r: float) -> float:
        raise NotImplementedError

    def breaks_f(self, st: tuple) -> list[float]:
        """Relative prices below the current one where q_f is not smooth (V3 tick boundaries)."""
        return []

    # Continuous order flow: the limit of selling x in k equal swaps as k -> infinity, how equilibrium
    # mode sells liquidated collateral (docs/model.md, "Continuous flow"). A venue whose state is a
    # function of the cumulative (net) amount sold is path independent: its flow IS its sale, hence
    # these defaults. ConstantProduct (fee kept in the pool) overrides them. flow_sell(flow_sell(s, a), b)
    # = flow_sell(s, a + b) for every venue.
    def flow_sell(self, state: tuple, x: np.ndarray) -> tuple:
        return self.sell(state, x)

    def flow_amount_to_rel(self, state: tuple, r: np.ndarray) -> np.ndarray:
        """Tokens to flow from `state` so the relative price falls to r (0 if already <= r)."""
        return self.amount_to_rel(state, r)

    def flow_q_f(self, st: tuple, r: float) -> float:
        """Scalar twin of flow_amount_to_rel."""
        return self.q_f(st, r)


class ConstantProduct(_VenueCurve):
    def __init__(self, base_reserve: float, quote_reserve: float, fee: float):
        self.B0, self.Q0, self.gamma = base_reserve, quote_reserve, 1.0 - fee
        self.m0 = quote_reserve / base_reserve

    def init_state(self, shape=()):
        return (np.full(shape, self.B0, dtype=float), np.full(shape, self.Q0, dtype=float))

    def rel(self, state):
        B, Q = state
        return (Q / B) / self.m0

    def sell(self, state, x):
        B, Q = state
        x = np.asarray(x, dtype=float)
        # out = g*x*Q/(B+g*x); the full input x (fee included) stays in the pool.
        return (B + x, Q * B / (B + self.gamma * x))

    def amount_to_rel(self, state, r):
        B, Q = state
        g = self.gamma
        m = np.maximum(np.asarray(r, dtype=float), 0.0) * self.m0
        with np.errstate(divide="ignore", invalid="ignore"):
            # (B + g x)(B + x) = Q B / m  ->  g x^2 + B(1+g) x + B^2 - QB/m = 0, stable root form
            c = B * B - Q * B / m
            b = B * (1.0 + g)
            x = -2.0 * c / (b + np.sqrt(b * b - 4.0 * g * c))
        x = np.where(m <= 0, np.inf, x)
        return np.maximum(x, 0.0)

    def rel_f(self, st):
        return (st[1] / st[0]) / self.m0

    def q_f(self, st, r):
        B, Q = st
        m = max(r, 0.0) * self.m0
        if m <= 0:
            return math.inf
        g = self.gamma
        c = B * B - Q * B / m
        b = B * (1.0 + g)
        x = -2.0 * c / (b + math.sqrt(b * b - 4.0 * g * c))  # discriminant = B^2(1-g)^2 + 4gQB/m > 0
        return x if x > 0.0 else 0.0

    # Continuous flow: a sale dx adds dx to B and takes g Q dx / (B + g dx) -> g Q dx / B from Q, so
    # dQ/Q = -g dB/B and Q B^g is invariant: after a flow x, B' = B + x, Q' = Q (B / (B + x))^g; the
    # mid Q'/B' = m needs B' = B (Q / (B m))^(1/(1+g)). Without a fee (g = 1) flow and swap coincide
    # (Q B invariant): the swap formulas are used, bit for bit.
    def flow_sell(self, state, x):
        if self.gamma == 1.0:
            return self.sell(state, x)
        B, Q = state
        x = np.asarray(x, dtype=float)
        return (B + x, Q * np.exp(-self.gamma * np.log1p(x / B)))

    def flow_amount_to_rel(self, state, r):
        if self.gamma == 1.0:
            return self.amount_to_rel(state, r)
        B, Q = state
        m = np.maximum(np.asarray(r, dtype=float), 0.0) * self.m0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            x = B * np.expm1(np.log(Q / (B * m)) / (1.0 + self.gamma))
        x = np.where(m <= 0, np.inf, x)
        return np.maximum(x, 0.0)

    def flow_q_f(self, st, r):
        if self.gamma == 1.0:
            return self.q_f(st, r)
        B, Q = st
        m = max(r, 0.0) * self.m0
        if m <= 0:
            return math.inf
        x = B * math.expm1(math.log(Q / (B * m)) / (1.0 + self.gamma))
        return x if x > 0.0 else 0.0


class UniswapV3(_VenueCurve):
    """Selling the base token along initialized ticks. In w-coordinates (w = sqrtP if base is token0,
    1/sqrtP if base is token1) selling always lowers w, the base price is proportional to w^2 and a
    range with liquidity L needs L*(1/w_new - 1/w_old) raw base units."""

    def __init__(self, params: Mapping[str, Any], where: str):
        try:
            sqrt_x96 = int(str(params["sqrt_price_x96"]))
            liquidity = int(str(params["liquidity"]))
            tick = int(params["tick"])
            base_is_token0 = bool(params["base_is_token0"])
            base_dec = int(params["base_decimals"])
            ticks = [(int(t), int(str(n))) for t, n in params.get("ticks", [])]
        except KeyError as exc:
            raise InputError(f"{where}: field {exc.args[0]} missing") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed uniswap_v3 field: {exc}") from None
        fee = _num(params, "fee", where, lo=0.0, hi=1.0, default=0.003)
        if sqrt_x96 <= 0 or liquidity < 0:
            raise InputError(f"{where}: sqrt_price_x96 must be > 0 and liquidity >= 0")
        self.gamma = 1.0 - fee
        unit = 10.0 ** base_dec
        sp = sqrt_x96 / Q96
        if base_is_token0:
            w0 = sp
            cross = sorted((t for t in ticks if t[0] <= tick), reverse=True)
            bounds = [(1.0001 ** (t / 2.0), -n) for t, n in cross]  # crossing down subtracts liquidityNet
            w_end = 1.0001 ** (MIN_TICK / 2.0)
        else:
            w0 = 1.0 / sp
            cross = sorted(t for t in ticks if t[0] > tick)
            bounds = [(1.0001 ** (-t / 2.0), n) for t, n in cross]  # crossing up adds liquidityNet
            w_end = 1.0001 ** (-MAX_TICK / 2.0)
        ws, Ls, A = [w0], [], [0.0]
        L = liquidity
        for w_b, dL in bounds:
            if w_b >= ws[-1]:
                L += dL
                continue
            Ls.append(max(L, 0) / unit)
            A.append(A[-1] + Ls[-1] * (1.0 / w_b - 1.0 / ws[-1]))
            ws.append(w_b)
            L += dL
        Ls.append(max(L, 0) / unit)
        A.append(A[-1] + Ls[-1] * (1.0 / w_end - 1.0 / ws[-1]))
        ws.append(w_end)
        self.w0 = w0
        self.ws = np.array(ws)      # segment k spans ws[k] (top) .. ws[k+1]
        self.Ls = np.array(Ls)      # whole-token liquidity of segment k
        self.A = np.array(A)        # cumulative net whole tokens to reach ws[k]
        self._ws, self._Ls, self._A = ws, [float(x) for x in Ls], [float(x) for x in A]
        self._neg_ws = [-x for x in ws]
        self._r_ticks = [(x / w0) * (x / w0) for x in ws[1:]]  # rel at each segment's lower end

    def init_state(self, shape=()):
        return (np.zeros(shape, dtype=float),)

    def _w_of(self, net):
        net = np.minimum(np.asarray(net, dtype=float), self.A[-1])
        k = np.clip(np.searchsorted(self.A, net, side="left") - 1, 0, len(self.Ls) - 1)
        L = self.Ls[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / self.ws[k] + (net - self.A[k]) / L
            w = np.where(L > 0, 1.0 / inv, self.ws[k + 1])
        return w

    def rel(self, state):
        return (self._w_of(state[0]) / self.w0) ** 2

    def sell(self, state, x):
        return (state[0] + self.gamma * np.asarray(x, dtype=float),)

    def amount_to_rel(self, state, r):
        r = np.asarray(r, dtype=float)
        w = self.w0 * np.sqrt(np.maximum(r, 0.0))
        # segment whose [ws[k+1], ws[k]] contains w (ws is decreasing)
        k = np.clip(np.searchsorted(-self.ws, -w, side="left") - 1, 0, len(self.Ls) - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            net = self.A[k] + self.Ls[k] * (1.0 / w - 1.0 / self.ws[k])
        net = np.where(w < self.ws[-1], np.inf, net)
        return np.maximum((net - state[0]) / self.gamma, 0.0)

    def rel_f(self, st):
        A, Ls, ws = self._A, self._Ls, self._ws
        net = min(st[0], A[-1])
        k = min(max(bisect.bisect_left(A, net) - 1, 0), len(Ls) - 1)
        L = Ls[k]
        w = 1.0 / (1.0 / ws[k] + (net - A[k]) / L) if L > 0 else ws[k + 1]
        x = w / self.w0
        return x * x

    def q_f(self, st, r):
        ws = self._ws
        w = self.w0 * math.sqrt(max(r, 0.0))
        if w < ws[-1]:
            return math.inf
        k = min(max(bisect.bisect_left(self._neg_ws, -w) - 1, 0), len(self._Ls) - 1)
        if w == 0.0:
            return math.inf
        net = self._A[k] + self._Ls[k] * (1.0 / w - 1.0 / ws[k])
        x = (net - st[0]) / self.gamma
        return x if x > 0.0 else 0.0

    def breaks_f(self, st):
        return self._r_ticks


class _Parametric(_VenueCurve):
    """Path-independent curve r(q) of the cumulative amount sold."""

    def init_state(self, shape=()):
        return (np.zeros(shape, dtype=float),)

    def sell(self, state, x):
        return (state[0] + np.asarray(x, dtype=float),)

    def rel(self, state):
        return self.r_of_q(state[0])

    def amount_to_rel(self, state, r):
        return np.maximum(self.q_of_r(np.asarray(r, dtype=float)) - state[0], 0.0)

    def rel_f(self, st):
        return float(self.r_of_q(np.float64(st[0])))

    def q_f(self, st, r):
        x = float(self.q_of_r(np.float64(r))) - st[0]
        return x if x > 0.0 else 0.0


class Linear(_Parametric):
    def __init__(self, lam: float, p0: float):
        self.k = lam / p0

    def r_of_q(self, q):
        return np.maximum(1.0 - self.k * q, 0.0)

    def q_of_r(self, r):
        return np.where(r > 0, (1.0 - np.minimum(r, 1.0)) / self.k, np.inf)


class Exponential(_Parametric):
    def __init__(self, depth: float, floor: float):
        self.depth, self.floor = depth, floor

    def r_of_q(self, q):
        return self.floor + (1.0 - self.floor) * np.exp(-q / self.depth)

    def q_of_r(self, r):
        with np.errstate(divide="ignore", invalid="ignore"):
            q = -self.depth * np.log((np.minimum(r, 1.0) - self.floor) / (1.0 - self.floor))
        return np.where(r > self.floor, q, np.inf)


class SquareRoot(_Parametric):
    def __init__(self, sigma: float, volume: float, y: float):
        self.c = y * sigma / math.sqrt(volume)

    def r_of_q(self, q):
        return np.maximum(1.0 - self.c * np.sqrt(q), 0.0)

    def q_of_r(self, r):
        return np.where(r > 0, ((1.0 - np.minimum(r, 1.0)) / self.c) ** 2, np.inf)


def depth_points_problem(points: Sequence[tuple[float, float]]) -> tuple[int, str, str, bool] | None:
    """The first reason `points` ((usd_sold, impact) pairs in the order given) do not form a depth
    curve: (index, field, message, whether the message compares with the previous point), or None.

    A curve starts at the implied (0, 0) (an explicit first (0, 0) is allowed), usd_sold and impact both
    increase strictly (a flat stretch would be infinitely deep at one price) and impact is in [0, 1)."""
    pu, pi = 0.0, 0.0
    positive = False
    for j, (u, i) in enumerate(points):
        if not math.isfinite(u) or u < 0:
            return j, "usd_sold", f"must be a finite number >= 0, got {u!r}", False
        if not math.isfinite(i) or not 0.0 <= i < 1.0:
            return j, "impact", f"{i!r} is outside [0, 1) (a fraction of the price: 0.02 = 2%)", False
        if u == 0.0:
            if i != 0.0:
                return j, "impact", (f"must be 0 at usd_sold 0, got {i!r}: the curve starts at the snapshot "
                                     "price (a spread at zero size is not modelled)"), False
            if j == 0:
                continue
        if u <= pu:
            return j, "usd_sold", (f"{u:g} is not above the previous point's {pu:g}: usd_sold must "
                                   "increase strictly"), True
        if i <= pi:
            before = "the implied (0, 0)" if pu == 0.0 else f"{pi:g} at usd_sold {pu:g}"
            return j, "impact", (f"{i:g} at usd_sold {u:g} is not above {before}: a depth curve must be "
                                 "monotone, impact increasing strictly with usd_sold (a flat stretch "
                                 "would be infinitely deep)"), True
        pu, pi, positive = u, i, True
    if not positive:
        return 0, "points", "no point with usd_sold > 0", False
    return None


class DepthCurve(_Parametric):
    """Off-chain depth: quoted points (u_k USD sold at the reference price P, impact i_k), 0 < u_1 < ...
    < u_n, 0 < i_1 < ... < i_n < 1. In tokens q_k = u_k / P; r(q) = 1 - i(q) with i piecewise linear
    through (0, 0) and the points. Past the last point the last segment's slope continues to i = 1
    (r = 0) at q_end = q_n + (1 - i_n) / s_n: one more knot (q_end, 1), so every segment is linear with
    slope S_k > 0 and the inverse is exact. The quoted points are the breaks of the routed sale."""

    def __init__(self, points: Sequence[tuple[float, float]], reference_price: float):
        q = [0.0] + [u / reference_price for u, _ in points]
        i = [0.0] + [float(x) for _, x in points]
        q.append(q[-1] + (1.0 - i[-1]) * (q[-1] - q[-2]) / (i[-1] - i[-2]))
        i.append(1.0)
        s = [(i[k + 1] - i[k]) / (q[k + 1] - q[k]) for k in range(len(q) - 1)]
        self.reference_price = reference_price
        self.points = tuple((float(u), float(x)) for u, x in points)
        self._q, self._i, self._s = q, i, s
        self._n = len(s)
        self.Q, self.I, self.S = np.array(q), np.array(i), np.array(s)
        self._r_knots = [1.0 - x for x in i[1:-1]]   # relative price at each quoted point

    def r_of_q(self, q):
        q = np.asarray(q, dtype=float)
        k = np.clip(np.searchsorted(self.Q, q, side="right") - 1, 0, self._n - 1)
        return np.maximum(1.0 - (self.I[k] + self.S[k] * (q - self.Q[k])), 0.0)

    def q_of_r(self, r):
        r = np.asarray(r, dtype=float)
        t = 1.0 - np.minimum(r, 1.0)
        k = np.clip(np.searchsorted(self.I, t, side="right") - 1, 0, self._n - 1)
        return np.where(r > 0, self.Q[k] + (t - self.I[k]) / self.S[k], np.inf)

    def rel_f(self, st):
        q = st[0]
        k = min(max(bisect.bisect_right(self._q, q) - 1, 0), self._n - 1)
        r = 1.0 - (self._i[k] + self._s[k] * (q - self._q[k]))
        return r if r > 0.0 else 0.0

    def q_f(self, st, r):
        if not r > 0.0:
            return math.inf
        t = 1.0 - (r if r < 1.0 else 1.0)
        k = min(max(bisect.bisect_right(self._i, t) - 1, 0), self._n - 1)
        x = self._q[k] + (t - self._i[k]) / self._s[k] - st[0]
        return x if x > 0.0 else 0.0

    def breaks_f(self, st):
        return self._r_knots

    def rel_integral(self, state: tuple, x) -> np.ndarray:
        """Exact integral of rel over the next x tokens sold from `state` (proceeds in units of the
        reference price): on a segment r is linear, so the integral is its trapezoid; nothing past r = 0."""
        cum = getattr(self, "_cum", None)
        if cum is None:
            cum = np.concatenate([[0.0], np.cumsum(np.diff(self.Q) * (1.0 - 0.5 * (self.I[:-1] + self.I[1:])))])
            self._cum = cum

        def G(q):
            q = np.minimum(np.asarray(q, dtype=float), self.Q[-1])
            k = np.clip(np.searchsorted(self.Q, q, side="right") - 1, 0, self._n - 1)
            d = q - self.Q[k]
            return cum[k] + d * (1.0 - self.I[k] - 0.5 * self.S[k] * d)

        q0 = np.asarray(state[0], dtype=float)
        return G(q0 + np.asarray(x, dtype=float)) - G(q0)


def _depth_curve(p: Mapping[str, Any], asset: Asset, where: str) -> DepthCurve:
    raw = p.get("points")
    if not isinstance(raw, (list, tuple)) or not raw:
        raise InputError(f"{where}: field points missing or empty (a list of [usd_sold, impact] pairs)")
    pts = []
    for j, pt in enumerate(raw):
        if not isinstance(pt, (list, tuple)) or len(pt) != 2:
            raise InputError(f"{where}: points[{j}] must be a pair [usd_sold, impact], got {thaw(pt)!r}")
        pair = []
        for name, v in zip(("usd_sold", "impact"), pt):
            try:
                pair.append(float(v))
            except (TypeError, ValueError):
                raise InputError(f"{where}: points[{j}] {name} is not a number: {v!r}") from None
        pts.append((pair[0], pair[1]))
    problem = depth_points_problem(pts)
    if problem is not None:
        j, name, msg, _ = problem
        raise InputError(f"{where}: points[{j}] {name}: {msg}")
    ref = _num(p, "reference_price", where, positive=True, default=asset.price_usd)
    return DepthCurve([pt for pt in pts if pt[0] > 0.0], ref)


def build_venue_curve(venue: Venue, asset: Asset, index: int = 0) -> _VenueCurve:
    """Validate one venue's fields and build its curve. InputError names asset, venue and field."""
    where = f"venue {index} of {venue.asset} ({venue.kind})"
    p = venue.params
    if venue.kind == "constant_product":
        return ConstantProduct(_num(p, "base_reserve", where, positive=True), _num(p, "quote_reserve", where, positive=True),
                               _num(p, "fee", where, lo=0.0, hi=1.0, default=0.003))
    if venue.kind == "uniswap_v3":
        return UniswapV3(p, where)
    if venue.kind == "linear":
        return Linear(_num(p, "lambda", where, positive=True), asset.price_usd)
    if venue.kind == "exponential":
        return Exponential(_num(p, "depth", where, positive=True), _num(p, "floor", where, lo=0.0, hi=1.0, default=0.0))
    if venue.kind == "sqrt":
        return SquareRoot(_num(p, "sigma", where, positive=True), _num(p, "volume", where, positive=True),
                          _num(p, "y", where, positive=True, default=1.0))
    if venue.kind == "depth_curve":
        return _depth_curve(p, asset, where)
    raise InputError(f"{where}: unknown venue kind")


@dataclass(frozen=True)
class AssetCurve:
    """The aggregate sell curve of one asset over its venues, anchored at `p0` (USD)."""

    symbol: str
    p0: float
    venues: tuple[_VenueCurve, ...]

    def init_state(self, shape=()) -> tuple:
        return tuple(v.init_state(shape) for v in self.venues)

    def rel(self, state: tuple) -> np.ndarray:
        # After routing all venues sit at the same relative price; the best bid is the highest.
        out = self.venues[0].rel(state[0])
        for v, s in zip(self.venues[1:], state[1:]):
            out = np.maximum(out, v.rel(s))
        return np.maximum(out, MIN_REL)

    def price(self, state: tuple) -> np.ndarray:
        return self.p0 * self.rel(state)

    def amount_to_price(self, state: tuple, price) -> np.ndarray:
        """Tokens to sell (routed over all venues) for the market price to fall to `price` USD."""
        r = np.asarray(price, dtype=float) / self.p0
        r = np.where(r < MIN_REL * (1 + 1e-9), 0.0, r)  # at or below the floor: infinite sale
        total = 0.0
        for v, s in zip(self.venues, state):
            total = total + v.amount_to_rel(s, r)
        return total

    def sell(self, state: tuple, amount) -> tuple[tuple, list[np.ndarray]]:
        """Sell `amount` tokens; returns (new state, per-venue gross amounts)."""
        x = np.asarray(amount, dtype=float)
        if np.any(~np.isfinite(x)) or np.any(x < 0):
            raise InputError(f"sale of {self.symbol}: amount must be finite and >= 0")
        if len(self.venues) == 1:
            return (self.venues[0].sell(state[0], x),), [x]
        if x.ndim == 0 and all(np.ndim(a) == 0 for st in state for a in st):
            parts = [np.float64(q) for q in self._route_f(state, float(x))]
            return tuple(v.sell(s, q) for v, s, q in zip(self.venues, state, parts)), parts
        return self._route_bisect(state, x)

    def flow_amount_to_price(self, state: tuple, price) -> np.ndarray:
        """Tokens to sell as a continuous flow (routed) for the market price to fall to `price` USD."""
        r = np.asarray(price, dtype=float) / self.p0
        r = np.where(r < MIN_REL * (1 + 1e-9), 0.0, r)
        total = 0.0
        for v, s in zip(self.venues, state):
            total = total + v.flow_amount_to_rel(s, r)
        return total

    def flow_sell(self, state: tuple, amount) -> tuple[tuple, list[np.ndarray]]:
        """Sell `amount` tokens as a continuous order flow (the limit of k routed swaps as k -> infinity;
        equilibrium mode's liquidation sales): each venue moves along its own flow, and the routing
        leaves every venue that takes a part at the same relative price, as `sell` does. Path
        independent: flow_sell(flow_sell(s, a), b) = flow_sell(s, a + b). Returns (new state, parts)."""
        x = np.asarray(amount, dtype=float)
        if np.any(~np.isfinite(x)) or np.any(x < 0):
            raise InputError(f"sale of {self.symbol}: amount must be finite and >= 0")
        if len(self.venues) == 1:
            return (self.venues[0].flow_sell(state[0], x),), [x]
        if x.ndim == 0 and all(np.ndim(a) == 0 for st in state for a in st):
            parts = [np.float64(q) for q in self._route_f(state, float(x), flow=True)]
            return tuple(v.flow_sell(s, q) for v, s, q in zip(self.venues, state, parts)), parts
        return self._route_bisect(state, x, flow=True)

    def _route_f(self, state: tuple, x: float, flow: bool = False) -> list[float]:
        """Per-venue amounts of one routed sale of x tokens: all venues end at the common relative price
        r* with F(r*) = x, F(r) = sum_v q_v(r) (continuous, non-increasing). F is smooth between the
        break points (venues' current prices, V3 tick boundaries), so r* is bracketed by a binary search
        over the break points and then solved inside one smooth segment by Illinois regula falsi to the
        same 1e-15 relative width the bisection uses; the parts are taken at the bracket's upper end
        (F <= x there) and the rounding remainder goes to the largest part, exactly as _route_bisect."""
        sts = [tuple(float(a) for a in s) for s in state]
        vs = self.venues
        qs = [v.flow_q_f if flow else v.q_f for v in vs]  # flow: continuous order flow (flow_sell)

        def F(r: float) -> float:
            return sum(q(s, r) for q, s in zip(qs, sts))

        rels = [v.rel_f(s) for v, s in zip(vs, sts)]
        top = max(max(rels), MIN_REL)
        pts = {top, MIN_REL}
        for v, s, rv in zip(vs, sts, rels):
            if MIN_REL < rv < top:
                pts.add(rv)
            pts.update(b for b in v.breaks_f(s) if MIN_REL < b < top)
        pts = sorted(pts, reverse=True)   # pts[0] = top (F = 0) ... pts[-1] = MIN_REL (F largest)
        fmin = F(MIN_REL)
        if not fmin > x:
            hi = MIN_REL                   # even the floor does not absorb x: stop at the floor
        else:
            a, b = 0, len(pts) - 1         # invariant: F(pts[a]) <= x < F(pts[b])
            fa, fb = F(pts[0]), fmin
            if fa > x:                     # cannot happen for x >= 0 (F(top) = 0); guard anyway
                a = b = 0
            while b - a > 1:
                m = (a + b) // 2
                fm = F(pts[m])
                if fm > x:
                    b, fb = m, fm
                else:
                    a, fa = m, fm
            hi = pts[a] if b != a else top
            lo = pts[b]
            hi = root_decreasing(lambda r: F(r) - x, lo, hi, f_lo=fb - x, f_hi=fa - x)
        parts = [min(q(s, hi), x) for q, s in zip(qs, sts)]
        rest = x - sum(parts)
        j = max(range(len(parts)), key=lambda i: (parts[i], -i))  # first largest, as np.argmax
        parts[j] += rest
        return parts

    def _route_bisect(self, state: tuple, x: np.ndarray, flow: bool = False) -> tuple[tuple, list[np.ndarray]]:
        """Vectorised routed sale (arrays of amounts): bisection on the common relative price r.
        flow: a continuous order flow (flow_sell) instead of one swap per venue."""
        amount = [v.flow_amount_to_rel if flow else v.amount_to_rel for v in self.venues]
        hi = self.rel(state) * np.ones_like(x)
        lo = np.full_like(hi, MIN_REL)
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            need = sum(a(s, mid) for a, s in zip(amount, state))
            too_far = need > x
            lo = np.where(too_far, mid, lo)
            hi = np.where(too_far, hi, mid)
            if np.all(hi - lo <= 1e-15 * np.maximum(hi, 1e-300)):
                break
        parts = [np.minimum(a(s, hi), x) for a, s in zip(amount, state)]
        # put the (tiny) rounding remainder on the deepest part so the parts add up to x exactly
        rest = x - sum(parts)
        j = int(np.argmax([np.sum(p) for p in parts]))
        parts[j] = parts[j] + rest
        new = tuple((v.flow_sell if flow else v.sell)(s, p) for v, s, p in zip(self.venues, state, parts))
        return new, parts


def build_asset_curve(venues: Sequence[Venue], assets: Mapping[str, Asset], symbol: str) -> AssetCurve:
    if symbol not in assets:
        raise InputError(f"venue for unknown asset {symbol!r}")
    asset = assets[symbol]
    return AssetCurve(symbol, asset.price_usd, tuple(build_venue_curve(v, asset, i) for i, v in enumerate(venues)))


def build_curves(snapshot) -> dict[str, AssetCurve]:
    """Curves of every volatile asset (= an asset with at least one venue)."""
    return {s: build_asset_curve(vs, snapshot.assets, s) for s, vs in snapshot.venues.items()}
