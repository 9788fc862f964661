"""Coupled channel groups of any traced network: which (layer, dimension, index) are removed together (SPEC §5).

Structured pruning removes a channel from *every* tensor that carries it:
the filter that produces it, the BatchNorm that scales it, every layer that
reads it, and — through a residual add, an SE gate, a concatenation, a
reshape — the same channel of other layers. Torch-Pruning (Fang et al. 2023,
"DepGraph: Towards Any Structural Pruning", ``torch_pruning/dependency.py``)
finds these couplings by walking a graph of per-layer *dependencies*, one
rule per (op, op) pair. This file gets the same answer another way: it
**runs the traced graph on channel labels**.

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
BatchNorm / LayerNorm / PReLU per-channel parameters indexed by the labels
add, sub, mul, div, max, min the labels of the operands are *unified* element by
                             element (residual add; ``x * gate`` ties an SE's
                             excite output to the gated tensor)
pools, activations, reductions keep the per-channel labels (a reduction over
                             the channel dim unifies nothing: it blocks them)
view splitting C → (g, C/g)   unify position ``j`` across the ``g`` rows (a
                             shuffle or heads split keeps the same ``j``s in
                             every group, else the view no longer fits)
anything else                blocks the labels it reads (not prunable, with a
                             reason): grouped convs, matmul, the network
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

import copy
import functools
import operator
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecnn.graph import GraphError

__all__ = ["ChannelGraph", "Group", "Member", "channel_groups"]

Key = tuple[str, str, int]  # (module path, parameter or buffer name, dimension)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TCONV = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.SiLU, nn.GELU, nn.Tanh, nn.LeakyReLU,
    nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Hardtanh,
)  # fmt: skip
_SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ReflectionPad2d,
    nn.ReplicationPad2d,
)  # fmt: skip
_STRUCTURAL_MODULES = (nn.Flatten, nn.Unflatten)
_UNARY = {
    F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.gelu, F.sigmoid, F.tanh, F.leaky_relu, F.elu,
    F.dropout, F.hardtanh, F.mish, torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.clip,
    "relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "clip", "contiguous", "clone", "detach", "float",
    "to", "type_as", "hardswish", "sigmoid_",
}  # fmt: skip
_BINARY = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul, torch.add,
    torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, "add", "add_", "sub", "mul", "mul_", "div",
    "div_", "maximum", "minimum",
}  # fmt: skip
_SPATIAL_FUNCTIONS = {
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool2d, F.avg_pool1d,
    F.avg_pool2d, F.avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.interpolate,
}  # fmt: skip
_REDUCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"}
_STRUCTURAL = {
    torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape, torch.transpose, torch.permute,
    torch.chunk, torch.split, torch.squeeze, torch.unsqueeze, torch.narrow, operator.getitem, F.pad,
    "view", "reshape", "flatten", "permute", "transpose", "chunk", "split", "squeeze", "unsqueeze", "narrow",
    "expand", "repeat", "unflatten", "size", "dim", getattr,
}  # fmt: skip
_RESHAPES = {torch.reshape, torch.flatten, "view", "reshape", "flatten", "unflatten"}


@dataclass(frozen=True)
class Member:
    """One indexed dimension of one parameter (or buffer) of one layer, inside a group."""

    module: str  # module path, as in model.named_modules()
    param: str  # "weight", "bias", "running_mean", ...
    dim: int  # the dimension of that tensor the group's channels index
    role: str  # "out" (a filter that produces the channel), "in" (reads it) or "norm" (per-channel scale/shift)

    @property
    def key(self) -> Key:
        return (self.module, self.param, self.dim)

    def __str__(self) -> str:
        return f"{self.module}.{self.param}[{self.dim}]"


@dataclass(frozen=True, eq=False)
class Group:
    """Channels that are removed together: per member, the indices each component (channel) owns.

    ``rows[m]`` is a ``(width, n)`` long tensor: row ``c`` holds the indices
    of component ``c`` in member ``m``'s dimension (``n`` is 1 for most
    layers, ``H·W`` for a Linear after a flatten, the multiplier for a
    depthwise conv with a channel multiplier; ``-1`` pads rows of a group
    whose channels own different counts, which is then not prunable).
    ``channels[c][m]`` is the same as nested tuples.
    """

    index: int  # position in ChannelGraph.groups
    members: tuple[Member, ...]  # in graph order of first use
    rows: tuple[torch.Tensor, ...]  # per member: (width, n) indices
    reason: str | None  # why the group cannot be pruned; None when it can
    round_to: int  # kept widths are multiples of this (or the full width)

    @property
    def width(self) -> int:
        """Number of channels (components) in the group."""
        return int(self.rows[0].shape[0])

    @property
    def prunable(self) -> bool:
        return self.reason is None

    @functools.cached_property
    def channels(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """``channels[c][m]``: the indices of component ``c`` in member ``m`` (tuples, for reading)."""
        rows = [t.tolist() for t in self.rows]
        return tuple(tuple(tuple(i for i in r[c] if i >= 0) for r in rows) for c in range(self.width))

    def indices(self, m: int) -> torch.Tensor:
        """``(width, n)`` long tensor: the indices of every component in member ``m``."""
        return self.rows[m]

    def producers(self) -> tuple[Member, ...]:
        """The members whose filters produce the channels (conv/linear outputs, depthwise filters)."""
        return tuple(m for m in self.members if m.role == "out" and m.param == "weight")

    def describe(self) -> str:
        """One line: the width and the producing layers."""
        names = sorted({m.module for m in self.producers()})
        shown = ", ".join(names[:4]) + (f", … ({len(names)} layers)" if len(names) > 4 else "")
        return f"group {self.index}: width {self.width}, produced by {shown or '(no layer)'}"


# ---------------------------------------------------------------- union-find over slots


class _Slots:
    """Channel slots, and the unions and blocks met on the walk, resolved at once (slot 0 is "no slot": the
    network input, constants, padding).

    :meth:`resolve` finds the connected components of the recorded unions
    (min-label propagation with pointer jumping, on tensors: every slot ends
    at the smallest slot of its component, its *root*) and gives each
    blocked component the reason of the first block recorded on any of its
    slots, in graph order.
    """

    def __init__(self) -> None:
        self.count = 1
        self.events: list[tuple[torch.Tensor, torch.Tensor | None, str]] = []  # (a, b, why); b None: a block

    def new(self, n: int) -> torch.Tensor:
        start = self.count
        self.count += n
        return torch.arange(start, start + n, dtype=torch.long)

    def union(self, a: torch.Tensor, b: torch.Tensor, why: str) -> None:
        """Tie slot ``a[i]`` to ``b[i]``; a slot tied to 0 (not a slot) is blocked with ``why``."""
        self.events.append((a.reshape(-1), b.reshape(-1), why))

    def block_all(self, labels: Any, why: str) -> None:
        for t in _label_tensors(labels):
            self.events.append((_compact(t).reshape(-1), None, why))

    def resolve(self) -> tuple[torch.Tensor, dict[int, str]]:
        """(root of every slot, reason per blocked root)."""
        n = self.count
        ties = [(a, b) for a, b, _ in self.events if b is not None]
        a = torch.cat([t for t, _ in ties]) if ties else torch.zeros(0, dtype=torch.long)
        b = torch.cat([t for _, t in ties]) if ties else torch.zeros(0, dtype=torch.long)
        keep = (a != b) & (a != 0) & (b != 0)
        a, b = a[keep], b[keep]
        root = torch.arange(n)
        while True:
            low = torch.minimum(root[a], root[b])
            new = root.scatter_reduce(0, a, low, "amin").scatter_reduce_(0, b, low, "amin")
            while True:  # pointer jumping
                up = new[new]
                if torch.equal(up, new):
                    break
                new = up
            if torch.equal(new, root):
                break
            root = new
        # blocks: a slot tied to 0, or named by a block; the first event (graph order) names the reason
        slots, event = [], []
        for e, (x, y, _) in enumerate(self.events):
            if y is None:
                slots.append(x)
            else:
                slots.append(torch.where(x == 0, y, torch.where(y == 0, x, 0)))
            event.append(torch.full((len(slots[-1]),), e, dtype=torch.long))
        if not slots:
            return root, {}
        r = root[torch.cat(slots)]
        e_of = torch.cat(event)
        hit = r != 0
        first = torch.full((n,), len(self.events), dtype=torch.long).scatter_reduce_(0, r[hit], e_of[hit], "amin")
        blocked = torch.nonzero(first < len(self.events), as_tuple=True)[0]
        return root, {g: self.events[e][2] for g, e in zip(blocked.tolist(), first[blocked].tolist())}


def _label_tensors(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        return [t for e in v for t in _label_tensors(e)]
    return []


def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` without its broadcast (stride-0) dimensions: the distinct labels, cheaply."""
    for d in range(t.dim()):
        if t.stride(d) == 0 and t.shape[d] > 1:
            t = t.narrow(d, 0, 1)
    return t


