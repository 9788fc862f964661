"""``edgecnn train`` → ``edgecnn explain`` → ``edgecnn report`` on a small digits run: files, numbers, errors."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from edgecnn.checkpoint import load_model
from edgecnn.cli.main import main
from edgecnn.data import BatchLoader, load_digits
from edgecnn.explain.cam import class_activation_map

ARCH = "conv_c8_relu conv_s2_c16_relu gap fc"  # GAP -> linear: both CAM and Grad-CAM apply; 8×8 map at 16×16


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", ARCH, "--data", "digits", "--image-size", "16", "--epochs", "1", "--threads", "1",
                 "--no-progress", "--out", str(out)]) == 0  # fmt: skip
    return out


def test_train_writes_a_results_document_that_report_draws(run, capsys):
    doc = json.loads((run / "results.json").read_text())
    assert doc["kind"] == "train" and doc["schema"] == 1 and doc["data"] == "digits"
    assert [h["epoch"] for h in doc["history"]] == [1] and 0 <= doc["top1"] <= 1
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "<title>edgecnn train report</title>" in html and html.count("data:image/png;base64,") == 1
    assert f"top-1 {doc['top1']:.2%}" in html


def test_explain_digits_matches_the_library_and_cam_agrees_with_gradcam(run, tmp_path):
    ckpt = run / "last.pt"
    peaks = {}
    for method in ("cam", "gradcam"):
        out = tmp_path / method
        assert main(["explain", str(ckpt), "--data", "digits", "--count", "3", "--method", method,
                     "--out", str(out)]) == 0  # fmt: skip
        doc = json.loads((out / "results.json").read_text())
        cam = doc["cam"]
        assert doc["kind"] == "explain" and cam["layer"] == "blocks.1" and cam["map_size"] == [8, 8]
        assert cam["scale"] == [2.0, 2.0] and len(cam["images"]) == 3
        for r in cam["images"]:
            with Image.open(out / r["file"]) as im:  # image | 4-pixel gap | overlay, at zoom 4
                assert im.size == (16 * 4 * 2 + 4, 16 * 4)
            # half-pixel: cell (i, j) is centred on image pixel ((i + 0.5)·2 - 0.5, ...) = (2i + 0.5, 2j + 0.5)
            assert r["peak_pixel"] == [2 * r["peak_cell"][0] + 0.5, 2 * r["peak_cell"][1] + 0.5]
        peaks[method] = [tuple(r["peak_cell"]) for r in cam["images"]]
        assert main(["report", str(out)]) == 0
        assert (out / "report.html").read_text().count("data:image/png;base64,") == 3
    # the same maps from the library on the same three test digits, normalised as in training
    model, ck = load_model(ckpt)
    data = load_digits(image_size=16)
    x, _ = next(iter(BatchLoader(data.test.subset([0, 1, 2]), batch_size=3, mean=ck.data["mean"], std=ck.data["std"])))
    assert class_activation_map(model, x, method="cam").peaks() == peaks["cam"]
    # Grad-CAM = ReLU(CAM)/(h·w) for a GAP -> linear head: the same peak wherever the CAM peak is positive
    assert peaks["gradcam"] == peaks["cam"]


def test_explain_image_files(run, tmp_path):
    img = tmp_path / "seven.png"
    Image.fromarray((torch.rand(40, 30) * 255).to(torch.uint8).numpy()).convert("RGB").save(img)
    out = tmp_path / "files"
    assert main(["explain", str(run / "last.pt"), "--image", str(img), "--interp", "nearest",
                 "--convention", "corner", "--out", str(out)]) == 0  # fmt: skip
    cam = json.loads((out / "results.json").read_text())["cam"]
    assert cam["interp"] == "nearest" and cam["convention"] == "corner" and cam["image_size"] == [16, 16]
    assert cam["images"][0]["name"] == str(img) and cam["images"][0]["label"] is None
    # corner convention: cell (i, j) sits at image point (2i, 2j)
    assert cam["images"][0]["peak_pixel"] == [2 * c for c in cam["images"][0]["peak_cell"]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give either --image FILE [FILE ...] or --data digits|PATH"),
        (["--image", "/no/such.png"], "image /no/such.png does not exist"),
        (["--data", "digits", "--layer", "blocks.7"], "no module named 'blocks.7'"),
        (["--data", "digits", "--count", "0"], "--count must be at least 1"),
    ],
)
def test_explain_errors_are_one_line(run, tmp_path, capsys, extra, message):
    assert main(["explain", str(run / "last.pt"), "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_explain_refuses_a_file_that_is_no_image(run, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    assert main(["explain", str(run / "last.pt"), "--image", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "is not an image Pillow can read" in capsys.readouterr().err


def test_report_of_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json does not exist" in capsys.readouterr().err
