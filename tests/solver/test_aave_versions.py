"""Version-exact Aave V3 liquidation rules, one hand-derived case per version point (docs/model.md,
"Liquidation rules", Aave V3 bullet, where each fact is cited to the protocol source):

1. HF: v3.0-3.4 truncate the collateral-weighted average LT to whole bps; v3.5+ do not.
2. Dust rule (v3.3+): the collateral left is balance - seized, the protocol fee INCLUDED in seized.
3. hasNoCollateralLeft (v3.3+): only collateral with LT > 0 counts; LT-0 collateral left behind does not
   stop the remaining debt from becoming deficit (bad debt).
4. E-mode: v3.0-3.5 keep an asset whose reserve LT is 0 at LT 0 inside an e-mode (no HF weight, never
   seized); v3.6+ give it the category's LT.

Each case states its arithmetic; the expected numbers come from those closed forms, never from the
solver. Every snapshot is built with tests/solver/helpers.make_snapshot as in test_cases.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
from numpy.testing import assert_allclose

from defirisk.errors import InputError
from defirisk.solver import health_factors, liquidatable_now, solve

from .helpers import case_figures, make_snapshot


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable
    shocks: dict
    mode: str
    expected: dict  # keys: repaid, liquidated_usd, bad, accounts, rounds, sold:<asset>
    doc: str         # the derivation by hand
    rtol: float = 1e-9


# --- 1. HF truncation: v3.4 truncates the average LT, v3.5 does not --------------------------------------
def two_collateral(version, weth=2000.0):
    """1 WETH (LT 83%) + 0.5 WBTC (LT 78%, $500 at $1,000) against 1,219.97 USDC; WETH $2,000 at p0."""
    assets = {"USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04},
              "WBTC": {"liquidation_threshold": 0.78, "liquidation_bonus": 1.05},
              "WETH": {"liquidation_threshold": 0.83, "liquidation_bonus": 1.05}}
    return make_snapshot({"USDC": 1.0, "WBTC": 1000.0, "WETH": weth},
                         [("aave-v3", "main", "u", "WETH", "collateral", 1.0), ("aave-v3", "main", "u", "WBTC", "collateral", 0.5),
                          ("aave-v3", "main", "u", "USDC", "debt", 1219.97)],
                         [("aave-v3", "main", {"version": version}, assets)])


HF_V34 = 1500.0 * 0.8133 / 1219.97
HF_V35 = 1220.0 / 1219.97


def test_hf_truncation_by_version():
    """WETH at $1,000: collateral 1,000 + 500 = 1,500; exact sum 1,000 x 0.83 + 500 x 0.78 = 1,220.00,
    average LT 1,220/1,500 = 81.3333% = 8,133.33 bps.
    v3.4 truncates to 8,133 bps: 1,500 x 0.8133 = 1,219.95 < 1,219.97 -> HF 0.9999836, liquidatable.
    v3.5 keeps the exact sum: 1,220.00 / 1,219.97 -> HF 1.0000246, healthy.
    Checked here at those prices with the static views (rtol 1e-12)."""
    for version, want, liq in (("3.4", HF_V34, ["u"]), ("3.5", HF_V35, [])):
        snap = two_collateral(version, weth=1000.0)
        assert health_factors(snap).health_factor.iloc[0] == pytest.approx(want, rel=1e-12), version
        assert list(liquidatable_now(snap).account) == liq, version
    assert HF_V34 < 1.0 < HF_V35


# --- 2. dust rule with a protocol fee (v3.3+) -----------------------------------------------------------------
def dust_with_fee():
    """3.5 WETH ($7,000) + 0.115 WBTC ($6,900), both LT 85% / LB 1.05, WETH protocol fee 50%, vs 12,000 USDC."""
    assets = {"USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04},
              "WBTC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.05},
              "WETH": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.05, "liquidation_protocol_fee": 0.5}}
    return make_snapshot({"USDC": 1.0, "WBTC": 60_000.0, "WETH": 2000.0},
                         [("aave-v3", "main", "u", "WETH", "collateral", 3.5), ("aave-v3", "main", "u", "WBTC", "collateral", 0.115),
                          ("aave-v3", "main", "u", "USDC", "debt", 12_000.0)],
                         [("aave-v3", "main", {"version": "3.3"}, assets)])


DUST_FEE = 0.5 * (3.0 - 3.0 / 1.05)  # protocol fee on 3 WETH seized: half of the bonus part


# --- 3. hasNoCollateralLeft counts only LT > 0 collateral (v3.3+) ---------------------------------------
def lt0_left(version):
    """1 WETH (LT 80%, LB 1.05) + 100 GOV ($10, LT 0) vs 1,500 USDC; WETH $2,000 at p0."""
    assets = {"GOV": {"liquidation_threshold": 0.0},
              "USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04},
              "WETH": {"liquidation_threshold": 0.8, "liquidation_bonus": 1.05}}
    return make_snapshot({"GOV": 10.0, "USDC": 1.0, "WETH": 2000.0},
                         [("aave-v3", "main", "u", "WETH", "collateral", 1.0), ("aave-v3", "main", "u", "GOV", "collateral", 100.0),
                          ("aave-v3", "main", "u", "USDC", "debt", 1500.0)],
                         [("aave-v3", "main", {"version": version}, assets)])


# --- 4. reserve LT 0 inside an e-mode: skipped before v3.6, counted from v3.6 ---------------------------
def emode_base_lt0(version):
    """E-mode 1 (LT 93%, LB 1.01) lists WETH and stETH; stETH's own (reserve) LT is 0. Account in e-mode 1:
    10 WETH + 5 stETH ($2,000 each) vs 15,000 USDC."""
    assets = {"USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04},
              "WETH": {"liquidation_threshold": 0.8, "liquidation_bonus": 1.05},
              "stETH": {"liquidation_threshold": 0.0}}
    emode = {"1": {"liquidation_threshold": 0.93, "liquidation_bonus": 1.01, "assets": ["WETH", "stETH"]}}
    return make_snapshot({"USDC": 1.0, "WETH": 2000.0, "stETH": 2000.0},
                         [("aave-v3", "main", "e", "WETH", "collateral", 10.0, 1), ("aave-v3", "main", "e", "stETH", "collateral", 5.0, 1),
                          ("aave-v3", "main", "e", "USDC", "debt", 15_000.0, 1)],
                         [("aave-v3", "main", {"version": version, "emode_categories": emode}, assets)])


EMODE_SEIZED_WETH = 7_500.0 * 1.01 / 1600.0  # 4.734375 WETH


CASES = [
    Case("aave-v34-hf-truncated-liquidates", lambda: two_collateral("3.4"), {"WETH": 0.5}, "sequential",
         {"repaid": 1000.0 / 1.05, "liquidated_usd": 1000.0, "bad": 0.0, "accounts": 1, "rounds": 1},
         doc="""WETH -50% -> $1,000 (at p0: 2,000 x 0.83 + 390 = 2,050 vs 1,219.97: healthy in every version).
         v3.4 truncates: HF = 1,500 x 0.8133 / 1,219.97 = 0.9999836 < 1 (test_hf_truncation_by_version).
         v3.3+ close factor: the WETH reserve is $1,000 < $2,000 -> 100% of the reserve debt; 1,219.97 x 1.05
         / 1,000 = 1.281 > 1 WETH, so all 1 WETH is seized and 1,000 / 1.05 = 952.38 repaid (the collateral
         reserve is cleared: no dust check). Left: 0.5 WBTC x 1,000 x 0.78 = 390 vs 267.59 -> HF 1.457."""),
    Case("aave-v35-hf-exact-healthy", lambda: two_collateral("3.5"), {"WETH": 0.5}, "sequential",
         {"repaid": 0.0, "liquidated_usd": 0.0, "accounts": 0},
         doc="""Same account and shock; v3.5 keeps the exact sum: HF = 1,220.00 / 1,219.97 = 1.0000246 >= 1:
         nothing is liquidated."""),
    Case("aave-v33-dust-collateral-fee", dust_with_fee, {"WETH": 0.0}, "sequential",
         {"repaid": 6_000.0 / 1.05, "liquidated_usd": 6_000.0, "sold:WETH": 3.0 - DUST_FEE, "bad": 0.0, "rounds": 1},
         doc="""No shock: HF = 13,900 x 0.85 / 12,000 = 0.98458 > 0.95; WETH $7,000 and USDC $12,000 are each
         >= $2,000 and USDC is 100% > 50% of the total debt -> max repay 50% of 12,000 = 6,000, seizing 6,000 x
         1.05 / 2,000 = 3.15 WETH (partial). Collateral left = 3.5 - 3.15 = 0.35 WETH = $700 < $1,000:
         MUST_NOT_LEAVE_DUST. The contract counts the fee as gone (balance - liquidator's part - fee =
         balance - seized), so the largest permitted call seizes 3.5 - 1,000/2,000 = 3 WETH and repays
         3 x 2,000 / 1.05 = 5,714.29; fee 0.5 x (3 - 3/1.05) = 0.0714 WETH, sold 2.9286 WETH. (Counting
         balance - (seized - fee) would allow seizing 3 / (1 - 0.5 x 0.05/1.05) = 3.0732 WETH, repaying
         5,853.66.) After: (1,000 + 6,900) x 0.85 = 6,715 vs 6,285.71 -> HF 1.068: one call."""),
    Case("aave-v33-lt0-collateral-left-deficit", lambda: lt0_left("3.3"), {"WETH": 0.5}, "sequential",
         {"repaid": 1000.0 / 1.05, "liquidated_usd": 1000.0, "bad": 1500.0 - 1000.0 / 1.05, "accounts": 1},
         doc="""WETH -50% -> $1,000: HF = 1,000 x 0.8 / 1,500 = 0.533 (GOV has LT 0: no weight). The WETH
         reserve is < $2,000 -> 100% of the reserve debt: 1,500 x 1.05 / 1,000 = 1.575 > 1 WETH -> seize
         1 WETH, repay 1,000 / 1.05 = 952.38. All LT>0 collateral ($1,000 of WETH) was seized ->
         hasNoCollateralLeft: the remaining 1,500 - 952.38 = 547.62 is deficit (bad debt) although 100 GOV
         ($1,000, LT 0) stays with the account."""),
    Case("aave-v30-lt0-collateral-left-no-writeoff", lambda: lt0_left("3.0"), {"WETH": 0.5}, "sequential",
         {"repaid": 1000.0 / 1.05, "liquidated_usd": 1000.0, "bad": 0.0, "accounts": 1},
         doc="""Same account on v3.0 (HF 0.533 <= 0.95 -> 100% close factor, same call: 1 WETH seized, 952.38
         repaid). v3.0 has no deficit mechanism; the model writes off only an account with no collateral at
         all, and 100 GOV remain, so no bad debt is booked (unchanged behaviour)."""),
    Case("aave-v30-emode-reserve-lt0-skipped", lambda: emode_base_lt0("3.0"), {"WETH": 0.2}, "sequential",
         {"repaid": 7_500.0, "liquidated_usd": 7_500.0 * 1.01, "sold:WETH": EMODE_SEIZED_WETH, "sold:stETH": 0.0, "rounds": 1},
         doc="""WETH -20% -> $1,600 (stETH stays $2,000). stETH's reserve LT is 0, so v3.0 gives it no weight
         even in e-mode: HF = 16,000 x 0.93 / 15,000 = 0.992 (at p0: 20,000 x 0.93 / 15,000 = 1.24, healthy).
         HF > 0.95 -> 50% of the USDC reserve = 7,500. Only WETH can be seized: 7,500 x 1.01 / 1,600 =
         4.734375 WETH. After: 5.265625 x 1,600 x 0.93 / 7,500 = 1.0447: one call."""),
    Case("aave-v35-emode-reserve-lt0-skipped", lambda: emode_base_lt0("3.5"), {"WETH": 0.2}, "sequential",
         {"repaid": 7_500.0, "liquidated_usd": 7_500.0 * 1.01, "sold:WETH": EMODE_SEIZED_WETH, "sold:stETH": 0.0, "rounds": 1},
         doc="""As on v3.0 (HF 0.992, stETH ignored). v3.3+ close factor: WETH $16,000 and USDC $15,000 are
         each >= $2,000, HF > 0.95 and USDC is all the debt -> 50% of the total = 7,500 (same repay); seize
         4.734375 WETH; left $8,425 of WETH and $7,500 of debt, both >= $1,000 (no dust). One call."""),
    Case("aave-v36-emode-reserve-lt0-counts", lambda: emode_base_lt0("3.6"), {"WETH": 0.2}, "sequential",
         {"repaid": 0.0, "liquidated_usd": 0.0, "accounts": 0},
         doc="""v3.6 decouples e-mode from the reserve configuration: stETH takes the category LT 93%:
         HF = (16,000 + 10,000) x 0.93 / 15,000 = 1.612: nothing is liquidated."""),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case):
    r = solve(case.build(), case.shocks, case.mode)
    got = case_figures(r, case.expected)
    for key, want in case.expected.items():
        assert_allclose(got[key], want, rtol=case.rtol, atol=1e-6, err_msg=f"{case.id}: {key}")


def test_emode_reserve_lt0_health_factor():
    """At p0 (WETH = stETH = $2,000), e-mode LT 93%: v3.5 counts WETH only, 20,000 x 0.93 / 15,000 = 1.24;
    v3.6 counts both, 30,000 x 0.93 / 15,000 = 1.86 (rtol 1e-12)."""
    for version, want in (("3.5", 20_000.0 * 0.93 / 15_000.0), ("3.6", 30_000.0 * 0.93 / 15_000.0)):
        assert health_factors(emode_base_lt0(version)).health_factor.iloc[0] == pytest.approx(want, rel=1e-12), version


# --- version validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v3", "9.9", "3.8", "3", "3.", "3.x", "", "v3.3", "4.0", "3.10", " 3.3"])
def test_unknown_version_is_refused(version):
    with pytest.raises(InputError, match=r"market aave-v3/main, params\.version: .* allowed: 3\.0, 3\.1, 3\.2, 3\.3, 3\.4, 3\.5, 3\.6, 3\.7"):
        solve(two_collateral(version), {"WETH": 0.1}, "sequential")


def test_non_string_version_is_refused():
    with pytest.raises(InputError, match=r"params\.version"):
        solve(two_collateral(3.3), {"WETH": 0.1}, "sequential")


@pytest.mark.parametrize("version", ["3.0", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7", "3.0.2", "3.3.0"])
def test_known_versions_are_accepted(version):
    r = solve(two_collateral(version), {"WETH": 0.0}, "sequential")
    assert r.totals.accounts_liquidated == 0
