"""The one-command tour (``edgecnn demo``): train, analyse, time and explain a network on built-in data.

The pipeline follows the package's data flow — arch spec → model → training →
analysis → latency on this device and its per-block latency table → NetAdapt to half
the baseline's latency → fold BN → ONNX and int8 → evaluation → CAM on a few test
digits of the result → report (:mod:`edgecnn.demo_compress` holds the compression
stages) — on scikit-learn's digits, which
ship with scikit-learn, so it runs on a fresh machine with no download. Its
per-block table puts multiply-adds next to measured milliseconds, which is
the point of the MobileNet design method: MACs do not track latency, and
depthwise and memory-bound layers cost far more per MAC than dense convs
(Howard et al. 2019, §4; Tan et al. 2019, §1).

Everything it shows lands in ``out_dir``: ``results.json`` (the results
document, kind ``demo``, see :mod:`edgecnn.results`), ``report.html`` rendered
from it by :mod:`edgecnn.report` (tables, plots, CAM overlays), ``report.md``,
the overlays under ``cam/``, the trained checkpoint ``model.pt`` (weights +
arch string), the latency table ``latency_table.json``, the compressed network
``model-netadapt.pt`` with its ``model.onnx`` / ``model-int8.onnx``. Each stage is timed and recorded by :class:`edgecnn.pipeline.StageLog`.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from edgecnn.progress import progress_bar
from edgecnn import zoo
from edgecnn.analysis import LayerCost, analyze
from edgecnn.analysis.dynamics import erf_section, gradflow_section
from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.atomic import atomic_write_text
from edgecnn.build import build, count_params
from edgecnn.checkpoint import checkpoint_of, save_checkpoint
from edgecnn.demo_compress import CompressSettings, compress_stages
from edgecnn.data import DataSet
from edgecnn.data.loader import BatchLoader
from edgecnn.data.sets import first_per_class
from edgecnn.explain.run import ExplainConfig, explain_images
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.latency.model import LatencyModel, whole_network_model
from edgecnn.latency.table import LatencyTable, new_table
from edgecnn.latency.fingerprint import check_device, is_agent_address
from edgecnn.latency.per_layer import per_layer, units
from edgecnn.latency.remote import AgentError
from edgecnn.latency.targets import get_target, target_names
from edgecnn.memory import check_memory
from edgecnn.outputs import claim_run_dir
from edgecnn.pipeline import StageLog
from edgecnn.report import Md, markdown, md_code, md_link, render_html
from edgecnn.results import read_results, write_results
from edgecnn.train import TrainConfig, fit
from edgecnn.train.config import EpochStats
from edgecnn.train.task import DataRef, worker_data


# the latency table's timing: short loops (a few hundred block variants), one retry when disturbed
TABLE_TIMING = TimingConfig(warmup=3, min_repeats=10, max_repeats=100, max_seconds=0.25, retries=1, retry_wait_s=0.2)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo trains and measures."""

    model: str = "mobilenet_v3_small_cifar"  # zoo name or arch string (or the label of a network run_demo is given)
    width: float = 0.5  # width multiplier (zoo models only)
    data: str = "digits"  # "digits" (built in) or a CIFAR-10 / ImageFolder path
    image_size: int = 32  # network input side
    epochs: int = 12  # training epochs
    batch_size: int = 64  # training batch
    threads: int = 1  # threads for the latency measurements (a fixed count makes them comparable)
    max_seconds: float = 2.0  # cap per latency timing loop
    onnx: bool = True  # also time the model under ONNX Runtime when it is installed
    target: str | None = None  # the deployment runtime to optimise for; None: the fastest installed here, measured
    device: str = "cpu"  # where the target runs: this machine, or an agent's HOST:PORT (docs/agent.md)
    out_dir: str = "runs/demo"  # where report.md, results.json and model.pt go
    seed: int = 0  # seeds data split, initialisation and augmentation
    cam_images: int = 8  # test images explained by Grad-CAM (the first of each class); 0 = no CAM stage
    cam_method: str = "gradcam"  # "gradcam" works on any head; "cam" needs GAP → linear (not MobileNetV3's)
    overwrite: bool = False  # replace a previous demo's results in out_dir (else such a folder is refused)
    compress: CompressSettings | None = CompressSettings()  # NetAdapt → fold BN → ONNX/int8; None = baseline only
    grid: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # width fractions of each block measured for the latency table
    latency_table: str | None = None  # reuse this device's table (JSON; missing variants are measured and added)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.image_size < 8:
            raise ValueError(f"image size must be at least 8, got {self.image_size}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.cam_images < 0:
            raise ValueError(f"cam_images must be 0 or more, got {self.cam_images}")
        check_device(self.device)
        if self.target == "eager" and is_agent_address(self.device):
            raise ValueError("an agent runs exported models (onnxruntime, executorch), not eager PyTorch: drop "
                             "--target eager or --device")  # fmt: skip
        if self.target is not None:
            get_target(self.target).require()  # unknown or not installed: said before any work
            if self.target == "onnxruntime" and not self.onnx:
                raise ValueError("--target onnxruntime and --no-onnx contradict each other: drop one")


@dataclass(frozen=True)
class BlockRow:
    """One block of the trained network: its cost and its measured latency."""

    name: str  # module path, "blocks.<i>"
    block: str  # the block's arch string
    params: int  # parameters
    macs: int  # multiply-adds at the demo's input size
    ms: float  # median latency of the block alone (eager, `threads` threads)
    rf: float | None = None  # receptive-field side after the block along H, SE gates left out (input pixels);
    #                          None where the conv path itself sees the whole input (global pooling) or has no field
    rf_jump: float | None = None  # effective stride after the block along H, SE gates left out
    rf_whole: bool = False  # the block's output sees the whole input (through an SE gate or global pooling)

    @property
    def us_per_mmac(self) -> float:
        """Microseconds per million MACs: how far latency departs from MACs."""
        return self.ms * 1e3 / (self.macs / 1e6) if self.macs else float("nan")


@dataclass(frozen=True)
class EpochRow:
    """One epoch of the demo's training run (the plain part of :class:`~edgecnn.train.config.EpochStats`)."""

    epoch: int  # 1-based
    lr: float  # learning rate at the epoch's last step
    train_loss: float  # mean training loss over the epoch
    train_top1: float  # top-1 on the augmented training batches
    test_loss: float | None  # test cross-entropy after the epoch (None where not evaluated)
    test_top1: float | None  # test top-1 after the epoch (None where not evaluated)
    seconds: float  # wall time of the epoch's training

    @classmethod
    def of(cls, e: EpochStats) -> EpochRow:
        t = e.test
        test_loss, test_top1 = (t.loss, t.top1) if t is not None else (None, None)
        return cls(e.epoch, e.lr, e.train_loss, e.train_top1, test_loss, test_top1, e.seconds)


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    arch: str  # canonical arch string of the trained network
    data: str  # data set name
    params: int  # trainable parameters
    macs: int  # multiply-adds per image (FLOPs = 2·MACs)
    top1: float  # test top-1 after training
    top5: float  # test top-5 after training
    train_seconds: float  # wall time of training
    images_per_s: float  # training throughput
    receptive_field: str  # the output's receptive field ("whole input" with SE / global pooling)
    eager_ms: float  # end-to-end median latency, PyTorch eager, batch 1
    onnx_ms: float | None  # the same under ONNX Runtime (None when not installed)
    blocks: tuple[BlockRow, ...]  # per-block costs and latencies
    machine: dict[str, Any]  # where it ran
    out_dir: str  # where the report, results and checkpoint are
    history: tuple[EpochRow, ...] = ()  # the training curve, one row per epoch
    input_size: int | None = None  # network input side (pixels)
    cam: dict[str, Any] | None = None  # the CAM stage's section (edgecnn.explain.run), None when not run
    stages: tuple[dict[str, Any], ...] = ()  # one row per pipeline stage (edgecnn.pipeline.StageRow)
    netadapt: dict[str, Any] | None = None  # the report's NetAdapt section (edgecnn.demo_compress), None when not run
    result: dict[str, Any] | None = None  # the compressed network: arch, top1, eager_ms, macs, params, onnx, int8
    erf: dict[str, Any] | None = None  # the baseline's effective receptive field (edgecnn.analysis.dynamics)
    gradflow: dict[str, Any] | None = None  # the baseline's gradient norms with and without skips (same module)
    pareto: dict[str, Any] | None = None  # baseline and result as accuracy-latency points (measured on the target)
    target: str = "eager"  # the deployment runtime the demo optimised for
    targets_ms: dict[str, float] | None = None  # the baseline end to end on every runtime installed here (median)


def _arch(cfg: DemoConfig) -> str:
    # the demo's default width is for zoo models; an arch string already says its widths
    return zoo.model_arg(cfg.model, width=cfg.width if cfg.model in zoo.REGISTRY else 1.0).arch


Network = Callable[[DataSet], tuple[torch.nn.Module, dict[str, Any]]]
"""A network of the user's own code for the demo: ``network(data)`` → (the module for the data's classes and
channels, the checkpoint ``config`` that rebuilds it — its constructor record, never code)."""


def run_demo(cfg: DemoConfig = DemoConfig(), *, console: Console | None = None,
             network: Network | None = None) -> DemoResult:  # fmt: skip
    """Train ``cfg.model`` on ``cfg.data``, analyse it, time it, explain it, and write the report.

    ``network``: a network of your own code instead of a zoo name or arch string (``edgecnn demo --model
    MODULE:FN[:key=value,...]``; ``cfg.model`` is then its label). It has no arch string, so its per-block rows are
    its top-level modules, NetAdapt prunes it in module space and measures every proposal end to end on the target
    (no latency table), and the result's checkpoint records the pruning steps and the constructor.
    """
    console = console or Console()
    arch = _arch(cfg) if network is None else None  # a bad model is refused before anything is created
    out = claim_run_dir(cfg.out_dir, overwrite=cfg.overwrite, resumable=False)  # writable, no previous results replaced
    log = StageLog(console)

    with log.stage("data", "data"):
        ref = DataRef(cfg.data, image_size=cfg.image_size, seed=cfg.seed)
        data = worker_data(ref)  # loaded once per process: NetAdapt reads the same DataRef
        console.print(f"{data.name}: {len(data.train)} train / {len(data.test)} test images, "
                      f"{len(data.classes)} classes, {data.in_chans}×{cfg.image_size}×{cfg.image_size}")  # fmt: skip

    with log.stage("analyze", "model and exact costs"):
        torch.manual_seed(cfg.seed)
        record: dict[str, Any] = {}
        if arch is not None:
            check_memory(arch, input_size=cfg.image_size, num_classes=len(data.classes), in_chans=data.in_chans,
                         batch=cfg.batch_size, training=True, what=f"the demo's {cfg.model!r}")  # fmt: skip
            model = build(arch, num_classes=len(data.classes), in_chans=data.in_chans)
        else:
            model, record = network(data)  # type: ignore[misc]
        shape = (data.in_chans, cfg.image_size, cfg.image_size)
        report = analyze(model, shape)
        totals = report.total()
        rf_row = report.output_rf()
        rf = "whole input" if rf_row is None or rf_row.rf_whole else "×".join(str(r) for r in rf_row.rf_size or ())
        # per block: the conv-path field (SE gates do not widen it) and whether global context reaches it
        per_block = report.last_by_module(2 if arch is not None else 1)
        costs = _block_costs(model, arch, report, cfg.image_size, len(data.classes), data.in_chans)
        console.print(f"arch: {arch}" if arch is not None else f"network: {cfg.model} (your code)")
        console.print(f"{count_params(model):,} parameters, {totals.macs / 1e6:.2f} M MACs per image "
                      f"(FLOPs = 2·MACs), output receptive field: {rf}")  # fmt: skip

    with log.stage("train", "training") as info:
        result = fit(model, data, TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                                              optimizer="adamw", lr=4e-3, warmup_epochs=1.0))  # fmt: skip
        info["note"] = f"top-1 {result.final.top1:.2%} after {cfg.epochs} epochs"
        console.print(f"test top-1 {result.final.top1:.2%}, top-5 {result.final.top5:.2%} "
                      f"after {cfg.epochs} epochs ({result.seconds:.1f} s, {result.images_per_s:,.0f} img/s)")  # fmt: skip
        meta = {"name": data.name, "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
                "image_size": cfg.image_size, "in_chans": data.in_chans}  # fmt: skip
        save_checkpoint(checkpoint_of(model, data=meta, epoch=cfg.epochs, step=result.steps, config=record),
                        out / "model.pt")  # fmt: skip

    erf = gradflow = None
    if arch is None and not isinstance(getattr(model, "blocks", None), torch.nn.Sequential):
        log.skip("dynamics", "effective receptive field and gradient flow of the baseline",
                 "your own network has no `blocks` sequence to read them at (edgecnn.analysis.dynamics takes its "
                 "spatial part from Python)")  # fmt: skip
    else:
        erf, gradflow = _dynamics_stage(log, model, data, shape, cfg.seed)

    where = "this machine" if cfg.device == "cpu" else f"the device at {cfg.device} (eager: this machine)"
    with log.stage("latency", f"latency on {where} (batch 1, {cfg.threads} thread(s))") as info:
        model.eval()
        timing = TimingConfig(max_seconds=cfg.max_seconds)
        breakdown = per_layer(model, (1, *shape), backend="eager", threads=cfg.threads, config=timing)
        eager_ms = breakdown.total.stats.median_ms
        targets_ms = _targets_ms(model, shape, cfg, timing, eager_ms, console)
        onnx_ms = targets_ms.get("onnxruntime")
        target, why = (cfg.target, "--target") if cfg.target else _fastest(targets_ms)
        rows = tuple(_row(name, lat.kind, params, macs, lat.median_ms, per_block)
                     for (name, params, macs), lat in zip(costs, breakdown.layers))  # fmt: skip
        console.print(_block_table(rows))
        info["note"] = ("end to end: " + ", ".join(f"{TARGET_NAMES.get(k, k)} {v:.3f} ms" for k, v in
                                                   targets_ms.items())
                        + f"; target: {target} ({why})")  # fmt: skip
        console.print(info["note"])

    latency = _table_stage(log, cfg, arch, target, out, data, targets_ms) if cfg.compress is not None else None

    explained, netadapt, compressed = model, None, None
    if cfg.compress is not None and latency is not None:
        explained, netadapt, compressed = compress_stages(
            model, ref, data, latency, target=target, device=cfg.device, settings=cfg.compress, log=log, out=out,
            meta=meta, record=record,
            threads=cfg.threads, timing=timing, batch_size=cfg.batch_size, seed=cfg.seed)  # fmt: skip
    else:
        log.skip("netadapt", "NetAdapt, fold BN, ONNX and int8", "compression turned off (--no-compress)")

    cam = _cam_stage(log, cfg, explained, data, out, "the result" if compressed else "the baseline")

    demo = DemoResult(
        arch=arch or cfg.model, data=data.name, params=count_params(model), macs=totals.macs, top1=result.final.top1,
        top5=result.final.top5, train_seconds=result.seconds, images_per_s=result.images_per_s,
        receptive_field=rf, eager_ms=eager_ms, onnx_ms=onnx_ms, blocks=rows,
        machine={"platform": platform.platform(), "cpu": breakdown.total.fingerprint.cpu,
                 "torch": torch.__version__, "threads": cfg.threads},
        out_dir=str(out), history=tuple(EpochRow.of(e) for e in result.history), input_size=cfg.image_size,
        cam=cam, stages=tuple(log.to_list()), netadapt=netadapt, result=compressed, erf=erf, gradflow=gradflow,
        pareto=_pareto(result.final.top1, targets_ms[target], target, compressed), target=target,
        targets_ms=targets_ms,
    )  # fmt: skip
    write_results(out, "demo", {"config": asdict(cfg), **asdict(demo)})
    atomic_write_text(out / "report.md", to_markdown(demo))
    # the page is drawn from the document as written, exactly as `edgecnn report` would draw it later
    atomic_write_text(out / "report.html", render_html(read_results(out), run_dir=out))
    console.rule("[bold]done")
    console.print(_closing_table(demo, out / "report.html"))
    console.print(f"report: {out / 'report.html'}  {out / 'report.md'}  results: {out / 'results.json'}  "
                  f"checkpoint: {out / 'model.pt'}")  # fmt: skip
    return demo


