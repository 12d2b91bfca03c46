"""Suite-wide fixtures. Area fixtures live in tests/<area>/conftest.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs a fixed set of generated examples so a run is reproducible; local runs keep exploring new
# ones (what they find is pinned with @example).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from defirisk.chain.anvil import Anvil

SMALL_SCENARIO = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "small.yaml"


@pytest.fixture(scope="session")
def anvil_session():
    """One bare anvil for the whole session; tests isolate with `anvil` (snapshot/revert)."""
    with Anvil() as node:
        yield node


@pytest.fixture
def anvil(anvil_session):
    """The session anvil, reverted to its state before the test when the test ends."""
    snap = anvil_session.snapshot()
    yield anvil_session
    anvil_session.revert(snap)


@pytest.fixture(scope="session")
def small_devnet():
    """The small test scenario's devnet (built once, then loaded from the state cache), shared by
    every area's tests; area fixtures wrap it in evm_snapshot/evm_revert."""
    from defirisk.devnet import running_devnet

    with running_devnet(SMALL_SCENARIO) as dn:
        yield dn
