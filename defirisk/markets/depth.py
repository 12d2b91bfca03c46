"""Off-chain depth from a file (`--depth FILE`): CSV `asset,usd_sold,impact` -> `depth_curve` venues.

Each asset's rows are one quoted depth curve (aggregator quotes, an exchange's order book, a risk
provider's slippage map): selling `usd_sold` USD (at the snapshot price) moves the market price by the
fraction `impact` (docs/model.md, "depth_curve"). The curve becomes one more venue of that asset, routed
together with its on-chain pools. Every problem is an InputError naming the file, the line (1-based,
physical lines), the asset and the field; reading the file needs no snapshot, so a bad file fails
before any slow chain read, and `apply_depth` then checks the assets against the snapshot.

Format: a header line naming the columns `asset`, `usd_sold`, `impact` (any order; other columns are
ignored), then one row per point, several per asset, in any order (each asset's points are sorted by
usd_sold). Blank lines and lines starting with `#` are skipped. `impact` is a fraction (0.02) or a
percentage with a `%` sign (2%).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from defirisk.errors import InputError
from defirisk.model import OFF_CHAIN_VENUE_KINDS, Snapshot, Venue

COLUMNS = ("asset", "usd_sold", "impact")
KIND = OFF_CHAIN_VENUE_KINDS[0]   # "depth_curve"


@dataclass(frozen=True)
class DepthCurveRows:
    """One asset's quoted points, sorted by usd_sold, with the file line of each point."""

    asset: str
    points: tuple[tuple[float, float], ...]
    lines: tuple[int, ...]
    first_line: int

    @property
    def max_usd(self) -> float:
        return self.points[-1][0]

    @property
    def max_impact(self) -> float:
        return self.points[-1][1]


