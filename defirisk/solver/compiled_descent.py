"""Compiled equilibrium curve: the exact descent (band = 0) of one shocked asset X, all shocks at once.

When a snapshot compiles for X (compilable.py: every liquidation sells X only and is a closed form of
X's price) the descent is a line: X's price falls from the shocked price p^ and each position is
liquidated where it becomes liquidatable. With V(q) = X's price after a continuous flow q
(`AssetCurve.flow_sell`, path independent) from the post-shock venue state and

    A(p) = S(p^) + sum, over the liquidations triggered in (p, p^], of what each sells AT its trigger

(S(p^) = what the positions the shock carried past their trigger sell when settled at p^, exactly as
fixed-price mode settles them), A is a step function, non-increasing in p, and V(A(p)) is
non-decreasing; the descent ends at the GREATEST p <= p^ with V(A(p)) >= p (at a price above it the
pending sale still pushes below; the first such p from the top is where the pending sale runs out).
Liquidated USD and bad debt are S(p^)'s values at p^ plus each liquidation's values at its trigger.

Each position's liquidations along the descent are closed forms of its first trigger t0:
- Morpho Blue, Compound V3, Maker: one liquidation at t0 (it repays the debt or takes the collateral);
- Aave v3.0-3.2 (HF = 1 at a trigger, so a 50% call): the call leaves HF = 2 - LB LT at t0, so the
  account becomes liquidatable again at t_n = t0 / rho^n, rho = 2 - LB LT, selling
  kappa D LB / (2 t0) (rho/2)^n and valued D LB / 2^(n+1) at the n-th (kappa: the protocol fee's share
  kept from the sale); the sales sum to kappa C: the collateral is never exhausted.
An Aave account the shock carries past t0 with 0.95 < HF < 1 gets m 50% calls at p^ (as fixed-price
does) and then starts the same series from its new trigger t' = D_m / (C_m LT) < p^: these series
depend on the shock and are built per shock (memory ~ the number of (shock, account) pairs in that
5% band; grids are evaluated in chunks). Sorting the positions by t0 ONCE serves every shock: every
break point of the settlement at p^ is a group constant times t0 (one group per book and, for Aave,
per LB x LT), so all sums are suffix sums over the sorted t0 (Compound's bad-debt break point, which
other collateral shifts, has its own sorted keys).

Solving: the monotone iteration p <- min(p, V(A(p))) from p^, vectorised over the shocks (each step
crosses at least one trigger and stops exactly when none is crossed); shocks still descending after
SWITCH_ITER steps (near a cliff the map is almost tangent and steps get small) finish by walking their
triggers in order, in windows of growing width, which is exact and costs O(triggers crossed).
Liquidator economics are not compiled (curve.py falls back to the general engine with a gating
policy). Tests: tests/solver/test_compiled_descent.py (equal to `solve(..., "equilibrium", band=0)`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from defirisk.errors import ConvergenceError
from defirisk.markets.impact import MIN_REL
from defirisk.rules.aave_v3 import CLOSE_FACTOR_HF
from defirisk.solver.compilable import holders

SWITCH_ITER = 1_000      # monotone steps (vectorised over the shocks) before the rest walk their triggers
MAX_LEVELS = 100_000      # Aave re-trigger levels (rho >= 1.05: p^ / p <= 1e9 needs < 430)
MAX_PATH = 2_000          # points of the monotone sequence kept for cliff attribution
CHUNK_VIRTUAL = 4_000_000  # per-shock Aave re-trigger entries built at once
MAX_WINDOWS = 10_000


def _suffix(rows: list) -> np.ndarray:
    """Rows (arrays of n, or None for zeros) -> (r, n + 1) suffix sums: out[:, i] = sum of rows[:, i:],
    out[:, n] = 0 exactly."""
    n = next(len(r) for r in rows if r is not None) if any(r is not None for r in rows) else 0
    out = np.zeros((len(rows), n + 1))
    for i, r in enumerate(rows):
        if r is not None and n:
            out[i, :-1] = np.cumsum(r[::-1])[::-1]
    return out


def _sort_by_trigger(t0: np.ndarray, **arrays) -> tuple[np.ndarray, dict]:
    """t0 > 0 (t0 <= 0: never liquidatable at a positive price) sorted ascending, and `arrays` in the
    same order."""
    keep = t0 > 0
    order = np.argsort(t0) if keep.all() else np.flatnonzero(keep)[np.argsort(t0[keep])]
    return t0[order], {k: v[order] for k, v in arrays.items()}


class _Group:
    """Positions of one book (and, for Aave, one LB x LT) sorted by their first trigger t0 (ascending).

    events: level-0 liquidation at t0, rows (sold X, liquidated USD, bad debt) (None = 0); rho < inf:
    a geometric series of later liquidations at t0 / rho^n with values scaled by w^n. pieces: the
    fixed-price settlement at a price p of a position carried past t0, as (lam_lo, lam_hi, rows
    (a, b, c, d, e, f)) active on [lam_lo t0, lam_hi t0) (sold a + b/p, USD c p + d, bad e + f p);
    thresholds: (keys, rows) active on [0, key) with their own keys. t0 = inf: liquidatable at any
    price (settled at p^, no trigger below it)."""

    def __init__(self, protocol: str, t: np.ndarray, events: list, pieces: list, thresholds: list = (),
                 rho: float = math.inf, partial: dict | None = None):
        self.protocol = protocol
        self.t = t
        finite = np.isfinite(t)
        if not finite.all():
            events = [None if e is None else np.where(finite, e, 0.0) for e in events]
        self.ev0 = events[0] if events[0] is not None else np.zeros(len(t))
        self.ev = _suffix(events)
        self.pieces = [(lo, hi, _suffix(rows)) for lo, hi, rows in pieces]
        self.thresholds = []
        for key, rows in thresholds:
            o = np.argsort(key)
            self.thresholds.append((key[o], _suffix([None if r is None else r[o] for r in rows])))
        self.rho = rho
        self.w = np.array([rho / 2.0, 0.5, 0.0]) if math.isfinite(rho) else None
        self.partial = partial

    def settled(self, p_hat: np.ndarray) -> np.ndarray:
        """(sold, usd, bad) at p^ of the positions liquidatable at p^ (fixed-price settlement)."""
        out = np.zeros((3, len(p_hat)))
        n = len(self.t)
        for lam_lo, lam_hi, R in self.pieces:
            i_hi = np.searchsorted(self.t, p_hat / lam_hi, side="right")
            i_lo = np.full_like(i_hi, n) if lam_lo <= 0 else np.searchsorted(self.t, p_hat / lam_lo, side="right")
            i_lo = np.maximum(i_lo, i_hi)
            c = R[:, i_hi] - R[:, i_lo]
            out += _apply(c, p_hat)
        for keys, R in self.thresholds:
            out += _apply(R[:, np.searchsorted(keys, p_hat, side="right")], p_hat)
        return out

    def between(self, p: np.ndarray, p_hat: np.ndarray, rows: slice) -> np.ndarray:
        """Sum over this group's liquidations triggered in (p, p^] (positions with t0 <= p^, the ones
        the shock did not carry past their trigger): the rows of (sold, usd, bad)."""
        hi = np.searchsorted(self.t, p_hat, side="right")
        R = self.ev[rows]
        lo = np.minimum(np.searchsorted(self.t, p, side="right"), hi)
        out = R[:, lo] - R[:, hi]
        if self.w is None:
            return out
        w = self.w[rows]
        scale, q = np.ones_like(w), p.copy()
        for _ in range(MAX_LEVELS):
            q = q * self.rho
            lo = np.searchsorted(self.t, q, side="right")
            live = lo < hi
            if not live.any():
                return out
            scale = scale * w
            lo = np.minimum(lo, hi)
            out += scale[:, None] * (R[:, lo] - R[:, hi])
        raise ConvergenceError("compiled descent: too many Aave re-trigger levels")

    def window(self, plo: float, pc: float, p_hat: float) -> tuple[np.ndarray, np.ndarray]:
        """(trigger prices, sold) of the liquidations in (plo, pc] of positions with t0 <= p^."""
        ts, xs = [], []
        top = min(pc, p_hat)
        i0, i1 = np.searchsorted(self.t, [plo, top], side="right")
        if i1 > i0:
            ts.append(self.t[i0:i1])
            xs.append(self.ev0[i0:i1])
        if self.w is not None:
            f, wn, a, b = 1.0, 1.0, plo, pc
            for _ in range(MAX_LEVELS):
                f, wn, a, b = f * self.rho, wn * self.w[0], a * self.rho, b * self.rho
                if a >= p_hat:
                    break
                i0, i1 = np.searchsorted(self.t, [a, min(b, p_hat)], side="right")
                if i1 > i0:
                    ts.append(self.t[i0:i1] / f)
                    xs.append(self.ev0[i0:i1] * wn)
        return ts, xs


class _Series:
    """Per-shock Aave re-trigger series (accounts the shock carried past t0 with 0.95 < HF < 1): entries
    sorted by (shock, t'), searched with complex keys shock + i t' (numpy orders complex numbers
    lexicographically)."""

    def __init__(self, protocol: str, seg: np.ndarray, t: np.ndarray, ev0: np.ndarray, rho: float, m: int):
        o = np.lexsort((t, seg))
        self.protocol, self.rho = protocol, rho
        self.seg, self.t, self.ev0 = seg[o], t[o], ev0[:, o]
        self.keys = self.seg.astype(float) + 1j * self.t
        self.ev = _suffix(self.ev0)
        self.w = np.array([rho / 2.0, 0.5, 0.0])
        self.start = np.searchsorted(self.seg, np.arange(m), side="left")
        self.end = np.searchsorted(self.seg, np.arange(m), side="right")

    def _key(self, idx, p):
        k = np.empty(len(idx), dtype=complex)
        k.real, k.imag = idx, p
        return k

    def between(self, p: np.ndarray, idx: np.ndarray, rows: slice) -> np.ndarray:
        R = self.ev[rows]
        hi = self.end[idx]
        w = self.w[rows]
        out = np.zeros((R.shape[0], len(idx)))
        scale, q = np.ones_like(w), p.copy()
        for _ in range(MAX_LEVELS):
            lo = np.minimum(np.searchsorted(self.keys, self._key(idx, q), side="right"), hi)
            if not (lo < hi).any():
                return out
            out += scale[:, None] * (R[:, lo] - R[:, hi])
            q, scale = q * self.rho, scale * w
        raise ConvergenceError("compiled descent: too many Aave re-trigger levels")

    def window(self, s: int, plo: float, pc: float):
        t = self.t[self.start[s]:self.end[s]]
        x = self.ev0[0, self.start[s]:self.end[s]]
        ts, xs = [], []
        f, wn, a, b = 1.0, 1.0, plo, pc
        for _ in range(MAX_LEVELS):
            i0, i1 = np.searchsorted(t, [a, b], side="right")
            if i0 >= len(t):
                break
            if i1 > i0:
                ts.append(t[i0:i1] / f)
                xs.append(x[i0:i1] * wn)
            f, wn, a, b = f * self.rho, wn * self.w[0], a * self.rho, b * self.rho
        return ts, xs


def _apply(c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Coefficient rows (a, b, c, d, e, f) at prices p -> (sold, usd, bad)."""
    return np.stack([c[0] + c[1] / p, c[2] * p + c[3], c[4] + c[5] * p])


def _groups(prep, j: int) -> list[_Group] | None:
    hs = holders(prep, j)
    if hs is None:
        return None
    out = []
    for h in hs:
        rule, proto = h.rule, h.protocol
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if proto == "morpho-blue":
                lltv, lif, k = rule.lltv, rule.lif, rule.k
                t, a = _sort_by_trigger(h.dusd / (h.Cx * k * lltv), Cx=h.Cx, dusd=h.dusd)
                Cx, dusd = a["Cx"], a["dusd"]
                seized = dusd * lif / (t * k)
                over = seized >= Cx
                if over.any():
                    seized = np.where(over, Cx, seized)
                    bad = dusd - np.where(over, Cx * t * k / lif, dusd)
                else:
                    bad = None
                b = dusd * (lif / k)
                pieces = [(0.0, lltv * lif, [Cx, -b, Cx, -b, dusd, -Cx * (k / lif)]),
                          (0.0, 1.0, [None, b, None, b, None, None])]
                out.append(_Group(proto, t, [seized, seized * t, bad], pieces))
            elif proto == "compound-v3":
                oc = (h.others_c * h.others_p * np.delete(rule.lcf, j)).sum(axis=1)
                ol = (h.others_c * h.others_p * np.delete(rule.lf, j)).sum(axis=1)
                ov = (h.others_c * h.others_p).sum(axis=1)
                lf = rule.lf[j]
                t, a = _sort_by_trigger((h.dusd - oc) / (h.Cx * rule.lcf[j]), Cx=h.Cx, dusd=h.dusd, ol=ol, ov=ov)
                Cx, dusd, ol, ov = a["Cx"], a["dusd"], a["ol"], a["ov"]
                ev = [Cx, Cx * t + ov, np.maximum(dusd - ol - Cx * lf * t, 0.0)]
                zb = np.maximum(np.minimum((dusd - ol) / (Cx * lf), t), 0.0)
                out.append(_Group(proto, t, ev, [(0.0, 1.0, [Cx, None, Cx, ov, None, None])],
                                  [(zb, [None, None, None, None, dusd - ol, -Cx * lf])]))
            elif proto == "maker":
                pd_ = prep.p0[rule.d]
                art = h.debt[:, rule.d]
                t, a = _sort_by_trigger(art * rule.mat / h.Cx, Cx=h.Cx, art=art)
                Cx, dai = a["Cx"], a["art"] * pd_
                sold = np.minimum(Cx, dai * rule.chop / t)
                ev = [sold, Cx * t, np.maximum(dai - sold * t, 0.0)]
                pieces = [(0.0, min(pd_ * rule.chop / rule.mat, 1.0), [Cx, -dai * rule.chop, None, None, None, None]),
                          (0.0, 1.0, [None, dai * rule.chop, Cx, None, None, None]),
                          (0.0, min(pd_ / rule.mat, 1.0), [None, None, None, None, dai, -Cx])]
                out.append(_Group(proto, t, ev, pieces))
            else:  # aave-v3 v3.0-3.2, one collateral X, one debt asset
                lt, lb = h.extra["lt"], h.extra["lb"]
                beta = lb * lt
                for bv in np.unique(beta):
                    sel = beta == bv
                    out.append(_aave_group(proto, rule.fee[j], h.Cx[sel], h.dusd[sel], lt[sel], lb[sel], float(bv)))
    return out


def _aave_group(proto, fee, Cx, dusd, lt, lb, beta) -> _Group:
    t, a = _sort_by_trigger(dusd / (Cx * lt), Cx=Cx, dusd=dusd, lt=lt, lb=lb)
    Cx, dusd, lt, lb = a["Cx"], a["dusd"], a["lt"], a["lb"]
    kappa = 1.0 - fee * (1.0 - 1.0 / lb)
    ev = [kappa * dusd * lb / (2.0 * t), dusd * lb / 2.0, None]
    pieces = [(0.0, beta, [kappa * Cx, -kappa * dusd * lb, Cx, -dusd * lb, dusd, -Cx / lb]),
              (0.0, CLOSE_FACTOR_HF, [None, kappa * dusd * lb, None, dusd * lb, None, None])]
    for lo, hi, frac in _partial_levels(beta):
        pieces.append((lo, hi, [None, kappa * dusd * lb * frac, None, dusd * lb * frac, None, None]))
    return _Group(proto, t, ev, pieces, rho=2.0 - beta,
                  partial={"Cx": Cx, "dusd": dusd, "lt": lt, "lb": lb, "kappa": kappa})


def _partial_levels(beta: float) -> list[tuple[float, float, float]]:
    """(h_lo, h_hi, repaid share) of the n-th run of 50% calls at a fixed price: an account with HF h in
    [h_lo, h_hi) at that price gets n calls (HF_n = 2^n (h - beta) + beta >= 1), as fixed-price does."""
    out = []
    for n in range(1, 64):
        h_hi = beta + (1.0 - beta) / 2.0 ** (n - 1)
        h_lo = max(beta + (1.0 - beta) / 2.0 ** n, CLOSE_FACTOR_HF)
        if h_hi <= CLOSE_FACTOR_HF:
            break
        out.append((h_lo, max(h_hi, h_lo), 1.0 - 0.5 ** n))
    return out


def _sub(state: tuple, idx) -> tuple:
    return tuple(tuple(a[idx] for a in v) for v in state)


@dataclass(eq=False)
class _Ctx:
    """One batch of shocks: post-shock venue states, shocked prices, the settlement at p^."""

    st: tuple
    p_hat: np.ndarray
    q0: np.ndarray        # X sold by the settlement at p^
    base: dict            # protocol -> (usd, bad) of the settlement at p^
    series: list          # _Series of Aave accounts settled at p^ that trigger again below it


class CompiledDescent:
    """Single-asset equilibrium (band = 0) evaluator over many shocks at once."""

    band = 0.0

    def __init__(self, prep, j: int, groups: list[_Group]):
        self.prep, self.j = prep, j
        self.curve = prep.curves[j]
        self.groups = groups
        self.protocols = sorted({g.protocol for g in groups})

    # -- per batch of shocks ---------------------------------------------------------------------------
    def _shocked(self, shocks: np.ndarray):
        """The shock as ONE swap along X's routed curve (apply_shock), vectorised."""
        c = self.curve
        st0 = c.init_state(shocks.shape)
        q = c.amount_to_price(st0, self.prep.p0[self.j] * (1.0 - shocks))
        st, _ = c.sell(st0, q)
        return st, c.price(st)

    def _partial_counts(self, p_hat: np.ndarray) -> np.ndarray:
        n = np.zeros(len(p_hat), dtype=np.int64)
        for g in self.groups:
            if g.partial is not None:
                n += np.searchsorted(g.t, p_hat / CLOSE_FACTOR_HF * (1 + 1e-9), side="right") - \
                    np.searchsorted(g.t, p_hat, side="right")
        return n

    def _context(self, shocks: np.ndarray) -> _Ctx:
        st, p_hat = self._shocked(shocks)
        q0 = np.zeros(len(shocks))
        base = {}
        for g in self.groups:
            v = g.settled(p_hat)
            q0 += v[0]
            u, b = base.get(g.protocol, (0.0, 0.0))
            base[g.protocol] = (u + v[1], b + v[2])
        series = [sr for g in self.groups if g.partial is not None for sr in [self._series(g, p_hat)] if sr is not None]
        return _Ctx(st, p_hat, q0, base, series)

    def _series(self, g: _Group, p_hat: np.ndarray) -> _Series | None:
        """Aave accounts the shock carried past t0 with 0.95 <= HF < 1 at p^: after their 50% calls at
        p^ (HF_m >= 1) they trigger again at t' = D_m / (C_m LT) and follow the same geometric series."""
        a = np.searchsorted(g.t, p_hat, side="right")
        b = np.searchsorted(g.t, p_hat / CLOSE_FACTOR_HF * (1 + 1e-9), side="right")
        cnt = np.maximum(b - a, 0)
        total = int(cnt.sum())
        if total == 0:
            return None
        seg = np.repeat(np.arange(len(p_hat)), cnt)
        first = np.cumsum(cnt) - cnt
        pos = a[seg] + (np.arange(total) - first[seg])
        P = p_hat[seg]
        part = {k: v[pos] for k, v in g.partial.items()}
        t = g.t[pos]
        beta = 2.0 - g.rho
        m = np.zeros(total, dtype=np.int64)
        for n, (lo, hi, _) in enumerate(_partial_levels(beta), start=1):
            m[(t > P / hi) & (t <= P / lo)] = n  # the test `settled` applies to the same pieces
        keep = m > 0
        if not keep.any():
            return None
        seg, P, t, m = seg[keep], P[keep], t[keep], m[keep]
        part = {k: v[keep] for k, v in part.items()}
        half = 0.5 ** m
        dusd_m = part["dusd"] * half
        c_m = part["Cx"] - part["dusd"] * part["lb"] * (1.0 - half) / P
        t1 = dusd_m / (c_m * part["lt"])
        ev = np.stack([part["kappa"] * dusd_m * part["lb"] / (2.0 * t1), dusd_m * part["lb"] / 2.0, np.zeros_like(t1)])
        return _Series(g.protocol, seg, t1, ev, g.rho, len(p_hat))

    # -- A(p), V(q) and the values ----------------------------------------------------------------------
    def _sums(self, ctx: _Ctx, p: np.ndarray, idx: np.ndarray, rows: slice, protocol: str | None = None) -> np.ndarray:
        out = 0.0
        for g in self.groups:
            if protocol is None or g.protocol == protocol:
                out = out + g.between(p, ctx.p_hat[idx], rows)
        for sr in ctx.series:
            if protocol is None or sr.protocol == protocol:
                out = out + sr.between(p, idx, rows)
        return out if not np.isscalar(out) else np.zeros((rows.stop - rows.start, len(idx)))

    def _price(self, ctx: _Ctx, idx, amount: np.ndarray) -> np.ndarray:
        st, _ = self.curve.flow_sell(_sub(ctx.st, idx), np.maximum(amount, 0.0))
        v = self.curve.price(st)
        if np.isnan(v).any():
            raise ConvergenceError("compiled descent: NaN price")
        return v

    def _amount(self, ctx: _Ctx, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return ctx.q0[idx] + self._sums(ctx, p, idx, slice(0, 1))[0]

    def _solve(self, ctx: _Ctx) -> tuple[np.ndarray, int]:
        p = ctx.p_hat.copy()
        active = np.arange(len(p))
        it = 0
        while len(active) and it < SWITCH_ITER:
            it += 1
            pa = p[active]
            pn = np.minimum(pa, self._price(ctx, active, self._amount(ctx, pa, active)))
            p[active] = pn
            active = active[pn < pa]
        walked = 0
        for s in active:
            p[s], w = self._walk(ctx, int(s), float(p[s]))
            walked += w
        return p, it + walked

    def _walk(self, ctx: _Ctx, s: int, pc: float) -> tuple[float, int]:
        """Exact end of shock s from pc (a point of the monotone sequence): the triggers below pc in
        order; the descent stops after the i-th liquidation when V(A_i) >= the next trigger. Windows
        (plo, pc] of growing relative width; a window's triggers all fire when V(A_last) < plo."""
        idx = np.array([s])
        a0 = float(self._amount(ctx, np.array([pc]), idx)[0])
        p_hat = float(ctx.p_hat[s])
        floor = 0.5 * self.prep.p0[self.j] * MIN_REL   # below the price floor: no sale gets there
        delta = 1e-4
        for n in range(1, MAX_WINDOWS + 1):
            plo = max(pc * (1.0 - delta), floor)
            ts, xs = [], []
            for g in self.groups:
                a, b = g.window(plo, pc, p_hat)
                ts += a
                xs += b
            for sr in ctx.series:
                a, b = sr.window(s, plo, pc)
                ts += a
                xs += b
            t = np.concatenate(ts) if ts else np.zeros(0)
            x = np.concatenate(xs) if xs else np.zeros(0)
            o = np.argsort(-t, kind="stable")
            t, x = t[o], x[o]
            amounts = a0 + np.concatenate([[0.0], np.cumsum(x)])
            v = self._price(ctx, np.full(len(amounts), s), amounts)
            nxt = np.concatenate([t, [plo]])
            ok = v >= nxt
            if ok.any():
                return min(pc, float(v[int(np.argmax(ok))])), n
            pc, a0 = plo, float(amounts[-1])
            delta = min(2.0 * delta, 0.5)
        raise ConvergenceError(f"compiled descent: no end after {MAX_WINDOWS} windows")

    def _values(self, ctx: _Ctx, p: np.ndarray, idx: np.ndarray, protocol: str | None = None):
        vals = self._sums(ctx, p, idx, slice(1, 3), protocol)
        usd, bad = vals[0], vals[1]
        for pr, (u, b) in ctx.base.items():
            if protocol is None or pr == protocol:
                usd = usd + np.broadcast_to(u, ctx.p_hat.shape)[idx]
                bad = bad + np.broadcast_to(b, ctx.p_hat.shape)[idx]
        return usd, bad

    # -- public ------------------------------------------------------------------------------------------
    def evaluate(self, shocks: np.ndarray):
        """(shocked prices, end prices, steps, liquidated collateral USD, bad debt USD) per shock."""
        shocks = np.asarray(shocks, dtype=float)
        out = [np.empty(len(shocks)) for _ in range(4)]
        iters = 0
        for sel in self._chunks(shocks):
            ctx = self._context(shocks[sel])
            p, it = self._solve(ctx)
            usd, bad = self._values(ctx, p, np.arange(len(p)))
            for o, v in zip(out, (ctx.p_hat, p, usd, bad)):
                o[sel] = v
            iters += it
        p_hat, end, usd, bad = out
        if not (np.isfinite(end).all() and np.isfinite(usd).all() and np.isfinite(bad).all()):
            raise ConvergenceError("compiled descent: non-finite outcome (NaN guard)")
        return p_hat, end, iters, usd, bad

    def _chunks(self, shocks: np.ndarray) -> list:
        if not any(g.partial is not None for g in self.groups) or len(shocks) <= 1:
            return [slice(0, len(shocks))]
        _, p_hat = self._shocked(shocks)
        cum = np.cumsum(self._partial_counts(p_hat))
        cuts = [0]
        while cuts[-1] < len(shocks):
            base = cum[cuts[-1] - 1] if cuts[-1] else 0
            nxt = int(np.searchsorted(cum, base + CHUNK_VIRTUAL, side="right"))
            cuts.append(max(nxt, cuts[-1] + 1))
        return [slice(a, min(b, len(shocks))) for a, b in zip(cuts, cuts[1:])]

    def path(self, shock: float) -> tuple[list[float], dict[str, np.ndarray]]:
        """The monotone sequence p_0 = p^ > p_1 > ... of one shock (at most MAX_PATH points, then its
        exact end) and each protocol's liquidated USD at every point (for cliff attribution)."""
        ctx = self._context(np.array([float(shock)]))
        idx = np.array([0])
        p = ctx.p_hat.copy()
        ps = [float(p[0])]
        for _ in range(MAX_PATH):
            pn = np.minimum(p, self._price(ctx, idx, self._amount(ctx, p, idx)))
            if not pn[0] < p[0]:
                break
            p = pn
            ps.append(float(p[0]))
        else:
            end, _ = self._solve(ctx)
            if end[0] < ps[-1]:
                ps.append(float(end[0]))
        arr = np.array(ps)
        many = np.zeros(len(arr), dtype=np.int64)
        return ps, {pr: self._values(ctx, arr, many, pr)[0] for pr in self.protocols}

    def totals_by_protocol(self, shock: float, end: float) -> dict[str, float]:
        ctx = self._context(np.array([float(shock)]))
        return {pr: float(self._values(ctx, np.array([end]), np.array([0]), pr)[0][0]) for pr in self.protocols}

    def cliff_paths(self, pairs: list) -> list[tuple[np.ndarray, dict]]:
        """Per cliff ((shock, end price) just before its first step, shock just after its last step):
        ([end before, p_0, p_1, ...], {protocol: liquidated USD at each}); the first entry is the
        descent of the shock before the cliff, at its end."""
        out = []
        for (s0, e0), s1 in pairs:
            before = self.totals_by_protocol(s0, e0)
            ps, usd = self.path(s1)
            out.append((np.array([e0] + ps), {pr: np.concatenate([[before[pr]], usd[pr]]) for pr in self.protocols}))
        return out


def compile_descent(prep, j: int) -> CompiledDescent | None:
    """The compiled descent of asset index j, or None when the snapshot does not compile (compilable.py)."""
    groups = _groups(prep, j)
    if groups is None:
        return None
    return CompiledDescent(prep, j, groups)
