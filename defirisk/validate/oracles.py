"""Push market prices into the protocols' oracles on the fork ("the oracle follows the market").

The pushed answer is the feed's answer at the fork block times the asset's relative market move
(exact rational arithmetic, rounded once to the feed's integer answer), which is what the model's
oracle price p0 * r is in the feed's own units.

Two modes:
- "setter" (the devnet): the devnet's DevnetPriceFeed contracts are the sources of both AaveOracle
  and the Morpho oracles; their owner (impersonated) calls `setAnswer`.
- "setcode" (a real fork): each AaveOracle source of a moved asset gets our ValidationFeed runtime
  code written over it (anvil_setCode), with its decimals and fork-block answer copied into storage;
  each Morpho market oracle gets ValidationMorphoOracle with its fork-block price. Answers are then
  set with anvil_setStorageAt. This works for plain Chainlink proxies and for price adapters alike.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

from defirisk.addressbook import AddressBook
from defirisk.errors import ChainError
from defirisk.model import Snapshot
from defirisk.validate.contracts import runtime_code
from defirisk.validate.fork import ForkChain

ORACLE_MODES = ("setter", "setcode")
# ValidationFeed storage layout (fixtures/contracts/validate/ValidationFeed.sol).
SLOT_ANSWER, SLOT_DECIMALS, SLOT_ROUND, SLOT_UPDATED, SLOT_PREV_ANSWER, SLOT_PREV_UPDATED = range(6)


def _round(x: Fraction) -> int:
    return int(x.numerator * 2 + x.denominator) // (2 * x.denominator)  # half up, x >= 0


class OraclePusher:
    def __init__(self, chain: ForkChain, snapshot: Snapshot, book: AddressBook, mode: str, assets: list[str]):
        if mode not in ORACLE_MODES:
            raise ChainError(f"oracle mode must be one of {ORACLE_MODES}, got {mode!r}")
        self.chain, self.snapshot, self.book, self.mode = chain, snapshot, book, mode
        self.assets = sorted(assets)
        self.timestamp = int(chain.guard.read("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
        # feed address -> (symbol, answer at the fork block, decimals)
        self.feeds: dict[str, tuple[str, int, int]] = {}
        # Morpho oracle address -> (collateral symbol, loan symbol, price at the fork block)
        self.morpho: dict[str, tuple[str, str, int]] = {}
        self.rel: dict[str, Fraction] = {s: Fraction(1) for s in self.assets}
        if mode == "setter":
            for sym in self.assets:
                if sym not in book.feeds:
                    raise ChainError(f"oracle of {sym}: no feed in address book {book.name} to set")
                self._add_feed(book.feeds[sym], sym)
        else:
            self._install_setcode()

    def _add_feed(self, addr: str, sym: str) -> None:
        key = addr.lower()
        if key in self.feeds and self.feeds[key][0] != sym:
            raise ChainError(f"price source {addr} serves both {self.feeds[key][0]} and {sym}; moving one "
                             "alone cannot be validated")
        answer, dec = self.chain.call_many([(addr, "latestAnswer()", (), ["int256"]),
                                            (addr, "decimals()", (), ["uint8"])])
        if answer <= 0:
            raise ChainError(f"price source {addr} of {sym} answers {answer}")
        self.feeds[key] = (sym, answer, dec)

    def _install_setcode(self) -> None:
        moved = set(self.assets)
        for m in self.snapshot.markets:
            if m.protocol == "aave-v3":
                oracle = m.params.get("oracle")
                if not oracle:
                    raise ChainError(f"aave-v3/{m.market}: markets.json has no params.oracle")
                for sym in m.assets:
                    if sym in moved:
                        token = self.snapshot.assets[sym].address
                        src = self.chain.call(oracle, "getSourceOfAsset(address)", [token], ["address"])
                        if int(src, 16) == 0:
                            raise ChainError(f"aave-v3/{m.market}: no price source for {sym}")
                        self._add_feed(src, sym)
            elif m.protocol == "morpho-blue":
                c, l = m.params.get("collateral"), m.params.get("loan")
                if c in moved or l in moved:
                    oracle = m.params.get("oracle")
                    price = self.chain.call(oracle, "price()", (), ["uint256"])
                    self.morpho[oracle.lower()] = (c, l, price)
            else:
                raise ChainError(f"validation of {m.protocol} markets is not implemented yet")
        feed_code, morpho_code = runtime_code("ValidationFeed"), runtime_code("ValidationMorphoOracle")
        for addr, (sym, answer, dec) in self.feeds.items():
            self.chain.set_code(addr, feed_code)
            for slot, value in ((SLOT_ANSWER, answer), (SLOT_DECIMALS, dec), (SLOT_ROUND, 1),
                                (SLOT_UPDATED, self.timestamp), (SLOT_PREV_ANSWER, answer),
                                (SLOT_PREV_UPDATED, self.timestamp)):
                self.chain.set_storage(addr, slot, value)
        for addr, (_c, _l, price) in self.morpho.items():
            self.chain.set_code(addr, morpho_code)
            self.chain.set_storage(addr, 0, price)

    def usd(self, sym: str) -> float | None:
        """The USD price the feed of `sym` now answers (None if the asset has no feed we set)."""
        for s, answer, dec in self.feeds.values():
            if s == sym:
                return float(_round(answer * self.rel[s])) / 10**dec
        return None

    def push(self, rel: Mapping[str, Fraction]) -> None:
        """Set every managed oracle to (fork-block answer) * rel[asset]; assets not in `rel` keep theirs."""
        changed = {s: Fraction(r) for s, r in rel.items() if s in self.rel and Fraction(r) != self.rel[s]}
        if not changed:
            return
        self.rel.update(changed)
        for addr, (sym, answer, _dec) in self.feeds.items():
            if sym not in changed:
                continue
            value = _round(answer * self.rel[sym])
            if value <= 0:
                raise ChainError(f"oracle of {sym} would be set to {value}")
            if self.mode == "setter":
                owner = self.chain.call(addr, "owner()", (), ["address"])
                self.chain.send(owner, addr, "setAnswer(int256)", value, label=f"set {sym} feed")
            else:
                rnd = self.chain.storage(addr, SLOT_ROUND)
                self.chain.set_storage(addr, SLOT_PREV_ANSWER, self.chain.storage(addr, SLOT_ANSWER))
                self.chain.set_storage(addr, SLOT_PREV_UPDATED, self.chain.storage(addr, SLOT_UPDATED))
                self.chain.set_storage(addr, SLOT_ANSWER, value)
                self.chain.set_storage(addr, SLOT_ROUND, rnd + 1)
                self.chain.set_storage(addr, SLOT_UPDATED, self.timestamp)
        for addr, (c, l, price) in self.morpho.items():
            if c in changed or l in changed:
                ratio = self.rel.get(c, Fraction(1)) / self.rel.get(l, Fraction(1))
                self.chain.set_storage(addr, 0, _round(price * ratio))
