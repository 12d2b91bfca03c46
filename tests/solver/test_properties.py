"""Property tests (hypothesis): conservation, monotonicity, agreement of the two modes."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from defirisk.solver import cascade_curve, solve

from .helpers import make_snapshot

PRICE = 1000.0
MARKETS = [
    ("aave-v3", "a", {"version": "3.0"}, {"USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04},
                                         "WETH": {"liquidation_threshold": 0.8, "liquidation_bonus": 1.06, "liquidation_protocol_fee": 0.1}}),
    ("morpho-blue", "m", {"lltv": 0.86, "collateral": "WETH", "loan": "USDC"}, {}),
    ("compound-v3", "c", {"base": "USDC"}, {"WETH": {"liquidate_collateral_factor": 0.83, "liquidation_factor": 0.93}}),
    ("maker", "k", {"collateral": "WETH", "debt": "USDC", "liquidation_ratio": 1.5, "chop": 1.13}, {}),
]

position = st.tuples(st.sampled_from(["aave-v3", "morpho-blue", "compound-v3", "maker"]),
                     st.floats(1.0, 100.0), st.floats(0.3, 1.0))  # protocol, collateral, debt as share of max


def build(positions, venue):
    rows, lim = [], {"aave-v3": 0.8, "morpho-blue": 0.86, "compound-v3": 0.83, "maker": 1 / 1.5}
    for i, (proto, coll, frac) in enumerate(positions):
        mk = {"aave-v3": "a", "morpho-blue": "m", "compound-v3": "c", "maker": "k"}[proto]
        debt = coll * PRICE * lim[proto] * frac * 0.999
        rows += [(proto, mk, f"acc{i}", "WETH", "collateral", coll), (proto, mk, f"acc{i}", "USDC", "debt", debt)]
    return make_snapshot({"USDC": 1.0, "WETH": PRICE}, rows, MARKETS, {"WETH": venue})


VENUES = st.sampled_from([
    {"kind": "constant_product", "base_reserve": 3000.0, "quote_reserve": 3e6, "fee": 0.003},
    {"kind": "linear", "lambda": 1.5},
    {"kind": "exponential", "depth": 2000.0, "floor": 0.05},
    {"kind": "sqrt", "sigma": 0.5, "volume": 5000.0},
])
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(position, min_size=1, max_size=12), VENUES, st.floats(0.0, 0.8), st.sampled_from(["sequential", "equilibrium", "fixed-price"]))
def test_conservation_and_bounds(positions, venue, shock, mode):
    snap = build(positions, venue)
    r = solve(snap, {"WETH": shock}, mode)
    liq = r.liquidations
    init = snap.positions.frame
    for acc, g in liq.groupby("account"):
        c0 = init[(init.account == acc) & (init.side == "collateral")].amount.sum()
        d0 = init[(init.account == acc) & (init.side == "debt")].amount.sum()
        assert g.collateral_seized.sum() <= c0 * (1 + 1e-9)
        assert g.debt_repaid.sum() <= d0 * (1 + 1e-9)
        assert (g.collateral_sold <= g.collateral_seized * (1 + 1e-12)).all()
    assert (liq.bad_debt_usd >= -1e-9).all()
    assert r.end_prices["WETH"] <= r.shocked_prices["WETH"] * (1 + 1e-12)
    assert r.end_prices["USDC"] == 1.0


@SETTINGS
@given(st.lists(position, min_size=1, max_size=12), VENUES, st.lists(st.floats(0.0, 0.85), min_size=2, max_size=6))
def test_fixed_price_end_price_monotone_in_shock(positions, venue, shocks):
    snap = build(positions, venue)
    ends = [solve(snap, {"WETH": s}, "fixed-price").end_prices["WETH"] for s in sorted(shocks)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(ends, ends[1:]))


@SETTINGS
@given(st.lists(st.tuples(st.floats(1.0, 50.0), st.floats(0.3, 1.0)), min_size=1, max_size=15),
       st.sampled_from([{"kind": "linear", "lambda": 1.5}, {"kind": "constant_product", "base_reserve": 3000.0, "quote_reserve": 3e6, "fee": 0.0},
                        {"kind": "exponential", "depth": 1500.0}]),
       st.floats(0.0, 0.8))
def test_modes_agree_when_every_liquidation_sells_all(positions, venue, shock):
    # Compound absorb sells all collateral and the venue is path independent, so the order and timing
    # of sales cannot matter: sequential rounds reach the greatest fixed point.
    snap = build([("compound-v3", c, f) for c, f in positions], venue)
    a = solve(snap, {"WETH": shock}, "sequential")
    b = solve(snap, {"WETH": shock}, "equilibrium")
    np.testing.assert_allclose(a.end_prices["WETH"], b.end_prices["WETH"], rtol=1e-9)
    assert set(a.liquidations.account) == set(b.liquidations.account)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(position, min_size=1, max_size=10), VENUES)
def test_compiled_curve_equals_general_engine(positions, venue):
    snap = build(positions, venue)
    fast = cascade_curve(snap, "WETH", points=25, max_shock=0.8, method="compiled", mode="fixed-price")
    slow = cascade_curve(snap, "WETH", points=25, max_shock=0.8, method="general", mode="fixed-price")
    np.testing.assert_allclose(fast.curve.end_price, slow.curve.end_price, rtol=1e-8)
    np.testing.assert_allclose(fast.curve.liquidated_collateral_usd, slow.curve.liquidated_collateral_usd, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(fast.curve.bad_debt_usd, slow.curve.bad_debt_usd, rtol=1e-7, atol=1e-5)
