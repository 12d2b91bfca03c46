"""Chain layer against a real anvil: pinned reads, multicall batching and chunking, log scanning."""
from __future__ import annotations

import http.server
import json
import threading

import eth_abi
import pytest

from defirisk.chain.abi import AbiDecodeError, interface
from defirisk.chain.multicall import (MULTICALL3_ADDRESS, Call, Multicaller, RawCall, chunk_calls,
                                      decode_aggregate3, encode_aggregate3)
from defirisk.chain.rpc import RpcClient, RpcError, connect
from defirisk.errors import ChainError, InputError

pytestmark = pytest.mark.chain


# -- pure encoding -------------------------------------------------------------------------------

def test_aggregate3_encoding_matches_eth_abi_and_roundtrips():
    calls = [RawCall("0x" + "11" * 20, b"\x01\x02\x03", True), RawCall("0x" + "22" * 20, b"", False)]
    data = encode_aggregate3(calls)
    assert data[:4].hex() == "82ad56cb"
    assert data[4:] == eth_abi.encode(["(address,bool,bytes)[]"], [[(c.target, c.allow_failure, c.data) for c in calls]])
    assert encode_aggregate3([]) == data[:4] + eth_abi.encode(["(address,bool,bytes)[]"], [[]])
    fn = interface("MorphoBlue").fn("position")
    args = (b"\x07" * 32, "0x" + "ab" * 20)
    assert fn.encode(*args) == fn.selector + eth_abi.encode(["bytes32", "address"], list(args))
    with pytest.raises(Exception):
        fn.encode(b"\x01" * 33, "0x" + "ab" * 20)  # falls back to eth_abi, which rejects it
    assert interface("Multicall3").fn("aggregate3").selector.hex() == "82ad56cb"
    results = [(True, b"\xaa" * 33), (False, b""), (True, (7).to_bytes(32, "big"))]
    encoded = eth_abi.encode(["(bool,bytes)[]"], [results])
    assert decode_aggregate3(encoded) == results
    with pytest.raises(AbiDecodeError):
        decode_aggregate3(encoded[:-40])
    with pytest.raises(AbiDecodeError):
        decode_aggregate3(encoded, n_expected=2)


def test_chunking_respects_bytes_and_gas():
    calls = [RawCall("0x" + "11" * 20, b"\x00" * 36, True, gas=1_000_000) for _ in range(100)]
    by_gas = chunk_calls(calls, max_gas=10_000_000, max_calldata_bytes=10**9)
    assert all(b - a <= 9 for a, b in by_gas) and by_gas[-1][1] == 100 and by_gas[0][0] == 0
    by_bytes = chunk_calls(calls, max_gas=10**12, max_calldata_bytes=2_400)
    assert all(b - a == 10 for a, b in by_bytes)  # 36-byte call -> 160 + 64 = 224 bytes each


def test_static_fast_decode_agrees_with_eth_abi():
    fn = interface("AaveV3Pool").fn("getUserAccountData")
    vals = (1, 2, 3, 8250, 8000, 10**18 + 5)
    assert fn.decode(eth_abi.encode(["uint256"] * 6, vals)) == vals
    slot0 = interface("UniswapV3Pool").fn("slot0")
    raw = eth_abi.encode(["uint160", "int24", "uint16", "uint16", "uint16", "uint8", "bool"],
                         [2**96, -887, 1, 2, 3, 0, True])
    assert slot0.decode(raw) == (2**96, -887, 1, 2, 3, 0, True)
    with pytest.raises(AbiDecodeError):
        fn.decode(b"")


# -- pinned client ---------------------------------------------------------------------------------

def test_pin_records_number_hash_and_reads_at_that_block(anvil, client, probe):
    addr, iface = probe
    ref = client.pin()
    anvil.send_transaction({"from": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "to": addr,
                            "data": "0x" + iface.fn("touch").encode(5, 1).hex()})
    later = client.pin()
    assert later.number == ref.number + 1 and later.hash != ref.hash and len(ref.hash) == 66
    who = "0x" + (5).to_bytes(20, "big").hex()
    before = iface.fn("valueOf").decode(client.eth_call(addr, iface.fn("valueOf").encode(who), ref))
    after = iface.fn("valueOf").decode(client.eth_call(addr, iface.fn("valueOf").encode(who), later))
    assert (before, after) == (0, 5)
    client.verify_pin(ref)
    with pytest.raises(ChainError, match="does not exist"):
        client.pin(later.number + 100)


