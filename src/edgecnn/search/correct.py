"""Measured corrections of a hard latency constraint: search on when the finalists measure over the target.

The search ranks candidates by the device's lookup table, and a table that is right on average can be wrong
where a search ends: the search picks, out of thousands, the networks the table rates fastest for their
accuracy, so it collects the ones it *under*-rates (a winner's curse). On ``mbv3-32`` a table calibrated to
1.2% on random networks of the space ran 11–13% below the finalists evolution converged to (docs/search.md).
Choosing the fastest finalist as measured (:meth:`Objective.choose`) then only says that the target is missed.

A correction closes the loop with the device, as NetAdapt (Yang et al. 2018, §3) does with its measured
continuations and MnasNet (Tan et al. 2019, §3) by measuring every candidate. When no finalist meets the target
as measured:

1. **the table's blocks of the finalists are timed again** (``retime``,
   :meth:`~edgecnn.latency.table.LatencyTable.retime`: two more timings each, the median of the three kept).
   Entries timed once carry noise both ways, and a search that optimises against the table is drawn to the
   networks built from the entries that came out low — a winner's curse at the level of blocks: on the seeds
   benchmark a 128-wide k5 block had entered the table at 0.049 ms, below its own ReLU and 96-wide variants, and
   ran at 0.070 ms, twice, in the network two rounds converged to (docs/search.md);
2. what error remains — interactions between blocks that no entry holds — is the **ratio** ``measured / table``
   (the table as it is now) of every network measured so far, its largest;
3. the search **continues from its saved state** under ``target / ratio`` in the table's units, for ``extra``
   more candidates: every candidate already evaluated is predicted again from the re-timed table and scored
   under the tighter constraint (no estimate is repeated), regularized evolution's population ages the
   now-infeasible members out, and the new best are re-ranked (the short trainings of
   :mod:`~edgecnn.search.rerank` are kept by network, so only new ones are trained) and measured.

Each round is recorded in ``corrections.json`` (atomically) *before* its continuation starts, with the ratio and
every network measured so far (its latency by the re-timed table, its measured latency), and a resumed search
replays the recorded rounds with their recorded ratios — the continuation's state (``search_state.correct<k>.json``)
was written under exactly that constraint, the re-timed entries are in the table's file, and a new measurement of
the same finalists would differ. Once a choice has been recorded for the final training
(:mod:`~edgecnn.search.choice`), no new round is started.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from edgecnn.atomic import atomic_write_text
from edgecnn.schema import Fields, read_json_file
from edgecnn.search.evolution import SearchConfig, SearchState
from edgecnn.search.objective import Choice, Objective

CORRECT_FILE = "corrections.json"
FORMAT = "edgecnn-corrections"
_FIX = "the file is damaged or of another search; pass --overwrite (or another --out)"


class Measured(Protocol):
    """A finalist as the loop reads it (:class:`edgecnn.search.job_spec.Finalist`)."""

    arch: str
    acc: float
    table_ms: float
    measured_ms: float


@dataclass(frozen=True)
class Correction:
    """One round: the scale the table was corrected by, the constraint and budget the search continued with."""

    round: int  # 1, 2, ...
    ratio: float  # measured / table the constraint is corrected by: the largest over ``measured``
    table_target_ms: float  # the target divided by ``ratio``: the constraint by the table for the continuation
    budget: int  # candidates in the history after the continuation
    measured: tuple[tuple[str, float, float], ...]  # (arch, table_ms now, measured_ms) of every network measured


@dataclass(frozen=True)
class Corrected:
    """What the loop ends with: the last round's attempt and choice, the rounds, and why it stopped."""

    attempt: Any  # the caller's attempt (search result, re-ranking, finalists) of the last round
    choice: Choice  # the objective's choice among its finalists by their measured latency
    rounds: tuple[Correction, ...]
    stop: str  # why no further round was run


