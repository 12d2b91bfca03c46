"""Pools between two volatile assets (issue 9): discovered against every asset of the book, listed once
under the asset further from USD with `quote` = the other, accepted and routed by the solver.

Devnet tests add a wstETH/WETH Uniswap V2 pair and V3 pool (0.05%) to the small devnet and snapshot
it; the direction rule (`dex.plan_cross_pools`) is also tested alone on random pool graphs."""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defirisk.devnet.deploy import MAX_UINT, v2_reserves, v3_positions
from defirisk.devnet.scenario import V3PoolSpec, V3RangeSpec
from defirisk.devnet.tx import DEPLOYER, Chain
from defirisk.markets import dex
from defirisk.model import Asset, Venue
from defirisk.snapshot import load_snapshot
from defirisk.snapshot_chain import take_snapshot
from defirisk.solver import prepare, solve
from defirisk.solver.routing import build_router

STABLES = ("USDC", "USDT", "DAI")


# ---------------------------------------------------------------------------------------------------
# Devnet helpers: pools at the scenario's feed prices, through deploy.py's own sizing.
# ---------------------------------------------------------------------------------------------------
def _add_v2_pair(dn, base: str, quote: str, base_units: float) -> tuple[str, int, int]:
    chain = Chain(dn.anvil)
    tok = dn.book["tokens"]
    factory = dn.book["uniswap_v2"]["factory"]
    chain.send(factory, "createPair(address,address)", tok[base]["address"], tok[quote]["address"])
    pair = chain.call(factory, "getPair(address,address)", [tok[base]["address"], tok[quote]["address"]], ["address"])
    rb, rq = v2_reserves(dn.scenario, base, quote, base_units)
    chain.send(tok[base]["address"], "mint(address,uint256)", pair, rb)
    chain.send(tok[quote]["address"], "mint(address,uint256)", pair, rq)
    chain.send(pair, "mint(address)", DEPLOYER)
    return pair.lower(), rb, rq


def _add_v3_pool(dn, base: str, quote: str, fee: int, ranges: list[tuple[float, float, float]]):
    """A V3 pool initialized at the feed price with liquidity in `ranges` ((lower %, upper %, USD), ...)."""
    chain = Chain(dn.anvil)
    tok = dn.book["tokens"]
    factory, router = dn.book["uniswap_v3"]["factory"], dn.book["uniswap_v3"]["router"]
    key = f"{base}/{quote}/{fee}"
    spec = V3PoolSpec(key, base, quote, fee, tuple(V3RangeSpec(lo, hi, usd) for lo, hi, usd in ranges))
    scn = replace(dn.scenario, uniswap_v3={**dn.scenario.uniswap_v3, key: spec})
    b, q = tok[base]["address"], tok[quote]["address"]
    chain.send(factory, "createPool(address,address,uint24)", b, q, fee)
    pool = chain.call(factory, "getPool(address,address,uint24)", [b, q, fee], ["address"])
    token0_is_base = int(b, 16) < int(q, 16)
    sqrt_x96, rngs = v3_positions(scn, key, token0_is_base)
    chain.send(pool, "initialize(uint160)", sqrt_x96)
    sym0, sym1 = (base, quote) if token0_is_base else (quote, base)
    for sym, need in ((sym0, sum(r["amount0_max"] for r in rngs)), (sym1, sum(r["amount1_max"] for r in rngs))):
        chain.send(tok[sym]["address"], "mint(address,uint256)", DEPLOYER, need)
        chain.send(tok[sym]["address"], "approve(address,uint256)", router, MAX_UINT)
    for r in rngs:
        chain.send(router, "mint(address,int24,int24,uint128,address)", pool, r["tick_lower"], r["tick_upper"],
                   r["liquidity"], DEPLOYER, gas=2_000_000)
    return pool.lower(), sqrt_x96, rngs, token0_is_base


def _addr(v: Venue) -> str:
    return str(v.params.get("pair") or v.params.get("pool")).lower()


def _stable_venues(snap) -> dict[str, list]:
    return {s: [v for v in vs if v.params["quote"] in STABLES] for s, vs in snap.venues.items()}


def _discovery_only(book: dict, **disc) -> dict:
    b = json.loads(json.dumps(book))
    b["uniswap_v2"]["pairs"] = {}
    b["uniswap_v3"]["pools"] = {}
    if disc:
        b["venue_discovery"] = disc
    return b


