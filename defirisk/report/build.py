"""Compute the keeper-risk report's data from a Snapshot, through the public solver API only.

The result is one JSON-ready dict (schema `defirisk-report/1`, documented in docs/report.md); the
renderers (markdown, html, json) and the plots read nothing else, so every number a reader sees in
any format is the same number. Pure apart from the solver calls: no I/O, no RPC, no clock unless
`generated_at` is left out.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from defirisk import __version__
from defirisk.errors import InputError
from defirisk.report.history import PreviousRun, diff_figures

SCHEMA = "defirisk-report/1"
STANDARD_SHOCKS = (0.10, 0.20, 0.30, 0.50)
MODES = ("sequential", "equilibrium")
# The market-wide shock the per-protocol table shows outcomes for (a standard shock).
REFERENCE_SHOCK = 0.20


@dataclass(frozen=True)
class ReportSettings:
    """What the report computes. Shocks are fractions of today's price (0.2 = a 20% drop)."""

    shocks: tuple[float, ...] = STANDARD_SHOCKS
    max_shock: float = 0.9          # cascade curve runs over initial shocks [0, max_shock]
    curve_points: int = 60          # grid of the curve plot (1.5% steps); cliffs are bisected to cliff_shock_tol
    top_accounts: int = 10          # rows in the account tables
    at_risk_shock: float = 0.30     # an account is "at risk" on an asset if a drop this size liquidates it
    level_bins: int = 40            # histogram bins of static liquidation levels
    level_range: tuple[float, float] = (0.1, 1.5)  # histogram spans price * [lo, hi]
    # Cliff bisection stops when the trigger shock is known to this width: 1e-6 of the price is far
    # finer than any report prints, and each halving costs one full cascade solve.
    cliff_shock_tol: float = 1e-6
    workers: int | None = None      # processes for the per-asset work; None = one per CPU, 1 = serial
    # Liquidator economics of the scenario solves (docs/model.md): "profitable" (a call happens only when it
    # pays the liquidator) or "all"; gas_usd / min_profit_usd: None = the solver's defaults.
    liquidators: str = "profitable"
    gas_usd: float | None = None
    min_profit_usd: float | None = None
    # Mode of the curves and cliffs (and so of the headline and the cliff alerts): sequential, the mode
    # validated on chain and the fastest per point. "equilibrium" (the path-consistent limit of short
    # rounds) costs ~0.1-1.5 s a point on the default devnet; "fixed-price" is the pessimistic view.
    curve_mode: str = "sequential"
    # Price-impact recovery half-lives between sequential rounds, {asset: seconds}; None = none.
    recovery: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if not self.shocks:
            raise InputError("report settings: at least one shock is needed")
        for s in self.shocks:
            if not (isinstance(s, (int, float)) and 0.0 < s < 1.0):
                raise InputError(f"report settings: shock {s!r} must be a fraction in (0, 1)")
        if not 0.0 < self.max_shock < 1.0:
            raise InputError(f"report settings: max_shock {self.max_shock!r} must be in (0, 1)")
        if self.curve_points < 10:
            raise InputError(f"report settings: curve_points {self.curve_points} must be >= 10")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"report settings: workers {self.workers} must be >= 1")
        if not 0.0 < self.cliff_shock_tol < 0.01:
            raise InputError(f"report settings: cliff_shock_tol {self.cliff_shock_tol!r} must be in (0, 0.01)")
        for a, h in (self.recovery or {}).items():
            if isinstance(h, bool) or not isinstance(h, (int, float)) or not (math.isfinite(h) and h > 0):
                raise InputError(f"report settings: recovery half-life of {a} must be a positive number of seconds, got {h!r}")
        if self.curve_mode not in ("sequential", "equilibrium", "fixed-price"):
            raise InputError(f"report settings: curve_mode must be sequential, equilibrium or fixed-price, "
                             f"got {self.curve_mode!r}")
        if self.liquidators not in ("profitable", "all"):
            raise InputError(f"report settings: liquidators must be profitable or all, got {self.liquidators!r}")
        for name in ("gas_usd", "min_profit_usd"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"report settings: {name} {v!r} must be a finite number >= 0")
            if v is not None and self.liquidators == "all":
                raise InputError(f"report settings: {name} applies only with liquidators 'profitable'")
        if self.top_accounts < 1 or self.level_bins < 2:
            raise InputError("report settings: top_accounts must be >= 1 and level_bins >= 2")
        lo, hi = self.level_range
        if not 0.0 <= lo < 1.0 < hi:
            raise InputError(f"report settings: level_range {self.level_range} must satisfy 0 <= lo < 1 < hi")
        # Canonical order, no duplicates: scenario tables and history keys depend on it.
        object.__setattr__(self, "shocks", tuple(sorted({round(float(s), 10) for s in self.shocks})))

    def with_shocks(self, extra: Iterable[float]) -> "ReportSettings":
        return dataclasses.replace(self, shocks=tuple(self.shocks) + tuple(extra))


