"""Latency model: table hits exactly, multilinear interpolation exact on synthetic (multi)linear tables, the
documented behaviour outside the measured range, clear errors on a miss, measuring in the lane and never in a
worker."""

from __future__ import annotations

import itertools

import pytest

from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.widths import interpolate, split_key, width_grid, with_widths
from edgecnn.latency.predict import predict
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.plan import LayerPlan, resolve

FAST = TimingConfig(warmup=1, min_repeats=2, max_repeats=4, round_size=2, max_seconds=1.0, max_foreign=None)
ARCH = "conv_k3_s2_c32 ir_e4_c32 ir_s2_e4_c48 gap fc"
CS, MIDS = (16, 32, 48, 64), (32, 96, 160, 256)


def entry(ms: float) -> TableEntry:
    return TableEntry(ms, 0.9 * ms, 1.1 * ms, 0.8 * ms, 10)


def ir_cost(cin: int, cout: int, mid: int) -> float:
    """A MACs-shaped latency: linear in each width separately (products allowed), like a real block's MACs."""
    return 0.05 + 1e-4 * cin * mid + 3e-4 * mid + 2e-4 * mid * cout


def conv_cost(cin: int, cout: int) -> float:
    return 0.02 + 3e-3 * cin + 1e-3 * cout + 4e-5 * cin * cout


def plans() -> list[LayerPlan]:
    return resolve(ARCH, num_classes=10, input_size=32)


def synthetic() -> LatencyTable:
    """A grid of widths for every block of ARCH, with the costs above, and its overhead (0.5 ms)."""
    stem, res, down, gap, fc = plans()
    t = LatencyTable(fingerprint(backend="eager", threads=1))
    for cin, cout in itertools.product((3, 5), (16, 48)):
        t.entries[block_key(with_widths(stem, cin=cin, cout=cout))] = entry(conv_cost(cin, cout))
    for c, mid in itertools.product(CS, MIDS):  # identity residual: c = cin = cout (32, 32: no expansion, elsewhere)
        t.entries[block_key(with_widths(res, cin=c, cout=c, mid=mid))] = entry(ir_cost(c, c, mid))
    for cin, cout, mid in itertools.product(CS, (32, 64), MIDS):  # stride 2: three axes
        t.entries[block_key(with_widths(down, cin=cin, cout=cout, mid=mid))] = entry(ir_cost(cin, cout, mid))
    for c in (16, 64):
        t.entries[block_key(with_widths(gap, cin=c))] = entry(0.01 * c)
        t.entries[block_key(with_widths(fc, cin=c))] = entry(0.002 * c)
    t.entries[overhead_key(in_chans=3, input_size=(32, 32), batch=1, num_classes=10)] = entry(0.5)
    return t


def test_split_key_separates_structure_from_widths() -> None:
    stem, res, down, gap, fc = plans()
    a, b = split_key(block_key(res)), split_key(block_key(with_widths(res, cin=24, cout=24, mid=77)))
    assert a is not None and b is not None
    assert a.slice == b.slice and a.axes == ("c", "mid") and (a.coords, b.coords) == ((32, 128), (24, 77))
    proj = split_key(block_key(with_widths(res, cout=40)))  # cin != cout: no identity shortcut, another slice
    assert proj is not None and proj.slice != a.slice and proj.axes == ("cin", "cout", "mid")
    no_expand = split_key(block_key(with_widths(res, mid=32)))  # mid == cin: no expansion conv
    assert no_expand is not None and no_expand.slice != a.slice and no_expand.axes == ("c",)
    dw = split_key(block_key(resolve("conv_k3_g24_c24", in_chans=24, input_size=8)[0]))
    assert dw is not None and dw.axes == ("c",) and "g=dw" in dw.slice
    assert split_key(overhead_key(in_chans=3, input_size=(32, 32), batch=1, num_classes=10)) is None


def test_a_table_hit_returns_the_entry_exactly() -> None:
    t = synthetic()
    res = plans()[1]
    key = block_key(with_widths(res, cin=32, cout=32, mid=96))
    t.entries[key] = odd = TableEntry(9.87654321, 1.0, 20.0, 0.5, 7)  # far off the interpolated surface
    got, source = LatencyModel(t).lookup(with_widths(res, cin=32, cout=32, mid=96))
    assert source == "table" and got is odd


