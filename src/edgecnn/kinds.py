"""One record per block kind of the arch format: how it builds, its widths, its residual, its cost, its channels.

The grammar of a kind (its tokens and defaults) is :data:`edgecnn.arch.KINDS`;
everything a kind *means* is its :class:`BlockKind` here, so that adding a
kind, or a tool that walks every kind (the planner, the builder, the
closed-form cost, inner-width pruning, latency grouping), touches one record:

========== ==================================================================
field      read by
========== ==================================================================
build      :class:`edgecnn.build.EdgeNet` (``BUILDERS``), the latency table
out_size   :func:`edgecnn.plan.resolve`: spatial size after the block
mid, se_on :func:`edgecnn.plan.resolve`: inner and SE squeeze widths
shortcut   :func:`edgecnn.plan.resolve` (``LayerPlan.residual``), the builder
check      :func:`edgecnn.plan.resolve`: shape rules (odd kernels, groups)
cost       :func:`edgecnn.analysis.spec_cost.cost_from_spec`
inner      :mod:`edgecnn.compress.prune_inner`: the conv making the inner channels, SE and input ties
folded_bn  :mod:`edgecnn.compress.fold_bn`: the arch of the block with its BN folded
latency    :mod:`edgecnn.latency.calibrate`: ``body`` or ``fixed`` group
========== ==================================================================

Costs follow the traced analysis (:mod:`edgecnn.analysis.handlers`): MACs of
conv/linear without bias, a conv costing ``H_out·W_out·C_out·(C_in/g)·k²``, a
transposed conv ``H_in·W_in·C_in·C_out·k²``; params = weights + biases + BN
scale and shift. With ``h·w`` the output pixels, ``h₀·w₀`` the input pixels,
``k`` the kernel, ``m`` the inner width and ``q`` the SE width:

* ir: expand ``h₀w₀·c_in·m`` (when ``m ≠ c_in``) + depthwise ``hw·m·k²``
  + SE ``2·m·q`` + project ``hw·m·c_out`` (MobileNetV2, Sandler et al. 2018, Table 1);
* ds: depthwise ``hw·c_in·k²`` + SE ``2·c_in·q`` + pointwise ``hw·c_in·c_out``
  (Howard et al. 2017, §3.1);
* basic: ``hw·k²·(c_in·m + m·c_out)`` + projection ``hw·c_in·c_out`` when
  the shape changes; bottleneck: ``h₀w₀·c_in·m + hw·k²·m² + hw·m·c_out`` +
  projection (He et al. 2016, Table 1).

Residuals (:meth:`BlockKind.residual`): an ``ir`` block adds its input only
when stride 1 and ``c_in = c_out`` (Sandler et al. 2018, §3.3), so a width
change silently removes its skip; ``basic``/``bottleneck`` keep a shortcut
when the shape changes (a 1×1 projection, or zero padding with ``padskip``).
The ``idskip`` flag asks for an identity skip explicitly: a block whose
widths or stride would drop it is a ``ValueError`` in :func:`edgecnn.plan.resolve`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from torch import nn

from edgecnn.arch import KINDS, BlockSpec, KindInfo
from edgecnn.blocks import (
    BasicBlock,
    Bottleneck,
    ConvBNAct,
    ConvTransposeBNAct,
    DepthwiseSeparable,
    GlobalAvgPool,
    InvertedResidual,
    LinearAct,
    same_padding,
    se_width,
)

Size = tuple[int, int]
Cost = tuple[int, int]  # (params, MACs)
Shortcut = Literal["identity", "conv", "pad"]


class Resolved(Protocol):
    """What builders and costs read of a resolved layer (:class:`edgecnn.plan.LayerPlan` is one)."""

    spec: BlockSpec
    cin: int
    cout: int
    mid: int | None
    squeeze: int
    in_size: Size | None
    out_size: Size | None
    classifier: bool


@dataclass(frozen=True)
class InnerChannels:
    """A block's inner (prunable) channels: made inside the block, read by no residual add."""

    producer: tuple[str, str]  # (conv, BN) module paths within the block whose filters make the inner channels
    squeeze_inside: bool = False  # the SE acts on the inner width (ir), so its hidden units shrink with it
    tied_to_input: bool = False  # m = c_in drops the producer: the inner channels are then the input's