@dataclass(frozen=True)
class SourceInfo:
    """Where the snapshot came from. `label` must already be redacted (see defirisk.redact)."""

    kind: str                      # "snapshot" | "rpc" | "devnet"
    label: str                     # a directory, or a redacted RPC URL
    snapshot_dir: str | None = None


# ---------------------------------------------------------------------------------------------------
# Reading the snapshot model (defirisk.model). Kept in one place so a model change is one edit here.

def _manifest(snapshot: Any) -> dict[str, Any]:
    manifest = getattr(snapshot, "manifest", None)
    if manifest is None:
        return {}
    if isinstance(manifest, Mapping):
        return dict(manifest)
    if dataclasses.is_dataclass(manifest):
        return dataclasses.asdict(manifest)
    return dict(vars(manifest))


def _asset_prices(snapshot: Any) -> dict[str, float]:
    assets = snapshot.assets
    items = assets.values() if isinstance(assets, Mapping) else assets
    return {a.symbol: float(a.price_usd) for a in items}


def _volatile_assets(snapshot: Any) -> list[str]:
    """Assets with a venue (design.md: only those move; the rest keep their price), in assets order."""
    venues = snapshot.venues
    prices = _asset_prices(snapshot)
    return [sym for sym in prices if sym in venues]


# ---------------------------------------------------------------------------------------------------
# Small conversions

