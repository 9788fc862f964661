"""Deploy a trained network to a target: the artifact, its top-1 and latency on the target, and int8 as a measured choice.

int8 is not faster everywhere: on a CPU without int8 dot products, at small
spatial sizes or for depthwise and SE layers, the quantise/dequantise and
integer kernels can cost more than they save (an int8 MobileNetV3 under ONNX
Runtime measured 1.5× *slower* than fp32 on an AVX2-only EPYC), and post-training
quantisation can lose accuracy. So :func:`deploy` builds both forms on the
target, evaluates both on the same test images, times both interleaved
(rounds alternate the order, each a full :func:`~edgecnn.latency.measure.time_fn`)
and, with ``int8="auto"``, keeps int8 only where it is faster in the median of
round medians by more than the noise margin *and* in most rounds, and loses
at most ``max_drop`` top-1; otherwise it keeps fp32 and says why.
``int8="on"``/``"off"`` force the choice (both are still measured with ``on``).

The :class:`Deployment` carries the chosen artifact and a *manifest* — what a
mobile engineer takes into an app besides the file: runtime and version,
input shape and normalisation, class names, the measured latency and top-1 on
the target, the int8 settings and the decision.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn.atomic import atomic_write
from edgecnn.data import BatchLoader, DataSet
from edgecnn.latency.compare import interleaved
from edgecnn.latency.fingerprint import is_agent_address
from edgecnn.latency.isa import InstructionSet, detect_isa
from edgecnn.latency.measure import TimingConfig, device_fingerprint, time_fn
from edgecnn.latency.remote import client_for, measure_remote
from edgecnn.latency.targets import get_target
from edgecnn.latency.targets.base import Program

INT8_CHOICES = ("auto", "on", "off")
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FormResult:
    """One form (fp32 or int8) of the network on the target."""

    form: str  # "fp32" or "int8"
    top1: float  # on the test images evaluated
    latency_ms: float  # median of the rounds' medians, batch 1
    fastest_ms: float  # the fastest run of all rounds
    round_ms: tuple[float, ...]  # each round's median
    size_bytes: int  # the artifact's size

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "top1": self.top1, "latency_ms": self.latency_ms, "fastest_ms": self.fastest_ms,
                "round_ms": list(self.round_ms), "size_bytes": self.size_bytes}  # fmt: skip


@dataclass(frozen=True)
class Deployment:
    """The chosen artifact and its manifest."""

    target: str
    artifacts: dict[str, bytes]  # every form's artifact: "fp32", and "int8" where built
    form: str  # the chosen form: "fp32" or "int8"
    reason: str  # why that form
    forms: dict[str, FormResult]  # every form that was built and measured
    agreement: float | None = None  # share of test images where int8 predicts what fp32 predicts (None: no int8)
    int8_fallback: dict[str, Any] | None = None  # which layer group stayed fp32 in "int8" (measured), and every try
    device: str = "cpu"  # where it was measured: this machine, or an agent's HOST:PORT
    images: int = 0  # test images evaluated
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact(self) -> bytes:
        """The chosen form's artifact."""
        return self.artifacts[self.form]


