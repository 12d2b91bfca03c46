"""Bulk sends at scale: blocks stay bounded (anvil's receipt cost is quadratic in block size), a
failure stops the send at its batch, and a medium population (600+ accounts) builds cold."""
from __future__ import annotations

from pathlib import Path

import pytest
from eth_abi import decode

from defirisk.devnet import build as devnet_build
from defirisk.devnet.tx import DEFAULT_BLOCK_TXS, MAX_BLOCK_TXS, Bulk, calldata
from defirisk.errors import ChainError

DEFAULT = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "default.yaml"

pytestmark = pytest.mark.chain


def _block_sizes(anvil, first: int, last: int) -> list[int]:
    blocks = anvil.rpc_batch([("eth_getBlockByNumber", [hex(b), False]) for b in range(first, last + 1)])
    return [len(b["transactions"]) for b in blocks]


def _funded(anvil, n: int) -> list[str]:
    accounts = [f"0x{0xB0_0000 + i:040x}" for i in range(n)]
    anvil.rpc_batch([("anvil_setBalance", [a, hex(10**18)]) for a in accounts])
    anvil.rpc("anvil_autoImpersonateAccount", True)
    return accounts


def test_block_size_bound_is_validated(anvil):
    with pytest.raises(ValueError, match="block_txs"):
        Bulk(anvil, 10**9, block_txs=MAX_BLOCK_TXS + 1)
    with pytest.raises(ValueError, match="block_txs"):
        Bulk(anvil, 10**9, block_txs=0)


def test_every_block_holds_at_most_block_txs(anvil):
    accounts = _funded(anvil, 45)
    # a few senders with several dependent txs each: nonces must keep order across blocks
    bulk = Bulk(anvil, 10**9, block_txs=7)
    for a in accounts:
        bulk.add(a, accounts[0], "nonexistent()", gas=50_000)
    for _ in range(3):
        bulk.add(accounts[1], accounts[2], "again()", gas=50_000)
    first = anvil.block_number() + 1
    assert bulk.flush() == 48
    sizes = _block_sizes(anvil, first, anvil.block_number())
    assert sum(sizes) == 48 and max(sizes) <= 7 and bulk.mined_blocks == len(sizes) == 7
    assert bulk.mined_txs == 48
    assert int(anvil.rpc("eth_getTransactionCount", accounts[1], "latest"), 16) == 4
    assert anvil.rpc("anvil_getAutomine") is True


REVERTER = "0x00000000000000000000000000000000000Bad00"
REVERT_CODE = "0x60006000fd"  # PUSH1 0 PUSH1 0 REVERT: every call reverts


def test_failure_stops_at_its_batch_and_names_the_call(anvil):
    accounts = _funded(anvil, 6)
    anvil.set_code(REVERTER, REVERT_CODE)
    bulk = Bulk(anvil, 10**9, block_txs=2)
    bulk.add(accounts[0], accounts[5], "ok()", gas=50_000)
    bulk.add(accounts[1], accounts[5], "ok()", gas=50_000)
    bulk.add(accounts[2], REVERTER, "boom()", gas=50_000, label="account 2: boom")
    bulk.add(accounts[3], accounts[5], "ok()", gas=50_000)
    bulk.add(accounts[4], accounts[5], "never()", gas=50_000)
    before = anvil.block_number()
    with pytest.raises(ChainError, match=r"account 2: boom: reverted"):
        bulk.flush()
    # the batch after the failing one was never sent
    assert int(anvil.rpc("eth_getTransactionCount", accounts[4], "latest"), 16) == 0
    assert int(anvil.rpc("eth_getTransactionCount", accounts[1], "latest"), 16) == 1
    assert max(_block_sizes(anvil, before + 1, anvil.block_number())) <= 2
    assert anvil.rpc("anvil_getAutomine") is True
    assert bulk.nonces == {}  # re-read from the chain on the next flush


def test_dropped_transaction_is_reported_at_once(anvil):
    """Gas above 21,000 but below the intrinsic cost with calldata (21,064 for 4 non-zero bytes): anvil
    accepts the tx, then its miner drops it; that must be reported, not waited on."""
    import time

    accounts = _funded(anvil, 2)
    bulk = Bulk(anvil, 10**9)
    bulk.add(accounts[0], accounts[1], "ok()", gas=21_010, label="account 0: starved")
    t0 = time.monotonic()
    with pytest.raises(ChainError, match=r"account 0: starved: transaction 0x[0-9a-f]+ was dropped"):
        bulk.flush()
    assert time.monotonic() - t0 < 5


def test_medium_population_builds_cold(tmp_path, monkeypatch):
    """400 Aave + 200 Morpho generated borrowers (plus the named ones) from the default scenario's
    markets, built cold into a temporary cache; every position is on chain as planned."""
    text = DEFAULT.read_text()
    assert text.count("    count: 2100\n") == 1 and text.count("    count: 330\n") == 1
    text = text.replace("    count: 2100\n", "    count: 400\n").replace("    count: 330\n", "    count: 200\n")
    scenario = tmp_path / "medium.yaml"
    scenario.write_text(text.replace("name: default", "name: medium", 1))
    monkeypatch.setattr(devnet_build, "CACHE_ROOT", tmp_path / "cache")

    dn = devnet_build.start_devnet(scenario, use_cache=False)
    try:
        assert dn.info.cold and dn.info.aave_positions + dn.info.morpho_positions >= 600
        assert (tmp_path / "cache" / dn.info.key / "state.json").is_file()
        anvil = dn.anvil
        sizes = _block_sizes(anvil, dn.book["start_block"] + 1, dn.book["built_block"])
        assert max(sizes) <= DEFAULT_BLOCK_TXS
        assert sum(sizes) == dn.info.transactions

        plan = dn.plan()
        pool = dn.book["aave_v3"]["pool"]
        raw = anvil.rpc_batch([("eth_call", [{"to": pool, "data": calldata("getUserAccountData(address)", p.account)},
                                             "latest"]) for p in plan.aave])
        for pos, r in zip(plan.aave, raw):
            hf = decode(["uint256"] * 6, bytes.fromhex(r[2:]))[5] / 1e18
            assert hf == pytest.approx(pos.health_factor, rel=1e-6), pos.label

        morpho = dn.book["morpho_blue"]["morpho"]
        ids = {m["key"]: bytes.fromhex(m["id"][2:]) for m in dn.book["morpho_blue"]["markets"]}
        raw = anvil.rpc_batch([("eth_call", [{"to": morpho, "data": calldata("position(bytes32,address)",
                                                                             ids[p.market], p.account)}, "latest"])
                               for p in plan.morpho])
        for pos, r in zip(plan.morpho, raw):
            _, borrow_shares, collateral = decode(["uint256", "uint128", "uint128"], bytes.fromhex(r[2:]))
            assert collateral == pos.collateral and borrow_shares > 0, pos.label
    finally:
        dn.anvil.stop()
    assert not dn.anvil.running
