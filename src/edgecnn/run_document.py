"""The results document of a run: one ``results.json`` per run folder, with a ``kind`` and a schema version.

Every command that makes a run folder (``edgecnn demo``, ``train``,
``explain``, …) writes one JSON object there::

    {"kind": "demo", "schema": 1, ...the kind's fields...}

``kind`` says which command wrote it (and so which sections
:mod:`edgecnn.report` draws); ``schema`` is bumped when a kind's fields change
incompatibly, so that a report of an old run can say what it cannot read
instead of drawing it wrong. The fields of each kind are listed in
docs/report.md. The document holds plain JSON values only — numbers,
strings, lists, dicts — so the report layer reads runs without importing
the code that made them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write_text
from edgecnn.limits import Limit
from edgecnn.schema import load_json

SCHEMA = 1  # the version this code writes and reads
RESULTS_FILE = "results.json"
# A results document is a few kB to a few MB (an ERF map of a 224-pixel input is 50k numbers); one far larger
# is refused before it is read, so a shared run folder cannot make `edgecnn report` read gigabytes.
MAX_RESULTS_MB = Limit("EDGECNN_MAX_RESULTS_MB", 50, "MB", "MB")
_FIX = "pass the results.json an edgecnn command wrote"

__all__ = ["MAX_RESULTS_MB", "RESULTS_FILE", "SCHEMA", "read_results", "results_path", "write_results"]


def _plain(value: Any) -> Any:
    """NaN and infinities become None: JSON has no such numbers (browsers' JSON.parse rejects them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_results(run_dir: str | os.PathLike[str], kind: str, body: Mapping[str, Any]) -> Path:
    """Write ``{"kind": kind, "schema": SCHEMA, **body}`` to ``run_dir/results.json`` (atomically)."""
    if not kind or not kind.replace("-", "").isalnum():
        raise ValueError(f"results kind must be a plain word such as 'demo', got {kind!r}")
    doc = {"kind": kind, "schema": SCHEMA, **_plain(dict(body))}
    return atomic_write_text(Path(run_dir) / RESULTS_FILE, json.dumps(doc, indent=1) + "\n")


def results_path(run: str | os.PathLike[str]) -> Path:
    """``run`` itself if it is a file, else ``run/results.json``."""
    p = Path(run)
    return p if p.is_file() else p / RESULTS_FILE


def read_results(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The results document of a run folder (or of a results file); ``ValueError`` when it is none.

    The file is bounded before it is parsed: at most ``EDGECNN_MAX_RESULTS_MB``
    (50 MB) and 64 levels of nesting (a linear scan, so deep nesting is no
    ``RecursionError``). What the fields hold is checked by
    :func:`edgecnn.report_schema.validate` when the report draws them.
    """
    path = results_path(run)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a run folder written by an edgecnn command "
                                "(it holds results.json)")  # fmt: skip
    limit = MAX_RESULTS_MB.value()
    size_mb = path.stat().st_size / 2**20
    if size_mb > limit:
        MAX_RESULTS_MB.check(size_mb, str(path))
    with open(path, "rb") as f:
        raw = f.read(int(limit * 2**20) + 1)  # the file may have grown since stat
    if len(raw) > limit * 2**20:
        MAX_RESULTS_MB.check(len(raw) / 2**20, str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); {_FIX}") from None
    try:
        doc = load_json(text, str(path), fix=_FIX)
    except ValueError as exc:  # load_json names the file (json's own errors included): its first line
        raise ValueError(str(exc).splitlines()[0]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        raise ValueError(f"{path} has no 'kind' field: it is not an edgecnn results document")
    schema = doc.get("schema")
    if isinstance(schema, str) and schema.startswith("edgecnn.") and schema.rpartition("/")[2].isdigit():
        return doc  # a document versioned by its own module ("edgecnn.analysis/2"); the report reads it by field
    if isinstance(schema, bool) or not isinstance(schema, int) or schema > SCHEMA:
        raise ValueError(f"{path} has schema {repr(schema)[:40]}, this edgecnn reads up to {SCHEMA}; "
                         "upgrade edgecnn")
    return doc
