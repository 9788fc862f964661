"""The stages of a multi-step run (``edgecnn demo``): each one announced, timed and recorded for the report.

The main job (docs/design.md, "Data flow") is a pipeline — train a baseline → analyse → latency table →
NetAdapt to a latency budget → fold BN → export ONNX (and int8) → evaluate →
CAM → report. :class:`StageLog` runs each stage under a heading, times it and
keeps a row per stage (``done``, ``skipped`` with the reason, or ``not built``
for a stage whose code has not landed yet), which goes into the results
document's ``stages`` list and the report's pipeline table. A new stage is a
``with log.stage(...)`` block in the pipeline and needs nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console

__all__ = ["StageLog", "StageRow"]


@dataclass(frozen=True)
class StageRow:
    """What happened to one stage."""

    name: str  # short key, e.g. "netadapt"
    title: str  # heading shown on the console and in the report
    status: str  # "done", "skipped" or "not built"
    seconds: float | None = None  # wall time of a stage that ran
    note: str = ""  # why it was skipped, what it produced


class StageLog:
    """Numbered console headings and one :class:`StageRow` per stage, in order."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: list[StageRow] = []

    @contextmanager
    def stage(self, name: str, title: str) -> Iterator[dict[str, str]]:
        """Run the ``with`` body as a stage; the body may set ``info["note"]`` for the report."""
        self.console.rule(f"[bold]{len(self.rows) + 1}. {title}")
        info: dict[str, str] = {}
        start = time.perf_counter()
        yield info
        self.rows.append(StageRow(name, title, "done", time.perf_counter() - start, info.get("note", "")))

    def skip(self, name: str, title: str, reason: str, *, status: str = "skipped") -> None:
        """Record a stage that did not run (``status="not built"`` for one whose code has not landed yet)."""
        self.console.print(f"[dim]{len(self.rows) + 1}. {title}: {status} — {reason}")
        self.rows.append(StageRow(name, title, status, None, reason))

    def to_list(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows]
