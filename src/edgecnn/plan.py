"""Resolve an arch spec into concrete layers: channels, inner widths and spatial sizes.

This is the pure shape maths shared by the model builder (:mod:`edgecnn.build`),
the cost model and the latency predictor: they all read the same
:class:`LayerPlan` list, so a search or NetAdapt loop can cost thousands of
candidates without allocating a single weight.

Conventions: convs and pools use "same" padding ``(k−1)/2·d`` so a stride-s
layer maps ``H`` to ``⌊(H + 2p − d(k−1) − 1)/s⌋ + 1`` (= ``⌈H/s⌉`` for odd k);
a transposed conv maps ``H`` to ``s·H``.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecnn.arch import ArchSpec, BlockSpec, as_spec
from edgecnn.kinds import conv_out, kind_of
from edgecnn.limits import MAX_CHANNELS, MAX_INPUT, MAX_LAYERS

__all__ = ["LayerPlan", "conv_out", "output_stride", "resolve"]

Size = tuple[int, int]


@dataclass(frozen=True)
class LayerPlan:
    """One block of a network after repeats are expanded and widths resolved."""

    index: int  # position of the block in the arch string
    repeat: int  # which repeat of that block (0 = the first, which carries the stride)
    spec: BlockSpec  # the block itself, with r=1 and this repeat's stride
    cin: int  # input channels (features, once flat)
    cout: int  # output channels (features, once flat)
    mid: int | None  # inner width of the kinds that have one (ir, basic, ...; BlockKind.mid), else None
    squeeze: int  # SE hidden width, 0 without SE
    in_size: Size | None  # input H, W (None when unknown or flat)
    out_size: Size | None  # output H, W (None when unknown or flat)
    flat: bool  # the output is a (N, C) vector
    classifier: bool = False  # the final fc whose width is num_classes
    position: int = 0  # index in the expanded list = module index in EdgeNet.blocks
    residual: bool = False  # the block adds a skip path around its body (ir: only at stride 1 and c_in = c_out)

    @property
    def name(self) -> str:
        """``blocks.<i>``: the module path of this layer in the built network."""
        return f"blocks.{self.position}"


class _Where:
    """``block 3 'ir_c24'`` for error messages, formatted only when an error is raised (resolve is a hot path)."""

    __slots__ = ("index", "block")

    def __init__(self, index: int, block: BlockSpec) -> None:
        self.index, self.block = index, block

    def __format__(self, spec: str) -> str:
        return f"block {self.index} {self.block.format()!r}"


def _inner_width(b: BlockSpec, cin: int) -> int | None:
    mid = kind_of(b.kind).mid
    return None if mid is None else mid(b, cin)


def resolve(
    arch: str | ArchSpec,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    input_size: int | Size | None = None,
) -> list[LayerPlan]:
    """Expand repeats and resolve every block's channels (and sizes, when ``input_size`` is given).

    Raises ValueError for networks that cannot be built: a linear layer before
    global pooling, a spatial layer after it, a classifier ``fc`` that is not
    last, groups that do not divide the channels, an input too small for the
    strides.
    """
    spec = as_spec(arch)
    if num_classes < 1 or in_chans < 1:
        raise ValueError(f"num_classes and in_chans must be positive, got {num_classes}, {in_chans}")
    size: Size | None
    if input_size is None:
        size = None
    elif isinstance(input_size, int):
        size = (input_size, input_size)
    else:
        size = (int(input_size[0]), int(input_size[1]))
    if size is not None and min(size) < 1:
        raise ValueError(f"input size must be positive, got {size}")
    _check_bounds(spec, num_classes, in_chans, size)
    max_ch = MAX_CHANNELS.value()

    plans: list[LayerPlan] = []
    ch, flat = in_chans, False
    last = len(spec.blocks) - 1
    for index, block in enumerate(spec.blocks):
        where = _Where(index, block)
        reps = block.r or 1
        for rep in range(reps):
            b = block if reps == 1 else block.with_(r=1, s=block.s if rep == 0 else 1)
            kind = kind_of(b.kind)
            classifier = kind.classifier_without_c and b.c is None
            if classifier and index != last:
                raise ValueError(f"{where}: an fc without c is the classifier and must be the last block")
            if kind.layout == "vector" and not flat:
                raise ValueError(f"{where}: {b.kind} needs a flat input; put 'gap' before it")
            if flat and kind.layout == "map":
                raise ValueError(f"{where}: a spatial block cannot follow global pooling")
            problem = kind.check(b, ch)
            if problem is not None:
                raise ValueError(f"{where}: {problem}")
            mid = _inner_width(b, ch)
            cout = num_classes if classifier else (b.c if b.c is not None else ch)
            if max(cout, mid or 0) > max_ch:  # an expansion e can blow a width up
                MAX_CHANNELS.check(max(cout, mid or 0), f"{where}")
            squeeze = kind.squeeze(b, ch, mid, cout)
            shortcut = kind.shortcut(b, ch, cout)
            if b.skip == "id" and shortcut != "identity":
                raise ValueError(_broken_skip(where, b, ch, cout))
            new_flat = flat or kind.out_size is None
            out_size: Size | None = None
            in_size = None if flat else size
            if size is not None and not new_flat:
                assert kind.out_size is not None
                out_size = kind.out_size(b, size)
                if min(out_size) < 1:
                    raise ValueError(
                        f"{where}: input {size[0]}×{size[1]} is too small (output would be "
                        f"{out_size[0]}×{out_size[1]}); use a larger input or fewer strides"
                    )
            plans.append(
                LayerPlan(index, rep, b, ch, cout, mid, squeeze, in_size, out_size, new_flat, classifier, len(plans),
                          shortcut is not None)  # fmt: skip
            )
            ch, flat = cout, new_flat
            size = None if new_flat else out_size
    return plans


def _broken_skip(where: _Where, b: BlockSpec, cin: int, cout: int) -> str:
    """The message for an ``idskip`` block whose shapes rule out an identity skip, with the fix."""
    if (b.s or 1) != 1:
        why, fix = f"its stride is {b.s}", "use s1 or drop idskip"
    else:
        why, fix = f"its input has {cin} channels and its output {cout}", f"set c{cin} or drop idskip"
    return f"{where}: idskip asks for an identity skip, but {why}; {fix}"


def _check_bounds(spec: ArchSpec, num_classes: int, in_chans: int, size: Size | None) -> None:
    """Refuse absurd networks before expanding them (a repeat of 10⁸ would take minutes to expand)."""
    MAX_LAYERS.check(sum(b.r or 1 for b in spec.blocks), "the arch (repeats expanded)")
    MAX_CHANNELS.check(max(num_classes, in_chans), "num_classes / in_chans")
    if size is not None:
        MAX_INPUT.check(max(size), "input size")
    max_ch, max_px = MAX_CHANNELS.value(), MAX_INPUT.value()
    for index, b in enumerate(spec.blocks):
        if max(b.c or 0, b.m or 0) > max_ch:
            MAX_CHANNELS.check(max(b.c or 0, b.m or 0), f"{_Where(index, b)}")
        if max(b.k or 0, b.s or 0, b.d or 0) > max_px:
            MAX_INPUT.check(max(b.k or 0, b.s or 0, b.d or 0), f"{_Where(index, b)}: kernel/stride/dilation")


def output_stride(plans: list[LayerPlan]) -> int:
    """Product of the strides of the spatial layers (an upsampling kind's stride divides)."""
    num, den = 1, 1
    for p in plans:
        if p.flat:
            break
        if kind_of(p.spec.kind).upsamples:
            den *= p.spec.s or 1
        elif p.spec.s:
            num *= p.spec.s
    return num // den if num % den == 0 else round(num / den)
