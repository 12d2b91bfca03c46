"""Cascade curves (equilibrium end price vs initial shock on one asset) and cliffs.

Fast exact path ("compiled"): when every position that holds the curve asset X as collateral can be
written as pieces on the price axis -- on [lo, hi) the position, liquidated at price p until healthy,
sells a + b/p tokens of X, loses c*p + d USD of collateral and leaves e + f*p USD of bad debt -- the
sums over all positions are suffix sums over ONE sorted array of piece ends, evaluated for all shocks
at once with searchsorted. The greatest fixed point is then found by the vectorised monotone
iteration p <- min(p, V(S(p))) from the shocked prices. Compiled: Morpho Blue, Compound V3, Maker,
Aave V3.0-3.2 accounts with one collateral (X) and one debt asset when LB*LT < 0.95. The pieces hold
every other price at p0, so a snapshot compiles only if no holder of X has collateral in another asset
with a venue (Comet absorb would sell it too) and no account is liquidatable before the shock.
Anything else (Liquity redistribution, cross-collateral Aave or Comet with volatile collateral, v3.3
rules, betas) uses the general engine per shock.

Cliffs: a grid interval whose end-price drop exceeds the shock's own move by more than `min_jump`
(fraction of the initial price) is bisected on the shock until it is `shock_tol` wide; a genuine
jump keeps its size as the interval shrinks, a steep continuous stretch does not and is dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defirisk.errors import ConvergenceError, InputError
from defirisk.model import Snapshot
from defirisk.rules.aave_v3 import CLOSE_FACTOR_HF
from defirisk.solver.engine import (Prepared, apply_shock, equilibrium_totals, prepare, resolve_shocks, run_equilibrium,
                                   run_sequential)
from defirisk.solver.result import Cliff, CurveResult

NCOEF = 6  # a, b (sold = a + b/p), c, d (usd = c*p + d), e, f (bad = e + f*p)
MAX_ITER = 100_000


class PieceTable:
    """Pieces of all positions: column i is active on [lo_i, hi_i) with coefficients coef[:, i].

    The fixed-point iteration needs only sold(p) = a + b/p, so only (a, b) get the sorted suffix-sum
    table (S(p) sums the deltas at break points x > p); the USD outputs at the M end prices are
    accumulated by bucketing every piece into the sorted prices (O(n log M), no second big sort)."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, coef: np.ndarray):
        keep = hi > lo
        if not keep.all():
            lo, hi, coef = lo[keep], hi[keep], coef[:, keep]
        self.lo, self.hi, self.coef = lo, hi, coef
        starts = lo > 0  # a piece starting at price 0 never switches off for p > 0: no end point needed
        x = np.concatenate([hi, lo[starts]])
        order = np.argsort(x)
        self.x = x[order]
        self.suffix = np.empty((2, len(x) + 1))
        for i in range(2):
            row = np.concatenate([coef[i], -coef[i, starts]])[order]
            self.suffix[i, 0] = row.sum()
            np.subtract(self.suffix[i, 0], np.cumsum(row), out=self.suffix[i, 1:])

    def sold(self, p: np.ndarray) -> np.ndarray:
        c = self.suffix[:, np.searchsorted(self.x, p, side="right")]
        return c[0] + c[1] / p

    def values(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(liquidated collateral USD, bad debt USD) at each price in p."""
        p = np.asarray(p, dtype=float)
        ps = np.unique(p)
        m = len(ps)
        # piece active for the sorted prices with index in [first p >= lo, first p >= hi)
        i0 = np.searchsorted(ps, self.lo, side="left")
        i1 = np.searchsorted(ps, self.hi, side="left")
        acc = np.empty((4, m))
        for k in range(4):
            w = self.coef[2 + k]
            acc[k] = np.cumsum(np.bincount(i0, w, minlength=m + 1) - np.bincount(i1, w, minlength=m + 1))[:m]
        at = np.searchsorted(ps, p)
        c = acc[:, at]
        return c[0] * p + c[1], c[2] + c[3] * p


def _pieces(prep: Prepared, j: int) -> dict[str, tuple] | None:
    """Compile every book into pieces for asset index j, or None if some position cannot be."""
    p = prep.p0
    out: dict[str, list] = {}
    # The pieces move X's price only: every other price is held at p0. That is exact only if no
    # liquidation ever sells another asset with a venue (its sale would move that price and, through
    # positions holding it, the chain): e.g. Comet absorb seizes ALL of an account's collateral.
    other_volatile = np.zeros(len(p), dtype=bool)
    other_volatile[list(prep.curves)] = True
    other_volatile[j] = False

    def add(proto, lo, hi, coef):
        out.setdefault(proto, []).append((np.asarray(lo, float), np.asarray(hi, float), np.asarray(coef, float)))

    for b in prep.books:
        rule, st = b.rule, b.state0
        C, D = st.coll, st.debt
        if len(C) == 0:
            continue
        holds = C[:, j] > 0
        others_c = np.delete(C, j, axis=1)
        others_p = np.delete(p, j)
        proto = b.protocol
        if (C[holds][:, other_volatile] > 0).any():
            return None  # a holder of X also sells another volatile asset when liquidated
        if rule.liquidatable(st, p)[~holds].any():
            # liquidated at every shock, whatever X does: its sales and USD would be missing from the pieces
            return None
        if proto == "liquity":
            if holds.any() or rule.liquidatable(st, p).any():
                return None
            continue
        if not holds.any():
            continue  # never sells X and (checked above) not liquidatable at p0: X falling cannot make it so
        if (D[holds, j] > 0).any():
            return None
        Cx = C[holds, j]
        dusd = (D[holds] * p).sum(axis=1)
        zeros = np.zeros_like(Cx)
        if proto == "morpho-blue":
            lltv, lif, k = rule.lltv, rule.lif, rule.k  # k: market oracle / USD ratio (collateral price factor)
            t = dusd / (Cx * k * lltv)
            u = dusd * lif / (Cx * k)
            # [0,u) c1 and [u,t) c2 written as [0,u) c1-c2 plus [0,t) c2: pieces from 0 need one point
            add(proto, zeros, u, np.stack([Cx, -dusd * lif / k, Cx, -dusd * lif / k, dusd, -Cx * k / lif], 0))
            add(proto, zeros, t, np.stack([zeros, dusd * lif / k, zeros, dusd * lif / k, zeros, zeros], 0))
        elif proto == "compound-v3":
            oc = (others_c[holds] * others_p * np.delete(rule.lcf, j)).sum(axis=1)
            ol = (others_c[holds] * others_p * np.delete(rule.lf, j)).sum(axis=1)
            ov = (others_c[holds] * others_p).sum(axis=1)
            t = (dusd - oc) / (Cx * rule.lcf[j])
            z = np.minimum((dusd - ol) / (Cx * rule.lf[j]), t)
            add(proto, zeros, t, np.stack([Cx, zeros, Cx, ov, zeros, zeros], 0))
            add(proto, zeros, np.maximum(z, 0), np.stack([zeros, zeros, zeros, zeros, dusd - ol, -Cx * rule.lf[j]], 0))
        elif proto == "maker":
            if rule.c != j:
                return None
            dai = D[holds, rule.d] * p[rule.d]
            art = D[holds, rule.d]
            t = art * rule.mat / Cx
            u = np.minimum(dai * rule.chop / Cx, t)
            add(proto, zeros, u, np.stack([Cx, -dai * rule.chop, zeros, zeros, zeros, zeros], 0))
            add(proto, zeros, t, np.stack([zeros, dai * rule.chop, Cx, zeros, zeros, zeros], 0))
            add(proto, zeros, np.minimum(dai / Cx, t), np.stack([zeros, zeros, zeros, zeros, dai, -Cx], 0))
        elif proto == "aave-v3":
            if rule.version >= (3, 3):
                return None
            if (others_c[holds] > 0).any() or ((D[holds] > 0).sum(axis=1) != 1).any():
                return None
            lt, lb = st.extra["lt"][holds, j], st.extra["lb"][holds, j]
            if (lt <= 0).any() or (lb * lt >= CLOSE_FACTOR_HF).any():
                return None
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
        else:
            return None
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


def _cliff_details_compiled(comp: Compiled, prices: np.ndarray, usd: dict[str, np.ndarray]):
    """Order and attribution along the monotone sequence p_0 > p_1 > ... of the shock just past the
    cliff (`prices` = [end price before the cliff, p_0, p_1, ...]; `usd` = each protocol's liquidated
    USD at those prices): protocols whose liquidated value grows at step k were pushed by those that
    grew at k-1 (step 1 by the shock), shared in proportion to the pushers' growth."""
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


def cascade_curve(snapshot: Snapshot, asset: str, *, max_shock: float = 0.9, points: int = 1000, mode: str = "equilibrium",
                  betas=None, min_jump: float = 0.005, shock_tol: float = 1e-9, method: str = "auto",
                  prepared: Prepared | None = None) -> CurveResult:
    """End price of `asset` for `points` shocks in [0, max_shock] plus cliffs found by bisection."""
    if not (math.isfinite(max_shock) and 0 < max_shock < 1):
        raise InputError("max_shock must be in (0, 1)")
    if not (isinstance(points, int) and points >= 2):
        raise InputError("points must be an integer >= 2")
    if mode not in ("equilibrium", "sequential"):
        raise InputError(f"mode must be equilibrium or sequential, got {mode!r}")
    if method not in ("auto", "compiled", "general"):
        raise InputError("method must be auto, compiled or general")
    prep = prepared or prepare(snapshot)
    if asset not in prep.symbols:
        raise InputError(f"unknown asset {asset!r} (assets: {', '.join(prep.symbols)})")
    j = prep.symbols.index(asset)
    if j not in prep.curves:
        raise InputError(f"asset {asset} has no venue in venues.json: its price cannot be moved by sales")
    resolve_shocks(prep, {asset: 0.0}, betas)  # validates betas
    shocks = np.linspace(0.0, max_shock, points)
    comp = None
    if method != "general" and mode == "equilibrium" and not betas:
        pieces = _pieces(prep, j)
        if pieces is not None:
            comp = Compiled(prep, j, pieces)
    if method == "compiled" and comp is None:
        raise InputError("this snapshot cannot be compiled for a fast curve (see docs/model.md); use method='general'")
    if comp is not None:
        p_hat, end, iters = comp.solve(shocks)
        usd = bad = None  # evaluated below together with the cliffs' prices, in one pass over the pieces

        def end_at(s: float) -> float:
            return float(comp.solve(np.array([s]))[1][0])
    else:
        iters = 0
        rows = []
        for s in shocks:
            if mode == "equilibrium":   # no result tables: only the curve's four numbers are needed
                ph, pe, it, u, b = equilibrium_totals(prep, resolve_shocks(prep, {asset: float(s)}, betas), 10_000, 1e-12)
                rows.append((ph[j], pe[j], u, b))
                iters += it
                continue
            r = _general(prep, asset, s, mode, betas)
            iters += r.iterations
            rows.append((r.shocked_prices[asset], r.end_prices[asset], r.totals.liquidated_collateral_usd, r.totals.bad_debt_usd))
        p_hat, end, usd, bad = (np.array(c) for c in zip(*rows))

        def end_at(s: float) -> float:
            if mode == "equilibrium":
                sv = resolve_shocks(prep, {asset: float(s)}, betas)
                return float(equilibrium_totals(prep, sv, 10_000, 1e-12, outcome=False)[1][j])
            return _general(prep, asset, s, mode, betas).end_prices[asset]
    p0 = prep.p0[j]
    cliffs = []
    excess = (end[:-1] - end[1:]) - (p_hat[:-1] - p_hat[1:])
    stack = [(float(shocks[i]), float(shocks[i + 1]), float(end[i]), float(end[i + 1]))
             for i in np.flatnonzero(excess > min_jump * p0)]
    found = []
    while stack:
        lo, hi, e_lo, e_hi = stack.pop()
        while hi - lo > shock_tol:
            if e_lo - e_hi - p0 * (hi - lo) <= min_jump * p0:
                break  # the drop shrank with the interval: a steep slope, not a jump
            mid = 0.5 * (lo + hi)
            e_mid = end_at(mid)
            left, right = e_lo - e_mid, e_mid - e_hi
            # follow the larger jump; keep the other half if it also holds a jump
            if left >= right:
                if right > min_jump * p0 + (p0 * (hi - mid)):
                    stack.append((mid, hi, e_mid, e_hi))
                hi, e_hi = mid, e_mid
            else:
                if left > min_jump * p0 + (p0 * (mid - lo)):
                    stack.append((lo, mid, e_lo, e_mid))
                lo, e_lo = mid, e_mid
        if e_lo - e_hi - p0 * (hi - lo) > min_jump * p0:
            found.append((lo, hi, e_lo, e_hi))
    found = sorted(found)
    if comp is not None:
        paths = [np.array([e_lo] + comp.path(hi)) for lo, hi, e_lo, e_hi in found]
        if comp.total is None:
            usd, bad = comp.outcome(end)
            per_cliff = [(np.zeros(1), np.zeros(1))] * len(found)
            path_usd = [{} for _ in found]
        else:
            reqs = [(comp.total, end)] + [(comp.total, np.array([f[3]])) for f in found]
            reqs += [(comp.tables[pr], path) for path in paths for pr in comp.protocols]
            vals = _batched_values(reqs)
            usd, bad = vals[0]
            per_cliff = vals[1:1 + len(found)]
            rest = iter(vals[1 + len(found):])
            path_usd = [{pr: next(rest)[0] for pr in comp.protocols} for _ in paths]
    curve = pd.DataFrame({"shock": shocks, "shocked_price": p_hat, "end_price": end,
                          "liquidated_collateral_usd": usd, "bad_debt_usd": bad})
    for ci, (lo, hi, e_lo, e_hi) in enumerate(found):
        if comp is not None:
            protos, attr = _cliff_details_compiled(comp, paths[ci], path_usd[ci])
            usd_hi, bad_hi = float(per_cliff[ci][0][0]), float(per_cliff[ci][1][0])
        else:
            r_lo, r_hi = _general(prep, asset, lo, mode, betas), _general(prep, asset, hi, mode, betas)
            protos, attr = _cliff_details_general(r_lo, r_hi)
            usd_hi, bad_hi = r_hi.totals.liquidated_collateral_usd, r_hi.totals.bad_debt_usd
        cliffs.append(Cliff(trigger_shock=hi, trigger_price=float(p0 * (1 - hi)), end_price_before=e_lo, end_price=e_hi,
                            protocols=protos, liquidated_collateral_usd=usd_hi, bad_debt_usd=bad_hi, attribution=attr))
    return CurveResult(asset=asset, mode=mode, method="compiled" if comp is not None else "general", curve=curve,
                       cliffs=tuple(cliffs), converged=True, iterations=int(iters))


def _general(prep, asset, s, mode, betas):
    sv = resolve_shocks(prep, {asset: float(s)}, betas)
    if mode == "sequential":
        return run_sequential(prep, sv, 10_000)
    return run_equilibrium(prep, sv, 10_000, 1e-12)


def _cliff_details_general(r_lo, r_hi):
    key = ["protocol", "market", "account"]
    before = set(map(tuple, r_lo.liquidations[key].to_numpy().tolist()))
    liq = r_hi.liquidations.sort_values(["round"], kind="stable")
    new = liq[[tuple(x) not in before for x in liq[key].to_numpy().tolist()]]
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
