"""Executor: the same results serially, on local processes and on local Ray; task order; errors that name the
task; one thread per worker; the measuring lane; Ctrl-C; a fine-tune task through every backend; CLI options.

Task functions live at module level: workers import them by reference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from edgecnn.build import build
from edgecnn.cli.executor_args import add_executor_args, executor_from_args
import edgecnn.latency.model as latency_model
from edgecnn.executor import WORKER_ENV, Executor, TaskError, driver_path, in_worker
from edgecnn.train import FINETUNE
from edgecnn.train.task import DataRef, FinetuneTask, run_finetune

TINY = "conv_k3_c8 ir_s2_e2_c16 gap fc"


@dataclass(frozen=True)
class Job:
    name: str
    value: int
    delay: float = 0.0


def square_later(job: Job) -> int:
    time.sleep(job.delay)
    return job.value * job.value


def fail_on_seven(job: Job) -> int:
    if job.value == 7:
        raise ValueError(f"width {job.value} is not allowed")
    return job.value


def worker_facts(_: object) -> tuple[int, bool, int]:
    return torch.get_num_threads(), in_worker(), os.getpid()


def die_on_seven(job: Job) -> int:
    if job.value == 7:
        os._exit(3)  # as the OOM killer would: no exception, no traceback
    time.sleep(job.delay)
    return job.value


def timed_sleep(seconds: float) -> tuple[float, float]:
    t0 = time.time()
    time.sleep(seconds)
    return t0, time.time()


# reversed delays: the last task finishes first, so completion order is not task order
JOBS = [Job(f"job{i}", i, delay=0.05 * (5 - i)) for i in range(6)]


@pytest.fixture(scope="module")
def local():
    with Executor("local", workers=2) as ex:
        yield ex


def test_results_in_task_order_serial_and_local(local: Executor) -> None:
    want = [i * i for i in range(6)]
    assert Executor("serial").map(square_later, JOBS) == want
    assert local.map(square_later, JOBS) == want
    assert local.map(square_later, []) == []


@pytest.mark.parametrize("backend", ["serial", "local"])
def test_a_failing_task_is_named(backend: str, local: Executor) -> None:
    ex = local if backend == "local" else Executor("serial")
    jobs = [Job(f"group{i}", i) for i in (3, 7, 9)]
    with pytest.raises(TaskError) as err:
        ex.map(fail_on_seven, jobs)
    e = err.value
    assert (e.index, e.name) == (1, "group7")
    first = str(e).splitlines()[0]
    assert first == "task 1 (group7) failed: ValueError: width 7 is not allowed"
    assert "fail_on_seven" in str(e)  # the worker's traceback comes along
    # names= overrides the task's own name; the executor is usable afterwards
    with pytest.raises(TaskError, match=r"task 1 \(proposal b\) failed"):
        ex.map(fail_on_seven, jobs, names=["proposal a", "proposal b", "proposal c"])
    assert ex.map(fail_on_seven, jobs[:1]) == [3]


def test_a_dead_worker_is_an_error_naming_the_tasks_in_flight() -> None:
    with Executor("local", workers=1) as ex:
        with pytest.raises(TaskError) as err:
            ex.map(die_on_seven, [Job("a", 1), Job("b", 7), Job("c", 2)])
        assert str(err.value).splitlines()[0] == (
            "task 1 (b) failed: a worker process died (killed, out of memory or crashed); tasks in flight: 1 (b)"
        )
        assert ex.map(die_on_seven, [Job("a", 1)]) == [1]  # a fresh pool afterwards


def test_workers_use_one_thread_and_are_marked(local: Executor) -> None:
    facts = local.map(worker_facts, range(4))
    assert {f[:2] for f in facts} == {(1, True)}
    assert os.getpid() not in {f[2] for f in facts} and len({f[2] for f in facts}) <= 2
    assert not in_worker() and os.environ.get(WORKER_ENV) is None  # the parent is no worker
    assert WORKER_ENV == latency_model.WORKER_ENV  # the marker the latency model refuses to measure under
    (serial,) = Executor(workers=0).map(worker_facts, [None])  # workers=0: in this process
    assert serial[2] == os.getpid()


@pytest.mark.parametrize("backend", ["serial", "local"])
def test_no_task_runs_while_the_measuring_lane_is_held(backend: str, local: Executor) -> None:
    ex = local if backend == "local" else Executor("serial")
    ex.map(timed_sleep, [0.0, 0.0])  # pool started
    out: list[tuple[float, float]] = []
    runner = threading.Thread(target=lambda: out.extend(ex.map(timed_sleep, [0.3] * 8)))
    runner.start()
    while not ex._inflight:  # the map has started tasks
        time.sleep(0.01)
    with ex.exclusive():
        lane = (time.time(), None)
        time.sleep(0.6)
        lane = (lane[0], time.time())
    runner.join(60)
    assert len(out) == 8
    before = [t for t in out if t[1] <= lane[0]]
    after = [t for t in out if t[0] >= lane[1]]
    assert len(before) + len(after) == 8  # no task overlapped the lane
    assert before and after  # the lane waited for the tasks in flight, then the map went on



def test_the_lane_is_reentrant_for_its_holder_and_exclusive_for_others() -> None:
    ex = Executor("serial")
    entered: list[float] = []

    def other() -> None:
        with ex.exclusive():
            entered.append(time.time())

    with ex.exclusive():
        with ex.exclusive():  # the same thread again (a calibration's latency model measuring a block): no deadlock
            t = threading.Thread(target=other)
            t.start()
            time.sleep(0.3)
            assert not entered  # another thread still waits for the lane
        time.sleep(0.1)
        assert not entered  # leaving the inner entry did not release the lane
        released = time.time()
    t.join(10)
    assert entered and entered[0] >= released

CTRL_C = """
import os, signal, sys, threading, time
from pathlib import Path
from edgecnn.executor import Executor

