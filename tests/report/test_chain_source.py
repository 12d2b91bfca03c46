"""--rpc-url end to end on the small devnet behind a forwarder that, like a hosted node, accepts a key
in the path, userinfo and query: the report is produced and no part of the secret reaches any file,
history row or printed line."""
from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app
from tests.forwarder import forwarding_to

pytestmark = pytest.mark.chain
_load_commands()

SECRETS = ("s3cretpw", "AbC123dEf456GhI789jkLmN", "topsecret42")


@pytest.fixture
def keyed_url(small_devnet):
    with forwarding_to(small_devnet.rpc_url) as base:
        port = base.rsplit(":", 1)[1]
        yield f"http://alice:{SECRETS[0]}@127.0.0.1:{port}/v2/{SECRETS[1]}?apikey={SECRETS[2]}"


def test_rpc_report_redacts_everywhere(keyed_url, small_devnet, tmp_path):
    out, db = tmp_path / "rep", tmp_path / "h.sqlite"
    res = CliRunner().invoke(app, ["report", "--rpc-url", keyed_url, "--book", str(small_devnet.book_path),
                                   "--out", str(out), "--history", str(db), "--curve-points", "20"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    assert data["source"]["kind"] == "rpc" and data["source"]["chain_id"] == 31337
    assert data["source"]["block_number"] is not None and data["source"]["time_utc"]
    assert data["source"]["label"].endswith("/v2/***?apikey=***") and "***@127.0.0.1" in data["source"]["label"]
    assert (out / "snapshot" / "manifest.json").is_file()   # the exact input is kept beside the report
    texts = [res.output] + [p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file()]
    con = sqlite3.connect(db)
    texts += [repr(row) for t in ("runs", "figures", "cliffs") for row in con.execute(f"SELECT * FROM {t}")]
    con.close()
    for secret in SECRETS:
        assert not any(secret in t for t in texts), secret
