"""Run history in SQLite: every run's key figures and cliffs, and the change since the previous run.

Two guards keep scheduled runs from corrupting it:

* `HistoryLock` — an exclusive `fcntl.flock` on `<db>.lock`, held for the whole run (read previous
  run -> build -> write report -> record run), so two overlapping cron runs cannot interleave.
  flock is released by the kernel when the process dies, so a crashed run never leaves a stale lock.
* `record_run` writes a run in ONE transaction (`BEGIN IMMEDIATE` ... `COMMIT`): a failure part way
  leaves no trace of the run.

"Previous run" means the latest run with the same scope: the chain id when known (so successive
snapshots of one chain compare), else the redacted source label.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from defirisk.errors import DefiriskError, InputError

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    scope           TEXT NOT NULL,
    generated_at    TEXT NOT NULL,
    source_kind     TEXT NOT NULL,
    source_label    TEXT NOT NULL,
    chain_id        INTEGER,
    block_number    INTEGER,
    block_timestamp INTEGER,
    report_dir      TEXT,
    alerts_fired    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_scope ON runs (scope, id);
CREATE TABLE IF NOT EXISTS figures (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  REAL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS cliffs (
    run_id                    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    asset                     TEXT NOT NULL,
    trigger_shock             REAL NOT NULL,
    trigger_price             REAL NOT NULL,
    end_price_before          REAL,
    end_price                 REAL,
    protocols                 TEXT NOT NULL,
    liquidated_collateral_usd REAL,
    bad_debt_usd              REAL
);
"""


class HistoryLockedError(DefiriskError):
    """Another run holds the history lock (an overlapping scheduled run)."""


class HistoryLock:
    """Exclusive, process-wide lock on `<db>.lock`; waits up to `timeout_s` seconds (0 = do not wait)."""

    def __init__(self, db_path: str | os.PathLike, timeout_s: float = 0.0, poll_s: float = 0.2):
        if timeout_s < 0 or not math.isfinite(timeout_s):
            raise InputError(f"history lock timeout must be a finite number >= 0, got {timeout_s}")
        self.path = Path(f"{os.fspath(db_path)}.lock")
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._fd: int | None = None

    def acquire(self) -> "HistoryLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise HistoryLockedError(
                        f"history {self.path.with_suffix('')} is locked by another report run{holder}; "
                        f"waited {self.timeout_s:g} s (use --lock-wait to wait longer)") from None
                time.sleep(self.poll_s)
        # Record the holder for the message another run will print; informational only.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "HistoryLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@dataclass(frozen=True)
class PreviousRun:
    """What the report needs from the last run of the same scope."""

    run_id: int
    generated_at: str
    block_number: int | None
    block_timestamp: int | None
    figures: Mapping[str, float | None]
    cliffs: tuple[Mapping[str, Any], ...] = field(default=())


def _connect(db_path: str | os.PathLike) -> sqlite3.Connection:
    path = Path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so one run is exactly one transaction.
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        for stmt in filter(str.strip, _DDL.split(";")):
            conn.execute(stmt)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise InputError(f"history {path}: schema version {row[0]} is not {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        raise InputError(f"history {path}: not a usable SQLite history database ({exc})") from None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        raise
    return conn


def previous_run(db_path: str | os.PathLike, scope: str) -> PreviousRun | None:
    """The latest recorded run with this scope, or None. Creates the database if missing."""
    conn = _connect(db_path)
    try:
        row = conn.execute(
            "SELECT id, generated_at, block_number, block_timestamp FROM runs WHERE scope = ? "
            "ORDER BY id DESC LIMIT 1", (scope,)).fetchone()
        if row is None:
            return None
        run_id = row[0]
        figures = dict(conn.execute("SELECT key, value FROM figures WHERE run_id = ?", (run_id,)).fetchall())
        cliffs = tuple(
            {"asset": a, "trigger_shock": s, "trigger_price": p, "end_price_before": eb, "end_price": e,
             "protocols": json.loads(pr), "liquidated_collateral_usd": lq, "bad_debt_usd": bd}
            for a, s, p, eb, e, pr, lq, bd in conn.execute(
                "SELECT asset, trigger_shock, trigger_price, end_price_before, end_price, protocols, "
                "liquidated_collateral_usd, bad_debt_usd FROM cliffs WHERE run_id = ? ORDER BY asset, "
                "trigger_shock", (run_id,)))
        return PreviousRun(run_id, row[1], row[2], row[3], figures, cliffs)
    finally:
        conn.close()


def record_run(db_path: str | os.PathLike, report: Mapping[str, Any], figures: Mapping[str, float | None],
               *, scope: str, report_dir: str | None, alerts_fired: int) -> int:
    """Store one finished run (row, figures, cliffs) in a single transaction; return its id."""
    src = report["source"]
    conn = _connect(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT INTO runs (scope, generated_at, source_kind, source_label, chain_id, block_number, "
                "block_timestamp, report_dir, alerts_fired) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, report["generated_at"], src["kind"], src["label"], src.get("chain_id"),
                 src.get("block_number"), src.get("timestamp"), report_dir, int(alerts_fired)))
            run_id = int(cur.lastrowid)
            conn.executemany(
                "INSERT INTO figures (run_id, key, value) VALUES (?, ?, ?)",
                [(run_id, k, None if v is None or not math.isfinite(v) else float(v)) for k, v in figures.items()])
            conn.executemany(
                "INSERT INTO cliffs (run_id, asset, trigger_shock, trigger_price, end_price_before, end_price, "
                "protocols, liquidated_collateral_usd, bad_debt_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, asset, c["trigger_shock"], c["trigger_price"], c.get("end_price_before"),
                  c.get("end_price"), json.dumps(list(c.get("protocols", []))),
                  c.get("liquidated_collateral_usd"), c.get("bad_debt_usd"))
                 for asset, a in report["assets"].items() for c in a["cliffs"]])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return run_id
    finally:
        conn.close()


def list_runs(db_path: str | os.PathLike, scope: str | None = None) -> list[dict[str, Any]]:
    """All runs (newest first), for inspection and tests."""
    conn = _connect(db_path)
    try:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM runs" + (" WHERE scope = ?" if scope else "") + " ORDER BY id DESC"
        return [dict(r) for r in conn.execute(sql, (scope,) if scope else ())]
    finally:
        conn.close()


def diff_figures(current: Mapping[str, float | None], previous: PreviousRun | None) -> list[dict[str, Any]]:
    """Per key figure: previous value, current value and change; keys present in either run."""
    if previous is None:
        return []
    rows = []
    for key in sorted(set(current) | set(previous.figures)):
        cur, prev = current.get(key), previous.figures.get(key)
        cur = None if cur is None or not math.isfinite(cur) else float(cur)
        prev = None if prev is None or not math.isfinite(prev) else float(prev)
        delta = None if cur is None or prev is None else cur - prev
        rel = None if delta is None or prev == 0 else delta / abs(prev)
        changed = (cur is None) != (prev is None) or (delta is not None and not math.isclose(cur, prev, rel_tol=1e-9, abs_tol=1e-9))
        rows.append({"key": key, "previous": prev, "current": cur, "change": delta,
                     "relative_change": rel, "changed": bool(changed)})
    return rows
