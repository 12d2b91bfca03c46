"""`defirisk snapshot`: read a chain at one block into a snapshot directory (thin: parse, call
defirisk.snapshot_chain.take_snapshot, print)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from defirisk.cli import app
from defirisk.cli.progress import StageProgress
from defirisk.errors import DefiriskError
from defirisk.redact import scrub


@app.command("snapshot")
def snapshot_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Snapshot directory to write (replaced atomically)."),
    rpc_url: Optional[str] = typer.Option(None, "--rpc-url", help="Node to read. Default: the local devnet "
                                          "(started from its cached state). Secrets in the URL are redacted."),
    block: Optional[int] = typer.Option(None, "--block", help="Block number to pin (default: latest)."),
    protocols: str = typer.Option("aave-v3,morpho-blue", "--protocols", help="Comma-separated readers."),
    book: Optional[str] = typer.Option(None, "--book", help="Address book: 'mainnet' or a JSON/YAML file. "
                                       "Default: mainnet for chain id 1; the devnet's own book without --rpc-url."),
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="Devnet scenario when no --rpc-url is given."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use or update the account-discovery cache."),
    positions_format: str = typer.Option("auto", "--positions-format", help="csv, parquet or auto."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Snapshot Aave V3 and Morpho Blue positions, parameters, oracle prices and DEX depth at one block.

    Exit code 0 on success, 2 on any error (unreachable RPC, wrong chain id, no contract or the wrong
    interface at an address, bad input).

    Example:
      defirisk snapshot --rpc-url http://127.0.0.1:8545 --book book.json --block 120 --out snaps/b120
    """
    from defirisk.snapshot_chain import take_snapshot

    try:
        run = take_snapshot(rpc_url, block, protocols, out, book, StageProgress(quiet), cache=not no_cache,
                            positions_format=positions_format, scenario=scenario)
    except DefiriskError as exc:
        typer.echo(f"error: {scrub(str(exc), rpc_url)}", err=True)
        raise typer.Exit(2)
    except Exception as exc:  # a library bug must still not print the raw URL
        typer.echo(f"error: unexpected {type(exc).__name__}: {scrub(str(exc), rpc_url)}", err=True)
        raise typer.Exit(2)
    summary = {"out": str(run.path), "block_number": run.block.number, "block_hash": run.block.hash,
               "accounts": run.accounts, "positions": len(run.snapshot.positions),
               "assets": len(run.snapshot.assets), "markets": len(run.snapshot.markets),
               "seconds": round(run.seconds.get("total", 0.0), 3)}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    accts = ", ".join(f"{k} {v}" for k, v in run.accounts.items())
    typer.echo(f"snapshot of block {run.block.number} ({run.block.hash}) written to {run.path}")
    typer.echo(f"accounts with debt: {accts or 'none'}; {summary['positions']} position rows, "
               f"{summary['assets']} assets, {summary['markets']} markets in {summary['seconds']:.2f} s")
