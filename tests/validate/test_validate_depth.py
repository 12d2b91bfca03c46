"""`defirisk validate --depth FILE`: the on-chain prediction is still what is executed and compared;
the prediction with off-chain depth is shown beside it, never compared (the fork has no off-chain venue)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defirisk.cli import _load_commands, app

SMALL = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "small.yaml"
DEPTH = "asset,usd_sold,impact\nWETH,1000000,0.01\nWETH,10000000,0.05\n"


def test_validate_with_depth_compares_on_chain_only(devnet_a, tmp_path):
    _load_commands()
    runner = CliRunner()
    (tmp_path / "depth.csv").write_text(DEPTH)
    args = ["validate", "--scenario", str(SMALL), "--shock", "WETH=0.25", "--depth", str(tmp_path / "depth.csv")]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["agree"] is True                      # the verdict is the on-chain prediction's
    d = out["off_chain_depth"]
    assert d["file"] == "depth.csv" and d["compared"] is False
    assert d["predicted"]["shocked_prices"]["WETH"] == out["predicted"]["shocked_prices"]["WETH"]
    # deeper market: the cascade's sales move WETH less than the on-chain prediction (and the chain) say
    assert d["predicted"]["end_prices"]["WETH"] > out["predicted"]["end_prices"]["WETH"]
    assert out["executed"]["end_prices"]["WETH"] == pytest.approx(out["predicted"]["end_prices"]["WETH"], rel=1e-6)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "prediction with off-chain depth from depth.csv (assets: WETH); NOT executed and NOT compared" in res.output
