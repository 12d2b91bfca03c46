"""Benchmark: snapshot the default devnet with the real reader and with a naive reader, same run.

Real reader: `defirisk.snapshot_chain.take_snapshot`, best of two runs, end to end (pin, log discovery with no cache,
all reads, building the Snapshot, writing the directory).
Naive reader: what most scripts do — web3.py contract objects, one `.call()` per value, for the same
values (Aave: user configuration, e-mode, one scaled balance per collateral/debt bit; Morpho: one
`position` per borrower). It is timed on a sample of accounts (default 300; it runs at a few hundred
calls per second) and its rate is accounts per second over that sample.

Last line: accounts=N accounts_per_s=X ratio_vs_naive=R
Usage: .venv/bin/python benchmarks/snapshot.py [--scenario FILE] [--naive-sample N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from web3 import Web3  # noqa: E402

from defirisk.devnet import running_devnet  # noqa: E402
from defirisk.protocols.aave_v3 import user_config_ids  # noqa: E402
from defirisk.snapshot_chain import take_snapshot  # noqa: E402


def _abi(name: str) -> list:
    return json.loads((ROOT / "abis" / f"{name}.json").read_text())


def naive_read(url: str, book: dict, block: int, aave_accounts: list[str], morpho_pairs: list[tuple[str, str]]) -> float:
    """Seconds the naive web3 reader needs for these accounts (same values as the real reader)."""
    w3 = Web3(Web3.HTTPProvider(url))
    t0 = time.perf_counter()
    pool = w3.eth.contract(address=Web3.to_checksum_address(book["aave_v3"]["pool"]), abi=_abi("AaveV3Pool"))
    reserves = pool.functions.getReservesList().call(block_identifier=block)
    tokens = {}
    for r in reserves:
        d = pool.functions.getReserveData(r).call(block_identifier=block)
        tokens[d[7]] = (w3.eth.contract(address=d[8], abi=_abi("AaveScaledBalanceToken")),
                        w3.eth.contract(address=d[10], abi=_abi("AaveScaledBalanceToken")))
    for a in aave_accounts:
        cfg = pool.functions.getUserConfiguration(a).call(block_identifier=block)[0]
        pool.functions.getUserEMode(a).call(block_identifier=block)
        borrowing, collateral = user_config_ids(cfg)
        for rid in collateral:
            tokens[rid][0].functions.scaledBalanceOf(a).call(block_identifier=block)
        for rid in borrowing:
            tokens[rid][1].functions.scaledBalanceOf(a).call(block_identifier=block)
    morpho = w3.eth.contract(address=Web3.to_checksum_address(book["morpho_blue"]["morpho"]), abi=_abi("MorphoBlue"))
    for mid, a in morpho_pairs:
        morpho.functions.position(bytes.fromhex(mid[2:]), a).call(block_identifier=block)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=None, help="devnet scenario (default: the default scenario)")
    ap.add_argument("--naive-sample", type=int, default=300, help="accounts the naive reader reads")
    args = ap.parse_args()
    with running_devnet(args.scenario) as dn, tempfile.TemporaryDirectory() as tmp:
        block = dn.anvil.block_number()
        best = None
        for _ in range(2):  # best of two runs: the first also pays one-off imports and warm-up
            run = take_snapshot(dn.rpc_url, block=block, book=dn.book, out=Path(tmp) / "snap", cache=False)
            best = run if best is None or run.seconds["total"] < best.seconds["total"] else best
        run = best
        n = run.total_accounts
        rate = n / run.seconds["total"]
        f = run.snapshot.positions.frame
        aave = list(dict.fromkeys(f[f.protocol == "aave-v3"].account))
        morpho_market_ids = {m.market: m.params["id"] for m in run.snapshot.markets if m.protocol == "morpho-blue"}
        mf = f[f.protocol == "morpho-blue"][["market", "account"]].drop_duplicates()
        morpho = [(morpho_market_ids[m], a) for m, a in mf.itertuples(index=False)]
        k = min(args.naive_sample, len(aave) + len(morpho))
        share = len(aave) / max(1, len(aave) + len(morpho))
        ka = min(len(aave), round(k * share))
        sample_a, sample_m = aave[:ka], morpho[:k - ka]
        naive_s = naive_read(dn.rpc_url, dn.book, block, sample_a, sample_m)
        naive_rate = (len(sample_a) + len(sample_m)) / naive_s
        print(f"devnet block {block}: {n} accounts with debt ({run.accounts}); "
              f"{len(run.snapshot.positions)} position rows; {run.calls} view calls in {run.requests} HTTP requests")
        print("real reader stages (s): " + ", ".join(f"{k}={v:.3f}" for k, v in run.seconds.items()))
        print(f"naive web3 reader: {len(sample_a) + len(sample_m)} accounts in {naive_s:.2f} s "
              f"= {naive_rate:.0f} accounts/s")
        print(f"accounts={n} accounts_per_s={rate:.0f} ratio_vs_naive={rate / naive_rate:.1f}")


if __name__ == "__main__":
    main()
