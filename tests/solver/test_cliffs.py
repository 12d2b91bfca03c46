"""Cliffs on the full outcome of the curve (issue 10, item 3), with answers derived by hand.

- a cross-asset cliff: shocking A liquidates an account whose B collateral, sold into a thin B pool,
  collapses B; A's own price hardly moves, so the earlier rule (A's end price only) saw nothing;
- a staircase of three jumps, each below the threshold, merged into one cliff (and not merged when
  the jumps are farther apart than merge_gap);
- a steep slope made of many tiny jumps: not a cliff;
- property: every cliff the earlier rule finds on the shocked asset's own price is still found.

Linear venues (P = p0 - lambda q, path independent) and Compound V3 absorb (seizes and sells ALL
collateral) make the three modes sell the same amounts, so the shocks and end prices below hold in
each of them (docs/model.md, "Equilibrium mode")."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from defirisk.errors import InputError
from defirisk.rules.morpho_blue import incentive_factor
from defirisk.solver import cascade_curve, prepare, solve

from .helpers import make_snapshot
from .test_properties import VENUES, build, position

MODES = ["fixed-price", "equilibrium", "sequential"]
COMET = {"liquidate_collateral_factor": 0.8, "liquidation_factor": 0.9}


# --- the earlier rule, kept here as the reference of the property test ------------------------------
def old_rule_cliffs(end_at, shocks, end, p_hat, p0, min_jump=0.005, shock_tol=1e-9):
    """Bisect grid intervals whose end-price drop exceeds the shock's own move by > min_jump p0, following
    the larger half (curve.py before issue 10). Returns the (lo, hi) of every jump found."""
    excess = (end[:-1] - end[1:]) - (p_hat[:-1] - p_hat[1:])
    stack = [(float(shocks[i]), float(shocks[i + 1]), float(end[i]), float(end[i + 1]))
             for i in np.flatnonzero(excess > min_jump * p0)]
    found = []
    while stack:
        lo, hi, e_lo, e_hi = stack.pop()
        while hi - lo > shock_tol:
            if e_lo - e_hi - p0 * (hi - lo) <= min_jump * p0:
                break
            mid = 0.5 * (lo + hi)
            e_mid = end_at(mid)
            left, right = e_lo - e_mid, e_mid - e_hi
            if left >= right:
                if right > min_jump * p0 + (p0 * (hi - mid)):
                    stack.append((mid, hi, e_mid, e_hi))
                hi, e_hi = mid, e_mid
            else:
                if left > min_jump * p0 + (p0 * (mid - lo)):
                    stack.append((lo, mid, e_lo, e_mid))
                lo, e_lo = mid, e_mid
        if e_lo - e_hi - p0 * (hi - lo) > min_jump * p0:
            found.append((lo, hi))
    return sorted(found)


def _old_rule_on(snap, asset, cur, mode):
    prep = prepare(snap)
    c = cur.curve
    return old_rule_cliffs(lambda s: solve(snap, {asset: float(s)}, mode, prepared=prep).end_prices[asset],
                           c.shock.to_numpy(), c.end_price.to_numpy(), c.shocked_price.to_numpy(),
                           prep.p0[prep.symbols.index(asset)])


# --- 1. a cross-asset cliff ----------------------------------------------------------------------------
# A, B at $100, linear venues: A deep (lambda 0.001: selling 10 A moves it by $0.01), B thin (lambda 1).
# x (Comet market "c"): 10 A + 30 B against 3,000 USDC, LCF 0.8: liquidatable iff 0.8 (10 P_A + 30 P_B)
#   < 3,000; with B at 100 that is P_A < 75, i.e. a shock s > 0.25 (nothing happens before: at p0,
#   0.8 x 4,000 = 3,200 > 3,000). Absorb sells 10 A and 30 B: B 100 -> 70, A 75 -> 74.99.
# y (Morpho on B, LLTV 0.8): 20 B against 1,360 USDC: liquidatable iff 20 x 0.8 P_B < 1,360, P_B < 85.
#   B at 70 < 85 pulls y in. Fixed-price and sequential (oracle lag 0: y in round 2 at 70) seize all
#   20 B (1,360 LIF / 70 > 20), so B ends at 70 - 20 = 50. Equilibrium (each liquidation at the price where
#   it becomes liquidatable on the way down) seizes y at 85: at most 20 B, at least the 16.0 of
#   1,360 / 85; B ends in [50, 70 - 16].
# So the A curve has a cliff at s = 0.25 whose assets_moved holds B (100 -> 50), not A (a $0.01 move is
# far below step_share x min_jump = 0.25% of p0), carried by compound-v3 then morpho-blue.
X_DEBT, Y_DEBT = 3000.0, 20 * 0.8 * 85.0


def cross_asset():
    rows = [("compound-v3", "c", "x", "A", "collateral", 10.0), ("compound-v3", "c", "x", "B", "collateral", 30.0),
            ("compound-v3", "c", "x", "USDC", "debt", X_DEBT),
            ("morpho-blue", "m", "y", "B", "collateral", 20.0), ("morpho-blue", "m", "y", "USDC", "debt", Y_DEBT)]
    markets = [("compound-v3", "c", {"base": "USDC"}, {"A": COMET, "B": COMET}),
               ("morpho-blue", "m", {"lltv": 0.8, "collateral": "B", "loan": "USDC"}, {})]
    return make_snapshot({"A": 100.0, "B": 100.0, "USDC": 1.0}, rows, markets,
                         {"A": {"kind": "linear", "lambda": 0.001}, "B": {"kind": "linear", "lambda": 1.0}})


@pytest.mark.parametrize("mode", MODES)
def test_cross_asset_cliff_names_the_asset_that_collapsed(mode):
    snap = cross_asset()
    cur = cascade_curve(snap, "A", points=41, max_shock=0.4, mode=mode)
    assert len(cur.cliffs) == 1
    c = cur.cliffs[0]
    assert 0.25 < c.trigger_shock <= 0.25 + 2e-9 and c.end_shock == c.trigger_shock and c.steps == (c.trigger_shock,)
    assert c.trigger_price == pytest.approx(75.0, rel=1e-7)
    moved = {a["asset"]: a for a in c.assets_moved}
    assert set(moved) == {"B"}
    assert moved["B"]["end_price_before"] == pytest.approx(100.0, rel=1e-12)
    if mode == "equilibrium":
        assert 50.0 - 1e-9 <= moved["B"]["end_price"] <= 70.0 - Y_DEBT / 85.0 + 1e-9
    else:
        assert moved["B"]["end_price"] == pytest.approx(50.0, rel=1e-9)
    # A's own end price: 75 just before, 75 - 0.01 just after (no cliff of its own)
    assert c.end_price_before == pytest.approx(75.0, rel=1e-8) and c.end_price == pytest.approx(74.99, rel=1e-8)
    assert c.protocols == ("compound-v3", "morpho-blue")
    jumps = {(q["quantity"], q["asset"]): q for q in c.jumps}
    b = jumps[("end_price", "B")]
    assert b["threshold"] == 0.005 and b["jump"] == pytest.approx((moved["B"]["end_price_before"] - moved["B"]["end_price"]) / 100.0, rel=1e-9)
    liq = jumps[("liquidated_collateral_usd", None)]
    assert liq["threshold"] == 1000.0   # max(0.5% of the $4,360 book, the $1,000 floor)
    assert liq["before"] == 0.0 and liq["after"] == c.liquidated_collateral_usd > 1000.0
    # the curve records every asset's end price: B is 100 below the cliff and collapsed above it
    ep = cur.end_prices
    assert list(ep.columns) == ["A", "B", "USDC"] and len(ep) == 41
    assert (ep.B[cur.curve.shock <= 0.25] == 100.0).all() and (ep.B[cur.curve.shock > 0.25] <= 70.0).all()
    # the earlier rule, on A's own end price, finds nothing
    assert _old_rule_on(snap, "A", cur, mode) == []


def test_cross_asset_cliff_figures_fixed_price():
    """Fixed-price values everything at the end prices A = 74.99, B = 50 (at s = 0.25):
    liquidated 10 x 74.99 + 30 x 50 + 20 x 50 = 3,249.9; bad debt: x 3,000 - 0.9 x 2,249.9 = 975.09,
    y 1,360 - 20 x 50 / LIF (Morpho repays C P / LIF when the collateral does not cover D LIF)."""
    c = cascade_curve(cross_asset(), "A", points=41, max_shock=0.4, mode="fixed-price").cliffs[0]
    assert c.liquidated_collateral_usd == pytest.approx(3249.9, rel=1e-7)
    assert c.bad_debt_usd == pytest.approx(975.09 + Y_DEBT - 1000.0 / incentive_factor(0.8), rel=1e-7)
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert set(d) >= {"trigger_shock", "end_shock", "steps", "assets_moved", "jumps", "protocols", "attribution"}
    assert d["assets_moved"][0]["asset"] == "B" and {q["quantity"] for q in d["jumps"]} >= {"end_price", "liquidated_collateral_usd"}


def test_bad_debt_threshold_is_relative_to_the_book_or_the_floor():
    """A floor above the bad debt's jump removes it from `jumps`; with the floor at 0 the threshold is
    0.5% of the book's total debt (3,000 + 1,360 USD)."""
    snap = cross_asset()
    c = cascade_curve(snap, "A", points=41, max_shock=0.4, mode="fixed-price", min_jump_usd=0.0).cliffs[0]
    jumps = {q["quantity"]: q for q in c.jumps if q["asset"] is None}
    assert jumps["bad_debt_usd"]["threshold"] == pytest.approx(0.005 * (X_DEBT + Y_DEBT))
    assert jumps["bad_debt_usd"]["jump"] == pytest.approx(c.bad_debt_usd, rel=1e-9)
    c = cascade_curve(snap, "A", points=41, max_shock=0.4, mode="fixed-price", min_jump_usd=7000.0).cliffs[0]
    assert not any(q["asset"] is None for q in c.jumps)   # 3,249.9 and 1,395 are below half of 7,000
    assert [a["asset"] for a in c.assets_moved] == ["B"]


