"""``edgecnn demo`` end to end on a 1-epoch budget: files written, numbers consistent with the analysis."""

import json

import torch

from edgecnn.analysis import analyze
from edgecnn.build import build
from edgecnn.checkpoint import load_checkpoint
from edgecnn.cli.main import main


def test_demo_runs_and_its_numbers_agree(tmp_path):
    out = tmp_path / "demo"
    arch = "conv_s2_c8_hswish ir_m16_c8_relu ir_k5_s2_m24_c16_se0.25_hsgate_hswish gap fc"
    assert main(["demo", "--model", arch, "--epochs", "1", "--out", str(out), "--image-size", "16"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["arch"] == arch and res["data"] == "digits"
    # the per-block MACs (closed form from the spec) add up to the traced analysis of the same network
    net = build(arch, num_classes=10, in_chans=1)
    assert sum(b["macs"] for b in res["blocks"]) == res["macs"] == analyze(net, (1, 16, 16)).total().macs
    assert res["params"] == sum(p.numel() for p in net.parameters())
    assert 0.0 <= res["top1"] <= 1.0 and res["eager_ms"] > 0
    assert "| blocks.2 | `ir_k5_s2_m24_c16_se0.25_hsgate_hswish` |" in (out / "report.md").read_text()
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.arch == arch and ckpt.in_chans == 1 and ckpt.num_classes == 10
    model = build(ckpt.arch, num_classes=10, in_chans=1)
    model.load_state_dict(ckpt.state_dict)
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 10)


def test_demo_rejects_bad_settings(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert "epochs must be at least 1" in capsys.readouterr().err
