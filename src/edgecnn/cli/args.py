"""Typed CLI numbers and the parser that reports a bad one in one line.

Every numeric option of every command goes through one of these types, so a
zero, a negative, a NaN or an absurd value is refused while parsing — before
any data is loaded — with ``edgecnn CMD: error: argument --epochs: …`` and exit
code 2. No option treats 0 as "use the default": an option left out takes its
default, a given one must be valid. Sizes are bounded by :mod:`edgecnn.limits`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn, TypeVar

import torch

from edgecnn.limits import MAX_BATCH, MAX_CHANNELS, MAX_EPOCHS, MAX_INPUT, MAX_NETWORKS, MAX_ROUNDS, MAX_STEPS, Limit

T = TypeVar("T", int, float)
MAX_THREADS = 4096  # far above any machine's cores; more is a typo
MAX_WIDTH = 64.0  # width multiplier; the channel limit catches what slips under it


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``edgecnn train: error: …``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def int_in(lo: int, hi: float = math.inf, what: str = "an integer") -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]``."""

    def parse(text: str) -> int:
        v = _int(text)
        if not lo <= v <= hi:
            if hi == math.inf:
                need = "a positive integer" if lo == 1 else f"an integer >= {lo}"
            else:
                need = f"{what} in [{lo}, {int(hi):,}]"
            raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
        return v

    parse.__name__ = "integer"  # argparse shows the type's name in "invalid <name> value"
    return parse


def float_in(
    lo: float, hi: float = math.inf, *, open_lo: bool = False, open_hi: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[lo, hi]`` (``open_lo``/``open_hi`` exclude the ends)."""

    def parse(text: str) -> float:
        v = _float(text)
        if v < lo or v > hi or (open_lo and v == lo) or (open_hi and v == hi):
            if hi == math.inf:
                need = f"> {lo:g}" if open_lo else f">= {lo:g}"
            else:
                need = f"in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
            raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
        return v

    parse.__name__ = "number"
    return parse


positive_int = int_in(1)
nonneg_int = int_in(0)
positive_float = float_in(0.0, open_lo=True)
nonneg_float = float_in(0.0)
fraction = float_in(0.0, 1.0, open_hi=True)  # a probability or weight in [0, 1)
unit = float_in(0.0, 1.0)  # in [0, 1]
threads = int_in(1, MAX_THREADS, "a thread count")


def threads_or_auto(text: str) -> int | str:
    """An argparse type: a thread count, or ``auto`` (the cores other work leaves free, looked at as it runs)."""
    return "auto" if text.strip().lower() == "auto" else threads(text)


threads_or_auto.__name__ = "thread count"
width = float_in(0.0, MAX_WIDTH, open_lo=True)


def _capped(base: Callable[[str], T], limit: Limit, what: str, name: str, shown: str) -> Callable[[str], T]:
    """``base`` (a typed parser), then at most ``limit`` (``EDGECNN_MAX_*``, raisable); ``shown``: how to print it."""

    def parse(text: str) -> T:
        v = base(text)
        if v > limit.value():  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"{v:{shown}} {what} exceed the limit of {int(limit.value()):,}; "
                                             f"raise it with {limit.env}=N if that is really meant")  # fmt: skip
        return v

    parse.__name__ = name
    return parse


def within(limit: Limit, what: str) -> Callable[[str], int]:
    """An argparse type: a positive integer at most ``limit`` (``EDGECNN_MAX_*``, raisable)."""
    return _capped(positive_int, limit, what, what, ",")


def nonneg_within(limit: Limit, what: str) -> Callable[[str], int]:
    """An argparse type: an integer in ``[0, limit]`` (0 meaning "none", e.g. ``--final-epochs 0``: skip)."""
    return _capped(nonneg_int, limit, what, what, ",")


def within_float(limit: Limit, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number ``>= 0`` at most ``limit`` (``--warmup``, ``--long-epochs``)."""
    return _capped(nonneg_float, limit, what, "number", ",g")


pixels = within(MAX_INPUT, "pixels")  # an image side
classes = within(MAX_CHANNELS, "classes")  # a class or channel count
# counts of work (`--epochs 1000000000` is six years, not a request to honour)
epochs = within(MAX_EPOCHS, "epochs")  # --epochs
epochs_or_0 = nonneg_within(MAX_EPOCHS, "epochs")  # --eval-every (0: at the end)
epochs_float = within_float(MAX_EPOCHS, "epochs")  # --warmup, demo --long-epochs
steps = within(MAX_STEPS, "steps")  # --steps
steps_or_0 = nonneg_within(MAX_STEPS, "steps")  # demo --short-steps (0: none)
batch = within(MAX_BATCH, "images per batch")  # --batch-size, latency --batch
networks = within(MAX_NETWORKS, "networks")  # latency build-table --sample, calibrate/validate -n
rounds = nonneg_within(MAX_ROUNDS, "rounds")  # latency --retries, demo --measured-rounds
timing_rounds = within(MAX_ROUNDS, "rounds")  # compress --verify-rounds, export --rounds (at least one)
seed = int_in(0, 2**64 - 1, "a seed")  # what torch.manual_seed takes (more: 'Overflow when unpacking long long')


def measure_device(text: str) -> str:
    """Where latency is measured: :func:`device`'s choices, or an edgecnn agent's ``HOST:PORT`` (docs/agent.md)."""
    from edgecnn.latency.remote import is_agent_address, parse_address

    if is_agent_address(text):
        try:
            parse_address(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    return device(text)


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:i`` that this torch can use; anything else is refused here."""
    if text == "auto":
        return text
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return text
    if dev.type != "cuda":
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                                         "use --device cpu (or auto)")  # fmt: skip
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"device {text!r}: only {torch.cuda.device_count()} GPU(s) here")
    return text