# ---------------------------------------------------------------------------------------------------
@pytest.mark.chain
@pytest.mark.slow
def test_cross_pools_are_found_listed_under_wsteth_and_routed(dn, tmp_path):
    before = take_snapshot(dn.rpc_url, book=dn.book, cache=False).snapshot
    assert all(v.params["quote"] in STABLES for vs in before.venues.values() for v in vs)
    pair, rb, rq = _add_v2_pair(dn, "wstETH", "WETH", 1000)
    pool, sqrt_x96, rngs, token0_is_base = _add_v3_pool(dn, "wstETH", "WETH", 500, [(-5, 5, 2_000_000)])

    run = take_snapshot(dn.rpc_url, book=dn.book, cache=False, out=tmp_path / "s")
    snap = run.snapshot
    cross = {_addr(v): v for v in snap.venues["wstETH"] if v.params["quote"] == "WETH"}
    assert set(cross) == {pair, pool}
    v2 = cross[pair]
    assert v2.kind == "constant_product" and v2.params["fee"] == 0.003
    assert v2.params["base_reserve"] == rb / 10**18 and v2.params["quote_reserve"] == rq / 10**18
    v3 = cross[pool]
    (r,) = rngs
    assert v3.kind == "uniswap_v3" and v3.params["fee"] == 0.0005
    assert v3.params["sqrt_price_x96"] == str(sqrt_x96) and v3.params["liquidity"] == str(r["liquidity"])
    assert v3.params["base_is_token0"] is token0_is_base
    assert v3.params["base_decimals"] == 18 and v3.params["quote_decimals"] == 18
    assert [list(t) for t in v3.params["ticks"]] == [[r["tick_lower"], str(r["liquidity"])],
                                                      [r["tick_upper"], str(-r["liquidity"])]]
    # Each pool once: nothing quoted in wstETH, nothing cross anywhere else.
    others = [v for s, vs in snap.venues.items() for v in vs if s != "wstETH" and v.params["quote"] not in STABLES]
    assert others == []
    # The stablecoin venues are exactly those of the snapshot without cross pools.
    assert _stable_venues(snap) == _stable_venues(before)
    disc = snap.manifest["venue_discovery"]
    assert disc["cross"] == 2 and disc["kept"] == 2 and list(disc["no_usd_route"]) == []

    loaded = load_snapshot(tmp_path / "s")
    prep = prepare(loaded)
    assert prep.router is not None
    res = solve(loaded, {"wstETH": 0.1}, prepared=prep)
    legs = res.sales[(res.sales["asset"] == "wstETH") & (res.sales["via"] == "WETH")]
    assert len(legs) > 0 and (legs["amount"] > 0).all()


@pytest.mark.chain
@pytest.mark.slow
def test_listed_cross_pool_is_directed_by_the_rule_and_read_once(dn):
    pair, rb, _rq = _add_v2_pair(dn, "wstETH", "WETH", 1000)
    book = json.loads(json.dumps(dn.book))
    book["uniswap_v2"]["pairs"]["WETH/wstETH"] = pair  # written the other way round: the rule decides
    snap = take_snapshot(dn.rpc_url, book=book, cache=False).snapshot
    got = [v for vs in snap.venues.values() for v in vs if _addr(v) == pair]
    assert len(got) == 1 and got[0] in snap.venues["wstETH"]
    assert got[0].params["quote"] == "WETH" and got[0].params["base_reserve"] == rb / 10**18
    disc = snap.manifest["venue_discovery"]
    assert disc["listed"] == 5 and disc["cross"] == 1 and disc["kept"] == 0


@pytest.mark.chain
@pytest.mark.slow
def test_asset_without_a_usd_route_is_the_base(dn):
    # $5M threshold: wstETH's own USDC pair ($3.5M of USDC) is dust, WETH's ($6M) is kept, so wstETH
    # reaches USD only through WETH.
    pair, _rb, _rq = _add_v2_pair(dn, "wstETH", "WETH", 2000)  # 2333 WETH = $7M on the WETH side
    run = take_snapshot(dn.rpc_url, book=_discovery_only(dn.book, min_quote_usd=5_000_000), cache=False)
    snap = run.snapshot
    assert [(_addr(v), v.params["quote"]) for v in snap.venues["wstETH"]] == [(pair, "WETH")]
    assert any(v.params["quote"] in STABLES for v in snap.venues["WETH"])
    res = solve(snap, {"wstETH": 0.1})
    sales = res.sales[res.sales["asset"] == "wstETH"]
    assert len(sales) > 0 and (sales["via"] == "WETH").all()


