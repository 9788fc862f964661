import json
from dataclasses import replace

import pytest

from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.predict import predict
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, new_table, overhead_key
from edgecnn.plan import resolve

FAST = TimingConfig(warmup=1, min_repeats=2, max_repeats=4, round_size=2, max_seconds=1.0, retries=0)
ARCH = "conv_k3_s2_c8 ir_r2_c8 gap fc"


def entry(ms: float) -> TableEntry:
    return TableEntry(ms, ms, ms, ms, 1)


def test_block_key_hand_written():
    plans = resolve(ARCH, num_classes=10, input_size=32)
    assert block_key(plans[0]) == (
        "conv|cin3|cout8|mid-|k3|s2|d1|g1|sq0|gate=-|act=relu|pre=False|skip=-|bn=True|bias=False|cls=0|in32x32|b1"
    )
    # the two repeats of ir_r2 are the same configuration (both stride 1, 8 -> 8, 16×16)
    assert block_key(plans[1]) == block_key(plans[2])
    assert block_key(plans[1]).startswith("ir|cin8|cout8|mid48|k3|s1|")
    assert block_key(plans[4]).endswith("|cls=1|inflat|b1") and block_key(plans[4], batch=4).endswith("|b4")
    # anything that changes the cost changes the key: SE, resolution
    se = resolve("conv_k3_s2_c8 ir_c8_se0.25 gap fc", num_classes=10, input_size=32)[1]
    big = resolve(ARCH, num_classes=10, input_size=64)[1]
    assert len({block_key(plans[1]), block_key(se), block_key(big)}) == 3
    with pytest.raises(ValueError, match="input_size"):
        block_key(resolve(ARCH)[0])


def synthetic_table() -> LatencyTable:
    """Entries set by hand: conv 1.0, ir 0.25 (used twice), gap 0.125, fc 0.5, overhead 2.0 ms."""
    plans = resolve(ARCH, num_classes=10, input_size=32)
    values = [1.0, 0.25, 0.25, 0.125, 0.5]
    table = LatencyTable(fingerprint(backend="eager", threads=1))
    for p, v in zip(plans, values):
        table.entries[block_key(p)] = entry(v)
    table.entries[overhead_key(in_chans=3, input_size=(32, 32), batch=1, num_classes=10)] = entry(2.0)
    return table


def test_predictor_is_exact_on_a_synthetic_table():
    pred = predict(synthetic_table(), ARCH, input_size=32, num_classes=10)
    assert pred.total_ms == 2.0 + 1.0 + 0.25 + 0.25 + 0.125 + 0.5
    assert pred.overhead_ms == 2.0 and [v for _, v in pred.blocks] == [1.0, 0.25, 0.25, 0.125, 0.5]


def test_predictor_names_missing_entries():
    # a k5 inverted residual is a new configuration (both repeats share one missing key)
    with pytest.raises(ValueError, match="lacks 2 of 6 entries.*first: ir\\|cin8\\|cout8\\|mid48\\|k5"):
        predict(synthetic_table(), "conv_k3_s2_c8 ir_r2_k5_c8 gap fc", input_size=32, num_classes=10)
    with pytest.raises(ValueError, match="statistic"):
        predict(synthetic_table(), ARCH, input_size=32, num_classes=10, stat="mean")


def test_save_load_round_trip(tmp_path):
    table = synthetic_table()
    table.call_overhead_ms = 0.01
    path = table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(path, expect=table.fingerprint)
    assert loaded.entries == table.entries and loaded.fingerprint == table.fingerprint
    assert loaded.call_overhead_ms == 0.01
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write leaves no temp file


