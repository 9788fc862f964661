"""Class 2 of issue 13 — nothing trusted: tampered checkpoints, latency tables and data caches.

Each loaded document is checked field by field (``edgecnn.schema``) under the
limits of ``edgecnn.limits``; a bad one gives one line naming the file and the
field, exit code 2, and leaves every file as it was.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hostile import TINY, refused
from PIL import Image

from edgecnn.build import build
from edgecnn.checkpoint import checkpoint_of
from edgecnn.data import load_data
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.predict import predict
from edgecnn.latency.table import PROBE_ARCH, LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.plan import resolve


def _good_checkpoint() -> dict[str, Any]:
    model = build(TINY, num_classes=10, in_chans=1)
    meta = {"name": "digits", "classes": [str(i) for i in range(10)], "mean": [0.3], "std": [0.4],
            "image_size": 8, "in_chans": 1}  # fmt: skip
    return checkpoint_of(model, data=meta, epoch=1, step=5).to_dict()


def _tamper(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[last] = value
    return d


CHECKPOINT_CASES = [
    ("arch", "conv_r100000000_c8 gap fc", "layers exceed the limit of 4,096"),
    ("arch", "conv_c99999999 gap fc", "99,999,999 channels exceed the limit"),
    ("arch", "conv_c8 nope", "field 'arch'"),
    ("data.image_size", 10**6, "field 'data.image_size' must be an integer in [1, 8,192]"),
    ("state_dict", [1, 2, 3], "field 'state_dict' must be a dict of tensors"),
    ("data", "digits", "field 'data' must be a dict with string keys"),
    ("data.mean", [math.nan], "field 'data.mean[0]' must be a finite number"),
    ("data.std", [0.0], "field 'data.std[0]' must be a finite number > 0"),
    ("data.classes", ["a"], "field 'data.classes' must be a list of 10 class names"),
    ("epoch", "3", "field 'epoch' must be an integer >= 0"),
    ("num_classes", -1, "field 'num_classes' must be an integer in [1, 65,536]"),
    ("in_chans", True, "field 'in_chans' must be an integer"),
]


@pytest.mark.parametrize("field, value, message", CHECKPOINT_CASES, ids=[c[0] + "-" + str(i) for i, c in
                                                                          enumerate(CHECKPOINT_CASES)])  # fmt: skip
@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_tampered_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: Any,
                                        message: str, command: str) -> None:  # fmt: skip
    path = tmp_path / "ckpt.pt"
    torch.save(_tamper(_good_checkpoint(), field, value), path)
    err = refused([command, str(path)], message, capsys, tmp_path)
    assert str(path) in err  # which file


def test_a_folder_passed_as_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(["eval", str(tmp_path)], f"checkpoint {tmp_path} is a folder; pass the .pt file in it", capsys, tmp_path)


@pytest.mark.parametrize("field, value, message", [
    ("history", [{"epoch": 1, "bogus": 2}], "history is damaged"),
    ("rng", {"cpu": torch.zeros(3)}, "has a damaged RNG state"),
    ("optimizer", {"state": {}, "param_groups": [{}, {}, {}]}, "has a damaged optimizer state"),
])  # fmt: skip
def test_damaged_run_state_on_resume_is_a_value_error(tmp_path: Path, field: str, value: Any, message: str) -> None:
    from edgecnn.data import load_digits
    from edgecnn.train import TrainConfig, fit

    cfg = TrainConfig(epochs=2, progress=False, eval_every=0, threads=1)
    d = _tamper(_good_checkpoint(), field, value)
    d["config"] = {}
    torch.save(d, tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=message):
        fit(build(TINY, num_classes=10, in_chans=1), load_digits(image_size=8), cfg, out_dir=tmp_path, resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before


# ------------------------------------------------------------------------------------------------ tables
def _good_table(tmp_path: Path, **fp: Any) -> Path:
    """A table with the probe network's entries at 8 px, written without measuring anything."""
    table = LatencyTable(fingerprint(backend="eager", threads=1))
    if fp:
        table = LatencyTable(type(table.fingerprint)(**{**table.fingerprint.to_dict(), **fp}))
    table.reference_ms = 1.0
    for p in resolve(PROBE_ARCH, num_classes=1000, in_chans=3, input_size=8):
        table.entries[block_key(p)] = TableEntry(0.02, 0.01, 0.03, 0.01, 10)
    table.entries[overhead_key(in_chans=3, input_size=(8, 8), batch=1, num_classes=1000)] = TableEntry(
        0.05, 0.04, 0.06, 0.04, 10
    )
    path = tmp_path / "t.json"
    table.save(path)
    return path


def _edit(path: Path, fn: Any) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _first_block(d: dict[str, Any]) -> dict[str, Any]:
    return next(v for k, v in d["entries"].items() if not k.startswith("overhead"))


