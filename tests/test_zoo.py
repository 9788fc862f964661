"""Every registered model: exact reference parameter counts, forward and backward (docs/design.md §2).

Parametrized over the registry, so a new zoo entry is tested automatically.
"""

import pytest
import torch
from torch import nn

from edgecnn import zoo
from edgecnn.build import count_params

# Trainable parameters of the reference implementations at 1000 classes (10 for CIFAR):
# TF-slim mobilenet_v1; torchvision for the others; He et al. 2016 §4.2 option-A CIFAR ResNets
# (0.27M / 0.85M in the paper; 269,722 / 853,018 exactly, as in akamaster/pytorch_resnet_cifar10).
REFERENCE = {
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet20_cifar": 269_722,
    "resnet56_cifar": 853_018,
    # kuangliu/pytorch-cifar ports at 10 classes
    "mobilenet_v2_cifar": 2_236_682,
    "resnet18_cifar": 11_173_962,
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_parameter_counts(name):
    assert count_params(zoo.create(name)) == REFERENCE[name]
    if zoo.get(name).reference_params is not None:
        assert zoo.get(name).reference_params == REFERENCE[name]


@pytest.mark.parametrize("name", zoo.names())
def test_forward_backward(name):
    torch.manual_seed(0)
    entry = zoo.get(name)
    model = zoo.create(name, num_classes=17)
    x = torch.randn(2, 3, entry.input_size, entry.input_size, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 17)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", [n for n in zoo.names() if n.endswith("_cifar")])
def test_cifar_variants_end_small_but_not_collapsed(name):
    model = zoo.create(name)
    feats = {}
    gap = next(m for m in model.blocks if m.__class__.__name__ == "GlobalAvgPool")
    gap.register_forward_hook(lambda m, i, o: feats.update(shape=i[0].shape))
    model.eval()(torch.randn(1, 3, 32, 32))
    assert feats["shape"][-1] in (2, 4, 8)  # 32x32 input with a stride-1 stem


def _conv_channels(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"])
@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.4])
def test_width_multiplier_rounds_to_multiples_of_8(name, width):
    base, thin = zoo.create(name), zoo.create(name, width=width)
    # every conv width (SE convs and the 1000-way classifier aside) is a multiple of 8, and scales monotonically
    assert all(c % 8 == 0 for c in _conv_channels(thin))
    if width < 1:
        assert count_params(thin) < count_params(base)
    else:
        assert count_params(thin) > count_params(base)


def test_width_multiplier_hand_checked_channels():
    # MobileNetV2 x0.5: stem 32*0.5 = 16, first block 16*0.5 = 8, last conv kept at 1280 (Sandler et al. §5.1)
    assert zoo.arch_of("mobilenet_v2", width=0.5).split()[:2] == ["conv_s2_c16_relu6", "ir_e1_c8"]
    assert "conv_k1_c1280_relu6" in zoo.arch_of("mobilenet_v2", width=0.5)
    assert "conv_k1_c1792_relu6" in zoo.arch_of("mobilenet_v2", width=1.4)  # 1280*1.4
    # MobileNetV3-Large x0.75: 960*0.75 = 720 = 6 * make_divisible(160*0.75 = 120)
    assert "conv_k1_c720_hswish" in zoo.arch_of("mobilenet_v3_large", width=0.75)


def test_channel_divisor_hand_checked():
    # ResNet-20's 16/32/64 at width 0.7 = 11.2/22.4/44.8: divisor 8 gives 16/24/48 (11.2 rounds to 8, more than 10%
    # below, so up to 16), 4 gives 12/24/44, 1 gives 11/22/45
    def widths(d):
        return [int(t.split("_c")[-1].split("_")[0]) for t in zoo.arch_of("resnet20_cifar", width=0.7, divisor=d).split()
                if "_c" in t]  # fmt: skip

    assert widths(8) == [16, 16, 24, 48] and zoo.arch_of("resnet20_cifar", width=0.7) == zoo.arch_of(
        "resnet20_cifar", width=0.7, divisor=8)  # fmt: skip
    assert widths(4) == [12, 12, 24, 44]
    assert widths(1) == [11, 11, 22, 45]
    # MobileNetV2 x0.35 stem: 11.2 -> 16 with 8 (torchvision's round_nearest=8), 12 with 4
    assert zoo.arch_of("mobilenet_v2", width=0.35).split()[0] == "conv_s2_c16_relu6"
    assert zoo.arch_of("mobilenet_v2", width=0.35, divisor=4).split()[0] == "conv_s2_c12_relu6"
    # odd widths build and run: the zero-padding shortcuts pad 11 -> 22 -> 45 channels
    net = zoo.create("resnet20_cifar", width=0.7, divisor=1).eval()
    assert _conv_channels(net)[:2] == [11, 11] and net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_params(zoo.create("resnet20_cifar", width=0.7, divisor=1)) < count_params(
        zoo.create("resnet20_cifar", width=0.7, divisor=4))  # fmt: skip


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8"])
def test_channel_divisor_refused(bad):
    with pytest.raises(ValueError, match="channel divisor must be a positive integer"):
        zoo.arch_of("resnet20_cifar", width=0.5, divisor=bad)


def test_default_classes_and_bad_names():
    assert zoo.create("resnet20_cifar").num_classes == 10
    assert zoo.create("mobilenet_v3_small").num_classes == 1000
    with pytest.raises(ValueError, match=r"unknown model 'mobilenet_v4'; valid: mobilenet_v1, mobilenet_v2"):
        zoo.create("mobilenet_v4")
    with pytest.raises(ValueError, match="width multiplier must be positive"):
        zoo.create("mobilenet_v2", width=0)
