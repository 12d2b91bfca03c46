"""Cascade curves (end price vs initial shock on one asset) and cliffs.

Fast exact paths ("compiled"), when the snapshot compiles for the curve asset X (compilable.py: every
liquidation sells X only and is a closed form of X's price; no betas):
- fixed-price mode: each position is written as pieces on the price axis -- on [lo, hi) the position,
  liquidated at price p until healthy, sells a + b/p tokens of X, loses c*p + d USD of collateral and
  leaves e + f*p USD of bad debt -- and the sums over all positions are suffix sums over ONE sorted
  array of piece ends, evaluated for all shocks at once with searchsorted. The greatest fixed point is
  found by the vectorised monotone iteration p <- min(p, V(S(p))) from the shocked prices.
- equilibrium mode (liquidators 'all'): the exact descent, band 0 (compiled_descent.py): each
  liquidation at its own trigger, sales as a continuous flow. The general engine's equilibrium curve
  uses the band (default 1%); the compiled one equals the engine at band 0 (tested).
Anything else (Liquity redistribution, cross-collateral Aave or Comet with volatile collateral, v3.3
rules, betas, oracle formulas, sequential mode, a gating liquidator policy) uses the general engine per
shock.

Cliffs: found on the full outcome of every curve point (each asset's end price, liquidated collateral
USD, bad debt USD, each against its own threshold): grid intervals that change some quantity enough
are bisected on the shock until `shock_tol` wide; a genuine jump keeps its size as the interval
shrinks, a steep continuous stretch does not and is dropped; adjacent smaller jumps that together pass
a threshold merge into one cliff (see _cliff_search and docs/model.md, "Curves and cliffs").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defirisk.errors import ConvergenceError, InputError
from defirisk.model import Snapshot
from defirisk.rules.aave_v3 import CLOSE_FACTOR_HF
from defirisk.solver import economics
from defirisk.solver.compilable import holders
from defirisk.solver.compiled_descent import compile_descent
from defirisk.solver.descent import DEFAULT_BAND, descent_totals
from defirisk.solver.engine import (Prepared, fixed_price_totals, prepare, resolve_shocks, run_fixed_price,
                                    recovery_halflives, run_sequential, solve)
from defirisk.solver.result import Cliff, CurveResult

CURVE_MODES = ("equilibrium", "sequential", "fixed-price")
NCOEF = 6  # a, b (sold = a + b/p), c, d (usd = c*p + d), e, f (bad = e + f*p)
MAX_ITER = 100_000


class PieceTable:
    """Pieces of all positions: column i is active on [lo_i, hi_i) with coefficients coef[:, i].

    All break points (every hi, and every lo > 0) are sorted ONCE; each coefficient gets a suffix sum
    over them (a piece adds its coefficients at hi and removes them at lo), so S(p) and the USD outputs
    at any price are one searchsorted away: O(log n) per price, for a whole grid or one cliff midpoint."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, coef: np.ndarray):
        keep = hi > lo
        if not keep.all():
            lo, hi, coef = lo[keep], hi[keep], coef[:, keep]
        self.lo, self.hi, self.coef = lo, hi, coef
        starts = lo > 0  # a piece starting at price 0 never switches off for p > 0: no end point needed
        x = np.concatenate([hi, lo[starts]])
        order = np.argsort(x)
        self.x = x[order]
        self.suffix = np.empty((NCOEF, len(x) + 1))
        for i in range(NCOEF):
            row = np.concatenate([coef[i], -coef[i, starts]])[order]
            if i < 2:   # sold (a, b): as the fixed-point iteration has always summed it
                self.suffix[i, 0] = row.sum()
                np.subtract(self.suffix[i, 0], np.cumsum(row), out=self.suffix[i, 1:])
            else:       # USD outputs: summed from the top, exact 0 where no piece is active
                self.suffix[i, -1] = 0.0
                self.suffix[i, :-1] = np.cumsum(row[::-1])[::-1]

    def sold(self, p: np.ndarray) -> np.ndarray:
        c = self.suffix[:2, np.searchsorted(self.x, p, side="right")]
        return c[0] + c[1] / p

    def values(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(liquidated collateral USD, bad debt USD) at each price in p."""
        p = np.asarray(p, dtype=float)
        c = self.suffix[2:, np.searchsorted(self.x, p, side="right")]
        return c[0] * p + c[1], c[2] + c[3] * p


def _pieces(prep: Prepared, j: int) -> dict[str, tuple] | None:
    """Compile every book into pieces for asset index j, or None if some position cannot be
    (compilable.py: the conditions, shared with the compiled descent)."""
    hs = holders(prep, j)
    if hs is None:
        return None
    out: dict[str, list] = {}

    def add(proto, lo, hi, coef):
        out.setdefault(proto, []).append((np.asarray(lo, float), np.asarray(hi, float), np.asarray(coef, float)))

    for h in hs:
        rule, proto, Cx, dusd = h.rule, h.protocol, h.Cx, h.dusd
        zeros = np.zeros_like(Cx)
        if proto == "morpho-blue":
            lltv, lif, k = rule.lltv, rule.lif, rule.k  # k: market oracle / USD ratio (collateral price factor)
            t = dusd / (Cx * k * lltv)
            u = dusd * lif / (Cx * k)
            # [0,u) c1 and [u,t) c2 written as [0,u) c1-c2 plus [0,t) c2: pieces from 0 need one point
            add(proto, zeros, u, np.stack([Cx, -dusd * lif / k, Cx, -dusd * lif / k, dusd, -Cx * k / lif], 0))
            add(proto, zeros, t, np.stack([zeros, dusd * lif / k, zeros, dusd * lif / k, zeros, zeros], 0))
        elif proto == "compound-v3":
            oc = (h.others_c * h.others_p * np.delete(rule.lcf, j)).sum(axis=1)
            ol = (h.others_c * h.others_p * np.delete(rule.lf, j)).sum(axis=1)
            ov = (h.others_c * h.others_p).sum(axis=1)
            t = (dusd - oc) / (Cx * rule.lcf[j])
            z = np.minimum((dusd - ol) / (Cx * rule.lf[j]), t)
            add(proto, zeros, t, np.stack([Cx, zeros, Cx, ov, zeros, zeros], 0))
            add(proto, zeros, np.maximum(z, 0), np.stack([zeros, zeros, zeros, zeros, dusd - ol, -Cx * rule.lf[j]], 0))
        elif proto == "maker":
            dai = h.debt[:, rule.d] * prep.p0[rule.d]
            art = h.debt[:, rule.d]
            t = art * rule.mat / Cx
            u = np.minimum(dai * rule.chop / Cx, t)
            add(proto, zeros, u, np.stack([Cx, -dai * rule.chop, zeros, zeros, zeros, zeros], 0))
            add(proto, zeros, t, np.stack([zeros, dai * rule.chop, Cx, zeros, zeros, zeros], 0))
            add(proto, zeros, np.minimum(dai / Cx, t), np.stack([zeros, zeros, zeros, zeros, dai, -Cx], 0))
        else:  # aave-v3 (v3.0-3.2, one collateral X, one debt asset: compilable.py)
            lt, lb = h.extra["lt"], h.extra["lb"]
            kappa = 1.0 - rule.fee[j] * (1.0 - 1.0 / lb)
            t = dusd / (Cx * lt)
            t95 = CLOSE_FACTOR_HF * t
            u = dusd * lb / Cx
            add(proto, zeros, u, np.stack([kappa * Cx, -kappa * dusd * lb, Cx, -dusd * lb, dusd, -Cx / lb], 0))
            add(proto, zeros, t95, np.stack([zeros, kappa * dusd * lb, zeros, dusd * lb, zeros, zeros], 0))
            # 0.95 < HF < 1: repeated 50% calls at a fixed price; after j calls HF_j = 2^j (HF - LB*LT) + LB*LT
            blt = lb * lt
            for n in range(1, 64):
                h_hi = blt + (1.0 - blt) / 2.0 ** (n - 1)
                h_lo = np.maximum(blt + (1.0 - blt) / 2.0 ** n, CLOSE_FACTOR_HF)
                if (h_hi <= CLOSE_FACTOR_HF).all():
                    break
                frac = 1.0 - 0.5 ** n
                add(proto, h_lo * t, np.maximum(h_hi, h_lo) * t,
                    np.stack([zeros, kappa * dusd * lb * frac, zeros, dusd * lb * frac, zeros, zeros], 0))
    return {proto: (np.concatenate([q[0] for q in parts]), np.concatenate([q[1] for q in parts]),
                    np.concatenate([q[2] for q in parts], axis=1)) for proto, parts in out.items()}


class Compiled:
    """Single-asset cascade evaluator over many shocks at once."""

    def __init__(self, prep: Prepared, j: int, pieces: dict):
        self.prep, self.j = prep, j
        self.curve = prep.curves[j]
        self.protocols = sorted(pieces)
        self.tables = {pr: PieceTable(*pieces[pr]) for pr in self.protocols}
        allp = [pieces[pr] for pr in self.protocols]
        if len(allp) == 1:
            self.total = self.tables[self.protocols[0]]
        else:
            self.total = PieceTable(np.concatenate([q[0] for q in allp]), np.concatenate([q[1] for q in allp]),
                                          np.concatenate([q[2] for q in allp], axis=1)) if allp else None

    def shocked(self, shocks: np.ndarray):
        c = self.curve
        st0 = c.init_state(shocks.shape)
        target = self.prep.p0[self.j] * (1.0 - shocks)
        q = c.amount_to_price(st0, target)
        st, _ = c.sell(st0, q)
        return st, c.price(st)

    def solve(self, shocks: np.ndarray, tol: float = 1e-12):
        st, p_hat = self.shocked(shocks)
        p = p_hat.copy()
        if self.total is None:
            return p_hat, p, 0
        for it in range(1, MAX_ITER + 1):
            sold = self.total.sold(p)
            new_st, _ = self.curve.sell(st, np.maximum(sold, 0.0))
            p_new = np.minimum(p, self.curve.price(new_st))
            if np.isnan(p_new).any():
                raise ConvergenceError("curve: NaN price in the fixed-point iteration")
            done = np.all(np.abs(p_new - p) <= tol * p)
            p = p_new
            if done:
                return p_hat, p, it
        raise ConvergenceError(f"curve: monotone iteration did not converge in {MAX_ITER} steps")

    def outcome(self, p: np.ndarray):
        if self.total is None:
            return np.zeros_like(p), np.zeros_like(p)
        return self.total.values(p)

    def evaluate(self, shocks: np.ndarray):
        """(shocked prices, end prices, iterations, liquidated collateral USD, bad debt USD) per shock."""
        p_hat, end, it = self.solve(shocks)
        usd, bad = self.outcome(end)
        return p_hat, end, it, usd, bad

    def cliff_paths(self, pairs: list) -> list[tuple[np.ndarray, dict]]:
        """Per cliff ((shock, end price) just before its first step, shock just after its last step):
        ([end before, p_0, p_1, ...], {protocol: liquidated USD at each}) along the monotone sequence."""
        paths = [np.array([e0] + self.path(s1)) for (_, e0), s1 in pairs]
        vals = iter(_batched_values([(self.tables[pr], path) for path in paths for pr in self.protocols]))
        return [(path, {pr: next(vals)[0] for pr in self.protocols}) for path in paths]

    def path(self, shock: float, tol: float = 1e-12) -> list[float]:
        """The monotone sequence p_0 = p_hat > p_1 > ... for one shock (for attribution)."""
        st, p_hat = self.shocked(np.array([shock]))
        ps = [float(p_hat[0])]
        p = p_hat.copy()
        for _ in range(MAX_ITER):
            sold = self.total.sold(p)
            new_st, _ = self.curve.sell(st, np.maximum(sold, 0.0))
            p_new = np.minimum(p, self.curve.price(new_st))
            if abs(p_new[0] - p[0]) <= tol * p[0]:
                break
            p = p_new
            ps.append(float(p[0]))
        return ps


def _batched_values(requests: list[tuple[PieceTable, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """PieceTable.values for several (table, prices) requests with ONE pass over each distinct table
    (a pass costs O(pieces); the number of prices hardly matters)."""
    out: list = [None] * len(requests)
    groups: dict[int, list[int]] = {}
    for i, (t, _) in enumerate(requests):
        groups.setdefault(id(t), []).append(i)
    for idx in groups.values():
        t = requests[idx[0]][0]
        usd, bad = t.values(np.concatenate([requests[i][1] for i in idx]))
        cut = np.cumsum([len(requests[i][1]) for i in idx])[:-1]
        for i, u, b in zip(idx, np.split(usd, cut), np.split(bad, cut)):
            out[i] = (u, b)
    return out


def _cliff_details_compiled(comp, prices: np.ndarray, usd: dict[str, np.ndarray]):
    """Order and attribution along the monotone sequence p_0 > p_1 > ... of the shock just past the
    cliff (`prices` = [end price before the cliff, p_0, p_1, ...]; `usd` = each protocol's liquidated
    USD at those prices, from `comp.cliff_paths`: Compiled or CompiledDescent): protocols whose
    liquidated value grows at step k were pushed by those that grew at k-1 (step 1 by the shock),
    shared in proportion to the pushers' growth."""
    order, merged, prev_growth = [], {}, {"shock": 1.0}
    for k in range(1, len(prices)):
        growth = {pr: usd[pr][k] - usd[pr][k - 1] for pr in comp.protocols
                  if usd[pr][k] - usd[pr][k - 1] > 1e-9 * (1 + abs(usd[pr][k]))}
        if not growth:
            continue
        tot = sum(prev_growth.values())
        for pr, g in growth.items():
            if pr not in order:
                order.append(pr)
            for pusher, w in prev_growth.items():
                merged[(pusher, pr)] = merged.get((pusher, pr), 0.0) + g * w / tot
        prev_growth = growth
    attr = tuple({"pusher": a, "pushed": b, "liquidated_collateral_usd": v} for (a, b), v in merged.items())
    return tuple(order), attr


def cascade_curve(snapshot: Snapshot, asset: str, *, max_shock: float = 0.9, points: int = 1000, mode: str = "sequential",
                  betas=None, min_jump: float = 0.005, shock_tol: float = 1e-9, method: str = "auto",
                  prepared: Prepared | None = None, min_jump_debt_share: float = 0.005, min_jump_usd: float = 1000.0,
                  step_share: float = 0.5, merge_gap: float = 0.002, liquidators="all",
                  band: float | None = None, recovery=None) -> CurveResult:
    """End price of `asset` for `points` shocks in [0, max_shock] plus cliffs found by bisection.

    Cliffs are searched on the full outcome (every asset's end price, liquidated collateral USD, bad
    debt USD); thresholds: `min_jump` (prices, fraction of each asset's p0), max(`min_jump_debt_share`
    x total debt USD at snapshot prices, `min_jump_usd`) (USD figures). Jumps of at least `step_share`
    of a threshold whose gaps are <= `merge_gap` (shock) merge into one cliff (docs/model.md).
    liquidators: as in `solve` (sequential and equilibrium curves; fixed-price liquidates everything).

    method: 'auto' compiles when it can (fixed-price: the pieces; equilibrium: the exact descent,
    compiled_descent.py), 'compiled' insists (InputError if it cannot), 'general' runs the engine per
    shock. Compiling needs a snapshot that compiles for `asset` (compilable.py), no betas and, in
    equilibrium mode, liquidators 'all' (economics gating is not compiled: a gating policy uses the
    general engine) and band None or 0.
    band (equilibrium mode only): how far below its trigger a liquidation may happen. None: the
    compiled curve is the exact descent (band 0); on the general engine descent.DEFAULT_BAND (1%).
    The band used is recorded in `CurveResult.band`.
    recovery ({asset: half-life s}, sequential mode only): as in `solve`."""
    policy = economics.resolve_policy(liquidators)
    _check_cliff_settings(min_jump, shock_tol, min_jump_debt_share, min_jump_usd, step_share, merge_gap)
    if not (math.isfinite(max_shock) and 0 < max_shock < 1):
        raise InputError("max_shock must be in (0, 1)")
    if not (isinstance(points, int) and points >= 2):
        raise InputError("points must be an integer >= 2")
    if mode not in CURVE_MODES:
        raise InputError(f"mode must be one of {', '.join(CURVE_MODES)}, got {mode!r}")
    if method not in ("auto", "compiled", "general"):
        raise InputError("method must be auto, compiled or general")
    if band is not None:
        if mode != "equilibrium":
            raise InputError(f"band is an equilibrium-mode setting; mode is {mode!r}")
        if isinstance(band, bool) or not isinstance(band, (int, float)) or not (math.isfinite(band) and 0 <= band < 0.5):
            raise InputError(f"band must be a fraction in [0, 0.5), got {band!r}")
        band = float(band)
    if recovery and mode != "sequential":
        raise InputError(f"recovery applies to sequential mode (time between rounds); mode is {mode!r}")
    prep = prepared or prepare(snapshot)
    if asset not in prep.symbols:
        raise InputError(f"unknown asset {asset!r} (assets: {', '.join(prep.symbols)})")
    j = prep.symbols.index(asset)
    recovery_halflives(prep, recovery)  # validates it
    if j not in (prep.router.volatile if prep.router is not None else prep.curves):
        raise InputError(f"asset {asset} has no venue in venues.json: its price cannot be moved by sales")
    resolve_shocks(prep, {asset: 0.0}, betas)  # validates betas
    shocks = np.linspace(0.0, max_shock, points)
    comp = None
    if method != "general" and not betas:
        if mode == "fixed-price":
            pieces = _pieces(prep, j)
            if pieces is not None:
                comp = Compiled(prep, j, pieces)
        elif mode == "equilibrium" and policy is None and not band:
            comp = compile_descent(prep, j)
    if method == "compiled" and comp is None:
        raise InputError("this curve cannot be compiled: the snapshot does not compile for this asset, or betas are given, "
                         "or the mode is sequential, or (equilibrium) liquidators gate or band > 0 (see docs/model.md, "
                         "'Curves and cliffs'); use method='general'")
    if mode == "equilibrium":
        band = 0.0 if comp is not None else (DEFAULT_BAND if band is None else band)
    if comp is not None:
        p_hat, end, iters, usd, bad = comp.evaluate(shocks)
        # the compiled paths move X only: every other asset stays at p0 (shocked and end)
        hats, ends = np.tile(prep.p0, (points, 1)), np.tile(prep.p0, (points, 1))
        hats[:, j], ends[:, j] = p_hat, end

        def outcome_at(s: float) -> tuple:
            ph, pe, _, u, b = comp.evaluate(np.array([s]))
            vh, ve = prep.p0.copy(), prep.p0.copy()
            vh[j], ve[j] = ph[0], pe[0]
            return vh, ve, float(u[0]), float(b[0])
    else:
        iters = 0
        rows = []
        for s in shocks:
            if mode != "sequential":   # no result tables: only the curve's four numbers are needed
                ph, pe, it, u, b = _totals(prep, mode, resolve_shocks(prep, {asset: float(s)}, betas), policy, band)
                rows.append((ph, pe, u, b))   # every asset's prices: the cliff search looks at all of them
                iters += it
                continue
            r = _general(prep, asset, s, mode, betas, policy, recovery=recovery)
            iters += r.iterations
            rows.append(_price_vectors(prep, r) + (r.totals.liquidated_collateral_usd, r.totals.bad_debt_usd))
        hats, ends, usd, bad = (np.array(c, dtype=float) for c in zip(*rows))
        p_hat, end = hats[:, j], ends[:, j]

        def outcome_at(s: float) -> tuple:
            if mode != "sequential":
                ph, pe, _, u, b = _totals(prep, mode, resolve_shocks(prep, {asset: float(s)}, betas), policy, band)
                return ph, pe, u, b
            r = _general(prep, asset, s, mode, betas, policy, recovery=recovery)
            return _price_vectors(prep, r) + (r.totals.liquidated_collateral_usd, r.totals.bad_debt_usd)
    p0 = prep.p0[j]
    # Cliffs on the full outcome (every asset's end price, liquidated USD, bad debt; see _cliff_search).
    # Every outcome is solved once: the grid's are reused and bisection midpoints are cached.
    debt_usd = float(sum((b.state0.debt * prep.p0).sum() for b in prep.books))
    thr_usd = max(min_jump_debt_share * debt_usd, min_jump_usd)
    thr = np.concatenate([np.full(len(prep.p0), min_jump), [thr_usd, thr_usd]])
    grid = [_point(s, hats[i], ends[i], usd[i], bad[i], prep.p0) for i, s in enumerate(shocks)]
    cache = {pt.shock: pt for pt in grid}

    def at(s: float) -> _Point:
        if s not in cache:
            cache[s] = _point(s, *outcome_at(s), prep.p0)
        return cache[s]

    found = _cliff_search(grid, at, thr, step_share, merge_gap, shock_tol)
    if comp is not None and comp.protocols:
        # order and attribution along the monotone sequence (the descent's steps) just past each cliff
        details = comp.cliff_paths([((steps[0][0].shock, float(steps[0][0].end[j])), steps[-1][1].shock)
                                    for steps, _ in found])
    curve = pd.DataFrame({"shock": shocks, "shocked_price": p_hat, "end_price": end,
                          "liquidated_collateral_usd": usd, "bad_debt_usd": bad})
    cliffs = []
    for ci, (steps, size) in enumerate(found):
        first, last = steps[0][0], steps[-1][1]   # just before the first step, just after the last
        if comp is None:
            r_lo = _general(prep, asset, first.shock, mode, betas, policy, band, recovery)
            r_hi = _general(prep, asset, last.shock, mode, betas, policy, band, recovery)
            protos, attr = _cliff_details_general(r_lo, r_hi)
        elif comp.protocols:
            protos, attr = _cliff_details_compiled(comp, *details[ci])
        else:
            protos, attr = (), ()
        moved, jumps = _cliff_quantities(prep.symbols, thr, first, last, size)
        trig = steps[0][1].shock
        cliffs.append(Cliff(trigger_shock=trig, trigger_price=float(p0 * (1 - trig)), end_price_before=float(first.end[j]),
                            end_price=float(last.end[j]), protocols=protos, liquidated_collateral_usd=last.usd,
                            bad_debt_usd=last.bad, attribution=attr, end_shock=last.shock,
                            steps=tuple(st[1].shock for st in steps), assets_moved=moved, jumps=jumps))
    return CurveResult(asset=asset, mode=mode, method="compiled" if comp is not None else "general", curve=curve,
                       cliffs=tuple(cliffs), converged=True, iterations=int(iters),
                       end_prices=pd.DataFrame(ends, columns=list(prep.symbols)), band=band)


def _totals(prep, mode, sv, policy, band):
    """(shocked prices, end prices, iterations, liquidated USD, bad debt USD) without result tables."""
    if mode == "fixed-price":
        return fixed_price_totals(prep, sv, 10_000, 1e-12)
    return descent_totals(prep, sv, 10_000, 1e-12, policy=policy, band=band)


def _policy_kw(mode, policy) -> dict:
    return {"policy": policy} if mode == "equilibrium" else {}


def _general(prep, asset, s, mode, betas, policy=None, band=None, recovery=None):
    sv = resolve_shocks(prep, {asset: float(s)}, betas)
    if mode == "sequential":
        return run_sequential(prep, sv, 10_000, policy, recovery)
    if mode == "fixed-price":
        return run_fixed_price(prep, sv, 10_000, 1e-12)
    return solve(prep.snapshot, {asset: float(s)}, mode, betas=betas, prepared=prep, liquidators=policy or "all",
                 band=band)


def _cliff_details_general(r_lo, r_hi):
    key = ["protocol", "market", "account"]
    before = set(map(tuple, r_lo.liquidations[key].to_numpy().tolist()))
    liq = r_hi.liquidations.sort_values(["round"], kind="stable")
    new = liq[[tuple(x) not in before for x in liq[key].to_numpy().tolist()]]
    if len(new) == 0 and len(liq):
        # no account joins, but some are liquidated further (e.g. Aave's close factor going from 50% to
        # 100%, or a larger seizure at lower prices): the chain is carried by those
        seized = [r.liquidations.groupby(key + ["collateral_asset"])["collateral_seized"].sum() for r in (r_lo, r_hi)]
        grew = seized[1].sub(seized[0].reindex(seized[1].index).fillna(0.0)) > 1e-9 * seized[1].abs()
        grown = {k[:3] for k in grew.index[grew.to_numpy()]}
        new = liq[[tuple(x) in grown for x in liq[key].to_numpy().tolist()]]
    order = list(dict.fromkeys(new["protocol"]))
    attr = []
    prev = {"shock": 1.0}
    for rnd, g in liq.groupby("round", sort=True):
        grown = g.groupby("protocol")["collateral_seized_usd"].sum().to_dict()
        tot = sum(prev.values())
        for pr, v in grown.items():
            for pusher, w in prev.items():
                attr.append({"pusher": pusher, "pushed": pr, "liquidated_collateral_usd": float(v * w / tot)})
        prev = grown
    return tuple(order), tuple(attr)


# --- cliffs on the full outcome ----------------------------------------------------------------------
# A curve point's outcome is a vector of quantities: for every asset k the cascade's own part of its
# drop, (p_hat_k - end_k) / p0_k (the shock's own move p_hat is taken out, so only the cascade counts),
# then liquidated collateral USD and bad debt USD. Each has a threshold in its own unit: `min_jump` for
# the prices (fraction of p0), max(min_jump_debt_share x total debt USD at snapshot prices,
# min_jump_usd) for the two USD figures. Changes are compared in threshold units (1 = threshold).

@dataclass(frozen=True, eq=False)
class _Point:
    """The full outcome of the cascade at one shock."""

    shock: float
    p_hat: np.ndarray   # shocked price of every asset
    end: np.ndarray     # end price of every asset
    usd: float          # liquidated collateral USD
    bad: float          # bad debt USD
    v: np.ndarray       # the quantity vector, raw units: cascade drops as fractions of p0, then usd, bad


def _point(shock, p_hat, end, usd, bad, p0) -> _Point:
    p_hat, end = np.asarray(p_hat, dtype=float), np.asarray(end, dtype=float)
    return _Point(float(shock), p_hat, end, float(usd), float(bad),
                  np.concatenate([(p_hat - end) / p0, [float(usd), float(bad)]]))


def _cliff_search(grid: list[_Point], at, thr: np.ndarray, step_share: float, merge_gap: float,
                  shock_tol: float) -> list[tuple[list, np.ndarray]]:
    """Cliffs as clusters of steps: [(steps, summed counted jumps per quantity)], a step = (a, b, d, _)
    with a, b the outcomes at both ends of a <= shock_tol wide interval and d = (b.v - a.v) / thr, the
    change of every quantity in threshold units.

    A change counts in the direction of a cascade only (a price falling beyond the shock's own move, a
    USD figure growing): after a collapse the cascade's share of a price can shrink steadily as the shock
    grows (a constant product venue takes a fixed fraction off), which is no cliff.

    1. Windows: for each quantity, runs of grid intervals whose change is at least `step_share` (two such
       intervals belong to one run when the gap between them is <= merge_gap), kept when the run's changes
       sum above 1 (a single interval above the threshold is such a run). Only these intervals are
       searched, each in the quantities of its runs.
    2. Every sub-interval whose change in a searched quantity is >= step_share is bisected (BOTH halves,
       at the midpoint) until it is shock_tol wide: such a leaf is a step (a discontinuity: a continuous
       stretch, however steep, loses its change as the interval shrinks and is dropped). `at` caches
       outcomes, so no shock is ever solved twice and one bisection serves every quantity. Two passes:
       first down to merge_gap/8; the pieces left are grouped as in 3 (a gap between pieces is at most
       the gap between the steps inside them) and only groups whose changes could sum above a threshold
       are bisected on to shock_tol: a step that can be part of no cliff costs ~log2(grid step /
       (merge_gap/8)) cascades, not log2(grid step / shock_tol).
       Deciding whether to bisect (not whether a leaf is a step), bad debt leaves out what revaluing the
       collateral already liquidated can do: liquidated USD at a x the largest relative fall of a
       shocked or end price from a to b (sequential mode values a liquidation at its round's prices,
       the first at the shocked ones). Once underwater positions are liquidated, their bad debt grows
       steadily as prices fall: no jump, but a steep stretch that would otherwise be bisected through.
    3. Steps whose gap (next start - previous end) is <= merge_gap form one cluster; a cluster is a
       cliff when, for some quantity, its steps' jumps in that quantity (each counted when
       >= step_share) sum above the threshold."""

    def revaluation(usd: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a, b: shocked and end prices side by side at both ends"""
        with np.errstate(divide="ignore", invalid="ignore"):
            fall = np.where(a > 0, (a - b) / a, 0.0)
        return usd * np.maximum(fall.max(axis=-1), 0.0) / thr[-1]

    def change(a: _Point, b: _Point) -> tuple[np.ndarray, np.ndarray]:
        """(change, change that decides bisection), threshold units"""
        d = (b.v - a.v) / thr
        e = d.copy()
        e[-1] -= revaluation(np.array(a.usd), np.concatenate([a.p_hat, a.end]), np.concatenate([b.p_hat, b.end]))
        return d, e

    def explore(a: _Point, b: _Point, width: float, active: np.ndarray) -> list:
        out, stack = [], [(a, b)]
        while stack:
            a, b = stack.pop()
            d, e = change(a, b)
            if not (e[active] >= step_share).any():
                continue   # nothing here can count toward a cliff (a continuous stretch ends here)
            mid = 0.5 * (a.shock + b.shock)
            if b.shock - a.shock <= width or not a.shock < mid < b.shock:
                out.append((a, b, d, active, e))
                continue
            m = at(mid)
            stack.append((m, b))
            stack.append((a, m))
        return out

    def clusters(pieces: list) -> list[list]:
        pieces = sorted(pieces, key=lambda t: t[0].shock)
        out: list[list] = []
        for st in pieces:
            if out and st[0].shock - out[-1][-1][1].shock <= merge_gap:
                out[-1].append(st)
            else:
                out.append([st])
        return out

    V = np.array([p.v for p in grid]) / thr
    prices = np.array([np.concatenate([p.p_hat, p.end]) for p in grid])
    grid_change = np.diff(V, axis=0)
    grid_change[:, -1] -= revaluation(np.array([p.usd for p in grid[:-1]]), prices[:-1], prices[1:])
    grid_change[~np.isfinite(grid_change)] = 0.0
    shocks = np.array([p.shock for p in grid])
    big = grid_change >= step_share
    active = np.zeros(grid_change.shape, dtype=bool)   # interval i is searched for steps in quantity k
    for k in np.flatnonzero(big.any(axis=0)):
        idx = np.flatnonzero(big[:, k])
        cut = np.flatnonzero(shocks[idx[1:]] - shocks[idx[:-1] + 1] > merge_gap) + 1
        for run in np.split(idx, cut):
            if grid_change[run, k].sum() > 1.0:
                active[run, k] = True
    coarse = max(shock_tol, merge_gap / 8.0)
    pieces = [pc for i in np.flatnonzero(active.any(axis=1)) for pc in explore(grid[i], grid[i + 1], coarse, active[i])]
    steps = []
    for group in clusters(pieces):
        # what the group's pieces change, slope inside them included: an upper bound of their steps
        if (np.array([np.where(act, np.maximum(e, 0.0), 0.0) for _, _, _, act, e in group]).sum(axis=0) > 1.0).any():
            steps += [st for a, b, _, act, _ in group for st in explore(a, b, shock_tol, act)]
    out = []
    for cl in clusters(steps):
        dd = np.array([st[2] for st in cl])
        size = np.where(dd >= step_share, dd, 0.0).sum(axis=0)
        if (size > 1.0).any():
            out.append((cl, size))
    return out


def _cliff_quantities(symbols, thr: np.ndarray, first: _Point, last: _Point, size: np.ndarray):
    """(assets_moved, jumps) of one cliff: every quantity with a counted step, in the quantity's units."""
    k = len(symbols)
    jumps, moved = [], []
    for q in np.flatnonzero(size > 0):
        if q < k:
            sym = symbols[q]
            before, after = float(first.end[q]), float(last.end[q])
            jumps.append({"quantity": "end_price", "asset": sym, "before": before, "after": after,
                          "jump": float(size[q] * thr[q]), "threshold": float(thr[q])})
            moved.append({"asset": sym, "end_price_before": before, "end_price": after})
        else:
            name = "liquidated_collateral_usd" if q == k else "bad_debt_usd"
            before, after = (first.usd, last.usd) if q == k else (first.bad, last.bad)
            jumps.append({"quantity": name, "asset": None, "before": before, "after": after,
                          "jump": float(size[q] * thr[q]), "threshold": float(thr[q])})
    return tuple(moved), tuple(jumps)


def _check_cliff_settings(min_jump, shock_tol, debt_share, usd_floor, step_share, merge_gap) -> None:
    ok = lambda x, lo, hi: isinstance(x, (int, float)) and math.isfinite(x) and lo <= x <= hi  # noqa: E731
    if not (ok(min_jump, 0, 1) and min_jump > 0):
        raise InputError("min_jump must be in (0, 1] (a fraction of the asset's initial price)")
    if not (ok(shock_tol, 0, 0.1) and shock_tol > 0):
        raise InputError("shock_tol must be in (0, 0.1]")
    if not (ok(debt_share, 0, 1) and ok(usd_floor, 0, math.inf)) or debt_share == usd_floor == 0:
        raise InputError("min_jump_debt_share must be in [0, 1] and min_jump_usd >= 0, not both 0")
    if not (ok(step_share, 0, 1) and step_share > 0):
        raise InputError("step_share must be in (0, 1]")
    if not ok(merge_gap, 0, 1):
        raise InputError("merge_gap must be in [0, 1]")


def _price_vectors(prep: Prepared, r) -> tuple[np.ndarray, np.ndarray]:
    """(shocked, end) price of every asset, in prep.symbols order, from a CascadeResult."""
    return (np.array([r.shocked_prices[a] for a in prep.symbols], dtype=float),
            np.array([r.end_prices[a] for a in prep.symbols], dtype=float))
