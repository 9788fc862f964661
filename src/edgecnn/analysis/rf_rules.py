"""Receptive-field rules per op: how one fx node maps its inputs' :class:`RF` to its output's.

The graph walk of :mod:`edgecnn.analysis.receptive` calls :func:`rule_for`
on every node and applies the rule to its inputs' fields; the per-axis
algebra (Araujo et al. 2019, *Computing Receptive Fields of Convolutional
Neural Networks*, Distill) is :mod:`edgecnn.analysis.rf_math`. A plain conv
or pool is ``conv_rule`` with its kernel, stride, padding and dilation read
off the module or the functional call. Which op gets which rule is declared
once, in the op table :mod:`edgecnn.ops` (its *field role*: ``keep``,
``conv``, ``pad``, ...); :data:`FIELD_RULES` maps each role to its rule here.

Rules beyond plain convs and pools, one function each below:

* branches (``+``, ``*``, ``cat``, any op of several inputs) take the *union*
  of their inputs' first-output intervals -- the largest field when the
  branches' fields are nested, as in a residual block with a 1×1 stride-2
  projection or an Inception-style concat;
* global pooling, a reduction over the spatial axes, a flatten of a map larger
  than 1×1, or a Linear over a spatial axis make the field the *whole input*
  (``whole=True``, size = the input's extent); a branch merge where some
  inputs are whole and others are not -- an SE gate ``x * gate(pool(x))``,
  attention weights, a broadcast pooled feature -- keeps the union of the
  spatial inputs' fields (the *conv path*) and sets ``global_context=True``:
  the output also depends on the whole image, but the field of the
  convolutions is not widened by it (:func:`~edgecnn.analysis.rf_math.merge`);
* a transposed conv (stride s) divides the jump: ``J_l = J_{l-1}/s``,
  ``R_l = R_{l-1} + (k-1)·d·J_{l-1}/s``, ``start_l = start_{l-1} +
  (p - (k-1)/2·d)·J_{l-1}/s``. The interval is then a continuous hull (sizes
  may be fractional); for ``d = 1`` its integer points are exactly the inputs
  that feed the output;
* ops that keep the spatial shape (BN, activations, dropout, channel
  shuffles, ...) keep the field; an op we do not know that *changes* the
  spatial shape is taken as whole input, with a note (``strict=True`` raises).

Padding modes other than zeros are treated as zero padding (the hull of a
reflected field is the same or smaller).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from edgecnn.analysis.rf_math import RF, add_note, as_num, conv_rule, conv_transpose_rule, merge, whole_rf
from edgecnn.graph import Graph
from edgecnn.ops import OPS, OpTable


@dataclass(slots=True)
class Op:
    """What a rule may look at for one fx node (built by :func:`edgecnn.analysis.receptive.receptive_fields`)."""

    node: fx.Node
    gm: Graph  # the traced graph (its nodes carry shapes; resolves weights of functional convs)
    module: nn.Module | None  # the called module (call_module nodes)
    ndim: int  # spatial axes of the network input
    extent: tuple[int, ...]  # spatial size of the network input
    in_spatial: tuple[int, ...] | None  # spatial size of the first tensor input (None when flat)
    out_spatial: tuple[int, ...] | None  # spatial size of the output (None when flat)
    in_axes: tuple[int, ...] | None = None  # tensor axes of the first input that hold the spatial axes, in order
    # (the trailing ones, unless a permute moved them: (1, 2) for an NHWC tensor); None when flat
    ops: OpTable = OPS  # the op table the rules were chosen from (custom ops included)


def _tuple(v: object, n: int) -> tuple[int, ...]:
    if type(v) is tuple and len(v) == n and all(type(x) is int for x in v):
        return v  # a module's kernel_size/stride/...: already the answer
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return (int(v[0]),) * n
        return tuple(int(x) for x in v)[-n:]
    return (int(v),) * n  # type: ignore[call-overload]


def _same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    # PyTorch's padding="same" puts the smaller half on the left
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))


def _conv_geometry(op: Op, k: object, s: object, p: object, d: object) -> tuple[tuple[int, ...], ...]:
    n = op.ndim
    kernel, stride, dilation = _tuple(k, n), _tuple(s if s is not None else k, n), _tuple(d, n)
    if p == "same":
        padding = _same_padding(kernel, dilation)
    elif p == "valid":
        padding = (0,) * n
    else:
        padding = _tuple(p, n)
    return kernel, stride, padding, dilation


Rule = Callable[[Op, list[RF]], RF]


def generic_rule(op: Op, ins: list[RF]) -> RF:
    """Pointwise when the spatial shape is kept; a spatial reduction/flatten otherwise."""
    rf = merge(ins)
    if rf.whole or op.out_spatial == op.in_spatial:
        return rf
    if op.in_spatial is None or math.prod(op.in_spatial) == 1:
        return rf  # already flat or 1×1: nothing left to mix
    what = op.node.target if isinstance(op.node.target, str) else getattr(op.node.target, "__name__", "op")
    if op.out_spatial is None or all(o == 1 for o in op.out_spatial) or _is_reduction(op):
        return whole_rf(op.extent)
    return whole_rf(op.extent, note=f"unknown op {what!r} changes the spatial shape; taken as whole input")


def _is_reduction(op: Op) -> bool:
    """Whether the op's family says a change of the spatial shape is a reduction (mean, flatten, view, adaptive
    pool): whole input, no note."""
    fam = op.ops.family(op.node.op, op.node.target, op.module)
    return fam is not None and fam.field in ("reduce", "adaptive_pool")


def _module_geometry(op: Op) -> tuple[tuple[int, ...], ...]:
    """Kernel, stride, padding and dilation of a conv-like module, read off its attributes (a custom op's too)."""
    m: Any = op.module
    stride, padding, dilation = getattr(m, "stride", 1), getattr(m, "padding", 0), getattr(m, "dilation", 1)
    return _conv_geometry(op, m.kernel_size, stride, padding, dilation)


def _conv_module(op: Op, ins: list[RF]) -> RF:
    return conv_rule(ins[0], *_module_geometry(op))


def _tconv_module(op: Op, ins: list[RF]) -> RF:
    return add_note(conv_transpose_rule(ins[0], *_module_geometry(op)), "transposed conv: continuous hull")


def _pool_module(op: Op, ins: list[RF]) -> RF:
    return conv_rule(ins[0], *_module_geometry(op))  # AvgPool has no dilation: 1


def _adaptive_pool(op: Op, ins: list[RF]) -> RF:
    """Whole input unless every axis keeps its size or is divided evenly (then a plain k = s = in/out pool)."""
    rf = ins[0]
    if rf.whole or op.in_spatial is None or op.out_spatial is None:
        return generic_rule(op, ins)
    if op.in_spatial == op.out_spatial:
        return rf
    if any(i % o for i, o in zip(op.in_spatial, op.out_spatial)) or all(o == 1 for o in op.out_spatial):
        return whole_rf(op.extent) if all(o == 1 for o in op.out_spatial) else whole_rf(
            op.extent, note="adaptive pool with uneven bins; taken as whole input")
    k = tuple(i // o for i, o in zip(op.in_spatial, op.out_spatial))
    return conv_rule(rf, k, k, (0,) * op.ndim, (1,) * op.ndim)


def _linear(op: Op, ins: list[RF]) -> RF:
    rf = ins[0]
    rank = len(op.node.all_input_nodes[0].meta["tensor_meta"].shape) if op.in_axes else 0
    if not rf.whole and op.in_axes and op.in_spatial and rank - 1 in op.in_axes and op.in_spatial[-1] > 1:
        return whole_rf(op.extent, note="Linear over a spatial axis")
    return rf


def _upsample(op: Op, ins: list[RF], mode: str) -> RF:
    """Nearest: ``J /= f``; (bi)linear adds one input tap per axis (two taps, half-pixel centres)."""
    rf = ins[0]
    if rf.whole or op.in_spatial is None or op.out_spatial is None:
        return generic_rule(op, ins)
    taps = {"nearest": 1, "nearest-exact": 1, "linear": 2, "bilinear": 2, "trilinear": 2, "bicubic": 4}.get(mode)
    if taps is None:
        return whole_rf(op.extent, note=f"interpolation mode {mode!r} unknown")
    size, jump, start = [], [], []
    for r, j, c, i, o in zip(rf.size, rf.jump, rf.start, op.in_spatial, op.out_spatial):
        f = Fraction(o, i)
        size.append(as_num(r + (taps - 1) * j))
        jump.append(as_num(j / f))
        shift = 0 if taps == 1 else (1 / (2 * f) - Fraction(1, 2)) * j  # half-pixel source coordinate of output 0
        start.append(as_num(c + shift))
    return add_note(replace(rf, size=tuple(size), jump=tuple(jump), start=tuple(start)), "upsampling: hull")


def _upsample_module(op: Op, ins: list[RF]) -> RF:
    return _upsample(op, ins, str(getattr(op.module, "mode", "nearest")))


def _pad(op: Op, ins: list[RF], pads: Sequence[int]) -> RF:
    """Padding shifts the first output onto a padded position: ``start −= left·J`` (a crop when negative)."""
    rf = ins[0]
    if rf.whole:
        return rf
    start = list(rf.start)
    for axis in range(op.ndim):  # pads run from the last axis backwards, (left, right) pairs
        pair = op.ndim - 1 - axis
        if 2 * pair < len(pads):
            start[axis] = as_num(start[axis] - pads[2 * pair] * rf.jump[axis])
    return replace(rf, start=tuple(start))


def _pad_module(op: Op, ins: list[RF]) -> RF:
    return _pad(op, ins, list(op.module.padding))  # type: ignore[union-attr]  # same (left, right, top, bottom) order as F.pad


def _getitem(op: Op, ins: list[RF]) -> RF:
    """``x[..., a::s, b::t]`` on spatial axes is a 1-tap pool: ``start += a·J``, ``J *= s``."""
    rf = ins[0]
    index = op.node.args[1]
    src = op.node.args[0]
    if rf.whole or not isinstance(src, fx.Node) or not isinstance(src.meta.get("tensor_meta"), TensorMetadata):
        return rf  # an element of a tuple output (split, max_pool with indices): same field
    items = index if isinstance(index, tuple) else (index,)
    if any(i is None or isinstance(i, (int, fx.Node)) for i in items) or items.count(Ellipsis) > 1:
        return generic_rule(op, ins)
    rank = len(src.meta["tensor_meta"].shape)
    if Ellipsis in items:
        e = items.index(Ellipsis)
        items = items[:e] + (slice(None),) * (rank - len(items) + 1) + items[e + 1:]
    items = items + (slice(None),) * (rank - len(items))
    start, jump = list(rf.start), list(rf.jump)
    for axis in range(op.ndim):
        sl = items[op.in_axes[axis] if op.in_axes else rank - op.ndim + axis]
        n = op.in_spatial[axis] if op.in_spatial else 1
        a, _, step = sl.indices(n)
        start[axis] = as_num(start[axis] + a * jump[axis])
        jump[axis] = as_num(jump[axis] * step)
    return replace(rf, start=tuple(start), jump=tuple(jump))


def _bind(fn: Callable[..., object], node: fx.Node) -> dict[str, object]:
    return inspect.signature(fn).bind(*node.args, **node.kwargs).arguments


def _f_conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): ...  # noqa: E501 signature only
def _f_tconv(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1): ...
def _f_pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _f_avg(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None): ...
def _f_interp(input, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None, antialias=False): ...
def _f_pad(input, pad, mode="constant", value=None): ...


def _weight_shape(op: Op, w: object) -> tuple[int, ...]:
    if isinstance(w, torch.Tensor):
        return tuple(w.shape)
    meta = w.meta.get("tensor_meta") if isinstance(w, fx.Node) else None
    if isinstance(meta, TensorMetadata):
        return tuple(int(s) for s in meta.shape)
    if isinstance(w, fx.Node) and w.op == "get_attr":  # a parameter the shape pass did not record
        obj = op.gm.attr(w)
        if isinstance(obj, torch.Tensor):
            return tuple(obj.shape)
    raise ValueError("functional conv whose weight shape is unknown; trace with example inputs")


def _functional_conv(op: Op, ins: list[RF]) -> RF:
    a = _bind(_f_conv, op.node)
    k = _weight_shape(op, a["weight"])[2:]
    return conv_rule(ins[0], *_conv_geometry(op, k, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1)))


