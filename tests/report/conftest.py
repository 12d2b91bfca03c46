"""Fixtures for the report tests: a copy of a hand-written snapshot case, and headless Chromium
(installed from Debian with apt-get on first use, so `make test` asks nothing of the user)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CASES = REPO / "fixtures" / "cases"


def _solver_available() -> bool:
    try:
        from defirisk.solver import cascade_curve, health_factors, liquidatable_now, liquidation_levels, solve  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def solver_ready():
    if not _solver_available():
        pytest.fail("defirisk.solver is not importable: the report cannot be built")


@pytest.fixture
def case_dir(tmp_path, solver_ready) -> Path:
    """A private copy of fixtures/cases/two_protocol_cliff (tests may edit it)."""
    src = CASES / "two_protocol_cliff"
    dst = tmp_path / "case"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def weth_case(case_dir) -> Path:
    """The same case with venues only for WETH: one volatile asset, so a CLI run takes seconds.
    WBTC and wstETH keep their prices (design: assets without a venue do not move)."""
    venues = json.loads((case_dir / "venues.json").read_text())
    (case_dir / "venues.json").write_text(json.dumps({"WETH": venues["WETH"]}))
    return case_dir


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path to a Chromium binary; installs Debian's `chromium` with apt-get when missing."""
    path = find_chromium()
    if path is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        for cmd in (sudo + ["apt-get", "update", "-qq"], sudo + ["apt-get", "install", "-y", "-qq", "chromium"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                pytest.fail(f"could not install chromium ({' '.join(cmd)}): {proc.stderr[-2000:]}")
        path = find_chromium()
    if path is None:
        pytest.fail("chromium is not on PATH after apt-get install chromium")
    return path
