"""Address books: where a chain's protocols, tokens, feeds and DEX pools live.

Three sources, one shape (the devnet's address-book JSON, see docs/snapshot-format.md "Address
books"): the built-in `mainnet` book (defirisk/books/mainnet.json), the devnet's own book written by
`defirisk devnet up/build`, and any JSON or YAML file a user writes for another chain or another Aave
fork. Validation happens here, at the edge; the readers receive a typed, frozen `AddressBook`.

`aave_v3` may be one object (the devnet) or a list of markets (mainnet: main, lido, spark); each has
`pool` and/or `pool_addresses_provider`, an optional `market` name, `start_block` (first block to
scan for Borrow events) and `version` (overrides the POOL_REVISION guess, e.g. "3.0" for Spark).

`oracles` (optional) names price sources by address: what a feed or adapter reports (`asset`, `quote`,
`kind` market | rate | fixed), a `type` label, and Chainlink's deviation threshold and heartbeat, which
are not on chain and need a published `ref`. The readers use it to map a Morpho feed or a CAPO base
feed to an asset, and for sources they cannot classify by probing (docs/readers.md "Oracle sources").
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from eth_utils import is_address, to_checksum_address

from defirisk.errors import InputError
from defirisk.markets.dex import TokenInfo

BOOKS_DIR = Path(__file__).resolve().parent / "books"
# Venue quotes (stablecoins, where every route ends in USD) when a book does not name its own; pools
# between two other assets are cross venues, directed by docs/readers.md "DEX venues".
DEFAULT_VENUE_QUOTES = ("USDC", "USDT", "DAI")
DEFAULT_V3_FEE_TIERS = (100, 500, 3000, 10000)  # hundredths of a bip: 0.01%, 0.05%, 0.3%, 1%
# A discovered pool is kept when its quote side holds at least this many USD: below it a pool is
# dust (often abandoned at a stale price) and would add noise, not depth, to the venue curve.
DEFAULT_MIN_VENUE_QUOTE_USD = 100_000.0


@dataclass(frozen=True)
class AaveEntry:
    market: str
    pool: str | None
    provider: str | None
    start_block: int
    version: str | None = None


@dataclass(frozen=True)
class MorphoEntry:
    morpho: str
    start_block: int
    market_ids: tuple[str, ...] = ()


ORACLE_KINDS = ("market", "rate", "fixed")


@dataclass(frozen=True)
class OracleEntry:
    """A price source the book names (`oracles.<address>`).

    kind market: the source reports `asset`'s market price in `quote` (None = USD), e.g. a Chainlink
    aggregator; rate: an exchange rate of `asset` in `quote` that does not follow markets (a wrapper's
    conversion rate exposed as a feed); fixed: a constant price. deviation (fraction) and heartbeat_s are
    Chainlink's update triggers as published for the feed (`ref` says where)."""

    address: str
    asset: str | None
    quote: str | None = None
    kind: str = "market"
    type: str | None = None
    deviation: float | None = None
    heartbeat_s: float | None = None
    ref: str | None = None


@dataclass(frozen=True)
class AddressBook:
    name: str
    chain_id: int
    multicall3: str
    tokens: Mapping[str, TokenInfo]
    feeds: Mapping[str, str]
    aave_v3: tuple[AaveEntry, ...]
    morpho_blue: MorphoEntry | None
    v2_pairs: Mapping[tuple[str, str], str]  # (base, quote) -> pair
    v3_pools: Mapping[tuple[str, str, int], str]  # (base, quote, fee in hundredths of a bip) -> pool
    start_block: int = 0
    source: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # Venue discovery (docs/readers.md "DEX venues"): factories asked for every volatile asset against
    # `venue_quotes` and every collateral asset against every other asset; None = no discovery for
    # that Uniswap version.
    v2_factory: str | None = None
    v3_factory: str | None = None
    venue_quotes: tuple[str, ...] = ()
    v3_fee_tiers: tuple[int, ...] = DEFAULT_V3_FEE_TIERS
    min_venue_quote_usd: float = DEFAULT_MIN_VENUE_QUOTE_USD
    oracles: Mapping[str, OracleEntry] = field(default_factory=dict)  # lower-case address -> entry

    def oracle(self, address: str) -> OracleEntry | None:
        return self.oracles.get(address.lower())

    def symbols_by_address(self) -> dict[str, str]:
        return {t.address.lower(): t.symbol for t in self.tokens.values()}

    def token_by_address(self, address: str) -> TokenInfo | None:
        for t in self.tokens.values():
            if t.address.lower() == address.lower():
                return t
        return None


