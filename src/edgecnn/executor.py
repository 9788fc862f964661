"""Run many independent tasks — NetAdapt proposals, search candidates — in parallel: ``Executor.map(fn, tasks)``.

NetAdapt (Yang et al. 2018) fine-tunes one proposal per channel group every
iteration, and platform-aware search (MnasNet, Tan et al. 2019) trains many
candidates; each is an independent job on picklable inputs (an arch string, a
``state_dict``, a config). One interface runs them on three backends:

* ``local`` (the default) — a pool of worker processes on this machine, started
  with ``spawn`` (no forked copies of the parent's threads or CUDA state), each
  limited to ``threads_per_worker`` torch threads (1 by default: N workers on N
  cores, no oversubscription). Workers ignore Ctrl-C; the parent catches it,
  terminates them and re-raises, so nothing keeps running behind the user's back.
* ``serial`` — the same calls one after another in this process (``workers=0``):
  for debugging (breakpoints, plain tracebacks) and for machines with one core.
* ``ray`` — Ray tasks (``pip install 'edgecnn[ray]'``), on a local Ray instance or
  the cluster at ``address``, each asking for ``cpus_per_task`` CPUs and
  ``gpus_per_task`` GPUs; ``ray`` is imported only when this backend is chosen.

Every backend returns the results in task order, and a task that raises stops the
map with :class:`TaskError`, whose message names the task (its ``name``
attribute, the ``names=`` given, or its index) and carries the worker's traceback.

**Latency is never measured next to a fine-tune.** A latency measured while
other processes load the same cores is the latency of a busy machine (docs/design.md §9).
:meth:`Executor.exclusive` is the measuring lane: entering it stops new tasks
from being started, waits until the tasks in flight have finished, and holds the
workers idle until it is left; a ``map`` running in another thread simply
pauses. Code inside tasks gets its latencies from the lookup table instead:
workers run with ``EDGECNN_WORKER=1`` set (:data:`WORKER_ENV`), and
:class:`edgecnn.latency.model.LatencyModel` refuses to measure there.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

BACKENDS: tuple[str, ...] = ("local", "serial", "ray")
WORKER_ENV = "EDGECNN_WORKER"
"""Set to ``"1"`` in every worker process and Ray task: code can tell it runs next to other tasks."""

T = TypeVar("T")
R = TypeVar("R")
_POLL_S = 0.2  # how often a waiting map wakes up (Ctrl-C, the measuring lane)


class TaskError(RuntimeError):
    """A task raised in its worker; the message names the task and ends with the worker's traceback."""

    def __init__(self, index: int, name: str, error: str, details: str = "") -> None:
        self.index, self.name, self.error, self.details = index, name, error, details
        msg = f"task {index} ({name}) failed: {error}"
        super().__init__(msg + (f"\n{details.rstrip()}" if details else ""))


def in_worker() -> bool:
    """True inside an executor worker (a local pool process or a Ray task)."""
    return os.environ.get(WORKER_ENV) == "1"


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel region; fine if already 1 or used
        pass


def _init_worker(threads: int) -> None:
    """Runs once in each local worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it terminates us
    os.environ[WORKER_ENV] = "1"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    _limit_threads(threads)


def _ray_call(fn: Callable[[Any], Any], task: Any, threads: int) -> Any:
    """One Ray task: the same worker setup as a local process (a Ray worker process is reused across tasks)."""
    os.environ[WORKER_ENV] = "1"
    _limit_threads(threads)
    return fn(task)


@dataclass(eq=False)  # a handle: hashed by identity
class _Done:
    """A finished serial call (the serial backend's handle)."""

    value: Any = None
    error: BaseException | None = None
    details: str = ""


class _Backend(Protocol):
    window: int  # how many tasks may be in flight at once

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Any: ...
    def wait(self, handles: list[Any], timeout: float) -> list[Any]: ...
    def result(self, handle: Any) -> Any: ...  # the value, or raises _Failed
    def abort(self, handles: list[Any]) -> None: ...
    def close(self) -> None: ...


class _Failed(Exception):
    """A task's failure, as the backend reports it: one-line error and traceback text."""

    def __init__(self, error: str, details: str, cause: BaseException | None, *, shared: bool = False) -> None:
        super().__init__(error)
        self.error, self.details, self.cause = error, details, cause
        self.shared = shared  # the failure hit every task in flight (a pool worker died): any of them may be the cause


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]