def normalised_images(data: DataSet, split: str, n: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(image, label) batches of one, normalised as the network sees them: the first ``n`` of ``split`` (all: None)."""
    part = getattr(data, split)
    if n is not None:
        part = part.subset(torch.arange(min(n, len(part))))
    yield from BatchLoader(part, batch_size=1, mean=data.mean, std=data.std).epoch(0)


def calibration_inputs(data: DataSet, n: int) -> list[torch.Tensor]:
    """``n`` normalised batch-1 training images (the int8 calibration set)."""
    if n < 1:
        raise ValueError(f"int8 calibration needs at least one image, got {n}")
    return [x for x, _ in normalised_images(data, "train", n)]


def predictions(program: Program, data: DataSet, *, images: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, label) of a loaded artifact on the first ``images`` test images (all: None), batch 1."""
    pred, labels = [], []
    for x, y in normalised_images(data, "test", images):
        pred.append(int(np.asarray(program(x.numpy())).argmax()))
        labels.append(int(y[0]))
    return np.array(pred, dtype=np.int64), np.array(labels, dtype=np.int64)


class _RemoteProgram(Program):
    """An artifact run on an agent's device (:mod:`edgecnn.latency.remote`): outputs computed there."""

    def __init__(self, client: Any, artifact: bytes, runtime: str, threads: int) -> None:
        self.client, self.artifact, self.runtime, self.threads = client, artifact, runtime, threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.client.run(self.artifact, x, runtime=self.runtime, threads=self.threads))

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        raise ValueError("a program on an agent is timed there (measure_remote), not bound here")


def choose_int8(fp32: FormResult, int8: FormResult, *, max_drop: float, margin: float = 0.03) -> tuple[bool, str]:
    """Keep int8 only if it is faster by more than ``margin`` (median of round medians, and in most rounds)
    and loses at most ``max_drop`` top-1; the reason either way."""
    drop = fp32.top1 - int8.top1
    wins = sum(a < b for a, b in zip(int8.round_ms, fp32.round_ms))
    speed = fp32.latency_ms / int8.latency_ms if int8.latency_ms > 0 else float("inf")
    faster = int8.latency_ms < fp32.latency_ms * (1 - margin) and wins * 2 > len(fp32.round_ms)
    said = (f"int8 {int8.latency_ms:.3f} ms vs fp32 {fp32.latency_ms:.3f} ms ({speed:.2f}×, faster in {wins}/"
            f"{len(fp32.round_ms)} rounds), top-1 {int8.top1:.2%} vs {fp32.top1:.2%} (drop {drop * 100:+.2f} pp, "
            f"limit {max_drop * 100:.2f} pp)")  # fmt: skip
    if not faster:
        return False, f"fp32 kept: int8 is not faster here: {said}"
    if drop > max_drop:
        return False, f"fp32 kept: int8 loses too much accuracy: {said}"
    return True, f"int8 kept: faster within the accuracy limit: {said}"


