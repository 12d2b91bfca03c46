"""History: one transaction per run, previous run by scope, figure diffs, and the cross-process lock."""
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from defirisk.errors import InputError
from defirisk.report.history import (HistoryLock, HistoryLockedError, diff_figures, list_runs, previous_run,
                                     record_run)


def _report(label="case", chain_id=None, block=None, cliffs=()):
    return {"generated_at": "2026-01-01T00:00:00Z",
            "source": {"kind": "snapshot", "label": label, "chain_id": chain_id, "block_number": block, "timestamp": None},
            "assets": {"WETH": {"cliffs": [dict(c) for c in cliffs]}}}


CLIFF = {"trigger_shock": 0.12, "trigger_price": 2640.0, "end_price_before": 2600.0, "end_price": 2100.0,
         "protocols": ["aave-v3", "morpho-blue"], "liquidated_collateral_usd": 1e6, "bad_debt_usd": 0.0}


def test_record_and_previous_and_diff(tmp_path):
    db = tmp_path / "h.sqlite"
    assert previous_run(db, "source:case") is None
    rid1 = record_run(db, _report(cliffs=[CLIFF]), {"a": 1.0, "b": 2.0, "gone": 5.0}, scope="source:case",
                      report_dir=None, alerts_fired=0)
    rid2 = record_run(db, _report(label="other"), {"a": 100.0}, scope="source:other", report_dir=None, alerts_fired=1)
    prev = previous_run(db, "source:case")
    assert prev.run_id == rid1 != rid2
    assert prev.figures == {"a": 1.0, "b": 2.0, "gone": 5.0}
    assert prev.cliffs[0]["protocols"] == ["aave-v3", "morpho-blue"] and prev.cliffs[0]["trigger_shock"] == 0.12
    rows = {r["key"]: r for r in diff_figures({"a": 1.5, "b": 2.0, "new": float("nan")}, prev)}
    assert rows["a"]["change"] == pytest.approx(0.5) and rows["a"]["relative_change"] == pytest.approx(0.5)
    assert rows["a"]["changed"] and not rows["b"]["changed"]
    assert rows["gone"]["current"] is None and rows["gone"]["changed"]
    assert rows["new"]["previous"] is None and rows["new"]["current"] is None and not rows["new"]["changed"]
    assert [r["id"] for r in list_runs(db)] == [rid2, rid1]
    assert diff_figures({"a": 1.0}, None) == []


def test_failed_record_leaves_no_trace(tmp_path):
    db = tmp_path / "h.sqlite"
    record_run(db, _report(), {"a": 1.0}, scope="s", report_dir=None, alerts_fired=0)
    bad_cliff = dict(CLIFF, trigger_shock=None)   # NOT NULL column: the insert fails after the run row
    with pytest.raises(sqlite3.IntegrityError):
        record_run(db, _report(cliffs=[bad_cliff]), {"a": 2.0}, scope="s", report_dir=None, alerts_fired=0)
    assert len(list_runs(db)) == 1
    assert previous_run(db, "s").figures == {"a": 1.0}
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM figures").fetchone()[0] == 1
    con.close()


def test_not_a_database(tmp_path):
    db = tmp_path / "h.sqlite"
    db.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(InputError, match="not a usable SQLite history"):
        previous_run(db, "s")


_HOLDER = textwrap.dedent("""
    import sys, time
    from defirisk.report.history import HistoryLock
    with HistoryLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold_lock(db, seconds):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_excludes_other_process(tmp_path):
    db = tmp_path / "h.sqlite"
    proc = _hold_lock(db, 30)
    try:
        with pytest.raises(HistoryLockedError, match=rf"locked by another report run \(pid {proc.pid}\)"):
            HistoryLock(db, timeout_s=0).acquire()
        t0 = time.monotonic()
        with pytest.raises(HistoryLockedError):
            HistoryLock(db, timeout_s=0.5, poll_s=0.1).acquire()
        assert time.monotonic() - t0 >= 0.5
    finally:
        proc.kill()
        proc.wait()
    # The kernel drops a dead holder's flock: no stale lock after a crash.
    with HistoryLock(db, timeout_s=0):
        pass


def test_lock_wait_succeeds_when_released(tmp_path):
    db = tmp_path / "h.sqlite"
    proc = _hold_lock(db, 0.6)
    try:
        t0 = time.monotonic()
        with HistoryLock(db, timeout_s=20, poll_s=0.05):
            waited = time.monotonic() - t0
        assert 0.2 < waited < 20
    finally:
        proc.wait(timeout=10)


def test_lock_bad_timeout(tmp_path):
    with pytest.raises(InputError):
        HistoryLock(tmp_path / "h", timeout_s=-1)
