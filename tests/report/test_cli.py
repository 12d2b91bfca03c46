"""`defirisk report` end to end on a hand-written snapshot: exit codes, history change, lock, atomicity,
redaction. Real solver, real files, real SQLite; no chain needed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app
from defirisk.report.history import list_runs

_load_commands()
runner = CliRunner()
FAST = ["--curve-points", "40"]   # keeps runs short; cliffs come from bisection, not the grid


def _report(case_dir: Path, out: Path, *extra: str):
    return runner.invoke(app, ["report", "--snapshot", str(case_dir), "--out", str(out), *FAST, *extra])


def test_no_alert_exit_0(weth_case, tmp_path):
    out = tmp_path / "rep"
    res = _report(weth_case, out, "--alert", "bad_debt_at[0.2]>1e15", "--alert", "cliff_within=0.001")
    assert res.exit_code == 0, res.output
    assert "none of 2 rules fired" in res.stdout
    assert f"report written to {out}" in res.stdout
    for name in ("report.md", "report.html", "report.json", ".defirisk-report"):
        assert (out / name).is_file()
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "WETH_curve.png", "WETH_levels.png", "WETH_scenarios.png", "market_wide_scenarios.png"]
    data = json.loads((out / "report.json").read_text())
    assert data["schema"] == "defirisk-report/1"
    assert [a["fired"] for a in data["alerts"]] == [False, False]
    assert (tmp_path / "history.sqlite").exists()   # default history: beside --out


def test_alert_fired_exit_1(weth_case, tmp_path):
    # The case's cross-protocol cliff on WETH sits near a 3.6% shock.
    res = _report(weth_case, tmp_path / "rep", "--alert", "cliff_within=0.15", "--alert", "liquidatable_now>1000")
    assert res.exit_code == 1, res.output
    assert "ALERT cliff_within=0.15: nearest cliff at a 3." in res.stdout
    assert "liquidatable_now>1000" not in res.stdout   # did not fire
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [a["fired"] for a in data["alerts"]] == [True, False]


def test_quiet(weth_case, tmp_path):
    res = _report(weth_case, tmp_path / "rep", "--quiet")
    assert res.exit_code == 0 and res.stdout == ""
    res = _report(weth_case, tmp_path / "rep", "--quiet", "--alert", "cliff_within=15%")
    assert res.exit_code == 1 and res.stdout.startswith("ALERT cliff_within=15%")


@pytest.mark.parametrize("args,fragment", [
    (["--alert", "bogus>1"], "alert rule 'bogus>1': unknown metric"),
    (["--alert", "bad_debt_at[0.2,fast]>1"], "alert rule 'bad_debt_at[0.2,fast]>1': mode 'fast'"),
    (["--alert", "cliff_within@DOGE=0.1"], "asset 'DOGE' is not a volatile asset"),
    (["--alert", "cliff_within@WBTC=0.1"], "asset 'WBTC' is not a volatile asset of this snapshot (volatile: WETH)"),
    (["--format", "md,pdf"], "unknown format 'pdf'"),
])
def test_bad_input_exit_2(weth_case, tmp_path, args, fragment):
    out = tmp_path / "rep"
    res = _report(weth_case, out, *args)
    assert res.exit_code == 2, res.output
    assert fragment in res.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".rep.tmp-*"))


def test_bad_snapshot_exit_2_names_file(weth_case, tmp_path):
    (weth_case / "assets.csv").write_text("symbol,address,decimals,price_usd\nWETH,0x0,18,notaprice\n")
    res = _report(weth_case, tmp_path / "rep")
    assert res.exit_code == 2
    assert "assets.csv" in res.stderr and "price_usd" in res.stderr


def test_refuses_to_replace_foreign_directory(weth_case, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    res = _report(weth_case, out)
    assert res.exit_code == 2 and "not a defirisk report directory" in res.stderr
    assert (out / "thesis.tex").read_text() == "precious"


def test_history_shows_change_between_runs(weth_case, tmp_path):
    out, db = tmp_path / "rep", tmp_path / "h.sqlite"
    res = _report(weth_case, out, "--history", str(db))
    assert res.exit_code == 0, res.output
    first = json.loads((out / "report.json").read_text())
    assert first["changes"]["previous_run"] is None
    # The market moves: WETH down 5% (a new snapshot of the same source).
    assets = (weth_case / "assets.csv").read_text().replace(",3000.0,", ",2850.0,")
    (weth_case / "assets.csv").write_text(assets)
    res = _report(weth_case, out, "--history", str(db))
    assert res.exit_code == 0, res.output
    assert "history: run #2 recorded" in res.stdout
    second = json.loads((out / "report.json").read_text())
    assert second["changes"]["previous_run"]["run_id"] == 1
    rows = {r["key"]: r for r in second["changes"]["figures"]}
    assert rows["WETH.price_usd"]["previous"] == 3000.0 and rows["WETH.price_usd"]["current"] == 2850.0
    assert rows["WETH.price_usd"]["changed"] and not rows["total_collateral_usd"]["previous"] is None
    assert rows["liquidatable_now.count"]["current"] >= rows["liquidatable_now.count"]["previous"]
    md = (out / "report.md").read_text()
    assert "Compared with run #1" in md and "| WETH.price_usd | $3,000.00 | $2,850.00 |" in md
    runs = list_runs(db)
    assert [r["id"] for r in runs] == [2, 1] and runs[0]["source_label"] == str(weth_case)


_HOLDER = textwrap.dedent("""
    import sys, time
    from defirisk.report.history import HistoryLock
    with HistoryLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_locked_history_exit_2_and_untouched(weth_case, tmp_path):
    out, db = tmp_path / "rep", tmp_path / "h.sqlite"
    assert _report(weth_case, out, "--history", str(db)).exit_code == 0
    before = (out / "report.json").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = _report(weth_case, out, "--history", str(db))
        assert res.exit_code == 2
        assert f"locked by another report run (pid {holder.pid})" in res.stderr
    finally:
        holder.kill()
        holder.wait()
    assert (out / "report.json").read_bytes() == before
    assert len(list_runs(db)) == 1