@dataclass(frozen=True)
class BlockKind:
    """Everything the library knows about one block kind (see the module docstring for who reads what)."""

    name: str  # the kind token, a key of edgecnn.arch.KINDS
    build: Callable[[Resolved], nn.Module]  # the module of a resolved layer
    cost: Callable[[Resolved], Cost]  # closed-form (params, MACs); must equal the traced analysis
    out_size: Callable[[BlockSpec, Size], Size] | None  # H, W after the block; None: the output is a vector
    layout: Literal["map", "vector", "any"] = "map"  # the input it takes: a feature map, a (N, C) vector, either
    mid: Callable[[BlockSpec, int], int] | None = None  # inner width from the spec and c_in; None: no inner width
    se_on: Literal["", "in", "mid", "out"] = ""  # the width an SE squeezes ("" without an se token)
    shortcut: Callable[[BlockSpec, int, int], Shortcut | None] = lambda b, cin, cout: None  # residual path
    check: Callable[[BlockSpec, int], str | None] = lambda b, cin: None  # why the block cannot be built, or None
    inner: Mapping[bool, InnerChannels] = field(default_factory=dict)  # by pre-activation order; {}: not prunable
    latency_group: Literal["body", "fixed"] = "body"  # calibration group (edgecnn.latency.calibrate)
    folded_bn: Callable[[BlockSpec], tuple[str, dict[str, Any]] | None] = lambda b: None  # (BN path, spec changes)
    # of the block with that BN folded into the layer before it, when the arch has tokens for it (fold_bn)
    classifier_without_c: bool = False  # without c the block is the classifier (num_classes outputs)

    @property
    def grammar(self) -> KindInfo:
        """Tokens and defaults of this kind (:data:`edgecnn.arch.KINDS`)."""
        return KINDS[self.name]

    def residual(self, b: BlockSpec, cin: int, cout: int) -> bool:
        """Whether the built block adds a skip path around its body for these widths."""
        return self.shortcut(b, cin, cout) is not None

    def squeeze(self, b: BlockSpec, cin: int, mid: int | None, cout: int) -> int:
        """SE hidden width: ``make_divisible(width·se, 8)`` of the width the SE acts on (0 without SE)."""
        if not b.se or not self.se_on:
            return 0
        width = {"in": cin, "mid": mid, "out": cout}[self.se_on]
        assert width is not None
        return se_width(width, b.se)


# ---------------------------------------------------------------- spatial rules


def conv_out(size: int, kernel: int, stride: int = 1, dilation: int = 1, padding: int | None = None) -> int:
    """Output length of a conv/pool along one axis (PyTorch's formula, floor mode, "same" padding by default)."""
    pad = same_padding(kernel, dilation) if padding is None else padding
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _conv_size(b: BlockSpec, size: Size) -> Size:
    k, s, d = b.k or 1, b.s or 1, b.d or 1
    return (conv_out(size[0], k, s, d), conv_out(size[1], k, s, d))


def _pool_size(b: BlockSpec, size: Size) -> Size:
    k, s = b.k or 1, b.s or 1
    return (conv_out(size[0], k, s), conv_out(size[1], k, s))


def _up_size(b: BlockSpec, size: Size) -> Size:
    return (size[0] * (b.s or 1), size[1] * (b.s or 1))


def _same_size(b: BlockSpec, size: Size) -> Size:
    return size


# ---------------------------------------------------------------- widths, shortcuts, checks


def _mid_of_input(b: BlockSpec, cin: int) -> int:  # ir: e is a ratio of the input width
    return b.m if b.m is not None else max(1, int(round(cin * (b.e or 1.0))))


