"""What one ``edgecnn search`` is (:class:`SearchJob`) and what it measures of its best (:class:`Finalist`).

The settings of a search, checked when the job is made (every error names the setting and the fix); the run
itself is :func:`edgecnn.search.job.run_job`, the checks before any work :mod:`edgecnn.search.job_checks`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgecnn.arch import as_spec
from edgecnn.latency.calibrate import GROUPS
from edgecnn.latency.compare import Anchor
from edgecnn.latency.measure import TimingConfig
from edgecnn.limits import MAX_CANDIDATES, MAX_EPOCHS, MAX_NETWORKS, MAX_ROUNDS
from edgecnn.search.estimate import READINGS, EstimateSettings
from edgecnn.search.evolution import ACCURACY, SearchConfig
from edgecnn.search.objective import Objective
from edgecnn.search.proxies import PROXIES
from edgecnn.search.references import reference_arch
from edgecnn.search.space import SearchSpace
from edgecnn.search.supernet_train import SupernetConfig
from edgecnn.train import TrainConfig
from edgecnn.train.task import DataRef


ESTIMATORS: tuple[str, ...] = ("supernet", "train", *(f"proxy-{p}" for p in PROXIES))
"""How candidates are scored: the supernet, short training, or a zero-cost proxy of the untrained network
(:mod:`edgecnn.search.proxies`; with the hard latency constraint only: a proxy's score is no accuracy)."""


@dataclass(frozen=True)
class SearchJob:
    """One search, end to end (see the module doc)."""

    space: SearchSpace  # what to search
    data: DataRef  # where the images are
    objective: Objective  # target latency and how it weighs
    search: SearchConfig = field(default_factory=SearchConfig)  # algorithm and budget
    supernet: SupernetConfig = field(default_factory=SupernetConfig)  # supernet recipe
    estimate: EstimateSettings = field(default_factory=EstimateSettings)  # validation split, recalibration
    estimator: str = "supernet"  # "supernet" (cheap) or "train" (short training of every candidate)
    backend: str = "eager"  # latency backend of the table and the final measurements
    threads: int = 1  # threads latency is measured with
    device: str = "cpu"  # where: this machine, or an agent's HOST:PORT on the device (docs/agent.md)
    timing: TimingConfig = field(default_factory=TimingConfig)  # timing of new table entries and finalists
    table: str | None = None  # lookup table JSON (default: out/latency_table.json, extended as needed)
    finalists: int = 3  # best candidates measured end to end
    final_epochs: int = 0  # epochs of the final training of the chosen network (0: skip)
    final_config: TrainConfig | None = None  # the final recipe (default: TrainConfig(epochs=final_epochs))
    references: tuple[str, ...] = ()  # zoo networks ("name" or "name@width") on the plot (search.references)
    train_references: bool = True  # also train them with the final recipe when final_epochs > 0
    calibrate: int = 0  # networks of the space measured to calibrate the table first (0: use it as it is)
    calibrate_seed: int = 1000  # their sampling seed
    rerank: int = 0  # the best N candidates short-trained and reordered by the blend with the estimate (0: off)
    rerank_by: str = "top1"  # the short training's reading blended: its top-1, or its training speed (READINGS)
    correct: int = 0  # hard constraint: rounds of measured correction when no finalist meets it (search.correct)
    correct_budget: int = 0  # candidates each round adds to the search (0: half the search's budget)
    anchor: Anchor | None = None  # the network every sitting is read against (calibration, finalists, references)

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if self.estimator.startswith("proxy-") and not self.objective.hard:
            raise ValueError(f"estimator {self.estimator!r} scores on its own scale, not an accuracy: the soft "
                             "objective ACC·(LAT/TAR)^w would weigh it by latency meaninglessly; use the hard "
                             "constraint (--hard, Objective(hard=True))")  # fmt: skip
        if self.finalists < 1 or self.final_epochs < 0 or self.threads < 1:
            raise ValueError("finalists and threads must be positive, final_epochs >= 0")
        if self.calibrate and self.calibrate < 2 * len(GROUPS):
            raise ValueError(f"calibrate needs at least {2 * len(GROUPS)} networks (or 0 to skip), got {self.calibrate}")
        if self.rerank and (self.rerank < 2 or self.estimator == "train"):
            raise ValueError(f"rerank short-trains the best N >= 2 candidates of a cheaper estimator (got N = "
                             f"{self.rerank} with --estimator {self.estimator}); with --estimator train every "
                             "candidate is trained already: use 0")  # fmt: skip
        MAX_CANDIDATES.check(self.finalists, "finalists")
        MAX_CANDIDATES.check(self.rerank, "rerank")
        if self.rerank_by not in READINGS:
            raise ValueError(f"rerank_by {self.rerank_by!r}: not a reading of a short training; valid: "
                             f"{', '.join(READINGS)}")  # fmt: skip
        if self.rerank_by != "top1" and not self.rerank:
            raise ValueError(f"rerank_by {self.rerank_by!r} reads the short trainings of rerank, which is off; "
                             "pass rerank >= 2 (--rerank K) or leave rerank_by at 'top1'")  # fmt: skip
        if self.correct < 0 or self.correct_budget < 0:
            raise ValueError(f"correct and correct_budget must be >= 0, got {self.correct} and {self.correct_budget}")
        if self.correct and not self.objective.hard:
            raise ValueError("measured corrections (correct > 0) tighten a hard latency constraint; with the soft "
                             "objective a scale of the table changes no ranking: use --hard, or --correct 0")  # fmt: skip
        MAX_ROUNDS.check(self.correct, "correction rounds")
        MAX_CANDIDATES.check(self.search.budget + self.correct * self.correct_extra, "search budget with corrections")
        MAX_EPOCHS.check(self.final_epochs, "final training")
        MAX_NETWORKS.check(self.calibrate, "calibration")
        for ref in self.references:
            reference_arch(ref)
        if self.anchor is not None:
            try:
                as_spec(self.anchor.arch)
            except ValueError as exc:
                raise ValueError(f"the anchor's arch: {exc}") from None

    @property
    def correct_extra(self) -> int:
        """Candidates each correction round adds to the search."""
        return self.correct_budget or max(1, self.search.budget // 2)

    @property
    def estimate_kind(self) -> str:
        """What the search state's estimates are (:attr:`SearchState.estimate`): an accuracy, or the proxy's score."""
        return self.estimator if self.estimator.startswith("proxy-") else ACCURACY


@dataclass(frozen=True)
class Finalist:
    """A best candidate with its table latency and its measured one."""

    arch: str  # canonical arch string
    acc: float  # the search's accuracy estimate
    score: float  # the objective by the table latency
    table_ms: float  # latency predicted from the table
    measured_ms: float  # end to end in the exclusive lane: the median over rounds of each round's fastest run
    # (with the job's anchor: of each round's fastest run over the anchor's, times the anchor's latency)
    measured_iqr_ms: float  # the interquartile range of its runs (median over rounds)
    measured_score: float  # the objective by the measured latency
    measured_rounds_ms: tuple[float, ...] = ()  # each round's fastest run, as timed (the spread of measured_ms)


FINALIST_ROUNDS = 5
"""Interleaved rounds the finalists, the references and the calibration networks are timed in (each round's
fastest run; the median over rounds decides)."""
FINALIST_PAUSE_S = 2.0
"""Seconds between those rounds: a round of small networks takes milliseconds, and a sitting without pauses fits
inside one episode of contention on a shared machine — the same three networks read 12–14% slower in one such
sitting than in the two before it, every round's fastest run included (docs/search.md)."""


def rerank_recipe(job: SearchJob) -> dict[str, Any]:
    """What a rerank's short trainings depend on (recorded in ``rerank.json``; a resume must match it)."""
    keys = ("image_size", "val_fraction", "split_seed", "train_steps", "train_lr", "train_batch_size")
    return {**{k: getattr(job.estimate, k) for k in keys}, "seed": job.search.seed, "data": asdict(job.data)}
