"""Price-impact recovery between sequential rounds (engine._Recovery, docs/model.md "Recovery"):
hand-derived cases with ids, the liquidators' second chance, bad input."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from defirisk.errors import InputError
from defirisk.solver import solve

from .helpers import make_snapshot
from .test_economics import two_bonus_snapshot

K = 1e7  # fee-free constant product: 100 X / 100,000 USDC, price = K / B^2


def one_account():
    """R1: Morpho, LLTV 0.8 (LIF = 1 / (1 - 0.3 x 0.2) = 1 / 0.94), 10 X against 7,600 USDC: liquidatable
    below $950. A 10% shock takes X to 900 (B1 = sqrt(K / 900)); round 1 repays all and seizes
    7,600 / 0.94 / 900 = 8.98345 X, sold: B2 = B1 + 8.98345, X at p1 = K / B2^2 = $764.19. Nothing else is
    liquidatable; the cascade is found to stop at round 2, one block later. With a 12 s half-life the
    impact has halved by then: X ends at 900 + (p1 - 900) / 2 = $832.10; without recovery at p1."""
    return make_snapshot(
        {"USDC": 1.0, "X": 1000.0},
        [("morpho-blue", "X/USDC", "A", "X", "collateral", 10.0), ("morpho-blue", "X/USDC", "A", "USDC", "debt", 7600.0)],
        [("morpho-blue", "X/USDC", {"lltv": 0.8, "collateral": "X", "loan": "USDC"}, {})],
        {"X": {"kind": "constant_product", "base_reserve": 100.0, "quote_reserve": 100_000.0, "fee": 0.0}})


def test_R1_impact_halves_in_one_half_life():
    seized = 7600 / 0.94 / 900
    p1 = K / (math.sqrt(K / 900) + seized) ** 2
    assert p1 == pytest.approx(764.19, abs=0.01)
    plain = solve(one_account(), {"X": 0.1})
    assert plain.end_prices["X"] == pytest.approx(p1, rel=1e-12)
    r = solve(one_account(), {"X": 0.1}, recovery={"X": 12})
    assert r.liquidations.collateral_seized.iloc[0] == pytest.approx(seized, rel=1e-12)
    assert r.end_prices["X"] == pytest.approx(900 + (p1 - 900) / 2, rel=1e-12)
    rec = r.sales[r.sales.kind == "recovery"]
    assert len(rec) == 1 and rec["round"].iloc[0] == 2 and rec.amount.iloc[0] < 0   # arbitrage buys X back
    assert r.assumptions["recovery_halflife_s"] == {"X": 12.0}
    # two half-lives per block: a quarter of the impact is left
    r = solve(one_account(), {"X": 0.1}, recovery={"X": 6})
    assert r.end_prices["X"] == pytest.approx(900 + (p1 - 900) / 4, rel=1e-12)


def test_R2_a_call_that_never_pays_is_left_while_the_pool_refills():
    """two_bonus_snapshot (test_economics): the LB 1.01 call cannot pay for the 3% impact of its own
    30 WETH sale even on the refilled post-shock pool, so recovery does not liquidate it; the cascade
    follows the refill block by block until the impact is below 1e-6 of the shocked price ($1,280)."""
    r = solve(two_bonus_snapshot(), {"WETH": 0.36}, liquidators="profitable", recovery={"WETH": 60})
    assert list(r.liquidations.account) == ["a5"]
    assert list(r.not_liquidated.account) == ["a1"]
    assert abs(r.end_prices["WETH"] - 1280.0) <= 1e-6 * 1280.0
    assert (r.sales.kind == "recovery").sum() > 10


def test_R3_recovery_turns_a_later_call_profitable():
    """After a5's sale, account c (10 WETH, liquidatable below $1,250) is liquidated in round 2 in both
    runs; with recovery its 50% call is made on a pool already refilling, so it sells higher."""
    mk = lambda lb: {"WETH": {"liquidation_threshold": 0.65, "liquidation_bonus": lb},  # noqa: E731
                     "USDC": {"liquidation_threshold": 0.0}}
    pos = [("aave-v3", "b5", "a5", "WETH", "collateral", 40.0), ("aave-v3", "b5", "a5", "USDC", "debt", 30 * 1280 / 1.05),
           ("aave-v3", "b4", "c", "WETH", "collateral", 10.0), ("aave-v3", "b4", "c", "USDC", "debt", 10 * 1250 * 0.65)]
    snap = make_snapshot({"WETH": 2000.0, "USDC": 1.0}, pos, [("aave-v3", "b4", {}, mk(1.04)), ("aave-v3", "b5", {}, mk(1.05))],
                         {"WETH": {"kind": "constant_product", "base_reserve": 776.0, "quote_reserve": 1_552_000.0, "fee": 0.0}})
    a = solve(snap, {"WETH": 0.36}, liquidators="profitable")
    b = solve(snap, {"WETH": 0.36}, liquidators="profitable", recovery={"WETH": 120})
    for r in (a, b):
        assert list(r.liquidations.account) == ["a5", "c"] and list(r.liquidations["round"]) == [1, 2]
    sale = lambda r: r.sales[(r.sales.kind == "liquidation") & (r.sales["round"] == 2)].iloc[0]  # noqa: E731
    assert sale(b).price_before > sale(a).price_before
    assert b.end_prices["WETH"] > a.end_prices["WETH"]


@pytest.mark.parametrize("mode", ["equilibrium", "fixed-price"])
def test_timeless_modes_record_recovery_as_not_applied(mode):
    r = solve(one_account(), {"X": 0.1}, mode, recovery={"X": 12})
    assert "not applied" in r.assumptions["recovery_halflife_s"]
    plain = solve(one_account(), {"X": 0.1}, mode)
    assert r.end_prices == plain.end_prices
    pd.testing.assert_frame_equal(r.liquidations, plain.liquidations)


@pytest.mark.parametrize("rec, words", [
    ({"Y": 10}, "unknown asset 'Y'"),
    ({"USDC": 10}, "USDC has no venue"),
    ({"X": 0}, "positive number of seconds"),
    ({"X": "fast"}, "must be a number of seconds"),
    ({"X": float("inf")}, "positive number of seconds"),
])
def test_bad_recovery_is_named(rec, words):
    with pytest.raises(InputError, match=words):
        solve(one_account(), {"X": 0.1}, recovery=rec)
