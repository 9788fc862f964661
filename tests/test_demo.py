"""``edgecnn demo`` end to end on a 1-epoch budget: files written, numbers consistent with the analysis."""

import importlib.util
import json

import pytest
import torch

from edgecnn.analysis import analyze
from edgecnn.build import build
from edgecnn.checkpoint import load_checkpoint
from edgecnn.cli.main import main
from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.data import load_data
from edgecnn.kinds import kind_of
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.model import _plans
from edgecnn.latency.widths import width_grid
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, overhead_key


TARGET = "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "eager"


def synthetic_table(arch: str, size: int, backend: str = TARGET) -> LatencyTable:
    """This device's table for ``arch`` on 1 thread: every block's width variants at 1e-5 ms per MAC + 0.01 ms."""
    table = LatencyTable(fingerprint(backend=backend, threads=1))
    for p in _plans(build(arch, num_classes=10, in_chans=1).spec, (size, size), 10, 1):
        grid = width_grid(p, tuple(i / 16 for i in range(1, 17)), divisor=1) + width_grid(p)  # + the demo's grid
        for v in grid:
            ms = 1e-5 * kind_of(v.spec.kind).cost(v)[1] + 0.01  # the block's MACs
            table.entries[block_key(v)] = TableEntry(ms, ms, ms, ms, 1)
    okey = overhead_key(in_chans=1, input_size=(size, size), batch=1, num_classes=10)
    table.entries[okey] = TableEntry(0.1, 0.1, 0.1, 0.1, 1)
    return table


