"""Coupled channel groups of any traced network: which (layer, dimension, index) are removed together (docs/design.md §5).

Structured pruning removes a channel from *every* tensor that carries it:
the filter that produces it, the BatchNorm that scales it, every layer that
reads it, and — through a residual add, an SE gate, a concatenation, a
reshape — the same channel of other layers. Torch-Pruning (Fang et al. 2023,
"DepGraph: Towards Any Structural Pruning", ``torch_pruning/dependency.py``)
finds these couplings by walking a graph of per-layer *dependencies*, one
rule per (op, op) pair. edgecnn gets the same answer another way: it
**runs the traced graph on channel labels**. This file owns the result
(:class:`ChannelGraph`: the groups, and kept channels → index lists); the
label run is :mod:`edgecnn.compress.channels.labels`, the union-find and the
grouping of components :mod:`edgecnn.compress.channels.components`.

How: one fx trace with meta shapes (:func:`edgecnn.analysis.trace.analyze_fx`,
batch 1); then every node is evaluated again on integer tensors of the same
shapes whose values are *labels*, not activations. Each output channel of a
conv / linear / transposed conv gets a fresh label (a "slot"); ops that do
not own channels move labels the way they move data, so most of them need
no rule at all — ``cat``, ``split``, ``chunk``, ``view``, ``transpose``,
``flatten``, ``F.pad``, indexing are run *as they are* on the label tensor.
The few rules:

============================ ==================================================
conv / linear / tconv        reads its input labels (weight dim 1, or dim 0 for
                             tconv); writes fresh slots (weight dim 0 / 1, bias)
depthwise conv (groups = C)  output channel ``o`` carries input label
                             ``o // multiplier``: no new slots (weight dim 0)
BN / IN / LayerNorm / PReLU  per-channel parameters indexed by the labels
add, sub, mul, div, max, min the labels of the operands are *unified* element by
                             element (residual add; ``x * gate`` ties an SE's
                             excite output to the gated tensor)
pools, activations, reductions keep the per-channel labels (a reduction over
                             the channel dim unifies nothing: it blocks them)
view splitting C → (g, C/g)   unify position ``j`` across the ``g`` rows (a
                             shuffle or heads split keeps the same ``j``s in
                             every group, else the view no longer fits)
grouped conv (1 < groups < C) position j of every group is one channel, in its
                             input and in its output (Torch-Pruning's rule: every
                             group keeps the same count); weight dim 1 holds j once
anything else                blocks the labels it reads (not prunable, with a
                             reason): grouped transposed convs, matmul, the network
                             output, the network input, constants
============================ ==================================================

Unified slots form a *component* (connected components of the unions, found at once): one prunable channel of the
whole network. Components that touch the same set of (layer, parameter,
dimension) form a :class:`Group`, whose ``width`` is its number of
components.

Worked example — an inverted residual with SE between two blocks of a
residual run (names as in :class:`edgecnn.blocks.InvertedResidual`)::

    x ─ stem.conv(24) ─ bn ─┬─ expand(72) ─ bn ─ dw(72) ─ bn ─ se ─ project(24) ─ bn ─ (+) ─ head.conv
                            └──────────────────────────────────────────────────────┘

* ``stem.conv`` writes slots s0…s23, ``project`` writes p0…p23; the add
  unifies s_j with p_j, so channel j of the run is one component that owns
  ``stem.conv.weight[j, :]``, ``stem.bn.*[j]``, ``project.conv.weight[j, :]``,
  ``project.bn.*[j]``, ``expand.conv.weight[:, j]`` (the block reads the run),
  ``head.conv.weight[:, j]``. The 24 such components form **one group**
  (width 24): pruning channel 5 removes index 5 of all of these.
* ``expand`` writes e0…e71; ``dw`` (depthwise) passes them on and owns
  ``dw.conv.weight[j]``; SE's pool keeps them, ``se.fc1`` reads them
  (``fc1.weight[:, j]``); ``se.fc2`` writes f0…f71, and ``x * gate``
  unifies f_j with e_j. So the inner group (width 72) holds ``expand`` out,
  both BNs, ``dw``, ``fc1`` in, ``fc2`` out and bias, ``project`` in.
* ``se.fc1`` writes its own slots, read only by ``fc2``: the squeeze group.

A concatenation ``cat([a, b])`` reading into ``conv`` gives two groups, one
per producer, whose indices in ``conv.weight`` dim 1 are offset by ``a``'s
width; a ``flatten`` before a ``Linear`` gives each component the ``H·W``
input features it owns (rows of ``H·W`` indices).

Each :class:`Group` keeps, per member, a ``(width, n)`` tensor of the
indices each component owns (``Group.rows``; ``Group.channels`` as tuples); :meth:`ChannelGraph.kept_indices` turns a choice of kept components
(any order) into the index list of every member by running the labels once
more with only the kept slots, so the result is right for shuffles and
reshapes too, not only for the common "same index everywhere" case.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from edgecnn.compress.channels.components import Components, Group, Key, Member, Slots, Split
from edgecnn.compress.channels.labels import Interpreter, trace_for_labels
from edgecnn.ops import CustomOp, OpTable, op_table

__all__ = ["ChannelGraph", "Group", "Member", "Split", "channel_groups"]


class ChannelGraph:
    """The channel groups of a model, and the map from kept channels to the index lists of every layer."""

    def __init__(self, model: nn.Module, inputs: Sequence[torch.Tensor], round_to: int = 8,
                 custom_ops: Sequence[CustomOp] | OpTable | None = None) -> None:  # fmt: skip
        if round_to < 1:
            raise ValueError(f"round_to must be a positive integer (1 = no rounding), got {round_to}")
        self.model = model  # the model the groups are of (a plan checks it is pruned on the same one)
        self.inputs = [torch.empty((1, *t.shape[1:]), dtype=t.dtype) for t in inputs]  # batch-1 example shapes
        self.ops = op_table(custom_ops)  # the op table, custom ops included (the second run reads it too)
        self.trace = trace_for_labels(model, inputs, self.ops)
        self.slots = Slots()
        interp = Interpreter(self.trace.graph, self.trace.modules, self.trace.root, self.slots, ops=self.ops)
        interp.run()
        self.starts = dict(interp.starts)
        self.folds = interp.folds  # layer -> the BN right after it (what fold_bn would fold)
        self.uses = interp.uses  # key -> (role, label per index), first call
        self._unify_calls(interp)
        self.pieces = interp.pieces
        found = Components(self.uses, self.slots, self.pieces, round_to)
        self.groups: tuple[Group, ...] = found.groups
        self.splits: tuple[Split, ...] = found.splits
        self.roots = found.roots  # every slot's component (its smallest slot)
        self.group_of_root = found.group_of_root  # index of the group of each root, -1 for none
        self.sizes = {k: int(v.numel()) for k, (_, v) in self.uses.items()}

    def _unify_calls(self, interp: Interpreter) -> None:
        """A module called twice (shared weights) ties what each call sees at the same index."""
        for key, labels in interp.extra:
            self.slots.union(self.uses[key][1], labels, f"{key[0]} is called more than once on different channels")

    @functools.cached_property
    def prunable(self) -> tuple[Group, ...]:
        """The groups that can be pruned (planners read this several times per plan)."""
        return tuple(g for g in self.groups if g.prunable)

    def kept_indices(self, keep: Mapping[int, Sequence[int]]) -> dict[Key, list[int]]:
        """For kept components per group (``{group index: component indices, in their new order}``),
        the kept indices of every member dimension, in the order the pruned network needs them.

        Groups not in ``keep`` keep everything in place. The labels are run
        once more with each producer emitting only its kept output channels;
        each layer then reads the kept channels in the order they arrive.
        Raises ValueError when the network's reshapes cannot carry the choice.
        """
        dropped: set[tuple[Key, int]] = set()
        # a producer lays out each group's kept channels, in their new order, on the positions that group's
        # kept channels held (so groups interleaved in one layer stay interleaved, and a channel that owns several
        # positions of one producer — a shuffle's rows, a grouped conv's groups — keeps them where they were)
        rank: dict[tuple[Key, int], int] = {}
        for g in self.groups:
            order = list(keep.get(g.index, range(g.width)))
            if g.index in keep and not g.prunable and sorted(order) != list(range(g.width)):
                raise ValueError(f"group {g.index} cannot be pruned: {g.reason}")
            chosen = torch.tensor(order, dtype=torch.long)
            gone = torch.ones(g.width, dtype=torch.bool)
            gone[chosen] = False
            for member, rows in zip(g.members, g.rows):
                key = member.key
                dropped.update((key, i) for i in rows[gone].flatten().tolist() if i >= 0)
                kept = rows[chosen]
                for col in kept.t().tolist():
                    for i, slot in zip(col, sorted(col)):
                        if i >= 0:
                            rank[(key, i)] = slot
        emit: dict[str, list[int]] = {}
        for module, starts in self.starts.items():
            key = next((k for k in self.uses if k[0] == module and self.uses[k][0] == "out" and k[1] == "weight"),
                       None)  # fmt: skip
            if key is None:
                continue
            kept = [i for i in range(self.sizes[key]) if (key, i) not in dropped]
            emit[module] = sorted(kept, key=lambda i: rank.get((key, i), i))
        interp = Interpreter(self.trace.graph, self.trace.modules, self.trace.root, self.slots, emit, self.ops)
        interp.starts.update(self.starts)
        try:
            interp.run()
        except Exception as e:  # a view that no longer fits the pruned width
            raise ValueError(f"the network cannot run with this choice of channels ({type(e).__name__}: {e}); "
                             "keep whole rows of a channel split or the same count per group") from e  # fmt: skip
        out: dict[Key, list[int]] = {}
        for key, (_, new) in interp.uses.items():
            original = self.uses[key][1].tolist()
            where: dict[int, list[int]] = defaultdict(list)
            for i, a in enumerate(original):
                where[a].append(i)
            taken: dict[int, int] = defaultdict(int)
            idx = []
            for a in new.tolist():
                k = taken[a]
                taken[a] += 1
                if k >= len(where[a]):
                    raise ValueError(f"{key[0]}.{key[1]}: the pruned network reads channel label {a} more often "
                                     "than the original; the choice does not fit its reshapes")  # fmt: skip
                idx.append(where[a][k])
            expect = [i for i in range(len(original)) if (key, i) not in dropped]
            if sorted(idx) != expect:
                raise ValueError(f"{key[0]}.{key[1]} dim {key[2]}: the pruned network does not read the kept "
                                 "channels; the choice does not fit its reshapes")  # fmt: skip
            out[key] = idx
        return out


def channel_groups(model: nn.Module, input_size: Sequence[int] | None = None, *,
                   inputs: torch.Tensor | Sequence[torch.Tensor] | None = None, round_to: int = 8,
                   custom_ops: Sequence[CustomOp] | OpTable | None = None) -> ChannelGraph:  # fmt: skip
    """The coupled channel groups of ``model`` for an input of ``input_size`` = (C, H, W) (or ``inputs``).

    Shapes only matter where they change the coupling (a flatten before a
    Linear gives each channel ``H·W`` features); the batch size is ignored.
    ``custom_ops``: how modules of your own relate their channels (:class:`edgecnn.ops.CustomOp`,
    docs/analysis.md "Custom ops"); without one, an op edgecnn does not know blocks the channels it reads.
    """
    if inputs is None:
        if input_size is None:
            raise ValueError("give input_size (e.g. (3, 32, 32)) or example inputs")
        size = tuple(int(s) for s in input_size)
        if not size or min(size) < 1:
            raise ValueError(f"input_size must be positive sizes without the batch axis, got {input_size}")
        xs: list[torch.Tensor] = [torch.empty((1, *size))]
    else:
        xs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    return ChannelGraph(model, xs, round_to, custom_ops)
