"""Anvils started by defirisk keep no state history on disk: nothing under ~/.foundry, and their own
state directory (under DEFIRISK_ANVIL_STATE_DIR) is removed when they stop or, after a crash, at the
next start. Before this, one validation run of the default devnet left 5 GB in ~/.foundry/anvil/tmp."""
from __future__ import annotations

import os
import signal
import time

import pytest

from defirisk.chain import anvil as anvil_mod
from defirisk.chain.anvil import Anvil, sweep_state_dirs

pytestmark = pytest.mark.chain

# anvil keeps about 500 block states in memory and writes older ones to disk; go past that.
BLOCKS_PAST_MEMORY_WINDOW = 700


@pytest.fixture
def private_home(tmp_path, monkeypatch):
    """A HOME and a state root of the test's own, inherited by the anvils it starts."""
    home, root = tmp_path / "home", tmp_path / "anvil-state"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DEFIRISK_ANVIL_STATE_DIR", str(root))
    return home, root


def _files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_long_chain_writes_no_state_history(private_home):
    home, root = private_home
    with Anvil() as node:
        assert node.state_dir is not None and node.state_dir.parent == root
        sender, to = node.rpc("eth_accounts")[:2]
        for _ in range(BLOCKS_PAST_MEMORY_WINDOW):
            node.rpc("eth_sendTransaction", {"from": sender, "to": to, "value": "0x1"})
        assert node.block_number() > 600
        # Recent state is still served from memory.
        assert int(node.rpc("eth_getBalance", to, hex(node.block_number() - 10)), 16) > 0
        assert _files_under(home / ".foundry") == []
        assert _files_under(node.state_dir) == ["owner"]
    assert _files_under(root) == []


def test_fork_writes_no_rpc_cache(private_home):
    home, root = private_home
    with Anvil() as upstream:
        upstream.mine(3)
        with Anvil(fork_url=upstream.url, fork_block=2) as fork:
            assert fork.rpc("eth_getBalance", "0x" + "11" * 20, "latest") == "0x0"
            assert fork.block_number() == 2
    assert _files_under(home / ".foundry") == []
    assert _files_under(root) == []


def test_state_dir_of_a_killed_anvil_is_swept_at_next_start(private_home):
    _home, root = private_home
    crashed = Anvil().start()
    dead_dir = crashed.state_dir
    os.kill(crashed.pid, signal.SIGKILL)
    crashed._proc.wait()  # reap, so the pid is really gone
    assert dead_dir.is_dir()
    # A directory whose owner record was never written and is old is swept too; a fresh one is not
    # (its anvil may be starting right now).
    (root / "run-unclaimed-old").mkdir()
    os.utime(root / "run-unclaimed-old", (time.time() - 3600,) * 2)
    (root / "run-unclaimed-new").mkdir()
    (root / "not-ours").mkdir()
    with Anvil() as live:
        assert not dead_dir.exists()
        assert not (root / "run-unclaimed-old").exists()
        assert (root / "run-unclaimed-new").is_dir() and (root / "not-ours").is_dir()
        assert sweep_state_dirs(root) == []  # the live anvil's directory stays
        assert live.state_dir.is_dir()
    crashed.stop()


def test_owner_record_detects_pid_reuse(private_home):
    _home, root = private_home
    d = root / "run-reused"
    d.mkdir(parents=True)
    # Our own pid, but a start time that is not ours: a later process took the pid.
    (d / "owner").write_text(f"{os.getpid()} 1")
    assert anvil_mod._process_start_time(os.getpid()) != "1"
    assert d in sweep_state_dirs(root)
