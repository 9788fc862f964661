"""Params and MACs of an arch in closed form, from :func:`edgecnn.plan.resolve` alone — no weights.

Search and NetAdapt cost thousands of candidates; building each one (let
alone tracing it) would dominate their run time. Every block kind has a
formula per :class:`~edgecnn.plan.LayerPlan`, written from the layers
:mod:`edgecnn.build` creates, with the same conventions as the traced
analysis (:mod:`edgecnn.analysis.handlers`): MACs of conv/linear without
bias, a conv costing ``H_out·W_out·C_out·(C_in/g)·k²``, a transposed conv
``H_in·W_in·C_in·C_out·k²``; params = weights + biases + BN scale and shift.
``tests/test_spec_cost.py`` checks that both agree exactly, block by block,
on every zoo model.

With ``h·w`` the output pixels, ``h₀·w₀`` the input pixels, ``k`` the
kernel, ``m`` the inner width and ``q`` the SE width:

* ir: expand ``h₀w₀·c_in·m`` (when ``m ≠ c_in``) + depthwise ``hw·m·k²``
  + SE ``2·m·q`` + project ``hw·m·c_out`` (MobileNetV2, Sandler et al. 2018, Table 1);
* ds: depthwise ``hw·c_in·k²`` + SE ``2·c_in·q`` + pointwise ``hw·c_in·c_out``
  (Howard et al. 2017, §3.1);
* basic: ``hw·k²·(c_in·m + m·c_out)`` + projection ``hw·c_in·c_out`` when
  the shape changes; bottleneck: ``h₀w₀·c_in·m + hw·k²·m² + hw·m·c_out`` +
  projection (He et al. 2016, Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecnn.arch import ArchSpec, parse
from edgecnn.plan import LayerPlan, resolve


@dataclass(frozen=True)
class LayerSpecCost:
    """Cost of one resolved block (one entry of ``EdgeNet.blocks``)."""

    name: str  # "blocks.<i>", the module path in the built network
    kind: str  # block kind (conv, ir, ds, basic, bottleneck, fc, ...)
    params: int  # weights + biases + BN affine parameters
    macs: int  # conv/linear multiply-accumulates, bias excluded
    out_size: tuple[int, int] | None  # output H, W (None once flat)


@dataclass(frozen=True)
class SpecCost:
    """Closed-form cost of a whole arch at one input size."""

    arch: str  # canonical arch string
    input_size: tuple[int, int]  # H, W
    layers: tuple[LayerSpecCost, ...]  # one per expanded block
    params: int  # total parameters
    macs: int  # total MACs (FLOPs = 2·MACs)

    @property
    def flops(self) -> int:
        """2·MACs."""
        return 2 * self.macs


def _conv(cin: int, cout: int, k: int, hw: int, groups: int = 1, bn: bool = True, bias: bool = False) -> tuple[int, int]:
    w = k * k * (cin // groups) * cout
    return w + (cout if bias else 0) + (2 * cout if bn else 0), hw * w


def _se(channels: int, squeeze: int) -> tuple[int, int]:
    # two 1×1 convs with bias on a 1×1 map
    return 2 * channels * squeeze + squeeze + channels, 2 * channels * squeeze


def _add(*parts: tuple[int, int]) -> tuple[int, int]:
    return sum(p for p, _ in parts), sum(m for _, m in parts)


def _area(size: tuple[int, int] | None) -> int:
    return size[0] * size[1] if size is not None else 1


def _block_cost(p: LayerPlan) -> tuple[int, int]:
    b, kind = p.spec, p.spec.kind
    hw_in, hw = _area(p.in_size), _area(p.out_size)
    k = b.k or 1
    if kind == "conv":
        pre = bool(b.pre)
        params, macs = _conv(p.cin, p.cout, k, hw, b.g or 1, bn=False, bias=bool(b.bias))
        return params + (2 * (p.cin if pre else p.cout) if b.bn else 0), macs
    if kind == "tconv":  # MACs per *input* pixel
        w = k * k * p.cin * p.cout
        return w + 2 * p.cout, hw_in * w
    se = _se(p.mid if kind == "ir" else (p.cin if kind == "ds" else p.cout), p.squeeze) if p.squeeze else (0, 0)
    if kind == "ds":  # pre-activation puts each BN on the conv's input: same width for dw, c_in for pw
        pw_bn = 2 * (p.cin if b.pre else p.cout)
        dw = _conv(p.cin, p.cin, k, hw, p.cin)
        pw = _conv(p.cin, p.cout, 1, hw, bn=False)
        return _add(dw, se, pw, (pw_bn, 0))
    if kind == "ir":
        assert p.mid is not None
        expand = _conv(p.cin, p.mid, 1, hw_in) if p.mid != p.cin else (0, 0)
        return _add(expand, _conv(p.mid, p.mid, k, hw, p.mid), se, _conv(p.mid, p.cout, 1, hw))
    if kind in ("basic", "bottleneck"):
        return _residual_cost(p, hw_in, hw, k, se)
    if kind == "fc":
        w = p.cin * p.cout
        bn = bool(b.bn) and not p.classifier
        return w + (2 * p.cout if bn else p.cout), w
    return 0, 0  # pooling, gap, dropout


def _residual_cost(p: LayerPlan, hw_in: int, hw: int, k: int, se: tuple[int, int]) -> tuple[int, int]:
    b, pre = p.spec, bool(p.spec.pre)
    assert p.mid is not None
    m = p.mid
    if p.spec.kind == "basic":  # BN(m) between the convs; BN(c_out) after (post) or BN(c_in) before (pre)
        body = _add(_conv(p.cin, m, k, hw, bn=False), _conv(m, p.cout, k, hw, bn=False),
                    (2 * m + 2 * (p.cin if pre else p.cout), 0))  # fmt: skip
    else:
        if pre:  # BN(c_in) → 1×1, BN(m) → k×k, BN(m) → 1×1
            body = _add(_conv(p.cin, m, 1, hw_in, bn=False), _conv(m, m, k, hw, bn=False),
                        _conv(m, p.cout, 1, hw, bn=False), (2 * p.cin + 4 * m, 0))  # fmt: skip
        else:
            body = _add(_conv(p.cin, m, 1, hw_in), _conv(m, m, k, hw), _conv(m, p.cout, 1, hw))
    shortcut = (0, 0)
    stride = b.s or 1
    if b.skip == "auto" and (stride != 1 or p.cin != p.cout):  # projection; "pad" and "none" cost nothing
        shortcut = _conv(p.cin, p.cout, 1, hw, bn=not pre)
    return _add(body, se, shortcut)


def cost_from_spec(
    arch: str | ArchSpec, input_size: int | tuple[int, int] = 224, num_classes: int = 1000, in_chans: int = 3
) -> SpecCost:
    """Params and MACs of ``arch`` at ``input_size`` without building it (equal to :func:`analyze`'s).

    Strings are parsed once and cached; pass an :class:`ArchSpec` when a
    search mutates specs directly.
    """
    spec = parse(arch) if isinstance(arch, str) else arch  # parse caches by string and by block
    size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    plans = resolve(spec, num_classes=num_classes, in_chans=in_chans, input_size=size)
    layers = []
    for p in plans:
        params, macs = _block_cost(p)
        layers.append(LayerSpecCost(p.name, p.spec.kind, params, macs, p.out_size))
    return SpecCost(spec.format(), size, tuple(layers), sum(c.params for c in layers), sum(c.macs for c in layers))
