"""DEX venue discovery from the book's factories at the pinned block (tests on the devnet): a book
with factories and no listed pools finds the same venues as the devnet's listed book; dust pools
are dropped below the stated threshold; a pool between two venue quotes is not a venue."""
from __future__ import annotations

import json

import pytest

from defirisk.addressbook import DEFAULT_MIN_VENUE_QUOTE_USD
from defirisk.devnet.tx import DEPLOYER, Chain
from defirisk.snapshot_chain import take_snapshot

pytestmark = [pytest.mark.chain, pytest.mark.slow]


def _discovery_only(book: dict) -> dict:
    b = json.loads(json.dumps(book))
    b["uniswap_v2"]["pairs"] = {}
    b["uniswap_v3"]["pools"] = {}
    return b


def _venue_keys(snap):
    return {(sym, (v.params.get("pair") or v.params.get("pool")).lower()) for sym, vs in snap.venues.items() for v in vs}


def _add_v2_pair(dn, base: str, quote: str, base_units: float, quote_units: float) -> str:
    chain = Chain(dn.anvil)
    tok = dn.book["tokens"]
    factory = dn.book["uniswap_v2"]["factory"]
    chain.send(factory, "createPair(address,address)", tok[base]["address"], tok[quote]["address"])
    pair = chain.call(factory, "getPair(address,address)", [tok[base]["address"], tok[quote]["address"]], ["address"])
    for sym, units in ((base, base_units), (quote, quote_units)):
        chain.send(tok[sym]["address"], "mint(address,uint256)", pair, int(units * 10 ** tok[sym]["decimals"]))
    chain.send(pair, "mint(address)", DEPLOYER)
    return pair.lower()


def test_factories_alone_find_the_listed_venues(dn):
    listed = take_snapshot(dn.rpc_url, book=dn.book, cache=False).snapshot
    found = take_snapshot(dn.rpc_url, book=_discovery_only(dn.book), cache=False)
    snap = found.snapshot
    assert _venue_keys(snap) == _venue_keys(listed) and len(_venue_keys(snap)) == 4
    for sym, vs in listed.venues.items():
        by_addr = {(v.params.get("pair") or v.params.get("pool")): v for v in snap.venues[sym]}
        for v in vs:
            assert by_addr[v.params.get("pair") or v.params.get("pool")] == v  # identical curve data
    disc = snap.manifest["venue_discovery"]
    assert disc["kept"] == 4 and disc["listed"] == 0 and disc["min_quote_usd"] == DEFAULT_MIN_VENUE_QUOTE_USD
    # With the listed book, the same pools are found again by the factories and not read twice.
    assert listed.manifest["venue_discovery"]["listed"] == 4 and listed.manifest["venue_discovery"]["kept"] == 0


def test_dust_pools_are_dropped_and_deep_ones_kept(dn):
    dust = _add_v2_pair(dn, "WBTC", "DAI", 0.5, 30_000)  # $30k of DAI: below the $100k threshold
    deep = _add_v2_pair(dn, "WETH", "DAI", 100, 300_000)  # $300k of DAI
    run = take_snapshot(dn.rpc_url, book=_discovery_only(dn.book), cache=False)
    snap = run.snapshot
    keys = _venue_keys(snap)
    assert ("WETH", deep) in keys and all(addr != dust for _, addr in keys)
    v = next(v for v in snap.venues["WETH"] if v.params.get("pair", "").lower() == deep)
    assert v.params["quote"] == "DAI" and v.params["quote_reserve"] == pytest.approx(300_000)
    assert dust in [a.lower() for a in snap.manifest["venue_discovery"]["below_min_quote_usd"]]
    assert "DAI" in snap.assets  # the venue's quote is priced in assets.csv
    # The threshold is the book's to set.
    book = _discovery_only(dn.book)
    book["venue_discovery"] = {"min_quote_usd": 10_000}
    keys2 = _venue_keys(take_snapshot(dn.rpc_url, book=book, cache=False).snapshot)
    assert ("WBTC", dust) in keys2


def test_empty_v3_pool_is_not_a_venue(dn):
    chain = Chain(dn.anvil)
    tok = dn.book["tokens"]
    factory = dn.book["uniswap_v3"]["factory"]
    chain.send(factory, "createPool(address,address,uint24)", tok["WBTC"]["address"], tok["USDT"]["address"], 500)
    pool = chain.call(factory, "getPool(address,address,uint24)",
                      [tok["WBTC"]["address"], tok["USDT"]["address"], 500], ["address"]).lower()
    snap = take_snapshot(dn.rpc_url, book=_discovery_only(dn.book), cache=False).snapshot
    assert all(addr != pool for _, addr in _venue_keys(snap))
    assert pool in [a.lower() for a in snap.manifest["venue_discovery"]["below_min_quote_usd"]]


def test_listed_pool_between_two_venue_quotes_is_not_used(dn):
    # Venue quotes (stablecoins) are where routes end: a USDC/DAI pool is no venue. Pools between two
    # volatile assets (wstETH/WETH) are cross venues: tests/readers/test_cross_pools.py.
    pair = _add_v2_pair(dn, "USDC", "DAI", 200_000, 200_000)
    book = json.loads(json.dumps(dn.book))
    book["uniswap_v2"]["pairs"]["USDC/DAI"] = pair
    messages = []
    run = take_snapshot(dn.rpc_url, book=book, cache=False, progress=lambda m, d, n: messages.append(m))
    assert all(addr != pair for _, addr in _venue_keys(run.snapshot))
    assert "USDC" not in run.snapshot.venues and "DAI" not in run.snapshot.venues
    assert any("USDC/DAI" in m and pair in m.lower() and "not used" in m for m in messages)
    # Listed stablecoin pools keep working next to it.
    assert ("wstETH", dn.book["uniswap_v2"]["pairs"]["wstETH/USDC"].lower()) in _venue_keys(run.snapshot)


def test_discovery_can_be_switched_off(dn):
    book = _discovery_only(dn.book)
    book["venue_discovery"] = False
    snap = take_snapshot(dn.rpc_url, book=book, cache=False).snapshot
    assert _venue_keys(snap) == set()
