"""The output and cost of one traced op, on meta tensors (docs/design.md §3).

The fx pass of :mod:`edgecnn.analysis.trace` hands each call node here with
its arguments already turned into *meta* tensors (shape and dtype, no data).
The op's family in the op table (:mod:`edgecnn.ops`) names its cost role, whose
rule (:data:`edgecnn.analysis.handlers.COST_RULES`) gives its output and
:class:`~edgecnn.analysis.handlers.Cost` without running a kernel;
reshapes and reductions without a rule are run on meta tensors (no kernel
either) at no MAC cost; anything else is run on meta tensors inside
``FlopCounterMode``, so its shape and any conv/matmul MACs inside it are
still exact. Also here: what both the fx pass and the hooks fallback read
off an op's outputs (its tensors and their activation memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.analysis import handlers as H
from edgecnn.graph import run_on_meta
from edgecnn.ops import OPS, OpTable

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
    node: fx.Node, module: nn.Module | None, args: tuple[Any, ...], kwargs: dict[str, Any], ops: OpTable = OPS
) -> tuple[Any, H.Cost, str]:
    """Output value, cost and a note for one call node (``module``: the called one, for call_module).

    The node's family in ``ops`` (:mod:`edgecnn.ops`) gives its cost role, :data:`handlers.COST_RULES` the rule.
    """
    family = ops.family(node.op, node.target, module)
    if family is not None and callable(family.cost):
        return _custom(node, module, args, kwargs, family.cost)
    rule = H.cost_rule(family)
    handler = rule.handler(node.op) if rule is not None else None
    if rule is not None and handler is None and rule.runs:
        if rule.runs == "reduce":
            return _reduce(node, args, kwargs), H.Cost("reduce", 0, _numel(args[0])), ""
        return run_on_meta(node, module, args, kwargs), H.Cost(rule.runs), ""
    if handler is not None:
        try:
            value, cost = handler(H.Call(module, args, kwargs, None if module is not None else node.target))
            return value, cost, ""
        except NotImplementedError:
            pass  # a case the rule does not cover: measure it below
    elif module is None and not _has_tensor(args) and not _has_tensor(kwargs):
        return run_on_meta(node, None, args, kwargs), H.Cost("data"), ""  # shape arithmetic: `c // groups`
    with FlopCounterMode(display=False) as counter:
        value = run_on_meta(node, module, args, kwargs)
    macs = counter.get_total_flops() // 2
    return value, H.Cost("other", macs, 0), "no rule: run on meta tensors, MACs from FlopCounterMode"


def _custom(node: fx.Node, module: nn.Module | None, args: tuple[Any, ...], kwargs: dict[str, Any],
            cost: Callable[..., Any]) -> tuple[Any, H.Cost, str]:  # fmt: skip
    """A custom op's cost function, given the call and its output (the op run on meta tensors)."""
    value = run_on_meta(node, module, args, kwargs)
    got = cost(H.Call(module, args, kwargs, None if module is not None else node.target, value))
    if not isinstance(got, H.Cost):
        value, got = got  # a (value, Cost) pair, as the built-in handlers return
    return value, got, "custom op"


def shape_evaluator(ops: OpTable = OPS) -> Callable[[fx.Node, nn.Module | None, tuple[Any, ...], dict[str, Any]], Any]:
    """:func:`shape_value` with the custom ops of ``ops``."""
    if ops is OPS:
        return shape_value

    def evaluate(node: fx.Node, module: nn.Module | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return cost_node(node, module, args, kwargs, ops)[0]

    return evaluate


def shape_value(node: fx.Node, module: nn.Module | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An :data:`edgecnn.graph.Evaluator`: a node's output from the cost table's shape rules (no kernel runs;
    ops without a rule on meta tensors). Much faster than the default ``run_on_meta`` for convolutions."""
    return cost_node(node, module, args, kwargs)[0]
