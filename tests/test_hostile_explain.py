"""``edgecnn explain`` on hostile input: image files, a previous result in ``--out``, damaged checkpoints, full disks.

Each refusal is one line on stderr with exit code 2 and leaves the files
that were there byte-identical (``hostile.refused``); an image that can be
read sensibly (CMYK, palette with transparency, 16-bit grey) is converted and
explained.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import TINY, TRAIN, refused
from PIL import Image

import edgecnn.atomic
from edgecnn.cli.explain_cmd import MAX_PIXELS, _read_image
from edgecnn.cli.main import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits checkpoint of the tiny network at 8 px (one epoch, well under a second)."""
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", TINY, *TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    return out / "last.pt"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` grey pixels, with a few bytes of data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _noise(path: Path, size: tuple[int, int] = (20, 16), mode: str = "RGB", **save: object) -> Path:
    a = (np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(a).convert(mode).save(path, **save)
    return path


def _truncated(path: Path, source: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])  # the header intact, the pixels cut
    return path


def _explain(ckpt: Path, out: Path, *images: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return ["explain", str(ckpt), "--image", *map(str, images), "--out", str(out), *extra]


# ------------------------------------------------------------------ image files


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: (d / "bomb.png").write_bytes(_png_header(20_000, 20_000)) and d / "bomb.png",
     "its header says 400,000,000 pixels, more than the 89,478,485 edgecnn decodes (a decompression bomb"),
    (lambda d: (d / "big.png").write_bytes(_png_header(10_000, 10_000)) and d / "big.png",
     "its header says 100,000,000 pixels"),  # over the bound, under Pillow's own error: no warning, no decoding
    (lambda d: (d / "text.png").write_text("hello") and d / "text.png", "is not an image Pillow can read"),
    (lambda d: _truncated(d / "cut.png", _noise(d / "full.png", (64, 64))),
     "is not an image Pillow can read (image file is truncated"),
    (lambda d: _truncated(d / "cut.jpg", _noise(d / "full.jpg", (64, 64))),
     "is not an image Pillow can read (image file is truncated"),
    (lambda d: (d / "crc.png").write_bytes(_png_header(8, 8)[:20] + b"xx" + _png_header(8, 8)[22:]) and d / "crc.png",
     "is not an image Pillow can read"),
    (lambda d: _noise(d / "one.png", (1, 1)), "is 1×1 pixels: a side of one pixel has nothing to localise"),
    (lambda d: _noise(d / "line.png", (40, 1)), "is 40×1 pixels"),
    (lambda d: Image.fromarray(np.ones((8, 8), np.float32)).save(d / "f.tiff") or d / "f.tiff",
     "has floating-point pixels (mode F)"),
], ids=["bomb-20000", "bomb-10000", "not-an-image", "truncated-png", "truncated-jpeg", "bad-checksum", "1x1", "40x1",
        "float-tiff"])  # fmt: skip
def test_a_hostile_image_is_refused_in_one_line(ckpt, tmp_path, capsys, make, message):
    image = make(tmp_path)
    out = tmp_path / "out"
    err = refused(_explain(ckpt, out, image), message, capsys, tmp_path)
    assert str(image) in err and not out.exists()


