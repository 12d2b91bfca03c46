"""Address books: where a chain's protocols, tokens, feeds and DEX pools live.

Three sources, one shape (the devnet's address-book JSON, see docs/snapshot-format.md "Address
books"): the built-in `mainnet` book (defirisk/books/mainnet.json), the devnet's own book written by
`defirisk devnet up/build`, and any JSON or YAML file a user writes for another chain or another Aave
fork. Validation happens here, at the edge; the readers receive a typed, frozen `AddressBook`.

`aave_v3` may be one object (the devnet) or a list of markets (mainnet: main, lido, spark); each has
`pool` and/or `pool_addresses_provider`, an optional `market` name, `start_block` (first block to
scan for Borrow events) and `version` (overrides the POOL_REVISION guess, e.g. "3.0" for Spark).
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
    return AddressBook(
        name=str(data.get("name") or Path(source).stem), chain_id=chain_id,
        multicall3=_addr(data.get("multicall3") or "0xcA11bde05977b3631167028862bE2a173976CA11",
                         f"{source}: field multicall3"),
        tokens=tokens, feeds=feeds, aave_v3=tuple(entries), morpho_blue=morpho, v2_pairs=v2, v3_pools=v3,
        start_block=base_start, source=source, raw=dict(data))


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
