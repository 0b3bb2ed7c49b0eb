"""Progress for pull, verify and convert: rich bars on a terminal, plain lines (no ANSI, no spinners) otherwise."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Step:
    """One stage of work; advance() moves its bar (a no-op in plain mode)."""

    def __init__(self, bar=None, task_id=None):
        self._bar, self._id = bar, task_id

    def advance(self, amount: float = 1) -> None:
        """Add AMOUNT to the completed part."""
        if self._bar is not None:
            self._bar.advance(self._id, amount)

    def describe(self, text: str) -> None:
        """Change the label (e.g. the package being fetched)."""
        if self._bar is not None:
            self._bar.update(self._id, description=text)


class Progress:
    """Reports stages on STREAM (stderr); bars only when it is a terminal and NO_COLOR/TERM=dumb do not object."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, bars: bool | None = None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        if bars is None:
            isatty = getattr(self.stream, "isatty", lambda: False)()
            bars = isatty and os.environ.get("TERM") != "dumb" and not os.environ.get("NO_COLOR")
        self.bars = bars and not quiet

    def note(self, message: str) -> None:
        """One plain line."""
        if not self.quiet:
            self.stream.write(message + "\n")
            self.stream.flush()

    @contextmanager
    def step(self, label: str, total: float | None = None, unit: str = "") -> Iterator[Step]:
        """A stage with an optional bar of TOTAL units ('B' shows sizes and speed)."""
        start = time.monotonic()
        if not self.bars:
            self.note(f"{label} ...")
            yield Step()
            self.note(f"{label}: done in {time.monotonic() - start:.1f} s")
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as Bars,
        )

        columns = [TextColumn("{task.description}"), BarColumn()]
        columns += [DownloadColumn(), TransferSpeedColumn()] if unit == "B" else [MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        with Bars(*columns, console=Console(file=self.stream), transient=False) as bars:
            task_id = bars.add_task(label, total=total)
            yield Step(bars, task_id)
            if total is not None:
                bars.update(task_id, completed=total)
