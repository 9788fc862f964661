"""Which measured finalist a search trains (:meth:`Objective.choose`), recorded so that a resume keeps it.

The search ranks candidates by the latency table; its best ``finalists`` are then measured end to end and the
measurement decides (MnasNet, Tan et al. 2019 §3: the reward is the latency measured on the device). A resumed
search measures its finalists again, and two measurements of networks a few per cent apart can order them
differently — the final training under way would then belong to another network. So the choice is written to
``chosen.json`` in the search folder before the final training starts, atomically, and a resume takes it back
(while its network is still among the finalists) instead of choosing again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write_text
from edgecnn.search.objective import Objective

CHOICE_FILE = "chosen.json"
KEPT = " (chosen when the run began; kept on resume)"


def choose_finalist(objective: Objective, finalists: Sequence[tuple[str, float, float]],
                    path: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """``{"arch", "index", "meets_target", "reason"}`` for ``finalists`` = ``(arch, acc, measured_ms)`` in the
    table's order. With ``path``: a choice recorded there whose arch is still a finalist is kept (its index
    updated); otherwise the objective chooses and the choice is recorded there."""
    archs = [a for a, _, _ in finalists]
    if path is not None and path.is_file():
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            kept = None  # unreadable: choose again (the file is ours, written atomically; nothing else is lost)
        if isinstance(kept, dict) and kept.get("arch") in archs:
            reason = str(kept.get("reason", "")).removesuffix(KEPT) + KEPT
            return {**kept, "index": archs.index(kept["arch"]), "reason": reason}
    c = objective.choose([(acc, ms) for _, acc, ms in finalists])
    doc = {"arch": archs[c.index], **asdict(c)}
    if path is not None:
        atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return doc
