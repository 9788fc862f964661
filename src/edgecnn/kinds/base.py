"""The record of a block kind (:class:`BlockKind`, its grammar :class:`KindInfo`) and the helpers records share.

Nothing in this package imports :mod:`edgecnn.arch` (a record reads a block
through :class:`Spec`, the fields of :class:`edgecnn.arch.BlockSpec` it needs),
so the parser reads its grammar from the records without an import circle:
``arch → kinds → blocks → activations``.

Costs follow the traced analysis (:mod:`edgecnn.analysis.handlers`): MACs of
conv/linear without bias, a conv costing ``H_out·W_out·C_out·(C_in/g)·k²``;
params = weights + biases + BN scale and shift.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from torch import nn

from edgecnn.blocks import same_padding, se_width

Size = tuple[int, int]
Cost = tuple[int, int]  # (params, MACs)
Shortcut = Literal["identity", "conv", "pad"]
Changes = dict[str, Any]  # Spec fields to replace


class Spec(Protocol):
    """What records read of one block of an arch string (:class:`edgecnn.arch.BlockSpec` is one)."""

    @property
    def kind(self) -> str: ...
    @property
    def k(self) -> int | None: ...
    @property
    def s(self) -> int | None: ...
    @property
    def d(self) -> int | None: ...
    @property
    def e(self) -> float | None: ...
    @property
    def m(self) -> int | None: ...
    @property
    def c(self) -> int | None: ...
    @property
    def g(self) -> int | None: ...
    @property
    def se(self) -> float | None: ...
    @property
    def gate(self) -> str | None: ...
    @property
    def p(self) -> float | None: ...
    @property
    def act(self) -> str | None: ...
    @property
    def pre(self) -> bool | None: ...
    @property
    def skip(self) -> str | None: ...
    @property
    def bn(self) -> bool | None: ...
    @property
    def bias(self) -> bool | None: ...


class Resolved(Protocol):
    """What builders and costs read of a resolved layer (:class:`edgecnn.plan.LayerPlan` is one)."""

    spec: Spec
    cin: int
    cout: int
    mid: int | None
    squeeze: int
    in_size: Size | None
    out_size: Size | None
    classifier: bool


@dataclass(frozen=True)
class KindInfo:
    """What a block kind accepts in the arch format: its keys and their defaults."""

    keys: tuple[str, ...]  # fields this kind accepts (besides ``kind``)
    defaults: dict[str, Any]  # value of each accepted field when the string omits it
    required: tuple[str, ...] = ()  # fields without a default
    doc: str = ""  # one line for the README / `edgecnn arch --help`
    skips: tuple[str, ...] = ()  # the values its ``skip`` field takes (flags noskip, padskip, idskip)


@dataclass(frozen=True)
class InnerChannels:
    """A block's inner (prunable) channels: made inside the block, read by no residual add."""

    producer: tuple[str, str]  # (conv, BN) module paths within the block whose filters make the inner channels
    squeeze_inside: bool = False  # the SE acts on the inner width (ir), so its hidden units shrink with it
    tied_to_input: bool = False  # m = c_in drops the producer: the inner channels are then the input's


_GROUPS_FIELD = re.compile(r"g(\d+|-)")
SliceRule = Callable[["BlockKind", int, int, int, list[str]], tuple[list[str], list[str], dict[str, int]]]
"""``(kind, cin, cout, mid, fixed key fields) -> (markers, fixed, axes)`` of a latency-table slice."""


def _no_shortcut(b: Spec, cin: int, cout: int) -> Shortcut | None:
    return None


def _no_check(b: Spec, cin: int) -> str | None:
    return None


def _no_fold(b: Spec) -> tuple[str, Changes] | None:
    return None


def resized(p: Resolved, cin: int, cout: int, mid: int | None) -> Changes:
    """The spec changes that give block ``p`` the widths ``cin → cout`` (inner ``mid``; None keeps it).

    The default of :attr:`BlockKind.respec`: a new ``c`` (never a classifier's),
    the inner width written as ``m`` whenever a width moves (``e`` is a ratio of
    a width that moved), and groups equal to the input width (a depthwise conv)
    following the input.
    """
    b, changes = p.spec, Changes()
    if b.c is not None and not p.classifier and cout != p.cout:
        changes["c"] = cout
    if (b.g or 1) > 1 and b.g == p.cin:
        changes["g"] = cin  # a depthwise conv block follows its input width
    new_mid = p.mid if mid is None else mid
    if p.mid is not None and (new_mid != p.mid or cin != p.cin or "c" in changes):
        changes["m"] = new_mid
    return changes


