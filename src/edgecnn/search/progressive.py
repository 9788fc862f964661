"""The progressive-shrinking schedule of a supernet (Cai et al. 2020, "Once-for-All", §3.2 and Fig. 3).

OFA trains the full network first and then makes one dimension elastic after
another, each phase fine-tuning the shared weights so that the subnets already
supported stay good while smaller ones are added:

==========  ========================================================  =====  ========  ===========
phase       choices open (the rest stay at the largest network's)    share  lr scale  subnets/step
==========  ========================================================  =====  ========  ===========
full        none: only the largest network                            0.22   1         1
kernel      every kernel (7 → 5 → 3, transformed centres)             0.22   0.6       1
depth-1     kernels; the two largest depths                           0.05   0.05      2
depth-2     kernels; every depth                                      0.22   0.15      2
width-1     + the two largest expansions and widths; SE, activation   0.05   0.05      4
width-2     everything                                                0.24   0.15      4
==========  ========================================================  =====  ========  ===========

The shares follow OFA's epochs (120 for the kernel, 25 + 120 for depth and for
expansion, the full network trained as long as one long phase); the learning
rates OFA's ratios (3e-2 for the kernel, 2.5e-3 for a first sub-phase, 7.5e-3
for a second, relative to the full network's); the subnets per step OFA's
``dynamic_batch_size`` (1, 2, 4). The long phases warm up for 5/120 of their
steps, the short ones not at all (as OFA). SE and activation are not in OFA's
space; they open with the width phases, so that the last phase trains the
whole space. Channel sorting before the first width phase and the distillation
from the full network are :mod:`edgecnn.search.supernet_train`'s part.

This module only says *what* is open when: :func:`phase_spans` cuts a number of
steps into phases and :func:`phase_space` restricts a space to a phase's choices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from edgecnn.search.space import GENES, SearchSpace, StageSpace


@dataclass(frozen=True)
class Phase:
    """One phase of progressive shrinking."""

    name: str
    share: float  # fraction of the supernet's steps
    open: tuple[tuple[str, int], ...]  # (gene, how many of its values, largest first; 0 = all)
    lr_scale: float  # peak learning rate / the supernet recipe's lr
    subnets: int  # subnets trained per step (OFA's dynamic_batch_size)
    warmup: float  # share of the phase's steps spent warming up

    def opens(self, gene: str) -> bool:
        return any(g == gene for g, _ in self.open)


_KERNEL_DEPTH = (("kernel", 0), ("depth", 0))
PHASES: tuple[Phase, ...] = (
    Phase("full", 0.22, (), 1.0, 1, 0.0),
    Phase("kernel", 0.22, (("kernel", 0),), 0.6, 1, 5 / 120),
    Phase("depth-1", 0.05, (("kernel", 0), ("depth", 2)), 0.05, 2, 0.0),
    Phase("depth-2", 0.22, _KERNEL_DEPTH, 0.15, 2, 5 / 120),
    Phase("width-1", 0.05, (*_KERNEL_DEPTH, ("expansion", 2), ("width", 2), ("se", 0), ("act", 0)), 0.05, 4, 0.0),
    Phase("width-2", 0.24, tuple((g, 0) for g in GENES), 0.15, 4, 5 / 120),
)
"""OFA's schedule on this library's space (see the module doc)."""

WIDTH_GENES = ("expansion", "width")
"""Genes whose opening needs the channels sorted by importance first (OFA §3.3)."""


@dataclass(frozen=True)
class PhaseSpan:
    """A phase and the steps ``[start, end)`` it runs."""

    phase: Phase
    start: int
    end: int

    @property
    def steps(self) -> int:
        return self.end - self.start


def phase_spans(steps: int, phases: tuple[Phase, ...] = PHASES) -> list[PhaseSpan]:
    """Cut ``steps`` into the phases by their shares, every phase at least one step."""
    if steps < len(phases):
        raise ValueError(f"progressive shrinking has {len(phases)} phases and needs at least {len(phases)} supernet "
                         f"steps, got {steps}; raise the steps or use the sandwich schedule")  # fmt: skip
    total = sum(p.share for p in phases)
    spans, start, cum = [], 0, 0.0
    for i, p in enumerate(phases):
        cum += p.share
        left = len(phases) - 1 - i  # phases still to come, one step each
        end = steps if left == 0 else min(max(start + 1, round(cum / total * steps)), steps - left)
        spans.append(PhaseSpan(p, start, end))
        start = end
    return spans


def span_at(spans: list[PhaseSpan], step: int) -> PhaseSpan:
    """The phase running at ``step``."""
    for s in spans:
        if s.start <= step < s.end:
            return s
    raise ValueError(f"step {step} is outside the schedule's {spans[-1].end} steps")


def _ranked(stage: StageSpace, gene: str) -> tuple[Any, ...]:
    """A gene's values, the largest network's first (:meth:`StageSpace.extreme`'s order of size)."""
    values = stage.options(gene)
    if gene == "act":
        return tuple(reversed(values))  # the largest network takes the last activation
    return tuple(sorted(values, reverse=True))  # numbers: largest first; SE: on (True) first


def phase_space(space: SearchSpace, phase: Phase) -> SearchSpace:
    """``space`` with each stage's choices cut to what ``phase`` opens (the rest: the largest network's value)."""
    counts = dict(phase.open)
    stages = []
    for s in space.stages:
        kept: dict[str, tuple[Any, ...]] = {}
        for gene in GENES:
            ranked = _ranked(s, gene)
            n = counts.get(gene, 1)
            keep = set(ranked if n == 0 else ranked[:n])
            kept[gene] = tuple(v for v in s.options(gene) if v in keep)  # the space's order: extreme() stays right
        stages.append(replace(s, depths=kept["depth"], kernels=kept["kernel"], expansions=kept["expansion"],
                              se=kept["se"], acts=kept["act"], widths=kept["width"]))  # fmt: skip
    return replace(space, stages=tuple(stages))
