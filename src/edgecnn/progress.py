"""One progress bar for every long step: what runs, how far (done / total), time spent and, once known, time left.

Every command and run that shows progress builds it here, so they look alike and each shows an ETA where the
total is known (rich's ``TimeRemainingColumn`` stays blank while a task's total is unknown).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console | None = None, *, transient: bool = True, disable: bool = False) -> Progress:
    """A rich progress display: description, bar, done/total, elapsed, remaining (``disable``: shows nothing)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, transient=transient,
                    disable=disable)  # fmt: skip
