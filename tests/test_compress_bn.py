"""BN folding, BN recalibration and the BN scale-invariance check (docs/design.md §5).

Ground truth: the unfolded model's own eval-mode outputs (PyTorch), batch
statistics computed by hand with tensor reductions, PyTorch's ``momentum=None``
cumulative average, and autograd.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecnn import zoo
from edgecnn.build import build
from edgecnn.compress import fold_bn, fold_bn_, plan_fold_bn, recalibrate_bn, recalibrate_bn_
from edgecnn.data import BatchLoader, ImageSplit
from helpers import randomise_bn as _randomise_bn

pytestmark = pytest.mark.usefixtures("one_thread")


def _bns(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_param_change(model: nn.Module, folded: dict[str, str]) -> int:
    """−2·C per folded affine BN (γ, β), +C where the layer before it had no bias. ``folded``: bn → layer."""
    change = 0
    for bn_name, layer_name in folded.items():
        bn, layer = model.get_submodule(bn_name), model.get_submodule(layer_name)
        change -= 2 * bn.num_features if bn.affine else 0
        change += bn.num_features if layer.bias is None else 0
    return change


def _assert_close_to_scale(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> None:
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert scale > 0 and err <= rel * scale, f"max error {err:.3g} at output scale {scale:.3g}"


# ---------------------------------------------------------------- folding


@pytest.mark.parametrize("name", zoo.names())
def test_fold_zoo_matches_eval_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create(name, width=0.5)
    _randomise_bn(model)
    model.eval()
    size = 32 if name.endswith("_cifar") else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = model(x)
    n_bn = len(_bns(model))
    # every zoo network is post-activation: each BN follows a conv or linear layer whose only user it is
    folded = fold_bn(model)
    assert folded is not model and len(_bns(model)) == n_bn  # the original is untouched
    assert _bns(folded) == []
    with torch.no_grad():
        _assert_close_to_scale(folded(x), want)
        _assert_close_to_scale(model(x), want, rel=0.0)
    pairs = {p.bn: p.layer for p in plan_fold_bn(model).pairs}
    assert len(pairs) == n_bn
    assert _params(folded) - _params(model) == _expected_param_change(model, pairs)


def test_fold_sequential_grouped_depthwise_transposed_linear() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, bias=True),  # a conv with a bias: b' = (b − μ)s + β
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 12, 1, groups=4, bias=False),  # grouped
        nn.BatchNorm2d(12, affine=False),  # γ = 1, β = 0: no parameters to drop
        nn.Hardswish(),
        nn.ConvTranspose2d(12, 6, 4, stride=2, padding=1, groups=3, bias=False),  # weight is (C_in, C_out/g, k, k)
        nn.BatchNorm2d(6),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 10, bias=False),
        nn.BatchNorm1d(10),
    )
    _randomise_bn(model, seed=1)
    with torch.no_grad():  # variances near ε: a fold that drops ε is off by up to √2 here
        model[4].running_var[:4] = torch.tensor([1e-5, 3e-5, 1e-4, 1e-6])
    model.eval()
    x = torch.randn(3, 4, 4, 4)
    with torch.no_grad():
        want = model(x)
    plan = plan_fold_bn(model)
    assert [(p.layer, p.bn) for p in plan.pairs] == [("0", "1"), ("3", "4"), ("5", "6"), ("8", "9"), ("11", "12")]
    assert [p.adds_bias for p in plan.pairs] == [False, True, True, True, True]
    assert plan.skipped == ()
    folded = fold_bn(model)
    with torch.no_grad():
        _assert_close_to_scale(folded(x), want)
    # by hand: γ,β of 8+8+6+10 channels go (BN 6 has none); biases of 8+12+6+10 channels come (conv 0 had one)
    assert _params(folded) - _params(model) == -2 * (8 + 8 + 6 + 10) + (8 + 12 + 6 + 10)
    assert all(isinstance(folded[i], nn.Identity) for i in (1, 4, 6, 9, 12))


def test_fold_conv1d() -> None:
    model = nn.Sequential(nn.Conv1d(3, 5, 3, padding=1, bias=False), nn.BatchNorm1d(5), nn.ReLU())
    _randomise_bn(model, seed=2)
    model.eval()
    x = torch.randn(4, 3, 11)
    with torch.no_grad():
        _assert_close_to_scale(fold_bn(model)(x), model(x))


class _TwoUsers(nn.Module):
    """A conv whose raw output also feeds a skip: folding the BN would change the skip's value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn2(self.conv2(self.bn(y) + y))


def test_fold_skips_conv_with_two_users() -> None:
    model = _TwoUsers()
    _randomise_bn(model, seed=3)
    model.eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        want = model(x)
    plan = plan_fold_bn(model)
    assert [(p.layer, p.bn) for p in plan.pairs] == [("conv2", "bn2")]
    assert [s.bn for s in plan.skipped] == ["bn"] and "2 users" in plan.skipped[0].reason
    folded = fold_bn(model)
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.bn2, nn.Identity)
    with torch.no_grad():
        _assert_close_to_scale(folded(x), want)


