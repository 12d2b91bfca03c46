"""The same validation path against a real network fork. Runs only when DEFIRISK_FORK_URL is set
(docs/validation.md "Against a real network"); never needs or touches the internet otherwise.

    DEFIRISK_FORK_URL=https://... [DEFIRISK_FORK_BLOCK=21000000] [DEFIRISK_FORK_PROTOCOLS=morpho-blue] \
    [DEFIRISK_FORK_SHOCK=WETH=0.3] .venv/bin/pytest tests/validate/test_validate_network.py

The upstream is only read: every write goes to the local anvil fork through the write guard.
"""
from __future__ import annotations

import os

import pytest

URL = os.environ.get("DEFIRISK_FORK_URL")

pytestmark = pytest.mark.skipif(not URL, reason="set DEFIRISK_FORK_URL to validate against a real network fork")


def test_real_network_fork_agrees():
    from defirisk.validate import validate
    from defirisk.validate.guard import JsonRpc

    block = int(os.environ["DEFIRISK_FORK_BLOCK"]) if os.environ.get("DEFIRISK_FORK_BLOCK") else None
    asset, _, frac = os.environ.get("DEFIRISK_FORK_SHOCK", "WETH=0.3").partition("=")
    upstream = JsonRpc(URL)
    head_before = int(upstream.call("eth_blockNumber"), 16)
    report = validate({asset: float(frac)}, rpc_url=URL, block=block,
                      protocols=os.environ.get("DEFIRISK_FORK_PROTOCOLS") or None)
    assert (report.oracle_mode, report.funding_mode) == ("setcode", "storage")
    assert report.comparison.accounts_agree, "\n".join(report.comparison.problems())
    assert report.agree, "\n".join(report.comparison.problems())
    # Nothing we did can have reached the upstream; its head only moves with the real network.
    assert int(upstream.call("eth_blockNumber"), 16) >= head_before
