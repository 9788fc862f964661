"""Search algorithms: regularized evolution (Real et al. 2019) and random search, resumable after every batch.

**Regularized evolution** (Real et al. 2019, "Regularized evolution for image
classifier architecture search", Algorithm 1): a population of ``P`` networks,
first drawn at random; then each cycle samples ``S`` of them, mutates the best
of the sample (one gene of one stage, :meth:`SearchSpace.mutate`), evaluates
the child, adds it to the population and removes the *oldest* member — not the
worst: ageing favours networks that stay good when retrained, and keeps the
population moving. **Random search** draws every candidate uniformly; at the
same evaluation budget it is the baseline every NAS method must beat (Li &
Talwalkar 2019).

Both rank candidates by an :class:`~edgecnn.search.objective.Objective` of the
estimated accuracy and the latency predicted from the device's lookup table.
Under a hard constraint a candidate over the target is never evaluated: a
random draw or a mutation is redrawn until it fits (by the table), so every
evaluated — and every returned — network meets the constraint.

Candidates are evaluated ``batch`` at a time (one :meth:`Executor.map`; with
``batch=1`` this is Real et al.'s sequential loop, with more the children of a
batch are bred from the same population, as in their asynchronous workers).
After every batch the whole state — history, population, the RNG state — is
written atomically (:mod:`edgecnn.atomic`), so ``resume=True`` after a kill
continues exactly where the uninterrupted run would be; only the batch in
flight is evaluated again. Evaluations are cached by arch string: a duplicate
counts against the budget but is not evaluated twice.

A state read back (``resume=True``) is a document from disk, so it is checked
field by field before any of it is used (:meth:`SearchState.from_dict`): its
size and nesting are bounded before it is parsed, the version must be one this
code wrote, every history entry's arch must parse and be a network of the
space being searched, its score must be the objective's, the population must
be the one the history implies, and the RNG state must be a valid one. Errors
name the file and the field.

What a candidate's ``acc`` holds is the state's ``estimate``: ``"accuracy"`` (a
top-1 in [0, 1], from a supernet or a short training; the default, and what a
state without the field holds) or the name of the zero-cost proxy whose
unbounded score ranks the networks (``"proxy-naswot"``: a log-determinant, any
real number, ``-inf`` for a degenerate network). A resumed search must use the
same estimate: scores of two estimators do not compare.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Container, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write_text
from edgecnn.limits import MAX_CANDIDATES
from edgecnn.schema import Fields, read_json_file
from edgecnn.search.objective import Objective, pareto_front
from edgecnn.search.space import Genome, SearchSpace

ACCURACY = "accuracy"  # SearchState.estimate of a search that estimates top-1 (supernet, short training)


@dataclass(frozen=True)
class Strategy:
    """One search strategy: how it draws the next batch, and what of the state it keeps (read by the state checks)."""

    name: str
    keeps_population: bool  # the newest ``population`` candidates are the population (state.population)
    has_parents: bool  # children name the candidate they came from
    children: Callable[[_Breeder, SearchState, int], list[tuple[str, float, int | None]]]  # (breeder, state, n)
    source: str  # the paper


def _evolution_children(breeder: _Breeder, state: SearchState, n: int, *,
                        novel: bool = False) -> list[tuple[str, float, int | None]]:  # fmt: skip
    """Regularized evolution: random draws until the population is full, then tournament mutants. ``novel``: every
    child a network not evaluated before (nor earlier in its batch) — a draw or mutation that lands on one is
    redrawn. On the seeds benchmark plain evolution spent 16–19% of its budget on networks it had evaluated already
    (the cache skips their estimate, not their slot; docs/search.md)."""
    cfg = breeder.cfg
    seen = {c.arch for c in state.history} if novel else set()
    filling = len(state.population) < cfg.population
    out: list[tuple[str, float, int | None]] = []
    for _ in range(min(n, cfg.population - len(state.population)) if filling else n):
        child = breeder.random(seen) if filling else breeder.mutant(state, avoid=seen)
        if novel:
            seen.add(child[0])
        out.append(child)
    return out


def _novel_children(breeder: _Breeder, state: SearchState, n: int) -> list[tuple[str, float, int | None]]:
    """Regularized evolution with no child evaluated twice (:func:`_evolution_children` with ``novel``)."""
    return _evolution_children(breeder, state, n, novel=True)


def _random_children(breeder: _Breeder, _state: SearchState, n: int) -> list[tuple[str, float, int | None]]:
    """Random search: every child a fresh feasible draw."""
    return [breeder.random() for _ in range(n)]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("evolution", True, True, _evolution_children, "Real et al. 2019, regularized evolution"),
    Strategy("evolution-novel", True, True, _novel_children,
             "Real et al. 2019, regularized evolution, with no child evaluated twice"),
    Strategy("random", False, False, _random_children, "random search, the baseline (Li & Talwalkar 2019)"),
)}  # fmt: skip
"""Every search strategy, one record each: another one is one entry here (and its tests)."""

ALGORITHMS: tuple[str, ...] = tuple(STRATEGIES)
STATE_FORMAT = "edgecnn-search-state"
STATE_VERSION = 1  # the state's version this code writes and reads
STATE_FIX = "the file is damaged or was not written by edgecnn; start afresh with --overwrite (or another --out)"
MAX_ARCH_CHARS = 10_000  # an arch string of a space's network is a few hundred characters

Evaluate = Callable[[Sequence[str]], Sequence[float]]
"""Accuracy estimates of a batch of arch strings, in order."""
Latency = Callable[[str], float]
"""Latency (ms) of an arch string, from the device's table."""


