"""Class 1 of issue 13 — nothing lost on a re-run: a used run folder needs --resume or --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import TINY, TRAIN, refused, snapshot

from edgecnn.checkpoint import load_checkpoint
from edgecnn.cli.main import main
from edgecnn.data import load_digits
from edgecnn.demo import DemoConfig, run_demo
from edgecnn.train import TrainConfig, fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", TINY, *TRAIN, "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_rerun_with_fewer_epochs_keeps_the_longer_run(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = "already holds a previous run (last.pt, results.json); pass --resume to continue it, --overwrite to replace it"
    refused(["train", TINY, *TRAIN, "--epochs", "1", "--out", str(trained)], msg, capsys, trained)
    assert load_checkpoint(trained / "last.pt").epoch == 2


def test_default_run_folder_is_protected_too(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["train", TINY, *TRAIN, "--epochs", "1"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    refused(["train", TINY, *TRAIN, "--epochs", "1"], "already holds a previous run", capsys, folder)


def test_overwrite_replaces_and_resume_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(["train", TINY, *TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    assert main(["train", TINY, *TRAIN, "--epochs", "2", "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / "last.pt").epoch == 2
    assert main(["train", TINY, *TRAIN, "--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert load_checkpoint(out / "last.pt").epoch == 1
    refused(["train", TINY, *TRAIN, "--out", str(out), "--resume", "--overwrite"], "pass one of them", capsys, out)
    refused(["train", TINY, *TRAIN, "--out", str(tmp_path / "new"), "--resume"], "nothing to resume", capsys, out)
    assert not (tmp_path / "new").exists()


def test_api_fit_refuses_a_used_folder(tmp_path: Path) -> None:
    from edgecnn.build import build

    data = load_digits(image_size=8)
    cfg = TrainConfig(epochs=1, progress=False, eval_every=0, threads=1)
    fit(build(TINY, num_classes=10, in_chans=1), data, cfg, out_dir=tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="already holds a previous run"):
        fit(build(TINY, num_classes=10, in_chans=1), data, cfg, out_dir=tmp_path)
    assert snapshot(tmp_path) == before
    fit(build(TINY, num_classes=10, in_chans=1), data, cfg, out_dir=tmp_path, overwrite=True)


def test_demo_rerun_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text('{"previous": true}')
    refused(["demo", "--model", TINY, "--epochs", "1", "--out", str(tmp_path)],
            "already holds a previous run (results.json)", capsys, tmp_path)  # fmt: skip
    with pytest.raises(FileExistsError):
        run_demo(DemoConfig(model=TINY, epochs=1, out_dir=str(tmp_path)))
