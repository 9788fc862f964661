"""The cost rules: one handler per cost role of the op table, giving output shape, MACs and other ops.

Which op plays which role (``act``, ``conv``, ``elementwise``, ...) is declared once, in :mod:`edgecnn.ops`
(the same table the receptive fields and the channel labels read); :data:`COST_RULES` maps each role to its
handlers here.

Conventions (stated once here, printed with every analysis, see ``docs/analysis.md``):

* **MACs** (the headline) are the multiply-accumulates of convolutions,
  transposed convolutions, linear layers and matrix products, *without*
  bias. FLOPs = 2·MACs. This is exactly what
  ``torch.utils.flop_counter.FlopCounterMode`` counts, divided by two.
* A conv costs ``N·H_out·W_out·C_out·(C_in/g)·k_h·k_w``; a **transposed**
  conv ``N·H_in·W_in·C_in·(C_out/g)·k_h·k_w`` (each *input* pixel is
  multiplied by the kernel once — tools that use the output size count a
  stride-2 tconv 4× too high); linear ``(rows)·in·out``; matmul
  ``(broadcast batch)·m·k·n``.
* **Other ops** are counted separately, per output element unless said
  otherwise: bias add 1, batch norm 2 (the inference affine ``a·x + b``),
  layer/group/instance norm 5 (mean, variance, normalise, scale, shift),
  activation 1 whatever the function, add/sub/mul/div 1 (residual adds and
  the SE rescale among them), softmax 3, pooling ``k_h·k_w`` (the window's
  reads), adaptive/global pooling 1 per *input* element, interpolation one
  per tap (nearest 0 — a gather, linear 2, bilinear 4, bicubic 16,
  trilinear 8), reductions (mean/sum) 1 per input element; reshapes, views,
  concatenation, padding, dropout and identity 0.

Handlers see a :class:`Call` whose tensors are *meta* tensors (shape and
dtype only) and return the output value (also meta) and a :class:`Cost`.
Shapes and MACs are computed by the small pure functions of
:mod:`edgecnn.analysis.shapes` (fvcore's ``conv_flop_count(x_shape,
w_shape, out_shape)`` style), so no kernel runs; ops without a rule (role ``measured``, or in no family) are
run on meta tensors under ``FlopCounterMode`` by
:mod:`edgecnn.analysis.node_cost`, so their MACs are still counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgecnn.analysis.shapes import (
    Shape,
    adaptive_pool_out_shape,
    conv_macs,
    conv_out_shape,
    conv_transpose_out_shape,
    flatten_shape,
    interpolate_out_shape,
    linear_macs,
    matmul_shape_macs,
    ntuple,
    pool_out_shape,
)
from edgecnn.ops import OPS, OpFamily, OpTable

HEADLINE_KINDS = ("conv", "conv_transpose", "linear", "matmul")
"""Op kinds whose multiply-accumulates make the headline MAC count."""


@dataclass(frozen=True)
class Cost:
    """What one op costs."""

    kind: str  # conv | conv_transpose | linear | matmul | norm | act | pool | elementwise | interpolate | reduce | data | other
    macs: int = 0  # multiply-accumulates of conv/linear/matmul, bias excluded (the headline)
    other_ops: int = 0  # everything else, by the rules in the module docstring


@dataclass
class Call:
    """One call seen by a handler: the module (for call_module) and its arguments as meta tensors."""

    module: nn.Module | None  # the called module, None for functions and methods
    args: tuple[Any, ...]  # positional arguments; tensors are meta tensors
    kwargs: dict[str, Any]  # keyword arguments
    target: Any = None  # the function or method name called (None for a module)
    out: Any = None  # the output (meta), given to a custom op's cost function

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        """Argument ``i`` / ``name``, whichever was given."""
        if i < len(self.args):
            return self.args[i]
        return self.kwargs.get(name, default)


Handler = Callable[[Call], tuple[Any, Cost]]


# ---------------------------------------------------------------- handlers


def _module_ndim(m: nn.Module) -> int:
    """Spatial axes of a pooling module, from its class name (``MaxPool2d`` -> 2)."""
    for cls in type(m).__mro__:
        if cls.__name__[-2:] in ("1d", "2d", "3d"):
            return int(cls.__name__[-2])
    raise NotImplementedError(f"cannot tell the dimension of {type(m).__name__}")


def _meta(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device="meta")


def _conv(call: Call, w: torch.Tensor, bias: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> tuple[Any, Cost]:
    x = call.args[0]
    if isinstance(padding, str) and padding not in ("same", "valid"):
        raise ValueError(f"unknown conv padding {padding!r}")
    unbatched = x.dim() == w.dim() - 1
    x_shape: Shape = (1, *x.shape) if unbatched else tuple(x.shape)
    if x_shape[1] != w.shape[1] * groups:
        raise ValueError(f"conv input {tuple(x.shape)} has {x_shape[1]} channels, its weight {tuple(w.shape)} "
                         f"with groups={groups} expects {w.shape[1] * groups}")  # fmt: skip
    out = conv_out_shape(x_shape, tuple(w.shape), stride, padding, dilation)
    y = _meta(out[1:] if unbatched else out, x)
    return y, Cost("conv", conv_macs(x_shape, tuple(w.shape), out), y.numel() if bias is not None else 0)


def _conv_t(call: Call, w: torch.Tensor, bias: Any, stride: Any, padding: Any, out_pad: Any, groups: int, dilation: Any) -> tuple[Any, Cost]:
    x = call.args[0]
    if x.dim() != w.dim() or x.shape[1] != w.shape[0]:
        raise NotImplementedError("unbatched or mismatched transposed conv: run on meta")
    out = conv_transpose_out_shape(tuple(x.shape), tuple(w.shape), stride, padding, out_pad, groups, dilation)
    y = _meta(out, x)
    return y, Cost("conv_transpose", conv_macs(tuple(x.shape), tuple(w.shape), out, transposed=True),
                   y.numel() if bias is not None else 0)  # fmt: skip


def conv_module(call: Call) -> tuple[Any, Cost]:
    m = call.module
    if not isinstance(m, nn.modules.conv._ConvNd):
        raise NotImplementedError("not a torch conv: run on meta")
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        if call.arg(1, "output_size") is not None:
            raise NotImplementedError("output_size given: run on meta")
        return _conv_t(call, m.weight, m.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
    return _conv(call, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def conv_function(call: Call) -> tuple[Any, Cost]:
    return _conv(call, call.arg(1, "weight"), call.arg(2, "bias"), call.arg(3, "stride", 1),
                 call.arg(4, "padding", 0), call.arg(5, "dilation", 1), call.arg(6, "groups", 1))  # fmt: skip


def conv_transpose_function(call: Call) -> tuple[Any, Cost]:
    return _conv_t(call, call.arg(1, "weight"), call.arg(2, "bias"), call.arg(3, "stride", 1), call.arg(4, "padding", 0),
                   call.arg(5, "output_padding", 0), call.arg(6, "groups", 1), call.arg(7, "dilation", 1))  # fmt: skip


def _linear(x: torch.Tensor, w: torch.Tensor, bias: Any) -> tuple[Any, Cost]:
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"linear input {tuple(x.shape)} does not fit weight {tuple(w.shape)}")
    out_features = w.shape[0] if w.dim() == 2 else 1
    y = _meta((*x.shape[:-1], out_features) if w.dim() == 2 else x.shape[:-1], x)
    macs = linear_macs(tuple(x.shape), (out_features, w.shape[-1]))
    return y, Cost("linear", macs, y.numel() if bias is not None else 0)


def linear_module(call: Call) -> tuple[Any, Cost]:
    m = call.module
    if not isinstance(m, nn.Linear):
        raise NotImplementedError("not a torch Linear: run on meta")
    return _linear(call.args[0], m.weight, m.bias)


def linear_function(call: Call) -> tuple[Any, Cost]:
    return _linear(call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias"))


def matmul(call: Call) -> tuple[Any, Cost]:
    a, b = call.arg(0, "input"), call.arg(1, "other" if "other" in call.kwargs else "mat2")
    out, macs = matmul_shape_macs(tuple(a.shape), tuple(b.shape))
    return _meta(out, a), Cost("matmul", macs)


def _pointwise(kind: str, per_element: int) -> Handler:
    def handler(call: Call) -> tuple[Any, Cost]:
        x = call.args[0] if call.args else next(iter(call.kwargs.values()))
        return x, Cost(kind, 0, per_element * x.numel())

    return handler


def elementwise(call: Call) -> tuple[Any, Cost]:
    """add/sub/mul/div with broadcasting; a Python number operand is fine."""
    tensors = [a for a in (*call.args[:2], call.kwargs.get("other")) if isinstance(a, torch.Tensor)]
    if not tensors:
        raise NotImplementedError("no tensor operand: run it")
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    dtype = torch.result_type(*call.args[:2]) if len(call.args) >= 2 else tensors[0].dtype
    y = torch.empty(shape, dtype=dtype, device="meta")
    return y, Cost("elementwise", 0, y.numel())


def reduced(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The output of ``mean`` / ``sum`` / ``amax`` of a float tensor over given dims, shape computed in Python
    (their meta kernels are Python decompositions: ``x.mean((2, 3))`` takes ~0.3 ms on meta tensors); ``None``
    for any other form (no dims, a dtype argument, integer input, ``max`` / ``min``), which is run on meta."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() == 0:
        return None
    extra = dict(kwargs)
    pos = list(args[1:])
    dims = pos.pop(0) if pos else extra.pop("dim", None)
    keepdim = pos.pop(0) if pos else extra.pop("keepdim", False)
    if pos or extra or not isinstance(keepdim, bool):
        return None
    dims = (dims,) if isinstance(dims, int) else dims
    if not isinstance(dims, (tuple, list)) or not dims or not all(isinstance(d, int) for d in dims):
        return None
    n = x.dim()
    if not all(-n <= d < n for d in dims):
        return None
    gone = {d % n for d in dims}
    if len(gone) != len(dims):  # a dim named twice: torch raises, so let it
        return None
    shape = [1 if i in gone else s for i, s in enumerate(x.shape)] if keepdim else \
        [s for i, s in enumerate(x.shape) if i not in gone]  # fmt: skip
    return torch.empty(shape, dtype=x.dtype, device="meta")


def _pooling_module(call: Call) -> nn.Module:
    """The called pooling module; one that also returns indices (a tuple) is left to the meta run."""
    m = call.module
    assert m is not None
    if getattr(m, "return_indices", False):
        raise NotImplementedError("indices returned: run on meta")
    return m


def pool_module(call: Call) -> tuple[Any, Cost]:
    m = _pooling_module(call)
    x, n = call.args[0], _module_ndim(m)
    out = pool_out_shape(tuple(x.shape), n, m.kernel_size, m.stride, m.padding,  # type: ignore[arg-type]
                         getattr(m, "dilation", 1), bool(getattr(m, "ceil_mode", False)))  # fmt: skip
    y = _meta(out, x)
    return y, Cost("pool", 0, math.prod(ntuple(m.kernel_size, n)) * y.numel())  # type: ignore[arg-type]


def _adaptive(x: torch.Tensor, size: Any, n: int) -> tuple[Any, Cost]:
    return _meta(adaptive_pool_out_shape(tuple(x.shape), size, n), x), Cost("pool", 0, x.numel())


def adaptive_pool_module(call: Call) -> tuple[Any, Cost]:
    m = _pooling_module(call)
    return _adaptive(call.args[0], m.output_size, _module_ndim(m))  # type: ignore[arg-type]


def flatten(call: Call) -> tuple[Any, Cost]:
    x = call.args[0]
    if call.module is not None:
        start, end = call.module.start_dim, call.module.end_dim  # type: ignore[union-attr]
    else:
        start, end = call.arg(1, "start_dim", 0), call.arg(2, "end_dim", -1)
    return _meta(flatten_shape(tuple(x.shape), start, end), x), Cost("data")


def identity(call: Call) -> tuple[Any, Cost]:
    return call.args[0], Cost("data")


_TAPS = {"nearest": 0, "nearest-exact": 0, "area": 1, "linear": 2, "bilinear": 4, "bicubic": 16, "trilinear": 8}


def _interpolate(x: torch.Tensor, size: Any, scale: Any, mode: str) -> tuple[Any, Cost]:
    y = _meta(interpolate_out_shape(tuple(x.shape), size, scale), x)
    if mode not in _TAPS:
        raise NotImplementedError(mode)
    return y, Cost("interpolate", 0, _TAPS[mode] * y.numel())


def interpolate_function(call: Call) -> tuple[Any, Cost]:
    if call.arg(5, "recompute_scale_factor") or call.arg(6, "antialias"):
        raise NotImplementedError("run on meta")
    return _interpolate(call.arg(0, "input"), call.arg(1, "size"), call.arg(2, "scale_factor"),
                        call.arg(3, "mode", "nearest"))  # fmt: skip


def upsample_module(call: Call) -> tuple[Any, Cost]:
    m = call.module
    if not isinstance(m, nn.Upsample):
        raise NotImplementedError("not a torch Upsample: run on meta")
    if m.recompute_scale_factor:
        raise NotImplementedError("run on meta")
    return _interpolate(call.args[0], m.size, m.scale_factor, m.mode)


def _fn_ndim(call: Call) -> int:
    """Spatial axes of a functional pool, from its name (``max_pool2d`` -> 2)."""
    name = getattr(call.target, "__name__", "")
    if name[-2:] not in ("1d", "2d", "3d"):
        raise NotImplementedError(f"cannot tell the dimension of {name or call.target!r}")
    return int(name[-2])


def _pool(call: Call, n: int, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil: Any) -> tuple[Any, Cost]:
    x = call.arg(0, "input")
    y = _meta(pool_out_shape(tuple(x.shape), n, kernel, stride, padding, dilation, bool(ceil)), x)
    return y, Cost("pool", 0, math.prod(ntuple(kernel, n)) * y.numel())


def max_pool_function(call: Call) -> tuple[Any, Cost]:
    if call.arg(6, "return_indices"):
        raise NotImplementedError("indices returned: run on meta")
    return _pool(call, _fn_ndim(call), call.arg(1, "kernel_size"), call.arg(2, "stride"), call.arg(3, "padding", 0),
                 call.arg(4, "dilation", 1), call.arg(5, "ceil_mode", False))  # fmt: skip


def avg_pool_function(call: Call) -> tuple[Any, Cost]:
    return _pool(call, _fn_ndim(call), call.arg(1, "kernel_size"), call.arg(2, "stride"), call.arg(3, "padding", 0),
                 1, call.arg(4, "ceil_mode", False))  # fmt: skip


def adaptive_pool_function(call: Call) -> tuple[Any, Cost]:
    if call.arg(2, "return_indices"):
        raise NotImplementedError("indices returned: run on meta")
    return _adaptive(call.arg(0, "input"), call.arg(1, "output_size"), _fn_ndim(call))


def _run_module(kind: str) -> Handler:
    """A module whose output is its own forward on the meta input (a pad, an unflatten), counted as ``kind``."""

    def handler(call: Call) -> tuple[Any, Cost]:
        assert call.module is not None
        return call.module(*call.args, **call.kwargs), Cost(kind)

    return handler


@dataclass(frozen=True)
class CostRule:
    """How one cost role of :mod:`edgecnn.ops` is computed, per form of call (fx node op).

    ``method`` defaults to ``function`` (a tensor method gets the tensor as its first argument). ``runs``: the
    output is taken by running the op on meta tensors (no kernel; :mod:`edgecnn.analysis.node_cost`) and it costs
    nothing but its kind (``"reduce"``: 1 per input element); used where no handler is given for the form.
    """

    module: Handler | None = None
    function: Handler | None = None
    method: Handler | None = None
    runs: str = ""

    def handler(self, op: str) -> Handler | None:
        """The handler for a ``call_module`` / ``call_function`` / ``call_method`` node, if any."""
        if op == "call_module":
            return self.module
        if op == "call_method":
            return self.method or self.function
        return self.function


def _same(h: Handler) -> CostRule:
    return CostRule(h, h, h)


COST_RULES: dict[str, CostRule] = {
    "conv": CostRule(conv_module, conv_function),
    "conv_transpose": CostRule(conv_module, conv_transpose_function),
    "linear": CostRule(linear_module, linear_function),
    "matmul": CostRule(None, matmul),
    "act": _same(_pointwise("act", 1)),
    "softmax": _same(_pointwise("act", 3)),
    "batch_norm": _same(_pointwise("norm", 2)),
    "norm": _same(_pointwise("norm", 5)),
    "elementwise": CostRule(None, elementwise),
    "max_pool": CostRule(pool_module, max_pool_function),
    "avg_pool": CostRule(pool_module, avg_pool_function),
    "adaptive_pool": CostRule(adaptive_pool_module, adaptive_pool_function),
    "interpolate": CostRule(upsample_module, interpolate_function),
    "reduce": CostRule(runs="reduce"),
    "flatten": _same(flatten),
    "identity": _same(identity),
    "view": CostRule(_run_module("data"), runs="data"),
    "data": CostRule(_run_module("data"), runs="data"),
    "copy": CostRule(_run_module("copy"), runs="copy"),
    "measured": CostRule(),
}
"""Cost role (:data:`edgecnn.ops.COST_ROLES`) -> how it is computed. Which op has which role: :mod:`edgecnn.ops`."""


def cost_rule(family: OpFamily | None) -> CostRule | None:
    """The rule of ``family`` (``None``: no family); a custom op's handler stands for every form."""
    if family is None:
        return None
    if callable(family.cost):
        return CostRule(family.cost, family.cost, family.cost)
    return COST_RULES[family.cost]


def module_handler(module: nn.Module, ops: OpTable = OPS) -> Handler | None:
    """The handler for ``module``'s type (its family's, by its nearest registered base class)."""
    rule = cost_rule(ops.module_family(type(module)))
    if rule is None:
        return None
    if rule.module is None and rule.runs:
        return lambda call: (None, Cost(rule.runs))
    return rule.module
