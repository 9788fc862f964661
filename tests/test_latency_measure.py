import importlib
from dataclasses import replace

import pytest
import torch
from torch import nn

from edgecnn.latency.measure import TimingConfig, measure, summarize, time_fn, torch_threads
from edgecnn.latency.per_layer import per_layer

M = importlib.import_module("edgecnn.latency.timing")  # the module (the package re-exports the functions)
D = importlib.import_module("edgecnn.latency.drift")
FAST = TimingConfig(warmup=2, min_repeats=4, max_repeats=20, round_size=2, max_seconds=2.0, retries=0)


def test_summarize_hand_values():
    # inclusive quartiles of 1..5: q1 = 2, q3 = 4
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median_ms, s.q1_ms, s.q3_ms, s.min_ms, s.mean_ms, s.repeats) == (3.0, 2.0, 4.0, 1.0, 3.0, 5)
    assert s.iqr_ms == 2.0
    with pytest.raises(ValueError):
        summarize([])


class FakeClock:
    """perf_counter that advances by the next duration each time the timed function runs."""

    def __init__(self, durations):
        self.t = 0.0
        self.durations = durations
        self.calls = 0

    def __call__(self):
        return self.t

    def run(self):
        self.t += self.durations(self.calls)
        self.calls += 1


def test_stops_when_median_is_stable(monkeypatch):
    clock = FakeClock(lambda i: 0.001)  # every run takes exactly 1 ms
    monkeypatch.setattr(M.time, "perf_counter", clock)
    cfg = TimingConfig(warmup=3, min_repeats=20, round_size=10, max_repeats=500, retries=0)
    s = time_fn(clock.run, cfg)
    # first check at 20 samples records the median, second at 30 finds it unchanged
    assert s.repeats == 30 and s.stable
    assert clock.calls == 33  # 3 warm-up runs are not timed
    assert s.median_ms == pytest.approx(1.0) and s.iqr_ms == pytest.approx(0.0)


def test_cap_when_median_keeps_moving(monkeypatch):
    clock = FakeClock(lambda i: 0.001 * (i + 1))  # ever slower: the median never settles
    monkeypatch.setattr(M.time, "perf_counter", clock)
    cfg = TimingConfig(warmup=0, min_repeats=10, round_size=10, max_repeats=60, retries=0, max_seconds=1e9)
    s = time_fn(clock.run, cfg)
    assert s.repeats == 60 and not s.stable
    assert s.min_ms == pytest.approx(1.0) and s.median_ms == pytest.approx(30.5)


def test_bad_config():
    with pytest.raises(ValueError):
        TimingConfig(min_repeats=10, max_repeats=5)


def test_measure_tiny_model_statistics_are_sane():
    before = torch.get_num_threads()
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    m = measure(model, (1, 3, 16, 16), threads=1, config=FAST, label="tiny")
    s = m.stats
    assert 0 < s.min_ms <= s.q1_ms <= s.median_ms <= s.q3_ms
    assert FAST.min_repeats <= s.repeats <= FAST.max_repeats and s.repeats % FAST.round_size == 0
    assert m.fingerprint.threads == 1 and m.fingerprint.backend == "eager" and m.batch == 1
    assert m.input_shape == (1, 3, 16, 16)
    assert torch.get_num_threads() == before  # restored
    assert model.training  # the caller's model is untouched (we time a copy in eval mode)


def test_thread_context_restores_and_rejects_bad_counts():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with torch_threads(0):
            pass


def test_bad_backend_device_and_channels_last_on_ort():
    model = nn.Conv2d(3, 4, 1)
    with pytest.raises(ValueError, match="backend"):
        measure(model, (1, 3, 8, 8), backend="tvm", config=FAST)
    with pytest.raises(ValueError, match="device"):
        measure(model, (1, 3, 8, 8), device="tpu", config=FAST)
    with pytest.raises(ValueError, match="channels_last"):
        measure(model, (1, 3, 8, 8), backend="onnxruntime", channels_last=True, config=FAST)


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_per_layer_names_every_block(backend):
    from edgecnn.build import build

    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    net = build("conv_k3_s2_c8 ir_c8 ir_s2_c16_se0.25 gap fc", num_classes=10)
    b = per_layer(net, (1, 3, 32, 32), backend=backend, threads=1, config=FAST, profile_runs=3)
    assert [layer.name for layer in b.layers][:3] == ["blocks.0", "blocks.1", "blocks.2"]
    assert b.layers[2].kind == "ir_s2_c16_se0.25"
    # the convs hold real work: each conv-bearing block has a positive time
    assert all(layer.median_ms > 0 for layer in b.layers[:3])
    assert b.layer_sum_ms > 0 and b.total.stats.median_ms > 0
    if backend == "onnxruntime":  # the profiler's shares scaled to the unprofiled run: they add up to it
        assert b.layer_sum_ms == pytest.approx(b.total.stats.median_ms, rel=1e-9)
        assert b.profiled_sum_ms is not None and b.profiled_sum_ms > 0
        assert f"summed to {b.profiled_sum_ms:.3f} ms against {b.total.stats.median_ms:.3f} ms unprofiled" in b.method
    else:
        assert b.profiled_sum_ms is None


