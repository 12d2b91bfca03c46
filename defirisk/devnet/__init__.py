"""Devnet: real protocol code (Aave V3, Morpho Blue, Uniswap V2/V3) deployed on a local anvil from a
scenario file, with positions opened by real protocol calls; cached as anvil state.

    from defirisk.devnet import running_devnet
    with running_devnet("fixtures/scenarios/small.yaml") as dn:
        dn.rpc_url, dn.book["aave_v3"]["pool"], dn.book_path
"""
from defirisk.devnet.build import (
    DEFAULT_SCENARIO, BuildInfo, Devnet, build_devnet, cache_key, running_devnet, start_devnet,
)
from defirisk.devnet.population import Plan, plan_positions
from defirisk.devnet.scenario import Scenario, load_scenario, parse_scenario

__all__ = [
    "DEFAULT_SCENARIO", "BuildInfo", "Devnet", "Plan", "Scenario", "build_devnet", "cache_key",
    "load_scenario", "parse_scenario", "plan_positions", "running_devnet", "start_devnet",
]