def test_interpolation_is_exact_on_a_synthetic_multilinear_table() -> None:
    model = LatencyModel(synthetic())
    stem, res, down, gap, fc = plans()
    for c, mid in [(40, 100), (17, 33), (63, 255), (32, 200), (24, 96)]:  # 2-D, and 1-D where one width is on grid
        got, source = model.lookup(with_widths(res, cin=c, cout=c, mid=mid))
        assert source == "interpolated" and got.repeats == 0
        assert got.median_ms == pytest.approx(ir_cost(c, c, mid), rel=1e-12)
        assert (got.q1_ms, got.q3_ms, got.min_ms) == pytest.approx((0.9 * got.median_ms, 1.1 * got.median_ms,
                                                                      0.8 * got.median_ms), rel=1e-12)  # fmt: skip
    for cin, cout, mid in [(37, 53, 101), (20, 32, 250)]:  # 3-D
        got, source = model.lookup(with_widths(down, cin=cin, cout=cout, mid=mid))
        assert source == "interpolated" and got.median_ms == pytest.approx(ir_cost(cin, cout, mid), rel=1e-12)
    got, _ = model.lookup(with_widths(stem, cin=4, cout=20))  # conv: bilinear over (cin, cout)
    assert got.median_ms == pytest.approx(conv_cost(4, 20), rel=1e-12)
    # a whole network of widths never measured: overhead + Σ interpolated blocks, the same sum predict() makes
    arch = "conv_k3_s2_c20 ir_m70_c20 ir_s2_m150_c40 gap fc"
    pred = model.predict(arch, input_size=32, num_classes=10)
    want = 0.5 + conv_cost(3, 20) + ir_cost(20, 20, 70) + ir_cost(20, 40, 150) + 0.01 * 40 + 0.002 * 40
    assert pred.total_ms == pytest.approx(want, rel=1e-12) and not pred.calibrated
    assert model.counts["interpolated"] >= 9
    assert [src for _, src in model.sources(arch, input_size=32, num_classes=10)] == ["interpolated"] * 5
    grid_and_not = "conv_k3_s2_c16 ir_m96_c16 ir_s2_m100_c32 gap fc"  # the first two are grid points
    assert [src for _, src in model.sources(grid_and_not, input_size=32, num_classes=10)] == [
        "table", "table", "interpolated", "interpolated", "interpolated"]  # fmt: skip
    assert [src for _, src in model.sources("conv_k3_s2_c16 ir_k5_c16 gap fc", input_size=32, num_classes=10)][1] == (
        "missing")  # fmt: skip
    full = synthetic()
    for p in resolve(arch, num_classes=10, input_size=32):  # the same network measured: predict() agrees
        full.entries[block_key(p)] = model.lookup(p)[0]
    assert predict(full, arch, input_size=32, num_classes=10).total_ms == pytest.approx(pred.total_ms, rel=1e-12)


def test_interpolate_on_a_partial_grid_and_outside_the_range() -> None:
    # an L of points: (10, 10), (20, 10), (10, 20), no (20, 20) corner; f = x + 2y
    pts = {(10, 10): (30.0,) * 4, (20, 10): (40.0,) * 4, (10, 20): (50.0,) * 4, (10, 30): (70.0,) * 4}
    assert interpolate(pts, (10, 25)) == pytest.approx((60.0,) * 4)  # along the x = 10 line
    assert interpolate(pts, (15, 10)) == pytest.approx((35.0,) * 4)
    assert interpolate(pts, (15, 15)) is None  # no slab at y >= 15 spans x = 15
    # outside the range: refused, or the line through the two nearest points, floored at 0
    line = {(16,): (0.1, 0.1, 0.1, 0.1), (32,): (0.5, 0.5, 0.5, 0.5)}
    assert interpolate(line, (48,)) is None and interpolate(line, (8,)) is None
    assert interpolate(line, (48,), extrapolate=True) == pytest.approx((0.9,) * 4)
    assert interpolate(line, (8,), extrapolate=True) == (0.0,) * 4  # 0.1 − 0.2 → 0
    assert interpolate({(16,): (0.1,) * 4}, (20,), extrapolate=True) is None  # one point gives no line


