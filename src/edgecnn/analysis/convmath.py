"""Convolution arithmetic: output sizes and the explicit matrix of a convolution (docs/design.md §3).

Output sizes follow Dumoulin & Visin 2016, *A guide to convolution arithmetic
for deep learning* (relationships 6, 14, and PyTorch's pooling rule for
``ceil_mode``).

:func:`conv_matrix` writes a 1D/2D/3D convolution (stride, padding,
dilation, groups) as the matrix ``M`` with ``M @ vec(x) == vec(conv(x))``,
``vec`` flattening ``(C, *spatial)`` row-major. It is a sum over kernel taps
of Kronecker products::

    M = Σ_taps  W[:, :, tap] ⊗ S_tap,      S_tap = ⊗_axes S_axis(tap_axis)

where ``W[:, :, tap]`` is the (C_out × C_in) channel matrix of one tap (zero
outside the group blocks) and ``S_axis(t)[o, i] = 1`` iff
``i = o·s − p + t·d`` lies inside the input. Its transpose is the transposed
convolution with the same weights, and therefore the gradient of the conv with
respect to its input: ``Mᵀ @ vec(g) == vec(conv_transpose(g))``
(Dumoulin & Visin §4: "transposed convolution").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from edgecnn.analysis.shapes import pool_len


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """``⌊(i + 2p − d(k−1) − 1)/s⌋ + 1`` (Dumoulin & Visin 2016, relationship 6 with dilation)."""
    _positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(
            f"input {size} is smaller than the dilated kernel {dilation * (kernel - 1) + 1} plus padding {padding}; "
            f"pad more or use a smaller kernel"
        )
    return out


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0, dilation: int = 1) -> int:  # fmt: skip
    """``(i − 1)·s − 2p + d(k−1) + op + 1`` (Dumoulin & Visin 2016, relationship 14 with dilation)."""
    _positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    if not 0 <= output_padding < max(stride, dilation):
        raise ValueError(f"output_padding must be in [0, max(stride, dilation)), got {output_padding}")
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def pool_output_size(size: int, kernel: int, stride: int | None = None, padding: int = 0, dilation: int = 1,
                     ceil_mode: bool = False) -> int:  # fmt: skip
    """PyTorch's pooling size: the conv formula, with ``ceil`` and the rule that the last window starts in the input."""
    stride = kernel if stride is None else stride
    _positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    if padding > kernel // 2:
        raise ValueError(f"pool padding {padding} must be at most half the kernel ({kernel // 2}), as PyTorch requires")
    out = pool_len(size, kernel, stride, padding, dilation, ceil_mode)
    if out < 1:
        raise ValueError(f"input {size} is smaller than the pooling window {dilation * (kernel - 1) + 1}")
    return out


def transpose_output_padding(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The ``output_padding`` that makes a transposed conv give back ``size`` from the conv's output size."""
    out = conv_output_size(size, kernel, stride, padding, dilation)
    return size - conv_transpose_output_size(out, kernel, stride, padding, 0, dilation)


def _selection(size: int, out: int, tap: int, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """``S[o, i] = 1`` iff input ``i = o·s − p + tap·d`` exists (zero padding elsewhere)."""
    s = torch.zeros(out, size)
    o = torch.arange(out)
    i = o * stride - padding + tap * dilation
    valid = (i >= 0) & (i < size)
    s[o[valid], i[valid]] = 1.0
    return s


def _per_axis(name: str, value: int | Sequence[int], n: int) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n:
        raise ValueError(f"{name} {value} must be an int or {n} ints, one per spatial axis")
    return values


def conv_matrix(
    weight: torch.Tensor,
    input_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """The ``(C_out·∏out, C_in·∏in)`` matrix of ``conv{1,2,3}d(·, weight, None, stride, padding, dilation, groups)``.

    ``weight`` has PyTorch's shape ``(C_out, C_in/groups, *kernel)``. Dense,
    so meant for small sizes (teaching, tests): a 16×16 map with 8 channels in
    and out is already a 2048×2048 matrix.
    """
    n = weight.dim() - 2
    if n < 1:
        raise ValueError(f"weight of shape {tuple(weight.shape)} must be (C_out, C_in/groups, *kernel)")
    size, st, pad, dil = (_per_axis(k, v, n) for k, v in
                          (("input_size", input_size), ("stride", stride), ("padding", padding), ("dilation", dilation)))  # fmt: skip
    c_out, c_in_g, kernel = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
    if groups < 1 or c_out % groups:
        raise ValueError(f"groups={groups} must be positive and divide C_out={c_out}")
    out = tuple(conv_output_size(i, k, s, p, d) for i, k, s, p, d in zip(size, kernel, st, pad, dil))
    c_out_g = c_out // groups
    # channel matrices per tap, block-diagonal over groups
    dense = weight.new_zeros(c_out, c_in_g * groups, *kernel)
    for g in range(groups):
        dense[g * c_out_g:(g + 1) * c_out_g, g * c_in_g:(g + 1) * c_in_g] = weight[g * c_out_g:(g + 1) * c_out_g]
    m = weight.new_zeros(c_out * int(torch.tensor(out).prod()), c_in_g * groups * int(torch.tensor(size).prod()))
    for tap in itertools.product(*(range(k) for k in kernel)):
        spatial = torch.ones(1, 1, dtype=weight.dtype)
        for axis, t in enumerate(tap):
            sel = _selection(size[axis], out[axis], t, st[axis], pad[axis], dil[axis]).to(weight.dtype)
            spatial = torch.kron(spatial, sel)
        m += torch.kron(dense[(slice(None), slice(None), *tap)], spatial)
    return m
