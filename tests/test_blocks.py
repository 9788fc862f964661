"""Blocks against hand-derived numbers and PyTorch references (docs/design.md §1)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.activations import ACTIVATIONS, make_activation
from edgecnn.blocks import (
    BasicBlock,
    Bottleneck,
    ConvBNAct,
    ConvTransposeBNAct,
    DepthwiseSeparable,
    InvertedResidual,
    PadShortcut,
    SqueezeExcite,
    make_divisible,
    se_width,
)


def conv_macs(module: nn.Module, x: torch.Tensor) -> int:
    """MACs of the convolutions only, from PyTorch's own FLOP counter (FLOPs = 2·MACs)."""
    with FlopCounterMode(display=False) as fc:
        module(x)
    counts = fc.get_flop_counts()["Global"]
    return sum(v for k, v in counts.items() if "convolution" in str(k)) // 2


def test_hard_activations_match_their_formulas():
    x = torch.linspace(-6, 6, 241)
    relu6 = torch.clamp(x + 3, 0, 6)
    torch.testing.assert_close(make_activation("hswish")(x), x * relu6 / 6)
    torch.testing.assert_close(make_activation("hsigmoid")(x), relu6 / 6)
    torch.testing.assert_close(make_activation("swish")(x), x * torch.sigmoid(x))
    assert make_activation("hsigmoid")(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0.0, 0.5, 1.0]


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown activation 'gelu'; valid: relu, relu6, tanh, sigmoid"):
        make_activation("gelu")
    assert set(ACTIVATIONS) >= {"relu", "relu6", "tanh", "sigmoid", "swish", "hswish", "hsigmoid"}


@pytest.mark.parametrize(
    "value, expected",
    [(24.0, 24), (32 * 0.75, 24), (18, 24), (10, 16), (1280 * 0.35, 448), (3, 8), (36, 40), (1001, 1000)],
)
def test_make_divisible_hand_values(value, expected):
    # rule: round to nearest multiple of 8, bump by 8 if more than 10% below the value
    assert make_divisible(value) == expected


def test_se_width_is_reduction_of_expanded_width_rounded_to_8():
    assert se_width(72, 0.25) == 24  # MobileNetV3-Large block 4: torchvision's squeeze width
    assert se_width(960, 0.25) == 240
    assert se_width(256, 1 / 16) == 16  # SENet r=16
    with pytest.raises(ValueError, match="SE ratio"):
        se_width(64, 0.0)


@pytest.mark.parametrize("cin, cout, k", [(32, 64, 3), (64, 128, 5), (16, 24, 7)])
def test_depthwise_separable_cost_ratio(cin, cout, k):
    x = torch.randn(1, cin, 16, 16)
    ds = DepthwiseSeparable(cin, cout, kernel=k)
    std = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    ratio = conv_macs(ds, x) / conv_macs(std, x)
    assert ratio == pytest.approx(1 / cout + 1 / k**2, rel=1e-12)


def test_conv_bn_act_orders():
    post = ConvBNAct(4, 8, kernel=3, act="relu6")
    assert [type(m) for m in post] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6]
    pre = ConvBNAct(4, 8, kernel=3, act="relu", order="pre")
    assert [type(m) for m in pre] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert pre.bn.num_features == 4  # pre-activation normalises the input
    x = torch.randn(2, 4, 9, 9)
    pre.eval()
    ref = F.conv2d(F.relu(F.batch_norm(x, torch.zeros(4), torch.ones(4), eps=1e-5)), pre.conv.weight, padding=1)
    torch.testing.assert_close(pre(x), ref)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        ConvBNAct(4, 8, groups=3)


def test_dilated_conv_keeps_size_and_spreads_taps():
    m = ConvBNAct(1, 1, kernel=3, dilation=4, bn=False, act="linear")
    assert m.conv.padding == (4, 4)
    assert m(torch.randn(1, 1, 17, 17)).shape == (1, 1, 17, 17)


@pytest.mark.parametrize("stride, cin, cout, skip", [(1, 16, 16, True), (2, 16, 16, False), (1, 16, 24, False)])
def test_inverted_residual_skip_rule(stride, cin, cout, skip):
    block = InvertedResidual(cin, cin * 6, cout, stride=stride)
    assert block.use_skip is skip
    # zero the projection BN: the body outputs 0, so the block outputs x with the skip and 0 without
    nn.init.zeros_(block.project.bn.weight)
    block.eval()
    x = torch.randn(2, cin, 8, 8)
    y = block(x)
    if skip:
        torch.testing.assert_close(y, x)
    else:
        assert torch.all(y == 0)