def _num(x: Any) -> float | None:
    """JSON-safe float: NaN/inf become None (JSON has no NaN; the schema says null)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _plain(x: Any) -> Any:
    """numpy/pandas scalars and containers -> plain JSON types."""
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _plain(dataclasses.asdict(x))
    return x


def _records(df: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    return [{c: _plain(row[c]) for c in columns} for _, row in df[list(columns)].iterrows()]


def _totals(t: Any) -> dict[str, Any]:
    return {
        "liquidated_collateral_usd": _num(t.liquidated_collateral_usd),
        "debt_repaid_usd": _num(t.debt_repaid_usd),
        "bad_debt_usd": _num(t.bad_debt_usd),
        "accounts_liquidated": int(t.accounts_liquidated),
    }


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------------
# Sections

def _policy(settings: ReportSettings) -> Any:
    from defirisk.solver.economics import make_policy

    return make_policy(settings.liquidators, gas_usd=settings.gas_usd, min_profit_usd=settings.min_profit_usd)


def _not_liquidated(result: Any) -> dict[str, Any]:
    """Liquidatable, not liquidated at the end of the cascade (debt USD, of which underwater); null when
    the mode does not report it (its result records no liquidator policy)."""
    known = "liquidators" in (getattr(result, "assumptions", None) or {})
    nl = getattr(result, "not_liquidated", None)
    return {"not_liquidated_debt_usd": _num(result.not_liquidated_debt_usd) if known else None,
            "not_liquidated_underwater_debt_usd": _num(result.not_liquidated_underwater_usd) if known else None,
            "not_liquidated_accounts": int(len(nl)) if known and nl is not None else None}


def _scenario_row(result: Any, shock: float, mode: str, asset: str | None) -> dict[str, Any]:
    row = {"shock": shock, "mode": mode, **_totals(result.totals),
           "converged": bool(result.converged), "iterations": int(result.iterations),
           "rounds": int(result.rounds), **_not_liquidated(result),
           "by_protocol": {p: _totals(t) for p, t in sorted(result.by_protocol.items())}}
    if asset is not None:
        row["shocked_price"] = _num(result.shocked_prices.get(asset))
        row["end_price"] = _num(result.end_prices.get(asset))
    else:
        row["end_prices"] = {a: _num(p) for a, p in sorted(result.end_prices.items())}
    return row


def _scenarios(solver: Any, snapshot: Any, prep: Any, assets: Sequence[str], settings: ReportSettings,
               single: str | None) -> list[dict[str, Any]]:
    rows = []
    policy = _policy(settings)
    for shock in settings.shocks:
        shocks = {single: shock} if single is not None else {a: shock for a in assets}
        for mode in MODES:
            result = solver.solve(snapshot, shocks, mode=mode, prepared=prep, liquidators=policy,
                                  recovery=settings.recovery if mode == "sequential" else None)
            rows.append(_scenario_row(result, shock, mode, single))
    return rows


def market_model(prep: Any, settings: ReportSettings) -> dict[str, Any]:
    """What the market the cascades run in is made of: each market's protocol oracle formulas (those
    markets.json states), the routes through cross venues, and the recovery half-lives used."""
    oracles = {f"{b.protocol}/{b.market}": b.oracle.describe() for b in prep.books if b.oracle.specs}
    rt = prep.router
    routes = sorted(f"{prep.symbols[j]} -> {prep.symbols[w]}" for (j, w) in rt.cross) if rt is not None else []
    return {"protocol_oracles": oracles, "routes": routes,
            "recovery_halflife_s": {a: float(h) for a, h in sorted((settings.recovery or {}).items())}}


def _equilibrium_band() -> float:
    from defirisk.solver.descent import DEFAULT_BAND

    return DEFAULT_BAND


def _levels(levels: pd.DataFrame, price: float, settings: ReportSettings) -> dict[str, Any]:
    lo, hi = settings.level_range
    edges = np.linspace(price * lo, price * hi, settings.level_bins + 1)
    lp = levels["liquidation_price"].to_numpy(dtype=float)
    finite = np.isfinite(lp) & (lp > 0)
    inside = finite & (lp >= edges[0]) & (lp <= edges[-1])
    by_protocol = {}
    for proto in sorted(levels.loc[inside, "protocol"].unique()):
        sel = inside & (levels["protocol"].to_numpy() == proto)
        hist, _ = np.histogram(lp[sel], bins=edges, weights=levels["collateral_usd"].to_numpy(dtype=float)[sel])
        by_protocol[str(proto)] = [float(v) for v in hist]
    return {
        "bin_edges_usd": [float(e) for e in edges],
        "collateral_usd_by_protocol": by_protocol,
        "positions_with_level": int(finite.sum()),
        "positions_outside_range": int((finite & ~inside).sum()),
    }


def _at_risk(levels: pd.DataFrame, price: float, settings: ReportSettings,
             now_keys: set[tuple[str, str, str]]) -> list[dict[str, Any]]:
    lp = levels["liquidation_price"].to_numpy(dtype=float)
    floor = price * (1.0 - settings.at_risk_shock)
    # A level above today's price means either "already liquidatable" (the asset is collateral) or
    # "liquidated if the price RISES" (the asset is debt). Only the first is at risk from a drop, and
    # it is exactly the set liquidatable now.
    keys = list(zip(levels["protocol"], levels["market"], levels["account"]))
    is_now = np.fromiter((k in now_keys for k in keys), dtype=bool, count=len(keys))
    sel = np.isfinite(lp) & (lp >= floor) & ((lp <= price) | is_now)
    df = levels.loc[sel].copy()
    df["distance"] = 1.0 - df["liquidation_price"] / price
    df = df.sort_values(["debt_usd", "distance"], ascending=[False, True]).head(settings.top_accounts)
    return _records(df, ["protocol", "market", "account", "liquidation_price", "distance", "collateral_usd", "debt_usd"])


def _cliff_dict(c: Any) -> dict[str, Any]:
    d = {
        "trigger_shock": _num(c.trigger_shock),
        "trigger_price": _num(c.trigger_price),
        "end_price_before": _num(c.end_price_before),
        "end_price": _num(c.end_price),
        "protocols": [str(p) for p in c.protocols],
        "liquidated_collateral_usd": _num(c.liquidated_collateral_usd),
        "bad_debt_usd": _num(c.bad_debt_usd),
    }
    attribution = getattr(c, "attribution", None)
    if attribution is not None:
        d["attribution"] = _plain(attribution)
    # what jumped (docs/model.md, "Curves and cliffs"): a solver without these fields gives a single jump
    # of the curve asset's own price
    end_shock = getattr(c, "end_shock", None)
    d["end_shock"] = _num(c.trigger_shock if end_shock is None else end_shock)
    d["steps"] = [_num(s) for s in getattr(c, "steps", ())] or [d["trigger_shock"]]
    d["assets_moved"] = [{"asset": str(a["asset"]), "end_price_before": _num(a["end_price_before"]),
                          "end_price": _num(a["end_price"])} for a in getattr(c, "assets_moved", ())]
    d["jumps"] = [{"quantity": str(q["quantity"]), "asset": None if q.get("asset") is None else str(q["asset"]),
                   "before": _num(q["before"]), "after": _num(q["after"]), "jump": _num(q["jump"]),
                   "threshold": _num(q["threshold"])} for q in getattr(c, "jumps", ())]
    return d


def _asset_section(solver: Any, snapshot: Any, prep: Any, asset: str, price: float, settings: ReportSettings,
                   now_keys: set[tuple[str, str, str]]) -> dict[str, Any]:
    levels = solver.liquidation_levels(snapshot, asset, prepared=prep)
    curve = solver.cascade_curve(snapshot, asset, max_shock=settings.max_shock, points=settings.curve_points,
                                 mode=settings.curve_mode, shock_tol=settings.cliff_shock_tol, prepared=prep,
                                 liquidators=_policy(settings),
                                 recovery=settings.recovery if settings.curve_mode == "sequential" else None)
    cdf = curve.curve
    cliffs = sorted((_cliff_dict(c) for c in curve.cliffs), key=lambda c: c["trigger_shock"])
    nearest = dict(cliffs[0]) if cliffs else None
    if nearest is not None:
        nearest["distance"] = nearest["trigger_shock"]
    return {
        "price_usd": price,
        "levels": _levels(levels, price, settings),
        "at_risk_accounts": _at_risk(levels, price, settings, now_keys),
        "curve": {c: [_num(v) for v in cdf[c].to_numpy(dtype=float)]
                  for c in ("shock", "shocked_price", "end_price", "liquidated_collateral_usd", "bad_debt_usd")},
        "curve_mode": str(getattr(curve, "mode", settings.curve_mode)),
        "curve_method": getattr(curve, "method", None),
        "curve_converged": bool(getattr(curve, "converged", True)),
        "cliffs": cliffs,
        "nearest_cliff": nearest,
        "scenarios": _scenarios(solver, snapshot, prep, [asset], settings, single=asset),
        "depth": depth_section(snapshot, asset),
    }


# The market-price moves the depth statement sizes (a fall of 2% and of 10% from today's price).
DEPTH_MOVES = (0.02, 0.10)


def depth_section(snapshot: Any, asset: str) -> dict[str, Any]:
    """Which depth an asset's sales are routed over (on-chain venues, off-chain `depth_curve`s from a
    --depth file) and the USD that moves its market price by each of DEPTH_MOVES: tokens to sell from
    today's state (AssetCurve.amount_to_price at price x (1 - move), routed over the venues) times
    today's price (the snapshot's price_usd, the convention of the quotes' usd_sold), on the on-chain
    venues alone and with the off-chain depth. null where there is no such venue."""
    from defirisk.markets.impact import build_asset_curve
    from defirisk.model import OFF_CHAIN_VENUE_KINDS

    venues = tuple(snapshot.venues.get(asset, ()))
    on = tuple(v for v in venues if v.kind not in OFF_CHAIN_VENUE_KINDS)
    off = tuple(v for v in venues if v.kind in OFF_CHAIN_VENUE_KINDS)
    price = float(snapshot.assets[asset].price_usd)

    def usd_to_move(vs: Sequence[Any], move: float) -> float | None:
        if not vs:
            return None
        curve = build_asset_curve(vs, snapshot.assets, asset)
        return _num(float(curve.amount_to_price(curve.init_state(), price * (1.0 - move))) * price)

    off_rows = []
    for v in off:
        pts = [(float(u), float(i)) for u, i in v.params.get("points", ())]
        pts = [p for p in pts if p[0] > 0]
        off_rows.append({"source": str(v.params.get("source", "venues.json")),
                         "reference_price_usd": _num(v.params.get("reference_price", price)),
                         "points": len(pts), "max_usd_sold": _num(pts[-1][0]) if pts else None,
                         "max_impact": _num(pts[-1][1]) if pts else None})
    used = ("on-chain" if not off else "on-chain+off-chain" if on else "off-chain")
    moves = []
    for m in DEPTH_MOVES:
        moves.append({"move": m, "on_chain_usd": usd_to_move(on, m),
                      "with_off_chain_usd": usd_to_move(venues, m) if off else None,
                      # the off-chain curve is used past its last quoted point (its last slope extended)
                      "beyond_quotes": bool(off) and any(r["max_impact"] is not None and m > r["max_impact"]
                                                         for r in off_rows)})
    return {"used": used, "on_chain_venues": len(on), "on_chain_kinds": sorted({v.kind for v in on}),
            "off_chain": off_rows, "price_usd": price, "usd_to_move": moves}


def _protocol_table(hf: pd.DataFrame, now: pd.DataFrame, market_wide: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    ref = {row["mode"]: row for row in market_wide if math.isclose(row["shock"], REFERENCE_SHOCK)}
    rows = []
    for proto, g in hf.groupby("protocol", sort=True):
        n = now[now["protocol"] == proto]
        hfv = g["health_factor"].to_numpy(dtype=float)
        hfv = hfv[np.isfinite(hfv)]
        row = {
            "protocol": str(proto),
            "markets": int(g["market"].nunique()),
            "accounts": int(len(g)),
            "collateral_usd": _num(g["collateral_usd"].sum()),
            "debt_usd": _num(g["debt_usd"].sum()),
            "min_health_factor": _num(hfv.min()) if hfv.size else None,
            "liquidatable_now": int(len(n)),
            "liquidatable_now_debt_usd": _num(n["debt_usd"].sum()),
        }
        for mode in MODES:
            t = ref.get(mode, {}).get("by_protocol", {}).get(str(proto))
            row[f"liquidated_usd_at_ref_{mode}"] = t["liquidated_collateral_usd"] if t else (0.0 if mode in ref else None)
            row[f"bad_debt_usd_at_ref_{mode}"] = t["bad_debt_usd"] if t else (0.0 if mode in ref else None)
        rows.append(row)
    return rows


# Per-asset sections are independent: with several cores they run in forked worker processes.
# Fork (not spawn) because the worker context (a Snapshot with read-only mappings, the solver's prepared
# arrays) is inherited, never pickled; only an asset name goes in and a JSON-ready dict comes out.
_JOB_CONTEXT: tuple | None = None


def _init_worker(context: tuple) -> None:
    global _JOB_CONTEXT
    _JOB_CONTEXT = context


def _run_job(job: str | None, context: tuple | None = None) -> Any:
    solver, snapshot, prep, volatile, prices, settings, now_keys = context or _JOB_CONTEXT
    if job is None:
        return _scenarios(solver, snapshot, prep, volatile, settings, single=None) if volatile else []
    return _asset_section(solver, snapshot, prep, job, prices[job], settings, now_keys)


def _job_name(job: str | None) -> str:
    return "market-wide shocks" if job is None else f"{job}: levels, curve, cliffs, shocks"


def _run_jobs(jobs: list, context: tuple, workers: int | None, progress=None) -> list:
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    say = progress or (lambda stage, done, total: None)
    n = min(len(jobs), workers if workers is not None else (os.cpu_count() or 1))
    if n <= 1 or len(jobs) <= 1 or "fork" not in mp.get_all_start_methods():
        out = []
        for i, j in enumerate(jobs):
            out.append(_run_job(j, context))
            say(f"solved {_job_name(j)}", i + 1, len(jobs))
        return out
    with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("fork"),
                             initializer=_init_worker, initargs=(context,)) as pool:
        futures = {pool.submit(_run_job, j): i for i, j in enumerate(jobs)}
        results: list = [None] * len(jobs)
        for done, f in enumerate(as_completed(futures), 1):
            results[futures[f]] = f.result()
            say(f"solved {_job_name(jobs[futures[f]])}", done, len(jobs))
        return results


def key_figures(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The flat figures stored in history and compared run to run. Keys are stable strings."""
    f: dict[str, float | None] = {
        "total_collateral_usd": report["summary"]["total_collateral_usd"],
        "total_debt_usd": report["summary"]["total_debt_usd"],
        "accounts": report["summary"]["accounts"],
        "liquidatable_now.count": report["liquidatable_now"]["count"],
        "liquidatable_now.debt_usd": report["liquidatable_now"]["debt_usd"],
        "nearest_cliff.shock": (report["summary"]["nearest_cliff"] or {}).get("trigger_shock"),
    }
    for asset, a in report["assets"].items():
        f[f"{asset}.price_usd"] = a["price_usd"]
        f[f"{asset}.cliffs"] = len(a["cliffs"])
        f[f"{asset}.nearest_cliff.shock"] = (a["nearest_cliff"] or {}).get("trigger_shock")
        for row in a["scenarios"]:
            stem = f"{asset}.{row['mode']}@{row['shock']:g}"
            f[f"{stem}.liquidated_usd"] = row["liquidated_collateral_usd"]
            f[f"{stem}.bad_debt_usd"] = row["bad_debt_usd"]
    for row in report["market_wide"]["scenarios"]:
        stem = f"all.{row['mode']}@{row['shock']:g}"
        f[f"{stem}.liquidated_usd"] = row["liquidated_collateral_usd"]
        f[f"{stem}.bad_debt_usd"] = row["bad_debt_usd"]
    return {k: (None if v is None else float(v)) for k, v in f.items()}