@dataclass(frozen=True)
class SearchConfig:
    """How to search; stored with the state and checked on resume."""

    algorithm: str = "evolution"  # "evolution" (regularized evolution) or "random"
    budget: int = 200  # candidates evaluated in all
    population: int = 50  # P: networks kept alive (evolution)
    sample_size: int = 10  # S: tournament size (evolution)
    batch: int = 1  # candidates evaluated at once (one executor map)
    seed: int = 0  # seeds the search's RNG
    max_tries: int = 1000  # redraws to meet a hard latency constraint before giving up

    def __post_init__(self) -> None:
        if self.algorithm not in STRATEGIES:
            raise ValueError(f"unknown search algorithm {self.algorithm!r}; valid: {', '.join(STRATEGIES)}")
        for name in ("budget", "population", "sample_size", "batch", "max_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("budget", "population", "sample_size", "batch"):
            MAX_CANDIDATES.check(getattr(self, name), f"search {name}")
        if self.sample_size > self.population:
            raise ValueError(f"sample_size ({self.sample_size}) cannot exceed the population ({self.population})")


@dataclass(frozen=True)
class Candidate:
    """One evaluated network."""

    index: int  # position in the history (0-based)
    arch: str  # canonical arch string
    acc: float  # the estimate: an accuracy (0..1), or a proxy's score (SearchState.estimate)
    lat_ms: float  # latency predicted from the table
    score: float  # the objective
    parent: int | None  # index of the parent (evolution's mutations), None for random draws

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchState:
    """Everything a search needs to continue: saved after every batch."""

    config: SearchConfig
    objective: Objective
    space: str  # the space's name (checked on resume)
    history: list[Candidate] = field(default_factory=list)
    population: list[int] = field(default_factory=list)  # indices into history, oldest first
    rng: Any = None  # random.Random.getstate()
    space_doc: dict[str, Any] | None = None  # the whole space (SearchSpace.to_dict), checked on resume when stored
    estimate: str = ACCURACY  # what a candidate's acc is: ACCURACY, or the proxy's name (an unbounded score)

    def to_dict(self) -> dict[str, Any]:
        """The state as the JSON document :meth:`from_dict` reads."""
        version, internal, gauss = self.rng
        d = {
            "format": STATE_FORMAT, "version": STATE_VERSION, "config": asdict(self.config),
            "objective": asdict(self.objective), "space": self.space,
            "history": [c.to_dict() for c in self.history], "population": list(self.population),
            "rng": [version, list(internal), gauss],
        }  # fmt: skip
        if self.space_doc is not None:
            d["space_doc"] = self.space_doc
        if self.estimate != ACCURACY:
            d["estimate"] = self.estimate
        return d

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "state", space: SearchSpace | None = None) -> SearchState:
        """Check a state document field by field (see the module doc) and build the state.

        With ``space``, every history entry's arch must be a network of it. ``ValueError`` naming
        ``source`` and the field otherwise.
        """
        f = Fields(source, STATE_FIX)
        if not isinstance(d, dict):
            raise ValueError(f"{source}: a search state is a JSON object, got {type(d).__name__}; {STATE_FIX}")
        if d.get("format") != STATE_FORMAT:
            raise ValueError(f"{source} is not an edgecnn search state (field 'format' is not {STATE_FORMAT!r}); "
                             f"{STATE_FIX}")  # fmt: skip
        known = {"format", "version", "config", "objective", "space", "history", "population", "rng", "space_doc",
                 "estimate"}  # fmt: skip
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise f.fail(unknown[0][:40], "absent (not a field of a search state)", "present")
        if d.get("version") != STATE_VERSION:
            raise f.fail("version", f"{STATE_VERSION} (the version this edgecnn reads)", d.get("version"))
        config = _config(f, d.get("config"))
        objective = _objective(f, d.get("objective"))
        name = f.text("space", d.get("space"))
        if name is None or not 0 < len(name) <= 64:
            raise f.fail("space", "the space's name (1 to 64 characters)", name)
        space_doc = f.mapping("space_doc", d.get("space_doc"), optional=True)
        estimate = f.text("estimate", d.get("estimate", ACCURACY))
        if estimate is None or not 0 < len(estimate) <= 64:
            raise f.fail("estimate", f"{ACCURACY!r} or the name of a proxy (1 to 64 characters)", estimate)
        history = _history(f, d.get("history"), config, objective, space, estimate)
        population = f.listing("population", d.get("population"))
        n, size = len(history), config.population
        keeps = STRATEGIES[config.algorithm].keeps_population
        expected = list(range(max(0, n - size), n)) if keeps else []
        if population != expected:  # regularized evolution keeps exactly the newest P candidates, oldest first
            need = f"{_span(expected)} (the newest {size} of the {n} candidates of the history, oldest first)"
            raise f.fail("population", need if keeps else f"[] ({config.algorithm} search)", population)
        return cls(config, objective, name, history, population, _rng(f, d.get("rng")),
                   None if space_doc is None else dict(space_doc), estimate)  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the state atomically (:mod:`edgecnn.atomic`): a kill leaves the previous batch's state."""
        return atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path, *, space: SearchSpace | None = None) -> SearchState:
        """Read and check a state file: size bounded before reading (``EDGECNN_MAX_FILE_MB``), nesting before
        parsing, then :meth:`from_dict`. ``ValueError`` naming the file (and the field) otherwise."""
        doc = read_json_file(path, "search state", fix=STATE_FIX)
        return cls.from_dict(doc, source=str(path), space=space)

    def check_same(self, config: SearchConfig, objective: Objective, space: SearchSpace, source: str,
                   estimate: str = ACCURACY) -> None:  # fmt: skip
        """``ValueError`` unless this state was written by a search with these settings (what resuming needs)."""
        if self.estimate != estimate:
            raise ValueError(f"{source} holds a search estimated by {self.estimate!r}, not {estimate!r} (their "
                             "scores do not compare); resume with the same estimator, or pass --overwrite or "
                             "another --out")  # fmt: skip
        if (self.config, self.objective, self.space) != (config, objective, space.name):
            raise ValueError(f"{source} holds a search with other settings "
                             f"({self.config}, {self.objective}, space {self.space!r}); "
                             "resume with the same ones, or pass --overwrite or another --out")  # fmt: skip
        if self.space_doc is not None and self.space_doc != space.to_dict():
            raise ValueError(f"{source} holds a search of another space named {space.name!r} (its stages or stem "
                             "differ); resume with the same space, or pass --overwrite or another --out")  # fmt: skip


