"""Transforms keep ``EdgeNet.arch`` true: every transformed zoo model checkpoints and loads back strictly.

A transform returns an EdgeNet whose arch builds exactly its modules, or a
:class:`~edgecnn.build.PlainNet` without an arch; ``checkpoint_of`` refuses an
EdgeNet whose arch does not describe it. Ground truth: PyTorch's strict
``load_state_dict`` and the outputs of the transformed model itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecnn import zoo
from edgecnn.analysis import cost_from_spec
from edgecnn.arch import parse
from edgecnn.build import EdgeNet, PlainNet, build, plain
from edgecnn.checkpoint import checkpoint_of, load_model, save_checkpoint
from edgecnn.compress import (
    fold_bn,
    fold_bn_,
    lowrank,
    plan_fold_bn,
    plan_lowrank,
    plan_prune_inner,
    prune_inner,
    recalibrate_bn,
)
from edgecnn.plan import resolve
from helpers import randomise_bn

pytestmark = pytest.mark.usefixtures("one_thread")


def _half_inner(model: EdgeNet) -> nn.Module:
    """Every prunable block keeps about half its inner channels (never the input width, which drops the expand)."""
    skipped = {pos for pos, _ in plan_prune_inner(model, {}).skipped}
    keep = {}
    for p in resolve(model.arch, num_classes=model.num_classes):
        if p.mid is not None and p.position not in skipped:
            k = max(1, p.mid // 2)
            keep[p.position] = k + 1 if k == p.cin else k
    return prune_inner(model, keep)


def _lowrank_smallest(model: nn.Module) -> nn.Module:
    """Rank 4 for the two smallest plain convs/linears of at least 1024 weights (a fixed rank: the structure does
    not hang on the weights; two small layers keep SVDs of the big zoo nets out of the test time)."""
    sizes = {n: m.weight.numel() for n, m in model.named_modules()
             if type(m) in (nn.Conv2d, nn.Linear) and getattr(m, "groups", 1) == 1 and m.weight.numel() >= 1024}
    return lowrank(model, plan_lowrank(model, rank=4, layers=sorted(sizes, key=sizes.get)[:2]))  # fmt: skip


TRANSFORMS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "fold_bn": fold_bn,
    "lowrank": _lowrank_smallest,
    "prune_inner": _half_inner,  # type: ignore[dict-item]
    "recalibrate_bn": lambda m: recalibrate_bn(m, [torch.randn(4, 3, 32, 32)]),
}


WIDTH = 0.25  # small nets: the test is about structure and keys, not about size


def _size(name: str) -> int:
    return 32 if name.endswith("_cifar") else 64


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("name", zoo.names())
def test_every_transformed_zoo_model_checkpoints_and_loads_strictly(name: str, transform: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.create(name, width=WIDTH)
    randomise_bn(model)
    new = TRANSFORMS[transform](model.eval()).eval()
    x = torch.randn(2, 3, _size(name), _size(name))
    with torch.no_grad():
        want = new(x)
    path = save_checkpoint(checkpoint_of(new), tmp_path / "t.pt")
    if isinstance(new, EdgeNet):  # the arch round trips and rebuilds exactly these weights
        assert parse(new.arch).format() == new.arch
        loaded, ckpt = load_model(path)  # strict load into build(ckpt.arch)
        assert ckpt.arch == new.arch and isinstance(loaded, EdgeNet)
    else:
        assert isinstance(new, PlainNet) and not hasattr(new, "arch") and new.source_arch == model.arch
        torch.manual_seed(1)
        target = TRANSFORMS[transform](zoo.create(name, width=WIDTH).eval())  # the same transform of a fresh model
        loaded, ckpt = load_model(path, model=target)
        assert ckpt.arch is None
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), want, rtol=0, atol=0)
    expected_kind = {"fold_bn": PlainNet, "lowrank": PlainNet, "prune_inner": EdgeNet, "recalibrate_bn": EdgeNet}
    assert type(new) is expected_kind[transform]  # every zoo model has ir/ds/basic/bottleneck BNs


def test_fold_bn_of_a_conv_and_fc_net_is_an_edgenet_of_the_folded_arch() -> None:
    torch.manual_seed(2)
    model = build("conv_k3_s2_c16 conv_r2_c24_hswish conv_c8_pre gap fc_c32_bn_relu fc", num_classes=10)
    randomise_bn(model, seed=2)
    model.eval()
    x = torch.randn(3, 3, 20, 20)
    with torch.no_grad():
        want = model(x)
    folded = fold_bn(model)
    # conv BNs fold into biased convs, the fc BN into a biased linear; the pre-activation BN stays
    assert isinstance(folded, EdgeNet)
    assert folded.arch == "conv_s2_c16_nobn_bias conv_r2_c24_hswish_nobn_bias conv_c8_pre gap fc_c32_relu fc"
    assert [n for n, m in folded.named_modules() if isinstance(m, _BatchNorm)] == ["blocks.3.bn"]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), want, rtol=1e-5, atol=1e-5)
    # by hand: conv 3→16 (432 + 16 bias), 16→24 (3456 + 24), 24→24 (5184 + 24), pre BN + conv 24→8 (48 + 1728),
    # fc 8→32 (256 + 32), classifier 32→10 (320 + 10)
    n = sum(p.numel() for p in folded.parameters())
    assert n == 432 + 16 + 3456 + 24 + 5184 + 24 + 48 + 1728 + 256 + 32 + 320 + 10
    assert n == cost_from_spec(folded.arch, 20, num_classes=10).params
    assert model.arch == "conv_s2_c16 conv_r2_c24_hswish conv_c8_pre gap fc_c32_relu_bn fc"  # the original stays


def test_fold_bn_in_place_keeps_an_edgenet_true_or_refuses(tmp_path: Path) -> None:
    net = build("conv_c8 conv_c8 gap fc", num_classes=3)
    assert fold_bn_(net) is net and net.arch == "conv_c8_nobn_bias conv_c8_nobn_bias gap fc"
    loaded, _ = load_model(save_checkpoint(checkpoint_of(net), tmp_path / "a.pt"))
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), net.eval()(x), rtol=0, atol=0)
    ir = build("conv_c8 ir_m24_c8 gap fc", num_classes=3)
    with pytest.raises(ValueError, match=r"arch string false .*use fold_bn\(model\)"):
        fold_bn_(ir)
    assert len([m for m in ir.modules() if isinstance(m, _BatchNorm)]) == 4  # refused before any change
    inplace = plain(ir, note="BN folded")
    assert fold_bn_(inplace) is inplace and not any(isinstance(m, _BatchNorm) for m in ir.modules())


def test_checkpoint_of_refuses_an_edgenet_whose_arch_is_false() -> None:
    net = build("conv_c8 ir_m24_c8 gap fc", num_classes=3)
    fold_bn_(net.blocks)  # behind the EdgeNet's back: its arch now describes BNs that are gone
    with pytest.raises(ValueError, match=r"model.arch does not describe this model \(the arch has no "
                                         r"'blocks.0.conv.bias' \(and 3 more\)\).*edgecnn.build.plain"):
        checkpoint_of(net)
    ckpt = checkpoint_of(plain(net, note="folded by hand"))
    assert ckpt.arch is None and (ckpt.num_classes, ckpt.in_chans) == (3, 3)


# ---------------------------------------------------------------- timm's BatchNormAct2d


class BatchNormAct2d(nn.BatchNorm2d):
    """A faithful copy of timm's ``timm.layers.norm_act.BatchNormAct2d`` (timm does not load in CI).

    A BatchNorm2d subclass whose forward is a cut & paste of BatchNorm2d's followed by ``self.drop`` and
    ``self.act`` — so fx traces through it into ``F.batch_norm`` unless it is a leaf.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, apply_act: bool = True, act_layer: type[nn.Module] = nn.ReLU,
                 inplace: bool = True, drop_layer: type[nn.Module] | None = None) -> None:  # fmt: skip
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)  # fmt: skip
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act = act_layer(inplace=inplace) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        exponential_average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    exponential_average_factor = 1.0 / float(self.num_batches_tracked)
                else:
                    exponential_average_factor = self.momentum
        if self.training:
            bn_training = True
        else:
            bn_training = (self.running_mean is None) and (self.running_var is None)
        x = F.batch_norm(
            x,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            self.weight,
            self.bias,
            bn_training,
            exponential_average_factor,
            self.eps,
        )
        x = self.drop(x)
        x = self.act(x)
        return x


