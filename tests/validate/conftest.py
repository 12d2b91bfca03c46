"""Fixtures for the forked-chain validation tests: devnet A (the small scenario) for the session."""
from __future__ import annotations

from pathlib import Path

import pytest

from defirisk.addressbook import load_book

SMALL = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "small.yaml"


@pytest.fixture(scope="session")
def devnet_a(small_devnet):
    """Upstream A: the suite's small devnet (tests/conftest.py); validation only forks it."""
    return small_devnet


@pytest.fixture(scope="session")
def book_a(devnet_a):
    return load_book(devnet_a.book)


@pytest.fixture
def fork_b(devnet_a):
    """Fork B of A at A's built block; every test gets a fresh fork (~0.2 s), stopped afterwards."""
    from defirisk.validate.fork import Fork

    with Fork(devnet_a.rpc_url, devnet_a.anvil.block_number()) as fork:
        yield fork
