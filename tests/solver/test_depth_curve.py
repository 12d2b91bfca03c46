"""The `depth_curve` venue kind (off-chain depth) and the `--depth FILE` loader.

Expected numbers are derived by hand from the piecewise-linear curve (docs/model.md, "depth_curve"),
never from the solver. Case ids: D-DEPTH-1 (a Morpho cascade along a depth curve alone), D-DEPTH-2
(a sale routed over a constant-product pool and a depth curve)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app
from defirisk.errors import InputError
from defirisk.markets.depth import apply_depth, load_depth, read_depth
from defirisk.markets.impact import MIN_REL, DepthCurve, build_asset_curve
from defirisk.model import Asset, Venue
from defirisk.rules.morpho_blue import incentive_factor
from defirisk.snapshot import load_snapshot, write_snapshot
from defirisk.solver import solve
from defirisk.solver.economics import curve_proceeds

from .helpers import make_snapshot

CASE = Path(__file__).resolve().parents[2] / "fixtures" / "cases" / "two_protocol_cliff"
_load_commands()
runner = CliRunner()

# Three quoted points at a reference price of $1,000: in tokens q = 100, 300, 600 with impacts 2%, 10%,
# 16%. Slopes (impact per token): s1 = 0.02/100 = 2e-4, s2 = 0.08/200 = 4e-4, s3 = 0.06/300 = 2e-4;
# past the last point s3 continues: impact reaches 1 at q_end = 600 + 0.84/2e-4 = 4800.
P0 = 1000.0
POINTS = [[100_000.0, 0.02], [300_000.0, 0.10], [600_000.0, 0.16]]
DEPTH = {"kind": "depth_curve", "points": POINTS}


def impact_by_hand(q: float) -> float:
    if q <= 100:
        return 2e-4 * q
    if q <= 300:
        return 0.02 + 4e-4 * (q - 100)
    return 0.10 + 2e-4 * (q - 300)      # segment 3 and its extension past q = 600


def curve(specs, price=P0):
    specs = specs if isinstance(specs, list) else [specs]
    vs = [Venue("X", s["kind"], {k: v for k, v in s.items() if k != "kind"}) for s in specs]
    return build_asset_curve(vs, {"X": Asset("X", 18, price)}, "X")


# --- the curve itself ------------------------------------------------------------------------------

@pytest.mark.parametrize("q", [0.0, 50.0, 100.0, 175.0, 300.0, 450.0, 600.0, 700.0, 4000.0])
def test_price_along_the_curve(q):
    c = curve(DEPTH)
    st, _ = c.sell(c.init_state(), q)
    assert_allclose(c.price(st), P0 * (1 - impact_by_hand(q)), rtol=1e-12)


def test_inverse_and_path_independence():
    c = curve(DEPTH)
    for target in (990.0, 980.0, 950.0, 900.0, 840.0, 700.0):   # segment 1, knot, 2, knot, knot, extension
        q = float(c.amount_to_price(c.init_state(), target))
        assert_allclose(c.price(c.sell(c.init_state(), q)[0]), target, rtol=1e-12)
    assert_allclose(c.amount_to_price(c.init_state(), 950.0), 175.0, rtol=1e-12)   # 100 + 0.03/4e-4
    # the state is the cumulative amount: two sales = one sale of their sum
    two = c.sell(c.sell(c.init_state(), 120.0)[0], 230.0)[0]
    assert_allclose(c.price(two), c.price(c.sell(c.init_state(), 350.0)[0]), rtol=1e-14)


def test_past_the_last_point_the_last_slope_continues_to_the_floor():
    c = curve(DEPTH)
    assert_allclose(c.price(c.sell(c.init_state(), 700.0)[0]), P0 * (1 - 0.18), rtol=1e-12)
    # impact reaches 1 at q_end = 4800: below the floor a sale needs an infinite amount, never NaN
    assert_allclose(c.amount_to_price(c.init_state(), 1.0), 4800.0 - 1.0 / P0 / 2e-4, rtol=1e-12)
    assert math.isinf(float(c.amount_to_price(c.init_state(), 0.0)))
    st, _ = c.sell(c.init_state(), 1e7)
    assert float(c.price(st)) == pytest.approx(P0 * MIN_REL)
    arr = c.sell(c.init_state(), np.array([10.0, 1e7]))[0]
    assert np.all(np.isfinite(c.price(arr)))


def test_scalar_twins_agree_with_the_arrays():
    v = curve(DEPTH).venues[0]
    assert isinstance(v, DepthCurve)
    for q0 in (0.0, 99.9, 100.0, 250.0, 600.0, 5000.0):
        st = (np.float64(q0),)
        assert v.rel_f((q0,)) == pytest.approx(float(v.rel(st)), abs=1e-15)
        for r in (1.0, 0.99, 0.98, 0.9, 0.84, 0.5, 1e-9, 0.0):
            assert v.q_f((q0,), r) == pytest.approx(float(v.amount_to_rel(st, r)), rel=1e-15, abs=1e-12)
    assert_allclose(v.breaks_f((0.0,)), [0.98, 0.90, 0.84], rtol=1e-15)


def test_reference_price_converts_usd_to_tokens():
    # quotes taken at $2,000 while the snapshot says $1,000: 100,000 USD sold = 50 tokens
    c = curve({**DEPTH, "reference_price": 2000.0})
    assert_allclose(c.amount_to_price(c.init_state(), 980.0), 50.0, rtol=1e-12)


def test_exact_proceeds_across_knots_and_past_the_last_point():
    c = curve(DEPTH)
    # from 0, 150 tokens: 100 x (1 - 0.01) + 50 x (1 - (0.02 + 0.04)/2) = 99 + 48.5 = 147.5 (x $1,000)
    assert_allclose(curve_proceeds(c, c.init_state(), 150.0), 147_500.0, rtol=1e-12)
    # from q0 = 250, 400 tokens: 50 x 0.91 + 300 x 0.87 + 50 x 0.835 = 348.25 (x $1,000)
    st = c.sell(c.init_state(), 250.0)[0]
    assert_allclose(curve_proceeds(c, st, np.array([400.0])), [348_250.0], rtol=1e-12)


@pytest.mark.parametrize("points,match", [
    ([[100_000, 0.02], [300_000, 0.01]], r"points\[1\] impact: 0.01 at usd_sold 300000 is not above 0.02"),
    ([[100_000, 0.0]], r"points\[0\] impact: 0 at usd_sold 100000 is not above the implied \(0, 0\)"),
    ([[100_000, 1.0]], r"points\[0\] impact: 1.0 is outside \[0, 1\)"),
    ([[100_000, 0.02], [100_000, 0.03]], r"points\[1\] usd_sold: 100000 is not above"),
    ([[100_000, "x"]], r"points\[0\] impact is not a number: 'x'"),
    ([[100_000]], r"points\[0\] must be a pair \[usd_sold, impact\], got \[100000\]"),
    ([], "field points missing or empty"),
    ([[0, 0.01]], r"points\[0\] impact: must be 0 at usd_sold 0, got 0.01"),
])
def test_bad_points_name_venue_point_and_field(points, match):
    with pytest.raises(InputError, match=r"venue 0 of X \(depth_curve\): " + match):
        curve({"kind": "depth_curve", "points": points})


def test_an_explicit_origin_point_is_accepted():
    c = curve({"kind": "depth_curve", "points": [[0, 0], *POINTS]})
    assert_allclose(c.amount_to_price(c.init_state(), 950.0), 175.0, rtol=1e-12)


# --- D-DEPTH-1: a Morpho cascade along the depth curve alone -----------------------------------------
# Morpho, LLTV 0.8, LIF = 1/(1 - 0.3 x 0.2) = 1/0.94; oracle = market price (no lag).
#   a: 100 WETH, 78,000 USDC debt: liquidatable below 78,000/(100 x 0.8) = $975
#   b: 200 WETH, 147,000 USDC debt: liquidatable below 147,000/(200 x 0.8) = $918.75
# Shock 5%: the shock sale takes the curve to impact 0.05, q = 100 + 0.03/4e-4 = 175 (segment 2).
# Round 1 at $950: a is liquidated (b: 200 x 950 x 0.8 = 152,000 > 147,000), seizes 78,000 LIF/950 < 100 and
#   it is sold: q1 = 175 + 78,000/(0.94 x 950); P1 = 1000 (1 - (0.02 + 4e-4 (q1 - 100))) ~ $915.06.
# Round 2 at P1 < 918.75: b is liquidated, seizes 147,000 LIF/P1 < 200, sold: q2 = q1 + 147,000/(0.94 P1)
#   ~ 433.2, past the knot at 300: P2 = 1000 (1 - (0.10 + 2e-4 (q2 - 300))) ~ $873.35. Nobody is left.
def _morpho_on_depth(venues):
    pos = [("morpho-blue", "m", "a", "WETH", "collateral", 100.0), ("morpho-blue", "m", "a", "USDC", "debt", 78_000.0),
           ("morpho-blue", "m", "b", "WETH", "collateral", 200.0), ("morpho-blue", "m", "b", "USDC", "debt", 147_000.0)]
    return make_snapshot({"USDC": 1.0, "WETH": P0}, pos,
                         [("morpho-blue", "m", {"lltv": 0.8, "collateral": "WETH", "loan": "USDC"}, {})], {"WETH": venues})


def test_D_DEPTH_1_morpho_cascade_on_a_depth_curve():
    lif = incentive_factor(0.8)
    assert lif == pytest.approx(1 / 0.94)
    q1 = 175.0 + 78_000.0 * lif / 950.0
    p1 = P0 * (1 - (0.02 + 4e-4 * (q1 - 100.0)))
    q2 = q1 + 147_000.0 * lif / p1
    p2 = P0 * (1 - (0.10 + 2e-4 * (q2 - 300.0)))
    assert 918.75 > p1 > 900 and 300 < q2 < 600 and p2 == pytest.approx(873.35, abs=0.01)

    r = solve(_morpho_on_depth(DEPTH), {"WETH": 0.05}, "sequential")
    rtol = 1e-9   # D-DEPTH-1 tolerance: float64 routing (bisection/regula falsi to 1e-15) and the rule's arithmetic
    assert_allclose(r.shocked_prices["WETH"], 950.0, rtol=rtol)
    assert_allclose(r.end_prices["WETH"], p2, rtol=rtol)
    assert r.rounds == 2 and r.totals.accounts_liquidated == 2
    assert_allclose(r.liquidations["collateral_sold"].sum(), q2 - 175.0, rtol=rtol)
    assert r.totals.bad_debt_usd == pytest.approx(0.0, abs=1e-6)


# --- D-DEPTH-2: routing over a constant-product pool and a depth curve ------------------------------
# Pool B = 1000 WETH, Q = 1,000,000 USDC, fee 0.3% (g = 0.997); depth curve as above. For a common
# relative price r* = 0.96: the pool takes x with g x^2 + B(1+g) x + B^2 (1 - 1/r*) = 0 (mid Q'/B' = r* Q/B),
# the depth curve q = 100 + (0.04 - 0.02)/4e-4 = 150. Selling X = x + 150 must split into exactly these.
def test_D_DEPTH_2_routing_ends_at_equal_relative_prices():
    g, B = 0.997, 1000.0
    b, cc = B * (1 + g), B * B * (1 - 1 / 0.96)
    x_pool = (-b + math.sqrt(b * b - 4 * g * cc)) / (2 * g)
    c = curve([{"kind": "constant_product", "base_reserve": B, "quote_reserve": 1e6, "fee": 0.003}, DEPTH])
    X = x_pool + 150.0
    rtol = 1e-9   # D-DEPTH-2 tolerance
    st, parts = c.sell(c.init_state(), X)                                   # scalar route
    assert_allclose([float(p) for p in parts], [x_pool, 150.0], rtol=rtol)
    assert_allclose([float(v.rel(s)) for v, s in zip(c.venues, st)], [0.96, 0.96], rtol=rtol)
    assert_allclose(c.price(st), 960.0, rtol=rtol)
    st2, parts2 = c.sell(c.init_state(), np.array([X, 10.0]))              # vectorised route
    assert_allclose(parts2[0][0], x_pool, rtol=rtol)
    assert_allclose(parts2[1][0], 150.0, rtol=rtol)
    assert_allclose(c.price(st2)[0], 960.0, rtol=rtol)
    assert_allclose(c.amount_to_price(c.init_state(), 960.0), X, rtol=rtol)


def test_continuous_flow_is_the_sale_for_a_depth_curve():
    # path independent: the flow of x is the sale of x (the venue default), and it composes
    v = curve(DEPTH).venues[0]
    s0 = v.init_state()
    assert_allclose(v.flow_sell(v.flow_sell(s0, 120.0), 230.0)[0], v.sell(s0, 350.0)[0], rtol=1e-15)
    assert_allclose(v.flow_amount_to_rel(s0, 0.95), 175.0, rtol=1e-12)
    assert v.flow_q_f((0.0,), 0.95) == pytest.approx(175.0, rel=1e-12)
    # routed as a flow beside a pool: every venue that takes a part ends at the same relative price
    c = curve([{"kind": "constant_product", "base_reserve": 1000.0, "quote_reserve": 1e6, "fee": 0.003}, DEPTH])
    for x in (170.0, np.array([170.0, 900.0])):
        st, parts = c.flow_sell(c.init_state(), x)
        r0, r1 = (np.asarray(v.rel(s)) for v, s in zip(c.venues, st))
        assert_allclose(r0, r1, rtol=1e-9)
        assert_allclose(parts[0] + parts[1], x, rtol=1e-12)
        assert_allclose(c.flow_amount_to_price(c.init_state(), c.price(st)), x, rtol=1e-9)


def test_equilibrium_mode_runs_on_a_depth_curve():
    snap = _morpho_on_depth([{"kind": "constant_product", "base_reserve": 1000.0, "quote_reserve": 1e6, "fee": 0.003},
                             DEPTH])
    seq = solve(snap, {"WETH": 0.05}, "sequential")
    eq = solve(snap, {"WETH": 0.05}, "equilibrium")
    assert eq.converged and seq.converged
    for r in (seq, eq):
        assert math.isfinite(r.end_prices["WETH"]) and 0 < r.end_prices["WETH"] < 950.0


# --- the --depth file ------------------------------------------------------------------------------

def _write(tmp_path: Path, text: str, name="depth.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_depth_sorts_skips_comments_and_accepts_percent(tmp_path):
    p = _write(tmp_path, "# quotes of 2026-01-01\n\nasset,usd_sold,impact,note\n"
                         "WETH,1000000,1.5%,1inch\nWETH,100000,0.002,\n  # a comment\nWBTC,500000,0.01,\n")
    d = read_depth(p)
    assert d.name == "depth.csv"
    assert d.curves["WETH"].points == ((100_000.0, 0.002), (1_000_000.0, 0.015))
    assert d.curves["WETH"].lines == (5, 4)
    assert d.describe()["assets"]["WBTC"] == {"points": 1, "max_usd_sold": 500_000.0, "max_impact": 0.01}


@pytest.mark.parametrize("body,match", [
    ("asset,usd_sold,impact\nWETH,100000,0.02\nWETH,300000,0.01\n",
     r"depth.csv line 3, asset WETH, field impact: 0.01 at usd_sold 300000 is not above 0.02 at usd_sold 100000: "
     r"a depth curve must be monotone.*previous point by usd_sold is on line 2"),
    ("asset,usd_sold,impact\nWETH,300000,0.01\n\nWETH,100000,0.02\n",
     r"depth.csv line 2, asset WETH, field impact: 0.01 at usd_sold 300000 is not above 0.02.*line 4"),
    ("asset,usd_sold,impact\nWETH,100000,0\n", r"line 2, asset WETH, field impact: 0 at usd_sold 100000 is not above "
                                               r"the implied \(0, 0\)"),
    ("asset,usd_sold,impact\nWETH,abc,0.02\n", r"depth.csv line 2, asset WETH, field usd_sold: not a number: 'abc'"),
    ("asset,usd_sold,impact\nWETH,100000,two\n", r"line 2, asset WETH, field impact: not a number: 'two'"),
    ("asset,usd_sold,impact\nWETH,100000,1.2\n", r"line 2, asset WETH, field impact: '1.2' is outside \[0, 1\)"),
    ("asset,usd_sold,impact\nWETH,100000,-0.1\n", r"field impact: '-0.1' is outside \[0, 1\)"),
    ("asset,usd_sold,impact\nWETH,100000,2\n", r"field impact: '2' is outside \[0, 1\) \(a fraction"),
    ("asset,usd_sold,impact\nWETH,-5,0.1\n", r"line 2, asset WETH, field usd_sold: must be >= 0"),
    ("asset,usd_sold,impact\nWETH,inf,0.1\n", r"field usd_sold: must be finite"),
    ("asset,usd_sold,impact\nWETH,100000\n", r"line 2, asset WETH, field impact: missing"),
    ("asset,usd_sold,impact\n,100000,0.1\n", r"line 2, field asset: empty"),
    ("asset,usd_sold,impact\nWETH,100000,0.01\nWETH,100000,0.02\n",
     r"line 3, asset WETH, field usd_sold: 100000 appears twice for this asset \(also line 2\)"),
    ("WETH,100000,0.01\n", r"depth.csv line 1: header must name the columns asset, usd_sold, impact; missing"),
    ("# nothing\n\n", r"depth.csv: empty"),
    ("asset,usd_sold,impact\n", r"no data rows"),
])
def test_bad_depth_file_names_file_line_asset_field(tmp_path, body, match):
    with pytest.raises(InputError, match=match):
        read_depth(_write(tmp_path, body))


def test_missing_depth_file(tmp_path):
    with pytest.raises(InputError, match="depth file .*nope.csv: file missing"):
        read_depth(tmp_path / "nope.csv")


def test_unknown_asset_is_named_with_its_line(tmp_path):
    snap = load_snapshot(CASE)
    p = _write(tmp_path, "asset,usd_sold,impact\nWETH,100000,0.01\n# doge\nDOGE,1000,0.5\n")
    with pytest.raises(InputError, match=r"depth.csv line 4, asset DOGE, field asset: not an asset of the snapshot "
                                         r"\(assets: USDC, WBTC, WETH, wstETH\)"):
        load_depth(snap, p)


def test_apply_depth_adds_a_venue_and_never_mutates(tmp_path):
    snap = load_snapshot(CASE)
    d = read_depth(_write(tmp_path, "asset,usd_sold,impact\nWETH,100000,0.01\nWETH,1000000,0.05\n"))
    out = apply_depth(snap, d)
    assert [v.kind for v in snap.venues["WETH"]] == ["constant_product", "constant_product"]
    assert [v.kind for v in out.venues["WETH"]] == ["constant_product", "constant_product", "depth_curve"]
    assert out.venues["WETH"][2].params["source"] == "depth.csv"
    assert out.manifest["off_chain_depth"]["file"] == "depth.csv" and "off_chain_depth" not in snap.manifest
    assert out.positions is snap.positions and apply_depth(snap, None) is snap
    # a snapshot with depth is written and read back like any other (venues.json holds the curve)
    back = load_snapshot(write_snapshot(out, tmp_path / "snap"))
    assert [v.kind for v in back.venues["WETH"]] == ["constant_product", "constant_product", "depth_curve"]
    assert back.venues["WETH"][2].params["points"] == ((100_000.0, 0.01), (1_000_000.0, 0.05))
    assert back.manifest["off_chain_depth"]["assets"]["WETH"]["points"] == 2


def test_bad_depth_curve_in_venues_json_names_file_asset_and_point(tmp_path):
    d = tmp_path / "case"
    shutil.copytree(CASE, d)
    venues = json.loads((d / "venues.json").read_text())
    venues["WBTC"] = [venues["WBTC"], {"kind": "depth_curve", "points": [[100000, 0.02], [200000, 0.02]]}]
    (d / "venues.json").write_text(json.dumps(venues))
    with pytest.raises(InputError, match=r"venues.json: venue 1 of WBTC \(depth_curve\): points\[1\] impact: 0.02 at "
                                         r"usd_sold 200000 is not above 0.02"):
        load_snapshot(d)


# --- CLI -------------------------------------------------------------------------------------------

DEEP = "asset,usd_sold,impact\nWETH,1000000,0.01\nWETH,10000000,0.05\n"


def test_cascade_with_depth_json(tmp_path):
    p = _write(tmp_path, DEEP)
    base = runner.invoke(app, ["cascade", str(CASE), "--shock", "WETH=0.2", "--json", "--liquidators", "all"])
    r = runner.invoke(app, ["cascade", str(CASE), "--shock", "WETH=0.2", "--json", "--liquidators", "all", "--depth", str(p)])
    assert base.exit_code == 0 and r.exit_code == 0, r.output
    b, out = json.loads(base.stdout), json.loads(r.stdout)
    assert out["off_chain_depth"] == {"file": "depth.csv", "assets": {"WETH": {
        "points": 2, "max_usd_sold": 10_000_000.0, "max_impact": 0.05}}}
    assert "off_chain_depth" not in b
    assert out["shocked_prices"]["WETH"] == pytest.approx(2400.0)
    # deeper market: the liquidation sales move WETH less
    assert out["end_prices"]["WETH"] > b["end_prices"]["WETH"]
    assert {row["venue"] for row in out["sales"] if row["asset"] == "WETH"} == {0, 1, 2}
    assert str(tmp_path) not in r.stdout   # the file name only, never its directory


def test_cascade_with_depth_table_and_curve(tmp_path):
    p = _write(tmp_path, DEEP)
    r = runner.invoke(app, ["cascade", str(CASE), "--shock", "WETH=0.2", "--depth", str(p)])
    assert r.exit_code == 0, r.output
    assert "off-chain depth from depth.csv, routed with the on-chain pools: WETH 2 points up to $10,000,000" in r.stdout
    r = runner.invoke(app, ["cascade", str(CASE), "--curve", "--asset", "WETH", "--points", "20", "--max-shock", "0.3",
                            "--json", "--liquidators", "all", "--depth", str(p)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["off_chain_depth"]["file"] == "depth.csv"


@pytest.mark.parametrize("body,fragment", [
    ("asset,usd_sold,impact\nWETH,100000,0.02\nWETH,300000,0.01\n", "depth.csv line 3, asset WETH, field impact"),
    ("asset,usd_sold,impact\nDOGE,100000,0.02\n", "depth.csv line 2, asset DOGE, field asset: not an asset"),
    ("asset,usd_sold,impact\nWETH,lots,0.02\n", "depth.csv line 2, asset WETH, field usd_sold: not a number"),
    ("asset,usd_sold,impact\nWETH,100000,1\n", "depth.csv line 2, asset WETH, field impact: '1' is outside [0, 1)"),
])
def test_cascade_bad_depth_exit_2_without_traceback(tmp_path, body, fragment):
    p = _write(tmp_path, body)
    r = runner.invoke(app, ["cascade", str(CASE), "--shock", "WETH=0.2", "--depth", str(p)])
    assert r.exit_code == 2, r.output
    assert fragment in r.output
    assert "Traceback" not in r.output and "np.float64" not in r.output and "array(" not in r.output


def test_validate_bad_depth_fails_before_any_fork(tmp_path):
    r = runner.invoke(app, ["validate", "--shock", "WETH=0.2", "--depth", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2 and "missing.csv: file missing" in r.output
