"""Aave V3 reader (also Spark and other Aave V3 forks): market parameters and every borrower's
collateral and debt per reserve, at one pinned block.

Path (all reads at the pinned block, batched through Multicall3):
1. market: POOL_REVISION (missing/revert -> v3.0-style), reserves list, getReserveData per reserve
   (configuration bitmap, token addresses, reserve id), normalized income / variable debt (accrued to
   the block's timestamp by the pool itself), AaveOracle prices, e-mode categories.
2. accounts: `Borrow.onBehalfOf` from logs (no on-chain borrower list exists), kept when the user
   configuration bitmap still has a borrowing bit.
3. balances: for each reserve whose collateral bit is set, aToken.scaledBalanceOf; for each reserve
   whose borrowing bit is set, variableDebtToken.scaledBalanceOf (+ stable debt balanceOf on v3.0
   reserves that have stable debt). Balance = rayMul(scaled, index) exactly as the tokens compute it.
4. oracle sources (`read_oracle_sources`): what AaveOracle.getSourceOfAsset returns for each reserve,
   probed at the pinned block: a Chainlink-style aggregator (market price), BGD's CAPO adapters
   (ratio x base feed, with the ratio cap; the stable variant), a fixed-price adapter; anything else is
   written as market and listed as an assumption (docs/readers.md "Oracle sources").
Encoding (build calls) and decoding are pure; only `Multicaller.run` does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from defirisk.chain.abi import checksum, interface
from defirisk.chain.logs import DiscoveryCache, LogScanner, discover, topic_address
from defirisk.chain.multicall import Call, Multicaller
from defirisk.chain.rpc import BlockRef, RpcClient
from defirisk.errors import ChainError
from defirisk.markets import oracle_sources as osrc
from defirisk.markets.oracle_sources import FeedBook, OracleSpec

PROTOCOL = "aave-v3"
POOL = interface("AaveV3Pool")
PROVIDER = interface("AaveV3PoolAddressesProvider")
ORACLE = interface("AaveOracle")
SCALED = interface("AaveScaledBalanceToken")
STABLE = interface("AaveStableDebtToken")
ERC20 = interface("ERC20")
# BGD's price adapters (bgd-labs/aave-capo): CAPO for exchange-rate assets, its stable variant, fixed price.
CAPO = interface("AaveCapoAdapter")
CAPO_STABLE = interface("AaveCapoStableAdapter")
FIXED_ADAPTER = interface("AaveFixedPriceAdapter")
FEED = osrc.FEED

RAY = 10 ** 27
HALF_RAY = RAY // 2
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
MAX_EMODE_CATEGORY = 255
# POOL_REVISION -> release; anything below 4 (or no POOL_REVISION) behaves like v3.0.
_REVISIONS = ((11, "3.7"), (10, "3.6"), (9, "3.5"), (8, "3.4"), (7, "3.3"), (5, "3.2"), (4, "3.1"))


def ray_mul(a: int, b: int) -> int:
    """Aave WadRayMath.rayMul: a*b/RAY rounded half up."""
    return (a * b + HALF_RAY) // RAY


def version_from_revision(revision: int | None) -> str:
    if revision is None:
        return "3.0"
    for rev, name in _REVISIONS:
        if revision >= rev:
            return name
    return "3.0"


# -- configuration bitmaps (pure) --------------------------------------------------------------

def _bits(word: int, start: int, width: int) -> int:
    return (word >> start) & ((1 << width) - 1)


@dataclass(frozen=True)
class ReserveConfig:
    """ReserveConfigurationMap decoded. Percentages in basis points (1e4 = 100%)."""

    ltv_bps: int
    liquidation_threshold_bps: int
    liquidation_bonus_bps: int  # includes principal: 10500 = 5% bonus
    decimals: int
    active: bool
    frozen: bool
    borrowing_enabled: bool
    stable_borrowing_enabled: bool  # v3.0 only
    paused: bool
    borrowable_in_isolation: bool
    siloed_borrowing: bool
    flashloan_enabled: bool
    reserve_factor_bps: int
    borrow_cap: int  # whole tokens, 0 = none
    supply_cap: int
    liquidation_protocol_fee_bps: int  # share of the bonus
    emode_category: int  # v3.0/v3.1 only (bits 168-175); 0 = none
    unbacked_mint_cap: int
    debt_ceiling: int  # isolation mode, 2 decimals of the base currency; 0 = not isolated


def decode_reserve_config(word: int) -> ReserveConfig:
    return ReserveConfig(
        ltv_bps=_bits(word, 0, 16), liquidation_threshold_bps=_bits(word, 16, 16),
        liquidation_bonus_bps=_bits(word, 32, 16), decimals=_bits(word, 48, 8),
        active=bool(_bits(word, 56, 1)), frozen=bool(_bits(word, 57, 1)),
        borrowing_enabled=bool(_bits(word, 58, 1)), stable_borrowing_enabled=bool(_bits(word, 59, 1)),
        paused=bool(_bits(word, 60, 1)), borrowable_in_isolation=bool(_bits(word, 61, 1)),
        siloed_borrowing=bool(_bits(word, 62, 1)), flashloan_enabled=bool(_bits(word, 63, 1)),
        reserve_factor_bps=_bits(word, 64, 16), borrow_cap=_bits(word, 80, 36),
        supply_cap=_bits(word, 116, 36), liquidation_protocol_fee_bps=_bits(word, 152, 16),
        emode_category=_bits(word, 168, 8), unbacked_mint_cap=_bits(word, 176, 36),
        debt_ceiling=_bits(word, 212, 40))


def user_config_ids(word: int) -> tuple[list[int], list[int]]:
    """(borrowing reserve ids, collateral reserve ids) from a user configuration bitmap.

    Bit 2*id is "borrowing", bit 2*id+1 "using as collateral" (UserConfiguration.sol code; its
    comment says the reverse)."""
    borrowing, collateral = [], []
    i = 0
    while word:
        pair = word & 3
        if pair & 1:
            borrowing.append(i)
        if pair & 2:
            collateral.append(i)
        word >>= 2
        i += 1
    return borrowing, collateral


def bitmap_ids(word: int) -> list[int]:
    """Set bit positions of an e-mode asset bitmap (bit i = reserve id i)."""
    return [i for i in range(word.bit_length()) if (word >> i) & 1]


# -- market state --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reserve:
    asset: str
    symbol: str
    decimals: int
    id: int
    config: ReserveConfig
    a_token: str
    stable_debt_token: str
    variable_debt_token: str
    normalized_income: int  # ray, accrued to the pinned block
    normalized_debt: int  # ray, accrued to the pinned block
    price: int  # AaveOracle price in base currency units
    has_stable_debt: bool  # v3.0: stable debt token supply > 0 at the block
    oracle_source: str = ZERO_ADDRESS


@dataclass(frozen=True)
class EModeCategory:
    id: int
    ltv_bps: int
    liquidation_threshold_bps: int
    liquidation_bonus_bps: int
    label: str
    price_source: str  # v3.0 only; zero address = none
    collateral_ids: tuple[int, ...]  # reserve ids whose collateral gets the category's LT/LB
    borrowable_ids: tuple[int, ...]


@dataclass(frozen=True)
class AaveMarket:
    name: str
    pool: str
    provider: str
    oracle: str
    revision: int | None
    version: str
    base_currency_unit: int
    reserves: tuple[Reserve, ...]
    emode_categories: tuple[EModeCategory, ...]
    emode_price: Mapping[int, int] = field(default_factory=dict)  # category -> priceSource price

    def by_id(self) -> dict[int, Reserve]:
        return {r.id: r for r in self.reserves}


def _label(market: str, what: str) -> str:
    return f"{PROTOCOL} ({market}) {what}"


def _require_code(client: RpcClient, block: BlockRef, address: str, market: str, what: str) -> None:
    if not client.get_code(address, block):
        raise ChainError(f"{PROTOCOL} ({market}): no contract at {address} ({what}) at block {block.number}")


def read_market(client: RpcClient, mc: Multicaller, *, pool: str | None = None, provider: str | None = None,
                name: str = "main", known_symbols: Mapping[str, str] | None = None,
                version: str | None = None) -> AaveMarket:
    """Read an Aave V3 market's reserves, parameters, prices and e-mode categories.

    Give `pool` or `provider` (PoolAddressesProvider). `known_symbols` maps lower-case token address
    -> symbol (from the address book) so tokens keep the book's names. `version` overrides the
    revision-based guess (e.g. "3.0" for Spark).
    """
    block = mc.block
    if provider is None and pool is None:
        raise ChainError(f"{PROTOCOL} ({name}): address book gives neither pool nor pool_addresses_provider")
    if provider is None:
        _require_code(client, block, pool, name, "Pool")
        provider = mc.run([Call(pool, POOL.fn("ADDRESSES_PROVIDER"), label=_label(name, "Pool"))])[0]
    _require_code(client, block, provider, name, "PoolAddressesProvider")
    lab = _label(name, "PoolAddressesProvider")
    pool_p, oracle = mc.run([Call(provider, PROVIDER.fn("getPool"), label=lab),
                             Call(provider, PROVIDER.fn("getPriceOracle"), label=lab)])
    if pool is not None and pool.lower() != pool_p.lower():
        raise ChainError(f"{PROTOCOL} ({name}): pool {pool} does not match its provider's pool {pool_p}")
    pool = pool_p
    _require_code(client, block, oracle, name, "AaveOracle")
    lab = _label(name, f"Pool {pool}")
    revision, reserves_list = mc.run([Call(pool, POOL.fn("POOL_REVISION"), required=False, label=lab),
                                      Call(pool, POOL.fn("getReservesList"), label=lab)])
    ver = version or version_from_revision(revision)
    olab = _label(name, f"AaveOracle {oracle}")
    base_unit, base_currency = mc.run([Call(oracle, ORACLE.fn("BASE_CURRENCY_UNIT"), label=olab),
                                       Call(oracle, ORACLE.fn("BASE_CURRENCY"), label=olab)])
    if base_currency != ZERO_ADDRESS:
        raise ChainError(f"{PROTOCOL} ({name}): AaveOracle {oracle} quotes in {base_currency}, not USD; "
                         f"only USD-based markets are supported")
    known = {k.lower(): v for k, v in (known_symbols or {}).items()}
    calls: list[Call] = []
    for a in reserves_list:
        rl = _label(name, f"reserve {a}")
        calls += [Call(pool, POOL.fn("getReserveData"), (a,), label=rl),
                  Call(pool, POOL.fn("getReserveNormalizedIncome"), (a,), label=rl),
                  Call(pool, POOL.fn("getReserveNormalizedVariableDebt"), (a,), label=rl),
                  # Judged below so the error can name the reserve by symbol.
                  Call(oracle, ORACLE.fn("getAssetPrice"), (a,), required=False, label=rl),
                  Call(oracle, ORACLE.fn("getSourceOfAsset"), (a,), required=False, label=rl),
                  Call(a, ERC20.fn("symbol"), required=False, label=rl)]
    res = mc.run(calls)
    raw = []
    for i, a in enumerate(reserves_list):
        rd, income, debt_idx, price, source, sym = res[6 * i:6 * i + 6]
        raw.append((a, rd, income, debt_idx, price, source, sym))
    # v3.0 stable debt: only reserves whose stable debt token has supply need per-user reads.
    stable_calls = [Call(rd[9], ERC20.fn("totalSupply"), required=False, label=_label(name, f"stable debt {a}"))
                    for a, rd, *_ in raw]
    stable_supply = mc.run(stable_calls) if raw else []
    reserves = []
    for (a, rd, income, debt_idx, price, source, sym), st in zip(raw, stable_supply):
        cfg = decode_reserve_config(rd[0][0])
        symbol = known.get(a.lower()) or (sym if isinstance(sym, str) and sym.isprintable() and sym else a[:10])
        # Unlike a broken Morpho market, a reserve cannot be skipped: every account holding it would
        # get a wrong health factor (its collateral or debt would be missing from the sums).
        if price is None:
            raise ChainError(f"{PROTOCOL} ({name}): AaveOracle {oracle} cannot price reserve {symbol} ({a}) at "
                             f"block {getattr(block, 'number', block)}: getAssetPrice reverted (source {source or 'unknown'}); "
                             f"Aave health factors need every reserve's price, so the snapshot stops")
        if price == 0:
            raise ChainError(f"{PROTOCOL} ({name}): AaveOracle {oracle} prices reserve {symbol} ({a}) at 0")
        reserves.append(Reserve(
            asset=a, symbol=symbol, decimals=cfg.decimals, id=rd[7], config=cfg, a_token=rd[8],
            stable_debt_token=rd[9], variable_debt_token=rd[10], normalized_income=income,
            normalized_debt=debt_idx, price=price,
            has_stable_debt=bool(st) and rd[9] != ZERO_ADDRESS,
            oracle_source=source or ZERO_ADDRESS))
    categories, emode_price = _read_emode(mc, pool, oracle, ver, reserves, name)
    return AaveMarket(name, pool, provider, oracle, revision, ver, base_unit, tuple(reserves),
                      tuple(categories), emode_price)


def _read_emode(mc: Multicaller, pool: str, oracle: str, version: str, reserves: Sequence[Reserve],
                name: str) -> tuple[list[EModeCategory], dict[int, int]]:
    lab = _label(name, f"Pool {pool} e-mode")
    if version in ("3.0", "3.1"):
        # Category of each reserve lives in its configuration; the category carries LT/LB/priceSource.
        ids = sorted({r.config.emode_category for r in reserves if r.config.emode_category})
        datas = mc.run([Call(pool, POOL.fn("getEModeCategoryData"), (i,), label=lab) for i in ids])
        cats = []
        for i, d in zip(ids, datas):
            ltv, lt, lb, src, label = d
            members = tuple(r.id for r in reserves if r.config.emode_category == i)
            cats.append(EModeCategory(i, ltv, lt, lb, label, src, members, members))
        sources = [(c.id, c.price_source) for c in cats if c.price_source != ZERO_ADDRESS]
        # Aave v3.0 prices e-mode assets through the category's source via the AaveOracle.
        prices = mc.run([Call(oracle, ORACLE.fn("getAssetPrice"), (s,), label=lab) for _, s in sources])
        return cats, {cid: p for (cid, _), p in zip(sources, prices)}
    # v3.2+: categories are not listed in reserve configs; probe every id (cheap, one batch).
    ids = list(range(1, MAX_EMODE_CATEGORY + 1))
    calls = []
    for i in ids:
        calls += [Call(pool, POOL.fn("getEModeCategoryCollateralConfig"), (i,), label=lab),
                  Call(pool, POOL.fn("getEModeCategoryCollateralBitmap"), (i,), label=lab),
                  Call(pool, POOL.fn("getEModeCategoryBorrowableBitmap"), (i,), label=lab),
                  Call(pool, POOL.fn("getEModeCategoryLabel"), (i,), required=False, label=lab)]
    res = mc.run(calls)
    cats = []
    for k, i in enumerate(ids):
        (ltv, lt, lb), coll, borr, label = res[4 * k:4 * k + 4]
        if lt == 0:
            continue
        cats.append(EModeCategory(i, ltv, lt, lb, label or "", ZERO_ADDRESS, tuple(bitmap_ids(coll)),
                                  tuple(bitmap_ids(borr))))
    return cats, {}


# -- accounts ------------------------------------------------------------------------------------

def discover_accounts(client: RpcClient, block: BlockRef, pool: str, start_block: int, *,
                      cache: DiscoveryCache | None = None, scanner: LogScanner | None = None,
                      progress: Callable[[int, int], None] | None = None, market: str = "main") -> list[str]:
    """Every `Borrow.onBehalfOf` of `pool` from `start_block` to the pinned block (checksummed)."""
    topic = POOL.event("Borrow").topic0
    res = discover(client, protocol=f"{PROTOCOL}:{market}", contract=pool, stream="Borrow.onBehalfOf",
                   topics=[topic], extract=lambda log: [topic_address(log["topics"][2])],
                   start_block=start_block, block=block, cache=cache, scanner=scanner, progress=progress)
    return [checksum(a) for a in res.values]


@dataclass(frozen=True)
class AaveAccount:
    address: str
    emode: int
    collateral: Mapping[str, int]  # reserve asset -> raw token units (collateral bit set)
    debt: Mapping[str, int]  # reserve asset -> raw token units (variable + stable)


def read_accounts(mc: Multicaller, market: AaveMarket, accounts: Sequence[str], *,
                  progress: Callable[[int, int], None] | None = None) -> list[AaveAccount]:
    """Collateral and debt of each account that still borrows (others are dropped)."""
    pool = market.pool
    lab = _label(market.name, "user")
    first = mc.run([c for a in accounts for c in (Call(pool, POOL.fn("getUserConfiguration"), (a,), label=lab),
                                                  Call(pool, POOL.fn("getUserEMode"), (a,), label=lab))])
    by_id = market.by_id()
    plan: list[tuple[str, int, list[tuple[str, str, int]]]] = []  # account, emode, [(kind, asset, call idx)]
    calls: list[Call] = []
    for k, a in enumerate(accounts):
        word, emode = first[2 * k][0], first[2 * k + 1]
        borrowing, collateral = user_config_ids(word)
        if not borrowing:
            continue
        items = []
        for rid in collateral:
            r = by_id.get(rid)
            if r is None:
                raise ChainError(f"{PROTOCOL} ({market.name}): account {a} uses unknown reserve id {rid}")
            items.append(("coll", r.asset, len(calls)))
            calls.append(Call(r.a_token, SCALED.fn("scaledBalanceOf"), (a,), label=lab))
        for rid in borrowing:
            r = by_id.get(rid)
            if r is None:
                raise ChainError(f"{PROTOCOL} ({market.name}): account {a} uses unknown reserve id {rid}")
            items.append(("var", r.asset, len(calls)))
            calls.append(Call(r.variable_debt_token, SCALED.fn("scaledBalanceOf"), (a,), label=lab))
            if r.has_stable_debt:
                items.append(("stable", r.asset, len(calls)))
                calls.append(Call(r.stable_debt_token, STABLE.fn("balanceOf"), (a,), label=lab))
        plan.append((a, int(emode), items))
        if progress is not None and k % 5000 == 0:
            progress(k, len(accounts))
    values = mc.run(calls)
    reserves = {r.asset: r for r in market.reserves}
    out = []
    for a, emode, items in plan:
        coll: dict[str, int] = {}
        debt: dict[str, int] = {}
        for kind, asset, idx in items:
            v = values[idx]
            r = reserves[asset]
            if kind == "coll":
                bal = ray_mul(v, r.normalized_income)
                if bal:
                    coll[asset] = bal
            elif kind == "var":
                bal = ray_mul(v, r.normalized_debt)
                if bal:
                    debt[asset] = debt.get(asset, 0) + bal
            else:
                if v:
                    debt[asset] = debt.get(asset, 0) + v
        out.append(AaveAccount(a, emode, coll, debt))
    if progress is not None:
        progress(len(accounts), len(accounts))
    return out


# -- snapshot parts ------------------------------------------------------------------------------

def market_params(market: AaveMarket) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(params, assets) entries of markets.json for this market (docs/snapshot-format.md)."""
    by_id = market.by_id()
    cats = {}
    for c in market.emode_categories:
        entry: dict[str, Any] = {
            "ltv": c.ltv_bps / 1e4, "liquidation_threshold": c.liquidation_threshold_bps / 1e4,
            "liquidation_bonus": c.liquidation_bonus_bps / 1e4, "label": c.label,
            "assets": sorted(by_id[i].symbol for i in c.collateral_ids if i in by_id),
            "collateral_assets": sorted(by_id[i].symbol for i in c.collateral_ids if i in by_id),
            "borrowable_assets": sorted(by_id[i].symbol for i in c.borrowable_ids if i in by_id)}
        if c.id in market.emode_price:
            entry["price_usd"] = market.emode_price[c.id] / market.base_currency_unit
            entry["price_source"] = c.price_source
        cats[str(c.id)] = entry
    params = {"version": market.version, "pool_revision": market.revision, "pool": market.pool,
              "oracle": market.oracle, "emode_categories": cats}
    assets = {}
    for r in market.reserves:
        c = r.config
        assets[r.symbol] = {
            "ltv": c.ltv_bps / 1e4, "liquidation_threshold": c.liquidation_threshold_bps / 1e4,
            # Aave stores LB = 0 for reserves that cannot be collateral (LT = 0); no bonus is ever
            # paid there, and 1.0 ("no bonus") keeps the field in its documented range.
            "liquidation_bonus": c.liquidation_bonus_bps / 1e4 if c.liquidation_bonus_bps else 1.0,
            "liquidation_protocol_fee": c.liquidation_protocol_fee_bps / 1e4,
            "emode_category": c.emode_category, "active": c.active, "frozen": c.frozen,
            "paused": c.paused, "borrowing_enabled": c.borrowing_enabled,
            "reserve_factor": c.reserve_factor_bps / 1e4, "debt_ceiling": c.debt_ceiling,
            "reserve_id": r.id, "address": r.asset}
    return params, assets


