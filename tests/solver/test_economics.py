"""Liquidator economics (defirisk/solver/economics.py, docs/model.md "Liquidator economics"):
hand-derived cases, exact sale proceeds, 'all' = the model without economics bit for bit, and
properties on small random books."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from defirisk.errors import InputError
from defirisk.markets.impact import build_asset_curve
from defirisk.model import Asset, Venue
from defirisk.solver import economics as E
from defirisk.solver import engine, prepare, solve
from defirisk.solver.economics import GAS_PER_CALL, GAS_PRICE_GWEI, LiquidatorPolicy

from .helpers import make_snapshot

ZERO_GAS = LiquidatorPolicy(gas_usd=0.0)


# ---------------------------------------------------------------------------------------------------
# Hand-derived cases

def two_bonus_snapshot():
    """One WETH constant-product pool (fee 0) and two Aave v3.0 markets that differ only in WETH's bonus.

    Pool: p0 = $2,000, B0 = 776 WETH, Q0 = 1,552,000 USDC. Shock 36% -> mid 1,280; with fee 0 the mid is
    Q0 B0 / B^2, so B1 = sqrt(1,552,000 x 776 / 1,280) = sqrt(940,900) = 970, Q1 = Q0 B0 / B1 = 1,241,600.
    Accounts (LT 0.65): 40 WETH against D = 30 x 1,280 / LB USDC: 38,019.80 (LB 1.01), 36,571.43 (LB 1.05).
    HF at 1,280 = 40 x 1,280 x 0.65 / D = 0.875 and 0.910 <= 0.95 -> the whole debt is repaid and
    seized = D LB / 1,280 = 30 WETH each (HF before the shock 1.37 and 1.42: healthy).
    Selling 30 WETH alone into (970, 1,241,600): out = 1,241,600 x 30 / 1,000 = 37,248 = 30 x 1,280 x 0.97,
    a 3% impact. Profit (gas 0): LB 1.01: 37,248 - 38,019.80 = -771.80 -> skipped; LB 1.05: 37,248 -
    36,571.43 = +676.57 -> liquidated. Its 30 WETH take the pool to B = 1,000, Q = 1,204,352: WETH ends at
    $1,204.352. Round 2: the LB 1.01 call would seize 38,019.80 x 1.01 / 1,204.352 = 31.885 WETH worth
    1,204,352 x 31.885 / 1,031.885 = 37,215 < 38,019.80: skipped again, the cascade stops.
    Left liquidatable: debt $38,019.80 against 40 x 1,204.352 = $48,174.08 of collateral (not underwater).
    """
    mk = lambda lb: {"WETH": {"liquidation_threshold": 0.65, "liquidation_bonus": lb},  # noqa: E731
                     "USDC": {"liquidation_threshold": 0.0}}
    pos = [("aave-v3", "bonus1", "a1", "WETH", "collateral", 40.0), ("aave-v3", "bonus1", "a1", "USDC", "debt", 30 * 1280 / 1.01),
           ("aave-v3", "bonus5", "a5", "WETH", "collateral", 40.0), ("aave-v3", "bonus5", "a5", "USDC", "debt", 30 * 1280 / 1.05)]
    return make_snapshot({"WETH": 2000.0, "USDC": 1.0}, pos,
                         [("aave-v3", "bonus1", {}, mk(1.01)), ("aave-v3", "bonus5", {}, mk(1.05))],
                         {"WETH": {"kind": "constant_product", "base_reserve": 776.0, "quote_reserve": 776.0 * 2000, "fee": 0.0}})


def test_unprofitable_bonus_is_skipped_next_to_a_profitable_one():
    snap = two_bonus_snapshot()
    for policy in (ZERO_GAS, "profitable"):  # default gas: 20 gwei x 391,626 x $2,000 = $15.67 changes nothing
        r = solve(snap, {"WETH": 0.36}, liquidators=policy)
        assert list(r.liquidations.account) == ["a5"] and list(r.liquidations["round"]) == [1]
        assert_allclose(r.liquidations.collateral_seized, [30.0], rtol=1e-12)
        assert_allclose(r.end_prices["WETH"], 1204.352, rtol=1e-12)
        assert r.rounds == 1
        assert list(r.not_liquidated.account) == ["a1"]
        assert_allclose(r.not_liquidated_debt_usd, 30 * 1280 / 1.01, rtol=1e-12)
        assert_allclose(r.not_liquidated.collateral_usd, [40 * 1204.352], rtol=1e-12)
        assert r.not_liquidated_underwater_usd == 0.0
    # the profits of the docstring
    prep = prepare(snap)
    states, market, _ = engine.apply_shock(prep, engine.resolve_shocks(prep, {"WETH": 0.36}, None))
    assert_allclose(market[prep.symbols.index("WETH")], 1280.0, rtol=1e-12)
    for bi, want in ((0, 37_248 - 38_400 / 1.01), (1, 37_248 - 38_400 / 1.05)):
        ev = prep.books[bi].rule.liquidate(prep.books[bi].state0, market, market, {}).events
        _, profit, need = E.call_profits(prep, "aave-v3", ev, market, states, ZERO_GAS)
        assert_allclose(profit, [want], rtol=1e-10)
        assert_allclose(need, [38_400 / (1.01 if bi == 0 else 1.05)], rtol=1e-12)
    # 'all' liquidates both in round 1
    r_all = solve(snap, {"WETH": 0.36}, liquidators="all")
    assert sorted(r_all.liquidations.account) == ["a1", "a5"] and r_all.not_liquidated_debt_usd == 0.0
    # the minimum profit is a threshold: 676.57 clears 600, not 700
    assert list(solve(snap, {"WETH": 0.36}, liquidators=LiquidatorPolicy(gas_usd=0.0, min_profit_usd=600.0)).liquidations.account) == ["a5"]
    assert solve(snap, {"WETH": 0.36}, liquidators=LiquidatorPolicy(gas_usd=0.0, min_profit_usd=700.0)).liquidations.empty


def morpho_no_venue(accounts):
    """Morpho LLTV 0.5 -> LIF = min(1.15, 1/(1 - 0.3 x 0.5)) = 1.15; COLL $100 without a venue, shocked 50%
    to $50 (it jumps: no impact). accounts: [(name, collateral, debt)]."""
    rows = []
    for name, c, d in accounts:
        rows += [("morpho-blue", "m", name, "COLL", "collateral", c), ("morpho-blue", "m", name, "USDC", "debt", d)]
    return make_snapshot({"COLL": 100.0, "USDC": 1.0, "WETH": 3000.0}, rows,
                         [("morpho-blue", "m", {"lltv": 0.5, "collateral": "COLL", "loan": "USDC"}, {})])


def test_gas_alone_makes_a_small_position_unprofitable():
    """At $50 (liquidatable: 10 x 50 x 0.5 = 250 < 300; before: 500 >= 300) a call repays D and seizes
    1.15 D / 50 COLL, sold at $50 with no impact: profit = 0.15 D - gas. D = 300: $45; D = 3,000: $450.
    Gas $50 skips the small one only. "under": C = 4 < 6.9 -> all 4 COLL seized, repays 4 x 50 / 1.15 =
    173.91, profit 200 - 173.91 = 26.09 < 50: skipped, and underwater (300 > 4 x 50 = 200)."""
    snap = morpho_no_venue([("small", 10.0, 300.0), ("large", 100.0, 3000.0), ("under", 4.0, 300.0)])
    r0 = solve(snap, {"COLL": 0.5}, liquidators=ZERO_GAS)
    assert sorted(r0.liquidations.account) == ["large", "small", "under"]
    r = solve(snap, {"COLL": 0.5}, liquidators=LiquidatorPolicy(gas_usd=50.0))
    assert list(r.liquidations.account) == ["large"]
    assert sorted(r.not_liquidated.account) == ["small", "under"]
    assert_allclose(r.not_liquidated_debt_usd, 600.0, rtol=1e-12)
    assert_allclose(r.not_liquidated_underwater_usd, 300.0, rtol=1e-12)
    d = r.to_dict()["not_liquidated"]
    assert d["accounts"] == 2 and d["debt_usd"] == pytest.approx(600.0) and d["underwater_debt_usd"] == pytest.approx(300.0)
    json.dumps(r.to_dict(), allow_nan=False)


def test_default_gas_is_measured_gas_times_gas_price_times_weth():
    snap = morpho_no_venue([("a", 10.0, 300.0)])
    prep = prepare(snap)
    p = LiquidatorPolicy()
    assert p.gas_cost_usd("morpho-blue", prep) == pytest.approx(GAS_PRICE_GWEI * 1e-9 * GAS_PER_CALL["morpho-blue"] * 3000.0)
    assert p.gas_cost_usd("aave-v3", prep) == pytest.approx(20e-9 * 391_626 * 3000.0)
    assert p.gas_cost_usd("compound-v3", prep) == 0.0     # not measured: no devnet contracts
    assert LiquidatorPolicy(eth_usd=1000.0).gas_cost_usd("morpho-blue", prep) == pytest.approx(20e-9 * 112_176 * 1000.0)
    assert LiquidatorPolicy(gas_usd=7.0).gas_cost_usd("aave-v3", prep) == 7.0
    no_eth = prepare(make_snapshot({"COLL": 100.0, "USDC": 1.0}, [], []))
    assert p.eth_price(no_eth) == E.ETH_USD_FALLBACK


def test_capital_per_round_limits_calls_largest_profit_first():
    """Capital $250 per round, no flash loans; profits 0.15 D (no impact, gas 0): D300 $45, D200 $30, D100 $15.
    Round 1, largest profit first: D300 needs $300 > 250 (skipped), D200 fits (left $50), D100 ($100) does not.
    Round 2: D300 still does not fit, D100 does. Round 3: only D300, which never fits: the cascade stops."""
    snap = morpho_no_venue([("d100", 100 / 30, 100.0), ("d200", 200 / 30, 200.0), ("d300", 300 / 30, 300.0)])
    pol = LiquidatorPolicy(gas_usd=0.0, capital_usd=250.0, flash_loans=False)
    r = solve(snap, {"COLL": 0.5}, liquidators=pol)
    assert dict(zip(r.liquidations.account, r.liquidations["round"])) == {"d200": 1, "d100": 2}
    assert list(r.not_liquidated.account) == ["d300"] and r.not_liquidated_debt_usd == pytest.approx(300.0)
    r = solve(snap, {"COLL": 0.5}, liquidators=LiquidatorPolicy(gas_usd=0.0, capital_usd=450.0, flash_loans=False))
    assert dict(zip(r.liquidations.account, r.liquidations["round"])) == {"d300": 1, "d100": 1, "d200": 2}
    r = solve(snap, {"COLL": 0.5}, liquidators=LiquidatorPolicy(gas_usd=0.0, flash_loans=False))  # unlimited
    assert set(r.liquidations["round"]) == {1} and len(r.liquidations) == 3


def test_capital_needs_no_flash_loans_and_policy_checks():
    with pytest.raises(InputError, match="flash"):
        LiquidatorPolicy(capital_usd=1e6)
    for bad in (dict(liquidators="some"), dict(gas_usd=-1.0), dict(min_profit_usd=math.nan), dict(capital_usd=-5.0),
                dict(gas_price_gwei=math.inf), dict(flash_loans=1)):
        with pytest.raises(InputError):
            LiquidatorPolicy(**bad)
    with pytest.raises(InputError, match="liquidators"):
        solve(two_bonus_snapshot(), {"WETH": 0.1}, liquidators="cheap")
    with pytest.raises(InputError, match="only with liquidators 'profitable'"):
        E.make_policy("all", gas_usd=3.0)
    assert E.resolve_policy("all") is None and E.resolve_policy(LiquidatorPolicy(liquidators="all")) is None
    assert E.resolve_policy("profitable") == LiquidatorPolicy()


def compound_two():
    """Comet with WETH (LCF 0.83, LF 0.93, store front 0.5: buyCollateral discount 0.5 x 0.07 = 3.5%) on the
    pool of two_bonus_snapshot (36% shock -> B = 970, mid 1,280). acc30: 30 WETH, 40,000 USDC
    (30 x 1,280 x 0.83 = 31,872 < 40,000); acc40: 40 WETH, 50,000 USDC (42,496 < 50,000); both healthy at
    $2,000. absorb takes both (not gated). Buying 30 WETH costs 30 x 1,280 x 0.965 = 37,056 and sells for
    37,248 (3% impact): bought. Buying 40 costs 49,408 and sells for 1,241,600 x 40 / 1,010 = 49,172.28:
    not bought, the 40 WETH stay with the protocol (sold 0). WETH ends at 1,204.352 (30 sold)."""
    rows = [("compound-v3", "c", "acc30", "WETH", "collateral", 30.0), ("compound-v3", "c", "acc30", "USDC", "debt", 40_000.0),
            ("compound-v3", "c", "acc40", "WETH", "collateral", 40.0), ("compound-v3", "c", "acc40", "USDC", "debt", 50_000.0)]
    return make_snapshot({"WETH": 2000.0, "USDC": 1.0}, rows,
                         [("compound-v3", "c", {"base": "USDC", "store_front_price_factor": 0.5},
                           {"WETH": {"liquidate_collateral_factor": 0.83, "liquidation_factor": 0.93}})],
                         {"WETH": {"kind": "constant_product", "base_reserve": 776.0, "quote_reserve": 776.0 * 2000, "fee": 0.0}})


def test_compound_absorb_is_not_gated_but_buy_collateral_is():
    snap = compound_two()
    r_all = solve(snap, {"WETH": 0.36}, liquidators="all")
    r = solve(snap, {"WETH": 0.36}, liquidators=ZERO_GAS)
    sold = dict(zip(r.liquidations.account, r.liquidations.collateral_sold))
    assert sold == {"acc30": 30.0, "acc40": 0.0}
    cols = ["account", "collateral_seized", "collateral_seized_usd", "debt_repaid", "debt_repaid_usd", "bad_debt_usd"]
    pd.testing.assert_frame_equal(r.liquidations[cols], r_all.liquidations[cols], check_exact=True)
    assert_allclose(r.end_prices["WETH"], 1204.352, rtol=1e-12)
    assert r.not_liquidated.empty   # absorbed positions are liquidated, sold or not


# ---------------------------------------------------------------------------------------------------
# 'all' is the model without economics, bit for bit

def _old_step(prep, bi, state, oracle, market, shared, venue_states, policy=None):
    return prep.books[bi].rule.liquidate(state, oracle, market, shared)   # the hook before economics


def _same(a, b):
    pd.testing.assert_frame_equal(a.liquidations, b.liquidations, check_exact=True)
    pd.testing.assert_frame_equal(a.sales, b.sales, check_exact=True)
    assert a.end_prices == b.end_prices and a.shocked_prices == b.shocked_prices
    assert (a.rounds, a.iterations, a.totals, a.by_protocol) == (b.rounds, b.iterations, b.totals, b.by_protocol)


@pytest.mark.parametrize("build, shocks", [
    (two_bonus_snapshot, {"WETH": 0.36}), (compound_two, {"WETH": 0.36}),
    (lambda: morpho_no_venue([("small", 10.0, 300.0), ("large", 100.0, 3000.0)]), {"COLL": 0.5}),
    ("two_protocol_cliff", {"WETH": 0.1}), ("two_protocol_cliff", {"WETH": 0.2}), ("two_protocol_cliff", {"wstETH": 0.3}),
])
def test_all_equals_the_model_without_economics(build, shocks, monkeypatch):
    if build == "two_protocol_cliff":
        from pathlib import Path

        from defirisk.snapshot import load_snapshot
        snap = load_snapshot(Path(__file__).resolve().parents[2] / "fixtures" / "cases" / "two_protocol_cliff")
    else:
        snap = build()
    runs = [solve(snap, shocks, "sequential", liquidators=x) for x in ("all", LiquidatorPolicy(liquidators="all"))]
    runs.append(solve(snap, shocks, "sequential"))   # solve's default is 'all'
    monkeypatch.setattr(engine, "liquidation_step", _old_step)
    ref = solve(snap, shocks, "sequential")
    for r in runs:
        _same(r, ref)
        assert r.assumptions["liquidators"] == {"liquidators": "all"}


# ---------------------------------------------------------------------------------------------------
# Proceeds: exact per venue kind

def _curve(spec, price=2000.0):
    specs = spec if isinstance(spec, list) else [spec]
    venues = [Venue("X", s["kind"], {k: v for k, v in s.items() if k != "kind"}) for s in specs]
    return build_asset_curve(venues, {"X": Asset("X", 18, price)}, "X")


def _v3(fee=0.003):
    return {"kind": "uniswap_v3", "sqrt_price_x96": str(2**96), "liquidity": str(10**18), "tick": 0, "fee": fee,
            "base_is_token0": True, "base_decimals": 18, "quote_decimals": 18,
            "ticks": [[-100, str(5 * 10**17)], [-887200, str(5 * 10**17)]]}


def _midpoint(v, q0, net, n=400_000):
    """Reference: midpoint rule of the venue's relative price over the net amount moving along it."""
    h = net / n
    mids = q0 + h * (np.arange(n) + 0.5)
    return float(np.sum(v.rel((mids,))) * h)