def test_inverted_residual_structure_and_linear_bottleneck():
    b = InvertedResidual(16, 16, 24, kernel=5, se_ratio=0.25, gate="hsigmoid", act="hswish")
    assert b.expand is None  # expansion 1: no 1x1 expansion conv (MobileNetV2 Table 2, first row)
    assert b.dw.conv.groups == 16 and b.dw.conv.kernel_size == (5, 5)
    assert not hasattr(b.project, "act")  # linear projection
    assert b.se.fc1.out_channels == 8
    b.eval()
    assert (b(torch.randn(4, 16, 8, 8)) < 0).any()  # no activation after the projection


def test_squeeze_excite_matches_the_formula():
    se = SqueezeExcite(32, 8, gate="hsigmoid")
    x = torch.randn(3, 32, 5, 7)
    z = x.mean(dim=(2, 3))  # squeeze: z_c = 1/(HW) sum_ij x_c(i,j)
    s = F.hardsigmoid(F.linear(F.relu(F.linear(z, se.fc1.weight[:, :, 0, 0], se.fc1.bias)), se.fc2.weight[:, :, 0, 0], se.fc2.bias))
    torch.testing.assert_close(se(x), x * s[:, :, None, None])
    with pytest.raises(ValueError, match="unknown SE gate 'tanh'"):
        SqueezeExcite(32, 8, gate="tanh")


def test_basic_block_post_activation_against_manual_forward():
    b = BasicBlock(8, 8, 16, stride=2).eval()
    x = torch.randn(2, 8, 10, 10)
    h = F.relu(b.body[0].bn(F.conv2d(x, b.body[0].conv.weight, stride=2, padding=1)))
    h = b.body[1].bn(F.conv2d(h, b.body[1].conv.weight, padding=1))
    sc = b.shortcut.bn(F.conv2d(x, b.shortcut.conv.weight, stride=2))
    torch.testing.assert_close(b(x), F.relu(h + sc))


def test_preactivation_block_keeps_raw_identity():
    b = BasicBlock(8, 8, 8, order="pre").eval()
    for conv in (b.body[0], b.body[1].conv):
        nn.init.zeros_(conv.weight)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(b(x), x)  # identity path is x itself, not BN-ReLU(x)


def test_pad_shortcut_option_a():
    sc = PadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert torch.all(y[:, :8] == 0) and torch.all(y[:, 24:] == 0)
    b = BasicBlock(16, 32, 32, stride=2, shortcut="pad")
    assert sum(p.numel() for p in b.shortcut.parameters()) == 0
    with pytest.raises(ValueError, match="cannot reduce channels"):
        PadShortcut(32, 16, 1)


def test_plain_block_has_no_skip():
    b = BasicBlock(8, 8, 8, shortcut="none").eval()
    nn.init.zeros_(b.body[1].bn.weight)
    nn.init.zeros_(b.body[1].bn.bias)
    assert torch.all(b(torch.randn(1, 8, 4, 4)) == 0)


def test_bottleneck_widths_and_stride_on_3x3():
    b = Bottleneck(64, 64, 256, stride=2)
    assert [m.conv.kernel_size for m in b.body] == [(1, 1), (3, 3), (1, 1)]
    assert b.body[1].conv.stride == (2, 2)  # ResNet v1.5 (torchvision) puts the stride on the 3x3
    assert b(torch.randn(1, 64, 8, 8)).shape == (1, 256, 4, 4)


@pytest.mark.parametrize("k, s, d", [(4, 2, 1), (3, 2, 1), (2, 2, 1), (3, 1, 1), (3, 2, 2)])
def test_transposed_conv_output_is_stride_times_input_and_matches_pytorch(k, s, d):
    m = ConvTransposeBNAct(3, 5, kernel=k, stride=s, dilation=d, act="linear").eval()
    x = torch.randn(1, 3, 7, 6)
    y = m(x)
    assert y.shape[-2:] == (7 * s, 6 * s)
    conv = m.conv
    ref = F.conv_transpose2d(x, conv.weight, stride=s, padding=conv.padding, output_padding=conv.output_padding, dilation=d)
    torch.testing.assert_close(y, m.bn(ref))


def test_transposed_conv_rejects_impossible_geometry():
    with pytest.raises(ValueError, match="kernel of at least 2"):
        ConvTransposeBNAct(3, 5, kernel=1, stride=2)
