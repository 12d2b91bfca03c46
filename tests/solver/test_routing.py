"""Sales routed through every pool (defirisk/solver/routing.py, docs/model.md "Routes"): a two-hop
route in closed form, the equal-marginal split, prices through a quote, the shock as a routed sale,
a cascade whose proceeds move the quote, properties and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from defirisk.errors import InputError
from defirisk.solver import prepare, solve
from defirisk.solver.routing import cross_key

from .helpers import make_snapshot

# Fee-free constant-product pools (mid = Q B0 Q0 ... : after selling x into (B, Q), mid = Q B / (B + x)^2)
WETH_USDC = {"kind": "constant_product", "base_reserve": 1000.0, "quote_reserve": 3e6, "fee": 0.0, "quote": "USDC"}
WST_WETH = {"kind": "constant_product", "base_reserve": 500.0, "quote_reserve": 600.0, "fee": 0.0, "quote": "WETH"}
WST_USDC = {"kind": "constant_product", "base_reserve": 50.0, "quote_reserve": 180_000.0, "fee": 0.0, "quote": "USDC"}
PRICES = {"USDC": 1.0, "WETH": 3000.0, "wstETH": 3600.0}


def book(venues, positions=(), markets=()):
    return make_snapshot(PRICES, list(positions), list(markets) or
                         [("morpho-blue", "m", {"lltv": 0.8, "collateral": "WETH", "loan": "USDC"}, {})], venues)


def test_RT1_two_hop_route_in_closed_form():
    """RT1: wstETH has only a wstETH/WETH pool (500 wstETH / 600 WETH, mid 1.2 WETH = $3,600); WETH a
    WETH/USDC pool (1,000 / 3,000,000). Selling 50 wstETH pays y = 600 x 50 / 550 = 54.5455 WETH, sold on:
    wstETH/WETH mid = 600 x 500 / 550^2 = 0.991736 (relative 0.826446), WETH mid = 3e9 / 1,054.5455^2 =
    $2,697.67 (relative 0.899225), so wstETH ends at 3,600 x 0.826446 x 0.899225 = $2,675.39."""
    prep = prepare(book({"WETH": WETH_USDC, "wstETH": WST_WETH}))
    rt = prep.router
    w, a = prep.symbols.index("WETH"), prep.symbols.index("wstETH")
    x = np.zeros(3)
    x[a] = 50.0
    new, m, legs = rt.route(rt.init_state(), prep.p0.copy(), x)
    y = 600 * 50 / 550
    assert sorted((prep.symbols[j], prep.symbols[q] if q is not None else None) for j, q, _, *how in legs) == [
        ("WETH", None), ("wstETH", "WETH")]
    assert dict(((j, q), amt) for j, q, amt, *_ in legs)[(w, None)] == pytest.approx(y, rel=1e-12)
    mid_a, weth = 600 * 500 / 550 ** 2, 3e9 / (1000 + y) ** 2
    assert m[w] == pytest.approx(weth, rel=1e-12)
    assert m[a] == pytest.approx(3600 * (mid_a / 1.2) * (weth / 3000), rel=1e-12)
    assert m[a] == pytest.approx(2675.39, abs=0.01)
    # the USD the liquidator gets is what the WETH leg pays: Q_w - Q_w B_w / (B_w + y)
    assert rt.proceeds_usd(rt.init_state(), prep.p0.copy(), a, 50.0) == pytest.approx(3e6 - 3e9 / (1000 + y), rel=1e-12)


def test_RT2_split_ends_every_used_path_at_one_marginal_price():
    """RT2: wstETH also has a thin USD pool (50 / 180,000). A 60 wstETH sale is split so the USD pool's
    mid equals the WETH path's mid x WETH's end price; the parts add up to the sale."""
    prep = prepare(book({"WETH": WETH_USDC, "wstETH": [WST_USDC, WST_WETH]}))
    rt = prep.router
    w, a = prep.symbols.index("WETH"), prep.symbols.index("wstETH")
    x = np.zeros(3)
    x[a] = 60.0
    new, m, legs = rt.route(rt.init_state(), prep.p0.copy(), x)
    parts = {(j, q): amt for j, q, amt, *_ in legs}
    assert parts[(a, None)] + parts[(a, w)] == pytest.approx(60.0, rel=1e-12)
    assert parts[(a, None)] > 0 and parts[(a, w)] > 0
    usd_mid = float(rt.usd[a].price(new[a]))
    via = float(rt.cross[a, w].price(new[cross_key(a, w)])) * m[w]
    assert usd_mid == pytest.approx(via, rel=1e-10)
    assert m[a] == pytest.approx(usd_mid, rel=1e-10)


def test_RT3_an_asset_priced_through_its_quote_moves_with_it():
    snap = book({"WETH": WETH_USDC, "wstETH": WST_WETH})
    r = solve(snap, {"WETH": 0.2})
    assert r.shocked_prices["WETH"] == pytest.approx(2400.0, rel=1e-12)
    assert r.shocked_prices["wstETH"] == pytest.approx(0.8 * 3600.0, rel=1e-12)   # its pool did not trade
    # a shock on wstETH is a sale along its route: it reaches its target and moves WETH on the way
    r = solve(snap, {"wstETH": 0.2})
    assert r.shocked_prices["wstETH"] == pytest.approx(2880.0, rel=1e-12)
    assert r.shocked_prices["WETH"] < 3000.0
    shock = r.sales[r.sales.kind == "shock"]
    assert set(zip(shock.asset, shock.via)) == {("wstETH", "WETH"), ("WETH", "")}


def test_RT4_a_liquidation_sale_moves_the_quote_asset():
    """An Aave account with wstETH collateral (market-priced) and USDC debt: its liquidation sells wstETH
    into the WETH pool and the WETH proceeds into WETH/USDC, so a WETH-collateral Morpho position
    (liquidatable below $2,800) is liquidated in the next round: the shock's own routed sale takes WETH
    to $2,885.65, L's round-1 sale to $2,645.42. Without the WETH pool on wstETH's route M is
    never liquidated."""
    aave = {"wstETH": {"liquidation_threshold": 0.8, "liquidation_bonus": 1.05, "liquidation_protocol_fee": 0.0},
            "USDC": {"liquidation_threshold": 0.85, "liquidation_bonus": 1.04, "liquidation_protocol_fee": 0.0}}
    pos = [("aave-v3", "main", "L", "wstETH", "collateral", 100.0), ("aave-v3", "main", "L", "USDC", "debt", 270_000.0),
           ("morpho-blue", "m", "M", "WETH", "collateral", 10.0), ("morpho-blue", "m", "M", "USDC", "debt", 10 * 2800 * 0.8)]
    snap = make_snapshot(PRICES, pos, [("aave-v3", "main", {"version": "3.0"}, aave),
                                       ("morpho-blue", "m", {"lltv": 0.8, "collateral": "WETH", "loan": "USDC"}, {})],
                         {"WETH": WETH_USDC, "wstETH": WST_WETH})
    r = solve(snap, {"wstETH": 0.1})
    first = r.liquidations.groupby("account")["round"].min().to_dict()
    assert first == {"L": 1, "M": 2}      # L's 50% call in round 1 (again later as wstETH falls further)
    legs = r.sales[(r.sales.kind == "liquidation") & (r.sales["round"] == 1)]
    assert set(zip(legs.asset, legs.via)) == {("wstETH", "WETH"), ("WETH", "")}
    for mode in ("equilibrium", "fixed-price"):
        assert set(solve(snap, {"wstETH": 0.1}, mode).liquidations.account) == {"L", "M"}
    alone = make_snapshot(PRICES, pos, [("aave-v3", "main", {"version": "3.0"}, aave),
                                        ("morpho-blue", "m", {"lltv": 0.8, "collateral": "WETH", "loan": "USDC"}, {})],
                          {"WETH": WETH_USDC, "wstETH": dict(WST_WETH, quote_reserve=2_160_000.0, quote="USDC")})
    assert set(solve(alone, {"wstETH": 0.1}).liquidations.account) == {"L"}


POOL = st.tuples(st.floats(10.0, 5000.0), st.floats(0.0, 0.01))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(POOL, POOL, POOL, st.floats(0.1, 400.0))
def test_routed_sale_never_pays_less_than_the_best_single_path(usd_pool, cross_pool, weth_pool, x):
    """The split maximises nothing by construction, but equalising marginal prices over concave paths
    cannot do worse than sending everything down the better path (fees included)."""
    (bu, fu), (bc, fc), (bw, fw) = usd_pool, cross_pool, weth_pool
    v_usd = {"kind": "constant_product", "base_reserve": bu, "quote_reserve": bu * 3600, "fee": fu, "quote": "USDC"}
    v_x = {"kind": "constant_product", "base_reserve": bc, "quote_reserve": bc * 1.2, "fee": fc, "quote": "WETH"}
    v_w = {"kind": "constant_product", "base_reserve": bw, "quote_reserve": bw * 3000, "fee": fw, "quote": "USDC"}
    both = prepare(book({"WETH": v_w, "wstETH": [v_usd, v_x]}))
    only_usd = prepare(book({"WETH": v_w, "wstETH": v_usd}))
    only_x = prepare(book({"WETH": v_w, "wstETH": v_x}))
    a = both.symbols.index("wstETH")

    def usd(prep):
        from defirisk.solver.economics import sale_proceeds
        st0 = prep.router.init_state() if prep.router is not None else {j: c.init_state() for j, c in prep.curves.items()}
        return float(sale_proceeds(prep, a, st0, prep.p0.copy(), np.array([x]))[0])

    best = max(usd(only_usd), usd(only_x))
    assert usd(both) >= best * (1 - 1e-9)


def test_no_cross_pool_means_no_router():
    prep = prepare(book({"WETH": WETH_USDC, "wstETH": WST_USDC}))
    assert prep.router is None


@pytest.mark.parametrize("venues, words", [
    ({"WETH": WETH_USDC, "wstETH": dict(WST_WETH, quote="stETH")}, "field quote: 'stETH' is not in assets.csv"),
    ({"WETH": dict(WETH_USDC, quote="wstETH"), "wstETH": WST_WETH}, "cycle"),
    ({"WETH": dict(WETH_USDC, quote="WETH")}, "cannot quote an asset in itself"),
])
def test_bad_routes_are_named(venues, words):
    with pytest.raises(InputError, match=words):
        prepare(book(venues))


# --- arbitrage between an asset's paths ------------------------------------------------------------------

def test_ARB1_a_quote_drop_reaches_an_lst_with_its_own_usd_pool():
    """ARB1: wstETH has a USD pool (50 / 180,000) and a WETH pool (500 / 600), fee-free. A 20% WETH shock
    leaves the USD pool at $3,600 and the WETH path at 0.8 x 3,600: arbitrageurs buy wstETH from the WETH
    pool (with WETH bought on WETH/USDC) and sell it into the USD pool until both paths quote the same
    price. WETH still ends at its target (the shock sale includes the arbitrage)."""
    snap = book({"WETH": WETH_USDC, "wstETH": [WST_USDC, WST_WETH]})
    prep = prepare(snap)
    r = solve(snap, {"WETH": 0.2})
    assert r.shocked_prices["WETH"] == pytest.approx(2400.0, rel=1e-12)
    a = r.shocked_prices["wstETH"]
    assert 0.8 * 3600 < a < 3600
    # both paths at one price (fees 0): the USD pool's mid = the WETH pool's mid x WETH
    rt = prep.router
    arb = r.sales[r.sales.kind == "arbitrage"]
    assert set(zip(arb.asset, arb.via)) == {("wstETH", "WETH"), ("wstETH", ""), ("WETH", "")}
    bought = -arb[(arb.asset == "wstETH") & (arb.via == "WETH")].amount.sum()
    sold = arb[(arb.asset == "wstETH") & (arb.via == "")].amount.sum()
    assert bought == pytest.approx(sold, rel=1e-12) and sold > 0
    # the USD pool after selling `sold` into (50, 180,000): mid = 180,000 x 50 / (50 + sold)^2
    assert a == pytest.approx(180_000 * 50 / (50 + sold) ** 2, rel=1e-9)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(POOL, POOL, POOL, st.floats(0.05, 0.6))
def test_arbitrage_closes_gaps_to_the_fees_and_makes_no_value_from_nothing(usd_pool, cross_pool, weth_pool, s):
    (bu, fu), (bc, fc), (bw, fw) = usd_pool, cross_pool, weth_pool
    v_usd = {"kind": "constant_product", "base_reserve": bu, "quote_reserve": bu * 3600, "fee": fu, "quote": "USDC"}
    v_x = {"kind": "constant_product", "base_reserve": bc, "quote_reserve": bc * 1.2, "fee": fc, "quote": "WETH"}
    v_w = {"kind": "constant_product", "base_reserve": bw, "quote_reserve": bw * 3000, "fee": fw, "quote": "USDC"}
    prep = prepare(book({"WETH": v_w, "wstETH": [v_usd, v_x]}))
    rt = prep.router
    a, w = prep.symbols.index("wstETH"), prep.symbols.index("WETH")
    x = np.zeros(3)
    x[w] = bw * s                                 # a WETH sale: the WETH path of wstETH falls
    st0 = rt.init_state()
    before, m_before, _ = rt.route(st0, prep.p0.copy(), x, arbitrage=False)
    after, m_after, legs = rt.close_gaps(before, m_before)
    U, C, W = rt.usd[a], rt.cross[a, w], rt.usd[w]
    gU, gC, gW = (max(v.gamma for v in c.venues) for c in (U, C, W))
    pU, pC, pW = (float(c.price(after[k])) for c, k in ((U, a), (C, cross_key(a, w)), (W, w)))
    # after: neither path's bid is above the other's ask -- unless the venues could not supply more
    from defirisk.solver.routing import _buy_capacity
    paid0 = -sum(amt for j, q, amt, *_ in legs if j == w)
    limited = paid0 >= 0.99 * _buy_capacity(W, before[w]) or (not legs and gU * float(U.price(before[a])) >
                                                                    float(C.price(before[cross_key(a, w)])) * float(W.price(before[w])) / (gC * gW))
    if not limited:
        assert gU * pU <= pC * pW / (gC * gW) * (1 + 1e-9)
        assert gC * gW * pC * pW <= pU / gU * (1 + 1e-9)
    if legs:
        z = sum(amt for j, q, amt, *_ in legs if j == a and q is None)
        paid = -sum(amt for j, q, amt, *_ in legs if j == w)
        from defirisk.solver.routing import _buy, _proceeds
        received = _proceeds(U, before[a], z)          # USD for the wstETH sold into the USD pool
        cost = _buy(W, before[w], paid)[1]              # USD for the WETH the cross pool was paid
        gap0 = gU * float(U.price(before[a])) - float(C.price(before[cross_key(a, w)])) * float(W.price(before[w])) / (gC * gW)
        assert received - cost >= -1e-9 * max(received, 1.0)          # an arbitrage that loses is not taken
        assert received - cost <= z * max(gap0, 0.0) * (1 + 1e-6) + 1e-9  # it cannot gain more than the gap


def test_curve_of_an_asset_traded_only_through_its_quote():
    """wstETH has only the wstETH/WETH pool: its curve is a routed sale (the general engine), and a
    sequential curve with recovery runs too."""
    pos = [("morpho-blue", "m", f"a{i}", "wstETH", "collateral", 10.0) for i in range(3)] + \
          [("morpho-blue", "m", f"a{i}", "USDC", "debt", 10 * 3600 * 0.86 / (1.05 + 0.05 * i)) for i in range(3)]
    snap = make_snapshot(PRICES, pos, [("morpho-blue", "m", {"lltv": 0.86, "collateral": "wstETH", "loan": "USDC"}, {})],
                         {"WETH": WETH_USDC, "wstETH": WST_WETH})
    from defirisk.solver import cascade_curve
    c = cascade_curve(snap, "wstETH", points=12, max_shock=0.5, liquidators="all")
    assert c.method == "general" and len(c.curve) == 12
    assert c.curve.end_price.iloc[-1] <= 0.5 * 3600 * (1 + 1e-9)
    c2 = cascade_curve(snap, "wstETH", points=12, max_shock=0.5, liquidators="all", recovery={"WETH": 60})
    assert (c2.curve.end_price >= c.curve.end_price * (1 - 1e-12)).all()
    with pytest.raises(InputError, match="recovery applies to sequential mode"):
        cascade_curve(snap, "wstETH", points=12, mode="equilibrium", recovery={"WETH": 60})


def test_bad_quote_is_named_when_the_snapshot_is_loaded(tmp_path):
    import json as _json

    from defirisk.snapshot import load_snapshot, write_snapshot
    d = tmp_path / "s"
    write_snapshot(book({"WETH": WETH_USDC, "wstETH": WST_WETH}), d)
    venues = _json.loads((d / "venues.json").read_text())
    for v in (venues["wstETH"] if isinstance(venues["wstETH"], list) else [venues["wstETH"]]):
        v["quote"] = "stETH"
    (d / "venues.json").write_text(_json.dumps(venues))
    with pytest.raises(InputError) as e:
        load_snapshot(d)
    assert str(d / "venues.json") in str(e.value) and "asset wstETH" in str(e.value) and "field quote" in str(e.value)
