"""Two kinds added as one record file each (edgecnn/kinds/er.py, edgecnn/kinds/ghost.py), end to end.

``er``: fused-MBConv (EfficientNetV2, Tan & Le 2021, Fig. 2): k×k conv c_in → m → [SE] → 1×1 m → c_out, identity
skip where shapes match. ``ghost``: the Ghost module (GhostNet, Han et al. 2020, §3.1): a primary conv to
m = ⌈c/s⌉ intrinsic maps, a cheap depthwise d×d conv of them, concatenated. Each works through the grammar, the
builder, the closed-form cost (against hand counts and the traced analysis), latency-table keys, pruning in arch
space (plan_prune, prune_inner), NetAdapt and a search space's stem.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from edgecnn.analysis import analyze, cost_from_spec
from edgecnn.arch import parse
from edgecnn.build import build
from edgecnn.compress import (
    channel_groups, fold_bn, plan_prune, plan_prune_inner, prune, prune_inner, zero_pruned_,
)  # fmt: skip
from edgecnn.compress.budget import parse_budget
from edgecnn.compress.netadapt.drop_block import drop_block
from edgecnn.compress.netadapt.loop import NetAdaptConfig, ResourceMeter, netadapt
from edgecnn.kinds import BLOCK_KINDS
from edgecnn.kinds.er import FusedMBConv
from edgecnn.kinds.ghost import GhostModule
from edgecnn.latency.table import block_key
from edgecnn.latency.widths import split_key, width_grid, with_widths
from edgecnn.plan import resolve
from edgecnn.search.space import space_from_dict
from edgecnn.search.supernet import Supernet, supernet_params
from edgecnn.train.config import FINETUNE
from edgecnn.train.task import DataRef

MIXED = "conv_c16 er_c16 er_s2_e3_c24_se0.25 ghost_c32 ghost_k3_s2_e4_c48_linear ghost_c20 er_c16 gap fc"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomize(model: nn.Module) -> nn.Module:
    """BN statistics and affine parameters that are not the identity, so pruning and permuting are really tested."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


