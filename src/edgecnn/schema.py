"""Validation of the documents edgecnn reads back: checkpoints, latency tables, decoded-data caches.

Loading a file safely (``torch.load(weights_only=True)``, ``np.load(allow_pickle=False)``,
``json.loads``) means nothing in it runs — not that what it holds makes sense.
A tampered or damaged file can still say ``arch = 'conv_r100000000_c8 gap fc'``,
hold a ``state_dict`` that is a list, a NaN normalisation mean or a negative
latency. Every loader passes what it read through one of the checks here
before any field is used, so such a file gives a ``ValueError`` that names the
file and the field (``ckpt.pt: field 'data.mean[1]' must be a finite number,
got nan``), never a traceback deep inside training or a silently wrong answer.

The checks are structural and bounded by :mod:`edgecnn.limits`; the meaning of
each document (versions, fingerprints) stays with its owner module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecnn.limits import MAX_CHANNELS, MAX_FILE_MB, MAX_INPUT, MAX_JSON_DEPTH
from edgecnn.plan import resolve


class Fields:
    """Field checks of one document; every error names ``source`` and the field's path."""

    def __init__(self, source: str, fix: str) -> None:
        self.source, self.fix = source, fix

    def fail(self, name: str, need: str, got: Any) -> ValueError:
        shown = repr(got) if not isinstance(got, (dict, list, tuple, torch.Tensor)) else type(got).__name__
        return ValueError(f"{self.source}: field '{name}' must be {need}, got {shown[:80]}; {self.fix}")

    def integer(self, name: str, v: Any, lo: int = 0, hi: float = math.inf) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            rng = f">= {lo}" if hi == math.inf else f"in [{lo}, {int(hi):,}]"
            raise self.fail(name, f"an integer {rng}", v)
        return v

    def number(self, name: str, v: Any, lo: float = -math.inf, *, positive: bool = False) -> float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= lo
        if not ok or (positive and v <= 0):
            need = "a finite number" + (" > 0" if positive else "" if lo == -math.inf else f" >= {lo:g}")
            raise self.fail(name, need, v)
        return float(v)

    def accuracy(self, name: str, v: Any) -> float:
        """A top-1 (or any share) in [0, 1]."""
        acc = self.number(name, v, 0.0)
        if acc > 1:
            raise self.fail(name, "an accuracy in [0, 1]", acc)
        return acc

    def text(self, name: str, v: Any, *, optional: bool = False) -> str | None:
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise self.fail(name, "a string" + (" or null" if optional else ""), v)
        return v

    def mapping(self, name: str, v: Any, *, optional: bool = False) -> Mapping[str, Any] | None:
        if v is None and optional:
            return None
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise self.fail(name, "a dict with string keys" + (" or null" if optional else ""), v)
        return v

    def listing(self, name: str, v: Any) -> list[Any]:
        if not isinstance(v, (list, tuple)):
            raise self.fail(name, "a list", v)
        return list(v)

    def tensors(self, name: str, v: Any, *, optional: bool = False) -> None:
        if v is None and optional:
            return
        if not isinstance(v, dict):
            raise self.fail(name, "a dict of tensors (name -> tensor)", v)
        for k, t in v.items():
            if not isinstance(k, str) or not isinstance(t, torch.Tensor):
                raise self.fail(f"{name}[{k!r}]", "a tensor under a string key", t)


# ---------------------------------------------------------------------------------------------- checkpoints
_CKPT_FIX = "the file is damaged or was not written by edgecnn; use another checkpoint"


