"""One report run, end to end: lock history -> previous run -> build -> alerts -> render -> publish the
output directory atomically -> record the run in history (one transaction) -> release the lock.

Failure anywhere before publishing leaves the old report directory (if any) untouched and history
unchanged; the staging directory is removed. The output directory is replaced by an atomic
rename (Linux `renameat2(RENAME_EXCHANGE)` when the old one exists), so a reader never sees a
half-written report.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from defirisk.errors import InputError
from defirisk.report import alerts as alerts_mod
from defirisk.report import history as history_mod
from defirisk.report.build import ReportSettings, SourceInfo, _volatile_assets, build_report, history_scope
from defirisk.report.plots import all_plots
from defirisk.report.render_html import render_html
from defirisk.report.render_json import render_json
from defirisk.report.render_md import render_md

FORMATS = ("md", "html", "json")
MARKER = ".defirisk-report"   # marks a directory this tool may replace wholesale
FILE_NAMES = {"md": "report.md", "html": "report.html", "json": "report.json"}


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item not in FORMATS:
            raise InputError(f"--format: unknown format {item!r} (known: {', '.join(FORMATS)})")
        if item not in out:
            out.append(item)
    if not out:
        raise InputError("--format: no format given (known: md, html, json)")
    return tuple(out)


@dataclass(frozen=True)
class RunOptions:
    out: Path
    formats: tuple[str, ...] = FORMATS
    history: Path | None = None
    rules: tuple[alerts_mod.Rule, ...] = ()
    settings: ReportSettings = field(default_factory=ReportSettings)
    lock_wait_s: float = 0.0
    include_snapshot: Path | None = None   # a chain snapshot to keep beside the report (snapshot/)
    secrets: tuple[str, ...] = ()          # raw strings (RPC URLs) that must not appear in any output file
    progress: Any = None                   # progress(stage, done, total) for long work; None = silent


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    files: tuple[Path, ...]
    report: dict
    alerts: tuple[alerts_mod.AlertResult, ...]
    run_id: int | None

    @property
    def fired(self) -> tuple[alerts_mod.AlertResult, ...]:
        return tuple(a for a in self.alerts if a.fired)

    @property
    def exit_code(self) -> int:
        return 1 if self.fired else 0


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        # Never replace a directory we did not write (think `--out .` or `--out ~`).
        raise InputError(f"--out {out}: exists, is not empty and is not a defirisk report directory "
                         f"(no {MARKER} file); choose another directory")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False when the platform cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_dir(staging: Path, out: Path) -> None:
    """Make `staging` appear at `out` in one step; the previous `out` (if any) is removed after."""
    if not out.exists():
        os.rename(staging, out)
        return
    if _exchange(staging, out):
        shutil.rmtree(staging)   # now holds the previous report
        return
    # Fallback: two renames; `out` is briefly absent but never partial.
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _scrub_tree(root: Path, secrets: Sequence[str]) -> None:
    from defirisk.redact import redact_url

    pairs = [(s.encode(), (redact_url(s) or "***").encode()) for s in secrets if s]
    if not pairs:
        return
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            new = data
            for raw, masked in pairs:
                new = new.replace(raw, masked)
            if new != data:
                path.write_bytes(new)


def _write_outputs(staging: Path, report: dict, options: RunOptions) -> list[Path]:
    files = []
    plots = all_plots(report) if ("md" in options.formats or "html" in options.formats) else {}
    if "md" in options.formats:
        pdir = staging / "plots"
        pdir.mkdir()
        for name, png in plots.items():
            (pdir / name).write_bytes(png)
    for fmt in options.formats:
        path = staging / FILE_NAMES[fmt]
        if fmt == "json":
            text = render_json(report)
        elif fmt == "md":
            text = render_md(report, "plots")
        else:
            text = render_html(report, plots)
        path.write_text(text, encoding="utf-8")
        files.append(path)
    if options.include_snapshot is not None:
        shutil.copytree(options.include_snapshot, staging / "snapshot")
    (staging / MARKER).write_text(f"{report['schema']}\n", encoding="utf-8")
    _scrub_tree(staging, options.secrets)
    for path in staging.rglob("*"):      # make the published files durable before the rename
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    return files


def run_report(snapshot: Any, source: SourceInfo, options: RunOptions) -> RunResult:
    """Build, render and publish the report for `snapshot`; record it in history; evaluate alerts."""
    out = Path(options.out)
    _check_out(out)
    alerts_mod.check_assets(options.rules, _volatile_assets(snapshot))
    settings = options.settings.with_shocks(alerts_mod.required_shocks(options.rules))

    lock = history_mod.HistoryLock(options.history, options.lock_wait_s) if options.history else None
    if lock is not None:
        lock.acquire()
    try:
        scope = None
        previous = None
        if options.history is not None:
            # Scope needs the manifest; build a minimal header the same way build_report does.
            probe = {"source": {"label": source.label,
                                "chain_id": dict(getattr(snapshot, "manifest", {}) or {}).get("chain_id")}}
            scope = history_scope(probe)
            previous = history_mod.previous_run(options.history, scope)

        report = build_report(snapshot, source, settings, previous=previous, progress=options.progress)
        results = tuple(alerts_mod.evaluate(options.rules, report))
        report["alerts"] = [r.to_dict() for r in results]

        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            names = [p.name for p in _write_outputs(staging, report, options)]
            publish_dir(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

        run_id = None
        if options.history is not None:
            run_id = history_mod.record_run(options.history, report, report["figures"], scope=scope,
                                            report_dir=str(out.resolve()),
                                            alerts_fired=sum(r.fired for r in results))
        return RunResult(out, tuple(out / n for n in names), report, results, run_id)
    finally:
        if lock is not None:
            lock.release()
