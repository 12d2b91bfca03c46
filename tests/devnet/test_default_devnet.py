"""The default devnet itself (>= 2,000 Aave and >= 300 Morpho accounts). Slow on a cold cache
(about a minute to build), seconds when cached."""
from __future__ import annotations

from pathlib import Path

import pytest
from eth_abi import decode

from defirisk.devnet import running_devnet
from defirisk.devnet.population import aave_health_factor, morpho_health_factor
from defirisk.devnet.tx import Chain, calldata

DEFAULT = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "default.yaml"

pytestmark = [pytest.mark.chain, pytest.mark.slow]


def test_default_devnet_positions_and_cluster_trigger():
    with running_devnet(DEFAULT) as dn:
        plan = dn.plan()
        scn = dn.scenario
        assert len(plan.aave) >= 2000 and len(plan.morpho) >= 300
        pool = dn.book["aave_v3"]["pool"]
        raw = dn.anvil.rpc_batch([("eth_call", [{"to": pool, "data": calldata("getUserAccountData(address)", a.account)},
                                                "latest"]) for a in plan.aave])
        hfs = [decode(["uint256"] * 6, bytes.fromhex(r[2:]))[5] / 1e18 for r in raw]
        for pos, hf in zip(plan.aave, hfs):
            assert hf == pytest.approx(pos.health_factor, rel=1e-6), pos.label

        # WETH -11 %: inside Aave cluster A, above Morpho cluster B
        p = scn.assets["WETH"].price_usd * 0.89
        chain = Chain(dn.anvil)
        chain.send(dn.book["feeds"]["WETH"], "setAnswer(int256)", int(p * 1e8))
        raw = dn.anvil.rpc_batch([("eth_call", [{"to": pool, "data": calldata("getUserAccountData(address)", a.account)},
                                                "latest"]) for a in plan.aave])
        got = {a.account for a, r in zip(plan.aave, raw) if decode(["uint256"] * 6, bytes.fromhex(r[2:]))[5] < 10**18}
        want = {a.account for a in plan.aave if aave_health_factor(scn, a, {"WETH": p}) < 1}
        near = {a.account for a in plan.aave if abs(aave_health_factor(scn, a, {"WETH": p}) - 1) < 1e-5}
        assert got - near == want - near and len(want) > 150
        assert sum(morpho_health_factor(scn, m, {"WETH": p}) < 1 for m in plan.morpho) < 25