# --- 2. a staircase of small jumps ----------------------------------------------------------------------
# W at $100, linear lambda 1 (selling q moves it by q dollars); Comet accounts holding 0.3 W each (so one
# liquidation drops W by 0.3%: 0.6 of min_jump, above step_share 0.5, below the threshold) with
# triggers t_1 = 90, t_{i+1} = t_i - 0.3 - gap x 100. Account i+1 is not pulled in by account i
# (t_i - 0.3 > t_{i+1}); it goes when p^ - 0.3 i < t_{i+1}, i.e. at shock s_i = 0.1 + i x gap.
# gap 0.0005: three jumps of 0.3% at s = 0.100, 0.1005, 0.101, gaps < merge_gap = 0.002 -> ONE cliff
# of 0.9% (end price 90 before, 89.9 - 0.9 = 89.0 after). The earlier rule (one jump > 0.5%) sees none.
def staircase(n=3, gap=0.0005, size=0.3):
    rows, t = [], 90.0
    for i in range(n):
        rows += [("compound-v3", "c", f"a{i}", "W", "collateral", size), ("compound-v3", "c", f"a{i}", "USDC", "debt", t * size * 0.8)]
        t -= size + gap * 100.0
    return make_snapshot({"USDC": 1.0, "W": 100.0}, rows, [("compound-v3", "c", {"base": "USDC"}, {"W": COMET})],
                         {"W": {"kind": "linear", "lambda": 1.0}})


