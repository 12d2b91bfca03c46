"""`defirisk validate`: execute a predicted cascade on an anvil fork and compare (thin wrapper)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from defirisk.cli import app
from defirisk.cli.options import parse_assignments
from defirisk.errors import ChainError, ConvergenceError, InputError
from defirisk.redact import scrub


@app.command("validate")
def validate_cmd(
    shock: List[str] = typer.Option([], "--shock", help="ASSET=FRACTION price shock, repeatable (WETH=0.25 = -25%)."),
    rpc_url: Optional[str] = typer.Option(None, "--rpc-url", help="Node to fork (only read, never written). "
                                          "Default: the devnet of --scenario."),
    block: Optional[int] = typer.Option(None, "--block", help="Block to fork at (default: latest / the devnet's built block)."),
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="Devnet scenario file (without --rpc-url)."),
    book: Optional[str] = typer.Option(None, "--book", help="Address book: a built-in name (mainnet) or a JSON file."),
    protocols: Optional[str] = typer.Option(None, "--protocols", help="Limit to protocols, e.g. aave-v3,morpho-blue."),
    mode: str = typer.Option("auto", "--mode", help="auto | devnet (feed setters, minting) | real (oracle code "
                             "replacement, token balance slots)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    liquidators: str = typer.Option("all", "--liquidators", help="Only 'all': the fork's executor liquidates every "
                                    "position liquidatable on chain whatever it costs, so the prediction does too."),
    depth: Optional[Path] = typer.Option(None, "--depth", help="Off-chain depth, CSV asset,usd_sold,impact: adds a "
                                         "second prediction with it routed beside the pools. Shown, not compared: the "
                                         "fork can sell only into on-chain pools (docs/validation.md)."),
) -> None:
    """Fork the chain, predict the cascade (sequential, liquidators 'all'), execute it on the fork with the
    protocols' own code, and compare side by side. Exit 0 = agree within tolerance, 1 = disagree, 2 = bad input or
    the chain could not be used.

    Examples:

      defirisk validate --scenario fixtures/scenarios/small.yaml --shock WETH=0.25

      defirisk validate --rpc-url $ETH_RPC_URL --block 21000000 --protocols morpho-blue --shock WETH=0.3 --json
    """
    from defirisk.markets.depth import read_depth
    from defirisk.validate.render import render_text
    from defirisk.validate.run import validate

    try:
        shocks = parse_assignments(shock, "--shock", "FRACTION", required=True)
        depth_file = read_depth(depth) if depth is not None else None   # a bad file fails before any fork
        report = validate(shocks, rpc_url=rpc_url, block=block, scenario=scenario, book=book, mode=mode,
                          protocols=protocols, liquidators=liquidators, depth=depth_file)
    except (InputError, ChainError) as exc:
        typer.echo(f"error: {scrub(str(exc), rpc_url) if rpc_url else exc}", err=True)
        raise typer.Exit(2)
    except ConvergenceError as exc:
        typer.echo(f"error: did not converge: {exc}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), allow_nan=False, default=str))
    else:
        typer.echo(render_text(report))
    raise typer.Exit(0 if report.agree else 1)
