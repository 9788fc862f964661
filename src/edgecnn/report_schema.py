"""What each section of a results document must hold before :mod:`edgecnn.report` draws it.

A run folder is something people share, so ``results.json`` is untrusted
input: a number may be a string (``"map_size": ["<script>…", 4]``), a list a
dict, a field missing, a value absurd. :func:`validate` checks the document
section by section — types, shapes, ranges, one schema per section of
docs/report.md — and returns only what passed, with one note per section it
left out (``section 'cam' skipped: field 'cam.map_size[0]' must be an integer
in [1, 1,048,576], got '<script>'``). The report draws the checked document
and shows the notes, so a damaged section costs that section, never the page,
and never a traceback.

The schemas are small combinators (:class:`Num`, :class:`Int`, :class:`Text`,
:class:`Flag`, :class:`Items`, :class:`Obj`, :class:`MapOf`, :class:`OneOf`,
:class:`Grid`); each raises :class:`Bad` naming the field's path, what it must
be and (as ``repr``, so control characters stay inert on a terminal) what it is.
Escaping is not their job: the report escapes every value wherever it enters
HTML or Markdown, checked or not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "MAX_CAM_IMAGES", "SECTIONS", "Bad", "Section", "validate"]

KINDS = ("demo", "train", "explain", "analyze", "search", "compress")  # the kinds edgecnn writes today
_PLAIN_KIND = re.compile(r"[A-Za-z0-9-]{1,40}")
BIG = 2**63  # integers above this are no count edgecnn writes
SIDE = 1 << 20  # map and image sides: far above any input edgecnn builds (EDGECNN_MAX_INPUT is 8192)
MANY = 100_000  # rows of one table (candidates, layers, epochs)
MAX_CAM_IMAGES = 10_000  # overlays of one cam section (edgecnn explain refuses more)


class Bad(ValueError):
    """A field that does not fit its schema: ``path``, what it ``need``-s, and what it holds."""

    def __init__(self, path: str, need: str, got: Any) -> None:
        self.path, self.need, self.got = path, need, got
        super().__init__(f"field '{path}' must be {need}, got {shown(got)}")


def shown(v: Any) -> str:
    """A short, inert description of a value: ``repr`` of a scalar (cut at 60 characters), else its type."""
    if isinstance(v, dict):
        return f"a dict of {len(v)} key(s)"
    if isinstance(v, list):
        return f"a list of {len(v)} item(s)"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _key(k: str) -> str:
    """A dict key inside a field path: plain names as ``.name``, anything else as ``['…']`` (repr, cut)."""
    return f".{k}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,40}", k) else f"[{shown(k)}]"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Spec:
    """A schema for one JSON value; ``null`` says whether ``None`` (JSON ``null``, also NaN as written) passes."""

    null: bool = True

    def check(self, v: Any, path: str) -> None:
        """Raise :class:`Bad` unless ``v`` fits."""
        if v is None:
            if not self.null:
                raise Bad(path, self.need(), v)
            return
        self.check_value(v, path)

    def check_value(self, v: Any, path: str) -> None:  # pragma: no cover - every spec overrides it
        raise NotImplementedError

    def need(self) -> str:  # pragma: no cover - every spec overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class Num(Spec):
    """A finite number (not a boolean) in ``[lo, hi]``; ``positive``: also ``> 0``."""

    lo: float = -math.inf
    hi: float = math.inf
    positive: bool = False
    null: bool = True

    def need(self) -> str:
        rng = ("" if self.lo == -math.inf and self.hi == math.inf else f" in [{self.lo:g}, {self.hi:g}]"
               if self.hi != math.inf else f" >= {self.lo:g}")  # fmt: skip
        return "a finite number" + (" > 0" if self.positive else rng) + (" or null" if self.null else "")

    def check_value(self, v: Any, path: str) -> None:
        if not _is_number(v) or not math.isfinite(v) or not self.lo <= v <= self.hi or (self.positive and v <= 0):
            raise Bad(path, self.need(), v)


@dataclass(frozen=True)
class Int(Spec):
    """An integer (not a boolean) in ``[lo, hi]``."""

    lo: int = 0
    hi: int = BIG
    null: bool = True

    def need(self) -> str:
        return f"an integer in [{self.lo:,}, {self.hi:,}]" + (" or null" if self.null else "")

    def check_value(self, v: Any, path: str) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not self.lo <= v <= self.hi:
            raise Bad(path, self.need(), v)


@dataclass(frozen=True)
class Text(Spec):
    """A string of at most ``max_len`` characters."""

    max_len: int = 100_000
    null: bool = True

    def need(self) -> str:
        return f"a string of at most {self.max_len:,} characters" + (" or null" if self.null else "")

    def check_value(self, v: Any, path: str) -> None:
        if not isinstance(v, str) or len(v) > self.max_len:
            raise Bad(path, self.need(), v)


@dataclass(frozen=True)
class Flag(Spec):
    """``true`` or ``false``."""

    null: bool = True

    def need(self) -> str:
        return "true or false" + (" or null" if self.null else "")

    def check_value(self, v: Any, path: str) -> None:
        if not isinstance(v, bool):
            raise Bad(path, self.need(), v)


@dataclass(frozen=True)
class Scalar(Spec):
    """Any JSON scalar: a string (bounded), a finite number, a boolean or null."""

    max_len: int = 100_000
    null: bool = True

    def need(self) -> str:
        return f"a string of at most {self.max_len:,} characters, a finite number or a boolean"

    def check_value(self, v: Any, path: str) -> None:
        ok = (isinstance(v, bool) or (_is_number(v) and math.isfinite(v))
              or (isinstance(v, str) and len(v) <= self.max_len))  # fmt: skip
        if not ok:
            raise Bad(path, self.need(), v)


@dataclass(frozen=True)
class Items(Spec):
    """A list of ``item``-s; its length in ``[min_len, max_len]`` (``exact``: exactly that many)."""

    item: Spec
    max_len: int = MANY
    min_len: int = 0
    exact: int | None = None
    null: bool = True

    def need(self) -> str:
        n = (f"{self.exact}" if self.exact is not None else f"at most {self.max_len:,}" if not self.min_len
             else f"{self.min_len} to {self.max_len:,}")  # fmt: skip
        return f"a list of {n} item(s)" + (" or null" if self.null else "")

    def check_value(self, v: Any, path: str) -> None:
        if not isinstance(v, list):
            raise Bad(path, self.need(), v)
        n = len(v)
        if (self.exact is not None and n != self.exact) or not self.min_len <= n <= self.max_len:
            raise Bad(path, self.need(), v)
        for i, x in enumerate(v):
            self.item.check(x, f"{path}[{i}]")


@dataclass(frozen=True)
class Obj(Spec):
    """A dict with string keys; the named ``fields`` checked where present, ``required`` ones present.

    Other keys are allowed and left alone (a newer edgecnn may add fields): the
    report draws only the fields named here.
    """

    fields: Mapping[str, Spec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    max_keys: int = 10_000
    null: bool = True

    def need(self) -> str:
        return "a dict with string keys" + (" or null" if self.null else "")

    def check_value(self, v: Any, path: str) -> None:
        if not isinstance(v, dict) or len(v) > self.max_keys or not all(isinstance(k, str) for k in v):
            raise Bad(path, self.need(), v)
        for k in self.required:
            if k not in v:
                raise Bad(f"{path}{_key(k)}", "present", "nothing")
        for k, spec in self.fields.items():
            if k in v:
                spec.check(v[k], f"{path}{_key(k)}")


@dataclass(frozen=True)
class MapOf(Spec):
    """A dict from (short) string keys to ``value``-s, at most ``max_len`` of them."""

    value: Spec
    max_len: int = 1000
    min_len: int = 0
    key_len: int = 200
    null: bool = True

    def need(self) -> str:
        return f"a dict of {self.min_len} to {self.max_len:,} entries with string keys" + (
            " or null" if self.null else "")  # fmt: skip

    def check_value(self, v: Any, path: str) -> None:
        if not isinstance(v, dict) or not self.min_len <= len(v) <= self.max_len:
            raise Bad(path, self.need(), v)
        for k, x in v.items():
            if not isinstance(k, str) or len(k) > self.key_len:
                raise Bad(f"{path} key", f"a string of at most {self.key_len} characters", k)
            self.value.check(x, f"{path}{_key(k)}")


@dataclass(frozen=True)
class OneOf(Spec):
    """The first of ``options`` that fits."""

    options: tuple[Spec, ...]
    null: bool = True

    def need(self) -> str:
        return " or ".join(o.need() for o in self.options)

    def check_value(self, v: Any, path: str) -> None:
        for o in self.options:
            try:
                o.check(v, path)
                return
            except Bad:
                continue
        raise Bad(path, self.need(), v)


@dataclass(frozen=True)
class Grid(Spec):
    """A 1-D list or a rectangular 2-D list of finite numbers (null allowed), each side in [1, ``max_side``]."""

    max_side: int = 8192
    null: bool = True

    def need(self) -> str:
        return f"a 1-D or rectangular 2-D list of numbers, each side 1 to {self.max_side:,}"

    def check_value(self, v: Any, path: str) -> None:
        cell = Num()
        if not isinstance(v, list) or not 1 <= len(v) <= self.max_side:
            raise Bad(path, self.need(), v)
        if all(not isinstance(r, list) for r in v):
            for i, x in enumerate(v):
                cell.check(x, f"{path}[{i}]")
            return
        width = len(v[0]) if isinstance(v[0], list) else -1
        for i, row in enumerate(v):
            if not isinstance(row, list) or len(row) != width or not 1 <= width <= self.max_side:
                raise Bad(f"{path}[{i}]", f"a row of {max(width, 1)} number(s) like the first", row)
            for j, x in enumerate(row):
                cell.check(x, f"{path}[{i}][{j}]")


def depth_of(v: Any) -> int:
    """Nesting of a list (1 for a flat list): the ERF map is 1-D or 2-D."""
    return 1 + depth_of(v[0]) if isinstance(v, list) and v else 0


# ------------------------------------------------------------------------------------------ the sections
N = Num()  # any finite number or null
MS = Num(0.0)  # milliseconds, seconds: >= 0
ACC = Num(0.0, 1.0)  # an accuracy (top-1, probability)
COUNT = Int(0)
T = Text()
NAME = Text(null=False)


def _obj(fields: Mapping[str, Spec], *required: str, null: bool = True) -> Obj:
    return Obj(fields, required, null=null)


POINT = _obj({"name": T, "latency_ms": Num(0.0, null=False), "top1": Num(0.0, 1.0, null=False), "generation": N},
             "latency_ms", "top1", null=False)  # fmt: skip
STATS = _obj({"arch": T, "top1": ACC, "latency_ms": MS, "macs": COUNT, "params": COUNT})
CANDIDATE = _obj({"index": COUNT, "arch": T, "lat_ms": Num(0.0, null=False), "acc": Num(null=False), "score": N,
                  "parent": COUNT, "generation": N}, "lat_ms", "acc", null=False)  # fmt: skip


@dataclass(frozen=True)
class Section:
    """One section of the page: the top-level fields it draws, checked together (or one by one: ``per_field``).

    ``kinds``: the document kinds it belongs to (``None``: any kind);
    ``not_kinds``: kinds whose fields of the same name mean something else
    (a search's ``history`` holds candidates, not epochs). ``trigger``: the
    field whose presence makes the section drawn (None: any of its fields).
    ``required``: the fields that must then be present. ``extra``: checks
    across fields (the front's indices point into the history).
    """

    name: str
    fields: Mapping[str, Spec]
    kinds: tuple[str, ...] | None = None
    not_kinds: tuple[str, ...] = ()
    per_field: bool = False
    trigger: str | None = None
    required: tuple[str, ...] = ()
    extra: Callable[[Mapping[str, Any]], None] | None = None

    def applies(self, kind: str | None) -> bool:
        return (self.kinds is None or kind in self.kinds) and kind not in self.not_kinds


def _erf_extra(d: Mapping[str, Any]) -> None:
    e = d.get("erf")
    if e and e.get("map") is not None and e.get("centre") is not None and len(e["centre"]) != depth_of(e["map"]):
        raise Bad("erf.centre", f"{depth_of(e['map'])} coordinate(s), one per axis of erf.map", e["centre"])


def _front_extra(d: Mapping[str, Any]) -> None:
    n = len(d.get("history") or [])
    for i, j in enumerate(d.get("front") or []):
        if j >= n:
            raise Bad(f"front[{i}]", f"an index into history (< {n})", j)


SECTIONS: tuple[Section, ...] = (
    Section("stages", {"stages": Items(_obj({"name": T, "title": T, "status": T, "seconds": MS, "note": T},
                                            null=False), max_len=1000)}),  # fmt: skip
    Section("summary", {
        "data": OneOf((Text(10_000), Obj())), "arch": T, "params": COUNT, "macs": COUNT,
        "receptive_field": OneOf((Text(1000), N)), "top1": ACC, "top5": ACC, "train_seconds": MS,
        "images_per_s": MS, "eager_ms": MS, "onnx_ms": MS, "checkpoint": T, "input_size": Int(1, SIDE),
        "machine": _obj({"cpu": T, "threads": Int(1, 1 << 16), "torch": T, "platform": T}),
    }, per_field=True),  # fmt: skip
    Section("compress", {"method": T, "met": Flag(), "before": STATS, "after": STATS,
                         "budget": _obj({"text": Scalar(1000), "value": Scalar(1000)}), "stopped": T, "backend": T,
                         "threads": Scalar(1000), "measured": _obj({"text": T}),
                         "int8": _obj({"target": T, "kept": T, "reason": T, "top1_fp32": ACC, "top1_int8": ACC,
                                       "latency_fp32_ms": MS, "latency_int8_ms": MS})},
            kinds=("compress",)),  # fmt: skip
    Section("blocks", {"blocks": Items(_obj({
        "name": NAME, "block": NAME, "params": Int(null=False), "macs": Int(null=False), "ms": MS, "rf": MS,
        "rf_jump": MS, "rf_whole": Flag()}, "name", "block", "params", "macs", "ms", null=False), max_len=10_000)}),
    Section("training", {"history": Items(_obj({"epoch": Int(null=False), "train_loss": N, "test_top1": ACC},
                                               "epoch", null=False))}, not_kinds=("search", "compress")),  # fmt: skip
    Section("analysis", {
        "model": T, "conventions": T, "totals": MapOf(Scalar(1000), max_len=100),
        "layers": Items(_obj({"name": T, "op": T, "out_shape": Items(Int(), max_len=8), "params": COUNT,
                              "macs": COUNT, "other_ops": COUNT, "activation_bytes": COUNT}, null=False)),
    }, kinds=("analyze",)),  # fmt: skip
    Section("erf", {"erf": _obj({
        "layer": T, "input_shape": Items(Int(1, SIDE), max_len=4), "map": Grid(null=False),
        "shape": Items(Int(1, SIDE), max_len=4), "centre": Items(N, min_len=1, max_len=2, null=False),
        "output_index": Items(COUNT, max_len=4), "samples": Int(1), "radius50": Num(0.0, null=False),
        "radius95": Num(0.0, null=False), "std": Items(N, max_len=4), "rf_size": Items(MS, max_len=4),
        "rf_whole": Flag(), "rf_global": Flag(), "weights": T}, "map", "centre", "radius50", "radius95")},
        extra=_erf_extra),  # fmt: skip
    Section("gradflow", {"gradflow": _obj({
        "batch": Int(1), "mode": T, "skips": COUNT, "weights": T, "inputs": T,
        "runs": MapOf(_obj({"loss": N, "attenuation": N, "layers": Items(_obj({
            "name": T, "kind": T, "output_grad_norm": MS, "weight_grad_norm": MS, "weight_norm": MS}, null=False),
            min_len=1, max_len=10_000, null=False)}, "layers", null=False), max_len=16)}, "runs")}),  # fmt: skip
    Section("cam", {"cam": _obj({
        "method": NAME, "interp": NAME, "convention": NAME, "layer": NAME,
        "map_size": Items(Int(1, SIDE, null=False), exact=2, null=False),
        "image_size": Items(Int(1, SIDE, null=False), exact=2, null=False),
        "scale": Items(Num(0.0, positive=True, null=False), exact=2, null=False),
        "images": Items(_obj({"file": NAME, "name": T, "label": T, "predicted": NAME,
                              "probability": Num(0.0, 1.0, null=False), "explained": NAME,
                              "peak_cell": Items(Int(0, SIDE), exact=2, null=False),
                              "peak_pixel": Items(N, exact=2)},
                             "file", "predicted", "probability", "explained", "peak_cell", null=False),
                        max_len=MAX_CAM_IMAGES, null=False),
    }, "method", "interp", "convention", "layer", "map_size", "image_size", "scale", "images")}),  # fmt: skip
    Section("netadapt", {"netadapt": _obj({"budget_ms": MS, "history": Items(_obj(
        {"iteration": Int(null=False), "latency_ms": MS, "top1": ACC, "block": T}, "iteration", null=False))})}),
    Section("search", {"search": _obj({"candidates": Items(POINT), "reference": Items(POINT)})}),
    Section("search run", {
        "space": _obj({"name": NAME, "input_size": Int(1, SIDE)}, "name"),
        "objective": _obj({"formula": NAME, "target_ms": Num(0.0, positive=True, null=False)}, "formula",
                          "target_ms"),
        "search": _obj({"algorithm": NAME}, "algorithm"), "estimator": T,
        "latency": _obj({"backend": NAME, "threads": Int(1, 1 << 16, null=False)}, "backend", "threads"),
        "history": Items(CANDIDATE, null=False), "front": Items(Int(null=False), null=False),
        "finalists": Items(_obj({"arch": NAME, "acc": N, "table_ms": MS, "measured_ms": MS, "measured_score": N,
                                 "score": N}, "arch", null=False)),
        "final": _obj({"epochs": COUNT, "top1": ACC, "measured_ms": MS}),
        "chosen": _obj({"arch": NAME, "index": Int(0, 1 << 16), "meets_target": Flag(), "reason": T}),
        "corrections": _obj({"rounds": Items(_obj({"round": Int(1, 1 << 16, null=False),
                                                   "ratio": Num(0.0, positive=True, null=False),
                                                   "table_target_ms": Num(0.0, positive=True, null=False),
                                                   "budget": Int(1, null=False)}, "round", "ratio", null=False)),
                             "stop": T, "asked": COUNT, "extra": COUNT}),
        "rerank": Items(_obj({"arch": NAME, "estimate": N, "short_top1": ACC, "blend": N, "short_speed": N, "by": T},
                              "arch", null=False)),  # fmt: skip
        "rerank_by": T,
        "references": Items(_obj({"label": NAME, "table_ms": MS, "measured_ms": MS, "top1": ACC, "acc": ACC,
                                  "what": T}, "label", null=False)),
    }, kinds=("search",), trigger="history", required=("space", "objective", "search", "latency", "front"),
        extra=_front_extra),  # fmt: skip
    Section("pareto", {"pareto": _obj({"points": Items(POINT), "reference": Items(POINT)})}),
)


def _kind(doc: Mapping[str, Any], notes: list[str]) -> str | None:
    """The document's kind if it is a plain word (else None), with a note when it is not one edgecnn writes."""
    kind = doc.get("kind")
    if not isinstance(kind, str) or not _PLAIN_KIND.fullmatch(kind):
        notes.append(f"field 'kind' must be a plain word such as 'demo', got {shown(kind)}; "
                     "drawing the sections this edgecnn knows")  # fmt: skip
        return None
    if kind not in KINDS:
        notes.append(f"kind {kind!r} is not one this edgecnn writes ({', '.join(KINDS)}); "
                     "drawing the sections it knows")  # fmt: skip
    return kind


def validate(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The fields of ``doc`` that fit their section's schema, and one note per section (or field) left out.

    The returned document holds ``kind`` (``None`` when it is no plain word),
    ``schema`` and the checked fields only; anything no section draws is
    dropped. A section is checked whole: one bad field skips it (the summary's
    scalars are checked one by one).
    """
    notes: list[str] = []
    kind = _kind(doc, notes)
    clean: dict[str, Any] = {"kind": kind, "schema": doc.get("schema")}
    for s in SECTIONS:
        if not s.applies(kind) or (s.trigger is not None and s.trigger not in doc):
            continue
        present = {k: doc[k] for k in s.fields if k in doc}
        if not present:
            continue
        if s.per_field:
            for k, v in present.items():
                try:
                    s.fields[k].check(v, k)
                    clean[k] = v
                except Bad as exc:
                    notes.append(f"{s.name}: {exc}; left out")
            continue
        try:
            for k in s.required:
                if k not in present:
                    raise Bad(k, "present", "nothing")
            for k, v in present.items():
                s.fields[k].check(v, k)
            if s.extra is not None:
                s.extra(present)
        except Bad as exc:
            notes.append(f"section '{s.name}' skipped: {exc}")
            continue
        clean.update(present)
    return clean, notes


def field_names(sections: Sequence[Section] = SECTIONS) -> set[str]:
    """Every top-level field some section draws."""
    return {k for s in sections for k in s.fields}
