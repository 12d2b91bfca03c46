"""Scenario files: what a devnet holds (assets, prices, venues, protocol parameters, positions).

A scenario is YAML or JSON (format in docs/scenario-format.md). `load_scenario` parses and validates
the WHOLE document before anything is deployed; every error is an InputError naming the field path,
e.g. `aave_v3.reserves.WETH.liquidation_threshold`. Fractions (LTV, thresholds, bonuses, rates)
are plain decimals (0.825 = 82.5 %); amounts are whole tokens; prices are USD.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from defirisk.errors import InputError

FORMAT = "defirisk-scenario/1"
# Sections reserved for protocols that come later; present -> refused by name, not ignored.
UNSUPPORTED_PROTOCOLS = ("compound_v3", "maker", "liquity")
# Feeds carry 8 decimals (Chainlink USD convention; Aave's base currency unit is 1e8).
FEED_DECIMALS = 8
# Smallest health factor a borrow can be opened at: positions are opened with LTV raised to
# LT - 1 bp, so HF must stay above LT/(LT - 1bp); 1.001 keeps a margin for rounding and interest.
MIN_OPEN_HF = 1.001
MAX_HF = 1000.0


# ----------------------------------------------------------------------------------------------
# Model (frozen): what the deployer and the population generator consume.
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssetSpec:
    symbol: str
    decimals: int
    price_usd: float

    @property
    def price_feed_units(self) -> int:
        """The feed answer: USD price with 8 decimals."""
        return round(self.price_usd * 10**FEED_DECIMALS)


@dataclass(frozen=True)
class RateSpec:
    """Annual rates as fractions (0.04 = 4 % APR)."""

    optimal_usage: float = 0.8
    base: float = 0.0
    slope1: float = 0.04
    slope2: float = 0.75


@dataclass(frozen=True)
class ReserveSpec:
    symbol: str
    ltv: float
    liquidation_threshold: float
    liquidation_bonus: float  # 0.05 = 5 % on top of the repaid value
    reserve_factor: float
    liquidation_protocol_fee: float
    borrowing: bool
    supply_cap: int  # whole tokens, 0 = none
    borrow_cap: int
    rates: RateSpec


@dataclass(frozen=True)
class EModeSpec:
    category_id: int
    label: str
    ltv: float
    liquidation_threshold: float
    liquidation_bonus: float
    assets: tuple[str, ...]


@dataclass(frozen=True)
class Band:
    """One component of a health-factor mixture: uniform on [low, high] with relative weight."""

    weight: float
    low: float
    high: float


@dataclass(frozen=True)
class SizeDist:
    """Position size in USD of collateral: lognormal(median, sigma) clipped to [min, max]."""

    median: float
    sigma: float
    min: float
    max: float


@dataclass(frozen=True)
class AaveMix:
    weight: float
    collateral: Mapping[str, float]  # symbol -> share of collateral USD
    debt: Mapping[str, float]  # symbol -> share of debt USD
    emode: int = 0


@dataclass(frozen=True)
class AavePopulation:
    count: int
    seed: int
    size_usd: SizeDist
    health_factor: tuple[Band, ...]
    mixes: tuple[AaveMix, ...]


@dataclass(frozen=True)
class AavePositionSpec:
    """An explicit position: collateral in whole tokens; debt either in whole tokens (`debt`) or
    derived from a target health factor split by `debt_split` weights."""

    collateral: Mapping[str, float]
    debt: Mapping[str, float]
    health_factor: float | None
    debt_split: Mapping[str, float]
    emode: int
    label: str


@dataclass(frozen=True)
class AaveSpec:
    reserves: Mapping[str, ReserveSpec]
    emodes: Mapping[int, EModeSpec]
    liquidity: Mapping[str, float]
    positions: tuple[AavePositionSpec, ...]
    population: AavePopulation | None


@dataclass(frozen=True)
class MorphoMarketSpec:
    key: str  # "WETH/USDC"
    collateral: str
    loan: str
    lltv: float
    supply: float  # loan-token liquidity supplied, whole tokens


@dataclass(frozen=True)
class MorphoPositionSpec:
    market: str
    collateral: float  # whole tokens
    borrow: float | None  # whole loan tokens, or None with health_factor
    health_factor: float | None
    label: str


@dataclass(frozen=True)
class MorphoPopulation:
    count: int
    seed: int
    size_usd: SizeDist
    health_factor: tuple[Band, ...]
    markets: Mapping[str, float]  # market key -> weight


@dataclass(frozen=True)
class IrmSpec:
    """Morpho IRM, annual fractions; `kink` is the utilisation where slope2 starts."""

    base: float = 0.0
    slope1: float = 0.04
    slope2: float = 0.6
    kink: float = 0.9


@dataclass(frozen=True)
class MorphoSpec:
    irm: IrmSpec
    markets: Mapping[str, MorphoMarketSpec]
    positions: tuple[MorphoPositionSpec, ...]
    population: MorphoPopulation | None


@dataclass(frozen=True)
class V2PairSpec:
    key: str  # "WETH/USDC"
    base: str
    quote: str
    base_reserve: float  # whole base tokens; the quote reserve follows from the feed prices


@dataclass(frozen=True)
class V3RangeSpec:
    lower_pct: float  # range bounds relative to the feed price, percent (-10 = 10 % below)
    upper_pct: float
    value_usd: float  # value deposited into the range at the initial price


@dataclass(frozen=True)
class V3PoolSpec:
    key: str  # "WETH/USDC/3000"
    base: str
    quote: str
    fee: int  # hundredths of a bip: 500, 3000, 10000
    ranges: tuple[V3RangeSpec, ...]


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    assets: Mapping[str, AssetSpec]
    uniswap_v2: Mapping[str, V2PairSpec]
    uniswap_v3: Mapping[str, V3PoolSpec]
    aave: AaveSpec | None
    morpho: MorphoSpec | None
    start_time: int
    source: str = field(default="", compare=False)  # file path, for messages
    raw_text: str = field(default="", repr=False, compare=False)  # exact bytes hashed for the cache


V3_TICK_SPACING = {100: 1, 500: 10, 3000: 60, 10000: 200}


# ----------------------------------------------------------------------------------------------
# Validation helpers: every accessor takes the dotted field path for its message.
# ----------------------------------------------------------------------------------------------
class _Doc:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, msg: str) -> InputError:
        return InputError(f"{self.source}: {path}: {msg}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None = None,
                required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.fail(f"{path}.{key}" if path else str(key),
                                    f"unknown field (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.fail(f"{path}.{key}" if path else key, "required field is missing")
        return value

    def number(self, value: Any, path: str, *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, hi_open: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"expected a number, got {value!r}")
        x = float(value)
        if not math.isfinite(x):
            raise self.fail(path, f"must be finite, got {value!r}")
        if lo is not None and (x < lo or (lo_open and x == lo)):
            raise self.fail(path, f"{value!r} is out of range (must be {'>' if lo_open else '>='} {lo})")
        if hi is not None and (x > hi or (hi_open and x == hi)):
            raise self.fail(path, f"{value!r} is out of range (must be {'<' if hi_open else '<='} {hi})")
        return x

    def integer(self, value: Any, path: str, *, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self.fail(path, f"expected an integer, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(path, f"{value!r} is out of range [{lo}, {hi}]")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    def asset(self, value: Any, path: str, assets: Mapping[str, AssetSpec]) -> str:
        sym = self.string(value, path)
        if sym not in assets:
            raise self.fail(path, f"unknown asset {sym!r} (declared assets: {', '.join(assets)})")
        return sym

    def weights(self, value: Any, path: str, assets: Mapping[str, AssetSpec], *, amounts: bool = False
                ) -> dict[str, float]:
        """symbol -> positive number; weights are normalised to sum 1 unless `amounts`."""
        m = self.mapping(value, path)
        if not m:
            raise self.fail(path, "must name at least one asset")
        out = {}
        for sym, x in m.items():
            self.asset(sym, f"{path}.{sym}", assets)
            out[sym] = self.number(x, f"{path}.{sym}", lo=0.0, lo_open=True)
        if amounts:
            return out
        total = sum(out.values())
        return {k: v / total for k, v in out.items()}


def _bands(doc: _Doc, value: Any, path: str, *, min_hf: float) -> tuple[Band, ...]:
    if not isinstance(value, list) or not value:
        raise doc.fail(path, "expected a non-empty list of {weight, low, high} bands")
    bands = []
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        m = doc.mapping(item, p, ("weight", "low", "high"), ("low", "high"))
        low = _hf(doc, m["low"], f"{p}.low", min_hf)
        high = _hf(doc, m["high"], f"{p}.high", min_hf)
        if high < low:
            raise doc.fail(f"{p}.high", f"{high} is below low ({low})")
        bands.append(Band(doc.number(m.get("weight", 1.0), f"{p}.weight", lo=0.0, lo_open=True), low, high))
    return tuple(bands)


def _hf(doc: _Doc, value: Any, path: str, min_hf: float) -> float:
    x = doc.number(value, path)
    if x <= 1.0:
        raise doc.fail(path, f"impossible health factor {x}: a position at or below 1 cannot be opened "
                             "(it would be liquidatable at once)")
    if x < min_hf:
        raise doc.fail(path, f"impossible health factor {x}: below {min_hf}, the lowest a borrow can "
                             "be opened at with these parameters")
    if x > MAX_HF:
        raise doc.fail(path, f"health factor {x} is out of range (<= {MAX_HF})")
    return x


def _size(doc: _Doc, value: Any, path: str) -> SizeDist:
    m = doc.mapping(value, path, ("distribution", "median", "sigma", "min", "max"), ("median",))
    if m.get("distribution", "lognormal") != "lognormal":
        raise doc.fail(f"{path}.distribution", "only 'lognormal' is supported")
    median = doc.number(m["median"], f"{path}.median", lo=0.0, lo_open=True)
    lo = doc.number(m.get("min", median / 20), f"{path}.min", lo=0.0, lo_open=True)
    hi = doc.number(m.get("max", median * 50), f"{path}.max", lo=lo)
    return SizeDist(median, doc.number(m.get("sigma", 1.0), f"{path}.sigma", lo=0.0, hi=5.0), lo, hi)


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------
def _assets(doc: _Doc, value: Any) -> dict[str, AssetSpec]:
    m = doc.mapping(value, "assets")
    if not m:
        raise doc.fail("assets", "declare at least one asset")
    out = {}
    for sym, spec in m.items():
        p = f"assets.{sym}"
        if not isinstance(sym, str) or not sym.isidentifier():
            raise doc.fail(p, "asset symbols must be identifiers like WETH or wstETH")
        s = doc.mapping(spec, p, ("decimals", "price_usd"), ("decimals", "price_usd"))
        price = doc.number(s["price_usd"], f"{p}.price_usd", lo=0.0, lo_open=True, hi=1e12)
        if round(price * 10**FEED_DECIMALS) < 1:
            raise doc.fail(f"{p}.price_usd", "below the 8-decimal feed resolution")
        out[sym] = AssetSpec(sym, doc.integer(s["decimals"], f"{p}.decimals", lo=0, hi=30), price)
    return out


def _pair_key(doc: _Doc, key: str, path: str, assets: Mapping[str, AssetSpec], parts: int) -> list[str]:
    bits = str(key).split("/")
    if len(bits) != parts:
        raise doc.fail(path, f"key must look like {'BASE/QUOTE' if parts == 2 else 'BASE/QUOTE/FEE'}")
    for sym in bits[:2]:
        doc.asset(sym, path, assets)
    if bits[0] == bits[1]:
        raise doc.fail(path, "base and quote must differ")
    return bits


def _venues(doc: _Doc, value: Any, assets: Mapping[str, AssetSpec]):
    m = doc.mapping(value or {}, "venues", ("uniswap_v2", "uniswap_v3"))
    v2: dict[str, V2PairSpec] = {}
    for key, spec in doc.mapping(m.get("uniswap_v2") or {}, "venues.uniswap_v2").items():
        p = f"venues.uniswap_v2.{key}"
        base, quote = _pair_key(doc, key, p, assets, 2)
        s = doc.mapping(spec, p, ("base_reserve",), ("base_reserve",))
        v2[key] = V2PairSpec(key, base, quote, doc.number(s["base_reserve"], f"{p}.base_reserve", lo=0.0, lo_open=True))
    v3: dict[str, V3PoolSpec] = {}
    for key, spec in doc.mapping(m.get("uniswap_v3") or {}, "venues.uniswap_v3").items():
        p = f"venues.uniswap_v3.{key}"
        base, quote, fee_s = _pair_key(doc, key, p, assets, 3)
        if not fee_s.isdigit() or int(fee_s) not in V3_TICK_SPACING:
            raise doc.fail(p, f"fee tier must be one of {sorted(V3_TICK_SPACING)}")
        s = doc.mapping(spec, p, ("ranges",), ("ranges",))
        if not isinstance(s["ranges"], list) or not s["ranges"]:
            raise doc.fail(f"{p}.ranges", "expected a non-empty list of ranges")
        ranges = []
        for i, r in enumerate(s["ranges"]):
            rp = f"{p}.ranges[{i}]"
            rm = doc.mapping(r, rp, ("lower_pct", "upper_pct", "value_usd"), ("lower_pct", "upper_pct", "value_usd"))
            lo = doc.number(rm["lower_pct"], f"{rp}.lower_pct", lo=-99.0, hi=1000.0)
            hi = doc.number(rm["upper_pct"], f"{rp}.upper_pct", lo=-99.0, hi=10000.0)
            if hi <= lo:
                raise doc.fail(f"{rp}.upper_pct", "must be above lower_pct")
            ranges.append(V3RangeSpec(lo, hi, doc.number(rm["value_usd"], f"{rp}.value_usd", lo=0.0, lo_open=True)))
        v3[key] = V3PoolSpec(key, base, quote, int(fee_s), tuple(ranges))
    return v2, v3


_RESERVE_FIELDS = ("ltv", "liquidation_threshold", "liquidation_bonus", "reserve_factor",
                   "liquidation_protocol_fee", "borrowing", "supply_cap", "borrow_cap", "rates")


def _reserve(doc: _Doc, sym: str, spec: Any) -> ReserveSpec:
    p = f"aave_v3.reserves.{sym}"
    s = doc.mapping(spec, p, _RESERVE_FIELDS, ("ltv", "liquidation_threshold", "liquidation_bonus"))
    ltv = doc.number(s["ltv"], f"{p}.ltv", lo=0.0, hi=1.0, hi_open=True)
    lt = doc.number(s["liquidation_threshold"], f"{p}.liquidation_threshold", lo=0.0, hi=1.0, hi_open=True)
    if ltv > lt:
        raise doc.fail(f"{p}.ltv", f"LTV {ltv} exceeds the liquidation threshold {lt}")
    bonus = doc.number(s["liquidation_bonus"], f"{p}.liquidation_bonus", lo=0.0, hi=0.5)
    if lt > 0 and bonus <= 0:
        raise doc.fail(f"{p}.liquidation_bonus", "must be > 0 for a collateral asset")
    if lt * (1 + bonus) > 1.0:
        raise doc.fail(f"{p}.liquidation_threshold",
                       f"threshold x (1 + bonus) = {lt * (1 + bonus):.4f} exceeds 1 (Aave refuses it)")
    r = doc.mapping(s.get("rates") or {}, f"{p}.rates", ("optimal_usage", "base", "slope1", "slope2"))
    rates = RateSpec(
        doc.number(r.get("optimal_usage", 0.8), f"{p}.rates.optimal_usage", lo=0.0, hi=1.0, lo_open=True, hi_open=True),
        doc.number(r.get("base", 0.0), f"{p}.rates.base", lo=0.0, hi=10.0),
        doc.number(r.get("slope1", 0.04), f"{p}.rates.slope1", lo=0.0, hi=10.0),
        doc.number(r.get("slope2", 0.75), f"{p}.rates.slope2", lo=0.0, hi=10.0),
    )
    return ReserveSpec(
        sym, ltv, lt, bonus,
        doc.number(s.get("reserve_factor", 0.1), f"{p}.reserve_factor", lo=0.0, hi=1.0, hi_open=True),
        doc.number(s.get("liquidation_protocol_fee", 0.1), f"{p}.liquidation_protocol_fee", lo=0.0, hi=1.0),
        doc.boolean(s.get("borrowing", True), f"{p}.borrowing"),
        doc.integer(s.get("supply_cap", 0), f"{p}.supply_cap", lo=0, hi=2**36 - 1),
        doc.integer(s.get("borrow_cap", 0), f"{p}.borrow_cap", lo=0, hi=2**36 - 1),
        rates,
    )


def effective_lt(aave: AaveSpec, sym: str, emode: int) -> float:
    """Liquidation threshold an asset counts with for a user in e-mode `emode` (0 = none)."""
    if emode and sym in aave.emodes[emode].assets:
        return aave.emodes[emode].liquidation_threshold
    return aave.reserves[sym].liquidation_threshold


def _check_aave_combo(doc: _Doc, aave: AaveSpec, path: str, collateral: Mapping[str, float],
                      debt: Mapping[str, float], emode: int) -> None:
    if emode and emode not in aave.emodes:
        raise doc.fail(f"{path}.emode", f"unknown e-mode category {emode}")
    for sym in collateral:
        if sym not in aave.reserves:
            raise doc.fail(f"{path}.collateral.{sym}", f"{sym} is not an Aave reserve in aave_v3.reserves")
        if effective_lt(aave, sym, emode) <= 0:
            raise doc.fail(f"{path}.collateral.{sym}",
                           f"{sym} has liquidation threshold 0: no health factor is reachable with it")
    for sym in debt:
        if sym not in aave.reserves:
            raise doc.fail(f"{path}.debt.{sym}", f"{sym} is not an Aave reserve in aave_v3.reserves")
        if not aave.reserves[sym].borrowing:
            raise doc.fail(f"{path}.debt.{sym}", f"borrowing {sym} is disabled (aave_v3.reserves.{sym}.borrowing)")
        if emode and sym not in aave.emodes[emode].assets:
            raise doc.fail(f"{path}.debt.{sym}", f"e-mode {emode} users can only borrow its assets "
                                                 f"({', '.join(aave.emodes[emode].assets)})")


def _aave(doc: _Doc, value: Any, assets: Mapping[str, AssetSpec], seed: int) -> AaveSpec:
    m = doc.mapping(value, "aave_v3", ("reserves", "emode", "liquidity", "positions", "population"), ("reserves",))
    reserves = {}
    for sym, spec in doc.mapping(m["reserves"], "aave_v3.reserves").items():
        doc.asset(sym, f"aave_v3.reserves.{sym}", assets)
        reserves[sym] = _reserve(doc, sym, spec)
    if not reserves:
        raise doc.fail("aave_v3.reserves", "list at least one reserve")
    emodes = {}
    for cid, spec in doc.mapping(m.get("emode") or {}, "aave_v3.emode").items():
        p = f"aave_v3.emode.{cid}"
        cat = doc.integer(cid, p, lo=1, hi=255)
        s = doc.mapping(spec, p, ("label", "ltv", "liquidation_threshold", "liquidation_bonus", "assets"),
                        ("ltv", "liquidation_threshold", "liquidation_bonus", "assets"))
        ltv = doc.number(s["ltv"], f"{p}.ltv", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        lt = doc.number(s["liquidation_threshold"], f"{p}.liquidation_threshold", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        if ltv > lt:
            raise doc.fail(f"{p}.ltv", f"LTV {ltv} exceeds the liquidation threshold {lt}")
        bonus = doc.number(s["liquidation_bonus"], f"{p}.liquidation_bonus", lo=0.0, hi=0.5, lo_open=True)
        if lt * (1 + bonus) > 1.0:
            raise doc.fail(f"{p}.liquidation_threshold", "threshold x (1 + bonus) exceeds 1 (Aave refuses it)")
        if not isinstance(s["assets"], list) or not s["assets"]:
            raise doc.fail(f"{p}.assets", "expected a non-empty list of reserve symbols")
        members = []
        for i, sym in enumerate(s["assets"]):
            doc.asset(sym, f"{p}.assets[{i}]", assets)
            if sym not in reserves:
                raise doc.fail(f"{p}.assets[{i}]", f"{sym} is not an Aave reserve")
            r = reserves[sym]
            # Aave requires the category to be strictly above each member's own parameters.
            if lt <= r.liquidation_threshold or ltv <= r.ltv:
                raise doc.fail(f"{p}.liquidation_threshold",
                               f"e-mode LTV/threshold must exceed those of member {sym}")
            members.append(sym)
        emodes[cat] = EModeSpec(cat, str(s.get("label", f"emode-{cat}")), ltv, lt, bonus, tuple(members))
    liquidity = {}
    for sym, x in doc.mapping(m.get("liquidity") or {}, "aave_v3.liquidity").items():
        doc.asset(sym, f"aave_v3.liquidity.{sym}", assets)
        if sym not in reserves:
            raise doc.fail(f"aave_v3.liquidity.{sym}", f"{sym} is not an Aave reserve")
        liquidity[sym] = doc.number(x, f"aave_v3.liquidity.{sym}", lo=0.0)
    spec = AaveSpec(reserves, emodes, liquidity, (), None)

    positions = []
    raw_positions = m.get("positions") or []
    if not isinstance(raw_positions, list):
        raise doc.fail("aave_v3.positions", "expected a list")
    for i, item in enumerate(raw_positions):
        p = f"aave_v3.positions[{i}]"
        s = doc.mapping(item, p, ("collateral", "debt", "health_factor", "debt_split", "emode", "label"), ("collateral",))
        coll = doc.weights(s["collateral"], f"{p}.collateral", assets, amounts=True)
        emode = doc.integer(s.get("emode", 0), f"{p}.emode", lo=0, hi=255)
        if ("debt" in s) == ("health_factor" in s):
            raise doc.fail(f"{p}.debt", "give exactly one of `debt` (amounts) or `health_factor` (+ debt_split)")
        if "debt" in s:
            debt = doc.weights(s["debt"], f"{p}.debt", assets, amounts=True)
            hf, split = None, {}
        else:
            hf = _hf(doc, s["health_factor"], f"{p}.health_factor", MIN_OPEN_HF)
            split = doc.weights(s.get("debt_split", {"USDC": 1.0}), f"{p}.debt_split", assets)
            debt = {}
        _check_aave_combo(doc, spec, p, coll, debt or split, emode)
        if debt:  # explicit amounts: the health factor they imply must be openable
            cv = sum(coll[a] * assets[a].price_usd * effective_lt(spec, a, emode) for a in coll)
            dv = sum(debt[a] * assets[a].price_usd for a in debt)
            implied = cv / dv
            if implied < MIN_OPEN_HF:
                raise doc.fail(f"{p}.debt", f"impossible health factor {implied:.4f} implied by these amounts "
                                            f"(must be > {MIN_OPEN_HF})")
        positions.append(AavePositionSpec(coll, debt, hf, split, emode, str(s.get("label", f"aave-{i}"))))

    population = None
    if m.get("population") is not None:
        p = "aave_v3.population"
        s = doc.mapping(m["population"], p, ("count", "seed", "size_usd", "health_factor", "collateral_mix"),
                        ("count", "size_usd", "health_factor", "collateral_mix"))
        mixes = []
        if not isinstance(s["collateral_mix"], list) or not s["collateral_mix"]:
            raise doc.fail(f"{p}.collateral_mix", "expected a non-empty list")
        for i, item in enumerate(s["collateral_mix"]):
            mp = f"{p}.collateral_mix[{i}]"
            mm = doc.mapping(item, mp, ("weight", "collateral", "debt", "emode"), ("collateral", "debt"))
            mix = AaveMix(doc.number(mm.get("weight", 1.0), f"{mp}.weight", lo=0.0, lo_open=True),
                          doc.weights(mm["collateral"], f"{mp}.collateral", assets),
                          doc.weights(mm["debt"], f"{mp}.debt", assets),
                          doc.integer(mm.get("emode", 0), f"{mp}.emode", lo=0, hi=255))
            _check_aave_combo(doc, spec, mp, mix.collateral, mix.debt, mix.emode)
            mixes.append(mix)
        population = AavePopulation(
            doc.integer(s["count"], f"{p}.count", lo=0, hi=200_000),
            doc.integer(s.get("seed", seed), f"{p}.seed", lo=0),
            _size(doc, s["size_usd"], f"{p}.size_usd"),
            _bands(doc, s["health_factor"], f"{p}.health_factor", min_hf=MIN_OPEN_HF),
            tuple(mixes),
        )
    return AaveSpec(reserves, emodes, liquidity, tuple(positions), population)


def _morpho(doc: _Doc, value: Any, assets: Mapping[str, AssetSpec], seed: int) -> MorphoSpec:
    m = doc.mapping(value, "morpho_blue", ("irm", "markets", "positions", "population"), ("markets",))
    i = doc.mapping(m.get("irm") or {}, "morpho_blue.irm", ("base", "slope1", "slope2", "kink"))
    irm = IrmSpec(doc.number(i.get("base", 0.0), "morpho_blue.irm.base", lo=0.0, hi=10.0),
                  doc.number(i.get("slope1", 0.04), "morpho_blue.irm.slope1", lo=0.0, hi=10.0),
                  doc.number(i.get("slope2", 0.6), "morpho_blue.irm.slope2", lo=0.0, hi=10.0),
                  doc.number(i.get("kink", 0.9), "morpho_blue.irm.kink", lo=0.0, hi=1.0, lo_open=True, hi_open=True))
    markets = {}
    for key, spec in doc.mapping(m["markets"], "morpho_blue.markets").items():
        p = f"morpho_blue.markets.{key}"
        s = doc.mapping(spec, p, ("collateral", "loan", "lltv", "supply"), ("collateral", "loan", "lltv", "supply"))
        coll = doc.asset(s["collateral"], f"{p}.collateral", assets)
        loan = doc.asset(s["loan"], f"{p}.loan", assets)
        if coll == loan:
            raise doc.fail(f"{p}.loan", "loan and collateral token must differ")
        lltv = doc.number(s["lltv"], f"{p}.lltv", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        markets[key] = MorphoMarketSpec(key, coll, loan, lltv, doc.number(s["supply"], f"{p}.supply", lo=0.0))
    if not markets:
        raise doc.fail("morpho_blue.markets", "list at least one market")
    positions = []
    raw_positions = m.get("positions") or []
    if not isinstance(raw_positions, list):
        raise doc.fail("morpho_blue.positions", "expected a list")
    for j, item in enumerate(raw_positions):
        p = f"morpho_blue.positions[{j}]"
        s = doc.mapping(item, p, ("market", "collateral", "borrow", "health_factor", "label"), ("market", "collateral"))
        mk = doc.string(s["market"], f"{p}.market")
        if mk not in markets:
            raise doc.fail(f"{p}.market", f"unknown market {mk!r} (markets: {', '.join(markets)})")
        coll = doc.number(s["collateral"], f"{p}.collateral", lo=0.0, lo_open=True)
        if ("borrow" in s) == ("health_factor" in s):
            raise doc.fail(f"{p}.borrow", "give exactly one of `borrow` (amount) or `health_factor`")
        borrow = hf = None
        if "borrow" in s:
            borrow = doc.number(s["borrow"], f"{p}.borrow", lo=0.0, lo_open=True)
            mkt = markets[mk]
            implied = coll * assets[mkt.collateral].price_usd * mkt.lltv / (borrow * assets[mkt.loan].price_usd)
            if implied < MIN_OPEN_HF:
                raise doc.fail(f"{p}.borrow", f"impossible health factor {implied:.4f} implied by these amounts")
        else:
            hf = _hf(doc, s["health_factor"], f"{p}.health_factor", MIN_OPEN_HF)
        positions.append(MorphoPositionSpec(mk, coll, borrow, hf, str(s.get("label", f"morpho-{j}"))))
    population = None
    if m.get("population") is not None:
        p = "morpho_blue.population"
        s = doc.mapping(m["population"], p, ("count", "seed", "size_usd", "health_factor", "markets"),
                        ("count", "size_usd", "health_factor", "markets"))
        weights = doc.mapping(s["markets"], f"{p}.markets")
        if not weights:
            raise doc.fail(f"{p}.markets", "name at least one market")
        for mk, w in weights.items():
            if mk not in markets:
                raise doc.fail(f"{p}.markets.{mk}", f"unknown market {mk!r}")
            doc.number(w, f"{p}.markets.{mk}", lo=0.0, lo_open=True)
        total = sum(weights.values())
        population = MorphoPopulation(
            doc.integer(s["count"], f"{p}.count", lo=0, hi=200_000),
            doc.integer(s.get("seed", seed + 1), f"{p}.seed", lo=0),
            _size(doc, s["size_usd"], f"{p}.size_usd"),
            _bands(doc, s["health_factor"], f"{p}.health_factor", min_hf=MIN_OPEN_HF),
            {k: v / total for k, v in weights.items()},
        )
    return MorphoSpec(irm, markets, tuple(positions), population)


def parse_scenario(data: Any, source: str = "<scenario>", raw_text: str = "") -> Scenario:
    """Validate a parsed scenario document and build the frozen model."""
    doc = _Doc(source)
    top = doc.mapping(data, "", ("format", "name", "seed", "start_time", "assets", "venues", "aave_v3",
                                 "morpho_blue") + UNSUPPORTED_PROTOCOLS, ("assets",))
    if "format" in top and top["format"] != FORMAT:
        raise doc.fail("format", f"unsupported format {top['format']!r} (expected {FORMAT!r})")
    for name in UNSUPPORTED_PROTOCOLS:
        if name in top:
            raise doc.fail(name, f"{name} is not yet supported by the devnet (planned: a later issue); "
                                 "remove the section")
    seed = doc.integer(top.get("seed", 0), "seed", lo=0)
    assets = _assets(doc, top["assets"])
    v2, v3 = _venues(doc, top.get("venues"), assets)
    aave = _aave(doc, top["aave_v3"], assets, seed) if top.get("aave_v3") is not None else None
    morpho = _morpho(doc, top["morpho_blue"], assets, seed) if top.get("morpho_blue") is not None else None
    if aave is None and morpho is None:
        raise doc.fail("aave_v3", "a scenario needs at least one protocol section (aave_v3 or morpho_blue)")
    return Scenario(
        name=str(top.get("name", Path(source).stem)),
        seed=seed,
        assets=assets,
        uniswap_v2=v2,
        uniswap_v3=v3,
        aave=aave,
        morpho=morpho,
        start_time=doc.integer(top.get("start_time", 1_700_000_000), "start_time", lo=1, hi=2**40),
        source=source,
        raw_text=raw_text,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read a YAML/JSON scenario file and validate all of it (InputError names file and field)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scenario file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    return parse_scenario(data, str(path), text)
