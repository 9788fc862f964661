"""``edgecnn compress`` under hostile conditions: re-runs, tampered NetAdapt states, broken ``--model`` code,
absurd numbers and budgets, unwritable outputs, and a kill -9 mid-NetAdapt.

Every refusal is checked the hostile way (``tests/hostile.py``): exit code 2,
one line on stderr naming the problem, and the files present before unchanged.
A tiny network on digits at 8 px keeps a whole NetAdapt run to seconds.
"""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hostile import cli, cli_env, refused, snapshot

import edgecnn.cli.compress_cmd
import edgecnn.compress.job
from edgecnn.build import build
from edgecnn.checkpoint import checkpoint_of, save_checkpoint
from edgecnn.cli.main import main
from edgecnn.compress.netadapt.state import STATE_FILE, load_state
from edgecnn.run_document import read_results
from edgecnn.train.config import FINETUNE
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, worker_data

NET = "conv_k3_c16 ir_s2_e3_c16 ir_c16 gap fc"
# a NetAdapt run of two or three iterations in a few seconds
FAST = ["--data", "digits", "--workers", "0", "--round-to", "4", "--short-steps", "1", "--top-k", "1",
        "--initial-step", "0.25", "--long-epochs", "0", "--batch-size", "64", "--threads", "1", "--no-progress"]
