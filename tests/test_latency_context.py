"""In-context ONNX Runtime block timing: the context graphs, the marginal arithmetic, the table's block_method.

No timing assertions: the graphs are checked by structure and by their outputs
(PyTorch as reference), the marginal arithmetic on a fake clock where every
call takes a known time, and real measurements only for being finite.
"""

import json
from dataclasses import replace
import math
import os
import tempfile

import pytest
import torch

from edgecnn.export import onnx_bytes, onnx_op_counts
from edgecnn.latency import context
from edgecnn.latency.context import context_graphs, marginal_stats, ort_block_in_context, shape_preserving
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import Reference, TimingConfig
from edgecnn.latency.table import LatencyTable, block_input, block_key, new_table
from edgecnn.plan import resolve

FAST = TimingConfig(warmup=1, min_repeats=2, max_repeats=4, round_size=2, max_seconds=1.0, retries=0)
ARCH = "conv_k3_s2_c8 ir_c8 ir_s2_c16 dropout_p0.2 gap fc"


def plans():
    return resolve(ARCH, num_classes=10, input_size=32)


def test_context_graphs_hold_pre_block_post_and_compute_what_the_block_does():
    p = plans()[1]  # ir_c8 at 16x16: shape-preserving
    x = block_input(p, 1)
    g = context_graphs(p, x, stack=2)
    pre, first, second, post = g.with_block
    assert g.stack == 2 and shape_preserving(p)
    with torch.no_grad():
        want = second(first(pre(x))).mean(dim=(2, 3))  # the block twice on pre's output, then pooled
        assert torch.allclose(g.with_block(x), want)
        assert torch.allclose(g.without_block(x), pre(x).mean(dim=(2, 3)))
    # ONNX: pre's 1x1 conv in both; the stacked graph adds the block's convs twice
    ops = [onnx_op_counts(onnx_bytes(m, x)) for m in (g.without_block, context_graphs(p, x).with_block, g.with_block)]
    block_convs = ops[1]["Conv"] - ops[0]["Conv"]
    assert ops[0]["Conv"] == 1 and block_convs == 3  # expand, depthwise, project
    assert ops[2]["Conv"] - ops[0]["Conv"] == 2 * block_convs


def test_first_block_reads_the_graph_input_and_vectors_get_no_pool():
    stem, *_, fc = plans()
    g = context_graphs(stem, block_input(stem, 1))
    assert onnx_op_counts(onnx_bytes(g.without_block, block_input(stem, 1))).get("Conv", 0) == 0  # no pre
    v = block_input(fc, 1)
    assert v.dim() == 2
    with torch.no_grad():
        out = context_graphs(fc, v).with_block(v)
    assert out.shape == (1, 10)  # the classifier's logits: no pooling after a vector


def test_stacking_a_shape_changing_block_is_refused():
    p = plans()[2]  # ir_s2_c16: 8 -> 16 channels, 16x16 -> 8x8
    assert not shape_preserving(p)
    with pytest.raises(ValueError, match="only shape-preserving blocks can be stacked: use stack=1"):
        context_graphs(p, block_input(p, 1), stack=2)


def _optimized_ops(model_bytes: bytes) -> dict[str, int]:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    out: dict[str, int] = {}
    for node in graph.node:
        out[node.op_type] = out.get(node.op_type, 0) + 1
    return out


def test_a_block_that_is_an_identity_after_export_leaves_the_graph_unchanged():
    """Dropout exports to nothing: ORT runs the same graph with and without it, so its marginal cost is ~0."""
    p = plans()[3]
    x = block_input(p, 1)
    g = context_graphs(p, x)
    assert _optimized_ops(onnx_bytes(g.with_block, x)) == _optimized_ops(onnx_bytes(g.without_block, x))