def history_scope(report: Mapping[str, Any]) -> str:
    """Runs are compared within a scope: the chain when known, else the (redacted) source label."""
    src = report["source"]
    return f"chain:{src['chain_id']}" if src.get("chain_id") is not None else f"source:{src['label']}"


def build_report(snapshot: Any, source: SourceInfo, settings: ReportSettings | None = None, *,
                 previous: PreviousRun | None = None, generated_at: str | None = None,
                 progress=None) -> dict[str, Any]:
    """Compute the whole report for `snapshot`. Returns the JSON-ready report dict (no alerts yet:
    `defirisk.report.run` evaluates them on this dict and adds the `alerts` section).
    `progress(stage, done, total)`, if given, hears each solved asset section."""
    from defirisk import solver  # imported here: the report package must import without the solver

    settings = settings or ReportSettings()
    policy = _policy(settings)   # checked before any solve
    t0 = time.perf_counter()
    prices = _asset_prices(snapshot)
    volatile = _volatile_assets(snapshot)
    manifest = _manifest(snapshot)

    prep = solver.prepare(snapshot)   # shared by every call below: the snapshot is read once
    hf = solver.health_factors(snapshot, prepared=prep)
    now = solver.liquidatable_now(snapshot, prepared=prep)
    now_keys = set(zip(now["protocol"], now["market"], now["account"]))
    jobs = [None, *volatile]   # None = the market-wide scenarios
    results = _run_jobs(jobs, (solver, snapshot, prep, volatile, prices, settings, now_keys), settings.workers,
                        progress)
    market_wide = results[0] if volatile else []
    assets = dict(zip(volatile, results[1:]))

    nearest = None
    for asset, sec in assets.items():
        c = sec["nearest_cliff"]
        if c is not None and (nearest is None or c["trigger_shock"] < nearest["trigger_shock"]):
            nearest = {"asset": asset, **c}

    now_sorted = now.sort_values("debt_usd", ascending=False)
    cols = ["protocol", "market", "account", "health_factor", "collateral_usd", "debt_usd"]
    timestamp = manifest.get("timestamp")
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": generated_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": {"name": "defirisk", "version": __version__},
        "source": {
            "kind": source.kind,
            "label": source.label,
            "chain_id": manifest.get("chain_id"),
            "block_number": manifest.get("block_number"),
            "block_hash": manifest.get("block_hash"),
            "timestamp": timestamp,
            "time_utc": _iso(timestamp),
            "snapshot_format": manifest.get("format"),
        },
        "settings": {
            "shocks": list(settings.shocks), "modes": list(MODES), "max_shock": settings.max_shock,
            "curve_points": settings.curve_points, "top_accounts": settings.top_accounts,
            "at_risk_shock": settings.at_risk_shock, "reference_shock": REFERENCE_SHOCK,
            "cliff_shock_tol": settings.cliff_shock_tol,
            "curve_mode": settings.curve_mode, "equilibrium_band": _equilibrium_band(),
            "recovery_halflife_s": {a: float(h) for a, h in sorted((settings.recovery or {}).items())},
            "liquidators": _plain(dataclasses.asdict(policy)),
        },
        "summary": {
            "volatile_assets": volatile,
            "prices_usd": {a: _num(p) for a, p in prices.items()},
            "accounts": int(len(hf)),
            "total_collateral_usd": _num(hf["collateral_usd"].sum()),
            "total_debt_usd": _num(hf["debt_usd"].sum()),
            "nearest_cliff": nearest,
            # Markets the readers could not read (manifest `skipped_markets`): their positions are
            # absent from every figure, which a reader of the totals must see.
            "skipped_markets": [dict(m) for m in (manifest.get("skipped_markets") or [])],
            # --depth FILE: the off-chain depth file routed with the on-chain pools (file name only)
            "off_chain_depth": _plain(manifest.get("off_chain_depth")),
            "market_model": market_model(prep, settings),
        },
        "liquidatable_now": {
            "count": int(len(now)),
            "debt_usd": _num(now["debt_usd"].sum()) or 0.0,
            "collateral_usd": _num(now["collateral_usd"].sum()) or 0.0,
            "top": _records(now_sorted.head(settings.top_accounts), cols),
        },
        "at_risk_accounts": _records(
            hf[np.isfinite(hf["health_factor"].to_numpy(dtype=float))]
            .sort_values(["health_factor", "debt_usd"], ascending=[True, False])
            .head(settings.top_accounts), cols),
        "protocols": _protocol_table(hf, now, market_wide),
        "market_wide": {"assets": volatile, "scenarios": market_wide},
        "assets": assets,
    }
    report["figures"] = key_figures(report)
    report["changes"] = {
        "previous_run": None if previous is None else {
            "run_id": previous.run_id, "generated_at": previous.generated_at,
            "block_number": previous.block_number, "block_timestamp": previous.block_timestamp,
            "time_utc": _iso(previous.block_timestamp)},
        "figures": diff_figures(report["figures"], previous),
        "cliffs_added": [], "cliffs_removed": [],
    }
    if previous is not None:
        report["changes"].update(_cliff_changes(assets, previous.cliffs))
    report["timing"] = {"build_s": round(time.perf_counter() - t0, 3)}
    return report


def _cliff_changes(assets: Mapping[str, Any], previous: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Cliffs matched by asset and trigger shock (within 1 point): what appeared and what vanished."""
    def key(asset: str, shock: float) -> tuple[str, float]:
        return asset, round(shock * 100)

    now = {key(a, c["trigger_shock"]): {"asset": a, **c} for a, sec in assets.items() for c in sec["cliffs"]}
    before = {key(c["asset"], c["trigger_shock"]): dict(c) for c in previous}
    return {"cliffs_added": [now[k] for k in sorted(now.keys() - before.keys())],
            "cliffs_removed": [before[k] for k in sorted(before.keys() - now.keys())]}