def _table_stage(log: StageLog, cfg: DemoConfig, arch: str | None, target: str, out: Path, data: DataSet,
                 targets_ms: dict[str, float]) -> LatencyModel:  # fmt: skip
    """The target's latency table over a width grid of every block (reused from ``cfg.latency_table`` where given);
    a network without an arch string gets a model that times every proposal whole instead."""
    latency: LatencyModel
    if arch is None:  # no arch string: no table, every proposal timed whole
        latency = whole_network_model(backend=target, threads=cfg.threads, device=cfg.device, config=TABLE_TIMING)
        log.skip("table", "latency table of this device", "your own network has no arch string: NetAdapt measures "
                 f"every proposal end to end on {target}")  # fmt: skip
    else:
        with log.stage("table", f"latency table of this device on {target} (every block over a width grid)") as info:
            path = Path(cfg.latency_table) if cfg.latency_table else out / "latency_table.json"
            table = new_table(backend=target, threads=cfg.threads, device=cfg.device, config=TABLE_TIMING)
            if cfg.latency_table:  # a table of another device (fingerprint) is refused with the reason
                table = LatencyTable.open_or_new(path, table.fingerprint)
                table.config = TABLE_TIMING
            latency = LatencyModel(table, measure=True, path=path)
            cost = get_target(target).export_seconds
            if cost >= 2:  # say up front what the table will cost where each block takes seconds to prepare
                log.console.print(f"{target}: each block variant takes about {cost:.0f} s to prepare for timing; "
                                  "the table is saved as it fills (--latency-table reuses it)")  # fmt: skip
            with progress_bar(log.console) as bar:
                task = bar.add_task(f"measuring block variants on {target}", total=None)
                n = latency.ensure_grid(arch, input_size=cfg.image_size, fractions=cfg.grid,
                                        num_classes=len(data.classes), in_chans=data.in_chans,
                                        on_progress=lambda d, t: bar.update(task, completed=d, total=t))  # fmt: skip
            predicted = latency.predict(arch, input_size=cfg.image_size, num_classes=len(data.classes),
                                        in_chans=data.in_chans).total_ms  # fmt: skip
            info["note"] = (f"{n} block variants measured on {target}; the baseline by the table {predicted:.3f} ms "
                            f"(measured {targets_ms[target]:.3f} ms)")  # fmt: skip
            log.console.print(info["note"])
    return latency


