"""Scenario validation and position planning: pure, no chain."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from defirisk.devnet import build as build_mod
from defirisk.devnet import load_scenario, parse_scenario, plan_positions, start_devnet
from defirisk.devnet.population import aave_health_factor, morpho_health_factor
from defirisk.errors import InputError

SCENARIOS = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"


@pytest.fixture(scope="module")
def small_doc():
    return yaml.safe_load((SCENARIOS / "small.yaml").read_text())


def _refuse(doc, field: str, *fragments: str):
    with pytest.raises(InputError) as info:
        plan_positions(parse_scenario(doc, "bad.yaml"))
    msg = str(info.value)
    assert f"bad.yaml: {field}:" in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_bundled_scenarios_are_valid():
    for path in sorted(SCENARIOS.glob("*.yaml")):
        scn = load_scenario(path)
        plan = plan_positions(scn)
        assert plan.aave or plan.morpho, path


def test_unknown_asset_is_named(small_doc):
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["population"]["collateral_mix"][0]["collateral"] = {"PEPE": 1}
    _refuse(doc, "aave_v3.population.collateral_mix[0].collateral.PEPE", "unknown asset 'PEPE'")


def test_unknown_asset_in_morpho_market(small_doc):
    doc = copy.deepcopy(small_doc)
    doc["morpho_blue"]["markets"]["WETH/USDC"]["loan"] = "USDX"
    _refuse(doc, "morpho_blue.markets.WETH/USDC.loan", "unknown asset 'USDX'")


def test_negative_amount_is_named(small_doc):
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["positions"][1]["debt"]["USDC"] = -5
    _refuse(doc, "aave_v3.positions[1].debt.USDC", "out of range")
    doc = copy.deepcopy(small_doc)
    doc["morpho_blue"]["markets"]["WBTC/USDC"]["supply"] = -1
    _refuse(doc, "morpho_blue.markets.WBTC/USDC.supply", "out of range")
    doc = copy.deepcopy(small_doc)
    doc["venues"]["uniswap_v2"]["WETH/USDC"]["base_reserve"] = -10
    _refuse(doc, "venues.uniswap_v2.WETH/USDC.base_reserve", "out of range")


@pytest.mark.parametrize("hf", [0.9, 1.0])
def test_health_factor_at_or_below_one_is_impossible(small_doc, hf):
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["population"]["health_factor"][0]["low"] = hf
    _refuse(doc, "aave_v3.population.health_factor[0].low", "impossible health factor")
    doc = copy.deepcopy(small_doc)
    doc["morpho_blue"]["positions"][0]["health_factor"] = hf
    _refuse(doc, "morpho_blue.positions[0].health_factor", "impossible health factor")


def test_health_factor_unreachable_with_zero_threshold(small_doc):
    doc = copy.deepcopy(small_doc)
    # USDT has liquidation threshold 0 in the small scenario: no health factor can come from it.
    doc["aave_v3"]["positions"][0]["collateral"] = {"USDT": 1000}
    _refuse(doc, "aave_v3.positions[0].collateral.USDT", "liquidation threshold 0")


def test_explicit_amounts_implying_liquidatable_position(small_doc):
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["positions"][1]["debt"] = {"USDC": 400000}  # 2 WBTC + 10 WETH cannot carry it
    _refuse(doc, "aave_v3.positions[1].debt", "impossible health factor")


@pytest.mark.parametrize("field,value,path", [
    ("ltv", 1.2, "aave_v3.reserves.WETH.ltv"),
    ("ltv", 0.9, "aave_v3.reserves.WETH.ltv"),  # above the liquidation threshold
    ("liquidation_threshold", 0.97, "aave_v3.reserves.WETH.liquidation_threshold"),  # lt*(1+bonus) > 1
    ("liquidation_bonus", 0.7, "aave_v3.reserves.WETH.liquidation_bonus"),
    ("reserve_factor", 1.5, "aave_v3.reserves.WETH.reserve_factor"),
])
def test_reserve_parameter_out_of_range(small_doc, field, value, path):
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["reserves"]["WETH"][field] = value
    _refuse(doc, path)


def test_other_out_of_range_parameters(small_doc):
    doc = copy.deepcopy(small_doc)
    doc["morpho_blue"]["markets"]["WETH/USDC"]["lltv"] = 1.0
    _refuse(doc, "morpho_blue.markets.WETH/USDC.lltv", "out of range")
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["emode"][1].update(ltv=0.81, liquidation_threshold=0.82)  # below WETH's own 0.825
    _refuse(doc, "aave_v3.emode.1.liquidation_threshold", "must exceed")
    doc = copy.deepcopy(small_doc)
    doc["assets"]["WBTC"]["decimals"] = 40
    _refuse(doc, "assets.WBTC.decimals", "out of range")
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["reserves"]["WETH"]["typo_field"] = 1
    _refuse(doc, "aave_v3.reserves.WETH.typo_field", "unknown field")


def test_insufficient_liquidity_is_named(small_doc):
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["liquidity"]["USDC"] = 10
    _refuse(doc, "aave_v3.liquidity.USDC", "supply at least")
    doc = copy.deepcopy(small_doc)
    doc["morpho_blue"]["markets"]["WETH/USDC"]["supply"] = 1000
    _refuse(doc, "morpho_blue.markets.WETH/USDC.supply")


@pytest.mark.parametrize("section", ["compound_v3", "maker", "liquity"])
def test_later_protocols_are_refused_by_name(small_doc, section):
    doc = copy.deepcopy(small_doc)
    doc[section] = {"markets": {}}
    _refuse(doc, section, "not yet supported")


def test_bad_scenario_refused_before_any_anvil_starts(small_doc, tmp_path, monkeypatch):
    started = []

    class NoAnvil:
        def __init__(self, *a, **k):
            started.append(1)

    monkeypatch.setattr(build_mod, "Anvil", NoAnvil)
    doc = copy.deepcopy(small_doc)
    doc["aave_v3"]["population"]["health_factor"][1]["high"] = 0.5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"aave_v3\.population\.health_factor\[1\]\.high"):
        start_devnet(path)
    assert started == []


def test_plan_is_deterministic_distinct_and_on_target():
    scn = load_scenario(SCENARIOS / "small.yaml")
    a, b = plan_positions(scn), plan_positions(scn)
    assert a == b
    accounts = [p.account for p in a.aave] + [p.account for p in a.morpho]
    assert len(set(accounts)) == len(accounts)
    bands = scn.aave.population.health_factor
    for pos in a.aave:
        assert pos.health_factor == pytest.approx(aave_health_factor(scn, pos), rel=1e-12)
        if pos.label.startswith("aave-pop"):
            # debt is rounded down to token units, so the HF is at or a hair above the drawn target
            assert any(b.low <= pos.health_factor <= b.high * (1 + 1e-6) for b in bands), pos
    for pos in a.morpho:
        assert pos.health_factor == pytest.approx(morpho_health_factor(scn, pos), rel=1e-12)
        assert pos.health_factor > 1


def test_price_move_changes_health_factor_as_expected():
    scn = load_scenario(SCENARIOS / "small.yaml")
    pos = next(p for p in plan_positions(scn).aave if p.label == "whale-weth")  # WETH only, USDC debt
    assert aave_health_factor(scn, pos, {"WETH": 2400.0}) == pytest.approx(1.25 * 0.8, rel=1e-9)
