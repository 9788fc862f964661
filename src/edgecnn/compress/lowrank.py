"""Low-rank factorisation of Linear and Conv2d layers by truncated SVD (SPEC §5).

Eckart–Young–Mirsky (Eckart & Young 1936; Mirsky 1960): among all matrices
of rank ≤ k, the truncated SVD ``W_k = Σ_{i≤k} σ_i u_i v_iᵀ`` is nearest to
``W`` in the Frobenius and the spectral norm, with errors
``‖W − W_k‖_F = √(Σ_{i>k} σ_i²)`` and ``‖W − W_k‖₂ = σ_{k+1}``. Splitting
``W_k = (U_k √Σ_k)(√Σ_k V_kᵀ)`` turns one layer into two thinner ones:

* **Linear** ``(out × in)`` → ``Linear(in, k, bias=False)`` → ``Linear(k, out)``
  (Denton et al. 2014, "Exploiting Linear Structure Within Convolutional
  Networks", §3; Xue et al. 2013 for speech DNNs).
* **Conv2d, form "channel"**: ``W`` read as ``(C_out, C_in·kh·kw)`` → a
  ``kh×kw`` conv with ``k`` filters (the original stride, padding, dilation
  and padding mode) → a ``1×1`` conv with the bias (Zhang et al. 2016,
  "Accelerating Very Deep Convolutional Networks", §3, without their
  nonlinear refinement).
* **Conv2d, form "spatial"** (Jaderberg, Vedaldi & Zisserman 2014, scheme 2;
  Tai et al. 2016, "Convolutional Neural Networks with Low-rank
  Regularization", §3): ``W`` read as ``M[(c, i), (n, j)] = W[n, c, i, j]``
  of shape ``(C_in·kh, C_out·kw)`` → a ``kh×1`` conv with ``k`` filters
  ``V[r, c, i] = (U_k√Σ_k)[(c, i), r]`` carrying the vertical stride, padding
  and dilation → a ``1×kw`` conv ``H[n, r, j] = (√Σ_k V_kᵀ)[r, (n, j)]``
  carrying the horizontal ones and the bias. ``Σ_{r,j} H[n,r,j] Σ_{c,i}
  V[r,c,i] x[c, ·+i, ·+j] = Σ_{c,i,j} M_k[(c,i),(n,j)] x[c, ·+i, ·+j]``, so it
  is exact at full rank; padding (zeros, reflect, replicate, circular)
  factors per axis because the first conv is linear and has no bias.

The reshapes only permute entries, so the conv weight's error is the
matrix's, and the Eckart–Young numbers in the plan are the layer's.

Costs are linear in ``k`` (weights; bias unchanged and excluded from the rank
rules; MACs per image, bias excluded, as :func:`edgecnn.analysis.analyze`)::

    form      params(k)                 MACs(k)
    linear    k·(in + out)              k·(in + out)·P          P = output positions (1 for (N, F))
    channel   k·(C_in·kh·kw + C_out)    k·(C_in·kh·kw + C_out)·H_o·W_o
    spatial   k·(C_in·kh + C_out·kw)    k·(C_in·kh·H_o·W_i + C_out·kw·H_o·W_o)

(the spatial form's first conv runs at the output's height and the input's
width). MACs need the layers' input and output shapes: :func:`plan_lowrank`
takes ``input_size`` and reads them from one ``torch.fx`` pass on meta
tensors (:func:`edgecnn.analysis.trace.analyze_fx`); without it the plan
reports parameters only, and ``macs_fraction`` is refused.

Grouped (and depthwise) convs are refused: their weight is ``groups``
separate matrices, and a depthwise filter is already rank one per channel.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["LowRankLayer", "LowRankPlan", "LowRankSkip", "budget_rank", "energy_rank", "factorize_conv",
           "factorize_linear", "lowrank", "lowrank_", "plan_lowrank", "singular_values", "svd_rank"]  # fmt: skip

Form = Literal["channel", "spatial"]
_RTOL = 1e-9  # relative slack on the energy/budget thresholds: SVD rounding must not flip a hand-set boundary


# ---------------------------------------------------------------- the matrix of a layer and its SVD


def _check_layer(layer: nn.Module, form: str) -> None:
    if form not in ("channel", "spatial"):
        raise ValueError(f"form must be 'channel' or 'spatial', got {form!r}")
    if type(layer) is nn.Linear:
        return
    if type(layer) is not nn.Conv2d:
        raise ValueError(f"only nn.Linear and nn.Conv2d are factorised, got {type(layer).__name__}")
    if layer.groups != 1:
        raise ValueError(f"grouped conv (groups={layer.groups}) is not factorised: its weight is {layer.groups} "
                         "separate matrices; factorise only groups=1 convs")  # fmt: skip


def _matrix(layer: nn.Linear | nn.Conv2d, form: str) -> torch.Tensor:
    w = layer.weight.detach().double()  # float64: the tail singular values of a float32 SVD are noise
    if isinstance(layer, nn.Linear):
        return w
    if form == "channel":
        return w.reshape(w.shape[0], -1)
    n, c, kh, kw = w.shape
    return w.permute(1, 2, 0, 3).reshape(c * kh, n * kw)  # M[(c, i), (n, j)] = W[n, c, i, j]


def singular_values(layer: nn.Module, *, form: Form = "channel") -> torch.Tensor:
    """Singular values (float64, descending) of the matrix that ``form`` factorises (see the module docstring)."""
    _check_layer(layer, form)
    return torch.linalg.svdvals(_matrix(layer, form))  # type: ignore[arg-type]


def _split(layer: nn.Linear | nn.Conv2d, form: str, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``A @ B`` the rank-``rank`` truncated SVD, √Σ on both sides (balanced factor scales)."""
    m = _matrix(layer, form)
    full = min(m.shape)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
        raise ValueError(f"rank must be an int in 1..{full} (the matrix is {m.shape[0]}×{m.shape[1]}), got {rank!r}")
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank] * root[:, None]


