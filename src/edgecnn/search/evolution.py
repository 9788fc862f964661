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
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write_text
from edgecnn.search.objective import Objective, pareto_front
from edgecnn.search.space import Genome, SearchSpace

ALGORITHMS: tuple[str, ...] = ("evolution", "random")
STATE_FORMAT = "edgecnn-search-state"

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
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown search algorithm {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        for name in ("budget", "population", "sample_size", "batch", "max_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.sample_size > self.population:
            raise ValueError(f"sample_size ({self.sample_size}) cannot exceed the population ({self.population})")


@dataclass(frozen=True)
class Candidate:
    """One evaluated network."""

    index: int  # position in the history (0-based)
    arch: str  # canonical arch string
    acc: float  # accuracy estimate (0..1)
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

    def to_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng
        return {
            "format": STATE_FORMAT, "version": 1, "config": asdict(self.config),
            "objective": asdict(self.objective), "space": self.space,
            "history": [c.to_dict() for c in self.history], "population": list(self.population),
            "rng": [version, list(internal), gauss],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "state") -> SearchState:
        if d.get("format") != STATE_FORMAT:
            raise ValueError(f"{source} is not an edgecnn search state")
        version, internal, gauss = d["rng"]
        return cls(SearchConfig(**d["config"]), Objective(**d["objective"]), d["space"],
                   [Candidate(**c) for c in d["history"]], list(d["population"]),
                   (version, tuple(internal), gauss))  # fmt: skip

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> SearchState:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")), source=str(p))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{p} is not a readable search state ({exc}); start afresh without --resume") from None


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
) -> SearchResult:
    """Search ``space`` for the best network by ``objective`` (see the module doc).

    Args:
        evaluate: accuracy estimates of a batch of arch strings (e.g. supernet scores through the executor).
        latency: the latency of an arch string from the device's table (called in this process).
        state_path: JSON file the state is written to after every batch.
        resume: continue from ``state_path`` (FileNotFoundError if there is none).
        on_batch: ``(done, budget)`` after every batch (progress bars).
    """
    cfg = config or SearchConfig()
    if resume:
        if state_path is None or not Path(state_path).is_file():
            raise FileNotFoundError(f"nothing to resume: search state {str(state_path)!r} does not exist; "
                                    "drop --resume to start afresh")  # fmt: skip
        state = SearchState.load(state_path)
        if (state.config, state.objective, state.space) != (cfg, objective, space.name):
            raise ValueError(f"{state_path} holds a search with other settings "
                             f"({state.config}, {state.objective}, space {state.space!r}); "
                             "resume with the same ones or use a new --out")  # fmt: skip
        rng = random.Random()
        rng.setstate(state.rng)
    else:
        rng = random.Random(cfg.seed)
        state = SearchState(cfg, objective, space.name, rng=rng.getstate())
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
            if cfg.algorithm == "evolution":
                state.population.append(c.index)
                if len(state.population) > cfg.population:
                    state.population.pop(0)  # age out the oldest (regularized evolution)
        state.rng = rng.getstate()
        if state_path is not None:
            state.save(state_path)
        if on_batch is not None:
            on_batch(len(state.history), cfg.budget)
    return _result(state.history, start)


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
        cfg, done = self.cfg, len(state.history)
        evolve = cfg.algorithm == "evolution" and len(state.population) >= cfg.population
        n = min(cfg.batch, cfg.budget - done)
        if cfg.algorithm == "evolution" and not evolve:
            n = min(n, cfg.population - len(state.population))  # fill the population first
        return [self.mutant(state) if evolve else self.random() for _ in range(n)]

    def random(self) -> tuple[str, float, int | None]:
        for _ in range(self.cfg.max_tries):
            arch = self.space.arch(self.space.sample_genome(self.rng)).format()
            lat = self.lat(arch)
            if self.objective.feasible(lat):
                return arch, lat, None
        smallest = self.lat(self.space.arch(self.space.extreme(False)).format())
        raise ValueError(
            f"no network of {self.cfg.max_tries} random draws meets {self.objective.target_ms:g} ms "
            f"(the smallest network of space {self.space.name!r} takes {smallest:.3g} ms by the table); "
            "raise the target or use a smaller space"
        )

    def mutant(self, state: SearchState) -> tuple[str, float, int | None]:
        pop = [state.history[i] for i in state.population]
        sample = self.rng.sample(pop, self.cfg.sample_size)
        parent = max(sample, key=lambda c: (c.score, -c.index))
        genome: Genome = self.space.decode(parent.arch)
        for _ in range(self.cfg.max_tries):
            child = self.space.arch(self.space.mutate(genome, self.rng)).format()
            lat = self.lat(child)
            if self.objective.feasible(lat):
                return child, lat, parent.index
        return self.random()  # the parent sits where no single mutation fits: draw afresh
