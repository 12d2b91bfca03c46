"""Parsing shared by several commands (kept here so every command reads options the same way)."""
from __future__ import annotations

from typing import Iterable

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