def test_demo_runs_and_its_numbers_agree(tmp_path):
    out = tmp_path / "demo"
    arch = "conv_s2_c8_hswish ir_m16_c8_relu ir_k5_s2_m24_c16_se0.25_hsgate_hswish gap fc"
    # a reduced budget: 1 epoch, NetAdapt to 60%, 2-step fine-tunes. A toy net's measured block latencies are
    # flat in width and noisy on a shared CPU, so the test hands the demo a table of this device whose entries
    # are 1e-5 ms per MAC (+ 0.01 ms per block, 0.1 ms overhead): the meter is deterministic, the rest real
    table = tmp_path / "table.json"
    synthetic_table(arch, 16).save(table)
    assert main(["demo", "--model", arch, "--epochs", "1", "--out", str(out), "--image-size", "16",
                 "--budget", "0.6", "--short-steps", "2", "--long-epochs", "0.2", "--latency-table", str(table),
                 "--measured-rounds", "0", "--target", TARGET]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["arch"] == arch and res["data"] == "digits"
    # the per-block MACs (closed form from the spec) add up to the traced analysis of the same network
    net = build(arch, num_classes=10, in_chans=1)
    assert sum(b["macs"] for b in res["blocks"]) == res["macs"] == analyze(net, (1, 16, 16)).total().macs
    assert res["params"] == sum(p.numel() for p in net.parameters())
    assert 0.0 <= res["top1"] <= 1.0 and res["eager_ms"] > 0
    assert "| blocks.2 | `ir_k5_s2_m24_c16_se0.25_hsgate_hswish` |" in (out / "report.md").read_text()
    # conv-path fields by R += (k-1)·J, J *= s: stem 3×3 s2 → 3, J2; 3×3 dw → 3 + 2·2 = 7;
    # 5×5 s2 dw → 7 + 4·2 = 15, J4;
    # the SE gate of blocks.2 and the global pooling make the output see the whole input
    fields = [(b["rf"], b["rf_jump"], b["rf_whole"]) for b in res["blocks"]]
    assert fields == [(3, 2, False), (7, 2, False), (15, 4, True), (None, None, True), (None, None, True)]
    assert [e["epoch"] for e in res["history"]] == [1] and 0.0 <= res["history"][0]["test_top1"] <= 1.0
    html = (out / "report.html").read_text()
    assert '<td class="l">blocks.2</td><td class="l"><code>ir_k5_s2_m24_c16_se0.25_hsgate_hswish</code></td>' in html
    # 4 figures (matplotlib is in the [dev] extra), ERF, gradient flow, the NetAdapt history, baseline vs result,
    # one overlay per explained digit
    assert html.count('<img src="data:image/png;base64,') == 4 + 2 + 1 + 1 + 8
    assert res["kind"] == "demo" and res["schema"] == 1
    assert [s["name"] for s in res["stages"]] == ["data", "analyze", "train", "dynamics", "latency", "table", "netadapt",
                                                  "fold_bn", "onnx", "evaluate", "cam"]
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in res["stages"])
    # NetAdapt met its budget by its meter (the latency table + interpolation): 80% of the baseline's latency
    na, r = res["netadapt"], res["result"]
    assert na["met"] and na["stopped"] == "met" and na["budget_ms"] == pytest.approx(0.6 * na["start_ms"])
    blocks = [1e-5 * c.macs + 0.01 for c in cost_from_spec(arch, 16, 10, 1).layers]
    assert na["start_ms"] == pytest.approx(sum(blocks) + 0.1)  # the baseline by the table, by hand
    small_blocks = [1e-5 * c.macs + 0.01 for c in cost_from_spec(res["result"]["arch"], 16, 10, 1).layers]
    assert na["result_ms"] == pytest.approx(sum(small_blocks) + 0.1)  # interpolation is exact: linear in widths
    assert na["result_ms"] <= na["budget_ms"] < na["start_ms"]
    assert [h["iteration"] for h in na["history"]] == list(range(len(na["history"])))
    assert na["history"][0]["block"] == "baseline" and na["history"][-1]["latency_ms"] == na["result_ms"]
    lat = [h["latency_ms"] for h in na["history"]]
    assert all(b < a for a, b in zip(lat, lat[1:]))  # every iteration made it faster by the meter
    assert "<h2>NetAdapt</h2>" in html and "## NetAdapt to" in (out / "report.md").read_text()
    # the result: fewer MACs and params than the baseline, both equal to the traced analysis of its arch
    small = build(r["arch"], num_classes=10, in_chans=1)
    assert r["macs"] == analyze(small, (1, 16, 16)).total().macs < res["macs"]
    assert r["params"] == sum(p.numel() for p in small.parameters()) < res["params"]
    assert 0.0 <= r["top1"] <= 1.0 and r["eager_ms"] > 0  # measured; no ordering asserted (timings, shared CPU)
    assert r["bn_folded"] == 7 and r["fold_max_rel_diff"] < 1e-5  # stem + expand, depthwise, project of both ir
    small.load_state_dict(load_checkpoint(out / "model-netadapt.pt").state_dict)
    small.eval()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        n_test = len(load_data("digits", image_size=16, seed=0).test)
        x = torch.randn(1, 1, 16, 16)
        sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]), small(x),
                                       rtol=1e-4, atol=1e-4)
        i8 = r["int8"]
        assert (out / "model-int8.onnx").is_file() and 0.0 <= i8["top1_int8"] <= 1.0 and i8["images"] == n_test
        # the same network under ORT fp32 and torch: the same top-1 but for at most one near-tie
        assert i8["top1_fp32"] == pytest.approx(r["top1"], abs=1.01 / n_test)
        # int8 is a measured choice: kept only when faster and within 1 pp, the reason and the CPU recorded
        assert i8["kept"] in ("fp32", "int8") and i8["reason"].startswith(f"{i8['kept']} kept")
        assert i8["settings"]["name"] and i8["isa"]["int8_kind"] and 0.0 <= i8["agreement"] <= 1.0
    else:
        assert r["int8"] is None
    # the trained baseline's ERF: the central unit of blocks.2's 4×4 map; its conv path sees 15×15 pixels
    erf, flow = res["erf"], res["gradflow"]
    assert erf["layer"] == "blocks.2" and erf["output_index"] == [2, 2] and erf["rf_size"] == [15.0, 15.0]
    assert erf["rf_global"] and sum(map(sum, erf["map"])) == pytest.approx(1.0, abs=1e-4)
    assert 0 < erf["radius50"] <= erf["radius95"] and "<h2>Effective receptive field</h2>" in html
    # one skip (blocks.1, 8 -> 8 channels at stride 1); same layers with and without it, real gradients
    assert flow["skips"] == 1 and flow["batch"] == 32 and flow["mode"] == "train"
    names = [[l["name"] for l in r["layers"]] for r in flow["runs"].values()]
    assert len(names) == 2 and names[0] == names[1] and names[0][0] == "blocks.0.conv"
    assert all(l["output_grad_norm"] > 0 for r in flow["runs"].values() for l in r["layers"])
    # baseline vs result as measured points of the accuracy-latency plot
    # the deployment target: the runtime the table is for; baseline and result timed back to back on it
    assert res["target"] == r["target"] == TARGET and set(res["targets_ms"]) >= {"eager", TARGET}
    lo, hi = r["measured_band"]
    assert 0 < lo <= r["measured_ratio"] <= hi and r["target_ms"] > 0 and r["baseline_target_ms"] > 0
    assert na["measured"]["target"] == TARGET and na["measured"]["rounds"] == 3
    assert isinstance(r["met"], bool) and r["stopped"]
    assert res["pareto"]["points"] == [
        {"name": "baseline", "latency_ms": r["baseline_target_ms"], "top1": res["top1"]},
        {"name": "NetAdapt result", "latency_ms": r["target_ms"], "top1": r["top1"]}]  # fmt: skip
    cam = res["cam"]
    # the last spatial block is blocks.2 (16 -> 8 -> 8 -> 4 pixels: a 4×4 map, scale 16/4 = 4)
    assert cam["method"] == "gradcam" and cam["layer"] == "blocks.2" and cam["map_size"] == [4, 4]
    assert cam["scale"] == [4.0, 4.0] and [r["label"] for r in cam["images"]] == [str(d) for d in range(8)]
    assert all((out / r["file"]).read_bytes().startswith(b"\x89PNG") for r in cam["images"])
    # `edgecnn report` redraws the same page from results.json alone
    (out / "report.html").rename(out / "first.html")
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text() == (out / "first.html").read_text()
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.arch == arch and ckpt.in_chans == 1 and ckpt.num_classes == 10
    model = build(ckpt.arch, num_classes=10, in_chans=1)
    model.load_state_dict(ckpt.state_dict)
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 10)


