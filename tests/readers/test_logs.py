"""Log scanning against a real anvil: adaptive splitting behind a provider-like proxy that refuses
wide ranges, and resumable discovery from the SQLite cache."""
from __future__ import annotations

import http.server
import json
import threading

import pytest
import requests

from defirisk.chain.anvil import Anvil
from defirisk.chain.logs import DiscoveryCache, LogScanner, chain_key, discover, topic_address
from defirisk.chain.rpc import RpcClient
from defirisk.errors import ChainError

pytestmark = pytest.mark.chain
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def _touch(anvil, probe, first, count):
    addr, iface = probe
    anvil.send_transaction({"from": SENDER, "to": addr, "gas": hex(15_000_000),
                            "data": "0x" + iface.fn("touch").encode(first, count).hex()})


class _Strict(http.server.BaseHTTPRequestHandler):
    """Forwards to anvil but refuses eth_getLogs spanning more than `max_span` blocks, the way hosted
    providers do, and counts refusals."""
    upstream = ""
    max_span = 3
    refusals = 0

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if req.get("method") == "eth_getLogs":
            f = req["params"][0]
            if int(f["toBlock"], 16) - int(f["fromBlock"], 16) + 1 > self.max_span:
                type(self).refusals += 1
                out = json.dumps({"jsonrpc": "2.0", "id": req["id"], "error": {
                    "code": -32005, "message": "query returned more than 10000 results"}}).encode()
                self._send(out)
                return
        resp = requests.post(self.upstream, data=json.dumps(req), headers={"Content-Type": "application/json"})
        self._send(resp.content)

    def _send(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def strict_url(anvil):
    _Strict.upstream = anvil.url
    _Strict.refusals = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Strict)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_scanner_splits_refused_ranges_and_misses_nothing(anvil, probe, strict_url):
    addr, iface = probe
    start = anvil.block_number() + 1
    for k in range(10):
        _touch(anvil, probe, 1000 + 10 * k, 3)
    client = RpcClient(strict_url, max_retries=0)
    ref = client.pin()
    topic = iface.event("Touched").topic0
    scanner = LogScanner(client, initial_span=1000)
    logs = [log for chunk in scanner.scan(addr, [topic], start, ref.number) for log in chunk]
    assert len(logs) == 30
    assert sorted(int(l["topics"][2], 16) for l in logs) == sorted(1000 + 10 * k + i for k in range(10) for i in range(3))
    assert _Strict.refusals >= 1 and scanner.stats.refusals == _Strict.refusals
    # A node that refuses even one block is an error naming the contract.
    _Strict.max_span = 0
    try:
        with pytest.raises(ChainError, match=f"single block.*{addr}"):
            list(LogScanner(client, initial_span=4).scan(addr, [topic], start, ref.number))
    finally:
        _Strict.max_span = 3


def test_discovery_resumes_from_cache_and_scans_only_new_blocks(anvil, probe, tmp_path):
    addr, iface = probe
    start = anvil.block_number() + 1
    _touch(anvil, probe, 500, 40)
    client = RpcClient(anvil.url)
    topic = iface.event("Touched").topic0

    def extract(log):
        return [topic_address(log["topics"][1])]

    kw = dict(protocol="probe", contract=addr, stream="Touched.account", topics=[topic],
              extract=extract, start_block=start)
    with DiscoveryCache(tmp_path / "d.sqlite") as cache:
        ref1 = client.pin()
        r1 = discover(client, block=ref1, cache=cache, **kw)
        assert len(r1.values) == 40 and r1.from_cache == 0 and r1.new_blocks == ref1.number - start + 1
        _touch(anvil, probe, 900, 5)
        anvil.mine(3)
        ref2 = client.pin()
        r2 = discover(client, block=ref2, cache=cache, **kw)
        assert len(r2.values) == 45 and r2.from_cache == 40 and r2.new_blocks == ref2.number - ref1.number
        assert r2.values[:40] == r1.values
        r3 = discover(client, block=ref2, cache=cache, **kw)
        assert r3.new_blocks == 0 and sorted(r3.values) == sorted(r2.values)
        # An older pin on the same chain is answered from the newer cache: the values first seen at
        # or before it, without a scan, and the resume point stays where it was.
        r_old = discover(client, block=ref1, cache=cache, **kw)
        assert sorted(r_old.values) == sorted(r1.values)
        assert r_old.new_blocks == 0 and r_old.from_cache == 40
        key = (chain_key(client), "probe", addr.lower(), "Touched.account")
        assert cache.scanned(key) == (start, ref2.number, ref2.hash)
    # The cache survives a reopen (a second process).
    with DiscoveryCache(tmp_path / "d.sqlite") as cache:
        r4 = discover(client, block=ref2, cache=cache, **kw)
        assert r4.new_blocks == 0 and len(r4.values) == 45


