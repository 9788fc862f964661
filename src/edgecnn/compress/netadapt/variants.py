"""Pruned variants of one network at random uneven widths: what NetAdapt proposes, drawn to calibrate latency.

A latency model is only as good as its agreement with *measured* networks of
the family it is asked about (nn-Meter, Zhang et al. 2021, fits its predictors
on measured networks for the same reason). NetAdapt (Yang et al. 2018) asks
about one family: the starting network with some coupled channel groups
narrowed to uneven widths. :func:`random_variants` draws such networks as arch
strings — every free group of :func:`~edgecnn.compress.channels.prune.plan_prune` keeps
its full width with probability ``p_full``, else the width on the ``round_to``
grid (at least ``min_keep`` of it) nearest to ``level·width·u``, where the
variant's ``level`` is drawn uniformly from ``[min_keep, 1]`` (so the variants
spread from lightly to heavily pruned, which a calibration fit needs) and
``u`` uniformly from ``[0.7, 1.3]`` per group (so the widths are uneven) — for
:func:`edgecnn.latency.validate.calibrate` (a seed for calibration) and
:func:`~edgecnn.latency.validate.validate` (another seed, held out).
"""

from __future__ import annotations

import random

from edgecnn.build import EdgeNet
from edgecnn.compress.channels.groups import channel_groups
from edgecnn.compress.channels.prune import plan_prune


def random_variants(model: EdgeNet, n: int, *, input_size: int, seed: int = 0, round_to: int = 2,
                    min_keep: float = 0.25, p_full: float = 0.3) -> list[str]:  # fmt: skip
    """``n`` distinct arch strings of ``model`` pruned at random widths (see the module doc); no weights are touched."""
    if n < 1:
        raise ValueError(f"number of variants must be positive, got {n}")
    if not 0 < min_keep <= 1 or not 0 <= p_full < 1:
        raise ValueError(f"min_keep must be in (0, 1] and p_full in [0, 1), got {min_keep} and {p_full}")
    graph = channel_groups(model, (model.in_chans, input_size, input_size), round_to=round_to)
    free = plan_prune(model, graph=graph, keep=1.0, round_to=round_to).free
    if not free:
        raise ValueError(f"{model.arch!r} has no channel group that can be pruned; nothing to vary")
    width = {g.index: g.width for g in graph.groups}
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        level = rng.uniform(min_keep, 1.0)  # how far this variant is pruned overall: spreads the totals
        widths = {}
        for g in free:
            if rng.random() < p_full:
                continue
            grid = [w for w in range(round_to, width[g], round_to) if w >= min_keep * width[g]] or [width[g]]
            want = level * width[g] * rng.uniform(0.7, 1.3)  # uneven around the level
            widths[g] = min(grid, key=lambda w: abs(w - want))
        try:
            arch = plan_prune(model, graph=graph, widths=widths, round_to=round_to).arch
        except ValueError:  # a width a channel split does not allow: draw again
            continue
        if arch is not None and arch != model.arch and arch not in out:
            out.append(arch)
    if len(out) < n:
        raise ValueError(f"drew only {len(out)} distinct variants of {model.arch!r}, asked for {n}")
    return out