# ---------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("er_c16", "er_c16"),
        ("er_c16_e4_k3_swish_s1", "er_c16"),  # the paper's defaults are left out
        ("er_r2_k5_s2_e6_c40_se0.25_hsgate_relu_noskip", "er_r2_k5_s2_e6_c40_se0.25_hsgate_relu_noskip"),
        ("er_m40_c24_idskip", "er_m40_c24_idskip"),
        ("ghost_c16", "ghost_c16"),
        ("ghost_c16_e2_k1_d3_relu", "ghost_c16"),
        ("ghost_k3_s2_d5_e3_c48_linear", "ghost_k3_s2_d5_e3_c48_linear"),
        ("ghost_r2_m6_c16", "ghost_r2_m6_c16"),
    ],
)
def test_parse_format_round_trip(text: str, canonical: str) -> None:
    assert parse(text).format() == canonical
    assert parse(canonical).format() == canonical
    assert parse(canonical) == parse(text)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("conv_c8 er_c8_padskip", "'er' takes no flag 'padskip'"),
        ("conv_c8 ghost_c8_se0.25", "unknown key 'se'"),
        ("conv_c8 ghost_c8_noskip", "'ghost' takes no flag 'noskip'"),
        ("conv_c8 ghost_e2_m4_c8", "not both"),
    ],
)
def test_grammar_errors_name_the_token(arch: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(arch)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("conv_c8 ghost_m8_c8", "fewer intrinsic maps than outputs: m 8 ≥ c 8"),
        ("conv_c8 ghost_e1_c8", "use e > 1"),
        ("conv_c8 ghost_k2_c16", "odd kernels"),
        ("conv_c8 er_k4_c8", "odd kernel"),
        ("conv_c8 er_s2_c8_idskip", "idskip asks for an identity skip, but its stride is 2"),
    ],
)
def test_shape_rules_are_errors_of_resolve(arch: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(arch)


def test_widths_and_residuals() -> None:
    plans = resolve(MIXED, num_classes=10, input_size=32)
    got = [(p.spec.kind, p.cin, p.mid, p.cout, p.squeeze, p.residual) for p in plans[1:7]]
    assert got == [
        ("er", 16, 64, 16, 0, True),  # m = 4·c_in; stride 1, c_in = c_out: identity
        ("er", 16, 48, 24, 16, False),  # m = 3·16; SE of the inner width: make_divisible(12) = 16
        ("ghost", 24, 16, 32, 0, False),  # m = ⌈32/2⌉
        ("ghost", 32, 12, 48, 0, False),  # m = ⌈48/4⌉
        ("ghost", 48, 10, 20, 0, False),
        ("er", 20, 80, 16, 0, False),  # a width change: no skip (Sandler et al. 2018, §3.3)
    ]
    assert [p.out_size for p in plans[1:7]] == [(32, 32), (16, 16), (16, 16), (8, 8), (8, 8), (8, 8)]


# ---------------------------------------------------------------- build and costs


def test_builds_the_papers_modules() -> None:
    net = build(MIXED, num_classes=10)
    er, er_se, ghost = net.blocks[1], net.blocks[2], net.blocks[5]
    assert isinstance(er, FusedMBConv) and er.use_skip and er.se is None
    assert er.expand.conv.kernel_size == (3, 3) and er.expand.conv.groups == 1  # a regular k×k conv, not depthwise
    assert er.project.conv.kernel_size == (1, 1) and not hasattr(er.project, "act")  # linear projection
    assert isinstance(er.expand.act, nn.SiLU)  # EfficientNetV2's activation by default
    assert er_se.se.fc1.out_channels == 16 and er_se.expand.conv.stride == (2, 2) and not er_se.use_skip
    assert isinstance(ghost, GhostModule) and ghost.keep is None
    assert ghost.primary.conv.kernel_size == (1, 1) and ghost.primary.conv.out_channels == 10
    assert ghost.cheap.conv.groups == 10 and ghost.cheap.conv.kernel_size == (3, 3)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_ghost_keeps_the_first_c_maps() -> None:
    # c = 15, m = 8: 8 intrinsic + 8 ghosts, the last ghost dropped
    net = build("conv_c8 ghost_c15 gap fc", num_classes=3).eval()
    g = net.blocks[1]
    assert g.cheap.conv.out_channels == 8 and g.keep == 15
    x = torch.randn(1, 8, 6, 6)
    y = g(x)
    intrinsic = g.primary(x)
    assert y.shape == (1, 15, 6, 6)
    torch.testing.assert_close(y[:, :8], intrinsic)
    torch.testing.assert_close(y[:, 8:], g.cheap(intrinsic)[:, :7])


def test_hand_counted_costs() -> None:
    # conv_c8 (3→8, 8×8) then the block under test, then gap, fc 8→2
    er = cost_from_spec("conv_c8 er_c8 gap fc", 8, num_classes=2).layers[1]
    # k×k conv 8→32: 9·8·32 + BN 64; project 32·8 + BN 16; 64 output pixels
    assert (er.params, er.macs) == (9 * 8 * 32 + 64 + 32 * 8 + 16, 64 * (9 * 8 * 32 + 32 * 8))
    se = cost_from_spec("conv_c8 er_s2_e2_c16_se0.25 gap fc", 8, num_classes=2).layers[1]
    # m = 16, stride 2 → 4×4; SE 16→8→16 with biases: 2·16·8 + 8 + 16 params, 2·16·8 MACs
    assert (se.params, se.macs) == (9 * 8 * 16 + 32 + 280 + 16 * 16 + 32, 16 * (9 * 8 * 16 + 16 * 16) + 256)
    ghost = cost_from_spec("conv_c8 ghost_c16 gap fc", 8, num_classes=2).layers[1]
    # primary 1×1 8→8 + BN; cheap depthwise 3×3 8→8 + BN
    assert (ghost.params, ghost.macs) == (64 + 16 + 72 + 16, 64 * (64 + 72))
    # Han et al. 2020, Eq. 4: against a k×k conv the ghost module with a k×k primary costs about 1/s
    g3 = cost_from_spec("conv_c8 ghost_k3_c16 gap fc", 8, num_classes=2).layers[1].macs
    c3 = cost_from_spec("conv_c8 conv_k3_c16 gap fc", 8, num_classes=2).layers[1].macs
    assert g3 == 64 * (9 * 8 * 8 + 9 * 8) and g3 / c3 == pytest.approx((9 * 8 + 9) / (9 * 16))


@pytest.mark.parametrize("size", [32, 37])
def test_closed_form_equals_traced_analysis(size: int) -> None:
    arch = MIXED + " ghost_c15 er_k5_m40_c15_se0.25_hsgate er_m30_c15_noskip"
    arch = arch.replace(" gap fc", "") + " gap fc"
    with torch.device("meta"):
        model = build(arch, num_classes=7)
    traced = analyze(model, (3, size, size)).by_module(depth=2)
    spec = cost_from_spec(arch, size, 7)
    for layer in spec.layers:
        t = traced.get(layer.name)
        assert (layer.params, layer.macs) == ((t.params, t.macs) if t is not None else (0, 0)), layer.name
    assert spec.params == sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- latency table


def test_latency_keys_and_slices() -> None:
    plans = resolve(MIXED, num_classes=10, input_size=16)
    er, er_down, ghost, ghost4 = plans[1], plans[2], plans[3], plans[4]
    assert block_key(er).startswith("er|cin16|cout16|mid64|k3|s1")
    sk = split_key(block_key(er))
    assert sk is not None and "|res=id|" in sk.slice and sk.axes == ("c", "mid") and sk.coords == (16, 64)
    down = split_key(block_key(er_down))
    assert down is not None and "|res=no|" in down.slice and down.axes == ("cin", "cout", "mid")
    g = split_key(block_key(ghost))
    assert g is not None and "|ratio=2|" in g.slice and g.axes == ("cin", "cout") and g.coords == (24, 32)
    g4 = split_key(block_key(ghost4))
    assert g4 is not None and "|ratio=4|" in g4.slice
    # a grid over the slice's axes: every ghost variant keeps the ratio (m follows c)
    variants = width_grid(ghost4, (0.5, 1.0))
    assert {(v.cin, v.cout, v.mid) for v in variants} == {(16, 24, 6), (16, 48, 12), (32, 24, 6), (32, 48, 12)}
    assert all(split_key(block_key(v)).slice == g4.slice for v in variants)  # type: ignore[union-attr]
    assert with_widths(ghost, cin=12, cout=16).spec.format() == "ghost_c16"
    assert with_widths(ghost, mid=10).spec.format() == "ghost_m10_c32"
    assert with_widths(er, cin=8, cout=8, mid=24).spec.format() == "er_m24_c8"
    assert {(v.cin, v.mid) for v in width_grid(er, (0.5, 1.0))} == {(8, 32), (8, 64), (16, 32), (16, 64)}


# ---------------------------------------------------------------- pruning


def test_plan_prune_halves_every_group_exactly_and_rewrites_the_arch() -> None:
    torch.manual_seed(0)
    model = _randomize(build(MIXED, num_classes=10))
    plan = plan_prune(model, (3, 32, 32), keep=0.5)
    assert plan.arch == ("conv_c8 er_m32_c8 er_s2_m24_c8_se0.25 ghost_c16 ghost_k3_s2_e4_c32_linear ghost_c16 "
                         "er_m40_c8 gap fc")  # fmt: skip
    result = prune(model, plan)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), zero_pruned_(copy.deepcopy(model), plan)(x), rtol=0, atol=1e-5)
    assert result.arch == result.model.arch == plan.arch
    build(plan.arch, num_classes=10).load_state_dict(result.model.state_dict())  # strict
    spec = cost_from_spec(plan.arch, 32, num_classes=10)
    assert (spec.params, spec.macs) == (plan.params_after, plan.macs_after)


