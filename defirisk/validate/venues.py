"""The snapshot's venues as the real pools on the fork: which contract each venue is, its mid price, and
selling into it through our swapper (exact input, real Uniswap V2 `swap` / V3 `swap`).

The market price of an asset on the fork is defined exactly as the model defines it
(defirisk/markets/impact.py): p0 * r, where r is the venue's mid price relative to its mid price at
the fork block and, with several venues, the highest of their r. Mid prices come from the pools' own
state (V2 reserves, V3 sqrtPriceX96) in exact integer arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

from defirisk.addressbook import AddressBook
from defirisk.errors import ChainError
from defirisk.model import Snapshot
from defirisk.validate.contracts import SWAPPER_ADDRESS, runtime_code
from defirisk.validate.fork import ForkChain

V2_MATCH_RTOL = 1e-9  # a V2 venue without a `pair` (older snapshots) is matched to a pair by its reserves


@dataclass(frozen=True)
class ChainVenue:
    asset: str
    index: int  # position in snapshot.venues[asset]
    kind: str  # "constant_product" | "uniswap_v3"
    address: str
    base: str  # token addresses
    quote: str

    def mid(self, chain: ForkChain) -> Fraction:
        """Quote base units per base base unit, exact."""
        if self.kind == "constant_product":
            t0 = chain.call(self.address, "token0()", (), ["address"])
            r0, r1, _ = chain.call(self.address, "getReserves()", (), ["uint112", "uint112", "uint32"])
            rb, rq = (r0, r1) if t0.lower() == self.base.lower() else (r1, r0)
            return Fraction(rq, rb)
        t0 = chain.call(self.address, "token0()", (), ["address"])
        sqrt_x96 = chain.call(self.address, "slot0()", (), ["uint160", "int24", "uint16", "uint16", "uint16",
                                                                "uint8", "bool"])[0]
        p01 = Fraction(sqrt_x96 * sqrt_x96, 2**192)  # token1 per token0
        return p01 if t0.lower() == self.base.lower() else 1 / p01


def resolve_venues(snapshot: Snapshot, book: AddressBook, chain: ForkChain) -> dict[str, list[ChainVenue]]:
    """Map every snapshot venue to its pool. V3 venues carry `pool`; V2 venues carry `pair` when the
    reader records it, else the book's pair for (asset, quote) whose reserves match the snapshot."""
    out: dict[str, list[ChainVenue]] = {}
    for sym, venues in snapshot.venues.items():
        if sym not in book.tokens:
            raise ChainError(f"venue of {sym}: token not in address book {book.name}")
        base = book.tokens[sym].address
        for i, v in enumerate(venues):
            p = v.params
            quote_sym = p.get("quote")
            if quote_sym not in book.tokens:
                raise ChainError(f"venue {i} of {sym}: quote token {quote_sym!r} not in address book {book.name}")
            quote = book.tokens[quote_sym].address
            if v.kind == "uniswap_v3":
                addr = p.get("pool")
                if not addr:
                    raise ChainError(f"venue {i} of {sym}: uniswap_v3 venue without a pool address")
            elif v.kind == "constant_product":
                if p.get("pair"):
                    addr = _check_v2_pair(sym, i, str(p["pair"]), chain, base, quote)
                else:
                    addr = _match_v2(sym, i, p, book, chain, base)
            else:
                raise ChainError(f"venue {i} of {sym}: kind {v.kind} has no on-chain pool to execute against")
            out.setdefault(sym, []).append(ChainVenue(sym, i, v.kind, addr, base, quote))
    return out


def _check_v2_pair(sym: str, i: int, pair: str, chain: ForkChain, base: str, quote: str) -> str:
    """The recorded pair must be a V2 pair of exactly (base, quote); a hand-edited address that is not
    would otherwise be traded against silently."""
    if chain.code(pair) in ("0x", "0x0", ""):
        raise ChainError(f"venue {i} of {sym}: pair {pair} has no code on the fork")
    try:
        t0, t1 = chain.call(pair, "token0()", (), ["address"]), chain.call(pair, "token1()", (), ["address"])
        chain.call(pair, "getReserves()", (), ["uint112", "uint112", "uint32"])  # a V3 pool has token0/1 too
    except ChainError as exc:
        raise ChainError(f"venue {i} of {sym}: pair {pair} is not a Uniswap V2 pair: {exc}") from None
    if {t0.lower(), t1.lower()} != {base.lower(), quote.lower()}:
        raise ChainError(f"venue {i} of {sym}: pair {pair} holds {t0}/{t1}, not {sym} ({base}) and its quote ({quote})")
    return pair


def _match_v2(sym: str, i: int, p: Mapping, book: AddressBook, chain: ForkChain, base: str) -> str:
    dec = book.tokens[sym].decimals
    candidates = [a for (b, q), a in book.v2_pairs.items() if b == sym and q == p.get("quote")]
    for addr in candidates:
        t0 = chain.call(addr, "token0()", (), ["address"])
        r0, r1, _ = chain.call(addr, "getReserves()", (), ["uint112", "uint112", "uint32"])
        rb = r0 if t0.lower() == base.lower() else r1
        if abs(rb / 10**dec - float(p["base_reserve"])) <= V2_MATCH_RTOL * float(p["base_reserve"]):
            return addr
    raise ChainError(f"venue {i} of {sym}: no Uniswap V2 pair in address book {book.name} matches its reserves")


class Market:
    """Market prices on the fork, anchored like the model's: p0 * max_v(mid_v / mid_v at the fork block)."""

    def __init__(self, chain: ForkChain, venues: Mapping[str, Sequence[ChainVenue]], p0: Mapping[str, float]):
        self.chain = chain
        self.venues = {s: list(v) for s, v in venues.items()}
        self.p0 = dict(p0)
        self.mid0 = {s: [v.mid(chain) for v in vs] for s, vs in self.venues.items()}
        chain.set_code(SWAPPER_ADDRESS, runtime_code("ValidationSwapper"))

    def rel(self, sym: str) -> Fraction:
        return max(v.mid(self.chain) / m0 for v, m0 in zip(self.venues[sym], self.mid0[sym]))

    def price(self, sym: str) -> float:
        return self.p0[sym] * float(self.rel(sym))

    def sell(self, seller: str, sym: str, amounts: Sequence[int], label: str) -> None:
        """Sell `amounts[i]` base units into venue i, proceeds to `seller` (who must hold the total)."""
        total = sum(amounts)
        if total <= 0:
            return
        token = self.venues[sym][0].base
        self.chain.send(seller, token, "transfer(address,uint256)", SWAPPER_ADDRESS, total, label=f"{label}: to swapper")
        for v, amt in zip(self.venues[sym], amounts):
            if amt <= 0:
                continue
            fn = "sellV2" if v.kind == "constant_product" else "sellV3"
            self.chain.send(seller, SWAPPER_ADDRESS, f"{fn}(address,address,uint256,address)", v.address, token, amt,
                            seller, label=f"{label}: {fn} {amt} into {v.address}")


def split_raw(total: int, parts: Sequence[float]) -> list[int]:
    """Split `total` base units in the proportions of `parts`; the largest part takes the remainder."""
    s = float(sum(parts))
    if total <= 0 or s <= 0:
        return [0] * len(parts)
    raw = [int(total * (float(p) / s)) for p in parts]
    j = max(range(len(parts)), key=lambda k: parts[k])
    raw[j] += total - sum(raw)
    return raw
