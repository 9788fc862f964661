"""Class 4 of issue 13 — faults on a real process: kill -9 mid-write, SIGTERM mid-training.

Each test starts ``python -m edgecnn.cli.main`` (or a two-line writer) as a
subprocess on one thread and signals it; a tiny network on digits at 8 px
keeps each to a few seconds after the interpreter has started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hostile import TINY, TRAIN, cli, cli_env

from edgecnn.atomic import atomic_write_text, clean_stale
from edgecnn.checkpoint import load_checkpoint
from edgecnn.cli.main import main

_SLOW_WRITER = """
import sys, time
from edgecnn.atomic import atomic_write
def write(f):
    f.write(b"x" * 1000); f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


def _training(out: Path) -> subprocess.Popen[str]:
    """A long training run in a subprocess, returned once its first checkpoint is written."""
    proc = subprocess.Popen(cli("train", TINY, *TRAIN, "--epochs", "400", "--out", str(out)), env=cli_env(),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for(out / "last.pt", proc)
    return proc


def test_kill_9_mid_write_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    target.write_text("the previous checkpoint")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], env=cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".last.pt.{proc.pid}.")
    assert target.read_text() == "the previous checkpoint"  # never half a file
    atomic_write_text(target, "the next checkpoint")  # the next write of the target removes the dead one's file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert target.read_text() == "the next checkpoint"


def test_a_live_writers_temporary_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / f".last.pt.{os.getppid()}.abcd.tmp"  # the parent process is alive
    mine.write_text("in progress")
    assert clean_stale(tmp_path) == [] and mine.exists()


def test_kill_9_mid_training_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _training(out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    ck = load_checkpoint(out / "last.pt")  # whole: the writes are atomic
    assert 1 <= ck.epoch < 400
    assert main(["train", TINY, *TRAIN, "--epochs", str(ck.epoch + 1), "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / "last.pt").epoch == ck.epoch + 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_saves_like_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _training(out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted;" in err and "add --resume to continue" in err
    ck = load_checkpoint(out / "last.pt")
    assert ck.batch >= 1  # saved after the step the signal interrupted, mid-epoch (epoch ends save batch 0)
    assert ck.partial["n"] > 0  # with the interrupted epoch's running sums, as Ctrl-C saves
