"""Anvil process management: find, start, busy port, state dump/load, fork, no orphans."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from defirisk.chain.anvil import Anvil, find_anvil
from defirisk.errors import ChainError

ADDR = "0x1111111111111111111111111111111111111111"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_find_anvil_prefers_env_and_reports_missing(monkeypatch, tmp_path):
    real = find_anvil()
    assert real.name.startswith("anvil")
    monkeypatch.setenv("DEFIRISK_ANVIL", str(tmp_path / "nope"))
    with pytest.raises(ChainError, match="make setup"):
        find_anvil()


def test_start_answers_and_stop_kills():
    node = Anvil().start()
    try:
        assert node.rpc("eth_chainId") == hex(31337)
        pid = node.pid
    finally:
        node.stop()
    assert not _alive(pid)
    node.stop()  # idempotent


def test_busy_port_is_not_fatal():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with Anvil(port=busy) as node:
            assert node.port != busy
            assert int(node.rpc("eth_blockNumber"), 16) == 0


def test_batch_keeps_order_and_reports_errors(anvil):
    calls = [("eth_getBalance", [ADDR, "latest"]), ("no_such_method", []), ("eth_chainId", [])]
    out = anvil.rpc_batch(calls, raise_errors=False)
    assert out[0] == "0x0" and isinstance(out[1], ChainError) and out[2] == hex(31337)
    with pytest.raises(ChainError, match="call 1 failed"):
        anvil.rpc_batch(calls)


def test_snapshot_revert_isolates(anvil):
    snap = anvil.snapshot()
    anvil.set_balance(ADDR, 10**18)
    assert int(anvil.rpc("eth_getBalance", ADDR, "latest"), 16) == 10**18
    anvil.revert(snap)
    assert int(anvil.rpc("eth_getBalance", ADDR, "latest"), 16) == 0


def test_dump_and_load_state_roundtrip(tmp_path):
    with Anvil() as a:
        a.set_balance(ADDR, 12345)
        a.set_storage(ADDR, 7, 99)
        a.mine(3)
        path = a.dump_state_to(tmp_path / "state.json")
    with Anvil(load_state=path) as b:
        assert int(b.rpc("eth_getBalance", ADDR, "latest"), 16) == 12345
        assert int(b.rpc("eth_getStorageAt", ADDR, "0x7", "latest"), 16) == 99
        assert b.block_number() >= 3


def test_fork_of_a_local_anvil_at_a_block():
    with Anvil() as upstream:
        sender = upstream.rpc("eth_accounts")[0]
        send = lambda: upstream.send_transaction({"from": sender, "to": ADDR, "value": "0x1"})
        send()
        block = upstream.block_number()
        send()
        with Anvil(fork_url=upstream.url, fork_block=block) as fork:
            assert fork.block_number() == block
            assert int(fork.rpc("eth_getBalance", ADDR, "latest"), 16) == 1
            fork.set_balance(ADDR, 5)  # writes stay on the fork
        assert int(upstream.rpc("eth_getBalance", ADDR, "latest"), 16) == 2


def test_missing_state_file_is_a_clear_error(tmp_path):
    with pytest.raises(ChainError, match="does not exist"):
        Anvil(load_state=tmp_path / "missing.json").start()


def test_no_orphan_when_parent_is_killed(tmp_path, monkeypatch):
    """A parent that dies by SIGKILL (no cleanup code runs) still takes its anvil with it; the state
    directory it could not remove goes at the next start."""
    monkeypatch.setenv("DEFIRISK_ANVIL_STATE_DIR", str(tmp_path / "state"))
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import time
        from defirisk.chain.anvil import Anvil
        node = Anvil().start()
        open({str(pidfile)!r}, "w").write(str(node.pid))
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert _alive(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    left = list((tmp_path / "state").iterdir())
    assert len(left) == 1
    with Anvil() as later:
        assert list((tmp_path / "state").iterdir()) == [later.state_dir]
