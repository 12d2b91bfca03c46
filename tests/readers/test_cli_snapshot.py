"""`defirisk snapshot` end to end on the devnet: success, pinned block, and every error path exits 2
with a message naming the protocol and address, never an unredacted URL, never a partial directory."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app
from defirisk.snapshot import load_snapshot

pytestmark = [pytest.mark.chain, pytest.mark.slow]
_load_commands()
runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["snapshot", *map(str, args)])


def _book_file(tmp_path, dn, **changes):
    book = json.loads(json.dumps(dn.book))
    for path, value in changes.items():
        node = book
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    p = tmp_path / "book.json"
    p.write_text(json.dumps(book))
    return p


def test_snapshot_writes_a_loadable_directory_at_the_pinned_block(dn, tmp_path):
    block = dn.anvil.block_number()
    dn.anvil.mine(2)
    out = tmp_path / "snap"
    res = _run("--rpc-url", dn.rpc_url, "--book", dn.book_path, "--block", block, "--out", out, "--json",
               "--no-cache")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["block_number"] == block
    assert summary["accounts"] == {"aave-v3:devnet": dn.info.aave_positions, "morpho-blue": dn.info.morpho_positions}
    snap = load_snapshot(out)
    assert snap.manifest["block_number"] == block and snap.manifest["chain_id"] == 31337
    assert len(snap.positions) == summary["positions"] and len(snap.positions) > 100
    assert "aave-v3" in res.stderr and "reading accounts" in res.stderr  # progress went to stderr
    # Text output names the block and the directory.
    res2 = _run("--rpc-url", dn.rpc_url, "--book", dn.book_path, "--out", tmp_path / "snap2", "--protocols", "morpho-blue")
    assert res2.exit_code == 0, res2.output
    assert "written to" in res2.stdout and "morpho-blue" in res2.stdout
    assert {m.protocol for m in load_snapshot(tmp_path / "snap2").markets} == {"morpho-blue"}


def test_secret_in_rpc_url_is_redacted_everywhere(dn, tmp_path, path_proxy):
    secret = "AbCdEf0123456789SeCrEtKeY"
    url = f"{path_proxy}/v2/{secret}"
    out = tmp_path / "snap"
    res = _run("--rpc-url", url, "--book", dn.book_path, "--out", out, "--protocols", "morpho-blue", "--no-cache")
    assert res.exit_code == 0, res.output
    assert secret not in res.output
    for f in out.iterdir():
        assert secret not in f.read_text(errors="ignore"), f
    assert "/v2/***" in json.loads((out / "manifest.json").read_text())["source"]


def test_unreachable_rpc_exits_2_with_redacted_url(tmp_path, dn):
    res = _run("--rpc-url", "http://127.0.0.1:9/v2/AbCdEf0123456789SeCrEtKeY", "--book", dn.book_path,
               "--out", tmp_path / "x")
    assert res.exit_code == 2
    assert "cannot use RPC http://127.0.0.1:9/v2/***" in res.stderr
    assert "SeCrEtKeY" not in res.output
    assert not (tmp_path / "x").exists()


def test_wrong_chain_id_exits_2(dn, tmp_path):
    res = _run("--rpc-url", dn.rpc_url, "--book", _book_file(tmp_path, dn, chain_id=1), "--out", tmp_path / "x")
    assert res.exit_code == 2 and "chain id 31337, expected 1" in res.stderr
    assert not (tmp_path / "x").exists()


def test_address_without_code_names_protocol_and_address(dn, tmp_path):
    eoa = "0x000000000000000000000000000000000000dEaD"
    book = _book_file(tmp_path, dn, **{"aave_v3.pool": eoa, "aave_v3.pool_addresses_provider": None})
    res = _run("--rpc-url", dn.rpc_url, "--book", book, "--out", tmp_path / "x", "--no-cache")
    assert res.exit_code == 2
    assert f"aave-v3 (devnet): no contract at {eoa} (Pool)" in res.stderr
    morpho_book = _book_file(tmp_path, dn, **{"morpho_blue.morpho": eoa})
    res = _run("--rpc-url", dn.rpc_url, "--book", morpho_book, "--out", tmp_path / "x", "--protocols", "morpho-blue",
               "--no-cache")
    assert res.exit_code == 2 and f"morpho-blue: no contract at {eoa}" in res.stderr
    assert not (tmp_path / "x").exists()


def test_wrong_interface_names_protocol_and_address(dn, tmp_path):
    token = dn.book["tokens"]["WETH"]["address"]
    book = _book_file(tmp_path, dn, **{"aave_v3.pool": token, "aave_v3.pool_addresses_provider": None})
    res = _run("--rpc-url", dn.rpc_url, "--book", book, "--out", tmp_path / "x", "--no-cache")
    assert res.exit_code == 2
    assert "aave-v3 (devnet) Pool" in res.stderr and token in res.stderr and "ADDRESSES_PROVIDER" in res.stderr
    book2 = _book_file(tmp_path, dn, **{"morpho_blue.morpho": token})
    res = _run("--rpc-url", dn.rpc_url, "--book", book2, "--out", tmp_path / "x", "--protocols", "morpho-blue",
               "--no-cache")
    assert res.exit_code == 2 and "morpho-blue" in res.stderr and token in res.stderr


def test_failed_snapshot_leaves_the_previous_directory_intact(dn, tmp_path):
    out = tmp_path / "snap"
    assert _run("--rpc-url", dn.rpc_url, "--book", dn.book_path, "--out", out, "--protocols", "morpho-blue").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = _run("--rpc-url", dn.rpc_url, "--book", _book_file(tmp_path, dn, chain_id=5), "--out", out)
    assert res.exit_code == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".snap")] == []


def test_bad_protocol_and_bad_book_are_input_errors(dn, tmp_path):
    res = _run("--rpc-url", dn.rpc_url, "--book", dn.book_path, "--out", tmp_path / "x", "--protocols", "maker")
    assert res.exit_code == 2 and "protocol 'maker' has no chain reader" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"chain_id": 31337, "tokens": {"WETH": {"address": "0x12", "decimals": 18}}}')
    res = _run("--rpc-url", dn.rpc_url, "--book", bad, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "tokens.WETH.address: not an address" in res.stderr