def check_checkpoint(d: Mapping[str, Any], source: str) -> None:
    """Check the fields of a checkpoint dict (format and version already checked by its owner).

    The arch string is parsed and resolved under :mod:`edgecnn.limits`, so a
    checkpoint cannot ask for a network too large to expand or allocate.
    """
    f = Fields(source, _CKPT_FIX)
    max_ch = int(MAX_CHANNELS.value())
    arch = f.text("arch", d.get("arch"), optional=True)
    num_classes = f.integer("num_classes", d.get("num_classes"), 1, max_ch)
    in_chans = f.integer("in_chans", d.get("in_chans"), 1, max_ch)
    f.tensors("state_dict", d.get("state_dict"))
    f.tensors("ema_state_dict", d.get("ema_state_dict"), optional=True)
    f.mapping("optimizer", d.get("optimizer"), optional=True)
    for name in ("epoch", "batch", "step"):
        if name in d:
            f.integer(name, d[name], 0)
    for name in ("rng", "config", "data", "partial"):
        if name in d:
            f.mapping(name, d[name])
    for k, v in (d.get("partial") or {}).items():
        f.number(f"partial.{k}", v, 0)
    for i, h in enumerate(f.listing("history", d.get("history", []))):
        f.mapping(f"history[{i}]", h)
    image_size = _check_data_meta(f, d.get("data") or {}, num_classes, in_chans)
    if arch is not None:
        try:
            resolve(arch, num_classes=num_classes, in_chans=in_chans, input_size=image_size)
        except ValueError as exc:
            raise ValueError(f"{source}: field 'arch' {arch[:60]!r}: {str(exc).splitlines()[0]}") from None


def _check_data_meta(f: Fields, data: Mapping[str, Any], num_classes: int, in_chans: int) -> int | None:
    """The training data's description: name, classes, normalisation and input size; returns the size."""
    if "name" in data:
        f.text("data.name", data["name"])
    if "classes" in data:
        classes = f.listing("data.classes", data["classes"])
        if len(classes) != num_classes or not all(isinstance(c, str) for c in classes):
            raise f.fail("data.classes", f"a list of {num_classes} class names (num_classes)", data["classes"])
    for name in ("mean", "std"):
        if name in data:
            values = f.listing(f"data.{name}", data[name])
            if len(values) != in_chans:
                raise f.fail(f"data.{name}", f"{in_chans} numbers (one per input channel)", values)
            for i, v in enumerate(values):
                f.number(f"data.{name}[{i}]", v, positive=name == "std")
    if "in_chans" in data and data["in_chans"] != in_chans:
        raise f.fail("data.in_chans", f"{in_chans} (the checkpoint's in_chans)", data["in_chans"])
    if data.get("image_size") is None:
        return None
    return f.integer("data.image_size", data["image_size"], 1, MAX_INPUT.value())


# ----------------------------------------------------------------------------------------------- JSON files
def load_json(text: str, source: str, *, fix: str) -> Any:
    """``json.loads`` with bounded size and nesting; ``ValueError`` naming ``source`` otherwise."""
    mb = len(text) / 2**20
    if mb > MAX_FILE_MB.value():
        MAX_FILE_MB.check(mb, source)
    depth = _max_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{source}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH}); {fix}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and json's own others (a 5000-digit integer)
        raise ValueError(f"{source} is not valid JSON ({str(exc)[:100]}); {fix}") from None


def read_json_file(path: str | Path, what: str, *, fix: str) -> Any:
    """The JSON document in the file ``path`` (named ``what`` in errors, e.g. "search state"): its size bounded
    (``EDGECNN_MAX_FILE_MB``) before it is read, then :func:`load_json`; ``ValueError`` naming the file and ``fix``
    for text that is not UTF-8."""
    p = Path(path)
    MAX_FILE_MB.check(p.stat().st_size / 2**20, f"{what} {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{p} is not UTF-8 text; {fix}") from None
    return load_json(text, str(p), fix=fix)


