"""Shared helpers of the hostile-input tests (tests/test_hostile_*.py): run the CLI, snapshot files.

Every hostile case asserts three things: the exit code, that stderr is one
line holding the expected message, and that the files present before the
command are byte-identical after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgecnn
from edgecnn.cli.main import main

TINY = "conv_k3_s2_c8 gap fc"  # trains an epoch of digits at 8 px in well under a second
TRAIN = ["--data", "digits", "--image-size", "8", "--threads", "1", "--no-progress", "--eval-every", "0"]


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (hidden ones too) with its bytes."""
    out: dict[str, bytes] = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = root.read_bytes()
            continue
        for dirpath, _, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                out[str(p)] = p.read_bytes()
    return out


def refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str], *keep: Path) -> str:
    """Run ``edgecnn argv``; assert exit 2, one stderr line containing ``message``, ``keep`` unchanged.

    Training's one line per epoch (``epoch 1/2 ...``) may precede the error line.
    """
    before = snapshot(*keep)
    capsys.readouterr()
    rc = main(argv)
    err = "\n".join(line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("epoch "))
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert message in err, err
    assert snapshot(*keep) == before, "a refused command changed files"
    return err


def cli_env() -> dict[str, str]:
    """Environment for a subprocess running this checkout's edgecnn on one thread."""
    src = str(Path(edgecnn.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}  # fmt: skip


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgecnn.cli.main", *args]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout)