# quad_rtol: the Gauss-Legendre fallback is exact for polynomials and accurate on smooth laws; a kink
# (the linear law reaching 0, a V3 tick) costs it accuracy, which is why every kind has a closed form.
@pytest.mark.parametrize("spec, q0, x, quad_rtol", [
    ({"kind": "linear", "lambda": 3.0}, 50.0, 200.0, 1e-12),
    ({"kind": "linear", "lambda": 3.0}, 50.0, 900.0, 1e-3),    # runs past r = 0: proceeds stop there
    ({"kind": "exponential", "depth": 300.0, "floor": 0.2}, 40.0, 500.0, 1e-12),
    ({"kind": "sqrt", "sigma": 0.4, "volume": 2000.0}, 10.0, 300.0, 1e-6),
    (_v3(), 0.0, 0.6, 1e-3),                                    # crosses tick -100 (net 0.005)
])
def test_proceeds_match_the_integral_of_price(spec, q0, x, quad_rtol):
    c = _curve(spec)
    v = c.venues[0]
    st = (np.float64(q0),)
    net = x * getattr(v, "gamma", 1.0)
    got = float(E.curve_proceeds(c, (st,), x))
    assert_allclose(got, 2000.0 * _midpoint(v, q0, net), rtol=1e-7)
    # the fallback knows no fee: it integrates the mid price over the gross amount (V3: x (1 - fee) moves it)
    assert_allclose(float(E._quadrature(v, st, np.float64(x))) * getattr(v, "gamma", 1.0) * 2000.0, got, rtol=quad_rtol)


