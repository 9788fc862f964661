import json
import random

import pytest
import torch
from search_helpers import TINY_SPACE, synthetic_table

from edgecnn.cli.main import main
from edgecnn.executor import Executor, driver_path
from edgecnn.latency.model import LatencyModel
from edgecnn.search.estimate import (
    EstimateSettings,
    SupernetEstimator,
    kendall_tau,
    kendall_tau_interval,
    kendall_tau_within,
    rank_blend,
)
from edgecnn.search.evolution import SearchConfig, run_search
from edgecnn.search.objective import Objective
from edgecnn.search.supernet import Supernet
from edgecnn.train.task import DataRef
from edgecnn.zoo import arch_of


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target", "fast"], "latency target 'fast' is not a duration"),
        (["--target", "3ms", "--space", "mbv9"], "unknown search space 'mbv9'"),
        (["--target", "3ms", "--w", "0.2"], "argument --w: must be in [-10, 0], got 0.2"),
        (["--target", "3ms", "--budget", "0"], "argument --budget: must be a positive integer"),
        (["--target", "3ms", "--references", "mobilenet_v3_small_cifar@x"], "the width after '@' must be a number"),
        (["--target", "3ms", "--references", "mobilenet_v9"], "unknown model 'mobilenet_v9'"),
        (["--target", "3ms", "--references", "auto", "resnet20_cifar"], "'auto', 'none' or zoo names, not a mix"),
        (["--target", "3ms", "--address", "10.0.0.1:6379"], "--address is a Ray cluster address"),
        (["--target", "3ms", "--supernet-schedule", "progressive", "--supernet-steps", "5"],
         "progressive shrinking has 6 phases and needs at least 6 supernet steps, got 5"),
        (["--target", "3ms", "--calibrate", "2"], "calibrate needs at least 4 networks (or 0 to skip), got 2"),
        (["--target", "3ms", "--correct", "1"], "measured corrections (correct > 0) tighten a hard latency constraint"),
        (["--target", "3ms", "--hard", "--correct", "-1"], "argument --correct: must be an integer >= 0, got -1"),
        (["--target", "3ms", "--anchor", "mobilenet_v9@0.75"], "--anchor 'mobilenet_v9@0.75': unknown model"),
        (["--target", "3ms", "--anchor", "resnet20_cifar=fast"], "the latency after '=': latency target 'fast'"),
        (["--target", "3ms", "--anchor", "resnet20_cifar=-1ms"], "latency target must be positive"),
    ],
)
def test_cli_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(["search", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_space_file_error_names_the_field(tmp_path, capsys):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({**TINY_SPACE.to_dict(), "stages": [{"stride": 2, "widths": [8], "depths": [1],
                                                                    "kernels": [4]}]}))  # fmt: skip
    assert main(["search", "--target", "3ms", "--space", str(bad)]) == 2
    assert "s.json.stages[0].kernels: kernels must be odd" in capsys.readouterr().err


def test_kendall_tau_within_latency_bands_by_hand():
    # latencies 1.0, 1.05, 1.5, 1.52: within 10% only the pairs (0, 1) and (2, 3) count
    lat = [1.0, 1.05, 1.5, 1.52]
    est, truth = [1, 2, 3, 4], [2, 1, 3, 4]  # (0, 1) discordant, (2, 3) concordant -> tau 0 over 2 pairs
    assert kendall_tau_within(est, truth, lat, rel=0.1) == (0.0, 2)
    assert kendall_tau_within(est, truth, lat, rel=1.0) == (pytest.approx(4 / 6), 6)  # every pair: plain tau
    assert kendall_tau_within(est, truth, lat, rel=1.0)[0] == pytest.approx(kendall_tau(est, truth)[0])
    assert kendall_tau_within(est, truth, lat, rel=0.01) == (None, 0)  # no pair that close
    # an estimator and a truth that both follow size, each with noise of its own: overall they agree, and within
    # a narrow size band they do not
    rng = random.Random(1)
    size = [1 + rng.random() for _ in range(200)]
    est = [x + rng.gauss(0, 0.05) for x in size]
    truth = [x + rng.gauss(0, 0.05) for x in size]
    assert kendall_tau(est, truth)[0] > 0.7
    tau, pairs = kendall_tau_within(est, truth, size, rel=0.005)
    assert pairs > 200 and abs(tau) < 0.15
    with pytest.raises(ValueError, match="equally long"):
        kendall_tau_within(est, truth, size[:3])
    with pytest.raises(ValueError, match="positive"):
        kendall_tau_within([1, 2], [1, 2], [0.0, 1.0])


def test_rank_blend_by_hand():
    # proxy ranks 1 2 3 4; short training ranks 3 1 4 2 -> means 2, 1.5, 3.5, 3
    assert rank_blend([10.0, 20.0, 30.0, 40.0], [0.5, 0.3, 0.6, 0.4]) == [2.0, 1.5, 3.5, 3.0]
    assert rank_blend([1.0, 1.0, float("-inf")]) == [2.5, 2.5, 1.0]  # ties share a rank; -inf ranks lowest
    # two estimators, each right about a different half of the truth (size / quality at equal size): the blend
    # ranks better than either
    rng = random.Random(0)
    size = [rng.random() for _ in range(300)]
    quality = [rng.random() for _ in range(300)]
    truth = [s + q for s, q in zip(size, quality)]
    blend = rank_blend(size, quality)
    assert kendall_tau(blend, truth)[0] > max(kendall_tau(size, truth)[0], kendall_tau(quality, truth)[0]) + 0.2
    with pytest.raises(ValueError, match="equally long"):
        rank_blend([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        rank_blend([1.0, float("nan")])


@pytest.mark.slow
def test_cli_tiny_search_end_to_end_and_resume(tmp_path, capsys):
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE.to_dict()))
    out = tmp_path / "run"
    argv = ["search", "--space", str(space), "--data", "digits", "--limit", "12", "--target", "0.5ms",
            "--budget", "6", "--population", "3", "--sample-size", "2", "--batch", "3", "--workers", "0",
            "--supernet-steps", "6", "--supernet-schedule", "progressive", "--finalists", "2", "--final-epochs", "1",
            "--final-batch-size", "32", "--max-seconds", "0.2", "--references", "mobilenet_v3_small_cifar@0.35",
            "--retries", "0", "--threads", "1", "--no-progress", "--calibrate", "4", "--out", str(out),
            "--anchor", "mobilenet_v3_small_cifar@0.35"]  # fmt: skip
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "best candidates" in shown and "6 candidates evaluated" in shown
    doc = json.loads((out / "results.json").read_text())
    assert doc["kind"] == "search" and len(doc["history"]) == 6 and doc["space"]["name"] == "tiny-16"
    cal = doc["latency"]["table"]["calibration"]  # calibrated on 4 measured networks before the search
    assert cal["networks"] == 4 and cal["info"]["n"] == 4 and all(v > 0 for v in cal["scales"].values())
    anchor = {"arch": arch_of("mobilenet_v3_small_cifar", width=0.35), "ms": 0.5}  # read at the target's speed
    assert doc["latency"]["anchor"] == anchor and cal["info"]["anchor"] == anchor
    assert all(0 <= c["acc"] <= 1 and c["lat_ms"] > 0 for c in doc["history"])
    assert len(doc["finalists"]) == 2
    for f in doc["finalists"]:
        assert f["table_ms"] > 0 and f["measured_ms"] > 0
        assert f["measured_score"] == pytest.approx(f["acc"] * (f["measured_ms"] / 0.5) ** -0.07)
    best = max(range(2), key=lambda i: (doc["finalists"][i]["measured_score"], -i))  # chosen by the measurement
    assert doc["chosen"]["index"] == best and doc["chosen"]["meets_target"] is None
    assert doc["final"]["arch"] == doc["chosen"]["arch"] == doc["finalists"][best]["arch"]
    assert doc["final"]["measured_ms"] == doc["finalists"][best]["measured_ms"] and 0 <= doc["final"]["top1"] <= 1
    assert f"chosen (*): finalist {best + 1}, the highest objective by the measured latency" in shown
    assert doc["supernet"]["steps"] == 6 and not doc["supernet"]["reused"]
    assert doc["supernet"]["config"]["schedule"] == "progressive" and len(doc["supernet"]["phase_seconds"]) == 6
    # the reference: latency by the same table and measured, trained with the same final recipe (1 epoch)
    (ref,) = doc["references"]
    assert ref["label"] == "mobilenet_v3_small_cifar@0.35" and ref["table_ms"] > 0 and ref["measured_ms"] > 0
    assert ref["epochs"] == doc["final"]["epochs"] == 1 and 0 <= ref["top1"] <= 1 and "references_s" in doc["timings"]
    assert "the zoo's reference networks" in shown
    for name in ("latency_table.json", "supernet.pt", "search_state.json", "final/last.pt", "pareto.png",
                 "references/mobilenet_v3_small_cifar-w0.35/last.pt"):
        assert (out / name).is_file(), name
    assert main(["report", str(out)]) == 0  # the search's own document renders: plot, finalists, references
    html = (out / "report.html").read_text()
    assert "<h2>Architecture search</h2>" in html and html.count('<img src="data:image/png;base64,') == 1
    assert '<td class="l">mobilenet_v3_small_cifar@0.35</td>' in html
    # resuming a finished run reuses the supernet and the state: the same history
    assert main([*argv, "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["history"] == doc["history"] and again["supernet"]["reused"]
    assert again["chosen"]["arch"] == doc["chosen"]["arch"] and again["chosen"]["reason"].endswith("kept on resume)")


def test_kendall_tau_hand_counted():
    # pairs: (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant -> tau = (5-1)/6
    tau, p = kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])
    assert tau == pytest.approx(4 / 6) and 0 < p <= 1
    assert kendall_tau([1, 2, 3], [3, 2, 1])[0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="two equally long lists"):
        kendall_tau([1.0], [1.0])


def test_kendall_tau_interval_brackets_the_estimate_and_narrows_with_n():
    assert kendall_tau_interval([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx((1.0, 1.0))
    assert kendall_tau_interval([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx((-1.0, -1.0))
    rng = random.Random(0)
    widths = []
    for n in (12, 200):
        a = [rng.random() for _ in range(n)]
        b = [x + rng.gauss(0, 0.3) for x in a]
        lo, hi = kendall_tau_interval(a, b)
        assert lo < kendall_tau(a, b)[0] < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 200 subnets pin tau far tighter than 12
    assert kendall_tau_interval(a, b, seed=3) == kendall_tau_interval(a, b, seed=3)
    with pytest.raises(ValueError, match="at least 3"):
        kendall_tau_interval([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="tau is undefined"):
        kendall_tau_interval([0.1, 0.1, 0.1, 0.1], [0.3, 0.2, 0.5, 0.1])


@pytest.mark.slow
def test_tiny_search_on_local_ray_matches_serial():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'edgecnn[ray]')")
    torch.manual_seed(0)
    net = Supernet(TINY_SPACE, num_classes=10, in_chans=1)
    ref = DataRef("digits", image_size=16, limit=12)
    settings = EstimateSettings(image_size=16, recal_batches=2, recal_batch_size=16)
    model = LatencyModel(synthetic_table(TINY_SPACE))

    def latency(arch: str) -> float:
        return model.predict(arch, input_size=16, num_classes=10, in_chans=1).total_ms

    cfg = SearchConfig("evolution", budget=6, population=4, sample_size=2, batch=2, seed=0)
    obj = Objective(0.5)
    with Executor("serial") as ex:
        serial = run_search(TINY_SPACE, SupernetEstimator(net, ref, settings, ex), latency, obj, cfg)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": driver_path()}})
    try:
        with Executor("ray", workers=2) as ex:
            on_ray = run_search(TINY_SPACE, SupernetEstimator(net, ref, settings, ex), latency, obj, cfg)
    finally:
        ray.shutdown()
    assert [c.arch for c in on_ray.history] == [c.arch for c in serial.history]
    for a, b in zip(on_ray.history, serial.history):
        assert a.acc == pytest.approx(b.acc, abs=1 / 120)  # 120 validation images: at most one flips


def test_cli_search_with_a_zero_cost_proxy_scores_by_the_proxy(tmp_path):
    from edgecnn.search.estimate import search_split
    from edgecnn.search.proxies import ProxyEstimator, proxy_batch
    from edgecnn.train.task import worker_data

    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE.to_dict()))
    out = tmp_path / "run"
    argv = ["search", "--space", str(space), "--data", "digits", "--limit", "12", "--target", "5ms", "--hard",
            "--estimator", "proxy-synflow", "--budget", "4", "--population", "2", "--sample-size", "2", "--batch",
            "2", "--workers", "0", "--finalists", "1", "--max-seconds", "0.2", "--references", "none", "--retries",
            "0", "--threads", "1", "--final-epochs", "0", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert not (out / "supernet.pt").exists() and doc["estimator"] == "proxy-synflow"
    data = search_split(worker_data(DataRef("digits", limit=12)), val_fraction=0.1, seed=0)
    archs = [c["arch"] for c in doc["history"]]
    expected = ProxyEstimator("synflow", proxy_batch(data, seed=0), num_classes=data.num_classes)(archs)
    assert [c["acc"] for c in doc["history"]] == pytest.approx(expected)
    assert max(expected) > 1  # log synflow: not an accuracy, and the state must still resume
    assert main([*argv, "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["history"] == doc["history"]
    naswot = [x if x != "proxy-synflow" else "proxy-naswot" for x in argv]
    assert main([*naswot, "--resume"]) == 2  # scores of another estimator do not compare


def test_a_proxy_needs_the_hard_constraint():
    from edgecnn.search.job import SearchJob

    with pytest.raises(ValueError, match="hard constraint"):
        SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0), estimator="proxy-naswot")


def test_cli_anchor_is_the_zoo_network_at_the_target_unless_its_latency_is_given():
    from edgecnn.cli.search_cmd import parse_anchor
    from edgecnn.latency.compare import Anchor
    from edgecnn.zoo import arch_of

    w75 = arch_of("mobilenet_v3_small_cifar", width=0.75)
    assert parse_anchor(None, 0.4) is None
    assert parse_anchor("mobilenet_v3_small_cifar@0.75", 0.408) == Anchor(w75, 0.408)  # as fast as it was then
    got = parse_anchor("mobilenet_v3_small_cifar@0.75=410us", 0.5)
    assert got.arch == w75 and got.ms == pytest.approx(0.41)
