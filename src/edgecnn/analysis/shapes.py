"""Pure shape and MAC formulas: shapes in, numbers out (no tensors, no modules).

fvcore's ``conv_flop_count(x_shape, w_shape, out_shape)`` style: each op's
output size is PyTorch's documented formula (the ``Shape`` sections of
``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.MaxPool2d``, ``F.interpolate``),
and its MACs follow the conventions stated in :mod:`edgecnn.analysis.handlers`,
whose cost table calls these on the shapes of meta tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

Shape = tuple[int, ...]


def ntuple(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    """``v`` as ``n`` ints: a number repeated, a sequence of ``n`` kept, a one-element sequence repeated."""
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v) if len(v) == n else (int(v[0]),) * n
    return (int(v),) * n


def conv_out_shape(x: Shape, w: Shape, stride: Any = 1, padding: Any = 0, dilation: Any = 1) -> Shape:
    """Output shape of a conv: ``⌊(i + 2p − d(k−1) − 1)/s⌋ + 1`` per spatial axis (weight ``(C_out, C_in/g, *k)``)."""
    n = len(w) - 2
    k, s, d = w[2:], ntuple(stride, n), ntuple(dilation, n)
    if padding == "valid":
        return (x[0], w[0], *(((i - dd * (kk - 1) - 1) // ss + 1) for i, kk, ss, dd in zip(x[2:], k, s, d)))
    if padding == "same":
        return (x[0], w[0], *x[2:])
    p = ntuple(padding, n)
    return (x[0], w[0], *(((i + 2 * pp - dd * (kk - 1) - 1) // ss + 1) for i, kk, ss, pp, dd in zip(x[2:], k, s, p, d)))


def conv_transpose_out_shape(
    x: Shape, w: Shape, stride: Any = 1, padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1
) -> Shape:
    """Output shape of a transposed conv: ``(i−1)·s − 2p + d(k−1) + op + 1`` (weight ``(C_in, C_out/g, *k)``)."""
    n = len(w) - 2
    s, p, op, d = (ntuple(v, n) for v in (stride, padding, output_padding, dilation))
    sizes = ((i - 1) * ss - 2 * pp + dd * (kk - 1) + oo + 1 for i, kk, ss, pp, oo, dd in zip(x[2:], w[2:], s, p, op, d))
    return (x[0], w[1] * groups, *sizes)


def conv_macs(x: Shape, w: Shape, out: Shape, *, transposed: bool = False) -> int:
    """MACs of a conv: per output pixel (per *input* pixel when transposed) a dot product with the kernel.

    ``w`` is PyTorch's weight shape, whose first two entries multiply to
    ``C_out·C_in/g`` for both kinds of conv.
    """
    spatial = x[2:] if transposed else out[2:]
    return x[0] * math.prod(spatial) * math.prod(w)


def linear_macs(x: Shape, w: Shape) -> int:
    """MACs of ``x @ Wᵀ`` with ``W`` of shape ``(out, in)``: one dot product of length in per output."""
    return math.prod(x[:-1]) * w[0] * w[1]


def matmul_shape_macs(a: Shape, b: Shape) -> tuple[Shape, int]:
    """Output shape and MACs of ``torch.matmul(a, b)`` with NumPy broadcasting of the batch axes."""
    if not a or not b:
        raise ValueError("matmul needs tensors of at least one dimension")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul shapes {a} and {b} do not fit")
    batch = tuple(torch.broadcast_shapes(a2[:-2], b2[:-2]))
    out = (*batch, a2[-2], b2[-1])
    macs = math.prod(batch) * a2[-2] * a2[-1] * b2[-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out, macs


def pool_out_shape(x: Shape, n: int, kernel: Any, stride: Any, padding: Any, dilation: Any = 1, ceil: bool = False) -> Shape:
    """Output shape of max/avg pooling over the trailing ``n`` axes (PyTorch's floor / ceil-mode rule)."""
    k = ntuple(kernel, n)
    s = ntuple(stride if stride not in (None, [], ()) else kernel, n)
    p, d = ntuple(padding, n), ntuple(dilation, n)
    return (*x[:-n], *(pool_len(i, kk, ss, pp, dd, ceil) for i, kk, ss, pp, dd in zip(x[-n:], k, s, p, d)))


def pool_len(size: int, kernel: int, stride: int, padding: int = 0, dilation: int = 1, ceil: bool = False) -> int:
    """Pooled length along one axis: the conv formula, floor or ceil, and in ceil mode the last
    window must start inside the input or the left padding (PyTorch's rule). Unchecked."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def adaptive_pool_out_shape(x: Shape, output_size: Any, n: int) -> Shape:
    """Output shape of adaptive pooling over the trailing ``n`` axes; ``None`` in ``output_size`` keeps that axis."""
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * n
    lead = len(x) - n
    return (*x[:lead], *(x[lead + i] if s is None else s for i, s in enumerate(sizes)))


def interpolate_out_shape(x: Shape, size: Any, scale_factor: Any) -> Shape:
    """Output shape of ``F.interpolate`` on ``(N, C, *spatial)``: ``size``, else ``⌊i·scale⌋`` per axis."""
    n = len(x) - 2
    if size is not None:
        spatial = ntuple(size, n)
    elif scale_factor is not None:
        factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * n
        spatial = tuple(math.floor(float(i) * float(f)) for i, f in zip(x[2:], factors))
    else:
        raise ValueError("interpolate needs size or scale_factor")
    return (*x[:2], *spatial)


def flatten_shape(x: Shape, start_dim: int = 0, end_dim: int = -1) -> Shape:
    """Shape after ``torch.flatten(x, start_dim, end_dim)`` (a 0-d tensor flattens to one element)."""
    nd = max(len(x), 1)
    start, end = start_dim % nd, end_dim % nd
    return (*x[:start], math.prod(x[start : end + 1]), *x[end + 1 :])