def test_constant_product_proceeds_are_the_pool_output():
    c = _curve({"kind": "constant_product", "base_reserve": 500.0, "quote_reserve": 500.0 * 2000 * 1.1, "fee": 0.003})
    st0, _ = c.sell(c.init_state(), 37.0)       # some earlier sale
    for x in (0.001, 3.0, 250.0):
        st1, _ = c.sell(st0, x)
        out = float(st0[0][1] - st1[0][1])      # quote tokens paid by the pool
        assert_allclose(float(E.curve_proceeds(c, st0, x)), out * 2000.0 / c.venues[0].m0, rtol=1e-10)
    # small sales: the marginal proceeds are the mid price times (1 - fee)
    assert_allclose(float(E.curve_proceeds(c, st0, 1e-6)) / 1e-6, float(c.price(st0)) * 0.997, rtol=1e-6)
    # arrays: each amount sold alone from the same state
    assert_allclose(E.curve_proceeds(c, st0, np.array([3.0, 250.0])),
                    [float(E.curve_proceeds(c, st0, 3.0)), float(E.curve_proceeds(c, st0, 250.0))], rtol=1e-14)


def test_routed_proceeds_add_the_venues_parts():
    c = _curve([{"kind": "constant_product", "base_reserve": 300.0, "quote_reserve": 6e5, "fee": 0.003}, _v3(0.0005)], 2000.0)
    st0 = c.init_state()
    for x in (0.2, 40.0):
        _, parts = c.sell(st0, x)                # the scalar route the round's sale uses
        want = sum(float(E._venue_proceeds(v, s, p)) for v, s, p in zip(c.venues, st0, parts)) * 2000.0
        assert_allclose(float(E.curve_proceeds(c, st0, np.array([x]))[0]), want, rtol=1e-9)
        assert float(E.curve_proceeds(c, st0, x)) < x * 2000.0