def _span(indices: list[int]) -> str:
    return f"[{indices[0]}, ..., {indices[-1]}]" if len(indices) > 3 else str(indices)


def _config(f: Fields, v: Any) -> SearchConfig:
    d = f.mapping("config", v) or {}
    names = [x.name for x in fields(SearchConfig)]
    if sorted(d) != sorted(names):
        raise f.fail("config", f"a dict of exactly {', '.join(names)}", sorted(d))
    if d["algorithm"] not in STRATEGIES:
        raise f.fail("config.algorithm", f"one of {', '.join(STRATEGIES)}", d["algorithm"])
    cap = MAX_CANDIDATES.value()
    for name in ("budget", "population", "sample_size", "batch"):
        f.integer(f"config.{name}", d[name], 1, cap)
    f.integer("config.max_tries", d["max_tries"], 1, 10**7)
    f.integer("config.seed", d["seed"], 0, 2**64)
    try:
        return SearchConfig(**d)
    except ValueError as exc:
        raise ValueError(f"{f.source}: field 'config': {exc}; {f.fix}") from None


def _objective(f: Fields, v: Any) -> Objective:
    d = f.mapping("objective", v) or {}
    names = [x.name for x in fields(Objective)]
    if sorted(d) != sorted(names):
        raise f.fail("objective", f"a dict of exactly {', '.join(names)}", sorted(d))
    f.number("objective.target_ms", d["target_ms"], positive=True)
    w = f.number("objective.w", d["w"])
    if w > 0:
        raise f.fail("objective.w", "a number <= 0", w)
    if not isinstance(d["hard"], bool):
        raise f.fail("objective.hard", "true or false", d["hard"])
    return Objective(**d)


