"""Params and MACs of an arch in closed form, from :func:`edgecnn.plan.resolve` alone — no weights.

Search and NetAdapt cost thousands of candidates; building each one (let
alone tracing it) would dominate their run time. Every block kind has a
formula per :class:`~edgecnn.plan.LayerPlan` — its record's ``cost`` in
:mod:`edgecnn.kinds`, where the formulas are written out — with the same
conventions as the traced analysis (:mod:`edgecnn.analysis.handlers`).
``tests/test_spec_cost.py`` checks that both agree exactly, block by block,
on every zoo model.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecnn.arch import ArchSpec, parse
from edgecnn.kinds import kind_of
from edgecnn.plan import resolve


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
        params, macs = kind_of(p.spec.kind).cost(p)
        layers.append(LayerSpecCost(p.name, p.spec.kind, params, macs, p.out_size))
    return SpecCost(spec.format(), size, tuple(layers), sum(c.params for c in layers), sum(c.macs for c in layers))
