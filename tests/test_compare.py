"""Before/after verdicts (edgecnn.latency.compare): interleaved rounds, fastest runs, median ratio, noise band."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from edgecnn.latency.compare import Comparison, compare_latency, fastest_runs, interleaved, judge
from edgecnn.latency.timing import LatencyStats, TimingConfig, summarize, time_fn


def test_interleaved_alternates_the_order() -> None:
    calls: list[str] = []
    cfg = TimingConfig(warmup=0, min_repeats=2, max_repeats=2, round_size=2, max_foreign=None)

    def timer(name: str):
        return lambda: time_fn(lambda: calls.append(name), cfg)

    seen: list[tuple[int, int]] = []
    out = interleaved({"a": timer("a"), "b": timer("b")}, rounds=3, on_round=lambda d, t: seen.append((d, t)))
    blocks = [(k, len(list(g))) for k, g in itertools.groupby(calls)]
    assert blocks == [("a", 2), ("b", 4), ("a", 4), ("b", 2)]  # rounds a b | b a | a b, two runs per timing
    assert all(len(out[k]) == 3 and all(isinstance(s, LatencyStats) for s in out[k]) for k in "ab")
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        interleaved({"a": timer("a")}, rounds=0)


def _cmp(before: list[float], after: list[float]) -> Comparison:
    return Comparison("onnxruntime", 1, "cpu", "cpu", tuple(before), tuple(after))


def test_ratio_is_the_median_of_per_round_ratios_with_its_band() -> None:
    c = _cmp([1.0, 2.0, 1.0], [0.5, 1.2, 0.7])
    assert c.ratios == pytest.approx((0.5, 0.6, 0.7))
    assert c.ratio == pytest.approx(0.6) and c.band == pytest.approx((0.5, 0.7))
    assert c.before == pytest.approx(1.0) and c.after == pytest.approx(0.7)
    d = c.to_dict()
    assert d["ratio"] == pytest.approx(0.6) and d["rounds"] == 3 and "60.0%" in d["text"]
    with pytest.raises(ValueError, match="same number"):
        _cmp([1.0], [1.0, 2.0])


def test_one_outlier_round_does_not_make_a_budget_met() -> None:
    # the case from the field: the after network is 94% of the before one, one round caught it 2.2x faster
    c = _cmp([0.274, 0.276, 0.275, 0.273, 0.277], [0.259, 0.125, 0.258, 0.257, 0.260])
    v = judge(c, share=0.6)
    assert not v.met and v.reason.startswith("missed by")
    assert v.over == pytest.approx(c.after / (0.6 * c.before) - 1)
    assert judge(c, share=0.95).met  # 94% is within a 95% budget
    # the same rounds against a millisecond budget: the median after (0.258), not the outlier (0.125)
    assert not judge(c, limit_ms=0.2).met and judge(c, limit_ms=0.26).met


def test_one_slow_round_does_not_make_it_missed_and_tolerance_is_counted() -> None:
    c = _cmp([1.0, 1.0, 1.0], [0.49, 0.9, 0.5])
    assert judge(c, share=0.5).met
    c2 = _cmp([1.0, 1.0, 1.0], [0.52, 0.51, 0.53])
    assert not judge(c2, share=0.5).met and judge(c2, share=0.5, tolerance=0.05).met
    with pytest.raises(ValueError, match="exactly one"):
        judge(c, share=0.5, limit_ms=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        judge(c, share=0.5, tolerance=-0.1)


def test_compare_latency_takes_fastest_runs_per_round_from_a_scripted_stopwatch() -> None:
    """A fake stopwatch: each timing returns scripted samples; the comparison keeps each round's fastest run."""
    script = iter([
        [1.0, 1.1, 1.2], [0.6, 0.7, 0.9],  # round 1: before, after
        [0.1, 0.7, 0.8], [1.0, 1.1, 1.3],  # round 2 (after first): the after network's one outlier run, 0.1 ms
        [1.0, 1.05, 1.1], [0.62, 0.65, 0.7],  # round 3: before, after
    ])  # fmt: skip
    order: list[object] = []

    def stopwatch(fn, cfg: TimingConfig) -> LatencyStats:
        order.append(fn)
        return summarize(next(script))

    net_a, net_b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 2, 3)
    c = compare_latency(net_a, net_b, (1, 3, 8, 8), backend="eager", threads=1, rounds=3, time=stopwatch)
    assert c.after_ms == (0.6, 0.1, 0.62) and c.before_ms == (1.0, 1.0, 1.0)
    assert c.clock == "cpu" and c.target == "eager" and c.rounds == 3
    assert c.ratio == pytest.approx(0.6)  # the outlier round (0.1) is one of three: the median ignores it
    assert not judge(c, share=0.5).met
    assert order[0] is not order[1] and order[2] is order[1]  # B A in round 2: the after network first


def test_fastest_runs_times_any_number_of_networks_in_alternating_rounds() -> None:
    """The search's finalists: three networks, two rounds (A B C, then C B A), each one's statistics per round."""
    script = iter([[3.0, 3.5], [2.0, 2.2], [1.0, 1.4],  # round 1: a, b, c
                   [1.1, 1.2], [2.1, 2.5], [2.9, 3.3]])  # round 2 reversed: c, b, a  # fmt: skip
    order: list[object] = []

    def stopwatch(fn, cfg: TimingConfig) -> LatencyStats:
        order.append((fn, cfg.clock, cfg.max_seconds))
        return summarize(next(script))

    nets = {"a": nn.Conv2d(3, 8, 3), "b": nn.Conv2d(3, 4, 3), "c": nn.Conv2d(3, 2, 3)}
    clock, runs = fastest_runs(nets, (1, 3, 8, 8), backend="eager", threads=1, rounds=2, time=stopwatch)
    assert clock == "cpu" and list(runs) == ["a", "b", "c"]
    assert [[s.min_ms for s in runs[n]] for n in "abc"] == [[3.0, 2.9], [2.0, 2.1], [1.0, 1.1]]
    assert [o[0] for o in order[3:]] == [o[0] for o in reversed(order[:3])]  # the second round in reverse
    assert {o[1:] for o in order} == {("cpu", 1.0)}  # the comparisons' own timing, on the CPU clock
    with pytest.raises(ValueError, match="at least one network"):
        fastest_runs({}, (1, 3, 8, 8), backend="eager", threads=1)


