"""Fork set-up: B forks A at a block, B's clock is frozen, writes go to B only, B is always stopped."""
from __future__ import annotations

import pytest

from defirisk.errors import ChainError, InputError
from defirisk.validate.fork import Fork
from defirisk.validate.funding import Funder

SENDER = "0x1111111111111111111111111111111111111111"
RECIPIENT = "0x2222222222222222222222222222222222222222"


def test_fork_writes_stay_on_the_fork(anvil):
    anvil.mine(3)
    upstream_block = anvil.block_number()
    with Fork(anvil.url, upstream_block - 1) as fork:
        assert fork.block == upstream_block - 1
        assert fork.chain.block_number() == upstream_block - 1
        ts0 = int(fork.chain.guard.read("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
        fork.chain.impersonate(SENDER)
        fork.chain.guard.send("eth_sendTransaction", {"from": SENDER, "to": RECIPIENT, "value": hex(10**18)})
        fork.chain.guard.send("evm_mine")
        latest = fork.chain.guard.read("eth_getBlockByNumber", "latest", False)
        assert int(latest["timestamp"], 16) == ts0  # frozen clock: no interest accrues while executing
        assert int(fork.chain.guard.read("eth_getBalance", RECIPIENT, "latest"), 16) == 10**18
        pid = fork.anvil.pid
    assert fork.anvil is None
    import os
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert anvil.block_number() == upstream_block
    assert int(anvil.rpc("eth_getBalance", RECIPIENT, "latest"), 16) == 0


def test_fork_rejects_bad_input(anvil):
    with pytest.raises(InputError, match="http"):
        Fork("ws://127.0.0.1:8545")
    with pytest.raises(InputError, match="block"):
        Fork(anvil.url, -1)
    with pytest.raises(InputError, match="beyond"):
        Fork(anvil.url, anvil.block_number() + 1000).start()
    with pytest.raises(ChainError, match="not reachable"):
        Fork("http://127.0.0.1:1").start()


def test_funding_by_mint_and_by_balance_slot(book_a, fork_b):
    token = book_a.tokens["WETH"].address
    for mode in ("mint", "storage"):
        funder = Funder(fork_b.chain, mode)
        before = funder.balance(token, RECIPIENT)
        funder.give(token, RECIPIENT, 123 * 10**18)
        assert funder.balance(token, RECIPIENT) == before + 123 * 10**18


def test_call_many_chunks_large_batches(book_a, fork_b):
    # 2,500 reads exceed one batch (and would exceed anvil's 2 MiB body limit in one request).
    token = book_a.tokens["USDC"].address
    calls = [(token, "balanceOf(address)", [f"0x{i:040x}"], ["uint256"]) for i in range(1, 2501)]
    out = fork_b.chain.call_many(calls)
    assert len(out) == 2500 and all(v == 0 for v in out)
