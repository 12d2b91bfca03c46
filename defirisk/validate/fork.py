"""Fork set-up: an anvil fork B of an upstream chain A at one block, and the guarded handle to write to B.

The upstream (the devnet, or a user's RPC) is only ever read: by anvil itself while it serves the fork,
and here for `eth_chainId` / `eth_blockNumber`. Every write (transactions, cheat codes) goes to B
through `ForkChain`, whose requests pass `WriteGuard` (defirisk/validate/guard.py).

Block timestamps on B are frozen at the fork block's (`anvil_setBlockTimestampInterval 0`): the
snapshot accrues interest to that timestamp, so the executed liquidations see exactly the debts the
snapshot read instead of a few seconds more interest per transaction.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from eth_abi import decode

from defirisk.chain.anvil import Anvil
from defirisk.devnet.tx import calldata
from defirisk.errors import ChainError, InputError
from defirisk.redact import redact_url
from defirisk.validate.guard import JsonRpc, WriteGuard

RECEIPT_TIMEOUT_S = 60.0
BATCH_CALLS = 1000  # eth_calls per JSON-RPC batch (~0.3 MB), well below anvil's 2 MiB body limit
DEFAULT_GAS_MONEY_WEI = 10**21  # 1,000 ETH of gas money for impersonated accounts on the fork


class ForkChain:
    """Reads and guarded writes on the fork. Transactions come from impersonated accounts."""

    def __init__(self, guard: WriteGuard):
        self.guard = guard
        self.transactions = 0
        self._impersonated: set[str] = set()

    # -- reads ---------------------------------------------------------------------------------
    def call(self, to: str, signature: str, args: Sequence[Any] = (), returns: Sequence[str] = ()) -> Any:
        raw = self.guard.read("eth_call", {"to": to, "data": calldata(signature, *args)}, "latest")
        values = decode(list(returns), bytes.fromhex(raw[2:]))
        return values[0] if len(values) == 1 else values

    def call_many(self, calls: Sequence[tuple[str, str, Sequence[Any], Sequence[str]]]) -> list[Any]:
        """eth_calls in JSON-RPC batches: (to, signature, args, returns) each; results in order."""
        requests = [("eth_call", [{"to": to, "data": calldata(sig, *args)}, "latest"]) for to, sig, args, _ in calls]
        raws: list = []
        for i in range(0, len(requests), BATCH_CALLS):  # anvil refuses bodies over 2 MiB
            raws += self.guard.read_batch(requests[i:i + BATCH_CALLS])
        out = []
        for (_to, _sig, _args, returns), raw in zip(calls, raws):
            values = decode(list(returns), bytes.fromhex(raw[2:]))
            out.append(values[0] if len(values) == 1 else values)
        return out

    def block_number(self) -> int:
        return int(self.guard.read("eth_blockNumber"), 16)

    def storage(self, address: str, slot: int) -> int:
        return int(self.guard.read("eth_getStorageAt", address, hex(slot), "latest"), 16)

    def code(self, address: str) -> str:
        return self.guard.read("eth_getCode", address, "latest")

    # -- writes --------------------------------------------------------------------------------
    def set_code(self, address: str, runtime_hex: str) -> None:
        self.guard.send("anvil_setCode", address, runtime_hex if runtime_hex.startswith("0x") else "0x" + runtime_hex)

    def set_storage(self, address: str, slot: int, value: int) -> None:
        self.guard.send("anvil_setStorageAt", address, "0x" + slot.to_bytes(32, "big").hex(),
                        "0x" + (value % 2**256).to_bytes(32, "big").hex())

    def set_balance(self, address: str, wei: int) -> None:
        self.guard.send("anvil_setBalance", address, hex(wei))

    def impersonate(self, address: str, gas_money_wei: int = DEFAULT_GAS_MONEY_WEI) -> None:
        """Let `address` send transactions on the fork, with gas money (idempotent)."""
        key = address.lower()
        if key in self._impersonated:
            return
        self.guard.send("anvil_impersonateAccount", address)
        self.set_balance(address, gas_money_wei)
        self._impersonated.add(key)

    def send(self, sender: str, to: str, signature: str, *args: Any, gas: int | None = None, label: str = "") -> dict:
        """One transaction from an impersonated `sender`; waits for the receipt, raises on revert."""
        self.impersonate(sender)
        tx: dict[str, Any] = {"from": sender, "to": to, "data": calldata(signature, *args)}
        if gas:
            tx["gas"] = hex(gas)
        label = label or f"{signature.split('(')[0]} on {to}"
        try:
            tx_hash = self.guard.send("eth_sendTransaction", tx)
        except ChainError as exc:  # gas estimation surfaces the revert reason here
            raise ChainError(f"{label}: {exc}") from exc
        self.transactions += 1
        receipt = self._receipt(tx_hash, label)
        if receipt.get("status") != "0x1":
            raise ChainError(f"{label}: transaction reverted (tx {tx_hash})")
        return receipt

    def _receipt(self, tx_hash: str, label: str) -> dict:
        deadline = time.monotonic() + RECEIPT_TIMEOUT_S
        delay = 0.002
        while True:
            receipt = self.guard.read("eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() > deadline:
                raise ChainError(f"{label}: transaction {tx_hash} not mined within {RECEIPT_TIMEOUT_S:.0f} s")
            time.sleep(delay)
            delay = min(2 * delay, 0.1)


class Fork:
    """`with Fork(upstream_url, block) as fork:` -> fork.url, fork.block, fork.chain (ForkChain).

    block: the upstream block to fork at (default: its latest). The anvil is always stopped on exit.
    """

    def __init__(self, upstream_url: str, block: int | None = None, *, gas_limit: int | None = None):
        if not isinstance(upstream_url, str) or not upstream_url.startswith(("http://", "https://")):
            raise InputError(f"--rpc-url must be an http(s) URL, got {redact_url(str(upstream_url))!r}")
        if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 0):
            raise InputError(f"--block must be a non-negative block number, got {block!r}")
        self.upstream_url = upstream_url
        self.requested_block = block
        self.gas_limit = gas_limit
        self.anvil: Anvil | None = None
        self.block: int | None = None
        self.chain_id: int | None = None
        self.chain: ForkChain | None = None

    def start(self) -> "Fork":
        upstream = JsonRpc(self.upstream_url)  # reads only
        try:
            chain_id, latest = (int(x, 16) for x in upstream.batch([("eth_chainId", []), ("eth_blockNumber", [])]))
        except ChainError as exc:
            raise ChainError(f"upstream {redact_url(self.upstream_url)} is not reachable: "
                             f"{str(exc).replace(self.upstream_url, redact_url(self.upstream_url))}") from None
        block = latest if self.requested_block is None else self.requested_block
        if block > latest:
            raise InputError(f"--block {block} is beyond the upstream's latest block {latest}")
        self.anvil = Anvil(fork_url=self.upstream_url, fork_block=block, gas_limit=self.gas_limit).start()
        try:
            guard = WriteGuard(self.anvil.url, started_url=self.anvil.url, chain_id=chain_id)
            guard.check()
            guard.send("anvil_setBlockTimestampInterval", 0)
            self.block, self.chain_id, self.chain = block, chain_id, ForkChain(guard)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        if self.anvil is None:
            raise ChainError("the fork is not started")
        return self.anvil.url

    def stop(self) -> None:
        if self.anvil is not None:
            self.anvil.stop()
            self.anvil = None

    def __enter__(self) -> "Fork":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
