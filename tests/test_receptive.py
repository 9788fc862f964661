"""Receptive fields against the empirical gradient support (ground truth by autograd, see rf_support.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecnn import zoo
from edgecnn.analysis.receptive import RF, layer_receptive_fields, receptive_field
from edgecnn.blocks import BasicBlock, GlobalAvgPool
from rf_support import check_support, positive_linear, predicted_box, support_box

def _check(model: nn.Module, shape: tuple[int, ...]) -> RF:
    rf = receptive_field(model, shape)
    assert not rf.whole and not rf.global_context and rf.note == ""
    check_support(positive_linear(model), rf, shape)
    return rf


def test_dilated_chain_matches_hand_values_and_gradient_support():
    # c3s2 -> c3d2 -> c3s2 -> c3d4, with uneven paddings so that `start` is exercised
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=0),
        nn.Conv2d(2, 2, 3, dilation=2, padding=2),
        nn.Conv2d(2, 2, 3, stride=2, padding=1),
        nn.Conv2d(2, 1, 3, dilation=4, padding=0),
    )
    # R = 1 + 2·1 + 2·2·2 + 2·1·2 + 2·4·4 = 47; J = 4;
    # start = (1-0)·1 + (2-2)·2 + (1-1)·2 + (4-0)·4 = 17 (hand-derived from the Distill recursion)
    rf = _check(net, (1, 1, 97, 97))  # 97: no trailing pixel dropped by a floor-mode stride
    assert rf.size == (47, 47) and rf.jump == (4, 4) and rf.start == (17, 17)


def test_even_kernels_and_1d():
    net = nn.Sequential(nn.Conv1d(1, 2, 4, stride=2, padding=1), nn.AvgPool1d(2), nn.Conv1d(2, 1, 2, dilation=3))
    rf = _check(net, (1, 1, 40))
    # R = 1 + 3 + 1·2 + 1·3·4 = 18, J = 4, start = 0.5 + 0.5·2 + 1.5·4 = 7.5
    assert rf.size == (18,) and rf.jump == (4,) and rf.start == (7.5,)


def test_residual_block_with_projection_shortcut():
    block = BasicBlock(4, 4, 8, stride=2)  # body c3s2 -> c3, shortcut 1×1 s2
    rf = _check(block, (1, 4, 33, 33))
    assert rf.size == (7, 7) and rf.jump == (2, 2)


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, stride=2, padding=0)
        self.b1, self.b3, self.b5 = (nn.Conv2d(4, 2, k, padding=k // 2) for k in (1, 3, 5))
        self.head = nn.Conv2d(6, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.cat([self.b1(x), self.b3(x), self.b5(x)], dim=1))


def test_concat_of_branches_takes_the_largest_field():
    rf = _check(_Concat(), (1, 2, 41, 41))
    assert rf.size == (1 + 2 + 4 * 2 + 2 * 2,) * 2  # the 5×5 branch wins


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size", "expected"), [("resnet18", 256, 435), ("mobilenet_v2", 288, 491)])
def test_zoo_trunks_match_published_fields_and_gradient_support(name, size, expected):
    # published: ResNet-18 435, MobileNetV2 491 (Araujo et al. 2019, Table 1 gives the same recursion)
    # sizes chosen so the first output's far edge and the last output's near edge both lie inside the image
    model = zoo.create(name, width=0.1)
    gap = next(i for i, b in enumerate(model.blocks) if isinstance(b, GlobalAvgPool))
    trunk = model.blocks[:gap]
    rf = _check(trunk, (1, 3, size, size))
    assert rf.size == (expected, expected) and rf.jump == (32, 32)


class _DetachedPool(nn.Module):
    """An SE squeeze whose gradient is cut: what is left of the gradient support is the conv path's."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x).detach()


