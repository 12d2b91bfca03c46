"""Mainnet failure modes reproduced on the devnet: a Morpho market whose oracle or IRM reverts, or
whose loan token has no USD price, is skipped and recorded (the rest is read); an Aave reserve
whose price cannot be read stops the snapshot with an error naming the reserve."""
from __future__ import annotations

import json

import eth_abi
import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app
from defirisk.errors import ChainError
from defirisk.snapshot import load_snapshot
from defirisk.snapshot_chain import take_snapshot

pytestmark = [pytest.mark.chain, pytest.mark.slow]
_load_commands()

REVERTS = "0x60006000fd"  # PUSH1 0 PUSH1 0 REVERT: every call reverts with no data
INVALID = "0xfe"  # INVALID: every call fails and burns all the gas it was given
def _reverts_with(reason: str) -> str:
    """Runtime code that reverts every call with Error(reason): the payload is written to memory
    32 bytes at a time (PUSH32 word, PUSH1 offset, MSTORE) and returned with REVERT."""
    payload = bytes.fromhex("08c379a0") + eth_abi.encode(["string"], [reason])
    padded = payload + bytes(-len(payload) % 32)
    code = b""
    for i in range(0, len(padded), 32):
        code += b"\x7f" + padded[i:i + 32] + b"\x60" + bytes([i]) + b"\x52"
    code += b"\x60" + bytes([len(payload)]) + b"\x60\x00\xfd"
    return "0x" + code.hex()


REVERTS_WITH_REASON = _reverts_with("stale")


def _market(dn, key):
    return next(m for m in dn.book["morpho_blue"]["markets"] if m["key"] == key)


def _morpho_rows(snap):
    f = snap.positions.frame
    return f[f.protocol == "morpho-blue"]


def _all_markets_present(run):
    names = {m.market for m in run.snapshot.markets if m.protocol == "morpho-blue"}
    return names


@pytest.mark.parametrize("code", [REVERTS, INVALID, REVERTS_WITH_REASON], ids=["revert", "invalid", "reason"])
def test_reverting_morpho_oracle_skips_only_that_market(dn, code):
    base = take_snapshot(dn.rpc_url, protocols="morpho-blue", book=dn.book, cache=False)
    assert base.skipped == [] and list(base.snapshot.manifest["skipped_markets"]) == []
    broken = _market(dn, "WETH/USDC")
    dn.anvil.rpc("anvil_setCode", broken["oracle"], code)
    dn.anvil.mine(1)
    run = take_snapshot(dn.rpc_url, protocols="morpho-blue", book=dn.book, cache=False)
    skipped = run.snapshot.manifest["skipped_markets"]
    assert [s["id"] for s in skipped] == [broken["id"]]
    assert skipped[0]["protocol"] == "morpho-blue" and skipped[0]["market"] == "WETH/USDC-86"
    assert "oracle" in skipped[0]["reason"] and broken["oracle"].lower() in skipped[0]["reason"].lower()
    if code == REVERTS_WITH_REASON:
        assert "stale" in skipped[0]["reason"]
    # Every other market and all of its positions are still there, unchanged.
    names = _all_markets_present(run)
    assert names == _all_markets_present(base) - {"WETH/USDC-86"}
    before, after = _morpho_rows(base.snapshot), _morpho_rows(run.snapshot)
    assert "WETH/USDC-86" in set(before.market) and "WETH/USDC-86" not in set(after.market)
    kept = before[before.market != "WETH/USDC-86"].reset_index(drop=True)
    assert len(after) == len(kept) > 0
    assert sorted(zip(after.market, after.account, after.side)) == sorted(zip(kept.market, kept.account, kept.side))


def test_reverting_irm_skips_the_markets_that_use_it(dn):
    irm = dn.book["morpho_blue"]["irm"]
    users = {m["id"] for m in dn.book["morpho_blue"]["markets"] if m["irm"].lower() == irm.lower()}
    dn.anvil.rpc("anvil_setCode", irm, REVERTS)
    dn.anvil.mine(1)
    run = take_snapshot(dn.rpc_url, protocols="aave-v3,morpho-blue", book=dn.book, cache=False)
    skipped = run.snapshot.manifest["skipped_markets"]
    assert {s["id"] for s in skipped} == users and all("irm" in s["reason"] for s in skipped)
    # Aave is read in full regardless.
    assert run.accounts["aave-v3:devnet"] == dn.info.aave_positions
    assert not (_morpho_rows(run.snapshot).market.isin([s["market"] for s in skipped])).any()


