"""`defirisk cascade`: the public CLI contract (exit codes and output)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app

CASE = str(Path(__file__).resolve().parents[2] / "fixtures" / "cases" / "two_protocol_cliff")
_load_commands()
runner = CliRunner()


def test_cascade_json_contract():
    r = runner.invoke(app, ["cascade", CASE, "--shock", "WETH=0.2", "--json", "--liquidators", "all"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    for key in ("mode", "end_prices", "shocked_prices", "rounds", "converged", "totals", "by_protocol", "liquidations"):
        assert key in out
    assert out["mode"] == "sequential" and out["converged"] is True
    assert set(out["totals"]) >= {"liquidated_collateral_usd", "debt_repaid_usd", "bad_debt_usd", "accounts_liquidated"}
    assert out["shocked_prices"]["WETH"] == pytest.approx(2400.0)
    assert out["end_prices"]["WETH"] < 2400.0
    assert {"aave-v3", "morpho-blue"} <= set(out["by_protocol"])
    assert all("account" in row and "round" in row for row in out["liquidations"])


def test_cascade_equilibrium_and_table():
    r = runner.invoke(app, ["cascade", CASE, "--shock", "WETH=0.2", "--mode", "equilibrium"])
    assert r.exit_code == 0, r.output
    assert "mode equilibrium" in r.stdout and "TOTAL" in r.stdout and "WETH" in r.stdout


def test_curve_json_contract():
    r = runner.invoke(app, ["cascade", CASE, "--curve", "--asset", "WETH", "--points", "60", "--max-shock", "0.5", "--json",
                               "--liquidators", "all"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["curve"]) == 60
    assert set(out["curve"][0]) >= {"shock", "end_price", "liquidated_collateral_usd", "bad_debt_usd"}
    assert len(out["cliffs"]) >= 1
    c = out["cliffs"][0]
    assert set(c) >= {"trigger_shock", "trigger_price", "end_price", "protocols", "liquidated_collateral_usd", "bad_debt_usd"}
    assert c["protocols"][:2] == ["aave-v3", "morpho-blue"]
    assert c["trigger_price"] == pytest.approx(240000 / (100 * 0.83), rel=1e-6)  # alice's liquidation price


@pytest.mark.parametrize("args,msg", [
    (["--shock", "DOGE=0.2"], "unknown asset"),
    (["--shock", "WETH=1.5"], "[0, 1)"),
    (["--shock", "WETH=abc"], "not a number"),
    (["--shock", "WETH=0.2", "--mode", "magic"], "mode"),
    ([], "--shock"),
    (["--curve"], "--asset"),
])
def test_bad_input_exit_2(args, msg):
    r = runner.invoke(app, ["cascade", CASE, *args])
    assert r.exit_code == 2
    assert msg in r.output


def test_missing_dir_exit_2(tmp_path):
    r = runner.invoke(app, ["cascade", str(tmp_path / "nope"), "--shock", "WETH=0.1"])
    assert r.exit_code == 2 and "not a snapshot directory" in r.output


def test_subprocess_entry_point():
    p = subprocess.run([sys.executable, "-m", "defirisk", "cascade", CASE, "--shock", "WETH=0.1", "--json", "--liquidators", "all"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["totals"]["accounts_liquidated"] >= 2


def test_cascade_recovery_option():
    plain = json.loads(runner.invoke(app, ["cascade", CASE, "--shock", "WETH=0.2", "--json", "--liquidators", "all"]).stdout)
    r = runner.invoke(app, ["cascade", CASE, "--shock", "WETH=0.2", "--json", "--recovery", "WETH=12", "--liquidators", "all"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["assumptions"]["recovery_halflife_s"] == {"WETH": 12.0}
    assert out["end_prices"]["WETH"] > plain["end_prices"]["WETH"]
    r = runner.invoke(app, ["cascade", CASE, "--shock", "WETH=0.2", "--recovery", "WETH=12"])
    assert "recovery half-life (s): {\"WETH\": 12.0}" in r.stdout


@pytest.mark.parametrize("args, words", [
    (["--recovery", "WETH=soon"], "--recovery 'WETH=soon': 'soon' is not a number"),
    (["--recovery", "BTC=60"], "recovery for unknown asset 'BTC'"),
    (["--recovery", "WETH=-5"], "positive number of seconds"),
])
def test_cascade_bad_recovery_is_named(args, words):
    r = runner.invoke(app, ["cascade", CASE, "--shock", "WETH=0.2", *args])
    assert r.exit_code == 2
    assert words in r.output and "Traceback" not in r.output
