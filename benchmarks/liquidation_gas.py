"""Measure the gas of one liquidation call per protocol on the devnet (liquidator economics' constants).

Runs the forked-chain validator (`defirisk.validate.validate`, the same code as
`defirisk validate --scenario ... --shock ...`), which executes real Aave V3 `liquidationCall` and
Morpho Blue `liquidate` transactions on an anvil fork, and reads `gasUsed` from every receipt of
those calls (nothing else of the validator changes: `ForkChain.send` is wrapped to keep the receipts).
The liquidator's sales of the seized collateral (our swapper into the real Uniswap pools) are listed
too, for reference: liquidator economics charges the liquidation call only (docs/model.md,
"Liquidator economics").

The figures recorded in defirisk/solver/economics.py (GAS_PER_CALL) were measured with:
    .venv/bin/python benchmarks/liquidation_gas.py --scenario fixtures/scenarios/small.yaml --shock WETH=0.25

Last line: aave-v3=G morpho-blue=G (median gasUsed per call)
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from defirisk.cli.options import parse_assignments  # noqa: E402
from defirisk.validate import fork as fork_mod  # noqa: E402
from defirisk.validate.run import validate  # noqa: E402

# receipt label prefix (defirisk/validate/liquidators.py, executor.py) -> what it measures
KINDS = {"aave-v3 liquidationCall": "aave-v3", "morpho-blue liquidate": "morpho-blue"}
SALE = "liquidation sale of"


def measure(shocks: dict, scenario: str | None) -> tuple[dict[str, list[int]], list[int], bool]:
    used: dict[str, list[int]] = {v: [] for v in KINDS.values()}
    sales: list[int] = []
    original = fork_mod.ForkChain.send

    def send(self, sender, to, signature, *args, gas=None, label=""):
        receipt = original(self, sender, to, signature, *args, gas=gas, label=label)
        for prefix, proto in KINDS.items():
            if label.startswith(prefix):
                used[proto].append(int(receipt["gasUsed"], 16))
        if SALE in label:
            sales.append(int(receipt["gasUsed"], 16))
        return receipt

    fork_mod.ForkChain.send = send
    try:
        report = validate(shocks, scenario=scenario)
    finally:
        fork_mod.ForkChain.send = original
    return used, sales, report.agree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="fixtures/scenarios/small.yaml", help="devnet scenario file")
    ap.add_argument("--shock", action="append", default=[], help="ASSET=FRACTION (default WETH=0.25)")
    args = ap.parse_args()
    shocks = parse_assignments(args.shock or ["WETH=0.25"], "--shock", "FRACTION", required=True)
    gas, sales, agree = measure(shocks, args.scenario)
    print(f"scenario {args.scenario}, shocks {shocks}, validation agrees: {agree}")
    medians = {}
    for proto, g in gas.items():
        if not g:
            print(f"{proto}: no liquidation call executed")
            continue
        medians[proto] = int(statistics.median(g))
        print(f"{proto}: {len(g)} calls, gasUsed min {min(g):,} median {medians[proto]:,} max {max(g):,}")
    if sales:
        print(f"liquidator sales (swapper, not charged): {len(sales)} txs, gasUsed min {min(sales):,} "
              f"median {int(statistics.median(sales)):,} max {max(sales):,}")
    print(" ".join(f"{p}={m}" for p, m in medians.items()))


if __name__ == "__main__":
    main()