# ---------------------------------------------------------------------------------------------------
# Gating an independent rule by filtering its calls = running it on the paying rows only

def test_filtered_calls_equal_the_rule_run_on_the_paying_rows():
    rng = np.random.default_rng(3)
    n = 40
    coll = rng.uniform(1, 60, n)
    rows = []
    for i in range(n):
        mk = ["a1", "m"][i % 2]
        proto = "aave-v3" if mk == "a1" else "morpho-blue"
        rows += [(proto, mk, f"x{i}", "WETH", "collateral", coll[i]),
                 (proto, mk, f"x{i}", "USDC", "debt", coll[i] * 2000 * 0.8 * rng.uniform(0.7, 1.0))]
        if mk == "a1" and i % 4 == 0:
            rows.append((proto, mk, f"x{i}", "WBTC", "collateral", rng.uniform(0.01, 0.5)))
    snap = make_snapshot({"WETH": 2000.0, "USDC": 1.0, "WBTC": 60000.0}, rows,
                         [("aave-v3", "a1", {"version": "3.3"}, {"WETH": {"liquidation_threshold": 0.83, "liquidation_bonus": 1.05,
                                                                          "liquidation_protocol_fee": 0.1},
                                                                 "WBTC": {"liquidation_threshold": 0.78, "liquidation_bonus": 1.07},
                                                                 "USDC": {"liquidation_threshold": 0.0}}),
                          ("morpho-blue", "m", {"lltv": 0.86, "collateral": "WETH", "loan": "USDC"}, {})],
                         {"WETH": {"kind": "constant_product", "base_reserve": 800.0, "quote_reserve": 1.6e6, "fee": 0.003}})
    prep = prepare(snap)
    states, market, _ = engine.apply_shock(prep, engine.resolve_shocks(prep, {"WETH": 0.25}, None))
    seen_partial = 0
    for bi, b in enumerate(prep.books):
        full = b.rule.liquidate(b.state0, market, market, {})
        acc, profit, _ = E.call_profits(prep, b.protocol, full.events, market, states, ZERO_GAS)
        pay = acc[profit > 0]
        gated = engine.liquidation_step(prep, bi, b.state0, market, market, {}, states, ZERO_GAS)
        sub = b.rule.liquidate(b.rule.subset(b.state0, pay), market, market, {})
        ev = sub.events.take(pay)
        for f in ("account", "coll_asset", "seized", "sold", "repaid", "bad_debt_usd"):
            assert np.array_equal(getattr(gated.events, f), getattr(ev, f)), f
        assert np.array_equal(gated.state.coll[pay], sub.state.coll) and np.array_equal(gated.state.debt[pay], sub.state.debt)
        rest = np.setdiff1d(np.arange(len(b.accounts)), pay)
        assert np.array_equal(gated.state.coll[rest], b.state0.coll[rest])
        seen_partial += 0 < len(pay) < len(acc)
    assert seen_partial   # the case does split paying from non-paying calls