@pytest.mark.parametrize(
    ("arch", "kept"),
    [
        # stem conv→BN folds; in each pre-activation block the BN on the block input (a sum) stays,
        # the BN inside the body (plain conv → BN → act → conv) folds
        ("conv_k3_c16 basic_r2_c16_pre gap fc", ["blocks.1.pre.bn", "blocks.2.pre.bn"]),
        # a pre BN right after an activation-free conv folds into it; one after a ReLU stays
        ("conv_c8_nobn_linear conv_c8_pre conv_c8 conv_c8_pre gap fc", ["blocks.3.bn"]),
        ("conv_c16 bottleneck_c32_pre gap fc_c16_bn fc", ["blocks.1.pre.bn"]),
    ],
)
def test_fold_keeps_pre_activation_bn(arch: str, kept: list[str]) -> None:
    torch.manual_seed(4)
    model = build(arch, num_classes=10)
    _randomise_bn(model, seed=4)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
    plan = plan_fold_bn(model)
    assert [s.bn for s in plan.skipped] == kept
    assert all("pre-activation" in s.reason for s in plan.skipped)
    folded = fold_bn(model)
    assert [n for n, m in folded.named_modules() if isinstance(m, _BatchNorm)] == kept
    with torch.no_grad():
        _assert_close_to_scale(folded(x), want)
    pairs = {p.bn: p.layer for p in plan.pairs}
    assert _params(folded) - _params(model) == _expected_param_change(model, pairs)


def test_fold_uses_running_stats_in_train_mode_and_keeps_modes() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Dropout(0.5))
    _randomise_bn(model, seed=5)
    model.train()
    folded = fold_bn(model)
    assert folded.training and folded[2].training  # modes are not touched
    model.eval(), folded.eval()
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        _assert_close_to_scale(folded(x), model(x))


def test_fold_in_place_returns_same_model() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert fold_bn_(model) is model and isinstance(model[1], nn.Identity)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a tensor value: fx cannot trace it
            return self.bn(self.conv(x))
        return x


def test_fold_untraceable_model_is_a_value_error_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="fold its traceable submodules"):
        fold_bn(_Untraceable())


# ---------------------------------------------------------------- scale invariance (a check, not a feature)


@pytest.mark.parametrize("alpha", [2.5, -0.7])
def test_bn_after_conv_is_invariant_to_weight_scale(alpha: float) -> None:
    """BN(α·W∗x) = sign(α)·(BN(W∗x) − β) + β, exactly when ε is scaled with the weights.

    With batch mean μ and biased variance σ² of ``y = W∗x``, the BN of ``α·y`` is
    ``γ·(αy − αμ)/√(α²σ² + ε) + β = sign(α)·γ·(y − μ)/√(σ² + ε/α²) + β``.
    """
    torch.manual_seed(6)
    x = torch.randn(8, 3, 7, 7, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    gamma, beta = torch.rand(5, dtype=torch.float64) + 0.5, torch.randn(5, dtype=torch.float64)
    eps = 1e-5

    def bn(w_: torch.Tensor, eps_: float) -> torch.Tensor:
        y = F.conv2d(x, w_)
        return F.batch_norm(y, None, None, gamma, beta, training=True, eps=eps_)

    sign = 1.0 if alpha > 0 else -1.0
    want = sign * (bn(w, eps / alpha**2) - beta.view(1, -1, 1, 1)) + beta.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(alpha * w, eps), want, rtol=1e-12, atol=1e-12)
    # with the usual ε the identity holds to within ε/σ² (here σ² ≈ 27, so well under 1e-5)
    approx = sign * (bn(w, eps) - beta.view(1, -1, 1, 1)) + beta.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(alpha * w, eps), approx, rtol=0, atol=1e-5)
    if alpha < 0:  # a negative scale flips the normalised output: not invariant
        assert not torch.allclose(bn(alpha * w, eps), bn(w, eps), atol=1e-3)


def test_bn_scale_invariance_makes_gradient_scale_as_one_over_alpha() -> None:
    """L(αW) = L(W) for α > 0 ⇒ ∇L(αW) = ∇L(W)/α: weight decay that shrinks W raises the effective step."""
    torch.manual_seed(7)
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    w0 = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    target = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    alpha = 2.5

    def grad(scale: float) -> torch.Tensor:
        w = (scale * w0).requires_grad_()
        y = F.batch_norm(F.conv2d(x, w), None, None, training=True, eps=1e-5 * scale**2)
        ((y - target) ** 2).sum().backward()
        return w.grad  # type: ignore[return-value]

    torch.testing.assert_close(grad(alpha), grad(1.0) / alpha, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- recalibration


def _recal_net() -> nn.Sequential:
    torch.manual_seed(8)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),  # must be off during recalibration, or the second BN sees dropped inputs
        nn.Conv2d(4, 6, 3, stride=2, bias=True),
        nn.BatchNorm2d(6),
    )
    _randomise_bn(net, seed=8)
    with torch.no_grad():  # corrupt the statistics: recalibration must not depend on them
        net[1].running_mean.fill_(100.0)
        net[5].running_var.fill_(1e-3)
    return net