def _max_depth(text: str) -> int:
    """Deepest bracket nesting outside strings (a linear scan: no recursion on hostile input)."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


_TABLE_FIX = "the table is damaged or edited by hand: rebuild it with `edgecnn latency build-table`"
ENTRY_FIELDS = ("median_ms", "q1_ms", "q3_ms", "min_ms", "repeats")


def check_table(d: Any, source: str) -> None:
    """Check a latency table's JSON (format and version already checked by its owner).

    Block entries are finite and ``>= 0`` ms; ``overhead|…`` entries are a
    measured total minus block entries, so they are finite but may dip below 0.
    """
    f = Fields(source, _TABLE_FIX)
    fp = f.mapping("fingerprint", d.get("fingerprint")) or {}
    for name in ("cores", "threads"):
        if name in fp:
            f.integer(f"fingerprint.{name}", fp[name], 1, 1 << 16)
    for name in ("cpu", "backend", "device", "torch", "system", "cuda_name", "onnxruntime", "runtime", "isa"):
        if name in fp:
            f.text(f"fingerprint.{name}", fp[name], optional=name in ("cuda_name", "onnxruntime", "runtime", "isa"))
    for name in ("call_overhead_ms", "reference_ms"):
        if d.get(name) is not None:
            f.number(name, d[name], 0, positive=name == "reference_ms")
    cal = f.mapping("calibration", d.get("calibration"), optional=True)
    if cal is not None:
        for g, v in (f.mapping("calibration.scales", cal.get("scales")) or {}).items():
            f.number(f"calibration.scales.{g}", v, positive=True)
        f.integer("calibration.networks", cal.get("networks"), 0)
        for name in ("fit_mape", "raw_mape"):
            f.number(f"calibration.{name}", cal.get(name), 0)
    entries = f.mapping("entries", d.get("entries", {})) or {}
    for key, e in entries.items():
        where = f"entries[{key[:60]!r}]"
        f.mapping(where, e)
        if set(e) != set(ENTRY_FIELDS):
            raise f.fail(where, f"a dict of exactly {', '.join(ENTRY_FIELDS)}", sorted(e))
        lo = -math.inf if key.startswith("overhead|") else 0.0
        for name in ENTRY_FIELDS[:4]:
            f.number(f"{where}.{name}", e[name], lo)
        f.integer(f"{where}.repeats", e["repeats"], 0)


# --------------------------------------------------------------------------------------------- data caches
def check_cache(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Check a decoded-data cache (``.npz``): dtypes, shapes, one label and path per image, labels in range."""
    f = Fields(source, "it is damaged")
    for name in ("classes", "skipped", "n_skipped"):
        if name not in arrays:
            raise f.fail(name, "present", None)
    classes = arrays["classes"]
    if classes.ndim != 1 or classes.dtype.kind != "U" or len(classes) < 1:
        raise f.fail("classes", "a non-empty 1-D array of names", f"{classes.dtype} {classes.shape}")
    if arrays["n_skipped"].shape != () or arrays["n_skipped"].dtype.kind not in "iu":
        raise f.fail("n_skipped", "an integer", f"{arrays['n_skipped'].dtype} {arrays['n_skipped'].shape}")
    if arrays["skipped"].ndim != 1 or arrays["skipped"].dtype.kind not in "U":
        raise f.fail("skipped", "a 1-D array of strings", f"{arrays['skipped'].dtype} {arrays['skipped'].shape}")
    splits = sorted({k.rsplit("_", 1)[0] for k in arrays if k.endswith(("_images", "_labels", "_paths"))})
    if not splits:
        raise f.fail("train_images", "present", None)
    for s in splits:
        images, labels, paths = (arrays.get(f"{s}_{part}") for part in ("images", "labels", "paths"))
        if images is None or images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] < 1:
            got = None if images is None else f"{images.dtype} {images.shape}"
            raise f.fail(f"{s}_images", "a uint8 N×C×H×W array with N >= 1", got)
        n = images.shape[0]
        if labels is None or labels.dtype.kind not in "iu" or labels.shape != (n,):
            raise f.fail(f"{s}_labels", f"{n} integer labels", None if labels is None else labels.shape)
        if labels.min() < 0 or labels.max() >= len(classes):
            raise f.fail(f"{s}_labels", f"labels in [0, {len(classes) - 1}]", int(labels.max()))
        if paths is None or paths.shape != (n,):
            raise f.fail(f"{s}_paths", f"{n} paths", None if paths is None else paths.shape)
