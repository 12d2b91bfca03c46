"""Devnet A, fork B of A at a block: the predicted sequential cascade is executed on B with the
protocols' own code and must agree with the prediction (prices within 1e-6 relative, the same
liquidated accounts in the same rounds, per-protocol amounts within tolerance)."""
from __future__ import annotations

import numpy as np
import pytest

from defirisk.errors import InputError
from defirisk.model import MarketParams, Snapshot, thaw
from defirisk.snapshot_chain import take_snapshot
from defirisk.solver import solve
from defirisk.solver.curve import cascade_curve
from defirisk.validate import compare, execute, validate
from pathlib import Path

SMALL = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "small.yaml"

PRICE_RTOL = 1e-6


def _accounts(liq):
    return {(p, m, a.lower()) for p, m, a in liq[["protocol", "market", "account"]].itertuples(index=False)}


def _check_agreement(report):
    cmp = report.comparison
    assert cmp.agree, "\n".join(cmp.problems())
    # The same statements, spelled out independently of compare():
    for asset, p in report.predicted.end_prices.items():
        np.testing.assert_allclose(report.executed.end_prices[asset], p, rtol=PRICE_RTOL, err_msg=asset)
    assert _accounts(report.predicted.liquidations) == _accounts(report.executed.liquidations)
    assert report.predicted.rounds == report.executed.rounds


@pytest.mark.parametrize("shock", [0.18, 0.4])
def test_weth_shocks_agree(devnet_a, shock):
    a_block = devnet_a.anvil.block_number()
    report = validate({"WETH": shock}, scenario=SMALL)
    _check_agreement(report)
    assert report.upstream == "devnet:small" and report.chain_id == 31337
    assert report.executed.totals.accounts_liquidated > 0
    assert report.executed.transactions > 0
    # validate() started its own devnet A; the session's A (same scenario) was never touched.
    assert devnet_a.anvil.block_number() == a_block


def _cross_protocol_cliff(snapshot):
    """The first sequential cliff on WETH's own price whose far side liquidates in both Aave and Morpho
    (cliffs of the liquidated USD alone are not what this test replays)."""
    curve = cascade_curve(snapshot, "WETH", max_shock=0.6, points=200, mode="sequential")
    for cliff in curve.cliffs:
        if not any(q["quantity"] == "end_price" and q["asset"] == "WETH" for q in cliff.jumps):
            continue
        above = solve(snapshot, {"WETH": cliff.trigger_shock + 2e-4})
        below = solve(snapshot, {"WETH": cliff.trigger_shock - 2e-4})
        if set(above.by_protocol) >= {"aave-v3", "morpho-blue"} and \
                _accounts(above.liquidations) != _accounts(below.liquidations):
            return cliff, below, above
    pytest.fail("no cross-protocol cliff on WETH in the small scenario")


def test_cross_protocol_cliff_both_sides_agree(devnet_a, book_a, fork_b):
    snap = take_snapshot(fork_b.url, fork_b.block, book=book_a, cache=False).snapshot
    cliff, _, _ = _cross_protocol_cliff(snap)
    results = {}
    for side, s in (("below", cliff.trigger_shock - 2e-4), ("above", cliff.trigger_shock + 2e-4)):
        report = validate({"WETH": s}, scenario=SMALL)
        _check_agreement(report)
        results[side] = report
    # The cliff is real on chain too: crossing it adds liquidations and a price jump.
    below, above = results["below"].executed, results["above"].executed
    assert _accounts(below.liquidations) < _accounts(above.liquidations)
    assert set(above.by_protocol) >= {"aave-v3", "morpho-blue"}
    drop_below = 1 - below.end_prices["WETH"] / below.shocked_prices["WETH"]
    drop_above = 1 - above.end_prices["WETH"] / above.shocked_prices["WETH"]
    assert drop_above > drop_below + 1e-3


def test_real_network_path_on_the_devnet(devnet_a):
    """Oracle code replaced by our settable feeds, tokens funded through balance slots: the path a
    mainnet fork takes, exercised without the internet."""
    report = validate({"WETH": 0.25}, scenario=SMALL, mode="real")
    assert (report.oracle_mode, report.funding_mode) == ("setcode", "storage")
    _check_agreement(report)


def test_a_wrong_prediction_is_caught(book_a, fork_b):
    """The comparison can fail: predict with Aave thresholds lowered by 5 points and it must disagree."""
    snap = take_snapshot(fork_b.url, fork_b.block, book=book_a, cache=False).snapshot
    markets = []
    for m in snap.markets:
        assets = thaw(m.assets)
        if m.protocol == "aave-v3":
            for spec in assets.values():
                spec["liquidation_threshold"] = max(0.0, spec["liquidation_threshold"] - 0.05)
        markets.append(MarketParams(m.protocol, m.market, thaw(m.params), assets))
    wrong = Snapshot(snap.manifest, snap.assets, snap.positions, tuple(markets), snap.venues)
    predicted = solve(wrong, {"WETH": 0.18})
    executed = execute(fork_b.chain, snap, book_a, {"WETH": 0.18}, oracle_mode="setter", funding_mode="mint")
    cmp = compare(predicted, executed)
    assert not cmp.agree
    assert cmp.only_predicted and not cmp.only_executed
    assert any("liquidated only in the prediction" in p for p in cmp.problems())


def test_emode_positions_agree_at_a_small_shock(devnet_a):
    """A 5% WETH drop leaves the e-mode (wstETH/WETH) loops healthy on chain; the model must agree."""
    _check_agreement(validate({"WETH": 0.05}, scenario=SMALL))


def test_bad_input(devnet_a):
    with pytest.raises(InputError, match="unknown asset"):
        validate({"NOPE": 0.1}, scenario=SMALL)
    with pytest.raises(InputError, match="at least one shock"):
        validate({}, scenario=SMALL)


def test_user_rpc_path_never_writes_upstream(devnet_a, book_a):
    """The devnet given as a user's --rpc-url: validation forks it and leaves it exactly as it was."""
    a = devnet_a.anvil
    before = (a.block_number(), a.rpc("eth_getBlockByNumber", "latest", False)["hash"],
              a.rpc("eth_getCode", "0x6979f9687786aa6317a4767dBF2548819ebc545F", "latest"))
    report = validate({"WETH": 0.25}, rpc_url=devnet_a.rpc_url, book=devnet_a.book, block=a.block_number())
    _check_agreement(report)
    assert report.oracle_mode == "setter"  # the devnet's own book
    after = (a.block_number(), a.rpc("eth_getBlockByNumber", "latest", False)["hash"],
             a.rpc("eth_getCode", "0x6979f9687786aa6317a4767dBF2548819ebc545F", "latest"))
    assert after == before and before[2] == "0x"