def _finish(layer: nn.Module, first: nn.Module, second: nn.Module, a: torch.Tensor, b: torch.Tensor) -> nn.Sequential:
    w = layer.weight
    with torch.no_grad():
        first.weight.copy_(a.reshape(first.weight.shape))
        second.weight.copy_(b.reshape(second.weight.shape))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    for p in (*first.parameters(), *second.parameters()):
        p.requires_grad_(w.requires_grad)
    return nn.Sequential(first, second).train(layer.training)


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """``Linear(in, rank, bias=False) → Linear(rank, out)`` with weight product the rank-``rank`` truncated SVD.

    The input layer is not changed; the result has its dtype, device, mode and ``requires_grad``.
    """
    if type(layer) is not nn.Linear:
        raise ValueError(f"factorize_linear takes an nn.Linear, got {type(layer).__name__}")
    u, v = _split(layer, "channel", rank)
    kw = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    first = nn.Linear(layer.in_features, rank, bias=False, **kw)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None, **kw)
    return _finish(layer, first, second, v, u)


def factorize_conv(layer: nn.Conv2d, rank: int, *, form: Form = "channel") -> nn.Sequential:
    """Two convs whose composition is ``layer`` with its weight replaced by the rank-``rank`` truncated SVD.

    ``form="channel"``: ``kh×kw`` conv with ``rank`` filters (stride, padding,
    dilation, padding mode of ``layer``) → ``1×1`` conv with the bias.
    ``form="spatial"``: ``kh×1`` conv with ``rank`` filters (vertical stride,
    padding, dilation) → ``1×kw`` conv (horizontal ones, bias). Full rank is
    ``min(C_out, C_in·kh·kw)`` resp. ``min(C_in·kh, C_out·kw)``. Grouped convs
    are a ``ValueError``. The input layer is not changed.
    """
    _check_layer(layer, form)
    if type(layer) is not nn.Conv2d:
        raise ValueError(f"factorize_conv takes an nn.Conv2d, got {type(layer).__name__}")
    u, v = _split(layer, form, rank)
    c_out, c_in, kh, kw = layer.weight.shape
    (sh, sw), (dh, dw), pad = layer.stride, layer.dilation, layer.padding
    kwargs = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    bias = layer.bias is not None
    if form == "channel":
        first = nn.Conv2d(c_in, rank, (kh, kw), stride=(sh, sw), padding=pad, dilation=(dh, dw), bias=False,
                          padding_mode=layer.padding_mode, **kwargs)  # fmt: skip
        second = nn.Conv2d(rank, c_out, 1, bias=bias, **kwargs)
        return _finish(layer, first, second, v, u)
    # "same"/"valid" mean the same per axis; numeric padding splits into its vertical and horizontal halves
    p1, p2 = (pad, pad) if isinstance(pad, str) else ((pad[0], 0), (0, pad[1]))
    first = nn.Conv2d(c_in, rank, (kh, 1), stride=(sh, 1), padding=p1, dilation=(dh, 1), bias=False,
                      padding_mode=layer.padding_mode, **kwargs)  # fmt: skip
    second = nn.Conv2d(rank, c_out, (1, kw), stride=(1, sw), padding=p2, dilation=(1, dw), bias=bias,
                       padding_mode=layer.padding_mode, **kwargs)  # fmt: skip
    vert = u.reshape(c_in, kh, rank).permute(2, 0, 1)  # V[r, c, i]
    horiz = v.reshape(rank, c_out, kw).permute(1, 0, 2)  # H[n, r, j]
    return _finish(layer, first, second, vert, horiz)


