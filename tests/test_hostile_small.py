"""Class 8 of issue 13 — the small ones, plus one-class data and batch-job logging.

(A folder passed as a checkpoint, a tampered data cache and the BytesIO repr in
skipped-image warnings are in test_hostile_documents.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile import TINY, TRAIN, refused
from PIL import Image

from edgecnn import zoo
from edgecnn.cli.main import main


def test_padskip_is_not_offered_where_it_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = refused(["analyze", "conv_c16 ir_c16_padskip gap fc"], "'ir' takes no flag 'padskip'", capsys, tmp_path)
    valid = err.split("valid: ")[1].split(", ")
    assert "noskip" in valid and not any("padskip" in v for v in valid)
    assert main(["analyze", "conv_c16 basic_c16_padskip gap fc", "-q"]) == 0  # where it is valid, it works


def test_list_arch_prints_whole_copyable_strings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--arch"]) == 0
    out = capsys.readouterr().out
    for name in zoo.names():
        assert f"{name}: {zoo.arch_of(name)}\n" in out  # on one line, uncut


def test_demo_with_an_unknown_model_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(["demo", "--model", "nope", "--out", str(tmp_path / "demo")], "unknown model 'nope'", capsys, tmp_path)
    assert not (tmp_path / "demo").exists()


def test_analyze_width_is_never_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(["analyze", TINY, "--width", "0.5"], "--width applies to zoo models only", capsys, tmp_path)
    assert main(["analyze", "mobilenet_v2", "--width", "0.5", "-q"]) == 0
    half = capsys.readouterr().out
    assert main(["analyze", "mobilenet_v2", "-q"]) == 0
    assert half != capsys.readouterr().out  # the width changed the counts


def test_no_progress_still_logs_one_line_per_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", TINY, *TRAIN, "--epochs", "2", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in err if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]


def test_one_class_data_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "cat").mkdir(parents=True)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "data" / "cat" / f"{i}.png")
    argv = ["train", TINY, "--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "4", "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "has a single class ('cat'): every prediction is right" in err
