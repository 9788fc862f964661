"""Data: digits, ImageFolder trees and archives (CIFAR-10 slice), the cache, the batched loader.

Ground truth is what the sources say: scikit-learn's arrays, Pillow's decode
of the same file, a per-sample reference crop/flip written with plain slicing.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from edgecnn.data import Augment, BatchLoader, ImageSplit, cache_dir, crop_flip, load_data, load_digits
from edgecnn.data import folder as folder_mod

CIFAR = Path("/work/shared/data/cifar10-jpeg.tar.xz")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "edgecnn-cache"))  # never the user's ~/.cache


# ---------------------------------------------------------------------------------------------------- digits
def test_digits_pixels_labels_and_stratified_split() -> None:
    from sklearn.datasets import load_digits as sk

    ref = sk()
    d = load_digits(image_size=8, seed=0)
    assert d.classes == tuple(str(i) for i in range(10)) and d.in_chans == 1
    assert len(d.train) + len(d.test) == 1797
    # at 8×8 the pixels are the 0..16 grey levels scaled to 0..255
    want = np.rint(ref.images * 255 / 16).astype(np.uint8)
    all_imgs = torch.cat([d.train.images, d.test.images])[:, 0].numpy()
    all_lbls = torch.cat([d.train.labels, d.test.labels]).numpy()
    order = np.lexsort((all_imgs.reshape(len(all_imgs), -1).T[::-1]))
    ref_order = np.lexsort((want.reshape(1797, -1).T[::-1]))
    np.testing.assert_array_equal(all_imgs[order], want[ref_order])
    np.testing.assert_array_equal(all_lbls[order], ref.target[ref_order])
    # stratified: each class puts round(20%) of its images in test
    per_class = np.bincount(ref.target)
    test_counts = np.bincount(d.test.labels.numpy(), minlength=10)
    assert test_counts.tolist() == np.rint(0.2 * per_class).astype(int).tolist()
    # fixed seed: the same split again, another seed another split
    assert torch.equal(load_digits(image_size=8, seed=0).test.images, d.test.images)
    assert not torch.equal(load_digits(image_size=8, seed=1).test.images, d.test.images)
    # normalisation statistics are those of the training pixels
    x = d.train.images.double() / 255
    assert d.mean[0] == pytest.approx(x.mean().item(), abs=1e-12)
    assert d.std[0] == pytest.approx(x.std(unbiased=False).item(), abs=1e-12)


def test_digits_resized_once_with_interpolate_and_limit() -> None:
    small, big = load_digits(image_size=8), load_digits(image_size=32, limit=7)
    assert big.image_size == 32 and big.augment == Augment(pad=4, flip=False)
    assert np.bincount(big.train.labels.numpy()).tolist() == [7] * 10
    # the first kept image of class 0 is bilinear-upsampled from its 8×8 original
    i8 = int(torch.nonzero(small.train.labels == 0)[0])
    i32 = int(torch.nonzero(big.train.labels == 0)[0])
    from sklearn.datasets import load_digits as sk

    raw = torch.from_numpy(sk().images).float().mul(255 / 16)
    src = raw[[k for k in range(1797) if np.array_equal(np.rint(raw[k].numpy()), small.train.images[i8, 0].numpy())][0]]
    want = F.interpolate(src[None, None], size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    assert torch.equal(big.train.images[i32, 0], want[0, 0].to(torch.uint8))


# ------------------------------------------------------------------------------------------ batched augmentation
def _reference_crop_flip(x: torch.Tensor, dy: list[int], dx: list[int], flip: list[bool], pad: int) -> torch.Tensor:
    out = []
    h, w = x.shape[-2:]
    for i in range(len(x)):
        p = np.pad(x[i].numpy(), ((0, 0), (pad, pad), (pad, pad)))
        c = p[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out.append(torch.from_numpy(np.ascontiguousarray(c[:, :, ::-1] if flip[i] else c)))
    return torch.stack(out)


@pytest.mark.parametrize("pad", [0, 1, 4])
def test_crop_flip_matches_per_sample_reference(pad: int) -> None:
    g = torch.Generator().manual_seed(pad)
    x = torch.randint(0, 256, (9, 3, 7, 5), generator=g, dtype=torch.uint8)
    dy = torch.randint(0, 2 * pad + 1, (9,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (9,), generator=g)
    flip = torch.rand(9, generator=g) < 0.5
    got = crop_flip(x, dy, dx, flip, pad)
    assert torch.equal(got, _reference_crop_flip(x, dy.tolist(), dx.tolist(), flip.tolist(), pad))


def _split(n: int = 50, c: int = 3, s: int = 6, classes: int = 5) -> ImageSplit:
    g = torch.Generator().manual_seed(0)
    return ImageSplit(torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8), torch.arange(n) % classes)


def test_eval_loader_is_exact_normalisation_in_order() -> None:
    sp = _split()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    loader = BatchLoader(sp, batch_size=16, mean=mean, std=std)
    xs, ys = zip(*loader.epoch(0))
    assert [len(y) for y in ys] == [16, 16, 16, 2] and len(loader) == 4
    x = torch.cat(xs)
    back = (x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)) * 255
    assert torch.allclose(back, sp.images.float(), atol=1e-3)
    assert torch.equal(torch.cat(ys), sp.labels)


def test_train_loader_shuffles_augments_and_replays_by_seed() -> None:
    sp = _split()
    kw = dict(batch_size=16, mean=(0.0,) * 3, std=(1 / 255,) * 3, train=True, augment=Augment(pad=2, flip=True))
    a = BatchLoader(sp, seed=3, **kw)
    e0 = list(a.epoch(0))
    assert len(e0) == 3  # 50 // 16, the last partial batch dropped
    seen = torch.cat([y for _, y in e0])
    assert len(seen) == 48
    # every image appears at most once per epoch, and each crop is a real crop of it
    ident = BatchLoader(ImageSplit(sp.images, torch.arange(50)), seed=3, **kw)
    idx = torch.cat([y for _, y in ident.epoch(0)])
    assert len(set(idx.tolist())) == 48
    x0 = torch.cat([x for x, _ in e0]).round().to(torch.uint8)
    for k in (0, 17, 40):
        i = int(idx[k])
        cands = [crop_flip(sp.images[i : i + 1], torch.tensor([u]), torch.tensor([v]), torch.tensor([f]), 2)[0]
                 for u in range(5) for v in range(5) for f in (False, True)]  # fmt: skip
        assert any(torch.equal(x0[k], c) for c in cands)
    # same seed, same batches; resume at batch 1 gives batches 1.. exactly; other epochs differ
    b = BatchLoader(sp, seed=3, **kw)
    for (xa, ya), (xb, yb) in zip(e0[1:], b.epoch(0, start=1)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(next(iter(b.epoch(1)))[1], e0[0][1])


def test_ranks_share_the_global_batch() -> None:
    sp = _split(n=64)
    kw = dict(batch_size=16, mean=(0.1,) * 3, std=(0.3,) * 3, train=True, augment=Augment(), seed=5)
    whole = list(BatchLoader(sp, **kw).epoch(2))
    r0 = list(BatchLoader(sp, rank=0, world_size=2, **kw).epoch(2))
    r1 = list(BatchLoader(sp, rank=1, world_size=2, **kw).epoch(2))
    for (x, y), (x0, y0), (x1, y1) in zip(whole, r0, r1):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        BatchLoader(sp, world_size=3, **kw)


def test_loader_resizes_and_channels_last() -> None:
    sp = _split(n=4, s=8)
    loader = BatchLoader(sp, batch_size=4, mean=(0.0,) * 3, std=(1.0,) * 3, image_size=16, channels_last=True)
    x, _ = next(iter(loader))
    want = F.interpolate(sp.images.float() / 255, size=(16, 16), mode="bilinear", align_corners=False)
    assert x.shape == (4, 3, 16, 16) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x, want, atol=1e-6)


# ----------------------------------------------------------------------------------------- folders and archives
def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _tree(root: Path, *, split: bool = True, n: int = 4, size: int = 6) -> dict[str, np.ndarray]:
    """A small ImageFolder tree of PNGs (lossless) with known pixels; returns relative path -> pixels."""
    rng = np.random.default_rng(0)
    truth = {}
    for s in (("train", "test") if split else ("",)):
        for c in ("cat", "dog", "eel"):
            for i in range(n):
                rel = "/".join(p for p in (s, c, f"{i:02d}.png") if p)
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                _png(root / rel, img)
                truth[rel] = img
    return truth


def _check_against(d, truth: dict[str, np.ndarray]) -> None:
    for sp in (d.train, d.test):
        for img, lbl, p in zip(sp.images, sp.labels, sp.paths):
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), truth[p])
            assert d.classes[lbl] == p.split("/")[-2]


def test_folder_with_splits_exact_pixels_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = _tree(tmp_path / "tree")
    d = load_data(tmp_path / "tree")
    assert d.classes == ("cat", "dog", "eel") and len(d.train) == len(d.test) == 12
    assert all(p.startswith("train/") for p in d.train.paths) and all(p.startswith("test/") for p in d.test.paths)
    _check_against(d, truth)
    # the second load reads the cache and decodes nothing
    with monkeypatch.context() as m:
        m.setattr(folder_mod, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
        again = load_data(tmp_path / "tree")
    assert torch.equal(again.train.images, d.train.images) and again.test.paths == d.test.paths
    assert [p.name.split("-")[0] for p in cache_dir().iterdir() if p.name.startswith("tree-")] == ["tree"]
    # a changed file changes the key: decoded again, new pixels seen
    new = np.zeros((6, 6, 3), dtype=np.uint8)
    _png(tmp_path / "tree/train/cat/00.png", new)
    os.utime(tmp_path / "tree/train/cat/00.png", ns=(1, 1))
    changed = load_data(tmp_path / "tree")
    i = changed.train.paths.index("train/cat/00.png")
    assert changed.train.images[i].sum() == 0


@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz", "zip"])
def test_archives_equal_the_folder(tmp_path: Path, kind: str) -> None:
    truth = _tree(tmp_path / "src" / "data", split=False, n=5)  # a top folder "data/" in the archive
    arc = tmp_path / f"data.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(arc, "w") as z:
            for rel in truth:
                z.write(tmp_path / "src" / "data" / rel, f"data/{rel}")
    else:
        with tarfile.open(arc, "w:" + kind.split(".")[1]) as t:
            t.add(tmp_path / "src" / "data", "data")
    d = load_data(arc, test_fraction=0.4, seed=1)
    assert d.classes == ("cat", "dog", "eel") and len(d.train) == 9 and len(d.test) == 6
    assert np.bincount(d.test.labels.numpy()).tolist() == [2, 2, 2]  # stratified
    _check_against(d, {f"data/{k}": v for k, v in truth.items()})


def test_unreadable_image_is_skipped_with_a_count_or_stops_when_strict(tmp_path: Path) -> None:
    _tree(tmp_path / "t")
    (tmp_path / "t/train/dog/99.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images \(first: train/dog/99.png"):
        d = load_data(tmp_path / "t")
    assert d.skipped == 1 and len(d.train) == 12
    with pytest.raises(ValueError, match="cannot decode image train/dog/99.png"):
        load_data(tmp_path / "t", strict=True, cache=tmp_path / "c2")


def test_bad_sources_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; pass --data digits"):
        load_data(tmp_path / "nope")
    _tree(tmp_path / "t")
    (tmp_path / "t/train/fox").mkdir()
    with pytest.raises(ValueError, match="class folder train/fox .* has no images"):
        load_data(tmp_path / "t")
    (tmp_path / "t/train/fox").rmdir()
    _png(tmp_path / "t/test/cat/big.png", np.zeros((9, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="images differ in size.*--image-size"):
        load_data(tmp_path / "t")
    d = load_data(tmp_path / "t", image_size=6)  # resized while decoding
    assert d.image_size == 6 and len(d.test) == 13
    # a truncated archive and a file that is no archive
    (tmp_path / "t/test/cat/big.png").unlink()
    with tarfile.open(tmp_path / "a.tar.xz", "w:xz") as t:
        t.add(tmp_path / "t", "t")
    blob = (tmp_path / "a.tar.xz").read_bytes()
    (tmp_path / "cut.tar.xz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="cannot read archive .*cut.tar.xz.*truncated or corrupt"):
        load_data(tmp_path / "cut.tar.xz")
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(ValueError, match="cannot read archive"):
        load_data(tmp_path / "junk.zip")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="neither a folder nor an archive"):
        load_data(tmp_path / "notes.txt")


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path) -> None:
    truth = _tree(tmp_path / "t", n=2)
    load_data(tmp_path / "t", cache=tmp_path / "c")
    (cache_file,) = (tmp_path / "c").glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    with pytest.warns(UserWarning, match="ignoring unreadable data cache"):
        d = load_data(tmp_path / "t", cache=tmp_path / "c")
    _check_against(d, truth)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_reader_agrees_with_tarfile_on_long_names(tmp_path: Path, fmt: int) -> None:
    from edgecnn.data.archive import iter_tar

    deep = "/".join(["a_rather_long_folder_name"] * 5)  # 129 characters: prefix, GNU 'L' or pax 'path'
    files = {f"{deep}/x/{i}.bin": os.urandom(100 * i + 1) for i in range(3)}
    for rel, blob in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(blob)
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz", format=fmt) as t:
        t.add(tmp_path / "src", "")
    ours = {m.name: m.read() for m in iter_tar(tmp_path / "a.tar.gz") if not m.is_dir}
    with tarfile.open(tmp_path / "a.tar.gz") as t:
        ref = {m.name: t.extractfile(m).read() for m in t if m.isfile()}
    assert ours == ref == files


# ----------------------------------------------------------------------------------------------- CIFAR-10 slice
@pytest.fixture(scope="module")
def cifar_slice(tmp_path_factory: pytest.TempPathFactory):
    if not CIFAR.is_file():
        pytest.skip(f"{CIFAR} not present")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shared archive has no unreadable image
        return load_data(CIFAR, limit=20, cache=tmp_path_factory.mktemp("cifar-cache"))


def test_cifar_slice_counts_classes_and_statistics(cifar_slice) -> None:
    d = cifar_slice
    assert d.classes == CIFAR_CLASSES and d.skipped == 0
    assert d.train.images.shape == (200, 3, 32, 32) and d.test.images.shape == (200, 3, 32, 32)
    assert np.bincount(d.train.labels.numpy()).tolist() == [20] * 10
    assert np.bincount(d.test.labels.numpy()).tolist() == [20] * 10
    # the first 20 files of each class, in archive order
    assert d.train.paths[:3] == ("train/airplane/0000.jpg", "train/airplane/0001.jpg", "train/airplane/0002.jpg")
    assert d.test.paths[-1] == "test/truck/0019.jpg"
    assert all(d.classes[lbl] == p.split("/")[1] for lbl, p in zip(d.train.labels.tolist(), d.train.paths))
    x = d.train.images.double() / 255
    assert d.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert d.std == pytest.approx(x.permute(1, 0, 2, 3).reshape(3, -1).std(1, unbiased=False).tolist(), abs=1e-12)


def test_cifar_pixels_equal_pillow_decode_of_the_same_file(cifar_slice) -> None:
    d = cifar_slice
    want = {"train/airplane/0000.jpg", "train/airplane/0013.jpg", "train/automobile/0007.jpg"}
    found = {}
    with tarfile.open(CIFAR, "r|xz") as tf:
        for m in tf:
            if m.name in want:
                found[m.name] = np.asarray(Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB"))
                if len(found) == len(want):
                    break
    for name, pixels in found.items():
        i = d.train.paths.index(name)
        np.testing.assert_array_equal(d.train.images[i].permute(1, 2, 0).numpy(), pixels)
    assert len(found) == 3