def _cam_stage(log: StageLog, cfg: DemoConfig, model: torch.nn.Module, data: DataSet, out: Path,
               which: str) -> dict[str, Any] | None:  # fmt: skip
    """Grad-CAM (or CAM) on the first test image of each class, overlays written under ``out/cam``."""
    cam = None
    if cfg.cam_images:
        with log.stage("cam", f"where {which} looks ({cfg.cam_method} on {cfg.cam_images} test images)") as info:
            labels = data.test.labels.numpy()
            pick = sorted(first_per_class(labels, 1), key=lambda i: labels[i])[: cfg.cam_images]  # class 0, 1, …
            explain = ExplainConfig(method=cfg.cam_method)  # type: ignore[arg-type]
            cam = explain_images(model, data.test.images[pick], mean=data.mean, std=data.std, out_dir=out,
                                 cfg=explain, labels=data.test.labels[pick], classes=data.classes,
                                 image_size=cfg.image_size)  # fmt: skip
            right = sum(r["label"] == r["predicted"] for r in cam["images"])
            info["note"] = f"{cam['method']} at {cam['layer']}, {right} of {len(pick)} right; overlays in {out / 'cam'}"
            log.console.print(info["note"])
    else:
        log.skip("cam", "where the network looks", "cam_images = 0")
    return cam


