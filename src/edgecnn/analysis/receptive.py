"""Receptive fields of every node of a traced network (SPEC §3).

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
upsampling, padding, strided slicing, and unknown ops — lives in the
``layer type → rule`` tables of :mod:`edgecnn.analysis.rf_rules`; the
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
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

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
from edgecnn.analysis.rf_rules import (  # the tables re-exported: code extends receptive.MODULE_RULES
    FUNCTION_RULES,
    MODULE_RULES,
    Op,
    Rule,
    rule_for,
)

__all__ = ["RF", "Num", "add_note", "as_num", "conv_rule", "conv_transpose_rule", "eval_mode", "fmt_num", "identity_rf",
           "layer_receptive_fields", "merge", "receptive_field", "receptive_fields", "whole_rf"]  # fmt: skip

# ---------------------------------------------------------------- graph walk


def _spatial(meta: object, ndim: int) -> tuple[int, ...] | None:
    if isinstance(meta, TensorMetadata) and len(meta.shape) >= ndim + 2:
        return tuple(int(s) for s in meta.shape[-ndim:])
    return None


def receptive_fields(gm: fx.GraphModule, *example_inputs: torch.Tensor, strict: bool = False) -> dict[str, RF]:
    """Receptive field of every tensor-valued node of ``gm``, keyed by fx node name.

    Needs the shapes fx's ``ShapeProp`` stores in ``node.meta['tensor_meta']``:
    pass ``example_inputs`` to run it here, or run it before. Nodes that do not
    depend on an input (weights, constants, ``x.shape`` arithmetic) are left
    out. The first placeholder sets the number of spatial axes (rank − 2).
    ``strict=True`` raises on an unknown op that changes the spatial shape
    instead of taking it as whole input.
    """
    if example_inputs:
        ShapeProp(gm).propagate(*example_inputs)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        raise ValueError("the graph has no input")
    meta = placeholders[0].meta.get("tensor_meta")
    if not isinstance(meta, TensorMetadata):
        raise ValueError("the graph has no shape information; pass example inputs or run ShapeProp first")
    if len(meta.shape) < 3:
        raise ValueError(f"input of shape {tuple(meta.shape)} has no spatial axis; give (N, C, *spatial)")
    ndim = len(meta.shape) - 2
    extent = tuple(int(s) for s in meta.shape[2:])
    rfs: dict[str, RF] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if isinstance(node.meta.get("tensor_meta"), TensorMetadata):
                rfs[node.name] = identity_rf(ndim)
            continue
        ins = [rfs[a.name] for a in node.all_input_nodes if a.name in rfs]
        if not ins or node.op == "get_attr":
            continue
        if node.op == "output":
            rfs[node.name] = merge(ins)
            continue
        out_meta = node.meta.get("tensor_meta")
        if out_meta is None:
            continue  # not a tensor: x.size(), shapes
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        first = next(a for a in node.all_input_nodes if a.name in rfs)
        op = Op(node, gm, module, ndim, extent, _spatial(first.meta.get("tensor_meta"), ndim), _spatial(out_meta, ndim))
        rf = rule_for(node, module)(op, ins)
        if strict and "unknown op" in rf.note:
            raise ValueError(f"node {node.name}: {rf.note}; add a rule to rf_rules.MODULE_RULES/FUNCTION_RULES")
        rfs[node.name] = rf
    return rfs


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


def _trace(model: nn.Module, input_shape: Sequence[int]) -> tuple[fx.GraphModule, dict[str, RF]]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 3:
        raise ValueError(f"input_shape {shape} must be (N, C, *spatial), e.g. (1, 3, 224, 224)")
    gm = fx.symbolic_trace(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    with eval_mode(model), torch.no_grad():  # shape propagation must not update BN statistics
        rfs = receptive_fields(gm, torch.zeros(shape, dtype=dtype))
    return gm, rfs


def layer_receptive_fields(model: nn.Module, input_shape: Sequence[int]) -> dict[str, RF]:
    """Trace ``model`` and give the field of every node (see :func:`receptive_fields`)."""
    return _trace(model, input_shape)[1]


def receptive_field(model: nn.Module, input_shape: Sequence[int]) -> RF:
    """Receptive field of ``model``'s output for an input of ``input_shape`` = (N, C, *spatial)."""
    return _trace(model, input_shape)[1]["output"]
