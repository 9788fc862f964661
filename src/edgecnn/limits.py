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
``EDGECNN_MAX_MEMORY_GB``         80% RAM    estimated memory of a command (:mod:`edgecnn.analysis.memory`)
``EDGECNN_MAX_PLAN_STATES``       2000000    states of the ``rf-plan`` search
``EDGECNN_MAX_FILE_MB``           1024       size of a JSON document edgecnn reads (latency tables)
``EDGECNN_MAX_EPOCHS``            10000      training / fine-tune epochs (``--epochs``, ``--long-epochs``)
``EDGECNN_MAX_STEPS``             10000000   optimiser steps (``--steps``, ``--short-steps``)
``EDGECNN_MAX_BATCH``             65536      images per batch (``--batch-size``, ``latency --batch``)
``EDGECNN_MAX_NETWORKS``          10000      networks sampled and measured (``build-table --sample``, ``-n``)
``EDGECNN_MAX_ROUNDS``            1000       repeated rounds (``--retries``, ``demo --measured-rounds``)
``EDGECNN_MAX_CANDIDATES``        100000     candidates a search evaluates (``search --budget``)
================================  =========  ==================================================

``EDGECNN_MAX_MEMORY_GB`` defaults to 80 % of the memory this process may
really use: the least of physical RAM, the address space ``ulimit -v``
(``RLIMIT_AS``) leaves it, and its cgroup's memory limit (v2 ``memory.max``,
v1 ``memory.limit_in_bytes``). Refusals name which of them set the bound.

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
            return self.default_value()
        try:
            v = float(raw)
        except ValueError:
            raise ValueError(f"{self.env}={raw!r} is not a number; set it to a positive limit or unset it") from None
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{self.env}={raw!r} must be a positive finite number; set it or unset it")
        return v

    def default_value(self) -> float:
        """The bound when the variable is unset (a subclass may compute it when asked)."""
        return self.default

    def origin(self) -> str:
        """Where the bound in force comes from, for the message (`` (80% of …)``); empty for a fixed default."""
        return ""

    def check(self, got: float, where: str) -> None:
        """``ValueError`` naming ``where``, the bound and how to raise it when ``got`` exceeds it."""
        bound = self.value()
        if got > bound:
            unit = f" {self.unit}" if self.unit else ""
            raise ValueError(f"{where}: {_num(got)} {self.what} exceed the limit of {_num(bound)}{unit}"
                             f"{self.origin()}; if that is really meant, raise it with {self.env}=N")  # fmt: skip


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


_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge byte count (9223372036854771712)


