"""Classes 5 and 6 of issue 13 — absurd numbers are refused up front; zero is never "not set".

Sizes are bounded by ``edgecnn.limits`` (each raisable by its environment
variable, which the last tests exercise); a command's memory is estimated from
the spec (``edgecnn.analysis.memory``) before anything is built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hostile import TINY, TRAIN, refused

from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.build import build, count_params
from edgecnn.cli.main import main
from edgecnn.analysis.memory import check_memory, estimate_memory
from edgecnn.plan import resolve

ABSURD = [
    (["analyze", "conv_r100000000_c16 gap fc"], "100,000,002 layers exceed the limit of 4,096"),
    (["analyze", "conv_c" + "9" * 400 + " gap fc"], "channels exceed the limit of 65,536"),
    (["analyze", TINY, "--input", "3x99999999999999999999x32"], "pixels exceed the limit of 8,192"),
    (["analyze", TINY, "--input", "70000x32x32"], "--input '70000x32x32': 70,000 channels exceed"),
    (["analyze", "conv_c16 ir_c16_e100000 gap fc"], "block 1 'ir_e100000_c16': 1,600,000 channels exceed"),
    (["analyze", "conv_k99999_c16 gap fc"], "kernel/stride/dilation: 99,999 pixels exceed"),
    (["rf-plan", "--target", "1000000", "--depth", "16"], "no stack of at most 16 layers"),
    (["rf-plan", "--target", "10", "--depth", "100000"], "argument --depth: must be a layer count in [1, 256]"),
    (["latency", TINY, "--input-size", "100000"], "argument --input-size: 100,000 pixels exceed the limit of 8,192"),
    (["list", "--width", "1e12"], "argument --width: must be in (0, 64], got 1e12"),
    (["train", "conv_c99999999 gap fc", *TRAIN], "99,999,999 channels exceed the limit of 65,536"),
    (["latency", "build-table", "--table", "{tmp}/t.json", "--models", "conv_c99999999 gap fc"], "channels exceed"),
    (["train", TINY, *TRAIN, "--image-size", "8192"], "digits at image_size 8192: 603 GB of memory (estimated) "
                                                       "exceed the limit of"),
]
ZERO = [
    (["analyze", TINY, "--num-classes", "0"], "argument --num-classes: must be a positive integer, got 0"),
    (["latency", TINY, "--input-size", "0"], "argument --input-size: must be a positive integer, got 0"),
    (["train", TINY, *TRAIN, "--image-size", "0"], "argument --image-size: must be a positive integer, got 0"),
    (["train", TINY, *TRAIN, "--threads", "0"], "argument --threads: must be a thread count in [1, 4,096], got 0"),
    (["train", TINY, *TRAIN, "--epochs", "-3"], "argument --epochs: must be a positive integer, got -3"),
    (["train", TINY, *TRAIN, "--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["train", TINY, *TRAIN, "--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["train", TINY, *TRAIN, "--label-smoothing", "1"], "argument --label-smoothing: must be in [0, 1), got 1"),
    (["latency", "validate", "--table", "t.json", "--time-cap", "-1"], "argument --time-cap: must be > 0, got -1"),
    (["latency", "build-table", "--table", "t.json", "--sample", "0"], "argument --sample: must be a positive"),
    (["eval", "x.pt", "--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["demo", "--threads", "0"], "argument --threads: must be a thread count in [1, 4,096], got 0"),
    (["rf-plan", "--target", "0"], "argument --target: must be a positive integer, got 0"),
    (["train", TINY, *TRAIN, "--device", "tpu"], "argument --device: unknown device 'tpu'; use auto, cpu, cuda"),
]


@pytest.mark.parametrize("argv, message", ABSURD + ZERO, ids=[" ".join(a)[:60] for a, _ in ABSURD + ZERO])
def test_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "before.txt").write_text("kept")
    refused([a.format(tmp=tmp_path) for a in argv], message, capsys, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.txt"]  # no run folder, no table


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a GPU")
def test_cuda_on_a_cpu_only_torch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    refused(["train", TINY, *TRAIN, "--device", "cuda"], "sees no CUDA GPU; use --device cpu (or auto)", capsys,
            tmp_path)  # fmt: skip
    refused(["eval", "x.pt", "--device", "cuda:1"], "sees no CUDA GPU", capsys, tmp_path)


def test_rf_plan_search_is_bounded_and_the_bound_raisable(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("EDGECNN_MAX_PLAN_STATES", "20000")
    refused(["rf-plan", "--target", "1000000000", "--depth", "40"],
            "search states exceed the limit of 20,000; if that is really meant, raise it with "
            "EDGECNN_MAX_PLAN_STATES=N", capsys, tmp_path)  # fmt: skip
    assert main(["rf-plan", "--target", "31", "--depth", "3"]) == 0  # a small plan fits the small bound


def test_memory_estimate_refuses_and_the_limit_is_raisable(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", "0.05")
    refused(["train", "conv_c4000 gap fc", *TRAIN, "--out", str(tmp_path / "r")],
            "would need about 0.", capsys, tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="above the limit of 0.05 GB; .* raise EDGECNN_MAX_MEMORY_GB=N"):
        check_memory("conv_c4000 gap fc", input_size=8, num_classes=10, in_chans=1, batch=128, training=True)
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", "1")
    check_memory("conv_c4000 gap fc", input_size=8, num_classes=10, in_chans=1, batch=128, training=True)


def test_memory_estimate_counts_weights_and_activations() -> None:
    """By hand for 'conv_c8 gap fc' on 1×8×8: conv 8·9 weights + 2·8 BN; fc 8·10 + 10 bias."""
    arch = "conv_c8 gap fc"
    params = 8 * 9 + 16 + 80 + 10
    assert cost_from_spec(arch, input_size=8, num_classes=10, in_chans=1).params == params
    assert count_params(build(arch, num_classes=10, in_chans=1)) == params
    infer = estimate_memory(arch, input_size=8, num_classes=10, in_chans=1, batch=2)
    assert infer.weights_bytes == 4 * params
    assert infer.activations_bytes == 2 * 4 * 2 * 8 * 64  # two copies of the largest map (8×8×8), batch 2
    train = estimate_memory(arch, input_size=8, num_classes=10, in_chans=1, batch=2, training=True)
    acts = 1 * 64 + 8 * 64 + 8 + 10  # input, conv map, gap, fc
    assert train.weights_bytes == 16 * params and train.activations_bytes == 3 * 4 * 2 * acts


def test_limits_are_raisable_and_a_bad_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    arch = "conv_r5_c8 gap fc"
    monkeypatch.setenv("EDGECNN_MAX_LAYERS", "4")
    with pytest.raises(ValueError, match="7 layers exceed the limit of 4; .* EDGECNN_MAX_LAYERS=N"):
        resolve(arch)
    monkeypatch.setenv("EDGECNN_MAX_LAYERS", "7")
    assert len(resolve(arch)) == 7
    monkeypatch.setenv("EDGECNN_MAX_LAYERS", "many")
    with pytest.raises(ValueError, match="EDGECNN_MAX_LAYERS='many' is not a number"):
        resolve(arch)


def test_decoding_a_folder_stops_at_the_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from PIL import Image

    from edgecnn.data import load_data

    (tmp_path / "a").mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / "a" / f"{i:02}.png")
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", str(2e-6))  # 2 kB, half for the decoded list: 5 images of 192 B
    with pytest.raises(ValueError, match=r"decoding a/05.png and the images before it: .* limit of 2e-06 GB"):
        load_data(str(tmp_path), cache=tmp_path / "cache")
