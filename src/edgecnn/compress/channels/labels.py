"""Runs a traced network on channel *labels*: which channel each index of each layer reads or writes (docs/design.md §5).

The graph is the one fx trace of :func:`trace_for_labels` (batch 1, meta
shapes, costs from :func:`edgecnn.analysis.trace.analyze_fx`);
:class:`Interpreter` evaluates it again on integer tensors of the same
shapes whose values are labels. Each output channel of a conv / linear /
transposed conv gets a fresh *slot* (:class:`edgecnn.compress.channels.components.Slots`);
ops that do not own channels move labels the way they move data (``cat``,
``split``, ``view``, ``flatten``, ``F.pad``, indexing run as they are), and
the few rules (:data:`CHANNEL_RULES`, one per *channel role* of the op table
:mod:`edgecnn.ops`, which says which op plays which role; the table of
couplings is in :mod:`edgecnn.compress.channels.groups`) record *uses* —
``(module, parameter, dim) -> labels`` — and the unions and blocks that
:mod:`edgecnn.compress.channels.components` resolves into groups. Run a second time
with ``emit`` (the kept output channels of each producer), the same walk
gives the index lists of the pruned network
(:meth:`edgecnn.compress.channels.groups.ChannelGraph.kept_indices`).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.nn.modules.batchnorm import _BatchNorm

from edgecnn.compress.channels.components import Key, Slots
from edgecnn.graph import GraphError
from edgecnn.ops import OPS, Channels, OpTable

__all__ = ["Interpreter", "Trace", "trace_for_labels"]

def _label_tensors(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        return [t for e in v for t in _label_tensors(e)]
    return []


def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` without its broadcast (stride-0) dimensions: the distinct labels, cheaply."""
    for d, (stride, size) in enumerate(zip(t.stride(), t.shape)):
        if stride == 0 and size > 1:
            t = t.narrow(d, 0, 1)
    return t


def _zeros_like_meta(meta: Any) -> Any:
    """Zero labels shaped like fx's ``tensor_meta`` (one TensorMetadata, or nested tuples / lists of them)."""
    if meta is None:
        return None
    if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape"):
        return type(meta)(_zeros_like_meta(m) for m in meta)
    shape = getattr(meta, "shape", None)
    return torch.zeros(tuple(shape), dtype=torch.long) if shape is not None else None


def _broadcast(vec: torch.Tensor, shape: Sequence[int], dim: int) -> torch.Tensor:
    """Per-channel labels ``vec`` laid out along ``dim`` of a tensor of ``shape`` (channel size from ``vec``)."""
    shape = list(shape)
    dim = dim % len(shape)
    shape[dim] = vec.numel()
    view = [1] * len(shape)
    view[dim] = vec.numel()
    return vec.view(view).expand(shape)


# ---------------------------------------------------------------- the label interpreter