def test_outside_the_measured_widths_as_documented() -> None:
    res = plans()[1]
    wide = with_widths(res, cin=80, cout=80, mid=128)  # c 80 > 64, the widest measured
    with pytest.raises(ValueError, match=r"no latency for block ir\|cin80.*15 entries, c 16–64, mid 32–256"):
        LatencyModel(synthetic()).lookup(wide)
    got, source = LatencyModel(synthetic(), extrapolate=True).lookup(wide)
    assert source == "interpolated" and got.median_ms == pytest.approx(ir_cost(80, 80, 128), rel=1e-12)


def test_a_miss_without_measuring_is_a_clear_error() -> None:
    model = LatencyModel(synthetic())
    k5 = resolve("conv_k3_s2_c32 ir_k5_e4_c32", num_classes=10, input_size=32)[1]  # no k5 entry at all
    with pytest.raises(ValueError, match="no entry of the same kind, kernel, stride.*measure=True"):
        model.lookup(k5)
    okey = overhead_key(in_chans=3, input_size=(32, 32), batch=1, num_classes=10)
    del model.table.entries[okey]  # the overhead is measured per input shape, never interpolated
    with pytest.raises(ValueError, match=r"no overhead entry overhead\|c3\|in32x32.*measure=True"):
        model.predict(ARCH, input_size=32, num_classes=10)


def test_measures_a_miss_in_the_lane_and_stores_it(tmp_path, monkeypatch) -> None:
    table = LatencyTable(fingerprint(backend="eager", threads=1), config=FAST)
    lane_uses: list[str] = []

    class Lane:
        def __enter__(self) -> None:
            lane_uses.append("in")

        def __exit__(self, *exc: object) -> None:
            lane_uses.append("out")

    path = tmp_path / "table.json"
    model = LatencyModel(table, measure=True, lane=Lane, path=path)
    p = resolve("conv_k3_c8 ir_e2_c8", num_classes=10, input_size=8)[1]
    got, source = model.lookup(p)
    assert source == "measured" and got.repeats >= 2 and got.median_ms >= 0
    assert lane_uses == ["in", "out"] and block_key(p) in LatencyTable.load(path).entries
    assert model.lookup(p) == (got, "table") and model.counts == {"table": 1, "interpolated": 0, "measured": 1}
    monkeypatch.setenv("EDGECNN_WORKER", "1")  # inside an executor worker: never measured
    other = with_widths(p, cin=16, cout=16, mid=32)
    with pytest.raises(ValueError, match="cannot be measured inside an executor worker"):
        model.lookup(other)
    assert lane_uses == ["in", "out"]


def test_width_grid_spans_each_axis_and_stays_in_the_slice() -> None:
    stem, dw, res, down, gap, fc = resolve("conv_k3_s2_c16 conv_k3_g16_c16 ir_m32_c16 ir_s2_m64_c24 gap fc",
                                           num_classes=10, input_size=16)  # fmt: skip

    def coords(p: LayerPlan) -> list[tuple[int, ...]]:
        return [split_key(block_key(v)).coords for v in width_grid(p, (0.5, 1.0))]  # type: ignore[union-attr]

    assert coords(stem) == [(3, 8), (3, 16)]  # 3 input channels stay 3
    assert coords(dw) == [(8,), (16,)] and block_key(width_grid(dw, (0.5,))[0]).find("|g8|") > 0  # still depthwise
    assert coords(res) == [(8, 16), (8, 32), (16, 32)]  # (16, 16) would have no expansion conv: another slice
    assert len(coords(down)) == 2 * 2 * 2 and (16, 24, 64) in coords(down)
    assert coords(fc) == [(16, 10), (24, 10)]  # the classifier's 10 outputs stay
    with pytest.raises(ValueError, match="fractions"):
        width_grid(res, (0.0, 1.0))