class _Serial:
    window = 1

    def submit(self, fn: Callable[[Any], Any], task: Any) -> _Done:
        try:
            return _Done(value=fn(task))
        except Exception as exc:  # a task's own error; KeyboardInterrupt passes through
            return _Done(error=exc, details=traceback.format_exc())

    def wait(self, handles: list[_Done], timeout: float) -> list[_Done]:
        return list(handles)

    def result(self, handle: _Done) -> Any:
        if handle.error is not None:
            raise _Failed(_describe(handle.error), handle.details, handle.error)
        return handle.value

    def abort(self, handles: list[_Done]) -> None:
        pass

    def close(self) -> None:
        pass


class _Local:
    """A spawn-context process pool, started on first use and kept across maps (starting workers costs seconds)."""

    def __init__(self, workers: int, threads: int) -> None:
        self.window, self.threads = workers, threads
        self._pool: cf.ProcessPoolExecutor | None = None

    def _get(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = cf.ProcessPoolExecutor(
                self.window, mp_context=ctx, initializer=_init_worker, initargs=(self.threads,)
            )
        return self._pool

    def submit(self, fn: Callable[[Any], Any], task: Any) -> cf.Future[Any]:
        return self._get().submit(fn, task)

    def wait(self, handles: list[cf.Future[Any]], timeout: float) -> list[cf.Future[Any]]:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, handle: cf.Future[Any]) -> Any:
        exc = handle.exception()
        if exc is None:
            return handle.result()
        if isinstance(exc, cf.process.BrokenProcessPool):
            self._kill()  # the pool is unusable; the next map starts a fresh one
            raise _Failed("a worker process died (killed, out of memory or crashed)", str(exc), exc, shared=True)
        cause = exc.__cause__  # concurrent.futures attaches the worker's traceback as _RemoteTraceback
        details = str(cause) if cause is not None else ""
        raise _Failed(_describe(exc), details, exc)

    def abort(self, handles: list[cf.Future[Any]]) -> None:
        for h in handles:
            h.cancel()
        self._kill()

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # ProcessPoolExecutor cannot stop a running call (Python < 3.14 has no terminate_workers()):
        # terminate the processes themselves, then let the pool wind down
        for p in list(getattr(pool, "_processes", {}).values()):
            if p.is_alive():
                p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(
            "the ray executor needs Ray, which is not installed: pip install 'edgecnn[ray]' (or use --executor local)"
        ) from None
    return ray


class _Ray:
    def __init__(self, address: str | None, workers: int | None, cpus: float, gpus: float) -> None:
        ray = self.ray = _import_ray()
        self.owns = not ray.is_initialized()
        if self.owns:
            # a local instance gets this process's import path, as spawned pool workers do;
            # on a cluster, ship the code with Ray's runtime_env (see docs/executor.md)
            env = {"env_vars": {"PYTHONPATH": driver_path()}} if address is None else None
            ray.init(address=address, include_dashboard=False, runtime_env=env)
        self._remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_ray_call)
        self.threads = max(1, int(cpus))  # torch threads = the CPUs the task reserved
        if workers:
            self.window = workers
        else:  # as many as the cluster can run at once
            have = ray.cluster_resources()
            fit = have.get("CPU", 1) / cpus if cpus > 0 else float("inf")
            if gpus > 0:
                fit = min(fit, have.get("GPU", 0) / gpus)
            if fit < 1:
                raise ValueError(
                    f"the Ray cluster ({have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs) cannot run one task "
                    f"of {cpus:g} CPUs and {gpus:g} GPUs; lower the per-task resources"
                )
            self.window = int(min(fit, 1024))

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Any:
        return self._remote.remote(fn, task, self.threads)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return list(done)

    def result(self, handle: Any) -> Any:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            error = _describe(cause) if cause is not None else str(exc).splitlines()[0]
            raise _Failed(error, str(exc), cause) from None
        except self.ray.exceptions.RayError as exc:  # worker died, task cancelled, object lost
            raise _Failed(_describe(exc), "", exc) from None

    def abort(self, handles: list[Any]) -> None:
        for h in handles:
            self.ray.cancel(h, force=True)

    def close(self) -> None:
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()


