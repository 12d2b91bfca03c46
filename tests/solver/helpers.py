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


def case_figures(r, keys) -> dict:
    """The figures a hand-derived case names (end:<asset>, sold:<asset>, bad, repaid, liquidated_usd,
    rounds, accounts, first_round) read off a CascadeResult."""
    totals = {"bad": r.totals.bad_debt_usd, "repaid": r.totals.debt_repaid_usd,
              "liquidated_usd": r.totals.liquidated_collateral_usd, "accounts": r.totals.accounts_liquidated}
    got = {}
    for key in keys:
        if key.startswith("end:"):
            got[key] = r.end_prices[key[4:]]
        elif key.startswith("sold:"):
            got[key] = float(r.liquidations.loc[r.liquidations.collateral_asset == key[5:], "collateral_sold"].sum())
        elif key in totals:
            got[key] = totals[key]
        elif key == "rounds":
            got[key] = r.rounds
        elif key == "first_round":
            got[key] = int(r.liquidations["round"].min())
    return got
