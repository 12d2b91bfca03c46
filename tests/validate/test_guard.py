"""The write guard: nothing state-changing may reach an endpoint that is not the anvil fork we started."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from defirisk.chain.anvil import Anvil
from defirisk.errors import ChainError
from defirisk.validate.fork import ForkChain
from defirisk.validate.guard import JsonRpc, WriteGuard, is_loopback_url, is_write_method

ACCOUNT = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
OTHER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


class _FakeGeth(BaseHTTPRequestHandler):
    """A JSON-RPC node that is not anvil: it answers like Geth and records every method it receives."""

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        items = body if isinstance(body, list) else [body]
        answers = []
        for req in items:
            self.server.methods.append(req["method"])
            result = {"web3_clientVersion": "Geth/v1.13.15-stable/linux-amd64/go1.22", "eth_chainId": "0x1",
                      "eth_sendTransaction": "0x" + "ab" * 32}.get(req["method"], "0x0")
            answers.append({"jsonrpc": "2.0", "id": req["id"], "result": result})
        data = json.dumps(answers if isinstance(body, list) else answers[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_geth():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGeth)
    server.methods = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_guard_refuses_a_non_anvil_node_and_sends_no_transaction(fake_geth):
    server, url = fake_geth
    guard = WriteGuard(url, started_url=url, chain_id=1)
    with pytest.raises(ChainError, match="Geth"):
        guard.send("eth_sendTransaction", {"from": ACCOUNT, "to": OTHER, "value": "0x1"})
    chain = ForkChain(guard)
    with pytest.raises(ChainError, match="not anvil"):
        chain.send(ACCOUNT, OTHER, "transfer(address,uint256)", OTHER, 1)
    with pytest.raises(ChainError, match="not anvil"):
        chain.set_code(OTHER, "0x00")
    with pytest.raises(ChainError, match="not anvil"):
        chain.set_storage(OTHER, 0, 1)
    # It asked who the node is, and nothing else: no transaction, no cheat code reached it.
    assert server.methods, "the guard must have asked the node"
    assert set(server.methods) <= {"web3_clientVersion", "eth_chainId"}
    assert "eth_sendTransaction" not in server.methods


def test_guard_reads_still_work_against_any_node(fake_geth):
    server, url = fake_geth
    guard = WriteGuard(url, started_url=url, chain_id=1)
    assert guard.read("eth_blockNumber") == "0x0"
    with pytest.raises(ChainError, match="is a write"):
        guard.read("eth_sendTransaction", {})
    assert "eth_sendTransaction" not in server.methods


def test_guard_refuses_non_loopback_without_contacting_it(fake_geth):
    server, _ = fake_geth
    remote = "http://203.0.113.7:8545"  # TEST-NET-3: never routed
    guard = WriteGuard(remote, started_url=remote, chain_id=1, rpc=JsonRpc(remote, timeout_s=0.5))
    with pytest.raises(ChainError, match="loopback"):
        guard.send("anvil_setBalance", ACCOUNT, "0x1")
    assert server.methods == []


def test_guard_refuses_an_anvil_that_is_not_the_started_fork(anvil):
    # A real anvil, but not the fork this run started: refused, and its state is untouched.
    nonce = anvil.rpc("eth_getTransactionCount", ACCOUNT, "latest")
    guard = WriteGuard(anvil.url, started_url="http://127.0.0.1:1", chain_id=31337)
    with pytest.raises(ChainError, match="not the fork this run started"):
        guard.send("eth_sendTransaction", {"from": ACCOUNT, "to": OTHER, "value": "0x1"})
    assert anvil.rpc("eth_getTransactionCount", ACCOUNT, "latest") == nonce


def test_guard_refuses_a_chain_id_change(anvil):
    guard = WriteGuard(anvil.url, started_url=anvil.url, chain_id=1)
    with pytest.raises(ChainError, match="chain id 31337"):
        guard.send("anvil_setBalance", OTHER, "0x1")


def test_guard_lets_writes_through_to_the_started_anvil(anvil):
    guard = WriteGuard(anvil.url, started_url=anvil.url, chain_id=31337)
    assert guard.check().startswith("anvil")
    guard.send("anvil_setBalance", OTHER, hex(12345))
    assert int(anvil.rpc("eth_getBalance", OTHER, "latest"), 16) == 12345
    assert guard.checks == 2


@pytest.mark.parametrize("method, write", [
    ("eth_sendTransaction", True), ("eth_sendRawTransaction", True), ("anvil_setCode", True),
    ("evm_mine", True), ("hardhat_setBalance", True), ("eth_call", False), ("eth_getLogs", False),
    ("web3_clientVersion", False), ("eth_getTransactionReceipt", False)])
def test_write_method_classification(method, write):
    assert is_write_method(method) is write


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:8545", True), ("http://localhost:1", True), ("http://[::1]:8545", True),
    ("http://127.9.9.9", True), ("https://eth.example.com", False), ("http://10.0.0.1:8545", False),
    ("http://127.0.0.1.evil.example:8545", False), ("http://user@127.0.0.1:8545", True)])
def test_loopback_urls(url, loopback):
    assert is_loopback_url(url) is loopback


def test_rpc_with_credentials_in_url_and_no_secret_in_errors(small_devnet):
    """user:password@ in a URL is sent as basic auth (anvil ignores it) and never shows in errors."""
    from defirisk.validate.guard import JsonRpc

    port = small_devnet.rpc_url.rsplit(":", 1)[1]
    rpc = JsonRpc(f"http://alice:s3cretpw@127.0.0.1:{port}")
    assert int(rpc.call("eth_chainId"), 16) == 31337
    dead = JsonRpc("http://alice:s3cretpw@127.0.0.1:1/v2/abcdef0123456789abcdef0123456789", timeout_s=2)
    with pytest.raises(ChainError) as err:
        dead.call("eth_chainId")
    assert "s3cretpw" not in str(err.value) and "abcdef0123456789abcdef0123456789" not in str(err.value)
