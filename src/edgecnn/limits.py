"""Sane upper bounds on what edgecnn builds, reads and searches — each one raisable by an environment variable.

An arch string, a checkpoint or a CLI number can ask for a network that
would take hours to expand or petabytes to allocate (``conv_r100000000_c8``,
``c99999999``, an ``image_size`` of 10⁶). Rather than hang or die in the
allocator, edgecnn refuses such a request up front with a ``ValueError`` that
names the limit and the variable that raises it. The defaults are far above
any network the MobileNet family (or this project's zoo) needs:

================================  =========  ==================================================
variable                          default    what it bounds
================================  =========  ==================================================
``EDGECNN_MAX_CHANNELS``          65536      channels of any layer, inner widths, classes
``EDGECNN_MAX_LAYERS``            4096       blocks after repeats are expanded
``EDGECNN_MAX_INPUT``             8192       input height/width, kernel, stride, dilation (px)
``EDGECNN_MAX_MEMORY_GB``         80% RAM    estimated memory of a command (:mod:`edgecnn.memory`)
``EDGECNN_MAX_PLAN_STATES``       2000000    states of the ``rf-plan`` search
``EDGECNN_MAX_FILE_MB``           1024       size of a JSON document edgecnn reads (latency tables)
================================  =========  ==================================================

docs/reliability.md lists them with the commands they guard.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """One bound: its environment variable, its default and what it bounds (for the error message)."""

    env: str  # environment variable that overrides the default
    default: float  # the value when the variable is unset
    what: str  # "channels", for the message
    unit: str = ""  # the bound's unit in the message ("GB"); empty where ``what`` says it

    def value(self) -> float:
        """The bound in force: the variable's value if set (a positive number), else the default."""
        raw = os.environ.get(self.env)
        if raw is None or not raw.strip():
            return self.default
        try:
            v = float(raw)
        except ValueError:
            raise ValueError(f"{self.env}={raw!r} is not a number; set it to a positive limit or unset it") from None
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{self.env}={raw!r} must be a positive finite number; set it or unset it")
        return v

    def check(self, got: float, where: str) -> None:
        """``ValueError`` naming ``where``, the bound and how to raise it when ``got`` exceeds it."""
        bound = self.value()
        if got > bound:
            unit = f" {self.unit}" if self.unit else ""
            raise ValueError(f"{where}: {_num(got)} {self.what} exceed the limit of {_num(bound)}{unit}; "
                             f"if that is really meant, raise it with {self.env}=N")  # fmt: skip


def _num(v: float) -> str:
    if isinstance(v, int) and v >= 10**15:  # may be too large for a float (a 400-digit channel count)
        return f"{str(v)[0]}.{str(v)[1:3]}e{len(str(v)) - 1}"
    if v >= 1e15:
        return f"{v:.3g}"
    return f"{int(v):,}" if float(v).is_integer() else f"{v:.3g}"


def _physical_gb() -> float:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):  # not POSIX: a generous fixed bound
        return 64.0


MAX_CHANNELS = Limit("EDGECNN_MAX_CHANNELS", 65536, "channels")
MAX_LAYERS = Limit("EDGECNN_MAX_LAYERS", 4096, "layers")
MAX_INPUT = Limit("EDGECNN_MAX_INPUT", 8192, "pixels")
MAX_MEMORY_GB = Limit("EDGECNN_MAX_MEMORY_GB", round(0.8 * _physical_gb(), 1), "GB of memory (estimated)", "GB")
MAX_PLAN_STATES = Limit("EDGECNN_MAX_PLAN_STATES", 2_000_000, "search states")
MAX_FILE_MB = Limit("EDGECNN_MAX_FILE_MB", 1024, "MB", "MB")
MAX_JSON_DEPTH = 64  # nesting of a JSON document we read; ours nest 4 deep (not raisable: no use for more)

ALL: tuple[Limit, ...] = (MAX_CHANNELS, MAX_LAYERS, MAX_INPUT, MAX_MEMORY_GB, MAX_PLAN_STATES, MAX_FILE_MB)
