"""The block-kind registry: one record per kind, read by the planner, the builder, the cost, pruning and latency."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.arch import KINDS, parse
from edgecnn.build import BUILDERS, build
from edgecnn.kinds import BLOCK_KINDS, kind_of
from edgecnn.latency.calibrate import FIXED_KINDS, group_of
from edgecnn.plan import resolve

# one small network per kind; the block under test is the one at EXAMPLES[kind][1]
EXAMPLES: dict[str, tuple[str, int]] = {
    "conv": ("conv_c8 conv_k3_s2_g2_c16_bias gap fc", 1),
    "tconv": ("conv_c8 tconv_k4_s2_c12 gap fc", 1),
    "ds": ("conv_c8 ds_s2_c16_se0.25 gap fc", 1),
    "ir": ("conv_c16 ir_k5_m40_c16_se0.25 gap fc", 1),
    "er": ("conv_c16 er_k5_m40_c16_se0.25 gap fc", 1),
    "ghost": ("conv_c8 ghost_k3_s2_e3_c20 gap fc", 1),
    "basic": ("conv_c16 basic_s2_c32 gap fc", 1),
    "bottleneck": ("conv_c16 bottleneck_c64_pre gap fc", 1),
    "maxpool": ("conv_c8 maxpool gap fc", 1),
    "avgpool": ("conv_c8 avgpool_k3_s2 gap fc", 1),
    "gap": ("conv_c8 gap fc", 1),
    "fc": ("conv_c8 gap fc_c24_bn_relu fc", 2),
    "dropout": ("conv_c8 dropout_p0.1 gap dropout_p0.2 fc", 1),
}


def test_registry_covers_the_grammar_and_the_builder() -> None:
    assert set(BLOCK_KINDS) == set(KINDS) == set(BUILDERS) == set(EXAMPLES)
    assert all(BLOCK_KINDS[name].name == name and BLOCK_KINDS[name].grammar is KINDS[name] for name in KINDS)
    with pytest.raises(ValueError, match="unknown block kind 'sep'; valid: conv"):
        kind_of("sep")


@pytest.mark.parametrize("kind", sorted(BLOCK_KINDS))
def test_every_kind_builds_and_costs_what_pytorch_counts(kind: str) -> None:
    arch, pos = EXAMPLES[kind]
    plans = resolve(arch, num_classes=10, input_size=20)
    p = plans[pos]
    assert p.spec.kind == kind
    block = BLOCK_KINDS[kind].build(p).eval()
    x = torch.randn(2, p.cin, *p.in_size) if p.in_size is not None else torch.randn(2, p.cin)
    with FlopCounterMode(display=False) as counter:
        y = block(x)
    assert y.shape[1] == p.cout
    if p.out_size is not None:
        assert tuple(y.shape[2:]) == p.out_size
    params, macs = BLOCK_KINDS[kind].cost(p)
    assert params == sum(t.numel() for t in block.parameters())
    assert 2 * macs * 2 == counter.get_total_flops()  # batch 2, FLOPs = 2·MACs
    # the residual the plan states is the one the built block adds
    assert p.residual == bool(getattr(block, "use_skip", False))
    # the network built from the arch holds exactly this block
    net = build(arch, num_classes=10)
    assert type(net.blocks[pos]) is type(block)


@pytest.mark.parametrize(
    ("arch", "residual"),
    [
        ("conv_c24 ir_m72_c24", True),  # stride 1, c_in = c_out: identity
        ("conv_c24 ir_m72_c20", False),  # a width change removes an ir block's skip
        ("conv_c24 ir_s2_m72_c24", False),  # so does a stride
        ("conv_c24 ir_m72_c24_noskip", False),
        ("conv_c24 basic_c20", True),  # a ResNet block projects instead
        ("conv_c24 basic_c20_noskip", False),
        ("conv_c24 bottleneck_s2_c48_padskip", True),
    ],
)
def test_layer_plan_states_the_residual(arch: str, residual: bool) -> None:
    plans = resolve(arch)
    assert plans[1].residual is residual
    assert plans[0].residual is False
    assert build(arch).blocks[1].use_skip is residual


def test_repeats_keep_their_skip_after_the_strided_first() -> None:
    plans = resolve("conv_c16 ir_r3_s2_m48_c24 gap fc")
    assert [p.residual for p in plans[1:4]] == [False, True, True]


def test_explicit_identity_skip_round_trips_and_builds_the_same_network() -> None:
    arch = "conv_c24 ir_m72_c24_idskip basic_c24_idskip gap fc"
    assert parse(arch).format() == arch
    plain = build("conv_c24 ir_m72_c24 basic_c24 gap fc", num_classes=5)
    explicit = build(arch, num_classes=5)
    explicit.load_state_dict(plain.state_dict())  # strict: same modules
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(explicit.eval()(x), plain.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("conv_c24 ir_m72_c20_idskip gap fc",
         r"block 1 'ir_m72_c20_idskip': idskip asks for an identity skip, but its input has 24 channels and its "
         r"output 20; set c24 or drop idskip"),
        ("conv_c24 ir_s2_m72_c24_idskip gap fc", r"block 1 'ir_s2_m72_c24_idskip': .* its stride is 2; use s1"),
        ("conv_c16 ir_c16 basic_c32_idskip gap fc", r"block 2 'basic_c32_idskip': .* input has 16 .*; set c16"),
    ],
)  # fmt: skip
def test_a_width_that_breaks_an_explicit_skip_is_an_error(arch: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(arch)
    with pytest.raises(ValueError, match="idskip"):
        build(arch)


def test_idskip_is_refused_where_there_is_no_skip() -> None:
    with pytest.raises(ValueError, match="'ds' takes no flag 'idskip'"):
        parse("conv_c8 ds_c8_idskip")


def test_latency_groups_come_from_the_registry() -> None:
    assert FIXED_KINDS == {"conv", "gap", "fc", "dropout", "overhead"}
    assert group_of("ir|cin40|cout40") == "body" and group_of("fc|cin8") == "fixed"
    assert {k.name for k in BLOCK_KINDS.values() if k.latency_group == "body"} == {
        "tconv", "ds", "ir", "er", "ghost", "basic", "bottleneck", "maxpool", "avgpool"
    }  # fmt: skip


def test_prunable_kinds_are_those_with_inner_channels() -> None:
    assert [name for name, k in BLOCK_KINDS.items() if k.inner] == ["ir", "er", "basic", "bottleneck"]
    net = build("conv_c16 ir_m40_c16 bottleneck_c32_pre basic_m24_c32 bottleneck_c32 basic_c32_pre er_m24_c32 gap fc")
    for pos in (1, 2, 3, 4, 5, 6):
        p = resolve(net.arch)[pos]
        inner = BLOCK_KINDS[p.spec.kind].inner[bool(p.spec.pre)]
        conv, bn = (net.blocks[pos].get_submodule(n) for n in inner.producer)
        assert conv.out_channels == bn.num_features == p.mid


def test_one_file_per_kind_and_the_grammar_is_the_records() -> None:
    import pkgutil

    import edgecnn.kinds as package

    files = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")} - {"base"}
    assert files == set(BLOCK_KINDS)  # adding a kind is adding one file
    assert [k.rank for k in BLOCK_KINDS.values()] == sorted(k.rank for k in BLOCK_KINDS.values())
    assert KINDS["ir"].skips == ("auto", "none", "id") and KINDS["conv"].skips == ()
    assert {n for n, k in BLOCK_KINDS.items() if k.keeps_width} == {"maxpool", "avgpool", "gap", "dropout"}
    assert {n for n, k in BLOCK_KINDS.items() if not k.spatial} == {"gap", "fc", "dropout"}
    assert [n for n, k in BLOCK_KINDS.items() if k.upsamples] == ["tconv"]