@pytest.mark.chain
@pytest.mark.slow
def test_pools_with_no_route_to_usd_are_dropped_and_recorded(dn):
    pair, _rb, _rq = _add_v2_pair(dn, "wstETH", "WETH", 1000)
    # Only DAI is a venue quote and the devnet has no DAI pool: no asset reaches USD. USDC, not a venue
    # quote here, is one more volatile asset, so its pools are pools between volatile assets too.
    snap = take_snapshot(dn.rpc_url, book=_discovery_only(dn.book, quotes=["DAI"]), cache=False).snapshot
    assert snap.venues == {}
    unrouted = {a.lower() for a in snap.manifest["venue_discovery"]["no_usd_route"]}
    listed = {a.lower() for a in dn.book["uniswap_v2"]["pairs"].values()} | \
        {a.lower() for a in dn.book["uniswap_v3"]["pools"].values()}
    assert unrouted == listed | {pair}


# ---------------------------------------------------------------------------------------------------
# The direction rule alone.
# ---------------------------------------------------------------------------------------------------
def _plan(pairs, depth, sizes=None, min_usd=0.0, sized=None):
    sizes = sizes or [{a: 1e9, b: 1e9} for a, b in pairs]
    return dex.plan_cross_pools(pairs, depth, depth.keys(), lambda i, s: sizes[i][s], min_usd, sized)


def test_rule_on_the_mainnet_shape():
    depth = {"WETH": 300e6, "WBTC": 80e6, "wstETH": 20e6, "cbBTC": 10e6}
    pairs = [("WETH", "wstETH"), ("WETH", "WBTC"), ("WBTC", "cbBTC"), ("rETH", "wstETH"), ("AAA", "rETH")]
    plan = _plan(pairs, depth)
    assert [plan.direction[i] for i in range(len(pairs))] == [
        ("wstETH", "WETH"), ("WBTC", "WETH"), ("cbBTC", "WBTC"),
        ("rETH", "wstETH"),  # rETH has no USD pool: it sells into the asset that has one
        ("AAA", "rETH")]     # hops first: AAA (3 pools from USD) sells into rETH (2), whatever the symbols
    assert plan.hops == {"WETH": 1, "WBTC": 1, "wstETH": 1, "cbBTC": 1, "rETH": 2, "AAA": 3}


def test_dust_and_unrouted_pools():
    depth = {"WETH": 300e6, "wstETH": 20e6}
    pairs = [("wstETH", "WETH"), ("rETH", "wstETH"), ("X", "Y")]
    # rETH/wstETH pays out only $50k of wstETH: dust; rETH then has no route and X/Y never had one.
    sizes = [{"wstETH": 1e6, "WETH": 1e6}, {"rETH": 5e6, "wstETH": 5e4}, {"X": 1e9, "Y": 1e9}]
    plan = _plan(pairs, depth, sizes, min_usd=1e5)
    assert plan.direction == {0: ("wstETH", "WETH")} and plan.dust == [1] and plan.unrouted == [2]
    # A pool the book lists is kept whatever its size.
    plan = _plan(pairs, depth, sizes, min_usd=1e5, sized=[True, False, True])
    assert plan.direction == {0: ("wstETH", "WETH"), 1: ("rETH", "wstETH")} and plan.dust == []


def test_dropping_a_dust_pool_redirects_the_others():
    # B reaches USD through A only via the pool B/A; when that pool is dust, C/B has no route either.
    depth = {"A": 1e6}
    pairs = [("A", "B"), ("B", "C")]
    sizes = [{"A": 10.0, "B": 1e9}, {"B": 1e9, "C": 1e9}]
    plan = _plan(pairs, depth, sizes, min_usd=1e5)
    assert plan.dust == [0] and plan.unrouted == [1] and plan.direction == {}


def _reaches_usd(sym, quotes_of, linked, seen=()):
    return sym in linked or any(_reaches_usd(w, quotes_of, linked, seen + (sym,))
                                for w in quotes_of.get(sym, ()) if w not in seen)


