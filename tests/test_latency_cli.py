import importlib.util
import json

from edgecnn.cli.main import main

TINY = "conv_k3_s2_c8 ir_c8 gap fc"
QUICK = ["--input-size", "16", "--threads", "1", "--max-seconds", "0.2", "--retries", "0", "--num-classes", "10"]


def test_measure_default_action_and_per_layer(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["latency", TINY, "--per-layer", "--json", str(out), *QUICK]) == 0
    data = json.loads(out.read_text())
    stats = data["measurement"]["stats"]
    assert stats["min_ms"] <= stats["median_ms"] and data["measurement"]["fingerprint"]["threads"] == 1
    assert [layer["name"] for layer in data["per_layer"]["layers"]] == [f"blocks.{i}" for i in range(4)]
    assert "end to end" in capsys.readouterr().out
    # the explicit form is the same action
    assert main(["latency", "measure", TINY, *QUICK]) == 0


def test_build_table_then_predict(tmp_path, capsys):
    table = tmp_path / "t.json"
    assert main(["latency", "build-table", "--table", str(table), "--models", TINY, *QUICK]) == 0
    # the default target: a deployment runtime (ONNX Runtime where installed), one thread
    default = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "eager"
    assert json.loads(table.read_text())["fingerprint"]["backend"] == default
    assert main(["latency", TINY, "--table", str(table), "--max-drift", "50", *QUICK]) == 0
    assert "table prediction" in capsys.readouterr().out
    # a table of this machine is refused for the other backend
    other = "eager" if default == "onnxruntime" else "onnxruntime"
    assert main(["latency", TINY, "--table", str(table), "--backend", other, *QUICK]) == 2
    assert "another device/backend" in capsys.readouterr().err


def test_usage_errors(capsys):
    assert main(["latency", "validate", "--per-layer"]) == 2
    assert "--per-layer does not apply" in capsys.readouterr().err
    assert main(["latency", "build-table", "--table", "x.json"]) == 2
    assert "nothing to measure" in capsys.readouterr().err
    assert main(["latency", "not_a_model"]) == 2
    assert main(["latency", TINY, "--max-drift", "0.9"]) == 2
    assert "--max-drift: must be in [1, 100], got 0.9" in capsys.readouterr().err
    assert main(["latency", "validate", "mobilenet_v2"]) == 2


def test_calibrate_then_validate_held_out(tmp_path, capsys):
    table = tmp_path / "t.json"
    assert main(["latency", "calibrate", "--table", str(table), "-n", "4", *QUICK]) == 0
    cal = json.loads(table.read_text())["calibration"]
    assert cal["networks"] == 4 and cal["info"]["seed"] == 1000 and all(v > 0 for v in cal["scales"].values())
    out = tmp_path / "v.json"
    assert main(["latency", "validate", "--table", str(table), "-n", "2", "--json", str(out), *QUICK]) == 0
    rep = json.loads(out.read_text())
    assert rep["n"] == 2 and rep["noise_floor"]["n"] == 2 and "loadavg_start" in rep["load"]
    row = rep["rows"][0]
    assert row["error"] == row["predicted_ms"] / row["measured"]["median_ms"] - 1
    assert "noise floor" in capsys.readouterr().out
    # the calibration networks are refused as validation networks
    assert main(["latency", "validate", "--table", str(table), "-n", "2", "--seed", "1000", *QUICK]) == 2
    assert "used to calibrate" in capsys.readouterr().err


def test_a_table_built_on_the_cpu_clock_is_measured_with_it(tmp_path, capsys):
    table = tmp_path / "t.json"
    assert main(["latency", "build-table", "--table", str(table), "--models", TINY, "--clock", "cpu", *QUICK]) == 0
    assert json.loads(table.read_text())["clock"] == "cpu"
    assert main(["latency", TINY, "--table", str(table), *QUICK]) == 0  # the table's clock by default
    assert main(["latency", TINY, "--table", str(table), "--clock", "wall", *QUICK]) == 2
    assert "timed with the 'cpu' clock" in capsys.readouterr().err
    # the thread's CPU time misses other threads' work: refused with two
    assert main(["latency", TINY, "--clock", "cpu", *QUICK[:2], "--threads", "2", *QUICK[4:]]) == 2
    assert "'cpu' clock times one CPU thread" in capsys.readouterr().err


def test_sweeps_and_passes_reach_the_table_and_the_report(tmp_path, capsys, monkeypatch):
    import importlib

    from edgecnn.latency.table import LatencyTable

    V = importlib.import_module("edgecnn.latency.validate")
    sweeps_seen, timings = [], {}
    real_ensure, real_timer = LatencyTable.ensure, V.arch_timer

    def spy_ensure(self, archs, **kw):
        sweeps_seen.append(kw.get("sweeps", 1))
        return real_ensure(self, archs, **kw)

    def spy_timer(table, arch, **kw):
        timer = real_timer(table, arch, **kw)

        def counted():
            timings[arch] = timings.get(arch, 0) + 1
            return timer()

        return counted

    monkeypatch.setattr(LatencyTable, "ensure", spy_ensure)
    monkeypatch.setattr(V, "arch_timer", spy_timer)
    table = tmp_path / "t.json"
    assert main(["latency", "build-table", "--table", str(table), "--models", TINY, "--sweeps", "2", *QUICK]) == 0
    assert sweeps_seen == [2]
    out = tmp_path / "v.json"
    assert main(["latency", "validate", "--table", str(table), "-n", "2", "--passes", "2", "--sweeps", "3",
                 "--json", str(out), *QUICK]) == 0
    assert sweeps_seen[-1] == 3
    assert len(timings) == 2 and set(timings.values()) == {4}  # 2 passes, and 2 for the retest, one export each
    rows = json.loads(out.read_text())["rows"]
    assert all(r["measured"]["repeats"] >= 40 and r["retest"]["repeats"] >= 40 for r in rows)  # >= 20 runs a pass
    assert main(["latency", "build-table", "--table", str(table), "--models", TINY, "--sweeps", "0", *QUICK]) == 2
    assert "--sweeps" in capsys.readouterr().err
    assert main(["latency", "build-table", "--table", str(table), "--models", TINY, "--passes", "2", *QUICK]) == 2
    assert "--passes does not apply" in capsys.readouterr().err


def test_calibrate_by_fastest_runs_records_how(tmp_path, capsys):
    """``--by fastest``: the networks measured as a search's finalists are (back to back, fastest runs), the way
    recorded in the calibration — a search reuses only a calibration measured so."""
    table = tmp_path / "t.json"
    assert main(["latency", "calibrate", "--table", str(table), "-n", "4", "--by", "fastest", "--passes", "2",
                 *QUICK]) == 0  # fmt: skip
    cal = json.loads(table.read_text())["calibration"]
    assert cal["info"]["by"] == "fastest" and cal["networks"] == 4 and all(v > 0 for v in cal["scales"].values())
    assert "measured by fastest" in capsys.readouterr().out
    assert main(["latency", "calibrate", "--table", str(table), "-n", "4", "--by", "median", *QUICK]) == 2
    assert main(["latency", "validate", "--table", str(table), "--by", "fastest", *QUICK]) == 2
    assert "--by does not apply to `latency validate`" in capsys.readouterr().err
