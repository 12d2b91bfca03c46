"""Contract artifacts the devnet deploys: npm build outputs (Aave V3, Uniswap V2/V3), Morpho Blue
compiled from its npm sources with solc 0.8.19, and our own contracts in fixtures/contracts/devnet.

Library linking for Aave's Pool/PoolConfigurator is done here from the artifacts' linkReferences.
`fingerprint()` hashes every byte that goes on chain, so the devnet cache key changes whenever any
artifact or source does.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from defirisk.devnet import solc
from defirisk.errors import ChainError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = PROJECT_ROOT / "node_modules"
OWN_SOURCES = PROJECT_ROOT / "fixtures" / "contracts" / "devnet"
AAVE_ARTIFACTS = NODE_MODULES / "@aave" / "core-v3" / "artifacts" / "contracts"
MORPHO_SOURCE = "@morpho-org/morpho-blue/src/Morpho.sol"
# Morpho Blue's own build pins solc 0.8.19 with a very high optimizer run count.
MORPHO_SOLC = "0.8.19"
MORPHO_RUNS = 999999


@dataclass(frozen=True)
class Artifact:
    """Creation bytecode (unlinked placeholders allowed) + ABI + library link offsets (bytes)."""

    name: str
    abi: list
    bytecode: str  # 0x-prefixed creation code
    link_references: Mapping[str, Mapping[str, list]]

    def linked(self, libraries: Mapping[str, str]) -> str:
        """Creation code with every library placeholder replaced by its deployed address."""
        code = self.bytecode[2:]
        for _file, libs in self.link_references.items():
            for lib, refs in libs.items():
                if lib not in libraries:
                    raise ChainError(f"{self.name} needs library {lib} linked first")
                addr = libraries[lib].lower().removeprefix("0x")
                for ref in refs:
                    start = 2 * ref["start"]
                    code = code[:start] + addr + code[start + 2 * ref["length"]:]
        return "0x" + code

    @property
    def library_names(self) -> list[str]:
        return sorted({lib for libs in self.link_references.values() for lib in libs})


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ChainError(f"artifact {path} is missing; run `make setup` (npm install from the lock file)")
    return path


@lru_cache(maxsize=None)
def aave(name: str) -> Artifact:
    """A Hardhat artifact from @aave/core-v3, found by contract name."""
    matches = [p for p in AAVE_ARTIFACTS.rglob(f"{name}.json") if not p.name.endswith(".dbg.json")]
    if not matches:
        _require(AAVE_ARTIFACTS / f"{name}.json")
    if len(matches) > 1:
        raise ChainError(f"ambiguous Aave artifact {name}: {matches}")
    data = json.loads(matches[0].read_text())
    return Artifact(name, data["abi"], data["bytecode"], data.get("linkReferences", {}))


@lru_cache(maxsize=None)
def uniswap_v2(name: str) -> Artifact:
    data = json.loads(_require(NODE_MODULES / "@uniswap" / "v2-core" / "build" / f"{name}.json").read_text())
    code = data["bytecode"] if data["bytecode"].startswith("0x") else "0x" + data["bytecode"]
    return Artifact(name, data["abi"], code, {})


@lru_cache(maxsize=None)
def uniswap_v3(name: str) -> Artifact:
    path = NODE_MODULES / "@uniswap" / "v3-core" / "artifacts" / "contracts" / f"{name}.sol" / f"{name}.json"
    data = json.loads(_require(path).read_text())
    return Artifact(name, data["abi"], data["bytecode"], data.get("linkReferences", {}))


def _own_sources() -> dict[str, str]:
    files = sorted(OWN_SOURCES.glob("*.sol"))
    if not files:
        raise ChainError(f"no devnet contract sources in {OWN_SOURCES}")
    return {f"devnet/{p.name}": p.read_text() for p in files}


@lru_cache(maxsize=None)
def _own_compiled() -> dict:
    return solc.compile(_own_sources())


def own(name: str) -> Artifact:
    """One of our devnet contracts (fixtures/contracts/devnet/*.sol), compiled with solc 0.8.37."""
    compiled = _own_compiled()
    if name not in compiled:
        raise ChainError(f"no devnet contract named {name} in {OWN_SOURCES}")
    c = compiled[name]
    return Artifact(name, c.abi, c.bytecode, {})


@lru_cache(maxsize=None)
def morpho() -> Artifact:
    """Morpho Blue compiled from the npm package's sources (imports resolve inside node_modules)."""
    source = _require(NODE_MODULES / MORPHO_SOURCE).read_text()
    compiled = solc.compile({MORPHO_SOURCE: source}, version=MORPHO_SOLC, optimize_runs=MORPHO_RUNS)
    c = compiled[f"{MORPHO_SOURCE}:Morpho"]
    return Artifact("Morpho", c.abi, c.bytecode, {})


def _hash_tree(h: "hashlib._Hash", root: Path, pattern: str) -> None:
    for p in sorted(root.rglob(pattern)):
        if p.is_file() and not p.name.endswith(".dbg.json"):
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())


@lru_cache(maxsize=None)
def fingerprint() -> str:
    """sha256 over every artifact and source the devnet deploys (npm builds + our Solidity)."""
    h = hashlib.sha256()
    _hash_tree(h, AAVE_ARTIFACTS / "protocol", "*.json")
    _hash_tree(h, AAVE_ARTIFACTS / "misc", "*.json")
    _hash_tree(h, NODE_MODULES / "@uniswap" / "v2-core" / "build", "UniswapV2*.json")
    _hash_tree(h, NODE_MODULES / "@uniswap" / "v3-core" / "artifacts" / "contracts", "UniswapV3*.json")
    _hash_tree(h, NODE_MODULES / "@morpho-org" / "morpho-blue" / "src", "*.sol")
    _hash_tree(h, OWN_SOURCES, "*.sol")
    multicall = PROJECT_ROOT / "fixtures" / "contracts" / "Multicall3.sol"
    if multicall.is_file():
        h.update(hashlib.sha256(multicall.read_bytes()).digest())
    return h.hexdigest()