# -- oracle sources --------------------------------------------------------------------------------

_SOURCE_GETTERS = (
    (FEED, "decimals"), (FEED, "latestRoundData"), (FEED, "latestAnswer"),
    (CAPO, "BASE_TO_USD_AGGREGATOR"), (CAPO, "RATIO_PROVIDER"), (CAPO, "RATIO_DECIMALS"), (CAPO, "getRatio"),
    (CAPO, "getSnapshotRatio"), (CAPO, "getSnapshotTimestamp"), (CAPO, "getMaxRatioGrowthPerSecond"),
    (CAPO, "isCapped"),
    (CAPO_STABLE, "ASSET_TO_USD_AGGREGATOR"), (CAPO_STABLE, "getPriceCap"),
    (FIXED_ADAPTER, "price"), (FIXED_ADAPTER, "DECIMALS"),
)
_CAPO_KEYS = ("BASE_TO_USD_AGGREGATOR", "RATIO_PROVIDER", "RATIO_DECIMALS", "getRatio", "getSnapshotRatio",
              "getSnapshotTimestamp", "getMaxRatioGrowthPerSecond")
_BASE_GETTERS = ((FEED, "decimals"), (FEED, "latestRoundData"), (FEED, "latestAnswer"))


def source_shape(p: Mapping[str, Any]) -> str | None:
    """Which adapter a probed source is, from the getters it answers (None: none we know).

    Order matters: CAPO adapters and the fixed-price adapter also answer Chainlink-style getters."""
    if all(p.get(k) is not None for k in _CAPO_KEYS):
        return "capo-ratio"
    # The first stable adapters (Aave proposal 51) had no getPriceCap(); isCapped() is in both versions.
    if p.get("ASSET_TO_USD_AGGREGATOR") is not None and (p.get("getPriceCap") is not None
                                                         or p.get("isCapped") is not None):
        return "capo-stable"
    if p.get("price") is not None and p.get("DECIMALS") is not None and p.get("BASE_TO_USD_AGGREGATOR") is None:
        return "fixed"
    if osrc.is_chainlink_aggregator(p):
        return osrc.CHAINLINK
    return None


