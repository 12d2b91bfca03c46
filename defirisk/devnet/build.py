"""Build a devnet from a scenario, cache it as anvil state, and start it again from the cache.

Cache: .cache/defirisk/devnet/<key>/ with state.json (anvil_dumpState), book.json (address book),
plan.json (every intended position) and meta.json. key = sha256 of the scenario file's bytes, the
fingerprint of every artifact/source deployed, the devnet package's own Python sources (which decide
what is deployed and which positions are opened), the devnet version and the anvil version, so any
change to what would be deployed makes a new build. A loaded state is checked (block number, code at the
Pool/Morpho) before it is handed out, and its clock is set back to the build time so no interest
accrues between the build and the load.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from defirisk.chain.anvil import Anvil, find_anvil
from defirisk.devnet import artifacts
from defirisk.devnet.deploy import (
    Deployment, deploy_aave, deploy_morpho, deploy_tokens_and_feeds, deploy_uniswap_v2, deploy_uniswap_v3,
    install_multicall, set_aave_ltvs,
)
from defirisk.devnet.population import Plan, plan_positions
from defirisk.devnet.positions import liquidity_accounts, open_positions
from defirisk.devnet.scenario import Scenario, load_scenario
from defirisk.devnet.tx import DEPLOYER, LIQUIDATOR, Bulk, Chain
from defirisk.errors import ChainError

# Bump when the build procedure changes in a way neither the artifacts' fingerprint nor the devnet
# package's Python sources can see (e.g. a behaviour change in defirisk/chain used while building).
DEVNET_VERSION = "1"
DEVNET_PACKAGE = Path(__file__).resolve().parent
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_ROOT = PROJECT_ROOT / ".cache" / "defirisk" / "devnet"
SCENARIO_DIR = PROJECT_ROOT / "fixtures" / "scenarios"
DEFAULT_SCENARIO = SCENARIO_DIR / "default.yaml"
CHAIN_ID = 31337
# Large blocks: a build mines thousands of transactions per block; readers' multicalls get room too.
BLOCK_GAS_LIMIT = 1_000_000_000


@dataclass(frozen=True)
class BuildInfo:
    key: str
    cache_dir: Path
    cold: bool  # True when built now, False when loaded from the cache
    seconds: float
    transactions: int
    aave_positions: int
    morpho_positions: int


def _anvil_version() -> str:
    try:
        out = subprocess.run([str(find_anvil()), "--version"], capture_output=True, text=True, timeout=20)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def sources_fingerprint(package_dir: Path = DEVNET_PACKAGE) -> str:
    """sha256 over the devnet package's .py files (relative path and bytes, sorted by path).

    The Python code (population, deploy, positions, tx, ...) decides what a build puts on chain, so
    an edit to it must not load a state cached by the old code. Read on every call (a few kB): a
    cached value would miss edits made while the process runs (tests, notebooks).
    """
    h = hashlib.sha256()
    for p in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in p.parts or not p.is_file():
            continue
        h.update(p.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def cache_key(scn: Scenario, *, package_dir: Path = DEVNET_PACKAGE) -> str:
    """Cache key of a scenario's build (module docstring); `package_dir` is for tests."""
    h = hashlib.sha256()
    for part in (DEVNET_VERSION, scn.raw_text, artifacts.fingerprint(), sources_fingerprint(package_dir),
                 _anvil_version()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:24]


def _anvil(port: int | None, load_state: Path | None, start_time: int | None) -> Anvil:
    extra = ("--timestamp", str(start_time)) if start_time is not None else ()
    return Anvil(port=port, load_state=load_state, chain_id=CHAIN_ID, gas_limit=BLOCK_GAS_LIMIT, extra_args=extra)


def plan_to_json(plan: Plan) -> dict:
    return {"aave": [asdict(p) for p in plan.aave], "morpho": [asdict(p) for p in plan.morpho],
            "aave_liquidity": dict(plan.aave_liquidity), "morpho_supply": dict(plan.morpho_supply)}


def _book(scn: Scenario, dep: Deployment, built_block: int, plan: Plan) -> dict:
    aave_lp, suppliers = liquidity_accounts(scn, plan)
    book = {
        "name": "devnet",
        "scenario": scn.name,
        "chain_id": dep.chain_id,
        "start_block": dep.start_block,
        "built_block": built_block,
        "multicall3": dep.multicall3,
        "tokens": dep.tokens,
        "feeds": dep.feeds,
        "keys": {"deployer": DEPLOYER, "liquidator": LIQUIDATOR},
        "accounts": {"aave_liquidity": aave_lp, "morpho_suppliers": suppliers},
    }
    if dep.aave:
        book["aave_v3"] = dep.aave
    if dep.morpho:
        book["morpho_blue"] = dep.morpho
    if dep.uniswap_v2:
        book["uniswap_v2"] = dep.uniswap_v2
    if dep.uniswap_v3:
        book["uniswap_v3"] = dep.uniswap_v3
    if dep.v3_router:
        book["uniswap_v3_router"] = dep.v3_router
    return book