# ---------------------------------------------------------------------------------------------------
# Properties on small random books

P0 = 2000.0
PROP_MARKETS = [
    ("aave-v3", "a1", {"version": "3.0"}, {"WETH": {"liquidation_threshold": 0.9, "liquidation_bonus": 1.01},
                                          "USDC": {"liquidation_threshold": 0.0}}),
    ("aave-v3", "a5", {"version": "3.3"}, {"WETH": {"liquidation_threshold": 0.83, "liquidation_bonus": 1.05,
                                                    "liquidation_protocol_fee": 0.1},
                                           "USDC": {"liquidation_threshold": 0.0}}),
    ("morpho-blue", "m", {"lltv": 0.86, "collateral": "WETH", "loan": "USDC"}, {}),
]
LIMIT = {"a1": 0.9, "a5": 0.83, "m": 0.86}
prop_position = st.tuples(st.sampled_from(["a1", "a5", "m"]), st.floats(0.5, 80.0), st.floats(0.5, 1.0))


def prop_book(positions, base, fee):
    rows = []
    for i, (mk, c, frac) in enumerate(positions):
        proto = "morpho-blue" if mk == "m" else "aave-v3"
        rows += [(proto, mk, f"p{i}", "WETH", "collateral", c), (proto, mk, f"p{i}", "USDC", "debt", c * P0 * LIMIT[mk] * frac * 0.999)]
    return make_snapshot({"USDC": 1.0, "WETH": P0}, rows, PROP_MARKETS,
                         {"WETH": {"kind": "constant_product", "base_reserve": base, "quote_reserve": base * P0, "fee": fee}})


