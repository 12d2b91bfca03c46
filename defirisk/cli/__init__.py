"""The typer CLI. Each command group lives in its own module and only parses, calls the library and
renders; business logic stays in the library packages."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="defirisk",
    help="Liquidation-cascade risk for DeFi lending: snapshot a chain, solve cascades, report cliffs.",
    no_args_is_help=True,
    add_completion=False,
)

# Command modules register themselves on `app` when imported. A module that does not exist yet is
# simply absent from the CLI; any other import error is a real bug and is raised.
_COMMAND_MODULES = ("devnet", "snapshot", "cascade", "validate", "report")


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"defirisk.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"defirisk.cli.{name}":
                raise


def main() -> None:
    _load_commands()
    app()