def test_loan_token_without_usd_price_skips_its_markets(dn):
    book = json.loads(json.dumps(dn.book))
    del book["feeds"]["USDC"]  # USDC: no Aave read, no feed -> USDC-loan markets cannot be put in USD
    run = take_snapshot(dn.rpc_url, protocols="morpho-blue", book=book, cache=False)
    skipped = {s["market"]: s for s in run.snapshot.manifest["skipped_markets"]}
    assert set(skipped) == {"WETH/USDC-86", "WBTC/USDC-86"}
    assert all("no USD price for loan token USDC" in s["reason"] for s in skipped.values())
    names = _all_markets_present(run)
    assert names == {"wstETH/WETH-945"}
    assert set(_morpho_rows(run.snapshot).market) == {"wstETH/WETH-945"}
    assert "USDC" not in run.snapshot.assets
    # wstETH has a feed in the book; take it away and it is priced through its market's oracle.
    del book["feeds"]["wstETH"]
    run2 = take_snapshot(dn.rpc_url, protocols="morpho-blue", book=book, cache=False)
    assert run2.snapshot.assets["wstETH"].oracle.startswith("morpho-oracle:")
    m = next(m for m in run2.snapshot.markets if m.market == "wstETH/WETH-945")
    assert run2.snapshot.assets["wstETH"].price_usd == pytest.approx(
        m.params["oracle_price"] * run2.snapshot.assets["WETH"].price_usd, rel=1e-12)


def test_failing_book_feed_skips_markets_that_need_it(dn):
    # The book's USDC feed is a broken contract (the markets' own oracles keep working).
    broken_feed = "0x00000000000000000000000000000000000bad01"
    dn.anvil.rpc("anvil_setCode", broken_feed, REVERTS)
    dn.anvil.mine(1)
    book = json.loads(json.dumps(dn.book))
    book["feeds"]["USDC"] = broken_feed
    run = take_snapshot(dn.rpc_url, protocols="morpho-blue", book=book, cache=False)
    skipped = {s["market"]: s["reason"] for s in run.snapshot.manifest["skipped_markets"]}
    assert set(skipped) == {"WETH/USDC-86", "WBTC/USDC-86"}
    assert all("feed failed" in r for r in skipped.values()), skipped


def test_cli_warns_and_writes_skipped_markets(dn, tmp_path):
    broken = _market(dn, "WBTC/USDC")
    dn.anvil.rpc("anvil_setCode", broken["oracle"], REVERTS)
    dn.anvil.mine(1)
    out = tmp_path / "snap"
    res = CliRunner().invoke(app, ["snapshot", "--rpc-url", dn.rpc_url, "--book", str(dn.book_path),
                                   "--out", str(out), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "warning: morpho-blue market WBTC/USDC-86" in res.stderr and "skipped" in res.stderr
    written = json.loads((out / "manifest.json").read_text())
    assert [s["id"] for s in written["skipped_markets"]] == [broken["id"]]
    assert load_snapshot(out).manifest["skipped_markets"][0]["market"] == "WBTC/USDC-86"


def test_aave_reserve_without_price_fails_naming_the_reserve(dn):
    # The devnet AaveOracle reads the WBTC Chainlink feed; a reverting source makes getAssetPrice revert.
    dn.anvil.rpc("anvil_setCode", dn.book["feeds"]["WBTC"], REVERTS)
    dn.anvil.mine(1)
    with pytest.raises(ChainError) as exc:
        take_snapshot(dn.rpc_url, protocols="aave-v3", book=dn.book, cache=False)
    msg = str(exc.value)
    assert "aave-v3 (devnet)" in msg and "reserve WBTC" in msg and dn.book["tokens"]["WBTC"]["address"] in msg
    assert "getAssetPrice" in msg
