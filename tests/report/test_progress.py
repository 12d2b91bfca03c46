"""Long work shows progress on stderr (never stdout, which scripts parse); --quiet silences it."""
from __future__ import annotations

import io
import subprocess
import sys

from defirisk.cli.progress import StageProgress


def test_pipe_mode_prints_stage_start_and_end_only():
    buf = io.StringIO()
    p = StageProgress(stream=buf)
    p("reading accounts", 0, 3)
    p("reading accounts", 1, 3)
    p("reading accounts", 2, 3)
    p("reading accounts", 3, 3)
    p.say("pinned block 7")
    p("solved WETH", 1, 2)
    p("solved WBTC", 2, 2)
    assert buf.getvalue().splitlines() == [
        "reading accounts: 0/3", "reading accounts: 3/3", "pinned block 7", "solved WETH: 1/2", "solved WBTC: 2/2"]


def test_quiet_prints_nothing():
    buf = io.StringIO()
    p = StageProgress(quiet=True, stream=buf)
    p("x", 1, 1)
    p.say("y")
    assert buf.getvalue() == ""


def _run(*args):
    return subprocess.run([sys.executable, "-m", "defirisk", "report", *args], capture_output=True, text=True)


def test_report_shows_progress_on_stderr_and_quiet_silences_it(weth_case, tmp_path):
    common = ["--snapshot", str(weth_case), "--curve-points", "30", "--no-history", "--workers", "1"]
    res = _run(*common, "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    assert "solved WETH: levels, curve, cliffs, shocks" in res.stderr
    assert "solved" not in res.stdout
    res = _run(*common, "--out", str(tmp_path / "b"), "--quiet")
    assert res.returncode == 0 and res.stdout == "" and res.stderr == ""
