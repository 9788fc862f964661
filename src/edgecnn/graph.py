"""The network graph, traced once: what analysis, receptive fields, fold_bn, low-rank planning and channel groups read.

One ``torch.fx`` trace of any ``nn.Module`` (Reed et al. 2022, *torch.fx:
Practical Program Capture and Transformation for Deep Learning in Python*)
with ``torch.nn`` layers (and any ``leaf_modules`` types given) kept whole
and everything else traced through -- functional calls (``F.conv2d``,
``torch.cat([...])``, ``x @ w``), bare ``nn.Parameter`` reads (``get_attr``
nodes) and a module called twice (two nodes) are all seen -- then one
propagation of *meta* tensors (shape, dtype and strides, no data) through the
nodes. This file owns:

* :class:`GraphTracer` -- the fx tracer: each node gets ``meta["scope"]``,
  the path of the innermost module whose forward created it;
* :func:`trace_graph` -- trace + propagate, giving a :class:`Graph`; when fx
  cannot trace the model (Python control flow on tensor values) it raises
  :class:`GraphError`, or with ``fallback=True`` returns a graph in
  ``mode="hooks"`` that states why (``fallback_reason``) -- never silently;
* :class:`Graph` -- the queries every consumer needs: the module of a
  ``call_module`` node, a node's inputs (nested ``args``/``kwargs`` -- lists,
  tuples, dicts of nodes -- included) and users, its output shape(s), its
  module scope, the calls of a module, conv→BN style producer/consumer pairs;
* :func:`map_args` / :func:`run_on_meta` -- the argument mapping and the
  default node evaluator (the op run on meta tensors, no kernel).

Node evaluation is pluggable: the cost analysis
(:mod:`edgecnn.analysis.trace`) passes its own evaluator, which computes each
output from the shape formulas of its cost table and records the cost on the
way, so an analysis is still one trace and one walk.

Meta propagation keeps real strides (a transpose stays non-contiguous until
``contiguous()``), so shape code such as a channel shuffle's
``view → transpose → contiguous → view`` propagates as it runs.
"""

from __future__ import annotations

import gc
import inspect
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.fx.proxy import Proxy

__all__ = ["Evaluator", "Graph", "GraphError", "GraphTracer", "gc_paused", "map_args", "propagate", "run_on_meta",
           "tensor_meta", "to_meta", "trace_graph"]  # fmt: skip

MODES = ("fx", "hooks")
_PLAIN = (int, float, bool, str, type(None))

Evaluator = Callable[[fx.Node, "nn.Module | None", tuple[Any, ...], dict[str, Any]], Any]
"""``(node, module, args, kwargs) -> output``: computes one call node's output from its (meta) arguments."""


class GraphError(ValueError):
    """torch.fx cannot trace the model (or its meta propagation fails); the message says why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message  # one line: the stage and the first line of fx's error


class _InputCountError(ValueError):
    """More placeholders than inputs given: the caller's mistake, never a reason to fall back."""


# ---------------------------------------------------------------- tracing


class GraphTracer(fx.Tracer):
    """fx tracer with ``torch.nn`` layers (and ``leaf_modules`` types) as leaves.

    Tracing is the largest part of an analysis, so two hot paths are lean:
    ``create_arg`` short-cuts the argument types a CNN passes (proxies,
    numbers, tuples), and ``call_module`` keeps a plain stack of module paths
    instead of fx's ``nn_module_stack`` (an ordered dict copied into every
    node); each node gets ``meta["scope"]``, the path of the innermost module
    whose forward created it (for a ``call_module`` node: the called module).
    """

    def __init__(self, leaf_modules: Sequence[type[nn.Module]] = (), *, autowrap_math: bool = True) -> None:
        # fx's default wraps every ``math`` function for the trace (``math.sqrt(proxy)`` then traces), patching
        # the ``math`` module's ~60 functions in and out on every trace: ``autowrap_math=False`` skips that
        super().__init__(autowrap_modules=(math,) if autowrap_math else ())
        self.leaf_types = tuple(leaf_modules)
        self.scopes: list[str] = []  # module paths of the forwards being traced, outermost first

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        path = self.path_of_module(m)
        self.scopes.append(path)
        try:
            if self.is_leaf_module(m, path):
                return self.create_proxy("call_module", path, args, kwargs)
            return forward(*args, **kwargs)
        finally:
            self.scopes.pop()

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta["scope"] = self.scopes[-1] if self.scopes else ""
        return node

    def create_arg(self, a: Any) -> Any:
        t = type(a)
        if t is Proxy:
            return a.node
        if t in _PLAIN:
            return a
        if t is tuple:
            return tuple(self.create_arg(e) for e in a)
        return super().create_arg(a)


# ---------------------------------------------------------------- values