class Interpreter:
    """Evaluates an fx graph on label tensors; records which labels each (layer, param, dim) index sees.

    ``emit`` (the second run, after pruning): module path -> the producer's
    output indices to emit, in order; slots keep their first-run numbers.
    ``ops``: the op table whose channel roles say what each op does (:mod:`edgecnn.ops`, custom ops included).
    """

    def __init__(self, graph: fx.Graph, modules: Mapping[str, nn.Module], root: nn.Module,
                 slots: Slots, emit: Mapping[str, list[int]] | None = None, ops: OpTable = OPS) -> None:  # fmt: skip
        self.graph, self.modules, self.root, self.slots, self.emit, self.ops = graph, modules, root, slots, emit, ops
        self.uses: dict[Key, tuple[str, torch.Tensor]] = {}  # first call: key -> (role, label per index)
        self.extra: list[tuple[Key, torch.Tensor]] = []  # later calls of a shared module
        self.starts: dict[str, list[int]] = defaultdict(list)  # producer -> first slot of each call
        self.calls: dict[str, int] = defaultdict(int)
        self.folds: dict[str, str] = {}  # conv/linear path -> the BatchNorm that only it feeds
        self.pieces: list[tuple[str, tuple[torch.Tensor, ...]]] = []  # equal splits: (where, labels per piece)

    # -- recording
    def _use(self, module: str, param: str, dim: int, labels: torch.Tensor, role: str) -> None:
        if getattr(self.modules[module], param, None) is None:
            return
        key = (module, param, dim)
        if key in self.uses:
            self.extra.append((key, labels))
        else:
            self.uses[key] = (role, labels)

    def _fresh(self, module: str, n: int, dim: int, writes: tuple[tuple[str, int], ...] = ()) -> torch.Tensor:
        """``n`` fresh slots written by ``module`` (``weight`` along ``dim`` and ``bias``, or ``writes``)."""
        call = self.calls[module]
        self.calls[module] += 1
        if self.emit is None:
            labels = self.slots.new(n)
            self.starts[module].append(int(labels[0]) if n else 0)
        else:
            start = self.starts[module][call]
            order = self.emit.get(module)
            labels = torch.arange(start, start + n) if order is None else start + torch.tensor(order, dtype=torch.long)
        for param, d in writes or (("weight", dim), ("bias", 0)):
            self._use(module, param, d, labels, "out")
        return labels

    def _block(self, v: Any, why: str) -> None:
        if self.emit is None:
            for t in _label_tensors(v):
                self.slots.block(_compact(t), why)

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
        c = _compact(t)
        if t.dim() and c.shape[dim] == c.numel() == t.shape[dim] > 0:  # one label per channel: nothing mixes
            first = c.reshape(-1)
        else:
            m = c.movedim(dim, 0).reshape(t.shape[dim] if t.dim() else 1, -1)
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
        if meta is None or not hasattr(meta, "shape"):
            raise ValueError(f"node {node.name} has no single tensor shape (fx shape pass failed there, or it "
                             "returns several tensors); prune a traceable submodule instead")  # fmt: skip
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
        fam = self.ops.module_family(type(m))
        if fam is not None and isinstance(fam.channels, Channels):
            return self._custom(node, name, m, x, fam.channels, fam.why)
        if fam is None or fam.channels == "blocks":
            why = f": {fam.why}" if fam is not None else ", which has no channel rule"
            self._block([*args, *kwargs.values()], f"read by {name} ({type(m).__name__}){why}")
            return self._unknown_output(node)
        return CHANNEL_RULES[fam.channels][0](self, node, name, m, x)

    def _linear(self, node: fx.Node, name: str, m: nn.Module, x: Any) -> torch.Tensor:
        lab = self._channels(x, -1, name)
        self._use(name, "weight", 1, lab, "in")
        return _broadcast(self._fresh(name, m.out_features, 0), self._shape(node), -1)  # type: ignore[arg-type]

    def _per_channel(self, node: fx.Node, name: str, m: nn.Module, x: Any) -> Any:
        """BatchNorm, InstanceNorm, PReLU: per-channel parameters (those with one entry per channel) indexed by the
        channels passing through; a BN right after a conv / linear is the one :func:`fold_bn` folds into it."""
        src = node.args[0] if node.args else None
        if (isinstance(m, _BatchNorm) and isinstance(src, fx.Node) and src.op == "call_module"
                and len(src.users) == 1 and self._role(str(src.target)) in ("conv", "linear")):
            self.folds[str(src.target)] = name  # the BN that folds into that layer (as fold_bn pairs them)
        lab = self._channels(x, 1, name)
        width = self._in_channels(node)  # traced, so the same in the run after pruning
        for p in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(m, p, None)
            if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == width:
                self._use(name, p, 0, lab, "norm")
        return x

    def _in_channels(self, node: fx.Node) -> int | None:
        """Channels (dim 1) of the node's first input as traced (the original widths, in both runs)."""
        src = node.all_input_nodes[0] if node.all_input_nodes else None
        meta = src.meta.get("tensor_meta") if src is not None else None
        shape = getattr(meta, "shape", None)
        return int(shape[1]) if shape is not None and len(shape) >= 2 else None

    def _role(self, name: str) -> str | Channels | None:
        fam = self.ops.module_family(type(self.modules[name]))
        return fam.channels if fam is not None else None

    def _layer_norm(self, node: fx.Node, name: str, m: nn.Module, x: Any) -> Any:
        if len(m.normalized_shape) != 1:  # type: ignore[arg-type]
            self._block(x, f"read by {name} (LayerNorm over several dims): it mixes channels")
            return self._unknown_output(node)
        lab = self._channels(x, -1, name)
        for p in ("weight", "bias"):
            self._use(name, p, 0, lab, "norm")
        return x

    def _spatial(self, node: fx.Node, x: Any, where: str) -> Any:
        """Pools, resizes, pads: channel c in is channel c out, laid out on the output's spatial shape."""
        shape = self._shape(node)
        if len(shape) < 2 or self._in_channels(node) != shape[1]:
            self._block(x, f"{where}: changes the number of channels")  # (traced shapes: the same in both runs)
            return self._unknown_output(node)
        return _broadcast(self._channels(x, 1, where), shape, 1)

    def _along_dim(self, node: fx.Node, x: Any, dim: Any, where: str) -> Any:
        """Softmax: per channel along a spatial dim; along the channel dim (or an implicit one) it mixes them."""
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and isinstance(dim, int) and dim % x.dim() != 1:
            return x
        self._block(x, f"{where}: normalises along the channel dimension")
        return self._unknown_output(node)

    def _custom(self, node: fx.Node, name: str, m: nn.Module, x: Any, rule: Channels, why: str) -> Any:
        """A custom op's :class:`edgecnn.ops.Channels`."""
        if rule.kind == "blocks":
            self._block(x, f"read by {name} ({type(m).__name__}): {why}")
            return self._unknown_output(node)
        lab = self._channels(x, 1, name)
        if rule.kind in ("elementwise", "spatial"):
            for p, d in rule.per_channel:
                self._use(name, p, d, lab, "norm")
            return x if rule.kind == "elementwise" else self._spatial(node, x, name)
        for p, d in rule.reads:
            self._use(name, p, d, lab, "in")
        weight_dim = dict(rule.writes)["weight"]
        n = getattr(m, "weight").shape[weight_dim]
        shape = self._shape(node)
        if len(shape) < 2 or shape[1] != n:
            raise ValueError(f"{name}: custom op says its output has weight.shape[{weight_dim}] = {n} channels, "
                             f"but the output is {tuple(shape)}")  # fmt: skip
        return _broadcast(self._fresh(name, n, weight_dim, rule.writes), shape, 1)

    def _conv(self, node: fx.Node, name: str, m: nn.Module, x: Any) -> torch.Tensor:
        lab = self._channels(x, 1, name)
        shape = self._shape(node)
        transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
        if m.groups == 1:
            self._use(name, "weight", 0 if transposed else 1, lab, "in")
            return _broadcast(self._fresh(name, m.out_channels, 1 if transposed else 0), shape, 1)
        if not transposed and m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
            out = lab.repeat_interleave(m.out_channels // m.in_channels)  # depthwise: channel o reads o // mult
            self._use(name, "weight", 0, out, "out")
            self._use(name, "bias", 0, out, "out")
            return _broadcast(out, shape, 1)
        if transposed:
            self._block(lab, f"read by {name}, a grouped transposed conv (groups={m.groups}): no rule for it")
            return _broadcast(torch.zeros(m.out_channels, dtype=torch.long), shape, 1)
        # grouped conv (Torch-Pruning's rule): every group keeps the same count, so position j of every group is one
        # channel; weight dim 1 (in / groups) loses j once, dim 0 loses output position j of every group
        rows = lab.view(m.groups, -1)
        for i in range(1, m.groups):
            self._union(rows[0], rows[i], f"{name}: input position j of every group of a grouped conv")
        self._use(name, "weight", 1, rows[0], "in")
        out = self._fresh(name, m.out_channels, 0)
        per = out.view(m.groups, -1)
        for i in range(1, m.groups):
            self._union(per[0], per[i], f"{name}: output position j of every group of a grouped conv")
        return _broadcast(out, shape, 1)

    def _unknown_output(self, node: fx.Node) -> Any:
        """Label 0 ("no slot") in the shape of the node's output: a tensor, or a tuple / list of them (a
        MultiheadAttention returns ``(out, weights)``); ``None`` where the output has no shape."""
        return _zeros_like_meta(node.meta.get("tensor_meta"))

    def _function(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = node.target
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if not tensors and not any(isinstance(a, (tuple, list)) and _label_tensors(a) for a in args):
            # shape arithmetic (x.size(0) // 2, getattr(x, "shape")): run it on the plain values
            if node.op == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            return target(*args, **kwargs)  # type: ignore[operator]
        where = f"{node.name} ({target if isinstance(target, str) else getattr(target, '__name__', target)})"
        fam = self.ops.call_family(node.op, target)
        rule = fam.channels if fam is not None else "blocks"
        if isinstance(rule, Channels):  # a custom function: only its kind matters, it owns no parameters
            rule = rule.kind if rule.kind in ("elementwise", "spatial") else "blocks"
        if rule == "blocks":
            why = f": {fam.why}" if fam is not None else ", which has no channel rule"
            self._block([*args, *kwargs.values()], f"read by {where}{why}")
            return self._unknown_output(node)
        return CHANNEL_RULES[rule][1](self, node, args, kwargs, where)

    def _binary(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
        """add, mul, ...: the operands' labels are unified element by element (a residual add, an SE gate)."""
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        big = [t for t in tensors if t.numel() > 1]
        for other in big[1:]:
            self._union(big[0], other, f"{where}: combined element-wise with a tensor that is not prunable")
        if not big:
            return tensors[0]
        return torch.broadcast_tensors(*big)[0] if len(big) > 1 else big[0]

    def _functional(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
        """A functional conv / linear / norm: its weights are arguments, not a module's, so nothing is pruned."""
        self._block([*args, *kwargs.values()], f"read by {where}: a functional layer (its weights are not a "
                                               "module's parameters)")  # fmt: skip
        return self._unknown_output(node)

    def _reduction(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
        x = args[0]
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        dims = tuple(range(x.dim())) if dims is None else ((dims,) if isinstance(dims, int) else dims)
        single = isinstance(node.meta.get("tensor_meta"), TensorMetadata)  # not max(dim)'s (values, indices)
        if (not isinstance(dims, (tuple, list)) or not all(isinstance(d, int) for d in dims) or not single
                or x.dim() < 2 or 1 in {d % x.dim() for d in dims}):
            self._block(x, f"{where}: reduces over the channel dimension")
            return self._unknown_output(node)
        return _broadcast(self._channels(x, 1, where), self._shape(node), 1)

    def _structural(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
        """cat, view, permute, getitem, F.pad, ...: run on the labels as they are (a pad adds label 0, no slot);
        a reshape splitting C into (g, C/g) and a split into equal pieces are recorded."""
        target = node.target
        if node.op == "call_method":
            name = "reshape" if target == "view" else target
            out = getattr(args[0], str(name))(*args[1:], **kwargs)
        elif target is F.pad:
            out = F.pad(args[0], *args[1:], **{**kwargs, "value": 0} if "value" in kwargs else kwargs)
        else:
            out = target(*args, **kwargs)
        x = args[0]
        role = self.ops.call_family(node.op, target)
        role = role.channels if role is not None else None
        if role == "reshape" and isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
            self._split_channels(x, out, where)
        if role == "split" and isinstance(x, torch.Tensor) and isinstance(out, (tuple, list)) and len(out) > 1:
            self._pieces(node, x, out, args, kwargs, where)
        return out

    def _run_module(self, node: fx.Node, name: str, m: nn.Module, x: Any) -> Any:
        """Flatten, Unflatten: run on the labels; a channel split into (g, C/g) is recorded."""
        out = m(x)
        if self._role(name) == "reshape" and isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
            self._split_channels(x, out, name)
        return out

    def _pieces(self, node: fx.Node, x: torch.Tensor, out: Sequence[torch.Tensor], args: tuple[Any, ...],
                kwargs: dict[str, Any], where: str) -> None:  # fmt: skip
        """A channel split (``chunk``, ``split``): record the labels of each piece; pieces of fixed sizes block.

        ``chunk(n)`` (or ``split`` by a size computed from the tensor) into equal pieces stays a valid split
        of the pruned tensor when every piece keeps the same count: recorded in :attr:`pieces` for the planner.
        A split into constant sizes cannot change size: the channels it splits are blocked.
        """
        if self.emit is not None:
            return
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
        dim = dim % x.dim()
        m = _compact(x).movedim(dim, 0).reshape(x.shape[dim], -1)
        lab = m[:, 0]
        lab = torch.where((m != lab[:, None]).any(1), torch.zeros_like(lab), lab)  # a position of mixed labels
        if not bool((lab != 0).any()):
            return
        sizes = [int(t.shape[dim]) for t in out]
        found: list[fx.Node] = []  # a split size computed in the graph (from x.size()) follows the pruned width
        fx.node.map_arg((node.args[1:2], [v for k, v in node.kwargs.items() if k != "dim"]), found.append)
        computed = node.target in ("chunk", torch.chunk) or bool(found)
        if not computed or len(set(sizes)) != 1:
            self._block(lab, f"{where}: a split into pieces of fixed sizes {sizes} (they cannot change)")
            return
        self.pieces.append((where, tuple(torch.split(lab, sizes))))

    def _split_channels(self, x: torch.Tensor, out: torch.Tensor, where: str) -> None:
        """A view of C channels as (g, C/g): the same j must stay in every one of the g rows."""
        if x.dim() < 2 or out.dim() < 3 or out.shape[0] != x.shape[0]:
            return
        c, g, per = x.shape[1], out.shape[1], out.shape[2]
        if g > 1 and per > 1 and g * per == c and tuple(out.shape[3:]) == tuple(x.shape[2:]):
            rows = self._channels(out.reshape(out.shape[0], c, *x.shape[2:]), 1, where).view(g, per)
            for i in range(1, g):
                self._union(rows[0], rows[i], f"{where}: channel split into {g} rows")


def _blocked_module(self: Interpreter, node: fx.Node, name: str, m: nn.Module, x: Any) -> Any:
    self._block(x, f"read by {name} ({type(m).__name__}), which has no channel rule for a module")
    return self._unknown_output(node)


def _blocked_call(self: Interpreter, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
    self._block([*args, *kwargs.values()], f"read by {where}, which mixes channels")
    return self._unknown_output(node)


def _softmax_dim(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs.get("dim", args[1] if len(args) > 1 else None)


_RUN = (Interpreter._run_module, Interpreter._structural)
CHANNEL_RULES: dict[str, tuple[Any, Any]] = {
    "elementwise": (lambda self, node, name, m, x: x, lambda self, node, args, kwargs, where: args[0]),
    "merge": (_blocked_module, Interpreter._binary),
    "conv": (Interpreter._conv, Interpreter._functional),
    "linear": (Interpreter._linear, Interpreter._functional),
    "per_channel": (Interpreter._per_channel, Interpreter._functional),
    "layer_norm": (Interpreter._layer_norm, Interpreter._functional),
    "spatial": (lambda self, node, name, m, x: self._spatial(node, x, name),
                lambda self, node, args, kwargs, where: self._spatial(node, args[0], where)),
    "pad": (lambda self, node, name, m, x: self._spatial(node, x, name), Interpreter._structural),
    "structural": _RUN,
    "reshape": _RUN,
    "split": _RUN,
    "reduction": (_blocked_module, Interpreter._reduction),
    "along_dim": (lambda self, node, name, m, x: self._along_dim(node, x, getattr(m, "dim", None), name),
                  lambda self, node, args, kwargs, where: self._along_dim(node, args[0], _softmax_dim(args, kwargs),
                                                                          where)),
    "blocks": (_blocked_module, _blocked_call),
}  # fmt: skip
"""Channel role (:data:`edgecnn.ops.CHANNEL_ROLES`) -> (rule for a module call ``(interp, node, name, module,
input)``, rule for a function or method call ``(interp, node, args, kwargs, where)``). Which op has which role:
:mod:`edgecnn.ops`."""


# ---------------------------------------------------------------- the trace


@dataclass(frozen=True)
class Trace:
    """The traced graph the labels run on, its modules, the root fx's constants are read from, and the costs."""

    graph: fx.Graph
    modules: dict[str, nn.Module]
    root: nn.Module
    analysis: Any  # edgecnn.analysis.Analysis of the same pass: per-layer params and MACs at batch 1


def trace_for_labels(model: nn.Module, inputs: Sequence[torch.Tensor], ops: OpTable = OPS) -> Trace:
    """One fx trace with meta shapes on every node (batch 1): :func:`edgecnn.graph.trace_graph`, walked by
    the cost analysis's evaluator (shape formulas, no meta kernels), so the costs come with it. ``ops``: the op
    table (its custom module types are kept whole and costed by their rule)."""
    from edgecnn.analysis.trace import analyze_fx  # compress reads analysis, never the reverse

    metas = [torch.empty((1, *t.shape[1:]), dtype=t.dtype, device="meta") for t in inputs]
    try:
        # sizes stay symbolic: the graph is re-run at the pruned widths (a channel shuffle's view reads them)
        analysis, g = analyze_fx(model, metas, receptive_fields=False, concrete_shapes=False, ops=ops)
    except GraphError as e:
        raise ValueError(f"cannot find channel groups: {e}; prune a traceable submodule instead") from e
    assert g.graph is not None
    root = copy.copy(g.root)  # the constants fx found (g.added) are read by get_attr nodes
    root.__dict__.update(g.added)
    return Trace(g.graph, g.modules, root, analysis)
