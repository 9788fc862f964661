"""Who measured a latency: the device fingerprint stored with every table and measurement.

A latency lookup table is only valid on the device, backend, thread count and
library versions it was measured with (nn-Meter, Zhang et al. 2021, builds one
predictor per device/framework pair for the same reason). The fingerprint is
what :mod:`edgecnn.latency.table` compares before it trusts a table.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from edgecnn.latency.targets import target_names

BACKENDS: tuple[str, ...] = target_names()
"""Runtimes we can measure: the registered targets (:mod:`edgecnn.latency.targets`)."""


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def onnxruntime_version() -> str | None:
    """Installed ONNX Runtime version, ``None`` when the ``[onnx]`` extra is missing."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def check_backend(backend: str) -> str:
    """Return ``backend`` if known, else a ValueError listing the valid ones."""
    if backend not in target_names():  # read each time: a target registered after import counts
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(target_names())}")
    return backend


def is_agent_address(device: str) -> bool:
    """Whether ``device`` names an agent (``HOST:PORT``, docs/agent.md) rather than this machine (``cpu``, ``cuda[:i]``)."""
    if not isinstance(device, str) or device == "cpu" or device == "cuda" or device.startswith("cuda:"):
        return False
    host, sep, port = device.rpartition(":")
    return bool(sep and host and port.isdigit())


def check_device(device: str) -> str:
    """``cpu``, ``cuda[:i]`` (CUDA only when present) or an agent's ``HOST:PORT`` (docs/agent.md)."""
    if device == "cpu" or is_agent_address(device):
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        return device
    raise ValueError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N, or an agent's HOST:PORT")


@dataclass(frozen=True)
class DeviceFingerprint:
    """What determines a latency besides the network itself."""

    cpu: str  # CPU model name (/proc/cpuinfo)
    cores: int  # logical CPUs the OS reports
    threads: int  # intra-op threads the measurement used
    backend: str  # "eager" or "onnxruntime"
    device: str  # "cpu" or "cuda[:i]"
    cuda_name: str | None  # GPU name when device is CUDA, else None
    torch: str  # torch version
    onnxruntime: str | None  # onnxruntime version when backend is onnxruntime, else None
    system: str  # OS and machine, e.g. "Linux-x86_64"
    runtime: str | None = None  # the target's runtime version (None for eager, whose runtime is torch)
    isa: str | None = None  # int8-relevant instruction set (edgecnn.latency.isa), e.g. "avx2", "vnni", "arm-dot"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceFingerprint:
        names = {f.name for f in fields(cls)}
        data = dict(data)
        # fields added later: a table written before them has what they would say in its other fields, or nothing
        data.setdefault("runtime", data.get("onnxruntime"))
        data.setdefault("isa", None)
        missing = names - set(data)
        if missing:
            raise ValueError(f"device fingerprint lacks {', '.join(sorted(missing))}; the table file is damaged")
        return cls(**{k: data[k] for k in names})

    def differences(self, other: DeviceFingerprint) -> list[str]:
        """Human-readable ``field: ours != theirs`` for every field that differs."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {a!r} != {b!r}")
        return out


def fingerprint(*, backend: str = "eager", threads: int, device: str = "cpu") -> DeviceFingerprint:
    """The fingerprint of this machine for a measurement with ``backend`` and ``threads`` (an agent's device:
    :func:`edgecnn.latency.measure.device_fingerprint`)."""
    check_backend(backend)
    check_device(device)
    if is_agent_address(device):
        raise ValueError(f"device {device} is an agent: its fingerprint comes from the agent "
                         "(edgecnn.latency.measure.device_fingerprint)")  # fmt: skip
    cuda_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    from edgecnn.latency.isa import detect_isa
    from edgecnn.latency.targets import get_target

    runtime = None if backend == "eager" else get_target(backend).version()
    return DeviceFingerprint(
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        threads=int(threads),
        backend=backend,
        device=device,
        cuda_name=cuda_name,
        torch=torch.__version__,
        onnxruntime=onnxruntime_version() if backend == "onnxruntime" else None,
        system=f"{platform.system()}-{platform.machine()}",
        runtime=runtime,
        isa=detect_isa().int8_kind,
    )
