"""Readers against the real devnet (small scenario): Aave health factors against getUserAccountData,
Morpho positions against Morpho's own liquidation check and interest accrual, DEX venue invariants,
and a fork of the devnet giving the same snapshot."""
from __future__ import annotations

import math

import eth_abi
import numpy as np
import pytest
from eth_utils import keccak

from defirisk.addressbook import load_book
from defirisk.chain.abi import interface
from defirisk.chain.anvil import Anvil
from defirisk.chain.multicall import Call, Multicaller
from defirisk.chain.rpc import RpcClient
from defirisk.markets import dex, oracles
from defirisk.protocols import morpho_blue
from defirisk.snapshot_chain import take_snapshot

pytestmark = [pytest.mark.chain, pytest.mark.slow]
POOL = interface("AaveV3Pool")
MORPHO = interface("MorphoBlue")
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
LIQUIDATOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
DAY = 86400


def _send(anvil, to, signature, types, args, sender=DEPLOYER):
    data = keccak(text=signature)[:4] + eth_abi.encode(types, args)
    return anvil.send_transaction({"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(3_000_000)})


def _advance(anvil, seconds):
    anvil.rpc("evm_increaseTime", seconds)
    anvil.mine(1)


def _set_price(anvil, book, symbol, usd):
    feed = book["feeds"][symbol]
    dec = interface("ChainlinkAggregatorV3").fn("decimals")
    decimals = dec.decode(bytes.fromhex(anvil.rpc("eth_call", {"to": feed, "data": "0x" + dec.selector.hex()}, "latest")[2:]))
    _send(anvil, feed, "setAnswer(int256)", ["int256"], [int(usd * 10 ** decimals)])


def _aave_hf_from_snapshot(snap, account):
    """HF from the snapshot's whole-token amounts and USD prices, the way Aave's GenericLogic sums it:
    returns (collateral USD, debt USD, sum of collateral USD * LT in bps, exact float HF)."""
    m = snap.market("aave-v3", "devnet")
    cats = m.params["emode_categories"]
    f = snap.positions.frame
    rows = f[(f.protocol == "aave-v3") & (f.account == account)]
    coll = debt = weighted = 0.0
    for r in rows.itertuples():
        usd = r.amount * snap.assets[r.asset].price_usd
        if r.side == "debt":
            debt += usd
            continue
        lt = m.assets[r.asset]["liquidation_threshold"]
        if r.emode and r.asset in cats[str(r.emode)]["collateral_assets"]:
            lt = cats[str(r.emode)]["liquidation_threshold"]
        coll += usd
        weighted += usd * round(lt * 1e4)
    return coll, debt, weighted


def test_aave_health_factors_agree_with_getUserAccountData(dn):
    # Let interest accrue for 90 days so the ray-index math is exercised, not just the principal.
    _advance(dn.anvil, 90 * DAY)
    run = take_snapshot(dn.rpc_url, protocols="aave-v3", book=dn.book, cache=False)
    snap = run.snapshot
    assert run.accounts["aave-v3:devnet"] == dn.info.aave_positions  # every opened position found
    accounts = sorted(set(snap.positions.frame.account))
    client = RpcClient(dn.rpc_url)
    pool = dn.book["aave_v3"]["pool"]
    onchain = Multicaller(client, run.block).run([Call(pool, POOL.fn("getUserAccountData"), (a,)) for a in accounts])
    n_multi = 0
    for a, (tc, td, _avail, lt_bps, _ltv, hf) in zip(accounts, onchain):
        coll, debt, weighted = _aave_hf_from_snapshot(snap, a)
        assert coll == pytest.approx(tc / 1e8, rel=1e-9)
        assert debt == pytest.approx(td / 1e8, rel=1e-9)
        exact_hf = weighted / 1e4 / debt
        # Aave truncates the collateral-weighted average LT to whole bps before computing HF; apply
        # the same truncation to the snapshot's numbers and the two agree to 1e-9.
        avg_lt = math.floor(weighted / coll + 1e-9)
        assert avg_lt == lt_bps
        assert coll * avg_lt / 1e4 / debt == pytest.approx(hf / 1e18, rel=1e-9)
        # Without the truncation the difference is bounded by one bp of LT.
        assert abs(exact_hf - hf / 1e18) / exact_hf <= 1.0 / avg_lt
        if (snap.positions.frame.query("account == @a and side == 'collateral'").shape[0]) == 1:
            assert exact_hf == pytest.approx(hf / 1e18, rel=1e-9)
        else:
            n_multi += 1
    assert n_multi > 0 and len(accounts) == dn.info.aave_positions


def test_aave_market_parameters_and_emode(dn):
    run = take_snapshot(dn.rpc_url, protocols="aave-v3", book=dn.book, cache=False)
    m = run.snapshot.market("aave-v3", "devnet")
    assert m.params["version"] == "3.0" and m.params["pool_revision"] == 1
    assert m.assets["WETH"]["liquidation_threshold"] == 0.825
    assert m.assets["WETH"]["liquidation_bonus"] == 1.05
    assert m.assets["USDT"]["liquidation_threshold"] == 0.0
    cat = m.params["emode_categories"]["1"]
    assert cat["liquidation_threshold"] == 0.93 and list(cat["collateral_assets"]) == ["WETH", "wstETH"]
    f = run.snapshot.positions.frame
    assert set(f[f.emode == 1].asset) <= {"WETH", "wstETH"} and (f.emode == 1).any()
    assert run.snapshot.assets["WBTC"].price_usd == 60000.0


def test_morpho_matches_chain_liquidation_check_and_accrual(dn):
    book = dn.book
    morpho = book["morpho_blue"]["morpho"]
    # Make some positions unhealthy: WETH and WBTC fall 20%, then a month of interest accrues.
    _set_price(dn.anvil, book, "WETH", 2400)
    _set_price(dn.anvil, book, "WBTC", 48000)
    _advance(dn.anvil, 30 * DAY)
    client = RpcClient(dn.rpc_url)
    ref = client.pin()
    mc = Multicaller(client, ref)
    b = load_book(book)
    ids = morpho_blue.discover_markets(client, ref, morpho, b.morpho_blue.start_block)
    markets = morpho_blue.read_markets(client, mc, morpho, ids, ref).markets
    pairs = morpho_blue.discover_borrowers(client, ref, morpho, b.morpho_blue.start_block)
    positions = morpho_blue.read_positions(mc, morpho, markets, pairs)
    assert len({p.account for p in positions}) == dn.info.morpho_positions
    by_id = {m.id: m for m in markets}
    healthy_seen = unhealthy_seen = 0
    liq = MORPHO.fn("liquidate")
    for p in positions:
        m = by_id[p.market_id]
        data = liq.encode(m.params_tuple, p.account, 1, 0, b"")
        reply = client._post({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [
            {"from": LIQUIDATOR, "to": morpho, "data": "0x" + data.hex(), "gas": hex(2_000_000)}, ref.tag]}, "eth_call")
        chain_says_healthy = "error" in reply and "position is healthy" in str(reply["error"])
        assert p.healthy(m) == chain_says_healthy, (p, reply)
        healthy_seen += chain_says_healthy
        unhealthy_seen += not chain_says_healthy
    assert healthy_seen > 0 and unhealthy_seen > 0

    # Accrual: our integer replay of _accrueInterest to a later timestamp equals Morpho's own.
    m = max(markets, key=lambda x: x.state.total_borrow_assets)
    raw_state = morpho_blue.MarketState(*MORPHO.fn("market").decode(
        client.eth_call(morpho, MORPHO.fn("market").encode(bytes.fromhex(m.id[2:])), ref)))
    rate = interface("MorphoIrm").fn("borrowRateView").decode(client.eth_call(
        m.irm, interface("MorphoIrm").fn("borrowRateView").encode(m.params_tuple, raw_state.as_tuple()), ref))
    _advance(dn.anvil, 7 * DAY)
    _send(dn.anvil, morpho, "accrueInterest((address,address,address,address,uint256))",
          ["(address,address,address,address,uint256)"], [m.params_tuple])
    after_ref = client.pin()
    after = morpho_blue.MarketState(*MORPHO.fn("market").decode(
        client.eth_call(morpho, MORPHO.fn("market").encode(bytes.fromhex(m.id[2:])), after_ref)))
    mine = morpho_blue.accrue(raw_state, rate, after_ref.timestamp)
    assert mine == after and after.total_borrow_assets > raw_state.total_borrow_assets


def test_morpho_snapshot_params(dn):
    run = take_snapshot(dn.rpc_url, protocols="morpho-blue", book=dn.book, cache=False)
    names = {m.market: m for m in run.snapshot.markets}
    assert {"WETH/USDC-86", "WBTC/USDC-86", "wstETH/WETH-945"} <= set(names)
    p = names["WETH/USDC-86"].params
    assert p["lltv"] == 0.86 and p["collateral"] == "WETH" and p["loan"] == "USDC"
    assert p["oracle_price"] == pytest.approx(3000.0, rel=1e-12)
    assert p["liquidation_incentive"] == pytest.approx(1 / (1 - 0.3 * 0.14))


def test_dex_venues_and_feeds(dn):
    client = RpcClient(dn.rpc_url)
    ref = client.pin()
    mc = Multicaller(client, ref)
    b = load_book(dn.book)
    (base, quote, fee), pool = next(iter(b.v3_pools.items()))
    v = dex.read_v3_venue(mc, pool, b.tokens[base], b.tokens[quote])
    assert v["kind"] == "uniswap_v3" and v["fee"] == fee / 1e6
    assert dex.v3_spot_price(v) == pytest.approx(3000.0, rel=0.01)
    nets = [(t, int(n)) for t, n in v["ticks"]]
    # A complete bitmap scan sees every position's two ends: nets sum to zero, and the active
    # liquidity equals the sum of nets at or below the current tick.
    assert len(nets) >= 6 and sum(n for _, n in nets) == 0
    assert sum(n for t, n in nets if t <= v["tick"]) == int(v["liquidity"])
    (b2, q2), pair = next(iter(b.v2_pairs.items()))
    v2 = dex.read_v2_venue(mc, pair, b.tokens[b2], b.tokens[q2])
    assert v2["kind"] == "constant_product" and v2["base_reserve"] > 0 and v2["quote"] == q2
    assert v2["pair"] == pair and v["pool"] == pool  # the contracts, for the validator to trade against
    feeds = oracles.read_feeds(mc, b.feeds, ref.timestamp)
    assert feeds["WETH"].price == 3000.0 and feeds["WBTC"].price == 60000.0
    assert feeds["WETH"].age_s >= 0


def test_fork_of_devnet_gives_the_same_snapshot(dn, tmp_path):
    n = dn.anvil.block_number()
    _advance(dn.anvil, DAY)  # the origin moves on; the fork stays at n
    origin = take_snapshot(dn.rpc_url, block=n, book=dn.book, out=tmp_path / "origin", cache=False)
    with Anvil(fork_url=dn.rpc_url, fork_block=n, chain_id=31337) as fork:
        forked = take_snapshot(fork.url, book=dn.book, out=tmp_path / "fork", cache=False)
    assert forked.block.number == n and forked.block.hash == origin.block.hash
    a = origin.snapshot.positions.frame.sort_values(["protocol", "market", "account", "asset", "side"]).reset_index(drop=True)
    b = forked.snapshot.positions.frame.sort_values(["protocol", "market", "account", "asset", "side"]).reset_index(drop=True)
    assert len(a) > 50
    assert a.equals(b)
    assert (tmp_path / "origin" / "markets.json").read_text() == (tmp_path / "fork" / "markets.json").read_text()
    assert (tmp_path / "origin" / "venues.json").read_text() == (tmp_path / "fork" / "venues.json").read_text()


def test_solver_health_factors_on_written_snapshot_match_chain(dn, tmp_path):
    """Hand-off check: the written snapshot, loaded back and fed to the solver's health_factors(),
    reproduces the chain's health factors (Aave: getUserAccountData; Morpho: the chain's formula)."""
    from defirisk.snapshot import load_snapshot
    from defirisk.solver import health_factors

    _advance(dn.anvil, 10 * DAY)
    run = take_snapshot(dn.rpc_url, book=dn.book, out=tmp_path / "s", cache=False)
    hf = health_factors(load_snapshot(tmp_path / "s"))
    client = RpcClient(dn.rpc_url)
    aave = hf[hf.protocol == "aave-v3"]
    pool = dn.book["aave_v3"]["pool"]
    chain = Multicaller(client, run.block).run([Call(pool, POOL.fn("getUserAccountData"), (a,)) for a in aave.account])
    for (_, row), (_tc, _td, _av, lt_bps, _ltv, onchain) in zip(aave.iterrows(), chain):
        # The solver applies Aave's truncation of the average LT to whole bps, so they agree exactly.
        assert row.health_factor == pytest.approx(onchain / 1e18, rel=1e-9)
    assert len(aave) == dn.info.aave_positions
    morpho = hf[hf.protocol == "morpho-blue"]
    assert len(morpho) == dn.info.morpho_positions and (morpho.health_factor > 1).all()
    # Morpho's own formula on raw chain integers: collateral * price / 1e36 * lltv / borrowed.
    ref = run.block
    mc = Multicaller(client, ref)
    b = load_book(dn.book)
    morpho_addr = b.morpho_blue.morpho
    markets = morpho_blue.read_markets(client, mc, morpho_addr,
                                       morpho_blue.discover_markets(client, ref, morpho_addr, 0), ref).markets
    by_id = {m.id: m for m in markets}
    pos = morpho_blue.read_positions(mc, morpho_addr, markets,
                                     morpho_blue.discover_borrowers(client, ref, morpho_addr, 0))
    names = {m.params["id"]: m.market for m in run.snapshot.markets if m.protocol == "morpho-blue"}
    solver_hf = {(r.market, r.account): r.health_factor for r in morpho.itertuples()}
    for p in pos:
        m = by_id[p.market_id]
        exact = p.collateral * m.oracle_price / 1e36 * m.lltv / 1e18 / p.borrowed
        assert solver_hf[(names[p.market_id], p.account)] == pytest.approx(exact, rel=1e-9)


def test_snapshot_with_discovery_cache_equals_fresh_scan(dn, tmp_path):
    from defirisk.chain.logs import DiscoveryCache

    with DiscoveryCache(tmp_path / "disc.sqlite") as cache:
        first = take_snapshot(dn.rpc_url, book=dn.book, cache=cache)
        # New activity after the cached block: one more Aave borrow by an existing borrower.
        f = first.snapshot.positions.frame
        acct = f[(f.protocol == "aave-v3") & (f.side == "debt") & (f.asset == "USDC")].account.iloc[0]
        usdc = dn.book["tokens"]["USDC"]["address"]
        dn.anvil.impersonate(acct)
        _send(dn.anvil, dn.book["aave_v3"]["pool"], "borrow(address,uint256,uint256,uint16,address)",
              ["address", "uint256", "uint256", "uint16", "address"], [usdc, 10**6, 2, 0, acct], sender=acct)
        dn.anvil.mine(2)
        cached = take_snapshot(dn.rpc_url, book=dn.book, cache=cache)
        key_rows = cache._db.execute("SELECT to_block FROM scans WHERE protocol = 'aave-v3:devnet'").fetchall()
        assert key_rows == [(cached.block.number,)]
    fresh = take_snapshot(dn.rpc_url, book=dn.book, cache=False)
    cols = ["protocol", "market", "account", "asset", "side"]
    a = cached.snapshot.positions.frame.sort_values(cols).reset_index(drop=True)
    b = fresh.snapshot.positions.frame.sort_values(cols).reset_index(drop=True)
    assert a.equals(b)
    before = first.snapshot.positions.frame.set_index(cols).amount
    after = a.set_index(cols).amount
    assert after[("aave-v3", "devnet", acct, "USDC", "debt")] == pytest.approx(before[("aave-v3", "devnet", acct, "USDC", "debt")] + 1, rel=1e-9)


def test_written_venues_carry_pair_and_pool_addresses(dn, tmp_path):
    """venues.json records each V2 venue's pair and V3 venue's pool; both survive load_snapshot."""
    import json

    from defirisk.snapshot import load_snapshot

    take_snapshot(dn.rpc_url, book=dn.book, out=tmp_path / "s", cache=False)
    raw = json.loads((tmp_path / "s" / "venues.json").read_text())
    pairs = {f"{b}/{q}": a for (b, q), a in load_book(dn.book).v2_pairs.items()}
    pools = set(load_book(dn.book).v3_pools.values())
    seen_v2 = {}
    for sym, spec in raw.items():
        for v in spec if isinstance(spec, list) else [spec]:
            if v["kind"] == "constant_product":
                seen_v2[f"{sym}/{v['quote']}"] = v["pair"]
            elif v["kind"] == "uniswap_v3":
                assert v["pool"] in pools
    assert seen_v2 == pairs and len(pairs) == 3
    loaded = load_snapshot(tmp_path / "s")
    weth = [v.params["pair"] for v in loaded.venues["WETH"] if v.kind == "constant_product"]
    assert weth == [pairs["WETH/USDC"]]


def test_snapshot_pinned_before_the_cached_block_uses_the_cache(dn, tmp_path, monkeypatch):
    """Cache filled up to a later block that includes a new Aave borrower; a snapshot pinned before
    that borrower appeared is answered from the cache (no log scan) and equals a fresh scan."""
    from defirisk.chain import logs
    from defirisk.chain.logs import DiscoveryCache

    book = dn.book
    old = dn.anvil.block_number()
    newcomer = "0x000000000000000000000000000000000000bEEF"
    weth, usdc, pool = (book["tokens"]["WETH"]["address"], book["tokens"]["USDC"]["address"], book["aave_v3"]["pool"])
    dn.anvil.set_balance(newcomer, 10**18)
    dn.anvil.impersonate(newcomer)
    _send(dn.anvil, weth, "mint(address,uint256)", ["address", "uint256"], [newcomer, 10 * 10**18])
    _send(dn.anvil, weth, "approve(address,uint256)", ["address", "uint256"], [pool, 2**256 - 1], sender=newcomer)
    _send(dn.anvil, pool, "supply(address,uint256,address,uint16)", ["address", "uint256", "address", "uint16"],
          [weth, 10 * 10**18, newcomer, 0], sender=newcomer)
    _send(dn.anvil, pool, "borrow(address,uint256,uint256,uint16,address)",
          ["address", "uint256", "uint256", "uint16", "address"], [usdc, 5000 * 10**6, 2, 0, newcomer], sender=newcomer)
    dn.anvil.mine(1)

    scans = []
    real_scan = logs.LogScanner.scan

    def counting_scan(self, address, topics, from_block, to_block, progress=None):
        scans.append((from_block, to_block))
        return real_scan(self, address, topics, from_block, to_block, progress)

    monkeypatch.setattr(logs.LogScanner, "scan", counting_scan)
    cols = ["protocol", "market", "account", "asset", "side"]
    with DiscoveryCache(tmp_path / "disc.sqlite") as cache:
        late = take_snapshot(dn.rpc_url, book=book, cache=cache)
        assert newcomer.lower() in {a.lower() for a in late.snapshot.positions.frame.account}
        assert scans  # the first run scans
        scans.clear()
        early = take_snapshot(dn.rpc_url, book=book, block=old, cache=cache)
        assert scans == []  # every stream (Aave borrowers, Morpho markets and borrowers) from the cache
        marks = cache._db.execute("SELECT DISTINCT to_block FROM scans").fetchall()
        assert marks == [(late.block.number,)]  # the older pin did not move the resume point back
    fresh = take_snapshot(dn.rpc_url, book=book, block=old, cache=False)
    assert early.block == fresh.block and early.block.number == old
    assert newcomer.lower() not in {a.lower() for a in early.snapshot.positions.frame.account}
    a = early.snapshot.positions.frame.sort_values(cols).reset_index(drop=True)
    b = fresh.snapshot.positions.frame.sort_values(cols).reset_index(drop=True)
    assert len(a) > 50 and a.equals(b)
    assert early.discovered == fresh.discovered