def capo_max_ratio(snapshot_ratio: int, snapshot_timestamp: int, growth_per_second: int, timestamp: int) -> int:
    """The ratio cap a CAPO adapter applies at `timestamp`: the snapshot ratio grown linearly."""
    return snapshot_ratio + growth_per_second * (timestamp - snapshot_timestamp)


def capo_answer(base_answer: int, ratio: int, max_ratio: int, ratio_decimals: int) -> int:
    """A CAPO adapter's latestAnswer: base price x min(ratio, cap) / 10^RATIO_DECIMALS (0 if either <= 0)."""
    if base_answer <= 0 or ratio <= 0:
        return 0
    return base_answer * min(ratio, max_ratio) // 10 ** ratio_decimals


def read_oracle_sources(mc: Multicaller, markets: Sequence[AaveMarket], feeds: FeedBook) -> dict[str, dict[str, OracleSpec]]:
    """{market name: {reserve symbol: OracleSpec}}: each reserve's AaveOracle source as a formula of
    market prices, read at the pinned block (two multicall batches for all markets).

    Every classification is checked against the chain: the source's latestAnswer (what AaveOracle
    returns) must equal the reserve's AaveOracle price, and a CAPO adapter's answer must be reproduced
    from its base feed, ratio and cap. A failed check, an unknown shape, or a CAPO base feed that is no
    known asset's feed gives an unclassified (market) spec with the reason. Plain aggregators (and the
    feed behind a stable adapter) are registered in `feeds` as their reserve's market feed, so a CAPO
    adapter on WETH's feed is read as a ratio of WETH.
    """
    ts = int(mc.block.timestamp)
    probes = osrc.probe(mc, [r.oracle_source for m in markets for r in m.reserves], _SOURCE_GETTERS,
                        label=f"{PROTOCOL} oracle source")
    shapes = {a: source_shape(p) for a, p in probes.items()}
    for m in markets:
        for r in m.reserves:
            shape, p = shapes.get(r.oracle_source), probes.get(r.oracle_source, {})
            origin = f"{PROTOCOL} ({m.name}) source of {r.symbol}"
            if shape == osrc.CHAINLINK:
                feeds.add_source(r.oracle_source, r.symbol, origin)
            elif shape == "capo-stable":
                feeds.add_source(r.oracle_source, r.symbol, origin)
                feeds.add_source(p["ASSET_TO_USD_AGGREGATOR"], r.symbol, origin)
    under = [p["BASE_TO_USD_AGGREGATOR"] if shapes[a] == "capo-ratio" else p["ASSET_TO_USD_AGGREGATOR"]
             for a, p in probes.items() if shapes[a] in ("capo-ratio", "capo-stable")]
    base = osrc.probe(mc, under, _BASE_GETTERS, label=f"{PROTOCOL} base feed")
    out: dict[str, dict[str, OracleSpec]] = {}
    for m in markets:
        out[m.name] = {r.symbol: _classify_source(r, m, shapes.get(r.oracle_source), probes.get(r.oracle_source, {}),
                                                  base, feeds, ts)
                       for r in m.reserves}
    return out


