"""Suite-wide fixtures. Area fixtures live in tests/<area>/conftest.py."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs a fixed set of generated examples so a run is reproducible; local runs keep exploring new
# ones (what they find is pinned with @example).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Every anvil of the session (in this process or in CLI subprocesses, which inherit the environment)
# keeps its state directory under one root of the session's own, so the end of the session can
# check that none is left behind, on disk or as a process.
SESSION_STATE_ROOT = Path(tempfile.mkdtemp(prefix="defirisk-test-anvil-"))
os.environ["DEFIRISK_ANVIL_STATE_DIR"] = str(SESSION_STATE_ROOT)
_FOUNDRY = Path.home() / ".foundry"


def _foundry_entries() -> set[str]:
    """What anvil may leave in ~/.foundry: persisted states and fork RPC caches."""
    return {str(p) for sub in ("anvil/tmp", "cache/rpc") if (_FOUNDRY / sub).is_dir()
            for p in (_FOUNDRY / sub).iterdir()}


_FOUNDRY_AT_START = _foundry_entries()

from defirisk.chain.anvil import Anvil

SMALL_SCENARIO = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "small.yaml"


@pytest.fixture(scope="session")
def anvil_session():
    """One bare anvil for the whole session; tests isolate with `anvil` (snapshot/revert)."""
    with Anvil() as node:
        yield node


@pytest.fixture
def anvil(anvil_session):
    """The session anvil, reverted to its state before the test when the test ends."""
    snap = anvil_session.snapshot()
    yield anvil_session
    anvil_session.revert(snap)


@pytest.fixture(scope="session")
def small_devnet():
    """The small test scenario's devnet (built once, then loaded from the state cache), shared by
    every area's tests; area fixtures wrap it in evm_snapshot/evm_revert."""
    from defirisk.devnet import running_devnet

    with running_devnet(SMALL_SCENARIO) as dn:
        yield dn


def _anvils_of_this_session() -> list[str]:
    """pid and command line of live processes started with a --cache-path under the session root."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(a.startswith(str(SESSION_STATE_ROOT).encode()) for a in argv):
            found.append(f"pid {proc.name}: {b' '.join(argv[:3]).decode(errors='replace')}")
    return found


def pytest_sessionfinish(session, exitstatus):
    """`make test` leaves no anvil process, no state directory and nothing new in ~/.foundry."""
    import time

    deadline = time.monotonic() + 15  # anvils told to stop by a subprocess's exit get a moment
    while _anvils_of_this_session() and time.monotonic() < deadline:
        time.sleep(0.2)
    leaks = [f"anvil still running: {p}" for p in _anvils_of_this_session()]
    leaks += [f"state directory left behind: {p}" for p in SESSION_STATE_ROOT.iterdir()]
    leaks += [f"anvil wrote to ~/.foundry: {p}" for p in sorted(_foundry_entries() - _FOUNDRY_AT_START)]
    shutil.rmtree(SESSION_STATE_ROOT, ignore_errors=True)
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "resources leaked by the test session", red=True)
            for line in leaks:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