TABLE_CASES = [
    (lambda d: _first_block(d).update(median_ms=-20.0), "must be a finite number >= 0, got -20.0"),
    (lambda d: _first_block(d).update(median_ms=math.nan), "must be a finite number >= 0, got nan"),
    (lambda d: _first_block(d).update(repeats="ten"), ".repeats' must be an integer"),
    (lambda d: _first_block(d).pop("q1_ms"), "must be a dict of exactly median_ms, q1_ms, q3_ms, min_ms, repeats"),
    (lambda d: d.update(entries=[1, 2]), "field 'entries' must be a dict with string keys"),
    (lambda d: d["fingerprint"].update(threads="x"), "field 'fingerprint.threads' must be an integer"),
    (lambda d: d.update(reference_ms=0), "field 'reference_ms' must be a finite number > 0"),
    (lambda d: d.update(calibration={"scales": {}, "networks": 3, "fit_mape": 0.1, "raw_mape": 0.2}),
     "field 'calibration' lacks 'body'"),
]


@pytest.mark.parametrize("edit, message", TABLE_CASES)
def test_tampered_table_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any,
                                   message: str) -> None:  # fmt: skip
    path = _good_table(tmp_path)
    _edit(path, edit)
    err = refused(["latency", PROBE_ARCH, "--input-size", "8", "--table", str(path), "--threads", "1"], message,
                  capsys, tmp_path)  # fmt: skip
    assert str(path) in err


@pytest.mark.parametrize(
    "text, message",
    [("[" * 5000 + "]" * 5000, "JSON nested 5000 levels deep"), ("[1, 2]", "is not an edgecnn latency table"),
     ('{"format": "edgecnn-latency-table", "version": 2', "is not valid JSON"), ("\xff\xfe", "is not UTF-8")],
)  # fmt: skip
def test_malformed_table_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(text.encode("latin-1"))
    refused(["latency", PROBE_ARCH, "--table", str(path), "--threads", "1"], message, capsys, tmp_path)


def test_a_negative_overhead_cannot_predict_negative_time(tmp_path: Path) -> None:
    path = _good_table(tmp_path)
    okey = overhead_key(in_chans=3, input_size=(8, 8), batch=1, num_classes=1000)
    _edit(path, lambda d: d["entries"][okey].update(median_ms=-20.0))
    table = LatencyTable.load(path)  # an overhead may dip below 0 (a difference of measurements) ...
    with pytest.raises(ValueError, match=r"predicts -19.9 ms .* the table is damaged"):
        predict(table, PROBE_ARCH, input_size=8)  # ... but never the whole prediction


def test_force_reads_a_foreign_table_but_never_writes_to_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _good_table(tmp_path, cpu="some other CPU")
    refused(["latency", "build-table", "--table", str(path), "--models", TINY, "--force", "--threads", "1"],
            "was measured on another device/backend; --force reads it but does not add", capsys, tmp_path)  # fmt: skip
    refused(["latency", "validate", "--table", str(path), "--force", "--threads", "1", "-n", "1"],
            "--force reads it but does not add", capsys, tmp_path)  # fmt: skip


def test_validate_needs_an_existing_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(["latency", "validate", "--table", str(tmp_path / "typo.json")], "typo.json does not exist; create it",
            capsys, tmp_path)  # fmt: skip
    assert not (tmp_path / "typo.json").exists()


# ------------------------------------------------------------------------------------------------ caches
def _tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("key, bad", [("all_labels", np.array([0, 1, 7, 0, 1, 0, 1, 0, 1, 0])),
                                      ("all_images", np.zeros((3, 8, 8), np.uint8)),
                                      ("classes", np.array([], dtype=str))])  # fmt: skip
def test_tampered_cache_is_decoded_again(tmp_path: Path, key: str, bad: np.ndarray) -> None:
    src, cache = _tree(tmp_path / "data"), tmp_path / "cache"
    good = load_data(str(src), cache=cache)
    (npz,) = cache.glob("*.npz")
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = bad
    with open(npz, "wb") as f:
        np.savez(f, **arrays)
    with pytest.warns(UserWarning, match=f"ignoring unreadable data cache .*field '{key}'"):
        again = load_data(str(src), cache=cache)
    assert torch.equal(again.train.images, good.train.images) and again.classes == good.classes


def test_skipped_image_warning_names_the_file_not_a_bytesio(tmp_path: Path) -> None:
    src = _tree(tmp_path / "data")
    (src / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning) as record:
        load_data(str(src), cache=tmp_path / "cache")
    text = " ".join(str(w.message) for w in record)
    assert "a/broken.png: cannot identify image file the file" in text and "BytesIO" not in text