def test_demo_rejects_bad_settings(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert "argument --epochs: must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["demo", "--cam-images", "-1"]) == 2
    assert "argument --cam-images: must be an integer >= 0, got -1" in capsys.readouterr().err


def test_next_table_target_fits_the_stopwatch_through_baseline_and_result():
    from edgecnn.compress.job import next_table_target

    # measured = table + 1 ms (a fixed cost the block sum misses): 50% of 6 ms measured is 3 ms = 2 ms by the table
    assert next_table_target(5.0, 6.0, 2.5, 3.5, 0.5) == pytest.approx(2.0)
    # measured = 2 × table: 40% of 10 ms = 4 ms measured = 2 ms by the table
    assert next_table_target(5.0, 10.0, 2.5, 5.0, 0.4) == pytest.approx(2.0)
    # no usable line: the result measured slower than the baseline, or no table progress, or already there
    assert next_table_target(5.0, 6.0, 2.5, 6.5, 0.5) is None
    assert next_table_target(5.0, 6.0, 5.0, 5.0, 0.5) is None
    assert next_table_target(5.0, 6.0, 2.5, 3.0, 0.5) is None


def test_demo_takes_another_round_when_the_measured_result_misses(tmp_path, monkeypatch):
    """The measured check: a result measured at 70% of the baseline (budget 60%) sends NetAdapt on to the table
    target refitted through baseline and result; the rounds' iterations continue one history."""
    import edgecnn.compress.job as job
    from edgecnn.latency.compare import Comparison

    arch = "conv_s2_c8_hswish ir_m16_c8_relu ir_k5_s2_m24_c16_se0.25_hsgate_hswish gap fc"
    table = tmp_path / "table.json"
    synthetic_table(arch, 16).save(table)
    measured = []

    def fake_compare(before, after, shape, **kw):  # the baseline 10 ms, any result 7 ms: always 70%
        measured.append((before.arch, after.arch, kw["backend"]))
        return Comparison(kw["backend"], kw["threads"], kw["device"], "cpu", (10.0,) * 3, (7.0,) * 3)

    monkeypatch.setattr(job, "compare_latency", fake_compare)
    out = tmp_path / "demo"
    assert main(["demo", "--model", arch, "--epochs", "1", "--out", str(out), "--image-size", "16", "--budget", "0.6",
                 "--short-steps", "2", "--long-epochs", "0.2", "--latency-table", str(table), "--measured-rounds", "1",
                 "--cam-images", "0", "--no-int8", "--target", TARGET]) == 0
    res = json.loads((out / "results.json").read_text())
    na = res["netadapt"]
    first, second = na["round_budgets_ms"]
    assert first == pytest.approx(0.6 * na["start_ms"])
    # the round-1 result and the round-2 result, each against the baseline, on the target (measured rounds = 1)
    assert len(measured) == 2 and all(m[0] == arch and m[1] != arch and m[2] == TARGET for m in measured)
    assert not res["result"]["met"] and res["result"]["stopped"].startswith("missed by 16.7%")
    # round 1's step bounds never fall below its budget; round 2 starts under it
    r1 = min(h["resource"] for h in na["iterations"] if h["target"] >= first - 1e-9)
    assert r1 <= first
    # measured = a + b·table through (start, 10 ms) and (r1, 7 ms), solved for 60% of 10 ms
    b = (10.0 - 7.0) / (na["start_ms"] - r1)
    assert second == pytest.approx(r1 + (6.0 - 7.0) / b)
    assert na["result_ms"] < r1  # round 2 went on below round 1's result
    assert [h["iteration"] for h in na["history"]] == list(range(len(na["history"])))


def test_the_demo_target_is_the_fastest_runtime_ties_going_to_the_cheaper_table():
    from edgecnn.demo import _fastest

    # ExecuTorch 6% faster: within the 10% tie, and its blocks take seconds each to lower -> ONNX Runtime
    pick, why = _fastest({"eager": 4.47, "onnxruntime": 0.344, "executorch": 0.323})
    assert pick == "onnxruntime" and "within 10% of the fastest (executorch 0.323 ms)" in why
    # clearly faster wins whatever its table costs; eager only without a deployment runtime
    assert _fastest({"eager": 4.0, "onnxruntime": 0.40, "executorch": 0.30}) == ("executorch", "the fastest here")
    assert _fastest({"eager": 4.0})[0] == "eager"