def _runs(keys: torch.Tensor, values: torch.Tensor) -> tuple[list[int], list[torch.Tensor]]:
    """Split ``values`` where the sorted ``keys`` change: (the key of each run, the values of each run)."""
    unique, counts = torch.unique_consecutive(keys, return_counts=True)
    return unique.tolist(), list(torch.split(values, counts.tolist()))


def _broadcast(vec: torch.Tensor, shape: Sequence[int], dim: int) -> torch.Tensor:
    """Per-channel labels ``vec`` laid out along ``dim`` of a tensor of ``shape`` (channel size from ``vec``)."""
    shape = list(shape)
    dim = dim % len(shape)
    shape[dim] = vec.numel()
    view = [1] * len(shape)
    view[dim] = vec.numel()
    return vec.view(view).expand(shape)


# ---------------------------------------------------------------- the label interpreter


class _Interpreter:
    """Evaluates an fx graph on label tensors; records which labels each (layer, param, dim) index sees.

    ``emit`` (the second run, after pruning): module path -> the producer's
    output indices to emit, in order; slots keep their first-run numbers.
    """

    def __init__(self, graph: fx.Graph, modules: Mapping[str, nn.Module], root: nn.Module,
                 slots: _Slots, emit: Mapping[str, list[int]] | None = None) -> None:  # fmt: skip
        self.graph, self.modules, self.root, self.slots, self.emit = graph, modules, root, slots, emit
        self.uses: dict[Key, tuple[str, torch.Tensor]] = {}  # first call: key -> (role, label per index)
        self.extra: list[tuple[Key, torch.Tensor]] = []  # later calls of a shared module
        self.starts: dict[str, list[int]] = defaultdict(list)  # producer -> first slot of each call
        self.calls: dict[str, int] = defaultdict(int)
        self.folds: dict[str, str] = {}  # conv/linear path -> the BatchNorm that only it feeds

    # -- recording
    def _use(self, module: str, param: str, dim: int, labels: torch.Tensor, role: str) -> None:
        if getattr(self.modules[module], param, None) is None:
            return
        key = (module, param, dim)
        if key in self.uses:
            self.extra.append((key, labels))
        else:
            self.uses[key] = (role, labels)

    def _fresh(self, module: str, n: int, dim: int) -> torch.Tensor:
        call = self.calls[module]
        self.calls[module] += 1
        if self.emit is None:
            labels = self.slots.new(n)
            self.starts[module].append(int(labels[0]) if n else 0)
        else:
            start = self.starts[module][call]
            order = self.emit.get(module)
            labels = torch.arange(start, start + n) if order is None else start + torch.tensor(order, dtype=torch.long)
        self._use(module, "weight", dim, labels, "out")
        self._use(module, "bias", 0, labels, "out")
        return labels

    def _block(self, v: Any, why: str) -> None:
        if self.emit is None:
            self.slots.block_all(v, why)

    def _union(self, a: torch.Tensor, b: torch.Tensor, why: str) -> None:
        if self.emit is not None:
            return
        a, b = torch.broadcast_tensors(_compact(a), _compact(b))
        a, b = a.reshape(-1), b.reshape(-1)
        if a.numel() > 4096:  # distinct pairs first, as one integer each
            base = int(b.max()) + 1
            pairs = torch.unique(a * base + b)
            a, b = pairs // base, pairs % base
        self.slots.union(a, b, why)

    def _channels(self, t: Any, dim: int, where: str) -> torch.Tensor:
        """Per-channel labels of ``t`` along ``dim``; channels whose label varies over the other dims are blocked."""
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{where}: expected a tensor input")
        m = _compact(t).movedim(dim, 0).reshape(t.shape[dim] if t.dim() else 1, -1)
        if m.shape[1] == 0:
            return torch.zeros(t.shape[dim], dtype=torch.long)
        first = m[:, 0]
        mixed = (m != first[:, None]).any(1)
        if bool(mixed.any()):
            self._block(m[mixed], f"{where}: a channel carries different channels at different positions")
            first = torch.where(mixed, torch.zeros_like(first), first)
        if first.untyped_storage().nbytes() > 32 * first.numel():  # a view into a whole label map: copy it out
            first = first.clone()
        return first  # else a view of the producer's labels: equal dims share one source in ChannelGraph._group

    def _shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None:
            raise ValueError(f"node {node.name} has no shape (fx shape pass failed there)")
        return tuple(meta.shape)

    # -- the walk
    def run(self) -> Any:
        env: dict[fx.Node, Any] = {}
        out = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                if node.meta.get("tensor_meta") is None and node.args:  # a defaulted argument traced as its constant
                    env[node] = node.args[0]
                    continue
                env[node] = torch.zeros(self._shape(node), dtype=torch.long)
            elif node.op == "get_attr":
                v = self.root
                for part in str(node.target).split("."):
                    v = getattr(v, part)
                env[node] = torch.zeros(v.shape, dtype=torch.long) if isinstance(v, torch.Tensor) else v
            elif node.op == "output":
                out = fx.node.map_arg(node.args[0], lambda n: env[n])
                self._block(out, "reaches the network output (its width is fixed)")
            else:
                args = fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
                if node.op == "call_module":
                    env[node] = self._module(node, str(node.target), args, kwargs)
                else:
                    env[node] = self._function(node, args, kwargs)
        return out

    def _module(self, node: fx.Node, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        m = self.modules[name]
        x = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(m, _CONV) or isinstance(m, _TCONV):
            return self._conv(node, name, m, x)
        if isinstance(m, nn.Linear):
            lab = self._channels(x, -1, name)
            self._use(name, "weight", 1, lab, "in")
            return _broadcast(self._fresh(name, m.out_features, 0), self._shape(node), -1)
        if isinstance(m, _BatchNorm):
            src = node.args[0] if node.args else None
            if (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                    and isinstance(self.modules[str(src.target)], (*_CONV, *_TCONV, nn.Linear))):
                self.folds[str(src.target)] = name  # the BN that folds into that layer (as fold_bn pairs them)
            lab = self._channels(x, 1, name)
            for p in ("weight", "bias", "running_mean", "running_var"):
                self._use(name, p, 0, lab, "norm")
            return x
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            lab = self._channels(x, -1, name)
            for p in ("weight", "bias"):
                self._use(name, p, 0, lab, "norm")
            return x
        if isinstance(m, nn.PReLU) and m.num_parameters > 1:
            self._use(name, "weight", 0, self._channels(x, 1, name), "norm")
            return x
        if isinstance(m, _ELEMENTWISE_MODULES) or (isinstance(m, nn.PReLU)):
            return x
        if isinstance(m, _SPATIAL_MODULES):
            return _broadcast(self._channels(x, 1, name), self._shape(node), 1)
        if isinstance(m, _STRUCTURAL_MODULES):
            return m(x)
        why = f"read by {name} ({type(m).__name__}), which has no channel rule"
        self._block([*args, *kwargs.values()], why)
        return self._unknown_output(node)

    def _conv(self, node: fx.Node, name: str, m: nn.Module, x: Any) -> torch.Tensor:
        lab = self._channels(x, 1, name)
        shape = self._shape(node)
        transposed = isinstance(m, _TCONV)
        if m.groups == 1:
            self._use(name, "weight", 0 if transposed else 1, lab, "in")
            return _broadcast(self._fresh(name, m.out_channels, 1 if transposed else 0), shape, 1)
        if not transposed and m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
            out = lab.repeat_interleave(m.out_channels // m.in_channels)  # depthwise: channel o reads o // mult
            self._use(name, "weight", 0, out, "out")
            self._use(name, "bias", 0, out, "out")
            return _broadcast(out, shape, 1)
        self._block(lab, f"read by {name}, a grouped conv (groups={m.groups}): its groups must stay equal")
        out = torch.zeros(m.out_channels, dtype=torch.long)
        return _broadcast(out, shape, 1)

    def _unknown_output(self, node: fx.Node) -> Any:
        meta = node.meta.get("tensor_meta")
        return torch.zeros(tuple(meta.shape), dtype=torch.long) if meta is not None else None

    def _function(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = node.target
        label = target if node.op == "call_method" else target
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if not tensors and not any(isinstance(a, (tuple, list)) and _label_tensors(a) for a in args):
            # shape arithmetic (x.size(0) // 2, getattr(x, "shape")): run it on the plain values
            if node.op == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            return target(*args, **kwargs)
        where = f"{node.name} ({target if isinstance(target, str) else getattr(target, '__name__', target)})"
        if label in _UNARY:
            return args[0]
        if label in _BINARY:
            big = [t for t in tensors if t.numel() > 1]
            for other in big[1:]:
                self._union(big[0], other, f"{where}: combined element-wise with a tensor that is not prunable")
            if not big:
                return tensors[0]
            shape = torch.broadcast_shapes(*(t.shape for t in big))
            return big[0].expand(shape)
        if label in _SPATIAL_FUNCTIONS:
            return _broadcast(self._channels(args[0], 1, where), self._shape(node), 1)
        if label in _REDUCTIONS:
            return self._reduction(node, args, kwargs, where)
        if label in _STRUCTURAL:
            return self._structural(node, args, kwargs, where)
        self._block([*args, *kwargs.values()], f"read by {where}, which has no channel rule")
        return self._unknown_output(node)

    def _reduction(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
        x = args[0]
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        dims = tuple(range(x.dim())) if dims is None else ((dims,) if isinstance(dims, int) else tuple(dims))
        if x.dim() < 2 or 1 in {d % x.dim() for d in dims}:
            self._block(x, f"{where}: reduces over the channel dimension")
            return self._unknown_output(node)
        return _broadcast(self._channels(x, 1, where), self._shape(node), 1)

    def _structural(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
        target = node.target
        if node.op == "call_method":
            name = "reshape" if target == "view" else target
            out = getattr(args[0], str(name))(*args[1:], **kwargs)
        elif target is F.pad:
            out = F.pad(args[0], *args[1:], **{**kwargs, "value": 0} if "value" in kwargs else kwargs)
        else:
            out = target(*args, **kwargs)
        x = args[0]
        if target in _RESHAPES and isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
            self._split_channels(x, out, where)
        return out

    def _split_channels(self, x: torch.Tensor, out: torch.Tensor, where: str) -> None:
        """A view of C channels as (g, C/g): the same j must stay in every one of the g rows."""
        if x.dim() < 2 or out.dim() < 3 or out.shape[0] != x.shape[0]:
            return
        c, g, per = x.shape[1], out.shape[1], out.shape[2]
        if g > 1 and per > 1 and g * per == c and tuple(out.shape[3:]) == tuple(x.shape[2:]):
            rows = self._channels(out.reshape(out.shape[0], c, *x.shape[2:]), 1, where).view(g, per)
            for i in range(1, g):
                self._union(rows[0], rows[i], f"{where}: channel split into {g} rows")


# ---------------------------------------------------------------- the result


@dataclass(frozen=True)
class _Trace:
    graph: fx.Graph
    modules: dict[str, nn.Module]
    root: nn.Module
    analysis: Any  # edgecnn.analysis.Analysis of the same pass: per-layer params and MACs at batch 1


def _trace(model: nn.Module, inputs: Sequence[torch.Tensor]) -> _Trace:
    """One fx trace with meta shapes on every node (batch 1): :func:`edgecnn.graph.trace_graph`, walked by
    the cost analysis's evaluator (shape formulas, no meta kernels), so the costs come with it."""
    from edgecnn.analysis.trace import analyze_fx  # compress reads analysis, never the reverse

    metas = [torch.empty((1, *t.shape[1:]), dtype=t.dtype, device="meta") for t in inputs]
    try:
        analysis, g = analyze_fx(model, metas, receptive_fields=False)
    except GraphError as e:
        raise ValueError(f"cannot find channel groups: {e}; prune a traceable submodule instead") from e
    assert g.graph is not None
    root = copy.copy(g.root)  # the constants fx found (g.added) are read by get_attr nodes
    root.__dict__.update(g.added)
    return _Trace(g.graph, g.modules, root, analysis)


class ChannelGraph:
    """The channel groups of a model, and the map from kept channels to the index lists of every layer."""

    def __init__(self, model: nn.Module, inputs: Sequence[torch.Tensor], round_to: int = 8) -> None:
        if round_to < 1:
            raise ValueError(f"round_to must be a positive integer (1 = no rounding), got {round_to}")
        self.model = model  # the model the groups are of (a plan checks it is pruned on the same one)
        self.inputs = [torch.empty((1, *t.shape[1:]), dtype=t.dtype) for t in inputs]  # batch-1 example shapes
        self.trace = _trace(model, inputs)
        self.slots = _Slots()
        interp = _Interpreter(self.trace.graph, self.trace.modules, self.trace.root, self.slots)
        interp.run()
        self.starts = dict(interp.starts)
        self.folds = interp.folds  # layer -> the BN right after it (what fold_bn would fold)
        self.uses = interp.uses  # key -> (role, label per index), first call
        self._unify_calls(interp)
        self.groups = self._group(round_to)
        self.sizes = {k: int(v.numel()) for k, (_, v) in self.uses.items()}

    def _unify_calls(self, interp: _Interpreter) -> None:
        """A module called twice (shared weights) ties what each call sees at the same index."""
        for key, labels in interp.extra:
            self.slots.union(self.uses[key][1], labels, f"{key[0]} is called more than once on different channels")

    def _group(self, round_to: int) -> tuple[Group, ...]:
        """Components (roots) that touch the same set of dims form a group: all dims at once, on tensors.

        Dims that record the *same* labels (a conv's weight and bias, the BN
        after it, the next layer's input: views of one vector) are one
        "source"; the work is done per source.
        """
        roots, reason_of = self.slots.resolve()  # every slot's root (the smallest slot of its component)
        n = roots.numel()
        keys = list(self.uses)
        source: dict[tuple[int, ...], int] = {}  # the memory a label vector reads -> source index
        labels: list[torch.Tensor] = []
        keys_of: list[list[int]] = []  # source -> the key indices that recorded it
        src_of_key = []
        for k_i, key in enumerate(keys):
            t = self.uses[key][1]  # kept alive by self.uses: equal (pointer, stride, length) = equal labels
            where = (t.data_ptr(), t.stride(0), t.numel()) if t.dim() == 1 and t.numel() else (-1, id(t))
            s_i = source.setdefault(where, len(labels))
            if s_i == len(labels):
                labels.append(t)
                keys_of.append([])
            keys_of[s_i].append(k_i)
            src_of_key.append(s_i)
        nsrc = len(labels)
        lengths = torch.tensor([t.numel() for t in labels], dtype=torch.long)
        sid = torch.repeat_interleave(torch.arange(nsrc), lengths)  # source of each element
        pos = torch.arange(sid.numel()) - (torch.cumsum(lengths, 0) - lengths)[sid]  # its index in that dim
        r = roots[torch.cat(labels)] if labels else torch.zeros(0, dtype=torch.long)
        # per root: a sum of random 63-bit keys of the dims it touches, so equal sets <=> equal sums
        gen = torch.Generator().manual_seed(0)
        rand = torch.zeros(nsrc, dtype=torch.long).index_add_(
            0, torch.tensor(src_of_key, dtype=torch.long), torch.randint(1, 2**62, (len(keys),), generator=gen))
        nz = r != 0
        touched = torch.unique(sid[nz] * n + r[nz])
        signature = torch.zeros(n, dtype=torch.long).index_add_(0, touched % n, rand[touched // n])
        live = torch.nonzero(signature, as_tuple=True)[0]  # roots that touch something, ascending = graph order
        # blocked roots carry their reason in the signature too
        reasons = list(dict.fromkeys(reason_of.values()))
        if reasons:
            salt = torch.randint(1, 2**62, (len(reasons),), generator=gen)
            blocked = torch.tensor(list(reason_of), dtype=torch.long)
            rid = torch.tensor([reasons.index(w) for w in reason_of.values()], dtype=torch.long)
            signature.index_add_(0, blocked, torch.where(signature[blocked] != 0, salt[rid], 0))
        _, gid_live = torch.unique(signature[live], return_inverse=True)
        gid = torch.full((n,), -1, dtype=torch.long)
        gid[live] = gid_live
        ngroups = int(gid_live.max()) + 1 if live.numel() else 0
        # rank of each root inside its group (ascending root id: the earliest producer's channel order)
        order = torch.argsort(gid_live, stable=True)
        sizes = torch.bincount(gid_live, minlength=ngroups)
        rank = torch.zeros(n, dtype=torch.long)
        rank[live[order]] = torch.arange(live.numel()) - (torch.cumsum(sizes, 0) - sizes)[gid_live[order]]
        # every element of a group, sorted by (group, source, rank, position): one run per (group, source)
        g_e = gid[r]
        sel = torch.nonzero(g_e >= 0, as_tuple=True)[0]
        g_e, s_e, rank_e, pos_e = g_e[sel], sid[sel], rank[r[sel]], pos[sel]  # (source, position) ascending
        o = torch.argsort((g_e * nsrc + s_e) * (int(sizes.max()) if ngroups else 1) + rank_e, stable=True)
        g_e, s_e, rank_e, pos_e = g_e[o], s_e[o], rank_e[o], pos_e[o]
        run_key, counts = torch.unique_consecutive(g_e * nsrc + s_e, return_counts=True)
        run_g, run_s = run_key // nsrc, run_key % nsrc
        widths = sizes[run_g]
        per = counts // widths
        # a run is regular when each of its channels owns the same count of indices: rank == offset // per
        run_of = torch.repeat_interleave(torch.arange(len(counts)), counts)
        offset = torch.arange(len(g_e)) - (torch.cumsum(counts, 0) - counts)[run_of]
        bad = (rank_e != offset // per.clamp(min=1)[run_of]).long()
        ragged = (counts % widths != 0) | (torch.zeros(len(counts), dtype=torch.long).index_add_(0, run_of, bad) > 0)
        members: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(ngroups)]  # (key index, rows)
        uneven = [False] * ngroups
        split = counts.tolist()
        parts = torch.split(pos_e, split) if split else ()
        rank_parts = torch.split(rank_e, split) if split else ()
        for g_i, s_i, w, c, irregular, part, rows in zip(run_g.tolist(), run_s.tolist(), widths.tolist(),
                                                         per.tolist(), ragged.tolist(), parts, rank_parts):  # fmt: skip
            if irregular:  # ragged: pad with -1
                count = torch.bincount(rows, minlength=w)
                mat = torch.full((w, int(count.max())), -1, dtype=torch.long)
                mat[rows, torch.arange(len(rows)) - (torch.cumsum(count, 0) - count)[rows]] = part
                uneven[g_i] = True
            else:
                mat = part.view(w, c)
            members[g_i].extend((k_i, mat) for k_i in keys_of[s_i])
        first_root = torch.full((ngroups,), n, dtype=torch.long).scatter_reduce(0, gid_live, live, "amin").tolist()
        built = []
        for g_i in range(ngroups):
            found = sorted(members[g_i], key=lambda m: m[0])  # graph order of first use
            ks = [keys[k_i] for k_i, _ in found]
            root = first_root[g_i]
            reason = reason_of.get(root)
            if reason is None and not any(self.uses[k][0] == "out" and k[1] == "weight" for k in ks):
                reason = "no layer produces these channels"
            if reason is None and uneven[g_i]:
                reason = "its channels own different numbers of indices in one layer"
            first = next((k_i for k_i, _ in found if self.uses[keys[k_i]][0] == "out"), found[0][0])
            built.append(((reason is not None, first, root), ks, [t for _, t in found], reason))
        built.sort(key=lambda b: b[0])
        return tuple(Group(i, tuple(Member(k[0], k[1], k[2], self.uses[k][0]) for k in ks), tuple(rows), reason,
                           round_to) for i, (_, ks, rows, reason) in enumerate(built))  # fmt: skip

    @property
    def prunable(self) -> tuple[Group, ...]:
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
        # kept channels held (so groups interleaved in one layer stay interleaved), occurrence by occurrence
        rank: dict[tuple[Key, int], tuple[int, int]] = {}
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
                for occ, col in enumerate(kept.t().tolist()):
                    for i, slot in zip(col, sorted(col)):
                        if i >= 0:
                            rank[(key, i)] = (occ, slot)
        emit: dict[str, list[int]] = {}
        for module, starts in self.starts.items():
            key = next((k for k in self.uses if k[0] == module and self.uses[k][0] == "out" and k[1] == "weight"),
                       None)  # fmt: skip
            if key is None:
                continue
            kept = [i for i in range(self.sizes[key]) if (key, i) not in dropped]
            emit[module] = sorted(kept, key=lambda i: rank.get((key, i), (0, i)))
        interp = _Interpreter(self.trace.graph, self.trace.modules, self.trace.root, self.slots, emit)
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
                   inputs: torch.Tensor | Sequence[torch.Tensor] | None = None, round_to: int = 8) -> ChannelGraph:  # fmt: skip
    """The coupled channel groups of ``model`` for an input of ``input_size`` = (C, H, W) (or ``inputs``).

    Shapes only matter where they change the coupling (a flatten before a
    Linear gives each channel ``H·W`` features); the batch size is ignored.
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
    return ChannelGraph(model, xs, round_to)