def test_wrong_chain_id_and_unreachable_are_clear(anvil):
    with pytest.raises(ChainError, match="chain id 31337, expected 1"):
        connect(anvil.url, expected_chain_id=1)
    with pytest.raises(ChainError, match=r"cannot use RPC http://127\.0\.0\.1:9/\*\*\*.*failed after"):
        connect("http://127.0.0.1:9/AbCdEf0123456789xyzw", max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(InputError):
        RpcClient("ws://127.0.0.1:8545")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 429 twice, then 503 once, then forwards to the real anvil."""
    upstream = ""
    failures = [429, 429, 503]

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.failures:
            code = self.failures.pop(0)
            self.send_response(code)
            self.end_headers()
            return
        import requests
        resp = requests.post(self.upstream, data=body, headers={"Content-Type": "application/json"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(resp.content)))
        self.end_headers()
        self.wfile.write(resp.content)

    def log_message(self, *args):
        pass


def test_retries_on_429_and_5xx_then_succeeds(anvil):
    _Flaky.upstream = anvil.url
    _Flaky.failures = [429, 429, 503]
    server = http.server.HTTPServer(("127.0.0.1", 0), _Flaky)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        c = RpcClient(f"http://127.0.0.1:{server.server_port}", backoff_s=0.01)
        assert c.chain_id() == 31337
        assert c.requests_sent == 4
        _Flaky.failures = [500] * 10
        c2 = RpcClient(f"http://127.0.0.1:{server.server_port}", backoff_s=0.01, max_retries=2)
        with pytest.raises(ChainError, match="failed after 3 attempts: HTTP 500"):
            c2.block_number()
    finally:
        server.shutdown()


def test_rpc_error_names_method(client):
    with pytest.raises(RpcError, match="eth_fooBar"):
        client.call("eth_fooBar")


# -- multicall ------------------------------------------------------------------------------------

def test_multicall_many_calls_decoded_and_failures_per_call(anvil, client, probe):
    addr, iface = probe
    ref = client.pin()
    calls = [Call(addr, iface.fn("double"), (i,), required=False) for i in range(995, 1005)]
    mc = Multicaller(client, ref)
    out = mc.run(calls)
    assert out == [2 * i if i < 1000 else None for i in range(995, 1005)]
    with pytest.raises(ChainError, match=r"probe: double\(1001\).*too big"):
        mc.run([Call(addr, iface.fn("double"), (1001,), label="probe")])
    # Thousands of calls: chunked by bytes and gas, each chunk an eth_call with explicit gas.
    n = 6000
    mc2 = Multicaller(client, ref, max_calldata_bytes=200_000)
    big = mc2.run([Call(addr, iface.fn("double"), (i % 1000,)) for i in range(n)])
    assert big == [2 * (i % 1000) for i in range(n)]
    assert mc2.batches_sent >= 6 and mc2.calls_sent == n


def test_multicall_splits_a_chunk_that_runs_out_of_gas(client, probe):
    addr, iface = probe
    ref = client.pin()
    # Each call burns ~1M gas but claims 40k: the first attempt runs out of gas and is halved.
    calls = [Call(addr, iface.fn("burn"), (2000,)) for _ in range(60)]
    mc = Multicaller(client, ref, max_gas=25_000_000)
    out = mc.run(calls)
    assert len(out) == 60 and len(set(out)) == 1 and isinstance(out[0], bytes)
    assert mc.batches_sent > 1


def test_wrong_interface_and_missing_code_are_named(client, probe):
    addr, _ = probe
    ref = client.pin()
    eoa = "0x000000000000000000000000000000000000dEaD"
    with pytest.raises(ChainError, match=r"wrong interface.*decimals\(\) on 0x000000000000000000000000000000000000dEaD"):
        Multicaller(client, ref).run([Call(eoa, interface("ERC20").fn("decimals"), ())])
    with pytest.raises(ChainError, match="reverted.*symbol"):
        Multicaller(client, ref).run([Call(addr, interface("ERC20").fn("symbol"), ())])
    with pytest.raises(ChainError, match="no Multicall3 aggregator at 0x00000000000000000000000000000000000000AA"):
        Multicaller(client, ref, address="0x00000000000000000000000000000000000000AA").run(
            [Call(addr, interface("ERC20").fn("symbol"), ())])


def test_install_multicall_is_idempotent_and_exposes_helpers(anvil, client):
    from defirisk.chain.multicall import install_multicall
    code = client.get_code(MULTICALL3_ADDRESS, "latest")
    install_multicall(anvil)
    assert client.get_code(MULTICALL3_ADDRESS, "latest") == code and len(code) > 100
    mc = interface("Multicall3")
    ref = client.pin()
    got = Multicaller(client, ref).run([Call(MULTICALL3_ADDRESS, mc.fn("getBlockNumber")),
                                        Call(MULTICALL3_ADDRESS, mc.fn("getChainId"))])
    assert got == [ref.number, 31337]
