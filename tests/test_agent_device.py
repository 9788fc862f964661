"""Every measurement through a real agent on loopback (``--device HOST:PORT``): `edgecnn latency`, a latency table
keyed by the device, and a short NetAdapt whose table entries are timed on the agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from test_agent import TOKEN, Agent, start_agent, stop  # noqa: E402

from edgecnn.build import build  # noqa: E402
from edgecnn.cli.main import main  # noqa: E402
from edgecnn.compress.budget import parse_budget  # noqa: E402
from edgecnn.compress.resource_meter import ResourceMeter  # noqa: E402
from edgecnn.compress.netadapt.loop import NetAdaptConfig, netadapt  # noqa: E402
from edgecnn.latency import remote  # noqa: E402
from edgecnn.latency.fingerprint import fingerprint  # noqa: E402
from edgecnn.latency.measure import TimingConfig, device_fingerprint, measure  # noqa: E402
from edgecnn.latency.model import LatencyModel  # noqa: E402
from edgecnn.latency.per_layer import per_layer  # noqa: E402
from edgecnn.latency.table import LatencyTable  # noqa: E402
from edgecnn.train.config import FINETUNE  # noqa: E402
from edgecnn.train.loop import finetune  # noqa: E402
from edgecnn.train.task import DataRef, worker_data  # noqa: E402

TINY = "conv_k3_c16 ir_s2_e3_c16 ir_c16 gap fc"
WIDE = "conv_k3_c32 ir_s2_e6_c64 ir_e6_c64 gap fc"  # at 32² its time is compute, not per-operator overhead
QUICK = TimingConfig(warmup=2, min_repeats=10, max_repeats=50, max_seconds=0.2, retries=0)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_agent(tmp_path_factory.mktemp("agent"))
    try:
        yield a
    finally:
        stop(a.proc)


@pytest.fixture()
def token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(remote.AGENT_TOKEN_ENV, TOKEN)
    remote._CLIENTS.clear()
    yield
    for c in remote._CLIENTS.values():
        c.close()
    remote._CLIENTS.clear()


def test_measure_and_fingerprint_happen_on_the_agent(agent: Agent, token: None) -> None:
    net = build(TINY, num_classes=10)
    m = measure(net, (1, 3, 32, 32), backend="onnxruntime", threads=1, device=agent.address, config=QUICK)
    assert m.fingerprint.device == agent.address and m.extra["remote"]["address"] == agent.address
    assert m.stats.median_ms > 0 and m.stats.repeats >= 10
    fp = device_fingerprint(backend="onnxruntime", threads=1, device=agent.address)
    assert fp == m.fingerprint  # a table opened before any timing has the measurements' fingerprint
    with pytest.raises(ValueError, match="runs onnxruntime.* not eager"):
        measure(net, (1, 3, 32, 32), backend="eager", threads=1, device=agent.address, config=QUICK)
    with pytest.raises(ValueError, match="per-layer profiles run on this machine only"):
        per_layer(net, (1, 3, 32, 32), backend="onnxruntime", threads=1, device=agent.address, config=QUICK)


def test_a_missing_token_is_a_clear_error(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(remote.AGENT_TOKEN_ENV, raising=False)
    remote._CLIENTS.clear()
    with pytest.raises(ValueError, match="is an edgecnn agent: set EDGECNN_AGENT_TOKEN"):
        measure(build(TINY, num_classes=10), (1, 3, 32, 32), backend="onnxruntime", device=agent.address)


def test_latency_cli_on_the_device(agent: Agent, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv(remote.AGENT_TOKEN_ENV, raising=False)
    remote._CLIENTS.clear()
    out = tmp_path / "m.json"
    assert main(["latency", TINY, "--backend", "onnxruntime", "--device", agent.address, "--agent-token", TOKEN,
                 "--threads", "1", "--input-size", "32", "--num-classes", "10", "--max-seconds", "0.2",
                 "--retries", "0", "--json", str(out)]) == 0  # fmt: skip
    doc = json.loads(out.read_text())
    m = doc["measurement"]
    assert m["fingerprint"]["device"] == agent.address and m["stats"]["median_ms"] > 0
    capsys.readouterr()
    assert main(["latency", TINY, "--device", "nohost:notaport"]) == 2
    assert "notaport" in capsys.readouterr().err
    remote._CLIENTS.clear()


def test_table_and_netadapt_measured_on_the_agent(agent: Agent, token: None, tmp_path: Path) -> None:
    fp = device_fingerprint(backend="onnxruntime", threads=1, device=agent.address)
    table = LatencyTable.open_or_new(tmp_path / "t.json", fp)
    table.config = QUICK
    added = table.ensure([WIDE], input_size=32, num_classes=10, in_chans=1, path=tmp_path / "t.json")
    assert added >= 3 and table.reference_ms is None  # no drift reference runs on a device
    again = LatencyTable.load(tmp_path / "t.json", expect=fp)  # keyed by the device: found again
    assert set(again.entries) == set(table.entries)
    with pytest.raises(ValueError):
        LatencyTable.load(tmp_path / "t.json", expect=fingerprint(backend="onnxruntime", threads=1))  # not this CPU

    torch.manual_seed(0)
    ref = DataRef("digits", image_size=32)
    model = build(WIDE, num_classes=10, in_chans=1)
    train = replace(FINETUNE, batch_size=64, lr=0.05)
    finetune(model, worker_data(ref), steps=10, config=train)
    lat = LatencyModel(table, measure=True, extrapolate=True, path=tmp_path / "t.json")
    meter = ResourceMeter("latency", input_size=32, num_classes=10, in_chans=1, latency=lat)
    cfg = NetAdaptConfig(initial_step=0.1, decay=0.9, short_steps=0, top_k=1, round_to=4, recal_batches=1,
                         train=train, max_iterations=1)  # fmt: skip
    r = netadapt(model, ref, parse_budget("90%latency"), meter=meter, config=cfg)
    assert len(r.history) == 1 and r.history[0].resource < r.start
    assert len(table.entries) > added  # the pruned widths were timed on the agent too


def test_compress_measures_before_and_after_on_the_agent(agent: Agent, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from edgecnn.checkpoint import checkpoint_of, save_checkpoint

    monkeypatch.delenv(remote.AGENT_TOKEN_ENV, raising=False)
    remote._CLIENTS.clear()
    torch.manual_seed(0)
    meta = {"name": "digits", "classes": [str(i) for i in range(10)], "mean": [0.3], "std": [0.37], "image_size": 8}
    ckpt = tmp_path / "m.pt"
    save_checkpoint(checkpoint_of(build(TINY, num_classes=10, in_chans=1), data=meta), ckpt)
    out = tmp_path / "c"
    code = main(["compress", str(ckpt), "--data", "digits", "--budget", "70%macs", "--method", "prune",
                 "--long-epochs", "0", "--threads", "1", "--backend", "onnxruntime", "--device", agent.address,
                 "--agent-token", TOKEN, "--out", str(out), "--no-progress"])  # fmt: skip
    assert code in (0, 1)
    doc = json.loads((out / "results.json").read_text())
    assert doc["device"] == agent.address and doc["before"]["latency_ms"] > 0 and doc["after"]["latency_ms"] > 0
    remote._CLIENTS.clear()


def test_search_measures_its_table_and_finalists_on_the_agent(agent: Agent, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from search_helpers import TINY_SPACE

    monkeypatch.delenv(remote.AGENT_TOKEN_ENV, raising=False)
    remote._CLIENTS.clear()
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE.to_dict()))
    out = tmp_path / "run"
    assert main(["search", "--space", str(space), "--data", "digits", "--limit", "12", "--target", "0.5ms",
                 "--budget", "4", "--population", "2", "--sample-size", "2", "--batch", "2", "--workers", "0",
                 "--supernet-steps", "4", "--finalists", "1", "--max-seconds", "0.2", "--retries", "0",
                 "--final-epochs", "1", "--final-batch-size", "32",
                 "--threads", "1", "--no-progress", "--backend", "onnxruntime", "--device", agent.address,
                 "--agent-token", TOKEN, "--out", str(out)]) == 0  # fmt: skip
    doc = json.loads((out / "results.json").read_text())
    assert doc["latency"]["device"] == agent.address and doc["latency"]["backend"] == "onnxruntime"
    table = json.loads((out / "latency_table.json").read_text())
    assert table["fingerprint"]["device"] == agent.address and table.get("reference_ms") is None
    assert doc["finalists"] and doc["finalists"][0]["measured_ms"] > 0
    remote._CLIENTS.clear()


def test_export_evaluates_and_times_on_the_agent(agent: Agent, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from edgecnn.checkpoint import checkpoint_of, save_checkpoint
    from edgecnn.train.evaluation import evaluate

    monkeypatch.delenv(remote.AGENT_TOKEN_ENV, raising=False)
    remote._CLIENTS.clear()
    torch.manual_seed(0)
    data = worker_data(DataRef("digits", image_size=8))
    model = build(TINY, num_classes=10, in_chans=1)
    finetune(model, data, steps=20, config=replace(FINETUNE, batch_size=64, lr=0.05))
    meta = {"name": "digits", "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
            "image_size": 8}  # fmt: skip
    ckpt = tmp_path / "m.pt"
    save_checkpoint(checkpoint_of(model, data=meta), ckpt)
    out = tmp_path / "e"
    assert main(["export", str(ckpt), "--device", agent.address, "--agent-token", TOKEN, "--out", str(out),
                 "--rounds", "1", "--max-seconds", "0.1", "--calibration-images", "30"]) == 0  # fmt: skip
    m = json.loads((out / "manifest.json").read_text())
    assert m["measured"]["fingerprint"]["device"] == agent.address
    # top-1 computed on the device by the agent = the PyTorch model's on the same images
    assert m["measured"]["forms"]["fp32"]["top1"] == pytest.approx(evaluate(model.eval(), data,
                                                                            channels_last=False).top1, abs=1 / 359)
    assert m["int8"]["isa"]["source"] == f"agent {agent.address}"  # quantised for the device's CPU
    remote._CLIENTS.clear()


def test_demo_optimises_for_the_target_on_the_agent(agent: Agent, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """``edgecnn demo --device``: the runtimes timed there, the table keyed by that device, the verdict timed there."""
    from test_demo import synthetic_table

    monkeypatch.setenv(remote.AGENT_TOKEN_ENV, TOKEN)
    remote._CLIENTS.clear()
    arch = "conv_s2_c8_hswish ir_m16_c8_relu ir_k5_s2_m24_c16_se0.25_hsgate_hswish gap fc"
    table = synthetic_table(arch, 16, backend="onnxruntime")  # the meter deterministic, as in test_demo
    table.fingerprint = device_fingerprint(backend="onnxruntime", threads=1, device=agent.address)
    table.save(tmp_path / "table.json")
    out = tmp_path / "demo"
    assert main(["demo", "--model", arch, "--epochs", "1", "--out", str(out), "--image-size", "16", "--budget", "0.6",
                 "--short-steps", "2", "--long-epochs", "0.2", "--latency-table", str(tmp_path / "table.json"),
                 "--measured-rounds", "0", "--cam-images", "0", "--no-int8", "--target", "onnxruntime",
                 "--device", agent.address]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["target"] == "onnxruntime" and res["targets_ms"]["onnxruntime"] > 0
    assert res["netadapt"]["measured"]["device"] == agent.address
    assert res["result"]["target_ms"] > 0 and res["result"]["baseline_target_ms"] > 0
    # a table of this machine is refused for the device, with the reason
    local = synthetic_table(arch, 16, backend="onnxruntime")
    local.save(tmp_path / "local.json")
    assert main(["demo", "--model", arch, "--epochs", "1", "--out", str(tmp_path / "d2"), "--image-size", "16",
                 "--latency-table", str(tmp_path / "local.json"), "--cam-images", "0", "--no-int8",
                 "--target", "onnxruntime", "--device", agent.address]) == 2  # fmt: skip
    remote._CLIENTS.clear()