def test_a_ghost_intrinsic_map_takes_its_ghosts_with_it() -> None:
    model = _randomize(build("conv_c8 ghost_e3_c24 conv_k1_c8 gap fc", num_classes=4))
    cg = channel_groups(model, (3, 16, 16), round_to=1)
    group = next(g for g in cg.groups if any(m.module == "blocks.1.primary.conv" and m.role == "out"
                                             for m in g.members))  # fmt: skip
    assert group.width == 8  # the 8 intrinsic maps; each brings its 2 ghosts
    plan = plan_prune(model, widths={group.index: 5}, graph=cg)
    assert plan.arch == "conv_c8 ghost_e3_c15 conv_k1_c8 gap fc"
    result = prune(model, plan)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), zero_pruned_(copy.deepcopy(model), plan)(x), rtol=0, atol=1e-5)


def test_a_ghost_whose_width_is_no_multiple_is_not_pruned_with_a_reason() -> None:
    model = build("conv_c8 ghost_c15 conv_k1_c8 gap fc", num_classes=4)
    plan = plan_prune(model, (3, 16, 16), keep=0.5, round_to=1)
    # the channel graph sees 8 intrinsic maps, one with a single ghost: no equal cut keeps the module's form
    reasons = [s.reason for s in plan.skipped if "blocks.1.primary" in s.description]
    assert reasons and "ghost_c15" in plan.arch


