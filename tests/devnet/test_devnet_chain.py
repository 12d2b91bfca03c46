"""The small devnet on a real anvil: positions are what the scenario intended, prices move the
intended accounts into liquidation, real liquidations pay the liquidator, Uniswap pools follow their math."""
from __future__ import annotations

import math
import os
import socket

import pytest
from eth_abi import decode
from eth_utils import keccak

from defirisk.devnet import running_devnet
from defirisk.devnet.deploy import MARKET_PARAMS, MAX_UINT, morpho_market_id
from defirisk.devnet.population import aave_health_factor, morpho_health_factor
from defirisk.devnet.tx import LIQUIDATOR, calldata

from pathlib import Path

SMALL = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "small.yaml"

pytestmark = pytest.mark.chain

ACCOUNT_DATA = "getUserAccountData(address)"


def _batch_calls(anvil, calls):
    """[(to, data)] -> list of raw bytes, in one JSON-RPC batch."""
    res = anvil.rpc_batch([("eth_call", [{"to": to, "data": data}, "latest"]) for to, data in calls])
    return [bytes.fromhex(r[2:]) for r in res]


def aave_hfs(dn, accounts):
    pool = dn.book["aave_v3"]["pool"]
    raw = _batch_calls(dn.anvil, [(pool, calldata(ACCOUNT_DATA, a)) for a in accounts])
    return [decode(["uint256"] * 6, r)[5] / 1e18 for r in raw]


def morpho_params(dn, key):
    m = next(x for x in dn.book["morpho_blue"]["markets"] if x["key"] == key)
    return (m["loan_token"], m["collateral_token"], m["oracle"], m["irm"], m["lltv"]), m


