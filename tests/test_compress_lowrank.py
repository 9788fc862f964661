"""Low-rank factorisation (docs/design.md §5): exactness at full rank, Eckart–Young errors, rank rules, costs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgecnn import zoo
from edgecnn.analysis import analyze
from edgecnn.build import plain
from edgecnn.compress import (
    LowRankPlan,
    energy_rank,
    factorize_conv,
    factorize_linear,
    lowrank,
    lowrank_,
    plan_lowrank,
    recalibrate_bn_,
    svd_rank,
)

CONV_CASES = [  # (conv kwargs, input H, W): stride 2, padding, dilation 2, asymmetric kernels, padding modes
    (dict(in_channels=5, out_channels=7, kernel_size=3, stride=2, padding=1), 11, 12),
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding=2, dilation=2), 10, 9),
    (dict(in_channels=3, out_channels=8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 3), dilation=(2, 1)), 13, 11),
    (dict(in_channels=6, out_channels=5, kernel_size=(5, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 2)), 12, 14),
    (dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", dilation=2), 9, 10),
    (dict(in_channels=3, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect"), 8, 9),
    (dict(in_channels=3, out_channels=6, kernel_size=3, stride=2, padding=(2, 1), padding_mode="circular"), 8, 9),
    (dict(in_channels=5, out_channels=4, kernel_size=3, bias=False), 7, 7),
]

pytestmark = pytest.mark.usefixtures("one_thread")  # SVDs of small matrices: threads only contend


def _conv(kwargs: dict, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(**kwargs).double()


def _full_rank(layer: nn.Conv2d, form: str) -> int:
    n, c, kh, kw = layer.weight.shape
    return min(n, c * kh * kw) if form == "channel" else min(c * kh, n * kw)


def _effective_weight(seq: nn.Sequential, form: str) -> torch.Tensor:
    """The single weight the two factors compose to, from their weights alone."""
    a, b = seq[0].weight.detach(), seq[1].weight.detach()
    if form == "linear":
        return b @ a
    if form == "channel":
        return torch.einsum("nr,rcij->ncij", b[:, :, 0, 0], a)
    return torch.einsum("nrj,rci->ncij", b[:, :, 0, :], a[:, :, :, 0])


def _matrix(w: torch.Tensor, form: str) -> torch.Tensor:
    if form == "linear":
        return w
    if form == "channel":
        return w.reshape(w.shape[0], -1)
    return torch.stack([w[:, c, i, :].reshape(-1) for c in range(w.shape[1]) for i in range(w.shape[2])])


# ---------------------------------------------------------------- exactness


def test_linear_full_rank_equals_original() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(9, 6).double()
    x = torch.randn(4, 3, 9, dtype=torch.double)
    seq = factorize_linear(layer, 6)
    assert [type(m) for m in seq] == [nn.Linear, nn.Linear]
    assert seq[0].bias is None and torch.equal(seq[1].bias, layer.bias)
    torch.testing.assert_close(seq(x), layer(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", ["channel", "spatial"])
@pytest.mark.parametrize("kwargs,h,w", CONV_CASES)
def test_conv_full_rank_equals_original(kwargs: dict, h: int, w: int, form: str) -> None:
    layer = _conv(kwargs)
    x = torch.randn(2, layer.in_channels, h, w, dtype=torch.double)
    seq = factorize_conv(layer, _full_rank(layer, form), form=form)
    torch.testing.assert_close(seq(x), layer(x), rtol=0, atol=1e-11)


@pytest.mark.parametrize("form", ["channel", "spatial"])
@pytest.mark.parametrize("kwargs,h,w", CONV_CASES[:4])
def test_conv_at_low_rank_is_the_conv_of_the_composed_weight(kwargs: dict, h: int, w: int, form: str) -> None:
    # stride/padding/dilation placement is exact at every rank, not only where the factorisation is
    layer = _conv(kwargs)
    x = torch.randn(2, layer.in_channels, h, w, dtype=torch.double)
    seq = factorize_conv(layer, 2, form=form)
    ref = F.conv2d(x, _effective_weight(seq, form), layer.bias, layer.stride, layer.padding, layer.dilation)
    torch.testing.assert_close(seq(x), ref, rtol=0, atol=1e-12)


def test_result_keeps_dtype_mode_and_grad_flag() -> None:
    layer = nn.Conv2d(8, 8, 3).eval()
    layer.weight.requires_grad_(False)
    seq = factorize_conv(layer, 3)
    assert not seq.training and not seq[1].training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in seq.parameters())


# ---------------------------------------------------------------- Eckart–Young


@pytest.mark.parametrize("form", ["linear", "channel", "spatial"])
def test_error_is_the_discarded_singular_values_and_beats_random_rank_k(form: str) -> None:
    torch.manual_seed(1)
    layer = nn.Linear(20, 12).double() if form == "linear" else nn.Conv2d(6, 8, 3).double()
    w = layer.weight.detach()
    m = _matrix(w, form)
    s = torch.linalg.svdvals(m)
    for k in (1, 3, 5):
        seq = factorize_linear(layer, k) if form == "linear" else factorize_conv(layer, k, form=form)
        rel = torch.linalg.norm(w - _effective_weight(seq, form)) / torch.linalg.norm(w)
        expected = torch.sqrt((s[k:] ** 2).sum()) / torch.linalg.norm(m)
        assert rel.item() == pytest.approx(expected.item(), rel=1e-10)
        # the best rank-k matrix within a random k-dim row space (W projected on it) is never better
        for _ in range(20):
            q, _ = torch.linalg.qr(torch.randn(m.shape[1], k, dtype=torch.double))
            assert torch.linalg.norm(m - m @ q @ q.T) / torch.linalg.norm(m) > rel


def _known_spectrum(sigma: list[float], out: int, inp: int) -> nn.Linear:
    torch.manual_seed(2)
    u, _ = torch.linalg.qr(torch.randn(out, len(sigma), dtype=torch.double))
    v, _ = torch.linalg.qr(torch.randn(inp, len(sigma), dtype=torch.double))
    layer = nn.Linear(inp, out).double()
    with torch.no_grad():
        layer.weight.copy_(u @ torch.diag(torch.tensor(sigma, dtype=torch.double)) @ v.T)
    return layer


@pytest.mark.parametrize("energy,k", [(0.5, 1), (0.8, 2), (25 / 30, 2), (0.9, 3), (0.95, 3), (29 / 30, 3)])
def test_energy_rule_picks_the_hand_computed_rank(energy: float, k: int) -> None:
    # σ = 4, 3, 2, 1: σ² = 16, 9, 4, 1, kept energy 16/30, 25/30, 29/30, 1
    layer = _known_spectrum([4.0, 3.0, 2.0, 1.0], 4, 40)
    plan = plan_lowrank(nn.Sequential(layer), energy=energy, min_size=0)
    (e,) = plan.layers
    tail = [16, 9, 4, 1][k:]
    assert (e.rank, e.full_rank) == (k, 4)
    assert e.energy == pytest.approx(1 - sum(tail) / 30, abs=1e-12)
    assert e.frobenius_error == pytest.approx(math.sqrt(sum(tail)), abs=1e-12)
    assert e.relative_error == pytest.approx(math.sqrt(sum(tail) / 30), abs=1e-12)
    assert e.spectral_error == pytest.approx([3.0, 2.0, 1.0][k - 1], abs=1e-12)
    assert energy_rank(torch.tensor([4.0, 3.0, 2.0, 1.0]), energy) == k


def test_full_energy_is_skipped_when_it_saves_nothing() -> None:
    layer = _known_spectrum([4.0, 3.0, 2.0, 1.0], 4, 40)
    plan = plan_lowrank(nn.Sequential(layer), energy=0.97, min_size=0)  # k = 4 costs 4·44 = 176 ≥ 160 weights
    assert plan.layers == () and "saves nothing" in plan.skipped[0].reason


# ---------------------------------------------------------------- costs


def test_params_after_hand_counts() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(100, 50)
    assert sum(p.numel() for p in factorize_linear(lin, 16).parameters()) == 16 * (100 + 50) + 50
    conv = nn.Conv2d(8, 16, 3)
    assert sum(p.numel() for p in factorize_conv(conv, 5).parameters()) == 5 * 8 * 9 + 5 * 16 + 16  # 456
    assert sum(p.numel() for p in factorize_conv(conv, 5, form="spatial").parameters()) == 5 * 8 * 3 + 5 * 16 * 3 + 16
    plan = plan_lowrank(nn.Sequential(lin), params_fraction=0.5, min_size=0)  # 150·k ≤ 2500 → k = 16
    assert (plan.layers[0].rank, plan.layers[0].params_after, plan.layers[0].params_before) == (16, 2450, 5050)


@pytest.mark.parametrize("form,k", [("channel", 6), ("spatial", 8)])
def test_macs_budget_rank(form: str, k: int) -> None:
    # Conv2d(16, 32, 3, padding=1) on 16×8×8: 64·4608 = 294912 MACs; a quarter is 73728.
    # channel: 64·(144 + 32) = 11264 per rank → k = 6;
    # spatial: 8·(16·3·8) + 64·32·3 = 9216 per rank → k = 8 exactly (the boundary)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1))
    plan = plan_lowrank(model, macs_fraction=0.25, form=form, input_size=(16, 8, 8))
    assert plan.layers[0].rank == k and plan.layers[0].macs_before == 294912


def _small_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 64),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("form", ["channel", "spatial"])
def test_macs_match_analyze_before_and_after(form: str) -> None:
    model, size = _small_net(), (8, 15, 17)
    plan = plan_lowrank(model, rank=3, form=form, input_size=size, min_size=0)
    assert [e.name for e in plan.layers] == ["0", "2", "6"]
    new = lowrank(model, plan)
    before, after = analyze(model, size).by_layer(), analyze(new, size)
    for e in plan.layers:
        assert e.macs_before == before[e.name].macs
        assert e.macs_after == sum(r.macs for r in after if r.module.startswith(e.name + "."))
        assert e.params_after == sum(p.numel() for p in new.get_submodule(e.name).parameters())
    assert after.macs == analyze(model, size).macs - plan.macs_saved
    assert plan.macs_saved > 0 and after.params == analyze(model, size).params - plan.params_saved


# ---------------------------------------------------------------- whole models


def _decay_spectra_(model: nn.Module, q: float = 0.6) -> None:
    """Give every groups-1 conv/linear a geometric spectrum σ_i = σ_0·qⁱ, as trained layers roughly have."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(m, "groups", 1) == 1:
                w = m.weight.reshape(m.weight.shape[0], -1)
                u, s, vh = torch.linalg.svd(w, full_matrices=False)
                s = s[0] * q ** torch.arange(len(s), dtype=s.dtype)
                m.weight.copy_((u * s @ vh).reshape(m.weight.shape))