def generic_slice(
    kind: BlockKind, cin: int, cout: int, mid: int, fixed: list[str]
) -> tuple[list[str], list[str], dict[str, int]]:
    """The default :attr:`BlockKind.slice_rule`: a latency-table slice's structure markers and width axes.

    A block whose width follows its input interpolates over one width; so does a
    depthwise conv (groups = c_in = c_out, marked ``g=dw``). An identity skip
    ties c_in to c_out (``res=id``, one axis ``c``); an inner width tied to the
    input (``exp=0``: MobileNetV2's expansion-1 block) is no axis of its own.
    """
    groups = next((f for f in fixed if _GROUPS_FIELD.fullmatch(f)), "g-")
    if kind.keeps_width:
        return [], fixed, {"c": cin}
    if groups not in ("g1", "g-") and groups == f"g{cin}" and cin == cout:
        return [], ["g=dw" if f == groups else f for f in fixed], {"c": cin}
    markers: list[str] = []
    named = {"cin": cin, "cout": cout, "mid": mid} if mid else {"cin": cin, "cout": cout}
    if "skip" in kind.grammar.keys:
        identity = "skip=none" not in fixed and "s1" in fixed and cin == cout
        markers.append("res=id" if identity else "res=no")
        if identity:  # the identity shortcut ties cin to cout: one axis
            named = {"c": cout, **{k: v for k, v in named.items() if k == "mid"}}
    if any(i.tied_to_input for i in kind.inner.values()):
        markers.append("exp=0" if mid == cin else "exp=1")
        if mid == cin:  # no expansion conv: the inner width is the input's
            named.pop("mid")
    return markers, fixed, named


@dataclass(frozen=True)
class BlockKind:
    """Everything the library knows about one block kind (the package docstring says who reads what)."""

    name: str  # the kind token
    grammar: KindInfo  # tokens and defaults (edgecnn.arch reads them)
    build: Callable[[Resolved], nn.Module]  # the module of a resolved layer
    cost: Callable[[Resolved], Cost]  # closed-form (params, MACs); must equal the traced analysis
    out_size: Callable[[Spec, Size], Size] | None  # H, W after the block; None: the output is a vector
    rank: int = 1000  # position in listings (error messages, the README): kinds sort by rank, then name
    layout: Literal["map", "vector", "any"] = "map"  # the input it takes: a feature map, a (N, C) vector, either
    mid: Callable[[Spec, int], int] | None = None  # inner width from the spec and c_in; None: no inner width
    se_on: Literal["", "in", "mid", "out"] = ""  # the width an SE squeezes ("" without an se token)
    shortcut: Callable[[Spec, int, int], Shortcut | None] = _no_shortcut  # residual path for these widths
    check: Callable[[Spec, int], str | None] = _no_check  # why the block cannot be built, or None
    inner: Mapping[bool, InnerChannels] = field(default_factory=dict)  # by pre-activation order; {}: not prunable
    latency_group: Literal["body", "fixed"] = "body"  # calibration group (edgecnn.latency.calibrate)
    folded_bn: Callable[[Spec], tuple[str, Changes] | None] = _no_fold  # (BN path, spec changes)
    # of the block with that BN folded into the layer before it, when the arch has tokens for it (fold_bn)
    classifier_without_c: bool = False  # without c the block is the classifier (num_classes outputs)
    upsamples: bool = False  # its stride multiplies the spatial size (a transposed conv) instead of dividing it
    filter_fields: tuple[tuple[str, str | None], ...] = ()  # (module prefix, arch width) of its output filters:
    # "m", "m2" (a second conv of the inner width), None (tied to another filter); any other filter sets "c"
    cout_of_mid: Callable[[Resolved, int], int | None] | None = None  # the output width for a pruned "m" when
    # the output follows the inner width (ghost); None from the call: the arch cannot write it
    respec: Callable[[Resolved, int, int, int | None], Changes] = resized  # spec changes for new widths
    slice_rule: SliceRule = generic_slice  # latency-table slice of a key (edgecnn.latency.widths.split_key)
    searchable: bool = False  # a search-space stage may be of this kind: its r k s e c se act tokens are the
    # stage's depth, kernel, stride, expansion, width, SE and activation (edgecnn.search.space.StageSpace.block)

    @property
    def keeps_width(self) -> bool:
        """Whether the output width is the input's (no ``c`` token: pooling, dropout)."""
        return "c" not in self.grammar.keys

    @property
    def spatial(self) -> bool:
        """Whether it takes and gives a feature map (what a search space's stem may hold)."""
        return self.layout == "map" and self.out_size is not None

    def residual(self, b: Spec, cin: int, cout: int) -> bool:
        """Whether the built block adds a skip path around its body for these widths."""
        return self.shortcut(b, cin, cout) is not None

    def squeeze(self, b: Spec, cin: int, mid: int | None, cout: int) -> int:
        """SE hidden width: ``make_divisible(width·se, 8)`` of the width the SE acts on (0 without SE)."""
        if not b.se or not self.se_on:
            return 0
        width = {"in": cin, "mid": mid, "out": cout}[self.se_on]
        assert width is not None
        return se_width(width, b.se)

    def tied_inner(self, p: Resolved) -> bool:
        """Whether ``p``'s inner channels are its input channels (an ``ir`` block without expansion)."""
        inner = self.inner.get(bool(p.spec.pre))
        return inner is not None and inner.tied_to_input and p.mid == p.cin

    def filter_field(self, sub: str) -> str | None:
        """Which arch width an output filter at ``sub`` (a path inside the block) sets: c, m, m2, sq or None."""
        if sub.endswith("se.fc1"):
            return "sq"
        if sub.endswith("se.fc2"):
            return None  # tied to the channels it gates
        return next((f for prefix, f in self.filter_fields if sub.startswith(prefix)), "c")

    def table_slice(self, cin: int, cout: int, mid: int, fixed: list[str]) -> tuple[list[str], list[str], dict]:
        """(markers, fixed fields, width axes) of a latency-table key of this kind (:attr:`slice_rule`)."""
        return self.slice_rule(self, cin, cout, mid, fixed)


