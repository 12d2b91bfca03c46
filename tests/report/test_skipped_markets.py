"""A snapshot whose manifest lists skipped markets says so in the summary of every format."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys


def test_skipped_markets_are_flagged(weth_case, tmp_path):
    case = tmp_path / "skipping"
    shutil.copytree(weth_case, case)
    manifest = json.loads((case / "manifest.json").read_text())
    manifest["skipped_markets"] = [{"protocol": "morpho-blue", "market": "PT/USDC-915", "id": "0xabc",
                                    "reason": "oracle price() reverted"}]
    (case / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "rep"
    res = subprocess.run([sys.executable, "-m", "defirisk", "report", "--snapshot", str(case), "--out", str(out),
                          "--curve-points", "20", "--no-history", "--quiet"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["summary"]["skipped_markets"][0]["reason"] == "oracle price() reverted"
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert "NOT COUNTED: 1 market(s)" in text and "PT/USDC-915" in text
    # Without skips, no such line.
    res = subprocess.run([sys.executable, "-m", "defirisk", "report", "--snapshot", str(weth_case), "--out",
                          str(tmp_path / "rep2"), "--curve-points", "20", "--no-history", "--quiet"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "NOT COUNTED" not in (tmp_path / "rep2" / "report.md").read_text()