def test_resnet20_factorised_runs_and_stays_close_at_high_energy() -> None:
    torch.manual_seed(0)
    model = zoo.create("resnet20_cifar").eval()
    _decay_spectra_(model)
    recalibrate_bn_(model, [torch.randn(32, 3, 32, 32)])  # unit-scale activations: the residual branches count
    x = torch.randn(4, 3, 32, 32)
    features = model.blocks[:-1]  # pooled features: the random head would only mix them
    ref = features(x)
    errors = {}
    for energy in (0.9, 0.999):
        plan = plan_lowrank(model, energy=energy)
        assert len(plan.layers) == 18  # every 3×3 conv of the 9 blocks; the stem and the head are < min_size
        new = lowrank(model, plan)
        assert new(x).shape == (4, 10)
        errors[energy] = ((new.blocks[:-1](x) - ref).norm() / ref.norm()).item()
    # √(1 − 0.999) ≈ 3% weight error per conv, through 18 convs; measured 0.049 (and 0.37 at energy 0.9)
    assert errors[0.999] < 0.1 and errors[0.999] < errors[0.9] / 3
    assert isinstance(model.blocks[1].body[0].conv, nn.Conv2d)  # lowrank returned a copy


def test_mobilenet_v2_skips_depthwise_and_in_place_needs_a_plain_net() -> None:
    model = zoo.create("mobilenet_v2_cifar", width=0.5).eval()
    plan = plan_lowrank(model, params_fraction=0.5, input_size=(3, 32, 32))
    assert any("groups=" in s.reason for s in plan.skipped) and plan.params_saved > 0
    with pytest.raises(ValueError, match=r"arch string false .* use lowrank\(model, plan\)"):
        lowrank_(model, plan)  # an EdgeNet cannot hold factorised layers under its arch
    assert isinstance(model.get_submodule(plan.layers[0].name), nn.Conv2d)  # refused before any change
    net = plain(model, note="low-rank")
    out = lowrank_(net, plan)
    assert out is net and isinstance(model.get_submodule(plan.layers[0].name), nn.Sequential)  # shared modules
    assert not hasattr(out, "arch") and out(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------- bad input


def test_bad_input_is_a_value_error() -> None:
    conv = nn.Conv2d(8, 8, 3)
    with pytest.raises(ValueError, match="groups=2"):
        factorize_conv(nn.Conv2d(8, 8, 3, groups=2), 2)
    with pytest.raises(ValueError, match="rank must be"):
        factorize_conv(conv, 9)
    with pytest.raises(ValueError, match="rank must be"):
        factorize_linear(nn.Linear(4, 4), 0)
    with pytest.raises(ValueError, match="form"):
        factorize_conv(conv, 2, form="depthwise")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        plan_lowrank(nn.Sequential(conv), energy=0.9, rank=2)
    with pytest.raises(ValueError, match="input_size"):
        plan_lowrank(nn.Sequential(conv), macs_fraction=0.5)
    with pytest.raises(ValueError, match="no module named"):
        plan_lowrank(nn.Sequential(conv), rank=2, layers=["1"])
    with pytest.raises(ValueError, match="energy must be"):
        svd_rank(torch.ones(3), energy=1.5)
    plan: LowRankPlan = plan_lowrank(nn.Sequential(conv), rank=2, min_size=0)
    with pytest.raises(ValueError, match="plan this model again"):
        lowrank(nn.Sequential(nn.Conv2d(8, 4, 3)), plan)
