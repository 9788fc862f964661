"""One progress bar for every long step: what runs, how far (done / total), time spent and, once known, time left.

Every command and run that shows progress builds it here, so they look alike and each shows an ETA where the
total is known (rich's ``TimeRemainingColumn`` stays blank while a task's total is unknown).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def run_callbacks(bar: Progress, say: Callable[[str], object], line: Callable[[Any], str],
                  rounds: str) -> dict[str, Callable[..., None]]:  # fmt: skip
    """The progress of an iterative run on one task of ``bar``, as keyword arguments of
    :func:`edgecnn.compress.job.run_measured`: ``on_proposal`` (done/total of an iteration's proposals),
    ``on_step`` (which part of an iteration runs), ``on_iteration`` (``say(line(it))``, then the next iteration's
    task) and ``on_round`` (the back-to-back timing rounds, described as ``rounds``)."""
    task = bar.add_task("iteration 1: proposals", total=None)

    def on_proposal(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    def on_step(what: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, description=what)

    def on_iteration(it: Any) -> None:
        say(line(it))
        bar.reset(task, total=None, description=f"iteration {it.iteration + 1}: proposals")

    def on_round(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, description=rounds)

    return {"on_proposal": on_proposal, "on_step": on_step, "on_iteration": on_iteration, "on_round": on_round}