@pytest.mark.parametrize("mode", MODES)
def test_staircase_of_small_jumps_is_one_cliff(mode):
    snap = staircase()
    # grid step 0.25/499 = 0.000501: the jumps fall in three consecutive grid intervals, 0.6 each
    cur = cascade_curve(snap, "W", points=500, max_shock=0.25, mode=mode)
    assert len(cur.cliffs) == 1
    c = cur.cliffs[0]
    np.testing.assert_allclose(c.steps, [0.1, 0.1005, 0.101], atol=2e-9)
    assert c.trigger_shock == c.steps[0] and c.end_shock == c.steps[-1]
    assert c.end_price_before == pytest.approx(90.0, rel=1e-9) and c.end_price == pytest.approx(89.0, rel=1e-9)
    assert [(q["quantity"], q["asset"]) for q in c.jumps] == [("end_price", "W")]
    assert c.jumps[0]["jump"] == pytest.approx(0.009, rel=1e-6)   # 3 x 0.3% of p0
    assert c.protocols == ("compound-v3",)
    assert _old_rule_on(snap, "W", cur, mode) == []   # each jump alone is below min_jump


def test_staircase_merging_rule():
    # farther apart than merge_gap: three separate sub-threshold jumps, no cliff
    assert cascade_curve(staircase(gap=0.003), "W", points=200, max_shock=0.5, mode="fixed-price").cliffs == ()
    # merge_gap 0 turns merging off; a wider one merges the 0.003 gaps
    assert cascade_curve(staircase(), "W", points=200, max_shock=0.5, mode="fixed-price", merge_gap=0.0).cliffs == ()
    c, = cascade_curve(staircase(gap=0.003), "W", points=200, max_shock=0.5, mode="fixed-price", merge_gap=0.004).cliffs
    assert len(c.steps) == 3
    # jumps below step_share of the threshold never count: 0.2% jumps (0.4 < 0.5), even five of them
    assert cascade_curve(staircase(n=5, size=0.2), "W", points=200, max_shock=0.5, mode="fixed-price").cliffs == ()
    # one jump above the threshold is a cliff on its own (the earlier rule's case)
    c, = cascade_curve(staircase(n=1, size=0.6), "W", points=200, max_shock=0.5, mode="fixed-price").cliffs
    assert c.steps == (c.trigger_shock,) and c.end_price == pytest.approx(90.0 - 0.6, rel=1e-9)