BUDGET = ["--budget", "60%macs"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Tiny convolutions: one torch thread is as fast, and does not collapse when other processes hold the cores."""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of NET, trained a few steps on digits at 8 px."""
    torch.manual_seed(0)
    model = build(NET, num_classes=10, in_chans=1)
    finetune(model, worker_data(DataRef("digits", image_size=8)), steps=5, config=FINETUNE)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(checkpoint_of(model, data={"name": "digits", "image_size": 8}), path)
    return path


@pytest.fixture(scope="module")
def done(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished NetAdapt run folder: model.pt, results.json, netadapt_state.pt."""
    out = tmp_path_factory.mktemp("done") / "run"
    assert main(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out)]) == 0
    return out


def _copy(done: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(done, out)
    return out


# ------------------------------------------------------------------------------------------------ re-runs
@pytest.mark.parametrize("method", ["netadapt", "prune"])
def test_rerun_into_a_used_folder_is_refused(ckpt: Path, done: Path, method: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--method", method, "--out", str(done)],
            f"{done} already holds a previous run (model.pt, results.json); pass --resume to continue it, "
            "--overwrite to replace it, or another --out", capsys, done)  # fmt: skip


def test_a_killed_runs_state_alone_is_protected(ckpt: Path, done: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "killed"
    out.mkdir()
    shutil.copy(done / STATE_FILE, out / STATE_FILE)  # what a run killed mid-NetAdapt leaves
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out)],
            f"{out} already holds a previous run ({STATE_FILE}); pass --resume to continue it, --overwrite",
            capsys, out)  # fmt: skip


def test_overwrite_replaces_and_resume_continues(ckpt: Path, done: Path, tmp_path: Path) -> None:
    out = _copy(done, tmp_path)
    before = read_results(out)
    assert main(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out), "--resume"]) == 0
    assert read_results(out)["history"] == before["history"]  # a finished run: nothing left to do, nothing lost
    assert main(["compress", str(ckpt), *BUDGET, *FAST, "--method", "prune", "--out", str(out), "--overwrite"]) == 0
    assert read_results(out)["method"] == "prune"


def test_resume_needs_a_state_and_one_choice(ckpt: Path, done: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    new = tmp_path / "new"
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(new), "--resume"],
            f"nothing to resume: {new / STATE_FILE} does not exist; drop --resume to start afresh", capsys, tmp_path)
    assert not new.exists()
    out = _copy(done, tmp_path)
    (out / STATE_FILE).unlink()  # a finished run whose state is gone: only --overwrite starts afresh there
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out), "--resume"],
            "drop --resume to start afresh (with --overwrite: --out holds a previous run)", capsys, out)  # fmt: skip
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out), "--resume", "--overwrite"],
            "pass one of them", capsys, out)  # fmt: skip
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out), "--resume", "--method", "prune"],
            "--resume continues a NetAdapt run (its netadapt_state.pt); --method prune runs in one go", capsys, out)


# ---------------------------------------------------------------------------------------- tampered states
def _fabricate(st: dict[str, Any]) -> None:
    fake = dict(st["history"][-1], iteration=999)
    st["history"].append(fake)


def _nan_weight(st: dict[str, Any]) -> None:
    k = next(iter(st["state_dict"]))
    st["state_dict"][k] = torch.full_like(st["state_dict"][k], math.nan)


def _wrong_shape(st: dict[str, Any]) -> None:
    k = next(iter(st["state_dict"]))
    st["state_dict"][k] = torch.zeros(3)


TAMPERED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("fabricated iteration", _fabricate, "field 'history[{n}].iteration' must be {m} (iterations are numbered 1, 2"),
    ("string for a number", lambda st: st.update(start_top1="high"),
     "field 'start_top1' must be a finite number >= 0, got 'high'"),
    ("top1 above 1", lambda st: st["history"][0].update(top1=7.0), "field 'history[0].top1' must be a fraction"),
    ("missing history field", lambda st: st["history"][0].pop("resource"),
     "field 'history[0]' must be a dict of exactly iteration, target, resource"),
    ("history not a list", lambda st: st.update(history="all good"), "field 'history' must be a list"),
    ("iteration over its bound", lambda st: st["history"][0].update(resource=st["history"][0]["target"] * 2),
     "field 'history[0].resource' must be at most the step's bound"),
    ("arch not the last iteration's", lambda st: st.update(arch="conv_c8 gap fc"),
     "field 'arch' must be the last iteration's arch"),
    ("arch not a string", lambda st: st.update(arch=5), "field 'arch' must be a string, got 5"),
    ("arch that does not build", lambda st: (st.update(arch="conv_c0 gap fc"),
                                            st["history"][-1].update(arch="conv_c0 gap fc")),
     "field 'arch' 'conv_c0 gap fc' does not build"),
    ("weights a list", lambda st: st.update(state_dict=[1, 2]), "field 'state_dict' must be a dict of tensors"),
    ("NaN weights", _nan_weight, "field 'state_dict[", ),
    ("weights of another shape", _wrong_shape, "field 'state_dict' does not fit the rebuilt network"),
    ("settings gone", lambda st: st.pop("settings"),
     "field 'settings' is missing: the state was written by an older edgecnn"),
    ("settings not a dict", lambda st: st.update(settings=[]), "field 'settings' must be a dict with string keys"),
    ("budget of another resource", lambda st: st["settings"]["budget"].update(resource="joules"),
     "field 'settings.budget.resource' must be one of latency, macs, params, got 'joules'"),
    ("round_to a string", lambda st: st["settings"].update(round_to="4"),
     "field 'settings.round_to' must be an integer, got '4'"),
    ("another start network", lambda st: st.update(start_arch="conv_c8 gap fc"),
     "field 'start_arch': the state continues another network ('conv_c8 gap fc', not"),
]


@pytest.mark.parametrize("tamper, message", [(t, m) for _, t, m in TAMPERED], ids=[n for n, _, _ in TAMPERED])
def test_a_tampered_state_is_named_field_by_field(ckpt: Path, done: Path, tmp_path: Path, capsys:
                                                  pytest.CaptureFixture[str], tamper: Callable[[dict[str, Any]], None],
                                                  message: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = _copy(done, tmp_path)
    st = torch.load(out / STATE_FILE, weights_only=True)
    n = len(st["history"])
    tamper(st)
    torch.save(st, out / STATE_FILE)

    def no_data(*a: object, **k: object) -> None:
        raise AssertionError("the data was loaded before the state was checked")

    monkeypatch.setattr(edgecnn.cli.compress_cmd, "worker_data", no_data)
    err = refused(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out), "--resume"],
                  message.format(n=n, m=n + 1), capsys, out)  # fmt: skip
    assert f"{out / STATE_FILE}: field '" in err  # the file and the field


@pytest.mark.parametrize("content, message", [
    (b"\x00not a zip", "is not a readable NetAdapt state (UnpicklingError)"),
    (None, "is not a NetAdapt state"),
])  # fmt: skip
def test_a_foreign_or_damaged_state_file(ckpt: Path, done: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         content: bytes | None, message: str) -> None:  # fmt: skip
    out = _copy(done, tmp_path)
    if content is None:
        torch.save({"weights": torch.zeros(2)}, out / STATE_FILE)
    else:
        (out / STATE_FILE).write_bytes(content)
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out), "--resume"], message, capsys, out)


def test_a_pickled_payload_in_the_state_is_never_run(ckpt: Path, done: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import pickle

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (tmp_path / "pwned",))

    out = _copy(done, tmp_path)
    (out / STATE_FILE).write_bytes(pickle.dumps({"format": "edgecnn-netadapt-state", "x": Boom()}, protocol=2))
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out), "--resume"], "is not a readable NetAdapt",
            capsys, out)  # fmt: skip
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("argv, message", [
    (["--budget", "50%macs"], "field 'settings.budget': the run being resumed has budget '60%macs', this one "
                              "'50%macs'; resume with --budget 60%macs or start afresh with --overwrite"),
    (["--round-to", "8"], "field 'settings.round_to': the run being resumed has round_to 4, this one 8; resume "
                          "with --round-to 4"),
    (["--drop-blocks"], "has drop_blocks False, this one True; resume with no --drop-blocks"),
])  # fmt: skip
def test_resume_with_other_settings_is_refused(ckpt: Path, done: Path, tmp_path: Path, argv: list[str],
                                               message: str, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = _copy(done, tmp_path)
    refused(["compress", str(ckpt), *BUDGET, *FAST, *argv, "--out", str(out), "--resume"], message, capsys, out)


def test_resume_from_another_checkpoint_is_refused(done: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    other = tmp_path / "other.pt"
    save_checkpoint(checkpoint_of(build("conv_k3_c8 gap fc", num_classes=10, in_chans=1),
                                  data={"name": "digits", "image_size": 8}), other)  # fmt: skip
    out = _copy(done, tmp_path)
    refused(["compress", str(other), *BUDGET, *FAST, "--out", str(out), "--resume"],
            "field 'start_arch': the state continues another network", capsys, out)  # fmt: skip


# ---------------------------------------------------------------------------------------- --model code
BROKEN = {
    "raises at import": ("import torch\n\nx = 1\nraise RuntimeError('no GPU here')\n",
                         "importing {f} failed at {f} line 4: RuntimeError: no GPU here"),
    "does not parse": ("import torch\n\ndef build(:\n    pass\n", "importing {f} failed at {f} line 3: SyntaxError"),
    "raises in build": ("from torch import nn\n\n\ndef build():\n    return nn.Conv2d(1, 8, 3, bogus=1)\n",
                        "calling build() failed at {f} line 5: TypeError:"),
    "missing dependency": ("import no_such_package_xyz\n", "importing {f} failed at {f} line 1: ModuleNotFoundError"),
    "exits at import": ("import sys\nsys.exit(3)\n", "importing {f} failed at {f} line 2: SystemExit: 3"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_model_code_is_one_line_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          name: str) -> None:  # fmt: skip
    code, message = BROKEN[name]
    net = tmp_path / "net.py"
    net.write_text(code)
    err = refused(["compress", str(tmp_path / "w.pt"), "--model", f"{net}:build", *BUDGET, *FAST, "--out",
                   str(tmp_path / "run")], message.format(f=net), capsys, net)  # fmt: skip
    assert "`edgecnn --debug compress ...` shows the traceback" in err
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_user_codes_traceback(tmp_path: Path) -> None:
    net = tmp_path / "net.py"
    net.write_text(BROKEN["raises in build"][0])
    with pytest.raises(ValueError, match="calling build\\(\\) failed") as info:
        main(["--debug", "compress", "w.pt", "--model", f"{net}:build", *BUDGET, *FAST, "--out", str(tmp_path / "r")])
    cause = info.value.__cause__  # the traceback --debug prints ends in the user's own line
    assert isinstance(cause, TypeError)
    import traceback

    assert any(fr.filename == str(net) and fr.lineno == 5 for fr in traceback.extract_tb(cause.__traceback__))


# ------------------------------------------------------------------------------------- numbers and budgets
NUMBERS = [
    (["--threads", "0"], "argument --threads: must be a thread count in [1, 4,096], got 0"),
    (["--image-size", "0"], "argument --image-size: must be a positive integer, got 0"),
    (["--long-epochs", "nan"], "argument --long-epochs: expected a finite number, got 'nan'"),
    (["--long-epochs", "1e9"], "argument --long-epochs: 1e+09 epochs exceed the limit of 10,000; raise it with "
                               "EDGECNN_MAX_EPOCHS=N"),
    (["--long-epochs", "-1"], "argument --long-epochs: must be >= 0, got -1"),
    (["--short-steps", "-1"], "argument --short-steps: must be an integer >= 0, got -1"),
    (["--short-steps", "1000000000"], "argument --short-steps: 1,000,000,000 steps exceed the limit"),
    (["--top-k", "0"], "argument --top-k: must be a positive integer, got 0"),
    (["--round-to", "0"], "argument --round-to: must be a positive integer, got 0"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--lr", "0"], "argument --lr: must be > 0, got 0"),
    (["--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    (["--initial-step", "0"], "argument --initial-step: must be in (0, 1), got 0"),
    (["--initial-step", "1"], "argument --initial-step: must be in (0, 1), got 1"),
    (["--decay", "0"], "argument --decay: must be in (0, 1], got 0"),
    (["--limit", "0"], "argument --limit: must be a positive integer, got 0"),
    (["--method", "magic"], "argument --method: invalid choice: 'magic'"),
    (["--criterion", "vibes"], "argument --criterion: invalid choice: 'vibes'"),
    (["--criterion", "taylor"], "argument --criterion: invalid choice: 'taylor' (choose from 'l1'"),
]
BUDGETS = [
    ("0%", "a relative budget is a percentage in (0, 100)"),
    ("150%", "a relative budget is a percentage in (0, 100)"),
    ("0%macs", "a relative budget is a percentage in (0, 100)"),
    ("150%latency", "a relative budget is a percentage in (0, 100)"),
    ("50%", "say which resource the percentage is of"),
    ("-5ms", "budget '-5ms' must be a positive finite number of ms"),
    ("0ms", "budget '0ms' must be a positive finite number of ms"),
    ("nan", "budget 'nan' is not a finite number"),
    ("inf", "budget 'inf' is not a finite number"),
    ("nanms", "budget 'nanms' must be a positive finite number"),
    ("infmacs", "budget 'infmacs' must be a positive finite number"),
    ("5", "budget '5' is not understood: it has no unit"),
]


@pytest.mark.parametrize("argv, message", NUMBERS + [([f"--budget={b}"], m) for b, m in BUDGETS],
                         ids=[" ".join(a) for a, _ in NUMBERS] + [f"--budget={b}" for b, _ in BUDGETS])  # fmt: skip
def test_bad_numbers_are_refused_before_any_work(ckpt: Path, tmp_path: Path, argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "before.txt").write_text("kept")
    refused(["compress", str(ckpt), *BUDGET, *FAST, *argv], message, capsys, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.txt"]  # no run folder


# --------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("flag, path, message", [
    ("--out", "file/sub", "run folder (--out) {tmp}/file/sub cannot be created: {tmp}/file is a file, not a folder"),
    ("--out", "/proc/edgecnn-run", "run folder (--out) /proc/edgecnn-run is not writable"),
    ("--latency-table", "/proc/t.json", "--latency-table /proc/t.json is not writable"),
])  # fmt: skip
def test_unwritable_output_is_found_before_any_work(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    flag: str, path: str, message: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "file").write_text("keep me")

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(edgecnn.cli.compress_cmd, "load_model", no_work)
    monkeypatch.setattr(edgecnn.cli.compress_cmd, "worker_data", no_work)
    target = path if path.startswith("/") else str(tmp_path / path)
    extra = [] if flag == "--out" else ["--out", str(tmp_path / "run")]
    budget = ["--budget", "50%latency"] if flag == "--latency-table" else BUDGET
    refused(["compress", str(ckpt), *budget, *FAST, flag, target, *extra], message.format(tmp=tmp_path), capsys,
            tmp_path)  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_full_disk_at_the_end_keeps_the_previous_run(ckpt: Path, done: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import errno
    import os

    import edgecnn.atomic

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = _copy(done, tmp_path)
    monkeypatch.setattr(edgecnn.atomic.os, "fsync", fsync)  # every write fails as on a full disk
    refused(["compress", str(ckpt), *BUDGET, *FAST, "--method", "prune", "--out", str(out), "--overwrite"],
            f"cannot write {out / 'model.pt'}: No space left on device", capsys, out)  # fmt: skip
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_netadapt_says_how_to_resume(ckpt: Path, done: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = tmp_path / "run"

    def interrupted(*a: object, **k: object) -> None:  # Ctrl-C (or SIGTERM) after iteration 1 was saved
        out.mkdir()
        shutil.copy(done / STATE_FILE, out / STATE_FILE)
        raise KeyboardInterrupt

    monkeypatch.setattr(edgecnn.compress.job, "netadapt", interrupted)
    capsys.readouterr()
    assert main(["compress", str(ckpt), *BUDGET, *FAST, "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"edgecnn compress: interrupted; {out / STATE_FILE} holds the finished iterations: add --resume to continue")


# ------------------------------------------------------------------------------------ kill -9 and resume
def test_kill_9_mid_netadapt_then_resume_keeps_every_finished_iteration(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # a lower budget and smaller steps than `done`: about three iterations, so the kill lands mid-NetAdapt
    slow = ["--budget", "45%macs", *FAST, "--initial-step", "0.12", "--out", str(out)]
    proc = subprocess.Popen(cli("compress", str(ckpt), *slow), env=cli_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    state = out / STATE_FILE
    t0 = time.monotonic()
    while not state.exists():  # the first finished iteration writes it
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < 180, "no iteration finished"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    kept = load_state(state)["history"]  # whole (atomic writes): every iteration finished before the kill
    assert len(kept) >= 1 and not (out / "results.json").exists()
    before = snapshot(out)
    assert main(["compress", str(ckpt), *slow, "--resume"]) == 0
    history = read_results(out)["history"]
    assert history[: len(kept)] == kept  # the same entries, seconds included: nothing redone
    assert len(history) > len(kept) and [h["iteration"] for h in history] == list(range(1, len(history) + 1))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert set(before) <= set(str(p) for p in out.iterdir())


# ------------------------------------------------------------------------- module networks: replay records
def _module_net() -> torch.nn.Module:
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))  # fmt: skip


@pytest.mark.parametrize("group, width, message", [
    (99, 4, "field 'history' does not replay on this network (step 1 prunes channel group 99, but the network has"),
    (0, 999, "field 'history' does not replay on this network (step 1 keeps 999 channels of group 0, which has 8)"),
])  # fmt: skip
def test_a_module_networks_history_must_replay(group: int, width: int, message: str) -> None:
    from edgecnn.compress.resource_meter import network_key
    from edgecnn.compress.netadapt.state import restore

    model = _module_net()
    st = {"start_arch": network_key(model), "history": [{"group": group, "width_after": width}], "state_dict": {}}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        restore(model, st, (1, 8, 8), round_to=4)


@pytest.mark.parametrize("record, field", [
    ({"steps": [["x"]], "round_to": 4, "input_shape": [1, 8, 8]}, "config.compress.steps[0]"),
    ({"steps": [[[0, "four"]]], "round_to": 4, "input_shape": [1, 8, 8]}, "config.compress.steps[0]"),
    ({"steps": [[[0, 4]]], "round_to": 0, "input_shape": [1, 8, 8]}, "config.compress.round_to"),
    ({"steps": [[[0, 4]]], "round_to": 4, "input_shape": [1, 8]}, "config.compress.input_shape"),
    ({"steps": [[[7, 4]]], "round_to": 4, "input_shape": [1, 8, 8]}, "config.compress.steps' does not replay"),
])  # fmt: skip
def test_a_tampered_pruning_record_is_named(tmp_path: Path, record: dict[str, Any], field: str) -> None:
    from edgecnn.compress.netadapt.state import load_pruned

    model = _module_net()
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint_of(model, config={"compress": {"method": "prune", **record}}), path)
    with pytest.raises(ValueError) as info:
        load_pruned(path, _module_net())
    assert str(info.value).startswith(f"{path}: field '{field}")
