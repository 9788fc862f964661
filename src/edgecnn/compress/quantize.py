"""int8 deployment: static post-training quantization through ONNX Runtime, and fp32 vs int8 side by side.

The network is exported with BN folded (:func:`edgecnn.export.onnx_bytes`),
then :func:`onnxruntime.quantization.quantize_static` inserts
QuantizeLinear/DequantizeLinear pairs (QDQ format, int8 weights per output
channel, int8 activations) whose activation ranges are calibrated on a few
hundred training images (a :class:`~onnxruntime.quantization.CalibrationDataReader`
over normalised batches; min/max calibration). Jacob et al. 2018 describe the
integer-arithmetic scheme; ORT fuses the QDQ pairs into integer kernels
where it has them. :func:`compare_int8` reports top-1 and measured latency of
both models on the same inputs.

The quantisation settings depend on the CPU (:class:`Int8Settings`,
:func:`int8_settings`): on x86 without VNNI, ORT's kernels add u8×s8 products
in saturating 16-bit lanes, and full-range 8-bit weights overflow them (61%
int8/fp32 agreement on a trained digits net on an AVX2-only AMD EPYC, 98.6%
with 7-bit weights). :mod:`edgecnn.latency.isa` says which case this machine
is; the choice and the instruction set are recorded with every int8 result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgecnn.data import DataSet
from edgecnn.deploy import calibration_inputs, predictions
from edgecnn.export import onnx_bytes
from edgecnn.latency.isa import InstructionSet, detect_isa
from edgecnn.latency.measure import TimingConfig, time_fn
from edgecnn.latency.onnx_backend import require_onnxruntime
from edgecnn.latency.targets import get_target
from edgecnn.latency.targets.ort_int8 import INT8_SETTINGS, Int8Settings, int8_settings, quantize_onnx

__all__ = ["INT8_SETTINGS", "Int8Comparison", "Int8Settings", "QuantizedModel", "compare_int8", "int8_settings",
           "quantize_int8"]  # fmt: skip


@dataclass(frozen=True)
class QuantizedModel:
    """The fp32 and int8 ONNX files of one network and how the int8 one was made, on which CPU."""

    fp32: bytes
    int8: bytes
    settings: Int8Settings
    reason: str  # why these settings
    isa: InstructionSet  # the CPU they were chosen for

    def record(self) -> dict[str, Any]:
        """What a results document stores: the settings, the reason and the instruction set."""
        return {"settings": self.settings.to_dict(), "reason": self.reason, "isa": self.isa.to_dict()}


def quantize_int8(model: nn.Module, data: DataSet, *, calibration_images: int = 300,
                  settings: Int8Settings | str = "auto", isa: InstructionSet | None = None) -> QuantizedModel:  # fmt: skip
    """fp32 and int8 ONNX of ``model`` for batch-1 inputs, int8 calibrated on ``calibration_images`` train images.

    ``settings``: ``auto`` (chosen for ``isa``, this CPU by default: :func:`int8_settings`), a name of
    :data:`INT8_SETTINGS`, or an :class:`Int8Settings`.
    """
    require_onnxruntime()
    if calibration_images < 1:
        raise ValueError(f"calibration needs at least one image, got {calibration_images}")
    isa = isa or detect_isa()
    if isinstance(settings, Int8Settings):
        chosen, reason = settings, "given by the caller"
    else:
        chosen, reason = int8_settings(isa, name=settings)
    example = torch.zeros(1, data.in_chans, data.image_size, data.image_size)
    fp32 = onnx_bytes(model, example)
    calibration = (x.numpy() for x in calibration_inputs(data, calibration_images))
    return QuantizedModel(fp32, quantize_onnx(fp32, calibration, chosen), chosen, reason, isa)


@dataclass(frozen=True)
class Int8Comparison:
    """fp32 against int8 on the same test images."""

    top1_fp32: float
    top1_int8: float
    agreement: float  # share of images where both predict the same class
    latency_fp32_ms: float | None  # ORT, batch 1, median
    latency_int8_ms: float | None
    images: int


def compare_int8(fp32: bytes, int8: bytes, data: DataSet, *, images: int | None = None, threads: int = 1,
                 timing: TimingConfig | None = None, measure_latency: bool = True) -> Int8Comparison:  # fmt: skip
    """Top-1 of both ONNX models on ``images`` test images (all: None), their agreement and measured latency."""
    ort = get_target("onnxruntime")
    prog32, prog8 = ort.load(fp32, threads=threads), ort.load(int8, threads=threads)
    p32, y = predictions(prog32, data, images=images)
    p8, _ = predictions(prog8, data, images=images)
    lat32 = lat8 = None
    if measure_latency:
        x = torch.zeros(1, data.in_chans, data.image_size, data.image_size)
        lat32 = time_fn(prog32.bind(x), timing).median_ms
        lat8 = time_fn(prog8.bind(x), timing).median_ms
    return Int8Comparison(float((p32 == y).mean()), float((p8 == y).mean()), float((p32 == p8).mean()), lat32, lat8,
                          len(y))  # fmt: skip
