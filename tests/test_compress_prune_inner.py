"""Inner-width pruning: exact weight transfer, arch rewriting, importance, errors, zoo models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecnn import zoo
from edgecnn.analysis import cost_from_spec
from edgecnn.blocks import make_divisible
from edgecnn.build import build, count_params
from edgecnn.compress import inner_importance, plan_prune_inner, prune_inner


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine and running statistics, so that BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.randn(n, generator=g)
            m.bias.data = torch.randn(n, generator=g)
            m.running_mean = torch.randn(n, generator=g)
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model.eval()


def _silence(conv: nn.Conv2d, bns: list[nn.BatchNorm2d], channels: list[int]) -> None:
    """Make inner channels carry exactly 0: zero filters and BN γ, β (act(0) = 0 for relu/relu6/hswish)."""
    conv.weight.data[channels] = 0
    for bn in bns:
        bn.weight.data[channels] = 0
        bn.bias.data[channels] = 0


CASES = {
    # arch, block position, keep count; (inner BNs to silence are looked up by kind below)
    "ir": ("conv_c8 ir_m32_c8_hswish gap fc", 1),
    "ir_se": ("conv_c16 ir_m64_c16_se0.25_hsgate_hswish gap fc", 1),
    "basic": ("conv_c8 basic_m16_c8 gap fc", 1),
    "basic_pre": ("conv_c8 basic_s2_m16_c12_pre gap fc", 1),
    "bottleneck": ("conv_c8 bottleneck_m12_c16 gap fc", 1),
    "bottleneck_pre": ("conv_c8 bottleneck_m12_c16_pre gap fc", 1),
}


def _inner_modules(block: nn.Module, kind: str, pre: bool) -> tuple[nn.Conv2d, list[nn.BatchNorm2d]]:
    if kind.startswith("ir"):
        return block.expand.conv, [block.expand.bn, block.dw.bn]
    if pre:
        bns = [block.body[1].bn] + ([block.body[2].bn] if kind.startswith("bottleneck") else [])
        return block.body[0], bns
    bns = [block.body[0].bn] + ([block.body[1].bn] if kind.startswith("bottleneck") else [])
    return block.body[0].conv, bns


@pytest.mark.parametrize("case", list(CASES))
def test_keep_all_permuted_is_exact(case: str) -> None:
    arch, pos = CASES[case]
    model = _randomize(build(arch, num_classes=5))
    width = model.spec.expand().blocks[pos].m
    perm = torch.randperm(width, generator=torch.Generator().manual_seed(1)).tolist()
    new = prune_inner(model, {pos: perm})
    assert new.arch == model.arch
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(new(x), model(x), rtol=1e-5, atol=1e-5)
    # the weights really were permuted, not just copied
    conv, _ = _inner_modules(new.blocks[pos], case, "pre" in case)
    conv0, _ = _inner_modules(model.blocks[pos], case, "pre" in case)
    torch.testing.assert_close(conv.weight, conv0.weight[perm])


@pytest.mark.parametrize("case", list(CASES))
def test_pruning_silent_channels_is_exact(case: str) -> None:
    arch, pos = CASES[case]
    model = _randomize(build(arch, num_classes=5))
    width = model.spec.expand().blocks[pos].m
    drop = list(range(1, width, 4))  # a quarter of the channels, spread out
    conv, bns = _inner_modules(model.blocks[pos], case, "pre" in case)
    _silence(conv, bns, drop)
    keep = [j for j in range(width) if j not in drop]
    by_count = prune_inner(model, {pos: len(keep)})  # zero filters have the lowest importance
    by_index = prune_inner(model, {pos: keep})
    x = torch.randn(2, 3, 16, 16)
    for new in (by_count, by_index):
        assert new.spec.expand().blocks[pos].m == len(keep)
        torch.testing.assert_close(new(x), model(x), rtol=1e-5, atol=1e-5)
    if case == "ir_se":  # 64 -> 48 channels: squeeze make_divisible(16) = make_divisible(12) = 16, SE kept whole
        assert new.blocks[pos].se.fc1.out_channels == 16 == make_divisible(12)


def test_se_squeeze_shrinks_keeps_largest_hidden_units() -> None:
    model = _randomize(build("conv_c16 ir_m64_c16_se0.25_hsgate_hswish gap fc", num_classes=5))
    block = model.blocks[1]
    drop = list(range(24, 64))  # keep 24 channels: squeeze make_divisible(6) = 8 of 16
    _silence(block.expand.conv, [block.expand.bn, block.dw.bn], drop)
    dead = [0, 2, 3, 5, 8, 9, 12, 15]  # hidden units that output relu(0) = 0
    block.se.fc1.weight.data[dead] = 0
    block.se.fc1.bias.data[dead] = 0
    plan = plan_prune_inner(model, {1: 24})
    assert plan.blocks[0].squeeze_kept == (1, 4, 6, 7, 10, 11, 13, 14)
    new = prune_inner(model, plan)
    assert new.blocks[1].se.fc1.out_channels == 8
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(new(x), model(x), rtol=1e-5, atol=1e-5)


def test_arch_string_and_params() -> None:
    model = build("conv_c8 ir_m32_c8_se0.25 gap fc", num_classes=10)
    new = prune_inner(model, {1: 24})
    assert new.arch == "conv_c8 ir_m24_c8_se0.25 gap fc"
    # hand count: conv 3·8·9 + BN 2·8; ir (cin 8, m 24, squeeze make_divisible(6) = 8):
    # expand 8·24 + 2·24, dw 24·9 + 2·24, SE (24·8 + 8) + (8·24 + 24), project 24·8 + 2·8; fc 8·10 + 10
    conv = 3 * 8 * 9 + 2 * 8
    ir = (8 * 24 + 48) + (24 * 9 + 48) + (24 * 8 + 8 + 8 * 24 + 24) + (24 * 8 + 16)
    assert count_params(new) == conv + ir + 8 * 10 + 10 == 1450
    assert count_params(new) == count_params(build(new.arch, num_classes=10))

    # one repeat changes: that block's repeats are written out, the others keep their strings
    model = build("conv_c8 ir_r3_m16_c8 ir_r2_s2_c16 gap fc", num_classes=10)
    new = prune_inner(model, {2: 12, 5: 60})  # 2nd repeat of the first ir; 2nd repeat of the e6 block (96 wide)
    assert new.arch == "conv_c8 ir_m16_c8 ir_m12_c8 ir_m16_c8 ir_s2_c16 ir_m60_c16 gap fc"
    assert count_params(new) == count_params(build(new.arch, num_classes=10))
    new(torch.randn(1, 3, 8, 8))


def test_importance_is_folded_filter_l1() -> None:
    model = build("conv_c4 ir_m6_c4 gap fc", num_classes=3).eval()
    conv, bn = model.blocks[1].expand.conv, model.blocks[1].expand.bn
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1, 1)
    conv.weight.data = torch.arange(1.0, 7.0).view(6, 1, 1, 1) * signs  # filter j: L1 = 4(j+1)
    raw = inner_importance(model, bn_scale=False)
    assert list(raw) == [1]
    torch.testing.assert_close(raw[1], torch.tensor([4.0, 8, 12, 16, 20, 24]))
    bn.weight.data = torch.tensor([1.0, -1, 2, 1, 0.5, 1])
    bn.running_var = torch.tensor([1.0, 1, 1, 16, 1, 16])
    # ‖W_j‖₁·|γ_j|/√(σ²_j + ε) ≈ 4, 8, 24, 4, 10, 6
    l1, gamma = torch.tensor([4.0, 8, 12, 16, 20, 24]), torch.tensor([1.0, 1, 2, 1, 0.5, 1])
    want = l1 * gamma / (bn.running_var + bn.eps).sqrt()
    torch.testing.assert_close(inner_importance(model)[1], want)
    assert plan_prune_inner(model, {1: 3}).blocks[0].kept == (1, 2, 4)  # scores ≈ 8, 24, 10 are the top 3
    assert plan_prune_inner(model, {1: 3}, bn_scale=False).blocks[0].kept == (3, 4, 5)


def test_bad_input() -> None:
    model = build("conv_c8 ir_e1_c8 ir_m32_c16 gap fc", num_classes=5)
    with pytest.raises(ValueError, match="EdgeNet"):
        prune_inner(nn.Sequential(nn.Conv2d(3, 8, 1)), {0: 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without expansion"):
        prune_inner(model, {1: 4})
    with pytest.raises(ValueError, match="no inner width"):
        prune_inner(model, {0: 4})
    with pytest.raises(ValueError, match="not a block position"):
        prune_inner(model, {9: 4})
    for bad in (0, -1, 33):
        with pytest.raises(ValueError, match="count from 1 to"):
            prune_inner(model, {2: bad})
    with pytest.raises(ValueError, match="duplicate"):
        prune_inner(model, {2: [0, 1, 1]})
    with pytest.raises(ValueError, match="out of range"):
        prune_inner(model, {2: [0, 32]})
    with pytest.raises(ValueError, match="at least one"):
        prune_inner(model, {2: []})
    with pytest.raises(ValueError, match="drops the expand conv"):
        prune_inner(model, {2: 8})
    assert plan_prune_inner(model, {}).skipped[0][0] == 1
    other = build("conv_c8 ir_m24_c16 gap fc", num_classes=5)
    with pytest.raises(ValueError, match="plan was made for"):
        prune_inner(other, plan_prune_inner(model, {2: 16}))


@pytest.mark.parametrize("name,width", [("mobilenet_v2_cifar", 0.5), ("mobilenet_v3_small_cifar", 1.0)])
def test_zoo_prune_quarter(name: str, width: float) -> None:
    model = _randomize(zoo.create(name, width=width))
    scores = inner_importance(model)
    new = prune_inner(model, {pos: len(s) - len(s) // 4 for pos, s in scores.items()})
    assert new.arch != model.arch
    assert count_params(new) == count_params(build(new.arch, num_classes=model.num_classes))
    assert new(torch.randn(2, 3, 32, 32)).shape == (2, model.num_classes)
    before, after = cost_from_spec(model.arch, 32, num_classes=10), cost_from_spec(new.arch, 32, num_classes=10)
    assert after.macs < before.macs and after.params < before.params
    assert not new.training
