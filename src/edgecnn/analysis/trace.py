"""One traced pass over any ``nn.Module``: per-op shapes, params, MACs, activations, receptive fields.

How (docs/design.md §3): the model is traced once by :func:`edgecnn.graph.trace_graph`
(``torch.fx``, ``torch.nn`` layers and any ``leaf_modules`` types kept whole,
everything else traced through) and its nodes evaluated on *meta* tensors by
an evaluator that, on the way, costs each node with
:func:`edgecnn.analysis.node_cost.cost_node` (the shape maths of the cost
table in :mod:`edgecnn.analysis.handlers`, no kernel run; ops without a rule
run on meta tensors under ``FlopCounterMode``). This file owns that
evaluator, the walk that turns the costed nodes into :class:`LayerCost` rows
(names, parameters counted once, receptive-field columns from
:func:`edgecnn.analysis.receptive.receptive_fields` on the same graph), the
entry point :func:`analyze` and :func:`shape_graph` (the graph with shapes,
no costs, for planners). Weights are never read or copied.

When fx cannot trace the module (e.g. Python control flow on tensor values),
:func:`analyze` falls back to one real forward pass with hooks
(:mod:`edgecnn.analysis.hooks`) and says so: ``Analysis.mode == "hooks"``
and ``Analysis.fallback_reason``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn

from edgecnn.analysis.hooks import analyze_hooks, check_fallback_memory
from edgecnn.analysis.node_cost import activation, cost_node, shape_evaluator, tensors
from edgecnn.analysis.cost_table import Analysis, LayerCost, model_label
from edgecnn.graph import Graph, GraphError, gc_paused, trace_graph
from edgecnn.ops import OPS, CustomOp, OpTable, op_table


def _fn_name(target: Any) -> str:
    return getattr(target, "__name__", None) or str(target)


def _qualname(target: Any) -> str:
    mod = getattr(target, "__module__", None) or ""
    return f"{mod}.{_fn_name(target)}" if mod else _fn_name(target)


def analyze_fx(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    receptive_fields: bool = True,
    concrete_shapes: bool = True,
    ops: OpTable = OPS,
) -> tuple[Analysis, Graph]:
    """The fx pass: one :func:`edgecnn.graph.trace_graph` whose evaluator costs each node on the way.

    ``concrete_shapes``: see :func:`edgecnn.graph.trace_graph` (``False`` keeps sizes symbolic in the graph).
    ``ops``: the op table (:func:`edgecnn.ops.op_table`; its custom module types are kept whole).
    Raises :class:`edgecnn.graph.GraphError` when fx cannot trace the model; :func:`analyze` then falls back.
    """
    costs: dict[fx.Node, tuple[Any, str]] = {}

    def evaluate(node: fx.Node, module: nn.Module | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value, cost, note = cost_node(node, module, args, kwargs, ops)
        costs[node] = (cost, note)
        return value

    leaves = (*leaf_modules, *ops.leaf_types)
    g = trace_graph(model, inputs, leaf_modules=leaves, evaluate=evaluate, concrete_shapes=concrete_shapes)
    modules = g.modules
    values = g.values
    counted: set[int] = set()
    calls: dict[str, int] = {}
    rows: list[LayerCost] = []
    row_of: dict[str, LayerCost] = {}
    for node, (cost, note) in costs.items():
        outs = tensors(values[node])
        if not outs:
            continue  # x.size(), shape arithmetic: not a layer
        op = node.op
        module = modules[node.target] if op == "call_module" else None
        # parameters: a module's own, or bare ones read through get_attr; each counted once
        params = 0
        if module is not None:  # a leaf without children (nearly all) needs no recursive walk
            owned = module.parameters() if module._modules else module._parameters.values()
        else:
            owned = (g.attr(a) for a in node.all_input_nodes if a.op == "get_attr")
        for p in owned:
            if isinstance(p, nn.Parameter) and id(p) not in counted:
                counted.add(id(p))
                params += p.numel()
        if op == "call_module":
            n = calls[node.target] = calls.get(node.target, 0) + 1
            name, label, scope, target = node.target, type(module).__name__, node.target, node.target
            if n > 1:
                name, note = f"{node.target}#{n}", note or f"call {n} of the module (its parameters counted once)"
        else:
            scope = node.meta.get("scope", "")
            label = node.target if op == "call_method" else _fn_name(node.target)
            target = f"Tensor.{node.target}" if op == "call_method" else _qualname(node.target)
            name = f"{scope}.{node.name}" if scope else node.name
        elements, nbytes = activation(outs, cost.kind)
        row = LayerCost(name, node.name, str(label), cost.kind, str(target), scope, tuple(outs[0].shape), params,
                        cost.macs, cost.other_ops, elements, nbytes, note=note)  # fmt: skip
        rows.append(row)
        row_of[node.name] = row
    unused = 0
    for mod in modules.values():  # the model's parameters, each once, without a second recursive walk
        for p in mod._parameters.values():
            if p is not None and id(p) not in counted:
                counted.add(id(p))
                unused += p.numel()
    analysis = Analysis(model_label(model), [tuple(t.shape) for t in inputs], rows, "fx", unused)
    if receptive_fields:
        _add_receptive_fields(g, row_of, analysis, ops)
    return analysis, g


def _add_receptive_fields(g: Graph, row_of: dict[str, LayerCost], analysis: Analysis, ops: OpTable) -> None:
    from edgecnn.analysis.receptive import receptive_fields  # on first use: analyses without fields never load it

    try:
        rfs = receptive_fields(g, custom_ops=ops)
    except ValueError as exc:  # e.g. an input without spatial axes
        analysis.notes.append(f"receptive fields not computed: {exc}")
        return
    for name, rf in rfs.items():
        row = row_of.get(name)
        if row is None:
            continue
        row.rf_size, row.rf_jump, row.rf_start = _plain(rf.size), _plain(rf.jump), _plain(rf.start)
        row.rf_whole, row.rf_global = bool(rf.whole), bool(rf.global_context or rf.whole)
        if rf.note and rf.note not in row.note:
            row.note = f"{row.note}; RF: {rf.note}" if row.note else f"RF: {rf.note}"


def _plain(values: tuple[Any, ...]) -> tuple[float, ...]:
    # receptive fields may be Fractions (transposed convs, upsampling); rows hold JSON-ready numbers
    if all(type(v) is int for v in values):
        return values
    return tuple(v if type(v) is int else int(v) if v.denominator == 1 else float(v) for v in values)


# ---------------------------------------------------------------- entry point


def _inputs(model: nn.Module, input_size: Sequence[int] | None, inputs: Any, batch_size: int) -> list[torch.Tensor]:
    if inputs is not None:
        got = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        if not got or not all(isinstance(t, torch.Tensor) for t in got):
            raise ValueError("inputs must be a tensor or a sequence of tensors")
        return got
    if input_size is None:
        raise ValueError("give input_size (e.g. (3, 224, 224)) or example inputs")
    size = tuple(int(s) for s in input_size)
    if not size or min(size) < 1:
        raise ValueError(f"input_size must be positive sizes without the batch axis, e.g. (3, 224, 224); got {input_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return [torch.empty((batch_size, *size), dtype=dtype, device="meta")]  # shapes only; see _real


def shape_graph(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    *,
    inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    batch_size: int = 1,
    leaf_modules: Sequence[type[nn.Module]] = (),
    custom_ops: Sequence[CustomOp] | OpTable | None = None,
) -> Graph:
    """``model``'s :class:`edgecnn.graph.Graph` with meta shapes for an input of ``input_size`` = (C, H, W), without
    a cost analysis: what a planner needs for per-layer shapes (``g.io_shapes(node)``). Raises
    :class:`edgecnn.graph.GraphError` when fx cannot trace the model. ``custom_ops``: as in :func:`analyze`."""
    xs = _inputs(model, input_size, inputs, batch_size)
    ops = op_table(custom_ops)
    return trace_graph(model, xs, leaf_modules=(*leaf_modules, *ops.leaf_types), evaluate=shape_evaluator(ops))


def _real(model: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Zero inputs the hooks fallback can run, on the model's device, for meta inputs made from an input size."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else None
    return [torch.zeros(x.shape, dtype=x.dtype, device=device) if x.device.type == "meta" else x for x in xs]


def analyze(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    *,
    inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    batch_size: int = 1,
    leaf_modules: Sequence[type[nn.Module]] = (),
    mode: str = "auto",
    receptive_fields: bool = True,
    custom_ops: Sequence[CustomOp] | OpTable | None = None,
    handlers: Mapping[Any, Callable[..., Any]] | None = None,
) -> Analysis:
    """Per-layer costs of ``model`` for an input of ``input_size`` = (C, H, W) (or example ``inputs``).

    ``mode``: ``"fx"`` (one traced pass on meta tensors; raises when fx
    cannot trace), ``"hooks"`` (the fallback, runs the model), ``"auto"``
    (fx, else hooks, with the reason in ``fallback_reason``: never silent). ``leaf_modules``: module
    types to keep whole instead of tracing through (they are costed by their
    rule, or on meta tensors under FlopCounterMode). ``receptive_fields=False``
    skips the receptive-field columns (a fifth of the time). ``custom_ops``: :class:`edgecnn.ops.CustomOp` s
    teaching the cost and field of ops of your own (module types among them are kept whole); see
    docs/analysis.md, "Custom ops". ``handlers``: the cost-only shortcut, fvcore's per-op handler style —
    ``{target: cost_fn}``, each the same as ``CustomOp(target, cost=cost_fn)``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if mode not in ("auto", "fx", "hooks"):
        raise ValueError(f"mode must be 'auto', 'fx' or 'hooks', got {mode!r}")
    xs = _inputs(model, input_size, inputs, batch_size)
    ops = op_table(_with_handlers(custom_ops, handlers))
    if mode == "hooks":
        check_fallback_memory(model, xs, "mode 'hooks' asked for")
        analysis = analyze_hooks(model, _real(model, xs), leaf_modules=leaf_modules, ops=ops)
        analysis.fallback_reason = "mode 'hooks' asked for"
        return analysis
    try:
        with gc_paused():
            return analyze_fx(model, xs, leaf_modules=leaf_modules, receptive_fields=receptive_fields, ops=ops)[0]
    except GraphError as exc:
        if mode == "fx":
            raise
        first = exc.reason
    check_fallback_memory(model, xs, first)
    try:
        analysis = analyze_hooks(model, _real(model, xs), leaf_modules=leaf_modules, ops=ops)
    except Exception as exc:  # the model does not run on this input either: a user error, say both reasons
        shapes = ", ".join("×".join(map(str, t.shape)) for t in xs)
        raise ValueError(f"the model cannot run on an input of {shapes}: {_first_line(exc)} "
                         f"(fx pass: {first}); check the input size and channels") from exc  # fmt: skip
    analysis.fallback_reason = first
    return analysis


def _with_handlers(custom_ops: Sequence[CustomOp] | OpTable | None,
                   handlers: Mapping[Any, Callable[..., Any]] | None) -> Sequence[CustomOp] | OpTable | None:  # fmt: skip
    """``custom_ops`` plus one cost-only :class:`CustomOp` per handler."""
    if not handlers:
        return custom_ops
    if isinstance(custom_ops, OpTable):
        raise ValueError("handlers= adds to a list of custom ops, not to a built OpTable; pass CustomOp(target, "
                         "cost=fn) objects in custom_ops instead")  # fmt: skip
    if not isinstance(handlers, Mapping):
        raise ValueError(f"handlers must be a mapping {{target: cost function}}, got {type(handlers).__name__}")
    return [*(custom_ops or ()), *(CustomOp(target, cost=fn) for target, fn in handlers.items())]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
