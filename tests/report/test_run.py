"""run_report at library level: atomic publishing on failure, history untouched on failure, secret
scrubbing of kept chain snapshots, and the report content itself on the two-protocol cliff case."""
from __future__ import annotations

import dataclasses

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from defirisk.report import ReportSettings, RunOptions, SourceInfo, parse_rules, run_report
from defirisk.report import run as run_mod
from defirisk.report.history import list_runs
from defirisk.snapshot import load_snapshot

SETTINGS = ReportSettings(curve_points=40)  # solver's general path is ~50 ms/point here


def _opts(out, **kw):
    return RunOptions(out=out, settings=SETTINGS, **kw)


def test_failure_keeps_previous_report_and_history(weth_case, tmp_path, monkeypatch):
    snap = load_snapshot(weth_case)
    src = SourceInfo("snapshot", str(weth_case))
    out, db = tmp_path / "latest", tmp_path / "h.sqlite"
    first = run_report(snap, src, _opts(out, history=db))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first.run_id == 1 and Path(out / "report.md") in first.files

    # Fault injection: the HTML renderer dies after report.md and the plots are already on disk.
    def boom(*a, **k):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(run_mod, "render_html", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_report(snap, src, _opts(out, history=db))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before                                 # old report intact, byte for byte
    assert not list(tmp_path.glob(".latest.*"))            # staging removed
    assert [r["id"] for r in list_runs(db)] == [1]         # history untouched

    # First-ever run failing leaves nothing that looks like a report.
    with pytest.raises(RuntimeError):
        run_report(snap, src, _opts(tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()


def test_replace_is_complete(weth_case, tmp_path):
    snap = load_snapshot(weth_case)
    out = tmp_path / "latest"
    run_report(snap, SourceInfo("snapshot", "a"), _opts(out, formats=("md", "json")))
    assert (out / "plots").is_dir() and not (out / "report.html").exists()
    run_report(snap, SourceInfo("snapshot", "a"), _opts(out, formats=("html",)))
    # The new report replaces the old one wholesale: no stale files from the previous run.
    assert sorted(p.name for p in out.iterdir()) == [".defirisk-report", "report.html"]


def test_kept_chain_snapshot_is_scrubbed(weth_case, tmp_path):
    secret_url = "https://eth-mainnet.g.alchemy.com/v2/AbC123dEf456GhI789jkL"
    manifest = json.loads((weth_case / "manifest.json").read_text())
    manifest["source"] = f"rpc {secret_url}"
    (weth_case / "manifest.json").write_text(json.dumps(manifest))
    snap = load_snapshot(weth_case)
    out = tmp_path / "latest"
    run_report(snap, SourceInfo("rpc", "https://eth-mainnet.g.alchemy.com/v2/***"),
               _opts(out, include_snapshot=weth_case, secrets=(secret_url,)))
    for p in out.rglob("*"):
        if p.is_file():
            assert b"AbC123dEf456GhI789jkL" not in p.read_bytes(), p
    assert "v2/***" in (out / "snapshot" / "manifest.json").read_text()


def test_report_content_two_protocol_cliff(case_dir, tmp_path):
    snap = load_snapshot(case_dir)
    rules = parse_rules(["bad_debt_at[0.25]>0", "cliff_within@WETH=0.05"])
    # every liquidatable position liquidated: the case's Morpho call does not pay a liquidator in its
    # thin pool, so under the default economics the chain stops at Aave (tests/solver/test_economics.py)
    settings = dataclasses.replace(SETTINGS, liquidators="all")
    res = run_report(snap, SourceInfo("snapshot", str(case_dir)), RunOptions(out=tmp_path / "r", settings=settings, rules=rules))
    rep = res.report
    assert rep["settings"]["curve_mode"] == "sequential"
    assert rep["summary"]["volatile_assets"] == ["WBTC", "WETH", "wstETH"]
    assert rep["settings"]["shocks"] == [0.1, 0.2, 0.25, 0.3, 0.5]     # 0.25 added for the rule
    weth = rep["assets"]["WETH"]
    assert weth["price_usd"] == 3000.0
    # The case is built so that Aave's liquidation of alice pushes bob's Morpho position over.
    nc = weth["nearest_cliff"]
    assert nc is not None and 0.0 < nc["trigger_shock"] < 0.1
    assert nc["trigger_price"] == pytest.approx(3000.0 * (1 - nc["trigger_shock"]), rel=1e-6)
    assert nc["protocols"][0] == "aave-v3" and "morpho-blue" in nc["protocols"]
    # what jumped (issue 10): every quantity with a jump, at least one above its threshold
    assert nc["end_shock"] >= nc["trigger_shock"] and nc["steps"][0] == nc["trigger_shock"]
    assert any(q["jump"] > q["threshold"] for q in nc["jumps"])
    assert {a["asset"] for a in nc["assets_moved"]} == {q["asset"] for q in nc["jumps"] if q["quantity"] == "end_price"}
    # Summary names the nearest cliff over all assets (the case also has one on wstETH, Morpho first).
    best = min(((a, c["trigger_shock"]) for a, sec in rep["assets"].items() for c in sec["cliffs"]), key=lambda t: t[1])
    assert (rep["summary"]["nearest_cliff"]["asset"], rep["summary"]["nearest_cliff"]["trigger_shock"]) == best
    # Scenario table: every standard shock in both modes, for each asset and market-wide.
    for rows in [weth["scenarios"], rep["market_wide"]["scenarios"]]:
        assert {(r["shock"], r["mode"]) for r in rows} == {(s, m) for s in rep["settings"]["shocks"]
                                                           for m in ("sequential", "equilibrium")}
        for r in rows:
            assert r["converged"] and r["liquidated_collateral_usd"] >= 0 and r["bad_debt_usd"] >= 0
    eq = {r["shock"]: r for r in weth["scenarios"] if r["mode"] == "equilibrium"}
    # More shock never means a higher end price or less liquidated (monotone cascade).
    assert eq[0.1]["end_price"] >= eq[0.2]["end_price"] >= eq[0.3]["end_price"] >= eq[0.5]["end_price"]
    # (USD liquidated need not grow: it is valued at the lower end prices. The set liquidated does.)
    assert eq[0.1]["accounts_liquidated"] <= eq[0.2]["accounts_liquidated"] <= eq[0.5]["accounts_liquidated"]
    # Static levels: histogram mass equals the collateral of positions whose level is in range.
    lv = weth["levels"]
    total = sum(sum(v) for v in lv["collateral_usd_by_protocol"].values())
    assert total > 0 and set(lv["collateral_usd_by_protocol"]) <= {"aave-v3", "morpho-blue"}
    assert len(lv["bin_edges_usd"]) == SETTINGS.level_bins + 1
    # Per-protocol table covers both protocols; totals add up to the summary.
    protos = {p["protocol"]: p for p in rep["protocols"]}
    assert set(protos) == {"aave-v3", "morpho-blue"}
    assert sum(p["debt_usd"] for p in protos.values()) == pytest.approx(rep["summary"]["total_debt_usd"])
    # Alerts were evaluated on the extra shock.
    assert [a["rule"] for a in rep["alerts"]] == ["bad_debt_at[0.25]>0", "cliff_within@WETH=0.05"]
    assert rep["alerts"][1]["fired"] is True and res.exit_code == 1
    # JSON is strict (no NaN) and round-trips.
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data == json.loads(json.dumps(rep))
    assert all(v is None or math.isfinite(v) for v in rep["figures"].values())
    md = (tmp_path / "r" / "report.md").read_text()
    assert "what jumped" in md
    for heading in ("[NOW] Liquidatable now", "[STATIC] WETH: Liquidation levels (static)",
                    "[CASCADE] WETH: Cascade outcome (with feedback)", "![WETH cascade curve with cliffs](plots/WETH_curve.png)"):
        assert heading in md
    links = re.findall(r"!\[[^\]]*\]\((plots/[^)]+)\)", md)
    assert len(links) == 10 and all((tmp_path / "r" / link).is_file() for link in links)
    for png in ("WETH_curve.png", "WETH_levels.png", "WETH_scenarios.png", "market_wide_scenarios.png"):
        assert (tmp_path / "r" / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parallel_build_equals_serial(weth_case):
    """Forked per-asset workers must produce exactly the serial result."""
    from defirisk.report import build_report
    snap = load_snapshot(weth_case)
    src = SourceInfo("snapshot", "x")
    reports = []
    for workers in (1, 2):
        rep = build_report(snap, src, ReportSettings(curve_points=20, workers=workers), generated_at="t")
        rep.pop("timing")
        reports.append(rep)
    assert reports[0] == reports[1]
    assert reports[0]["assets"]["WETH"]["cliffs"]


@pytest.mark.parametrize("kw", [dict(shocks=()), dict(shocks=(0.2, 1.0)), dict(max_shock=1.0), dict(curve_points=5),
                                dict(workers=0), dict(cliff_shock_tol=0.5), dict(level_range=(0.5, 0.9))])
def test_settings_validation(kw):
    from defirisk.errors import InputError
    with pytest.raises(InputError, match="report settings"):
        ReportSettings(**kw)
