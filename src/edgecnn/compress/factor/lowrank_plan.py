"""Low-rank factorisation over a whole model: plan per layer (rank, Eckart–Young error, cost), then apply.

The maths of one layer and the rank rules are in :mod:`edgecnn.compress.factor.lowrank`.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from edgecnn.analysis import shape_graph  # compress reads analysis, never the reverse
from edgecnn.build import EdgeNet, plain
from edgecnn.compress.factor.lowrank import (
    Form,
    factorize_conv,
    factorize_linear,
    singular_values,
    svd_rank,
)
from edgecnn.graph import GraphError

__all__ = ["LowRankLayer", "LowRankPlan", "LowRankSkip", "lowrank", "lowrank_", "plan_lowrank"]

# ---------------------------------------------------------------- planning over a model


@dataclass(frozen=True)
class LowRankLayer:
    """One layer the plan factorises, with the Eckart–Young errors and the costs before and after."""

    name: str  # module path of the nn.Linear / nn.Conv2d
    op: str  # "Linear" or "Conv2d"
    form: str  # "linear", "channel" (k×k conv → 1×1) or "spatial" (k×1 → 1×k)
    weight_shape: tuple[int, ...]  # shape of the original weight
    rank: int  # chosen k
    full_rank: int  # min of the factorised matrix's sides: the rank that reproduces the layer
    energy: float  # kept energy Σ_{i≤k}σ_i² / Σ_i σ_i²
    frobenius_error: float  # ‖W − W_k‖_F = √(Σ_{i>k}σ_i²)
    relative_error: float  # frobenius_error / ‖W‖_F = √(1 − energy)
    spectral_error: float  # ‖W − W_k‖₂ = σ_{k+1} (0 at full rank)
    params_before: int  # weight + bias of the layer
    params_after: int  # weights of the two factors + the same bias
    macs_before: int | None  # per image, all calls of the module, bias excluded; None without input_size
    macs_after: int | None  # the same for the two factors


@dataclass(frozen=True)
class LowRankSkip:
    """A Linear/Conv2d layer the plan leaves alone, and why."""

    name: str  # module path
    reason: str  # one line, e.g. "rank 15 of 16 saves nothing (2400 ≥ 2304 weights)"


@dataclass(frozen=True)
class LowRankPlan:
    """What :func:`lowrank` does to a model: the layers it factorises and the ones it leaves."""

    layers: tuple[LowRankLayer, ...]  # in module order
    skipped: tuple[LowRankSkip, ...]  # the other candidate layers, in module order
    rule: str  # how ranks were chosen, e.g. "energy=0.9" or "macs_fraction=0.5"
    input_size: tuple[int, ...] | None  # (C, H, W) the MACs are for; None: parameters only

    @property
    def params_saved(self) -> int:
        """Parameters removed by the plan."""
        return sum(e.params_before - e.params_after for e in self.layers)

    @property
    def macs_saved(self) -> int | None:
        """MACs per image removed by the plan; None without ``input_size``."""
        if self.input_size is None:
            return None
        return sum(e.macs_before - e.macs_after for e in self.layers)  # type: ignore[operator]

    def summary(self) -> str:
        """A count, one line per factorised layer and one per skipped layer, for logs and the CLI."""
        macs = "" if self.macs_saved is None else f", {self.macs_saved:,} MACs"
        lines = [f"factorised {len(self.layers)} layer(s) by {self.rule}: saves {self.params_saved:,} params{macs}"]
        for e in self.layers:
            lines.append(f"  {e.name}: {e.form} rank {e.rank}/{e.full_rank}, energy {e.energy:.4f}, rel. error "
                         f"{e.relative_error:.4f}, params {e.params_before:,} → {e.params_after:,}")  # fmt: skip
        lines += [f"  kept {s.name}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


Shapes = list[tuple[tuple[int, ...], tuple[int, ...]]]  # (input shape, output shape) of each call of a module


def _call_shapes(model: nn.Module, input_size: Sequence[int]) -> dict[str, Shapes]:
    try:  # meta shapes from the shape formulas: no weights read, no running statistics touched, no costs
        g = shape_graph(model, input_size)
    except GraphError as e:
        raise ValueError(f"cannot trace {type(model).__name__} for layer shapes ({e.reason}); "
                         "pass input_size=None (parameters only) or plan a traceable submodule") from e  # fmt: skip
    shapes: dict[str, Shapes] = {}
    for node, _ in g.module_calls((nn.Linear, nn.Conv2d)):
        i, o = g.io_shapes(node)
        if i is not None and o is not None:
            shapes.setdefault(str(node.target), []).append((i, o))
    return shapes


def _costs(layer: nn.Module, form: str, calls: Shapes | None) -> tuple[int, int, int | None, int | None]:
    """(weights, weights per rank, MACs, MACs per rank) of ``layer``; MACs None without shapes."""
    w = layer.weight.shape
    if isinstance(layer, nn.Linear):
        per_rank = w[0] + w[1]
        positions = None if calls is None else sum(math.prod(o) // w[0] for _, o in calls)
        if positions is None:
            return w.numel(), per_rank, None, None
        return w.numel(), per_rank, positions * w.numel(), positions * per_rank
    c_out, c_in, kh, kw = w
    per_rank = c_in * kh * kw + c_out if form == "channel" else c_in * kh + c_out * kw
    if calls is None:
        return w.numel(), per_rank, None, None
    pixels = sum(math.prod(o) // c_out for _, o in calls)  # N·H_o·W_o
    if form == "channel":
        return w.numel(), per_rank, pixels * w.numel(), pixels * per_rank
    # the k×1 conv runs at the output's height and the input's (unpadded, unstrided) width
    first = sum(math.prod(o) // c_out // o[-1] * i[-1] for i, o in calls) * c_in * kh
    return w.numel(), per_rank, pixels * w.numel(), first + pixels * c_out * kw


def _rule(energy: float | None, rank: int | None, macs_fraction: float | None, params_fraction: float | None) -> str:
    given = {"energy": energy, "rank": rank, "macs_fraction": macs_fraction, "params_fraction": params_fraction}
    named = [f"{k}={v}" for k, v in given.items() if v is not None]
    if len(named) != 1:
        raise ValueError(f"give exactly one of energy, rank, macs_fraction, params_fraction; got {named or 'none'}")
    return named[0]


def plan_lowrank(
    model: nn.Module,
    *,
    energy: float | None = None,
    rank: int | None = None,
    macs_fraction: float | None = None,
    params_fraction: float | None = None,
    form: Form = "channel",
    input_size: Sequence[int] | None = None,
    min_size: int = 1024,
    layers: Sequence[str] | None = None,
) -> LowRankPlan:
    """Choose a rank for every ``nn.Linear`` and groups-1 ``nn.Conv2d`` of ``model`` (or the named ``layers``).

    One rule for all layers: kept ``energy`` (smallest k with
    ``Σ_{i≤k}σ² ≥ energy·Σσ²``), a fixed ``rank`` (capped at each layer's full
    rank), or the largest k whose factorised MACs / weights are at most
    ``macs_fraction`` / ``params_fraction`` of the layer's. ``form`` is the
    conv form ("channel" or "spatial"). ``input_size`` = (C, H, W) adds MACs
    (one fx pass on meta tensors); ``macs_fraction`` needs it. Layers with
    fewer than ``min_size`` weights, grouped convs, and layers whose
    factorisation would not cost less (weights, and MACs when known) are
    skipped with a reason. Reads the model only; :func:`lowrank` applies the plan.
    """
    rule = _rule(energy, rank, macs_fraction, params_fraction)
    if form not in ("channel", "spatial"):
        raise ValueError(f"form must be 'channel' or 'spatial', got {form!r}")
    if macs_fraction is not None and input_size is None:
        raise ValueError("macs_fraction needs the layers' shapes: pass input_size=(C, H, W)")
    modules = dict(model.named_modules())
    if layers is not None and (unknown := [n for n in layers if n not in modules]):
        raise ValueError(f"no module named {unknown[0]!r} in {type(model).__name__}; names are module paths, "
                         "as in model.named_modules()")  # fmt: skip
    shapes = None if input_size is None else _call_shapes(model, input_size)
    aliases = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    chosen, skipped = [], []
    for name, m in modules.items():
        if layers is not None and name not in layers:
            continue
        if type(m) not in (nn.Linear, nn.Conv2d):
            if layers is not None:
                skipped.append(LowRankSkip(name, f"{type(m).__name__} is not an nn.Linear or nn.Conv2d"))
            continue
        entry_or_reason = _plan_layer(name, m, form, shapes, min_size, aliases[id(m)],
                                      rank=rank, energy=energy, macs_fraction=macs_fraction,
                                      params_fraction=params_fraction)  # fmt: skip
        if isinstance(entry_or_reason, str):
            skipped.append(LowRankSkip(name, entry_or_reason))
        else:
            chosen.append(entry_or_reason)
    return LowRankPlan(tuple(chosen), tuple(skipped), rule, None if input_size is None else tuple(input_size))


def _plan_layer(name: str, m: nn.Module, form: str, shapes: dict[str, Shapes] | None, min_size: int, names: int, *,
                rank: int | None, energy: float | None, macs_fraction: float | None,
                params_fraction: float | None) -> LowRankLayer | str:  # fmt: skip
    """The plan entry of one layer, or the reason it is skipped."""
    if name == "":
        return "the model itself is the layer: call factorize_linear / factorize_conv"
    if names > 1:
        return "module registered under several names: replacing one would leave the others"
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        return f"grouped conv (groups={m.groups}): its weight is {m.groups} separate matrices"
    if m.weight.numel() < min_size:
        return f"{m.weight.numel()} weights < min_size={min_size}"
    calls = None if shapes is None else shapes.get(name)
    if shapes is not None and not calls:
        return "not called by the traced forward"
    layer_form = "linear" if isinstance(m, nn.Linear) else form
    s = singular_values(m, form="channel" if layer_form == "linear" else form)
    weights, weights_k, macs, macs_k = _costs(m, layer_form, calls)
    if macs_fraction is not None:
        k = svd_rank(s, fraction=macs_fraction, full_cost=macs or 0, rank_cost=macs_k or 0)
    elif params_fraction is not None:
        k = svd_rank(s, fraction=params_fraction, full_cost=weights, rank_cost=weights_k)
    else:
        k = svd_rank(s, rank=rank, energy=energy)
    if k == 0:
        return f"no rank meets the target: rank 1 already costs {macs_k if macs_fraction else weights_k:,}"
    if k * weights_k >= weights:
        return f"rank {k} of {len(s)} saves nothing ({k * weights_k:,} ≥ {weights:,} weights)"
    if macs is not None and k * macs_k >= macs:  # type: ignore[operator]
        return f"rank {k} of {len(s)} saves nothing ({k * macs_k:,} ≥ {macs:,} MACs)"  # type: ignore[operator]
    s2 = s**2
    total = float(s2.sum())
    tail = float(s2[k:].sum())
    bias = 0 if m.bias is None else m.bias.numel()
    return LowRankLayer(
        name, type(m).__name__, layer_form, tuple(m.weight.shape), k, len(s),
        energy=float(s2[:k].sum()) / total if total > 0 else 1.0,
        frobenius_error=math.sqrt(tail),
        relative_error=math.sqrt(tail / total) if total > 0 else 0.0,
        spectral_error=float(s[k]) if k < len(s) else 0.0,
        params_before=weights + bias,
        params_after=k * weights_k + bias,
        macs_before=macs,
        macs_after=None if macs_k is None else k * macs_k,
    )  # fmt: skip


# ---------------------------------------------------------------- applying a plan


def lowrank_(model: nn.Module, plan: LowRankPlan) -> nn.Module:
    """Replace each planned layer of ``model`` by its factorised ``nn.Sequential``, in place; returns ``model``.

    The plan must come from this model (or a copy): each layer's type and
    weight shape are checked first, and nothing changes when one differs.
    An EdgeNet cannot be factorised in place (the arch format has no token for
    a factorised layer, so its arch string would become false): ValueError —
    use :func:`lowrank`, or ``lowrank_(edgecnn.build.plain(model, note=...), plan)``.
    """
    if isinstance(model, EdgeNet) and plan.layers:
        raise ValueError("lowrank_ would leave this EdgeNet's arch string false (no arch token for a factorised "
                         "layer); use lowrank(model, plan), a copy without an arch, or "
                         "lowrank_(edgecnn.build.plain(model, note='low-rank'), plan) in place")  # fmt: skip
    layers = []
    for e in plan.layers:
        try:
            m = model.get_submodule(e.name)
        except AttributeError:
            raise ValueError(f"the plan names {e.name!r}, which {type(model).__name__} does not have; "
                             "plan this model with plan_lowrank(model, ...)") from None  # fmt: skip
        shape = tuple(m.weight.shape) if isinstance(m, (nn.Linear, nn.Conv2d)) else None
        if type(m).__name__ != e.op or shape != e.weight_shape:
            raise ValueError(f"{e.name} is a {type(m).__name__} (weight {shape}), the plan expects a {e.op} "
                             f"(weight {e.weight_shape}); plan this model again")  # fmt: skip
        layers.append(m)
    for e, m in zip(plan.layers, layers):
        if e.form == "linear":
            new = factorize_linear(m, e.rank)  # type: ignore[arg-type]
        else:
            new = factorize_conv(m, e.rank, form=e.form)  # type: ignore[arg-type]
        parent, _, attr = e.name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)
    return model


def lowrank(model: nn.Module, plan: LowRankPlan) -> nn.Module:
    """A copy of ``model`` with the planned layers factorised; the input model is not changed.

    From an EdgeNet the copy is a :class:`~edgecnn.build.PlainNet` (same modules and keys, no arch string),
    unless the plan factorises nothing.
    """
    new = copy.deepcopy(model)
    if isinstance(new, EdgeNet) and plan.layers:
        new = plain(new, note=f"low-rank factorised ({plan.rule}, {len(plan.layers)} layers)")
    return lowrank_(new, plan)