def test_ensure_grid_measures_once_then_narrower_networks_are_interpolated(tmp_path) -> None:
    table = LatencyTable(fingerprint(backend="eager", threads=1), config=FAST)
    model = LatencyModel(table, measure=True, path=tmp_path / "t.json")
    arch = "conv_k3_c16 ir_m48_c16 gap fc"
    n = model.ensure_grid(arch, input_size=8, fractions=(0.5, 1.0), num_classes=10)
    assert n == 2 + 4 + 2 + 2 and model.counts["measured"] == n  # conv cout 8|16; ir c 8|16 × mid 24|48; gap; fc
    assert model.ensure_grid(arch, input_size=8, fractions=(0.5, 1.0), num_classes=10) == 0
    pred = model.predict("conv_k3_c12 ir_m40_c12 gap fc", input_size=8, num_classes=10)  # a NetAdapt-like proposal
    assert model.counts["measured"] == n and model.counts["interpolated"] == 4 and pred.total_ms > 0
    # + the overhead and the probe network's stride-2 conv and 4×4 gap (its classifier is one of the fc variants)
    assert len(LatencyTable.load(tmp_path / "t.json").entries) == n + 1 + 2


def test_width_grid_keeps_zero_padding_shortcuts_from_reducing_channels() -> None:
    # a CIFAR-ResNet stride-2 block: its 'padskip' shortcut zero-pads 16 -> 32 channels and cannot drop any
    arch = "conv_k3_c16 basic_s2_c32_padskip gap fc"
    stem, down, gap, fc = resolve(arch, num_classes=10, input_size=8)
    fractions = (0.25, 0.5, 1.0)
    coords = [split_key(block_key(v)).coords for v in width_grid(down, fractions)]  # type: ignore[union-attr]
    # axes cin, cout, mid: cin {8, 16} × cout {8, 16, 32} × mid {8, 16, 32}, less the 3 with cin 16 > cout 8
    assert (down.cin, down.cout, down.mid) == (16, 32, 32)
    assert sorted(coords) == sorted(c for c in itertools.product((8, 16), (8, 16, 32), (8, 16, 32)) if c[1] >= c[0])
    table = LatencyTable(fingerprint(backend="eager", threads=1), config=FAST)
    # the overhead given, not measured: a probe timed 2-4 times on a loaded CPU can come out absurdly negative
    table.entries[overhead_key(in_chans=3, input_size=(8, 8), batch=1, num_classes=10)] = entry(0.1)
    model = LatencyModel(table, measure=True)
    n = model.ensure_grid(arch, input_size=8, fractions=fractions, num_classes=10)  # the builder refused (16 -> 8)
    assert n == 2 + 15 + 3 + 3  # stem cout 8|16, the block's 15 variants, gap and fc at 8|16|32 channels
    # a NetAdapt proposal narrows the inner width only: answered without measuring
    model.predict("conv_k3_c16 basic_s2_m20_c32_padskip gap fc", input_size=8, num_classes=10)
    assert model.counts["measured"] == n and model.counts["interpolated"] == 1
    # below 8 channels only a finer grid answers without measuring: a 0.125 fraction rounded to 2 channels
    with pytest.raises(ValueError, match="not in the table"):
        LatencyModel(table).predict("conv_k3_c16 basic_s2_m4_c32_padskip gap fc", input_size=8, num_classes=10)
    more = model.ensure_grid(arch, input_size=8, fractions=(0.125, 1.0), divisor=2, num_classes=10)
    assert more > 0 and any("|mid4|" in k for k in table.entries)
    model.predict("conv_k3_c16 basic_s2_m6_c32_padskip gap fc", input_size=8, num_classes=10)
    assert model.counts["measured"] == n + more and model.counts["interpolated"] == 2


def test_model_statistic_defaults_to_the_models_own() -> None:
    table = synthetic()  # every entry: median ms, min 0.8·ms
    arch = "conv_k3_s2_c24 ir_m100_c24 ir_s2_m120_c40 gap fc"
    med = LatencyModel(table).predict(arch, input_size=32, num_classes=10)
    low = LatencyModel(table, stat="min").predict(arch, input_size=32, num_classes=10)
    assert low.total_ms == pytest.approx(0.8 * med.total_ms, rel=1e-12)
    assert LatencyModel(table, stat="min").predict(arch, input_size=32, num_classes=10, stat="median") == med
    with pytest.raises(ValueError, match="unknown statistic 'p10'"):
        LatencyModel(table, stat="p10")


