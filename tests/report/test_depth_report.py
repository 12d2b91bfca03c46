"""The report's depth statement (which depth each asset used; the USD that moves its price 2% and 10%,
on-chain only and with off-chain depth) and `defirisk report --depth FILE`. Expected figures are derived
by hand from the pools' and the depth curve's closed forms."""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app
from defirisk.markets.depth import load_depth
from defirisk.report.build import depth_section
from defirisk.snapshot import load_snapshot

_load_commands()
runner = CliRunner()

# WETH at $3,000 with two fee-charging constant-product pools (fixtures/cases/two_protocol_cliff).
POOLS = ((1500.0, 0.003), (500.0, 0.0005))   # (base reserve, fee); both pools' mid equals the oracle price
PRICE = 3000.0
# Off-chain: $1M moves it 1%, $10M 5%. Per USD: 1e-8 on the first segment, 0.04/9e6 on the second (and past
# $10M, where the last slope continues).
DEPTH = "asset,usd_sold,impact\nWETH,1000000,0.01\nWETH,10000000,0.05\n"


def pools_usd(move: float) -> float:
    """Tokens each pool takes for its mid to fall to r = 1 - move (g x^2 + B(1+g) x + B^2 (1 - 1/r) = 0),
    valued at today's price."""
    r, total = 1.0 - move, 0.0
    for B, fee in POOLS:
        g = 1.0 - fee
        b, c = B * (1.0 + g), B * B * (1.0 - 1.0 / r)
        total += (-b + math.sqrt(b * b - 4.0 * g * c)) / (2.0 * g)
    return total * PRICE


# -2%: impact 0.02 on the second segment: 1e6 + (0.02 - 0.01) / (0.04 / 9e6) = $3.25M.
# -10%: past the last quote: 1e7 + (0.10 - 0.05) / (0.04 / 9e6) = $21.25M ("beyond the quotes").
OFF_USD = {0.02: 3_250_000.0, 0.10: 21_250_000.0}


def test_depth_section_figures_by_hand(weth_case, tmp_path):
    (tmp_path / "depth.csv").write_text(DEPTH)
    on_only = depth_section(load_snapshot(weth_case), "WETH")
    assert on_only["used"] == "on-chain" and on_only["off_chain"] == []
    both = depth_section(load_depth(load_snapshot(weth_case), tmp_path / "depth.csv"), "WETH")
    assert both["used"] == "on-chain+off-chain" and both["on_chain_venues"] == 2
    assert both["off_chain"] == [{"source": "depth.csv", "reference_price_usd": 3000.0, "points": 2,
                                  "max_usd_sold": 10_000_000.0, "max_impact": 0.05}]
    for sec in (on_only, both):
        assert [m["move"] for m in sec["usd_to_move"]] == [0.02, 0.10]
    for m0, m in zip(on_only["usd_to_move"], both["usd_to_move"]):
        mv = m["move"]
        assert m0["on_chain_usd"] == pytest.approx(pools_usd(mv), rel=1e-9)
        assert m0["with_off_chain_usd"] is None and m0["beyond_quotes"] is False
        assert m["on_chain_usd"] == pytest.approx(pools_usd(mv), rel=1e-9)
        # all venues end at the same relative price, so the routed amount is the sum of each venue's own
        assert m["with_off_chain_usd"] == pytest.approx(pools_usd(mv) + OFF_USD[mv], rel=1e-9)
        assert m["beyond_quotes"] is (mv > 0.05)


def test_off_chain_only_asset(weth_case, tmp_path):
    # WBTC has no venue in this copy: its depth comes from the file alone, and it becomes volatile
    (tmp_path / "depth.csv").write_text("asset,usd_sold,impact\nWBTC,600000,0.02\n")
    sec = depth_section(load_depth(load_snapshot(weth_case), tmp_path / "depth.csv"), "WBTC")
    assert sec["used"] == "off-chain" and sec["on_chain_venues"] == 0
    assert [m["on_chain_usd"] for m in sec["usd_to_move"]] == [None, None]
    assert sec["usd_to_move"][0]["with_off_chain_usd"] == pytest.approx(600_000.0, rel=1e-12)
    assert sec["usd_to_move"][1]["with_off_chain_usd"] == pytest.approx(3_000_000.0, rel=1e-12)


def test_report_cli_with_depth(weth_case, tmp_path):
    depth = tmp_path / "quotes" / "depth.csv"
    depth.parent.mkdir()
    depth.write_text(DEPTH)
    out = tmp_path / "rep"
    res = runner.invoke(app, ["report", "--snapshot", str(weth_case), "--out", str(out), "--curve-points", "20",
                              "--no-history", "--depth", str(depth)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    d = data["assets"]["WETH"]["depth"]
    assert d["used"] == "on-chain+off-chain"
    assert d["usd_to_move"][0]["with_off_chain_usd"] == pytest.approx(pools_usd(0.02) + 3_250_000.0, rel=1e-9)
    assert data["summary"]["off_chain_depth"]["file"] == "depth.csv"
    md = (out / "report.md").read_text()
    assert ("Depth used for WETH: on-chain pools (2 venues: constant-product pool) + off-chain depth from depth.csv "
            "(2 points, quoted up to $10.00M sold at a 5.0% impact).") in md
    # $61.0k + $3.25M and $324.9k + $21.25M
    assert "| with off-chain depth (depth.csv) | $3.31M | $21.57M (beyond the quotes) |" in md
    html = (out / "report.html").read_text()
    assert "Depth used for WETH" in html and "with off-chain depth (depth.csv)" in html
    for text in (md, html, json.dumps(data)):
        assert str(depth.parent) not in text   # the file name only


def test_report_without_depth_states_on_chain_only(weth_case, tmp_path):
    out = tmp_path / "rep"
    res = runner.invoke(app, ["report", "--snapshot", str(weth_case), "--out", str(out), "--curve-points", "20",
                              "--no-history", "--format", "md,json"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    assert data["assets"]["WETH"]["depth"]["used"] == "on-chain" and data["summary"]["off_chain_depth"] is None
    md = (out / "report.md").read_text()
    assert "Depth used for WETH: on-chain pools (2 venues: constant-product pool) only." in md
    assert "No off-chain depth given" in md


def test_report_bad_depth_exit_2_before_any_work(weth_case, tmp_path):
    (tmp_path / "depth.csv").write_text("asset,usd_sold,impact\nWETH,100000,0.5\nWETH,200000,0.4\n")
    out = tmp_path / "rep"
    res = runner.invoke(app, ["report", "--snapshot", str(weth_case), "--out", str(out), "--no-history",
                              "--depth", str(tmp_path / "depth.csv")])
    assert res.exit_code == 2
    assert "depth.csv line 3, asset WETH, field impact" in res.stderr and "Traceback" not in res.output
    assert not out.exists()
