"""The default scenario (2,434 positions) replayed on a fork of its devnet, on both sides of its first
WETH cliff (equilibrium curve: ~12.05%, Morpho liquidations pushing Aave over) and deep past it.
Part of `make test` (about a minute per shock on 2 cores); marked slow so `-m "not slow"` skips it.

Measured (docs/validation.md): it agrees since the Aave rule floors the average liquidation threshold
to whole bps as the chain does; before that, 5 of 1,008 accounts were liquidated a round early on chain.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "default.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private_disk(tmp_path_factory):
    """The validations run with a HOME and an anvil state root of their own (anvils inherit them), so
    the test can see everything they leave on disk."""
    home, root = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("anvil-state")
    saved = {k: os.environ.get(k) for k in ("HOME", "DEFIRISK_ANVIL_STATE_DIR")}
    os.environ.update(HOME=str(home), DEFIRISK_ANVIL_STATE_DIR=str(root))
    yield home, root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def outcomes(private_disk):
    from defirisk.validate import validate

    return {s: validate({"WETH": s}, scenario=DEFAULT) for s in (0.115, 0.125, 0.25)}


def test_validation_leaves_nothing_on_disk(outcomes, private_disk):
    """Three validations (each over a thousand blocks on the fork; anvil used to persist the states
    past its in-memory window: 5 GB per run) leave nothing in ~/.foundry and no state directory."""
    home, root = private_disk
    assert sum(o.executed.totals.accounts_liquidated for o in outcomes.values()) > 1000
    assert [str(p) for p in home.rglob("*")] == []
    assert [str(p) for p in root.rglob("*")] == []


@pytest.mark.parametrize("shock", [0.115, 0.125, 0.25])
def test_default_scenario_agrees(outcomes, shock):
    report = outcomes[shock]
    assert report.executed.totals.accounts_liquidated > 0
    assert report.comparison.agree, "\n".join(report.comparison.problems())


def test_crossing_the_cliff_pulls_in_both_protocols(outcomes):
    below, above = outcomes[0.115].executed, outcomes[0.125].executed
    protocols_above = set(above.by_protocol)
    assert {"aave-v3", "morpho-blue"} <= protocols_above
    # A 0.01 larger shock liquidates disproportionately more: the chain, not the shock, did it.
    assert above.totals.liquidated_collateral_usd > 1.5 * below.totals.liquidated_collateral_usd
