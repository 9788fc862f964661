"""Measure latency on a deployment target, on this machine or on a device through its agent.

:func:`measure` is the one entry point: it asks the target (:mod:`edgecnn.latency.targets`)
for a one-inference callable and times it with :func:`~edgecnn.latency.timing.time_fn`,
or — when ``device`` is an agent's ``HOST:PORT`` — has the agent time the exported
model on the device (:mod:`edgecnn.latency.remote`). Either way it returns a
:class:`~edgecnn.latency.measurement.Measurement` that stores *what* was measured
(target, threads, batch, input, device, versions), because a latency without that
context cannot be compared. :func:`device_fingerprint` is the matching fingerprint
(local, or the device's own from its agent). The timing primitives are re-exported
here for the callers that have always imported them from this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from edgecnn.latency.fingerprint import DeviceFingerprint, check_backend, check_device, fingerprint, is_agent_address
from edgecnn.latency.measurement import Measurement
from edgecnn.latency.remote import check_remote_runtime, client_for, measure_remote
from edgecnn.latency.targets import get_target
from edgecnn.latency.timing import (
    CLOCKS,
    LatencyStats,
    Reference,
    TimingConfig,
    check_clock,
    clock_of,
    default_threads,
    disturbance,
    eager_runner,
    example_input,
    merge_passes,
    retry_disturbed,
    summarize,
    time_fn,
    timed_ms,
    torch_threads,
)

__all__ = [
    "CLOCKS", "LatencyStats", "Measurement", "Reference", "TimingConfig", "check_clock", "clock_of",
    "default_threads", "device_fingerprint", "disturbance", "eager_runner", "example_input", "measure", "merge_passes", "prepare",
    "retry_disturbed", "summarize", "time_fn", "timed_ms", "torch_threads",
]  # fmt: skip


def device_fingerprint(*, backend: str = "eager", threads: int, device: str = "cpu") -> DeviceFingerprint:
    """The fingerprint measurements with ``backend``/``threads`` on ``device`` carry: this machine's
    (:func:`~edgecnn.latency.fingerprint.fingerprint`), or the device's from its agent's ``hello``."""
    check_backend(backend)
    check_device(device)
    if is_agent_address(device):
        check_remote_runtime(backend, device)
        return client_for(device).device_fingerprint(runtime=backend, threads=threads)
    return fingerprint(backend=backend, threads=threads, device=device)


def _check_agent(backend: str, device: str, channels_last: bool) -> None:
    """What a measurement through an agent needs: a known backend, a valid address, the runtime on the device."""
    check_backend(backend)
    check_device(device)
    check_remote_runtime(backend, device)
    if channels_last:
        raise ValueError("channels_last applies to the eager backend only; an agent runs exported models")


def measure(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    backend: str = "eager",
    threads: int | None = None,
    device: str = "cpu",
    channels_last: bool = False,
    config: TimingConfig | None = None,
    label: str = "",
    reference: Reference | None = None,
) -> Measurement:
    """End-to-end latency of ``model`` on an input of ``input_shape`` (e.g. ``(1, 3, 224, 224)``).

    With ``reference`` (same backend and threads, see :mod:`edgecnn.latency.reference`)
    every run is normalised by the reference runs around it. To time the same artifact again later (passes
    spread out in time), keep the timer of :func:`prepare` instead.
    """
    if is_agent_address(device):  # timed on the device by its agent (no drift reference runs there)
        _check_agent(backend, device, channels_last)
        return measure_remote(model, input_shape, runtime=backend, threads=threads or default_threads(),
                              config=config, client=client_for(device), label=label)  # fmt: skip
    timer, extra = prepare(model, input_shape, backend=backend, threads=threads, device=device,
                           channels_last=channels_last, config=config, label=label, reference=reference)  # fmt: skip
    stats = timer()
    fp = fingerprint(backend=backend, threads=threads or default_threads(), device=device)
    return Measurement(stats, fp, tuple(int(d) for d in input_shape), channels_last, label, extra)


def prepare(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    backend: str = "eager",
    threads: int | None = None,
    device: str = "cpu",
    channels_last: bool = False,
    config: TimingConfig | None = None,
    label: str = "",
    reference: Reference | None = None,
) -> tuple[Callable[[], LatencyStats], dict[str, Any]]:
    """``model`` exported, loaded and bound once: (a callable that times it once more per call, details).

    What :func:`measure` times; kept, it lets a caller time the same loaded artifact again later — in passes
    spread over minutes — without exporting again (an ExecuTorch network takes seconds to lower).
    """
    threads = threads or default_threads()
    if is_agent_address(device):  # timed on the device by its agent (no drift reference runs there)
        _check_agent(backend, device, channels_last)
        first = measure_remote(model, input_shape, runtime=backend, threads=threads, config=config,
                               client=client_for(device), label=label)  # fmt: skip
        later = [first.stats]

        def remote() -> LatencyStats:  # the first call returns the measurement made above; later ones re-send
            if later:
                return later.pop()
            return measure_remote(model, input_shape, runtime=backend, threads=threads, config=config,
                                  client=client_for(device), label=label).stats  # fmt: skip

        return remote, dict(first.extra)
    check_backend(backend)
    check_device(device)
    check_clock(config, threads=threads, device=device)
    x = example_input(input_shape)
    target = get_target(backend)
    with target.threads(threads):
        run, extra = target.runner(model, x, threads=threads, device=device, channels_last=channels_last)

    def timed() -> LatencyStats:
        with target.threads(threads):
            return time_fn(run, config, reference=reference)

    return timed, extra
