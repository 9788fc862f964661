"""Class 3 of issue 13 — output problems are found first and never leave half a file.

A read-only file system and a full disk are simulated (the tests run as root,
so file modes stop nothing): a path through a regular file, a path under
/proc, and ``os.fsync`` / ``tempfile.mkstemp`` / ``torch.save`` monkeypatched to
fail as a full or read-only disk does.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hostile import TINY, TRAIN, refused

import edgecnn.atomic
import edgecnn.run_folder
from edgecnn.atomic import atomic_write_text
from edgecnn.checkpoint import load_checkpoint
from edgecnn.cli.main import main


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(edgecnn.atomic.os, "fsync", fsync)


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def mkstemp(*args: object, **kw: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(edgecnn.run_folder.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(edgecnn.atomic.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("out, message", [
    ("file/sub", "cannot be created: {tmp}/file is a file, not a folder"),
    ("file", "run folder (--out) {tmp}/file is a file, not a folder"),
    ("/proc/edgecnn-run", "run folder (--out) /proc/edgecnn-run is not writable"),
])  # fmt: skip
def test_unwritable_out_is_found_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str,
                                                 message: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "file").write_text("keep me")
    import edgecnn.cli.train_cmd

    def no_data(*a: object, **k: object) -> None:
        raise AssertionError("the data was loaded before the output was checked")

    monkeypatch.setattr(edgecnn.cli.train_cmd, "load_data", no_data)
    target = out if out.startswith("/") else str(tmp_path / out)
    refused(["train", TINY, *TRAIN, "--out", target], message.format(tmp=tmp_path), capsys, tmp_path)


def test_read_only_file_system_is_found_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _read_only(monkeypatch)
    refused(["train", TINY, *TRAIN, "--out", str(tmp_path / "r")], "is not writable (Read-only file system)",
            capsys, tmp_path)  # fmt: skip


def test_full_disk_during_training_keeps_the_previous_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = tmp_path / "r"
    assert main(["train", TINY, *TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    _full_disk(monkeypatch)
    refused(["train", TINY, *TRAIN, "--epochs", "2", "--out", str(out), "--resume"],
            f"cannot write {out}/last.pt: No space left on device", capsys, out)  # fmt: skip
    assert load_checkpoint(out / "last.pt").epoch == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_torch_save_failing_mid_stream_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import edgecnn.checkpoint

    def save(obj: object, f: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(edgecnn.checkpoint.torch, "save", save)
    refused(["train", TINY, *TRAIN, "--epochs", "1", "--out", str(tmp_path / "r")],
            "last.pt: the write failed part-way (is the disk full?)", capsys, tmp_path)  # fmt: skip


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_analyze_reports_are_atomic(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, flag: str) -> None:  # fmt: skip
    report = tmp_path / "report"
    report.write_text("the previous report\n")
    _full_disk(monkeypatch)
    refused(["analyze", TINY, flag, str(report)], f"cannot write {report}: No space left on device", capsys, tmp_path)
    assert report.read_text() == "the previous report\n"


@pytest.mark.parametrize("argv", [
    ["analyze", TINY, "--json", "{tmp}/file/a.json"],
    ["analyze", TINY, "--markdown", "{tmp}/file/a.md"],
    ["train", TINY, *TRAIN, "--out", "{tmp}/r", "--json", "{tmp}/file/r.json"],
    ["latency", "build-table", "--table", "{tmp}/file/t.json", "--models", TINY],
    ["latency", TINY, "--json", "{tmp}/file/m.json"],
    ["demo", "--model", TINY, "--out", "{tmp}/file/demo"],
])  # fmt: skip
def test_every_output_flag_is_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            argv: list[str]) -> None:  # fmt: skip
    (tmp_path / "file").write_text("keep me")
    argv = [a.format(tmp=tmp_path) for a in argv]
    refused(argv, f"{tmp_path}/file is a file, not a folder", capsys, tmp_path)


def test_atomic_write_error_names_the_file_and_keeps_the_old_one(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    target = tmp_path / "t.json"
    target.write_text("old")
    _full_disk(monkeypatch)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device") as exc:
        atomic_write_text(target, "new")
    assert exc.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["t.json"]
