"""Render report.html in headless Chromium and check from the screenshot that the charts are there.

The chart colours (plots.py) are used nowhere else on the page, so counting pixels of those colours
in the screenshot proves the embedded PNGs were decoded and painted. A control page (the same HTML
with the <img> tags removed) must show none of them, so the check cannot pass vacuously."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defirisk.report import ReportSettings, RunOptions, SourceInfo, run_report
from defirisk.report.plots import CLIFF_COLOUR, CURVE_COLOUR, PROTOCOL_COLOURS
from defirisk.snapshot import load_snapshot

WIDTH, HEIGHT = 1200, 16000


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=int)


def _count(img: np.ndarray, hex_colour: str, tol: int = 12) -> int:
    return int((np.abs(img - _rgb(hex_colour)).max(axis=2) <= tol).sum())


def _screenshot(chromium: str, html: Path, png: Path, profile: Path) -> np.ndarray:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
           f"--screenshot={png}", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert png.exists(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return np.asarray(Image.open(png).convert("RGB"), dtype=int)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, chromium, solver_ready):
    tmp = tmp_path_factory.mktemp("html")
    snap = load_snapshot(Path(__file__).resolve().parents[2] / "fixtures" / "cases" / "two_protocol_cliff")
    run_report(snap, SourceInfo("snapshot", "two_protocol_cliff"),
               RunOptions(out=tmp / "rep", formats=("html",), settings=ReportSettings(curve_points=60)))
    html = tmp / "rep" / "report.html"
    shot = _screenshot(chromium, html, tmp / "page.png", tmp / "profile")
    control_html = tmp / "control.html"
    control_html.write_text(re.sub(r"<img [^>]*>", "", html.read_text()))
    control = _screenshot(chromium, control_html, tmp / "control.png", tmp / "profile2")
    return html, shot, control


def test_html_is_self_contained(rendered):
    html = rendered[0].read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count('src="data:image/png;base64,') == 10   # market-wide + 3 assets x 3 charts
    for view in ("Liquidatable now", "Liquidation levels (static)", "Cascade outcome (with feedback)"):
        assert view in html


def test_screenshot_shows_charts(rendered):
    _, shot, control = rendered
    assert shot.shape[1] == WIDTH
    painted = {
        "cascade curve": _count(shot, CURVE_COLOUR),
        "cliff markers": _count(shot, CLIFF_COLOUR),
        "aave-v3 bars": _count(shot, PROTOCOL_COLOURS["aave-v3"]),
        "morpho-blue bars": _count(shot, PROTOCOL_COLOURS["morpho-blue"]),
    }
    for what, n in painted.items():
        assert n > 300, f"{what}: only {n} pixels of its colour in the screenshot"
    for what, colour in (("curve", CURVE_COLOUR), ("cliff", CLIFF_COLOUR), ("aave", PROTOCOL_COLOURS["aave-v3"])):
        assert _count(control, colour) < 20, f"{what} colour appears without charts: test would be vacuous"
    # Chart regions: rows painted with the curve colour form several separate bands (one per curve chart).
    rows = (np.abs(shot - _rgb(CURVE_COLOUR)).max(axis=2) <= 12).sum(axis=1) > 3
    bands = int(np.count_nonzero(np.diff(rows.astype(int)) == 1))
    assert bands >= 3, f"expected at least 3 chart bands with the curve colour, found {bands}"
