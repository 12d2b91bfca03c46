"""`defirisk devnet build|up`: prepare and serve the local devnet (real Aave V3, Morpho Blue, Uniswap)."""
from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from defirisk.cli import app
from defirisk.errors import DefiriskError, InputError

devnet_app = typer.Typer(
    help="Local devnet with real protocol code, built from a scenario file and cached as anvil state.\n\n"
         "Example: defirisk devnet up --scenario fixtures/scenarios/small.yaml --port 8545",
    no_args_is_help=True,
)
app.add_typer(devnet_app, name="devnet")

_SCENARIO_HELP = "Scenario file (YAML/JSON; see docs/scenario-format.md). Default: fixtures/scenarios/default.yaml"


def _fail(exc: DefiriskError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2 if isinstance(exc, InputError) else 1)


def _log(msg: str) -> None:
    typer.echo(f"devnet: {msg}", err=True)


@devnet_app.command("build")
def build(
    scenario: Optional[Path] = typer.Option(None, "--scenario", "-s", help=_SCENARIO_HELP),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the cache holds this build."),
) -> None:
    """Build the devnet for a scenario and cache its state (a no-op when already cached).

    Example: defirisk devnet build --scenario fixtures/scenarios/default.yaml
    """
    from defirisk.devnet import build_devnet

    try:
        info = build_devnet(scenario, force=force, log=_log)
    except DefiriskError as exc:
        _fail(exc)
    how = "built" if info.cold else "already cached"
    typer.echo(f"devnet {how}: {info.aave_positions} Aave + {info.morpho_positions} Morpho positions, "
               f"{info.transactions} transactions, {info.seconds:.1f} s")
    typer.echo(f"cache: {info.cache_dir}")
    typer.echo(f"address book: {info.cache_dir / 'book.json'}")


@devnet_app.command("up")
def up(
    scenario: Optional[Path] = typer.Option(None, "--scenario", "-s", help=_SCENARIO_HELP),
    port: Optional[int] = typer.Option(None, "--port", "-p", help="Preferred RPC port (a busy port falls back to a free one)."),
    book_out: Optional[Path] = typer.Option(None, "--book-out", help="Also write the address book JSON here."),
) -> None:
    """Serve the devnet until Ctrl-C; prints the RPC URL and the address-book path.

    Example: defirisk devnet up --port 8545 --book-out devnet-book.json
    """
    from defirisk.devnet import start_devnet

    if port is not None and not 0 < port < 65536:
        _fail(InputError(f"--port {port} is not a TCP port"))
    try:
        dn = start_devnet(scenario, port=port, log=_log)
    except DefiriskError as exc:
        _fail(exc)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        book_path = dn.book_path
        if book_out is not None:
            book_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dn.book_path, book_out)
            book_path = book_out
        typer.echo(f"RPC URL: {dn.rpc_url}")
        typer.echo(f"address book: {book_path}")
        typer.echo(f"chain id {dn.book['chain_id']}, block {dn.anvil.block_number()}; "
                   f"{'built' if dn.info.cold else 'loaded from cache'} in {dn.info.seconds:.1f} s. Ctrl-C stops it.")
        while not stop.wait(0.5):
            if not dn.anvil.running:
                _fail(DefiriskError("anvil exited unexpectedly"))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        dn.anvil.stop()
        typer.echo("devnet stopped")
