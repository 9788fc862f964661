"""Receptive fields of every node of a traced network (docs/design.md §3).

Per spatial axis we carry the field size ``R``, the jump ``J`` (input pixels
between two neighbouring outputs, the effective stride) and the centre
``start`` of the *first* output's field, in input pixel coordinates (0 = the
centre of pixel 0; negative when padding reaches past the border). A layer
with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` maps them as
(Araujo et al. 2019, *Computing Receptive Fields of Convolutional Neural
Networks*, Distill)::

    R_l = R_{l-1} + (k-1)·d·J_{l-1}
    J_l = J_{l-1}·s
    start_l = start_{l-1} + ((k-1)/2·d - p)·J_{l-1}

from ``R_0 = 1, J_0 = 1, start_0 = 0``. Output ``i`` then sees the input
interval ``start + i·J ± (R-1)/2`` (clipped to the image).

Each node's rule — branches merged as a union, global pooling / SE gates /
flatten→linear as the *whole input*, transposed convs dividing the jump,
upsampling, padding, strided slicing, and unknown ops — lives in
:mod:`edgecnn.analysis.rf_rules` (``field role → rule``; which op has which
role is declared once, in :mod:`edgecnn.ops`); the
graph-free algebra (:class:`RF`, ``conv_rule``, ``merge``) in
:mod:`edgecnn.analysis.rf_math`. This file owns the walk over an fx graph
(:func:`receptive_fields`) and the model-level conveniences
(:func:`receptive_field`, :func:`layer_receptive_fields`, :func:`eval_mode`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from edgecnn.analysis.rf_math import (  # re-exported: the public names of the receptive-field API
    RF,
    Num,
    add_note,
    as_num,
    conv_rule,
    conv_transpose_rule,
    fmt_num,
    identity_rf,
    merge,
    whole_rf,
)
from edgecnn.analysis.node_cost import shape_evaluator
from edgecnn.analysis.rf_rules import Op, generic_rule, rule_for
from edgecnn.graph import Graph, propagate, trace_graph
from edgecnn.ops import CustomOp, OpTable, op_table

__all__ = ["RF", "Num", "add_note", "as_num", "conv_rule", "conv_transpose_rule", "eval_mode", "fmt_num", "identity_rf",
           "layer_receptive_fields", "merge", "receptive_field", "receptive_fields", "whole_rf"]  # fmt: skip

# ---------------------------------------------------------------- graph walk


def _first(meta: object) -> TensorMetadata | None:
    while type(meta) is tuple and meta:  # an op returning several tensors (chunk, split): the first one
        meta = meta[0]
    return meta if isinstance(meta, TensorMetadata) else None


def _axes_out(node: fx.Node, axes: tuple[int, ...] | None, rank_in: int, rank_out: int, ndim: int) -> tuple[int, ...] | None:
    """Where the spatial axes sit in ``node``'s output: moved by permute/transpose, kept by same-rank ops,
    trailing after an op that changes the rank (view, flatten, mean), none when fewer axes are left."""
    if axes is not None and rank_out == rank_in:
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if target not in _MOVES_AXES:
            return axes
        args = node.args[1:]
        if target == "permute":
            dims = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
            if len(dims) == rank_in and all(isinstance(d, int) for d in dims):
                order = [d % rank_in for d in dims]  # output axis i holds input axis order[i]
                return tuple(order.index(a) for a in axes)
        if target in ("transpose", "swapaxes") and len(args) == 2 and all(isinstance(d, int) for d in args):
            d0, d1 = (d % rank_in for d in args)  # type: ignore[operator]
            return tuple(d1 if a == d0 else d0 if a == d1 else a for a in axes)
        return axes
    return tuple(range(rank_out - ndim, rank_out)) if rank_out >= ndim + 2 else None


_MOVES_AXES = frozenset(("permute", "transpose", "swapaxes"))


def _sizes(meta: TensorMetadata | None, axes: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return tuple(int(meta.shape[a]) for a in axes) if meta is not None and axes is not None else None


def _as_graph(g: Graph | fx.GraphModule, example_inputs: Sequence[torch.Tensor], ops: OpTable) -> Graph:
    if isinstance(g, fx.GraphModule):  # a user's own GraphModule: shapes by meta propagation
        g = Graph(g, g.graph, modules=dict(g.named_modules()))
    if example_inputs:
        propagate(g, list(example_inputs), shape_evaluator(ops))
    return g


def receptive_fields(g: Graph | fx.GraphModule, *example_inputs: torch.Tensor, strict: bool = False,
                     custom_ops: Sequence[CustomOp] | OpTable | None = None) -> dict[str, RF]:  # fmt: skip
    """Receptive field of every tensor-valued node of ``g``, keyed by fx node name.

    ``g``: an :class:`edgecnn.graph.Graph` (from :func:`edgecnn.graph.trace_graph` with inputs, as
    :func:`edgecnn.analysis.analyze` makes) or an ``fx.GraphModule``; pass ``example_inputs`` when its nodes
    carry no ``meta['tensor_meta']`` yet (shapes are then propagated on meta tensors). Nodes that do not
    depend on an input (weights, constants, ``x.shape`` arithmetic) are left out. The first placeholder sets
    the number of spatial axes (rank − 2). ``strict=True`` raises on an unknown op that changes the spatial
    shape instead of taking it as whole input. ``custom_ops``: field rules of ops of your own
    (:class:`edgecnn.ops.CustomOp`; docs/analysis.md, "Custom ops").
    """
    ops = op_table(custom_ops)
    g = _as_graph(g, example_inputs, ops)
    placeholders = g.placeholders()
    if not placeholders:
        raise ValueError("the graph has no input")
    meta = placeholders[0].meta.get("tensor_meta")
    if not isinstance(meta, TensorMetadata):
        raise ValueError("the graph has no shape information; pass example inputs or run ShapeProp first")
    if len(meta.shape) < 3:
        raise ValueError(f"input of shape {tuple(meta.shape)} has no spatial axis; give (N, C, *spatial)")
    ndim = len(meta.shape) - 2
    extent = tuple(int(s) for s in meta.shape[2:])
    rfs: dict[fx.Node, RF] = {}
    axes_of: dict[fx.Node, tuple[int, ...] | None] = {}  # tensor axes holding the spatial axes, per node
    sizes_of: dict[fx.Node, tuple[int, ...] | None] = {}  # spatial sizes of each node's output
    for node in g.nodes:
        if node.op == "placeholder":
            if isinstance(node.meta.get("tensor_meta"), TensorMetadata):
                rfs[node] = identity_rf(ndim)
                axes_of[node] = tuple(range(2, ndim + 2))
                sizes_of[node] = tuple(int(s) for s in node.meta["tensor_meta"].shape[2:])
            continue
        if node.op == "get_attr":
            continue
        sources = [a for a in node.all_input_nodes if a in rfs]
        if not sources:
            continue
        ins = [rfs[a] for a in sources]
        if node.op == "output":
            rfs[node] = merge(ins)
            continue
        out_meta = _first(node.meta.get("tensor_meta"))
        if out_meta is None:
            continue  # not a tensor: x.size(), shapes
        module = g.module(node)
        first = sources[0]
        in_axes = axes_of.get(first)
        rank_in = len(_first(first.meta.get("tensor_meta")).shape) if in_axes is not None else 0  # type: ignore[union-attr]
        out_axes = axes_of[node] = _axes_out(node, in_axes, rank_in, len(out_meta.shape), ndim)
        out_sizes = sizes_of[node] = _sizes(out_meta, out_axes)
        rule = rule_for(node, module, ops)
        if rule is generic_rule and len(ins) == 1 and out_sizes == sizes_of.get(first):
            rfs[node] = ins[0]  # a pointwise op (norm, activation, view keeping the map): the field passes through
            continue
        rf = rule(Op(node, g, module, ndim, extent, sizes_of.get(first), out_sizes, in_axes, ops), ins)
        if strict and "unknown op" in rf.note:
            raise ValueError(f"node {node.name}: {rf.note}; declare it in edgecnn.ops or pass custom_ops")
        rfs[node] = rf
    return {n.name: rf for n, rf in rfs.items()}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; every submodule's own train/eval flag restored after it."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _trace(model: nn.Module, input_shape: Sequence[int], custom_ops: Sequence[CustomOp] | OpTable | None
           ) -> dict[str, RF]:  # fmt: skip
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 3:
        raise ValueError(f"input_shape {shape} must be (N, C, *spatial), e.g. (1, 3, 224, 224)")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.empty(shape, dtype=dtype, device="meta")  # shapes only: no compute, no BN statistics touched
    ops = op_table(custom_ops)
    g = trace_graph(model, x, leaf_modules=ops.leaf_types, evaluate=shape_evaluator(ops))
    return receptive_fields(g, custom_ops=ops)


def layer_receptive_fields(model: nn.Module, input_shape: Sequence[int], *,
                           custom_ops: Sequence[CustomOp] | OpTable | None = None) -> dict[str, RF]:  # fmt: skip
    """Trace ``model`` and give the field of every node (see :func:`receptive_fields`)."""
    return _trace(model, input_shape, custom_ops)


def receptive_field(model: nn.Module, input_shape: Sequence[int], *,
                    custom_ops: Sequence[CustomOp] | OpTable | None = None) -> RF:  # fmt: skip
    """Receptive field of ``model``'s output for an input of ``input_shape`` = (N, C, *spatial)."""
    return _trace(model, input_shape, custom_ops)["output"]