def morpho_liquidatable(chain, dn, pos) -> bool:
    """Morpho Blue's own rule from on-chain state: collateral * price / 1e36 * lltv < borrowed."""
    morpho = dn.book["morpho_blue"]["morpho"]
    params, m = morpho_params(dn, pos.market)
    _, borrow_shares, collateral = chain.call(morpho, "position(bytes32,address)",
                                              [bytes.fromhex(m["id"][2:]), pos.account], ["uint256", "uint128", "uint128"])
    totals = chain.call(morpho, "market(bytes32)", [bytes.fromhex(m["id"][2:])], ["uint128"] * 6)
    price = chain.call(m["oracle"], "price()", [], ["uint256"])
    borrowed = -(-borrow_shares * (totals[2] + 1) // (totals[3] + 10**6))  # toAssetsUp
    max_borrow = collateral * price // 10**36 * params[4] // 10**18
    return max_borrow < borrowed


def set_price(chain, dn, sym, usd):
    chain.send(dn.book["feeds"][sym], "setAnswer(int256)", int(round(usd * 1e8)))


def balance(chain, dn, sym, who):
    return chain.call(dn.book["tokens"][sym]["address"], "balanceOf(address)", [who], ["uint256"])


def fund(chain, dn, sym, who, units, spender):
    chain.send(dn.book["tokens"][sym]["address"], "mint(address,uint256)", who, units)
    chain.send(dn.book["tokens"][sym]["address"], "approve(address,uint256)", spender, MAX_UINT, sender=who)


# ------------------------------------------------------------------------------------------------
def test_book_has_every_contract_with_code(small_devnet):
    book = small_devnet.book
    addrs = [t["address"] for t in book["tokens"].values()] + list(book["feeds"].values())
    addrs += [book["aave_v3"][k] for k in ("pool_addresses_provider", "pool", "pool_configurator", "acl_manager",
                                           "oracle", "protocol_data_provider")]
    addrs += [book["morpho_blue"]["morpho"], book["uniswap_v2"]["factory"], book["uniswap_v3"]["factory"]]
    addrs += list(book["uniswap_v2"]["pairs"].values()) + list(book["uniswap_v3"]["pools"].values())
    assert book["multicall3"] == "0xcA11bde05977b3631167028862bE2a173976CA11"
    addrs.append(book["multicall3"])
    codes = small_devnet.anvil.rpc_batch([("eth_getCode", [a, "latest"]) for a in addrs])
    assert all(len(c) > 2 for c in codes)
    assert book["aave_v3"]["revision"] == 1  # npm @aave/core-v3 1.19: V3.0 Pool
    assert book["chain_id"] == 31337 and book["built_block"] > book["start_block"]
    assert {t: v["decimals"] for t, v in book["tokens"].items()} == {
        "WETH": 18, "WBTC": 8, "wstETH": 18, "USDC": 6, "DAI": 18, "USDT": 6}


def test_reserve_configuration_matches_scenario(small_devnet):
    from defirisk.devnet.tx import Chain
    chain = Chain(small_devnet.anvil)
    dp = small_devnet.book["aave_v3"]["protocol_data_provider"]
    scn = small_devnet.scenario
    for sym, r in scn.aave.reserves.items():
        cfg = chain.call(dp, "getReserveConfigurationData(address)", [small_devnet.book["tokens"][sym]["address"]],
                         ["uint256"] * 6 + ["bool"] * 4)
        dec, ltv, lt, bonus, rf = cfg[:5]
        assert dec == scn.assets[sym].decimals
        assert (ltv, lt, rf) == (round(r.ltv * 1e4), round(r.liquidation_threshold * 1e4), round(r.reserve_factor * 1e4))
        if lt:
            assert bonus == 10000 + round(r.liquidation_bonus * 1e4)
    emode = chain.call(small_devnet.book["aave_v3"]["pool"], "getEModeCategoryData(uint8)", [1],
                       ["(uint16,uint16,uint16,address,string)"])
    assert emode[:3] == (9000, 9300, 10100) and emode[4] == "ETH correlated"


def test_every_health_factor_is_the_intended_one(small_devnet, small_plan):
    onchain = aave_hfs(small_devnet, [p.account for p in small_plan.aave])
    for pos, hf in zip(small_plan.aave, onchain):
        # rounding + a few seconds of interest: far below 1e-6
        assert hf == pytest.approx(pos.health_factor, rel=1e-6), pos.label


def test_morpho_positions_hold_intended_amounts(small_devnet, small_plan):
    from defirisk.devnet.tx import Chain
    chain = Chain(small_devnet.anvil)
    morpho = small_devnet.book["morpho_blue"]["morpho"]
    assert len(small_plan.morpho) == 18
    for pos in small_plan.morpho:
        params, m = morpho_params(small_devnet, pos.market)
        assert m["id"] == morpho_market_id(params)
        _, shares, coll = chain.call(morpho, "position(bytes32,address)", [bytes.fromhex(m["id"][2:]), pos.account],
                                     ["uint256", "uint128", "uint128"])
        totals = chain.call(morpho, "market(bytes32)", [bytes.fromhex(m["id"][2:])], ["uint128"] * 6)
        borrowed = shares * (totals[2] + 1) / (totals[3] + 10**6)
        assert coll == pos.collateral
        assert borrowed == pytest.approx(pos.borrow, rel=1e-6, abs=2)
        assert not morpho_liquidatable(chain, small_devnet, pos)


def _pick_weth_price(scn, plan):
    """A WETH price that liquidates some Aave and some Morpho accounts with no account near HF 1."""
    for drop in [x / 1000 for x in range(50, 400, 5)]:
        p = scn.assets["WETH"].price_usd * (1 - drop)
        hfs = [aave_health_factor(scn, a, {"WETH": p}) for a in plan.aave]
        mhfs = [morpho_health_factor(scn, m, {"WETH": p}) for m in plan.morpho]
        if any(abs(h - 1) < 2e-3 for h in hfs + mhfs):
            continue
        if sum(h < 1 for h in hfs) >= 3 and sum(h < 1 for h in mhfs) >= 2 and sum(h >= 1 for h in hfs) >= 3:
            return p
    raise AssertionError("scenario has no clean WETH liquidation price")


def test_price_move_makes_exactly_the_intended_accounts_liquidatable(devnet, chain, small_plan):
    scn = devnet.scenario
    p = _pick_weth_price(scn, small_plan)
    expected_aave = {a.account for a in small_plan.aave if aave_health_factor(scn, a, {"WETH": p}) < 1}
    expected_morpho = {m.account for m in small_plan.morpho if morpho_health_factor(scn, m, {"WETH": p}) < 1}
    assert not any(morpho_liquidatable(chain, devnet, m) for m in small_plan.morpho)
    set_price(chain, devnet, "WETH", p)
    onchain = aave_hfs(devnet, [a.account for a in small_plan.aave])
    got_aave = {a.account for a, hf in zip(small_plan.aave, onchain) if hf < 1}
    got_morpho = {m.account for m in small_plan.morpho if morpho_liquidatable(chain, devnet, m)}
    assert got_aave == expected_aave and len(got_aave) >= 3
    assert got_morpho == expected_morpho and len(got_morpho) >= 2
    assert chain.call(devnet.book["aave_v3"]["oracle"], "getAssetPrice(address)",
                      [devnet.book["tokens"]["WETH"]["address"]], ["uint256"]) == int(round(p * 1e8))


def _percent_mul(x, bps):
    return (x * bps + 5000) // 10000


def _percent_div(x, bps):
    return (x * 10000 + bps // 2) // bps


def test_aave_liquidation_call_pays_the_liquidator(devnet, chain, small_plan):
    scn, book = devnet.scenario, devnet.book
    p = _pick_weth_price(scn, small_plan)
    victim = next(a for a in small_plan.aave if set(a.collateral) == {"WETH"} and "USDC" in a.debt
                  and aave_health_factor(scn, a, {"WETH": p}) < 1)
    set_price(chain, devnet, "WETH", p)
    pool = book["aave_v3"]["pool"]
    fund(chain, devnet, "USDC", LIQUIDATOR, 10**12, pool)
    weth_before = balance(chain, devnet, "WETH", LIQUIDATOR)
    usdc_before = balance(chain, devnet, "USDC", LIQUIDATOR)
    receipt = chain.send(pool, "liquidationCall(address,address,address,uint256,bool)", book["tokens"]["WETH"]["address"],
                         book["tokens"]["USDC"]["address"], victim.account, MAX_UINT, False, sender=LIQUIDATOR)
    topic = "0x" + keccak(text="LiquidationCall(address,address,address,uint256,uint256,address,bool)").hex()
    log = next(l for l in receipt["logs"] if l["topics"][0] == topic and l["address"].lower() == pool.lower())
    debt_covered, seized, liquidator, _ = decode(["uint256", "uint256", "address", "bool"], bytes.fromhex(log["data"][2:]))
    assert liquidator.lower() == LIQUIDATOR.lower()
    # close factor 50 % (HF > 0.95): half the USDC debt, up to interest since the build
    assert debt_covered == pytest.approx(victim.debt["USDC"] / 2, rel=1e-5)
    assert usdc_before - balance(chain, devnet, "USDC", LIQUIDATOR) == debt_covered
    weth_got = balance(chain, devnet, "WETH", LIQUIDATOR) - weth_before
    assert weth_got == seized > 0
    # Aave V3.0 arithmetic: base collateral * bonus, minus the protocol's share of the bonus
    r = scn.aave.reserves["WETH"]
    lb, fee = 10000 + round(r.liquidation_bonus * 1e4), round(r.liquidation_protocol_fee * 1e4)
    base = (10**8 * debt_covered * 10**18) // (int(round(p * 1e8)) * 10**6)
    coll = _percent_mul(base, lb)
    assert weth_got == coll - _percent_mul(coll - _percent_div(coll, lb), fee)


def test_morpho_liquidate_pays_the_liquidator(devnet, chain, small_plan):
    scn, book = devnet.scenario, devnet.book
    p = _pick_weth_price(scn, small_plan)
    victim = next(m for m in small_plan.morpho if m.market == "WETH/USDC" and morpho_health_factor(scn, m, {"WETH": p}) < 1)
    set_price(chain, devnet, "WETH", p)
    morpho = book["morpho_blue"]["morpho"]
    params, m = morpho_params(devnet, "WETH/USDC")
    fund(chain, devnet, "USDC", LIQUIDATOR, 10**12, morpho)
    weth_before = balance(chain, devnet, "WETH", LIQUIDATOR)
    usdc_before = balance(chain, devnet, "USDC", LIQUIDATOR)
    seize = victim.collateral // 2
    chain.send(morpho, f"liquidate({MARKET_PARAMS},address,uint256,uint256,bytes)", params, victim.account, seize, 0, b"",
               sender=LIQUIDATOR)
    assert balance(chain, devnet, "WETH", LIQUIDATOR) - weth_before == seize
    repaid = usdc_before - balance(chain, devnet, "USDC", LIQUIDATOR)
    lif = min(1.15, 1 / (1 - 0.3 * (1 - m["lltv"] / 1e18)))
    assert repaid == pytest.approx(seize / 1e18 * p / lif * 1e6, rel=1e-6)
    _, _, coll = chain.call(morpho, "position(bytes32,address)", [bytes.fromhex(m["id"][2:]), victim.account],
                            ["uint256", "uint128", "uint128"])
    assert coll == victim.collateral - seize
    # a healthy borrower cannot be liquidated: the protocol refuses
    healthy = next(x for x in small_plan.morpho if x.market == "WETH/USDC" and morpho_health_factor(scn, x, {"WETH": p}) > 1.05)
    with pytest.raises(Exception, match="healthy"):
        chain.send(morpho, f"liquidate({MARKET_PARAMS},address,uint256,uint256,bytes)", params, healthy.account, 1, 0, b"",
                   sender=LIQUIDATOR)


@pytest.mark.parametrize("pair_key", ["WETH/USDC", "WBTC/USDC", "wstETH/USDC"])
def test_uniswap_v2_swap_follows_constant_product(devnet, chain, pair_key):
    book = devnet.book
    pair = book["uniswap_v2"]["pairs"][pair_key]
    base_sym = pair_key.split("/")[0]
    base = book["tokens"][base_sym]["address"]
    token0 = chain.call(pair, "token0()", [], ["address"])
    r0, r1, _ = chain.call(pair, "getReserves()", [], ["uint112", "uint112", "uint32"])
    base_is_0 = token0.lower() == base.lower()
    r_in, r_out = (r0, r1) if base_is_0 else (r1, r0)
    amount_in = r_in // 20  # sell 5 % of the pool's base reserve
    out = amount_in * 997 * r_out // (r_in * 1000 + amount_in * 997)
    chain.send(base, "mint(address,uint256)", LIQUIDATOR, amount_in)
    chain.send(base, "transfer(address,uint256)", pair, amount_in, sender=LIQUIDATOR)
    outs = (0, out) if base_is_0 else (out, 0)
    with pytest.raises(Exception, match="K"):  # one unit more breaks the invariant: the pair refuses
        chain.send(pair, "swap(uint256,uint256,address,bytes)", *((0, out + 1) if base_is_0 else (out + 1, 0)),
                   LIQUIDATOR, b"", sender=LIQUIDATOR)
    chain.send(pair, "swap(uint256,uint256,address,bytes)", *outs, LIQUIDATOR, b"", sender=LIQUIDATOR)
    n0, n1, _ = chain.call(pair, "getReserves()", [], ["uint112", "uint112", "uint32"])
    new_in, new_out = (n0, n1) if base_is_0 else (n1, n0)
    assert (new_in, new_out) == (r_in + amount_in, r_out - out)
    # the marginal price fell by (r_in / new_in)^2 * (new_out * r_in)/(r_out * new_in) ~ 9.3 % for 5 % sold
    drop = 1 - (new_out / new_in) / (r_out / r_in)
    assert drop == pytest.approx(1 - (r_in * (r_out - out)) / ((r_in + amount_in) * r_out), rel=1e-12)
    assert 0.09 < drop < 0.095


def _v3_state(chain, pool):
    slot0 = chain.call(pool, "slot0()", [], ["uint160", "int24", "uint16", "uint16", "uint16", "uint8", "bool"])
    return slot0[0], slot0[1], chain.call(pool, "liquidity()", [], ["uint128"])


def test_uniswap_v3_pool_price_matches_feed_and_swaps_follow_pool_math(devnet, chain):
    book, scn = devnet.book, devnet.scenario
    pool = book["uniswap_v3"]["pools"]["WETH/USDC/3000"]
    router = book["uniswap_v3_router"]
    weth = book["tokens"]["WETH"]["address"]
    weth_is_0 = chain.call(pool, "token0()", [], ["address"]).lower() == weth.lower()
    sqrt_p, tick, liquidity = _v3_state(chain, pool)
    positions = book["uniswap_v3"]["positions"]["WETH/USDC/3000"]
    assert len(positions) == 3
    assert liquidity == sum(r["liquidity"] for r in positions)  # all ranges straddle the price
    raw = (sqrt_p / 2**96) ** 2
    usd_per_weth = raw * 1e18 / 1e6 if weth_is_0 else 1e18 / 1e6 / raw
    assert usd_per_weth == pytest.approx(scn.assets["WETH"].price_usd, rel=1e-9)

    fund(chain, devnet, "WETH", LIQUIDATOR, 10**24, router)
    amount = 10**18  # 1 WETH: stays inside the innermost range
    chain.send(router, "swapExactIn(address,bool,uint256,uint160,address)", pool, weth_is_0, amount, 0, LIQUIDATOR,
               sender=LIQUIDATOR)
    new_sqrt, _, _ = _v3_state(chain, pool)
    less_fee = amount * (10**6 - 3000) // 10**6
    q96 = 2**96
    if weth_is_0:  # token0 in: sqrtP' = L*Q96*sqrtP / (L*Q96 + dx*sqrtP), rounded up
        num = liquidity * q96
        expected = -(-num * sqrt_p // (num + less_fee * sqrt_p))
    else:  # token1 in: sqrtP' = sqrtP + dy*Q96/L, rounded down
        expected = sqrt_p + less_fee * q96 // liquidity
    assert new_sqrt == expected

    # A large sale crosses the innermost range's lower edge: active liquidity drops by its L.
    inner = min(positions, key=lambda r: r["tick_upper"] - r["tick_lower"])
    edge_tick = inner["tick_lower"] if weth_is_0 else inner["tick_upper"]
    s_edge = math.sqrt(1.0001 ** edge_tick)
    s_now = new_sqrt / q96
    dx = liquidity * abs(1 / s_edge - 1 / s_now) if weth_is_0 else liquidity * abs(s_edge - s_now)
    chain.send(router, "swapExactIn(address,bool,uint256,uint160,address)", pool, weth_is_0, int(dx * 1.1 / 0.997), 0,
               LIQUIDATOR, sender=LIQUIDATOR)
    _, tick_after, liq_after = _v3_state(chain, pool)
    assert (tick_after < edge_tick) if weth_is_0 else (tick_after >= edge_tick)
    assert liq_after == liquidity - inner["liquidity"]


def test_cached_devnet_loads_and_works(small_devnet, small_plan):
    with running_devnet(SMALL) as dn:
        assert not dn.info.cold and dn.info.seconds < 10
        assert dn.anvil.port != small_devnet.anvil.port
        assert dn.anvil.block_number() == dn.book["built_block"]
        hf = aave_hfs(dn, [small_plan.aave[0].account])[0]
        assert hf == pytest.approx(small_plan.aave[0].health_factor, rel=1e-6)
        pid = dn.anvil.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped: no anvil left behind


def test_busy_port_is_not_fatal():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        with running_devnet(SMALL, port=busy) as dn:
            assert dn.anvil.port != busy
            assert int(dn.anvil.rpc("eth_chainId"), 16) == 31337


def test_failed_bulk_transaction_names_account_and_call(devnet):
    from defirisk.devnet.tx import Bulk
    from defirisk.errors import ChainError

    stranger = "0x00000000000000000000000000000000DeaDBeef"
    devnet.anvil.set_balance(stranger, 10**18)
    devnet.anvil.impersonate(stranger)
    bulk = Bulk(devnet.anvil, 10**9)
    bulk.add(stranger, devnet.book["aave_v3"]["pool"], "borrow(address,uint256,uint256,uint16,address)",
             devnet.book["tokens"]["USDC"]["address"], 10**6, 2, 0, stranger, label=f"stranger ({stranger}): Aave borrow USDC")
    with pytest.raises(ChainError, match=r"stranger \(0x0+DeaDBeef\): Aave borrow USDC: reverted"):
        bulk.flush()
    assert devnet.anvil.rpc("eth_getBlockByNumber", "latest", False)  # automine is back on
    assert devnet.anvil.rpc("anvil_getAutomine") is True
