"""ImageFolder trees and archives (CIFAR-10 as JPEG files), decoded once into a cache file.

Layout, as torchvision's ``ImageFolder`` (class = the folder an image sits in)::

    [prefix/]train/<class>/<image>     [prefix/]test/<class>/<image>   ("val", "valid", "validation" = test)
    [prefix/]<class>/<image>           (no split folders: split stratified, fixed seed)

The source is a folder or a ``.tar``/``.tar.gz``/``.tar.xz``/``.tar.bz2``/``.zip``
archive. Images are decoded with Pillow to RGB ``uint8`` once and saved to
``<cache>/<name>-<key>.npz`` (written to a temporary file, then
``os.replace``), keyed by the source's absolute path, size and modification
time (every file's, for a folder) and the options that change the pixels; a
later run loads that file in about a second with ``numpy.load(...,
allow_pickle=False)``: nothing in a cache file can execute code.

Errors: a missing path stops with ``FileNotFoundError``; an unreadable or
truncated archive, an empty class folder, a class in test that train lacks,
or images of different sizes (without ``image_size``) stop with ``ValueError``.
An image Pillow cannot decode is **skipped and counted** (one warning naming
the count and the first file); ``strict=True`` stops at it instead — also
when the decoding comes from a cache a non-strict run wrote (the cache records
what it skipped, so the outcome never depends on which run came first).

A ``limit`` (images per class and split) reads only what it needs: a
``.tar.xz`` must still be decompressed in order (:mod:`edgecnn.data.archive`
reads the tar headers itself, twice as fast as ``tarfile``), but files past
the limit are not decoded, and reading stops once every class of a later
split is full (the shared CIFAR-10 archive, 20 per class: ~3 s).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgecnn.atomic import atomic_write
from edgecnn.data.archive import ArchiveError, iter_tar, iter_zip
from edgecnn.limits import MAX_MEMORY_GB
from edgecnn.schema import check_cache
from edgecnn.data.sets import Augment, DataSet, ImageSplit, make_dataset, stratified_split

CACHE_FORMAT = 1  # bump when the cache layout or the decoding changes
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"})
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".zip")
SPLIT_NAMES = {"train": "train", "test": "test", "val": "test", "valid": "test", "validation": "test"}
POOL = "all"  # the split name of images in a tree without split folders


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Folder of decoded-data caches: ``cache``, else ``$EDGECNN_CACHE``, else ``~/.cache/edgecnn``."""
    if cache is not None:
        return Path(cache)
    env = os.environ.get("EDGECNN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgecnn"


@dataclass
class _Entry:
    """One file or folder of the source, as its path inside the tree."""

    parts: tuple[str, ...]  # path components below the source root
    is_dir: bool
    read: Callable[[], bytes]  # the file's bytes; valid only until the next entry of a tar stream


@dataclass
class _Decoded:
    """What decoding a tree gives, before the class names are sorted into labels."""

    images: dict[str, list[np.ndarray]] = field(default_factory=dict)  # split -> H×W×3 arrays
    names: dict[str, list[str]] = field(default_factory=dict)  # split -> class name of each image
    paths: dict[str, list[str]] = field(default_factory=dict)  # split -> relative path of each image
    dirs: set[tuple[str, ...]] = field(default_factory=set)  # folder entries seen (for the empty-class check)
    image_dirs: set[tuple[str, ...]] = field(default_factory=set)  # folders holding at least one image file
    skipped: list[str] = field(default_factory=list)  # "path: reason" of each unreadable image
    size: tuple[int, int] | None = None  # (width, height) of the first image
    first_path: str = ""


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _clean_parts(name: str) -> tuple[str, ...] | None:
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if not parts or any(p[0] == "." or p == "__MACOSX" for p in parts):
        return None  # hidden files, macOS resource forks, escapes from the root ("..")
    return parts


def _walk_folder(root: Path) -> Iterator[_Entry]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root).parts
        for d in dirnames:
            yield _Entry(rel + (d,), True, lambda: b"")
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            yield _Entry(rel + (f,), False, lambda full=full: Path(full).read_bytes())


def _walk_archive(path: Path) -> Iterator[_Entry]:
    members = iter_zip(path) if path.name.lower().endswith(".zip") else iter_tar(path)
    for m in members:
        parts = _clean_parts(m.name)
        if parts is not None:
            yield _Entry(parts, m.is_dir, m.read)


