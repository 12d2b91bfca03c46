"""Find accounts and markets from event logs: an adaptive `eth_getLogs` scanner plus a SQLite cache.

Nodes refuse large log queries in many ways ("query returned more than 10000 results", "block range
too large", response-size limits, timeouts). The scanner halves the block range on such a refusal
and grows it again after successes, down to single blocks, so it works on a strict provider and is
fast on a local anvil.

Discovery is resumable: `DiscoveryCache` (SQLite) stores the values found per chain, protocol,
contract and stream (e.g. "Borrow.onBehalfOf") with the block each was first seen in, plus the last
scanned block AND its hash. A rerun checks that hash against the chain (a different devnet that
reuses chain id 31337, or a reorg, makes the cache entry stale and it is dropped) and then scans only
the new blocks. A snapshot pinned before the cached block is answered from the cache (values first
seen at or before the pin) when the node still has the cached block with its hash.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from defirisk.chain.rpc import BlockRef, RpcClient, RpcError
from defirisk.errors import ChainError, InputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_CACHE_DIR = "DEFIRISK_CACHE_DIR"

# Messages (lower-cased substrings) with which nodes and providers refuse a too-large log query.
_RANGE_REFUSALS = (
    "more than", "too many", "range", "limit", "exceed", "too large", "response size", "timeout",
    "timed out", "query returned", "block range", "max results", "payload", "size",
)


def default_cache_path() -> Path:
    base = os.environ.get(ENV_CACHE_DIR)
    root = Path(base) if base else PROJECT_ROOT / ".cache" / "defirisk"
    return root / "discovery.sqlite"


def _refused_for_size(exc: ChainError) -> bool:
    msg = str(exc).lower()
    if isinstance(exc, RpcError) and exc.code in (-32005, -32602, -32000, -32603, -32001):
        return any(s in msg for s in _RANGE_REFUSALS)
    # Transport-level failures after retries (timeouts, 413/5xx) also mean "ask for less".
    return any(s in msg for s in ("timed out", "too large", "http 5", "413"))


@dataclass
class ScanStats:
    requests: int = 0
    refusals: int = 0
    logs: int = 0


class LogScanner:
    """Fetch logs of `address` matching `topics` over a block range, splitting refused ranges.

    initial_span / max_span: block-range sizes in blocks; min span is one block. `stats` counts
    requests, refusals and logs for tests and progress.
    """

    def __init__(self, client: RpcClient, *, initial_span: int = 100_000, max_span: int = 2_000_000):
        if initial_span < 1 or max_span < initial_span:
            raise InputError(f"bad log-scan spans: initial {initial_span}, max {max_span}")
        self.client = client
        self.span = initial_span
        self.max_span = max_span
        self.stats = ScanStats()

    def scan(self, address: str | Sequence[str], topics: Sequence, from_block: int, to_block: int,
             progress: Callable[[int, int], None] | None = None) -> Iterator[list[dict]]:
        """Yield lists of raw logs, in block order, covering [from_block, to_block] (inclusive)."""
        if from_block > to_block:
            return
        total = to_block - from_block + 1
        start = from_block
        while start <= to_block:
            stop = min(to_block, start + self.span - 1)
            flt = {"address": address, "topics": list(topics), "fromBlock": hex(start), "toBlock": hex(stop)}
            self.stats.requests += 1
            try:
                logs = self.client.call("eth_getLogs", flt)
            except ChainError as exc:
                if not _refused_for_size(exc):
                    raise
                self.stats.refusals += 1
                if stop == start:
                    raise ChainError(f"eth_getLogs refused even a single block ({start}) for {address} on "
                                     f"{self.client.display_url}: {exc}") from None
                self.span = max(1, (stop - start + 1) // 2)
                continue
            self.stats.logs += len(logs)
            yield logs
            if progress is not None:
                progress(stop - from_block + 1, total)
            start = stop + 1
            # Success: widen again, so one dense stretch does not slow the whole scan.
            self.span = min(self.max_span, self.span * 2)


class DiscoveryCache:
    """SQLite store of discovered values (accounts, market ids) and how far each stream was scanned.

    Keyed by (chain, protocol, contract, stream); `chain` is "<chain id>:<genesis hash>" so two local
    chains that share chain id 31337 never share entries.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30.0)
        with self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("""CREATE TABLE IF NOT EXISTS scans (
                chain TEXT, protocol TEXT, contract TEXT, stream TEXT,
                from_block INTEGER, to_block INTEGER, to_hash TEXT, updated_at REAL,
                PRIMARY KEY (chain, protocol, contract, stream))""")
            self._db.execute("""CREATE TABLE IF NOT EXISTS found (
                chain TEXT, protocol TEXT, contract TEXT, stream TEXT, value TEXT, first_block INTEGER,
                PRIMARY KEY (chain, protocol, contract, stream, value))""")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "DiscoveryCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scanned(self, key: tuple[str, str, str, str]) -> tuple[int, int, str] | None:
        """(from_block, to_block, to_hash) scanned so far for `key`, or None."""
        row = self._db.execute("SELECT from_block, to_block, to_hash FROM scans WHERE chain=? AND "
                               "protocol=? AND contract=? AND stream=?", key).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), str(row[2]))

    def values(self, key: tuple[str, str, str, str], up_to_block: int | None = None) -> list[str]:
        sql = "SELECT value FROM found WHERE chain=? AND protocol=? AND contract=? AND stream=?"
        args: tuple = key
        if up_to_block is not None:
            sql += " AND first_block <= ?"
            args = key + (up_to_block,)
        return [r[0] for r in self._db.execute(sql + " ORDER BY first_block, value", args)]

    def record(self, key: tuple[str, str, str, str], found: Iterable[tuple[str, int]], from_block: int,
               to_block: int, to_hash: str) -> None:
        """Add values found and move the scanned mark, in one transaction (a crash leaves either both
        or neither, so a rerun never skips blocks whose values were not saved)."""
        with self._db:
            self._db.executemany(
                "INSERT INTO found VALUES (?,?,?,?,?,?) ON CONFLICT DO UPDATE SET "
                "first_block=min(first_block, excluded.first_block)",
                [key + (v, b) for v, b in found])
            self._db.execute("INSERT OR REPLACE INTO scans VALUES (?,?,?,?,?,?,?,?)",
                             key + (from_block, to_block, to_hash, time.time()))

    def forget(self, key: tuple[str, str, str, str]) -> None:
        with self._db:
            self._db.execute("DELETE FROM scans WHERE chain=? AND protocol=? AND contract=? AND stream=?", key)
            self._db.execute("DELETE FROM found WHERE chain=? AND protocol=? AND contract=? AND stream=?", key)


