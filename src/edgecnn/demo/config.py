"""The demo's settings and what it returns: :class:`DemoConfig`, :class:`CompressSettings` (its compression half),
:class:`DemoResult` with its rows (:class:`BlockRow`, :class:`EpochRow`), and :data:`Network` (a network of the
user's own code)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from edgecnn.data import DataSet
from edgecnn.latency.fingerprint import check_device, is_agent_address
from edgecnn.latency.targets import get_target
from edgecnn.train.config import EpochStats

__all__ = ["BlockRow", "CompressSettings", "DemoConfig", "DemoResult", "EpochRow", "Network"]


@dataclass(frozen=True)
class CompressSettings:
    """The demo's NetAdapt schedule: few iterations and short fine-tunes, so the whole demo stays within minutes."""

    budget: float = 0.5  # the result's latency bound as a share of the baseline's (by the meter, then checked measured)
    initial_step: float = 0.06  # first NetAdapt step, share of the baseline's latency: about one block's share
    decay: float = 0.98  # step decay per iteration
    short_steps: int = 20  # short fine-tune steps of each of the top_k proposals
    top_k: int = 2  # proposals fine-tuned per iteration
    long_epochs: float = 6.0  # fine-tune epochs of the result (digits: 20 steps an epoch)
    round_to: int = 4  # kept widths are multiples of this
    drop_blocks: bool = True  # NetAdapt may also remove whole identity-residual blocks (edgecnn.compress.netadapt.drop_block)
    measured_rounds: int = 2  # extra NetAdapt rounds when the MEASURED result misses the budget (0: trust the table)
    tolerance: float = 0.03  # measured share of the baseline allowed above ``budget`` before another round
    int8: bool = True  # quantise the result to int8 through ONNX Runtime (when installed)
    calibration_images: int = 200  # training images that calibrate the int8 activation ranges

    def __post_init__(self) -> None:
        if not 0 < self.budget < 1:
            raise ValueError(f"the latency budget is a share of the baseline's latency in (0, 1), got {self.budget}")
        if not 0 < self.initial_step < 1:
            raise ValueError(f"initial_step is a share of the baseline's latency in (0, 1), got {self.initial_step}")
        if self.short_steps < 0 or self.long_epochs < 0 or self.top_k < 1 or self.round_to < 1:
            raise ValueError("short_steps and long_epochs must be >= 0, top_k and round_to >= 1")
        if self.measured_rounds < 0 or self.tolerance < 0:
            raise ValueError("measured_rounds and tolerance must be >= 0")


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
    stages: tuple[dict[str, Any], ...] = ()  # one row per pipeline stage (edgecnn.demo.stage_log.StageRow)
    netadapt: dict[str, Any] | None = None  # the report's NetAdapt section (edgecnn.demo.compress), None when not run
    result: dict[str, Any] | None = None  # the compressed network: arch, top1, eager_ms, macs, params, onnx, int8
    erf: dict[str, Any] | None = None  # the baseline's effective receptive field (edgecnn.analysis.dynamics)
    gradflow: dict[str, Any] | None = None  # the baseline's gradient norms with and without skips (same module)
    pareto: dict[str, Any] | None = None  # baseline and result as accuracy-latency points (measured on the target)
    target: str = "eager"  # the deployment runtime the demo optimised for
    targets_ms: dict[str, float] | None = None  # the baseline end to end on every runtime installed here (median)


Network = Callable[[DataSet], tuple[torch.nn.Module, dict[str, Any]]]
"""A network of the user's own code for the demo: ``network(data)`` → (the module for the data's classes and
channels, the checkpoint ``config`` that rebuilds it — its constructor record, never code)."""