# ---------------------------------------------------------------- choosing the rank


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """Smallest ``k ≥ 1`` with ``Σ_{i≤k} σ_i² ≥ energy · Σ_i σ_i²`` (``s`` descending)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], the fraction of Σσ² to keep; got {energy}")
    cum = torch.cumsum(s.double() ** 2, 0)
    if cum.numel() == 0 or cum[-1] <= 0:
        return 1
    k = int(torch.searchsorted(cum, energy * float(cum[-1]) * (1 - _RTOL)).item()) + 1
    return min(k, cum.numel())


def budget_rank(full_cost: int, rank_cost: int, fraction: float, max_rank: int) -> int:
    """Largest ``k ≤ max_rank`` with ``k · rank_cost ≤ fraction · full_cost``; 0 when even ``k = 1`` is over."""
    if not fraction > 0.0:
        raise ValueError(f"the cost fraction must be positive (e.g. 0.5 for half the cost), got {fraction}")
    if rank_cost <= 0:
        return max_rank
    return max(0, min(max_rank, math.floor(fraction * full_cost / rank_cost * (1 + _RTOL))))


def svd_rank(s: torch.Tensor, *, rank: int | None = None, energy: float | None = None,
             fraction: float | None = None, full_cost: int = 0, rank_cost: int = 0) -> int:  # fmt: skip
    """The rank by exactly one rule: ``rank`` given (capped at ``len(s)``), kept ``energy``, or a cost ``fraction``.

    With ``fraction``, ``full_cost`` is the layer's cost (weights or MACs) and
    ``rank_cost`` the factorised cost per unit of rank (the table in the
    module docstring); the result may be 0 (no rank meets the target).
    """
    if sum(x is not None for x in (rank, energy, fraction)) != 1:
        raise ValueError("give exactly one of rank, energy, fraction")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        return min(rank, len(s))
    if energy is not None:
        return energy_rank(s, energy)
    return budget_rank(full_cost, rank_cost, fraction, len(s))  # type: ignore[arg-type]


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
    from torch import fx

    from edgecnn.analysis.trace import analyze_fx  # compress reads analysis, never the reverse

    size = tuple(int(s) for s in input_size)
    if not size or min(size) < 1:
        raise ValueError(f"input_size must be positive sizes without the batch axis, e.g. (3, 32, 32); "
                         f"got {input_size}")
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    try:  # meta tensors: shapes only, no weights read, no running statistics touched
        _, traced = analyze_fx(model, [torch.empty((1, *size), dtype=dtype, device="meta")], receptive_fields=False)
    except Exception as e:  # fx and meta kernels raise many types
        raise ValueError(f"cannot trace {type(model).__name__} for layer shapes ({type(e).__name__}: {e}); "
                         "pass input_size=None (parameters only) or plan a traceable submodule") from e  # fmt: skip
    shapes: dict[str, Shapes] = {}
    for node in traced.graph.nodes:
        src = node.args[0] if node.op == "call_module" and node.args else None
        if isinstance(src, fx.Node) and "tensor_meta" in src.meta and "tensor_meta" in node.meta:
            io = (tuple(src.meta["tensor_meta"].shape), tuple(node.meta["tensor_meta"].shape))
            shapes.setdefault(str(node.target), []).append(io)
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
    """
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
    """A copy of ``model`` with the planned layers factorised; the input model is not changed."""
    return lowrank_(copy.deepcopy(model), plan)
