"""Take a snapshot of a chain: pin one block, discover, read, build a `Snapshot`, write it atomically.

This is the orchestration layer over the readers (defirisk/protocols, defirisk/markets/oracles.py,
defirisk/markets/dex.py). It only converts the readers' exact integers into the snapshot's units
(whole tokens, USD floats) and names; the protocol logic lives in the readers.

Prices in assets.csv: a token listed on an Aave market takes its AaveOracle price (what Aave's
liquidations use); otherwise the address book's Chainlink feed; otherwise (a Morpho-only collateral)
its Morpho oracle price times the loan token's USD price. The Morpho market's own oracle price is
kept in markets.json (`params.oracle_price`) so the exact on-chain trigger is not lost.

Oracle sources: after every market is read, each protocol's price source per (market, asset) is
classified at the same block (protocols' `read_oracle_sources`, defirisk/markets/oracle_sources.py) and
written into markets.json as `assets.SYM.oracle`; sources that could not be classified are listed in
manifest.json `assumptions.oracles`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from defirisk.addressbook import AddressBook, load_book
from defirisk.chain.logs import DiscoveryCache, LogScanner
from defirisk.chain.multicall import Multicaller
from defirisk.chain.rpc import BlockRef, RpcClient, connect
from defirisk.errors import ChainError, InputError
from defirisk.markets import dex, oracle_sources, oracles
from defirisk.model import SNAPSHOT_FORMAT, Asset, MarketParams, Positions, Snapshot
from defirisk.protocols import aave_v3, morpho_blue
from defirisk.redact import redact_url

SUPPORTED = ("aave-v3", "morpho-blue")
Progress = Callable[[str, int, int], None]


@dataclass
class SnapshotRun:
    """What `take_snapshot` did: the snapshot, where it went, and counts/timings for reports."""

    snapshot: Snapshot
    path: Path | None
    block: BlockRef
    accounts: dict[str, int]  # protocol -> accounts with debt read
    discovered: dict[str, int]  # protocol -> candidate accounts from logs
    seconds: dict[str, float] = field(default_factory=dict)
    calls: int = 0  # view calls made through multicall
    requests: int = 0  # HTTP requests
    skipped: list[dict[str, str]] = field(default_factory=list)  # markets left out: protocol, market, id, reason

    @property
    def total_accounts(self) -> int:
        return sum(self.accounts.values())


def parse_protocols(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    if spec is None:
        return SUPPORTED
    items = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    for p in items:
        if p not in SUPPORTED:
            raise InputError(f"protocol {p!r} has no chain reader (readers: {', '.join(SUPPORTED)})")
    if not items:
        raise InputError("no protocols given")
    return tuple(dict.fromkeys(items))


class _Symbols:
    """Token address -> unique snapshot symbol (book names first; clashes get an address suffix)."""

    def __init__(self, book: AddressBook):
        self.by_addr: dict[str, str] = {}
        self.decimals: dict[str, int] = {}
        self.address: dict[str, str] = {}
        for t in book.tokens.values():
            self.add(t.address, t.symbol, t.decimals)

    def add(self, address: str, symbol: str, decimals: int) -> str:
        key = address.lower()
        if key in self.by_addr:
            return self.by_addr[key]
        sym = symbol
        if sym in self.address and self.address[sym].lower() != key:
            sym = f"{symbol}-{address[2:8]}"
        self.by_addr[key] = sym
        self.address[sym] = address
        self.decimals[sym] = decimals
        return sym


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def take_snapshot(rpc_url: str | None = None, block: int | None = None,
                  protocols: str | Sequence[str] | None = None, out: str | Path | None = None,
                  book: AddressBook | str | Path | Mapping[str, Any] | None = None,
                  progress: Progress | None = None, *, cache: DiscoveryCache | None | bool = True,
                  positions_format: str = "auto", scenario: str | Path | None = None) -> SnapshotRun:
    """Snapshot Aave V3 and/or Morpho Blue at one block and (when `out` is given) write it.

    rpc_url: node URL; None snapshots the default devnet (started, or loaded from its cached state).
    block: block number to pin (default: latest). protocols: "aave-v3,morpho-blue" or a sequence.
    book: an AddressBook, a built-in name ("mainnet"), a file, or a mapping; default: "mainnet" for
    chain id 1, the devnet's own book without rpc_url. scenario: devnet scenario when rpc_url is None
    (default: the default scenario). cache: True = the default discovery cache,
    False/None = no cache, or a DiscoveryCache.
    Raises ChainError (unreachable RPC, wrong chain id, missing code, wrong interface) and InputError.
    """
    protos = parse_protocols(protocols)
    if rpc_url is None:
        from defirisk.devnet import running_devnet

        with running_devnet(scenario, log=(lambda msg: progress(msg, 1, 1)) if progress else None) as dn:
            return take_snapshot(dn.rpc_url, block, protos, out, book if book is not None else dn.book,
                                 progress, cache=cache, positions_format=positions_format)
    progress = progress or _quiet
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    expected = None
    if book is not None and not isinstance(book, AddressBook):
        book = load_book(book)
    if book is not None:
        expected = book.chain_id
    client = connect(rpc_url, expected_chain_id=expected)
    try:
        if book is None:
            if client.chain_id() != 1:
                raise InputError(f"chain id {client.chain_id()} at {client.display_url} has no built-in address "
                                 f"book; pass one (--book FILE)")
            book = load_book("mainnet")
        ref = client.pin(block)
        progress(f"pinned block {ref.number}", 1, 1)
        mc = Multicaller(client, ref, address=book.multicall3)
        mc._check_aggregator()
        own_cache = False
        if cache is True:
            cache, own_cache = DiscoveryCache(), True
        elif cache is False:
            cache = None
        try:
            run = _read_all(client, mc, ref, book, protos, cache, progress, seconds)
        finally:
            if own_cache and cache is not None:
                cache.close()
        client.verify_pin(ref)
        snap = _build_snapshot(run, ref, book, client, protos)
        seconds["read_total"] = time.perf_counter() - t0
        path = None
        if out is not None:
            from defirisk.snapshot import write_snapshot

            t1 = time.perf_counter()
            path = write_snapshot(snap, out, positions_format=positions_format)
            seconds["write"] = time.perf_counter() - t1
        seconds["total"] = time.perf_counter() - t0
        return SnapshotRun(snap, path, ref, run["accounts"], run["discovered"], seconds, mc.calls_sent,
                           client.requests_sent, skipped=list(run["skipped"]))
    finally:
        client.close()


def _read_all(client: RpcClient, mc: Multicaller, ref: BlockRef, book: AddressBook, protos: Sequence[str],
              cache: DiscoveryCache | None, progress: Progress, seconds: dict[str, float]) -> dict[str, Any]:
    symbols = _Symbols(book)
    known = book.symbols_by_address()
    prices: dict[str, float] = {}
    oracle_of: dict[str, str] = {}
    # (protocol, market, params, assets): MarketParams are made once the oracle sources are read.
    raw_markets: list[tuple[str, str, dict, dict]] = []
    aave_read: list[aave_v3.AaveMarket] = []
    morpho_read: list[tuple[str, morpho_blue.MorphoMarket]] = []
    cols: dict[str, list] = {k: [] for k in ("protocol", "market", "account", "asset", "side", "amount", "emode")}
    accounts: dict[str, int] = {}
    discovered: dict[str, int] = {}
    used_assets: set[str] = set()
    collateral: set[str] = set()  # assets that can be seized and sold: the ones that need venues

    def add_row(proto, market, account, sym, side, amount, emode=0):
        cols["protocol"].append(proto)
        cols["market"].append(market)
        cols["account"].append(account)
        cols["asset"].append(sym)
        cols["side"].append(side)
        cols["amount"].append(amount)
        cols["emode"].append(emode)
        used_assets.add(sym)
        if side == "collateral":
            collateral.add(sym)

    if "aave-v3" in protos:
        if not book.aave_v3:
            raise InputError(f"address book {book.name} has no aave_v3 entry")
        for entry in book.aave_v3:
            t = time.perf_counter()
            market = aave_v3.read_market(client, mc, pool=entry.pool, provider=entry.provider, name=entry.market,
                                         known_symbols=known, version=entry.version)
            sym_of = {}
            for r in market.reserves:
                sym = symbols.add(r.asset, r.symbol, r.decimals)
                sym_of[r.asset] = sym
                prices.setdefault(sym, r.price / market.base_currency_unit)
                oracle_of.setdefault(sym, f"aave-v3:{entry.market}")
            # Re-key the market's symbols to the snapshot's unique ones.
            market = _rename_reserves(market, sym_of)
            params, assets = aave_v3.market_params(market)
            raw_markets.append(("aave-v3", entry.market, params, assets))
            aave_read.append(market)
            used_assets.update(assets)
            collateral.update(a for a, ap in assets.items() if ap.get("liquidation_threshold", 0) > 0)
            seconds[f"aave-v3:{entry.market}:market"] = time.perf_counter() - t
            t = time.perf_counter()
            cands = aave_v3.discover_accounts(
                client, ref, market.pool, entry.start_block, cache=cache, market=entry.market,
                progress=lambda d, n: progress(f"aave-v3 {entry.market}: scanning Borrow logs", d, n))
            seconds[f"aave-v3:{entry.market}:discover"] = time.perf_counter() - t
            t = time.perf_counter()
            accts = aave_v3.read_accounts(
                mc, market, cands,
                progress=lambda d, n: progress(f"aave-v3 {entry.market}: reading accounts", d, n))
            seconds[f"aave-v3:{entry.market}:read"] = time.perf_counter() - t
            dec = {r.asset: r.decimals for r in market.reserves}
            for acct in accts:
                for asset, raw in acct.collateral.items():
                    add_row("aave-v3", entry.market, acct.address, sym_of[asset], "collateral",
                            raw / 10 ** dec[asset], acct.emode)
                for asset, raw in acct.debt.items():
                    add_row("aave-v3", entry.market, acct.address, sym_of[asset], "debt",
                            raw / 10 ** dec[asset], acct.emode)
            key = f"aave-v3:{entry.market}"
            accounts[key] = len(accts)
            discovered[key] = len(cands)

    skipped: list[dict[str, str]] = []
    if "morpho-blue" in protos:
        m = book.morpho_blue
        if m is None:
            raise InputError(f"address book {book.name} has no morpho_blue entry")
        t = time.perf_counter()
        ids = morpho_blue.discover_markets(client, ref, m.morpho, m.start_block, cache=cache)
        ids = list(dict.fromkeys(ids + [i for i in m.market_ids]))
        read = morpho_blue.read_markets(client, mc, m.morpho, ids, ref, known_symbols=known)
        for sk in read.skipped:
            _skip(skipped, progress, sk.as_dict())
        mkts = _price_morpho_tokens(mc, ref, book, symbols, prices, oracle_of, read.markets, skipped, progress)
        seconds["morpho-blue:markets"] = time.perf_counter() - t
        t = time.perf_counter()
        pairs = morpho_blue.discover_borrowers(
            client, ref, m.morpho, m.start_block, cache=cache,
            progress=lambda d, n: progress("morpho-blue: scanning Borrow logs", d, n))
        seconds["morpho-blue:discover"] = time.perf_counter() - t
        t = time.perf_counter()
        progress("morpho-blue: reading positions", 0, len(pairs))
        positions = morpho_blue.read_positions(mc, m.morpho, mkts, pairs)
        progress("morpho-blue: reading positions", len(pairs), len(pairs))
        seconds["morpho-blue:read"] = time.perf_counter() - t
        names: dict[str, str] = {}
        taken: set[str] = set()
        for mk in mkts:
            lsym = symbols.add(mk.loan_token, mk.loan_symbol, mk.loan_decimals)
            csym = symbols.add(mk.collateral_token, mk.collateral_symbol, mk.collateral_decimals)
            mk = _rename_morpho(mk, lsym, csym)
            name = morpho_blue.market_name(mk, taken)
            taken.add(name)
            names[mk.id] = name
            params = morpho_blue.market_params(mk)
            raw_markets.append(("morpho-blue", name, params, {csym: {}, lsym: {}}))
            morpho_read.append((name, mk))
            used_assets.update((csym, lsym))
            collateral.add(csym)
        by_id = {mk.id: mk for mk in mkts}
        for p in positions:
            mk = by_id[p.market_id]
            lsym = symbols.by_addr[mk.loan_token.lower()]
            csym = symbols.by_addr[mk.collateral_token.lower()]
            add_row("morpho-blue", names[p.market_id], p.account, csym, "collateral",
                    p.collateral / 10 ** mk.collateral_decimals)
            add_row("morpho-blue", names[p.market_id], p.account, lsym, "debt",
                    p.borrowed / 10 ** mk.loan_decimals)
        accounts["morpho-blue"] = len({p.account for p in positions})
        discovered["morpho-blue"] = len(pairs)
    t = time.perf_counter()
    specs = _read_oracle_sources(mc, book, aave_read, morpho_read)
    seconds["oracle_sources"] = time.perf_counter() - t
    run_venues, venue_summary = _read_venues(mc, book, symbols, prices, oracle_of, used_assets, collateral,
                                             progress)
    missing = sorted(s for s in used_assets if s not in prices)
    if missing:
        raise ChainError(f"no USD price for {', '.join(missing)}: add a Chainlink feed for it to the address "
                         f"book's feeds")
    in_assets_csv = set(used_assets) | {v["quote"] for vs in run_venues.values() for v in vs}
    markets, assumptions = _attach_oracles(raw_markets, specs, in_assets_csv, progress)
    return {"symbols": symbols, "prices": prices, "oracle_of": oracle_of, "markets": markets, "cols": cols,
            "accounts": accounts, "discovered": discovered, "venues": run_venues, "used": used_assets,
            "skipped": skipped, "venue_discovery": venue_summary, "oracle_assumptions": assumptions}


def _read_oracle_sources(mc: Multicaller, book: AddressBook, aave_read: Sequence[aave_v3.AaveMarket],
                         morpho_read: Sequence[tuple[str, morpho_blue.MorphoMarket]]
                         ) -> dict[tuple[str, str], dict[str, oracle_sources.OracleSpec]]:
    """{(protocol, market name): {symbol: spec}} for every market read, at the pinned block.

    Aave first: its plain sources become the known feeds of their assets (a CAPO adapter's base feed,
    a Morpho oracle's feeds are then recognised as that asset's market price)."""
    feeds = oracle_sources.FeedBook(book)
    out: dict[tuple[str, str], dict[str, oracle_sources.OracleSpec]] = {}
    if aave_read:
        for name, by_sym in aave_v3.read_oracle_sources(mc, aave_read, feeds).items():
            out[("aave-v3", name)] = by_sym
    if morpho_read:
        got = morpho_blue.read_oracle_sources(mc, [mk for _, mk in morpho_read], feeds)
        for name, mk in morpho_read:
            coll, loan = got[mk.id]
            if mk.collateral_symbol != mk.loan_symbol:  # one token on both sides: nothing to tell apart
                out[("morpho-blue", name)] = {mk.collateral_symbol: coll, mk.loan_symbol: loan}
    return out


def _attach_oracles(raw_markets: Sequence[tuple[str, str, dict, dict]],
                    specs: Mapping[tuple[str, str], Mapping[str, oracle_sources.OracleSpec]],
                    in_assets_csv: set[str], progress: Progress) -> tuple[list[MarketParams], list[dict[str, str]]]:
    """MarketParams with each asset's `oracle` object, and the manifest's oracle assumptions.

    A ratio on an asset that is not in assets.csv cannot be evaluated: it becomes unclassified."""
    markets: list[MarketParams] = []
    assumptions: list[dict[str, str]] = []
    for protocol, name, params, assets in raw_markets:
        by_sym = specs.get((protocol, name), {})
        assets = {sym: dict(fields) for sym, fields in assets.items()}
        for sym in sorted(by_sym):
            spec = by_sym[sym]
            if spec.of is not None and spec.of not in in_assets_csv:
                spec = oracle_sources.unclassified(spec.source, f"{spec.type} priced in {spec.of}, which is not an "
                                                                f"asset of this snapshot")
            assets.setdefault(sym, {})["oracle"] = spec.as_dict()
            if spec.reason:
                entry = oracle_sources.assumption(protocol, name, sym, spec)
                assumptions.append(entry)
                what = "modelled as its market price" if spec.unclassified else spec.type
                progress(f"note: {protocol} {name} {sym} oracle {entry['source']} {what}: {spec.reason}", 1, 1)
        markets.append(MarketParams(protocol, name, params, assets))
    return markets, assumptions


def _skip(skipped: list[dict[str, str]], progress: Progress, entry: dict[str, str]) -> None:
    """Record a skipped market (manifest `skipped_markets`) and say so on the progress channel."""
    skipped.append(entry)
    progress(f"warning: {entry['protocol']} market {entry['market']} ({entry['id']}) skipped: {entry['reason']}", 1, 1)


def _price_morpho_tokens(mc: Multicaller, ref: BlockRef, book: AddressBook, symbols: _Symbols,
                         prices: dict[str, float], oracle_of: dict[str, str],
                         mkts: Sequence[morpho_blue.MorphoMarket], skipped: list[dict[str, str]],
                         progress: Progress) -> list[morpho_blue.MorphoMarket]:
    """USD prices for the tokens of the Morpho markets read; the markets whose tokens get one.

    Order: a price already known (an Aave reserve's AaveOracle price), else the book's Chainlink
    feed, else (collateral only) the market's own oracle price times the loan token's USD price. A
    market whose loan token has none of these cannot be put in USD, so it is skipped and recorded
    like a market whose oracle reverts; one exotic loan token must not stop a mainnet snapshot.
    """
    def book_symbol(addr: str) -> str | None:
        return symbols.by_addr.get(addr.lower())

    want = {s for mk in mkts for s in (book_symbol(mk.loan_token), book_symbol(mk.collateral_token))
            if s is not None and s not in prices and s in book.feeds}
    feeds = {s: book.feeds[s] for s in sorted(want)}
    readings, failures = oracles.read_feeds_lenient(mc, feeds, ref.timestamp) if feeds else ({}, {})
    for s, r in readings.items():
        prices[s] = r.price
        oracle_of[s] = f"chainlink:{r.feed}"
    # A collateral priced through its market's oracle can be another market's loan token, so
    # repeat until no market gains a price (markets are few; this is cheap).
    pending = list(mkts)
    kept_ids: set[str] = set()
    progress_made = True
    while pending and progress_made:
        progress_made = False
        for mk in list(pending):
            lsym = book_symbol(mk.loan_token)
            if lsym is None or lsym not in prices:
                continue
            csym = symbols.add(mk.collateral_token, mk.collateral_symbol, mk.collateral_decimals)
            if csym not in prices:
                # Whole loan tokens per whole collateral token (the market's oracle) times loan USD.
                prices[csym] = morpho_blue.market_params(mk)["oracle_price"] * prices[lsym]
                oracle_of[csym] = f"morpho-oracle:{mk.oracle}"
            kept_ids.add(mk.id)
            pending.remove(mk)
            progress_made = True
    for mk in pending:
        lsym = book_symbol(mk.loan_token)
        why = (f" (its book feed failed: {failures[lsym]})" if lsym in failures else
               " (not an Aave reserve of this snapshot, no Chainlink feed for it in the address book, and no "
               "priced market whose collateral it is)")
        name = f"{mk.collateral_symbol}/{mk.loan_symbol}-{morpho_blue.lltv_text(mk.lltv)}"
        _skip(skipped, progress, {"protocol": "morpho-blue", "market": name, "id": mk.id,
                                  "reason": f"no USD price for loan token {mk.loan_symbol} ({mk.loan_token}){why}"})
    kept = [mk for mk in mkts if mk.id in kept_ids]
    return kept


def _rename_reserves(market: aave_v3.AaveMarket, sym_of: Mapping[str, str]) -> aave_v3.AaveMarket:
    from dataclasses import replace

    return replace(market, reserves=tuple(replace(r, symbol=sym_of[r.asset]) for r in market.reserves))


def _rename_morpho(mk: morpho_blue.MorphoMarket, lsym: str, csym: str) -> morpho_blue.MorphoMarket:
    from dataclasses import replace

    return replace(mk, loan_symbol=lsym, collateral_symbol=csym)


def _read_venues(mc: Multicaller, book: AddressBook, symbols: _Symbols, prices: dict[str, float],
                 oracle_of: dict[str, str], used: set[str], collateral: set[str],
                 progress: Progress) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Venue dicts per asset, and a summary of the discovery for the manifest (docs/readers.md "DEX venues").

    Assets: the book's stablecoin quotes (`book.venue_quotes`, each with a USD price) are USD; every
    other priced asset of the snapshot is volatile. The factories (`dex.discover_pairs`, one batch) are
    asked for pools of every volatile asset against each stablecoin and of every collateral asset
    against every other volatile asset. Stablecoin pools are kept when their stablecoin side holds at
    least `book.min_venue_quote_usd`; pools between two volatile assets are listed once, under the
    asset further from USD (`dex.plan_cross_pools`), quoted in the other (a cross venue, routed by the
    solver), kept when the side they pay out in holds as much in USD. Venues are emitted for collateral
    assets, for assets with a pool in the book, and for every asset their cross venues are quoted in
    (transitively: the proceeds must have a route to USD). Pools listed in the book are read whatever
    their size, directed by the same rule.
    """
    quote_syms = [q for q in book.venue_quotes if q in book.tokens]
    # Quotes that are not Aave reserves here still need a USD price: the book's feeds, leniently.
    want = {q: book.feeds[q] for q in quote_syms if q not in prices and q in book.feeds}
    if want:
        readings, _failed = oracles.read_feeds_lenient(mc, want, mc.block.timestamp)
        for q, r in readings.items():
            prices[q] = r.price
            oracle_of[q] = f"chainlink:{r.feed}"
    quotes = [q for q in quote_syms if q in prices]
    quote_set = set(quotes)
    # Volatile assets: every priced asset of the snapshot that is not a stablecoin quote.
    nodes = sorted(s for s in used if s not in quote_set and s in symbols.address and s in prices)
    node_set = set(nodes)

    jobs: list[dex.PoolRef] = []
    seen: set[str] = set()
    for (b, q), addr in book.v2_pairs.items():
        jobs.append(dex.PoolRef("v2", addr, book.tokens[b], book.tokens[q], 3000))
    for (b, q, f), addr in book.v3_pools.items():
        jobs.append(dex.PoolRef("v3", addr, book.tokens[b], book.tokens[q], f))
    listed: list[dex.PoolRef] = []  # book order; stablecoin pools with the stablecoin as quote
    listed_cross: list[dex.PoolRef] = []
    listed_order: list[dex.PoolRef] = []  # both, in book order

    def warn(p: dex.PoolRef, why: str) -> None:
        progress(f"warning: uniswap-{p.kind} pool {p.base.symbol}/{p.quote.symbol} {p.address} not used: {why}", 1, 1)

    for p in jobs:
        a, q = p.base.symbol, p.quote.symbol
        if p.address.lower() in seen:
            continue
        if a in quote_set and q in quote_set:
            if a in used:
                warn(p, "both tokens are venue quotes (stablecoins), which keep their price")
            continue
        if a in quote_set and q not in quote_syms:  # written quote first
            p, a, q = p.flipped(), q, a
        if a not in used:
            continue
        if q not in quote_set:
            if q in quote_syms:
                warn(p, "its quote token has no USD price")
                continue
            if q not in node_set or a not in node_set:
                warn(p, f"{q} is neither one of the venue quotes {'/'.join(quote_syms)} nor a priced asset of "
                        f"this snapshot")
                continue
            listed_cross.append(p)
        else:
            listed.append(p)
        listed_order.append(p)
        seen.add(p.address.lower())

    def info(sym: str) -> dex.TokenInfo:
        return dex.TokenInfo(sym, symbols.address[sym], symbols.decimals[sym])

    quote_infos = [dex.TokenInfo(q, book.tokens[q].address, book.tokens[q].decimals) for q in quotes]
    stable_pairs = [(info(s), qi) for s in nodes for qi in quote_infos]
    cross_pairs = [(info(a), info(b)) for i, a in enumerate(nodes) for b in nodes[i + 1:]
                   if a in collateral or b in collateral]
    found = [p for p in dex.discover_pairs(mc, stable_pairs + cross_pairs, v2_factory=book.v2_factory,
                                           v3_factory=book.v3_factory, fee_tiers=book.v3_fee_tiers)
             if p.address.lower() not in seen]
    found_stable = [p for p in found if p.quote.symbol in quote_set]
    found_cross = [p for p in found if p.quote.symbol not in quote_set]
    balances = dex.pool_balances(mc, found + listed + listed_cross)
    bal = {id(p): b for p, b in zip(found + listed + listed_cross, balances)}

    def held_usd(p: dex.PoolRef, sym: str) -> float:
        """USD value of the `sym` tokens pool p holds (0 when unreadable)."""
        raw = bal[id(p)][0 if sym == p.base.symbol else 1]
        tok = p.base if sym == p.base.symbol else p.quote
        return 0.0 if not raw else raw / 10 ** tok.decimals * prices[sym]

    depth: dict[str, float] = {}  # USD the kept stablecoin pools of each asset hold (direction rule)
    kept_stable, small = [], []
    for p in listed:
        depth[p.base.symbol] = depth.get(p.base.symbol, 0.0) + held_usd(p, p.quote.symbol)
    for p in found_stable:
        usd = held_usd(p, p.quote.symbol)
        if usd >= book.min_venue_quote_usd and usd > 0:
            kept_stable.append(p)
            seen.add(p.address.lower())
            depth[p.base.symbol] = depth.get(p.base.symbol, 0.0) + usd
        else:
            small.append(p.address)

    cross = listed_cross + found_cross
    plan = dex.plan_cross_pools(
        [(p.base.symbol, p.quote.symbol) for p in cross], depth,
        {p.base.symbol for p in listed + kept_stable},
        lambda i, sym: held_usd(cross[i], sym), book.min_venue_quote_usd,
        sized=[False] * len(listed_cross) + [True] * len(found_cross))
    directed: dict[int, dex.PoolRef] = {}
    for i, (b, _q) in plan.direction.items():
        directed[i] = cross[i] if cross[i].base.symbol == b else cross[i].flipped()
    for i in plan.dust:
        small.append(cross[i].address)
    unrouted = [cross[i].address for i in plan.unrouted]
    for i in plan.unrouted:
        if i < len(listed_cross):
            warn(cross[i], "neither of its tokens has a pool against a venue quote (no route to USD)")

    # Assets whose sales need routes: collateral, assets with a book pool, and (transitively) the
    # quotes their cross pools pay in.
    sellers = {s for s in collateral if s in node_set} | {p.base.symbol for p in listed}
    sellers |= {directed[i].base.symbol for i in range(len(listed_cross)) if i in directed}
    quotes_of: dict[str, set[str]] = {}
    for p in directed.values():
        quotes_of.setdefault(p.base.symbol, set()).add(p.quote.symbol)
    stack = sorted(sellers)
    while stack:
        for w in quotes_of.get(stack.pop(), ()):
            if w not in sellers:
                sellers.add(w)
                stack.append(w)

    as_read = {id(cross[i]): p for i, p in directed.items()}  # cross pools, directed
    stable_ids = {id(p) for p in listed}
    listed_all = [as_read.get(id(p), p) for p in listed_order if id(p) in as_read or id(p) in stable_ids]
    keep_found = {id(p) for p in kept_stable if p.base.symbol in sellers}
    keep_found |= {id(cross[i]) for i, p in directed.items() if i >= len(listed_cross) and p.base.symbol in sellers}
    kept = [as_read.get(id(p), p) for p in found if id(p) in keep_found]

    venues: dict[str, list[dict]] = {}
    todo = listed_all + kept
    for i, p in enumerate(todo):
        progress("DEX venues", i, len(todo))
        v = dex.read_v2_venue(mc, p.address, p.base, p.quote) if p.kind == "v2" else \
            dex.read_v3_venue(mc, p.address, p.base, p.quote)
        venues.setdefault(p.base.symbol, []).append(v)
    progress("DEX venues", len(todo), len(todo))
    summary = {"quotes": quotes, "v2_factory": book.v2_factory, "v3_factory": book.v3_factory,
               "v3_fee_tiers": list(book.v3_fee_tiers), "min_quote_usd": book.min_venue_quote_usd,
               "listed": len(listed_all), "discovered": len(found), "kept": len(kept),
               "below_min_quote_usd": small,
               "cross": sum(1 for p in todo if p.quote.symbol not in quote_set),
               "no_usd_route": unrouted}
    return venues, summary


def _build_snapshot(run: Mapping[str, Any], ref: BlockRef, book: AddressBook, client: RpcClient,
                    protos: Sequence[str]) -> Snapshot:
    symbols: _Symbols = run["symbols"]
    prices = run["prices"]
    used = set(run["used"]) | {v["quote"] for vs in run["venues"].values() for v in vs}
    assets = {}
    for sym in sorted(used):
        assets[sym] = Asset(sym, symbols.decimals[sym], float(prices[sym]), symbols.address[sym],
                            run["oracle_of"].get(sym), 0.0)
    cols = run["cols"]
    frame = pd.DataFrame({k: np.asarray(v, dtype=object if k not in ("amount", "emode") else None)
                          for k, v in cols.items()})
    if len(frame) == 0:
        frame = pd.DataFrame({k: pd.Series([], dtype=float if k == "amount" else (int if k == "emode" else str))
                              for k in cols})
    from defirisk.model import Venue

    venues = {sym: tuple(Venue(sym, v["kind"], {k: x for k, x in v.items() if k != "kind"}) for v in vs)
              for sym, vs in run["venues"].items()}
    manifest = {
        "format": SNAPSHOT_FORMAT, "chain_id": client.chain_id(), "block_number": ref.number,
        "block_hash": ref.hash, "timestamp": ref.timestamp,
        "source": f"defirisk snapshot of {redact_url(client.display_url)} with address book {book.name}",
        "protocols": list(protos), "accounts": dict(run["accounts"]),
        "discovered_accounts": dict(run["discovered"]), "address_book": book.name,
        # Markets that could not be read (oracle/IRM reverts, no USD price): absent from positions.
        "skipped_markets": [dict(x) for x in run["skipped"]],
        "venue_discovery": dict(run["venue_discovery"]),
        # Oracle sources written as the asset's market price because the readers could not classify
        # them (or classified with an approximation): {protocol, market, asset, source, reason}.
        "assumptions": {"oracles": [dict(x) for x in run["oracle_assumptions"]]},
    }
    return Snapshot(manifest=manifest, assets=assets, positions=Positions(frame), markets=tuple(run["markets"]),
                    venues=venues)
