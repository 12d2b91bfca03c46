"""The write guard: the validator sends state-changing requests only to the local anvil fork it started.

A transaction or cheat code sent to a user's real node could spend real money or corrupt a shared
dev node, so every write goes through `WriteGuard.send`, which first checks, in this order:
1. the URL is the exact fork URL the validator started (not merely "some anvil");
2. the host is loopback (127.0.0.0/8, localhost, ::1) — checked without any request;
3. the node answers `web3_clientVersion` with a string starting "anvil" and `eth_chainId` with the
   chain id recorded when the fork was started (one batched request).
Only then is the write itself sent. Reads (`eth_call`, `eth_getBalance`, ...) do not need the guard.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
from typing import Any, Sequence
from urllib.parse import urlsplit

import requests

from defirisk.errors import ChainError
from defirisk.redact import redact_url, scrub

# Methods that change state on a node; everything else the validator sends is a read.
WRITE_PREFIXES = ("eth_send", "anvil_", "evm_", "hardhat_", "debug_setHead", "personal_", "eth_sign")
TIMEOUT_S = 120.0


def is_write_method(method: str) -> bool:
    return method.startswith(WRITE_PREFIXES)


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs whose host is a loopback address (no DNS lookup is made)."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # "127.0.0.1.evil.example" is not an IP
    except ValueError:
        return False


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


class JsonRpc:
    """Plain JSON-RPC over HTTP (urllib; no retries: the peer is a local process we started)."""

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S):
        self.url = url
        self.display_url = redact_url(url)  # the only form of the URL that may appear in messages
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._session = requests.Session()  # handles user:password@ in the URL as basic auth

    def _post(self, payload: Any) -> Any:
        try:
            resp = self._session.post(self.url, data=json.dumps(payload), timeout=self.timeout_s,
                                      headers={"Content-Type": "application/json"})
            resp.raise_for_status()
            return resp.json()
        except (requests.RequestException, OSError, ValueError) as exc:
            raise ChainError(f"JSON-RPC to {self.display_url} failed: {scrub(str(exc), self.url)}") from None

    def call(self, method: str, *params: Any) -> Any:
        reply = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)})
        if not isinstance(reply, dict):
            raise ChainError(f"{method} at {self.display_url}: malformed answer {str(reply)[:200]}")
        if "error" in reply:
            err = reply["error"]
            raise ChainError(f"{method} failed: {err.get('message', err) if isinstance(err, dict) else err}")
        return reply.get("result")

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Results in call order; any error raises ChainError naming the method."""
        if not calls:
            return []
        base = next(self._ids)
        payload = [{"jsonrpc": "2.0", "id": base + i, "method": m, "params": list(p)} for i, (m, p) in enumerate(calls)]
        for _ in range(len(calls)):
            next(self._ids)
        replies = self._post(payload)
        if not isinstance(replies, list):
            raise ChainError(f"batch at {self.display_url}: malformed answer {str(replies)[:200]}")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out = []
        for i, (m, _p) in enumerate(calls):
            r = by_id.get(base + i)
            if r is None:
                raise ChainError(f"batch at {self.display_url}: no answer for {m}")
            if "error" in r:
                raise ChainError(f"{m} failed: {r['error'].get('message', r['error'])}")
            out.append(r.get("result"))
        return out


class WriteGuard:
    """Checks that `url` is the local anvil fork we started before letting a write through.

    started_url: the URL of the anvil this process started; chain_id: the chain id it reported at
    start (a fork keeps its upstream's chain id).
    """

    def __init__(self, url: str, *, started_url: str, chain_id: int, rpc: JsonRpc | None = None):
        self.url = url
        self.started_url = started_url
        self.chain_id = int(chain_id)
        self.rpc = rpc or JsonRpc(url)
        self.checks = 0

    def check(self) -> str:
        """Raise ChainError unless the endpoint is our anvil fork; return its client version."""
        if not _same_url(self.url, self.started_url):
            raise ChainError(f"refusing to write to {redact_url(self.url)}: it is not the fork this run started "
                             f"({self.started_url})")
        if not is_loopback_url(self.url):
            raise ChainError(f"refusing to write to {redact_url(self.url)}: not a loopback address; the validator only "
                             "writes to the local anvil fork it starts")
        version, chain_hex = self.rpc.batch([("web3_clientVersion", []), ("eth_chainId", [])])
        if not isinstance(version, str) or not version.lower().startswith("anvil"):
            raise ChainError(f"refusing to write to {redact_url(self.url)}: web3_clientVersion is {version!r}, not anvil")
        try:
            chain_id = int(chain_hex, 16)
        except (TypeError, ValueError):
            raise ChainError(f"refusing to write to {redact_url(self.url)}: eth_chainId answered {chain_hex!r}") from None
        if chain_id != self.chain_id:
            raise ChainError(f"refusing to write to {redact_url(self.url)}: chain id {chain_id}, the fork started with "
                             f"{self.chain_id}")
        self.checks += 1
        return version

    def send(self, method: str, *params: Any) -> Any:
        """Send one request; writes are checked first (every time: the check is one local round trip)."""
        if is_write_method(method):
            self.check()
        return self.rpc.call(method, *params)

    def read(self, method: str, *params: Any) -> Any:
        if is_write_method(method):
            raise ChainError(f"{method} is a write; use send()")
        return self.rpc.call(method, *params)

    def read_batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        for m, _ in calls:
            if is_write_method(m):
                raise ChainError(f"{m} is a write; use send()")
        return self.rpc.batch(calls)

    def send_batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several writes after one check (cheat-code set-up such as balances for many accounts)."""
        self.check()
        return self.rpc.batch(calls)