def test_calibrate_fits_the_models_interpolated_predictions(monkeypatch) -> None:
    # "measured" = 1.3·fixed + 0.8·body of the model's plain sums (interpolated widths): the fit must return them
    import importlib

    from edgecnn.latency.calibrate import group_sums
    from edgecnn.latency.measure import summarize

    v = importlib.import_module("edgecnn.latency.validate")  # the package exports a function of the same name
    table = synthetic()
    model = LatencyModel(table)
    archs = [f"conv_k3_s2_c{c} ir_m{m}_c{c} ir_s2_m{m2}_c40 gap fc"
             for c, m, m2 in [(24, 100, 120), (40, 60, 200), (20, 150, 90), (44, 200, 64), (30, 80, 240)]]  # fmt: skip
    truth = {}
    for a in archs:
        p = model.predict(a, input_size=32, num_classes=10, calibrated=False)
        s = group_sums((("overhead", p.overhead_ms), *p.blocks))
        truth[a] = 1.3 * s["fixed"] + 0.8 * s["body"]

    def fake_timer(tab: LatencyTable, arch: str, **kw: object):  # type: ignore[no-untyped-def]
        assert tab is table
        return lambda: summarize([truth[arch]] * 3)

    monkeypatch.setattr(v, "arch_timer", fake_timer)
    cal = v.calibrate(table, archs, input_size=32, num_classes=10, model=model, info={"seed": 3})
    assert cal.scales == pytest.approx({"body": 0.8, "fixed": 1.3}, rel=1e-9) and cal.fit_mape < 1e-9
    assert model.counts["measured"] == 0 and model.counts["interpolated"] > 0  # nothing measured, all predicted
    assert table.calibration == cal and cal.info["stat"] == "median"
    pred = model.predict(archs[0], input_size=32, num_classes=10)
    assert pred.calibrated and pred.total_ms == pytest.approx(truth[archs[0]], rel=1e-9)
    with pytest.raises(ValueError, match="from the table being calibrated"):
        v.calibrate(synthetic(), archs, input_size=32, num_classes=10, model=model)


def test_sweeps_keep_the_fastest_run_and_the_median_of_the_rest(tmp_path) -> None:
    from edgecnn.latency.table import merge_sweeps

    a, b, c = TableEntry(1.0, 0.9, 1.2, 0.8, 10), TableEntry(3.0, 2.0, 4.0, 1.9, 10), TableEntry(1.2, 1.0, 1.5, 0.7, 5)
    assert merge_sweeps([a, b, c]) == TableEntry(1.2, 1.0, 1.5, 0.7, 25)  # medians of three; min of all; runs summed
    assert merge_sweeps([a, b]) == TableEntry(2.0, 1.45, 2.6, 0.8, 20)  # two sweeps: the mean of the middle pair
    with pytest.raises(ValueError, match="no measurements"):
        merge_sweeps([])
    table = LatencyTable(fingerprint(backend="eager", threads=1), config=FAST)
    model = LatencyModel(table, measure=True)
    n = model.ensure_grid("conv_k3_c16 gap fc", input_size=8, fractions=(0.5, 1.0), num_classes=10, sweeps=2)
    assert n == 2 + 2 + 2 and model.counts["measured"] == n
    keys = [k for k in table.entries if k.startswith(("conv|cin3|cout8|", "gap|cin16")) and "|in8x8|" in k]
    assert len(keys) == 2 and all(table.entries[k].repeats >= 2 * FAST.min_repeats for k in keys)  # two sweeps each
    with pytest.raises(ValueError, match="sweeps must be a positive"):
        model.ensure_grid("conv_k3_c16 gap fc", input_size=8, sweeps=0)


