"""Our own validation contracts (fixtures/contracts/validate/*.sol): runtime code for anvil_setCode.

They are written over addresses on the fork, never deployed by a transaction, so they have no
constructor state: everything they read lives in storage slots the validator sets explicitly.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from defirisk.errors import ChainError

SOURCE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "contracts" / "validate"
# Where the swapper's code is written on the fork: keccak256("defirisk.validate.swapper")[:20].
SWAPPER_ADDRESS = "0x6979f9687786aa6317a4767dBF2548819ebc545F"


@lru_cache(maxsize=None)
def runtime_code(name: str) -> str:
    """0x runtime bytecode of one validation contract (compiled with solc-js, cached on disk)."""
    from defirisk.devnet.solc import compile_files

    paths = sorted(SOURCE_DIR.glob("*.sol"))
    if not paths:
        raise ChainError(f"no validation contract sources in {SOURCE_DIR}")
    compiled = compile_files(paths)
    if name not in compiled:
        raise ChainError(f"no validation contract {name} in {SOURCE_DIR}")
    return compiled[name].deployed_bytecode
# Impersonated actors (no private keys exist for them): keccak256 of their names, first 20 bytes.
LIQUIDATOR_ADDRESS = "0xF2C4a5D73660Ceb66D0c7D50065128B88204acad"  # "defirisk.validate.liquidator"
SHOCK_SELLER_ADDRESS = "0xE94DBAcaa1C1a5569b84f08C7ae8381025143d65"  # "defirisk.validate.shock-seller"
