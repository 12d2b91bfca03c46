"""Turn a validated Scenario into concrete positions (pure, deterministic, no chain).

Every position gets its own account address derived from the scenario seed, exact integer token
amounts (base units) and the health factor those amounts give at the scenario's feed prices. Tests
and the docs use the same functions to say which accounts a price move should make liquidatable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from eth_utils import keccak, to_checksum_address

from defirisk.devnet.scenario import (
    AaveMix, Band, MorphoMarketSpec, Scenario, SizeDist, effective_lt,
)
from defirisk.errors import InputError

# Borrowers may use at most this share of a pool's liquidity: full utilisation would make the
# interest-rate models jump to slope2 and leave no room for liquidators' flows.
MAX_BUILD_UTILISATION = 0.95


@dataclass(frozen=True)
class AavePosition:
    account: str
    label: str
    emode: int
    collateral: Mapping[str, int]  # symbol -> base units
    debt: Mapping[str, int]  # symbol -> base units (variable rate)
    health_factor: float  # at the scenario prices, from the integer amounts


@dataclass(frozen=True)
class MorphoPosition:
    account: str
    label: str
    market: str
    collateral: int  # base units of the collateral token
    borrow: int  # base units of the loan token
    health_factor: float  # collateral value * lltv / debt, at the scenario prices


@dataclass(frozen=True)
class Plan:
    aave: tuple[AavePosition, ...]
    morpho: tuple[MorphoPosition, ...]
    aave_liquidity: Mapping[str, int]  # symbol -> base units supplied by the liquidity account
    morpho_supply: Mapping[str, int]  # market key -> loan base units supplied


def derive_account(seed: int, role: str, index: int) -> str:
    """Deterministic, distinct EOA-like address for scenario account `index` in `role`."""
    return to_checksum_address(keccak(text=f"defirisk-devnet/{seed}/{role}/{index}")[12:])


def to_units(amount: float, decimals: int) -> int:
    return int(math.floor(amount * 10**decimals))


def _usd(scn: Scenario, sym: str, units: int) -> float:
    a = scn.assets[sym]
    return units / 10**a.decimals * a.price_usd


def aave_health_factor(scn: Scenario, pos: AavePosition, prices: Mapping[str, float] | None = None) -> float:
    """Aave V3.0 health factor: sum(collateral USD * LT) / debt USD (inf without debt)."""
    prices = {**{s: a.price_usd for s, a in scn.assets.items()}, **(prices or {})}
    coll = sum(units / 10**scn.assets[s].decimals * prices[s] * effective_lt(scn.aave, s, pos.emode)
               for s, units in pos.collateral.items())
    debt = sum(units / 10**scn.assets[s].decimals * prices[s] for s, units in pos.debt.items())
    return math.inf if debt == 0 else coll / debt


def morpho_health_factor(scn: Scenario, pos: MorphoPosition, prices: Mapping[str, float] | None = None) -> float:
    """Morpho Blue: collateral * price * lltv / borrowed (price = collateral USD / loan USD)."""
    prices = {**{s: a.price_usd for s, a in scn.assets.items()}, **(prices or {})}
    mkt = scn.morpho.markets[pos.market]
    c, l = scn.assets[mkt.collateral], scn.assets[mkt.loan]
    coll_in_loan = pos.collateral / 10**c.decimals * prices[mkt.collateral] / prices[mkt.loan]
    debt = pos.borrow / 10**l.decimals
    return math.inf if debt == 0 else coll_in_loan * mkt.lltv / debt


def _draw_sizes(rng: np.random.Generator, n: int, dist: SizeDist) -> np.ndarray:
    return np.clip(rng.lognormal(math.log(dist.median), dist.sigma, n), dist.min, dist.max)


def _draw_hf(rng: np.random.Generator, n: int, bands: tuple[Band, ...]) -> np.ndarray:
    w = np.array([b.weight for b in bands], dtype=float)
    idx = rng.choice(len(bands), size=n, p=w / w.sum())
    lo = np.array([b.low for b in bands])[idx]
    hi = np.array([b.high for b in bands])[idx]
    return lo + (hi - lo) * rng.random(n)


def _aave_from_target(scn: Scenario, account: str, label: str, emode: int, coll_usd: Mapping[str, float],
                      debt_split: Mapping[str, float], hf: float) -> AavePosition:
    coll = {s: to_units(v / scn.assets[s].price_usd, scn.assets[s].decimals) for s, v in coll_usd.items()}
    weighted = sum(_usd(scn, s, u) * effective_lt(scn.aave, s, emode) for s, u in coll.items())
    debt_usd = weighted / hf
    debt = {s: to_units(debt_usd * w / scn.assets[s].price_usd, scn.assets[s].decimals)
            for s, w in debt_split.items()}
    pos = AavePosition(account, label, emode, coll, debt, 0.0)
    return AavePosition(account, label, emode, coll, debt, aave_health_factor(scn, pos))


def _morpho_from_target(scn: Scenario, account: str, label: str, mkt: MorphoMarketSpec, coll_units: int,
                        hf: float) -> MorphoPosition:
    c, l = scn.assets[mkt.collateral], scn.assets[mkt.loan]
    borrow_value = coll_units / 10**c.decimals * c.price_usd * mkt.lltv / hf
    borrow = to_units(borrow_value / l.price_usd, l.decimals)
    pos = MorphoPosition(account, label, mkt.key, coll_units, borrow, 0.0)
    return MorphoPosition(account, label, mkt.key, coll_units, borrow, morpho_health_factor(scn, pos))


def plan_positions(scn: Scenario) -> Plan:
    """All positions of the scenario with amounts and accounts; checks pool liquidity suffices."""
    aave: list[AavePosition] = []
    morpho: list[MorphoPosition] = []
    if scn.aave is not None:
        a = scn.aave
        for i, p in enumerate(a.positions):
            account = derive_account(scn.seed, "aave-explicit", i)
            if p.health_factor is not None:
                coll_usd = {s: x * scn.assets[s].price_usd for s, x in p.collateral.items()}
                aave.append(_aave_from_target(scn, account, p.label, p.emode, coll_usd, p.debt_split, p.health_factor))
            else:
                coll = {s: to_units(x, scn.assets[s].decimals) for s, x in p.collateral.items()}
                debt = {s: to_units(x, scn.assets[s].decimals) for s, x in p.debt.items()}
                pos = AavePosition(account, p.label, p.emode, coll, debt, 0.0)
                aave.append(AavePosition(account, p.label, p.emode, coll, debt, aave_health_factor(scn, pos)))
        if a.population is not None and a.population.count:
            pop = a.population
            rng = np.random.default_rng(pop.seed)
            n = pop.count
            sizes = _draw_sizes(rng, n, pop.size_usd)
            hfs = _draw_hf(rng, n, pop.health_factor)
            w = np.array([m.weight for m in pop.mixes])
            mix_idx = rng.choice(len(pop.mixes), size=n, p=w / w.sum())
            for i in range(n):
                mix: AaveMix = pop.mixes[mix_idx[i]]
                coll_usd = {s: float(sizes[i]) * share for s, share in mix.collateral.items()}
                aave.append(_aave_from_target(scn, derive_account(pop.seed, "aave", i), f"aave-pop-{i}",
                                              mix.emode, coll_usd, mix.debt, float(hfs[i])))
    if scn.morpho is not None:
        m = scn.morpho
        for j, p in enumerate(m.positions):
            mkt = m.markets[p.market]
            account = derive_account(scn.seed, "morpho-explicit", j)
            coll_units = to_units(p.collateral, scn.assets[mkt.collateral].decimals)
            if p.health_factor is not None:
                morpho.append(_morpho_from_target(scn, account, p.label, mkt, coll_units, p.health_factor))
            else:
                pos = MorphoPosition(account, p.label, p.market, coll_units,
                                     to_units(p.borrow, scn.assets[mkt.loan].decimals), 0.0)
                morpho.append(MorphoPosition(account, p.label, p.market, pos.collateral, pos.borrow,
                                             morpho_health_factor(scn, pos)))
        if m.population is not None and m.population.count:
            pop = m.population
            rng = np.random.default_rng(pop.seed)
            n = pop.count
            sizes = _draw_sizes(rng, n, pop.size_usd)
            hfs = _draw_hf(rng, n, pop.health_factor)
            keys = list(pop.markets)
            w = np.array([pop.markets[k] for k in keys])
            midx = rng.choice(len(keys), size=n, p=w / w.sum())
            for i in range(n):
                mkt = m.markets[keys[midx[i]]]
                c = scn.assets[mkt.collateral]
                coll_units = to_units(float(sizes[i]) / c.price_usd, c.decimals)
                morpho.append(_morpho_from_target(scn, derive_account(pop.seed, "morpho", i),
                                                  f"morpho-pop-{i}", mkt, coll_units, float(hfs[i])))

    for pos in aave:
        if not pos.debt or min(pos.debt.values()) <= 0 or min(pos.collateral.values()) <= 0:
            raise InputError(f"{scn.source}: aave_v3 position {pos.label}: amounts round to zero "
                             "(size_usd too small for the token decimals)")
    for pos in morpho:
        if pos.borrow <= 0 or pos.collateral <= 0:
            raise InputError(f"{scn.source}: morpho_blue position {pos.label}: amounts round to zero")

    liquidity = {}
    if scn.aave is not None:
        liquidity = {s: to_units(x, scn.assets[s].decimals) for s, x in scn.aave.liquidity.items()}
        supplied = dict(liquidity)
        borrowed: dict[str, int] = {}
        for pos in aave:
            for s, u in pos.collateral.items():
                supplied[s] = supplied.get(s, 0) + u
            for s, u in pos.debt.items():
                borrowed[s] = borrowed.get(s, 0) + u
        for s, u in borrowed.items():
            if u > MAX_BUILD_UTILISATION * supplied.get(s, 0):
                need = u / MAX_BUILD_UTILISATION / 10**scn.assets[s].decimals
                raise InputError(f"{scn.source}: aave_v3.liquidity.{s}: borrowers take "
                                 f"{u / 10**scn.assets[s].decimals:,.0f} {s} but only "
                                 f"{supplied.get(s, 0) / 10**scn.assets[s].decimals:,.0f} is supplied; "
                                 f"supply at least {need:,.0f} in total")
        for s, r in scn.aave.reserves.items():
            dec = scn.assets[s].decimals
            if r.supply_cap and supplied.get(s, 0) > r.supply_cap * 10**dec:
                raise InputError(f"{scn.source}: aave_v3.reserves.{s}.supply_cap: {r.supply_cap} is below "
                                 f"the {supplied[s] / 10**dec:,.0f} {s} the scenario supplies")
            if r.borrow_cap and borrowed.get(s, 0) > r.borrow_cap * 10**dec:
                raise InputError(f"{scn.source}: aave_v3.reserves.{s}.borrow_cap: {r.borrow_cap} is below "
                                 f"the {borrowed[s] / 10**dec:,.0f} {s} the scenario borrows")
    supply = {}
    if scn.morpho is not None:
        for key, mkt in scn.morpho.markets.items():
            dec = scn.assets[mkt.loan].decimals
            supply[key] = to_units(mkt.supply, dec)
            used = sum(p.borrow for p in morpho if p.market == key)
            if used > MAX_BUILD_UTILISATION * supply[key]:
                raise InputError(f"{scn.source}: morpho_blue.markets.{key}.supply: borrowers take "
                                 f"{used / 10**dec:,.0f} {mkt.loan} of {mkt.supply:,.0f} supplied; raise it to "
                                 f"at least {used / MAX_BUILD_UTILISATION / 10**dec:,.0f}")
    return Plan(tuple(aave), tuple(morpho), liquidity, supply)
