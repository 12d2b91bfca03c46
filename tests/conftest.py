"""Suite-wide fixtures. Area fixtures live in tests/<area>/conftest.py."""
from __future__ import annotations

import pytest

from defirisk.chain.anvil import Anvil


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
