"""One run-folder policy for every command that writes one (docs/reliability.md §7), parametrised over the commands
so a new command cannot skip it: the folder is claimed before any work (an unwritable one is found at once), a
previous run is refused unless --resume/--overwrite and the refusal offers only options the command has, and
--resume with nothing to resume is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hostile import snapshot

from edgecnn.build import build
from edgecnn.checkpoint import checkpoint_of, save_checkpoint
from edgecnn.cli.main import build_parser, main

NET = "conv_k3_s2_c8 gap fc"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    meta = {"name": "digits", "classes": [str(i) for i in range(10)], "mean": [0.3], "std": [0.37], "image_size": 8}
    save_checkpoint(checkpoint_of(build(NET, num_classes=10, in_chans=1), data=meta), path)
    return path


def argv_of(command: str, ckpt: Path, out: Path) -> list[str]:
    """A valid invocation of ``command`` writing into ``out`` (cheap: the checks come before the work)."""
    return {
        "train": ["train", NET, "--data", "digits", "--image-size", "8", "--epochs", "1", "--threads", "1",
                  "--no-progress", "--out", str(out)],
        "demo": ["demo", "--out", str(out), "--no-compress", "--epochs", "1"],
        "compress": ["compress", str(ckpt), "--data", "digits", "--budget", "50%macs", "--method", "prune",
                     "--out", str(out)],
        "search": ["search", "--space", "mbv3-32", "--data", "digits", "--target", "3ms", "--out", str(out)],
        "explain": ["explain", str(ckpt), "--data", "digits", "--out", str(out)],
        "export": ["export", str(ckpt), "--out", str(out)],
        "analyze": ["analyze", NET, "--input", "1x8x8", "--out", str(out)],
    }[command]  # fmt: skip


COMMANDS = ("train", "demo", "compress", "search", "explain", "export", "analyze")


def options_of(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {s for a in sub.choices[command]._actions for s in a.option_strings}


def test_every_command_that_writes_a_run_folder_is_covered() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    writers = {name for name, p in sub.choices.items() if any("--out" in a.option_strings for a in p._actions)}
    assert writers - {"report", "latency", "rf-plan"} == set(COMMANDS)  # report/latency write files, not run folders


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unwritable_folder_is_refused_before_any_work(command: str, ckpt: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = snapshot(tmp_path)
    assert main(argv_of(command, ckpt, blocker / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker) in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_previous_run_is_refused_offering_only_existing_options(command: str, ckpt: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"kind": "previous"}\n')
    before = snapshot(tmp_path)
    assert main(argv_of(command, ckpt, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "previous" in err and "--overwrite" in err, err
    offered = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", err))
    assert offered <= options_of(command), (command, offered - options_of(command))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [c for c in COMMANDS if "--resume" in options_of(c)])
def test_resume_with_nothing_to_resume_is_refused(command: str, ckpt: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    argv = argv_of(command, ckpt, tmp_path / "empty")
    if command == "compress":
        argv = [a if a != "prune" else "netadapt" for a in argv]
        argv[argv.index("50%macs")] = "50%macs"
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to resume" in err, err
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


@pytest.mark.parametrize("command", ["compress", "search"])
@pytest.mark.parametrize(("option", "value"), [("--workers", "-1"), ("--workers", "1e9"), ("--workers", "nan"),
                                               ("--cpus-per-task", "0"), ("--cpus-per-task", "inf"),
                                               ("--gpus-per-task", "-1")])  # fmt: skip
def test_executor_options_are_typed(command: str, option: str, value: str, ckpt: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main([*argv_of(command, ckpt, tmp_path / "run"), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err, err
    assert not (tmp_path / "run").exists()