def test_global_pool_is_whole_and_se_keeps_the_conv_path_field_with_a_global_flag():
    assert receptive_field(zoo.create("resnet20_cifar"), (1, 3, 32, 32)).label() == "whole input"
    model = zoo.create("mobilenet_v3_small_cifar", width=0.5)
    fields = layer_receptive_fields(model, (1, 3, 32, 32))
    # the SE squeeze sees the whole image; the gated output keeps the depthwise conv's 5×5 field, flagged
    assert fields["blocks_1_se_pool"].whole and fields["blocks_1_se_pool"].global_context
    assert fields["blocks_1_dw_conv"].size == (5, 5) and not fields["blocks_1_dw_conv"].global_context
    assert fields["mul"].size == (5, 5) and not fields["mul"].whole and fields["mul"].global_context
    assert fields["mul"].label() == "5×5 J1 +global"
    # blocks 0-4 (two of them with SE): conv-path field = the gradient support with the SE squeezes cut off;
    # R = 3 (stem) + 2 (k3) + 2 (k3 s2) + 2·2 (k3) + 4·2 (k5 s2) = 19, J = 4
    trunk, shape = model.blocks[:5], (1, 3, 64, 64)
    rf = receptive_field(trunk, shape)
    assert rf.global_context and not rf.whole and rf.size == (19, 19) and rf.jump == (4, 4)
    linear = positive_linear(trunk)
    for m in linear.modules():
        if hasattr(m, "pool") and hasattr(m, "fc1"):  # SqueezeExcite
            m.pool = _DetachedPool(m.pool)
    check_support(linear, rf, shape)
    # with the squeezes live every output sees the whole image: the "+global" flag
    assert support_box(positive_linear(trunk), shape, (0, 0)) == [(0, 63), (0, 63)]


def test_transposed_conv_hull_is_exact_for_one_layer():
    for k, s, p in [(4, 2, 1), (3, 2, 1), (5, 3, 2)]:
        net = nn.Sequential(nn.ConvTranspose2d(1, 1, k, s, p))
        rf = receptive_field(net, (1, 1, 9, 9))
        lin = positive_linear(net)
        out = lin(torch.zeros(1, 1, 9, 9, dtype=torch.float64)).shape[2:]
        for index in [(0, 0), (1, 1), (out[0] // 2, out[1] // 2 + 1)]:
            assert support_box(lin, (1, 1, 9, 9), index) == predicted_box(rf, index, (9, 9))


def test_slicing_padding_and_upsampling_rules():
    class Net(nn.Module):
        def forward(self, x):
            x = torch.nn.functional.pad(x, (2, 0, 3, 0))
            return x[:, :, 1::2, ::3]

    rf = receptive_field(Net(), (1, 1, 20, 20))
    assert rf.jump == (2, 3) and rf.start == (-3 + 1, -2) and rf.size == (1, 1)
    up = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3, 2, 1), nn.Upsample(scale_factor=2)), (1, 1, 16, 16))
    assert up.jump == (1, 1) and up.size == (3, 3)


def test_bad_input_shape_is_a_value_error():
    with pytest.raises(ValueError, match="spatial"):
        receptive_field(nn.Linear(3, 3), (1, 3))


@pytest.mark.parametrize(
    ("name", "expected"),
    # Araujo et al. 2019 (Distill), Table 1: MobileNet v1 315, v2 491. ResNet-50 here is torchvision's v1.5
    # (stride in the 3×3), 427; Araujo's 483 is v1 (stride in the first 1×1). ResNet-18: 435.
    [("mobilenet_v1", 315), ("mobilenet_v2", 491), ("resnet18", 435), ("resnet50", 427), ("resnet20_cifar", 81)],
)
def test_zoo_fields_match_published_values(name, expected):
    model = zoo.create(name, width=0.1)
    gap = next(i for i, b in enumerate(model.blocks) if isinstance(b, GlobalAvgPool))
    rf = receptive_field(model.blocks[:gap], (1, 3, 64, 64))  # the field does not depend on the input size
    assert rf.size == (expected, expected) and not rf.whole
