"""Devnet fixtures: one small devnet per test session (built or loaded from the cache), reverted
with evm_snapshot/evm_revert around every test that writes."""
from __future__ import annotations

from pathlib import Path

import pytest

from defirisk.devnet.tx import Chain

SCENARIOS = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"
SMALL = SCENARIOS / "small.yaml"


@pytest.fixture
def devnet(small_devnet):
    """The session devnet, reverted to its built state after the test."""
    snap = small_devnet.anvil.snapshot()
    yield small_devnet
    small_devnet.anvil.revert(snap)


@pytest.fixture(scope="session")
def small_plan(small_devnet):
    return small_devnet.plan()


@pytest.fixture
def chain(devnet):
    return Chain(devnet.anvil)