def _where(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """(split, class) of an image path, or None for a file outside any class folder."""
    if len(parts) >= 3 and parts[-3].lower() in SPLIT_NAMES:
        return SPLIT_NAMES[parts[-3].lower()], parts[-2]
    if len(parts) >= 2:
        return POOL, parts[-2]
    return None


_BYTESIO = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")  # Pillow names an in-memory file by its repr


def _decode(data: bytes, size: tuple[int, int] | None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    if size is not None and rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _full(counts: dict[tuple[str, str], int], limit: int) -> bool:
    """True once two splits were seen and every class of each has ``limit`` images."""
    splits = {s for s, _ in counts}
    classes = {c for _, c in counts}
    return len(splits) >= 2 and all(counts.get((s, c), 0) >= limit for s in splits for c in classes)


def _read_tree(entries: Iterator[_Entry], *, image_size: int | None, limit: int | None, strict: bool,
               progress: Callable[[int], None] | None) -> _Decoded:  # fmt: skip
    out = _Decoded()
    counts: dict[tuple[str, str], int] = {}
    dirty = False
    held, budget = 0, MAX_MEMORY_GB.value() * 1e9 / 2  # the decoded images are stacked once more at the end
    size = (image_size, image_size) if image_size else None
    for e in entries:
        if e.is_dir:
            out.dirs.add(e.parts)
            continue
        where = _where(e.parts)
        if where is None or os.path.splitext(e.parts[-1])[1].lower() not in IMAGE_EXTS:
            continue
        out.image_dirs.add(e.parts[:-1])
        if limit is not None and counts.get(where, 0) >= limit:
            if dirty and _full(counts, limit):
                break
            dirty = False  # counts only change when an image is taken
            continue
        rel = "/".join(e.parts)
        try:  # a folder's unreadable file is an OSError here; a broken archive stream raises other errors
            img = _decode(e.read(), size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            why = _BYTESIO.sub("the file", str(exc))
            if strict:
                raise ValueError(f"cannot decode image {rel}: {why}; fix or remove the file, "
                                 "or drop strict (--strict) to skip it") from None  # fmt: skip
            out.skipped.append(f"{rel}: {why}")
            continue
        if out.size is None:
            out.size, out.first_path = (img.shape[1], img.shape[0]), rel
        elif (img.shape[1], img.shape[0]) != out.size:
            raise ValueError(
                f"images differ in size: {out.size[0]}×{out.size[1]} in {out.first_path}, "
                f"{img.shape[1]}×{img.shape[0]} in {rel}; pass image_size (--image-size) to resize them "
                "while decoding"
            )
        split, cls = where
        held += img.nbytes
        if held > budget:
            MAX_MEMORY_GB.check(2 * held / 1e9, f"decoding {rel} and the images before it")
        out.images.setdefault(split, []).append(img)
        out.names.setdefault(split, []).append(cls)
        out.paths.setdefault(split, []).append(rel)
        counts[where] = counts.get(where, 0) + 1
        dirty = True
        if progress is not None:
            progress(1)
    return out


def _check_classes(d: _Decoded, source: Path) -> tuple[str, ...]:
    if not d.images:
        hint = f" ({len(d.skipped)} unreadable, first: {d.skipped[0]})" if d.skipped else ""
        raise ValueError(
            f"no images found in {source}{hint}; expected train/<class>/*.jpg and test/<class>/*.jpg "
            "or <class>/*.jpg"
        )
    if POOL in d.images and len(d.images) > 1:
        raise ValueError(f"{source} mixes split folders (train/, test/) with class folders at the top; "
                         "use one layout")  # fmt: skip
    decoded = {tuple(p.split("/")[:-1]) for paths in d.paths.values() for p in paths}
    for parts in sorted(d.image_dirs - decoded):
        raise ValueError(f"class folder {'/'.join(parts)} in {source} has no readable images "
                         f"({len(d.skipped)} unreadable, first: {d.skipped[0]}); fix or remove it")  # fmt: skip
    parents = {p[:-1] for p in d.image_dirs}
    for parts in sorted(d.dirs):
        if parts[:-1] in parents and not any(q[: len(parts)] == parts for q in d.image_dirs):
            raise ValueError(f"class folder {'/'.join(parts)} in {source} has no images; "
                             "add images or remove the folder")  # fmt: skip
    train_classes = set(d.names.get("train", d.names.get(POOL, [])))
    extra = set(d.names.get("test", [])) - train_classes
    if extra and "train" in d.names:
        raise ValueError(f"classes {sorted(extra)} have test images but no train images in {source}")
    return tuple(sorted(set().union(*(set(v) for v in d.names.values()))))


def _fingerprint(source: Path) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}|{source.resolve()}".encode())
    if source.is_dir():
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for f in sorted(filenames):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{os.path.relpath(os.path.join(dirpath, f), source)}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        st = source.stat()
        h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _cache_path(source: Path, cache: Path, image_size: int | None, limit: int | None) -> Path:
    key = hashlib.sha256(f"{_fingerprint(source)}|{image_size}|{limit}".encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.name.split(".")[0]) or "data"
    return cache / f"{stem}-{key}.npz"


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as exc:  # a read-only home, a full disk: work on without the cache
        warnings.warn(f"could not write the data cache {path} ({exc}); set EDGECNN_CACHE to a writable folder",
                      stacklevel=3)  # fmt: skip


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        check_cache(arrays, "the cache")  # a tampered cache: shapes, dtypes, labels in range
        return arrays
    except Exception as exc:  # a truncated, foreign or tampered file: decode again
        warnings.warn(f"ignoring unreadable data cache {path} ({exc}); decoding the source again", stacklevel=3)
        return None


def _decode_source(source: Path, *, image_size: int | None, limit: int | None, strict: bool,
                   progress: bool) -> dict[str, np.ndarray]:  # fmt: skip
    if source.is_dir():
        entries: Iterator[_Entry] = _walk_folder(source)
    elif _is_archive(source):
        entries = _walk_archive(source)
    else:
        raise ValueError(f"{source} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    try:
        if progress:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task(f"decoding {source.name} (once; cached)", total=None)
                d = _read_tree(entries, image_size=image_size, limit=limit, strict=strict,
                               progress=lambda n: bar.advance(task, n))  # fmt: skip
        else:
            d = _read_tree(entries, image_size=image_size, limit=limit, strict=strict, progress=None)
    except ArchiveError as exc:
        raise ValueError(f"cannot read archive {source} ({exc}); it is truncated or corrupt: "
                         "download it again") from None  # fmt: skip
    classes = _check_classes(d, source)
    label = {c: i for i, c in enumerate(classes)}
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes, dtype=str),
                                     "skipped": np.array(d.skipped[:20], dtype=str).reshape(-1),
                                     "n_skipped": np.array(len(d.skipped), dtype=np.int64)}  # fmt: skip
    for split, imgs in d.images.items():
        arrays[f"{split}_images"] = np.ascontiguousarray(np.stack(imgs).transpose(0, 3, 1, 2))
        arrays[f"{split}_labels"] = np.array([label[n] for n in d.names[split]], dtype=np.int64)
        arrays[f"{split}_paths"] = np.array(d.paths[split], dtype=str)
    return arrays


def _first_skipped(arrays: dict[str, np.ndarray]) -> str:
    """``"path: reason"`` of the first image the cached decoding skipped."""
    return str(arrays["skipped"][0]) if len(arrays["skipped"]) else "?"


def _split(arrays: dict[str, np.ndarray], name: str) -> ImageSplit:
    return ImageSplit(torch.from_numpy(arrays[f"{name}_images"]), torch.from_numpy(arrays[f"{name}_labels"]),
                      tuple(arrays[f"{name}_paths"].tolist()))  # fmt: skip


def load_image_folder(
    source: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    limit: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache: str | os.PathLike[str] | None = None,
    strict: bool = False,
    progress: bool = False,
) -> DataSet:
    """An ImageFolder tree or archive as a :class:`DataSet` (decoded once, then loaded from the cache).

    See the module docstring for the layout, the cache and which errors stop.
    ``cache=False``-like behaviour: pass a fresh temporary folder.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"data path {source} does not exist; pass --data digits, a CIFAR-10 archive or an ImageFolder folder"
        )
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images per class, got {limit}")
    cpath = _cache_path(path, cache_dir(cache), image_size, limit)
    arrays = _load_cache(cpath)
    if arrays is None:
        arrays = _decode_source(path, image_size=image_size, limit=limit, strict=strict, progress=progress)
        _save_cache(cpath, arrays)
    n_skipped = int(arrays["n_skipped"])
    if strict and n_skipped:  # a cache from a non-strict run: the same files are still unreadable
        raise ValueError(f"cannot decode image {_first_skipped(arrays)} (as the cached decoding of {source} "
                         "recorded); fix or remove the file, or drop strict (--strict) to skip it")  # fmt: skip
    if n_skipped:
        first = _first_skipped(arrays)
        warnings.warn(f"{source}: skipped {n_skipped} unreadable images (first: {first}); strict=True stops instead",
                      stacklevel=2)  # fmt: skip
    classes = tuple(arrays["classes"].tolist())
    if "train_images" in arrays:
        train = _split(arrays, "train")
        if "test_images" in arrays:
            test = _split(arrays, "test")
        else:  # a tree with train/ only: hold out a stratified part of it
            tr, te = stratified_split(train.labels.numpy(), test_fraction, seed)
            train, test = train.subset(tr), train.subset(te)
    elif "test_images" in arrays:
        raise ValueError(f"{source} has a test split but no train split; add train/<class>/ folders")
    else:
        pool = _split(arrays, POOL)
        tr, te = stratified_split(pool.labels.numpy(), test_fraction, seed)
        train, test = pool.subset(tr), pool.subset(te)
    return make_dataset(str(source), train, test, classes, augment=Augment(), skipped=n_skipped)
