"""Run local anvil chains: find the binary, start on a free loopback port, fork, load/dump state, stop.

Anvil comes from npm (`@foundry-rs/anvil`). We spawn the platform binary itself, never the node
wrapper: killing the wrapper leaves anvil running. Every anvil started here dies with its parent
(PR_SET_PDEATHSIG on Linux) and is stopped at interpreter exit, so a crashed test run leaves no orphan.

Disk: anvil keeps recent block states in memory and, past its in-memory limit, writes older ones to
`~/.foundry/anvil/tmp/anvil-state-*`, removed only on a graceful shutdown (one validation run of the
default devnet left 5 GB). Every anvil started here runs with `--max-persisted-states 0` (states past
the in-memory window are dropped, never written: nothing here reads that far back) and with
`--cache-path` inside a directory this module owns (`state_root()`), removed when the anvil stops and
swept at the next start if its anvil died without cleaning up. Forks never write Foundry's RPC
storage cache (`--no-storage-caching`): a validation fork is a one-off read at one block.
"""
from __future__ import annotations

import atexit
import ctypes
import gzip
import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Iterable, Sequence

from defirisk.errors import ChainError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_BINARY = "DEFIRISK_ANVIL"
ENV_STATE_ROOT = "DEFIRISK_ANVIL_STATE_DIR"
STARTUP_TIMEOUT_S = 30.0
# anvil refuses HTTP bodies above 2 MiB; callers chunk below this.
MAX_BODY_BYTES = 2 * 1024 * 1024

_INSTALL_HINT = (
    "anvil (Foundry) was not found. Install the project's npm packages with `make setup` "
    "(it runs `npm install`, which brings @foundry-rs/anvil), or point the environment variable "
    f"{ENV_BINARY} at an anvil binary, or put `anvil` on PATH."
)


def _platform_package() -> str:
    system = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"anvil-{system}-{arch}"


