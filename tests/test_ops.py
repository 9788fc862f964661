"""The one op table (edgecnn.ops) and the custom-op hook.

Costs, receptive fields and channel labels read the same families, so an op
known to one is known to all three (the check below fails if a tool grows an
op list of its own, or lacks an implementation of a role some family uses).
Ops that only one or two tools knew before the table (Softplus, SELU, CELU,
PReLU were costed but blocked pruning) are pruned here and compared with
PyTorch on the kept channels, computed by hand from the original weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.analysis import analyze, handlers, node_cost, rf_rules
from edgecnn.analysis.handlers import COST_RULES, Cost
from edgecnn.analysis.receptive import layer_receptive_fields
from edgecnn.analysis.rf_rules import FIELD_RULES
from edgecnn.compress import channel_groups, plan_prune, prune
from edgecnn.compress.budget import parse_budget
from edgecnn.compress.netadapt.loop import NetAdaptConfig, netadapt
from edgecnn.compress.netadapt.oneshot import prune_to_budget
from edgecnn.compress.netadapt.state import STATE_FILE, load_state, restore
from edgecnn.compress.resource_meter import ResourceMeter
from edgecnn.train.task import DataRef
from edgecnn.compress.channels import labels
from edgecnn.compress.channels.labels import CHANNEL_RULES
from edgecnn.ops import CHANNEL_ROLES, COST_ROLES, FAMILIES, FIELD_ROLES, OPS, Channels, CustomOp, OpFamily, OpTable


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- one table


def _forms(fam: OpFamily) -> list[str]:
    return [op for op, targets in (("call_module", fam.modules), ("call_function", fam.functions),
                                   ("call_method", fam.methods)) if targets]  # fmt: skip


def test_each_tool_implements_exactly_the_roles_of_the_table() -> None:
    assert set(COST_RULES) == set(COST_ROLES)
    assert set(FIELD_RULES) == set(FIELD_ROLES)
    assert set(CHANNEL_RULES) == set(CHANNEL_ROLES)


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_every_op_known_to_one_tool_is_known_to_all_three(fam: OpFamily) -> None:
    assert fam.cost in COST_ROLES and fam.field in FIELD_ROLES and fam.channels in CHANNEL_ROLES
    assert fam.cost != "measured", "a built-in family has a cost rule"
    assert fam.channels != "blocks" or fam.why, "a family that blocks pruning says why"
    for op in _forms(fam):
        rule = COST_RULES[fam.cost]
        assert rule.handler(op) is not None or rule.runs, (fam.name, op)
        assert FIELD_RULES[fam.field][op != "call_module"] is not None
        assert CHANNEL_RULES[fam.channels][op != "call_module"] is not None
    for t in fam.modules:
        assert OPS.module_family(t) is fam
    for t in fam.functions:
        assert OPS.call_family("call_function", t) is fam
    for t in fam.methods:
        assert OPS.call_family("call_method", t) is fam


def test_the_tools_keep_no_op_lists_of_their_own() -> None:
    """No module-level collection in the three tools names a module type or function the table declares: adding
    an op is one record (method names are strings, which cost kinds share: not checked)."""
    ops = {*OPS._modules, *OPS._functions}
    for mod in (handlers, node_cost, rf_rules, labels):
        for name, value in vars(mod).items():
            if name.startswith("__"):
                continue
            if isinstance(value, dict):
                value = list(value)
            if isinstance(value, (tuple, list, set, frozenset)):
                named = [v for v in value if not isinstance(v, str) and _hashable(v) and v in ops]
                assert not named, f"{mod.__name__}.{name} lists ops {named}: declare them in edgecnn.ops"


def _hashable(v: object) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def test_a_target_in_two_families_is_refused() -> None:
    twice = OpFamily("again", "act", "keep", "elementwise", modules=(nn.ReLU,))
    with pytest.raises(ValueError, match="declared twice"):
        OpTable((*FAMILIES, twice))


# ---------------------------------------------------------------- what the union fixed


class _Acts(nn.Module):
    """conv → BN → Softplus → conv → PReLU(C) → conv → SELU → conv → CELU → pool → fc, each boundary prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1, self.a1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Softplus()
        self.c2, self.a2 = nn.Conv2d(16, 16, 3, padding=1), nn.PReLU(16)
        self.c3, self.a3 = nn.Conv2d(16, 16, 3, padding=1), nn.SELU()
        self.c4, self.a4 = nn.Conv2d(16, 16, 1), nn.CELU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a2(self.c2(self.a1(self.bn1(self.c1(x)))))
        x = self.a4(self.c4(self.a3(self.c3(x))))
        return self.fc(self.pool(x).flatten(1))