def test_calibrate_rounds_keep_each_networks_fastest_run(monkeypatch) -> None:
    import importlib

    from edgecnn.latency.calibrate import group_sums
    from edgecnn.latency.measure import summarize

    v = importlib.import_module("edgecnn.latency.validate")
    table = synthetic()
    model = LatencyModel(table, stat="min")
    archs = [f"conv_k3_s2_c{c} ir_m{m}_c{c} ir_s2_m{m2}_c40 gap fc"
             for c, m, m2 in [(24, 100, 120), (40, 60, 200), (20, 150, 90), (44, 200, 64), (30, 80, 240)]]  # fmt: skip
    truth = {}
    for a in archs:
        p = model.predict(a, input_size=32, num_classes=10, calibrated=False)
        s = group_sums((("overhead", p.overhead_ms), *p.blocks))
        truth[a] = 1.1 * s["fixed"] + 0.7 * s["body"]
    calls: dict[str, int] = {}

    def fake_measure(tab: LatencyTable, arch: str, **kw: object):  # type: ignore[no-untyped-def]
        calls[arch] = calls.get(arch, 0) + 1  # round 1 and 3 disturbed (slower), round 2 clean
        slow = 1.0 if calls[arch] == 2 else 1.5
        return summarize([truth[arch] * slow, truth[arch] * slow * 1.2])

    prepared: list[str] = []

    def fake_timer(tab: LatencyTable, arch: str, **kw: object):  # type: ignore[no-untyped-def]
        prepared.append(arch)  # each network is exported once, then timed once per round
        return lambda: fake_measure(tab, arch, **kw)

    monkeypatch.setattr(v, "arch_timer", fake_timer)
    cal = v.calibrate(table, archs, input_size=32, num_classes=10, model=model, stat="min", rounds=3)
    assert sorted(prepared) == sorted(archs)
    assert set(calls.values()) == {3}
    assert cal.scales == pytest.approx({"body": 0.7, "fixed": 1.1}, rel=1e-9) and cal.info["stat"] == "min"
    with pytest.raises(ValueError, match="rounds must be a positive"):
        v.calibrate(table, archs, input_size=32, num_classes=10, model=model, rounds=0)


def test_entries_replaced_in_place_reach_the_interpolation_once_the_model_is_told() -> None:
    """``LatencyTable.retime`` replaces entries (their count unchanged); the model's interpolation between them
    follows after ``entries_changed`` — a re-timed corner moves the interpolated point between it and its
    neighbours by the bilinear weight."""
    t = synthetic()
    model = LatencyModel(t)
    res = plans()[1]
    inside = with_widths(res, cin=40, cout=40, mid=100)  # between c 32/48 and mid 96/160
    before = model.lookup(inside)[0].median_ms
    assert before == pytest.approx(ir_cost(40, 40, 100), rel=1e-12)
    corner = block_key(with_widths(res, cin=32, cout=32, mid=96))
    t.entries[corner] = entry(ir_cost(32, 32, 96) + 1.0)  # re-timed 1 ms slower
    assert model.lookup(inside)[0].median_ms == before  # not noticed: same number of entries
    model.entries_changed()
    weight = (48 - 40) / (48 - 32) * (160 - 100) / (160 - 96)  # the corner's bilinear weight at (40, 100)
    assert model.lookup(inside)[0].median_ms == pytest.approx(before + weight * 1.0, rel=1e-12)


def test_entries_retimed_reach_the_interpolation_without_being_told() -> None:
    """``LatencyTable.retime`` bumps ``table.revision``, so a model of the table rebuilds its interpolation on the
    next lookup: the re-timed corner moves the point between it and its neighbours by the bilinear weight."""
    t = synthetic()
    model = LatencyModel(t)
    res = plans()[1]
    inside = with_widths(res, cin=40, cout=40, mid=100)
    before = model.lookup(inside)[0].median_ms
    corner = block_key(with_widths(res, cin=32, cout=32, mid=96))
    old = t.entries[corner].median_ms
    timed: list[str] = []

    def timer(plan: LayerPlan, *, batch: int = 1):  # every further timing 1 ms slower than the entry
        timed.append(block_key(plan, batch=batch))
        return lambda: entry(old + 1.0)

    t.block_timer = timer  # type: ignore[method-assign]
    out = t.retime(["conv_k3_s2_c32 ir_m96_c32 ir_s2_e4_c48 gap fc"], input_size=32, num_classes=10, sweeps=2)
    assert timed == [corner] and out == {corner: (old, old + 1.0)}  # the median of old, new, new
    assert t.revision == 1
    weight = (48 - 40) / (48 - 32) * (160 - 100) / (160 - 96)
    assert model.lookup(inside)[0].median_ms == pytest.approx(before + weight * 1.0, rel=1e-12)
