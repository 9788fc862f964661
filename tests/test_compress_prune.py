"""Structured pruning over coupled channel groups (edgecnn.compress.channels.groups / importance / prune).

The exactness check: with the removed channels' *producing* parameters zeroed
— each conv / linear / depthwise filter and bias that writes the channel, and
the scale and shift (γ = β = 0) of each norm on it — every removed channel
is exactly 0 wherever it is read, whatever the BN running statistics (zeroing
the filter alone would leave ``β − γμ/σ`` after an unfolded BN, or the folded
bias). Every activation on these paths maps 0 to 0 (ReLU, ReLU6, hard-swish;
an SE gate multiplies the zero channel), so that model must compute exactly
what the pruned model computes without the channels. Generic models are
checked after ``fold_bn``; EdgeNets in arch space, with their BNs.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgecnn import zoo
from edgecnn.analysis import analyze, cost_from_spec
from edgecnn.build import EdgeNet, build
from edgecnn.compress import channel_groups, fold_bn, importance, plan_prune, prune, zero_pruned_

sys.path.insert(0, str(Path(__file__).parent))
from handwritten_nets import NETS  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    """Small convs on a shared machine: one thread avoids oversubscription (100× faster under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding and zeroing are really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def _size(name: str) -> int:
    return 32


def _model(name: str) -> nn.Module:
    if name in NETS:
        torch.manual_seed(0)
        return fold_bn(_randomize(NETS[name]()))
    torch.manual_seed(0)
    # half width keeps the file fast; the CIFAR ResNets' 16-wide stages would fall to the 8-channel grid
    return _randomize(zoo.create(name, width=1.0 if name.startswith(("resnet20", "resnet56")) else 0.5))


CASES = [*NETS, *zoo.names()]


@pytest.mark.parametrize("name", CASES)
def test_half_of_every_group_exact_and_costed(name: str) -> None:
    model = _model(name)
    s = _size(name)
    x = torch.randn(2, 3, s, s)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = plan_prune(model, (3, s, s), keep=0.5)
    assert plan.free, "every test model has prunable groups"
    changed = {e.group for e in plan.groups}
    assert set(plan.free) <= changed  # 50% of every prunable group (all are wider than round_to=8)
    for e in plan.groups:
        if e.group in plan.free:
            assert e.width_after < e.width_before and e.width_after % 8 == 0
    result = prune(model, plan)
    with torch.no_grad():
        y = result.model(x)
        ref = zero_pruned_(copy.deepcopy(model), plan)(x)
    assert y.shape == ref.shape
    assert (y - ref).abs().max().item() < 1e-5
    a = analyze(result.model, (3, s, s), receptive_fields=False)
    assert (a.params, a.macs) == (plan.params_after, plan.macs_after)
    assert plan.macs_after < plan.macs_before and plan.params_after < plan.params_before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the input is untouched
    if isinstance(model, EdgeNet):
        assert isinstance(result.model, EdgeNet) and result.arch == result.model.arch == plan.arch
        again = build(result.arch, num_classes=model.num_classes)
        again.load_state_dict(result.model.state_dict())  # strict round trip
        spec = cost_from_spec(result.arch, s, num_classes=model.num_classes)
        assert (spec.params, spec.macs) == (plan.params_after, plan.macs_after)


@pytest.mark.parametrize("name", [*NETS, "mobilenet_v3_small_cifar", "resnet20_cifar", "mobilenet_v2_cifar"])
def test_keeping_every_channel_permuted_is_exact(name: str) -> None:
    model = _model(name)
    s = _size(name)
    x = torch.randn(2, 3, s, s)
    cg = channel_groups(model, (3, s, s))
    gen = torch.Generator().manual_seed(1)
    first = plan_prune(model, keep=1.0, graph=cg)
    perm = {i: torch.randperm(cg.groups[i].width, generator=gen).tolist() for i in first.free}
    plan = plan_prune(model, widths=perm, graph=cg)
    assert len(plan.groups) == len(perm) and plan.macs_after == plan.macs_before
    result = prune(model, plan)
    some = plan.groups[0]
    assert list(some.kept) != sorted(some.kept)
    with torch.no_grad():
        assert (result.model(x) - model(x)).abs().max().item() < 1e-5
    if isinstance(model, EdgeNet):
        assert result.arch == model.arch


def _group(cg, producer: str):  # type: ignore[no-untyped-def]
    return next(g for g in cg.groups if any(m.module == producer and m.role == "out" for m in g.members))


def _indices(g, module: str, param: str = "weight", dim: int = 1) -> list[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    m = next(i for i, mem in enumerate(g.members) if (mem.module, mem.param, mem.dim) == (module, param, dim))
    return [per[m] for per in g.channels]


def test_groups_of_each_coupling() -> None:
    # concat: cat([mix(32), a(16), b(24)]) → dense: a's channel j is dense input 32+j, b's is 48+j; mix reads a, b
    cg = channel_groups(NETS["concat"](), (3, 32, 32))
    a, b = _group(cg, "a.0"), _group(cg, "b.0")
    assert _indices(a, "dense.0") == [(32 + j,) for j in range(16)]
    assert _indices(b, "dense.0") == [(48 + j,) for j in range(24)]
    assert _indices(b, "mix.0") == [(16 + j,) for j in range(24)]
    # flatten → linear: channel c of the 4×4 map owns fc1 inputs 16c … 16c+15
    cg = channel_groups(NETS["flatten_linear"](), (3, 32, 32))
    assert _indices(_group(cg, "features.1.0"), "fc1") == [tuple(range(16 * c, 16 * c + 16)) for c in range(24)]
    # depthwise with multiplier 2: input channel j owns dw outputs 2j, 2j+1 (one group with the stem)
    cg = channel_groups(NETS["depthwise"](), (3, 32, 32))
    stem = _group(cg, "stem.0")
    assert _indices(stem, "dw.0", dim=0) == [(2 * j, 2 * j + 1) for j in range(16)]
    assert _indices(stem, "pw.0") == [(2 * j, 2 * j + 1) for j in range(16)]
    # SE: the excite output fc2 is tied to the gated tensor; fc1 reads it; the squeeze is its own group
    cg = channel_groups(NETS["se"](), (3, 32, 32))
    gated = _group(cg, "stem.0")
    assert {m.module for m in gated.producers()} == {"stem.0", "fc2"}
    assert _indices(gated, "fc1") == [(j,) for j in range(32)]
    assert _group(cg, "fc1").width == 8
    # residual: stem, b1's and b2's last convs share one channel set; the projection starts another
    cg = channel_groups(NETS["residual"](), (3, 32, 32))
    assert {m.module for m in _group(cg, "stem.0").producers()} == {"stem.0", "b1.1", "b2.1"}
    assert {m.module for m in _group(cg, "proj.0").producers()} == {"proj.0", "b3.1"}
    # split + shuffle: chunk halves feed different layers; the shuffle (g=2) ties the untouched half's
    # channel j to the branch output's channel j, and expand reads them interleaved (2j, 2j+1)
    cg = channel_groups(NETS["shuffle"](), (3, 32, 32))
    tied = _group(cg, "branch.3.0")
    assert {m.module for m in tied.producers()} == {"stem.0", "branch.3.0"}
    assert _indices(tied, "stem.0", dim=0) == [(j,) for j in range(16)]
    assert _indices(tied, "expand.0") == [(2 * j, 2 * j + 1) for j in range(16)]
    assert _indices(_group(cg, "branch.0.0"), "branch.1", dim=0) == [(j,) for j in range(16)]
    # grouped conv (groups=4, 32 → 32): position j of every group is one channel (Torch-Pruning's rule), in its input
    # (reduce's outputs j, 8+j, 16+j, 24+j; weight dim 1 index j) and in its output (the same positions of dim 0)
    cg = channel_groups(NETS["grouped_conv"](), (3, 32, 32))
    reduce, grouped = _group(cg, "reduce.0"), _group(cg, "grouped.0")
    assert reduce.prunable and grouped.prunable and reduce.width == grouped.width == 8
    assert _indices(reduce, "reduce.0", dim=0) == [(j, 8 + j, 16 + j, 24 + j) for j in range(8)]
    assert _indices(reduce, "grouped.0") == [(j,) for j in range(8)]
    assert _indices(grouped, "grouped.0", dim=0) == [(j, 8 + j, 16 + j, 24 + j) for j in range(8)]
    assert _indices(grouped, "expand.0") == [(j, 8 + j, 16 + j, 24 + j) for j in range(8)]
    # transposed conv: output channels are weight dim 1, input channels dim 0
    cg = channel_groups(NETS["tconv"](), (3, 32, 32))
    assert _indices(_group(cg, "up"), "up", dim=1) == [(j,) for j in range(24)]
    assert _indices(_group(cg, "down.0"), "up", dim=0) == [(j,) for j in range(16)]
    # the classifier's outputs are the network output: fixed
    assert "network output" in (_group(cg, "head.fc").reason or "")


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale", "taylor"])
def test_each_criterion_ranks_a_useless_channel_last(criterion: str) -> None:
    torch.manual_seed(0)
    model = _randomize(NETS["residual"]())
    cg = channel_groups(model, (3, 32, 32))
    g = _group(cg, "stem.0")
    useless = 5
    with torch.no_grad():  # every producing parameter of channel 5 of the residual run: filters, BN γ and β
        for m, member in enumerate(g.members):
            if member.role != "in" and member.param in ("weight", "bias"):
                t = getattr(model.get_submodule(member.module), member.param)
                t.index_fill_(member.dim, torch.tensor(g.channels[useless][m]), 0.0)
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    scores = importance(cg, model, criterion, data=data)[g.index]
    assert scores.shape == (g.width,)
    assert int(scores.argmin()) == useless
    assert scores[useless] < scores[[i for i in range(g.width) if i != useless]].min()


def test_random_criterion_is_seeded_and_l1_is_bn_folded() -> None:
    model = _randomize(NETS["residual"]())
    cg = channel_groups(model, (3, 32, 32))
    r0, r0b, r1 = (importance(cg, model, "random", seed=s) for s in (0, 0, 1))
    assert all(torch.equal(r0[k], r0b[k]) for k in r0) and not all(torch.equal(r0[k], r1[k]) for k in r0)
    # l1 of the folded filters = l1 of fold_bn(model)'s filters: same scores on the folded copy
    folded = fold_bn(model)
    cgf = channel_groups(folded, (3, 32, 32))
    a, b = importance(cg, model, "l1"), importance(cgf, folded, "l1")
    g = _group(cg, "b1.0.0")
    w = folded.b1[0][0].weight.detach()
    assert torch.allclose(a[g.index], w.abs().sum((1, 2, 3)), rtol=1e-5)
    assert torch.allclose(a[g.index], b[_group(cgf, "b1.0.0").index], rtol=1e-5)


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_targets(allocation: str) -> None:
    model = _randomize(zoo.create("mobilenet_v2_cifar", width=0.5))
    cg = channel_groups(model, (3, 32, 32))
    full = plan_prune(model, keep=1.0, graph=cg)
    for target in ("macs", "params"):
        budget = int(0.6 * (full.macs_before if target == "macs" else full.params_before))
        plan = plan_prune(model, graph=cg, allocation=allocation, **{target: budget})
        got = plan.macs_after if target == "macs" else plan.params_after
        assert got <= budget
        result = prune(model, plan)
        a = analyze(result.model, (3, 32, 32), receptive_fields=False)
        assert (a.params, a.macs) == (plan.params_after, plan.macs_after)
    plan = plan_prune(model, graph=cg, allocation=allocation, keep=0.6)
    free = {e.group: e for e in plan.groups if e.group in plan.free}
    total = sum(cg.groups[i].width for i in plan.free)
    kept = sum(free[i].width_after if i in free else cg.groups[i].width for i in plan.free)
    assert kept <= 0.6 * total + 8 * len(plan.free)  # within one rounding step per group
    with pytest.raises(ValueError, match="cannot be met"):
        plan_prune(model, graph=cg, allocation=allocation, macs=1000)


def test_residual_run_width_changes_in_the_arch() -> None:
    model = _randomize(zoo.create("resnet18_cifar"))
    cg = channel_groups(model, (3, 32, 32), round_to=1)
    run = _group(cg, "blocks.0.conv")  # stem + the first stage's residual run: c64
    inner = _group(cg, "blocks.1.body.0.conv")
    plan = plan_prune(model, widths={run.index: 40, inner.index: 20}, graph=cg)
    assert plan.arch.startswith("conv_c40 basic_m20_c40 basic_m64_c40 basic_s2_m128_c128")
    result = prune(model, plan)
    build(plan.arch, num_classes=10).load_state_dict(result.model.state_dict())
    assert result.kept["blocks.1.body.0.conv.weight[1]"] == result.kept["blocks.0.conv.weight[0]"]


def test_generic_module_result_and_bad_input() -> None:
    model = NETS["concat"]().eval()
    plan = plan_prune(model, (3, 32, 32), keep=0.5)
    result = prune(model, plan)
    assert result.arch is None and type(result.model) is type(model)
    assert result.model.dense[0].in_channels == len(result.kept["dense.0.weight[1]"]) == 16 + 8 + 8
    with pytest.raises(ValueError, match="exactly one of"):
        plan_prune(model, (3, 32, 32))
    with pytest.raises(ValueError, match="exactly one of"):
        plan_prune(model, (3, 32, 32), keep=0.5, macs=10)
    with pytest.raises(ValueError, match="fraction"):
        plan_prune(model, (3, 32, 32), keep=0)
    with pytest.raises(ValueError, match="allocation"):
        plan_prune(model, (3, 32, 32), keep=0.5, allocation="greedy")
    with pytest.raises(ValueError, match="criterion"):
        plan_prune(model, (3, 32, 32), keep=0.5, criterion="l3")
    out = _group(plan.graph, "head.fc")
    with pytest.raises(ValueError, match="network output"):
        plan_prune(model, widths={out.index: 5}, graph=plan.graph)
    with pytest.raises(ValueError, match="another model"):
        prune(NETS["concat"](), plan)
    with pytest.raises(ValueError, match="round_to"):
        channel_groups(model, (3, 32, 32), round_to=0)


def test_folded_edgenet_is_pruned_as_a_module() -> None:
    model = fold_bn(_randomize(zoo.create("mobilenet_v3_small_cifar", width=0.5)))
    x = torch.randn(2, 3, 32, 32)
    plan = plan_prune(model, (3, 32, 32), keep=0.5)
    assert plan.arch is None and plan.free
    result = prune(model, plan)
    with torch.no_grad():
        diff = (result.model(x) - zero_pruned_(copy.deepcopy(model), plan)(x)).abs().max().item()
    assert diff < 1e-5
    with pytest.raises(ValueError, match="arch_space=True"):
        plan_prune(model, (3, 32, 32), keep=0.5, arch_space=True)


class _AttentionNet(nn.Module):
    """Patch embedding, nn.MultiheadAttention (its node's output is a tuple: (out, weights)), an MLP, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.mlp1, self.mlp2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).flatten(2).transpose(1, 2)
        a, _ = self.attn(t, t, t)
        t = t + a
        t = t + self.mlp2(torch.relu(self.mlp1(t)))
        return self.fc(t.mean(1))


def test_multihead_attention_blocks_its_channels_with_a_reason() -> None:
    torch.manual_seed(0)
    model = _AttentionNet().eval()
    plan = plan_prune(model, (3, 32, 32), keep=0.5)
    reasons = {s.group: s.reason for s in plan.skipped}
    stem = _group(plan.graph, "stem")
    assert "read by attn (MultiheadAttention), which has no channel rule" in reasons[stem.index]
    hidden = _group(plan.graph, "mlp1")
    assert plan.free == (hidden.index,) and plan.groups[0].width_after == 16
    result = prune(model, plan)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (result.model(x) - zero_pruned_(copy.deepcopy(model), plan)(x)).abs().max().item() < 1e-5
    a = analyze(result.model, (3, 32, 32), receptive_fields=False)
    assert (a.params, a.macs) == (plan.params_after, plan.macs_after)


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_chained_shuffle_units_keep_equal_halves_on_any_grid(allocation: str) -> None:
    # round_to=1: no 8-channel grid hides an unequal split; every chunk(2) must keep the same count per half
    model = _model("shuffle_chain")
    x = torch.randn(2, 3, 32, 32)
    cg = channel_groups(model, (3, 32, 32), round_to=1)
    assert len(cg.splits) == 2 and all(g.prunable for sp in cg.splits for piece in sp.pieces for g in
                                       [cg.groups[i] for i, _ in piece])  # fmt: skip
    for keep in (0.3, 0.55, 0.8):
        plan = plan_prune(model, keep=keep, graph=cg, allocation=allocation, criterion="random", round_to=1)
        counts = {e.group: e.width_after for e in plan.groups}
        for sp in cg.splits:  # every piece of every split keeps the same number of channels
            sizes = {sum(n * counts.get(g, cg.groups[g].width) for g, n in piece) for piece in sp.pieces}
            assert len(sizes) == 1
        assert plan.macs_after < plan.macs_before
        result = prune(model, plan)
        with torch.no_grad():
            ref = zero_pruned_(copy.deepcopy(model), plan)(x)
            assert (result.model(x) - ref).abs().max().item() < 1e-5
        a = analyze(result.model, (3, 32, 32), receptive_fields=False)
        assert (a.params, a.macs) == (plan.params_after, plan.macs_after)
    # the tied groups follow one leader: a follower cannot be given a width of its own
    plan = plan_prune(model, keep=1.0, graph=cg, round_to=1)
    followers = [s for s in plan.skipped if "channel split" in s.reason]
    assert len(followers) >= 2  # the stride-2 unit's output: four groups tied by the two splits, one leads
    with pytest.raises(ValueError, match="follows group"):
        plan_prune(model, widths={followers[0].group: 8}, graph=cg)


def test_grouped_conv_stays_a_valid_grouped_conv() -> None:
    model = _model("grouped_conv")
    x = torch.randn(2, 3, 32, 32)
    cg = channel_groups(model, (3, 32, 32), round_to=1)
    reduce, grouped = _group(cg, "reduce.0"), _group(cg, "grouped.0")
    plan = plan_prune(model, widths={reduce.index: 5, grouped.index: 3}, graph=cg)
    result = prune(model, plan)
    conv = result.model.grouped[0]
    assert (conv.groups, conv.in_channels, conv.out_channels) == (4, 20, 12)
    assert tuple(conv.weight.shape) == (12, 5, 3, 3)
    with torch.no_grad():
        assert (result.model(x) - zero_pruned_(copy.deepcopy(model), plan)(x)).abs().max().item() < 1e-5
    a = analyze(result.model, (3, 32, 32), receptive_fields=False)
    assert (a.params, a.macs) == (plan.params_after, plan.macs_after)


@pytest.mark.parametrize("name", ["shuffle_chain", "grouped_conv", "se", "concat", "resnet20_cifar", "mobilenet_v3_small"])
def test_small_and_vectorised_grouping_agree(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # small networks find components and groups in plain Python, large ones on tensors: the same groups
    from edgecnn.compress.channels import components

    model = _model(name)
    found = []
    for small in (0, 10**9):
        monkeypatch.setattr(components, "SMALL", small)
        cg = channel_groups(model, (3, 32, 32))
        found.append(([(g.members, [r.tolist() for r in g.rows], g.reason) for g in cg.groups], cg.splits,
                      cg.group_of_root.tolist(), cg.roots.tolist()))  # fmt: skip
    assert found[0] == found[1]
    assert any(g.prunable for g in cg.groups) and (name != "resnet20_cifar" or not all(g.prunable for g in cg.groups))


def test_a_budget_below_the_narrowest_network_names_the_blocked_groups() -> None:
    """Pruning that cannot go lower says which groups hold it up and why (not only "the narrowest network has …")."""
    from edgecnn.build import build
    from edgecnn.compress.channels.prune import plan_prune

    net = build("conv_c16 ir_c16 ir_s2_c32 gap fc", num_classes=10, in_chans=3)
    with pytest.raises(ValueError) as err:
        plan_prune(net, (3, 16, 16), macs=1, round_to=8)
    msg = str(err.value)
    assert "the narrowest network" in msg and "channel groups may shrink" in msg
    assert "round_to=8" in msg and "cannot (" in msg and "relax the budget" in msg
