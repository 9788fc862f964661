"""The zoo's reference points of a search: hand-designed networks of the searched setting, measured like the finalists.

A searched network is only worth something next to what it replaces. For the
accuracy–latency plot (docs/design.md §7) every reference network gets, on the same
device, backend and thread count as the search:

* its latency **predicted** by the search's latency model (the same table,
  interpolation and block measurements as every candidate) and **measured**
  end to end in the executor's exclusive lane, exactly as the finalists are;
* its test top-1 after the **same final training** (recipe and epochs) as the
  chosen network, when the search runs one — so the stars and the chosen
  network on the plot are trained alike (MnasNet, Tan et al. 2019, Fig. 1 and
  Table 1, compares against MobileNetV2 at several width multipliers the same way).

``auto`` picks the setting's own family: MobileNetV3-Small for 32×32 inputs
(``mobilenet_v3_small_cifar`` at width 0.35, 0.5, 0.75 and 1.0), the ImageNet
MobileNetV3-Small and -Large for 224×224 (Howard et al. 2019); other input
sizes have no reference by default.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecnn import zoo
from edgecnn.build import build
from edgecnn.executor import Executor
from edgecnn.latency.compare import Anchor, sitting_ms
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.model import LatencyModel

__all__ = ["AUTO_REFERENCES", "ReferencePoint", "default_references", "measure_references", "reference_arch",
           "resolve_references", "to_rows", "train_references"]  # fmt: skip

AUTO_REFERENCES: dict[int, tuple[str, ...]] = {
    32: tuple(f"mobilenet_v3_small_cifar@{w}" for w in (0.35, 0.5, 0.75, 1.0)),
    224: ("mobilenet_v3_small", "mobilenet_v3_large"),
}
"""``--references auto`` by the space's input size."""


@dataclass(frozen=True)
class ReferencePoint:
    """One reference network on the search's device."""

    label: str  # as given: "zoo_name" or "zoo_name@width"
    arch: str  # canonical arch string
    table_ms: float  # latency by the search's latency model (table, interpolation, block measurements)
    measured_ms: float  # median of an end-to-end measurement in the exclusive lane
    measured_iqr_ms: float  # its interquartile range
    top1: float | None = None  # test top-1 after the final recipe; None when not trained
    epochs: int = 0  # epochs of that training (0: latency only)
    train_seconds: float | None = None  # wall time of that training
    checkpoint: str | None = None  # its last.pt

    @property
    def what(self) -> str:
        """How the point's accuracy was obtained, for the plot's legend."""
        return f"trained {self.epochs} epochs, final recipe" if self.top1 is not None else "untrained: latency only"


def reference_arch(ref: str) -> str:
    """The arch string of a reference ``zoo_name`` or ``zoo_name@width`` (ValueError naming a bad one)."""
    name, _, width = ref.partition("@")
    try:
        w = float(width) if width else 1.0
    except ValueError:
        raise ValueError(f"reference {ref!r}: the width after '@' must be a number, e.g. {name}@0.5") from None
    return zoo.arch_of(name, width=w)


def default_references(input_size: int) -> tuple[str, ...]:
    """The zoo networks of the setting with this input side (none for sizes without a family)."""
    return AUTO_REFERENCES.get(int(input_size), ())


def resolve_references(values: Sequence[str], input_size: int) -> tuple[str, ...]:
    """``["auto"]`` → the setting's networks, ``["none"]`` or ``[]`` → none, else the names (each checked)."""
    words = [v.strip() for v in values if v.strip()]
    if words in ([], ["none"]):
        return ()
    if words == ["auto"]:
        return default_references(input_size)
    if {"auto", "none"} & set(words):
        raise ValueError(f"--references takes 'auto', 'none' or zoo names, not a mix: {' '.join(words)}")
    for w in words:
        reference_arch(w)
    return tuple(dict.fromkeys(words))


def measure_references(refs: Sequence[str], model: LatencyModel, executor: Executor, *, input_size: int,
                       num_classes: int, in_chans: int, backend: str, threads: int,
                       timing: TimingConfig | None = None, rounds: int = 3, pause_s: float = 0.0,
                       anchor: Anchor | None = None) -> list[ReferencePoint]:  # fmt: skip
    """Each reference's latency by ``model`` and measured end to end with no task running (the exclusive lane),
    as the search's finalists are: back to back in ``rounds`` interleaved rounds, the median of each round's fastest
    run (:func:`~edgecnn.latency.compare.fastest_runs`, ``pause_s`` between rounds). ``timing``: one network's
    timing in one round (default: the comparisons' own). ``anchor``: each read in the anchor's sitting
    (:class:`~edgecnn.latency.compare.Anchor`), as the finalists are."""
    if not refs:
        return []
    archs = {ref: reference_arch(ref) for ref in refs}
    nets = {ref: build(arch, num_classes=num_classes, in_chans=in_chans) for ref, arch in archs.items()}
    with executor.exclusive():
        ms, runs = sitting_ms(nets, (1, in_chans, input_size, input_size), anchor=anchor, num_classes=num_classes,
                              backend=backend, threads=threads, device=model.table.fingerprint.device, rounds=rounds,
                              config=timing, pause_s=pause_s)  # fmt: skip
    out = []
    for ref, arch in archs.items():
        table_ms = model.predict(arch, input_size=input_size, num_classes=num_classes, in_chans=in_chans).total_ms
        iqr = statistics.median(s.iqr_ms for s in runs[ref])
        out.append(ReferencePoint(ref, arch, table_ms, ms[ref], iqr))
    return out


def _folder(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label.replace("@", "-w"))


def train_references(points: Sequence[ReferencePoint], train: Callable[[str, Path], dict[str, Any]],
                     out: Path) -> list[ReferencePoint]:  # fmt: skip
    """Each point trained by ``train(arch, folder)`` (the search's final recipe) in ``out/<label>/``.

    ``train`` returns the final training's dict (``top1``, ``epochs``, ``seconds``, ``checkpoint``).
    """
    done = []
    for p in points:
        r = train(p.arch, out / _folder(p.label))
        done.append(replace(p, top1=r["top1"], epochs=r["epochs"], train_seconds=r["seconds"],
                            checkpoint=r.get("checkpoint")))  # fmt: skip
    return done


def to_rows(points: Sequence[ReferencePoint]) -> list[dict[str, Any]]:
    """The ``references`` field of the search's results document."""
    return [{"label": p.label, "arch": p.arch, "table_ms": p.table_ms, "measured_ms": p.measured_ms,
             "measured_iqr_ms": p.measured_iqr_ms, "top1": p.top1, "epochs": p.epochs,
             "train_seconds": p.train_seconds, "checkpoint": p.checkpoint, "what": p.what} for p in points]  # fmt: skip
