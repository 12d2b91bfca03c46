"""Progress for long commands, on stderr so stdout stays clean for --json and pipes."""
from __future__ import annotations

import sys
import time


class StageProgress:
    """`progress(stage, done, total)`: a rewritten line on a terminal; on a pipe or log file one line
    when a stage starts and one when it completes (no flood in cron mail). A 1-of-1 stage is a plain
    message."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.stage: str | None = None
        self.last = 0.0

    def _line(self, stage: str, done: int, total: int) -> str:
        return stage if total == 1 and done == 1 else f"{stage}: {done}/{total}"

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        finished = done >= total
        if self.tty:
            if stage != self.stage or finished or now - self.last > 0.2:
                self.stream.write("\r\033[K" + self._line(stage, done, total) + ("\n" if finished else ""))
                self.stream.flush()
                self.last = now
        elif finished or stage != self.stage:
            self.stream.write(self._line(stage, done, total) + "\n")
            self.stream.flush()
        self.stage = None if finished else stage

    def say(self, message: str) -> None:
        """A one-off stage message (e.g. 'devnet loaded from cache')."""
        self(message, 1, 1)