def to_meta(v: Any) -> Any:
    """A meta tensor with ``v``'s shape, strides and dtype when ``v`` is a tensor, else ``v``."""
    if isinstance(v, torch.Tensor):
        if v.device.type == "meta" and type(v) is torch.Tensor:
            return v
        return torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta")
    return v


def map_args(a: Any, env: dict[fx.Node, Any]) -> Any:
    """``a`` with every :class:`fx.Node` replaced by ``env[node]``, through nested tuples, lists, dicts and slices.

    fx stores lists and dicts as ``immutable_list`` / ``immutable_dict`` (subclasses), named tuples keep their
    type, ``torch.Size`` becomes a tuple.
    """
    t = type(a)
    if t is fx.Node:
        return env[a]
    if t in _PLAIN:
        return a
    if isinstance(a, tuple):
        items = [map_args(e, env) for e in a]
        return t(*items) if hasattr(a, "_fields") else tuple(items)
    if isinstance(a, list):
        return [map_args(e, env) for e in a]
    if isinstance(a, dict):
        return {k: map_args(v, env) for k, v in a.items()}
    if t is slice:
        return slice(map_args(a.start, env), map_args(a.stop, env), map_args(a.step, env))
    return a


def run_on_meta(node: fx.Node, module: nn.Module | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The default :data:`Evaluator`: run the op on its meta arguments (a module with meta copies of its state)."""
    if node.op == "call_module":
        assert module is not None
        state = {k: to_meta(v) for k, v in (*module.named_parameters(), *module.named_buffers())}
        return torch.func.functional_call(module, state, args, kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)  # type: ignore[arg-type]
    return node.target(*args, **kwargs)  # type: ignore[operator]


def tensor_meta(value: Any) -> Any:
    """What fx's ``ShapeProp`` stores in ``meta["tensor_meta"]``: a :class:`TensorMetadata` per tensor, in the
    value's (nested tuple/list) structure; ``None`` for a value without tensors."""
    if isinstance(value, torch.Tensor):
        return TensorMetadata(value.shape, value.dtype, value.requires_grad, value.stride(), None, False, {})
    if isinstance(value, (tuple, list)):
        metas = [tensor_meta(v) for v in value]
        return tuple(metas) if any(m is not None for m in metas) else None
    return None


def _first_meta(meta: Any) -> TensorMetadata | None:
    if isinstance(meta, TensorMetadata) or meta is None:
        return meta
    return next((m for m in map(_first_meta, meta) if m is not None), None)


def _fetch(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------- the graph


@dataclass
class Graph:
    """A model traced once, with meta shapes on its nodes (``mode="fx"``), or the statement that it could not be.

    In ``mode="hooks"`` (fx failed and a fallback was asked for) ``graph`` is ``None`` and
    ``fallback_reason`` says why; consumers that need the graph raise, the cost analysis runs forward hooks.
    """

    root: nn.Module  # the traced module, left as it was (constants fx stored on it while tracing are in `added`)
    graph: fx.Graph | None  # the fx graph; None in mode "hooks"
    mode: str = "fx"  # "fx", or "hooks" when fx could not trace the model
    fallback_reason: str = ""  # why fx could not trace (mode "hooks"), one line; "" in mode "fx"
    input_shapes: tuple[tuple[int, ...], ...] = ()  # shapes propagated (batch included); () when not propagated
    modules: dict[str, nn.Module] = field(default_factory=dict)  # module path -> module, every module of root
    added: dict[str, Any] = field(default_factory=dict)  # attributes fx set on root while tracing (constants)
    values: dict[fx.Node, Any] = field(default_factory=dict)  # node -> its meta output (after propagation)

    # ---- nodes

    @property
    def nodes(self) -> list[fx.Node]:
        """All nodes in execution order (placeholders first, the output last)."""
        return list(self.graph.nodes) if self.graph is not None else []

    def calls(self) -> Iterator[fx.Node]:
        """The call nodes (call_module, call_function, call_method) in execution order."""
        for n in self.nodes:
            if n.op.startswith("call_"):
                yield n

    def placeholders(self) -> list[fx.Node]:
        """The input nodes, in order."""
        return [n for n in self.nodes if n.op == "placeholder"]

    def output(self) -> fx.Node:
        """The output node."""
        return next(n for n in reversed(self.nodes) if n.op == "output")

    def inputs(self, node: fx.Node) -> list[fx.Node]:
        """Every node ``node`` reads, through nested args and kwargs (lists, tuples, dicts), in order, once each."""
        return node.all_input_nodes

    def tensor_inputs(self, node: fx.Node) -> list[fx.Node]:
        """The inputs of ``node`` whose value holds a tensor (weights read by ``get_attr`` included)."""
        return [a for a in node.all_input_nodes if a.meta.get("tensor_meta") is not None]

    def users(self, node: fx.Node) -> list[fx.Node]:
        """The nodes that read ``node``'s output, in execution order (the output node included)."""
        return list(node.users)

    # ---- modules

    def module(self, node: fx.Node) -> nn.Module | None:
        """The module a ``call_module`` node calls; ``None`` for other nodes."""
        if node.op != "call_module":
            return None
        return self.get_submodule(str(node.target))

    def get_submodule(self, target: str) -> nn.Module:
        """The module at ``target`` (a dict lookup, unlike ``Module.get_submodule``)."""
        module = self.modules.get(target)
        return module if module is not None else self.root.get_submodule(target)

    def scope(self, node: fx.Node) -> str:
        """Path of the innermost module whose forward created ``node`` (the called module for call_module)."""
        return node.meta.get("scope", "")

    def module_calls(self, types: type | tuple[type, ...] = nn.Module) -> Iterator[tuple[fx.Node, nn.Module]]:
        """``(node, module)`` for each call_module node whose module is an instance of ``types``."""
        for n in self.nodes:
            if n.op == "call_module":
                m = self.get_submodule(str(n.target))
                if isinstance(m, types):
                    yield n, m

    def calls_of(self, path: str) -> list[fx.Node]:
        """The call_module nodes that call the module at ``path`` (two or more for a shared module)."""
        return [n for n in self.nodes if n.op == "call_module" and n.target == path]

    def node(self, name: str) -> fx.Node:
        """The node named ``name`` (the keys of :func:`edgecnn.analysis.receptive.receptive_fields`)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise ValueError(f"the graph has no node {name!r}")

    def times_called(self) -> Counter[str]:
        """How often each module path is called by the forward (a shared module: more than once)."""
        return Counter(str(n.target) for n in self.nodes if n.op == "call_module")

    def attr(self, node: fx.Node) -> Any:
        """The value (a parameter, buffer or constant) a ``get_attr`` node reads."""
        if node.op != "get_attr":
            raise ValueError(f"node {node.name} is a {node.op} node, not get_attr")
        return self._fetch(str(node.target))

    def _fetch(self, target: str) -> Any:
        if target in self.added:  # a constant fx met while tracing (kept here, not on the user's module)
            return self.added[target]
        return _fetch(self.root, target)

    def read_directly(self) -> set[str]:
        """Module paths whose parameters/buffers the forward reads through ``get_attr`` (outside a leaf call)."""
        return {str(n.target).rpartition(".")[0] for n in self.nodes if n.op == "get_attr"}

    def producer(self, node: fx.Node, index: int = 0) -> fx.Node | None:
        """The node that feeds positional argument ``index`` of ``node``, if it is a node."""
        a = node.args[index] if index < len(node.args) else None
        return a if isinstance(a, fx.Node) else None

    # ---- shapes

    def meta(self, node: fx.Node) -> Any:
        """``node.meta["tensor_meta"]``: a :class:`TensorMetadata`, a tuple of them, or ``None``."""
        return node.meta.get("tensor_meta")

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        """Shape of ``node``'s output (its first tensor when it returns several); ``None`` without a tensor."""
        m = _first_meta(node.meta.get("tensor_meta"))
        return tuple(int(s) for s in m.shape) if m is not None else None

    def shapes(self, node: fx.Node) -> list[tuple[int, ...]]:
        """Shapes of every tensor ``node`` returns, in order."""
        out: list[tuple[int, ...]] = []

        def walk(m: Any) -> None:
            if isinstance(m, TensorMetadata):
                out.append(tuple(int(s) for s in m.shape))
            elif isinstance(m, (tuple, list)):
                for e in m:
                    walk(e)

        walk(node.meta.get("tensor_meta"))
        return out

    def io_shapes(self, node: fx.Node) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
        """(shape of the first input, shape of the output) of a call node: what a layer-level planner needs."""
        src = next((a for a in node.all_input_nodes if a.meta.get("tensor_meta") is not None), None)
        return (self.shape(src) if src is not None else None), self.shape(node)

    def graph_module(self) -> fx.GraphModule:
        """A runnable ``fx.GraphModule`` of the graph (built on request: it copies submodules and generates code)."""
        if self.graph is None:
            raise GraphError(f"no fx graph: {self.fallback_reason}")
        self.root.__dict__.update(self.added)  # the constants the graph reads, only while copying them
        try:
            return _GraphModule(self.root, self.graph, type(self.root).__name__)
        finally:
            _undo(self.root, set(vars(self.root)) - set(self.added))


try:  # defers code generation until someone calls the module
    from torch.fx._lazy_graph_module import _LazyGraphModule as _GraphModule
except ImportError:  # pragma: no cover - older torch
    _GraphModule = fx.GraphModule


# ---------------------------------------------------------------- entry points


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def propagate(g: Graph, inputs: Sequence[torch.Tensor], evaluate: Evaluator = run_on_meta) -> None:
    """Run meta tensors of ``inputs`` through ``g``: fill ``g.values`` and every node's ``meta["tensor_meta"]``."""
    if g.graph is None:
        raise GraphError(f"no fx graph to propagate: {g.fallback_reason}")
    env = g.values
    env.clear()
    placeholders = iter(inputs)
    modules = g.modules
    for node in g.graph.nodes:
        op = node.op
        if op == "placeholder":
            try:
                value = to_meta(next(placeholders))
            except StopIteration:
                if not node.args:  # a parameter without a default (a traced one with a default carries it)
                    raise _InputCountError(f"the model takes more inputs than the {len(inputs)} given") from None
                value = node.args[0]
        elif op == "get_attr":
            value = to_meta(g._fetch(node.target))
        elif op == "output":
            continue
        else:
            module = modules.get(node.target) if op == "call_module" else None  # type: ignore[arg-type]
            if op == "call_module" and module is None:
                module = g.root.get_submodule(node.target)  # type: ignore[arg-type]
            value = evaluate(node, module, map_args(node.args, env), map_args(node.kwargs, env))
        env[node] = value
        node.meta["tensor_meta"] = tensor_meta(value)
    g.input_shapes = tuple(tuple(t.shape) for t in inputs)


def trace_graph(
    model: nn.Module,
    inputs: Sequence[torch.Tensor] | torch.Tensor | None = None,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    evaluate: Evaluator = run_on_meta,
    fallback: bool = False,
) -> Graph:
    """Trace ``model`` once with torch.fx and, given example ``inputs``, propagate meta shapes through it.

    ``inputs``: tensors of the input shapes (any device, meta included; only shapes, strides and dtypes are
    read), or ``None`` for the graph without shapes. ``leaf_modules``: module types to keep whole.
    ``evaluate``: computes a call node's output from its meta arguments (default: run it on meta tensors).
    When fx cannot trace the model, or propagation fails, raises :class:`GraphError` -- or, with
    ``fallback=True``, returns a ``Graph`` in ``mode="hooks"`` whose ``fallback_reason`` says why.
    The model is left as it was (constants fx stores on it are removed after propagation).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    xs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs) if inputs is not None else None
    before = set(vars(model))
    stage = "fx trace failed"
    try:
        with gc_paused():
            concrete = _defaults_after(model, len(xs)) if xs is not None else None
            tracer = GraphTracer(leaf_modules, autowrap_math=False)
            try:  # most models apply no math function to a traced value: the lean trace is the same graph
                graph = tracer.trace(model, concrete_args=concrete)
            except Exception:  # math.f(proxy) raises (a Proxy is not a number): trace as fx does by default
                _undo(model, before)
                tracer = GraphTracer(leaf_modules)
                graph = tracer.trace(model, concrete_args=concrete)
            g = Graph(tracer.root, graph, modules=dict(tracer.root.named_modules()))
            g.added = {k: v for k, v in vars(model).items() if k not in before}
            if xs is not None:
                stage = "meta-tensor propagation failed"
                propagate(g, xs, evaluate)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, RuntimeError from meta kernels)
        _undo(model, before)
        if isinstance(exc, _InputCountError):
            raise
        reason = f"{stage}: {_first_line(exc)}"
        if not fallback:
            raise GraphError(f"cannot analyse {type(model).__name__} with torch.fx ({reason})", reason) from exc
        return Graph(model, None, "hooks", reason, modules=dict(model.named_modules()))
    _undo(model, before)  # the constants stay reachable through g.added
    return g


def _defaults_after(model: nn.Module, n: int) -> dict[str, Any] | None:
    """``forward``'s parameters after the first ``n`` (the inputs given) that have defaults, by name.

    fx traces them as those constants, so control flow on them is specialised (timm's
    ``VisionTransformer.forward(x, attn_mask=None, is_causal=False)``: ``if is_causal:`` on a proxy fails).
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read: trace every parameter
        return None
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    out = {p.name: p.default for p in named[n:] if p.default is not p.empty}
    return out or None


@contextmanager
def gc_paused() -> Iterator[None]:
    """Cyclic garbage collection paused inside the block (restored after, if it was on).

    A trace and its propagation allocate tens of thousands of short-lived objects (proxies, nodes, meta
    tensors, tuples); the collector passes they trigger find nothing to free and cost ~10% of an analysis.
    Reference counting still frees everything as usual.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _undo(model: nn.Module, before: set[str]) -> None:
    for key in [k for k in vars(model) if k not in before]:
        model.__dict__.pop(key, None)