def deploy(model: nn.Module, data: DataSet, *, target: str = "onnxruntime", int8: str = "auto",
           max_drop: float = 0.01, threads: int = 1, calibration_images: int = 300, images: int | None = None,
           rounds: int = 3, timing: TimingConfig | None = None, fallback: bool = True, device: str = "cpu",
           progress: Callable[[str], None] | None = None) -> Deployment:  # fmt: skip
    """Export ``model`` to ``target``, evaluate and time it (and its int8 form per ``int8``), keep the better.

    ``images``: test images evaluated (all: None). ``max_drop``: the largest top-1 loss (a share, 0.01 = 1 pp)
    int8 may cost under ``auto``. ``fallback``: where the target can mix precisions
    (:meth:`~edgecnn.latency.targets.base.Target.int8_variants`), the int8 form is the fastest of full int8 and
    int8 with depthwise and/or SE layers kept fp32, measured in the same interleaved rounds. ``device``: an
    agent's ``HOST:PORT`` runs, evaluates and times everything on that device, int8 quantised for its CPU.
    """
    if int8 not in INT8_CHOICES:
        raise ValueError(f"--int8 must be one of {', '.join(INT8_CHOICES)}, got {int8!r}")
    if not 0 <= max_drop <= 1:
        raise ValueError(f"max_drop is a share of top-1 in [0, 1] (0.01 = 1 pp), got {max_drop}")
    tgt = get_target(target)
    tgt.require()
    say = progress or (lambda _msg: None)
    if int8 == "on" and not tgt.int8:
        raise ValueError(f"the {target} target has no int8 export; use --int8 off or another --target")
    model = model.eval()
    example = torch.zeros(1, data.in_chans, data.image_size, data.image_size)
    client = client_for(device) if is_agent_address(device) else None
    isa = client.isa() if client is not None else detect_isa()  # int8 settings for the CPU it will run on
    say(f"exporting fp32 for {target}" + (f" on {device}" if client is not None else ""))
    artifacts = {"fp32": tgt.export(model, example)}
    variants: dict[str, bytes] = {}
    if int8 != "off" and tgt.int8:
        say(f"quantising to int8 ({calibration_images} calibration images)")
        calib = calibration_inputs(data, calibration_images)
        artifacts["int8"] = tgt.export(model, example, calibration=calib, isa=isa)
        if fallback:
            say("quantising the per-layer fallbacks (depthwise / SE layers kept fp32)")
            variants = tgt.int8_variants(model, example, calib, isa=isa)
    say(f"timing {', '.join([*artifacts, *variants])} interleaved ({rounds} rounds)")
    runs = {**artifacts, **variants}
    if client is not None:  # everything runs on the device: outputs and timings come from its agent
        shape = tuple(example.shape)
        loaded: dict[str, Program] = {f: _RemoteProgram(client, a, target, threads) for f, a in runs.items()}
        timers = {f: (lambda a=a: measure_remote(None, shape, runtime=target, threads=threads, config=timing,
                                                 client=client, artifact=a).stats) for f, a in runs.items()}  # fmt: skip
        runs_ms = interleaved(timers, rounds=rounds)
    else:
        with tgt.threads(threads):
            loaded = {f: tgt.load(a, threads=threads) for f, a in runs.items()}
            runs_ms = interleaved({f: (lambda r=p.bind(example): time_fn(r, timing)) for f, p in loaded.items()},
                                  rounds=rounds)  # fmt: skip
    # per form: its round medians and its fastest run over all rounds
    timed = {f: ([s.median_ms for s in st], min(s.min_ms for s in st)) for f, st in runs_ms.items()}
    fallback_ms = {f: statistics.median(timed[f][0]) for f in ["int8", *variants] if f in timed}
    kept_fp32 = None
    if variants:  # the fastest int8 form becomes "int8": a layer group stays fp32 where that measured faster
        best = min(fallback_ms, key=fallback_ms.__getitem__)
        if best != "int8":
            kept_fp32 = best.removeprefix("fp32 ")
            artifacts["int8"], timed["int8"], loaded["int8"] = runs[best], timed[best], loaded[best]
    preds = {}
    for form in artifacts:
        say(f"evaluating {form} on the test images")
        preds[form] = predictions(loaded[form], data, images=images)
    top1 = {form: float((p == y).mean()) if len(y) else 0.0 for form, (p, y) in preds.items()}
    labels = preds["fp32"][1]
    agreement = float((preds["int8"][0] == preds["fp32"][0]).mean()) if "int8" in preds and len(labels) else None
    forms = {f: FormResult(f, top1[f], statistics.median(timed[f][0]), timed[f][1], tuple(timed[f][0]),
                           len(artifacts[f])) for f in artifacts}  # fmt: skip
    if "int8" not in forms:
        chosen, reason = "fp32", ("int8 off (--int8 off)" if int8 == "off" else f"{target} has no int8 export")
    elif int8 == "on":
        chosen, reason = "int8", "int8 forced (--int8 on)"
    else:
        keep, reason = choose_int8(forms["fp32"], forms["int8"], max_drop=max_drop)
        chosen = "int8" if keep else "fp32"
    dep = Deployment(target, artifacts, chosen, reason, forms, agreement, images=len(labels),
                     int8_fallback={"kept_fp32": kept_fp32, "int8_forms_ms": fallback_ms} if variants else None,
                     device=device)  # fmt: skip
    return replace(dep, manifest=manifest_of(dep, data, threads, isa))