def _recording(calls):
    def step(prep, bi, state, oracle, market, shared, venue_states, policy=None):
        out = _ORIGINAL_STEP(prep, bi, state, oracle, market, shared, venue_states, policy)
        calls.append((bi, state, oracle.copy(), out))
        return out
    return step


_ORIGINAL_STEP = engine.liquidation_step


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(prop_position, min_size=1, max_size=10), st.floats(100.0, 3000.0), st.sampled_from([0.0, 0.003]),
       st.floats(0.02, 0.5), st.floats(0.0, 40.0), st.floats(0.0, 50.0))
def test_profitable_properties(positions, base, fee, shock, gas, min_profit):
    snap = prop_book(positions, base, fee)
    policy = LiquidatorPolicy(gas_usd=gas, min_profit_usd=min_profit)
    r_all = solve(snap, {"WETH": shock}, liquidators="all")
    calls: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "liquidation_step", _recording(calls))
        r = solve(snap, {"WETH": shock}, liquidators=policy)
    liq, key = r.liquidations, ["market", "account"]

    # 1. first round: a subset of 'all', each call identical
    first = liq[liq["round"] == 1]
    first_all = r_all.liquidations[r_all.liquidations["round"] == 1]
    assert set(map(tuple, first[key].to_numpy())) <= set(map(tuple, first_all[key].to_numpy()))
    merged = first.merge(first_all, on=key, suffixes=("", "_all"))
    assert len(merged) == len(first)
    for col in ("collateral_seized", "collateral_sold", "debt_repaid", "bad_debt_usd"):
        assert np.array_equal(merged[col].to_numpy(), merged[col + "_all"].to_numpy())

    # 2. every executed call paid, against the pool at the start of its round (replayed by hand: x*y=k,
    #    the input with its fee stays in the pool) and on its own: proceeds - repaid - gas > min profit
    prep = prepare(snap)
    (B, Q), = engine.apply_shock(prep, engine.resolve_shocks(prep, {"WETH": shock}, None))[0][prep.symbols.index("WETH")]
    B, Q, g, m0 = float(B), float(Q), 1.0 - fee, P0
    sales = r.sales[r.sales.kind == "liquidation"]
    for rnd in sorted(set(liq["round"])):
        rows = liq[liq["round"] == rnd]
        out = Q * g * rows.collateral_sold / (B + g * rows.collateral_sold)
        profit = out * P0 / m0 - rows.debt_repaid - gas
        assert (profit > min_profit - 1e-9 * rows.debt_repaid).all(), (rnd, profit.to_numpy())
        x = float(sales[sales["round"] == rnd].amount.sum())
        B, Q = B + x, Q * B / (B + g * x)

    # 3. the reported figure: the last round's liquidatable positions that got no call, at end prices
    end = np.array([r.end_prices[s] for s in prep.symbols])
    last = {}
    for bi, state, oracle, out in calls:
        last[bi] = (state, oracle, out)
    skipped_debt, skipped = 0.0, set()
    for bi, (state, oracle, out) in last.items():
        b = prep.books[bi]
        if not len(state.coll):
            continue
        assert not len(out.events)   # the last round liquidates nothing
        rows = np.flatnonzero(b.rule.liquidatable(state, oracle))
        skipped |= {(b.market, a) for a in b.accounts[rows]}
        skipped_debt += float((state.debt[rows] * end).sum())
    assert set(zip(r.not_liquidated.market, r.not_liquidated.account)) == skipped
    assert_allclose(r.not_liquidated_debt_usd, skipped_debt, rtol=1e-12, atol=1e-9)
    under = r.not_liquidated[r.not_liquidated.underwater]
    assert (under.debt_usd > under.collateral_usd).all()
    assert r_all.not_liquidated_debt_usd == 0.0


