"""Transactions on a devnet anvil: ABI-encode calls, deploy contracts, send bulk batches.

Two modes. `send`/`deploy` run one transaction with automine on and check its receipt (set-up of
protocol contracts, a few hundred txs). `Bulk` queues thousands of impersonated transactions, sends
them as JSON-RPC batches with automine off, mines them in large blocks and then checks every receipt,
so a failed call is reported with its account and label instead of being lost in a batch.
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


@dataclass
class Bulk:
    """Queue of impersonated transactions sent in batches and mined with automine off.

    Nonces are assigned here per sender, so dependent calls of one account (approve, supply,
    borrow) keep their order inside and across blocks.
    """

    anvil: Anvil
    block_gas: int
    queued: list[_Queued] = field(default_factory=list)
    nonces: dict[str, int] = field(default_factory=dict)
    mined_txs: int = 0
    chunk: int = 80

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

        Sent in chunks with the pool mined empty in between: anvil's cost per accepted transaction
        grows with the number already pending, so one huge batch is much slower than many small ones.
        """
        if not self.queued:
            return 0
        queued, self.queued = self.queued, []
        hashes: list[str] = []
        self.anvil.set_automine(False)
        try:
            for start in range(0, len(queued), self.chunk):
                part = queued[start:start + self.chunk]
                calls = []
                for q in part:
                    tx = {"from": q.sender, "to": q.to, "data": q.data, "gas": hex(q.gas),
                          "nonce": hex(self._nonce(q.sender))}
                    calls.append(("eth_sendTransaction", [tx]))
                sent = self.anvil.rpc_batch(calls, raise_errors=False)
                for q, h in zip(part, sent):
                    if isinstance(h, Exception):
                        raise ChainError(f"{q.label}: not accepted by the node: {h}")
                hashes.extend(sent)
                self._mine_all()
        finally:
            self.anvil.set_automine(True)
        receipts = self.anvil.rpc_batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        for q, h, r in zip(queued, hashes, receipts):
            if r is None:
                raise ChainError(f"{q.label}: transaction {h} was never mined")
            if int(r["status"], 16) != 1:
                raise ChainError(f"{q.label}: reverted (tx {h}, block {int(r['blockNumber'], 16)})")
        self.mined_txs += len(queued)
        return len(queued)

    def _mine_all(self) -> None:
        for _ in range(100_000):
            status = self.anvil.rpc("txpool_status")
            if int(status["pending"], 16) == 0 and int(status["queued"], 16) == 0:
                return
            before = int(status["pending"], 16)
            self.anvil.rpc("evm_mine")
            after = int(self.anvil.rpc("txpool_status")["pending"], 16)
            if after >= before and int(status["queued"], 16) == 0:
                raise ChainError(f"mining made no progress with {after} transactions pending")
        raise ChainError("the transaction pool did not drain")
