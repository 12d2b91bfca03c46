"""`defirisk devnet build|up` end to end (exit codes and output)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "fixtures" / "scenarios" / "small.yaml"

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def runner():
    _load_commands()
    return CliRunner()


def test_build_reports_cache_and_book(runner, small_devnet):  # small_devnet: the build is cached
    result = runner.invoke(app, ["devnet", "build", "--scenario", str(SMALL)])
    assert result.exit_code == 0, result.output
    assert "devnet already cached: 27 Aave + 18 Morpho positions" in result.output
    book_line = next(line for line in result.output.splitlines() if line.startswith("address book: "))
    book = json.loads(Path(book_line.split(": ", 1)[1]).read_text())
    assert book["aave_v3"]["pool"].startswith("0x") and book["chain_id"] == 31337


def test_bad_scenario_exits_2_naming_the_field(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.read_text().replace("lltv: 0.86,  supply: 3000000", "lltv: 1.3,  supply: 3000000"))
    result = runner.invoke(app, ["devnet", "build", "--scenario", str(bad)])
    assert result.exit_code == 2
    assert "morpho_blue.markets.WETH/USDC.lltv" in result.output


def test_missing_scenario_exits_2(runner, tmp_path):
    result = runner.invoke(app, ["devnet", "up", "--scenario", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_up_serves_until_interrupted(small_devnet, tmp_path):
    book_out = tmp_path / "book.json"
    proc = subprocess.Popen([sys.executable, "-m", "defirisk", "devnet", "up", "--scenario", str(SMALL),
                             "--book-out", str(book_out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        lines = []
        deadline = time.monotonic() + 60
        url = None
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("RPC URL: "):
                url = line.split(": ", 1)[1].strip()
        assert url, lines + [proc.stderr.read() if proc.poll() is not None else ""]
        assert proc.stdout.readline().strip() == f"address book: {book_out}"
        req = urllib.request.Request(url, data=b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}',
                                     headers={"Content-Type": "application/json"})
        block = int(json.loads(urllib.request.urlopen(req, timeout=10).read())["result"], 16)
        book = json.loads(book_out.read_text())
        assert block == book["built_block"]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "devnet stopped" in out
        with pytest.raises(OSError):  # the anvil behind the URL is gone
            urllib.request.urlopen(req, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
