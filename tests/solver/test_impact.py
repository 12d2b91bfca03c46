"""Venue curves against closed forms (Uniswap V2 swap formula, V3 range math, parametric laws)."""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from defirisk.errors import InputError
from defirisk.markets.impact import build_asset_curve
from defirisk.model import Asset, Venue


def curve(specs, price=1000.0):
    specs = specs if isinstance(specs, list) else [specs]
    vs = [Venue("X", s["kind"], {k: v for k, v in s.items() if k != "kind"}) for s in specs]
    return build_asset_curve(vs, {"X": Asset("X", 18, price)}, "X")


def test_constant_product_matches_v2_swap_with_fee():
    c = curve({"kind": "constant_product", "base_reserve": 1000.0, "quote_reserve": 1e6, "fee": 0.003})
    st = c.init_state()
    st, _ = c.sell(st, 10.0)
    out = 10.0 * 997 * 1e6 / (1000.0 * 1000 + 10.0 * 997)  # the V2 pair formula
    assert_allclose(c.price(st), (1e6 - out) / 1010.0 * 1000.0 / 1000.0, rtol=1e-12)
    # two sales differ from one (the fee stays in the pool): state is the reserves
    st2, _ = c.sell(c.sell(c.init_state(), 5.0)[0], 5.0)
    assert c.price(st2) > c.price(st)


@pytest.mark.parametrize("fee", [0.0, 0.003, 0.01])
def test_constant_product_amount_to_price_inverts(fee):
    c = curve({"kind": "constant_product", "base_reserve": 500.0, "quote_reserve": 1.5e6, "fee": fee}, price=3000.0)
    st = c.init_state()
    for target in (2999.0, 2700.0, 1000.0, 10.0):
        q = c.amount_to_price(st, target)
        assert_allclose(c.price(c.sell(st, q)[0]), target, rtol=1e-10)
    if fee == 0:
        assert_allclose(c.amount_to_price(st, 3000.0 * 0.81), 500.0 / 0.9 - 500.0, rtol=1e-12)


def test_two_fee_free_pools_route_like_one():
    one = curve({"kind": "constant_product", "base_reserve": 400.0, "quote_reserve": 400.0 * 3000, "fee": 0.0}, 3000.0)
    two = curve([{"kind": "constant_product", "base_reserve": 100.0, "quote_reserve": 100.0 * 3000, "fee": 0.0},
                 {"kind": "constant_product", "base_reserve": 300.0, "quote_reserve": 300.0 * 3000, "fee": 0.0}], 3000.0)
    st1, _ = one.sell(one.init_state(), 50.0)
    st2, parts = two.sell(two.init_state(), 50.0)
    assert_allclose(two.price(st2), one.price(st1), rtol=1e-12)
    assert_allclose([float(p) for p in parts], [12.5, 37.5], rtol=1e-10)  # proportional to depth
    assert_allclose(two.venues[0].rel(st2[0]), two.venues[1].rel(st2[1]), rtol=1e-12)


def _v3(ticks, base_is_token0=True, liquidity=10**18):
    return {"kind": "uniswap_v3", "sqrt_price_x96": str(2**96), "liquidity": str(liquidity), "tick": 0, "fee": 0.0,
            "base_is_token0": base_is_token0, "base_decimals": 18, "quote_decimals": 18, "ticks": ticks}


def test_uniswap_v3_single_range_and_tick_cross():
    L1, L2 = 1e18, 0.5e18
    # base = token0, selling lowers sqrtP from 1; crossing tick -100 downward subtracts its liquidityNet
    c = curve(_v3([[-100, str(int(L1 - L2))], [-887200, str(int(L2))]]), price=1.0)
    w100 = 1.0001 ** (-50)
    # within the first range: dx = L (1/w - 1)  (whole tokens = raw / 1e18)
    x = L1 * (1 / 0.999 - 1) / 1e18
    assert_allclose(c.price(c.sell(c.init_state(), x)[0]), 0.999 ** 2, rtol=1e-10)
    w = 1.0001 ** (-100)
    need = (L1 * (1 / w100 - 1) + L2 * (1 / w - 1 / w100)) / 1e18
    assert_allclose(c.amount_to_price(c.init_state(), w * w), need, rtol=1e-10)
    assert_allclose(c.price(c.sell(c.init_state(), need)[0]), w * w, rtol=1e-10)


def test_uniswap_v3_base_token1_mirrors_token0():
    L = 1e18
    c0 = curve(_v3([], True), price=1.0)
    c1 = curve(_v3([], False), price=1.0)
    for x in (0.1, 1.0, 5.0):
        assert_allclose(c0.price(c0.sell(c0.init_state(), x)[0]), c1.price(c1.sell(c1.init_state(), x)[0]), rtol=1e-12)
    assert_allclose(c0.price(c0.sell(c0.init_state(), 1.0)[0]), (1 / (1 + 1.0 * 1e18 / L)) ** 2, rtol=1e-12)


def test_parametric_laws():
    lin = curve({"kind": "linear", "lambda": 2.0}, price=100.0)
    assert_allclose(lin.price(lin.sell(lin.init_state(), 10.0)[0]), 80.0)
    ex = curve({"kind": "exponential", "depth": 50.0, "floor": 0.2}, price=100.0)
    assert_allclose(ex.price(ex.sell(ex.init_state(), 50.0)[0]), 100 * (0.2 + 0.8 * math.exp(-1)))
    assert math.isinf(float(ex.amount_to_price(ex.init_state(), 19.0)))
    sq = curve({"kind": "sqrt", "sigma": 0.05, "volume": 1e4}, price=100.0)
    assert_allclose(sq.price(sq.sell(sq.init_state(), 100.0)[0]), 100 * (1 - 0.05 * 0.1))


def test_bad_venue_fields_are_input_errors():
    with pytest.raises(InputError, match="base_reserve"):
        curve({"kind": "constant_product", "quote_reserve": 1.0})
    with pytest.raises(InputError, match="lambda"):
        curve({"kind": "linear", "lambda": -1})
    with pytest.raises(InputError, match="unknown kind"):
        curve({"kind": "orderbook"})
    c = curve({"kind": "linear", "lambda": 1.0})
    with pytest.raises(InputError):
        c.sell(c.init_state(), float("nan"))
