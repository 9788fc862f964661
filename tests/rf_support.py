"""Ground truth for receptive fields: the empirical gradient support, by autograd (shared by the test modules).

A network is made *linear and positive* -- conv weights 1/fan-in, linear and
norm weights random positive, zero biases, identity activations, average
pooling for max pooling, BN with unit statistics -- so that no path from an
input pixel to the output cancels: the input gradient of the output at one
position (summed over its channels) is non-zero exactly on the pixels that
reach it. The bounding box of that support must equal the predicted interval
``start + i·J ± (R−1)/2`` clipped to the image (dilated chains leave holes
inside -- the gridding artefact -- but not at the ends).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from edgecnn.analysis.rf_math import RF

_ACTS = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Dropout, nn.GELU)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_MAXPOOL = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}


def positive_linear(model: nn.Module, seed: int = 0) -> nn.Module:
    """A float64 eval copy of ``model`` in which no input-to-output path cancels (see the module docstring)."""
    model = copy.deepcopy(model).double().eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _ACTS):
                setattr(parent, name, nn.Identity())
            elif type(child) in _MAXPOOL:
                avg = _MAXPOOL[type(child)]  # type: ignore[index]
                setattr(parent, name, avg(child.kernel_size, child.stride, child.padding, child.ceil_mode))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _CONVS):
                m.weight.fill_(1.0 / m.weight[0].numel())
            elif isinstance(m, (nn.Linear, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen, dtype=torch.float64))
            elif isinstance(m, _BNS):
                m.running_mean.zero_(), m.running_var.fill_(1.0), m.weight.fill_(1.0)
            if isinstance(m, (*_CONVS, nn.Linear, *_BNS)) and getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return model


def support_boxes(model: nn.Module, shape: Sequence[int], indices: list[tuple[int, ...]]) -> list[list[tuple[int, int]]]:
    """Bounding box, per axis, of the input pixels with a non-zero gradient of the output at (0, :, *index)."""
    x = torch.rand(tuple(shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = model(x)
    boxes = []
    for index in indices:
        (grad,) = torch.autograd.grad(y[(0, slice(None), *index)].sum(), x, retain_graph=True)
        nonzero = (grad[0] != 0).any(dim=0)  # over input channels
        box = []
        for axis in range(nonzero.dim()):
            others = tuple(a for a in range(nonzero.dim()) if a != axis)
            idx = (nonzero.any(dim=others) if others else nonzero).nonzero().flatten()
            box.append((int(idx.min()), int(idx.max())))
        boxes.append(box)
    return boxes


def support_box(model: nn.Module, shape: Sequence[int], index: tuple[int, ...]) -> list[tuple[int, int]]:
    """:func:`support_boxes` of one output position."""
    return support_boxes(model, shape, [index])[0]


def predicted_box(rf: RF, index: tuple[int, ...], extent: tuple[int, ...]) -> list[tuple[int, int]]:
    """The input pixels ``rf`` says output ``index`` sees, clipped to the image, as a box per axis."""
    return [(max(0, math.ceil(lo)), min(n - 1, math.floor(hi))) for (lo, hi), n in zip(rf.bounds(index), extent)]


def check_support(linear: nn.Module, rf: RF, shape: Sequence[int]) -> None:
    """Assert ``rf`` equals the gradient support of ``linear`` (a :func:`positive_linear` net) at the first,
    middle and last output positions: the first tests ``start``, the last the near edge of a clipped field."""
    out_spatial = linear(torch.zeros(tuple(shape), dtype=torch.float64)).shape[2:]
    indices = sorted({tuple(0 for _ in out_spatial), tuple(n // 2 for n in out_spatial),
                      tuple(n - 1 for n in out_spatial)})  # fmt: skip
    for index, box in zip(indices, support_boxes(linear, shape, indices)):
        assert box == predicted_box(rf, index, tuple(shape[2:])), (index, box, rf)
