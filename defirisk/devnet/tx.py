"""Transactions on a devnet anvil: ABI-encode calls, deploy contracts, send bulk batches.

Two modes. `send`/`deploy` run one transaction with automine on and check its receipt (set-up of
protocol contracts, a few hundred txs). `Bulk` queues thousands of impersonated transactions, sends
them as JSON-RPC batches with automine off, mines each batch in its own bounded block and checks its
receipts before the next batch goes out, so a failed call is reported with its account and label
instead of being lost in a batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address

from defirisk.chain.anvil import Anvil
from defirisk.errors import ChainError

# Anvil's first two default accounts (mnemonic "test test ... junk"): public, unlocked on every anvil.
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
LIQUIDATOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
# Gas for one queued call: generous because estimates against `latest` are wrong while the
# transactions it depends on are still pending.
DEFAULT_GAS = 1_500_000


def split_types(params: str) -> list[str]:
    """'address,(uint8,address)[],bytes' -> ['address', '(uint8,address)[]', 'bytes']."""
    out, depth, cur = [], 0, ""
    for ch in params:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        out.append(cur)
    return out


def signature_types(signature: str) -> list[str]:
    name, _, rest = signature.partition("(")
    if not name or not rest.endswith(")"):
        raise ValueError(f"not a function signature: {signature!r}")
    return split_types(rest[:-1])


def calldata(signature: str, *args: Any) -> str:
    """0x selector + ABI-encoded args for a signature like 'transfer(address,uint256)'."""
    types = signature_types(signature)
    if len(types) != len(args):
        raise ValueError(f"{signature} takes {len(types)} arguments, got {len(args)}")
    return "0x" + keccak(text=signature)[:4].hex() + encode(types, list(args)).hex()


def constructor_data(bytecode: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> str:
    return bytecode + (encode(list(types), list(args)).hex() if types else "")


@dataclass
class Chain:
    """Thin transaction helper bound to one anvil."""

    anvil: Anvil
    sent: int = 0

    def call(self, to: str, signature: str, args: Sequence[Any] = (), returns: Sequence[str] = (),
             block: str = "latest") -> Any:
        raw = self.anvil.rpc("eth_call", {"to": to, "data": calldata(signature, *args)}, block)
        values = decode(list(returns), bytes.fromhex(raw[2:]))
        return values[0] if len(values) == 1 else values

    def _wait_receipt(self, tx_hash: str, label: str, tx: dict | None = None) -> dict:
        receipt = self.anvil.rpc("eth_getTransactionReceipt", tx_hash)
        delay, waited = 0.001, 0.0
        while receipt is None and waited < 30:  # automine seals asynchronously right after the send
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)
            receipt = self.anvil.rpc("eth_getTransactionReceipt", tx_hash)
        if receipt is None:
            raise ChainError(f"{label}: transaction {tx_hash} was not mined (is automine off?)")
        if int(receipt["status"], 16) != 1:
            raise ChainError(f"{label}: transaction reverted ({tx_hash}){self._revert_reason(tx, receipt)}")
        return receipt

    def _revert_reason(self, tx: dict | None, receipt: dict) -> str:
        """Replay a reverted automined tx on its parent block (it was alone in its block) for the reason."""
        if tx is None:
            return ""
        parent = hex(int(receipt["blockNumber"], 16) - 1)
        try:
            self.anvil.rpc("eth_call", {k: v for k, v in tx.items() if k != "nonce"}, parent)
        except ChainError as exc:
            return f": {exc}"
        return ""

    def send(self, to: str, signature: str, *args: Any, sender: str = DEPLOYER, gas: int | None = None,
             value: int = 0, label: str | None = None) -> dict:
        tx = {"from": sender, "to": to, "data": calldata(signature, *args)}
        if gas:
            tx["gas"] = hex(gas)
        if value:
            tx["value"] = hex(value)
        label = label or f"{sender} -> {to}.{signature.split('(')[0]}"
        try:
            tx_hash = self.anvil.rpc("eth_sendTransaction", tx)
        except ChainError as exc:  # estimation reverts surface here, with the revert reason
            raise ChainError(f"{label}: {exc}") from exc
        self.sent += 1
        return self._wait_receipt(tx_hash, label, tx)

    def deploy(self, bytecode: str, types: Sequence[str] = (), args: Sequence[Any] = (), *,
               sender: str = DEPLOYER, label: str = "contract") -> str:
        tx = {"from": sender, "data": constructor_data(bytecode, types, args), "gas": hex(29_000_000)}
        try:
            tx_hash = self.anvil.rpc("eth_sendTransaction", tx)
        except ChainError as exc:
            raise ChainError(f"deploying {label}: {exc}") from exc
        self.sent += 1
        receipt = self._wait_receipt(tx_hash, f"deploying {label}")
        address = receipt.get("contractAddress")
        if not address:
            raise ChainError(f"deploying {label}: no contract address in the receipt")
        return to_checksum_address(address)


@dataclass
class _Queued:
    sender: str
    to: str
    data: str
    gas: int
    label: str


# Transactions per mined block in a bulk send. Anvil builds each receipt by walking the transactions
# of its block, so reading every receipt of an n-transaction block costs O(n^2) (anvil 1.7.1, measured:
# 500 txs 0.2 s, 2,000 txs 3.9 s, 8,000 txs 130 s, past the client's 120 s timeout), and the cost
# of accepting a transaction grows with the pending pool too. Small blocks keep both linear.
DEFAULT_BLOCK_TXS = 80
MAX_BLOCK_TXS = 250
# How long a receipt may lag behind evm_mine before a transaction counts as lost.
RECEIPT_WAIT_S = 30.0


@dataclass
class Bulk:
    """Queue of impersonated transactions sent in batches and mined with automine off.

    Nonces are assigned here per sender, so dependent calls of one account (approve, supply,
    borrow) keep their order inside and across blocks. Each batch of at most `block_txs`
    transactions is sent into an empty pool, mined, and its receipts checked before the next
    batch goes out, so no block holds more than `block_txs` transactions and a failure stops the
    send at the first bad batch.
    """

    anvil: Anvil
    block_gas: int
    queued: list[_Queued] = field(default_factory=list)
    nonces: dict[str, int] = field(default_factory=dict)
    mined_txs: int = 0
    mined_blocks: int = 0
    block_txs: int = DEFAULT_BLOCK_TXS

    def __post_init__(self) -> None:
        if not 1 <= self.block_txs <= MAX_BLOCK_TXS:
            raise ValueError(f"block_txs must be in 1..{MAX_BLOCK_TXS} (receipt cost is quadratic in "
                             f"block size), got {self.block_txs}")

    def add(self, sender: str, to: str, signature: str, *args: Any, gas: int = DEFAULT_GAS,
            label: str = "") -> None:
        self.queued.append(_Queued(sender, to, calldata(signature, *args), gas,
                                   label or f"{sender}: {signature.split('(')[0]} on {to}"))

    def _nonce(self, sender: str) -> int:
        key = sender.lower()
        if key not in self.nonces:
            self.nonces[key] = int(self.anvil.rpc("eth_getTransactionCount", sender, "pending"), 16)
        n = self.nonces[key]
        self.nonces[key] = n + 1
        return n

    def flush(self) -> int:
        """Send everything queued, mine it, verify receipts. Returns the number of transactions.

        Raises ChainError naming the first failed call's label; the transactions after its batch
        are not sent (and the nonce bookkeeping is dropped, so the next flush re-reads nonces).
        """
        if not self.queued:
            return 0
        queued, self.queued = self.queued, []
        self.anvil.set_automine(False)
        try:
            self._drain()  # a pool left non-empty by someone else would grow our first block
            for start in range(0, len(queued), self.block_txs):
                part = queued[start:start + self.block_txs]
                hashes = self._send(part)
                self._drain()
                self._check(part, hashes)
                self.mined_txs += len(part)
        except BaseException:
            self.nonces.clear()
            raise
        finally:
            self.anvil.set_automine(True)
        return len(queued)

    def _send(self, part: list[_Queued]) -> list[str]:
        calls = []
        for q in part:
            tx = {"from": q.sender, "to": q.to, "data": q.data, "gas": hex(q.gas),
                  "nonce": hex(self._nonce(q.sender))}
            calls.append(("eth_sendTransaction", [tx]))
        sent = self.anvil.rpc_batch(calls, raise_errors=False)
        for q, h in zip(part, sent):
            if isinstance(h, Exception):
                raise ChainError(f"{q.label}: not accepted by the node: {h}")
        return sent

    def _receipts(self, part: list[_Queued], hashes: list[str]) -> list[dict]:
        """Receipts for one mined batch; a missing one is polled again with backoff while the node
        still knows the transaction, and reported at once when the node dropped it."""
        receipts = self.anvil.rpc_batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        delay, deadline = 0.01, time.monotonic() + RECEIPT_WAIT_S
        while None in receipts:
            missing = [i for i, r in enumerate(receipts) if r is None]
            known = self.anvil.rpc_batch([("eth_getTransactionByHash", [hashes[i]]) for i in missing])
            for i, tx in zip(missing, known):
                if tx is None:  # e.g. gas below the intrinsic cost: accepted, then dropped by the miner
                    raise ChainError(f"{part[i].label}: transaction {hashes[i]} was dropped by the node, never mined")
            if time.monotonic() >= deadline:
                i = missing[0]
                raise ChainError(f"{part[i].label}: transaction {hashes[i]} was not mined within {RECEIPT_WAIT_S:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            again = self.anvil.rpc_batch([("eth_getTransactionReceipt", [hashes[i]]) for i in missing])
            for i, r in zip(missing, again):
                receipts[i] = r
        return receipts

    def _check(self, part: list[_Queued], hashes: list[str]) -> None:
        for q, h, r in zip(part, hashes, self._receipts(part, hashes)):
            if int(r["status"], 16) != 1:
                raise ChainError(f"{q.label}: reverted (tx {h}, block {int(r['blockNumber'], 16)})")

    def _drain(self) -> None:
        """Mine until the pool is empty (one block per evm_mine; several if gas does not fit one)."""
        for _ in range(10_000):
            status = self.anvil.rpc("txpool_status")
            pending, queued = int(status["pending"], 16), int(status["queued"], 16)
            if pending == 0 and queued == 0:
                return
            self.anvil.rpc("evm_mine")
            self.mined_blocks += 1
            after = int(self.anvil.rpc("txpool_status")["pending"], 16)
            if after >= pending and queued == 0:
                raise ChainError(f"mining made no progress with {after} transactions pending")
        raise ChainError("the transaction pool did not drain")
