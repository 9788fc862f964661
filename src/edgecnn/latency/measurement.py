"""A measured latency together with what was measured: the record every target and device returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecnn.latency.fingerprint import DeviceFingerprint
from edgecnn.latency.timing import LatencyStats


@dataclass(frozen=True)
class Measurement:
    """An end-to-end latency together with what was measured."""

    stats: LatencyStats  # the timing summary
    fingerprint: DeviceFingerprint  # device, backend, threads, versions
    input_shape: tuple[int, ...]  # full input shape, batch first
    channels_last: bool = False  # eager only: model and input in NHWC memory format
    label: str = ""  # what was measured (zoo name or arch string)
    extra: dict[str, Any] = field(default_factory=dict)  # backend details (e.g. ONNX opset)

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "input_shape": list(self.input_shape),
            "batch": self.batch,
            "channels_last": self.channels_last,
            "stats": self.stats.to_dict(),
            "fingerprint": self.fingerprint.to_dict(),
            "extra": dict(self.extra),
        }