def test_prune_inner_of_fused_mbconv_is_exact_on_silent_channels() -> None:
    model = _randomize(build("conv_c16 er_m32_c16_se0.25 er_s2_c24 gap fc", num_classes=5))
    block = model.blocks[1]
    drop = list(range(1, 32, 4))
    with torch.no_grad():
        block.expand.conv.weight[drop] = 0
        block.expand.bn.weight[drop] = 0
        block.expand.bn.bias[drop] = 0
    new = prune_inner(model, {1: 24, 2: 40})
    assert new.arch == "conv_c16 er_m24_c16_se0.25 er_s2_m40_c24 gap fc"
    assert plan_prune_inner(model, {1: 24}).blocks[0].kept == tuple(j for j in range(32) if j not in drop)
    only_first = prune_inner(model, {1: 24})
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(only_first(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="a 'ghost' block has no inner width"):
        prune_inner(build("conv_c8 ghost_c16 gap fc"), {1: 4})


def test_bn_folding_keeps_the_function() -> None:
    model = _randomize(build(MIXED, num_classes=10))
    folded = fold_bn(model)  # no token writes a folded BN of these kinds: a PlainNet of the same modules
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_an_identity_fused_mbconv_can_be_dropped() -> None:
    model = _randomize(build("conv_c16 er_c16 er_s2_c24 gap fc", num_classes=5))
    smaller = drop_block(model, 1)
    assert smaller.arch == "conv_c16 er_s2_c24 gap fc"


def test_netadapt_on_a_tiny_net_of_the_new_kinds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tiny = "conv_k3_c16 er_s2_e2_c16 ghost_c16 gap fc"
    ref = DataRef("digits", image_size=8)
    train = replace(FINETUNE, batch_size=64, lr=0.05)
    cfg = NetAdaptConfig(initial_step=0.2, decay=0.9, short_steps=1, top_k=1, round_to=4, recal_batches=1,
                         train=train)  # fmt: skip
    torch.manual_seed(0)
    model = build(tiny, num_classes=10, in_chans=1)
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    r = netadapt(model, ref, parse_budget("60%macs"), meter=meter, config=cfg, out=tmp_path)
    start = cost_from_spec(tiny, 8, 10, 1).macs
    assert r.met and r.resource == cost_from_spec(r.arch, 8, 10, 1).macs <= 0.6 * start
    assert r.model.arch == r.arch and r.history
    kinds = [b.kind for b in parse(r.arch).blocks]
    assert kinds == ["conv", "er", "ghost", "gap", "fc"]


# ---------------------------------------------------------------- search space


def test_a_search_space_stem_may_hold_the_new_kinds() -> None:
    doc = {"name": "tiny", "input_size": 32, "stem": "conv_k3_c16_hswish er_c16 ghost_c24", "head_mult": 2,
           "hidden": 64, "stages": [{"stride": 2, "widths": [24, 32], "depths": [1, 2]}]}  # fmt: skip
    space = space_from_dict(doc)
    arch = space.arch(space.extreme(True))
    assert arch.format().startswith("conv_c16_hswish er_c16 ghost_c24 ir_r2_k7_s2_c32_se0.25_hsgate_hswish")
    assert build(arch, num_classes=10)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    flat = "/".join(n for n, k in BLOCK_KINDS.items() if not k.spatial)
    with pytest.raises(ValueError, match=f"spatial blocks only \\(no {flat}\\)"):
        space_from_dict({**doc, "stem": "conv_c16 ghost_c16 gap"})


FUSED_SPACE = {
    "name": "fused-16", "input_size": 16, "stem": "conv_k3_s2_c8_hswish", "head_mult": 2, "hidden": 32,
    "stages": [  # EfficientNetV2's layout: fused-MBConv early, inverted residuals late (Tan & Le 2021, Table 4)
        {"stride": 2, "block": "er", "widths": [8, 16], "depths": [1, 2], "kernels": [3, 5], "expansions": [1, 4]},
        {"stride": 1, "widths": [16, 24], "depths": [1, 2], "kernels": [3, 5], "expansions": [3, 4]},
    ],
}  # fmt: skip


def test_a_search_space_stage_may_be_fused_mbconv() -> None:
    space = space_from_dict(FUSED_SPACE)
    doc = space.to_dict()
    assert space_from_dict(doc) == space and space.stages[0].block == "er"
    assert doc["stages"][0]["block"] == "er" and "block" not in doc["stages"][1]  # the default (ir) is left out
    small, big = space.arch(space.extreme(False)).format(), space.arch(space.extreme(True)).format()
    assert small == "conv_s2_c8_hswish er_s2_e1_c8_relu ir_e3_c16_relu conv_k1_c32_hswish gap fc_c32_hswish fc"
    assert big.split()[1] == "er_r2_k5_s2_c16_se0.25_hsgate_hswish"
    assert space.decode(big) == space.extreme(True)
    with pytest.raises(ValueError, match=r"stages\[0\]\.block: 'ghost' is not a block kind a stage can be; valid: ir, er"):
        space_from_dict({**FUSED_SPACE, "stages": [{**FUSED_SPACE["stages"][0], "block": "ghost"}]})


@pytest.mark.parametrize("transform", [False, True])
def test_a_supernet_with_fused_stages_extracts_its_subnets_exactly(transform: bool) -> None:
    import random

    space = space_from_dict(FUSED_SPACE)
    torch.manual_seed(0)
    net = _randomize(Supernet(space, num_classes=10, in_chans=3, kernel_transform=transform))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "matrices" in name:
                p.add_(0.1 * torch.randn(p.shape))
    assert sum(p.numel() for p in net.parameters()) == supernet_params(
        space, num_classes=10, in_chans=3, kernel_transform=transform)  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    rng = random.Random(0)
    genomes = [space.extreme(True), space.extreme(False), *(space.sample_genome(rng) for _ in range(3))]
    with torch.no_grad():
        before = net(x, space.extreme(True))
        net.sort_channels_()  # the largest subnet computes the same function with its channels sorted
        torch.testing.assert_close(net(x, space.extreme(True)), before, rtol=1e-4, atol=1e-5)
        for g in genomes:
            alone = net.extract(g).eval()
            assert alone.arch == space.arch(g).format()
            assert isinstance(alone.blocks[1], FusedMBConv)
            torch.testing.assert_close(alone(x), net(x, g), rtol=0, atol=1e-5)
