"""Batch many view calls into few `eth_call`s through a Multicall3-compatible aggregator.

Encoding and decoding of `aggregate3` use eth_abi / word slicing directly (pure functions, tested
without a chain). Batches are chunked by calldata bytes (anvil rejects HTTP bodies over 2 MiB and hex
doubles the size) and by a gas budget (an eth_call defaults to the block gas limit, 30M on anvil,
which ~4,000 calls exceed); an explicit `gas` is passed with every batch. A chunk that still fails as
a whole (out of gas, node limits) is split in half and retried, so one bad estimate never loses data.

On chain every call is sent with allowFailure=true; whether a failure is acceptable is decided here,
per call (`Call.required`), so an error can name the exact call that failed instead of "the batch
reverted".
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import eth_abi

from defirisk.chain.abi import AbiDecodeError, Function
from defirisk.chain.rpc import BlockRef, RpcClient, RpcError
from defirisk.errors import ChainError

MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"
AGGREGATE3_SELECTOR = bytes.fromhex("82ad56cb")
SOURCE_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "contracts" / "Multicall3.sol"

# Defaults sized for anvil: < 2 MiB JSON body (hex doubles calldata), < 30M block gas limit.
DEFAULT_MAX_CALLDATA_BYTES = 600_000
DEFAULT_MAX_GAS = 25_000_000
DEFAULT_CALL_GAS = 40_000  # per-call estimate for simple storage reads; raise it for heavy calls
_CALL_OVERHEAD_GAS = 4_000  # aggregator loop, memory copy of arguments and return data


@dataclass(frozen=True)
class Call:
    """One view call: `fn(*args)` on `target`. `label` names it in errors (protocol, what, whom)."""

    target: str
    fn: Function
    args: tuple = ()
    required: bool = True
    gas: int = DEFAULT_CALL_GAS
    label: str = ""

    def describe(self) -> str:
        what = f"{self.fn.name}({', '.join(map(_short, self.args))}) on {self.target}"
        return f"{self.label}: {what}" if self.label else what


def _short(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    return str(v)


@dataclass(frozen=True)
class RawCall:
    target: str
    data: bytes
    allow_failure: bool = True
    gas: int = DEFAULT_CALL_GAS


# -- pure encoding / decoding ------------------------------------------------------------------

_W32 = 32


def encode_aggregate3(calls: Sequence[RawCall]) -> bytes:
    """Calldata for aggregate3((address,bool,bytes)[]), laid out word by word.

    Byte-identical to eth_abi.encode (tested); written out because eth_abi spends ~170 us per call
    here, which alone would cap a snapshot at a few thousand reads per second.
    """
    n = len(calls)
    heads = []
    bodies = []
    offset = _W32 * n  # tuple offsets are relative to the start of the offsets block
    for c in calls:
        heads.append(offset.to_bytes(_W32, "big"))
        data = c.data
        pad = -len(data) % _W32
        body = b"".join((bytes(12), bytes.fromhex(c.target[2:]), (1 if c.allow_failure else 0).to_bytes(_W32, "big"),
                         (3 * _W32).to_bytes(_W32, "big"), len(data).to_bytes(_W32, "big"), data, bytes(pad)))
        if len(c.target) != 42:
            raise ValueError(f"bad call target {c.target!r}")
        bodies.append(body)
        offset += len(body)
    return b"".join((AGGREGATE3_SELECTOR, _W32.to_bytes(_W32, "big"), n.to_bytes(_W32, "big"), *heads, *bodies))


def decode_aggregate3(data: bytes, n_expected: int | None = None) -> list[tuple[bool, bytes]]:
    """Decode aggregate3's (bool success, bytes returnData)[] by slicing words.

    Hand-sliced rather than eth_abi.decode because this is the hot path (one result per read);
    every offset and length is bounds-checked, so malformed data raises AbiDecodeError.
    """
    mv = memoryview(data)
    size = len(mv)

    def word(pos: int) -> int:
        if pos + 32 > size:
            raise AbiDecodeError(f"aggregate3 result truncated at byte {pos} of {size}")
        return int.from_bytes(mv[pos:pos + 32], "big")

    base = word(0)
    n = word(base)
    if n_expected is not None and n != n_expected:
        raise AbiDecodeError(f"aggregate3 returned {n} results for {n_expected} calls")
    head = base + 32
    if head + 32 * n > size:
        raise AbiDecodeError("aggregate3 result shorter than its array head")
    out: list[tuple[bool, bytes]] = []
    for i in range(n):
        tup = head + word(head + 32 * i)
        success = word(tup) == 1
        boff = tup + word(tup + 32)
        blen = word(boff)
        start = boff + 32
        if start + blen > size:
            raise AbiDecodeError(f"aggregate3 result {i} overruns the data")
        out.append((success, bytes(mv[start:start + blen])))
    return out


def calldata_size(call: RawCall) -> int:
    """Bytes `call` adds to aggregate3 calldata: offset word, 3 head words, length word, padded data."""
    return 32 * 5 + -(-len(call.data) // 32) * 32


def chunk_calls(calls: Sequence[RawCall], *, max_calldata_bytes: int = DEFAULT_MAX_CALLDATA_BYTES,
                max_gas: int = DEFAULT_MAX_GAS) -> list[tuple[int, int]]:
    """Split `calls` into [start, stop) ranges whose calldata and summed gas estimates fit the limits."""
    ranges: list[tuple[int, int]] = []
    start, nbytes, gas = 0, 0, 0
    for i, c in enumerate(calls):
        cb, cg = calldata_size(c), c.gas + _CALL_OVERHEAD_GAS
        if i > start and (nbytes + cb > max_calldata_bytes or gas + cg > max_gas):
            ranges.append((start, i))
            start, nbytes, gas = i, 0, 0
        nbytes += cb
        gas += cg
    if start < len(calls):
        ranges.append((start, len(calls)))
    return ranges


# -- I/O ---------------------------------------------------------------------------------------

class Multicaller:
    """Runs batches of calls at one block through the aggregator at `address`.

    `calls_sent` and `batches_sent` count work done, for benchmarks and tests.
    """

    def __init__(self, client: RpcClient, block: BlockRef | int, *, address: str = MULTICALL3_ADDRESS,
                 max_calldata_bytes: int = DEFAULT_MAX_CALLDATA_BYTES, max_gas: int = DEFAULT_MAX_GAS,
                 progress: Callable[[int, int], None] | None = None, workers: int = 2):
        self.client = client
        self.workers = max(1, int(workers))
        self.block = block
        self.address = address
        self.max_calldata_bytes = max_calldata_bytes
        self.max_gas = max_gas
        self.progress = progress
        self.calls_sent = 0
        self.batches_sent = 0
        self._lock = threading.Lock()
        self._checked = False

    def _check_aggregator(self) -> None:
        if self._checked:
            return
        if not self.client.get_code(self.address, self.block):
            raise ChainError(f"no Multicall3 aggregator at {self.address} at block {_num(self.block)} on "
                             f"{self.client.display_url}; on a local anvil call "
                             f"defirisk.chain.multicall.install_multicall(anvil)")
        self._checked = True

    def _run_range(self, calls: Sequence[RawCall], gas: int) -> list[tuple[bool, bytes]]:
        data = encode_aggregate3(calls)
        with self._lock:
            self.batches_sent += 1
        try:
            ret = self.client.eth_call(self.address, data, self.block, gas=gas)
        except RpcError as exc:
            if len(calls) == 1:
                raise ChainError(f"aggregate3 of one call to {calls[0].target} failed: {exc}") from None
            # Out of gas or a node limit: halve and retry.
            mid = len(calls) // 2
            return self._run_range(calls[:mid], gas) + self._run_range(calls[mid:], gas)
        return decode_aggregate3(ret, len(calls))

    def run_raw(self, calls: Sequence[RawCall]) -> list[tuple[bool, bytes]]:
        """(success, returnData) per call, in order.

        With `workers` > 1 several chunks are in flight at once, so the node executes one batch while
        this process encodes or decodes another (all at the same pinned block, so order is free)."""
        if not calls:
            return []
        self._check_aggregator()
        ranges = chunk_calls(calls, max_calldata_bytes=self.max_calldata_bytes, max_gas=self.max_gas)

        def one(r: tuple[int, int]) -> list[tuple[bool, bytes]]:
            chunk = calls[r[0]:r[1]]
            gas = min(self.max_gas, sum(c.gas + _CALL_OVERHEAD_GAS for c in chunk) * 2 + 100_000)
            return self._run_range(chunk, gas)

        out: list[tuple[bool, bytes]] = []
        if self.workers > 1 and len(ranges) > 1:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                results = pool.map(one, ranges)
                for (a, b), res in zip(ranges, results):
                    out.extend(res)
                    if self.progress is not None:
                        self.progress(len(out), len(calls))
        else:
            for r in ranges:
                out.extend(one(r))
                if self.progress is not None:
                    self.progress(len(out), len(calls))
        self.calls_sent += len(calls)
        return out

    def run(self, calls: Sequence[Call]) -> list[Any]:
        """Decoded result per call, in order. A failed or undecodable call yields None when it is not
        `required`, else raises ChainError naming the call (target, function, arguments, label)."""
        raw = self.run_raw([RawCall(c.target, c.fn.encode(*c.args), True, c.gas) for c in calls])
        out: list[Any] = []
        for c, (ok, data) in zip(calls, raw):
            if not ok:
                if c.required:
                    raise ChainError(f"call reverted at block {_num(self.block)}: {c.describe()}"
                                     f"{_revert_reason(data)}")
                out.append(None)
                continue
            try:
                out.append(c.fn.decode(data))
            except AbiDecodeError as exc:
                if c.required:
                    raise ChainError(f"unexpected answer (wrong interface or no contract?) at block "
                                     f"{_num(self.block)}: {c.describe()}: {exc}") from None
                out.append(None)
        return out


def _num(block: BlockRef | int) -> int:
    return block.number if isinstance(block, BlockRef) else int(block)


def _revert_reason(data: bytes) -> str:
    if data[:4] == bytes.fromhex("08c379a0"):  # Error(string)
        try:
            return f" (reason: {eth_abi.decode(['string'], data[4:])[0]!r})"
        except Exception:
            return ""
    if not data:
        return " (no revert data: missing function or no code at the address)"
    return f" (revert data 0x{data[:68].hex()})"


def multicall(client: RpcClient, block: BlockRef | int, calls: Sequence[Call], **kwargs: Any) -> list[Any]:
    """One-shot form of `Multicaller(client, block, **kwargs).run(calls)`."""
    return Multicaller(client, block, **kwargs).run(calls)


# -- deployment on a local chain ---------------------------------------------------------------

def multicall_runtime_code() -> str:
    """Runtime bytecode (0x hex) of fixtures/contracts/Multicall3.sol, compiled with solc-js (cached)."""
    from defirisk.devnet.solc import compile_files

    return compile_files([SOURCE_PATH])["Multicall3"].deployed_bytecode


def install_multicall(anvil: Any, address: str = MULTICALL3_ADDRESS) -> str:
    """Write our aggregator's runtime code at `address` on `anvil` (an Anvil) unless code is there."""
    code = anvil.rpc("eth_getCode", address, "latest")
    if code in (None, "0x", "0x0"):
        anvil.set_code(address, multicall_runtime_code())
    return address
