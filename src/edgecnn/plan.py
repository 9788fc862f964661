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
from edgecnn.blocks import make_divisible, same_padding
from edgecnn.limits import MAX_CHANNELS, MAX_INPUT, MAX_LAYERS

Size = tuple[int, int]


@dataclass(frozen=True)
class LayerPlan:
    """One block of a network after repeats are expanded and widths resolved."""

    index: int  # position of the block in the arch string
    repeat: int  # which repeat of that block (0 = the first, which carries the stride)
    spec: BlockSpec  # the block itself, with r=1 and this repeat's stride
    cin: int  # input channels (features, once flat)
    cout: int  # output channels (features, once flat)
    mid: int | None  # inner width of ir/basic/bottleneck blocks, else None
    squeeze: int  # SE hidden width, 0 without SE
    in_size: Size | None  # input H, W (None when unknown or flat)
    out_size: Size | None  # output H, W (None when unknown or flat)
    flat: bool  # the output is a (N, C) vector
    classifier: bool = False  # the final fc whose width is num_classes
    position: int = 0  # index in the expanded list = module index in EdgeNet.blocks

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


def conv_out(size: int, kernel: int, stride: int = 1, dilation: int = 1, padding: int | None = None) -> int:
    """Output length of a conv/pool along one axis (PyTorch's formula, floor mode)."""
    pad = same_padding(kernel, dilation) if padding is None else padding
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _spatial_out(b: BlockSpec, size: Size) -> Size:
    k, s, d = b.k or 1, b.s or 1, b.d or 1
    if b.kind == "tconv":
        return (size[0] * s, size[1] * s)
    if b.kind in ("maxpool", "avgpool"):
        return (conv_out(size[0], k, s, 1), conv_out(size[1], k, s, 1))
    return (conv_out(size[0], k, s, d), conv_out(size[1], k, s, d))


def _inner_width(b: BlockSpec, cin: int) -> int | None:
    if b.kind not in ("ir", "basic", "bottleneck"):
        return None
    if b.m is not None:
        return b.m
    assert b.e is not None and b.c is not None
    base = cin if b.kind == "ir" else b.c
    return max(1, int(round(base * b.e)))


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
            classifier = b.kind == "fc" and b.c is None
            if classifier and index != last:
                raise ValueError(f"{where}: an fc without c is the classifier and must be the last block")
            if b.kind == "fc" and not flat:
                raise ValueError(f"{where}: fc needs a flat input; put 'gap' before it")
            if flat and b.kind not in ("fc", "dropout"):
                raise ValueError(f"{where}: a spatial block cannot follow global pooling")
            if b.kind in ("ir", "basic", "bottleneck") and (b.k or 1) % 2 == 0:
                raise ValueError(f"{where}: residual blocks need an odd kernel (k3, k5, k7)")
            if b.kind == "conv" and (ch % (b.g or 1) or (b.c or 0) % (b.g or 1)):
                raise ValueError(f"{where}: groups g{b.g} must divide in ({ch}) and out ({b.c}) channels")
            mid = _inner_width(b, ch)
            cout = num_classes if classifier else (b.c if b.c is not None else ch)
            if max(cout, mid or 0) > max_ch:  # an expansion e can blow a width up
                MAX_CHANNELS.check(max(cout, mid or 0), f"{where}")
            squeeze = 0
            if b.se:
                se_base = mid if b.kind == "ir" else (ch if b.kind == "ds" else cout)
                squeeze = make_divisible(se_base * b.se, 8)
            new_flat = flat or b.kind == "gap"
            out_size: Size | None = None
            in_size = None if flat else size
            if size is not None and not new_flat:
                out_size = size if b.kind == "dropout" else _spatial_out(b, size)
                if min(out_size) < 1:
                    raise ValueError(
                        f"{where}: input {size[0]}×{size[1]} is too small (output would be "
                        f"{out_size[0]}×{out_size[1]}); use a larger input or fewer strides"
                    )
            plans.append(
                LayerPlan(index, rep, b, ch, cout, mid, squeeze, in_size, out_size, new_flat, classifier, len(plans))
            )
            ch, flat = cout, new_flat
            size = None if new_flat else out_size
    return plans


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
    """Product of the strides of the spatial layers (tconv divides)."""
    num, den = 1, 1
    for p in plans:
        if p.flat:
            break
        if p.spec.kind == "tconv":
            den *= p.spec.s or 1
        elif p.spec.s:
            num *= p.spec.s
    return num // den if num % den == 0 else round(num / den)
