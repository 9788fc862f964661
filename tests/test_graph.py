"""The graph layer (edgecnn.graph) and the analysis on it, on hand-written nets with the patterns torchvision's
classifiers use (issue 8): each analysed in fx mode, MACs == FlopCounterMode/2, params == the model's, and the
output's receptive field == the empirical gradient support (rf_support.py)."""

from __future__ import annotations

import json
import math
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.analysis import analyze
from edgecnn.analysis.receptive import RF, receptive_field
from edgecnn.graph import Graph, GraphError, trace_graph
from rf_support import check_support, positive_linear, support_box


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() // 2


def output_rf(model: nn.Module, shape: tuple[int, ...]) -> RF:
    """The output's field from ``analyze`` (its last row), checked equal to ``receptive_field``'s."""
    a = analyze(model, shape[1:])
    row = a.output_rf()
    assert row is not None and row.rf_size is not None
    rf = RF(row.rf_size, row.rf_jump, row.rf_start, bool(row.rf_whole), "", bool(row.rf_global))  # type: ignore[arg-type]
    ref = receptive_field(model, shape)
    assert (rf.size, rf.jump, rf.start, rf.whole, rf.global_context) == (ref.size, ref.jump, ref.start, ref.whole,
                                                                         ref.global_context)  # fmt: skip
    return rf


def check_net(model: nn.Module, shape: tuple[int, ...]) -> tuple[RF, object]:
    """fx mode, exact MACs and params, and the output field equal to the gradient support."""
    a = analyze(model, shape[1:])
    assert a.mode == "fx" and a.fallback_reason == "", a.fallback_reason
    assert a.macs == flop_counter_macs(model, torch.zeros(shape))
    assert a.params == sum(p.numel() for p in model.parameters()) and a.unused_params == 0
    rf = output_rf(model, shape)
    check_support(positive_linear(model), rf, shape)
    return rf, a


# ---------------------------------------------------------------- the patterns


