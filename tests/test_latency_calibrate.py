import importlib
import random

import pytest

from edgecnn.arch import ArchSpec
from edgecnn.latency.calibrate import Calibration, fit, group_of, group_sums
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.drift import normalized_samples
from edgecnn.latency.measure import LatencyStats, Reference, TimingConfig, time_fn
from edgecnn.latency.predict import predict
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.latency.validate import ValidationReport, ValidationRow, error_summary, sample_archs, validate
from edgecnn.plan import resolve
from edgecnn.search.space import MOBILENET_V3_SPACE

M = importlib.import_module("edgecnn.latency.timing")
ARCH = "conv_k3_s2_c8 ir_r2_c8 gap fc"


def test_groups_of_keys():
    plans = resolve(ARCH, num_classes=10, input_size=32)
    assert [group_of(block_key(p)) for p in plans] == ["fixed", "body", "body", "fixed", "fixed"]
    assert group_of("overhead|c3|in32x32|b1|ncls10") == "fixed"
    assert group_sums([("ir|x", 1.5), ("conv|y", 2.0), ("ir|z", 0.5)]) == {"body": 2.0, "fixed": 2.0}


def test_fit_recovers_a_known_correction_exactly():
    # measured = 0.8·body + 1.3·fixed exactly: the relative least squares must return those scales
    sums = [{"body": b, "fixed": f} for b, f in [(10, 2), (6, 2.5), (14, 1.8), (8, 3), (12, 2.2), (5, 2)]]
    measured = [0.8 * s["body"] + 1.3 * s["fixed"] for s in sums]
    cal = fit(sums, measured, info={"seed": 7})
    assert cal.scales["body"] == pytest.approx(0.8, rel=1e-12) and cal.scales["fixed"] == pytest.approx(1.3, rel=1e-12)
    assert cal.fit_mape == pytest.approx(0.0, abs=1e-12) and cal.networks == 6
    # before calibration the plain sum was off: (10+2)/(8+2.6) − 1 for the first network, etc.
    raw = sum(abs((s["body"] + s["fixed"]) / y - 1) for s, y in zip(sums, measured)) / 6
    assert cal.raw_mape == pytest.approx(raw)
    assert Calibration.from_dict(cal.to_dict()) == cal


def test_fit_falls_back_to_one_scale_when_a_group_scale_would_be_negative():
    # measured ≈ 1.0·body − 0.5·fixed (nonsense): the per-group fit is negative, the common scale is used
    sums = [{"body": b, "fixed": f} for b, f in [(10, 2), (6, 2.5), (14, 1.8), (8, 3)]]
    measured = [s["body"] - 0.5 * s["fixed"] for s in sums]
    cal = fit(sums, measured)
    r = [(s["body"] + s["fixed"]) / y for s, y in zip(sums, measured)]
    assert cal.scales["body"] == cal.scales["fixed"] == pytest.approx(sum(r) / sum(v * v for v in r))
    assert "common scale" in cal.info["fallback"]


def test_fit_rejects_too_few_or_degenerate_networks():
    with pytest.raises(ValueError, match="at least 4"):
        fit([{"body": 1.0, "fixed": 1.0}] * 3, [2.0] * 3)
    with pytest.raises(ValueError, match="vary enough"):  # every network the same mix: scales not separable
        fit([{"body": 2.0, "fixed": 1.0}] * 5, [3.0, 3.1, 2.9, 3.0, 3.0])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        fit([{"body": 1.0}, {"body": 2.0}], [1.0])


def calibrated_table() -> LatencyTable:
    plans = resolve(ARCH, num_classes=10, input_size=32)
    table = LatencyTable(fingerprint(backend="eager", threads=1), reference_ms=1.25)
    for p, v in zip(plans, [1.0, 0.25, 0.25, 0.125, 0.5]):
        table.entries[block_key(p)] = TableEntry(v, v, v, v, 1)
    table.entries[overhead_key(in_chans=3, input_size=(32, 32), batch=1, num_classes=10)] = TableEntry(2, 2, 2, 2, 1)
    table.calibration = Calibration({"body": 0.5, "fixed": 2.0}, 6, 0.01, 0.2, {"seed": 5, "n": 3})
    return table


def test_predict_applies_the_calibration(tmp_path):
    table = calibrated_table()
    pred = predict(table, ARCH, input_size=32, num_classes=10)
    # body = the two inverted residuals (0.5 ms), fixed = conv + gap + fc + overhead (3.625 ms)
    assert pred.raw_ms == 4.125 and pred.calibrated
    assert pred.total_ms == 0.5 * 0.5 + 2.0 * 3.625
    assert predict(table, ARCH, input_size=32, num_classes=10, calibrated=False).total_ms == 4.125
    loaded = LatencyTable.load(table.save(tmp_path / "t.json"), expect=table.fingerprint)
    assert loaded.calibration == table.calibration and loaded.reference_ms == 1.25


