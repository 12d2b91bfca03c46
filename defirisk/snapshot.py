"""Read and write a snapshot directory, format v1 (docs/snapshot-format.md).

Hand-written directories load exactly like generated ones. Every problem is an InputError that names
the file, the line (1-based, header = line 1) and the column, so an analyst can fix it by hand.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from defirisk.errors import InputError
from defirisk.model import (
    POSITION_COLUMNS,
    PROTOCOLS,
    SIDES,
    SNAPSHOT_FORMAT,
    Asset,
    MarketParams,
    Positions,
    Snapshot,
    Venue,
    thaw,
)

MANIFEST_KEYS = ("format", "chain_id", "block_number", "block_hash", "timestamp", "source")
ASSET_COLUMNS = ("symbol", "address", "decimals", "price_usd")
# Above this many rows write_snapshot stores positions as Parquet (CSV of 1M rows is ~60 MB and slow).
PARQUET_MIN_ROWS = 200_000


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: file missing") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _load_manifest(d: Path) -> dict:
    m = _read_json(d / "manifest.json")
    if not isinstance(m, dict):
        raise InputError(f"{d / 'manifest.json'}: expected a JSON object")
    if m.get("format") != SNAPSHOT_FORMAT:
        raise InputError(f"{d / 'manifest.json'}: field format must be {SNAPSHOT_FORMAT!r}, got {m.get('format')!r}")
    for k in MANIFEST_KEYS:
        m.setdefault(k, None)
    return m


def _float_field(path: Path, line: int, col: str, raw: str, *, positive: bool = False, default: float | None = None) -> float:
    if (raw is None or raw.strip() == "") and default is not None:
        return default
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"{path} line {line}, column {col}: not a number: {raw!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise InputError(f"{path} line {line}, column {col}: must be {'> 0' if positive else '>= 0'} and finite, got {raw!r}")
    return v


def _load_assets(d: Path) -> dict[str, Asset]:
    path = d / "assets.csv"
    if not path.exists():
        raise InputError(f"{path}: file missing")
    out: dict[str, Asset] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ASSET_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path} line 1: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            sym = (row["symbol"] or "").strip()
            if not sym:
                raise InputError(f"{path} line {line}, column symbol: empty")
            if sym in out:
                raise InputError(f"{path} line {line}, column symbol: duplicate asset {sym!r}")
            try:
                decimals = int(row["decimals"])
            except (TypeError, ValueError):
                raise InputError(f"{path} line {line}, column decimals: not an integer: {row['decimals']!r}") from None
            price = _float_field(path, line, "price_usd", row["price_usd"], positive=True)
            lag = _float_field(path, line, "oracle_lag_s", row.get("oracle_lag_s"), default=0.0)
            out[sym] = Asset(symbol=sym, decimals=decimals, price_usd=price,
                             address=(row["address"] or None), oracle=(row.get("oracle") or None), oracle_lag_s=lag)
    if not out:
        raise InputError(f"{path}: no assets")
    return out


def _load_positions(d: Path, assets: dict[str, Asset]) -> Positions:
    pq, cs = d / "positions.parquet", d / "positions.csv"
    if pq.exists() and cs.exists():
        raise InputError(f"{d}: both positions.csv and positions.parquet present; keep exactly one")
    if pq.exists():
        path = pq
        frame = pd.read_parquet(pq)
    elif cs.exists():
        path = cs
        try:
            frame = pd.read_csv(cs, dtype={"protocol": str, "market": str, "account": str, "asset": str, "side": str},
                                keep_default_na=False)
        except pd.errors.ParserError as exc:
            raise InputError(f"{cs}: malformed CSV: {exc}") from None
    else:
        raise InputError(f"{d}: positions.csv (or positions.parquet) missing")
    missing = [c for c in POSITION_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path} line 1: missing column(s) {', '.join(missing)}")
    if len(frame) == 0:
        return Positions(frame)
    line0 = 2  # first data line
    amount = pd.to_numeric(frame["amount"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(amount) | (amount < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path} line {i + line0}, column amount: must be a finite number >= 0, got {frame['amount'].iloc[i]!r}")
    side = frame["side"].astype(str).to_numpy()
    bad = ~np.isin(side, SIDES)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path} line {i + line0}, column side: must be collateral or debt, got {side[i]!r}")
    proto = frame["protocol"].astype(str).to_numpy()
    bad = ~np.isin(proto, PROTOCOLS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path} line {i + line0}, column protocol: unknown protocol {proto[i]!r} (known: {', '.join(PROTOCOLS)})")
    asset = frame["asset"].astype(str).to_numpy()
    bad = ~np.isin(asset, list(assets))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path} line {i + line0}, column asset: {asset[i]!r} is not in assets.csv")
    for col in ("market", "account"):
        vals = frame[col].astype(str).to_numpy()
        bad = vals == ""
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{path} line {i + line0}, column {col}: empty")
    if "emode" in frame.columns:
        raw = frame["emode"].replace("", np.nan) if frame["emode"].dtype == object else frame["emode"]
        em = pd.to_numeric(raw, errors="coerce")
        bad = (em.notna() & ((em < 0) | (em != np.floor(em)))).to_numpy() | (raw.notna() & em.isna()).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{path} line {i + line0}, column emode: must be a non-negative integer, got {frame['emode'].iloc[i]!r}")
        frame = frame.assign(emode=em.fillna(0).astype(np.int64))
    frame = frame.assign(amount=amount)
    return Positions(frame)


def _load_markets(d: Path) -> list[MarketParams]:
    path = d / "markets.json"
    data = _read_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of markets")
    out = []
    for i, m in enumerate(data):
        where = f"{path} entry {i}"
        if not isinstance(m, dict):
            raise InputError(f"{where}: expected an object")
        for k in ("protocol", "market"):
            if not isinstance(m.get(k), str) or not m.get(k):
                raise InputError(f"{where}: field {k} missing or not a string")
        if m["protocol"] not in PROTOCOLS:
            raise InputError(f"{where}, field protocol: unknown protocol {m['protocol']!r} (known: {', '.join(PROTOCOLS)})")
        params = m.get("params", {}) or {}
        assets = m.get("assets", {}) or {}
        if not isinstance(params, dict) or not isinstance(assets, dict):
            raise InputError(f"{where}: params and assets must be objects")
        out.append(MarketParams(m["protocol"], m["market"], params, assets))
    return out


def _load_venues(d: Path) -> dict[str, tuple[Venue, ...]]:
    path = d / "venues.json"
    if not path.exists():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object keyed by asset symbol")
    out: dict[str, tuple[Venue, ...]] = {}
    for sym, spec in data.items():
        specs = spec if isinstance(spec, list) else [spec]
        if not specs:
            raise InputError(f"{path}, asset {sym}: empty venue list")
        venues = []
        for j, v in enumerate(specs):
            if not isinstance(v, dict) or "kind" not in v:
                raise InputError(f"{path}, asset {sym}, venue {j}: expected an object with a 'kind'")
            params = {k: val for k, val in v.items() if k != "kind"}
            try:
                venues.append(Venue(sym, v["kind"], params))
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from None
        out[sym] = tuple(venues)
    return out


def load_snapshot(path: str | os.PathLike) -> Snapshot:
    """Load a snapshot directory (format v1). Raises InputError naming the file/line/column at fault."""
    d = Path(path)
    if not d.is_dir():
        raise InputError(f"{d}: not a snapshot directory")
    manifest = _load_manifest(d)
    assets = _load_assets(d)
    positions = _load_positions(d, assets)
    markets = _load_markets(d)
    venues = _load_venues(d)
    snap = Snapshot(manifest=manifest, assets=assets, positions=positions, markets=tuple(markets), venues=venues)
    # Every oracle formula and venue curve is validated now (named by market, asset, field), not mid-solve.
    from defirisk.markets.impact import build_asset_curve
    from defirisk.solver.oracles import BookOracle

    for m in snap.markets:
        try:
            BookOracle(m, snap.symbols)
        except InputError as exc:
            msg = str(exc)
            raise InputError(f"{d / 'markets.json'}{msg[len('markets.json'):]}" if msg.startswith("markets.json") else msg) from None

    for sym, vs in snap.venues.items():
        try:
            build_asset_curve(vs, snap.assets, sym)
        except InputError as exc:
            raise InputError(f"{d / 'venues.json'}: {exc}") from None
    # the routes: every venue's quote is known and cross venues form no cycle
    from defirisk.solver.routing import build_router

    try:
        build_router(snap, snap.symbols, np.array([a.price_usd for _, a in sorted(snap.assets.items())]))
    except InputError as exc:
        msg = str(exc)
        raise InputError(f"{d / 'venues.json'}{msg[len('venues.json'):]}" if msg.startswith("venues.json") else msg) from None
    return snap


def _venue_json(v: Venue) -> dict:
    return {"kind": v.kind, **thaw(v.params)}


def _check_replaceable(target: Path) -> None:
    """Replacing is for snapshots only: an existing file, or a non-empty directory that is not a
    defirisk snapshot (no manifest.json of our format), is refused rather than deleted."""
    if not target.exists():
        return
    if not target.is_dir():
        raise InputError(f"{target}: exists and is not a directory; refusing to replace it with a snapshot")
    if not any(target.iterdir()):
        return
    manifest = target / "manifest.json"
    try:
        fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format", "")
    except (OSError, ValueError, AttributeError):
        fmt = ""
    if not str(fmt).startswith("defirisk-snapshot/"):
        raise InputError(f"{target}: exists, is not empty and is not a defirisk snapshot directory (no "
                         f"manifest.json with format {SNAPSHOT_FORMAT}); refusing to replace it — "
                         f"choose a new or empty directory")


def write_snapshot(snapshot: Snapshot, path: str | os.PathLike, *, positions_format: str = "auto") -> Path:
    """Write `snapshot` to directory `path` atomically.

    Files go to a temporary directory beside `path` (manifest.json last), which then replaces `path`
    by rename, so a reader never sees a partial directory that looks complete. An existing `path` is
    replaced only if it is empty or a defirisk snapshot (InputError otherwise). `positions_format`:
    "csv", "parquet" or "auto" (Parquet from PARQUET_MIN_ROWS rows).
    """
    if positions_format not in ("auto", "csv", "parquet"):
        raise InputError(f"positions_format must be auto, csv or parquet, got {positions_format!r}")
    target = Path(path)
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the published directory gets normal permissions
    try:
        with open(tmp / "assets.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow([*ASSET_COLUMNS, "oracle", "oracle_lag_s"])
            for sym in sorted(snapshot.assets):
                a = snapshot.assets[sym]
                w.writerow([a.symbol, a.address or "", a.decimals, repr(float(a.price_usd)), a.oracle or "", repr(float(a.oracle_lag_s))])
        frame = snapshot.positions.frame
        cols = list(POSITION_COLUMNS)
        if (frame["emode"] != 0).any():
            cols.append("emode")
        fmt = positions_format
        if fmt == "auto":
            fmt = "parquet" if len(frame) >= PARQUET_MIN_ROWS else "csv"
        if fmt == "parquet":
            frame[cols].to_parquet(tmp / "positions.parquet", index=False)
        else:
            frame[cols].to_csv(tmp / "positions.csv", index=False, float_format="%.17g")
        markets = [{"protocol": m.protocol, "market": m.market, "params": thaw(m.params), "assets": thaw(m.assets)}
                   for m in snapshot.markets]
        (tmp / "markets.json").write_text(json.dumps(markets, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        venues = {}
        for sym in sorted(snapshot.venues):
            vs = snapshot.venues[sym]
            venues[sym] = _venue_json(vs[0]) if len(vs) == 1 else [_venue_json(v) for v in vs]
        (tmp / "venues.json").write_text(json.dumps(venues, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        manifest = {k: thaw(snapshot.manifest).get(k) for k in MANIFEST_KEYS}
        manifest.update({k: v for k, v in thaw(snapshot.manifest).items() if k not in manifest})
        manifest["format"] = SNAPSHOT_FORMAT
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rmdir(old)
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
