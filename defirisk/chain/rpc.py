"""A small JSON-RPC client for reading one chain at one pinned block.

Why not web3's provider: its middleware sends `eth_chainId` before every call and its encoding is
slow; the readers do tens of thousands of reads per snapshot. This client speaks plain JSON-RPC over
one `requests.Session`, batches when asked, retries transient faults (timeouts, connection resets,
HTTP 429 and 5xx, the JSON-RPC "limit exceeded" family) with exponential backoff, and turns
permanent faults into `ChainError` messages that name the method and the *redacted* URL.

A snapshot reads everything at one block: `pin()` fetches the block's number, hash and timestamp
once, and every later read passes that `BlockRef` explicitly (no hidden "current block").
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from urllib.parse import urlsplit

import requests

from defirisk.errors import ChainError, InputError
from defirisk.redact import redact_url, scrub

# HTTP statuses worth retrying: rate limits and server-side trouble.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


@dataclass(frozen=True)
class BlockRef:
    """The block a snapshot is pinned to. `hash` guards against reading a reorged block."""

    number: int
    hash: str
    timestamp: int  # unix seconds

    @property
    def tag(self) -> str:
        return hex(self.number)


class RpcError(ChainError):
    """A JSON-RPC error answer (e.g. a reverted eth_call). Keeps the node's code and revert data."""

    def __init__(self, message: str, *, method: str, code: int | None = None, data: Any = None):
        super().__init__(message)
        self.method = method
        self.code = code
        self.data = data


def _is_retryable_rpc_error(err: dict) -> bool:
    # -32005 ("limit exceeded") means either a rate limit (retry) or a too-large query (retrying
    # the same query is futile; the log scanner splits it), so the message decides.
    code = err.get("code")
    msg = str(err.get("message", "")).lower()
    if code == 429:
        return True
    return any(s in msg for s in ("rate limit", "too many requests", "timeout", "timed out",
                                  "temporarily unavailable", "try again", "capacity"))


def block_param(block: "BlockRef | int | str") -> str:
    """JSON-RPC block parameter for a BlockRef, a block number or a tag like 'latest'."""
    if isinstance(block, BlockRef):
        return block.tag
    if isinstance(block, bool):
        raise InputError(f"block must be a number, a tag or a BlockRef, not {block!r}")
    if isinstance(block, int):
        if block < 0:
            raise InputError(f"block number must be >= 0, got {block}")
        return hex(block)
    if isinstance(block, str) and block in ("latest", "earliest", "pending", "safe", "finalized"):
        return block
    raise InputError(f"block must be a number, a tag or a BlockRef, not {block!r}")