def test_validate_refuses_calibration_networks():
    table = calibrated_table()
    draw = MOBILENET_V3_SPACE.sample
    with pytest.raises(ValueError, match="2 of the validation networks were used to calibrate"):
        validate(table, [*sample_archs(2, draw, seed=5), ARCH], input_size=32, sampler=draw)


def test_sample_archs_draws_from_the_sampler_it_is_given():
    def draw(rng):  # any callable rng -> arch string or spec; canonical strings come back
        return f"conv_k3_c{8 * rng.randint(1, 4)}_relu gap fc"

    archs = sample_archs(5, draw, seed=3)
    rng = random.Random(3)
    assert archs == [f"conv_c{8 * rng.randint(1, 4)} gap fc" for _ in range(5)]
    assert sample_archs(3, MOBILENET_V3_SPACE.sample, seed=7) == [
        MOBILENET_V3_SPACE.sample(r).format() for r in [random.Random(7)] for _ in range(3)
    ]
    with pytest.raises(ValueError, match="must be positive"):
        sample_archs(0, draw)


class DriftingMachine:
    """perf_counter on a machine whose speed falls linearly: the k-th call of anything takes base × (1 + 0.1·k)."""

    def __init__(self):
        self.t, self.calls = 0.0, 0

    def __call__(self):
        return self.t

    def work(self, base_s):
        def run():
            self.t += base_s * (1 + 0.1 * self.calls)
            self.calls += 1

        return run


def test_reference_normalisation_cancels_a_synthetic_slowdown(monkeypatch):
    machine = DriftingMachine()
    monkeypatch.setattr(M.time, "perf_counter", machine)
    cfg = TimingConfig(warmup=2, min_repeats=10, max_repeats=10, round_size=10, retries=0, max_seconds=1e9)
    # the network takes 3× the reference; the reference's nominal time is 0.5 ms
    stats = time_fn(machine.work(3e-3), cfg, reference=Reference(machine.work(1e-3), 0.5))
    assert stats.median_ms == pytest.approx(1.5) and stats.min_ms == pytest.approx(1.5)
    assert stats.iqr_ms == pytest.approx(0.0, abs=1e-9)
    # without normalisation the same runs spread from 3·(1+0.1·5) ms to 3·(1+0.1·23) ms
    assert stats.raw_median_ms == pytest.approx(3 * (1 + 0.1 * 14))
    assert stats.drift == pytest.approx((1 + 0.1 * 14) / 0.5)
    with pytest.raises(ValueError, match="one reference time around each run"):
        normalized_samples([1.0, 2.0], [1.0, 1.0], 1.0)


def stats(median: float) -> LatencyStats:
    return LatencyStats(median, median, median, median, median, 10, True, raw_median_ms=2 * median)


def test_report_errors_and_noise_floor_by_hand():
    rows = (
        ValidationRow("a", 11.0, 12.0, stats(10.0), stats(10.4)),  # +10%, retest +4%
        ValidationRow("b", 19.0, 20.0, stats(20.0), stats(18.0)),  # −5%, retest −10%
        ValidationRow("c", 6.0, 6.0, stats(5.0), None),  # +20%, no retest
    )
    rep = ValidationReport(rows, 0.10, 32, 0)
    assert rep.errors == pytest.approx([0.1, -0.05, 0.2]) and rep.mape == pytest.approx(0.35 / 3)
    assert rep.within == pytest.approx(2 / 3)
    assert rep.noise() == pytest.approx([0.04, -0.1]) and rep.noise(normalized=False) == pytest.approx([0.04, -0.1])
    s = error_summary(rep.errors)
    assert s["within"] == pytest.approx({"0.05": 1 / 3, "0.10": 2 / 3, "0.20": 1.0})
    assert s["mean_error"] == pytest.approx(0.25 / 3) and s["max_abs_error"] == pytest.approx(0.2)
    d = rep.to_dict()
    assert d["noise_floor"]["n"] == 2 and d["predictor_uncalibrated"]["mape"] == pytest.approx((0.2 + 0 + 0.2) / 3)


def test_validate_in_rounds_prepares_each_network_once_and_merges_its_passes(monkeypatch):
    """rounds=3: every network exported once, timed 3 times for the measurement and 3 for the retest; a slow
    pass of three does not move the merged median (the noise floor it reports is that of merged measurements)."""
    V = importlib.import_module("edgecnn.latency.validate")  # the package re-exports a function of that name

    table = calibrated_table()
    archs = [ArchSpec.parse(a).format() for a in (ARCH, "conv_k3_s2_c8 ir_c8 gap fc")]  # as built nets spell them
    table.ensure(archs, input_size=32, num_classes=10)  # the second arch's blocks are all in the table
    prepared: list[str] = []
    script = {archs[0]: iter([10.0, 30.0, 10.4, 10.2, 10.1, 10.3]), archs[1]: iter([5.0, 5.2, 5.1, 50.0, 5.0, 5.05])}

    def fake_prepare(net, shape, **kw):
        arch = net.arch
        prepared.append(arch)
        return (lambda: stats(next(script[arch]))), {}

    monkeypatch.setattr(V, "prepare", fake_prepare)
    report = validate(table, archs, input_size=32, num_classes=10, rounds=3)
    assert sorted(prepared) == sorted(archs)  # one export per network for all six passes
    first, second = report.rows
    # ARCH: passes 10.0, 30.0 (slow), 10.4 -> 10.4; retest (reverse order) 10.2, 10.1, 10.3 -> 10.2
    assert first.measured.median_ms == 10.4 and first.retest.median_ms == 10.2 and first.measured.repeats == 30
    # the other: 5.0, 5.2, 5.1 -> 5.1; retest 50.0 (slow), 5.0, 5.05 -> 5.05
    assert second.measured.median_ms == 5.1 and second.retest.median_ms == 5.05
    assert all(next(it, None) is None for it in script.values())  # exactly 6 timings each
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        validate(table, archs, input_size=32, num_classes=10, rounds=0)


