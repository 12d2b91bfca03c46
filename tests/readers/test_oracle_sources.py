"""Oracle sources as formulas of market prices (markets.json `assets.SYM.oracle`).

Pure: the Morpho feed algebra, Aave's shape detection and CAPO arithmetic, the feed book, the address
book's `oracles` section. On the small devnet (reverted after each test): Aave reserves re-pointed at
our CAPO-shaped, stable, fixed-price and opaque sources (fixtures/contracts/test/OracleSources.sol),
Morpho markets created with a MorphoChainlinkOracleV2-shaped oracle; each snapshot's markets.json
objects and manifest assumptions are checked, and the written snapshot loads (the solver's validator).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import eth_abi
import numpy as np
import pytest
from eth_utils import keccak, to_checksum_address

from defirisk.addressbook import parse_book
from defirisk.devnet.solc import compile_files
from defirisk.errors import InputError
from defirisk.markets.oracle_sources import FeedBook, FeedState, KnownFeed, OracleSpec, unclassified
from defirisk.protocols import aave_v3, morpho_blue
from defirisk.protocols.morpho_blue import FeedTerm, compose
from defirisk.snapshot import load_snapshot
from defirisk.snapshot_chain import take_snapshot

ROOT = Path(__file__).resolve().parents[2]
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # the devnet's deployer (anvil account 0): Aave admin, Morpho owner
ZERO = "0x" + "00" * 20
YEAR = 365 * 24 * 3600
DAY = 24 * 3600


def _addr(i: int) -> str:
    return "0x" + f"{i:040x}"


# -- pure ------------------------------------------------------------------------------------------

def _term(role, i, exp, asset, value, quote=None, kind="market"):
    known = KnownFeed(_addr(i), asset, quote, kind, "test") if asset or kind != "market" else None
    return FeedTerm(role, _addr(i), exp, known, FeedState(_addr(i), 8, int(round(value * 1e8)), 0, 7))


def test_compose_covers_every_shape_of_one_asset_over_another():
    fb = FeedBook()
    src = _addr(99)
    # wstETH/WETH with only a vault: a constant -> collateral = ratio of the loan, loan = market.
    c, l = compose("wstETH", "WETH", 1.18, [], "v2", src, fb)
    assert (c.kind, c.of, c.rate) == ("ratio", "WETH", 1.18) and l.kind == "market"
    # Feeds of both assets: market / market.
    c, l = compose("WETH", "USDC", 3000.0 / 1.0, [_term("BASE_FEED_1", 1, 1, "WETH", 3000.0),
                                                  _term("QUOTE_FEED_1", 2, -1, "USDC", 1.0)], "v2", src, fb)
    assert c.kind == l.kind == "market" and c.age_s == l.age_s == 7
    # Base feed only: the oracle takes the loan at $1.
    c, l = compose("WETH", "USDC", 3000.0, [_term("BASE_FEED_1", 1, 1, "WETH", 3000.0)], "v2", src, fb)
    assert c.kind == "market" and (l.kind, l.price) == ("fixed", 1.0)
    # Vault on a base feed of another asset: ratio of that asset at the vault's rate.
    c, l = compose("wstETH", "USDC", 1.2 * 3000.0, [_term("BASE_FEED_1", 1, 1, "WETH", 3000.0),
                                                    _term("QUOTE_FEED_1", 2, -1, "USDC", 1.0)], "v2", src, fb)
    assert (c.kind, c.of) == ("ratio", "WETH") and c.rate == pytest.approx(1.2, rel=1e-12) and l.kind == "market"
    # Quote feed only: the collateral is a fixed price.
    c, l = compose("USDC", "WETH", 1 / 3000.0, [_term("QUOTE_FEED_1", 2, -1, "WETH", 3000.0)], "v2", src, fb)
    assert (c.kind, c.price) == ("fixed", pytest.approx(1.0)) and l.kind == "market"
    # An exchange-rate feed is a constant; a market feed in a non-USD quote cancels against the loan.
    c, l = compose("wstETH", "WETH", 1.18, [_term("BASE_FEED_1", 3, 1, "wstETH", 1.18, quote="WETH", kind="rate")],
                   "v2", src, fb)
    assert (c.kind, c.of, c.rate) == ("ratio", "WETH", pytest.approx(1.18)) and l.kind == "market"
    c, l = compose("wstETH", "WETH", 1.17, [_term("BASE_FEED_1", 4, 1, "wstETH", 1.17, quote="WETH")], "v2", src, fb)
    assert c.kind == "market" and l.kind == "market"
    # Not expressible: unknown feed, two assets up, the collateral at a multiple of its own price.
    for terms, price, why in (
            ([_term("BASE_FEED_1", 5, 1, None, 1.0)], 1.0, "address book does not name it"),
            ([_term("BASE_FEED_1", 1, 1, "WETH", 3000.0), _term("BASE_FEED_2", 6, 1, "WBTC", 60000.0)], 1.8e8, "price moves as"),
            ([_term("BASE_FEED_1", 1, 1, "WETH", 3000.0), _term("QUOTE_FEED_1", 2, -1, "USDC", 1.0)], 2900.0, "own market price")):
        c, l = compose("WETH", "USDC", price, terms, "v2", src, fb)
        assert c.unclassified and l.unclassified and why in c.reason and c.kind == "market" and c.source == src


def test_spec_dicts_match_the_solver_fields():
    from defirisk.solver import oracles as solver_oracles

    spec = OracleSpec("ratio", "capo-ratio", _addr(1), of="WETH", rate=1.18, cap=1.2, deviation=0.005,
                      heartbeat_s=3600.0, age_s=12, reason="not written")
    d = spec.as_dict()
    assert d == {"kind": "ratio", "of": "WETH", "rate": 1.18, "cap": 1.2, "deviation": 0.005, "heartbeat_s": 3600.0,
                 "age_s": 12, "type": "capo-ratio", "source": _addr(1)}
    assert set(d) <= solver_oracles._FIELDS
    u = unclassified(_addr(2), "why").as_dict()
    assert u == {"kind": "market", "type": "unclassified", "source": _addr(2)}


def test_aave_source_shapes_and_capo_arithmetic():
    feed = {"decimals": 8, "latestRoundData": (1, 5, 0, 0, 1), "latestAnswer": 5}
    assert aave_v3.source_shape(feed) == "chainlink-aggregator"
    capo = dict(feed, BASE_TO_USD_AGGREGATOR=_addr(1), RATIO_PROVIDER=_addr(2), RATIO_DECIMALS=18, getRatio=10,
                getSnapshotRatio=1, getSnapshotTimestamp=0, getMaxRatioGrowthPerSecond=0)
    assert aave_v3.source_shape(capo) == "capo-ratio"
    assert aave_v3.source_shape({"ASSET_TO_USD_AGGREGATOR": _addr(1), "getPriceCap": 104_000_000,
                                 "decimals": 8}) == "capo-stable"
    assert aave_v3.source_shape({"price": 10 ** 8, "DECIMALS": 8, "latestAnswer": 10 ** 8}) == "fixed"
    assert aave_v3.source_shape({"latestAnswer": 1}) is None
    cap = aave_v3.capo_max_ratio(115 * 10 ** 16, 1000, 10 ** 9, 1000 + DAY)
    assert cap == 115 * 10 ** 16 + 10 ** 9 * DAY
    assert aave_v3.capo_answer(3000 * 10 ** 8, 118 * 10 ** 16, cap, 18) == 3000 * 10 ** 8 * cap // 10 ** 18
    assert aave_v3.capo_answer(3000 * 10 ** 8, 110 * 10 ** 16, cap, 18) == 3300 * 10 ** 8
    assert aave_v3.capo_answer(0, 110 * 10 ** 16, cap, 18) == 0


def test_feed_book_from_the_address_book_and_sources():
    book = parse_book({"chain_id": 1, "tokens": {"WETH": {"address": _addr(10), "decimals": 18},
                                                 "wstETH": {"address": _addr(11), "decimals": 18}},
                       "feeds": {"WETH": _addr(1)},
                       "oracles": {_addr(3): {"asset": "wstETH", "quote": "WETH", "kind": "rate", "type": "exchange-rate"},
                                   _addr(1): {"asset": "WETH", "deviation": 0.005, "heartbeat_s": 3600,
                                              "ref": "https://example.invalid/feed-page"}}}, "b.json")
    fb = FeedBook(book)
    assert fb.usd_asset(_addr(1)) == "WETH" and fb.meta(_addr(1)) == {"deviation": 0.005, "heartbeat_s": 3600.0}
    assert fb.get(_addr(3)).kind == "rate" and fb.usd_asset(_addr(3)) is None
    fb.add_source(_addr(1), "wstETH", "a protocol")  # the book wins
    assert fb.usd_asset(_addr(1)) == "WETH"
    fb.add_source(_addr(5), "WETH", "aave main")
    fb.add_source(_addr(5), "WETH", "aave lido")
    assert fb.usd_asset(_addr(5)) == "WETH" and fb.meta(_addr(5)) == {}
    fb.add_source(_addr(6), "WETH", "aave main")
    fb.add_source(_addr(6), "wstETH", "spark")  # two assets on one feed: ambiguous, unknown
    assert fb.get(_addr(6)) is None


@pytest.mark.parametrize("entry, msg", [
    ({"asset": "WETH", "deviation": 0.005}, "ref: deviation and heartbeat_s are not on chain"),
    ({"asset": "WETH", "kind": "twap"}, "kind: must be one of market, rate, fixed"),
    ({"asset": "XYZ"}, "asset: token 'XYZ' is not in tokens"),
    ({"kind": "market"}, "asset: a market source needs the asset it prices"),
    ({"asset": "WETH", "heartbeat_s": 0, "ref": "x"}, "heartbeat_s: expected seconds > 0"),
    ({"asset": "WETH", "deviation": 5, "ref": "x"}, "deviation: expected a fraction"),
])
def test_book_oracles_are_validated(entry, msg):
    data = {"chain_id": 1, "tokens": {"WETH": {"address": _addr(10), "decimals": 18}}, "oracles": {_addr(1): entry}}
    with pytest.raises(InputError, match=msg.replace("(", r"\(")):
        parse_book(data, "b.json")


def test_mainnet_book_oracle_entries_parse():
    from defirisk.addressbook import load_book

    b = load_book("mainnet")
    assert len(b.oracles) >= 3 and all(e.ref and e.asset in b.tokens for e in b.oracles.values())
    fb = FeedBook(b)
    assert fb.usd_asset(b.feeds["WETH"]) == "WETH"  # a CAPO adapter on ETH / USD is a ratio of WETH
    assert {e.type for e in b.oracles.values()} <= {"chainlink-aggregator", "capo-stable"}


# -- on the devnet ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def contracts():
    out = compile_files([ROOT / "fixtures/contracts/test/OracleSources.sol"])
    out["DevnetPriceFeed"] = compile_files([ROOT / "fixtures/contracts/devnet/DevnetPriceFeed.sol"])["DevnetPriceFeed"]
    return out


def _new(dn, contracts, name, types=(), args=()):
    data = contracts[name].bytecode + (eth_abi.encode(list(types), list(args)).hex() if types else "")
    receipt = dn.anvil.send_transaction({"from": DEPLOYER, "data": data, "gas": hex(10_000_000)})
    return to_checksum_address(receipt["contractAddress"])


def _send(anvil, to, signature, types, args, sender=DEPLOYER):
    data = keccak(text=signature)[:4] + eth_abi.encode(types, args)
    return anvil.send_transaction({"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(5_000_000)})


def _now(dn) -> int:
    return int(dn.anvil.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)


def _set_sources(dn, pairs):
    book = dn.book
    assets = [book["tokens"][s]["address"] for s, _ in pairs]
    _send(dn.anvil, book["aave_v3"]["oracle"], "setAssetSources(address[],address[])", ["address[]", "address[]"],
          [assets, [a for _, a in pairs]])


def _written(path: Path):
    markets = json.loads((path / "markets.json").read_text())
    manifest = json.loads((path / "manifest.json").read_text())
    return {(m["protocol"], m["market"]): m for m in markets}, manifest


@pytest.mark.chain
@pytest.mark.slow
def test_plain_devnet_sources_are_market_and_nothing_is_assumed(dn, tmp_path):
    run = take_snapshot(dn.rpc_url, book=dn.book, out=tmp_path / "s", cache=False)
    markets, manifest = _written(tmp_path / "s")
    assert manifest["assumptions"] == {"oracles": []}
    feeds = {a.lower(): s for s, a in dn.book["feeds"].items()}
    for (proto, _name), m in markets.items():
        for sym, fields in m["assets"].items():
            o = fields["oracle"]
            assert o["kind"] == "market" and "deviation" not in o and "heartbeat_s" not in o
            if proto == "aave-v3":
                assert o["type"] == "chainlink-aggregator" and feeds[o["source"].lower()] == sym
            else:
                assert o["type"] == "devnet-feed-oracle" and o["source"] == m["params"]["oracle"]
    assert load_snapshot(tmp_path / "s").market("aave-v3", "devnet").assets["WETH"]["oracle"]["kind"] == "market"
    assert run.seconds["oracle_sources"] < 30


@pytest.mark.chain
@pytest.mark.slow
def test_aave_capo_stable_fixed_and_unclassified_sources(dn, contracts, tmp_path):
    book = dn.book
    acl, feeds = book["aave_v3"]["acl_manager"], book["feeds"]
    now = _now(dn)
    provider = _new(dn, contracts, "TestRateProvider", ["uint256"], [118 * 10 ** 16])
    snap_ratio, snap_ts, bps = 115 * 10 ** 16, now - 30 * DAY, 500
    capo = _new(dn, contracts, "TestCapoAdapter",
                ["address", "address", "address", "string", "uint8", "uint104", "uint48", "uint16"],
                [acl, feeds["WETH"], provider, "wstETH / ETH capped", 18, snap_ratio, snap_ts, bps])
    stable = _new(dn, contracts, "TestCapoStableAdapter", ["address", "address", "string", "int256"],
                  [acl, feeds["USDC"], "USDC / USD capped", 104_000_000])
    fixed = _new(dn, contracts, "TestFixedPriceAdapter", ["address", "uint8", "int256", "string"],
                 [acl, 8, 10 ** 8, "DAI fixed"])
    opaque = _new(dn, contracts, "TestOpaqueSource", ["int256"], [10 ** 8])
    _set_sources(dn, [("wstETH", capo), ("USDC", stable), ("DAI", fixed), ("USDT", opaque)])
    dn.anvil.mine(1)

    run = take_snapshot(dn.rpc_url, protocols="aave-v3", book=book, out=tmp_path / "a", cache=False)
    markets, manifest = _written(tmp_path / "a")
    a = markets[("aave-v3", "devnet")]["assets"]
    growth = snap_ratio * bps // 10_000 // YEAR
    cap = snap_ratio + growth * (run.block.timestamp - snap_ts)
    assert cap < 118 * 10 ** 16  # capped at the block
    o = dict(a["wstETH"]["oracle"])
    assert o.pop("age_s") >= 0  # the base feed's (WETH's) answer age at the block
    assert o == {"kind": "ratio", "of": "WETH", "rate": 1.18, "cap": cap / 10 ** 18, "type": "capo-ratio", "source": capo}
    # The formula reproduces the price Aave uses: WETH market price x min(rate, cap).
    assert run.snapshot.assets["wstETH"].price_usd == pytest.approx(3000.0 * cap / 1e18, rel=1e-12)
    assert a["USDC"]["oracle"]["kind"] == "market" and a["USDC"]["oracle"]["type"] == "capo-stable"
    assert a["USDC"]["oracle"]["source"] == stable
    assert a["DAI"]["oracle"] == {"kind": "fixed", "price": 1.0, "type": "fixed", "source": fixed}
    assert a["USDT"]["oracle"] == {"kind": "market", "type": "unclassified", "source": opaque}
    assert a["WETH"]["oracle"]["type"] == "chainlink-aggregator"
    entries = manifest["assumptions"]["oracles"]
    assert [(e["protocol"], e["market"], e["asset"], e["source"]) for e in entries] == [("aave-v3", "devnet", "USDT", opaque)]
    assert "does not name it" in entries[0]["reason"]
    snap = load_snapshot(tmp_path / "a")  # the solver's validator accepts every object
    from defirisk.solver.oracles import BookOracle

    bo = BookOracle(snap.market("aave-v3", "devnet"), snap.symbols)
    prices = [snap.assets[s].price_usd for s in snap.symbols]
    formula = bo.formula(np.array(prices))
    for s in ("wstETH", "DAI", "WETH"):
        assert formula[snap.symbols.index(s)] == pytest.approx(snap.assets[s].price_usd, rel=1e-9)

    # New cap parameters above the rate: uncapped, the rate is what Aave uses.
    _send(dn.anvil, capo, "setCapParameters(uint104,uint48,uint16)", ["uint104", "uint48", "uint16"],
          [120 * 10 ** 16, now, bps])
    dn.anvil.mine(1)
    run2 = take_snapshot(dn.rpc_url, protocols="aave-v3", book=book, cache=False)
    o = run2.snapshot.market("aave-v3", "devnet").assets["wstETH"]["oracle"]
    assert o["rate"] == 1.18 and o["cap"] > 1.2 - 1e-12
    assert run2.snapshot.assets["wstETH"].price_usd == pytest.approx(3000.0 * 1.18, rel=1e-12)


@pytest.mark.chain
@pytest.mark.slow
def test_capo_on_an_unknown_base_feed_is_unclassified_unless_the_book_names_it(dn, contracts):
    book = json.loads(json.dumps(dn.book))
    acl, now = book["aave_v3"]["acl_manager"], _now(dn)
    eth2 = _new(dn, contracts, "DevnetPriceFeed", ["string", "uint8", "int256"], ["ETH / USD (another)", 8, 3000 * 10 ** 8])
    provider = _new(dn, contracts, "TestRateProvider", ["uint256"], [118 * 10 ** 16])
    capo = _new(dn, contracts, "TestCapoAdapter",
                ["address", "address", "address", "string", "uint8", "uint104", "uint48", "uint16"],
                [acl, eth2, provider, "wstETH / ETH", 18, 118 * 10 ** 16, now, 1000])
    _set_sources(dn, [("wstETH", capo)])
    dn.anvil.mine(1)
    run = take_snapshot(dn.rpc_url, protocols="aave-v3", book=book, cache=False)
    o = run.snapshot.market("aave-v3", "devnet").assets["wstETH"]["oracle"]
    assert dict(o) == {"kind": "market", "type": "unclassified", "source": capo}
    (entry,) = run.snapshot.manifest["assumptions"]["oracles"]
    assert entry["asset"] == "wstETH" and "base aggregator" in entry["reason"] and eth2.lower() in entry["reason"].lower()
    # The address book names the feed: ETH's market price (WETH), with its published update triggers.
    book["oracles"] = {eth2: {"asset": "WETH", "type": "chainlink-aggregator", "deviation": 0.005,
                              "heartbeat_s": 3600, "ref": "test figures"}}
    run = take_snapshot(dn.rpc_url, protocols="aave-v3", book=book, cache=False)
    o = run.snapshot.market("aave-v3", "devnet").assets["wstETH"]["oracle"]
    assert (o["kind"], o["of"], o["rate"], o["deviation"], o["heartbeat_s"]) == ("ratio", "WETH", 1.18, 0.005, 3600.0)
    assert list(run.snapshot.manifest["assumptions"]["oracles"]) == []


def _create_market(dn, loan, coll, oracle, lltv):
    m = dn.book["morpho_blue"]
    params = (dn.book["tokens"][loan]["address"], dn.book["tokens"][coll]["address"], oracle, m["irm"], lltv)
    _send(dn.anvil, m["morpho"], "createMarket((address,address,address,address,uint256))",
          ["(address,address,address,address,uint256)"], [params])


@pytest.mark.chain
@pytest.mark.slow
def test_morpho_chainlink_oracle_v2_markets(dn, contracts, tmp_path):
    book = dn.book
    feeds = book["feeds"]
    lltv = {m["key"]: m["lltv"] for m in book["morpho_blue"]["markets"]}
    vault = _new(dn, contracts, "TestRateProvider", ["uint256"], [118 * 10 ** 16])
    v2 = ["address", "uint256", "address", "address", "uint256", "address", "uint256", "address", "address", "uint256"]
    rate_oracle = _new(dn, contracts, "TestChainlinkOracleV2", v2, [vault, 10 ** 18, ZERO, ZERO, 18, ZERO, 1, ZERO, ZERO, 18])
    both_feeds = _new(dn, contracts, "TestChainlinkOracleV2", v2,
                      [ZERO, 1, feeds["WETH"], ZERO, 18, ZERO, 1, feeds["USDC"], ZERO, 6])
    base_only = _new(dn, contracts, "TestChainlinkOracleV2", v2, [ZERO, 1, feeds["WBTC"], ZERO, 8, ZERO, 1, ZERO, ZERO, 6])
    stray = _new(dn, contracts, "DevnetPriceFeed", ["string", "uint8", "int256"], ["??? / USD", 8, 3000 * 10 ** 8])
    unknown = _new(dn, contracts, "TestChainlinkOracleV2", v2, [ZERO, 1, stray, ZERO, 18, ZERO, 1, feeds["USDC"], ZERO, 6])
    _create_market(dn, "WETH", "wstETH", rate_oracle, lltv["wstETH/WETH"])
    _create_market(dn, "USDC", "WETH", both_feeds, lltv["WETH/USDC"])
    _create_market(dn, "USDC", "WBTC", base_only, lltv["WBTC/USDC"])
    _create_market(dn, "USDC", "WETH", unknown, lltv["WETH/USDC"])
    dn.anvil.mine(1)

    run = take_snapshot(dn.rpc_url, book=book, out=tmp_path / "m", cache=False)
    markets, manifest = _written(tmp_path / "m")
    by_oracle = {m["params"]["oracle"]: m for (p, _), m in markets.items() if p == "morpho-blue"}
    typ = "morpho-chainlink-oracle-v2"

    m = by_oracle[rate_oracle]
    assert m["market"].startswith("wstETH/WETH-945-")  # the devnet's own wstETH/WETH-945 keeps its name
    coll, loan = m["assets"]["wstETH"]["oracle"], m["assets"]["WETH"]["oracle"]
    assert (coll["kind"], coll["of"], coll["type"], coll["source"]) == ("ratio", "WETH", typ, rate_oracle)
    assert coll["rate"] == pytest.approx(1.18, rel=1e-12) and "age_s" not in coll
    assert loan == {"kind": "market", "type": typ, "source": rate_oracle}
    assert m["params"]["oracle_price"] == pytest.approx(1.18, rel=1e-12)

    m = by_oracle[both_feeds]
    assert {s: (o["oracle"]["kind"], o["oracle"]["type"]) for s, o in m["assets"].items()} == \
        {"WETH": ("market", typ), "USDC": ("market", typ)}
    assert m["assets"]["WETH"]["oracle"]["age_s"] >= 0

    m = by_oracle[base_only]
    assert m["assets"]["WBTC"]["oracle"]["kind"] == "market"
    assert m["assets"]["USDC"]["oracle"] == {"kind": "fixed", "price": 1.0, "type": typ, "source": base_only}

    m = by_oracle[unknown]
    assert all(o["oracle"] == {"kind": "market", "type": "unclassified", "source": unknown} for o in m["assets"].values())
    entries = [e for e in manifest["assumptions"]["oracles"] if e["source"] == unknown]
    assert sorted(e["asset"] for e in entries) == ["USDC", "WETH"] and all(e["market"] == m["market"] for e in entries)
    assert all(stray.lower() in e["reason"].lower() and "BASE_FEED_1" in e["reason"] for e in entries)
    assert len(manifest["assumptions"]["oracles"]) == 2

    snap = load_snapshot(tmp_path / "m")  # every object passes the solver's validation
    from defirisk.solver.oracles import BookOracle

    mk = next(x for x in snap.markets if x.params.get("oracle") == rate_oracle)
    bo = BookOracle(mk, snap.symbols)
    p = np.array([snap.assets[s].price_usd for s in snap.symbols])
    f = bo.formula(p)
    ratio = f[snap.symbols.index("wstETH")] / f[snap.symbols.index("WETH")]
    assert ratio == pytest.approx(mk.params["oracle_price"], rel=1e-12)  # reproduces Morpho's price()
    assert math.isfinite(ratio)


@pytest.mark.chain
@pytest.mark.slow
def test_capped_stable_adapter_is_said_in_the_manifest(dn, contracts):
    book = dn.book
    stable = _new(dn, contracts, "TestCapoStableAdapter", ["address", "address", "string", "int256"],
                  [book["aave_v3"]["acl_manager"], book["feeds"]["USDC"], "USDC / USD capped", 99_000_000])
    _set_sources(dn, [("USDC", stable)])
    dn.anvil.mine(1)
    run = take_snapshot(dn.rpc_url, protocols="aave-v3", book=book, cache=False)
    o = run.snapshot.market("aave-v3", "devnet").assets["USDC"]["oracle"]
    assert (o["kind"], o["type"], o["source"]) == ("market", "capo-stable", stable)
    assert run.snapshot.assets["USDC"].price_usd == 0.99  # AaveOracle answers the cap
    (entry,) = run.snapshot.manifest["assumptions"]["oracles"]
    assert entry["asset"] == "USDC" and "capped" in entry["reason"] and "99000000" in entry["reason"]
