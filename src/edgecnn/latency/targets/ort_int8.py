"""ONNX Runtime int8: static QDQ quantisation of an ONNX model with settings chosen for the CPU.

On x86 without VNNI, ORT's int8 kernels add u8×s8 products in saturating
16-bit lanes (``VPMADDUBSW``) and full-range 8-bit weights overflow them (61%
int8/fp32 agreement on a trained digits net on an AVX2-only AMD EPYC, 98.6% with
7-bit weights); :mod:`edgecnn.latency.isa` says which case this machine is and
:func:`int8_settings` chooses. :func:`quantize_onnx` is the quantiser itself
(min/max calibration, per-channel weights; Jacob et al. 2018 describe the
integer-arithmetic scheme); :func:`edgecnn.compress.quantize.quantize_int8`
drives it from a data set.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.latency.isa import InstructionSet, detect_isa


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


def inline_constant_identities(model: bytes) -> bytes:
    """``model`` without the ``Identity`` nodes that only forward an initializer.

    The exporter shares equal constants (e.g. the zero biases of BN-folded convolutions) through ``Identity``
    nodes; ORT's quantiser then sees a bias that is "not an initializer", leaves it in float and logs a warning
    per convolution. Pointing every consumer at the initializer itself (what ORT's graph optimiser would do at
    load time anyway) lets the quantiser fold those biases into int32 too.
    """
    import onnx

    m = onnx.load_from_string(model)
    g = m.graph
    inits = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}
    alias = {n.output[0]: n.input[0] for n in g.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}  # fmt: skip
    if not alias:
        return model
    keep = [n for n in g.node if not (n.op_type == "Identity" and n.output and n.output[0] in alias)]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    del g.node[:]
    g.node.extend(keep)
    return bytes(m.SerializeToString())


FALLBACK_GROUPS: tuple[str, ...] = ("depthwise", "se")
"""Layer groups whose int8 form is often slower than fp32 on CPUs: depthwise convolutions (little arithmetic per
byte, quantise/dequantise around each) and squeeze-and-excitation convolutions (1×1 maps, launch-bound)."""


def conv_groups(model: bytes) -> dict[str, list[str]]:
    """Names of the ``Conv`` nodes of each :data:`FALLBACK_GROUPS` group in the ONNX ``model``.

    depthwise: ``group`` equal to the output channels (weight ``C×1×k×k``, ``C > 1``); se: the convolutions of a
    squeeze-and-excitation branch — fed by a global average pool, or by an activation of such a convolution.
    """
    import onnx

    g = onnx.load_from_string(model).graph
    weights = {i.name: tuple(i.dims) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def op_of(name: str) -> str:
        return producer[name].op_type if name in producer else ""

    out: dict[str, list[str]] = {k: [] for k in FALLBACK_GROUPS}
    squeeze: set[str] = set()  # outputs of the first SE convolution (fed by global pooling)
    for n in g.node:  # graph order: an SE branch's first conv comes before its second
        if n.op_type != "Conv":
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = weights.get(n.input[1], ())
        src = producer.get(n.input[0])
        if group > 1 and len(w) == 4 and w[1] == 1 and w[0] == group:
            out["depthwise"].append(n.name)
        elif op_of(n.input[0]) in ("GlobalAveragePool", "ReduceMean"):
            out["se"].append(n.name)
            squeeze.add(n.output[0])
        elif src is not None and src.op_type in ("Relu", "HardSwish", "Sigmoid", "Clip") and src.input[0] in squeeze:
            out["se"].append(n.name)
    return out


def quantize_onnx(fp32: bytes, calibration: Iterable[np.ndarray], settings: Int8Settings, *,
                  input_name: str = "input", exclude: Iterable[str] = ()) -> bytes:  # fmt: skip
    """The int8 (QDQ) form of the ONNX model ``fp32``, activation ranges calibrated on ``calibration`` inputs;
    the nodes named in ``exclude`` stay fp32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    batches = iter(calibration)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(batches, None)
            return None if x is None else {input_name: np.ascontiguousarray(x, dtype=np.float32)}

    with tempfile.TemporaryDirectory() as tmp, _quiet_ort_hints():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(inline_constant_identities(fp32))
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
                        activation_type=qtype[settings.activations], weight_type=qtype[settings.weights],
                        reduce_range=settings.reduce_range, nodes_to_exclude=list(exclude))  # fmt: skip
        return dst.read_bytes()