class RpcClient:
    """JSON-RPC over HTTP with retries. `url` is never shown unredacted (see `display_url`).

    Parameters
    ----------
    url : the node's HTTP endpoint.
    expected_chain_id : when given, `check_chain_id()` (called by `connect`) raises ChainError if the
        node reports another chain.
    timeout_s : per-request timeout in seconds.
    max_retries : retries of a transient fault before giving up; backoff doubles from `backoff_s`.
    """

    def __init__(self, url: str, *, expected_chain_id: int | None = None, timeout_s: float = 60.0,
                 max_retries: int = 5, backoff_s: float = 0.2, session: requests.Session | None = None):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InputError(f"RPC URL must start with http:// or https://, got {redact_url(str(url))!r}")
        self._url = url
        self.display_url = redact_url(url)
        self.expected_chain_id = expected_chain_id
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self._session = session or requests.Session()
        host = urlsplit(url).hostname or ""
        if session is None and host in ("127.0.0.1", "localhost", "::1"):
            # Local node: skip requests' per-request proxy lookup in the environment (~4 ms each).
            self._session.trust_env = False
        self._ids = itertools.count(1)
        self.requests_sent = 0  # HTTP requests, for benchmarks
        self._chain_id: int | None = None

    def _scrub(self, text: str) -> str:
        """A library's message with the URL, and its key-bearing path/query, redacted."""
        return scrub(text, self._url)

    # -- transport -------------------------------------------------------------------------
    def _post(self, payload: Any, what: str) -> Any:
        delay = self.backoff_s
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            try:
                self.requests_sent += 1
                resp = self._session.post(self._url, json=payload, timeout=self.timeout_s)
            except requests.Timeout:
                last_problem = f"timed out after {self.timeout_s:g} s"
                continue
            except requests.ConnectionError as exc:
                last_problem = "connection failed: " + self._scrub(str(exc))
                continue
            if resp.status_code in _RETRY_STATUS:
                last_problem = f"HTTP {resp.status_code}"
                continue
            if resp.status_code == 413:
                raise ChainError(f"{what} to {self.display_url}: request body too large (HTTP 413)")
            if resp.status_code >= 400:
                raise ChainError(f"{what} to {self.display_url}: HTTP {resp.status_code}: "
                                 f"{self._scrub(resp.text[:200])}")
            try:
                body = resp.json()
            except ValueError:
                raise ChainError(f"{what} to {self.display_url}: answer is not JSON: "
                                 f"{self._scrub(resp.text[:200])!r}") from None
            # Whole-request rate limits come back as a single error object even for batches.
            if isinstance(body, dict) and "error" in body and _is_retryable_rpc_error(body["error"]):
                last_problem = str(body["error"].get("message"))
                continue
            return body
        raise ChainError(f"{what} to {self.display_url} failed after {self.max_retries + 1} attempts: "
                         f"{last_problem}")

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; returns `result` or raises RpcError (JSON-RPC error) / ChainError."""
        body = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                           "params": list(params)}, method)
        return self._result(body, method)

    def _result(self, body: Any, method: str) -> Any:
        if not isinstance(body, dict):
            raise ChainError(f"{method} to {self.display_url}: malformed answer {str(body)[:200]!r}")
        if "error" in body and body["error"] is not None:
            err = body["error"]
            msg = self._scrub(str(err.get("message", err)))
            raise RpcError(f"{method} on {self.display_url}: {msg}", method=method,
                           code=err.get("code"), data=err.get("data"))
        if "result" not in body:
            raise ChainError(f"{method} to {self.display_url}: answer has no result")
        return body["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], *, raise_errors: bool = True) -> list[Any]:
        """Several calls in one HTTP request. Results come back in order; a failed call raises
        (or, with raise_errors=False, its RpcError is returned in its place)."""
        if not calls:
            return []
        first_id = next(self._ids)
        ids = [first_id + i for i in range(len(calls))]
        self._ids = itertools.count(ids[-1] + 1)
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
                   for i, (m, p) in zip(ids, calls)]
        what = f"batch of {len(calls)} ({calls[0][0]}...)"
        body = self._post(payload, what)
        if isinstance(body, dict):  # a node that refuses batches answers with one error object
            self._result(body, what)
            raise ChainError(f"{what} to {self.display_url}: node did not answer the batch")
        by_id = {item.get("id"): item for item in body if isinstance(item, dict)}
        out: list[Any] = []
        for i, (m, _) in zip(ids, calls):
            item = by_id.get(i)
            if item is None:
                raise ChainError(f"{m} in a batch to {self.display_url}: no answer")
            try:
                out.append(self._result(item, m))
            except RpcError as exc:
                if raise_errors:
                    raise
                out.append(exc)
        return out

    # -- chain identity and pinning --------------------------------------------------------
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.call("eth_chainId"), 16)
        return self._chain_id

    def check_chain_id(self) -> int:
        """Raise ChainError when the node is on another chain than `expected_chain_id`."""
        cid = self.chain_id()
        if self.expected_chain_id is not None and cid != self.expected_chain_id:
            raise ChainError(f"{self.display_url} is chain id {cid}, expected {self.expected_chain_id}")
        return cid

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def pin(self, block: int | str | None = None) -> BlockRef:
        """Fetch number, hash and timestamp of `block` (default: latest) to pin a snapshot to."""
        param = block_param("latest" if block is None else block)
        blk = self.call("eth_getBlockByNumber", param, False)
        if blk is None:
            raise ChainError(f"block {block} does not exist on {self.display_url} "
                             f"(head is {self.block_number()})")
        return BlockRef(number=int(blk["number"], 16), hash=blk["hash"], timestamp=int(blk["timestamp"], 16))

    def verify_pin(self, ref: BlockRef) -> None:
        """Raise ChainError if the pinned block was reorged away (its hash changed)."""
        blk = self.call("eth_getBlockByNumber", ref.tag, False)
        if blk is None or blk["hash"] != ref.hash:
            raise ChainError(f"block {ref.number} changed on {self.display_url} while reading "
                             f"(reorg?): was {ref.hash}, now {None if blk is None else blk['hash']}")

    # -- reads at a block ------------------------------------------------------------------
    def eth_call(self, to: str, data: bytes, block: "BlockRef | int | str", *, gas: int | None = None,
                 sender: str | None = None) -> bytes:
        tx: dict[str, Any] = {"to": to, "data": "0x" + bytes(data).hex()}
        if gas is not None:
            tx["gas"] = hex(gas)
        if sender is not None:
            tx["from"] = sender
        return bytes.fromhex(self.call("eth_call", tx, block_param(block))[2:])

    def get_code(self, address: str, block: "BlockRef | int | str") -> bytes:
        return bytes.fromhex(self.call("eth_getCode", address, block_param(block))[2:])

    def get_codes(self, addresses: Iterable[str], block: "BlockRef | int | str") -> list[bytes]:
        addrs = list(addresses)
        res = self.batch([("eth_getCode", (a, block_param(block))) for a in addrs])
        return [bytes.fromhex(r[2:]) for r in res]

    def get_storage_at(self, address: str, slot: int, block: "BlockRef | int | str") -> int:
        return int(self.call("eth_getStorageAt", address, hex(slot), block_param(block)), 16)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "RpcClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RpcClient({self.display_url!r})"


def connect(url: str, *, expected_chain_id: int | None = None, **kwargs: Any) -> RpcClient:
    """An RpcClient that has answered once: raises ChainError naming the (redacted) URL if the node is
    unreachable or on the wrong chain."""
    client = RpcClient(url, expected_chain_id=expected_chain_id, **kwargs)
    try:
        client.check_chain_id()
    except ChainError as exc:
        client.close()
        raise ChainError(f"cannot use RPC {client.display_url}: {exc}") from None
    return client