@dataclass(frozen=True)
class DepthFile:
    """A parsed depth file. `name` is the file name only (what results and reports record: a full path
    can say more about a machine than a report should)."""

    name: str
    curves: Mapping[str, DepthCurveRows]

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: the file name and, per asset, its points and quoted range."""
        return {"file": self.name,
                "assets": {s: {"points": len(c.points), "max_usd_sold": c.max_usd, "max_impact": c.max_impact}
                           for s, c in sorted(self.curves.items())}}


def _where(name: str, line: int, asset: str | None, field: str) -> str:
    return f"{name} line {line}, " + (f"asset {asset}, " if asset else "") + f"field {field}"


def _number(name: str, line: int, asset: str, field: str, raw: str, *, percent: bool = False) -> float:
    text = raw.strip()
    scale = 1.0
    if percent and text.endswith("%"):
        text, scale = text[:-1].strip(), 0.01
    try:
        v = float(text) * scale
    except ValueError:
        raise InputError(f"{_where(name, line, asset, field)}: not a number: {raw.strip()!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{_where(name, line, asset, field)}: must be finite, got {raw.strip()!r}")
    return v


def read_depth(path: str | os.PathLike) -> DepthFile:
    """Parse and check a depth file (syntax, numbers, ranges, monotone curves); assets are checked
    against a snapshot by `apply_depth`."""
    from defirisk.markets.impact import depth_points_problem

    p = Path(path)
    name = p.name or str(p)
    if not p.exists():
        raise InputError(f"depth file {p}: file missing")
    if not p.is_file():
        raise InputError(f"depth file {p}: not a file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"depth file {p}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"depth file {p}: cannot be read ({exc.strerror})") from None

    header: dict[str, int] | None = None
    rows: dict[str, list[tuple[float, float, int]]] = {}
    first: dict[str, int] = {}
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            cells = next(csv.reader([raw]))
        except csv.Error as exc:
            raise InputError(f"{name} line {line}: malformed CSV: {exc}") from None
        cells = [c.strip() for c in cells]
        if header is None:
            cols = [c.lower() for c in cells]
            missing = [c for c in COLUMNS if c not in cols]
            if missing:
                raise InputError(f"{name} line {line}: header must name the columns {', '.join(COLUMNS)}; "
                                 f"missing {', '.join(missing)} (got {', '.join(cells) or 'an empty line'})")
            header = {c: cols.index(c) for c in COLUMNS}
            continue
        asset = cells[header["asset"]] if header["asset"] < len(cells) else ""
        if not asset:
            raise InputError(f"{_where(name, line, None, 'asset')}: empty")
        vals = []
        for field in ("usd_sold", "impact"):
            k = header[field]
            if k >= len(cells) or cells[k] == "":
                raise InputError(f"{_where(name, line, asset, field)}: missing")
            vals.append(_number(name, line, asset, field, cells[k], percent=field == "impact"))
        usd, impact = vals
        if usd < 0:
            raise InputError(f"{_where(name, line, asset, 'usd_sold')}: must be >= 0, got {cells[header['usd_sold']]!r}")
        if not 0.0 <= impact < 1.0:
            raise InputError(f"{_where(name, line, asset, 'impact')}: {cells[header['impact']]!r} is outside [0, 1) "
                             "(a fraction of the price: 0.02 or 2% = a 2% fall)")
        rows.setdefault(asset, []).append((usd, impact, line))
        first.setdefault(asset, line)
    if header is None:
        raise InputError(f"depth file {p}: empty (expected a header line: {','.join(COLUMNS)})")
    if not rows:
        raise InputError(f"depth file {p}: no data rows after the header")

    curves: dict[str, DepthCurveRows] = {}
    for asset, pts in rows.items():
        pts.sort(key=lambda t: t[0])          # stable: equal usd_sold keep their file order
        for a, b in zip(pts, pts[1:]):
            if a[0] == b[0]:
                raise InputError(f"{_where(name, b[2], asset, 'usd_sold')}: {b[0]:g} appears twice for this asset "
                                 f"(also line {a[2]}); give one impact per size")
        problem = depth_points_problem([(u, i) for u, i, _ in pts])
        if problem is not None:
            j, field, msg, with_previous = problem
            where = _where(name, pts[j][2] if field != "points" else first[asset], asset, field)
            extra = f" (the previous point by usd_sold is on line {pts[j - 1][2]})" if with_previous and j > 0 else ""
            raise InputError(f"{where}: {msg}{extra}")
        kept = [(u, i, ln) for u, i, ln in pts if u > 0.0]
        curves[asset] = DepthCurveRows(asset, tuple((u, i) for u, i, _ in kept), tuple(ln for *_, ln in kept), first[asset])
    return DepthFile(name, curves)


def depth_venue(curve: DepthCurveRows, source: str) -> Venue:
    """The venue of one asset's quoted curve (`source` = the file name it came from)."""
    return Venue(curve.asset, KIND, {"points": [[u, i] for u, i in curve.points], "source": source})


def apply_depth(snapshot: Snapshot, depth: DepthFile | None) -> Snapshot:
    """A new Snapshot whose venues include each asset's off-chain curve (after its on-chain venues);
    the snapshot given is not changed. The manifest records the file name under `off_chain_depth`."""
    if depth is None:
        return snapshot
    from defirisk.markets.impact import build_asset_curve

    known = sorted(snapshot.assets)
    venues = {s: tuple(vs) for s, vs in snapshot.venues.items()}
    for asset, curve in sorted(depth.curves.items(), key=lambda kv: kv[1].first_line):
        if asset not in snapshot.assets:
            raise InputError(f"{_where(depth.name, curve.first_line, asset, 'asset')}: not an asset of the snapshot "
                             f"(assets: {', '.join(known)})")
        venues[asset] = venues.get(asset, ()) + (depth_venue(curve, depth.name),)
        try:
            build_asset_curve(venues[asset], snapshot.assets, asset)
        except InputError as exc:
            raise InputError(f"{depth.name}, asset {asset}: {exc}") from None
    manifest = dict(snapshot.manifest)
    manifest["off_chain_depth"] = depth.describe()
    return dataclasses.replace(snapshot, manifest=manifest, venues=venues)


def load_depth(snapshot: Snapshot, path: str | os.PathLike | None) -> Snapshot:
    """`apply_depth(snapshot, read_depth(path))`; the snapshot itself when `path` is None."""
    return snapshot if path is None else apply_depth(snapshot, read_depth(path))