def chain_key(client: RpcClient) -> str:
    """'<chain id>:<genesis block hash>' — identifies a chain even when local chains share an id."""
    genesis = client.call("eth_getBlockByNumber", "0x0", False)
    return f"{client.chain_id()}:{genesis['hash'] if genesis else 'unknown'}"


@dataclass
class DiscoveryResult:
    values: list[str]
    scanned_from: int
    scanned_to: int
    new_blocks: int  # blocks actually scanned in this run (0 when fully cached)
    from_cache: int  # values that came from the cache


def discover(client: RpcClient, *, protocol: str, contract: str, stream: str, topics: Sequence,
             extract: Callable[[dict], Iterable[str]], start_block: int, block: BlockRef,
             cache: DiscoveryCache | None = None, scanner: LogScanner | None = None,
             progress: Callable[[int, int], None] | None = None) -> DiscoveryResult:
    """Values produced by `extract(log)` for all logs of `contract` matching `topics` in
    [start_block, block.number], resuming from `cache` when it holds a valid earlier scan.

    The pinned block's hash is stored as the resume point; values found after an older pinned
    block are never returned for it (first_block filter), so snapshots stay consistent. An older pin
    never moves the resume point back.
    """
    scanner = scanner or LogScanner(client)
    key = None
    scan_from = start_block
    cached_values: list[str] = []
    record_from = start_block
    if cache is not None:
        key = (chain_key(client), protocol, contract.lower(), stream)
        prev = cache.scanned(key)
        if prev is not None:
            p_from, p_to, p_hash = prev
            if p_to == block.number and p_hash == block.hash and p_from <= start_block:
                vals = cache.values(key)
                return DiscoveryResult(vals, p_from, block.number, 0, len(vals))
            if p_to > block.number:
                # An older pin than the cache. Block hashes chain, so if this node's block p_to still
                # has the stored hash, the pinned block is in the cached history and the values a scan
                # up to it would find are exactly those first seen at or before it. Otherwise (a fork
                # that diverged or ends before p_to) scan afresh and leave the cache be.
                blk = client.call("eth_getBlockByNumber", hex(p_to), False)
                if p_from <= start_block and blk is not None and blk["hash"] == p_hash:
                    vals = cache.values(key, up_to_block=block.number)
                    return DiscoveryResult(vals, p_from, block.number, 0, len(vals))
                key = None
            else:
                blk = client.call("eth_getBlockByNumber", hex(p_to), False)
                if p_from > start_block or blk is None or blk["hash"] != p_hash:
                    cache.forget(key)  # stale: another chain with this id, a reorg, or a wider request
                else:
                    cached_values = cache.values(key)
                    scan_from, record_from = p_to + 1, p_from
    found: dict[str, int] = {}
    for logs in scanner.scan(contract, topics, scan_from, block.number, progress):
        for log in logs:
            bn = int(log["blockNumber"], 16)
            for v in extract(log):
                found.setdefault(v, bn)
    if cache is not None and key is not None:
        cache.record(key, found.items(), record_from, block.number, block.hash)
    seen = set(cached_values)
    values = cached_values + [v for v in found if v not in seen]
    return DiscoveryResult(values, start_block, block.number, block.number - scan_from + 1,
                           len(cached_values))


def topic_address(topic: str) -> str:
    """The address in an indexed-address topic (last 20 of 32 bytes), lower-case 0x hex."""
    return "0x" + topic[-40:].lower()
