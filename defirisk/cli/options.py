"""Parsing shared by several commands (kept here so every command reads options the same way)."""
from __future__ import annotations

from typing import Iterable

import typer

from defirisk.errors import InputError


def parse_assignments(items: Iterable[str], option: str, value_name: str = "NUMBER",
                      *, required: bool = False) -> dict[str, float]:
    """`["WETH=0.2", "WBTC=0.1"]` -> {"WETH": 0.2, "WBTC": 0.1}; errors name the option and item."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not sep or not name:
            raise InputError(f"{option} {item!r}: expected ASSET={value_name}, e.g. WETH=0.25")
        try:
            out[name] = float(val)
        except ValueError:
            raise InputError(f"{option} {item!r}: {val!r} is not a number") from None
    if required and not out:
        raise InputError(f"give at least one {option} ASSET={value_name}, e.g. {option} WETH=0.25")
    return out


# Options several commands share, one definition each (same flag, same help everywhere).
def gas_usd_option():
    return typer.Option(None, "--gas-usd", help="Gas per liquidation call in USD (default: 20 gwei x the protocol's "
                        "measured gas x the snapshot's WETH price).")


def min_profit_usd_option():
    return typer.Option(None, "--min-profit-usd", help="Profit a liquidator requires beyond gas, USD per call (default 0).")


def recovery_option():
    return typer.Option([], "--recovery", help="ASSET=SECONDS: half-life of the price impact between blocks "
                        "(arbitrage refilling the pools) in sequential solves and curves, repeatable; default none.")
