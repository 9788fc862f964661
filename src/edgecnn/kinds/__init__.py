"""One record per block kind of the arch format: its grammar, how it builds, its widths, residual, cost, channels.

Each kind is one file of this package defining ``KIND``, a
:class:`~edgecnn.kinds.base.BlockKind`; :data:`BLOCK_KINDS` collects every
such file (``pkgutil``), so adding a kind is adding one file (and its tests).
Files whose name starts with ``_`` hold what several kinds share
(``_resnet.py``); ``base.py`` holds the record types and shared helpers.
The parser reads its grammar here (:data:`edgecnn.arch.KINDS` is derived), and
no other module names a kind: every tool reads a field of the record.

============== ================================================================
field          read by
============== ================================================================
grammar        :mod:`edgecnn.arch`: tokens, defaults, required keys, skip values
build          :class:`edgecnn.build.EdgeNet` (``BUILDERS``), the latency table
out_size       :func:`edgecnn.plan.resolve`: spatial size after the block
mid, se_on     :func:`edgecnn.plan.resolve`: inner and SE squeeze widths
shortcut       :func:`edgecnn.plan.resolve` (``LayerPlan.residual``), the builder, pruning
check          :func:`edgecnn.plan.resolve`: shape rules (odd kernels, groups)
layout         :func:`edgecnn.plan.resolve` (map / vector input), table keys, a search space's stem
upsamples      :func:`edgecnn.plan.output_stride` (a transposed conv)
cost           :func:`edgecnn.analysis.spec_cost.cost_from_spec`
inner          :mod:`edgecnn.compress.channels.prune_inner`: the conv making the inner channels, SE and input ties
filter_fields  :mod:`edgecnn.compress.channels.prune_arch`: which arch width (``c``, ``m``, ``m2``) a filter sets
cout_of_mid    :mod:`edgecnn.compress.channels.prune_arch`: an output width that follows the inner width (ghost)
respec         :mod:`edgecnn.compress.channels.prune_arch`, :func:`edgecnn.latency.widths.with_widths`: the spec
               of new widths
slice_rule     :func:`edgecnn.latency.widths.split_key`: a table key's slice and width axes
folded_bn      :mod:`edgecnn.compress.fold_bn`: the arch of the block with its BN folded
latency_group  :mod:`edgecnn.latency.calibrate`: ``body`` or ``fixed`` group
searchable     :mod:`edgecnn.search.space`: a stage of a search space may be of this kind
============== ================================================================

Residuals (:meth:`BlockKind.residual`): an ``ir`` or ``er`` block adds its
input only when stride 1 and ``c_in = c_out`` (Sandler et al. 2018, §3.3), so a
width change silently removes its skip; ``basic``/``bottleneck`` keep a
shortcut when the shape changes (a 1×1 projection, or zero padding with
``padskip``). The ``idskip`` flag asks for an identity skip explicitly: a block
whose widths or stride would drop it is a ``ValueError`` in
:func:`edgecnn.plan.resolve`. Each kind's file gives its formulas and paper.
"""

from __future__ import annotations

import importlib
import pkgutil

from edgecnn.kinds.base import (
    BlockKind,
    Cost,
    InnerChannels,
    KindInfo,
    Resolved,
    Shortcut,
    Size,
    conv_cost,
    conv_out,
)

__all__ = [
    "BLOCK_KINDS", "BlockKind", "Cost", "InnerChannels", "KindInfo", "Resolved", "Shortcut", "Size", "conv_cost",
    "conv_out", "kind_of", "vector_kind",
]  # fmt: skip


def _discover() -> dict[str, BlockKind]:
    """Every ``KIND`` of this package's public modules, by rank then name."""
    found: list[BlockKind] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        kind = getattr(importlib.import_module(f"{__name__}.{info.name}"), "KIND", None)
        if not isinstance(kind, BlockKind):
            raise ImportError(f"edgecnn.kinds.{info.name} defines no KIND (a BlockKind record)")
        found.append(kind)
    found.sort(key=lambda k: (k.rank, k.name))
    names = [k.name for k in found]
    if len(set(names)) != len(names):
        raise ImportError(f"two block kinds share a name: {sorted(n for n in names if names.count(n) > 1)}")
    return {k.name: k for k in found}


BLOCK_KINDS: dict[str, BlockKind] = _discover()
"""Block kind name -> its record; :data:`edgecnn.arch.KINDS` is their grammar."""


def kind_of(name: str) -> BlockKind:
    """The record of block kind ``name``; ValueError listing the valid kinds otherwise."""
    try:
        return BLOCK_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown block kind {name!r}; valid: {', '.join(BLOCK_KINDS)}") from None


def vector_kind() -> str:
    """The kind that turns a feature map into a vector with no tokens at all (global pooling)."""
    return next(n for n, k in BLOCK_KINDS.items() if k.layout == "map" and k.out_size is None and not k.grammar.keys)
