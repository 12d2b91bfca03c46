"""`validate()`: fork -> snapshot the fork -> predict (sequential) -> execute on the fork -> compare.

Upstream A is the devnet for a scenario (started here) or the user's RPC; fork B of A at one block is
the only chain written to. Modes default by the address book: the devnet's own book ("devnet") sets
feeds through their setter and mints tokens; any other book (a real network) replaces oracle code
and writes token balance slots. Both can be forced (tests run the real-network path on a devnet).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from defirisk.addressbook import AddressBook, load_book
from defirisk.errors import InputError
from defirisk.markets.depth import DepthFile, apply_depth
from defirisk.model import Snapshot
from defirisk.solver import CascadeResult, solve
from defirisk.validate.compare import Comparison, Tolerances, compare
from defirisk.validate.executor import DEFAULT_MAX_ROUNDS, Execution, execute
from defirisk.validate.fork import Fork

MODES = ("auto", "devnet", "real")
# The executor liquidates every position liquidatable on chain, whatever it costs the liquidator, so the
# prediction it is compared with must do the same: liquidator economics off (docs/model.md).
LIQUIDATORS = "all"


@dataclass(frozen=True, eq=False)
class ValidationReport:
    upstream: str  # "devnet:<scenario>" or the redacted RPC URL
    chain_id: int
    block: int
    shocks: Mapping[str, float]
    snapshot: Snapshot
    predicted: CascadeResult
    executed: Execution
    comparison: Comparison
    oracle_mode: str
    funding_mode: str
    seconds: Mapping[str, float]
    # --depth FILE: the prediction with the off-chain depth routed beside the pools. Not executed and not
    # compared: the fork can only sell into on-chain pools (docs/validation.md).
    predicted_with_depth: CascadeResult | None = None
    off_chain_depth: Mapping[str, Any] | None = None

    @property
    def agree(self) -> bool:
        return self.comparison.agree

    def to_dict(self) -> dict[str, Any]:
        return {"agree": self.agree, "upstream": self.upstream, "chain_id": self.chain_id, "block": self.block,
                "shocks": dict(self.shocks), "oracle_mode": self.oracle_mode, "funding_mode": self.funding_mode,
                "accounts_in_snapshot": int(self.snapshot.positions.frame["account"].nunique()),
                "liquidators": LIQUIDATORS,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "comparison": self.comparison.to_dict(), "predicted": self.predicted.to_dict(),
                "executed": self.executed.to_dict(),
                **({"off_chain_depth": {**dict(self.off_chain_depth or {}), "compared": False,
                                        "predicted": self.predicted_with_depth.to_dict()}}
                   if self.predicted_with_depth is not None else {})}


@contextlib.contextmanager
def _upstream(rpc_url: str | None, scenario: str | Path | None, book: Any) -> Iterator[tuple[str, AddressBook, str, int | None]]:
    if rpc_url is None:
        from defirisk.devnet import running_devnet

        with running_devnet(scenario) as dn:
            yield dn.rpc_url, load_book(book if book is not None else dn.book), f"devnet:{dn.scenario.name}", \
                dn.anvil.block_number()
        return
    if scenario is not None:
        raise InputError("--scenario is for the devnet; it cannot be combined with --rpc-url")
    from defirisk.redact import redact_url

    yield rpc_url, (load_book(book) if book is not None else None), redact_url(rpc_url), None


def validate(shocks: Mapping[str, float], *, rpc_url: str | None = None, block: int | None = None,
             scenario: str | Path | None = None, book: Any = None, mode: str = "auto",
             protocols: str | None = None, tolerances: Tolerances | None = None,
             max_rounds: int = DEFAULT_MAX_ROUNDS, liquidators: str = LIQUIDATORS,
             depth: DepthFile | None = None) -> ValidationReport:
    """Run one validation and return the side-by-side report (it never writes to the upstream).

    shocks: {asset: fraction}; rpc_url None = the devnet of `scenario` (default scenario if None);
    block: fork block (default: the devnet's built block / the upstream's latest); book: address
    book (name, file or mapping; default: the devnet's, or "mainnet" for chain id 1);
    mode: "devnet" (feed setters, minting), "real" (oracle code replacement, balance slots) or "auto";
    protocols: "aave-v3,morpho-blue" or a subset (default: every protocol with a reader).
    liquidators: only "all": the executor liquidates every position liquidatable on chain, whatever it
    costs, so the prediction is solved with liquidator economics off (`solve(..., liquidators="all")`).
    depth: off-chain depth (`defirisk.markets.depth.read_depth`): a second prediction with it routed beside
    the pools is added to the report; the comparison (and `agree`) stays on-chain only, because the fork
    can sell only into on-chain pools.
    """
    if liquidators != LIQUIDATORS:
        raise InputError(f"liquidators {liquidators!r}: the forked-chain validator executes every liquidation that is "
                         "possible on chain, whatever it costs the liquidator, so its prediction uses liquidators 'all'")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not shocks:
        raise InputError("give at least one shock, e.g. --shock WETH=0.25")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    from defirisk.snapshot_chain import take_snapshot

    with _upstream(rpc_url, scenario, book) as (up_url, the_book, label, default_block):
        seconds["upstream"] = time.perf_counter() - t0
        with Fork(up_url, block if block is not None else default_block) as fork:
            if the_book is None:
                if fork.chain_id != 1:
                    raise InputError(f"chain id {fork.chain_id} has no built-in address book; pass --book FILE")
                the_book = load_book("mainnet")
            seconds["fork"] = time.perf_counter() - t0 - seconds["upstream"]
            t = time.perf_counter()
            snap = take_snapshot(fork.url, fork.block, protocols, book=the_book, cache=False).snapshot
            seconds["snapshot"] = time.perf_counter() - t
            t = time.perf_counter()
            predicted = solve(snap, dict(shocks), mode="sequential", liquidators=LIQUIDATORS)
            seconds["predict"] = time.perf_counter() - t
            with_depth = None
            if depth is not None:
                t = time.perf_counter()
                with_depth = solve(apply_depth(snap, depth), dict(shocks), mode="sequential", liquidators=LIQUIDATORS)
                seconds["predict_with_depth"] = time.perf_counter() - t
            real = mode == "real" or (mode == "auto" and the_book.name != "devnet")
            oracle_mode, funding_mode = ("setcode", "storage") if real else ("setter", "mint")
            t = time.perf_counter()
            executed = execute(fork.chain, snap, the_book, shocks, oracle_mode=oracle_mode,
                               funding_mode=funding_mode, max_rounds=max_rounds)
            seconds["execute"] = time.perf_counter() - t
            comparison = compare(predicted, executed, tolerances)
            seconds["total"] = time.perf_counter() - t0
            return ValidationReport(label, int(fork.chain_id), int(fork.block), dict(shocks), snap, predicted,
                                    executed, comparison, oracle_mode, funding_mode, seconds, with_depth,
                                    depth.describe() if depth is not None else None)