def test_compare_latency_on_a_real_target_orders_a_big_and_a_small_network() -> None:
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    small = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    torch.manual_seed(0)
    cfg = TimingConfig(warmup=2, min_repeats=5, max_repeats=10, max_seconds=0.3, retries=0, max_foreign=None)
    c = compare_latency(big, small, (1, 3, 32, 32), backend="eager", threads=1, rounds=3, config=cfg)
    assert c.ratio < 0.5  # 256x fewer MACs in the second conv: far faster however loaded the machine is
    assert len(c.before_median_ms) == 3 and all(m >= f for m, f in zip(c.before_median_ms, c.before_ms))


def test_cpu_clock_is_refused_with_threads() -> None:
    cfg = TimingConfig(clock="cpu")
    with pytest.raises(ValueError, match="one CPU thread"):
        compare_latency(nn.Identity(), nn.Identity(), (1, 3, 4, 4), backend="eager", threads=2, config=cfg)


def test_rounds_are_spread_by_the_pause_between_them() -> None:
    """``pause_s``: a pause between rounds (none before the first or after the last), so that one sitting spans
    more than one episode of contention; fastest_runs passes it on."""
    events: list[object] = []
    stats = summarize([1.0])

    def timer(name: str):
        return lambda: events.append(name) or stats

    interleaved({"a": timer("a"), "b": timer("b")}, rounds=3, pause_s=2.5, sleep=events.append)
    assert events == ["a", "b", 2.5, "b", "a", 2.5, "a", "b"]
    events.clear()
    interleaved({"a": timer("a")}, rounds=2, sleep=events.append)  # the default: no pause
    assert events == ["a", "a"]
    with pytest.raises(ValueError, match="pause_s must be >= 0 seconds"):
        interleaved({"a": timer("a")}, rounds=2, pause_s=-1.0)
    events.clear()
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    _, runs = fastest_runs({"n": net}, (1, 3, 8, 8), backend="eager", threads=1, rounds=3, pause_s=0.25,
                           sleep=events.append, time=lambda f, config: stats)  # fmt: skip
    assert events == [0.25, 0.25] and len(runs["n"]) == 3


def test_anchored_ms_is_the_median_per_round_ratio_to_the_anchor_times_its_recorded_latency():
    from edgecnn.latency.compare import ANCHOR, Anchor, anchored_ms
    from edgecnn.latency.timing import summarize

    runs = {ANCHOR: [summarize([v]) for v in (0.55, 0.50, 0.60)],  # the anchor, recorded at 0.40 ms
            "a": [summarize([v, 9.0]) for v in (0.44, 0.45, 0.42)],  # the fastest run of each round counts
            "b": [summarize([v]) for v in (0.66, 0.40, 0.90)]}  # fmt: skip
    got = anchored_ms(runs, Anchor("conv_k3_c8 gap fc", 0.40))
    assert set(got) == {"a", "b"}
    assert got["a"] == pytest.approx(0.40 * 0.8)  # ratios 0.8, 0.9, 0.7 -> 0.8
    assert got["b"] == pytest.approx(0.40 * 1.2)  # ratios 1.2, 0.8, 1.5 -> 1.2
    with pytest.raises(ValueError, match="timed in 2 rounds and the anchor in 3"):
        anchored_ms({**runs, "c": runs["a"][:2]}, Anchor("conv_k3_c8 gap fc", 0.40))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="anchor's latency must be a positive"):
            Anchor("conv_k3_c8 gap fc", bad)


def test_sitting_ms_times_the_anchor_with_the_networks_and_refuses_its_name(monkeypatch):
    import edgecnn.latency.compare as C
    from edgecnn.latency.timing import summarize

    seen = {}

    def scripted(nets, shape, **kw):
        seen.update(names=sorted(nets), shape=shape, **kw)
        return "cpu", {n: [summarize([1.0 if n == C.ANCHOR else 0.5])] * 3 for n in nets}

    monkeypatch.setattr(C, "fastest_runs", scripted)
    net = torch.nn.Conv2d(3, 4, 3)
    ms, runs = C.sitting_ms({"x": net}, (1, 3, 16, 16), anchor=C.Anchor("conv_k3_c8 gap fc", 0.3), num_classes=7,
                            backend="onnxruntime", rounds=3)  # fmt: skip
    assert ms == {"x": pytest.approx(0.15)} and sorted(runs) == [C.ANCHOR, "x"]
    assert seen == {"names": [C.ANCHOR, "x"], "shape": (1, 3, 16, 16), "backend": "onnxruntime", "rounds": 3}
    assert C.sitting_ms({"x": net}, (1, 3, 16, 16), backend="onnxruntime")[0] == {"x": 0.5}  # no anchor: as timed
    with pytest.raises(ValueError, match="names the anchor"):
        C.sitting_ms({C.ANCHOR: net}, (1, 3, 16, 16), anchor=C.Anchor("conv_k3_c8 gap fc", 0.3))