def _history(f: Fields, v: Any, config: SearchConfig, objective: Objective, space: SearchSpace | None,
             estimate: str = ACCURACY) -> list[Candidate]:  # fmt: skip
    items = f.listing("history", v)
    if len(items) > config.budget:
        raise f.fail("history", f"at most config.budget = {config.budget:,} candidates", f"{len(items):,} of them")
    names = [x.name for x in fields(Candidate)]
    decoded: dict[str, bool] = {}
    out: list[Candidate] = []
    for i, c in enumerate(items):
        where = f"history[{i}]"
        f.mapping(where, c)
        if sorted(c) != sorted(names):
            raise f.fail(where, f"a dict of exactly {', '.join(names)}", sorted(c))
        f.integer(f"{where}.index", c["index"], i, i)
        arch = f.text(f"{where}.arch", c["arch"])
        if arch is None or not 0 < len(arch) <= MAX_ARCH_CHARS:
            raise f.fail(f"{where}.arch", f"an arch string of at most {MAX_ARCH_CHARS:,} characters", arch)
        if space is not None and arch not in decoded:
            try:
                space.decode(arch)
            except ValueError:
                raise f.fail(f"{where}.arch", f"an arch string of a network of search space {space.name!r}",
                             arch) from None  # fmt: skip
            decoded[arch] = True
        if estimate == ACCURACY:
            acc = f.accuracy(f"{where}.acc", c["acc"])
        else:  # a proxy's score: any real number, -inf for a degenerate network
            acc = c["acc"]
            if not isinstance(acc, (int, float)) or isinstance(acc, bool) or math.isnan(acc) or acc == math.inf:
                raise f.fail(f"{where}.acc", f"a {estimate} score (a number, or -inf)", acc)
            acc = float(acc)
        lat = f.number(f"{where}.lat_ms", c["lat_ms"], positive=True)
        score = c["score"]
        want = objective.score(acc, lat)
        ok = isinstance(score, (int, float)) and not isinstance(score, bool)
        if not ok or not (score == want or (math.isfinite(want) and math.isclose(score, want, rel_tol=1e-9))):
            raise f.fail(f"{where}.score", f"the objective's score of acc and lat_ms ({want:.6g})", score)
        parent = c["parent"]
        if parent is not None:
            f.integer(f"{where}.parent", parent, 0, i - 1)
            if not STRATEGIES[config.algorithm].has_parents:
                raise f.fail(f"{where}.parent", f"null ({config.algorithm} search draws have no parent)", parent)
        out.append(Candidate(i, arch, acc, lat, float(score), parent))
    return out


