"""The compiled equilibrium curve (defirisk/solver/compiled_descent.py) and the continuous order flow
equilibrium mode sells with (AssetCurve.flow_sell, defirisk/markets/impact.py).

- the constant-product flow by hand (Q B^g invariant), its composition, and the path-independent
  venues whose flow is their sale;
- the compiled descent equals the general engine's exact descent, `solve(..., "equilibrium", band=0)`,
  on hand-made Morpho, Compound, Maker and Aave v3.0 books (Aave HF in (0.95, 1) after the shock: several
  50% calls at the shocked price, then re-triggers), on routed venues (constant product + Uniswap V3),
  and on random single-asset books (hypothesis);
- sequential mode split k ways converges to the descent on a constant-product pool WITH a fee (so to
  the flow, not to one swap);
- the descent no longer depends on where it splits its sales;
- cascade_curve: compiled equilibrium curves are band 0 and equal the general engine's at band 0;
  gating policies, a band > 0, oracle formulas fall back to the general engine.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from defirisk.errors import InputError
from defirisk.markets.impact import ConstantProduct, build_asset_curve
from defirisk.model import Asset, Venue
from defirisk.solver import cascade_curve, prepare, solve
from defirisk.solver.compilable import holders, oracles_identity
from defirisk.solver.compiled_descent import compile_descent
from defirisk.solver.descent import run_split_sequential
from defirisk.solver.engine import apply_shock, resolve_shocks

from .helpers import make_snapshot

RTOL = 1e-9


# --- the continuous flow ---------------------------------------------------------------------------
# Pool B = 100 X, Q = 100,000 USDC (mid 1,000), fee 0.3% (g = 0.997). A flow of x = 50 X (half the
# base reserve): dB = dx, dQ = -g Q dx / B, so Q B^g is invariant and
#   B' = 150, Q' = 100,000 (100/150)^0.997 = 100,000 exp(-0.997 ln 1.5) = 100,000 exp(-0.40424871)
#      = 100,000 x 0.66747809 = 66,747.809;  mid = Q'/B' = 444.98539.
# One swap of 50 keeps the whole input in the pool too but pays out at the start-of-swap price:
#   Q' = Q B / (B + g x) = 1e7 / 149.85 = 66,733.400;  mid = 444.88933  (0.0216% lower).
# Two swaps of 25 end in between: Q1 = 1e7 / 124.925 = 80,048.03 at B1 = 125, then
#   Q2 = Q1 x 125 / 149.925 = 66,740.14;  mid = 444.93374.
# Flow to mid 400: B' = B (Q / (B m))^(1/(1+g)) = 100 x 2.5^(1/1.997) = 100 exp(0.45883362) = 158.22274,
#   x = 58.22274; one swap: g x^2 + B(1+g) x + B^2 - QB/m = 0 -> x = 58.20121.
def test_constant_product_flow_by_hand():
    cp = ConstantProduct(100.0, 100_000.0, 0.003)
    s = cp.init_state()
    B, Q = cp.flow_sell(s, 50.0)
    assert float(B) == 150.0
    assert_allclose(float(Q), 66_747.809, rtol=1e-8)
    assert_allclose(float(Q / B), 444.98539, rtol=1e-8)
    B1, Q1 = cp.sell(s, 50.0)
    assert_allclose(float(Q1 / B1), 444.88933, rtol=1e-8)
    two = cp.sell(cp.sell(s, 25.0), 25.0)
    assert_allclose(float(two[1] / two[0]), 444.93374, rtol=1e-8)
    assert float(Q1 / B1) < float(two[1] / two[0]) < float(Q / B)      # k swaps climb toward the flow
    assert_allclose(float(cp.flow_amount_to_rel(s, 0.4)), 58.22274, rtol=1e-7)
    assert_allclose(cp.flow_q_f((100.0, 100_000.0), 0.4), 58.22274, rtol=1e-7)
    assert_allclose(float(cp.amount_to_rel(s, 0.4)), 58.20121, rtol=1e-7)
    # k equal swaps tend to the flow
    gaps = []
    for k in (1, 10, 100, 1000):
        st_k = s
        for _ in range(k):
            st_k = cp.sell(st_k, 50.0 / k)
        gaps.append(abs(float(st_k[1]) / float(Q) - 1))
    assert all(b < a / 5 for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-6


def test_without_a_fee_the_flow_is_the_swap_bit_for_bit():
    cp = ConstantProduct(120.0, 360_000.0, 0.0)
    s = cp.init_state()
    for x in (0.0, 1e-6, 3.0, 500.0):
        assert [float(a) for a in cp.flow_sell(s, x)] == [float(a) for a in cp.sell(s, x)]
    assert float(cp.flow_amount_to_rel(s, 0.3)) == float(cp.amount_to_rel(s, 0.3))


P0 = 2000.0


def _v3(liq: float, fee: float) -> dict:
    return {"kind": "uniswap_v3", "sqrt_price_x96": str(int((1 / 2000.0) ** 0.5 * 2**96)), "liquidity": str(int(liq * 1e18)),
            "tick": -76013, "base_is_token0": False, "base_decimals": 18, "quote_decimals": 18, "fee": fee,
            "ticks": [[-75000, str(int(-0.4 * liq * 1e18))], [-72000, str(int(-0.3 * liq * 1e18))]]}


VENUE = st.one_of(
    st.builds(lambda b, f: {"kind": "constant_product", "base_reserve": b, "quote_reserve": b * P0, "fee": f},
              st.floats(50.0, 5e4), st.sampled_from([0.0, 0.003, 0.01, 0.05])),
    st.builds(_v3, st.floats(1e3, 1e6), st.sampled_from([0.0, 0.003])),
    st.builds(lambda lam: {"kind": "linear", "lambda": lam}, st.floats(0.01, 5.0)),
    st.builds(lambda d, fl: {"kind": "exponential", "depth": d, "floor": fl}, st.floats(100.0, 1e5), st.floats(0.0, 0.5)),
)


def _curve(specs):
    vs = [Venue("X", s["kind"], {k: v for k, v in s.items() if k != "kind"}) for s in specs]
    return build_asset_curve(vs, {"X": Asset("X", 18, P0)}, "X")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VENUE, min_size=1, max_size=3), st.floats(-3.0, 3.0), st.floats(-3.0, 3.0))
def test_flow_composes(specs, la, lb):
    """flow(flow(s, a), b) = flow(s, a + b): the flow is path independent (routed too)."""
    c = _curve(specs)
    a, b = 10.0 ** la, 10.0 ** lb
    s0 = c.init_state()
    two, _ = c.flow_sell(c.flow_sell(s0, a)[0], b)
    one, parts = c.flow_sell(s0, a + b)
    assert_allclose(float(c.price(two)), float(c.price(one)), rtol=1e-10)
    assert float(sum(parts)) == pytest.approx(a + b, rel=1e-12)
    # the array (bisection) router gives the scalar router's flow
    arr, _ = c.flow_sell(c.init_state((2,)), np.array([a, a + b]))
    assert_allclose(np.asarray(c.price(arr))[1], float(c.price(one)), rtol=1e-10)
    # flow_amount_to_price inverts it
    target = float(c.price(one))
    if target > P0 * 1e-6:
        q = float(c.flow_amount_to_price(s0, target))
        assert q == pytest.approx(a + b, rel=1e-7)


# --- books ---------------------------------------------------------------------------------------------
AAVE = ("aave-v3", "main", {"version": "3.0"},
        {"X": {"liquidation_threshold": 0.8, "liquidation_bonus": 1.05, "liquidation_protocol_fee": 0.1},
         "USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04}})
MORPHO = ("morpho-blue", "m", {"lltv": 0.86, "collateral": "X", "loan": "USDC"}, {})
COMET = ("compound-v3", "c", {"base": "USDC"}, {"X": {"liquidate_collateral_factor": 0.83, "liquidation_factor": 0.9},
                                                "USDT": {"liquidate_collateral_factor": 0.9, "liquidation_factor": 0.95}})
MAKER = ("maker", "k", {"collateral": "X", "debt": "DAI", "liquidation_ratio": 1.5, "chop": 1.13}, {})
PRICES = {"DAI": 1.0, "USDC": 1.0, "USDT": 1.0, "X": 1000.0}


def _cp(base=300.0, fee=0.003):
    return {"kind": "constant_product", "base_reserve": base, "quote_reserve": base * 1000.0, "fee": fee}


def _x_v3(liq, fee=0.003):
    # base = token1 at 1,000 quote per base (only the relative curve enters)
    return {"kind": "uniswap_v3", "sqrt_price_x96": str(int((1 / 1000.0) ** 0.5 * 2**96)), "liquidity": str(int(liq * 1e18)),
            "tick": -69078, "base_is_token0": False, "base_decimals": 18, "quote_decimals": 18, "fee": fee,
            "ticks": [[-68000, str(int(-0.4 * liq * 1e18))], [-66000, str(int(-0.3 * liq * 1e18))]]}


def position(proto, i, c, lev, other=0.0):
    """One position of c X at `lev` x its borrowing capacity at p0 = 1,000 (lev < 1: healthy at p0)."""
    if proto == "aave-v3":
        return [(proto, "main", f"a{i}", "X", "collateral", c), (proto, "main", f"a{i}", "USDC", "debt", c * 800.0 * lev)]
    if proto == "morpho-blue":
        return [(proto, "m", f"m{i}", "X", "collateral", c), (proto, "m", f"m{i}", "USDC", "debt", c * 860.0 * lev)]
    if proto == "compound-v3":
        rows = [(proto, "c", f"c{i}", "X", "collateral", c), (proto, "c", f"c{i}", "USDC", "debt", (c * 830.0 + other * 0.9) * lev)]
        return rows + ([(proto, "c", f"c{i}", "USDT", "collateral", other)] if other > 0 else [])
    return [(proto, "k", f"k{i}", "X", "collateral", c), (proto, "k", f"k{i}", "DAI", "debt", c * 1000.0 / 1.5 * lev)]


def book(positions, venue):
    rows = [r for i, p in enumerate(positions) for r in position(*((p[0], i) + tuple(p[1:])))]
    return make_snapshot(PRICES, rows, [AAVE, MORPHO, COMET, MAKER], {"X": venue})


def assert_compiled_equals_engine(snap, shocks, rtol=RTOL):
    prep = prepare(snap)
    comp = compile_descent(prep, prep.symbols.index("X"))
    assert comp is not None, "the book should compile"
    p_hat, end, _, usd, bad = comp.evaluate(np.asarray(shocks, dtype=float))
    for i, s in enumerate(shocks):
        r = solve(snap, {"X": float(s)}, "equilibrium", band=0.0, prepared=prep)
        assert_allclose(p_hat[i], r.shocked_prices["X"], rtol=1e-12)
        assert_allclose(end[i], r.end_prices["X"], rtol=rtol, err_msg=f"shock {s}")
        scale = max(1.0, r.totals.liquidated_collateral_usd)
        assert abs(usd[i] - r.totals.liquidated_collateral_usd) <= rtol * scale, (s, usd[i], r.totals.liquidated_collateral_usd)
        assert abs(bad[i] - r.totals.bad_debt_usd) <= rtol * scale, (s, bad[i], r.totals.bad_debt_usd)
    return end


def test_morpho_book_by_hand_and_engine():
    """Three Morpho positions of 10 X at leverage 0.95, 0.9, 0.85 (triggers t = D / (C LLTV) = 950, 900,
    850); LIF(0.86) = 1 / (1 - 0.3 x 0.14) = 1.04384, so each sells C LLTV LIF = 8.9770 X at its trigger.
    Fee-free pool 100 X / 100,000 (price = 1e7 / B^2). A 6% shock (p^ = 940, B = 103.1421) crosses
    950: the first is settled at 940, selling D LIF / p^ = 8,170 x 1.04384 / 940 = 9.0725 X; selling it
    ends at 1e7 / 112.2147^2 = 794.15, past 900 and 850: both fire at their triggers, 17.9541 X more,
    ending at 1e7 / 130.1687^2 = 590.183."""
    snap = book([("morpho-blue", 10.0, 0.95), ("morpho-blue", 10.0, 0.9), ("morpho-blue", 10.0, 0.85)], _cp(100.0, 0.0))
    end = assert_compiled_equals_engine(snap, [0.0, 0.04, 0.06, 0.2])
    lif = 1.0 / (1.0 - 0.3 * 0.14)
    b = math.sqrt(1e7 / 940.0) + 8170.0 * lif / 940.0 + 2 * 8.6 * lif
    assert_allclose(end[2], 1e7 / b ** 2, rtol=1e-12)
    assert_allclose(end[2], 590.183, rtol=2e-6)
    assert end[0] == 1000.0 and end[1] == pytest.approx(960.0, rel=1e-12)


def test_morpho_market_oracle_factor():
    """Morpho compares and seizes with its own oracle, anchored at `oracle_price` (k = 1.1 here): the
    triggers and the amounts seized move with k, in the compiled descent as in the rule."""
    rows = []
    for i in range(12):
        rows += [("morpho-blue", "x", f"a{i}", "X", "collateral", 10.0),
                 ("morpho-blue", "x", f"a{i}", "USDC", "debt", 10.0 * 1100.0 * 0.8 * (0.5 + 0.04 * i))]
    market = ("morpho-blue", "x", {"lltv": 0.8, "collateral": "X", "loan": "USDC", "oracle_price": 1100.0}, {})
    snap = make_snapshot(PRICES, rows, [market], {"X": _cp(200.0, 0.003)})
    assert_compiled_equals_engine(snap, [0.0, 0.05, 0.1, 0.2, 0.4, 0.7])


def test_compound_and_maker_books():
    """Comet absorb (with a USDT collateral beside X: no venue, compiles) and Maker urns, fee 0.3% pool."""
    positions = [("compound-v3", 5.0, 0.97, 800.0), ("compound-v3", 8.0, 0.9), ("compound-v3", 3.0, 0.8, 2000.0),
                 ("maker", 6.0, 0.96), ("maker", 9.0, 0.88), ("maker", 4.0, 0.7), ("morpho-blue", 7.0, 0.93)]
    assert_compiled_equals_engine(book(positions, _cp(120.0, 0.003)), [0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.6])


def test_aave_accounts_between_095_and_1_after_the_shock():
    """Aave v3.0 with LT 0.9, LB 1.05 (LB LT = 0.945), protocol fee 10%, shocked to p^ = 800: an account
    with HF h at p^ in (0.95, 1) gets m 50% calls at p^, m the least n with HF_n = 2^n (h - 0.945) + 0.945
    >= 1: h = 0.999, 0.99, 0.98 -> 1; 0.97, 0.96 -> 2; 0.951 -> 4 (0.055 / 0.006 = 9.2 <= 16). Then it
    is liquidatable again at D_m / (C_m LT) < p^ and follows the series t' / 1.055^n; h = 0.93 gets a
    100% call (all its collateral); accounts healthier at p^ fire at their own triggers. Fee-free and
    0.3% pools."""
    market = ("aave-v3", "main", {"version": "3.0"},
              {"X": {"liquidation_threshold": 0.9, "liquidation_bonus": 1.05, "liquidation_protocol_fee": 0.1},
               "USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04}})
    hfs = [0.999, 0.99, 0.98, 0.97, 0.96, 0.951, 0.93, 1.02, 1.05, 1.1, 1.2, 1.3]
    rows = []
    for i, h in enumerate(hfs):
        rows += [("aave-v3", "main", f"a{i}", "X", "collateral", 10.0),
                 ("aave-v3", "main", f"a{i}", "USDC", "debt", 10.0 * 800.0 * 0.9 / h)]
    for fee in (0.0, 0.003):
        snap = make_snapshot(PRICES, rows, [market], {"X": _cp(300.0, fee)})
        prep = prepare(snap)
        r = solve(snap, {"X": 0.2}, "equilibrium", band=0.0, prepared=prep)
        at_shock = r.liquidations[r.liquidations["round"] == 0].groupby("account").size().to_dict()
        assert {a: at_shock[a] for a in ("a0", "a1", "a2", "a3", "a4", "a5", "a6")} == \
            {"a0": 1, "a1": 1, "a2": 1, "a3": 2, "a4": 2, "a5": 4, "a6": 1}
        calls = r.liquidations.groupby("account").size()
        assert calls["a0"] > 1 and calls["a5"] > 4          # re-triggered below p^
        assert_compiled_equals_engine(snap, [0.2, 0.2 + 1e-7, 0.19, 0.25, 0.3, 0.5])


def test_aave_emode_with_a_slow_series():
    """E-mode LT 0.93, LB 1.01 (LB LT = 0.9393): after a call HF = 1.0607, so triggers come every 6%."""
    market = ("aave-v3", "main", {"version": "3.1", "emode_categories": {"1": {"liquidation_threshold": 0.93,
                                                                              "liquidation_bonus": 1.01, "assets": ["X"]}}},
              {"X": {"liquidation_threshold": 0.8, "liquidation_bonus": 1.05, "liquidation_protocol_fee": 0.1},
               "USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04}})
    rows = []
    for i, lev in enumerate([0.99, 0.97, 0.9, 0.8]):
        rows += [("aave-v3", "main", f"e{i}", "X", "collateral", 20.0, 1), ("aave-v3", "main", f"e{i}", "USDC", "debt", 20 * 930.0 * lev, 1)]
        rows += [("aave-v3", "main", f"a{i}", "X", "collateral", 10.0, 0), ("aave-v3", "main", f"a{i}", "USDC", "debt", 10 * 800.0 * lev, 0)]
    snap = make_snapshot(PRICES, rows, [market], {"X": _cp(200.0, 0.003)})
    assert_compiled_equals_engine(snap, [0.02, 0.05, 0.1, 0.3])


def test_routed_venues_constant_product_and_uniswap_v3():
    positions = [("morpho-blue", 12.0, 0.96), ("aave-v3", 9.0, 0.97), ("aave-v3", 15.0, 0.9), ("compound-v3", 6.0, 0.92),
                 ("maker", 7.0, 0.95), ("morpho-blue", 30.0, 0.8)]
    snap = book(positions, [_cp(150.0, 0.003), _x_v3(2e4, 0.003)])
    assert_compiled_equals_engine(snap, [0.0, 0.03, 0.06, 0.12, 0.25, 0.5], rtol=1e-8)


POSITION = st.one_of(
    st.tuples(st.sampled_from(["aave-v3", "morpho-blue", "maker"]), st.floats(1.0, 40.0), st.floats(0.55, 0.995)),
    st.tuples(st.just("compound-v3"), st.floats(1.0, 40.0), st.floats(0.55, 0.995), st.floats(0.0, 5000.0)),
)
BOOK_VENUE = st.one_of(
    st.builds(_cp, st.sampled_from([60.0, 150.0, 400.0, 2000.0]), st.sampled_from([0.0, 0.003, 0.01, 0.05])),
    st.builds(lambda b, liq: [_cp(b, 0.003), _x_v3(liq)], st.sampled_from([60.0, 400.0]), st.floats(3e3, 5e4)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(POSITION, min_size=1, max_size=10), BOOK_VENUE, st.lists(st.floats(0.0, 0.7), min_size=1, max_size=4))
def test_compiled_descent_equals_engine_on_random_books(positions, venue, shocks):
    assert_compiled_equals_engine(book(positions, venue), shocks, rtol=1e-8)


# --- the flow is what split-k sequential tends to; the descent does not depend on its split -----------
def _morpho_aave(fee):
    rng = np.random.default_rng(5)
    positions = [("morpho-blue", rng.uniform(2, 20), rng.uniform(0.8, 0.99)) for _ in range(12)]
    positions += [("aave-v3", rng.uniform(2, 20), rng.uniform(0.8, 0.99)) for _ in range(6)]
    return book(positions, _cp(200.0, fee))


@pytest.mark.parametrize("fee", [0.003, 0.05])
def test_split_sequential_converges_to_the_flow_descent(fee):
    """Sequential mode with every round split k ways: as k grows the end price approaches the band-0
    descent, whose sales are a continuous flow; with k = 1,024 within 5e-4 of it, and closer to it than
    to selling the same total in ONE swap from the post-shock pool (0.05% away at a 0.3% fee, 0.8% at 5%)."""
    snap = _morpho_aave(fee)
    prep = prepare(snap)
    s = resolve_shocks(prep, {"X": 0.12}, None)
    exact = solve(snap, {"X": 0.12}, "equilibrium", band=0.0, prepared=prep)
    e = exact.end_prices["X"]
    errors = [abs(run_split_sequential(prep, s, k).end_prices["X"] / e - 1) for k in (1, 4, 16, 64, 256, 1024)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 5e-4 and errors[0] > 50 * errors[-1], errors
    j = prep.symbols.index("X")
    states, _, _ = apply_shock(prep, s)
    c = prep.curves[j]
    total = float(exact.liquidations.collateral_sold.sum())
    assert_allclose(float(c.price(c.flow_sell(states[j], total)[0])), e, rtol=1e-12)   # end = V(all sales), as a flow
    one_swap = abs(float(c.price(c.sell(states[j], total)[0])) / e - 1)
    assert errors[-1] < one_swap / 2


def test_the_descent_does_not_depend_on_where_it_splits():
    """Comet absorb sells all collateral whatever the price, so every band liquidates the same amounts;
    with a 1% pool fee the end price is the same for every band (with one swap per descent step it was
    not: the steps, hence the fee's effect, depend on the band)."""
    positions = [("compound-v3", 4.0 + i, 0.99 - 0.02 * i) for i in range(10)]
    snap = book(positions, _cp(80.0, 0.01))
    prep = prepare(snap)
    ends = [solve(snap, {"X": 0.05}, "equilibrium", band=b, prepared=prep).end_prices["X"] for b in (0.0, 0.001, 0.01, 0.1)]
    assert len(set(np.round(np.array(ends) / ends[0], 11))) == 1, ends
    assert compile_descent(prep, prep.symbols.index("X")).evaluate(np.array([0.05]))[1][0] == pytest.approx(ends[0], rel=1e-11)


# --- cascade_curve -------------------------------------------------------------------------------------
def _clustered():
    """Morpho positions in two HF clusters (cliffs) plus Aave and Maker, a 0.3% pool."""
    positions = [("morpho-blue", 5.0, 1 / (1.10 + 0.001 * i)) for i in range(15)]
    positions += [("aave-v3", 4.0, 1 / (1.25 + 0.002 * i)) for i in range(8)]
    positions += [("maker", 6.0, 0.7 + 0.02 * i) for i in range(6)]
    return book(positions, _cp(120.0, 0.003))


def test_compiled_curve_is_band_zero_and_equals_the_general_engine_at_band_zero():
    snap = _clustered()
    prep = prepare(snap)
    comp = cascade_curve(snap, "X", points=40, max_shock=0.6, mode="equilibrium", prepared=prep)
    gen = cascade_curve(snap, "X", points=40, max_shock=0.6, mode="equilibrium", method="general", band=0.0, prepared=prep)
    assert comp.method == "compiled" and comp.band == 0.0 and comp.to_dict()["band"] == 0.0
    assert gen.method == "general" and gen.band == 0.0
    for col in ("shocked_price", "end_price", "liquidated_collateral_usd", "bad_debt_usd"):
        assert_allclose(comp.curve[col], gen.curve[col], rtol=1e-9, atol=1e-6, err_msg=col)
    assert len(comp.cliffs) == len(gen.cliffs) >= 1
    for a, b in zip(comp.cliffs, gen.cliffs):
        assert a.trigger_shock == pytest.approx(b.trigger_shock, abs=1e-8)
        assert a.end_price == pytest.approx(b.end_price, rel=1e-6)
        assert a.protocols and set(a.protocols) <= {"morpho-blue", "aave-v3", "maker"}
        assert a.attribution and a.attribution[0]["pusher"] == "shock"
    # the general engine's default band is 1%, and is recorded
    assert cascade_curve(snap, "X", points=5, max_shock=0.6, mode="equilibrium", method="general", prepared=prep).band == 0.01


def test_what_falls_back_to_the_general_engine():
    snap = _clustered()
    prep = prepare(snap)
    kw = dict(points=4, max_shock=0.3, mode="equilibrium", prepared=prep)
    r = cascade_curve(snap, "X", liquidators="profitable", **kw)
    assert r.method == "general" and r.band == 0.01        # economics gating is not compiled
    with pytest.raises(InputError, match="cannot be compiled"):
        cascade_curve(snap, "X", liquidators="profitable", method="compiled", **kw)
    r = cascade_curve(snap, "X", band=0.02, **kw)
    assert r.method == "general" and r.band == 0.02        # a band > 0 is the general engine's
    with pytest.raises(InputError, match="cannot be compiled"):
        cascade_curve(snap, "X", band=0.02, method="compiled", **kw)
    assert cascade_curve(snap, "X", band=0.0, method="compiled", **kw).band == 0.0
    with pytest.raises(InputError, match="band"):
        cascade_curve(snap, "X", points=4, max_shock=0.3, mode="sequential", band=0.0, prepared=prep)
    for bad in (-0.1, 0.5, float("nan"), "x"):
        with pytest.raises(InputError, match="band"):
            cascade_curve(snap, "X", band=bad, **kw)
    assert cascade_curve(snap, "X", points=4, max_shock=0.3, mode="fixed-price", prepared=prep).band is None


def test_oracle_formulas_are_not_compiled():
    """A market whose oracle is not the market price itself (here: an answer that moves only past a 1%
    deviation) reads prices the compiled pieces do not model."""
    rows = position("morpho-blue", 0, 10.0, 0.95)
    morpho = ("morpho-blue", "m", {"lltv": 0.86, "collateral": "X", "loan": "USDC"},
              {"X": {"oracle": {"kind": "market", "deviation": 0.01}}})
    snap = make_snapshot(PRICES, rows, [morpho], {"X": _cp()})
    prep = prepare(snap)
    assert holders(prep, prep.symbols.index("X")) is None and compile_descent(prep, prep.symbols.index("X")) is None
    assert cascade_curve(snap, "X", points=3, max_shock=0.3, mode="equilibrium", prepared=prep).method == "general"
    # the gate itself: any book whose oracle is not the identity
    assert oracles_identity(SimpleNamespace(oracles=[SimpleNamespace(identity=True)]))
    assert not oracles_identity(SimpleNamespace(oracles=[SimpleNamespace(identity=True), SimpleNamespace(identity=False)]))
    assert oracles_identity(SimpleNamespace())
