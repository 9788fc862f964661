"""Low-rank factorisation of Linear and Conv2d layers by truncated SVD (docs/design.md §5).

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
tensors (:func:`edgecnn.analysis.shape_graph`, no cost analysis); without it the plan
reports parameters only, and ``macs_fraction`` is refused. Planning over a
whole model and applying a plan live in :mod:`edgecnn.compress.factor.lowrank_plan`;
this file owns the factorisation of one layer and the rank rules.

Grouped (and depthwise) convs are refused: their weight is ``groups``
separate matrices, and a depthwise filter is already rank one per channel.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["budget_rank", "energy_rank", "factorize_conv", "factorize_linear", "singular_values", "svd_rank"]

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