def _mid_of_output(b: BlockSpec, cin: int) -> int:  # basic / bottleneck: e is a ratio of c
    assert b.c is not None
    return b.m if b.m is not None else max(1, int(round(b.c * (b.e or 1.0))))


def _ir_shortcut(b: BlockSpec, cin: int, cout: int) -> Shortcut | None:
    # Sandler et al. 2018, §3.3: the identity only where shapes match; there is no projection
    return "identity" if b.skip != "none" and (b.s or 1) == 1 and cin == cout else None


def _resnet_shortcut(b: BlockSpec, cin: int, cout: int) -> Shortcut | None:
    if b.skip == "none":
        return None
    if (b.s or 1) == 1 and cin == cout:
        return "identity"
    return "pad" if b.skip == "pad" else "conv"


def _odd_kernel(b: BlockSpec, cin: int) -> str | None:
    return "residual blocks need an odd kernel (k3, k5, k7)" if (b.k or 1) % 2 == 0 else None


def _groups_divide(b: BlockSpec, cin: int) -> str | None:
    g = b.g or 1
    return f"groups g{g} must divide in ({cin}) and out ({b.c}) channels" if cin % g or (b.c or 0) % g else None


def _conv_folded(b: BlockSpec) -> tuple[str, dict[str, Any]] | None:
    # ConvBNAct without BN, with the conv's new bias; a pre-activation BN does not fold (it precedes the conv)
    return ("bn", {"bn": False, "bias": True}) if b.bn and not b.pre else None


def _fc_folded(b: BlockSpec) -> tuple[str, dict[str, Any]] | None:
    return ("bn", {"bn": False}) if b.bn else None  # LinearAct without BN has a biased Linear


# ---------------------------------------------------------------- builders


def _order(b: BlockSpec) -> Literal["pre", "post"]:
    return "pre" if b.pre else "post"


def _build_conv(p: Resolved) -> nn.Module:
    b = p.spec
    return ConvBNAct(p.cin, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1, groups=b.g or 1,
                     act=b.act or "relu", order=_order(b), bn=bool(b.bn), bias=bool(b.bias))  # fmt: skip


def _build_tconv(p: Resolved) -> nn.Module:
    b = p.spec
    return ConvTransposeBNAct(p.cin, p.cout, kernel=b.k or 4, stride=b.s or 2, dilation=b.d or 1, act=b.act or "relu")


def _build_ds(p: Resolved) -> nn.Module:
    b = p.spec
    return DepthwiseSeparable(p.cin, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1,
                              act=b.act or "relu", se_ratio=b.se or 0.0, gate=b.gate or "sigmoid",
                              order=_order(b))  # fmt: skip


def _build_ir(p: Resolved) -> nn.Module:
    b = p.spec
    assert p.mid is not None
    return InvertedResidual(p.cin, p.mid, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1,
                            act=b.act or "relu6", se_ratio=b.se or 0.0, gate=b.gate or "sigmoid",
                            skip=b.skip != "none")  # fmt: skip


def _build_resnet(cls: type[BasicBlock] | type[Bottleneck]) -> Callable[[Resolved], nn.Module]:
    def make(p: Resolved) -> nn.Module:
        b = p.spec
        assert p.mid is not None
        shortcut = {"none": "none", "pad": "pad"}.get(b.skip or "auto", "conv")  # auto, id: identity or projection
        return cls(p.cin, p.mid, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1, act=b.act or "relu",
                   order=_order(b), shortcut=shortcut, se_ratio=b.se or 0.0,  # type: ignore[arg-type]
                   gate=b.gate or "sigmoid")  # fmt: skip

    return make


def _build_maxpool(p: Resolved) -> nn.Module:
    return nn.MaxPool2d(p.spec.k or 3, p.spec.s, same_padding(p.spec.k or 1))


def _build_avgpool(p: Resolved) -> nn.Module:
    # count_include_pad=False: padded zeros do not dilute border averages
    return nn.AvgPool2d(p.spec.k or 2, p.spec.s, same_padding(p.spec.k or 1), count_include_pad=False)


