"""The default scenario's design claims, checked with venue math (no chain).

A back-of-envelope sequential cascade on the shared WETH/USDC venues (Uniswap V2 x*y=k plus the V3
ranges, fees ignored), used to place the liquidation clusters; NOT the project's solver. Run this file
directly to print the table quoted in docs/devnet.md:

    .venv/bin/python tests/devnet/test_default_scenario.py
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from defirisk.devnet import load_scenario, plan_positions
from defirisk.devnet.scenario import effective_lt

DEFAULT = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "default.yaml"


class WethVenue:
    """WETH sold into V2 WETH/USDC + V3 WETH/USDC ranges; both end at the same marginal price."""

    def __init__(self, scn):
        self.p0 = scn.assets["WETH"].price_usd
        v2 = scn.uniswap_v2["WETH/USDC"]
        self.r = v2.base_reserve
        self.k = self.r * self.r * self.p0
        self.ranges = []  # (Pa, Pb, L) in human units (USDC per WETH)
        for key, pool in scn.uniswap_v3.items():
            if (pool.base, pool.quote) != ("WETH", "USDC"):
                continue
            for rg in pool.ranges:
                pa, pb = self.p0 * (1 + rg.lower_pct / 100), self.p0 * (1 + rg.upper_pct / 100)
                s, sa, sb = math.sqrt(self.p0), math.sqrt(pa), math.sqrt(pb)
                per_l = (1 / s - 1 / sb) * self.p0 + (s - sa)
                self.ranges.append((pa, pb, rg.value_usd / per_l))

    def sold_to_reach(self, p: float) -> float:
        """WETH that must be sold to move the marginal price from p0 down to p."""
        x = math.sqrt(self.k / p) - self.r
        for pa, pb, liq in self.ranges:
            hi, lo = min(self.p0, pb), max(p, pa)
            if hi > lo:
                x += liq * (1 / math.sqrt(lo) - 1 / math.sqrt(hi))
        return x

    def price_after(self, sold: float) -> float:
        lo, hi = 1e-9, self.p0
        for _ in range(200):
            mid = (lo + hi) / 2
            if self.sold_to_reach(mid) > sold:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2


@dataclass
class Outcome:
    shock: float
    p_hat: float
    p_end: float
    aave: int
    morpho: int
    morpho_at_p_hat: int
    aave_at_p_hat: int
    weth_sold: float
    rounds: int
    first_protocol: str


def cascade(scn, plan, shock: float) -> Outcome:
    venue = WethVenue(scn)
    px = {s: a.price_usd for s, a in scn.assets.items()}
    dec = {s: a.decimals for s, a in scn.assets.items()}
    aave = [({s: u / 10**dec[s] for s, u in p.collateral.items()}, {s: u / 10**dec[s] for s, u in p.debt.items()},
             p.emode) for p in plan.aave]
    weth_m = scn.morpho.markets["WETH/USDC"]
    lif = min(1.15, 1 / (1 - 0.3 * (1 - weth_m.lltv)))
    morpho = [[p.collateral / 10**18, p.borrow / 10**6] for p in plan.morpho if p.market == "WETH/USDC"]
    sold = venue.sold_to_reach(px["WETH"] * (1 - shock))
    p = p_hat = venue.price_after(sold)

    def aave_hf(c, d, e, p):
        prices = {**px, "WETH": p}
        dv = sum(v * prices[s] for s, v in d.items())
        return math.inf if dv <= 1e-9 else sum(v * prices[s] * effective_lt(scn.aave, s, e) for s, v in c.items()) / dv

    at_hat_a = sum(aave_hf(c, d, e, p_hat) < 1 for c, d, e in aave)
    at_hat_m = sum(c * p * weth_m.lltv < b for c, b in morpho)
    hit_a, hit_m, rounds, first = set(), set(), 0, ""
    while True:
        weth_out = 0.0
        for i, (c, d, e) in enumerate(aave):
            hf = aave_hf(c, d, e, p)
            if hf >= 1:
                continue
            prices = {**px, "WETH": p}
            debt_sym = max(d, key=lambda s: d[s] * prices[s])
            coll_sym = "WETH" if c.get("WETH", 0) > 0 else max(c, key=lambda s: c[s] * prices[s])
            cover = d[debt_sym] * (0.5 if hf > 0.95 else 1.0)
            bonus = 1 + (scn.aave.emodes[e].liquidation_bonus if e and coll_sym in scn.aave.emodes[e].assets
                         else scn.aave.reserves[coll_sym].liquidation_bonus)
            seized = cover * prices[debt_sym] * bonus / prices[coll_sym]
            if seized > c[coll_sym]:
                seized, cover = c[coll_sym], c[coll_sym] * prices[coll_sym] / bonus / prices[debt_sym]
            c[coll_sym] -= seized
            d[debt_sym] -= cover
            hit_a.add(i)
            if coll_sym == "WETH":
                weth_out += seized
        for j, pos in enumerate(morpho):
            coll, debt = pos
            if debt > 0 and coll * p * weth_m.lltv < debt:
                seized = min(coll, debt * lif / p)
                pos[0], pos[1] = coll - seized, 0.0
                hit_m.add(j)
                weth_out += seized
        if weth_out <= 1e-12:
            break
        if not first:
            first = "aave" if hit_a else "morpho"
        rounds += 1
        sold += weth_out
        p = venue.price_after(sold)
    return Outcome(shock, p_hat, p, len(hit_a), len(hit_m), at_hat_m, at_hat_a, sold, rounds, first)


@pytest.fixture(scope="module")
def default():
    scn = load_scenario(DEFAULT)
    return scn, plan_positions(scn)


def test_default_population_sizes_and_spread(default):
    scn, plan = default
    assert len(plan.aave) >= 2000 and len(plan.morpho) >= 300
    assert sum(len(p.collateral) > 1 for p in plan.aave) >= 400  # multi-collateral accounts
    assert len({p.market for p in plan.morpho}) == 3
    hfs = [p.health_factor for p in plan.aave] + [p.health_factor for p in plan.morpho]
    assert min(hfs) > 1.0 and min(hfs) < 1.05 and max(hfs) > 3.0


def test_shared_venue_cascade_crosses_protocols(default):
    scn, plan = default
    out = cascade(scn, plan, 0.12)
    # -12 % reaches Aave cluster A (WETH-only, HF 1.10-1.14) but not Morpho cluster B (HF >= 1.15
    # needs -13 %); the WETH Aave liquidators sell pushes cluster B over.
    assert out.aave_at_p_hat > 200 and out.morpho_at_p_hat < 25
    assert out.morpho - out.morpho_at_p_hat >= 50
    assert out.p_end < out.p_hat * 0.95
    quiet = cascade(scn, plan, 0.08)  # below cluster A: only the fragile tail, no chain reaction
    assert quiet.p_end > quiet.p_hat * 0.99


def test_cascade_is_visible_but_not_total(default):
    scn, plan = default
    for shock in (0.10, 0.20, 0.30):
        out = cascade(scn, plan, shock)
        assert out.p_end < out.p_hat  # liquidations always add sales once a cluster is reached
        assert out.p_end > 0.45 * scn.assets["WETH"].price_usd  # the venues absorb it: no collapse


if __name__ == "__main__":
    scn = load_scenario(DEFAULT)
    plan = plan_positions(scn)
    print("shock  p_hat    p_end    aave_liq(at p_hat)  morpho_liq(at p_hat)  WETH sold  rounds  first")
    for s in (0.05, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15, 0.20, 0.25, 0.30):
        o = cascade(scn, plan, s)
        print(f"{s:5.0%}  {o.p_hat:7.1f}  {o.p_end:7.1f}  {o.aave:5d} ({o.aave_at_p_hat:4d})        "
              f"{o.morpho:4d} ({o.morpho_at_p_hat:3d})           {o.weth_sold:9.0f}  {o.rounds:5d}  {o.first_protocol}")