def _rng(f: Fields, v: Any) -> tuple[int, tuple[int, ...], float | None]:
    """``random.Random.getstate()`` as stored: ``[version, [625 integers], gauss]``, checked by a real setstate."""
    items = f.listing("rng", v)
    if len(items) != 3:
        raise f.fail("rng", "[version, internal state, gauss] (3 items)", items)
    version, internal, gauss = items
    f.integer("rng[0]", version, 0, 100)
    values = f.listing("rng[1]", internal)
    if len(values) != 625 or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32
                                     for x in values):  # fmt: skip
        raise f.fail("rng[1]", "625 integers in [0, 2**32) (Mersenne Twister's state)", values)
    if gauss is not None:
        f.number("rng[2]", gauss)
    state = (version, tuple(values), None if gauss is None else float(gauss))
    try:
        random.Random().setstate(state)
    except (ValueError, TypeError, OverflowError) as exc:
        raise f.fail("rng", f"a state random.Random accepts ({exc})", "[...]") from None
    return state


@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`run_search`."""

    history: tuple[Candidate, ...]  # every evaluated network, in order
    front: tuple[Candidate, ...]  # the Pareto front of accuracy against latency, by latency
    best: tuple[Candidate, ...]  # the history sorted by score, best first
    resumed_from: int  # candidates the state held when the call started

    def best_score_curve(self) -> list[float]:
        """Best score after each evaluation (what comparisons of algorithms plot)."""
        out, best = [], -math.inf
        for c in self.history:
            best = max(best, c.score)
            out.append(best)
        return out


def run_search(
    space: SearchSpace,
    evaluate: Evaluate,
    latency: Latency,
    objective: Objective,
    config: SearchConfig | None = None,
    *,
    state_path: str | Path | None = None,
    resume: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
    estimate: str = ACCURACY,
) -> SearchResult:
    """Search ``space`` for the best network by ``objective`` (see the module doc).

    Args:
        evaluate: accuracy estimates of a batch of arch strings (e.g. supernet scores through the executor).
        latency: the latency of an arch string from the device's table (called in this process).
        state_path: JSON file the state is written to after every batch.
        resume: continue from ``state_path`` (FileNotFoundError if there is none).
        on_batch: ``(done, budget)`` after every batch (progress bars).
        estimate: what ``evaluate`` returns: ``"accuracy"`` (in [0, 1]) or a proxy's name (unbounded scores);
            stored in the state and checked on resume.
    """
    cfg = config or SearchConfig()
    if resume:
        state = load_resumable(state_path, space, cfg, objective, estimate)
        rng = random.Random()
        rng.setstate(state.rng)
    else:
        rng = random.Random(cfg.seed)
        state = SearchState(cfg, objective, space.name, rng=rng.getstate(), space_doc=space.to_dict(),
                            estimate=estimate)  # fmt: skip
    start = len(state.history)
    breeder = _Breeder(space, latency, objective, cfg, rng)
    cache = {c.arch: c.acc for c in state.history}
    while len(state.history) < cfg.budget:
        children = breeder.batch(state)
        todo = sorted({a for a, _, _ in children if a not in cache})
        if todo:
            accs = list(evaluate(todo))
            if len(accs) != len(todo):
                raise ValueError(f"the evaluator returned {len(accs)} accuracies for {len(todo)} networks")
            cache.update(zip(todo, (float(a) for a in accs)))
        for arch, lat, parent in children:
            c = Candidate(len(state.history), arch, cache[arch], lat, objective.score(cache[arch], lat), parent)
            state.history.append(c)
            if STRATEGIES[cfg.algorithm].keeps_population:
                state.population.append(c.index)
                if len(state.population) > cfg.population:
                    state.population.pop(0)  # age out the oldest (regularized evolution)
        state.rng = rng.getstate()
        if state_path is not None:
            state.save(state_path)
        if on_batch is not None:
            on_batch(len(state.history), cfg.budget)
    return _result(state.history, start)


def load_resumable(state_path: str | Path | None, space: SearchSpace, config: SearchConfig,
                   objective: Objective, estimate: str = ACCURACY) -> SearchState:  # fmt: skip
    """The checked state at ``state_path`` of a search with these settings (what ``resume=True`` continues).

    ``FileNotFoundError`` ("nothing to resume") when there is none, ``ValueError`` naming the file and the field
    for a damaged or foreign one, or one of a search with other settings.
    """
    if state_path is None or not Path(state_path).is_file():
        raise FileNotFoundError(f"nothing to resume: search state {str(state_path)!r} does not exist; "
                                "drop --resume to start afresh")  # fmt: skip
    state = SearchState.load(state_path, space=space)
    state.check_same(config, objective, space, str(state_path), estimate)
    return state


def _result(history: list[Candidate], start: int) -> SearchResult:
    front = pareto_front([(c.acc, c.lat_ms) for c in history])
    best = sorted(history, key=lambda c: (-c.score, c.lat_ms, c.index))
    return SearchResult(tuple(history), tuple(history[i] for i in front), tuple(best), start)


class _Breeder:
    """Draws the next batch of children: (arch, latency, parent index)."""

    def __init__(self, space: SearchSpace, latency: Latency, objective: Objective, cfg: SearchConfig,
                 rng: random.Random) -> None:  # fmt: skip
        self.space, self.latency, self.objective, self.cfg, self.rng = space, latency, objective, cfg, rng
        self._lat: dict[str, float] = {}

    def lat(self, arch: str) -> float:
        if arch not in self._lat:
            self._lat[arch] = float(self.latency(arch))
        return self._lat[arch]

    def batch(self, state: SearchState) -> list[tuple[str, float, int | None]]:
        cfg = self.cfg
        return STRATEGIES[cfg.algorithm].children(self, state, min(cfg.batch, cfg.budget - len(state.history)))

    def random(self, avoid: Container[str] = ()) -> tuple[str, float, int | None]:
        repeats = 0
        for _ in range(self.cfg.max_tries):
            arch = self.space.arch(self.space.sample_genome(self.rng)).format()
            if arch in avoid:
                repeats += 1
                continue
            lat = self.lat(arch)
            if self.objective.feasible(lat):
                return arch, lat, None
        if repeats == self.cfg.max_tries:
            raise ValueError(f"all {repeats} random draws were networks evaluated already: space "
                             f"{self.space.name!r} has few networks left for the budget; lower the budget "
                             "(--budget) or search it with --algorithm evolution")  # fmt: skip
        smallest = self.lat(self.space.arch(self.space.extreme(False)).format())
        raise ValueError(
            f"no network of {self.cfg.max_tries} random draws meets {self.objective.target_ms:g} ms "
            f"(the smallest network of space {self.space.name!r} takes {smallest:.3g} ms by the table); "
            "raise the target or use a smaller space"
        )

    def mutant(self, state: SearchState, avoid: Container[str] = ()) -> tuple[str, float, int | None]:
        pop = [state.history[i] for i in state.population]
        sample = self.rng.sample(pop, self.cfg.sample_size)
        parent = max(sample, key=lambda c: (c.score, -c.index))
        genome: Genome = self.space.decode(parent.arch)
        for _ in range(self.cfg.max_tries):
            child = self.space.arch(self.space.mutate(genome, self.rng)).format()
            if child in avoid:
                continue
            lat = self.lat(child)
            if self.objective.feasible(lat):
                return child, lat, parent.index
        return self.random(avoid)  # the parent sits where no single (new) mutation fits: draw afresh