def _build_fc(p: Resolved) -> nn.Module:
    if p.classifier:
        return nn.Linear(p.cin, p.cout)
    return LinearAct(p.cin, p.cout, act=p.spec.act or "linear", bn=bool(p.spec.bn))


# ---------------------------------------------------------------- closed-form costs


def conv_cost(cin: int, cout: int, k: int, hw: int, groups: int = 1, bn: bool = True, bias: bool = False) -> Cost:
    """(params, MACs) of a k×k conv producing ``hw`` output pixels, with its BN (γ, β) and bias."""
    w = k * k * (cin // groups) * cout
    return w + (cout if bias else 0) + (2 * cout if bn else 0), hw * w


def _se_cost(channels: int, squeeze: int) -> Cost:
    # two 1×1 convs with bias on a 1×1 map
    return (2 * channels * squeeze + squeeze + channels, 2 * channels * squeeze) if squeeze else (0, 0)


def _add(*parts: Cost) -> Cost:
    return sum(p for p, _ in parts), sum(m for _, m in parts)


def _area(size: Size | None) -> int:
    return size[0] * size[1] if size is not None else 1


def _cost_conv(p: Resolved) -> Cost:
    b = p.spec
    params, macs = conv_cost(p.cin, p.cout, b.k or 1, _area(p.out_size), b.g or 1, bn=False, bias=bool(b.bias))
    return params + (2 * (p.cin if b.pre else p.cout) if b.bn else 0), macs


def _cost_tconv(p: Resolved) -> Cost:  # MACs per *input* pixel
    w = (p.spec.k or 1) ** 2 * p.cin * p.cout
    return w + 2 * p.cout, _area(p.in_size) * w


def _cost_ds(p: Resolved) -> Cost:
    # pre-activation puts each BN on the conv's input: same width for dw, c_in for pw
    hw, k = _area(p.out_size), p.spec.k or 1
    pw_bn = 2 * (p.cin if p.spec.pre else p.cout)
    dw = conv_cost(p.cin, p.cin, k, hw, p.cin)
    pw = conv_cost(p.cin, p.cout, 1, hw, bn=False)
    return _add(dw, _se_cost(p.cin, p.squeeze), pw, (pw_bn, 0))


def _cost_ir(p: Resolved) -> Cost:
    assert p.mid is not None
    hw, k, m = _area(p.out_size), p.spec.k or 1, p.mid
    expand = conv_cost(p.cin, m, 1, _area(p.in_size)) if m != p.cin else (0, 0)
    return _add(expand, conv_cost(m, m, k, hw, m), _se_cost(m, p.squeeze), conv_cost(m, p.cout, 1, hw))


def _shortcut_cost(p: Resolved, pre: bool) -> Cost:
    # a projection shortcut is a strided 1×1 conv (+ BN in post order); identity and "pad" cost nothing
    if _resnet_shortcut(p.spec, p.cin, p.cout) != "conv":
        return (0, 0)
    return conv_cost(p.cin, p.cout, 1, _area(p.out_size), bn=not pre)


def _cost_basic(p: Resolved) -> Cost:
    assert p.mid is not None
    hw, k, m, pre = _area(p.out_size), p.spec.k or 1, p.mid, bool(p.spec.pre)
    # BN(m) between the convs; BN(c_out) after (post) or BN(c_in) before (pre)
    body = _add(conv_cost(p.cin, m, k, hw, bn=False), conv_cost(m, p.cout, k, hw, bn=False),
                (2 * m + 2 * (p.cin if pre else p.cout), 0))  # fmt: skip
    return _add(body, _se_cost(p.cout, p.squeeze), _shortcut_cost(p, pre))


def _cost_bottleneck(p: Resolved) -> Cost:
    assert p.mid is not None
    hw_in, hw, k, m, pre = _area(p.in_size), _area(p.out_size), p.spec.k or 1, p.mid, bool(p.spec.pre)
    if pre:  # BN(c_in) → 1×1, BN(m) → k×k, BN(m) → 1×1
        body = _add(conv_cost(p.cin, m, 1, hw_in, bn=False), conv_cost(m, m, k, hw, bn=False),
                    conv_cost(m, p.cout, 1, hw, bn=False), (2 * p.cin + 4 * m, 0))  # fmt: skip
    else:
        body = _add(conv_cost(p.cin, m, 1, hw_in), conv_cost(m, m, k, hw), conv_cost(m, p.cout, 1, hw))
    return _add(body, _se_cost(p.cout, p.squeeze), _shortcut_cost(p, pre))


def _cost_fc(p: Resolved) -> Cost:
    w = p.cin * p.cout
    bn = bool(p.spec.bn) and not p.classifier
    return w + (2 * p.cout if bn else p.cout), w


def _free(p: Resolved) -> Cost:  # pooling, global pooling, dropout
    return (0, 0)


# ---------------------------------------------------------------- inner channels (pruning)

# Which weights move with an inner channel is read from the graph (edgecnn.compress.groups); the record says
# which conv makes the channels (importance) and the kind's rules. Pre-activation: the BN after a conv is the
# first layer of the next ConvBNAct.
_IR_INNER = InnerChannels(("expand.conv", "expand.bn"), squeeze_inside=True, tied_to_input=True)
_BASIC_INNER = {False: InnerChannels(("body.0.conv", "body.0.bn")), True: InnerChannels(("body.0", "body.1.bn"))}
_BOTTLENECK_INNER = _BASIC_INNER  # the first 1×1 makes the inner channels, as the basic block's first k×k


# ---------------------------------------------------------------- the registry

_RESNET = dict(out_size=_conv_size, mid=_mid_of_output, se_on="out", shortcut=_resnet_shortcut, check=_odd_kernel)
BLOCK_KINDS: dict[str, BlockKind] = {
    k.name: k
    for k in (
        BlockKind("conv", _build_conv, _cost_conv, _conv_size, check=_groups_divide, latency_group="fixed",
                  folded_bn=_conv_folded),  # fmt: skip
        BlockKind("tconv", _build_tconv, _cost_tconv, _up_size),
        BlockKind("ds", _build_ds, _cost_ds, _conv_size, se_on="in"),
        BlockKind("ir", _build_ir, _cost_ir, _conv_size, mid=_mid_of_input, se_on="mid", shortcut=_ir_shortcut,
                  check=_odd_kernel, inner={False: _IR_INNER}),  # fmt: skip
        BlockKind("basic", _build_resnet(BasicBlock), _cost_basic, inner=_BASIC_INNER,
                  **_RESNET),  # type: ignore[arg-type]
        BlockKind("bottleneck", _build_resnet(Bottleneck), _cost_bottleneck, inner=_BOTTLENECK_INNER,
                  **_RESNET),  # type: ignore[arg-type]
        BlockKind("maxpool", _build_maxpool, _free, _pool_size),
        BlockKind("avgpool", _build_avgpool, _free, _pool_size),
        BlockKind("gap", lambda p: GlobalAvgPool(), _free, None, latency_group="fixed"),
        BlockKind("fc", _build_fc, _cost_fc, None, layout="vector", latency_group="fixed", classifier_without_c=True,
                  folded_bn=_fc_folded),  # fmt: skip
        BlockKind("dropout", lambda p: nn.Dropout(p.spec.p or 0.0), _free, _same_size, layout="any",
                  latency_group="fixed"),  # fmt: skip
    )
}
"""Block kind name -> its record; the keys are exactly those of :data:`edgecnn.arch.KINDS` (a test checks)."""


def kind_of(name: str) -> BlockKind:
    """The record of block kind ``name``; ValueError listing the valid kinds otherwise."""
    try:
        return BLOCK_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown block kind {name!r}; valid: {', '.join(BLOCK_KINDS)}") from None
