"""Fixtures for the reader tests: one bare anvil per session with our Multicall3 and a probe
contract; each test runs between evm_snapshot and evm_revert so tests do not see each other."""
from __future__ import annotations

from pathlib import Path

import pytest

from defirisk.chain.abi import Interface
from defirisk.chain.anvil import Anvil
from defirisk.chain.multicall import install_multicall
from defirisk.chain.rpc import RpcClient
from defirisk.devnet.solc import compile_files
from tests.forwarder import forwarding_to

ROOT = Path(__file__).resolve().parents[2]
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's first default account


def deploy(anvil: Anvil, bytecode: str, sender: str = DEPLOYER) -> str:
    receipt = anvil.send_transaction({"from": sender, "data": bytecode, "gas": hex(10_000_000)})
    return receipt["contractAddress"]


@pytest.fixture(scope="session")
def bare_anvil():
    with Anvil() as node:
        install_multicall(node)
        yield node


@pytest.fixture(scope="session")
def probe(bare_anvil):
    compiled = compile_files([ROOT / "fixtures/contracts/test/ReaderProbe.sol"])["ReaderProbe"]
    address = deploy(bare_anvil, compiled.bytecode)
    return address, Interface("ReaderProbe", compiled.abi)


@pytest.fixture
def anvil(bare_anvil):
    snap = bare_anvil.snapshot()
    try:
        yield bare_anvil
    finally:
        bare_anvil.revert(snap)


@pytest.fixture
def client(anvil):
    with RpcClient(anvil.url) as c:
        yield c




@pytest.fixture
def dn(small_devnet):
    """The small devnet, reverted to its built state after the test."""
    snap = small_devnet.anvil.snapshot()
    try:
        yield small_devnet
    finally:
        small_devnet.anvil.revert(snap)


@pytest.fixture
def path_proxy(small_devnet):
    """A forwarder that accepts any URL path (like a hosted node whose key sits in the path) and
    relays JSON-RPC to the devnet's anvil, which only serves '/'."""
    with forwarding_to(small_devnet.rpc_url) as url:
        yield url
