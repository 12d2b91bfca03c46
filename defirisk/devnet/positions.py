"""Open the planned positions on chain with real protocol calls from distinct impersonated accounts.

Order: fund (owner mints in batches; gas money via anvil_setBalance) -> liquidity providers supply ->
borrowers approve + supply collateral (+ e-mode) -> borrowers borrow. Supplies and borrows are two
separate bulk phases so no borrow is mined before the liquidity it draws on.
"""
from __future__ import annotations

from collections import defaultdict

from defirisk.devnet.deploy import MARKET_PARAMS, MAX_UINT, Deployment, morpho_params
from defirisk.devnet.population import Plan, derive_account
from defirisk.devnet.scenario import Scenario
from defirisk.devnet.tx import DEPLOYER, Bulk, Chain

GAS_MONEY_WEI = 100 * 10**18
MINT_CHUNK = 300  # accounts per mintBatch transaction (~30k gas each)
AAVE_REFERRAL = 0
VARIABLE_RATE = 2


def liquidity_accounts(scn: Scenario, plan: Plan) -> tuple[str, dict[str, str]]:
    """The Aave liquidity account and one Morpho supplier per market (deterministic)."""
    aave_lp = derive_account(scn.seed, "aave-liquidity", 0)
    suppliers = {key: derive_account(scn.seed, "morpho-supplier", i) for i, key in enumerate(plan.morpho_supply)}
    return aave_lp, suppliers


def open_positions(chain: Chain, scn: Scenario, dep: Deployment, plan: Plan, bulk: Bulk) -> None:
    anvil = chain.anvil
    aave_lp, suppliers = liquidity_accounts(scn, plan)
    # Mint what each account needs, per token.
    need: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sym, units in plan.aave_liquidity.items():
        need[sym][aave_lp] += units
    for key, units in plan.morpho_supply.items():
        need[scn.morpho.markets[key].loan][suppliers[key]] += units
    for pos in plan.aave:
        for sym, units in pos.collateral.items():
            need[sym][pos.account] += units
    for pos in plan.morpho:
        need[scn.morpho.markets[pos.market].collateral][pos.account] += pos.collateral

    accounts = sorted({a for per in need.values() for a in per})
    anvil.rpc_batch([("anvil_setBalance", [a, hex(GAS_MONEY_WEI)]) for a in accounts])
    anvil.rpc("anvil_autoImpersonateAccount", True)
    for sym, per in need.items():
        items = sorted(per.items())
        for i in range(0, len(items), MINT_CHUNK):
            chunk = items[i:i + MINT_CHUNK]
            bulk.add(DEPLOYER, dep.tokens[sym]["address"], "mintBatch(address[],uint256[])",
                     [a for a, _ in chunk], [u for _, u in chunk], gas=15_000_000, label=f"mintBatch {sym}")
    bulk.flush()

    pool = dep.aave.get("pool")
    morpho = dep.morpho.get("morpho")
    # Phase 1: liquidity.
    for sym, units in plan.aave_liquidity.items():
        if units:
            token = dep.tokens[sym]["address"]
            bulk.add(aave_lp, token, "approve(address,uint256)", pool, MAX_UINT, gas=80_000, label=f"Aave LP approve {sym}")
            bulk.add(aave_lp, pool, "supply(address,uint256,address,uint16)", token, units, aave_lp, AAVE_REFERRAL,
                     gas=600_000, label=f"Aave LP supply {sym}")
    for key, units in plan.morpho_supply.items():
        if units:
            sup = suppliers[key]
            loan = dep.tokens[scn.morpho.markets[key].loan]["address"]
            bulk.add(sup, loan, "approve(address,uint256)", morpho, MAX_UINT, gas=80_000, label=f"Morpho supplier approve {key}")
            bulk.add(sup, morpho, f"supply({MARKET_PARAMS},uint256,uint256,address,bytes)", morpho_params(dep, key),
                     units, 0, sup, b"", gas=400_000, label=f"Morpho supply {key}")
    # Phase 2: collateral.
    for pos in plan.aave:
        if pos.emode:
            bulk.add(pos.account, pool, "setUserEMode(uint8)", pos.emode, gas=300_000,
                     label=f"{pos.label} ({pos.account}): Aave setUserEMode({pos.emode})")
        for sym, units in pos.collateral.items():
            token = dep.tokens[sym]["address"]
            bulk.add(pos.account, token, "approve(address,uint256)", pool, MAX_UINT, gas=80_000,
                     label=f"{pos.label} ({pos.account}): approve {sym} to Aave")
            bulk.add(pos.account, pool, "supply(address,uint256,address,uint16)", token, units, pos.account,
                     AAVE_REFERRAL, gas=600_000, label=f"{pos.label} ({pos.account}): Aave supply {sym}")
    for pos in plan.morpho:
        mkt = scn.morpho.markets[pos.market]
        token = dep.tokens[mkt.collateral]["address"]
        bulk.add(pos.account, token, "approve(address,uint256)", morpho, MAX_UINT, gas=80_000,
                 label=f"{pos.label} ({pos.account}): approve {mkt.collateral} to Morpho")
        bulk.add(pos.account, morpho, f"supplyCollateral({MARKET_PARAMS},uint256,address,bytes)",
                 morpho_params(dep, pos.market), pos.collateral, pos.account, b"", gas=300_000,
                 label=f"{pos.label} ({pos.account}): Morpho supplyCollateral {pos.market}")
    bulk.flush()
    # Phase 3: debt.
    for pos in plan.aave:
        for sym, units in pos.debt.items():
            bulk.add(pos.account, pool, "borrow(address,uint256,uint256,uint16,address)", dep.tokens[sym]["address"],
                     units, VARIABLE_RATE, AAVE_REFERRAL, pos.account, gas=900_000,
                     label=f"{pos.label} ({pos.account}): Aave borrow {sym}")
    for pos in plan.morpho:
        bulk.add(pos.account, morpho, f"borrow({MARKET_PARAMS},uint256,uint256,address,address)",
                 morpho_params(dep, pos.market), pos.borrow, 0, pos.account, pos.account, gas=500_000,
                 label=f"{pos.label} ({pos.account}): Morpho borrow {pos.market}")
    bulk.flush()
    anvil.rpc("anvil_autoImpersonateAccount", False)