def _dynamics_stage(log: StageLog, model: torch.nn.Module, data: Any, shape: tuple[int, int, int],
                    seed: int) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The dynamics stage: the baseline's effective receptive field and gradient flow, said in one line."""
    with log.stage("dynamics", "effective receptive field and gradient flow of the baseline") as info:
        erf, gradflow = _dynamics(model, data, shape, seed=seed)
        runs = gradflow["runs"]
        info["note"] = (f"ERF of {erf['layer']}: 50% of the mass within {erf['radius50']:.1f} px, 95% within "
                        f"{erf['radius95']:.1f} px; first-layer gradient norm " + ", ".join(
                            f"{k} {v['layers'][0]['output_grad_norm']:.3g}" for k, v in runs.items()))  # fmt: skip
        log.console.print(info["note"])
    return erf, gradflow


def _block_costs(model: torch.nn.Module, arch: str | None, report: Any, size: int, num_classes: int,
                 in_chans: int) -> list[tuple[str, int, int]]:  # fmt: skip
    """(name, params, MACs) per block: an EdgeNet's from its arch string (closed form), another network's per
    top-level module from the traced analysis (the units the per-layer timing reports)."""
    if arch is not None:
        return [(c.name, c.params, c.macs) for c in cost_from_spec(arch, size, num_classes, in_chans).layers]
    out = []
    for name, _ in units(model):
        rows = [r for r in report.layers if r.module == name or r.module.startswith(name + ".")]
        out.append((name, sum(r.params for r in rows), sum(r.macs for r in rows)))
    return out