def table_ratio(measured: Sequence[tuple[float, float]]) -> float:
    """``max(measured / table)`` over ``(table_ms, measured_ms)`` pairs: the largest error the table has on any
    network measured so far (see the module doc)."""
    if not measured:
        raise ValueError("a correction needs at least one measured finalist")
    for table_ms, ms in measured:
        if not (table_ms > 0 and ms > 0 and math.isfinite(table_ms) and math.isfinite(ms)):
            raise ValueError(f"latencies must be positive numbers of ms, got table {table_ms!r}, measured {ms!r}")
    return max(ms / table_ms for table_ms, ms in measured)


def continued_state(state: SearchState, objective: Objective, config: SearchConfig,
                    latency: Callable[[str], float] | None = None) -> SearchState:  # fmt: skip
    """``state`` carried on under ``objective`` with ``config`` (a larger budget): every candidate of the history
    scored again (with ``latency``, its latency predicted again first: the table was re-timed), the population and
    the RNG as they were — :func:`~edgecnn.search.evolution.run_search` resumes it as if the search had been
    started with these settings."""
    if replace(config, budget=state.config.budget) != state.config:
        raise ValueError(f"a continuation changes only the budget: {config} against the state's {state.config}")
    if config.budget < len(state.history):
        raise ValueError(f"the continuation's budget {config.budget} is below the {len(state.history)} candidates "
                         "already evaluated")  # fmt: skip
    lat = {c.arch: c.lat_ms if latency is None else float(latency(c.arch)) for c in state.history}
    history = [replace(c, lat_ms=lat[c.arch], score=objective.score(c.acc, lat[c.arch])) for c in state.history]
    return SearchState(config, objective, state.space, history, list(state.population), state.rng,
                       state.space_doc, state.estimate)  # fmt: skip


def state_path(first: Path, k: int) -> Path:
    """The continuation state of round ``k`` beside the search's own (``search_state.correct<k>.json``)."""
    return first.with_name(f"{first.stem}.correct{k}{first.suffix}")


def load_corrections(path: Path, target_ms: float) -> list[Correction]:
    """The rounds recorded at ``path`` (empty when there is none); ValueError for a damaged file or one of another
    target."""
    if not path.is_file():
        return []
    doc = read_json_file(path, "corrections file", fix=_FIX)
    f = Fields(str(path), _FIX)
    f.mapping("document", doc)
    if doc.get("format") != FORMAT:
        raise f.fail("format", repr(FORMAT), doc.get("format"))
    if doc.get("target_ms") != target_ms:
        raise ValueError(f"{path} holds corrections of a search with target {doc.get('target_ms')!r} ms, not "
                         f"{target_ms:g}; resume with the same target, or pass --overwrite")  # fmt: skip
    out: list[Correction] = []
    for i, r in enumerate(f.listing("rounds", doc.get("rounds"))):
        where = f"rounds[{i}]"
        f.mapping(where, r)
        f.integer(f"{where}.round", r.get("round"), i + 1, i + 1)
        ratio = f.number(f"{where}.ratio", r.get("ratio"), positive=True)
        table_target = f.number(f"{where}.table_target_ms", r.get("table_target_ms"), positive=True)
        if not math.isclose(table_target, target_ms / ratio, rel_tol=1e-9):
            raise f.fail(f"{where}.table_target_ms", f"target_ms / ratio = {target_ms / ratio:.6g}", table_target)
        budget = f.integer(f"{where}.budget", r.get("budget"), 1, 10**9)
        rows = []
        for j, m in enumerate(f.listing(f"{where}.measured", r.get("measured"))):
            row = f.listing(f"{where}.measured[{j}]", m)
            if len(row) != 3 or not isinstance(row[0], str):
                raise f.fail(f"{where}.measured[{j}]", "[arch, table_ms, measured_ms]", row)
            rows.append((row[0], f.number(f"{where}.measured[{j}][1]", row[1], positive=True),
                         f.number(f"{where}.measured[{j}][2]", row[2], positive=True)))  # fmt: skip
        out.append(Correction(i + 1, ratio, table_target, budget, tuple(rows)))
    return out


