"""The arch format: round trips, pruned networks and error messages (docs/design.md §2)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecnn import zoo
from edgecnn.arch import ArchSpec, BlockSpec, parse
from edgecnn.build import build, count_params
from edgecnn.plan import resolve


def test_canonical_string_round_trips_and_defaults_are_filled():
    s = "conv_s2_c16_hswish ir_r2_k5_s2_e4_c24_se0.25_hsgate ir_m37_c24_noskip gap fc_c64_hswish dropout_p0.2 fc"
    spec = parse(s)
    assert spec.format() == s
    ir = spec.blocks[1]
    assert (ir.kind, ir.r, ir.k, ir.s, ir.d, ir.e, ir.c, ir.se, ir.gate, ir.act) == (
        "ir", 2, 5, 2, 1, 4.0, 24, 0.25, "hsigmoid", "relu6")
    assert spec.blocks[2].m == 37 and spec.blocks[2].e is None and spec.blocks[2].skip == "none"


def test_non_canonical_input_is_normalised():
    a = parse("ir_c24_s2_k3_e6_relu6_r1")
    assert a.format() == "ir_s2_c24"
    assert a == parse("ir_s2_c24")


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_arch_strings_are_canonical(name):
    s = zoo.arch_of(name)
    assert parse(s).format() == s
    assert build(s, num_classes=10).arch == s


def test_pruned_network_with_uneven_widths_builds_with_those_widths():
    s = "conv_s2_c13 ir_m37_c21 ir_m29_c21 ir_k5_s2_m50_c19_se0.25 basic_s2_m11_c27 bottleneck_m7_c33 gap fc"
    net = build(s, num_classes=7)
    assert net.blocks[1].expand.conv.out_channels == 37
    assert net.blocks[2].use_skip  # 21 -> 21 at stride 1 keeps its identity skip
    assert net.blocks[3].se.fc1.out_channels == 16  # make_divisible(50 * 0.25 = 12.5) = 16
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    plans = resolve(s, num_classes=7, input_size=32)
    assert [p.cout for p in plans] == [13, 21, 21, 19, 27, 33, 33, 7]
    assert [p.mid for p in plans][1:6] == [37, 29, 50, 11, 7]
    assert plans[4].out_size == (4, 4)


def test_expand_writes_out_repeats_with_stride_on_first():
    spec = parse("conv_c8 ir_r3_s2_c16 gap fc").expand()
    assert spec.format() == "conv_c8 ir_s2_c16 ir_c16 ir_c16 gap fc"
    assert count_params(build(spec)) == count_params(build("conv_c8 ir_r3_s2_c16 gap fc"))


# --- property test: random valid specs survive format -> parse -> build ---------------------
ACTS = ["relu", "relu6", "hswish", "swish", "tanh", "sigmoid", "linear"]
ch = st.integers(1, 24)


@st.composite
def blocks(draw):
    kind = draw(st.sampled_from(["conv", "ds", "ir", "basic", "bottleneck", "maxpool", "avgpool", "tconv"]))
    odd = st.sampled_from([1, 3, 5])
    stride = st.sampled_from([1, 1, 2])
    if kind == "conv":
        return BlockSpec("conv", r=draw(st.integers(1, 2)), k=draw(st.integers(1, 4)), s=draw(stride),
                         d=draw(st.sampled_from([1, 2])), c=draw(ch), act=draw(st.sampled_from(ACTS)),
                         pre=draw(st.booleans()), bn=draw(st.booleans()), bias=draw(st.booleans()))
    if kind == "tconv":
        return BlockSpec("tconv", k=draw(st.sampled_from([2, 3, 4])), s=2, c=draw(ch))
    if kind in ("maxpool", "avgpool"):
        return BlockSpec(kind, k=draw(st.sampled_from([2, 3])), s=draw(st.sampled_from([1, 2])))
    se = draw(st.sampled_from([0.0, 0.25, 0.5, 1 / 16]))
    common = dict(r=draw(st.integers(1, 2)), k=draw(odd), s=draw(stride), d=draw(st.sampled_from([1, 2])),
                  c=draw(ch), se=se, act=draw(st.sampled_from(ACTS)),
                  gate=draw(st.sampled_from(["sigmoid", "hsigmoid"])) if se else None)
    if kind == "ds":
        return BlockSpec("ds", pre=draw(st.booleans()), **common)
    width = draw(st.one_of(st.fixed_dictionaries({"m": ch}),
                           st.fixed_dictionaries({"e": st.sampled_from([0.25, 0.5, 1.0, 2.5, 3.0, 6.0])})))
    if kind == "ir":
        return BlockSpec("ir", skip=draw(st.sampled_from(["auto", "none"])), **common, **width)
    return BlockSpec(kind, pre=draw(st.booleans()), skip=draw(st.sampled_from(["auto", "none", "pad"])), **common, **width)


@st.composite
def specs(draw):
    body = draw(st.lists(blocks(), min_size=1, max_size=5))
    head = [BlockSpec("gap")]
    if draw(st.booleans()):
        head.append(BlockSpec("fc", c=draw(ch), act=draw(st.sampled_from(ACTS)), bn=draw(st.booleans())))
    if draw(st.booleans()):
        head.append(BlockSpec("dropout", p=draw(st.sampled_from([0.0, 0.1, 0.5]))))
    head.append(BlockSpec("fc"))
    return ArchSpec(tuple([BlockSpec("conv", c=draw(st.integers(8, 16)))] + body + head))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_random_specs_round_trip_through_format_parse_build(spec):
    text = spec.format()
    again = parse(text)
    assert again == spec
    assert again.format() == text
    try:
        plans = resolve(spec, num_classes=5, input_size=48)
        net = build(text, num_classes=5)
    except ValueError as exc:  # strides/even kernels that shrink 48² to nothing, or a pad shortcut reducing width
        assert "too small" in str(exc) or "cannot reduce channels" in str(exc)
        return
    assert net.arch == text
    assert count_params(net) == count_params(build(spec, num_classes=5))
    net.eval()
    assert net(torch.randn(1, 3, 48, 48)).shape == (1, 5)
    assert plans[-1].cout == 5


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        ("conv_c16 ir_k3_x5_c24", r"unknown key 'x' in token 'x5' at char 15 \(block 1 'ir_k3_x5_c24' at char 9\)"),
        ("conv_c16 ir_k3_s2", r"'ir' block needs 'c' \(e.g. c32\) in block 1 'ir_k3_s2' at char 9"),
        ("conv_c0", r"c must be positive, got '0': token 'c0' at char 5"),
        ("conv_c16 ir_c-4", r"c needs a positive integer, got '-4': token 'c-4' at char 12"),
        ("conv_k3.5_c16", r"k needs a positive integer, got '3.5': token 'k3.5' at char 5"),
        ("conv_c16 ir_e0_c16", r"e must be a positive finite number, got '0'"),
        ("conv_c16 ir_enan_c16", r"e must be a positive finite number, got 'nan'"),
        ("conv_c16 ir_se1.5_c16", r"se \(SE ratio\) must be in \(0, 1\], got 1.5"),
        ("conv_c16 ir_e6_m96_c16", r"give the expansion e or the inner width m, not both"),
        ("conv_c16 dw_c16", r"unknown block kind 'dw' in block 1 'dw_c16' at char 9; valid kinds: conv, tconv"),
        ("conv_c16 ir_c16_gelu", r"unknown key 'gelu' in token 'gelu' at char 16 .*activations: relu, relu6"),
        ("conv_c16_c32", r"duplicate 'c': token 'c32' at char 9"),
        ("conv_c16 ir_c16_hsgate", r"`hsgate` needs an SE ratio"),
        ("conv_c16 maxpool_c16", r"unknown key 'c' in token 'c16' at char 17"),
        ("conv_c16 ir_c16_padskip", r"'ir' takes no flag 'padskip'"),
        ("conv_c16 dropout", r"'dropout' block needs 'p'"),
        ("conv_c16 dropout_p1", r"p \(dropout probability\) must be in \[0, 1\)"),
        ("", r"empty arch string"),
        ("conv__c16", r"empty token \(double '_'\) at char 5"),
    ],
)
def test_bad_strings_quote_the_token_and_position(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("conv_c16 fc_c10 gap fc", r"block 1 'fc_c10': fc needs a flat input; put 'gap' before it"),
        ("conv_c16 gap conv_c8 fc", r"block 2 'conv_c8': a spatial block cannot follow global pooling"),
        ("conv_c16 gap fc fc_c8", r"block 2 'fc': an fc without c is the classifier and must be the last block"),
        ("conv_c16 ir_k4_c16 gap fc", r"residual blocks need an odd kernel"),
        ("conv_c16 conv_g3_c32 gap fc", r"groups g3 must divide in \(16\) and out \(32\) channels"),
    ],
)
def test_unbuildable_networks_are_explained(text, message):
    with pytest.raises(ValueError, match=message):
        build(text)


def test_input_too_small_for_the_strides():
    with pytest.raises(ValueError, match=r"block 1 'conv_k2_c8': input 1×1 is too small \(output would be 0×0\)"):
        resolve("conv_s2_c8 conv_k2_c8 gap fc", input_size=2)


def test_programmatic_specs_are_validated_too():
    with pytest.raises(ValueError, match="'gap' blocks take no 'c'"):
        BlockSpec("gap", c=3)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        BlockSpec("conv", c=3, k=0)