# ---------------------------------------------------------------- spatial rules


def conv_out(size: int, kernel: int, stride: int = 1, dilation: int = 1, padding: int | None = None) -> int:
    """Output length of a conv/pool along one axis (PyTorch's formula, floor mode, "same" padding by default)."""
    pad = same_padding(kernel, dilation) if padding is None else padding
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def conv_size(b: Spec, size: Size) -> Size:
    """H, W after a k×k conv of stride s and dilation d with "same" padding."""
    k, s, d = b.k or 1, b.s or 1, b.d or 1
    return (conv_out(size[0], k, s, d), conv_out(size[1], k, s, d))


def pool_size(b: Spec, size: Size) -> Size:
    """H, W after a k×k window of stride s without dilation (pooling; a ghost module's primary conv)."""
    k, s = b.k or 1, b.s or 1
    return (conv_out(size[0], k, s), conv_out(size[1], k, s))


def same_size(b: Spec, size: Size) -> Size:
    return size


# ---------------------------------------------------------------- widths, shortcuts, checks


def mid_of_input(b: Spec, cin: int) -> int:
    """Inner width ``m``, or ``e`` × the input width (ir, er)."""
    return b.m if b.m is not None else max(1, int(round(cin * (b.e or 1.0))))


def identity_when_shapes_match(b: Spec, cin: int, cout: int) -> Shortcut | None:
    """Sandler et al. 2018, §3.3: an identity skip only where shapes match (stride 1, c_in = c_out); no projection."""
    return "identity" if b.skip != "none" and (b.s or 1) == 1 and cin == cout else None


def odd_kernel(b: Spec, cin: int) -> str | None:
    return "residual blocks need an odd kernel (k3, k5, k7)" if (b.k or 1) % 2 == 0 else None


def order(b: Spec) -> Literal["pre", "post"]:
    return "pre" if b.pre else "post"


# ---------------------------------------------------------------- closed-form costs


def conv_cost(cin: int, cout: int, k: int, hw: int, groups: int = 1, bn: bool = True, bias: bool = False) -> Cost:
    """(params, MACs) of a k×k conv producing ``hw`` output pixels, with its BN (γ, β) and bias."""
    w = k * k * (cin // groups) * cout
    return w + (cout if bias else 0) + (2 * cout if bn else 0), hw * w


def se_cost(channels: int, squeeze: int) -> Cost:
    """(params, MACs) of an SE: two 1×1 convs with bias on a 1×1 map (0 without SE)."""
    return (2 * channels * squeeze + squeeze + channels, 2 * channels * squeeze) if squeeze else (0, 0)


def add(*parts: Cost) -> Cost:
    return sum(p for p, _ in parts), sum(m for _, m in parts)


def area(size: Size | None) -> int:
    return size[0] * size[1] if size is not None else 1


def free(p: Resolved) -> Cost:
    """The cost of a block without weights or multiply-accumulates (pooling, dropout)."""
    return (0, 0)
