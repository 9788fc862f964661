"""The output and cost of one traced op, on meta tensors (docs/design.md §3).

The fx pass of :mod:`edgecnn.analysis.trace` hands each call node here with
its arguments already turned into *meta* tensors (shape and dtype, no data).
The op's rule in the cost table (:mod:`edgecnn.analysis.handlers`) gives its
output and :class:`~edgecnn.analysis.handlers.Cost` without running a kernel;
reshapes and reductions without a rule are run on meta tensors (no kernel
either) at no MAC cost; anything else is run on meta tensors inside
``FlopCounterMode``, so its shape and any conv/matmul MACs inside it are
still exact. Also here: what both the fx pass and the hooks fallback read
off an op's outputs (its tensors and their activation memory).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.analysis import handlers as H
from edgecnn.graph import run_on_meta

_VIEW_KINDS = ("data",)  # outputs that alias their input: no new activation memory


def tensors(v: Any) -> list[torch.Tensor]:
    """The tensors of an op's output: itself, or those in a (nested) tuple/list."""
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        return [t for e in v for t in tensors(e)]
    return []


def activation(outs: Sequence[torch.Tensor], kind: str) -> tuple[int, int]:
    """Elements and bytes of an op's output tensors; bytes are 0 for views (kind ``"data"``)."""
    elements = sum(t.numel() for t in outs)
    nbytes = 0 if kind in _VIEW_KINDS else sum(t.numel() * t.element_size() for t in outs)
    return elements, nbytes


def _has_tensor(a: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return True
    if isinstance(a, (tuple, list)):
        return any(_has_tensor(e) for e in a)
    if isinstance(a, dict):
        return any(_has_tensor(e) for e in a.values())
    return False


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _reduce(node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    y = H.reduced(args, kwargs)
    return y if y is not None else run_on_meta(node, None, args, kwargs)


def cost_node(
    node: fx.Node, module: nn.Module | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, H.Cost, str]:
    """Output value, cost and a note for one call node (``module``: the called one, for call_module)."""
    target = node.target
    if node.op == "call_module":
        assert module is not None
        handler = H.module_handler(module)
    elif node.op == "call_function":
        handler = H.FUNCTION_HANDLERS.get(target)
        if handler is None and target in H.DATA_FUNCTIONS:
            kind = "data" if target in (operator.getitem, getattr) else "copy"
            return run_on_meta(node, None, args, kwargs), H.Cost(kind), ""
        if handler is None and target in H.REDUCE_FUNCTIONS:
            return _reduce(node, args, kwargs), H.Cost("reduce", 0, _numel(args[0])), ""
    else:
        handler = H.METHOD_HANDLERS.get(target)  # type: ignore[arg-type]
        if handler is None and target in H.DATA_METHODS:
            return run_on_meta(node, None, args, kwargs), H.Cost("data"), ""
        if handler is None and target in H.REDUCE_METHODS:
            return _reduce(node, args, kwargs), H.Cost("reduce", 0, _numel(args[0])), ""
    if handler is not None:
        try:
            value, cost = handler(H.Call(module, args, kwargs))
            return value, cost, ""
        except NotImplementedError:
            pass  # a case the rule does not cover: measure it below
    elif module is None and not _has_tensor(args) and not _has_tensor(kwargs):
        return run_on_meta(node, None, args, kwargs), H.Cost("data"), ""  # shape arithmetic: `c // groups`
    with FlopCounterMode(display=False) as counter:
        value = run_on_meta(node, module, args, kwargs)
    macs = counter.get_total_flops() // 2
    return value, H.Cost("other", macs, 0), "no rule: run on meta tensors, MACs from FlopCounterMode"


def shape_value(node: fx.Node, module: nn.Module | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An :data:`edgecnn.graph.Evaluator`: a node's output from the cost table's shape rules (no kernel runs;
    ops without a rule on meta tensors). Much faster than the default ``run_on_meta`` for convolutions."""
    return cost_node(node, module, args, kwargs)[0]