class FakeClock:
    """perf_counter that advances only when a fake workload runs (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, ms: float):
        def run() -> None:
            self.now += ms / 1e3

        return run


@pytest.mark.parametrize("slowdown", [1.0, 2.0])
def test_marginal_is_the_difference_normalised_by_the_reference(monkeypatch, slowdown):
    clock = FakeClock()
    monkeypatch.setattr(context.time, "perf_counter", clock)
    # at nominal speed: reference 2 ms, with 3 ms, without 1 ms; the machine runs `slowdown` times slower
    ref = Reference(clock.work(2.0 * slowdown), baseline_ms=2.0)
    with_fn, without_fn = clock.work(3.0 * slowdown), clock.work(1.0 * slowdown)
    s = marginal_stats(with_fn, without_fn, ref, FAST)
    assert s.median_ms == pytest.approx(2.0) and s.min_ms == pytest.approx(2.0)
    assert s.raw_median_ms == pytest.approx(2.0 * slowdown) and s.drift == pytest.approx(slowdown)
    # two copies of the block in `with`: the entry is per copy
    assert marginal_stats(clock.work(5.0), clock.work(1.0), Reference(clock.work(2.0), 2.0), FAST, stack=2).median_ms \
        == pytest.approx(2.0)  # fmt: skip


def test_measured_in_context_values_are_finite():
    pytest.importorskip("onnxruntime")
    from edgecnn.latency.reference import make_reference

    ref = make_reference(backend="onnxruntime", threads=1, baseline=1.0)
    cache: dict = {}
    for p in plans():
        s = ort_block_in_context(p, block_input(p, 1), threads=1, reference=ref, config=FAST, without_cache=cache)
        assert all(math.isfinite(v) for v in (s.median_ms, s.q1_ms, s.q3_ms, s.min_ms)) and s.repeats >= 2
    # one `pre → post` session per input shape (the stem reads the graph input: a shape of its own)
    assert len(cache) == len({(tuple(block_input(p, 1).shape), p.position == 0) for p in plans()})


def test_block_method_is_stored_and_old_tables_read_as_profiled(tmp_path):
    table = new_table(backend="onnxruntime", threads=1)
    assert table.block_method == "context"
    path = table.save(tmp_path / "t.json")
    assert LatencyTable.load(path).block_method == "context"
    data = json.loads(path.read_text())
    del data["block_method"]  # a table written before in-context timing
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert LatencyTable.load(old).block_method == "profile"
    data["block_method"] = "guess"
    old.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown block_method 'guess'.*rebuild"):
        LatencyTable.load(old)


def test_a_profile_table_keeps_measuring_its_way(monkeypatch):
    pytest.importorskip("onnxruntime")
    calls = []
    monkeypatch.setattr(context, "ort_block_in_context", lambda *a, **k: calls.append(1))
    table = LatencyTable(fingerprint(backend="onnxruntime", threads=1), config=FAST, profile_runs=2,
                         block_method="profile", reference_ms=1.0)  # fmt: skip
    p = plans()[1]
    e = table.measure_block(p)
    assert calls == [] and e.repeats == 2 and e.median_ms > 0 and block_key(p).startswith("ir|")


def test_cpu_clock_times_with_the_thread_clock_and_only_one_cpu_thread(monkeypatch):
    from edgecnn.latency.measure import measure, time_fn

    with pytest.raises(ValueError, match="unknown clock 'gpu'"):
        TimingConfig(clock="gpu")
    cpu = TimingConfig(warmup=1, min_repeats=2, max_repeats=4, round_size=2, max_seconds=1.0, retries=0, clock="cpu")
    thread, wall = FakeClock(), FakeClock()
    monkeypatch.setattr(context.time, "thread_time", thread)
    monkeypatch.setattr(context.time, "perf_counter", wall)

    def run() -> None:  # 3 ms on this thread's CPU, 5 ms of waiting for it (other processes had the core)
        thread.work(3.0)()
        wall.work(8.0)()

    assert time_fn(run, cpu).median_ms == pytest.approx(3.0)
    assert time_fn(run, replace(cpu, clock="wall")).median_ms == pytest.approx(8.0)
    with pytest.raises(ValueError, match="'cpu' clock times one CPU thread; got 2 thread"):
        measure(torch.nn.Identity(), (1, 4), threads=2, config=cpu)


def test_a_table_keeps_the_clock_it_was_timed_with(tmp_path):
    table = new_table(backend="eager", threads=1, config=TimingConfig(clock="cpu"))
    path = table.save(tmp_path / "t.json")
    assert LatencyTable.load(path).config.clock == "cpu"
    data = json.loads(path.read_text())
    del data["clock"]  # older tables were timed by the wall clock
    path.write_text(json.dumps(data))
    assert LatencyTable.load(path).config.clock == "wall"
