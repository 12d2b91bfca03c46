"""Compile Solidity offline with solc-js from the project's npm packages (standard-JSON interface).

Two compilers are installed by package.json: `solc` (0.8.37, for our own contracts) and
`solc-0.8.19` (an npm alias; Morpho Blue pins `pragma solidity 0.8.19`). Results are cached on disk
by a hash of the inputs, so a devnet rebuild does not pay for compilation again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from defirisk.errors import ChainError, InputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = PROJECT_ROOT / ".cache" / "defirisk" / "solc"
PACKAGES = {"0.8.37": "solc", "0.8.19": "solc-0.8.19"}

# Reads the standard-JSON input on stdin, resolves imports from the given include paths, prints output.
_DRIVER = r"""
const fs = require('fs'); const path = require('path');
const solc = require(process.argv[1]);
const includes = JSON.parse(process.argv[2]);
const input = fs.readFileSync(0, 'utf8');
function findImports(p) {
  for (const base of includes) {
    const full = path.join(base, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: 'not found: ' + p };
}
process.stdout.write(solc.compile(input, { import: findImports }));
"""


@dataclass(frozen=True)
class CompiledContract:
    name: str
    source_path: str
    abi: list
    bytecode: str  # creation code, 0x-prefixed
    deployed_bytecode: str  # runtime code, 0x-prefixed


def _node() -> str:
    node = shutil.which("node")
    if not node:
        raise ChainError("node is required to run solc-js; install Node.js 18+ and run `make setup`")
    return node


def compile(  # noqa: A001 - the natural name for this module's one verb
    sources: Mapping[str, str],
    *,
    version: str = "0.8.37",
    optimize_runs: int | None = 200,
    via_ir: bool = False,
    remappings: Iterable[str] = (),
    include_paths: Iterable[str | os.PathLike] = (),
    evm_version: str | None = None,
) -> dict[str, CompiledContract]:
    """Compile `sources` (virtual path -> source text); imports resolve against include_paths.

    Returns contracts keyed by "path:Name", and also by bare "Name" where that name is unique.
    Raises InputError with solc's messages when compilation fails.
    """
    if version not in PACKAGES:
        raise InputError(f"solc version {version!r} is not installed; choose one of {sorted(PACKAGES)}")
    includes = [str(Path(p).resolve()) for p in include_paths] + [str(PROJECT_ROOT / "node_modules")]
    settings: dict = {
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        "remappings": list(remappings),
    }
    if optimize_runs is not None:
        settings["optimizer"] = {"enabled": True, "runs": optimize_runs}
    if via_ir:
        settings["viaIR"] = True
    if evm_version:
        settings["evmVersion"] = evm_version
    std_input = json.dumps({
        "language": "Solidity",
        "sources": {path: {"content": text} for path, text in sorted(sources.items())},
        "settings": settings,
    }, sort_keys=True)

    key = hashlib.sha256((version + "\0" + std_input + "\0" + json.dumps(includes)).encode()).hexdigest()
    cached = CACHE_DIR / f"{key}.json"
    if cached.is_file():
        output = json.loads(cached.read_text())
    else:
        proc = subprocess.run(
            [_node(), "-e", _DRIVER, PACKAGES[version], json.dumps(includes)],
            input=std_input, capture_output=True, text=True, cwd=PROJECT_ROOT,
        )
        if proc.returncode != 0:
            raise ChainError(f"solc-js {version} failed to run: {proc.stderr.strip()[-800:]}")
        output = json.loads(proc.stdout)
        errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
        if errors:
            msg = "\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors)
            raise InputError(f"Solidity compilation failed:\n{msg}")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(output))
        os.replace(tmp, cached)

    result: dict[str, CompiledContract] = {}
    names: dict[str, list[str]] = {}
    for path, contracts in output.get("contracts", {}).items():
        for name, data in contracts.items():
            evm = data.get("evm", {})
            cc = CompiledContract(
                name=name,
                source_path=path,
                abi=data.get("abi", []),
                bytecode="0x" + evm.get("bytecode", {}).get("object", ""),
                deployed_bytecode="0x" + evm.get("deployedBytecode", {}).get("object", ""),
            )
            result[f"{path}:{name}"] = cc
            names.setdefault(name, []).append(f"{path}:{name}")
    for name, keys in names.items():
        if len(keys) == 1:
            result[name] = result[keys[0]]
    return result


def compile_files(paths: Iterable[str | os.PathLike], **kwargs) -> dict[str, CompiledContract]:
    """Compile Solidity files from disk; their directories are added to the import paths."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise InputError(f"Solidity source {p} does not exist")
    sources = {p.name: p.read_text() for p in paths}
    include = list(dict.fromkeys([p.parent for p in paths])) + list(kwargs.pop("include_paths", ()))
    return compile(sources, include_paths=include, **kwargs)
