"""Suite-wide fixtures. Area fixtures live in tests/<area>/conftest.py."""
from __future__ import annotations

from pathlib import Path

import pytest

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