def _by_hand(net: nn.Sequential, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BN: size-weighted mean of the per-batch means and of the unbiased per-batch variances.

    The forward normalises with each batch's own mean and biased variance (BN in train mode), dropout off.
    """
    conv1, bn1, conv2 = net[0], net[1], net[4]
    sums = [[torch.zeros(4), torch.zeros(4)], [torch.zeros(6), torch.zeros(6)]]
    total = 0
    with torch.no_grad():
        for x in batches:
            n = x.shape[0]
            total += n
            y1 = conv1(x)
            m1, v1 = y1.mean((0, 2, 3)), y1.var((0, 2, 3), unbiased=True)
            z = (y1 - m1.view(1, -1, 1, 1)) / torch.sqrt(y1.var((0, 2, 3), unbiased=False) + bn1.eps).view(1, -1, 1, 1)
            z = torch.relu(z * bn1.weight.view(1, -1, 1, 1) + bn1.bias.view(1, -1, 1, 1))
            y2 = conv2(z)
            m2, v2 = y2.mean((0, 2, 3)), y2.var((0, 2, 3), unbiased=True)
            for acc, (m, v) in zip(sums, [(m1, v1), (m2, v2)]):
                acc[0] += n * m
                acc[1] += n * v
    return [(s[0] / total, s[1] / total) for s in sums]


def test_recalibrate_matches_hand_statistics_with_unequal_batches() -> None:
    net = _recal_net()
    g = torch.Generator().manual_seed(9)
    batches = [2.0 + 3.0 * torch.randn(n, 3, 8, 8, generator=g) for n in (5, 5, 3)]
    want = _by_hand(net, batches)
    out = recalibrate_bn(net, [(x, torch.zeros(len(x))) for x in batches])  # (x, y) pairs
    for bn, (mean, var) in zip((out[1], out[5]), want):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
        assert int(bn.num_batches_tracked) == 3
    assert net[1].running_mean[0].item() == 100.0  # recalibrate_bn works on a copy


def test_recalibrate_equals_pytorch_cumulative_average_for_equal_batches() -> None:
    net = _recal_net()
    g = torch.Generator().manual_seed(10)
    batches = [torch.randn(4, 3, 8, 8, generator=g) for _ in range(5)]
    ref = copy.deepcopy(net).eval()
    for bn in _bns(ref):
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        for x in batches:
            ref(x)
    out = recalibrate_bn(net, iter(batches), num_batches=5)  # a plain iterator of tensors
    for got, bn_ref in zip(_bns(out), _bns(ref)):
        torch.testing.assert_close(got.running_mean, bn_ref.running_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got.running_var, bn_ref.running_var, rtol=1e-6, atol=1e-6)


def test_recalibrate_restores_modes_and_momenta() -> None:
    net = _recal_net()
    net.train()
    net[3].eval()  # a mixed state must come back as it was
    net[1].momentum, net[5].momentum = 0.3, None
    before = [m.training for m in net.modules()]
    assert recalibrate_bn_(net, [torch.randn(4, 3, 8, 8)]) is net
    assert [m.training for m in net.modules()] == before
    assert (net[1].momentum, net[5].momentum) == (0.3, None)
    assert all(p.grad is None for p in net.parameters())


def test_recalibrate_accepts_batch_loader_and_draws_num_batches() -> None:
    net = _recal_net()
    g = torch.Generator().manual_seed(11)
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=g)
    split = ImageSplit(images, torch.zeros(12, dtype=torch.long))
    loader = BatchLoader(split, batch_size=5, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    first_two = [x for x, _ in loader][:2]
    want = _by_hand(net, first_two)
    out = recalibrate_bn(net, loader, num_batches=2)
    for bn, (mean, var) in zip((out[1], out[5]), want):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
        assert int(bn.num_batches_tracked) == 2


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.unused = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_recalibrate_leaves_unreached_bn_and_rejects_bad_input() -> None:
    net = _Branchy()
    _randomise_bn(net, seed=12)
    old = net.unused.running_mean.clone()
    recalibrate_bn_(net, [torch.randn(4, 3, 5, 5)])
    torch.testing.assert_close(net.unused.running_mean, old, rtol=0, atol=0)
    kept = net.used[1].running_mean.clone()
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_bn_(net, [])
    torch.testing.assert_close(net.used[1].running_mean, kept, rtol=0, atol=0)  # a failed run changes nothing
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_bn(net, [torch.randn(4, 3, 5, 5)], num_batches=0)
    with pytest.raises(ValueError, match=r"\(x, y\) pairs"):
        recalibrate_bn(net, [{"x": torch.randn(4, 3, 5, 5)}])
    with pytest.raises(ValueError, match="nothing to recalibrate"):
        recalibrate_bn(nn.Conv2d(3, 3, 1), [torch.randn(1, 3, 2, 2)])