class Inception(nn.Module):
    """Branches of 1×1, 1×1→3×3, 5×5 and pool→1×1, joined by ``torch.cat([...])`` of a list (GoogLeNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b3 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.b5 = nn.Conv2d(8, 4, 5, padding=2)
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 4, 1))
        self.head = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1))


def test_inception_concat_of_a_list() -> None:
    rf, _ = check_net(Inception(), (1, 3, 41, 41))
    # stem k3 s2 p0: R 3, J 2, start 1; the 5×5 branch wins: R 3 + 4·2 = 11; head k3: 11 + 2·2 = 15
    assert (rf.size, rf.jump, rf.start) == ((15, 15), (2, 2), (1, 1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ShuffleNetV2 shuffle: view → transpose → contiguous → view."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1): channel split by ``chunk``, one branch convolved, concat, shuffle."""

    def __init__(self, c: int, flatten: bool) -> None:
        super().__init__()
        self.flatten = flatten
        h = c // 2
        self.branch = nn.Sequential(nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
                                    nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h),
                                    nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch(x2)), dim=1)
        if self.flatten:  # the same shuffle written with transpose + flatten
            n, c, hh, ww = out.shape
            return torch.flatten(out.reshape(n, 2, c // 2, hh, ww).transpose(1, 2), 1, 2)
        return channel_shuffle(out, 2)


def test_channel_shuffle_view_transpose_and_flatten() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), ShuffleUnit(8, flatten=False), ShuffleUnit(8, flatten=True))
    rf, a = check_net(net, (1, 3, 32, 32))
    # stem k3 s2 p1: R 3, J 2, start 0; each unit's 3×3 depthwise adds 2·2
    assert (rf.size, rf.jump, rf.start) == ((11, 11), (2, 2), (0, 0))
    assert a.layers[-1].out_shape == (1, 8, 16, 16)


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: ``F.layer_norm`` over channels-last with the weight read as a node."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """ConvNeXt block: dw 7×7 → permute → LayerNorm → Linear → GELU → Linear → permute, layer scale, residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.act, self.pw2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.layer_scale = nn.Parameter(torch.full((c, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(self.act(self.pw1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


def test_convnext_layer_norm_channels_last_with_weight() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), LayerNorm2d(8, eps=1e-6), CNBlock(8), CNBlock(8))
    rf, a = check_net(net, (1, 3, 128, 128))
    # patchify k4 s4: R 4, J 4, start 1.5; each 7×7 depthwise adds 6·4
    assert (rf.size, rf.jump, rf.start) == ((52, 52), (4, 4), (1.5, 1.5))
    ln = next(r for r in a if r.op == "layer_norm")
    assert ln.kind == "norm" and ln.other_ops == 5 * 8 * 32 * 32 and ln.params == 16  # weight + bias, via get_attr
    scale = [r for r in a if r.op == "mul"]
    assert [r.params for r in scale] == [8, 8]  # the layer-scale parameters, counted at their use


class Twice(nn.Module):
    """One block (shared weights) called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.block(self.block(x))


def test_block_called_twice() -> None:
    rf, a = check_net(Twice(), (1, 3, 48, 48))
    assert (rf.size, rf.jump) == ((3 + 2 * (4 * 2), 3 + 2 * (4 * 2)), (2, 2))  # dilation 2: (k−1)·d·J = 8 each
    rows = a.by_layer()
    assert rows["block.0"].macs == rows["block.0#2"].macs == 24 * 24 * 8 * 8 * 9
    assert rows["block.0"].params == 8 * 8 * 9 + 8 and rows["block.0#2"].params == 0


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))


def test_se_gate_keeps_the_conv_path_field_and_flags_global_context() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, padding=1), SE(8), nn.Conv2d(8, 4, 3, padding=1))
    shape = (1, 3, 40, 40)
    a = analyze(net, shape[1:])
    assert a.mode == "fx" and a.macs == flop_counter_macs(net, torch.zeros(shape))
    rows = a.by_layer()
    assert rows["2.pool"].rf_whole and rows["2.pool"].rf_label() == "whole"
    assert a.layers[-1].rf_label() == "11×11 J2 +global" and not a.layers[-1].rf_whole
    rf = output_rf(net, shape)
    assert rf.global_context and rf.size == (11, 11)
    linear = positive_linear(net)
    assert support_box(linear, shape, (5, 5)) == [(0, 39), (0, 39)]  # the gate: every pixel reaches the output
    linear[2].pool = nn.Sequential(linear[2].pool, _Detach())
    check_support(linear, rf, shape)  # without the gate's gradient: exactly the conv path's field


class _Detach(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


class Net1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(2, 4, 5, stride=2, padding=1)
        self.a, self.b = nn.Conv1d(4, 4, 3, padding=1), nn.Conv1d(4, 4, 7, padding=3, dilation=1)
        self.pool = nn.MaxPool1d(2)
        self.head = nn.Conv1d(8, 3, 3, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        return self.head(self.pool(torch.cat([self.a(x) + x, self.b(x)], 1)))


def test_conv1d() -> None:
    rf, _ = check_net(Net1d(), (1, 2, 96))
    # stem k5 s2 p1: R 5, J 2, start 1; the k7 branch: 5 + 6·2 = 17; pool k2: +2 → 19, J 4, start 1 + 0.5·2 = 2;
    # head k3 d2: 19 + 2·2·4 = 35, start 2 + 2·4 = 10
    assert (rf.size, rf.jump, rf.start) == ((35,), (4,), (10,))


class Net3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm3d(4)
        self.body = nn.Conv3d(4, 4, (3, 3, 1), padding=(2, 2, 0), dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        return x + self.body(x)


def test_conv3d() -> None:
    rf, _ = check_net(Net3d(), (1, 1, 20, 20, 12))
    # stem k3 s2: R 3, J 2; body (3, 3, 1) dilation 2: + 2·2·2 on the first two axes, nothing on the third
    assert (rf.size, rf.jump) == ((11, 11, 3), (2, 2, 2))


class DataDependent(nn.Module):
    """Python control flow on a tensor value: fx cannot trace it; the ``never`` branch does not run."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.never = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if y.sum() > 1e9:
            y = self.never(y)
        return self.fc(y.mean((2, 3)))


def test_data_dependent_control_flow_is_a_stated_fallback() -> None:
    model, x = DataDependent(), torch.zeros(1, 3, 12, 12)
    a = analyze(model, inputs=x)
    assert a.mode == "hooks"
    assert a.fallback_reason.startswith("fx trace failed: TraceError: symbolically traced variables cannot be used")
    assert a.macs == flop_counter_macs(model, x) == 100 * 8 * 27 + 40
    never = 8 * 8 * 9 + 8
    assert a.unreached == ["never"] and a.unused_params == never
    assert a.params == sum(p.numel() for p in model.parameters()) - never
    assert "Forward-hooks fallback (fx trace failed: TraceError" in a.fallback_line()
    d = json.loads(a.to_json())
    assert d["mode"] == "hooks" and d["fallback_reason"] == a.fallback_reason and d["unreached"] == ["never"]
    g = trace_graph(model, x, fallback=True)
    assert g.mode == "hooks" and g.graph is None and g.fallback_reason == a.fallback_reason
    with pytest.raises(GraphError, match="cannot analyse DataDependent with torch.fx"):
        trace_graph(model, x)


# ---------------------------------------------------------------- the graph API


def test_graph_queries() -> None:
    model = Inception()
    before = set(vars(model))
    g = trace_graph(model, torch.zeros(2, 3, 21, 21, device="meta"))
    assert isinstance(g, Graph) and g.mode == "fx" and g.input_shapes == ((2, 3, 21, 21),)
    cat = next(n for n in g.calls() if n.target is torch.cat)
    # the list argument is mapped: its four branch outputs are the node's inputs, in order
    assert [g.scope(n) for n in g.inputs(cat)] == ["b1", "b3.2", "b5", "bp.1"]
    assert g.shape(cat) == (2, 16, 10, 10) and g.scope(cat) == ""
    stem = next(n for n in g.calls() if n.target == "stem")
    assert g.module(stem) is model.stem and g.module(cat) is None
    assert [str(u.target) for u in g.users(stem)] == ["b1", "b3.0", "b5", "bp.0"]
    assert g.io_shapes(stem) == ((2, 3, 21, 21), (2, 8, 10, 10))
    assert [n.target for n, _ in g.module_calls(nn.MaxPool2d)] == ["bp.0"]
    assert g.times_called()["stem"] == 1
    assert set(vars(model)) == before  # the user's module is left as it was
    # shapes without a cost analysis, strides kept: the transpose is not contiguous, the view after contiguous is
    sh = trace_graph(ShuffleUnit(8, flatten=False), torch.zeros(1, 8, 5, 5))
    t = next(n for n in sh.calls() if n.target is torch.transpose)
    assert sh.meta(t).stride == (200, 25, 100, 5, 1) and sh.shape(t) == (1, 4, 2, 5, 5)
    chunk = next(n for n in sh.calls() if n.target == "chunk")
    assert sh.shapes(chunk) == [(1, 4, 5, 5), (1, 4, 5, 5)]


def test_shared_module_and_kwargs_nodes_are_mapped() -> None:
    g = trace_graph(Twice(), torch.zeros(1, 3, 16, 16))
    assert g.times_called()["block.0"] == 2
    first, second = g.calls_of("block.0")
    assert g.producer(second) is g.node("block_2") and g.shape(first) == g.shape(second) == (1, 8, 8, 8)
    ln = trace_graph(LayerNorm2d(8), torch.zeros(1, 8, 4, 4))
    node = next(n for n in ln.calls() if n.target is F.layer_norm)
    # F.layer_norm passes weight and bias as keyword arguments: both are get_attr nodes among the inputs
    assert [n.op for n in ln.inputs(node)] == ["call_method", "get_attr", "get_attr"]
    assert ln.shape(node) == (1, 4, 4, 8)
    assert ln.attr(ln.inputs(node)[1]) is ln.root.weight


def test_more_placeholders_than_inputs_is_a_value_error() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    with pytest.raises(ValueError, match="more inputs than the 1 given"):
        trace_graph(Two(), torch.zeros(1, 2), fallback=True)


def test_shape_graph_gives_layer_shapes_equal_to_a_real_forward() -> None:
    from edgecnn import zoo
    from edgecnn.analysis import shape_graph

    model = zoo.create("mobilenet_v2", width=0.25).eval()
    g = shape_graph(model, (3, 64, 64))
    planned = {str(n.target): g.io_shapes(n) for n, _ in g.module_calls((nn.Conv2d, nn.Linear))}
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    name_of = {m: name for name, m in model.named_modules()}

    def record(m: nn.Module, args: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
        seen[name_of[m]] = (tuple(args[0].shape), tuple(y.shape))

    hooks = [m.register_forward_hook(record) for m in name_of if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert planned == seen and len(planned) == 53  # 52 convs + the classifier


def test_conv_bn_pairs_from_users_and_modules() -> None:
    from edgecnn import zoo

    g = trace_graph(zoo.create("resnet18", width=0.25))  # no inputs: the graph without shapes
    pairs = [(str(src.target), str(n.target)) for n, _ in g.module_calls(nn.BatchNorm2d)
             if (src := g.producer(n)) is not None and isinstance(g.module(src), nn.Conv2d) and len(g.users(src)) == 1]  # fmt: skip
    # every BN of ResNet-18 follows its conv directly: stem + 16 body convs + 3 projection shortcuts
    assert len(pairs) == 20 == sum(isinstance(m, nn.BatchNorm2d) for m in g.root.modules())
    assert g.input_shapes == () and g.shape(next(iter(g.calls()))) is None


def test_receptive_fields_of_a_users_graph_module() -> None:
    from torch import fx

    from edgecnn.analysis.receptive import receptive_fields

    gm = fx.symbolic_trace(Inception())  # fx's own tracer: no scopes, no shapes yet
    rfs = receptive_fields(gm, torch.zeros(1, 3, 41, 41))
    assert (rfs["output"].size, rfs["output"].jump, rfs["output"].start) == ((15, 15), (2, 2), (1, 1))


class MathOnShape(nn.Module):
    """``math.sqrt`` of a traced size: fx traces it only with its math autowrap (the lean trace's retry)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y / math.sqrt(y.shape[1])


def test_math_on_a_traced_value_retraces_with_autowrap() -> None:
    g = trace_graph(MathOnShape(), torch.zeros(1, 3, 8, 8))
    assert [n.target for n in g.nodes if n.op == "call_function"][-2:] == [math.sqrt, operator.truediv]
    assert g.shape(g.output().args[0]) == (1, 8, 6, 6)


def test_fallback_refuses_an_input_too_large_to_run_before_allocating(monkeypatch) -> None:
    """Issue 13, point 7: the hooks fallback runs real compute, so its peak is estimated and bounded first."""
    from edgecnn.analysis.hooks import fallback_peak_bytes

    model = DataDependent()
    x = torch.zeros(1, 3, 16, 16, device="meta")
    widest = max(m.in_channels + m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    params = sum(p.numel() for p in model.parameters()) * 4
    assert fallback_peak_bytes(model, [x]) == 3 * 16 * 16 * 4 + 16 * 16 * widest * 4 + params
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", "1")
    with pytest.raises(ValueError, match=r"forward-hooks fallback .* 1×3×20000×20000: analyse a smaller input.*"
                                         r"EDGECNN_MAX_MEMORY_GB"):
        analyze(model, (3, 20000, 20000))  # ~ 20 GB if it ran; refused at once
    assert analyze(model, (3, 16, 16)).mode == "hooks"  # a small input still falls back and runs
