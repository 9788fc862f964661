"""Two fidelities: the search's best candidates short-trained and reordered by the blend of both estimates.

A zero-cost proxy such as NASWOT (Mellor et al. 2021) is cheap enough to score
every candidate of a search, but what it reads is mostly network size: on
``mbv3-32`` it ranks held-out subnets at Kendall τ 0.43 overall and at chance
among subnets of equal latency — where a latency-constrained search chooses
(``benchmarks/search_rank.py``, docs/search.md). A short training from scratch
(:func:`~edgecnn.search.estimate.short_train`) is the opposite: it ranks subnets
of equal latency but under-rates the large ones, which have not caught up after
a few hundred steps. Screening with the cheap estimate and short-training only
its best ``k`` is the multi-fidelity scheme of successive halving / Hyperband
(Li et al. 2018); the ``k`` finalists are then ordered by
:func:`~edgecnn.search.estimate.rank_blend` of the two estimates, the mean of
their ranks (no scale shared between a proxy and an accuracy is needed).

Each short training is read two ways (:data:`~edgecnn.search.estimate.READINGS`,
``by``): its top-1 on the validation split, or its training speed — minus the
mean training loss over its steps (Ru et al. 2021, "Speedy Performance
Estimation for Neural Architecture Search"), which averages the thousands of
training images the network learnt from where the top-1 is one reading of a
small validation split. On ``mbv3-32``, NASWOT blended with the training speed
is the best-ranking estimator measured (``benchmarks/search_rank.py``).

The short trainings are written to ``rerank.json`` in the search folder as they
finish (atomically, with the recipe they used and both readings), so a resumed
search trains only the ones it lacks, whichever reading it ranks by (a file of
an earlier version, with top-1 only, is trained again for the training speed);
a file of another recipe is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write_text
from edgecnn.schema import Fields, read_json_file
from edgecnn.search.estimate import READINGS, rank_blend
from edgecnn.search.evolution import Candidate, SearchResult

RERANK_FILE = "rerank.json"
FORMAT = "edgecnn-rerank"
_FIX = "the file is damaged or of another search; pass --overwrite (or another --out)"


@dataclass(frozen=True)
class Reranked:
    """One of the ``k`` best candidates: its search estimate, its short training and their blend."""

    arch: str
    estimate: float  # the search's estimate (a proxy's score, or an accuracy)
    short_top1: float  # top-1 on the validation split after the short training
    blend: float  # mean rank of the estimate and the short training's reading ``by`` among the k (higher: better)
    short_speed: float | None = None  # its training speed, minus the mean training loss (None: not recorded)
    by: str = "top1"  # the reading blended with the estimate (READINGS)


def best_distinct(result: SearchResult, k: int) -> list[Candidate]:
    """The ``k`` best candidates of the search by its score, each network once, none over a hard constraint
    (score −inf: a search continued under a corrected constraint, :mod:`edgecnn.search.correct`, keeps the
    candidates it evaluated before; fewer than ``k`` when fewer are feasible)."""
    seen: set[str] = set()
    out: list[Candidate] = []
    for c in result.best:
        if c.arch not in seen and c.score > -math.inf:
            seen.add(c.arch)
            out.append(c)
        if len(out) == k:
            break
    return out


def load_trained(path: Path, recipe: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The short trainings recorded at ``path``, arch → readings (``top1``, and ``speed`` where recorded; empty
    when there is no file); ValueError for a damaged file or one written with another recipe."""
    if not path.is_file():
        return {}
    doc = read_json_file(path, "rerank file", fix=_FIX)
    f = Fields(str(path), _FIX)
    f.mapping("document", doc)
    if doc.get("format") != FORMAT:
        raise f.fail("format", repr(FORMAT), doc.get("format"))
    if doc.get("recipe") != recipe:
        raise ValueError(f"{path} holds short trainings of another recipe ({doc.get('recipe')}, this search's is "
                         f"{recipe}); resume with the same settings, or pass --overwrite")  # fmt: skip
    out: dict[str, dict[str, float]] = {}
    for arch, v in (f.mapping("top1", doc.get("top1")) or {}).items():
        out[str(arch)] = {"top1": f.accuracy(f"top1[{arch[:40]!r}]", v)}
    for arch, v in (f.mapping("speed", doc.get("speed"), optional=True) or {}).items():
        if str(arch) not in out:
            raise f.fail(f"speed[{arch[:40]!r}]", "a network with a top-1 in 'top1'", "none")
        out[str(arch)]["speed"] = f.number(f"speed[{arch[:40]!r}]", v)
    return out


def _save(path: Path, recipe: dict[str, Any], trained: dict[str, dict[str, float]]) -> None:
    speed = {a: r["speed"] for a, r in trained.items() if "speed" in r}
    atomic_write_text(path, json.dumps({"format": FORMAT, "recipe": recipe,
                                        "top1": {a: r["top1"] for a, r in trained.items()}, "speed": speed}))


def rerank(result: SearchResult, k: int, short_train: Callable[[list[str]], list[dict[str, float]]], *,
           by: str = "top1", path: str | Path | None = None, recipe: dict[str, Any] | None = None,
           chunk: int = 1) -> tuple[SearchResult, list[Reranked]]:  # fmt: skip
    """``result`` with its ``k`` best distinct candidates short-trained (``short_train``: archs → readings, a dict
    per network with ``top1`` and ``speed``: :class:`~edgecnn.search.estimate.ShortTrainer`) and put first in the
    order of the blend of the estimate with reading ``by`` (ties: the higher short top-1, then the lower latency),
    every other candidate after them in its order; and the rows of the ``k``.

    With ``path``, each chunk of ``chunk`` trainings is recorded there (with ``recipe``) and read back on the next
    call, so a stopped run loses at most one chunk.
    """
    if k < 2:
        raise ValueError(f"rerank needs at least 2 candidates to order, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if by not in READINGS:
        raise ValueError(f"rerank by {by!r}: not a reading of a short training; valid: {', '.join(READINGS)}")
    top = best_distinct(result, k)
    p = None if path is None else Path(path)
    key = recipe or {}
    trained = load_trained(p, key) if p is not None else {}
    todo = [c.arch for c in top if by not in trained.get(c.arch, {})]
    for i in range(0, len(todo), chunk):
        part = todo[i : i + chunk]
        got = list(short_train(part))
        if len(got) != len(part):
            raise ValueError(f"the short training returned {len(got)} readings for {len(part)} networks")
        for arch, reading in zip(part, got):
            if by not in reading or "top1" not in reading:
                raise ValueError(f"the short training of {arch[:40]!r} gave {sorted(reading)}, not 'top1' and {by!r}")
            trained[arch] = {name: float(v) for name, v in reading.items() if name in READINGS}
        if p is not None:
            _save(p, key, trained)
    blend = rank_blend([c.acc for c in top], [trained[c.arch][by] for c in top])
    rows = [Reranked(c.arch, c.acc, trained[c.arch]["top1"], b, trained[c.arch].get("speed"), by)
            for c, b in zip(top, blend)]  # fmt: skip
    order = sorted(range(len(top)), key=lambda i: (-blend[i], -rows[i].short_top1, top[i].lat_ms, top[i].index))
    first = [top[i] for i in order]
    chosen = {c.index for c in top}
    rest = [c for c in result.best if c.index not in chosen]  # every candidate stays (a duplicate, too)
    return replace(result, best=(*first, *rest)), [rows[i] for i in order]