def _age(feed_probe: Mapping[str, Any] | None, ts: int) -> int | None:
    rd = (feed_probe or {}).get("latestRoundData")
    return None if rd is None else max(0, ts - int(rd[3]))


def _follow(symbol: str, feed: str, typ: str, source: str, feeds: FeedBook, age: int | None) -> OracleSpec:
    """A source that passes `feed`'s answer on: the reserve's market price, unless the address book
    names `feed` as another asset's USD feed (then that asset's market price, rate 1)."""
    named = feeds.book_entry(feed)
    other = named.asset if named is not None and named.kind == "market" and named.quote is None else None
    if other is not None and other != symbol:
        return OracleSpec("ratio", typ, source, of=other, rate=1.0, age_s=age, **feeds.meta(feed))
    return OracleSpec("market", typ, source, age_s=age, **feeds.meta(feed))


def _classify_source(r: Reserve, m: AaveMarket, shape: str | None, p: Mapping[str, Any],
                     base: Mapping[str, Mapping[str, Any]], feeds: FeedBook, ts: int) -> OracleSpec:
    src = r.oracle_source
    if src == ZERO_ADDRESS:
        return osrc.unclassified(None, "AaveOracle has no source for the asset (getSourceOfAsset is the zero "
                                       "address): it answers from its fallback oracle")
    if shape is not None and p.get("latestAnswer") != r.price:
        return osrc.unclassified(src, f"{shape}-shaped source whose latestAnswer ({p.get('latestAnswer')}) is not "
                                      f"the AaveOracle price ({r.price})")
    if shape == "capo-ratio":
        b = base.get(p["BASE_TO_USD_AGGREGATOR"], {})
        rd, ratio = int(p["RATIO_DECIMALS"]), int(p["getRatio"])
        cap = capo_max_ratio(int(p["getSnapshotRatio"]), int(p["getSnapshotTimestamp"]),
                             int(p["getMaxRatioGrowthPerSecond"]), ts)
        agg = p["BASE_TO_USD_AGGREGATOR"]
        if b.get("latestAnswer") is None:
            return osrc.unclassified(src, f"CAPO adapter whose base aggregator {agg} does not answer latestAnswer()")
        expect = capo_answer(int(b["latestAnswer"]), ratio, cap, rd)
        if expect != r.price:
            return osrc.unclassified(src, f"CAPO-shaped adapter: base answer x min(getRatio, cap) / 10^RATIO_DECIMALS "
                                          f"= {expect}, but AaveOracle answers {r.price}")
        if p.get("isCapped") is not None and bool(p["isCapped"]) != (ratio > cap):
            return osrc.unclassified(src, f"CAPO-shaped adapter: isCapped() = {p['isCapped']} disagrees with "
                                          f"getRatio {ratio} vs the cap {cap} at the block")
        of = feeds.usd_asset(agg)
        if of is None:
            return osrc.unclassified(src, f"CAPO adapter (ratio {ratio / 10 ** rd:.6g}) on base aggregator {agg}, "
                                          f"which is no asset's USD feed in this snapshot nor named in the address book")
        if of == r.symbol:
            return osrc.unclassified(src, f"CAPO adapter whose base aggregator {agg} is the asset's own feed")
        return OracleSpec("ratio", "capo-ratio", src, of=of, rate=ratio / 10 ** rd, cap=cap / 10 ** rd,
                          age_s=_age(b, ts), **feeds.meta(agg))
    if shape == "capo-stable":
        agg = p["ASSET_TO_USD_AGGREGATOR"]
        b = base.get(agg, {})
        spec = _follow(r.symbol, agg, "capo-stable", src, feeds, _age(b, ts))
        answer, cap = b.get("latestAnswer"), p.get("getPriceCap")
        capped = (answer > cap) if (answer is not None and cap is not None) else bool(p.get("isCapped"))
        if capped:
            spec = replace(spec, reason=f"stable adapter capped at the block: it answers its price cap "
                                        f"{cap if cap is not None else r.price} while its feed {agg} answers {answer}; "
                                        f"the protocol follows the feed again only below the cap (modelled as the "
                                        f"asset's market price, the snapshot price being the cap)")
        return spec
    if shape == "fixed":
        return OracleSpec("fixed", "fixed", src, price=r.price / m.base_currency_unit)
    if shape == osrc.CHAINLINK:
        return _follow(r.symbol, src, osrc.CHAINLINK, src, feeds, _age(p, ts))
    named = feeds.book_entry(src)
    if named is not None and named.quote is None and named.kind in ("market", "fixed"):
        typ = named.type or "address-book"
        if named.kind == "fixed":
            return OracleSpec("fixed", typ, src, price=r.price / m.base_currency_unit)
        if named.asset == r.symbol:
            return OracleSpec("market", typ, src, **feeds.meta(src))
        return OracleSpec("ratio", typ, src, of=named.asset, rate=1.0, **feeds.meta(src))
    return osrc.unclassified(src, "not a Chainlink-style aggregator (decimals/latestRoundData/latestAnswer), a CAPO "
                                  "adapter (BASE_TO_USD_AGGREGATOR/RATIO_PROVIDER/getRatio...), a CAPO stable adapter "
                                  "(ASSET_TO_USD_AGGREGATOR/getPriceCap) or a fixed-price adapter (price/DECIMALS), "
                                  "and the address book does not name it")
