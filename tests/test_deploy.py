"""Deployment to a target (edgecnn.deploy) and `edgecnn export`: int8 kept only where measured faster and within the
accuracy limit, a manifest that matches the artifact, the run folder policy."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import trained_digits_net

pytest.importorskip("onnxruntime")

from edgecnn.checkpoint import checkpoint_of, save_checkpoint  # noqa: E402
from edgecnn.cli.main import main  # noqa: E402
from edgecnn.deploy import FormResult, choose_int8, deploy  # noqa: E402
from edgecnn.latency.isa import detect_isa  # noqa: E402
from edgecnn.latency.measure import TimingConfig, time_fn  # noqa: E402
from edgecnn.latency.targets import get_target  # noqa: E402
from edgecnn.train.evaluation import evaluate  # noqa: E402

FAST = TimingConfig(warmup=2, min_repeats=5, max_repeats=20, max_seconds=0.2, max_foreign=None)


def form(name: str, top1: float, rounds: tuple[float, ...]) -> FormResult:
    return FormResult(name, top1, float(np.median(rounds)), min(rounds), rounds, 1000)


@pytest.mark.parametrize(
    ("int8_rounds", "int8_top1", "keep", "said"),
    [
        ((0.5, 0.5, 0.5), 0.795, True, "int8 kept: faster within the accuracy limit"),  # 2× faster, 0.5 pp lost
        ((0.99, 0.99, 0.99), 0.80, False, "not faster"),  # 1% faster: inside the 3% margin
        ((1.5, 1.4, 1.6), 0.80, False, "not faster"),  # slower (AVX2-only CPUs, small nets)
        ((0.5, 0.5, 0.5), 0.78, False, "loses too much accuracy"),  # 2 pp > 1 pp
    ],
)
def test_int8_kept_only_where_faster_and_accurate(int8_rounds: tuple[float, ...], int8_top1: float, keep: bool,
                                                  said: str) -> None:  # fmt: skip
    fp32 = form("fp32", 0.80, (1.0, 1.0, 1.0))
    kept, reason = choose_int8(fp32, form("int8", int8_top1, int8_rounds), max_drop=0.01)
    assert kept is keep and said in reason
    assert "fp32 1.000 ms" in reason and "limit 1.00 pp" in reason


def test_int8_must_win_most_rounds_not_only_the_median() -> None:
    fp32 = FormResult("fp32", 0.8, 1.0, 0.4, (1.0, 0.4, 1.0), 1000)  # one round ran fast for fp32
    kept, reason = choose_int8(fp32, form("int8", 0.8, (0.5, 0.5, 1.2)), max_drop=0.01)
    assert not kept and "faster in 1/3 rounds" in reason


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, object]:
    return trained_digits_net()


def test_deploy_measures_both_forms_and_the_manifest_matches_the_artifact(trained) -> None:
    model, data = trained
    dep = deploy(model, data, target="onnxruntime", int8="auto", timing=FAST, rounds=2, calibration_images=100)
    assert set(dep.forms) == {"fp32", "int8"} and dep.form in dep.forms
    fp32 = dep.forms["fp32"]
    # fp32 on the target is the PyTorch model: same top-1 as evaluate() on the same normalised test images
    assert fp32.top1 == pytest.approx(evaluate(model, data, channels_last=False).top1, abs=1 / len(data.test))
    assert abs(dep.forms["int8"].top1 - fp32.top1) <= 0.03  # the CPU's int8 settings hold accuracy
    m = dep.manifest
    assert m["sha256"] == hashlib.sha256(dep.artifact).hexdigest() and m["size_bytes"] == len(dep.artifact)
    assert m["target"] == "onnxruntime" and m["runtime_version"] == get_target("onnxruntime").version()
    assert m["input"]["shape"] == [1, 1, 8, 8] and m["input"]["mean"] == list(data.mean)
    assert m["output"]["classes"] == list(data.classes) and m["form"] == dep.form
    assert m["measured"]["top1"] == dep.forms[dep.form].top1 and m["int8_decision"] == dep.reason
    assert m["int8"]["isa"]["int8_kind"] == detect_isa().int8_kind and m["int8"]["settings"]["name"]
    assert m["measured"]["fingerprint"]["backend"] == "onnxruntime"
    assert len(fp32.round_ms) == 2 and fp32.fastest_ms <= fp32.latency_ms


def test_deploy_forced_choices_and_bad_arguments(trained) -> None:
    model, data = trained
    on = deploy(model, data, int8="on", timing=FAST, rounds=1, calibration_images=20, images=50)
    assert on.form == "int8" and "forced" in on.reason
    off = deploy(model, data, int8="off", timing=FAST, rounds=1, images=50)
    assert set(off.forms) == {"fp32"} and "off" in off.reason
    with pytest.raises(ValueError, match="--int8 must be one of auto, on, off"):
        deploy(model, data, int8="maybe")
    with pytest.raises(ValueError, match=r"max_drop is a share of top-1 in \[0, 1\]"):
        deploy(model, data, max_drop=5)


def test_export_cli_writes_artifact_manifest_and_refuses_a_rerun(trained, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    model, data = trained
    ckpt = tmp_path / "model.pt"
    meta = {"name": "digits", "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
            "image_size": 8}  # fmt: skip
    save_checkpoint(checkpoint_of(model, data=meta), ckpt)
    out = tmp_path / "exp"
    argv = ["export", str(ckpt), "--out", str(out), "--max-seconds", "0.1", "--rounds", "1", "--images", "60",
            "--calibration-images", "30"]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    art = out / manifest["file"]
    assert art.suffix == ".onnx" and hashlib.sha256(art.read_bytes()).hexdigest() == manifest["sha256"]
    assert json.loads((out / "results.json").read_text())["kind"] == "export"
    assert "kept" in capsys.readouterr().out
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(argv) == 2  # a previous export is not replaced unasked
    err = capsys.readouterr().err.strip()
    assert "already holds a previous run" in err and "--overwrite" in err and "--resume" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*argv, "--overwrite", "--int8", "off"]) == 0
    assert json.loads((out / "manifest.json").read_text())["form"] == "fp32"
    assert main(["export", str(ckpt), "--target", "eager", "--out", str(tmp_path / "e")]) == 2  # nothing to deploy


@pytest.mark.parametrize(("name", "depthwise", "se"), [("mobilenet_v3_small", 11, 18), ("mobilenet_v2", 17, 0),
                                                        ("resnet18", 0, 0)])  # fmt: skip
def test_fallback_groups_match_the_papers_tables(name: str, depthwise: int, se: int) -> None:
    """MobileNetV3-Small: 11 bnecks, SE in 9 of them (2 convs each; Howard et al. 2019, Table 2);
    MobileNetV2: 17 bottlenecks (Sandler et al. 2018, Table 2); ResNet-18: neither."""
    from edgecnn.export import onnx_bytes
    from edgecnn.latency.targets.ort_int8 import conv_groups, inline_constant_identities
    from edgecnn.zoo import create

    net = create(name, num_classes=10, width=0.5).eval()
    groups = conv_groups(inline_constant_identities(onnx_bytes(net, torch.zeros(1, 3, 32, 32))))
    assert (len(groups["depthwise"]), len(groups["se"])) == (depthwise, se)
    assert all("/se/" in n for n in groups["se"])


def test_the_int8_form_is_the_fastest_measured_fallback(trained) -> None:
    import onnx

    from edgecnn.latency.targets.ort_int8 import conv_groups

    model, data = trained
    dep = deploy(model, data, int8="on", timing=FAST, rounds=2, calibration_images=30, images=40)
    fb = dep.int8_fallback
    assert fb is not None and set(fb["int8_forms_ms"]) == {"int8", "fp32 depthwise"}  # this net has no SE
    fastest = min(fb["int8_forms_ms"], key=fb["int8_forms_ms"].__getitem__)
    assert dep.forms["int8"].latency_ms == fb["int8_forms_ms"][fastest]
    assert fb["kept_fp32"] == (None if fastest == "int8" else "depthwise")
    assert dep.manifest["int8"]["fallback"] == fb
    # the depthwise variant really keeps those convolutions fp32: their weights are plain initializers
    variant = get_target("onnxruntime").int8_variants(model, torch.zeros(1, 1, 8, 8), [torch.zeros(1, 1, 8, 8)])
    g = onnx.load_from_string(variant["fp32 depthwise"]).graph
    inits = {i.name for i in g.initializer}
    dw = set(conv_groups(variant["fp32 depthwise"])["depthwise"])
    assert dw and all(n.input[1] in inits for n in g.node if n.name in dw)
    assert any(n.input[1] not in inits for n in g.node if n.op_type == "Conv" and n.name not in dw)  # others int8