def _functional_tconv(op: Op, ins: list[RF]) -> RF:
    a = _bind(_f_tconv, op.node)
    k = _weight_shape(op, a["weight"])[2:]
    geo = _conv_geometry(op, k, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1))
    return add_note(conv_transpose_rule(ins[0], *geo), "transposed conv: continuous hull")


def _functional_pool(op: Op, ins: list[RF]) -> RF:
    a = _bind(_f_pool, op.node)
    return conv_rule(ins[0], *_conv_geometry(op, a["kernel_size"], a.get("stride"), a.get("padding", 0), a.get("dilation", 1)))


def _functional_avg(op: Op, ins: list[RF]) -> RF:
    a = _bind(_f_avg, op.node)
    return conv_rule(ins[0], *_conv_geometry(op, a["kernel_size"], a.get("stride"), a.get("padding", 0), 1))


def _whole(op: Op, ins: list[RF]) -> RF:
    """The output depends on the whole input (a custom op declared ``field="whole"``)."""
    rf = merge(ins)
    return rf if rf.whole else whole_rf(op.extent)


FIELD_RULES: dict[str, tuple[Rule, Rule]] = {
    "keep": (generic_rule, generic_rule),
    "reduce": (generic_rule, generic_rule),
    "whole": (_whole, _whole),
    "conv": (_conv_module, _functional_conv),
    "conv_transpose": (_tconv_module, _functional_tconv),
    "max_pool": (_pool_module, _functional_pool),
    "avg_pool": (_pool_module, _functional_avg),
    "adaptive_pool": (_adaptive_pool, _adaptive_pool),
    "linear": (_linear, _linear),
    "interpolate": (_upsample_module,
                    lambda op, ins: _upsample(op, ins, str(_bind(_f_interp, op.node).get("mode", "nearest")))),
    "pad": (_pad_module, lambda op, ins: _pad(op, ins, list(_bind(_f_pad, op.node)["pad"]))),  # type: ignore[arg-type]
    "slice": (generic_rule, _getitem),
}  # fmt: skip
"""Field role (:data:`edgecnn.ops.FIELD_ROLES`) -> (rule for a module call, rule for a function or method call).
Which op has which role: :mod:`edgecnn.ops`."""


def rule_for(node: fx.Node, module: nn.Module | None, ops: OpTable = OPS) -> Rule:
    """The rule for ``node``: its family's field role in ``ops`` (a custom op's own rule), else :func:`generic_rule`."""
    fam = ops.family(node.op, node.target, module)
    if fam is None:
        return generic_rule
    if callable(fam.field):
        return fam.field
    return FIELD_RULES[fam.field][0 if module is not None else 1]