def _stats(drift: float) -> "M.LatencyStats":
    return M.LatencyStats(1.0, 0.9, 1.1, 0.8, 1.0, 10, True, drift=drift)


def test_drifted_measurements_are_retried_until_one_is_within_max_drift(monkeypatch):
    monkeypatch.setattr(M.time, "sleep", lambda s: None)
    drifts = iter([1.8, 1.5, 1.2, 1.1])
    cfg = TimingConfig(max_foreign=None, max_drift=1.3, retries=3)
    got = M.retry_disturbed(lambda: _stats(next(drifts)), cfg)
    assert got.drift == 1.2
    assert next(drifts) == 1.1  # the fourth attempt never ran: the third was within the limit


def test_after_the_last_retry_the_least_drifted_attempt_is_kept(monkeypatch):
    monkeypatch.setattr(M.time, "sleep", lambda s: None)
    drifts = iter([1.8, 1.4, 1.6])
    got = M.retry_disturbed(lambda: _stats(next(drifts)), TimingConfig(max_foreign=None, max_drift=1.3, retries=2))
    assert got.drift == 1.4  # not the last one (1.6)
    # without max_drift, drift is not a disturbance: one attempt
    drifts = iter([1.8, 1.0])
    assert M.retry_disturbed(lambda: _stats(next(drifts)), TimingConfig(max_foreign=None, retries=2)).drift == 1.8


def test_disturbance_orders_by_drift_then_foreign_share():
    cfg = TimingConfig(max_foreign=0.2, max_drift=1.3)
    assert M.disturbance(_stats(1.2), cfg) == (0.0, 0.0)
    assert M.disturbance(M.LatencyStats(1, 1, 1, 1, 1, 5, True, foreign_cpu=0.5, drift=1.5), cfg) == pytest.approx(
        (0.2, 0.3))
    with pytest.raises(ValueError, match="max_drift"):
        TimingConfig(max_drift=0.9)


def test_calm_samples_drop_the_runs_of_a_disturbed_moment_by_hand():
    times, refs = [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0, 1.0]  # local drifts 1, 1.5, 2, 1.5
    samples, kept = D.calm_samples(times, refs, 1.0, 1.5, keep_at_least=2)
    assert kept == [0, 1, 3] and samples == pytest.approx([1.0, 1 / 1.5, 1 / 1.5])
    samples, kept = D.calm_samples(times, refs, 1.0, 1.2, keep_at_least=2)  # one calm run only: all are kept
    assert kept == [0, 1, 2, 3] and samples == pytest.approx([1.0, 1 / 1.5, 0.5, 1 / 1.5])
    assert D.calm_samples(times, refs, 1.0, None, keep_at_least=1)[1] == [0, 1, 2, 3]


def test_time_fn_with_max_drift_summarises_the_calm_runs(monkeypatch):
    # the network takes 1 ms; the reference 1 ms, except that every third pair of runs is disturbed:
    # the network then takes 1.5 ms and the reference 3 ms (normalised, that run would read 0.5 ms)
    clock = FakeClock(lambda i: 0.0)
    monkeypatch.setattr(M.time, "perf_counter", clock)
    state = {"ref": 0}

    def net():
        clock.t += 0.0015 if state["ref"] % 3 == 2 else 0.001

    def ref():
        state["ref"] += 1
        clock.t += 0.003 if state["ref"] % 3 == 0 else 0.001

    # a third of the runs is calm: min_repeats 4 lets the first check (10 runs) summarise the calm ones
    cfg = TimingConfig(warmup=0, min_repeats=4, round_size=10, max_repeats=30, retries=0, max_seconds=1e9,
                       max_foreign=None)  # fmt: skip
    plain = time_fn(net, cfg, reference=M.Reference(ref, 1.0))
    state["ref"] = 0
    calm = time_fn(net, replace(cfg, max_drift=1.5), reference=M.Reference(ref, 1.0))
    assert calm.median_ms == pytest.approx(1.0) and calm.drift == pytest.approx(1.0)
    assert plain.median_ms == pytest.approx(0.75)  # runs at 1, 0.75 and 0.5 ms normalised
    # the median reference is undisturbed (a third of them ran slow): retrying on the measurement's drift alone
    # would not have caught these runs; dropping them did
    assert plain.drift == pytest.approx(1.0)
