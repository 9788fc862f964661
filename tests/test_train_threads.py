"""``TrainConfig(threads="auto")``: the thread count follows the cores other work leaves free.

The arithmetic is checked on hand-written ``/proc/stat`` texts and clocks; the governor and ``fit`` on a fake
``/proc/stat`` whose counters we advance; the real counters against a busy child process (Linux only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from edgecnn.build import build
from edgecnn.cli.main import main
from edgecnn.data import load_digits
from edgecnn.train import TrainConfig, fit
from edgecnn.train import threads as th

STAT = """cpu  400 20 100 9000 40 10 10 4 0 0
cpu0 100 10 50 1000 20 5 5 2 0 0
cpu1 300 10 50 8000 20 5 5 2 0 0
intr 12345 0 0
ctxt 999
"""


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    monkeypatch.setattr(th, "_recent", {})  # no look of another test is taken over
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_busy_seconds_sum_user_nice_system_irq_softirq_steal_of_our_cpus_only():
    # cpu0: 100 + 10 + 50 + 5 + 5 + 2 = 172 ticks busy (idle 1000 and iowait 20 are not); the "cpu" total is skipped
    assert th._busy_seconds(STAT, [0], ticks=100) == pytest.approx(1.72)
    assert th._busy_seconds(STAT, [1], ticks=100) == pytest.approx(3.72)  # 300 + 10 + 50 + 5 + 5 + 2
    assert th._busy_seconds(STAT, [0, 1], ticks=100) == pytest.approx(5.44)
    assert th._busy_seconds(STAT, [7], ticks=100) == 0  # a CPU not in the file


def test_others_busy_is_all_busy_time_less_our_own_per_second():
    before, after = th.CpuSample(at=10.0, busy_s=50.0, own_s=4.0), th.CpuSample(at=12.0, busy_s=53.0, own_s=4.5)
    assert th.others_busy(before, after) == pytest.approx((3.0 - 0.5) / 2)  # 1.25 cores kept busy by others
    assert th.others_busy(after, after) == 0.0  # an empty interval
    assert th.others_busy(before, replace(after, own_s=8.0)) == 0.0  # never negative (clock granularity)


@pytest.mark.parametrize(("cores", "others", "want"), [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.5, 1), (2, 0.9, 1), (2, 1.8, 1), (2, 3.0, 1),
    (1, 0.0, 1), (16, 3.2, 13), (16, 0.49, 16), (4, 2.5, 1),
])  # fmt: skip
def test_fitting_threads_are_the_free_cores_at_least_one(cores, others, want):
    assert th.fitting_threads(cores, others) == want


class _Clock:
    """A fake ``/proc/stat`` on two CPUs, a monotonic clock and this process's CPU time, advanced by hand."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path, self.t, self.busy, self.own = tmp_path / "stat", 100.0, [0, 0], 0.0
        self.tick = os.sysconf("SC_CLK_TCK")
        monkeypatch.setattr(th, "_clock", lambda: self.t)
        monkeypatch.setattr(th, "_sleep", lambda s: self.advance(s, self.others))
        monkeypatch.setattr(th, "_times", lambda: SimpleNamespace(user=self.own, system=0.0))
        self.others, self.ours = 0.0, 0.0  # cores busy with other work, and with ours
        self.write()

    def write(self) -> None:
        lines = [f"cpu{i} {b} 0 0 1000 0 0 0 0 0 0" for i, b in enumerate(self.busy)]
        self.path.write_text("cpu  0 0 0 0 0 0 0 0 0 0\n" + "\n".join(lines) + "\n")

    def advance(self, seconds: float, others: float, ours: float | None = None) -> None:
        self.others, ours = others, self.ours if ours is None else ours
        self.ours = ours
        ticks = round((others + ours) * seconds * self.tick)
        self.busy[0] += ticks // 2
        self.busy[1] += ticks - ticks // 2
        self.own += ours * seconds
        self.t += seconds
        self.write()


def test_governor_drops_to_the_free_cores_and_comes_back_when_the_other_work_ends(tmp_path, monkeypatch):
    clock = _Clock(tmp_path, monkeypatch)
    torch.set_num_threads(2)
    gov = th.ThreadGovernor(interval_s=5.0, cpus=[0, 1], stat=clock.path)
    clock.others = 1.0  # another process keeps one core busy before we start
    assert gov.start(step=0) == 1 and torch.get_num_threads() == 1
    clock.advance(3.0, others=1.0, ours=1.0)
    gov.tick(step=10)  # 3 s < 5 s: not looked at again
    assert gov.changes == [(0, 1, 1.0)]
    clock.advance(3.0, others=0.0, ours=1.0)  # the other work ended 3 s ago: half a core busy over the 6 s
    gov.tick(step=20)
    assert torch.get_num_threads() == 1 and gov.changes == [(0, 1, 1.0)]  # 0.5 counts as one busy core
    clock.advance(6.0, others=0.0, ours=1.0)
    gov.tick(step=30)
    assert torch.get_num_threads() == 2 and gov.changes[-1] == (30, 2, 0.0)
    clock.advance(6.0, others=0.7, ours=1.3)  # 2 of ours and 1 other thread on 2 cores: the other gets 0.7
    gov.tick(step=40)
    assert torch.get_num_threads() == 1 and gov.changes[-1] == (40, 1, 0.7)