GRADFLOW_BATCH = 32  # test images in the gradient-flow pass


def _dynamics(model: torch.nn.Module, data: Any, shape: tuple[int, int, int], *,
              seed: int) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The ``erf`` and ``gradflow`` sections of the trained baseline (on copies; the model is left as it is)."""
    erf = {**erf_section(model, shape, samples=16, seed=seed), "weights": "the trained baseline"}
    batch = data.test.subset(list(range(min(GRADFLOW_BATCH, len(data.test)))))
    loader = BatchLoader(batch, batch_size=len(batch), mean=data.mean, std=data.std, image_size=shape[-1])
    x, y = next(iter(loader))  # normalised as in training, no augmentation
    flow = {**gradflow_section(model, x, y, seed=seed), "weights": "the trained baseline", "inputs": "test images"}
    return erf, flow


TARGET_NAMES = {"eager": "PyTorch eager", "onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch"}


def _targets_ms(model: torch.nn.Module, shape: tuple[int, int, int], cfg: DemoConfig, timing: TimingConfig,
                eager_ms: float, console: Console) -> dict[str, float]:  # fmt: skip
    """The baseline end to end (median, batch 1) on every runtime installed here (eager already measured), or with
    ``cfg.device`` an agent's address, on every runtime of that device (eager stays this machine's, for reference)."""
    out = {"eager": eager_ms}
    for name in target_names():
        if name == "eager" or (name == "onnxruntime" and not cfg.onnx) or get_target(name).version() is None:
            continue
        try:
            out[name] = measure(model, (1, *shape), backend=name, threads=cfg.threads, config=timing,
                                device=cfg.device).stats.median_ms  # fmt: skip
        except (ImportError, ValueError, RuntimeError, AgentError) as exc:  # a runtime that cannot take this network
            if cfg.target == name or (isinstance(exc, AgentError) and exc.code != "runtime_unavailable"):
                raise  # the runtime asked for, or an agent that is not there: not a runtime to skip
            console.print(f"[yellow]{name} skipped: {str(exc).splitlines()[0]}")
    return out


TIE = 0.10  # runtimes within this share of the fastest count as equally fast (run-to-run spread on this VM)


def _fastest(targets_ms: dict[str, float]) -> tuple[str, str]:
    """The deployment runtime to optimise for, and why: the fastest measured; among runtimes within :data:`TIE` of
    it, the one whose latency table is cheapest to build (an ExecuTorch block takes seconds to lower, an ONNX one
    under one). Eager only where no other runtime is installed (no device runs eager)."""
    deployable = {k: v for k, v in targets_ms.items() if k != "eager"}
    if not deployable:
        return "eager", "no deployment runtime installed (pip install 'edgecnn[onnx]')"
    best = min(deployable.values())
    tied = [k for k, v in deployable.items() if v <= best * (1 + TIE)]
    pick = min(tied, key=lambda k: (get_target(k).export_seconds, deployable[k]))
    fastest = min(deployable, key=deployable.__getitem__)
    if pick == fastest:
        return pick, "the fastest here"
    return pick, (f"within {TIE:.0%} of the fastest ({fastest} {best:.3f} ms) and its table is quicker to build "
                  f"(--target {fastest} optimises for that one)")


def _pareto(top1: float, baseline_ms: float, target: str, compressed: dict[str, Any] | None) -> dict[str, Any]:
    """The report's accuracy-vs-latency points: the baseline and, when compressed, the NetAdapt result, both as
    timed back to back on the target (the baseline alone when not compressed)."""
    points = [{"name": "baseline", "latency_ms": baseline_ms, "top1": top1}]
    if compressed:
        points = [{"name": "baseline", "latency_ms": compressed["baseline_target_ms"], "top1": top1},
                  {"name": "NetAdapt result", "latency_ms": compressed["target_ms"], "top1": compressed["top1"]}]
    return {"points": points, "reference": [], "latency": f"measured, {target}, batch 1", "top1": "test"}


def _closing_table(d: DemoResult, report: Path) -> Table:
    """Baseline against the compressed result on the target (timed back to back), eager for reference, int8 beside
    fp32, the verdict; and where the report is."""
    r = d.result or {}
    table = Table(title=f"baseline vs result on {d.target}" + (f": {r['stopped']}" if r.get("stopped") else ""))
    for col in ("", "baseline", "result (NetAdapt)" if r else "result (compression off)"):
        table.add_column(col, justify="left" if not col else "right")

    def ms(v: Any) -> str:
        return f"{v:.3f} ms" if isinstance(v, (int, float)) else "–"

    i8 = r.get("int8") or {}
    base = r.get("baseline_target_ms", (d.targets_ms or {}).get(d.target))
    ratio = f" ({r['measured_ratio']:.0%})" if isinstance(r.get("measured_ratio"), float) else ""
    rows = [("test top-1", f"{d.top1:.2%}", f"{r['top1']:.2%}" if r else "–"),
            (f"latency, {d.target} (back to back)", ms(base), ms(r.get("target_ms")) + ratio),
            ("latency, eager (for reference)", ms(d.eager_ms), ms(r.get("eager_ms"))),
            ("MACs", f"{d.macs / 1e6:.2f} M", f"{r['macs'] / 1e6:.2f} M" if r else "–"),
            ("params", f"{d.params:,}", f"{r['params']:,}" if r else "–")]  # fmt: skip
    if i8:
        rows.append((f"{i8['target']} fp32 / int8: top-1, latency", "–",
                     f"{i8['top1_fp32']:.2%}, {ms(i8.get('latency_fp32_ms'))} / {i8['top1_int8']:.2%}, "
                     f"{ms(i8.get('latency_int8_ms'))}"))  # fmt: skip
        rows.append(("deployed form", "–", f"{i8['kept']}"))
    rows.append(("report", str(report), ""))
    for row in rows:
        table.add_row(*row)
    return table


def _row(name: str, block: str, params: int, macs: int, ms: float,
         per_block: dict[str, LayerCost]) -> BlockRow:  # fmt: skip
    lc = per_block.get(name)
    spatial = lc is not None and not lc.rf_whole and lc.rf_size and lc.rf_jump
    rf, jump = (lc.rf_size[0], lc.rf_jump[0]) if spatial else (None, None)
    return BlockRow(name, block, params, macs, ms, rf, jump, bool(lc is not None and (lc.rf_whole or lc.rf_global)))


def _block_table(rows: tuple[BlockRow, ...]) -> Table:
    table = Table(title="per block: cost vs measured latency (eager)")
    for col in ("block", "arch", "params", "MACs", "ms", "µs/MMAC"):
        table.add_column(col, justify="left" if col in ("block", "arch") else "right")
    for r in rows:
        table.add_row(r.name, r.block, f"{r.params:,}", f"{r.macs / 1e6:.2f}M", f"{r.ms:.3f}",
                      f"{r.us_per_mmac:.0f}" if r.macs else "–")  # fmt: skip
    return table


def to_markdown(d: DemoResult) -> str:
    """The demo's report as Markdown; every value escaped (:func:`edgecnn.report.markdown`).

    Class names come from folder names and the data name from a path, so a
    value may hold ``<img onerror=…>`` or ``|``: :func:`~edgecnn.report.markdown`
    backslash-escapes HTML and Markdown syntax in every field, and
    :func:`~edgecnn.report.md_code` / :func:`~edgecnn.report.md_link` make the
    code spans and links.
    """
    onnx = markdown("{:.2f} ms", d.onnx_ms) if d.onnx_ms is not None else Md(
        "not measured (install the `[onnx]` extra)")  # fmt: skip
    lines: list[str] = [
        "# edgecnn demo report",
        "",
        markdown("- data: {}", d.data),
        markdown("- arch: {}", md_code(d.arch)),
        markdown("- parameters: {:,}; multiply-adds: {:,} per image (FLOPs = 2·MACs)", d.params, d.macs),
        markdown("- output receptive field: {}", d.receptive_field),
        markdown("- test top-1 {:.2%}, top-5 {:.2%} (training {:.1f} s, {:,.0f} img/s)", d.top1, d.top5,
                 d.train_seconds, d.images_per_s),  # fmt: skip
        markdown("- latency, batch 1, {} thread(s) on {}: PyTorch eager {:.2f} ms, ONNX Runtime {}",
                 d.machine.get("threads"), d.machine.get("cpu"), d.eager_ms, onnx),  # fmt: skip
        markdown("- deployment target: {} (the baseline end to end: {})", d.target,
                 ", ".join(f"{k} {v:.3f} ms" for k, v in (d.targets_ms or {}).items())),  # fmt: skip
        "",
        "| block | arch | params | MACs | ms (eager, alone) | µs per M MACs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in d.blocks:
        eff = markdown("{:.0f}", r.us_per_mmac) if r.macs else "–"
        lines.append(markdown("| {} | {} | {:,} | {:,} | {:.3f} | {} |", r.name, md_code(r.block), r.params, r.macs,
                              r.ms, eff))  # fmt: skip
    if d.erf:
        e = d.erf
        lines += ["", markdown("Effective receptive field of {} (centre unit, {} random inputs): 50% of the mass "
                               "within {:.1f} px, 95% within {:.1f} px.", md_code(e["layer"]), e["samples"],
                               e["radius50"], e["radius95"])]  # fmt: skip
    if d.gradflow:
        runs = d.gradflow["runs"]
        lines += ["", "Gradient flow (‖∂L/∂output‖, first layer / last layer): " + "; ".join(
            markdown("{} {:.3g} / {:.3g}", k, v["layers"][0]["output_grad_norm"], v["layers"][-1]["output_grad_norm"])
            for k, v in runs.items())]  # fmt: skip
    if d.result:
        r, na = d.result, d.netadapt or {}
        lines += ["", markdown("## NetAdapt to {:.3f} ms (by the table)", na.get("budget_ms", float("nan"))), "",
                  markdown("- result arch: {}", md_code(r["arch"])),
                  markdown("- test top-1 {:.2%} (baseline {:.2%}); on {} (baseline and result back to back): "
                           "{:.3f} ms vs {:.3f} ms = {:.0%}; {}; eager {:.3f} ms (baseline {:.3f} ms); {:,} MACs; "
                           "{:,} params", r["top1"], d.top1, d.target, r.get("target_ms"), r.get("baseline_target_ms"),
                           r.get("measured_ratio"), r.get("stopped", ""), r["eager_ms"], d.eager_ms, r["macs"],
                           r["params"]),
                  markdown("- {} BatchNorm(s) folded; ONNX: {}", r["bn_folded"],
                           r["onnx"] or "not exported")]  # fmt: skip
        if r.get("int8"):
            i8 = r["int8"]
            lines.append(markdown("- int8 ({}): top-1 {:.2%} vs fp32 {:.2%}, {:.3f} vs {:.3f} ms; {}",
                                  i8.get("target", "onnxruntime"), i8["top1_int8"], i8["top1_fp32"],
                                  i8["latency_int8_ms"], i8["latency_fp32_ms"], i8.get("reason", "")))  # fmt: skip
        lines += ["", "| iteration | step | ms (table) | hold-out top-1 |", "|---:|---|---:|---:|"]
        lines += [markdown("| {} | {} | {:.3f} | {:.2%} |", h["iteration"], h["block"], h["latency_ms"], h["top1"])
                  for h in na.get("history", [])]  # fmt: skip
    if d.cam:
        pairs = Md(", ").join(md_link(f"{r['label']} → {r['predicted']}", r["file"]) for r in d.cam["images"])
        lines += ["", markdown("{} at {} ({}, {} convention): {}", d.cam["method"], md_code(d.cam["layer"]),
                               d.cam["interp"], d.cam["convention"], pairs)]  # fmt: skip
    return "\n".join(lines) + "\n"
