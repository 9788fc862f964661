"""`edgecnn analyze`: zoo names, arch strings and checkpoints; JSON equal to the library's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecnn import zoo
from edgecnn.analysis import analyze, cost_from_spec
from edgecnn.build import build
from edgecnn.checkpoint import checkpoint_of, save_checkpoint
from edgecnn.cli.main import main


def test_zoo_model_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.json"
    assert main(["analyze", "resnet20_cifar", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    expected = analyze(zoo.create("resnet20_cifar"), (3, 32, 32))
    assert d["totals"]["macs"] == expected.macs == 40_551_040
    assert d["totals"]["params"] == 269_722
    assert d["input_shapes"] == [[1, 3, 32, 32]]
    text = capsys.readouterr().out
    assert "40,551,040" in text and "FLOPs" in text


def test_arch_string_input_size_and_depth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = "conv_k3_s2_c16 ir_c24 gap fc"
    md = tmp_path / "a.md"
    assert main(["analyze", arch, "--input", "3x64x64", "--num-classes", "10", "--depth", "2",
                 "--markdown", str(md)]) == 0  # fmt: skip
    macs = cost_from_spec(arch, 64, num_classes=10).macs
    assert f"{macs:,}" in capsys.readouterr().out
    assert "| blocks.1 |" in md.read_text()


def test_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = "conv_c8 gap fc"
    path = tmp_path / "m.pt"
    save_checkpoint(checkpoint_of(build(arch, num_classes=3)), path)
    assert main(["analyze", str(path), "--input", "16", "-q"]) == 0
    assert f"MACs {cost_from_spec(arch, 16, num_classes=3).macs:,}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["analyze", "nosuchmodel"], "unknown model"),
        (["analyze", "resnet18", "--input", "3x22"], "CxHxW"),
        (["analyze", "resnet18", "--input", "1x32x32"], "channels"),
        (["analyze", "conv_c8 gap fc", "--depth", "0"], "depth"),
        (["analyze", "missing.pt"], "does not exist"),
    ],
)
def test_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_se_network_shows_conv_path_fields_with_global_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.json"
    assert main(["analyze", "mobilenet_v3_small", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    # R += (k−1)·J, J *= s: stem k3 s2 → 3, J2; blocks.1 dw k3 s2 → 3 + 2·2 = 7, J4 (with SE: +global);
    # blocks.2 dw k3 s2 → 7 + 2·4 = 15, J8 (after an SE block: +global); only gap and the head are whole;
    # start: padding (k−1)/2 everywhere keeps the first centre at pixel 0
    assert "3×3 J2 " in text and "7×7 J4 +global" in text and "15×15 J8 +global" in text
    rows = [line for line in text.splitlines() if line.startswith("│ blocks.")]
    assert len(rows) == 17 and sum(" whole " in r for r in rows) == 4
    d = json.loads(out.read_text())
    assert d["schema"] == "edgecnn.analysis/2" and d["mode"] == "fx" and d["fallback_reason"] == ""
    last = {}
    for layer in d["layers"]:
        last[".".join(layer["module"].split(".")[:2])] = layer["rf"]
    assert last["blocks.1"] == {"size": [7, 7], "jump": [4, 4], "start": [0, 0], "whole": False, "global": True}
    assert last["blocks.0"]["global"] is False and last["blocks.13"]["whole"] is True


def test_hooks_mode_is_stated_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "conv_c8 gap fc", "--input", "3x16x16", "--mode", "hooks"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "fallback" in line]
    assert lines == ["Forward-hooks fallback (mode 'hooks' asked for): no receptive fields; functional ops' other ops "
                     "and shapes not counted."]  # fmt: skip


def test_out_writes_a_run_with_erf_and_gradient_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from edgecnn.analysis.dynamics import erf_section

    arch = "conv_c8_relu ir_m16_c8_relu ir_m16_c8_relu gap fc"
    out = tmp_path / "run"
    argv = ["analyze", arch, "--input", "3x12x12", "--num-classes", "4", "--out", str(out), "--seed", "3", "-q"]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["kind"] == "analyze" and doc["schema"] == "edgecnn.analysis/2" and doc["totals"]["macs"] > 0
    # the ERF of the network initialised from --seed, measured on its trunk (the two ir blocks end at blocks.2)
    torch.manual_seed(3)
    net = build(arch, num_classes=4)
    ref = erf_section(net, (3, 12, 12), samples=16, batch=8, seed=3)
    assert doc["erf"]["map"] == ref["map"] and doc["erf"]["layer"] == "blocks.2" and doc["erf"]["rf_size"] == [7, 7]
    assert doc["erf"]["weights"] == "freshly initialised weights (seed 3)"
    flow = doc["gradflow"]
    assert flow["skips"] == 2 and set(flow["runs"]) == {"with skips", "without skips"} and flow["batch"] == 8
    html = (out / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 2 and "<h2>Gradient flow</h2>" in html
    assert "<title>edgecnn analyze report</title>" in html and "freshly initialised weights (seed 3)" in html
    # a second run into the same folder is refused unless --overwrite
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--no-dynamics"]) == 0
    assert "erf" not in json.loads((out / "results.json").read_text())


def test_out_of_a_checkpoint_uses_its_weights(tmp_path: Path) -> None:
    import torch

    from edgecnn.analysis.dynamics import erf_section

    arch = "conv_c8_relu conv_c8_relu gap fc"
    torch.manual_seed(7)
    net = build(arch, num_classes=3, in_chans=1)
    save_checkpoint(checkpoint_of(net), tmp_path / "m.pt")
    assert main(["analyze", str(tmp_path / "m.pt"), "--input", "10", "--out", str(tmp_path / "run"), "-q"]) == 0
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["erf"]["map"] == erf_section(net, (1, 10, 10), samples=16, batch=8)["map"]
    assert doc["erf"]["weights"] == "the checkpoint's trained weights (m.pt)" and doc["gradflow"]["skips"] == 0
    assert list(doc["gradflow"]["runs"]) == ["as built (no skips)"]  # no skip to turn off: one curve