def driver_path() -> str:
    """This process's ``sys.path`` as a ``PYTHONPATH`` value (absolute folders only), for local Ray workers."""
    return os.pathsep.join(os.path.abspath(p) for p in sys.path if p and os.path.isdir(p))


def default_workers() -> int:
    """Worker processes of the local backend: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def task_name(task: object, index: int) -> str:
    """How errors and progress name a task: its ``name`` attribute, else its index."""
    name = getattr(task, "name", None)
    return str(name) if name else f"#{index}"


class Executor:
    """``map(fn, tasks)`` on local worker processes (default), in this process, or on Ray — see the module doc.

    Use it as a context manager (or call :meth:`close`): the local pool and a Ray
    instance it started are kept across maps and released at the end.
    """

    def __init__(
        self,
        backend: str = "local",
        *,
        workers: int | None = None,
        threads_per_worker: int = 1,
        address: str | None = None,
        cpus_per_task: float = 1.0,
        gpus_per_task: float = 0.0,
        progress: bool = False,
    ) -> None:
        """
        Args:
            backend: ``"local"`` (process pool), ``"serial"`` (this process) or ``"ray"``.
            workers: tasks run at once; ``0`` means serial; ``None`` = this machine's cores (local) or
                what the Ray cluster fits (ray).
            threads_per_worker: local only: torch threads in each worker (1: one task per core); a Ray task
                runs with as many threads as the CPUs it reserves.
            address: Ray only: ``"HOST:PORT"`` of a running cluster, ``"ray://HOST:PORT"`` or ``"auto"``;
                None starts a local Ray instance (or joins the one this process already initialised).
            cpus_per_task, gpus_per_task: Ray only: the resources each task reserves.
            progress: show a progress bar (rich) while a map runs.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown executor {backend!r}; valid: {', '.join(BACKENDS)}")
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = run tasks in this process), got {workers}")
        if threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
        if cpus_per_task < 0 or gpus_per_task < 0:
            raise ValueError(f"per-task resources must be >= 0, got {cpus_per_task} CPUs, {gpus_per_task} GPUs")
        if address is not None and backend != "ray":
            raise ValueError(f"--address is a Ray cluster address; it needs --executor ray (got {backend!r})")
        if backend == "local" and workers == 0:
            backend = "serial"
        self.backend_name = backend
        self.progress = progress
        self._args = (workers, threads_per_worker, address, cpus_per_task, gpus_per_task)
        self._backend: _Backend | None = None
        self._cond = threading.Condition()
        self._inflight = 0  # tasks started and not yet collected, over all maps
        self._lane = 0  # 1 while the measuring lane is wanted or held
        self._lane_owner: int | None = None  # the thread holding the lane (it may enter it again)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def _get(self) -> _Backend:
        if self._backend is None:
            workers, threads, address, cpus, gpus = self._args
            if self.backend_name == "serial":
                self._backend = _Serial()
            elif self.backend_name == "local":
                self._backend = _Local(workers or default_workers(), threads)
            else:
                self._backend = _Ray(address, workers, cpus, gpus)
        return self._backend

    @property
    def workers(self) -> int:
        """How many tasks run at once (starts the backend: a Ray cluster is asked what it fits)."""
        return self._get().window

    def close(self) -> None:
        """Stop the worker processes (and a Ray instance this executor started)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the measuring lane --------------------------------------------------------------------------
    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the machine for a latency measurement: no task runs from entry to exit.

        Entering blocks new tasks, then waits for the tasks in flight (a ``map`` in
        another thread keeps collecting them) to finish; leaving lets maps go on.
        Re-entrant: the thread holding the lane may enter it again (a latency model
        measuring a missing block inside a calibration that holds the lane).
        """
        me = threading.get_ident()
        if self._lane and self._lane_owner == me:
            yield
            return
        with self._cond:
            while self._lane:  # one lane at a time
                self._cond.wait(_POLL_S)
            self._lane, self._lane_owner = 1, me
            try:
                while self._inflight:
                    self._cond.wait(_POLL_S)
            except BaseException:
                self._lane = 0
                self._cond.notify_all()
                raise
        try:
            yield
        finally:
            with self._cond:
                self._lane = 0
                self._cond.notify_all()

    def _claim(self) -> bool:
        """Count one more task in flight unless the lane is wanted (atomic: the lane cannot slip in between)."""
        with self._cond:
            if self._lane:
                return False
            self._inflight += 1
            return True

    def _finished(self, count: int) -> None:
        with self._cond:
            self._inflight -= count
            self._cond.notify_all()

    # ---- map -----------------------------------------------------------------------------------------
    def map(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        *,
        names: Sequence[str] | None = None,
        description: str = "tasks",
    ) -> list[R]:
        """``[fn(t) for t in tasks]``, run on the backend; results in task order.

        ``fn`` must be a module-level function (it is pickled by reference) and the
        tasks picklable. The first task that raises stops the map: the others are
        cancelled and :class:`TaskError` names the task. Ctrl-C cancels every task
        (local workers are terminated) and re-raises ``KeyboardInterrupt``.
        """
        tasks = list(tasks)
        if names is not None and len(names) != len(tasks):
            raise ValueError(f"{len(names)} names for {len(tasks)} tasks")
        label = [names[i] if names is not None else task_name(t, i) for i, t in enumerate(tasks)]
        if not tasks:
            return []
        backend = self._get()
        results: list[Any] = [None] * len(tasks)
        pending: dict[Any, int] = {}  # handle -> task index
        nxt = 0
        with _progress(self.progress, description, len(tasks)) as advance:
            try:
                while nxt < len(tasks) or pending:
                    while nxt < len(tasks) and len(pending) < backend.window and self._claim():
                        try:
                            pending[backend.submit(fn, tasks[nxt])] = nxt
                        except BaseException:
                            self._finished(1)
                            raise
                        nxt += 1
                    if not pending:  # the measuring lane holds the machine: wait for it
                        with self._cond:
                            self._cond.wait(_POLL_S)
                        continue
                    done = backend.wait(list(pending), _POLL_S)
                    for h in done:
                        i = pending.pop(h)
                        self._finished(1)
                        try:
                            results[i] = backend.result(h)
                        except _Failed as f:
                            error = f.error
                            if f.shared:  # the pool cannot tell whose worker died: name every task in flight
                                suspects = sorted([i, *pending.values()])
                                error += "; tasks in flight: " + ", ".join(f"{j} ({label[j]})" for j in suspects)
                            raise TaskError(i, label[i], error, f.details) from f.cause
                        advance()
            except BaseException:
                if pending:
                    backend.abort(list(pending))
                    self._finished(len(pending))
                raise
        return results


@contextmanager
def _progress(show: bool, description: str, total: int) -> Iterator[Callable[[], None]]:
    if not show:
        yield lambda: None
        return
    from edgecnn.progress import progress_bar

    with progress_bar() as bar:
        t = bar.add_task(description, total=total)
        yield lambda: bar.advance(t)