def test_the_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    """The header alone decides: Pillow's decoder is never reached."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(9_500, 9_500))  # 90,250,000 pixels: just over the bound
    assert 9_500 * 9_500 > MAX_PIXELS

    def no_decoding(*_a: object, **_k: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ValueError, match="90,250,000 pixels"):
        _read_image(bomb, 1, 8)


@pytest.mark.parametrize(("name", "make"), [
    ("cmyk.jpg", lambda p: _noise(p, mode="CMYK")),
    ("palette.png", lambda p: Image.new("P", (12, 10), 3).save(p, transparency=3)),
    ("grey-alpha.png", lambda p: Image.new("LA", (12, 10), (10, 200)).save(p)),
    ("bilevel.png", lambda p: Image.new("1", (12, 10), 1).save(p)),
    ("grey16.png", lambda p: Image.fromarray(np.full((10, 12), 257 * 100, np.uint16)).save(p)),
])  # fmt: skip
def test_images_of_other_modes_are_converted_and_explained(ckpt, tmp_path, capsys, name, make):
    image = tmp_path / name
    make(image)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(_explain(ckpt, out, image)) == 0
    assert capsys.readouterr().err == ""  # no Pillow warning (a palette's transparency) either
    cam = json.loads((out / "results.json").read_text())["cam"]
    assert [r["name"] for r in cam["images"]] == [str(image)] and (out / "cam" / "0.png").is_file()


def test_16_bit_grey_levels_are_scaled_to_8_bits(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 257 * 100], [65535, 257]], np.uint16)).save(path)
    assert _read_image(path, 1, None).tolist() == [[[0, 100], [255, 1]]]


# ------------------------------------------------------------------ the run folder


def test_a_previous_result_is_refused_unless_overwrite(ckpt, tmp_path, capsys):
    images = [_noise(tmp_path / f"{i}.png") for i in range(2)]
    out = tmp_path / "out"
    assert main(_explain(ckpt, out, *images)) == 0
    message = f"{out} already holds a previous run (results.json); pass --overwrite to replace it, or another --out"
    err = refused(_explain(ckpt, out, images[0]), message, capsys, out)
    assert "--resume" not in err  # explain has no such option
    assert main(_explain(ckpt, out, images[0], extra=("--overwrite",))) == 0
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["cam"]["images"]) == 1
    assert sorted(p.name for p in (out / "cam").iterdir()) == ["0.png"]  # the longer run's 1.png went with it


def test_an_unwritable_out_is_found_before_the_checkpoint_is_read(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    image = _noise(tmp_path / "a.png")
    refused(["explain", str(tmp_path / "no-such.pt"), "--image", str(image), "--out", str(tmp_path / "file" / "o")],
            "is a file, not a folder", capsys, tmp_path)  # fmt: skip


def test_a_full_disk_keeps_the_previous_result(ckpt, tmp_path, capsys, monkeypatch):
    image = _noise(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(_explain(ckpt, out, image)) == 0

    def fsync(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(edgecnn.atomic.os, "fsync", fsync)
    refused(_explain(ckpt, out, image, extra=("--overwrite", "--method", "gradcam")), "No space left on device",
            capsys, out)  # fmt: skip
    assert json.loads((out / "results.json").read_text())["cam"]["method"] == "cam"
    assert [p.name for p in out.rglob("*.tmp")] == []


def test_too_many_images_are_refused_up_front(ckpt, tmp_path, capsys):
    refused(["explain", str(ckpt), "--data", "digits", "--count", "10001", "--out", str(tmp_path / "o")],
            "explain at most 10,000 images in one run", capsys, tmp_path)  # fmt: skip


def test_a_checkpoint_with_nan_weights_is_refused(ckpt, tmp_path, capsys):
    d = torch.load(ckpt, weights_only=True)
    first = next(k for k, v in d["state_dict"].items() if v.is_floating_point())
    d["state_dict"][first] = torch.full_like(d["state_dict"][first], float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(d, bad)
    image = _noise(tmp_path / "a.png")
    refused(_explain(bad, tmp_path / "out", image), "NaN/Inf", capsys, tmp_path)
    assert not (tmp_path / "out").exists()


def test_a_long_count_is_explained_in_batches(ckpt, tmp_path, capsys, monkeypatch):
    """More images than one forward pass holds: the same rows as explaining them in one batch."""
    import edgecnn.explain.run

    out = tmp_path / "one"
    assert main(["explain", str(ckpt), "--data", "digits", "--count", "5", "--out", str(out)]) == 0
    monkeypatch.setattr(edgecnn.explain.run, "BATCH", 2)
    out2 = tmp_path / "three"
    assert main(["explain", str(ckpt), "--data", "digits", "--count", "5", "--out", str(out2)]) == 0
    rows = [json.loads((o / "results.json").read_text())["cam"]["images"] for o in (out, out2)]
    for a, b in zip(*rows):
        assert a["peak_cell"] == b["peak_cell"] and a["predicted"] == b["predicted"]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)
    assert [(out2 / r["file"]).read_bytes() for r in rows[1]] == [(out / r["file"]).read_bytes() for r in rows[0]]