def find_anvil() -> Path:
    """Locate the anvil binary: $DEFIRISK_ANVIL, then the project's node_modules, then PATH."""
    override = os.environ.get(ENV_BINARY)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ChainError(f"{ENV_BINARY}={override} is not an executable file. {_INSTALL_HINT}")
        return path
    exe = "anvil.exe" if sys.platform == "win32" else "anvil"
    for root in dict.fromkeys((PROJECT_ROOT, Path.cwd())):
        candidate = root / "node_modules" / "@foundry-rs" / _platform_package() / "bin" / exe
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise ChainError(_INSTALL_HINT)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the caller retries if it is taken in between)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _is_loopback(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


_LIVE: "weakref.WeakSet[Anvil]" = weakref.WeakSet()


# -- the state directories this module owns -------------------------------------------------------
_OWNER_FILE = "owner"  # "<anvil pid> <process start time>" of the anvil that uses the directory
_UNCLAIMED_GRACE_S = 120.0  # a directory whose owner file was never written (killed between mkdir and spawn)


def state_root() -> Path:
    """Where anvils started here keep any on-disk state: $DEFIRISK_ANVIL_STATE_DIR, else a per-user
    directory under the system temporary directory. Everything below it belongs to defirisk."""
    override = os.environ.get(ENV_STATE_ROOT)
    if override:
        return Path(override)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"defirisk-anvil-{uid}"


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), or None if no such process or
    it has exited (a zombie nobody reaped, as under a container's init, is gone too).

    With the pid it identifies one process for good: a pid reused by a later process has another."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if sys.platform.startswith("linux"):
            return None
        try:  # no /proc: the pid alone (reuse is not detected)
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _owner_alive(directory: Path) -> bool:
    try:
        pid_text, start = (directory / _OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except FileNotFoundError:
        try:
            return time.time() - directory.stat().st_mtime < _UNCLAIMED_GRACE_S
        except OSError:
            return False
    except (OSError, ValueError):
        return False
    now = _process_start_time(pid)
    return now is not None and (now == start or now == "?")


def sweep_state_dirs(root: Path | None = None) -> list[Path]:
    """Remove state directories whose anvil is gone (killed before it could clean up); returns them."""
    root = root or state_root()
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry.is_dir() and entry.name.startswith("run-") and not _owner_alive(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _new_state_dir() -> Path:
    root = state_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    sweep_state_dirs(root)
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))


@atexit.register
def _stop_all() -> None:
    for node in list(_LIVE):
        node.stop()


class RpcClient:
    """Minimal JSON-RPC over one keep-alive HTTP connection (thread-safe by a lock).

    Used for anvil's own cheat codes and by the devnet; readers have their own pinned client.
    """

    def __init__(self, url: str, timeout: float = 120.0):
        if not url.startswith("http://"):
            raise ChainError("the anvil RPC client speaks plain http to a local node only")
        hostport = url[len("http://"):].rstrip("/")
        self._host, _, port = hostport.partition(":")
        self._port = int(port or 80)
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _post(self, body: bytes) -> Any:
        if len(body) > MAX_BODY_BYTES:
            raise ChainError(f"JSON-RPC request of {len(body)} bytes exceeds anvil's 2 MiB limit; chunk it")
        for attempt in (0, 1):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
                self._conn.request("POST", "/", body, {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise ChainError(f"anvil answered HTTP {resp.status}: {data[:200]!r}")
                return json.loads(data)
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                # A keep-alive connection closed by the server: reconnect once.
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt:
                    raise ChainError(f"anvil at 127.0.0.1:{self._port} did not answer: {exc}") from exc
        raise AssertionError("unreachable")

    def call(self, method: str, *params: Any) -> Any:
        with self._lock:
            reply = self._post(json.dumps(
                {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
            ).encode())
        if "error" in reply:
            raise ChainError(f"{method} failed: {reply['error'].get('message', reply['error'])}")
        return reply["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], *, raise_errors: bool = True) -> list[Any]:
        """Send calls as JSON-RPC batches below the body limit; results in call order.

        With raise_errors=False an errored call yields a ChainError instance in its slot.
        """
        results: list[Any] = []
        chunk: list[bytes] = []
        size = 2

        def flush() -> None:
            if not chunk:
                return
            with self._lock:
                replies = self._post(b"[" + b",".join(chunk) + b"]")
            by_id = {r["id"]: r for r in replies}
            first = next_id - len(chunk)
            for rid in range(first, next_id):
                reply = by_id[rid]
                if "error" in reply:
                    err = ChainError(f"call {rid - base_id} failed: {reply['error'].get('message')}")
                    if raise_errors:
                        raise err
                    results.append(err)
                else:
                    results.append(reply["result"])
            chunk.clear()

        base_id = next_id = 0
        for method, params in calls:
            item = json.dumps({"jsonrpc": "2.0", "id": next_id, "method": method, "params": list(params)}).encode()
            if chunk and (size + len(item) + 1 > MAX_BODY_BYTES // 2 or len(chunk) >= 2000):
                flush()
                size = 2
            chunk.append(item)
            size += len(item) + 1
            next_id += 1
        flush()
        return results

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Anvil:
    """One anvil process on 127.0.0.1. Use as a context manager; `stop()` is idempotent.

    port: a preferred port; if it is busy we take a free one (and say so on stderr), because a busy
    port should not stop a user's run.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        fork_url: str | None = None,
        fork_block: int | None = None,
        load_state: str | os.PathLike | None = None,
        chain_id: int | None = None,
        block_time: float | None = None,
        gas_limit: int | None = None,
        code_size_limit: int | None = None,
        accounts: int | None = None,
        extra_args: Iterable[str] = (),
        log_path: str | os.PathLike | None = None,
    ):
        self.requested_port = port
        self.fork_url = fork_url
        self.fork_block = fork_block
        self.load_state = Path(load_state) if load_state else None
        self.chain_id = chain_id
        self.block_time = block_time
        self.gas_limit = gas_limit
        self.code_size_limit = code_size_limit
        self.accounts = accounts
        self.extra_args = tuple(extra_args)
        self._log_path = Path(log_path) if log_path else None
        self._state_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self.port: int | None = None
        self._client: RpcClient | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def _argv(self, binary: Path, port: int) -> list[str]:
        argv = [str(binary), "--host", "127.0.0.1", "--port", str(port),
                "--max-persisted-states", "0"]
        if self._state_dir is not None:
            argv += ["--cache-path", str(self._state_dir)]
        if self.fork_url:
            argv += ["--fork-url", self.fork_url]
            if self.fork_block is not None:
                argv += ["--fork-block-number", str(int(self.fork_block))]
            # Foundry caches fork reads under ~/.foundry/cache/rpc by (chain id, block) and never
            # removes them; local chains also all share chain id 31337, so a cached read from
            # another devnet would be silently wrong.
            argv += ["--no-storage-caching"]
        if self.load_state:
            argv += ["--load-state", str(self.load_state)]
        if self.chain_id is not None:
            argv += ["--chain-id", str(int(self.chain_id))]
        if self.block_time is not None:
            argv += ["--block-time", str(self.block_time)]
        if self.gas_limit is not None:
            argv += ["--gas-limit", str(int(self.gas_limit))]
        if self.code_size_limit is not None:
            argv += ["--code-size-limit", str(int(self.code_size_limit))]
        if self.accounts is not None:
            argv += ["--accounts", str(int(self.accounts))]
        return argv + list(self.extra_args)

    def start(self) -> "Anvil":
        if self._proc is not None:
            return self
        binary = find_anvil()
        if self.load_state and not self.load_state.is_file():
            raise ChainError(f"anvil state file {self.load_state} does not exist")
        port = self.requested_port
        if port is not None and not _port_is_free(port):
            print(f"defirisk: port {port} is busy; starting anvil on a free port instead", file=sys.stderr)
            port = None
        last_error = ""
        for _ in range(5):  # a free port can be taken between the probe and anvil's bind
            use_port = port or free_port()
            self._open_log()
            self._state_dir = _new_state_dir()
            self._proc = subprocess.Popen(
                self._argv(binary, use_port),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            self._claim_state_dir()
            self.port = use_port
            self._client = RpcClient(self.url)
            _LIVE.add(self)
            try:
                self._wait_ready()
                return self
            except ChainError as exc:
                last_error = str(exc)
                self.stop()
                port = None
        raise ChainError(f"anvil did not start: {last_error}")

    def _claim_state_dir(self) -> None:
        """Record which anvil owns the state directory, so a later sweep knows when it is gone."""
        start = _process_start_time(self._proc.pid) or "?"
        tmp = self._state_dir / (_OWNER_FILE + ".tmp")
        tmp.write_text(f"{self._proc.pid} {start}")
        os.replace(tmp, self._state_dir / _OWNER_FILE)

    @property
    def state_dir(self) -> Path | None:
        """The directory this anvil may keep on-disk state in (None once stopped)."""
        return self._state_dir

    def _open_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
        if self._log_path:
            self._log_file = open(self._log_path, "ab")
        else:
            self._log_file = tempfile.TemporaryFile()

    def log_tail(self, n_bytes: int = 2000) -> str:
        if self._log_file is None:
            return ""
        try:
            self._log_file.flush()
            self._log_file.seek(0, os.SEEK_END)
            size = self._log_file.tell()
            self._log_file.seek(max(0, size - n_bytes))
            return self._log_file.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def _wait_ready(self) -> None:
        # Forking a remote node or loading a large state takes longer than a bare start.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S * (4 if (self.fork_url or self.load_state) else 1)
        delay = 0.02
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ChainError(f"anvil exited with code {self._proc.returncode}: {self.log_tail()[-600:]}")
            try:
                self._client.call("eth_chainId")
                return
            except ChainError:
                time.sleep(delay)
                delay = min(delay * 1.5, 0.25)
        raise ChainError(f"anvil did not answer on port {self.port} within the start-up timeout")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop anvil (SIGTERM, then SIGKILL) and wait for it; safe to call more than once."""
        proc, self._proc = self._proc, None
        if self._client is not None:
            self._client.close()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
        _LIVE.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> "Anvil":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- RPC -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise ChainError("anvil is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> RpcClient:
        if self._client is None:
            raise ChainError("anvil is not started")
        return self._client

    def rpc(self, method: str, *params: Any) -> Any:
        return self.client.call(method, *params)

    def rpc_batch(self, calls: Sequence[tuple[str, Sequence[Any]]], **kw: Any) -> list[Any]:
        return self.client.batch(calls, **kw)

    # -- cheat codes -----------------------------------------------------------------------------
    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: str) -> None:
        # evm_snapshot ids are single-use: a revert consumes the id.
        if not self.rpc("evm_revert", snapshot_id):
            raise ChainError(f"evm_revert({snapshot_id}) failed")

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", enabled)

    def set_code(self, address: str, code_hex: str) -> None:
        self.rpc("anvil_setCode", address, code_hex if code_hex.startswith("0x") else "0x" + code_hex)

    def set_storage(self, address: str, slot: int, value: int) -> None:
        self.rpc("anvil_setStorageAt", address, "0x" + slot.to_bytes(32, "big").hex(),
                 "0x" + (value % 2**256).to_bytes(32, "big").hex())

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", address, hex(wei))

    def impersonate(self, address: str) -> None:
        self.rpc("anvil_impersonateAccount", address)

    def dump_state(self) -> bytes:
        """The chain state as anvil's JSON document (uncompressed), loadable with --load-state."""
        raw = bytes.fromhex(self.rpc("anvil_dumpState")[2:])
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw

    def dump_state_to(self, path: str | os.PathLike) -> Path:
        """Write the state to `path` atomically (a reader never sees a half-written file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_bytes(self.dump_state())
        os.replace(tmp, path)
        return path

    # -- transactions (local anvil only: accounts are unlocked or impersonated) -------------------
    def wait_receipt(self, tx_hash: str, timeout: float = 60.0) -> dict:
        """Poll until the transaction is mined; anvil answers eth_sendTransaction before mining."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            receipt = self.rpc("eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() > deadline:
                raise ChainError(f"transaction {tx_hash} was not mined within {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def send_transaction(self, tx: dict, *, check: bool = True) -> dict:
        """Send from an unlocked/impersonated account, wait for the receipt, raise if it reverted."""
        receipt = self.wait_receipt(self.rpc("eth_sendTransaction", tx))
        if check and receipt.get("status") != "0x1":
            raise ChainError(f"transaction from {tx.get('from')} to {tx.get('to')} reverted "
                             f"(hash {receipt.get('transactionHash')})")
        return receipt
