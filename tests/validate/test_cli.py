"""`defirisk validate`: exit 0 when the fork agrees with the prediction, 1 when not, 2 on bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "fixtures" / "scenarios" / "small.yaml"


@pytest.fixture(scope="module")
def runner():
    _load_commands()
    return CliRunner()


def test_validate_table_and_exit_0(runner, devnet_a):
    res = runner.invoke(app, ["validate", "--scenario", str(SMALL), "--shock", "WETH=0.25"])
    assert res.exit_code == 0, res.output
    assert "AGREE: the fork executed what the model predicted" in res.output
    assert "WETH" in res.output and "morpho-blue" in res.output and "aave-v3" in res.output
    assert "same accounts in the same rounds: yes" in res.output


def test_validate_json_against_a_user_rpc(runner, devnet_a, tmp_path):
    book = tmp_path / "book.json"
    book.write_text(json.dumps(devnet_a.book))
    res = runner.invoke(app, ["validate", "--rpc-url", devnet_a.rpc_url, "--book", str(book),
                              "--block", str(devnet_a.anvil.block_number()), "--shock", "WETH=0.18", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["agree"] is True and out["comparison"]["accounts_agree"] is True
    assert out["block"] == devnet_a.anvil.block_number()
    assert out["executed"]["totals"]["accounts_liquidated"] == out["predicted"]["totals"]["accounts_liquidated"] > 0
    assert all(r["ok"] for r in out["comparison"]["prices"])


@pytest.mark.parametrize("args, message", [
    (["--scenario", str(SMALL)], "at least one --shock"),
    (["--scenario", str(SMALL), "--shock", "WETH"], "expected ASSET=FRACTION"),
    (["--scenario", str(SMALL), "--shock", "WETH=abc"], "is not a number"),
    (["--scenario", str(SMALL), "--shock", "WETH=1.5"], "fraction"),
    (["--scenario", str(SMALL), "--shock", "DOGE=0.1"], "unknown asset"),
    (["--scenario", str(SMALL), "--shock", "WETH=0.1", "--mode", "wild"], "mode must be one of"),
    (["--scenario", "/nonexistent.yaml", "--shock", "WETH=0.1"], "does not exist"),
    (["--rpc-url", "http://127.0.0.1:1", "--shock", "WETH=0.1"], "not reachable"),
])
def test_validate_bad_input_exit_2(runner, args, message):
    res = runner.invoke(app, ["validate", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_validate_subprocess_help():
    res = subprocess.run([sys.executable, "-m", "defirisk", "validate", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0
    assert "defirisk validate --scenario" in res.stdout


def test_validate_disagreement_exit_1(runner, devnet_a, monkeypatch):
    """With tolerances tighter than the chain's integer rounding (~1e-11 here), the real differences
    between model and fork become a disagreement: exit 1 and the problems listed."""
    import defirisk.validate.run as run
    from defirisk.validate.compare import Tolerances, compare

    monkeypatch.setattr(run, "compare", lambda p, e, t=None: compare(p, e, Tolerances(1e-15, 1e-15, 0.0)))
    res = runner.invoke(app, ["validate", "--scenario", str(SMALL), "--shock", "WETH=0.25"])
    assert res.exit_code == 1, res.output
    assert "DISAGREE:" in res.output
    assert "end price of WETH" in res.output
    assert "same accounts in the same rounds: yes" in res.output
