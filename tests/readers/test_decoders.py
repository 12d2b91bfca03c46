"""Pure decoders and math of the readers, with known answers (no chain)."""
from __future__ import annotations

import json

import pytest

from defirisk.addressbook import load_book, parse_book
from defirisk.chain.abi import ABI_DIR, interface
from defirisk.errors import InputError
from defirisk.markets.dex import bitmap_words, initialized_ticks, v3_spot_price
from defirisk.protocols import aave_v3, morpho_blue
from defirisk.snapshot_chain import parse_protocols


def _word(**fields):
    layout = {"ltv": (0, 16), "lt": (16, 16), "lb": (32, 16), "dec": (48, 8), "active": (56, 1),
              "frozen": (57, 1), "paused": (60, 1), "fee": (152, 16), "emode": (168, 8), "ceiling": (212, 40)}
    w = 0
    for k, v in fields.items():
        start, width = layout[k]
        assert v < 1 << width
        w |= v << start
    return w


def test_reserve_configuration_bitmap():
    c = aave_v3.decode_reserve_config(_word(ltv=8000, lt=8250, lb=10500, dec=18, active=1, paused=1,
                                            fee=1000, emode=1, ceiling=123456))
    assert (c.ltv_bps, c.liquidation_threshold_bps, c.liquidation_bonus_bps, c.decimals) == (8000, 8250, 10500, 18)
    assert c.active and c.paused and not c.frozen
    assert (c.liquidation_protocol_fee_bps, c.emode_category, c.debt_ceiling) == (1000, 1, 123456)


def test_user_configuration_bits():
    # reserve 0 borrowed; reserve 1 collateral; reserve 3 both.
    word = (1 << 0) | (1 << 3) | (1 << 6) | (1 << 7)
    assert aave_v3.user_config_ids(word) == ([0, 3], [1, 3])
    assert aave_v3.user_config_ids(0) == ([], [])
    assert aave_v3.bitmap_ids(0b1011) == [0, 1, 3]


def test_ray_mul_and_versions():
    assert aave_v3.ray_mul(3, aave_v3.RAY // 2) == 2  # 1.5 rounds half up
    assert aave_v3.ray_mul(10**18, 11 * 10**26) == 11 * 10**17
    assert aave_v3.version_from_revision(None) == "3.0"
    assert aave_v3.version_from_revision(1) == "3.0"
    assert aave_v3.version_from_revision(4) == "3.1"
    assert aave_v3.version_from_revision(7) == "3.3"
    assert aave_v3.version_from_revision(11) == "3.7"


def test_morpho_math_known_answers():
    # 10% APR for one year at Taylor order 3: e^0.1 - 1 ~ 0.105170 (third-order: 0.1051666...)
    rate = 10**17 // (365 * 86400)
    growth = morpho_blue.w_taylor_compounded(rate, 365 * 86400)
    assert growth / 1e18 == pytest.approx(0.1 + 0.1**2 / 2 + 0.1**3 / 6, rel=1e-6)
    s = morpho_blue.MarketState(1_000_000, 10**12, 500_000, 5 * 10**11, 100, 0)
    a = morpho_blue.accrue(s, rate, 100 + 365 * 86400)
    assert a.total_borrow_assets - s.total_borrow_assets == a.total_supply_assets - s.total_supply_assets
    assert a.total_supply_shares == s.total_supply_shares and a.last_update == 100 + 365 * 86400
    fee = morpho_blue.accrue(morpho_blue.MarketState(*s.as_tuple()[:5], 10**17), rate, 100 + 365 * 86400)
    assert fee.total_supply_shares > s.total_supply_shares  # fee shares minted
    assert morpho_blue.accrue(s, rate, 50) == s
    assert morpho_blue.to_assets_up(1, 0, 0) == 1  # (1*1 + 1e6 - 1) // 1e6
    assert morpho_blue.lif(86 * 10**16) == pytest.approx(1 / (1 - 0.3 * 0.14))
    assert morpho_blue.lif(5 * 10**17) == 1.15


def test_v3_tick_bitmap_helpers():
    words = bitmap_words(60)
    assert words.start == -58 and words.stop == 58
    assert initialized_ticks({-1: 1 << 255, 0: 0b101}, 60) == [-60, 0, 120]
    venue = {"sqrt_price_x96": str(2**96), "base_is_token0": True, "base_decimals": 18, "quote_decimals": 6}
    assert v3_spot_price(venue) == pytest.approx(1e12)


def test_abis_match_the_npm_builds():
    """Our hand-written ABI files agree with the Aave npm artifacts on every shared function."""
    from pathlib import Path

    art = Path(__file__).resolve().parents[2] / "node_modules/@aave/core-v3/artifacts/contracts"
    if not art.exists():
        pytest.skip("npm packages not installed")
    pairs = {"AaveV3Pool": "protocol/pool/Pool.sol/Pool.json", "AaveOracle": "misc/AaveOracle.sol/AaveOracle.json",
             "AaveV3PoolAddressesProvider": "protocol/configuration/PoolAddressesProvider.sol/PoolAddressesProvider.json"}
    checked = 0
    for ours, theirs in pairs.items():
        ref = interface(ours)
        from defirisk.chain.abi import Interface
        npm = Interface("npm", json.loads((art / theirs).read_text())["abi"])
        for name, fn in ref.functions.items():
            if name in npm.functions:
                assert fn.signature == npm.functions[name].signature
                assert fn.output_types == npm.functions[name].output_types, name
                checked += 1
        for name, ev in ref.events.items():
            if name in npm.events:
                assert ev.topic0 == npm.events[name].topic0
                checked += 1
    assert checked >= 20
    assert {"AaveOracle", "AaveV3Pool", "MorphoBlue", "UniswapV3Pool"} <= {p.stem for p in ABI_DIR.glob("*.json")}


def test_address_books():
    m = load_book("mainnet")
    assert m.chain_id == 1 and [e.market for e in m.aave_v3] == ["main", "lido", "spark"]
    assert m.aave_v3[2].version == "3.0" and m.morpho_blue.morpho.startswith("0xBBBB")
    with pytest.raises(InputError, match="aave_v3: needs pool or pool_addresses_provider"):
        parse_book({"chain_id": 1, "aave_v3": {"start_block": 3}}, "x.json")
    with pytest.raises(InputError, match="uniswap_v3.pools key 'WETH/USDC' must be BASE/QUOTE/FEE"):
        parse_book({"chain_id": 1, "uniswap_v3": {"pools": {"WETH/USDC": "0x" + "11" * 20}}}, "x.json")
    with pytest.raises(InputError, match="no such file and not a built-in book"):
        load_book("nope-book")


def test_yaml_book_for_another_fork(tmp_path):
    p = tmp_path / "fork.yaml"
    p.write_text("chain_id: 100\nname: gnosis-fork\naave_v3:\n  - market: other\n"
                 "    pool_addresses_provider: '0x36616cf17557639614c1cdDb356b1B83fc0B2132'\n    start_block: 5\n")
    b = load_book(p)
    assert b.name == "gnosis-fork" and b.aave_v3[0].provider and b.aave_v3[0].pool is None
    assert parse_protocols("aave-v3") == ("aave-v3",)
    with pytest.raises(InputError):
        parse_protocols("")