def test_calibrate_by_fastest_runs_fits_the_median_of_each_rounds_fastest_run(monkeypatch):
    """by="fastest": the networks timed back to back in rounds (fastest_runs), each one's latency the median over
    rounds of its fastest run — the scales then map the table to the latency the search's finalists are read by."""
    V = importlib.import_module("edgecnn.latency.validate")
    table = calibrated_table()
    archs = [ArchSpec.parse(a).format() for a in (ARCH, "conv_k3_s2_c8 ir_c8 gap fc", "conv_k3_s2_c16 ir_c16 gap fc",
                                                  "conv_k3_s2_c8 ir_r3_c8 gap fc")]  # fmt: skip
    table.ensure(archs, input_size=32, num_classes=10)  # blocks the table lacks measured now, before the fit
    per_round = {0: [[9.0, 12.0], [8.0, 30.0], [8.5, 9.0]], 1: [[4.0, 4.5], [6.0, 6.1], [4.2, 4.4]],  # (min, median)
                 2: [[7.0, 7.0], [7.1, 7.2], [6.9, 7.0]], 3: [[12.0, 13.0], [11.0, 11.5], [11.5, 12.0]]}  # fmt: skip
    seen = {}

    def scripted(nets, shape, *, backend, threads, device, rounds, pause_s, on_round=None):
        seen.update(n=len(nets), shape=shape, backend=backend, threads=threads, rounds=rounds, pause_s=pause_s)
        return "cpu", {k: [LatencyStats(md, lo, md, lo, md, 10, True) for lo, md in per_round[int(k)]] for k in nets}

    monkeypatch.setattr(importlib.import_module("edgecnn.latency.compare"), "fastest_runs", scripted)
    cal = V.calibrate(table, archs, input_size=32, num_classes=10, by="fastest", rounds=3, info={"seed": 1, "n": 4},
                      pause_s=1.5)  # fmt: skip
    assert seen == {"n": 4, "shape": (1, 3, 32, 32), "backend": "eager", "threads": 1, "rounds": 3, "pause_s": 1.5}
    sums = [group_sums((("overhead", p.overhead_ms), *p.blocks))
            for p in (predict(table, a, input_size=32, num_classes=10, calibrated=False) for a in archs)]  # fmt: skip
    want = fit(sums, [8.5, 4.2, 7.0, 11.5])  # the medians of the fastest runs: (9, 8, 8.5) -> 8.5, ...
    assert cal.scales == pytest.approx(want.scales) and cal.fit_mape == pytest.approx(want.fit_mape)
    assert cal.info == {"input_size": 32, "stat": "median", "by": "fastest", "seed": 1, "n": 4}
    with pytest.raises(ValueError, match="unknown calibration measurement 'wall'"):
        V.calibrate(table, archs, input_size=32, num_classes=10, by="wall")
    # with an anchor timed in the same rounds (2.0 ms each round, recorded at 1.0 ms: the machine is twice as slow
    # as when the target was set), each network reads half its fastest runs' median: the table is mapped to 1x speed
    per_round["__anchor__"] = [[2.0, 2.0]] * 3
    scripted_anchor = lambda nets, shape, **kw: ("cpu", {k: [LatencyStats(md, lo, md, lo, md, 10, True)  # noqa: E731
                                                            for lo, md in per_round[k if k == "__anchor__" else int(k)]]
                                                        for k in nets})  # fmt: skip
    monkeypatch.setattr(importlib.import_module("edgecnn.latency.compare"), "fastest_runs", scripted_anchor)
    anchor = V.Anchor("conv_k3_s2_c8 ir_c8 gap fc", 1.0)
    cal = V.calibrate(table, archs, input_size=32, num_classes=10, by="fastest", rounds=3, anchor=anchor)
    want = fit(sums, [4.25, 2.1, 3.5, 5.75])
    assert cal.scales == pytest.approx(want.scales) and cal.fit_mape == pytest.approx(want.fit_mape)
    assert cal.info["anchor"] == {"arch": anchor.arch, "ms": 1.0}
    with pytest.raises(ValueError, match="pass by='fastest'"):
        V.calibrate(table, archs, input_size=32, num_classes=10, anchor=V.Anchor("conv_k3_c8 gap fc", 0.4))