# --- 3. a steep slope ------------------------------------------------------------------------------------
# 300 accounts of 0.01 W (a 0.01% jump each: 0.02 of the threshold) spaced 0.002 dollars of trigger
# apart: from s = 0.1 the end price falls 0.012 for every 0.002 of shocked price, 6x the shock's own
# move, 3.6% of p0 over 0.006 of shock. Steep (each coarse grid interval holding it changes far more than
# the threshold) but made of jumps far below step_share: no cliff, on a coarse or a fine grid.
@pytest.mark.parametrize("points", [21, 1000])
def test_steep_slope_is_no_cliff(points):
    snap = staircase(n=300, gap=0.00002, size=0.01)
    cur = cascade_curve(snap, "W", points=points, max_shock=0.5, mode="fixed-price")
    assert cur.cliffs == ()
    c = cur.curve
    drop = (c.shocked_price - c.end_price).to_numpy()
    assert drop.max() == pytest.approx(3.0, rel=1e-9)   # 300 x 0.01 sold
    if points == 21:  # one grid interval [0.1, 0.125] holds the whole slope: 6x the threshold
        assert np.diff(drop).max() > 5 * 0.5


def test_cliff_settings_are_checked():
    for kw in ({"step_share": 0.0}, {"merge_gap": -1.0}, {"min_jump_debt_share": 0.0, "min_jump_usd": 0.0},
               {"min_jump": 0.0}, {"shock_tol": 0.0}):
        with pytest.raises(InputError):
            cascade_curve(staircase(), "W", points=5, max_shock=0.5, mode="fixed-price", **kw)


# --- 4. property: the earlier rule's cliffs are all still found ------------------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(position, min_size=1, max_size=10), VENUES, st.sampled_from(["fixed-price", "sequential", "equilibrium"]))
def test_every_cliff_of_the_old_rule_is_still_found(positions, venue, mode):
    """Same grid, same midpoints: a jump the earlier rule bisected down to (lo, hi) is a step of the new
    search (its criterion includes the shocked asset's price with the same threshold), so some cliff
    lists hi among its steps."""
    snap = build(positions, venue)
    cur = cascade_curve(snap, "WETH", points=20, max_shock=0.8, mode=mode, method="general")
    steps = {s for c in cur.cliffs for s in c.steps}
    for lo, hi in _old_rule_on(snap, "WETH", cur, mode):
        assert hi in steps, (lo, hi, [c.steps for c in cur.cliffs])
