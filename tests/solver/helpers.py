"""Helpers to build small snapshots in code (the synthetic cases) and write them as directories."""
from __future__ import annotations

from defirisk.model import Asset, MarketParams, Position, Positions, Snapshot, Venue

MANIFEST = {"format": "defirisk-snapshot/1", "chain_id": None, "block_number": None, "block_hash": None,
            "timestamp": None, "source": "test"}


def make_snapshot(prices, positions, markets, venues=None, lags=None) -> Snapshot:
    """prices {sym: usd}; positions [(protocol, market, account, asset, side, amount[, emode])];
    markets [(protocol, market, params, assets)]; venues {sym: dict or [dict]} in venues.json shape."""
    lags = lags or {}
    assets = {s: Asset(s, 18, float(p), oracle_lag_s=float(lags.get(s, 0))) for s, p in prices.items()}
    rows = [Position(*r) for r in positions]
    vens = {}
    for s, spec in (venues or {}).items():
        specs = spec if isinstance(spec, list) else [spec]
        vens[s] = tuple(Venue(s, v["kind"], {k: x for k, x in v.items() if k != "kind"}) for v in specs)
    return Snapshot(MANIFEST, assets, Positions.from_rows(rows), tuple(MarketParams(*m) for m in markets), vens)