class _TimmStyle(nn.Module):
    """timm efficientnet_lite-like: conv_stem → bn1 (BatchNormAct2d), a separable block, conv_head → bn2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(16, act_layer=nn.ReLU6)
        self.conv_dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False)
        self.bn_dw = BatchNormAct2d(16, act_layer=nn.SiLU, drop_layer=lambda: nn.Dropout(0.2))
        self.conv_pw = nn.Conv2d(16, 24, 1, bias=False)
        self.bn_pw = BatchNormAct2d(24, apply_act=False)
        self.conv_head = nn.Conv2d(24, 32, 1, bias=False)
        self.bn2 = BatchNormAct2d(32, act_layer=nn.ReLU6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        x = x + self.bn_pw(self.conv_pw(self.bn_dw(self.conv_dw(x))))[:, :16]
        return self.bn2(self.conv_head(torch.cat([x, x[:, :8]], 1)))


def test_fold_bn_folds_timm_batchnormact_keeping_drop_and_act() -> None:
    torch.manual_seed(3)
    model = _TimmStyle()
    randomise_bn(model, seed=3)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
    plan = plan_fold_bn(model)
    assert [(p.layer, p.bn, p.keeps) for p in plan.pairs] == [
        ("conv_stem", "bn1", ("drop", "act")), ("conv_dw", "bn_dw", ("drop", "act")),
        ("conv_pw", "bn_pw", ("drop", "act")), ("conv_head", "bn2", ("drop", "act")),
    ]  # fmt: skip
    assert plan.skipped == ()
    folded = fold_bn(model)
    assert not any(isinstance(m, _BatchNorm) for m in folded.modules())
    assert isinstance(folded.bn_dw.drop, nn.Dropout) and isinstance(folded.bn_dw.act, nn.SiLU)
    assert isinstance(folded.bn1.act, nn.ReLU6) and isinstance(folded.bn_pw.act, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), want, rtol=1e-5, atol=1e-5)
    # −2·C (γ, β) + C (new bias) per BN: 16 + 16 + 24 + 32 channels
    n = sum(p.numel() for p in folded.parameters()) - sum(p.numel() for p in model.parameters())
    assert n == -(16 + 16 + 24 + 32)


class _BNWithExtra(nn.BatchNorm2d):
    """A BN subclass with a forward of its own that folding cannot know."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.scale = nn.Parameter(torch.full((1,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


def test_fold_bn_keeps_an_unknown_bn_subclass() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _BNWithExtra(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    randomise_bn(model, seed=4)
    plan = plan_fold_bn(model)
    assert [(p.layer, p.bn) for p in plan.pairs] == [("2", "3")]
    assert plan.skipped[0].bn == "1" and "BatchNorm subclass" in plan.skipped[0].reason
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(fold_bn(model)(x), model(x), rtol=1e-5, atol=1e-5)