def test_foreign_table_is_refused_unless_forced(tmp_path):
    table = synthetic_table()
    table.fingerprint = replace(table.fingerprint, cpu="Some Other CPU", backend="onnxruntime")
    path = table.save(tmp_path / "t.json")
    here = fingerprint(backend="eager", threads=1)
    with pytest.raises(ValueError, match="another device/backend.*cpu.*backend.*--force"):
        LatencyTable.load(path, expect=here)
    assert LatencyTable.load(path, expect=here, force=True).entries == table.entries


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="build-table"):
        LatencyTable.load(tmp_path / "none.json")
    data = synthetic_table().to_dict()
    (tmp_path / "v.json").write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        LatencyTable.load(tmp_path / "v.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        LatencyTable.load(tmp_path / "x.json")


class Stop(Exception):
    pass


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_ensure_measures_lazily_and_resumes_after_interrupt(tmp_path, backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    path = tmp_path / "t.json"
    table = new_table(backend=backend, threads=1, config=FAST)
    table.profile_runs = 3
    arch = "conv_k3_s2_c8 ir_c8 ir_k5_c8 gap fc"  # 5 distinct blocks + the overhead probe

    def interrupt(done, total):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        table.ensure([arch], input_size=16, num_classes=10, path=path, checkpoint_s=0.0, on_progress=interrupt)
    saved = LatencyTable.load(path, expect=table.fingerprint)
    # the overhead probe and the first two blocks were checkpointed before the stop
    assert overhead_key(in_chans=3, input_size=(16, 16), batch=1, num_classes=10) in saved.entries
    resumed = LatencyTable.load(path)
    resumed.config, resumed.profile_runs = FAST, 3
    todo = resumed.missing(resolve(arch, num_classes=10, input_size=16))
    assert [p.spec.format() for p in todo] == ["ir_k5_c8", "gap", "fc"]
    resumed.ensure([arch], input_size=16, num_classes=10, path=path)
    assert resumed.missing(resolve(arch, num_classes=10, input_size=16)) == []
    assert resumed.ensure([arch], input_size=16, num_classes=10) == 0  # nothing left to measure
    pred = predict(resumed, arch, input_size=16, num_classes=10)
    assert pred.total_ms > 0 and all(v >= 0 for _, v in pred.blocks)


def test_ctrl_c_during_a_build_keeps_every_entry_measured(tmp_path):
    """Nothing measured is lost on Ctrl-C / SIGTERM, even between two periodic saves."""
    path = tmp_path / "t.json"
    table = new_table(backend="eager", threads=1, config=FAST)
    table.profile_runs = 3
    arch = "conv_k3_s2_c8 ir_c8 ir_k5_c8 gap fc"

    def interrupt(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        table.ensure([arch], input_size=16, num_classes=10, path=path, checkpoint_s=1e9, on_progress=interrupt)
    saved = LatencyTable.load(path, expect=table.fingerprint)
    # the overhead probe (which also times the probe network's blocks) and the blocks measured before the stop
    assert saved.entries.keys() == table.entries.keys() and len(saved.entries) >= 3


def test_a_table_without_drift_reference_times_back_to_back(tmp_path):
    fast = TimingConfig(warmup=1, min_repeats=2, max_repeats=4, round_size=2, max_seconds=1.0, max_foreign=None)
    table = new_table(backend="eager", threads=1, config=fast, drift_reference=False)
    (plan,) = resolve("conv_k3_c8", num_classes=10, input_size=8)[:1]
    entry = table.measure_block(plan)
    assert entry.repeats >= 2 and entry.min_ms <= entry.median_ms
    assert table.drift() is None and table.reference_ms is None  # the reference network never ran
    loaded = LatencyTable.load(table.save(tmp_path / "t.json"))
    assert loaded.drift_reference is False and loaded.entries == table.entries
    assert LatencyTable.load(new_table(backend="eager", threads=1).save(tmp_path / "u.json")).drift_reference
    with pytest.raises(ValueError, match=r"drift_reference=False is for the eager, executorch target\(s\); onnxruntime"):
        new_table(backend="onnxruntime", threads=1, drift_reference=False)
    # ExecuTorch tables may time back to back too (the reference ran 1.24-1.77x slow between XNNPACK programs)
    assert new_table(backend="executorch", threads=1, drift_reference=False).drift() is None


def _stats(ms: float, *, lo: float | None = None, repeats: int = 10):
    from edgecnn.latency.timing import LatencyStats

    return LatencyStats(ms, ms * 0.9, ms * 1.1, lo if lo is not None else ms * 0.8, ms, repeats, True)


def test_sweeps_prepare_each_block_once_and_keep_the_median_sweep(monkeypatch):
    """A block timed in a slow moment of one sweep of three does not decide its entry; nothing is exported twice."""
    from edgecnn.latency import timing
    from edgecnn.latency.targets import get_target

    target = get_target("eager")
    prepared: list[str] = []
    real_runner = type(target).runner

    def counting_runner(self, model, x, **kw):
        prepared.append(type(model).__name__)
        return real_runner(self, model, x, **kw)

    sweep_ms = iter([1.0, 2.0, 1.0, 9.0, 1.1, 2.1])  # sweep 1 (two blocks), sweep 2 (block 2 slow), sweep 3
    calls = []

    def scripted_time_fn(run, config=None, *, reference=None, setup=None):
        calls.append(run)
        return _stats(next(sweep_ms))

    monkeypatch.setattr(type(target), "runner", counting_runner)
    monkeypatch.setattr(timing, "time_fn", scripted_time_fn)
    table = new_table(backend="eager", threads=1, config=FAST, drift_reference=False)
    table.call_overhead_ms = 0.0
    plans = resolve("conv_k3_c8 conv_k5_c8", num_classes=10, input_size=8)[:2]
    table.entries[overhead_key(in_chans=3, input_size=(8, 8), batch=1, num_classes=10)] = entry(0.0)
    seen = []
    added = table.ensure(["conv_k3_c8 conv_k5_c8"], input_size=8, num_classes=10, sweeps=3,
                         on_progress=lambda d, t: seen.append((d, t)))
    assert added == 2 and len(prepared) == 2 and len(calls) == 6  # 2 exports, 3 timings each
    assert seen[-1] == (6, 6)
    k1, k2 = (block_key(p) for p in plans)
    # medians of (1.0, 1.0, 1.1) and (2.0, 9.0, 2.1) -> the 9.0 ms sweep is out; min of the sweeps' minimums
    assert table.entries[k1].median_ms == pytest.approx(1.0) and table.entries[k1].min_ms == pytest.approx(0.8)
    assert table.entries[k2].median_ms == pytest.approx(2.1) and table.entries[k2].min_ms == pytest.approx(1.6)
    assert table.entries[k2].repeats == 30
    with pytest.raises(ValueError, match="sweeps must be a positive integer"):
        table.ensure(["conv_k3_c8"], input_size=8, num_classes=10, sweeps=0)


def test_merge_passes_by_hand():
    from edgecnn.latency.timing import LatencyStats, merge_passes

    a = LatencyStats(1.0, 0.9, 1.2, 0.8, 1.1, 10, True, 0.01, 1.0, 1.0)
    b = LatencyStats(3.0, 2.5, 3.5, 2.0, 3.2, 20, False, 0.30, 1.6, 4.0)
    c = LatencyStats(1.2, 1.0, 1.3, 0.7, 1.25, 10, True, None, 1.1, 1.3)
    m = merge_passes([a, b, c])
    assert (m.median_ms, m.q1_ms, m.q3_ms, m.min_ms, m.mean_ms) == (1.2, 1.0, 1.3, 0.7, 1.25)
    assert (m.repeats, m.stable, m.foreign_cpu, m.drift, m.raw_median_ms) == (40, False, 0.30, 1.1, 1.3)
    assert merge_passes([a]) == a
    with pytest.raises(ValueError, match="no passes"):
        merge_passes([])


def test_retime_times_the_held_blocks_again_and_keeps_the_median_of_all(tmp_path, monkeypatch):
    """An entry timed low once (the winner's curse a search leans on) becomes the median of its three timings;
    blocks the table lacks are left alone, each block is prepared once, the sweeps alternate over the blocks,
    and it is saved."""
    arch = "conv_k3_s2_c8 ir_c8 ir_e4_c16 gap fc"
    plans = resolve(arch, num_classes=10, in_chans=3, input_size=(16, 16))
    keys = [block_key(p) for p in plans]
    t = new_table(backend="eager", threads=1)
    for k in keys[:3]:
        t.entries[k] = TableEntry(0.05, 0.04, 0.06, 0.03, 20)  # the ir_e4_c16 block timed low: 0.05
    prepared, order = [], []
    script = {k: iter([0.09, 0.07]) for k in keys}

    def timer(plan, *, batch=1):
        k = block_key(plan, batch=batch)
        prepared.append(k)

        def once():
            order.append(k)
            v = next(script[k])
            return TableEntry(v, v - 0.01, v + 0.01, v - 0.02, 20)

        return once

    monkeypatch.setattr(t, "block_timer", timer)
    changed = t.retime([arch, arch], input_size=16, num_classes=10, in_chans=3, sweeps=2, path=tmp_path / "t.json")
    assert sorted(prepared) == sorted(keys[:3])  # once each, and only what the table holds
    assert order == keys[:3] * 2  # sweep after sweep over all the blocks
    assert changed == {k: (0.05, pytest.approx(0.07)) for k in keys[:3]}  # median of 0.05, 0.09, 0.07
    e = t.entries[keys[2]]
    assert (e.median_ms, e.min_ms, e.repeats) == (pytest.approx(0.07), 0.03, 60)
    assert LatencyTable.load(tmp_path / "t.json").entries[keys[2]].median_ms == pytest.approx(0.07)
    with pytest.raises(ValueError, match="sweeps must be a positive integer"):
        t.retime([arch], input_size=16, sweeps=0)
