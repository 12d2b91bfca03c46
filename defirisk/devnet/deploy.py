"""Deploy the devnet's contracts on an empty anvil: tokens, feeds, Aave V3, Morpho Blue, Uniswap V2/V3.

Everything comes from real artifacts (npm builds, Morpho compiled from its sources) or from our own
fixtures/contracts/devnet sources. The result is the address book the readers consume.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, getcontext
from typing import Any

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from defirisk.devnet import artifacts
from defirisk.devnet.scenario import FEED_DECIMALS, V3_TICK_SPACING, Scenario
from defirisk.devnet.tx import DEPLOYER, Chain

ZERO = "0x0000000000000000000000000000000000000000"
MAX_UINT = 2**256 - 1
RAY = 10**27
WAD = 10**18
BPS = 10_000
SECONDS_PER_YEAR = 365 * 24 * 3600
# Aave libraries in dependency order (FlashLoanLogic links BorrowLogic).
AAVE_LIBRARIES = ("SupplyLogic", "BorrowLogic", "LiquidationLogic", "EModeLogic", "BridgeLogic",
                  "PoolLogic", "FlashLoanLogic", "ConfiguratorLogic")
MARKET_PARAMS = "(address,address,address,address,uint256)"
INIT_RESERVE = "(address,address,address,uint8,address,address,address,address,string,string,string,string,string,string,bytes)"
# Uniswap V3 TickMath bounds.
MIN_TICK, MAX_TICK = -887272, 887272

getcontext().prec = 80


def bps(x: float) -> int:
    return int(round(x * BPS))


def morpho_market_id(params: tuple[str, str, str, str, int]) -> str:
    """Morpho Blue market id = keccak256(abi.encode(MarketParams))."""
    return "0x" + keccak(encode(["address", "address", "address", "address", "uint256"], list(params))).hex()


@dataclass
class Deployment:
    """Addresses as they are deployed; `book()` renders the public address-book JSON."""

    chain_id: int
    start_block: int
    tokens: dict[str, dict] = field(default_factory=dict)
    feeds: dict[str, str] = field(default_factory=dict)
    aave: dict[str, Any] = field(default_factory=dict)
    morpho: dict[str, Any] = field(default_factory=dict)
    uniswap_v2: dict[str, Any] = field(default_factory=dict)
    uniswap_v3: dict[str, Any] = field(default_factory=dict)
    multicall3: str | None = None
    v3_router: str | None = None


# ----------------------------------------------------------------------------------------------
def deploy_tokens_and_feeds(chain: Chain, scn: Scenario, dep: Deployment) -> None:
    token = artifacts.own("DevnetToken")
    feed = artifacts.own("DevnetPriceFeed")
    for sym, a in scn.assets.items():
        addr = chain.deploy(token.bytecode, ["string", "string", "uint8"], [f"Devnet {sym}", sym, a.decimals],
                            label=f"token {sym}")
        dep.tokens[sym] = {"address": addr, "decimals": a.decimals}
        dep.feeds[sym] = chain.deploy(feed.bytecode, ["string", "uint8", "int256"],
                                      [f"{sym} / USD", FEED_DECIMALS, a.price_feed_units], label=f"feed {sym}")


def mint(chain: Chain, dep: Deployment, sym: str, to: str, units: int) -> None:
    chain.send(dep.tokens[sym]["address"], "mint(address,uint256)", to, units, label=f"mint {sym}")


# ----------------------------------------------------------------------------------------------
def deploy_aave(chain: Chain, scn: Scenario, dep: Deployment) -> None:
    """Aave V3.0 market: provider, ACL, Pool + libraries, configurator, oracle, data provider,
    token implementations, rate strategies; reserves listed and configured through the configurator."""
    spec = scn.aave
    provider = chain.deploy(artifacts.aave("PoolAddressesProvider").bytecode, ["string", "address"],
                            ["devnet", DEPLOYER], label="PoolAddressesProvider")
    chain.send(provider, "setACLAdmin(address)", DEPLOYER)
    acl = chain.deploy(artifacts.aave("ACLManager").bytecode, ["address"], [provider], label="ACLManager")
    chain.send(provider, "setACLManager(address)", acl)
    for role in ("addPoolAdmin", "addRiskAdmin", "addEmergencyAdmin", "addAssetListingAdmin"):
        chain.send(acl, f"{role}(address)", DEPLOYER)

    libs: dict[str, str] = {}
    for name in AAVE_LIBRARIES:
        libs[name] = chain.deploy(artifacts.aave(name).linked(libs), label=name)
    pool_impl = chain.deploy(artifacts.aave("Pool").linked(libs), ["address"], [provider], label="Pool")
    chain.send(pool_impl, "initialize(address)", provider)  # lock the bare implementation
    chain.send(provider, "setPoolImpl(address)", pool_impl)
    pool = to_checksum_address(chain.call(provider, "getPool()", returns=["address"]))
    conf_impl = chain.deploy(artifacts.aave("PoolConfigurator").linked(libs), label="PoolConfigurator")
    chain.send(provider, "setPoolConfiguratorImpl(address)", conf_impl)
    configurator = to_checksum_address(chain.call(provider, "getPoolConfigurator()", returns=["address"]))

    reserves = list(spec.reserves)
    oracle = chain.deploy(
        artifacts.aave("AaveOracle").bytecode,
        ["address", "address[]", "address[]", "address", "address", "uint256"],
        [provider, [dep.tokens[s]["address"] for s in reserves], [dep.feeds[s] for s in reserves],
         ZERO, ZERO, 10**FEED_DECIMALS],  # base currency USD (address 0), unit 1e8
        label="AaveOracle")
    chain.send(provider, "setPriceOracle(address)", oracle)
    data_provider = chain.deploy(artifacts.aave("AaveProtocolDataProvider").bytecode, ["address"], [provider],
                                 label="AaveProtocolDataProvider")
    chain.send(provider, "setPoolDataProvider(address)", data_provider)

    a_impl = chain.deploy(artifacts.aave("AToken").bytecode, ["address"], [pool], label="AToken")
    s_impl = chain.deploy(artifacts.aave("StableDebtToken").bytecode, ["address"], [pool], label="StableDebtToken")
    v_impl = chain.deploy(artifacts.aave("VariableDebtToken").bytecode, ["address"], [pool], label="VariableDebtToken")

    strategies = {}
    for sym in reserves:
        r = spec.reserves[sym].rates
        strategies[sym] = chain.deploy(
            artifacts.aave("DefaultReserveInterestRateStrategy").bytecode,
            ["address"] + ["uint256"] * 9,
            [provider, int(r.optimal_usage * RAY), int(r.base * RAY), int(r.slope1 * RAY), int(r.slope2 * RAY),
             # stable borrowing stays disabled; its slopes are set but unused
             int(r.slope1 * RAY), int(r.slope2 * RAY), int(0.02 * RAY), int(0.05 * RAY), int(0.2 * RAY)],
            label=f"rate strategy {sym}")
        # One reserve per call: each init deploys three proxies, a lot of gas.
        init = (a_impl, s_impl, v_impl, dep.tokens[sym]["decimals"], strategies[sym], dep.tokens[sym]["address"],
                DEPLOYER, ZERO, f"Aave Devnet {sym}", f"aDev{sym}", f"Aave Devnet Variable Debt {sym}",
                f"variableDebtDev{sym}", f"Aave Devnet Stable Debt {sym}", f"stableDebtDev{sym}", b"")
        chain.send(configurator, f"initReserves({INIT_RESERVE}[])", [init], gas=12_000_000,
                   label=f"initReserves {sym}")

    for sym in reserves:
        r, asset = spec.reserves[sym], dep.tokens[sym]["address"]
        chain.send(configurator, "setReserveBorrowing(address,bool)", asset, r.borrowing)
        chain.send(configurator, "setReserveFactor(address,uint256)", asset, bps(r.reserve_factor))
        chain.send(configurator, "setSupplyCap(address,uint256)", asset, r.supply_cap)
        chain.send(configurator, "setBorrowCap(address,uint256)", asset, r.borrow_cap)
        chain.send(configurator, "setReserveFlashLoaning(address,bool)", asset, True)
        if r.liquidation_threshold > 0:
            chain.send(configurator, "setLiquidationProtocolFee(address,uint256)", asset, bps(r.liquidation_protocol_fee))
    set_aave_ltvs(chain, scn, dep, opening=True, configurator=configurator)
    for cat, e in spec.emodes.items():
        for sym in e.assets:
            chain.send(configurator, "setAssetEModeCategory(address,uint8)", dep.tokens[sym]["address"], cat)

    dep.aave = {
        "pool_addresses_provider": provider, "pool": pool, "pool_configurator": configurator,
        "acl_manager": acl, "oracle": oracle, "protocol_data_provider": data_provider,
        "revision": chain.call(pool, "POOL_REVISION()", returns=["uint256"]),
        "markets": "devnet",
        "implementations": {"pool": pool_impl, "pool_configurator": conf_impl, "atoken": a_impl,
                            "stable_debt_token": s_impl, "variable_debt_token": v_impl},
        "libraries": libs,
        "interest_rate_strategies": strategies,
        "emode_categories": {str(c): {"label": e.label, "assets": list(e.assets)} for c, e in spec.emodes.items()},
    }


def set_aave_ltvs(chain: Chain, scn: Scenario, dep: Deployment, *, opening: bool,
                  configurator: str | None = None) -> None:
    """Write collateral parameters and e-mode categories.

    opening=True lifts each LTV to LT - 1 bp so positions can be opened at health factors just above
    1 (Aave refuses a borrow above LTV); opening=False writes the scenario's real LTVs. Positions
    stay valid after the switch, exactly as when governance lowers an LTV on mainnet.
    """
    spec = scn.aave
    configurator = configurator or dep.aave["pool_configurator"]

    def ltv_of(ltv: float, lt: float) -> int:
        return max(bps(lt) - 1, 0) if opening else bps(ltv)

    # e-mode categories first when lowering, last when lifting: Aave requires the category LTV to
    # stay above each member's own LTV at every step.
    def emodes() -> None:
        for cat, e in spec.emodes.items():
            chain.send(configurator, "setEModeCategory(uint8,uint16,uint16,uint16,address,string)", cat,
                       ltv_of(e.ltv, e.liquidation_threshold), bps(e.liquidation_threshold),
                       BPS + bps(e.liquidation_bonus), ZERO, e.label, label=f"e-mode {cat}")

    if not opening:
        emodes()
    for sym, r in spec.reserves.items():
        if r.liquidation_threshold <= 0:
            continue
        chain.send(configurator, "configureReserveAsCollateral(address,uint256,uint256,uint256)",
                   dep.tokens[sym]["address"], ltv_of(r.ltv, r.liquidation_threshold),
                   bps(r.liquidation_threshold), BPS + bps(r.liquidation_bonus), label=f"collateral params {sym}")
    if opening:
        emodes()


# ----------------------------------------------------------------------------------------------
def deploy_morpho(chain: Chain, scn: Scenario, dep: Deployment) -> None:
    spec = scn.morpho
    morpho = chain.deploy(artifacts.morpho().bytecode, ["address"], [DEPLOYER], label="Morpho Blue")
    start_block = int(chain.anvil.rpc("eth_blockNumber"), 16)
    irm_spec = spec.irm
    per_s = lambda apr: int(apr * WAD / SECONDS_PER_YEAR)  # noqa: E731 - tiny unit conversion
    irm = chain.deploy(artifacts.own("KinkIrm").bytecode, ["uint256"] * 4,
                       [per_s(irm_spec.base), per_s(irm_spec.slope1), per_s(irm_spec.slope2), int(irm_spec.kink * WAD)],
                       label="KinkIrm")
    chain.send(morpho, "enableIrm(address)", irm)
    enabled = set()
    markets = []
    for key, m in spec.markets.items():
        lltv = int(round(m.lltv * WAD))
        if lltv not in enabled:
            chain.send(morpho, "enableLltv(uint256)", lltv)
            enabled.add(lltv)
        c, l = dep.tokens[m.collateral], dep.tokens[m.loan]
        oracle = chain.deploy(artifacts.own("MorphoFeedOracle").bytecode, ["address", "address", "uint8", "uint8"],
                              [dep.feeds[m.collateral], dep.feeds[m.loan], c["decimals"], l["decimals"]],
                              label=f"Morpho oracle {key}")
        params = (l["address"], c["address"], oracle, irm, lltv)
        chain.send(morpho, f"createMarket({MARKET_PARAMS})", params, label=f"createMarket {key}")
        markets.append({"key": key, "id": morpho_market_id(params), "loan_token": l["address"],
                        "collateral_token": c["address"], "oracle": oracle, "irm": irm, "lltv": lltv})
    dep.morpho = {"morpho": morpho, "start_block": start_block, "irm": irm, "markets": markets}


def morpho_params(dep: Deployment, key: str) -> tuple:
    m = next(x for x in dep.morpho["markets"] if x["key"] == key)
    return (m["loan_token"], m["collateral_token"], m["oracle"], m["irm"], m["lltv"])


# ----------------------------------------------------------------------------------------------
def v2_reserves(scn: Scenario, base: str, quote: str, base_reserve: float) -> tuple[int, int]:
    """Base and quote reserves (base units) that put the pair at the feed price."""
    b, q = scn.assets[base], scn.assets[quote]
    rb = int(base_reserve * 10**b.decimals)
    rq = int(Decimal(base_reserve) * Decimal(b.price_usd) / Decimal(q.price_usd) * Decimal(10**q.decimals))
    return rb, rq


def deploy_uniswap_v2(chain: Chain, scn: Scenario, dep: Deployment) -> None:
    if not scn.uniswap_v2:
        return
    factory = chain.deploy(artifacts.uniswap_v2("UniswapV2Factory").bytecode, ["address"], [DEPLOYER],
                           label="UniswapV2Factory")
    pairs = {}
    for key, p in scn.uniswap_v2.items():
        base, quote = dep.tokens[p.base]["address"], dep.tokens[p.quote]["address"]
        chain.send(factory, "createPair(address,address)", base, quote, label=f"createPair {key}")
        pair = to_checksum_address(chain.call(factory, "getPair(address,address)", [base, quote], ["address"]))
        rb, rq = v2_reserves(scn, p.base, p.quote, p.base_reserve)
        mint(chain, dep, p.base, pair, rb)
        mint(chain, dep, p.quote, pair, rq)
        chain.send(pair, "mint(address)", DEPLOYER, label=f"add liquidity {key}")
        pairs[key] = pair
    dep.uniswap_v2 = {"factory": factory, "pairs": pairs}


def _sqrt_price_x96(price_raw: Decimal) -> int:
    """sqrtPriceX96 for a token1-per-token0 price in base units."""
    return int((price_raw.sqrt() * Decimal(2**96)).to_integral_value(rounding="ROUND_FLOOR"))


def _tick_at(price_raw: Decimal) -> float:
    return float(price_raw.ln() / Decimal("1.0001").ln())


def v3_positions(scn: Scenario, pool_key: str, token0_is_base: bool) -> tuple[int, list[dict]]:
    """Initial sqrtPriceX96 and, per range, the ticks and liquidity L worth `value_usd` at that price."""
    p = scn.uniswap_v3[pool_key]
    b, q = scn.assets[p.base], scn.assets[p.quote]
    t0, t1 = (b, q) if token0_is_base else (q, b)
    # token1 per token0, in base units
    price = Decimal(t0.price_usd) / Decimal(t1.price_usd) * Decimal(10) ** (t1.decimals - t0.decimals)
    sqrt_x96 = _sqrt_price_x96(price)
    s = Decimal(sqrt_x96) / Decimal(2**96)
    spacing = V3_TICK_SPACING[p.fee]
    out = []
    for r in p.ranges:
        lo_mult, hi_mult = Decimal(1 + r.lower_pct / 100), Decimal(1 + r.upper_pct / 100)
        if not token0_is_base:  # pool price is quote-per-base inverted: bounds swap
            lo_mult, hi_mult = 1 / hi_mult, 1 / lo_mult
        lower = math.floor(_tick_at(price * lo_mult) / spacing) * spacing
        upper = math.ceil(_tick_at(price * hi_mult) / spacing) * spacing
        lower = max(lower, math.ceil(MIN_TICK / spacing) * spacing)
        upper = min(upper, math.floor(MAX_TICK / spacing) * spacing)
        sa, sb = Decimal("1.0001") ** (Decimal(lower) / 2), Decimal("1.0001") ** (Decimal(upper) / 2)
        if s <= sa:
            a0, a1 = (sb - sa) / (sa * sb), Decimal(0)
        elif s >= sb:
            a0, a1 = Decimal(0), sb - sa
        else:
            a0, a1 = (sb - s) / (s * sb), s - sa
        value_per_l = (a0 / Decimal(10**t0.decimals) * Decimal(t0.price_usd)
                       + a1 / Decimal(10**t1.decimals) * Decimal(t1.price_usd))
        liquidity = int(Decimal(r.value_usd) / value_per_l)
        out.append({"tick_lower": lower, "tick_upper": upper, "liquidity": liquidity,
                    "amount0_max": int(a0 * liquidity) + 2, "amount1_max": int(a1 * liquidity) + 2})
    return sqrt_x96, out


def deploy_uniswap_v3(chain: Chain, scn: Scenario, dep: Deployment) -> None:
    router = chain.deploy(artifacts.own("UniV3Router").bytecode, label="UniV3Router")
    dep.v3_router = router
    if not scn.uniswap_v3:
        return
    factory = chain.deploy(artifacts.uniswap_v3("UniswapV3Factory").bytecode, label="UniswapV3Factory")
    pools = {}
    positions = {}
    for key, p in scn.uniswap_v3.items():
        base, quote = dep.tokens[p.base]["address"], dep.tokens[p.quote]["address"]
        if p.fee == 100:  # not enabled in the original factory constructor
            chain.send(factory, "enableFeeAmount(uint24,int24)", 100, 1)
        chain.send(factory, "createPool(address,address,uint24)", base, quote, p.fee, label=f"createPool {key}")
        pool = to_checksum_address(chain.call(factory, "getPool(address,address,uint24)", [base, quote, p.fee], ["address"]))
        token0_is_base = int(base, 16) < int(quote, 16)
        sqrt_x96, ranges = v3_positions(scn, key, token0_is_base)
        chain.send(pool, "initialize(uint160)", sqrt_x96, label=f"initialize {key}")
        sym0, sym1 = (p.base, p.quote) if token0_is_base else (p.quote, p.base)
        need0 = sum(r["amount0_max"] for r in ranges)
        need1 = sum(r["amount1_max"] for r in ranges)
        mint(chain, dep, sym0, DEPLOYER, need0)
        mint(chain, dep, sym1, DEPLOYER, need1)
        for sym in (sym0, sym1):
            chain.send(dep.tokens[sym]["address"], "approve(address,uint256)", router, MAX_UINT)
        for r in ranges:
            chain.send(router, "mint(address,int24,int24,uint128,address)", pool, r["tick_lower"], r["tick_upper"],
                       r["liquidity"], DEPLOYER, gas=2_000_000, label=f"V3 liquidity {key} {r['tick_lower']}..{r['tick_upper']}")
        pools[key] = pool
        positions[key] = [{k: r[k] for k in ("tick_lower", "tick_upper", "liquidity")} for r in ranges]
    dep.uniswap_v3 = {"factory": factory, "pools": pools, "router": router, "positions": positions}


def install_multicall(chain: Chain, dep: Deployment) -> None:
    """Multicall3 comes from the readers' module; without it the book records null."""
    try:
        from defirisk.chain.multicall import MULTICALL3_ADDRESS, install_multicall as _install
    except ImportError:
        dep.multicall3 = None
        return
    _install(chain.anvil)
    dep.multicall3 = MULTICALL3_ADDRESS
