"""The work folder of a long benchmark run: ``stages.json`` (each finished stage's record, written atomically as
it finishes) and its checkpoints, committed under ``benchmarks/state/`` so a later session continues the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write_text


class Work:
    """``path/stages.json`` read back on start; ``fresh``: refuse a folder that already holds a run."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.file = path / "stages.json"
        if fresh and self.file.is_file():
            raise SystemExit(f"{path} holds a previous run; drop --fresh to continue it, or another --work")
        path.mkdir(parents=True, exist_ok=True)
        self.stages: dict[str, Any] = json.loads(self.file.read_text()) if self.file.is_file() else {}

    def done(self, name: str, value: Any) -> None:
        self.stages[name] = value
        atomic_write_text(self.file, json.dumps(self.stages, indent=1) + "\n")

    def ckpt(self, name: str) -> Path:
        return self.path / f"{name}.pt"
