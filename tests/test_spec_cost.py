"""Closed-form costs from an arch spec equal the traced analysis, block by block."""

from __future__ import annotations

import pytest
import torch

from edgecnn import zoo
from edgecnn.analysis import analyze, cost_from_spec
from edgecnn.arch import parse
from edgecnn.build import build


def assert_same_as_traced(arch: str, size: int, num_classes: int = 1000, in_chans: int = 3) -> None:
    with torch.device("meta"):
        model = build(arch, num_classes=num_classes, in_chans=in_chans)
    traced = analyze(model, (in_chans, size, size)).by_module(depth=2)
    spec = cost_from_spec(arch, size, num_classes, in_chans)
    assert len(spec.layers) == len(model.blocks)
    for layer in spec.layers:
        t = traced.get(layer.name)
        got = (t.params, t.macs) if t is not None else (0, 0)
        assert (layer.params, layer.macs) == got, f"{layer.name} ({layer.kind}) in {arch!r}"
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert spec.flops == 2 * spec.macs


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_spec_cost_equals_traced(name: str) -> None:
    entry = zoo.get(name)
    assert_same_as_traced(entry.arch(), entry.input_size, entry.num_classes)


@pytest.mark.parametrize(
    "arch",
    [
        # pre-activation and plain convs with groups, bias, no BN
        "conv_k3_s2_c16_pre conv_k3_g4_c32_bias conv_k1_c8_nobn gap fc_c64_bn_relu fc",
        # transposed conv, dilation, avg/max pooling
        "conv_k3_c8 maxpool tconv_k4_s2_c8 conv_k3_d2_c16 avgpool_k3_s2 gap fc",
        # depthwise separable with SE, post and pre order
        "conv_c16 ds_c32_se0.25 ds_s2_c32_pre ds_k5_c64_se0.5_hsgate gap fc",
        # inverted residuals: expansion 1, explicit widths, no skip, SE
        "conv_c16 ir_e1_c16 ir_s2_m40_c24 ir_c24_noskip ir_k5_m72_c24_se0.25 gap dropout_p0.1 fc",
        # residual blocks in both orders and with all shortcut kinds
        "conv_c16 basic_c16 basic_s2_c32_pre basic_s2_c64_padskip basic_c64_noskip bottleneck_s2_c128 "
        "bottleneck_c128_pre bottleneck_s2_c256_pre bottleneck_c256_se0.25 gap fc",
    ],
)
@pytest.mark.parametrize("size", [32, 37])
def test_every_block_kind(arch: str, size: int) -> None:
    assert_same_as_traced(arch, size, num_classes=7, in_chans=3)


def test_width_multiplier_and_input_size() -> None:
    arch = zoo.arch_of("mobilenet_v3_small", width=0.75)
    assert_same_as_traced(arch, 160)
    assert_same_as_traced(zoo.arch_of("mobilenet_v2", width=0.5), 96, in_chans=1)


def test_accepts_spec_and_hand_count() -> None:
    # conv 3×3 3→8 on 8×8 (stride 1, BN) then fc 8→2: hand-derived
    spec = parse("conv_c8 gap fc")
    c = cost_from_spec(spec, 8, num_classes=2)
    assert c.macs == 64 * 8 * 27 + 16
    assert c.params == 8 * 27 + 16 + 8 * 2 + 2
    assert c.arch == spec.format() and c.input_size == (8, 8)
    assert [layer.out_size for layer in c.layers] == [(8, 8), None, None]


def test_bad_arch_or_size_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown block kind"):
        cost_from_spec("cnv_c8 gap fc")
    with pytest.raises(ValueError, match="positive"):
        cost_from_spec("conv_c8 gap fc", (0, 8))
