"""`defirisk report` on the embedded devnet (the `make report` path), run as a user runs it, leaves
nothing on disk but its outputs: no anvil state in ~/.foundry, no state directory, no process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_devnet_report_leaves_no_anvil_state(tmp_path):
    home, root, out = tmp_path / "home", tmp_path / "anvil-state", tmp_path / "rep"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), DEFIRISK_ANVIL_STATE_DIR=str(root))
    res = subprocess.run([sys.executable, "-m", "defirisk", "report", "--out", str(out), "--no-history",
                          "--curve-points", "10", "--quiet"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode in (0, 1), res.stderr[-2000:]
    assert (out / "report.json").is_file()
    assert [str(p) for p in (home / ".foundry").rglob("*")] == []  # (matplotlib's font cache may be there)
    assert [str(p) for p in root.rglob("*")] == []
    # No anvil of that run is left: every anvil started here has --cache-path under `root`.
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        assert str(root).encode() not in cmdline, f"anvil pid {proc.name} outlived the report"