def _acts() -> _Acts:
    torch.manual_seed(0)
    m = _Acts()
    with torch.no_grad():
        m.bn1.running_mean.uniform_(-0.2, 0.2), m.bn1.running_var.uniform_(0.5, 1.5)
        m.bn1.weight.uniform_(0.5, 1.5), m.bn1.bias.uniform_(-0.2, 0.2), m.a2.weight.uniform_(-0.5, 0.5)
    return m.eval()


def _by_hand(m: _Acts, x: torch.Tensor, k: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pruned network in plain torch: each layer's kept output channels ``k[name]`` from the original weights."""
    k1, k2, k3, k4 = k["c1"], k["c2"], k["c3"], k["c4"]
    bn = m.bn1
    h = F.conv2d(x, m.c1.weight[k1], m.c1.bias[k1], padding=1)
    h = F.softplus(F.batch_norm(h, bn.running_mean[k1], bn.running_var[k1], bn.weight[k1], bn.bias[k1], eps=bn.eps))
    h = F.prelu(F.conv2d(h, m.c2.weight[k2][:, k1], m.c2.bias[k2], padding=1), m.a2.weight[k2])
    h = F.selu(F.conv2d(h, m.c3.weight[k3][:, k2], m.c3.bias[k3], padding=1))
    h = F.celu(F.conv2d(h, m.c4.weight[k4][:, k3], m.c4.bias[k4]))
    return F.linear(h.mean((2, 3)), m.fc.weight[:, k4], m.fc.bias)


def test_softplus_prelu_selu_celu_prune_and_match_torch_on_the_kept_channels() -> None:
    m, x = _acts(), torch.randn(2, 3, 16, 16)
    plan = plan_prune(m, (3, 16, 16), keep=0.5)
    assert len(plan.free) == 4 and not [s for s in plan.skipped if "no channel rule" in s.reason]
    result = prune(m, plan)
    kept = {n: torch.tensor(result.kept[f"{n}.weight[0]"]) for n in ("c1", "c2", "c3", "c4")}
    assert all(len(v) == 8 for v in kept.values()) and result.model.a2.num_parameters == 8
    with torch.no_grad():
        assert (result.model(x) - _by_hand(m, x, kept)).abs().max().item() < 1e-5
    a = analyze(result.model, (3, 16, 16), receptive_fields=False)
    assert (a.params, a.macs) == (plan.params_after, plan.macs_after)
    # every channel kept, in a new order: the same function as the original
    perm = {g: torch.randperm(plan.graph.groups[g].width, generator=torch.Generator().manual_seed(g)).tolist()
            for g in plan.free}  # fmt: skip
    same = prune(m, plan_prune(m, widths=perm, graph=plan.graph)).model
    with torch.no_grad():
        assert (same(x) - m(x)).abs().max().item() < 1e-5


class _Norms(nn.Module):
    def __init__(self, norm: nn.Module, softmax_dim: int) -> None:
        super().__init__()
        self.c1, self.norm, self.c2 = nn.Conv2d(3, 16, 3, padding=1), norm, nn.Conv2d(16, 16, 3, padding=1)
        self.dim = softmax_dim
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(self.norm(self.c1(x)), -3, 3)
        x = F.max_pool2d(x, 2)
        x = torch.softmax(self.c2(x), self.dim)
        return self.fc(torch.amax(x, (2, 3)))


def test_instance_norm_prunes_group_norm_and_channel_softmax_block_with_reasons() -> None:
    torch.manual_seed(0)
    m = _Norms(nn.InstanceNorm2d(16, affine=True), softmax_dim=3).eval()
    x = torch.randn(2, 3, 16, 16)
    plan = plan_prune(m, (3, 16, 16), keep=0.5)
    assert len(plan.free) == 2  # c1 through InstanceNorm, clamp and max_pool; c2 through a softmax over W
    result = prune(m, plan)
    k1 = torch.tensor(result.kept["c1.weight[0]"])
    with torch.no_grad():
        h = F.instance_norm(F.conv2d(x, m.c1.weight[k1], m.c1.bias[k1], padding=1),
                            weight=m.norm.weight[k1], bias=m.norm.bias[k1])  # fmt: skip
        assert (result.model.c1(x).shape[1], result.model.norm.num_features) == (8, 8)
        assert (result.model.norm(result.model.c1(x)) - h).abs().max().item() < 1e-5
    blocked = plan_prune(_Norms(nn.GroupNorm(4, 16), softmax_dim=1), (3, 16, 16), keep=0.5)
    reasons = " ".join(s.reason for s in blocked.skipped)
    assert "group norm shares its statistics" in reasons and "normalises along the channel dimension" in reasons
    assert blocked.free == ()


def test_functional_pools_clamp_and_amin_are_costed_by_rule_and_equal_flop_counter() -> None:
    m = _Norms(nn.BatchNorm2d(16), softmax_dim=1).eval()
    a = analyze(m, (3, 16, 16))
    rows = {r.op: r for r in a.layers}
    assert rows["max_pool2d"].kind == "pool" and rows["max_pool2d"].other_ops == 4 * 16 * 8 * 8
    assert rows["clamp"].kind == "act" and rows["amax"].kind == "reduce"
    assert not [r.name for r in a.layers if r.note.startswith("no rule")]
    with FlopCounterMode(display=False) as counter:
        m(torch.randn(1, 3, 16, 16))
    assert a.macs == counter.get_total_flops() // 2


# ---------------------------------------------------------------- the custom-op hook


class ScaledConv(nn.Module):
    """A 3×3 conv with a learned per-channel output scale, written by hand (edgecnn does not know it)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.2)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)
        self.scale = nn.Parameter(torch.rand(cout) + 0.5)
        self.kernel_size, self.stride, self.padding, self.dilation = 3, 1, 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=1) * self.scale.view(1, -1, 1, 1)


class TanhGate(nn.Module):
    """``x·tanh(x)``: element-wise, unknown to edgecnn."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(x)


class _Custom(nn.Module):
    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.stem, self.sc, self.act = nn.Conv2d(in_chans, 16, 3, padding=1), ScaledConv(16, 24), TanhGate()
        self.conv2, self.fc = nn.Conv2d(24, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.sc(torch.relu(self.stem(x))))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


def scaled_conv_cost(call: handlers.Call) -> Cost:
    """MACs of the conv, bias excluded; other ops: the bias add and the scale, one each per output element."""
    w, y = call.module.weight, call.out  # type: ignore[union-attr]
    return Cost("conv", y.numel() * w.shape[1] * w.shape[2] * w.shape[3], 2 * y.numel())


OPS_OF_MINE = [
    CustomOp(ScaledConv, cost=scaled_conv_cost, field="conv",
             channels=Channels("owns", reads=(("weight", 1),), writes=(("weight", 0), ("bias", 0), ("scale", 0)))),
    CustomOp(TanhGate, like="activation"),
]  # fmt: skip


def _custom() -> _Custom:
    torch.manual_seed(0)
    return _Custom().eval()


def test_without_the_hook_the_op_is_unknown_and_pruning_is_conservative() -> None:
    m = _custom()
    a = analyze(m, (3, 16, 16), leaf_modules=(ScaledConv, TanhGate))
    sc = a.by_layer()["sc"]
    assert sc.kind == "other" and sc.note.startswith("no rule") and sc.rf_size == (3, 3)  # field not widened
    plan = plan_prune(m, (3, 16, 16), keep=0.5)
    reasons = {s.group: s.reason for s in plan.skipped}
    stem = next(g for g in plan.graph.groups if any(mem.module == "stem" for mem in g.members))
    assert "functional layer" in reasons[stem.index]
    assert not any(mem.module == "sc" for g in plan.graph.prunable for mem in g.members)


def test_with_the_hook_costs_match_hand_derived_numbers_in_both_modes() -> None:
    m = _custom()
    for mode in ("fx", "hooks"):
        a = analyze(m, (3, 16, 16), custom_ops=OPS_OF_MINE, mode=mode)
        sc, act = a.by_layer()["sc"], a.by_layer()["act"]
        assert (sc.kind, sc.macs, sc.other_ops, sc.params) == ("conv", 16 * 16 * 24 * 16 * 9, 2 * 24 * 16 * 16,
                                                                24 * 16 * 9 + 24 + 24)  # fmt: skip
        assert (act.kind, act.other_ops) == ("act", 24 * 16 * 16)
    assert a.macs == (16 * 16 * 16 * 3 * 9) + 16 * 16 * 24 * 16 * 9 + 16 * 16 * 16 * 24 * 9 + 16 * 10
    fields = layer_receptive_fields(m, (1, 3, 16, 16), custom_ops=OPS_OF_MINE)
    assert fields["sc"].size == (5, 5) and fields["conv2"].size == (7, 7)  # 3 → 5 → 7: the custom conv widens it
    assert analyze(m, (3, 16, 16), custom_ops=OPS_OF_MINE).by_layer()["sc"].rf_size == (5, 5)


def test_with_the_hook_pruning_goes_through_the_custom_op_and_matches_torch() -> None:
    m, x = _custom(), torch.randn(2, 3, 16, 16)
    cg = channel_groups(m, (3, 16, 16), custom_ops=OPS_OF_MINE)
    sc = next(g for g in cg.groups if any(mem.module == "sc" and mem.role == "out" for mem in g.members))
    assert sc.prunable and {(mem.param, mem.dim) for mem in sc.members if mem.module == "sc"} == {
        ("weight", 0), ("bias", 0), ("scale", 0)}
    plan = plan_prune(m, (3, 16, 16), keep=0.5, custom_ops=OPS_OF_MINE)
    assert len(plan.free) == 3
    result = prune(m, plan)
    k0, k1, k2 = (torch.tensor(result.kept[f"{n}.weight[0]"]) for n in ("stem", "sc", "conv2"))
    with torch.no_grad():
        h = torch.relu(F.conv2d(x, m.stem.weight[k0], m.stem.bias[k0], padding=1))
        h = F.conv2d(h, m.sc.weight[k1][:, k0], m.sc.bias[k1], padding=1) * m.sc.scale[k1].view(1, -1, 1, 1)
        h = torch.relu(F.conv2d(h * torch.tanh(h), m.conv2.weight[k2][:, k1], m.conv2.bias[k2], padding=1))
        ref = F.linear(h.mean((2, 3)), m.fc.weight[:, k2], m.fc.bias)
        assert (result.model(x) - ref).abs().max().item() < 1e-5
    a = analyze(result.model, (3, 16, 16), custom_ops=OPS_OF_MINE, receptive_fields=False)
    assert (a.params, a.macs) == (plan.params_after, plan.macs_after)
    assert copy.deepcopy(m).sc.weight.shape == (24, 16, 3, 3)  # the input model is untouched


def test_netadapt_and_its_resume_prune_through_the_custom_op(tmp_path) -> None:
    # _Custom has no BatchNorm: NetAdapt skips the recalibration of its proposals (recalibrate_bn_if_any_)
    torch.manual_seed(0)
    m = _Custom(in_chans=1).eval()
    ref, budget = DataRef("digits", image_size=8), parse_budget("50%macs")
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    cfg = NetAdaptConfig(initial_step=0.2, decay=0.9, short_steps=0, top_k=1, round_to=4, recal_batches=1)
    r = netadapt(m, ref, budget, meter=meter, config=cfg, out=tmp_path, custom_ops=OPS_OF_MINE)
    assert r.met and r.resource <= 0.5 * meter.of_model(m)
    assert any("sc" in h.description for h in r.history)  # the custom conv's own channels shrank
    assert r.model.sc.weight.shape[0] == r.model.sc.scale.shape[0] == r.model.conv2.weight.shape[1] < 24
    st = load_state(tmp_path / STATE_FILE)  # the state replays through the custom op, to the same network
    again = restore(m, st, (1, 8, 8), round_to=4, custom_ops=OPS_OF_MINE)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(again.eval()(x), r.model.eval()(x))
    shot = prune_to_budget(m, 0.5 * meter.of_model(m), meter, round_to=4, custom_ops=OPS_OF_MINE)
    assert shot.model.sc.weight.shape[0] < 24


def test_custom_op_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="not a family"):
        CustomOp(TanhGate, like="activations")
    with pytest.raises(ValueError, match="not a cost role"):
        CustomOp(TanhGate, cost="cheap")
    with pytest.raises(ValueError, match="must include"):
        Channels("owns", reads=(("weight", 1),), writes=(("kernel", 0),))
    with pytest.raises(ValueError, match="declared twice"):
        analyze(_custom(), (3, 16, 16), custom_ops=[CustomOp(TanhGate, like="activation")] * 2)
    # a custom op overrides the built-in rule of the same target
    table = OpTable(FAMILIES, (CustomOp(nn.ReLU, cost="measured"),))
    assert table.module_family(nn.ReLU).cost == "measured" and OPS.module_family(nn.ReLU).cost == "act"