# ---------------------------------------------------------------------------------------------------
# The commands

def _write(snap, path):
    from defirisk.snapshot import write_snapshot
    write_snapshot(snap, path)
    return str(path)


def test_cascade_command_options(tmp_path):
    from defirisk.cli import _load_commands, app
    _load_commands()
    run = CliRunner().invoke
    d = _write(two_bonus_snapshot(), tmp_path / "s")
    res = run(app, ["cascade", d, "--shock", "WETH=0.36", "--gas-usd", "0", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [x["account"] for x in out["liquidations"]] == ["a5"]
    assert out["not_liquidated"]["debt_usd"] == pytest.approx(30 * 1280 / 1.01)
    assert out["assumptions"]["liquidators"]["gas_usd_per_call"] == {"aave-v3": 0.0}
    res = run(app, ["cascade", d, "--shock", "WETH=0.36", "--liquidators", "all", "--json"])
    assert sorted(x["account"] for x in json.loads(res.stdout)["liquidations"]) == ["a1", "a5"]
    res = run(app, ["cascade", d, "--shock", "WETH=0.36"])
    assert res.exit_code == 0 and "liquidatable, not liquidated: $38,019.80" in res.stdout and "underwater $0.00" in res.stdout
    res = run(app, ["cascade", d, "--shock", "WETH=0.36", "--min-profit-usd", "700", "--json"])
    assert json.loads(res.stdout)["liquidations"] == []
    for args, msg in ((["--liquidators", "cheap"], "liquidators"), (["--liquidators", "all", "--gas-usd", "1"], "--gas-usd"),
                      (["--capital-usd", "1000"], "--no-flash-loans"), (["--gas-usd", "-1"], "gas_usd")):
        res = run(app, ["cascade", d, "--shock", "WETH=0.36", *args])
        assert res.exit_code == 2 and msg in res.output, (args, res.output)
    res = run(app, ["cascade", d, "--shock", "WETH=0.36", "--capital-usd", "1000", "--no-flash-loans", "--gas-usd", "0", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["liquidations"] == []   # 36,571 of debt > $1,000


def test_report_shows_the_figure(tmp_path):
    from defirisk.report import ReportSettings, build_report
    from defirisk.report.build import SourceInfo
    from defirisk.report.render_md import render_md
    snap = two_bonus_snapshot()
    rep = build_report(snap, SourceInfo("snapshot", "x"), ReportSettings(shocks=(0.36,), curve_points=10, workers=1,
                                                                      gas_usd=0.0), generated_at="t")
    seq = [row for row in rep["market_wide"]["scenarios"] if row["mode"] == "sequential"]
    assert seq[0]["not_liquidated_debt_usd"] == pytest.approx(30 * 1280 / 1.01)
    assert seq[0]["not_liquidated_underwater_debt_usd"] == 0.0 and seq[0]["not_liquidated_accounts"] == 1
    assert rep["settings"]["liquidators"]["liquidators"] == "profitable" and rep["settings"]["liquidators"]["gas_usd"] == 0.0
    md = render_md(rep)
    assert "liquidatable, not liquidated (of which underwater)" in md and "$38.0k ($0.00)" in md
    assert "Liquidators: profitable" in md
    json.dumps(rep, allow_nan=False)
    rep_all = build_report(snap, SourceInfo("snapshot", "x"), ReportSettings(shocks=(0.36,), curve_points=10, workers=1,
                                                                          liquidators="all"), generated_at="t")
    seq = [row for row in rep_all["market_wide"]["scenarios"] if row["mode"] == "sequential"]
    assert seq[0]["not_liquidated_debt_usd"] == 0.0 and seq[0]["accounts_liquidated"] == 2
    with pytest.raises(InputError, match="report settings"):
        ReportSettings(liquidators="all", gas_usd=1.0)
