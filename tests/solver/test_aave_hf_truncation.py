"""Aave truncates the collateral-weighted average liquidation threshold to whole bps (GenericLogic).

Hand-derived: 1 WETH at $1,000 (LT 82.50%) + 500 USDC... here 0.5 WBTC-like asset worth $500 (LT 70%):
exact average LT = (1000*8250 + 500*7000) / 1500 = 7833.33 bps; Aave uses 7833 bps.
Debt $1,174.97: exact weighted collateral 1,175.00 -> HF 1.000026 (healthy);
truncated 1500 * 0.7833 = 1,174.95 -> HF 0.999983 (liquidatable).
"""
from __future__ import annotations

import pytest

from defirisk.solver import health_factors, liquidatable_now
from tests.solver.helpers import make_snapshot

AAVE = ("aave-v3", "main", {"version": "3.0"}, {
    "WETH": {"liquidation_threshold": 0.825, "liquidation_bonus": 1.05},
    "WBTC": {"liquidation_threshold": 0.70, "liquidation_bonus": 1.10},
    "USDC": {"liquidation_threshold": 0.88, "liquidation_bonus": 1.045},
})


def _snap(debt_usd: float):
    return make_snapshot(
        {"WETH": 1000.0, "WBTC": 1000.0, "USDC": 1.0},
        [("aave-v3", "main", "0xa", "WETH", "collateral", 1.0),
         ("aave-v3", "main", "0xa", "WBTC", "collateral", 0.5),
         ("aave-v3", "main", "0xa", "USDC", "debt", debt_usd)],
        [AAVE],
    )


def test_truncated_average_lt_decides_liquidatability():
    snap = _snap(1174.97)
    hf = health_factors(snap).health_factor.iloc[0]
    assert hf == pytest.approx(1500 * 0.7833 / 1174.97, rel=1e-12)
    assert hf < 1.0 < 1175.0 / 1174.97
    assert list(liquidatable_now(snap).account) == ["0xa"]


def test_whole_bps_average_is_not_truncated_by_float_error():
    # 1000*8250 + 1000*7000 over 2000 = 7625 bps exactly: no truncation to 7624.
    snap = make_snapshot(
        {"WETH": 1000.0, "WBTC": 1000.0, "USDC": 1.0},
        [("aave-v3", "main", "0xb", "WETH", "collateral", 1.0),
         ("aave-v3", "main", "0xb", "WBTC", "collateral", 1.0),
         ("aave-v3", "main", "0xb", "USDC", "debt", 1000.0)],
        [AAVE],
    )
    assert health_factors(snap).health_factor.iloc[0] == pytest.approx(2000 * 0.7625 / 1000.0, rel=1e-12)
