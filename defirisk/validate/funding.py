"""Give an account ERC-20 tokens on the fork (anvil only).

Two ways, chosen by the caller:
- "mint": the devnet's tokens have an owner-only `mint(address,uint256)`; the owner is impersonated.
- "storage": a real token's balance lives in a mapping; we find its slot by probing: write a marker
  into the candidate slot key (Solidity layout keccak(account . slot), then Vyper keccak(slot .
  account)), keep it if `balanceOf` reflects it, else restore the old word. Found slots are cached
  per token. totalSupply is not adjusted (nothing the validator reads depends on it).
"""
from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak

from defirisk.errors import ChainError
from defirisk.validate.fork import ForkChain

MAX_PROBE_SLOT = 60
FUNDING_MODES = ("mint", "storage")


def _solidity_key(account: str, slot: int) -> int:
    return int.from_bytes(keccak(encode(["address", "uint256"], [account, slot])), "big")


def _vyper_key(account: str, slot: int) -> int:
    return int.from_bytes(keccak(encode(["uint256", "address"], [slot, account])), "big")


class Funder:
    def __init__(self, chain: ForkChain, mode: str):
        if mode not in FUNDING_MODES:
            raise ChainError(f"funding mode must be one of {FUNDING_MODES}, got {mode!r}")
        self.chain = chain
        self.mode = mode
        self._slots: dict[str, tuple[str, int]] = {}

    def balance(self, token: str, account: str) -> int:
        return self.chain.call(token, "balanceOf(address)", [account], ["uint256"])

    def give(self, token: str, account: str, amount: int) -> None:
        """Increase `account`'s balance of `token` by `amount` base units."""
        if amount <= 0:
            return
        if self.mode == "mint":
            owner = self.chain.call(token, "owner()", (), ["address"])
            self.chain.send(owner, token, "mint(address,uint256)", account, amount, label=f"mint {token}")
        else:
            self._deal(token, account, self.balance(token, account) + amount)
        if self.balance(token, account) < amount:
            raise ChainError(f"funding {account} with {amount} of token {token} did not take effect")

    def _deal(self, token: str, account: str, target: int) -> None:
        key = token.lower()
        if key in self._slots:
            layout, slot = self._slots[key]
            self.chain.set_storage(token, (_solidity_key if layout == "sol" else _vyper_key)(account, slot), target)
            return
        for slot in range(MAX_PROBE_SLOT):
            for layout, fn in (("sol", _solidity_key), ("vy", _vyper_key)):
                where = fn(account, slot)
                old = self.chain.storage(token, where)
                self.chain.set_storage(token, where, target)
                if self.balance(token, account) == target:
                    self._slots[key] = (layout, slot)
                    return
                self.chain.set_storage(token, where, old)
        raise ChainError(f"could not find the balance slot of token {token} in slots 0..{MAX_PROBE_SLOT - 1}; "
                         "it cannot be funded on this fork")