def deploy_scenario(anvil: Anvil, scn: Scenario, plan: Plan, *, log=None) -> tuple[dict, int]:
    """Deploy everything and open all positions on a fresh `anvil`. Returns (book, transactions)."""
    say = log or (lambda msg: None)
    chain = Chain(anvil)
    dep = Deployment(chain_id=int(anvil.rpc("eth_chainId"), 16), start_block=anvil.block_number())
    t0 = time.monotonic()
    deploy_tokens_and_feeds(chain, scn, dep)
    install_multicall(chain, dep)
    if scn.aave is not None:
        deploy_aave(chain, scn, dep)
    if scn.morpho is not None:
        deploy_morpho(chain, scn, dep)
    deploy_uniswap_v2(chain, scn, dep)
    deploy_uniswap_v3(chain, scn, dep)
    say(f"contracts deployed ({chain.sent} txs, {time.monotonic() - t0:.1f} s)")
    t1 = time.monotonic()
    bulk = Bulk(anvil, BLOCK_GAS_LIMIT)
    open_positions(chain, scn, dep, plan, bulk)
    if scn.aave is not None:
        set_aave_ltvs(chain, scn, dep, opening=False)
    say(f"{len(plan.aave)} Aave + {len(plan.morpho)} Morpho positions opened "
        f"({bulk.mined_txs} txs, {time.monotonic() - t1:.1f} s)")
    anvil.mine(1)
    built = anvil.block_number()
    return _book(scn, dep, built, plan), chain.sent + bulk.mined_txs


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _verify_loaded(anvil: Anvil, book: dict) -> None:
    """A loaded state must be the one we built: right block height and contract code in place."""
    if anvil.block_number() < book["built_block"]:
        raise ChainError(f"loaded devnet is at block {anvil.block_number()}, expected >= {book['built_block']}")
    probes = [book["tokens"][next(iter(book["tokens"]))]["address"]]
    if "aave_v3" in book:
        probes.append(book["aave_v3"]["pool"])
    if "morpho_blue" in book:
        probes.append(book["morpho_blue"]["morpho"])
    for addr in probes:
        if anvil.rpc("eth_getCode", addr, "latest") in ("0x", "0x0", None):
            raise ChainError(f"loaded devnet has no code at {addr}; the cached state is broken")


@dataclass
class Devnet:
    """A running devnet: the anvil, its address book (dict and JSON file) and what was intended."""

    anvil: Anvil
    scenario: Scenario
    book: dict
    book_path: Path
    plan_path: Path
    info: BuildInfo

    @property
    def rpc_url(self) -> str:
        return self.anvil.url

    def plan(self) -> Plan:
        return plan_positions(self.scenario)


def _resolve(scenario: str | Path | Scenario | None) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    return load_scenario(scenario or DEFAULT_SCENARIO)


def start_devnet(scenario: str | Path | Scenario | None = None, *, port: int | None = None,
                 use_cache: bool = True, log=None) -> Devnet:
    """Start a devnet for `scenario` (default fixtures/scenarios/default.yaml): from the cache if it
    holds this exact build, else build it now (and cache it). The caller must `anvil.stop()`."""
    say = log or (lambda msg: None)
    t0 = time.monotonic()
    scn = _resolve(scenario)
    plan = plan_positions(scn)  # validates amounts/liquidity before anything is deployed
    key = cache_key(scn)
    cdir = CACHE_ROOT / key
    state, book_path, plan_path, meta_path = (cdir / n for n in ("state.json", "book.json", "plan.json", "meta.json"))
    if use_cache and state.is_file() and book_path.is_file() and meta_path.is_file():
        book = json.loads(book_path.read_text())
        meta = json.loads(meta_path.read_text())
        anvil = _anvil(port, state, None).start()
        try:
            anvil.rpc("anvil_setTime", meta["built_timestamp"] + 1)
            _verify_loaded(anvil, book)
        except BaseException:
            anvil.stop()
            raise
        info = BuildInfo(key, cdir, False, time.monotonic() - t0, meta["transactions"],
                         len(plan.aave), len(plan.morpho))
        say(f"devnet loaded from cache {cdir} in {info.seconds:.1f} s")
        return Devnet(anvil, scn, book, book_path, plan_path, info)

    anvil = _anvil(port, None, scn.start_time).start()
    try:
        say(f"building devnet for {scn.source or scn.name} (cache key {key})")
        book, n_tx = deploy_scenario(anvil, scn, plan, log=say)
        block = anvil.rpc("eth_getBlockByNumber", "latest", False)
        cdir.mkdir(parents=True, exist_ok=True)
        anvil.dump_state_to(state)
        _write_json(plan_path, plan_to_json(plan))
        _write_json(book_path, book)
        seconds = time.monotonic() - t0
        _write_json(meta_path, {"key": key, "scenario": scn.source, "built_block": book["built_block"],
                                "built_timestamp": int(block["timestamp"], 16), "transactions": n_tx,
                                "build_seconds": round(seconds, 1), "devnet_version": DEVNET_VERSION})
    except BaseException:
        anvil.stop()
        raise
    info = BuildInfo(key, cdir, True, seconds, n_tx, len(plan.aave), len(plan.morpho))
    say(f"devnet built in {seconds:.1f} s ({n_tx} transactions); cached in {cdir}")
    return Devnet(anvil, scn, book, book_path, plan_path, info)


def build_devnet(scenario: str | Path | Scenario | None = None, *, force: bool = False, log=None) -> BuildInfo:
    """Build (or confirm the cache of) a scenario's devnet and stop the chain again."""
    if force:
        scn = _resolve(scenario)
        shutil.rmtree(CACHE_ROOT / cache_key(scn), ignore_errors=True)
        scenario = scn
    dn = start_devnet(scenario, log=log)
    dn.anvil.stop()
    return dn.info


@contextlib.contextmanager
def running_devnet(scenario: str | Path | Scenario | None = None, *, port: int | None = None,
                   log=None) -> Iterator[Devnet]:
    """`with running_devnet() as dn:` -> dn.rpc_url, dn.anvil, dn.book, dn.book_path; always stopped."""
    dn = start_devnet(scenario, port=port, log=log)
    try:
        yield dn
    finally:
        dn.anvil.stop()