def manifest_of(dep: Deployment, data: DataSet, threads: int, isa: InstructionSet | None = None) -> dict[str, Any]:
    """The manifest that travels with the artifact (see the module doc); ``isa``: the CPU int8 was made for."""
    isa = isa or detect_isa()
    tgt = get_target(dep.target)
    chosen = dep.forms[dep.form]
    doc: dict[str, Any] = {
        "format": "edgecnn-deploy", "version": MANIFEST_VERSION,
        "target": dep.target, "runtime_version": tgt.version(), "artifact_suffix": tgt.artifact_suffix,
        "sha256": hashlib.sha256(dep.artifact).hexdigest(), "size_bytes": len(dep.artifact),
        "input": {"shape": [1, data.in_chans, data.image_size, data.image_size], "dtype": "float32",
                  "layout": "NCHW", "scale": "pixels / 255", "mean": list(data.mean), "std": list(data.std),
                  "normalise": "(pixels / 255 - mean) / std, per channel"},
        "output": {"logits": data.num_classes, "classes": list(data.classes)},
        "form": dep.form, "int8_decision": dep.reason,
        "measured": {"top1": chosen.top1, "images": dep.images, "int8_agreement": dep.agreement, "latency_ms": chosen.latency_ms, "fastest_ms": chosen.fastest_ms,
                     "threads": threads, "batch": 1, "forms": {f: r.to_dict() for f, r in dep.forms.items()},
                     "fingerprint": device_fingerprint(backend=dep.target, threads=threads, device=dep.device).to_dict()},
        "details": tgt.details(dep.artifact),
    }  # fmt: skip
    if "int8" in dep.forms:
        doc["int8"] = {**tgt.int8_record(isa), "isa": isa.to_dict(), "fallback": dep.int8_fallback}
    return doc


def int8_section(dep: Deployment) -> dict[str, Any]:
    """The ``int8`` section of a results document (compress, demo): both forms on the target, the choice and why.

    Needs a deployment with an int8 form (``int8`` "auto" or "on" on a target that has one).
    """
    if "int8" not in dep.forms:
        raise ValueError(f"the deployment has no int8 form ({dep.reason})")
    fp32, int8 = dep.forms["fp32"], dep.forms["int8"]
    how = dep.manifest.get("int8", {})  # settings, why them, and the CPU
    return {"target": dep.target, "top1_fp32": fp32.top1, "top1_int8": int8.top1, "agreement": dep.agreement,
            "latency_fp32_ms": fp32.latency_ms, "latency_int8_ms": int8.latency_ms, "images": dep.images,
            "kept": dep.form, "reason": dep.reason, "settings": how.get("settings"),
            "settings_reason": how.get("reason"), "isa": how.get("isa"), "fallback": dep.int8_fallback}  # fmt: skip


def deploy_int8(model: nn.Module, data: DataSet, out_dir: str | os.PathLike[str], *, target: str,
                int8: str = "auto", max_drop: float = 0.01, threads: int = 1, device: str = "cpu",
                calibration_images: int = 300, rounds: int = 3, timing: TimingConfig | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """``model`` deployed fp32 and int8 through :func:`deploy` on ``target`` — on ONNX Runtime where that target
    has no int8 export — the int8 artifact written atomically to ``out_dir/model-int8<suffix>``; the results
    document's ``int8`` section (:func:`int8_section`) with ``artifact``, its path. What ``edgecnn compress
    --int8`` and the demo's int8 stage run."""
    runtime = target if get_target(target).int8 else "onnxruntime"
    dep = deploy(model, data, target=runtime, int8=int8, max_drop=max_drop, threads=threads, device=device,
                 calibration_images=calibration_images, rounds=rounds, timing=timing, progress=progress)  # fmt: skip
    path = Path(out_dir) / f"model-int8{get_target(runtime).artifact_suffix}"
    atomic_write(path, lambda f: f.write(dep.artifacts["int8"]))
    return {**int8_section(dep), "artifact": str(path)}
