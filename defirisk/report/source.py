"""Where a report's snapshot comes from: a snapshot directory, an RPC endpoint, or the embedded devnet.

The chain side is one call into the readers' entry point (`defirisk.snapshot_chain.take_snapshot`),
isolated in `_take_chain_snapshot` so the report knows nothing of RPC beyond a URL it redacts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from defirisk.errors import ChainError, InputError
from defirisk.redact import redact_url
from defirisk.report.build import SourceInfo

DEVNET_LABEL = "embedded default devnet"


def _take_chain_snapshot(rpc_url: str | None, out: Path, block: int | None = None, book: str | None = None,
                         progress=None) -> None:
    """Write a snapshot of `rpc_url` (None = start the default devnet) at `block` (None = latest) into
    `out`; `book` is an address-book file or built-in name (None = the readers' default)."""
    try:
        from defirisk.snapshot_chain import take_snapshot
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("defirisk.snapshot_chain"):
            raise ChainError("chain snapshots are not available in this build (defirisk.snapshot_chain is "
                             "missing); report on a snapshot directory with --snapshot DIR") from None
        raise
    kwargs = {} if book is None else {"book": book}
    take_snapshot(rpc_url=rpc_url, block=block, out=out, progress=progress, **kwargs)


def resolve_source(*, rpc_url: str | None, snapshot_dir: str | os.PathLike | None,
                   work_dir: str | os.PathLike, block: int | None = None,
                   book: str | None = None, progress=None) -> tuple[Any, SourceInfo, Path | None]:
    """Load or take the snapshot to report on.

    Returns (snapshot, source info with a redacted label, the directory a chain snapshot was written
    to or None). Chain snapshots go to `work_dir/snapshot` so the caller can keep them beside the report.
    `progress(stage, done, total)` hears the chain reads' progress.
    """
    from defirisk.snapshot import load_snapshot

    if rpc_url is not None and snapshot_dir is not None:
        raise InputError("give either --rpc-url or --snapshot, not both")
    if snapshot_dir is not None:
        if block is not None or book is not None:
            raise InputError("--block and --book apply to chain sources, not to --snapshot")
        d = Path(snapshot_dir)
        if not d.is_dir():
            raise InputError(f"snapshot directory {d}: does not exist or is not a directory")
        return load_snapshot(d), SourceInfo("snapshot", str(d), str(d)), None
    if rpc_url is not None and not str(rpc_url).strip():
        raise InputError("--rpc-url is empty")
    out = Path(work_dir) / "snapshot"
    if block is not None and block < 0:
        raise InputError(f"--block {block}: must be >= 0")
    _take_chain_snapshot(rpc_url, out, block, book, progress)
    label = redact_url(rpc_url) if rpc_url is not None else DEVNET_LABEL
    return load_snapshot(out), SourceInfo("rpc" if rpc_url else "devnet", label or "", None), out