def save_corrections(path: Path, target_ms: float, rounds: Sequence[Correction]) -> None:
    """Write the rounds atomically (what :func:`load_corrections` reads)."""
    doc = {"format": FORMAT, "target_ms": target_ms, "rounds": [asdict(r) for r in rounds]}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def correct(objective: Objective, config: SearchConfig, first_state: Path, first: Any, *, rounds: int, extra: int,
            finalists_of: Callable[[Any], Sequence[Measured]],
            search_on: Callable[[int, Objective, SearchConfig, Path], Any],
            smallest_table_ms: Callable[[], float], record: Path, frozen: bool = False,
            retime: Callable[[list[str]], None] | None = None,
            latency: Callable[[str], float] | None = None) -> Corrected:  # fmt: skip
    """Up to ``rounds`` measured corrections of a hard constraint (see the module doc).

    Args:
        first: the search's attempt as it ended (its result, re-ranking and measured finalists: ``finalists_of``
            reads the finalists, in the table's order, from an attempt).
        search_on: ``(k, objective, config, state)`` → the attempt of round ``k``: the search resumed from the
            continuation ``state`` under ``objective`` (the corrected constraint by the table) and ``config`` (the
            budget ``extra`` larger per round), re-ranked, its finalists measured.
        smallest_table_ms: () → the latency of the space's smallest network by the table: a corrected target below
            it cannot be searched, and the loop stops there.
        record: ``corrections.json``: recorded rounds are replayed with their ratios; new ones are appended.
        frozen: a choice has been recorded for the final training: replay the recorded rounds only.
        retime: ``(archs)`` → None: time the table's blocks of these networks again
            (:meth:`~edgecnn.latency.table.LatencyTable.retime`), before the ratio is taken.
        latency: ``(arch)`` → its latency by the table as it is now: with ``retime``, the measured networks and the
            search's history are predicted again from the re-timed table (without it, the table never changes
            and the latencies the search recorded stand).
    """
    if rounds < 0 or extra < 1:
        raise ValueError(f"corrections need rounds >= 0 and extra >= 1 candidates, got {rounds} and {extra}")
    done = load_corrections(record, objective.target_ms)
    if not objective.hard and (rounds or done):
        raise ValueError("measured corrections tighten a hard latency constraint; with the soft objective a "
                         "uniform scale of the table changes no ranking (use --hard, or --correct 0)")  # fmt: skip
    attempt = first

    def choose(a: Any) -> Choice:
        return objective.choose([(f.acc, f.measured_ms) for f in finalists_of(a)])

    seen: dict[str, tuple[float, float]] = {}  # every network measured so far: arch → (table ms then, measured ms)
    choice, stop = choose(attempt), ""
    for k in range(1, max(rounds, len(done)) + 1):
        if k <= len(done):
            rec = done[k - 1]
        else:
            if choice.meets_target:
                stop = "a finalist meets the target as measured"
                break
            if frozen:
                stop = "the choice for the final training was recorded before this round"
                break
            latest = {f.arch: (f.table_ms, f.measured_ms) for f in finalists_of(attempt)}
            if retime is not None:
                retime(list(latest))
            pairs = {**seen, **latest}
            measured = tuple((a, latency(a) if latency is not None else t, m) for a, (t, m) in pairs.items())
            ratio = table_ratio([(t, m) for _, t, m in measured])
            target = objective.target_ms / ratio
            smallest = smallest_table_ms()
            if smallest > target:
                stop = (f"the corrected target {target:.4g} ms by the table is below the space's smallest network "
                        f"({smallest:.4g} ms): raise the target or search a smaller space")  # fmt: skip
                break
            rec = Correction(k, ratio, target, config.budget + k * extra, measured)
            done.append(rec)
            save_corrections(record, objective.target_ms, done)
        seen.update({a: (t, m) for a, t, m in rec.measured})
        obj = Objective(rec.table_target_ms, w=objective.w, hard=True)
        cfg = replace(config, budget=rec.budget)
        path = state_path(first_state, k)
        if not path.is_file():
            previous = first_state if k == 1 else state_path(first_state, k - 1)
            continued_state(SearchState.load(previous), obj, cfg, latency=latency).save(path)
        attempt = search_on(k, obj, cfg, path)
        choice = choose(attempt)
    else:
        stop = ("a finalist meets the target as measured" if choice.meets_target else
                f"{len(done)} correction round(s) done" if done else "no corrections asked for (--correct 0)")
    return Corrected(attempt, choice, tuple(done), stop)
