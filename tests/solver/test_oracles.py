"""Protocol oracles as formulas of market prices (defirisk/solver/oracles.py): hand-derived cases with
ids, the deviation threshold and heartbeat, the Morpho exchange-rate market, bad input, and the
property that `market` oracles everywhere change nothing."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from defirisk.errors import InputError
from defirisk.model import MarketParams, Snapshot
from defirisk.snapshot import load_snapshot, write_snapshot
from defirisk.solver import liquidation_levels, solve
from defirisk.solver.views import health_factors, liquidatable_now

from .helpers import make_snapshot
from .test_fastpaths import ACCOUNT, _cross_snapshot

AAVE = {"liquidation_threshold": 0.8, "liquidation_bonus": 1.05, "liquidation_protocol_fee": 0.0}
USDC = {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04, "liquidation_protocol_fee": 0.0}
POOLS = {"wstETH": {"kind": "constant_product", "base_reserve": 1000.0, "quote_reserve": 3.6e6, "fee": 0.0},
         "WETH": {"kind": "constant_product", "base_reserve": 10_000.0, "quote_reserve": 3e7, "fee": 0.0}}


def lst_book(oracle=None):
    """O1: one Aave v3.0 account, 10 wstETH (LT 0.8, LB 1.05) against 25,000 USDC; wstETH $3,600 on
    the market, WETH $3,000; the wstETH oracle is `oracle` (None = its market price)."""
    w = dict(AAVE, **({"oracle": oracle} if oracle else {}))
    return make_snapshot(
        {"USDC": 1.0, "WETH": 3000.0, "wstETH": 3600.0},
        [("aave-v3", "main", "A", "wstETH", "collateral", 10.0), ("aave-v3", "main", "A", "USDC", "debt", 25_000.0)],
        [("aave-v3", "main", {"version": "3.0"}, {"wstETH": w, "USDC": USDC, "WETH": AAVE})], POOLS)


RATIO = {"kind": "ratio", "of": "WETH", "rate": 1.2}


# --- O1: a ratio-priced collateral ------------------------------------------------------------------
# HF0 = 10 * 1.2 * 3000 * 0.8 / 25,000 = 1.152. Priced as 1.2 x WETH, the account is liquidatable when
# 9.6 * P_WETH < 25,000: P_WETH < 2,604.1667, a WETH drop of 13.1944%. A wstETH sell-off never moves its
# oracle. At WETH -14% (2,580): oracle 3,096, HF 0.99072 > 0.95 -> 50% close: repays 12,500 USDC,
# seizes 12,500 * 1.05 / 3,096 = 4.2393411 wstETH; afterwards HF = 5.7606589 * 3,096 * 0.8 / 12,500
# = 1.14152: one call, even though the sale of the seized wstETH moves wstETH's market price down.

@pytest.mark.parametrize("mode", ["sequential", "equilibrium", "fixed-price"])
def test_O1_lst_selloff_never_liquidates_ratio_priced_collateral(mode):
    r = solve(lst_book(RATIO), {"wstETH": 0.5}, mode)
    assert r.totals.accounts_liquidated == 0
    assert r.end_prices["wstETH"] == pytest.approx(1800.0, rel=1e-12)
    # the same book priced by its own market is liquidated by that sell-off
    assert solve(lst_book(), {"wstETH": 0.5}, mode).totals.accounts_liquidated == 1


@pytest.mark.parametrize("mode", ["sequential", "equilibrium"])
def test_O1_base_drop_liquidates_as_rate_times_base(mode):
    snap = lst_book(RATIO)
    assert solve(snap, {"WETH": 0.13}, mode).totals.accounts_liquidated == 0      # above 2,604.17
    r = solve(snap, {"WETH": 0.14}, mode)
    liq = r.liquidations
    assert len(liq) == 1
    assert liq.collateral_seized.iloc[0] == pytest.approx(12_500 * 1.05 / 3096.0, rel=1e-12)   # 4.2393411
    assert liq.debt_repaid.iloc[0] == pytest.approx(12_500.0, rel=1e-12)
    assert liq.collateral_seized_usd.iloc[0] == pytest.approx(12_500 * 1.05, rel=1e-12)     # at the oracle
    # exactly as if the protocol's price were rate x base: the same first call as a book whose wstETH
    # market stands at 3,096 when it is made
    same = solve(lst_book(), {"wstETH": 0.14}, "sequential").liquidations
    assert liq.collateral_seized.iloc[0] == pytest.approx(same.collateral_seized.iloc[0], rel=1e-12)
    assert r.assumptions["oracles"] == {"aave-v3/main": {"wstETH": "1.2 x WETH market price"}}


def test_O1_static_levels_follow_the_base_asset():
    snap = lst_book(RATIO)
    lv = liquidation_levels(snap, "WETH")
    assert list(lv.account) == ["A"]
    assert lv.liquidation_price.iloc[0] == pytest.approx(25_000 / 9.6, rel=1e-12)
    assert len(liquidation_levels(snap, "wstETH").dropna(subset=["liquidation_price"])) == 0
    assert health_factors(snap).health_factor.iloc[0] == pytest.approx(1.152, rel=1e-12)


def test_O1_cap_limits_the_rate():
    capped = dict(RATIO, rate=1.25, cap=1.2)
    a = solve(lst_book(capped), {"WETH": 0.14}, "sequential").liquidations
    b = solve(lst_book(RATIO), {"WETH": 0.14}, "sequential").liquidations
    pd.testing.assert_frame_equal(a, b)


# --- O2: a deviation threshold and a heartbeat ---------------------------------------------------------
# 10 WETH (LT 0.8, LB 1.05) against 23,940 USDC: HF0 = 24,000 / 23,940 = 1.0025, liquidatable below
# P = 2,992.5 (-0.25%). The WETH feed moves only past 0.5% deviation from its last answer (3,000).
#   -0.4% (2,988): within 0.5% -> the answer stays 3,000 -> nothing, though the market is past the trigger.
#   -0.6% (2,982): the answer moves -> HF 0.99649 -> 50%: repays 11,970, seizes 11,970*1.05/2,982 = 4.2147887.
#   -0.4% with a 3,600 s heartbeat and an answer 3,000 s old: refreshed at 600 s = round 50 (12 s rounds),
#     then liquidated at 2,988: seizes 11,970*1.05/2,988 = 4.2063253.

def weth_book(oracle):
    return make_snapshot(
        {"USDC": 1.0, "WETH": 3000.0},
        [("aave-v3", "main", "A", "WETH", "collateral", 10.0), ("aave-v3", "main", "A", "USDC", "debt", 23_940.0)],
        [("aave-v3", "main", {"version": "3.0"}, {"WETH": dict(AAVE, oracle=oracle), "USDC": USDC})],
        {"WETH": POOLS["WETH"]})


DEV = {"kind": "market", "deviation": 0.005}


@pytest.mark.parametrize("mode", ["sequential", "equilibrium"])
def test_O2_shock_inside_the_deviation_liquidates_nothing(mode):
    assert solve(weth_book(DEV), {"WETH": 0.004}, mode).totals.accounts_liquidated == 0
    assert solve(weth_book({"kind": "market"}), {"WETH": 0.004}, mode).totals.accounts_liquidated == 1
    r = solve(weth_book(DEV), {"WETH": 0.006}, mode)
    assert r.liquidations.collateral_seized.iloc[0] == pytest.approx(11_970 * 1.05 / 2982.0, rel=1e-12)


def test_O2_heartbeat_refreshes_the_answer():
    r = solve(weth_book(dict(DEV, heartbeat_s=3600, age_s=3000)), {"WETH": 0.004}, "sequential")
    assert int(r.liquidations["round"].min()) == 50
    assert r.liquidations.collateral_seized.iloc[0] == pytest.approx(11_970 * 1.05 / 2988.0, rel=1e-12)
    # a fresh answer (age 0) waits the whole hour: round 300
    r = solve(weth_book(dict(DEV, heartbeat_s=3600)), {"WETH": 0.004}, "sequential")
    assert int(r.liquidations["round"].min()) == 300


# --- O3: a Morpho wstETH/WETH market with an exchange-rate oracle ----------------------------------------
# Collateral priced as 1.2 x WETH, loan WETH: the oracle's price of collateral in loan units is 1.2
# whatever the market does. 10 wstETH against 11 WETH at LLTV 0.945: 10 * 1.2 * 0.945 = 11.34 > 11.

def morpho_lst(oracle):
    assets = {"wstETH": {"oracle": oracle}, "WETH": {}} if oracle else {}
    return make_snapshot(
        {"WETH": 3000.0, "wstETH": 3600.0},
        [("morpho-blue", "wstETH/WETH", "A", "wstETH", "collateral", 10.0),
         ("morpho-blue", "wstETH/WETH", "A", "WETH", "debt", 11.0)],
        [("morpho-blue", "wstETH/WETH", {"lltv": 0.945, "collateral": "wstETH", "loan": "WETH"}, assets)], POOLS)


@pytest.mark.parametrize("shock", [{"wstETH": 0.5}, {"WETH": 0.5}, {"wstETH": 0.3, "WETH": 0.6}])
def test_O3_exchange_rate_market_never_liquidated_by_prices(shock):
    assert solve(morpho_lst(RATIO), shock, "sequential").totals.accounts_liquidated == 0
    assert solve(morpho_lst(RATIO), shock, "equilibrium").totals.accounts_liquidated == 0


def test_O3_market_priced_lst_market_is_liquidated_by_a_selloff():
    r = solve(morpho_lst(None), {"wstETH": 0.1}, "sequential")
    assert r.totals.accounts_liquidated == 1


def test_O3_oracle_price_anchors_to_the_formula():
    # Morpho's oracle_price (loan per collateral) anchors to the book's oracle at the snapshot: with the
    # ratio formula and oracle_price = 1.2 the factor k is 1 and nothing changes
    a = morpho_lst(RATIO)
    m = a.markets[0]
    b = Snapshot(a.manifest, a.assets, a.positions,
                 (MarketParams(m.protocol, m.market, {**m.params, "oracle_price": 1.2}, m.assets),), a.venues)
    assert_allclose(health_factors(a).health_factor, health_factors(b).health_factor, rtol=1e-12)


# --- O4: a fixed-price oracle -------------------------------------------------------------------------

def test_O4_fixed_oracle_does_not_move():
    snap = lst_book({"kind": "fixed", "price": 3600.0})
    assert solve(snap, {"wstETH": 0.6}, "sequential").totals.accounts_liquidated == 0
    assert solve(snap, {"WETH": 0.6}, "sequential").totals.accounts_liquidated == 0
    # a fixed answer below the market: liquidatable now, whatever the market says
    low = lst_book({"kind": "fixed", "price": 3000.0})   # HF = 24,000 / 25,000 = 0.96
    assert list(liquidatable_now(low).account) == ["A"]


# --- property: `market` everywhere changes nothing -----------------------------------------------------

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACCOUNT, min_size=1, max_size=12), st.sampled_from(["3.0", "3.3"]),
       st.sampled_from(["sequential", "equilibrium", "fixed-price"]), st.floats(0.05, 0.6))
def test_market_oracles_everywhere_are_bit_for_bit_today(accounts, version, mode, shock):
    base = _cross_snapshot(accounts, version)
    markets = tuple(MarketParams(m.protocol, m.market, m.params,
                                 {s: {**dict(f), "oracle": {"kind": "market"}} for s, f in m.assets.items()})
                    for m in base.markets)
    same = Snapshot(base.manifest, base.assets, base.positions, markets, base.venues)
    a, b = solve(base, {"WETH": shock}, mode), solve(same, {"WETH": shock}, mode)
    assert a.end_prices == b.end_prices
    pd.testing.assert_frame_equal(a.liquidations, b.liquidations)
    pd.testing.assert_frame_equal(a.sales, b.sales)


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("oracle, field, words", [
    ({"kind": "ratio", "of": "stETH", "rate": 1.1}, "oracle.of", "unknown asset 'stETH'"),
    ({"kind": "ratio", "of": "WETH"}, "oracle.rate", "missing"),
    ({"kind": "ratio", "of": "WETH", "rate": -1}, "oracle.rate", "must be > 0"),
    ({"kind": "ratio", "of": "wstETH", "rate": 1}, "oracle.of", "its own asset"),
    ({"kind": "spot"}, "oracle.kind", "must be one of market, ratio, fixed"),
    ({"kind": "fixed"}, "oracle.price", "missing"),
    ({"kind": "market", "deviation": 1.5}, "oracle.deviation", "must be >= 0 and < 1"),
    ({"kind": "market", "heartbeat_s": "soon"}, "oracle.heartbeat_s", "not a number"),
    ({"kind": "market", "delay": 3}, "oracle.delay", "unknown field"),
    ("chainlink", "oracle", "expected an object"),
])
def test_bad_oracle_is_named_by_file_market_asset_field(tmp_path, oracle, field, words):
    snap = lst_book(None)
    d = tmp_path / "snap"
    write_snapshot(snap, d)
    markets = json.loads((d / "markets.json").read_text())
    markets[0]["assets"]["wstETH"]["oracle"] = oracle
    (d / "markets.json").write_text(json.dumps(markets))
    with pytest.raises(InputError) as e:
        load_snapshot(d)
    msg = str(e.value)
    assert str(d / "markets.json") in msg and "market aave-v3/main" in msg and "asset wstETH" in msg
    assert f"field {field}" in msg and words in msg
    assert "Traceback" not in msg and "array(" not in msg


def test_oracle_object_round_trips_through_a_snapshot_directory(tmp_path):
    snap = lst_book(dict(RATIO, deviation=0.005, heartbeat_s=86_400, source="0xabc", type="capo-ratio"))
    write_snapshot(snap, tmp_path / "s")
    back = load_snapshot(tmp_path / "s")
    a, b = solve(snap, {"WETH": 0.14}, "sequential"), solve(back, {"WETH": 0.14}, "sequential")
    pd.testing.assert_frame_equal(a.liquidations, b.liquidations)