def test_a_fit_right_after_another_takes_its_look_without_waiting_and_looks_again_later(tmp_path, monkeypatch):
    clock = _Clock(tmp_path, monkeypatch)
    clock.others = 1.0
    torch.set_num_threads(2)
    first = th.ThreadGovernor(cpus=[0, 1], stat=clock.path)
    assert first.start() == 1 and clock.t == 100.0 + th.FIRST_LOOK_S  # the first look waited
    clock.advance(2.0, others=0.0, ours=1.0)  # a short fine-tune of 2 s, then the next one starts
    torch.set_num_threads(2)
    second = th.ThreadGovernor(cpus=[0, 1], stat=clock.path)
    assert second.start(step=7) == 1 and torch.get_num_threads() == 1 and second.changes == [(7, 1, 1.0)]
    assert clock.t == 100.0 + th.FIRST_LOOK_S + 2.0  # no wait: the look 2 s ago stands
    clock.advance(6.0, others=0.0, ours=1.0)
    third = th.ThreadGovernor(cpus=[0, 1], stat=clock.path)
    assert third.start() == 2  # 8 s later: a look of its own (the other work has ended)
    t = clock.t
    th.ThreadGovernor(cpus=[0], stat=clock.path).start()
    assert clock.t == t + th.FIRST_LOOK_S  # other CPUs: not the same look, so one of its own


def test_governor_leaves_the_count_where_there_are_no_counters(tmp_path):
    torch.set_num_threads(2)
    gov = th.ThreadGovernor(cpus=[0, 1], stat=tmp_path / "no-such-file")
    assert gov.start() == 2 and gov.changes == []
    gov.tick(step=1)
    assert torch.get_num_threads() == 2


def test_fit_with_auto_threads_trains_on_the_free_cores_records_them_and_restores_the_count(tmp_path, monkeypatch):
    clock = _Clock(tmp_path, monkeypatch)
    clock.others = 1.0
    monkeypatch.setattr(th, "available_cpus", lambda: [0, 1])
    real = th.sample_cpu
    monkeypatch.setattr(th, "sample_cpu", lambda cpus, stat=None: real(cpus, clock.path))
    torch.set_num_threads(2)
    data = load_digits(image_size=16, limit=20)
    torch.manual_seed(0)
    net = build("conv_k3_c8 gap fc", num_classes=10, in_chans=1)
    res = fit(net, data, TrainConfig(epochs=2, batch_size=64, threads="auto", progress=False, eval_every=0))
    assert [h.threads for h in res.history] == [1, 1]  # one core was busy: 1 thread, not 2
    assert torch.get_num_threads() == 2  # the process is left as it was
    fixed = fit(net, data, TrainConfig(epochs=1, batch_size=64, threads=1, progress=False, eval_every=0))
    assert fixed.history[0].threads is None  # a fixed count is not "auto": nothing recorded


def test_threads_config_accepts_a_count_or_auto_and_names_both_on_error():
    assert TrainConfig(threads="auto").threads == "auto"
    with pytest.raises(ValueError, match=r"threads must be a positive integer .*'auto'.*got 'two'"):
        TrainConfig(threads="two")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        TrainConfig(threads=0)


def test_cli_train_threads_auto_is_the_default_and_a_bad_count_is_refused(tmp_path, capsys):
    assert main(["train", "conv_k3_c8 gap fc", "--threads", "0", "--out", str(tmp_path / "r")]) == 2
    assert "argument --threads: must be a thread count in [1, 4,096], got 0" in capsys.readouterr().err
    rc = main(["train", "conv_k3_c8 gap fc", "--epochs", "1", "--limit", "10", "--batch-size", "32", "--image-size", "16",
               "--no-progress", "--out", str(tmp_path / "r")])  # fmt: skip
    epoch_line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("epoch 1/1"))
    assert rc == 0 and epoch_line.endswith((" 1 thread", " 2 threads"))  # auto, by default: the count it chose


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="no /proc/stat (not Linux)")
def test_real_counters_see_a_busy_child_process():
    cpus = th.available_cpus()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        before = th.sample_cpu(cpus)
        time.sleep(1.0)
        after = th.sample_cpu(cpus)
    finally:
        child.kill()
        child.wait()
    assert before is not None and after is not None
    assert 0.5 <= th.others_busy(before, after) <= len(cpus) + 0.1  # the child's core (and whatever else runs)
