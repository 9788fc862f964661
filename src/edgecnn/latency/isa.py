"""The CPU's int8 instructions: what decides how an int8 network must be quantised to be right on this machine.

int8 convolutions and matrix products on a CPU come down to a u8×s8 (or s8×s8)
dot product with a 32-bit accumulator. How the instruction set provides it
matters for correctness, not only speed:

- x86 with **VNNI** (``avx512_vnni``, the VEX-coded ``avx_vnni`` of Alder Lake
  and Zen 4+, and AMX's ``amx_int8``): ``VPDPBUSD`` multiplies u8 by s8 and
  accumulates in 32 bits — no intermediate overflow.
- x86 with **AVX2 (or AVX-512) but no VNNI** (e.g. AMD EPYC before Zen 4, Intel
  before Cascade Lake): the kernels use ``VPMADDUBSW``, which adds two u8×s8
  products into a *saturating 16-bit* lane. With 8-bit weights the sum can reach
  2·255·127 = 64 770 > 32 767 and is clipped, silently: ONNX Runtime documents
  this and recommends ``reduce_range`` (7-bit weights: 2·255·64 = 32 640 fits)
  on such CPUs. Measured on a 2-core AMD EPYC (AVX2 only): full-range weights
  gave 61% int8/fp32 agreement on a trained digits net, 7-bit weights 98.6%.
- ARM64: ``SDOT``/``UDOT`` (``asimddp``, Armv8.2 dot product) or widening
  multiply-accumulate without it; both accumulate in 32 bits, so no saturation.

:func:`detect_isa` reads this once per process (``/proc/cpuinfo`` on Linux,
``sysctl`` on macOS, torch's own CPU capability as the last resort);
:func:`parse_isa` is the pure part, tested on the flag lines of real CPUs.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

X86_VNNI_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni", "amx_int8")
"""Linux ``/proc/cpuinfo`` flags of x86 instructions with a 32-bit-accumulating u8×s8 dot product."""
X86_SIMD_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512bw")
ARM_DOT_FLAGS: tuple[str, ...] = ("asimddp", "i8mm")
"""Linux ``Features`` of Armv8.2 dot product (``SDOT``/``UDOT``) and Armv8.6 int8 matrix multiply."""


@dataclass(frozen=True)
class InstructionSet:
    """The int8-relevant part of a CPU's instruction set."""

    arch: str  # "x86_64", "arm64" or what platform.machine() said
    features: tuple[str, ...]  # the int8-relevant flags found, sorted (see X86_* / ARM_* above)
    source: str  # where they were read: "/proc/cpuinfo", "sysctl", "torch" or "none"

    @property
    def family(self) -> str:
        """``x86``, ``arm`` or ``other``."""
        a = self.arch.lower()
        if a in ("x86_64", "amd64", "i386", "i686", "x86"):
            return "x86"
        if a in ("arm64", "aarch64") or a.startswith("arm"):
            return "arm"
        return "other"

    @property
    def vnni(self) -> bool:
        """x86 with a 32-bit-accumulating u8×s8 dot product (no ``VPMADDUBSW`` saturation)."""
        return self.family == "x86" and any(f in self.features for f in X86_VNNI_FLAGS)

    @property
    def dot_product(self) -> bool:
        """ARM with ``SDOT``/``UDOT``."""
        return self.family == "arm" and any(f in self.features for f in ARM_DOT_FLAGS)

    @property
    def int8_kind(self) -> str:
        """One word for the int8 path: ``vnni``, ``avx2`` (x86 without VNNI), ``arm-dot``, ``arm``, ``unknown``."""
        if self.family == "x86":
            if self.vnni:
                return "vnni"
            return "avx2" if self.features else "unknown"
        if self.family == "arm":
            return "arm-dot" if self.dot_product else "arm"
        return "unknown"

    @property
    def saturates_int8(self) -> bool:
        """Whether full-range 8-bit weights can overflow int8 kernels that sum u8×s8 pairs in 16 bits here.

        That is ONNX Runtime's (MLAS) x86 path without VNNI; it is a property of those kernels on this CPU,
        so the ONNX Runtime target records it with its int8 settings, not every runtime (XNNPACK's int8
        held 97.8% agreement with full-range weights on the same AVX2-only CPU).

        Unknown CPUs count as saturating: the safe settings cost a bit of
        precision, the unsafe ones can cost a third of the accuracy.
        """
        return self.int8_kind in ("avx2", "unknown")

    def describe(self) -> str:
        feats = ", ".join(self.features) or "none found"
        return f"{self.arch} ({self.int8_kind}; {feats}; from {self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features), "int8_kind": self.int8_kind}


def parse_isa(machine: str, flags: str, *, source: str = "/proc/cpuinfo") -> InstructionSet:
    """The :class:`InstructionSet` of a CPU from ``platform.machine()`` and its flag list (space separated)."""
    words = set(flags.lower().split())
    known = X86_VNNI_FLAGS + X86_SIMD_FLAGS + ARM_DOT_FLAGS
    return InstructionSet(arch=machine, features=tuple(sorted(w for w in words if w in known)), source=source)


def _proc_cpuinfo_flags(path: str = "/proc/cpuinfo") -> str | None:
    """The first ``flags`` (x86) or ``Features`` (ARM) line's value, None when unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() in ("flags", "features"):
                    return value
    except OSError:
        return None
    return None


def _sysctl_arm_flags() -> str | None:
    """macOS: ``hw.optional.arm.FEAT_DotProd`` / ``FEAT_I8MM`` as Linux flag names."""
    found = []
    for key, name in (("hw.optional.arm.FEAT_DotProd", "asimddp"), ("hw.optional.arm.FEAT_I8MM", "i8mm")):
        try:
            out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.stdout.strip() == "1":
            found.append(name)
    return " ".join(found)


def _torch_flags() -> str:
    """torch's own CPU capability (``AVX2``, ``AVX512``, ``DEFAULT`` …) as flag names; says nothing of VNNI."""
    try:
        import torch

        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    except (ImportError, AttributeError, RuntimeError):
        return ""
    return {"AVX2": "avx2", "AVX512": "avx2 avx512f"}.get(cap, "")


@functools.lru_cache(maxsize=1)
def detect_isa() -> InstructionSet:
    """This machine's :class:`InstructionSet` (read once per process)."""
    machine = platform.machine() or "unknown"
    flags = _proc_cpuinfo_flags()
    if flags is not None:
        return parse_isa(machine, flags)
    if platform.system() == "Darwin" and machine.lower() in ("arm64", "aarch64"):
        got = _sysctl_arm_flags()
        if got is not None:
            return parse_isa(machine, got, source="sysctl")
    got = _torch_flags()
    return parse_isa(machine, got, source="torch" if got else "none")