def test_discovery_cache_is_dropped_when_the_chain_differs(anvil, probe, tmp_path):
    """Same chain id and genesis, but history rewritten after the cached block (evm_revert then new
    blocks): the stored block hash no longer matches, so the cache entry is discarded."""
    addr, iface = probe
    start = anvil.block_number() + 1
    snap = anvil.snapshot()
    _touch(anvil, probe, 100, 4)
    client = RpcClient(anvil.url)
    topic = iface.event("Touched").topic0
    kw = dict(protocol="probe", contract=addr, stream="Touched.account", topics=[topic],
              extract=lambda log: [topic_address(log["topics"][1])], start_block=start)
    with DiscoveryCache(tmp_path / "d.sqlite") as cache:
        r1 = discover(client, block=client.pin(), cache=cache, **kw)
        assert len(r1.values) == 4
        anvil.revert(snap)
        anvil.mine(1)  # a different block at the same height
        _touch(anvil, probe, 200, 2)
        r2 = discover(client, block=client.pin(), cache=cache, **kw)
        assert sorted(r2.values) == ["0x" + (200 + i).to_bytes(20, "big").hex() for i in range(2)]
        assert r2.from_cache == 0


def test_older_pin_on_a_diverged_fork_scans_afresh(anvil, probe, tmp_path):
    """A fork of the chain at an older block shares genesis (so the cache key), but its blocks after
    the fork point differ: the cached values after the pin cannot be trusted there, so it scans, and
    leaves the cache's resume point alone."""
    addr, iface = probe
    start = anvil.block_number() + 1
    _touch(anvil, probe, 300, 6)
    client = RpcClient(anvil.url)
    kw = dict(protocol="probe", contract=addr, stream="Touched.account", topics=[iface.event("Touched").topic0],
              extract=lambda log: [topic_address(log["topics"][1])], start_block=start)
    ref1 = client.pin()
    _touch(anvil, probe, 400, 3)
    anvil.mine(2)
    ref2 = client.pin()
    with DiscoveryCache(tmp_path / "d.sqlite") as cache:
        assert len(discover(client, block=ref2, cache=cache, **kw).values) == 9
        with Anvil(fork_url=anvil.url, fork_block=ref1.number) as fork:
            fclient = RpcClient(fork.url)
            fork.mine(ref2.number - ref1.number + 2)  # the fork has a block ref2.number, another one
            fref = fclient.pin(ref1.number)
            assert fref.hash == ref1.hash and chain_key(fclient) == chain_key(client)
            r = discover(fclient, block=fref, cache=cache, **kw)
            assert sorted(r.values) == ["0x" + (300 + i).to_bytes(20, "big").hex() for i in range(6)]
            assert r.from_cache == 0 and r.new_blocks == ref1.number - start + 1
            # a fork that ends before the cached block: scans too
            with Anvil(fork_url=anvil.url, fork_block=ref1.number) as short:
                sclient = RpcClient(short.url)
                r = discover(sclient, block=sclient.pin(ref1.number), cache=cache, **kw)
                assert r.from_cache == 0 and len(r.values) == 6
        key = (chain_key(client), "probe", addr.lower(), "Touched.account")
        assert cache.scanned(key) == (start, ref2.number, ref2.hash)
        # and the origin chain still answers the older pin from the cache
        r = discover(client, block=ref1, cache=cache, **kw)
        assert r.new_blocks == 0 and len(r.values) == 6