def _addr(value: Any, where: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise InputError(f"{where}: not an address: {value!r}")
    return to_checksum_address(value)


def _int(value: Any, where: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def parse_book(data: Mapping[str, Any], source: str = "<book>") -> AddressBook:
    """Validate an address-book mapping; errors name the source and the field."""
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: an address book is a JSON/YAML object")
    chain_id = _int(data.get("chain_id"), f"{source}: field chain_id")
    base_start = _int(data.get("start_block"), f"{source}: field start_block", default=0)
    tokens = {}
    for sym, t in (data.get("tokens") or {}).items():
        where = f"{source}: tokens.{sym}"
        if not isinstance(t, Mapping):
            raise InputError(f"{where}: expected an object with address and decimals")
        tokens[sym] = TokenInfo(sym, _addr(t.get("address"), where + ".address"),
                                _int(t.get("decimals"), where + ".decimals"))
    feeds = {sym: _addr(a, f"{source}: feeds.{sym}") for sym, a in (data.get("feeds") or {}).items()}
    aave_raw = data.get("aave_v3")
    entries = []
    if aave_raw:
        items = aave_raw if isinstance(aave_raw, list) else [aave_raw]
        for i, a in enumerate(items):
            where = f"{source}: aave_v3[{i}]" if isinstance(aave_raw, list) else f"{source}: aave_v3"
            if not isinstance(a, Mapping):
                raise InputError(f"{where}: expected an object")
            pool = _addr(a["pool"], where + ".pool") if a.get("pool") else None
            prov = (_addr(a["pool_addresses_provider"], where + ".pool_addresses_provider")
                    if a.get("pool_addresses_provider") else None)
            if pool is None and prov is None:
                raise InputError(f"{where}: needs pool or pool_addresses_provider")
            name = a.get("market") or (a.get("markets") if isinstance(a.get("markets"), str) else None)
            name = name or ("main" if len(items) == 1 else f"market{i}")
            version = a.get("version")
            if version is not None and not isinstance(version, str):
                raise InputError(f"{where}.version: expected a string like \"3.0\"")
            entries.append(AaveEntry(str(name), pool, prov,
                                     _int(a.get("start_block"), where + ".start_block", default=base_start),
                                     version))
        names = [e.market for e in entries]
        if len(set(names)) != len(names):
            raise InputError(f"{source}: aave_v3 market names must be unique, got {names}")
    morpho = None
    m = data.get("morpho_blue")
    if m:
        where = f"{source}: morpho_blue"
        if not isinstance(m, Mapping) or not m.get("morpho"):
            raise InputError(f"{where}: needs field morpho (the Morpho Blue address)")
        ids = tuple(str(x["id"]).lower() for x in (m.get("markets") or []) if isinstance(x, Mapping) and "id" in x)
        morpho = MorphoEntry(_addr(m["morpho"], where + ".morpho"),
                             _int(m.get("start_block"), where + ".start_block", default=base_start), ids)
    v2 = {}
    for key, addr in ((data.get("uniswap_v2") or {}).get("pairs") or {}).items():
        parts = key.split("/")
        if len(parts) != 2:
            raise InputError(f"{source}: uniswap_v2.pairs key {key!r} must be BASE/QUOTE")
        v2[(parts[0], parts[1])] = _addr(addr, f"{source}: uniswap_v2.pairs.{key}")
    v3 = {}
    for key, addr in ((data.get("uniswap_v3") or {}).get("pools") or {}).items():
        parts = key.split("/")
        if len(parts) != 3 or not parts[2].isdigit():
            raise InputError(f"{source}: uniswap_v3.pools key {key!r} must be BASE/QUOTE/FEE (fee e.g. 3000)")
        v3[(parts[0], parts[1], int(parts[2]))] = _addr(addr, f"{source}: uniswap_v3.pools.{key}")
    for (b, q), _ in v2.items():
        for s in (b, q):
            if s not in tokens:
                raise InputError(f"{source}: uniswap_v2 pair {b}/{q} names token {s} not in tokens")
    for (b, q, _f), _ in v3.items():
        for s in (b, q):
            if s not in tokens:
                raise InputError(f"{source}: uniswap_v3 pool {b}/{q} names token {s} not in tokens")
    v2_factory = v3_factory = None
    v2_raw, v3_raw = data.get("uniswap_v2") or {}, data.get("uniswap_v3") or {}
    if isinstance(v2_raw, Mapping) and v2_raw.get("factory"):
        v2_factory = _addr(v2_raw["factory"], f"{source}: uniswap_v2.factory")
    if isinstance(v3_raw, Mapping) and v3_raw.get("factory"):
        v3_factory = _addr(v3_raw["factory"], f"{source}: uniswap_v3.factory")
    disc = data.get("venue_discovery", {})
    if disc is False:  # explicit opt-out: only the listed pools
        v2_factory = v3_factory = None
        disc = {}
    if not isinstance(disc, Mapping):
        raise InputError(f"{source}: venue_discovery: expected an object (quotes, v3_fee_tiers, min_quote_usd) or false")
    quotes_raw = disc.get("quotes")
    if quotes_raw is None:
        quotes = tuple(q for q in DEFAULT_VENUE_QUOTES if q in tokens)
    else:
        if not isinstance(quotes_raw, list) or not all(isinstance(q, str) for q in quotes_raw):
            raise InputError(f"{source}: venue_discovery.quotes: expected a list of token symbols")
        for q in quotes_raw:
            if q not in tokens:
                raise InputError(f"{source}: venue_discovery.quotes names token {q} not in tokens")
        quotes = tuple(dict.fromkeys(quotes_raw))
    tiers_raw = disc.get("v3_fee_tiers", list(DEFAULT_V3_FEE_TIERS))
    if not isinstance(tiers_raw, list) or not all(isinstance(f, int) and not isinstance(f, bool) and 0 < f < 1_000_000
                                                  for f in tiers_raw):
        raise InputError(f"{source}: venue_discovery.v3_fee_tiers: expected a list of fees in hundredths of a bip "
                         f"(e.g. [100, 500, 3000, 10000]), got {tiers_raw!r}")
    min_usd = disc.get("min_quote_usd", DEFAULT_MIN_VENUE_QUOTE_USD)
    if isinstance(min_usd, bool) or not isinstance(min_usd, (int, float)) or not min_usd >= 0:
        raise InputError(f"{source}: venue_discovery.min_quote_usd: expected a non-negative number, got {min_usd!r}")
    oracles = _parse_oracles(data.get("oracles"), tokens, source)
    return AddressBook(
        oracles=oracles,
        v2_factory=v2_factory, v3_factory=v3_factory, venue_quotes=quotes, v3_fee_tiers=tuple(tiers_raw),
        min_venue_quote_usd=float(min_usd),
        name=str(data.get("name") or Path(source).stem), chain_id=chain_id,
        multicall3=_addr(data.get("multicall3") or "0xcA11bde05977b3631167028862bE2a173976CA11",
                         f"{source}: field multicall3"),
        tokens=tokens, feeds=feeds, aave_v3=tuple(entries), morpho_blue=morpho, v2_pairs=v2, v3_pools=v3,
        start_block=base_start, source=source, raw=dict(data))


def _parse_oracles(raw: Any, tokens: Mapping[str, TokenInfo], source: str) -> dict[str, OracleEntry]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InputError(f"{source}: oracles: expected an object (address -> entry)")
    out: dict[str, OracleEntry] = {}
    for key, e in raw.items():
        where = f"{source}: oracles.{key}"
        addr = _addr(key, where)
        if not isinstance(e, Mapping):
            raise InputError(f"{where}: expected an object (asset, quote, kind, type, deviation, heartbeat_s, ref)")
        kind = e.get("kind", "market")
        if kind not in ORACLE_KINDS:
            raise InputError(f"{where}.kind: must be one of {', '.join(ORACLE_KINDS)}, got {kind!r}")
        syms = {}
        for f in ("asset", "quote"):
            v = e.get(f)
            if v is not None and v not in tokens:
                raise InputError(f"{where}.{f}: token {v!r} is not in tokens")
            syms[f] = v
        if kind != "fixed" and syms["asset"] is None:
            raise InputError(f"{where}.asset: a {kind} source needs the asset it prices")
        dev, beat = e.get("deviation"), e.get("heartbeat_s")
        if dev is not None and (isinstance(dev, bool) or not isinstance(dev, (int, float)) or not 0 <= dev < 1):
            raise InputError(f"{where}.deviation: expected a fraction in [0, 1) (0.005 = 0.5%), got {dev!r}")
        if beat is not None and (isinstance(beat, bool) or not isinstance(beat, (int, float)) or not beat > 0):
            raise InputError(f"{where}.heartbeat_s: expected seconds > 0, got {beat!r}")
        ref = e.get("ref")
        if (dev is not None or beat is not None) and not (isinstance(ref, str) and ref.strip()):
            raise InputError(f"{where}.ref: deviation and heartbeat_s are not on chain; give the published "
                             f"source of the figures (e.g. the feed's data.chain.link page)")
        typ = e.get("type")
        if typ is not None and not isinstance(typ, str):
            raise InputError(f"{where}.type: expected a label string")
        out[addr.lower()] = OracleEntry(addr, syms["asset"], syms["quote"], kind, typ,
                                        None if dev is None else float(dev), None if beat is None else float(beat),
                                        ref if isinstance(ref, str) else None)
    return out


def builtin_books() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BOOKS_DIR.glob("*.json"))}


def load_book(spec: str | os.PathLike | Mapping[str, Any]) -> AddressBook:
    """An address book from a built-in name ("mainnet"), a JSON/YAML file path, or a mapping."""
    if isinstance(spec, Mapping):
        return parse_book(spec)
    builtin = builtin_books()
    if isinstance(spec, str) and spec in builtin:
        path = builtin[spec]
    else:
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"address book {spec!r}: no such file and not a built-in book "
                             f"({', '.join(builtin) or 'none'})")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except Exception as exc:  # yaml errors carry their own line/column
        raise InputError(f"{path}: invalid YAML: {exc}") from None
    return parse_book(data, str(path))
