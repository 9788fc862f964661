"""Conv arithmetic against PyTorch itself: output sizes, and the conv matrix against F.conv / autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecnn.analysis.convmath import (
    conv_matrix,
    conv_output_size,
    conv_transpose_output_size,
    pool_output_size,
    transpose_output_padding,
)

_CONV = {1: F.conv1d, 2: F.conv2d}
_TCONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d}


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    ndim = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2, 3]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
    size = tuple(max(draw(st.integers(1, 9)), d * (k - 1) + 1 - 2 * p)
                 for k, d, p in zip(kernel, dilation, padding))  # fmt: skip
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    return dict(ndim=ndim, groups=groups, kernel=kernel, stride=stride, dilation=dilation, padding=padding,
                size=size, c_in=c_in, c_out=c_out, seed=draw(st.integers(0, 2**31)))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_conv_matrix_is_the_conv_and_its_transpose_the_input_gradient(case):
    g = torch.Generator().manual_seed(case["seed"])
    w = torch.randn(case["c_out"], case["c_in"] // case["groups"], *case["kernel"], generator=g, dtype=torch.float64)
    x = torch.randn(1, case["c_in"], *case["size"], generator=g, dtype=torch.float64, requires_grad=True)
    geo = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    y = _CONV[case["ndim"]](x, w, None, **geo)
    m = conv_matrix(w, case["size"], **geo)
    assert m.shape == (y.numel(), x.numel())
    torch.testing.assert_close(m @ x.detach().flatten(), y.detach().flatten())

    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad(y, x, gy)
    out_pad = tuple(transpose_output_padding(i, k, s, p, d) for i, k, s, p, d in
                    zip(case["size"], case["kernel"], case["stride"], case["padding"], case["dilation"]))  # fmt: skip
    tconv = _TCONV[case["ndim"]](gy, w, None, case["stride"], case["padding"], out_pad, case["groups"], case["dilation"])
    torch.testing.assert_close(m.T @ gy.flatten(), tconv.flatten())
    torch.testing.assert_close(m.T @ gy.flatten(), gx.flatten())


def test_conv_matrix_by_hand_1d():
    # kernel [1, 2] stride 2 on 5 inputs, padding 1: outputs read (pad, x0), (x1, x2), (x3, x4)
    m = conv_matrix(torch.tensor([[[1.0, 2.0]]]), 5, stride=2, padding=1)
    expected = torch.tensor([[2.0, 0, 0, 0, 0], [0, 1, 2, 0, 0], [0, 0, 0, 1, 2]])
    torch.testing.assert_close(m, expected)


@pytest.mark.parametrize("size", [1, 5, 8, 13])
@pytest.mark.parametrize(("k", "s", "p", "d"), [(1, 1, 0, 1), (3, 2, 1, 1), (3, 1, 2, 2), (5, 3, 2, 1), (4, 2, 0, 3)])
def test_output_sizes_match_pytorch(size, k, s, p, d):
    x = torch.zeros(1, 1, size)
    w = torch.zeros(1, 1, k)
    if size + 2 * p >= d * (k - 1) + 1:
        assert conv_output_size(size, k, s, p, d) == F.conv1d(x, w, None, s, p, d).shape[-1]
    else:
        with pytest.raises(ValueError, match="smaller than"):
            conv_output_size(size, k, s, p, d)
    for op in range(max(s, d)):
        if (size - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1:
            got = F.conv_transpose1d(x, w, None, s, p, op, 1, d).shape[-1]
            assert conv_transpose_output_size(size, k, s, p, op, d) == got
    if p <= k // 2 and size + 2 * p >= d * (k - 1) + 1:
        for ceil in (False, True):
            got = F.max_pool1d(x, k, s, p, d, ceil_mode=ceil).shape[-1]
            assert pool_output_size(size, k, s, p, d, ceil) == got


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="stride"):
        conv_output_size(8, 3, 0)
    with pytest.raises(ValueError, match="groups"):
        conv_matrix(torch.zeros(3, 1, 3), 8, groups=2)
    with pytest.raises(ValueError, match="one per spatial axis"):
        conv_matrix(torch.zeros(2, 1, 3, 3), (8, 8, 8))