@st.composite
def _graphs(draw):
    n = draw(st.integers(2, 9))
    syms = [f"T{i}" for i in range(n)]
    linked = draw(st.lists(st.sampled_from(syms), unique=True, max_size=n))
    depth = {s: draw(st.sampled_from([1e5, 2e6, 2e6, 5e7])) for s in linked}  # ties on purpose
    pairs = draw(st.lists(st.tuples(st.sampled_from(syms), st.sampled_from(syms)).filter(lambda p: p[0] != p[1]),
                          max_size=20))
    sizes = [{a: draw(st.sampled_from([0.0, 5e4, 2e5, 1e7])), b: draw(st.sampled_from([0.0, 5e4, 2e5, 1e7]))}
             for a, b in pairs]
    sized = [draw(st.booleans()) for _ in pairs]
    return syms, depth, pairs, sizes, sized, draw(st.randoms(use_true_random=False))


@settings(max_examples=300, deadline=None)
@given(_graphs())
def test_directions_never_form_a_cycle_and_always_lead_to_usd(g):
    syms, depth, pairs, sizes, sized, rnd = g
    min_usd = 1e5
    plan = dex.plan_cross_pools(pairs, depth, depth.keys(), lambda i, s: sizes[i][s], min_usd, sized)
    assert set(plan.direction) | set(plan.dust) | set(plan.unrouted) == set(range(len(pairs)))
    assert not set(plan.direction) & set(plan.dust) and not set(plan.direction) & set(plan.unrouted)
    quotes_of: dict[str, set] = {}
    for i, (b, q) in plan.direction.items():
        assert {b, q} == set(pairs[i])
        assert plan.hops[b] >= plan.hops[q]
        if sized[i]:
            assert sizes[i][q] >= min_usd and sizes[i][q] > 0
        quotes_of.setdefault(b, set()).add(q)
    for i in plan.unrouted:
        assert not set(pairs[i]) & set(plan.hops)
    # Acyclic: a topological order exists (Kahn).
    indeg = {s: 0 for s in syms}
    for b, qs in quotes_of.items():
        for q in qs:
            indeg[q] += 1
    ready = [s for s in syms if indeg[s] == 0]
    done = 0
    while ready:
        s = ready.pop()
        done += 1
        for q in quotes_of.get(s, ()):
            indeg[q] -= 1
            if indeg[q] == 0:
                ready.append(q)
    assert done == len(syms)
    # Every base's sales end in USD.
    assert all(_reaches_usd(b, quotes_of, set(depth)) for b in quotes_of)
    # Deterministic: the pools' order does not change any direction.
    perm = list(range(len(pairs)))
    rnd.shuffle(perm)
    again = dex.plan_cross_pools([pairs[k] for k in perm], depth, depth.keys(),
                                 lambda i, s: sizes[perm[i]][s], min_usd, [sized[k] for k in perm])
    assert {perm[i]: d for i, d in again.direction.items()} == plan.direction
    # The solver accepts the result: USD venues for the linked assets, the routed pools as cross venues.
    venues = {s: [Venue(s, "linear", {"lambda": 1e-6, "quote": "USDC"})] for s in depth}
    for i, (b, q) in plan.direction.items():
        venues.setdefault(b, []).append(Venue(b, "constant_product", {"base_reserve": 100.0, "quote_reserve": 100.0,
                                                                      "fee": 0.003, "quote": q}))
    assets = {s: Asset(s, 18, 1.0) for s in syms + ["USDC"]}
    symbols = tuple(sorted(assets))
    snap = SimpleNamespace(venues={s: tuple(vs) for s, vs in venues.items()}, assets=assets)
    _usd, router = build_router(snap, symbols, [1.0] * len(symbols))
    assert (router is None) == (not plan.direction)


def test_random_mainnet_like_books_route():
    """Many random depth orders over the same pairs: the rule is a total order, never a cycle."""
    rnd = random.Random(7)
    syms = ["WETH", "WBTC", "cbBTC", "wstETH", "weETH", "rETH", "tBTC"]
    pairs = [(a, b) for i, a in enumerate(syms) for b in syms[i + 1:]]
    for _ in range(200):
        depth = {s: rnd.choice([0.0, 1e5, 1e6, 1e8]) for s in syms}
        depth = {s: d for s, d in depth.items() if d > 0}
        plan = _plan(pairs, depth)
        keys = {s: dex.route_key(s, plan.hops, depth) for s in syms}
        for i, (b, q) in plan.direction.items():
            assert keys[b] > keys[q]
        if not depth:
            assert plan.direction == {} and plan.unrouted == list(range(len(pairs)))
        assert all(math.isfinite(k[0]) for i, (b, q) in plan.direction.items() for k in (keys[b], keys[q]))