def sleep_with_pid(folder):
    Path(folder, f"{os.getpid()}.pid").write_text("")
    time.sleep(120)

def square(x):
    return x * x

if __name__ == "__main__":
    # a terminal's process: a shell starts background jobs with SIGINT ignored, and Python then keeps it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    folder = sys.argv[1]
    ex = Executor("local", workers=2)
    main = threading.main_thread().ident

    def interrupt_when_running():
        for _ in range(1200):
            if len(list(Path(folder).glob("*.pid"))) >= 2:
                break
            time.sleep(0.1)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    t0 = time.monotonic()
    try:
        ex.map(sleep_with_pid, [folder] * 4)
        print("not interrupted")
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - t0:.1f} s")
    alive = []
    for f in Path(folder).glob("*.pid"):
        try:
            os.kill(int(f.stem), 0)
            alive.append(f.stem)
        except ProcessLookupError:
            pass
    print("alive", alive)
    print("fresh", ex.map(square, [2, 3]))  # a fresh pool after the interrupt
    ex.close()
"""


def test_ctrl_c_terminates_the_workers(tmp_path: Path) -> None:
    # in a fresh interpreter, as a user's Ctrl-C arrives: the pool, the signal and the workers are that process's own
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C)
    folder = tmp_path / "pids"
    folder.mkdir()
    run = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("interrupted after "), run.stdout + run.stderr[-2000:]
    assert float(lines[0].split()[2]) < 100  # did not wait for the 120 s tasks
    assert len(list(folder.glob("*.pid"))) >= 2 and lines[1] == "alive []"  # every worker was terminated
    assert lines[2] == "fresh [4, 9]"


# ------------------------------------------------------------------------------------------ fine-tune tasks
def finetune_tasks() -> list[FinetuneTask]:
    torch.manual_seed(0)
    weights = build(TINY, num_classes=10, in_chans=1).state_dict()
    cfg = replace(FINETUNE, threads=1, batch_size=64, lr=0.05)
    data = DataRef("digits", image_size=16)
    return [FinetuneTask(f"lr{lr}", TINY, weights, data, steps=5, config=replace(cfg, lr=lr)) for lr in (0.05, 0.2)]


def assert_same_outcomes(a: list, b: list) -> None:
    assert [o.name for o in a] == [o.name for o in b] == ["lr0.05", "lr0.2"]
    for x, y in zip(a, b):
        assert x.steps == y.steps == 5 and x.top1 == y.top1
        assert x.loss == pytest.approx(y.loss, rel=1e-6)
        for k, v in x.state_dict.items():
            assert torch.allclose(v, y.state_dict[k], atol=1e-6), k


def test_a_module_task_sends_its_weights_once_and_equals_the_arch_task(local: Executor) -> None:
    import pickle

    tasks = finetune_tasks()
    net = build(TINY, num_classes=10, in_chans=1)
    net.load_state_dict(tasks[0].state_dict)
    as_module = [replace(t, arch="", state_dict={}, module=net) for t in tasks]
    once, twice = len(pickle.dumps(as_module[0])), len(pickle.dumps(replace(tasks[0], module=net)))
    assert twice - once >= 0.9 * len(pickle.dumps(tasks[0].state_dict))  # the weights travel once, in the module
    assert_same_outcomes(Executor("serial").map(run_finetune, tasks), local.map(run_finetune, as_module))


def test_finetune_task_round_trips_serial_and_local(local: Executor) -> None:
    tasks = finetune_tasks()
    serial = Executor("serial").map(run_finetune, tasks)
    assert_same_outcomes(serial, local.map(run_finetune, tasks))
    start = tasks[0].state_dict
    moved = max((serial[0].state_dict[k].float() - v.float()).abs().max().item() for k, v in start.items())
    assert moved > 1e-4  # the fine-tune changed the weights
    assert serial[0].top1 != serial[1].top1 or serial[0].loss != serial[1].loss  # the lr reached the worker


# -------------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="the ray executor needs Ray: pip install 'edgecnn[ray]'")
    started = not ray.is_initialized()
    if started:
        # workers import the task functions of this module and this tree's edgecnn, as spawned pool workers do
        env = {"env_vars": {"PYTHONPATH": driver_path()}}
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False, runtime_env=env)
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow  # ~25 s with starting Ray on 2 busy cores
def test_ray_gives_the_same_results(ray_local) -> None:
    with Executor("ray") as ex:
        assert ex.workers == 2  # what the local cluster fits at 1 CPU a task
        assert ex.map(square_later, JOBS) == [i * i for i in range(6)]
        with pytest.raises(TaskError) as err:
            ex.map(fail_on_seven, [Job("a", 1), Job("b", 7)])
        assert str(err.value).splitlines()[0] == "task 1 (b) failed: ValueError: width 7 is not allowed"
        assert {f[:2] for f in ex.map(worker_facts, range(2))} == {(1, True)}
        tasks = finetune_tasks()
        assert_same_outcomes(Executor("serial").map(run_finetune, tasks), ex.map(run_finetune, tasks))
    assert ray_local.is_initialized()  # the executor did not shut down a Ray instance it did not start


def test_ray_asks_for_per_task_resources(ray_local) -> None:
    with Executor("ray", cpus_per_task=2) as ex:
        assert ex.workers == 1
    with pytest.raises(ValueError, match="cannot run one task"):
        Executor("ray", gpus_per_task=1).workers


# ---------------------------------------------------------------------------------------------- options
def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_executor_args(p)
    return p.parse_args(argv)


def test_cli_options_build_the_executor() -> None:
    ex = executor_from_args(_parse())
    assert ex.backend_name == "local"
    assert executor_from_args(_parse("--workers", "0")).backend_name == "serial"
    ex = executor_from_args(_parse("--executor", "ray", "--address", "10.0.0.5:6379", "--gpus-per-task", "0.5"))
    assert ex.backend_name == "ray" and ex._args[2] == "10.0.0.5:6379" and ex._args[4] == 0.5
    for argv, msg in [
        (("--address", "10.0.0.5:6379"), "needs --executor ray"),
        (("--executor", "ray", "--address", "10.0.0.5"), "HOST:PORT"),
        (("--executor", "ray", "--address", "host:port"), "HOST:PORT"),
    ]:
        with pytest.raises(ValueError, match=msg):
            executor_from_args(_parse(*argv))
    with pytest.raises(SystemExit):  # refused while parsing (a typed option), before any executor exists
        _parse("--workers", "-1")


def test_ray_is_imported_only_when_chosen(monkeypatch) -> None:
    code = "import sys, edgecnn.executor, edgecnn.cli.executor_args, edgecnn.train.task; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ValueError, match=r"needs Ray, which is not installed: pip install 'edgecnn\[ray\]'"):
        Executor("ray").workers
    assert Executor("serial").map(square_later, JOBS[:2]) == [0, 1]


def test_bad_executor_arguments() -> None:
    with pytest.raises(ValueError, match="unknown executor 'dask'; valid: local, serial, ray"):
        Executor("dask")
    with pytest.raises(ValueError, match="3 names for 2 tasks"):
        Executor("serial").map(square_later, JOBS[:2], names=["a", "b", "c"])
