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
    # conv-path fields by R += (k-1)·J, J *= s: stem 3×3 s2 → 3, J2; 3×3 dw → 3 + 2·2 = 7;
    # 5×5 s2 dw → 7 + 4·2 = 15, J4;
    # the SE gate of blocks.2 and the global pooling make the output see the whole input
    fields = [(b["rf"], b["rf_jump"], b["rf_whole"]) for b in res["blocks"]]
    assert fields == [(3, 2, False), (7, 2, False), (15, 4, True), (None, None, True), (None, None, True)]
    assert [e["epoch"] for e in res["history"]] == [1] and 0.0 <= res["history"][0]["test_top1"] <= 1.0
    html = (out / "report.html").read_text()
    assert '<td class="l">blocks.2</td><td class="l"><code>ir_k5_s2_m24_c16_se0.25_hsgate_hswish</code></td>' in html
    # 4 figures (matplotlib is in the [dev] extra) + one overlay per explained digit (the first of each class)
    assert html.count('<img src="data:image/png;base64,') == 4 + 8
    assert res["kind"] == "demo" and res["schema"] == 1
    assert [s["name"] for s in res["stages"]] == ["data", "analyze", "train", "latency", "netadapt", "int8", "cam"]
    assert [s["status"] for s in res["stages"]][4:] == ["not built", "not built", "done"]
    cam = res["cam"]
    # the last spatial block is blocks.2 (16 -> 8 -> 8 -> 4 pixels: a 4×4 map, scale 16/4 = 4)
    assert cam["method"] == "gradcam" and cam["layer"] == "blocks.2" and cam["map_size"] == [4, 4]
    assert cam["scale"] == [4.0, 4.0] and [r["label"] for r in cam["images"]] == [str(d) for d in range(8)]
    assert all((out / r["file"]).read_bytes().startswith(b"\x89PNG") for r in cam["images"])
    # `edgecnn report` redraws the same page from results.json alone
    (out / "report.html").rename(out / "first.html")
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text() == (out / "first.html").read_text()
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.arch == arch and ckpt.in_chans == 1 and ckpt.num_classes == 10
    model = build(ckpt.arch, num_classes=10, in_chans=1)
    model.load_state_dict(ckpt.state_dict)
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 10)


def test_demo_rejects_bad_settings(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert "argument --epochs: must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["demo", "--cam-images", "-1"]) == 2
    assert "argument --cam-images: must be an integer >= 0, got -1" in capsys.readouterr().err
