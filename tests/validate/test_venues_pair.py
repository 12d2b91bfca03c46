"""The validator resolves a Uniswap V2 venue by its recorded `pair` address when the snapshot has one
(checked to be a V2 pair of the venue's two tokens), and by matching reserves only for snapshots
written before `pair` existed."""
from __future__ import annotations

import dataclasses

import pytest

from defirisk.errors import ChainError
from defirisk.model import Venue, thaw
from defirisk.snapshot_chain import take_snapshot
from defirisk.validate.venues import resolve_venues

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def snap(devnet_a, tmp_path_factory):
    """The small devnet read at its built block (the fork's block) by the real reader."""
    return take_snapshot(devnet_a.rpc_url, block=devnet_a.anvil.block_number(), book=devnet_a.book,
                         out=tmp_path_factory.mktemp("s") / "snap", cache=False).snapshot


def _with_weth_v2(snapshot, **changes):
    """A copy of `snapshot` whose WETH constant_product venue has `changes` applied (None drops a key)."""
    venues = {}
    for sym, vs in snapshot.venues.items():
        out = []
        for v in vs:
            if sym == "WETH" and v.kind == "constant_product":
                params = thaw(v.params)
                for k, val in changes.items():
                    if val is None:
                        params.pop(k, None)
                    else:
                        params[k] = val
                v = Venue(sym, v.kind, params)
            out.append(v)
        venues[sym] = tuple(out)
    return dataclasses.replace(snapshot, venues=venues)


def _weth_v2_params(snapshot):
    return next(v.params for v in snapshot.venues["WETH"] if v.kind == "constant_product")


def _weth_v2(resolved):
    return next(cv for cv in resolved["WETH"] if cv.kind == "constant_product")


def test_reader_pair_is_used(snap, book_a, fork_b):
    pair = book_a.v2_pairs[("WETH", "USDC")]
    weth = [v for v in snap.venues["WETH"] if v.kind == "constant_product"]
    assert [v.params["pair"] for v in weth] == [pair]
    assert _weth_v2(resolve_venues(snap, book_a, fork_b.chain)).address == pair
    # With the pair recorded, reserves that no longer match the pool do not matter...
    moved = _with_weth_v2(snap, base_reserve=float(weth[0].params["base_reserve"]) * 2)
    assert _weth_v2(resolve_venues(moved, book_a, fork_b.chain)).address == pair
    # ...while without it the reserve match is all there is, and it fails.
    with pytest.raises(ChainError, match="venue 0 of WETH: no Uniswap V2 pair .* matches its reserves"):
        resolve_venues(_with_weth_v2(moved, pair=None), book_a, fork_b.chain)


def test_old_snapshot_without_pair_falls_back_to_reserves(snap, book_a, fork_b):
    old = _with_weth_v2(snap, pair=None)
    assert "pair" not in _weth_v2_params(old)
    assert _weth_v2(resolve_venues(old, book_a, fork_b.chain)).address == book_a.v2_pairs[("WETH", "USDC")]


def test_wrong_pair_is_refused_with_venue_and_address(snap, book_a, fork_b):
    wbtc_pair = book_a.v2_pairs[("WBTC", "USDC")]
    with pytest.raises(ChainError, match=f"venue 0 of WETH: pair {wbtc_pair} holds .*, not WETH"):
        resolve_venues(_with_weth_v2(snap, pair=wbtc_pair), book_a, fork_b.chain)
    v3_pool = next(iter(book_a.v3_pools.values()))  # token0/token1 like a pair, but no getReserves
    with pytest.raises(ChainError, match=f"pair {v3_pool} is not a Uniswap V2 pair"):
        resolve_venues(_with_weth_v2(snap, pair=v3_pool), book_a, fork_b.chain)
    nowhere = "0x000000000000000000000000000000000000dEaD"
    with pytest.raises(ChainError, match=f"pair {nowhere} has no code"):
        resolve_venues(_with_weth_v2(snap, pair=nowhere), book_a, fork_b.chain)