def test_overlapping_runs_serialise(weth_case, tmp_path):
    """Two real processes at once on one history with --lock-wait: both finish, history is consistent."""
    db = tmp_path / "h.sqlite"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-m", "defirisk", "report", "--snapshot", str(weth_case),
                               "--out", str(tmp_path / f"rep{i}"), "--history", str(db), "--lock-wait", "120",
                               "--format", "json", "--quiet", *FAST], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    runs = list_runs(db)
    assert sorted(r["id"] for r in runs) == [1, 2]
    prevs = sorted((json.loads((tmp_path / f"rep{i}" / "report.json").read_text())["changes"]["previous_run"] or {})
                   .get("run_id", 0) for i in range(2))
    assert prevs == [0, 1]   # exactly one run saw the other as its previous run


def test_rpc_url_secret_never_printed(tmp_path):
    secret_url = "http://alice:s3cretpw@127.0.0.1:9/v2/AbC123dEf456GhI789jkL?apikey=topsecret42"
    res = runner.invoke(app, ["report", "--rpc-url", secret_url, "--out", str(tmp_path / "rep"), "--no-history"])
    assert res.exit_code == 2
    for secret in ("s3cretpw", "AbC123dEf456GhI789jkL", "topsecret42", "alice"):
        assert secret not in res.output
    assert not (tmp_path / "rep").exists()


def test_help_has_example():
    res = runner.invoke(app, ["report", "--help"])
    assert res.exit_code == 0
    assert "Example" in res.stdout and "--alert" in res.stdout


def test_report_states_its_market_model(weth_case, tmp_path):
    """The summary says which oracles, routes and recovery the cascades ran with; --recovery reaches the
    sequential solves and curves; a bad half-life is refused before any work."""
    out = tmp_path / "rep"
    res = _report(weth_case, out, "--no-history", "--recovery", "WETH=30")
    assert res.exit_code in (0, 1), res.output
    data = json.loads((out / "report.json").read_text())
    mm = data["summary"]["market_model"]
    assert mm["recovery_halflife_s"] == {"WETH": 30.0} and mm["routes"] == []
    assert data["settings"]["recovery_halflife_s"] == {"WETH": 30.0}
    md = (out / "report.md").read_text()
    assert "Market model: every protocol prices each asset at its market price" in md
    assert "price impact recovers with half-life WETH 30 s" in md
    bad = _report(weth_case, tmp_path / "bad", "--no-history", "--recovery", "WETH=0")
    assert bad.exit_code == 2 and "recovery half-life of WETH must be a positive number" in bad.output
    assert not (tmp_path / "bad").exists()
