"""What a protocol's price source is, as a formula of market prices (markets.json `assets.SYM.oracle`).

The generic half of the oracle-source readers (docs/readers.md "Oracle sources"): the `OracleSpec` a
reader writes, the `FeedBook` of price feeds the snapshot knows (address -> the asset whose price it
reports), and probing helpers. What a protocol's own adapters look like lives with the protocol:
Aave's CAPO / fixed-price adapters in protocols/aave_v3.py, Morpho's oracles in protocols/morpho_blue.py.

Probing means calling an interface's getters on an unknown contract at the pinned block, all of them
non-required: a revert, an empty answer or data that does not decode means "not that interface".

Kinds (the solver's side is defirisk/solver/oracles.py):
- market: the asset's own USD market price;
- ratio:  `rate` x the USD market price of asset `of` (`cap`: the ratio cap at the pinned block);
- fixed:  a constant USD `price`.
A source the readers cannot classify is written as market with type "unclassified" and a `reason`
that the snapshot lists in manifest.json `assumptions.oracles`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from defirisk.chain.abi import Interface, interface
from defirisk.chain.multicall import Call, Multicaller

FEED = interface("ChainlinkAggregatorV3")
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# Per-call gas estimate for probes (only sizes the multicall chunks): an adapter's getter may call its
# ratio provider or base aggregator, a few external calls deep.
PROBE_GAS = 150_000
UNCLASSIFIED = "unclassified"
CHAINLINK = "chainlink-aggregator"


@dataclass(frozen=True)
class OracleSpec:
    """One asset's oracle in one market, as markets.json writes it (`as_dict`).

    `reason` is not written into markets.json: it is the manifest's assumption text when the source
    could not be classified (or was classified with an approximation worth saying)."""

    kind: str  # market | ratio | fixed
    type: str
    source: str | None = None
    of: str | None = None
    rate: float | None = None
    cap: float | None = None
    price: float | None = None
    deviation: float | None = None
    heartbeat_s: float | None = None
    age_s: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for k in ("of", "rate", "cap", "price", "deviation", "heartbeat_s", "age_s", "type", "source"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out

    @property
    def unclassified(self) -> bool:
        return self.type == UNCLASSIFIED


def unclassified(source: str | None, reason: str) -> OracleSpec:
    """Today's behaviour (the asset's own market price), flagged: the snapshot lists it as an assumption."""
    return OracleSpec("market", UNCLASSIFIED, source=source, reason=reason)


@dataclass(frozen=True)
class KnownFeed:
    """A feed the snapshot knows: it reports `asset`'s price in `quote` (None = USD).

    kind market: a market price; rate: an exchange rate that does not follow markets; fixed: a
    constant. `origin` says how we know (book feeds, book oracles, a protocol's source)."""

    address: str
    asset: str | None
    quote: str | None
    kind: str
    origin: str
    type: str | None = None
    deviation: float | None = None
    heartbeat_s: float | None = None


class FeedBook:
    """Price feeds of this snapshot by address: the address book's `feeds` (SYM -> USD feed) and
    `oracles` entries, plus the plain sources protocols use for an asset (`add_source`). A feed two
    sources attribute to different assets, and the book does not name, is ambiguous and left unknown."""

    def __init__(self, book: Any = None):
        # Book token symbols are the snapshot's symbols (the snapshot names book tokens first).
        self._feeds: dict[str, KnownFeed] = {}
        self._book_named: set[str] = set()
        self._ambiguous: set[str] = set()
        if book is None:
            return
        for addr, e in getattr(book, "oracles", {}).items():
            self._feeds[addr.lower()] = KnownFeed(e.address, e.asset, e.quote, e.kind, "address book oracles", e.type,
                                                  e.deviation, e.heartbeat_s)
            self._book_named.add(addr.lower())
        for sym, addr in getattr(book, "feeds", {}).items():
            key = addr.lower()
            if key not in self._feeds:
                self._feeds[key] = KnownFeed(addr, sym, None, "market", "address book feeds")
                self._book_named.add(key)

    def get(self, address: str | None) -> KnownFeed | None:
        if not address:
            return None
        return self._feeds.get(address.lower())

    def book_entry(self, address: str | None) -> KnownFeed | None:
        """The feed as the address book names it (None when only a protocol's source names it)."""
        if not address or address.lower() not in self._book_named:
            return None
        return self._feeds.get(address.lower())

    def add_source(self, address: str, symbol: str, origin: str) -> None:
        """`address` is a protocol's plain USD source for `symbol` (a market feed of that asset)."""
        key = address.lower()
        if key in self._book_named or key in self._ambiguous:
            return
        known = self._feeds.get(key)
        if known is None:
            self._feeds[key] = KnownFeed(address, symbol, None, "market", origin)
        elif known.asset != symbol:
            del self._feeds[key]
            self._ambiguous.add(key)

    def usd_asset(self, address: str | None) -> str | None:
        """The asset whose USD market price `address` reports, if the snapshot knows it."""
        f = self.get(address)
        if f is None or f.kind != "market" or f.quote is not None:
            return None
        return f.asset

    def meta(self, address: str | None) -> dict[str, float]:
        """deviation / heartbeat_s the address book gives for the feed (published figures only)."""
        f = self.book_entry(address)
        out: dict[str, float] = {}
        if f is not None:
            if f.deviation is not None:
                out["deviation"] = f.deviation
            if f.heartbeat_s is not None:
                out["heartbeat_s"] = f.heartbeat_s
        return out


# -- probing -------------------------------------------------------------------------------------

def probe(mc: Multicaller, targets: Iterable[str], getters: Sequence[tuple[Interface, str]], *,
          label: str = "oracle probe") -> dict[str, dict[str, Any]]:
    """Call every getter (no arguments) on every target at the pinned block, none required.

    Returns {target: {getter name: decoded value or None}}; None = reverted, empty or undecodable,
    i.e. the target does not implement that getter."""
    targets = list(dict.fromkeys(t for t in targets if t and t != ZERO_ADDRESS))
    calls = [Call(t, iface.fn(name), required=False, gas=PROBE_GAS, label=f"{label} {t}")
             for t in targets for iface, name in getters]
    res = mc.run(calls) if calls else []
    out: dict[str, dict[str, Any]] = {}
    n = len(getters)
    for i, t in enumerate(targets):
        out[t] = {name: res[i * n + j] for j, (_iface, name) in enumerate(getters)}
    return out


@dataclass(frozen=True)
class FeedState:
    """A Chainlink-style feed's answer at the pinned block."""

    address: str
    decimals: int
    answer: int
    updated_at: int
    age_s: int

    @property
    def value(self) -> float:
        return self.answer / 10 ** self.decimals


def read_feed_states(mc: Multicaller, addresses: Iterable[str], block_timestamp: int) -> dict[str, FeedState | None]:
    """decimals() and latestRoundData() of each feed (None for a feed that does not answer both, or
    answers <= 0)."""
    addrs = list(dict.fromkeys(a for a in addresses if a and a != ZERO_ADDRESS))
    got = probe(mc, addrs, [(FEED, "decimals"), (FEED, "latestRoundData")], label="feed")
    out: dict[str, FeedState | None] = {}
    for a in addrs:
        dec, rd = got[a]["decimals"], got[a]["latestRoundData"]
        if dec is None or rd is None or not isinstance(dec, int) or dec > 77 or rd[1] <= 0:
            out[a] = None
            continue
        updated = int(rd[3])
        out[a] = FeedState(a, int(dec), int(rd[1]), updated, max(0, int(block_timestamp) - updated))
    return out


def is_chainlink_aggregator(p: Mapping[str, Any]) -> bool:
    """A probe result that answers decimals(), latestRoundData() and latestAnswer() like an
    AggregatorV3 (proxy or aggregator): the shape every Chainlink price feed has."""
    dec, rd, ans = p.get("decimals"), p.get("latestRoundData"), p.get("latestAnswer")
    return isinstance(dec, int) and dec <= 77 and rd is not None and ans is not None


def assumption(protocol: str, market: str, asset: str, spec: OracleSpec) -> dict[str, str]:
    """A manifest `assumptions.oracles` entry."""
    return {"protocol": protocol, "market": market, "asset": asset, "source": spec.source or ZERO_ADDRESS,
            "reason": spec.reason or ""}
