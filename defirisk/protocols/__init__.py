"""Chain readers, one module per protocol family, keyed by the snapshot's protocol name.

The liquidation rules live in defirisk/rules (pure, no web3); these modules only read chains.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# snapshot protocol name -> reader module (imported lazily: readers pull in the chain layer).
READERS = {"aave-v3": "defirisk.protocols.aave_v3", "morpho-blue": "defirisk.protocols.morpho_blue"}


def reader(protocol: str) -> ModuleType:
    from defirisk.errors import InputError

    try:
        return importlib.import_module(READERS[protocol])
    except KeyError:
        raise InputError(f"no chain reader for protocol {protocol!r} (readers: {', '.join(READERS)})") from None