def _address_space_left_gb() -> float | None:
    """GiB of address space ``ulimit -v`` (``RLIMIT_AS``) still leaves this process; None without such a limit.

    ``RLIMIT_AS`` bounds the *virtual* size, which the interpreter and its
    libraries (torch maps hundreds of MB) already use, so what is left is the
    limit minus the current size (``/proc/self/statm``).
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(soft - used, 0) / 2**30


def _cgroup_limit_gb(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float | None:
    """GiB of the tightest cgroup memory limit over this process's cgroup and its ancestors; None if none.

    cgroup v2: ``memory.max`` (``max`` = none) under ``root`` (or ``root/unified``
    on a hybrid host); v1: ``memory/memory.limit_in_bytes``. Inside a container
    the process's path in ``/proc/self/cgroup`` may not exist under ``root``
    (the container's own cgroup is mounted there): walking up to ``root``
    reads that file too.
    """
    try:
        with open(proc_cgroup, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    found: list[int] = []
    for line in lines:
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            places = [(os.path.join(root, "unified"), "memory.max"), (root, "memory.max")]
        elif "memory" in controllers.split(","):
            places = [(os.path.join(root, "memory"), "memory.limit_in_bytes")]
        else:
            continue
        for base, name in places:
            folder = os.path.normpath(base + "/" + path.strip("/"))
            while True:  # the cgroup's folder, then each ancestor up to the mount: a parent's limit binds too
                try:
                    with open(os.path.join(folder, name), encoding="ascii") as f:
                        text = f.read().strip()
                    if text.isdigit() and 0 < int(text) < _UNLIMITED:
                        found.append(int(text))
                except OSError:
                    pass
                if len(folder) <= len(os.path.normpath(base)):
                    break
                folder = os.path.dirname(folder)
    return min(found) / 2**30 if found else None


def memory_bounds() -> list[tuple[float, str]]:
    """(GiB, what) of every bound on this process's memory: physical RAM, ``ulimit -v``, the cgroup's limit."""
    out = [(_physical_gb(), "physical RAM")]
    if (left := _address_space_left_gb()) is not None:
        out.append((left, "address space `ulimit -v` (RLIMIT_AS) leaves this process"))
    if (cg := _cgroup_limit_gb()) is not None:
        out.append((cg, "cgroup memory limit"))
    return out


@dataclass(frozen=True)
class MemoryLimit(Limit):
    """``EDGECNN_MAX_MEMORY_GB``: unset, a share of the tightest of :func:`memory_bounds`, read when asked.

    Read at each check rather than at import, so the address space already
    mapped (torch, the data) is counted and a limit set after import applies.
    """

    share: float = 0.8  # of the tightest bound: the rest is the interpreter, libraries, the estimate's slack

    def _tightest(self) -> tuple[float, str]:
        return min(memory_bounds())

    def default_value(self) -> float:
        gb, _ = self._tightest()
        return max(float(f"{self.share * gb:.3g}"), 0.001)

    def origin(self) -> str:
        raw = os.environ.get(self.env)
        if raw is not None and raw.strip():
            return ""  # the user's own bound: the message names the variable anyway
        gb, what = self._tightest()
        return f" ({self.share:.0%} of the {gb:.3g} GB of {what})"


MAX_CHANNELS = Limit("EDGECNN_MAX_CHANNELS", 65536, "channels")
MAX_LAYERS = Limit("EDGECNN_MAX_LAYERS", 4096, "layers")
MAX_INPUT = Limit("EDGECNN_MAX_INPUT", 8192, "pixels")
MAX_MEMORY_GB = MemoryLimit("EDGECNN_MAX_MEMORY_GB", round(0.8 * _physical_gb(), 1), "GB of memory (estimated)", "GB")
# (``default`` is 80 % of physical RAM, for show; the bound in force is ``MAX_MEMORY_GB.value()``)
MAX_PLAN_STATES = Limit("EDGECNN_MAX_PLAN_STATES", 2_000_000, "search states")
MAX_FILE_MB = Limit("EDGECNN_MAX_FILE_MB", 1024, "MB", "MB")
MAX_JSON_DEPTH = 64  # nesting of a JSON document we read; ours nest 4 deep (not raisable: no use for more)
# counts of work: far above any real run, far below "six years" (`--epochs 1000000000`)
MAX_EPOCHS = Limit("EDGECNN_MAX_EPOCHS", 10_000, "epochs")
MAX_STEPS = Limit("EDGECNN_MAX_STEPS", 10_000_000, "steps")
MAX_BATCH = Limit("EDGECNN_MAX_BATCH", 65_536, "images per batch")
MAX_NETWORKS = Limit("EDGECNN_MAX_NETWORKS", 10_000, "networks")
MAX_ROUNDS = Limit("EDGECNN_MAX_ROUNDS", 1_000, "rounds")
MAX_CANDIDATES = Limit("EDGECNN_MAX_CANDIDATES", 100_000, "candidates")  # search --budget (MnasNet: 8,000)

ALL: tuple[Limit, ...] = (MAX_CHANNELS, MAX_LAYERS, MAX_INPUT, MAX_MEMORY_GB, MAX_PLAN_STATES, MAX_FILE_MB,
                          MAX_EPOCHS, MAX_STEPS, MAX_BATCH, MAX_NETWORKS, MAX_ROUNDS, MAX_CANDIDATES)  # fmt: skip
