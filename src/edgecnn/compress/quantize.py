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

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn.data import BatchLoader, DataSet
from edgecnn.export import onnx_bytes
from edgecnn.latency.isa import InstructionSet, detect_isa
from edgecnn.latency.measure import TimingConfig, time_fn
from edgecnn.latency.onnx_backend import make_session, require_onnxruntime, session_runner


def _images(data: DataSet, split: str, n: int | None) -> Iterator[torch.Tensor]:
    part = getattr(data, split)
    if n is not None:
        part = part.subset(torch.arange(min(n, len(part))))
    loader = BatchLoader(part, batch_size=1, mean=data.mean, std=data.std)
    for x, _ in loader.epoch(0):
        yield x


@dataclass(frozen=True)
class Int8Settings:
    """How activations and weights are quantised for ONNX Runtime (QDQ format, static, min/max calibration)."""

    name: str  # one of INT8_SETTINGS
    activations: str  # "uint8" or "int8"
    weights: str  # "int8"
    reduce_range: bool  # 7-bit weights: no 16-bit overflow in VPMADDUBSW kernels (x86 without VNNI)
    per_channel: bool = True  # one weight scale per output channel

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


INT8_SETTINGS: dict[str, Int8Settings] = {
    s.name: s
    for s in (
        # ORT's documented default (QDQ S8S8): right where the dot product accumulates in 32 bits (VNNI, ARM)
        Int8Settings("s8s8", activations="int8", weights="int8", reduce_range=False),
        # x86 without VNNI: u8 activations (the kernels' native operand) and 7-bit weights against saturation
        Int8Settings("u8s8-reduce", activations="uint8", weights="int8", reduce_range=True),
        Int8Settings("u8s8", activations="uint8", weights="int8", reduce_range=False),
    )
}
"""The settings a user (``--int8-settings``) or a test can force by name; :func:`int8_settings` picks one per CPU."""


def int8_settings(isa: InstructionSet | None = None, *, name: str = "auto") -> tuple[Int8Settings, str]:
    """The settings for ``isa`` (this CPU when None) and the reason, or the named ones (``name`` ≠ ``auto``).

    x86 without VNNI (or a CPU whose instructions could not be read): ``u8s8-reduce``;
    x86 with VNNI and ARM64: ``s8s8``.
    """
    isa = isa or detect_isa()
    if name != "auto":
        if name not in INT8_SETTINGS:
            raise ValueError(f"unknown int8 settings {name!r}; valid: auto, {', '.join(INT8_SETTINGS)}")
        chosen = INT8_SETTINGS[name]
        warn = " (full-range weights can saturate in this CPU's 16-bit int8 sums)" if (
            isa.saturates_int8 and not chosen.reduce_range) else ""  # fmt: skip
        return chosen, f"forced by the user{warn}"
    if isa.saturates_int8:
        why = ("x86 without VNNI: int8 kernels add u8×s8 pairs in saturating 16-bit lanes (VPMADDUBSW), "
               "so weights use 7 bits (reduce_range)") if isa.family == "x86" else (
               "instruction set unknown: the settings that are right on every CPU (7-bit weights)")  # fmt: skip
        return INT8_SETTINGS["u8s8-reduce"], why
    why = "x86 with VNNI: 32-bit int8 dot products" if isa.vnni else "ARM: int8 dot products accumulate in 32 bits"
    return INT8_SETTINGS["s8s8"], why


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


class _DropPreprocessHint(logging.Filter):
    """ORT's quantizer logs "consider pre-processing" on the root logger for every model; it is advice, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


@contextlib.contextmanager
def _quiet_ort_hints() -> Iterator[None]:
    root, hint = logging.getLogger(), _DropPreprocessHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def quantize_int8(model: nn.Module, data: DataSet, *, calibration_images: int = 300,
                  settings: Int8Settings | str = "auto", isa: InstructionSet | None = None) -> QuantizedModel:  # fmt: skip
    """fp32 and int8 ONNX of ``model`` for batch-1 inputs, int8 calibrated on ``calibration_images`` train images.

    ``settings``: ``auto`` (chosen for ``isa``, this CPU by default: :func:`int8_settings`), a name of
    :data:`INT8_SETTINGS`, or an :class:`Int8Settings`.
    """
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if calibration_images < 1:
        raise ValueError(f"calibration needs at least one image, got {calibration_images}")
    isa = isa or detect_isa()
    if isinstance(settings, Int8Settings):
        chosen, reason = settings, "given by the caller"
    else:
        chosen, reason = int8_settings(isa, name=settings)
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    example = torch.zeros(1, data.in_chans, data.image_size, data.image_size)
    fp32 = onnx_bytes(model, example)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = _images(data, "train", calibration_images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"input": x.numpy()}

    with tempfile.TemporaryDirectory() as tmp, _quiet_ort_hints():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=chosen.per_channel,
                        activation_type=qtype[chosen.activations], weight_type=qtype[chosen.weights],
                        reduce_range=chosen.reduce_range)  # fmt: skip
        return QuantizedModel(fp32, dst.read_bytes(), chosen, reason, isa)


@dataclass(frozen=True)
class Int8Comparison:
    """fp32 against int8 on the same test images."""

    top1_fp32: float
    top1_int8: float
    agreement: float  # share of images where both predict the same class
    latency_fp32_ms: float | None  # ORT, batch 1, median
    latency_int8_ms: float | None
    images: int


def _predictions(session: Any, data: DataSet, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = [], []
    part = getattr(data, "test")
    labels_all = part.labels if n is None else part.labels[: min(n, len(part))]
    for x in _images(data, "test", n):
        preds.append(int(session.run(None, {"input": x.numpy()})[0].argmax()))
    labels = labels_all.numpy()
    return np.array(preds), labels


def compare_int8(fp32: bytes, int8: bytes, data: DataSet, *, images: int | None = None, threads: int = 1,
                 timing: TimingConfig | None = None, measure_latency: bool = True) -> Int8Comparison:  # fmt: skip
    """Top-1 of both ONNX models on ``images`` test images (all: None), their agreement and measured latency."""
    s32, s8 = make_session(fp32, threads=threads), make_session(int8, threads=threads)
    p32, y = _predictions(s32, data, images)
    p8, _ = _predictions(s8, data, images)
    lat32 = lat8 = None
    if measure_latency:
        x = torch.zeros(1, data.in_chans, data.image_size, data.image_size)
        lat32 = time_fn(session_runner(s32, x), timing).median_ms
        lat8 = time_fn(session_runner(s8, x), timing).median_ms
    return Int8Comparison(float((p32 == y).mean()), float((p8 == y).mean()), float((p32 == p8).mean()), lat32, lat8,
                          len(y))  # fmt: skip
