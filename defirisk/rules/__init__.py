"""Liquidation rules, one module per protocol family, and the registry keyed by the snapshot's
protocol name. Pure numpy; no chain access."""
from __future__ import annotations

from defirisk.errors import InputError
from defirisk.rules.aave_v3 import AaveV3
from defirisk.rules.base import BookState, Events, Rule, Step
from defirisk.rules.compound_v3 import CompoundV3
from defirisk.rules.liquity import Liquity
from defirisk.rules.maker import Maker
from defirisk.rules.morpho_blue import MorphoBlue, incentive_factor

REGISTRY: dict[str, type[Rule]] = {
    "aave-v3": AaveV3,
    "compound-v3": CompoundV3,
    "maker": Maker,
    "liquity": Liquity,
    "morpho-blue": MorphoBlue,
}


def rule_for(market, symbols, prices0=None) -> Rule:
    """The rule of `market`; `prices0` = the snapshot's USD prices in `symbols` order (needed by rules
    that anchor to a protocol's own oracle, e.g. Morpho markets with `params.oracle_price`)."""
    try:
        cls = REGISTRY[market.protocol]
    except KeyError:
        raise InputError(f"market {market.market}: unknown protocol {market.protocol!r} (known: {', '.join(REGISTRY)})") from None
    return cls(market, tuple(symbols), prices0)


__all__ = ["REGISTRY", "rule_for", "Rule", "BookState", "Events", "Step", "incentive_factor"]
