"""The whole platform-aware search of ``edgecnn search``: supernet, search, finalists measured, final training.

MnasNet's recipe (Tan et al. 2019) with OFA's cheap accuracy (Cai et al. 2020),
on the user's own device:

1. latency of every candidate from the device's lookup table through the
   latency model (:class:`~edgecnn.latency.model.LatencyModel`: the table's entry,
   else interpolation across widths, else a measurement of the block — taken in
   the executor's exclusive lane, never next to a running task); with
   ``calibrate=N`` the table is first calibrated on N networks of the space
   measured end to end (nn-Meter-style, :func:`edgecnn.latency.validate.calibrate`),
   so that the table's latency and a *measured* target are on one scale (the
   plain sum of isolated eager blocks runs ~20% high, docs/latency.md);
2. a weight-sharing supernet trained once with the sandwich rule or OFA's
   progressive shrinking (:mod:`~edgecnn.search.supernet`), checkpointed and resumable;
3. regularized evolution or random search (:mod:`~edgecnn.search.evolution`) over
   the objective ``ACC·(LAT/TAR)^w`` or a hard constraint, candidates scored
   through the executor (:mod:`~edgecnn.search.estimate`), the state saved after
   every batch;
4. with ``rerank=k``, the ``k`` best candidates short-trained and reordered by
   the blend of the estimate and the short training's top-1 or training speed
   (``rerank_by``; two fidelities, :mod:`~edgecnn.search.rerank`);
5. the best candidates **measured end to end** on the device (again in the
   exclusive lane) — both the table's and the measured latency are reported;
6. the chosen network trained with the standard recipe (:func:`edgecnn.train.fit`);
7. a results document (``kind: "search"``), the Pareto front and a plot.

Next to them, the zoo's reference networks of the setting
(:mod:`~edgecnn.search.references`): latency by the same model and measured
like the finalists, top-1 after the same final training.

Everything written goes to ``out/``: ``latency_table.json``, ``supernet.pt``,
``search_state.json``, ``rerank.json``, ``final/last.pt``, ``references/<name>/last.pt``,
``results.json``, ``pareto.png`` — each file atomically (:mod:`edgecnn.atomic`).

Before any work (:func:`run_job`):

* **the folder is claimed** (:func:`claim_search_dir`): one that holds a
  previous search is refused unless ``resume`` (continue it; it must hold one)
  or ``overwrite`` (its results are removed once every check has passed, so the
  folder never mixes two runs). The device's ``latency_table.json`` is no
  result: it is kept and reused;
* **the run is bounded** (:func:`check_job`): the space's smallest and largest
  networks resolve under :mod:`edgecnn.limits`, and the memory of the supernet's
  training (its weights, gradients and optimiser state — the largest network's
  plus whatever the shared weights add — and the largest network's activations
  at the supernet batch), of the short trainings, of the final training and of
  the references is estimated (:mod:`edgecnn.analysis.memory`) and refused above
  ``EDGECNN_MAX_MEMORY_GB``;
* **a resumed run is checked**: its ``search_state.json`` field by field and
  against this job's settings and space, its ``supernet.pt`` against the
  space, the data and the supernet recipe;
* **the time it implies is estimated** (:func:`estimate_time`) and reported.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.atomic import clean_stale
from edgecnn.build import build
from edgecnn.data import DataSet
from edgecnn.executor import Executor
from edgecnn.latency.calibrate import GROUPS
from edgecnn.latency.measure import device_fingerprint
from edgecnn.latency.compare import COMPARE_TIMING, fastest_ms, fastest_runs
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable
from edgecnn.latency.validate import calibrate, sample_archs
from edgecnn.limits import MAX_CANDIDATES, MAX_EPOCHS, MAX_MEMORY_GB, MAX_NETWORKS, MAX_ROUNDS
from edgecnn.analysis.memory import check_memory, estimate_memory
from edgecnn.run_folder import RUN_FILES, check_writable
from edgecnn.run_document import read_results, write_results
from edgecnn.search.choice import CHOICE_FILE, choose_finalist
from edgecnn.search.correct import CORRECT_FILE, correct, load_corrections
from edgecnn.search.estimate import (READINGS, EstimateSettings, ShortTrainer, SupernetEstimator, TrainEstimator,
                                     search_split)
from edgecnn.search.evolution import ACCURACY, SearchConfig, SearchResult, load_resumable, run_search
from edgecnn.search.objective import Objective
from edgecnn.search.plot import plot_search
from edgecnn.search.proxies import PROXIES, PROXY_BATCH, ProxyEstimator, proxy_batch
from edgecnn.search.references import measure_references, reference_arch, to_rows, train_references
from edgecnn.search.rerank import RERANK_FILE, Reranked, best_distinct, load_trained, rerank
from edgecnn.search.space import SearchSpace
from edgecnn.search.supernet import Supernet, supernet_params
from edgecnn.search.supernet_train import SupernetConfig, load_supernet, same_recipe, train_supernet
from edgecnn.train import TrainConfig, fit
from edgecnn.train.task import DataRef, worker_data

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
    measured_iqr_ms: float  # the interquartile range of its runs (median over rounds)
    measured_score: float  # the objective by the measured latency
    measured_rounds_ms: tuple[float, ...] = ()  # each round's fastest run (the spread of measured_ms)


@dataclass(frozen=True)
class Attempt:
    """One attempt at the target: the search's result (re-ranked), the short trainings, the measured finalists."""

    result: SearchResult
    reranked: list[Reranked] | None
    finalists: list[Finalist]


class Progress:
    """Callbacks the CLI turns into rich progress bars (all optional)."""

    def __init__(self, on_stage: Callable[[str], None] | None = None,
                 on_search: Callable[[int, int], None] | None = None,
                 on_estimate: Callable[[TimeEstimate], None] | None = None) -> None:  # fmt: skip
        self.on_stage = on_stage or (lambda s: None)
        self.on_search = on_search or (lambda d, t: None)
        self.on_estimate = on_estimate or (lambda e: None)  # the time the run implies, before any work


FINALIST_ROUNDS = 3
"""Interleaved rounds the finalists, the references and the calibration networks are timed in (each round's
fastest run; the median over rounds decides)."""


def latency_model(job: SearchJob, out: Path, executor: Executor) -> tuple[LatencyModel, Path]:
    """The device's table (opened or started at ``job.table`` or ``out/latency_table.json``) behind a latency model."""
    path = Path(job.table) if job.table else out / "latency_table.json"
    table = LatencyTable.open_or_new(path, device_fingerprint(backend=job.backend, threads=job.threads,
                                                              device=job.device))  # fmt: skip
    table.config = job.timing
    return LatencyModel(table, measure=True, lane=executor.exclusive, path=path), path


def calibrate_table(job: SearchJob, model: LatencyModel, executor: Executor, *, num_classes: int, in_chans: int,
                    table_path: Path | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Calibrate ``model``'s table on ``job.calibrate`` networks sampled from the space, unless it is already.

    Already: the table holds a calibration at the space's input size from the same seed and number, measured by
    fastest runs. The networks are measured end to end in the executor's exclusive lane as the finalists are
    (back to back, each round's fastest run: ``calibrate(by="fastest")``); blocks the table lacks come from the
    latency model.
    Returns the calibration (its scales and fit error) or None when ``job.calibrate`` is 0.
    """
    if not job.calibrate:
        return None
    size = job.space.input_size
    info = {"input_size": size, "seed": job.calibrate_seed, "n": job.calibrate, "by": "fastest"}
    cal = model.table.calibration
    if cal is not None and all(cal.info.get(k) == v for k, v in info.items()):
        return cal.to_dict()
    archs = sample_archs(job.calibrate, job.space.sample, seed=job.calibrate_seed)
    with executor.exclusive():  # measured as the finalists are: the scales map the table to that latency
        cal = calibrate(model.table, archs, input_size=size, num_classes=num_classes, in_chans=in_chans,
                        model=model, info={"seed": job.calibrate_seed, "n": job.calibrate}, by="fastest",
                        rounds=FINALIST_ROUNDS, table_path=None if table_path is None else str(table_path))  # fmt: skip
    return cal.to_dict()


def prepare_supernet(job: SearchJob, data: DataSet, out: Path, *, resume: bool,
                     progress: bool) -> tuple[Supernet, dict[str, Any]]:  # fmt: skip
    """Load the finished supernet of ``out``, or train it (continuing a partial one when ``resume``)."""
    path = out / SUPERNET_FILE
    if resume and path.is_file():
        net, doc = load_supernet(path, space=job.space, num_classes=data.num_classes, in_chans=data.in_chans)
        if same_recipe(doc.get("config"), job.supernet) and doc["step"] >= job.supernet.steps:
            return net, {"steps": doc["step"], "seconds": 0.0, "reused": True}
    torch.manual_seed(job.supernet.seed)
    net = Supernet(job.space, num_classes=data.num_classes, in_chans=data.in_chans,
                   kernel_transform=job.supernet.schedule == "progressive")  # fmt: skip
    res = train_supernet(net, data, job.supernet, checkpoint=path, resume=resume, progress=progress)
    return net, {"steps": res.steps, "seconds": res.seconds, "final_loss": res.final_loss,
                 "resumed_from": res.resumed_from, "reused": False, "phase_seconds": res.phase_seconds}  # fmt: skip


def measure_finalists(job: SearchJob, result: SearchResult, data: DataSet, executor: Executor) -> list[Finalist]:
    """End-to-end latency of the best distinct candidates, with no task running (the exclusive lane).

    Timed as every latency verdict of edgecnn is (:func:`~edgecnn.latency.compare.fastest_runs`): all finalists
    back to back in :data:`FINALIST_ROUNDS` interleaved rounds, each round's **fastest** run (on the thread's CPU
    clock with one thread), the median over rounds. Not the drift-normalised median the table's entries are: on a
    shared 2-core VM that median moved the same network 0.46–0.63 ms between timings while its fastest run stayed
    within 1%, and finalists measured that way beside two other searches read 0.81–1.07× of a target they
    exceeded by 9–34% when timed quietly (docs/search.md) — this measurement is the check on the table, and the
    choice of the network trained (:meth:`Objective.choose`) rests on it.
    """
    size = job.space.input_size
    # each network once, none over the constraint (a corrected search's history holds some); all degenerate: as ranked
    best = best_distinct(result, job.finalists) or list(result.best[: job.finalists])
    nets = {c.arch: build(c.arch, num_classes=data.num_classes, in_chans=data.in_chans) for c in best}
    with executor.exclusive():
        _, runs = fastest_runs(nets, (1, data.in_chans, size, size), backend=job.backend, threads=job.threads,
                               device=job.device, rounds=FINALIST_ROUNDS)  # fmt: skip
    out: list[Finalist] = []
    for c in best:
        ms = fastest_ms(runs[c.arch])
        out.append(Finalist(c.arch, c.acc, c.score, c.lat_ms, ms, statistics.median(s.iqr_ms for s in runs[c.arch]),
                            job.objective.score(c.acc, ms), tuple(s.min_ms for s in runs[c.arch])))  # fmt: skip
    return out


# ---- before any work: the folder, the bounds, a resumed run, the time ----------------------------------
SEARCH_FILES: tuple[str, ...] = ("results.json", "search_state.json", "supernet.pt", RERANK_FILE, CHOICE_FILE,
                                  CORRECT_FILE, "pareto.png")  # fmt: skip
"""The files of a previous search at the top of its folder (besides the correction rounds' states
``search_state.correct<k>.json``, ``final/`` and ``references/<name>/``)."""
STATE_FILE = "search_state.json"
SUPERNET_FILE = "supernet.pt"


def previous_search(out: str | Path) -> list[str]:
    """The files of a previous search in ``out``, relative to it (empty for a new or foreign folder)."""
    p = Path(out)
    if not p.is_dir():
        return []
    found = [name for name in SEARCH_FILES if (p / name).is_file()]
    found += sorted(x.name for x in p.glob(f"{Path(STATE_FILE).stem}.correct*.json") if x.is_file())
    subs = [p / "final"] + (sorted(x for x in (p / "references").iterdir() if x.is_dir())
                            if (p / "references").is_dir() else [])  # fmt: skip
    for sub in subs:
        found += [str((sub / name).relative_to(p)) for name in RUN_FILES if (sub / name).is_file()]
    return found


def claim_search_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check that ``out`` may hold this search (:func:`edgecnn.run_folder.claim_run_dir` for a search's files).

    A folder with a previous search is refused unless ``resume`` or ``overwrite``; ``resume`` needs a search
    to continue (its ``search_state.json`` or ``supernet.pt``). Nothing is changed here but the removal of
    temporaries of a killed write; ``overwrite`` removes the previous results later
    (:func:`clear_previous_search`), once every check has passed.
    """
    p = check_writable(out, what="run folder (--out)", is_dir=True)
    if resume and overwrite:
        raise ValueError("--resume continues the search in the folder, --overwrite replaces it: pass one of them")
    found = previous_search(p)
    if found and not resume and not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise FileExistsError(f"{p} already holds a previous search ({shown}); pass --resume to continue it, "
                              "--overwrite to replace it, or another --out")  # fmt: skip
    if resume and not any(name in found for name in (STATE_FILE, SUPERNET_FILE)):
        raise FileNotFoundError(f"nothing to resume: {p} holds no search ({STATE_FILE} or {SUPERNET_FILE}); "
                                "drop --resume to start one there")  # fmt: skip
    if p.is_dir():
        clean_stale(p)
    return p


def clear_previous_search(out: Path) -> list[str]:
    """Remove the files of a previous search from ``out`` (what ``overwrite`` replaces); returns them.

    The device's latency table is kept: it is this device's measurements, which the new search reuses.
    """
    gone = previous_search(out)
    for name in gone:
        (out / name).unlink(missing_ok=True)
    return gone


def check_job(job: SearchJob, *, num_classes: int = 2, in_chans: int = 1) -> dict[str, float]:
    """Refuse up front a search that cannot fit: ``ValueError`` naming the limit (and its variable).

    The space's smallest and largest networks resolve under :mod:`edgecnn.limits`; then the memory of each
    stage is estimated from the specs alone (:mod:`edgecnn.analysis.memory`) and refused above ``EDGECNN_MAX_MEMORY_GB``:

    * supernet training: the largest network's training estimate at the supernet batch, plus 16 bytes
      (weight, gradient, two momenta) for every shared weight the largest network does not use (the
      supernet's weights are counted on the meta device), plus the frozen teacher of progressive shrinking;
    * ``--estimator train``: the largest network trained at the short-training batch;
    * the final training (the chosen network may be the largest) and the references' trainings, or their
      inference when they are only measured.

    The defaults (2 classes, 1 channel) are a lower bound before the data is read; :func:`run_job` checks again
    with the data's. Returns the estimates in GB by stage.
    """
    space, size = job.space, job.space.input_size
    space.check_limits()
    largest = space.arch(space.extreme(True))
    kw = {"input_size": size, "num_classes": num_classes, "in_chans": in_chans}
    out: dict[str, float] = {}
    if job.estimator == "supernet":
        progressive = job.supernet.schedule == "progressive"
        est = estimate_memory(largest, batch=job.supernet.batch_size, training=True, **kw)
        params = supernet_params(space, num_classes=num_classes, in_chans=in_chans, kernel_transform=progressive)
        total = est.total_bytes + 16 * max(0, params - est.params) + (4 * est.params if progressive else 0)
        gb, limit = total / 1e9, MAX_MEMORY_GB.value()
        if gb > limit:
            raise ValueError(
                f"search space {space.name!r}: training its supernet would need about {gb:,.3g} GB ({params:,} "
                f"shared weights, the largest network's activations at batch {job.supernet.batch_size}, "
                f"{size}px), above the limit of {limit:g} GB{_origin()}; use a smaller space "
                f"(widths, expansions, kernels, depths), or raise {MAX_MEMORY_GB.env}=N"
            )  # fmt: skip
        out["supernet"] = gb
    else:
        batch = PROXY_BATCH if job.estimator.startswith("proxy-") else job.estimate.train_batch_size
        what = f"the largest network of space {space.name!r} (--estimator {job.estimator})"
        out[job.estimator] = check_memory(largest, batch=batch, training=True, what=what, **kw).gb
    if job.rerank:
        what = f"the largest network of space {space.name!r} (--rerank: short training)"
        out["rerank"] = check_memory(largest, batch=job.estimate.train_batch_size, training=True, what=what,
                                     **kw).gb  # fmt: skip
    if job.final_epochs:
        cfg = job.final_config or TrainConfig(epochs=job.final_epochs)
        what = f"the largest network of space {space.name!r} (the final training, --final-batch-size)"
        out["final"] = check_memory(largest, batch=cfg.batch_size, training=True, what=what, **kw).gb
    for ref in job.references:
        train = bool(job.final_epochs and job.train_references)
        cfg = job.final_config or TrainConfig(epochs=job.final_epochs)
        try:
            est = check_memory(reference_arch(ref), batch=cfg.batch_size if train else 1, training=train,
                               what=f"reference {ref}", **kw)  # fmt: skip
        except ValueError as exc:
            raise ValueError(str(exc) if str(exc).startswith("reference ") else f"reference {ref}: {exc}") from None
        out[f"reference {ref}"] = est.gb
    return out


def _origin() -> str:
    """Where the memory limit in force comes from (`` (80% of … RAM)``), where edgecnn.limits says."""
    origin = getattr(MAX_MEMORY_GB, "origin", None)
    return origin() if callable(origin) else ""


def check_resume_state(job: SearchJob, out: Path) -> None:
    """Before any work, that ``job`` can continue the search state in ``out`` (if it holds one): the file is
    checked field by field and against the job's settings and space (``ValueError`` naming the file and field)."""
    state = out / STATE_FILE
    if state.is_file():
        load_resumable(state, job.space, job.search, job.objective, job.estimate_kind)
    if job.rerank:
        load_trained(out / RERANK_FILE, rerank_recipe(job))  # its short trainings are of this job's recipe
    load_corrections(out / CORRECT_FILE, job.objective.target_ms)  # its rounds, replayed, are of this target


def check_resume_supernet(job: SearchJob, out: Path, *, num_classes: int, in_chans: int) -> None:
    """Before any work, that the ``supernet.pt`` in ``out`` (if any) is of the job's space, data and recipe."""
    path = out / SUPERNET_FILE
    if job.estimator == "supernet" and path.is_file():
        _, doc = load_supernet(path, space=job.space, num_classes=num_classes, in_chans=in_chans)
        if not same_recipe(doc.get("config"), job.supernet):
            raise ValueError(f"{path} was trained with another supernet recipe ({doc.get('config')}); resume with "
                             "the same --supernet-steps/--supernet-schedule/--seed, or pass --overwrite")  # fmt: skip


@dataclass(frozen=True)
class TimeEstimate:
    """A rough estimate of a search's wall time, by stage (see :func:`estimate_time`)."""

    seconds: dict[str, float]  # by stage
    mac_rate: float  # multiply-adds per second of this machine's probe
    threads: int  # torch threads the probe ran with

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    def describe(self) -> str:
        """One line: the total, each stage, and how it was derived."""
        parts = ", ".join(f"{k} {_duration(v)}" for k, v in self.seconds.items() if v >= 0.5)
        return (f"estimated time: about {_duration(self.total_s)} ({parts or 'every stage under a second'}); "
                f"rough, within a few times: each stage's multiply-adds at {self.mac_rate / 1e9:.3g} GMAC/s (a dense "
                f"conv probed on {self.threads} thread(s) here) derated {1 / _EFFICIENCY:g}x "
                f"({1 / _SUPERNET_EFFICIENCY:g}x for the supernet), plus a fixed cost per step and candidate; "
                "latency measurements at their --max-seconds cap; new table entries not counted")  # fmt: skip


# How far below a dense 3×3 conv's rate a search runs (measured on mbv3-32 and a tiny space on one CPU thread):
_EFFICIENCY = 1 / 8  # small and depthwise layers, BN, activations, data loading: scoring and plain training
_SUPERNET_EFFICIENCY = 1 / 16  # the supernet's weight slicing and in-place distillation on top
_STEP_S = 0.01  # fixed cost of one optimiser step (Python, the loader)
_SUPERNET_STEP_S = 0.05  # of a supernet step (2 + num_random subnets)
_CANDIDATE_S = 0.05  # of scoring one candidate (extracting it, building it, a task)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"


def measure_mac_rate(repeats: int = 3) -> float:
    """Multiply-adds per second of a small dense 3×3 conv on this machine (a probe of ~10 ms)."""
    x, w = torch.randn(8, 32, 16, 16), torch.randn(32, 32, 3, 3)
    macs = 8 * 32 * 32 * 9 * 16 * 16
    best = math.inf
    with torch.no_grad():
        F.conv2d(x, w, padding=1)
        for _ in range(repeats):
            t = time.perf_counter()
            F.conv2d(x, w, padding=1)
            best = min(best, time.perf_counter() - t)
    return macs / max(best, 1e-9)


def estimate_time(job: SearchJob, *, train_images: int, val_images: int, num_classes: int, in_chans: int,
                  mac_rate: float | None = None) -> TimeEstimate:  # fmt: skip
    """The wall time the job implies, by stage — rough (within a few times), from multiply-adds.

    A forward pass costs the network's multiply-adds per image, a training step about 3× (forward and
    backward); a typical candidate costs the mean of the space's smallest and largest networks, a supernet step
    the largest, the smallest and ``num_random`` typical ones. Each stage's multiply-adds are divided by
    ``mac_rate`` (default: :func:`measure_mac_rate`, a dense conv on this machine) derated 8× (16× for the
    supernet) for what a small network spends besides dense convs, plus a fixed cost per step and candidate
    (both measured once on one CPU thread). Latency measurements count at their cap (``job.timing.max_seconds``
    for the calibration, the comparisons' cap per round for the finalists and references); the blocks the table
    lacks, measured as the search meets them, are not counted.
    """
    space, size = job.space, job.space.input_size

    def macs(arch: Any) -> float:
        return float(cost_from_spec(arch, input_size=size, num_classes=num_classes, in_chans=in_chans).macs)

    small, large = macs(space.arch(space.extreme(False))), macs(space.arch(space.extreme(True)))
    mid = (small + large) / 2
    probe = mac_rate or measure_mac_rate()
    rate, sn_rate = probe * _EFFICIENCY, probe * _SUPERNET_EFFICIENCY
    cap, b, e = job.timing.max_seconds, job.search.budget, job.estimate
    s: dict[str, float] = {}
    if job.calibrate:
        s["calibration"] = job.calibrate * cap
    if job.estimator == "supernet":
        sn = job.supernet
        step = sn.batch_size * 3 * (large + small + sn.num_random * mid) / sn_rate + _SUPERNET_STEP_S
        s["supernet"] = sn.steps * step
        s["search"] = b * ((e.recal_batches * e.recal_batch_size + val_images) * mid / rate + _CANDIDATE_S)
    elif job.estimator.startswith("proxy-"):  # one forward and backward of a batch per candidate
        s["search"] = b * (PROXY_BATCH * 3 * mid / rate + _CANDIDATE_S)
    train = e.train_steps * (e.train_batch_size * 3 * mid / rate + _STEP_S) + val_images * mid / rate + _CANDIDATE_S
    if job.estimator == "train":
        s["search"] = b * train
    if job.rerank:
        s["rerank"] = job.rerank * train
    s["measurements"] = (job.finalists + len(job.references)) * FINALIST_ROUNDS * COMPARE_TIMING.max_seconds
    if job.correct:  # at most: each round searches on, re-ranks (new candidates only, in practice) and measures
        per = s.get("search", 0.0) / max(1, b) * job.correct_extra + s.get("rerank", 0.0)
        s["corrections (at most)"] = job.correct * (per + job.finalists * FINALIST_ROUNDS * COMPARE_TIMING.max_seconds)
    if job.final_epochs:
        cfg = job.final_config or TrainConfig(epochs=job.final_epochs)
        steps = math.ceil(train_images / cfg.batch_size)
        s["final training"] = job.final_epochs * (train_images * 3 * mid / rate + steps * _STEP_S)
        if job.train_references and job.references:
            refs = sum(macs(reference_arch(r)) for r in job.references)
            n = len(job.references)
            s["references"] = job.final_epochs * (train_images * 3 * refs / rate + n * steps * _STEP_S)
    return TimeEstimate(s, probe, torch.get_num_threads())


def run_job(job: SearchJob, out_dir: str | Path, executor: Executor, *, resume: bool = False,
            overwrite: bool = False, progress: Progress | None = None,
            show_bars: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run the search end to end and write ``out/results.json`` (returned as a dict).

    Before any work (see the module doc): the folder is claimed (``resume`` continues the search in it,
    ``overwrite`` replaces it, a used folder is refused otherwise), the job is bounded (:func:`check_job`), a
    resumed run is checked (:func:`check_resume_state`, :func:`check_resume_supernet`) and the time it implies
    is reported (``progress.on_estimate``).
    """
    out = claim_search_dir(out_dir, resume=resume, overwrite=overwrite)
    check_job(job)  # a lower bound before the data is read; again with the data's classes and channels below
    if resume:
        check_resume_state(job, out)
    prog = progress or Progress()
    t0 = time.perf_counter()
    full = worker_data(job.data)
    data = search_split(full, val_fraction=job.estimate.val_fraction, seed=job.estimate.split_seed)
    check_job(job, num_classes=data.num_classes, in_chans=data.in_chans)
    if resume:
        check_resume_supernet(job, out, num_classes=data.num_classes, in_chans=data.in_chans)
    prog.on_estimate(estimate_time(job, train_images=len(full.train), val_images=len(data.test),
                                   num_classes=data.num_classes, in_chans=data.in_chans))  # fmt: skip
    if overwrite:
        clear_previous_search(out)
    out.mkdir(parents=True, exist_ok=True)
    model, table_path = latency_model(job, out, executor)
    size = job.space.input_size

    def latency(arch: str) -> float:
        return model.predict(arch, input_size=size, num_classes=data.num_classes, in_chans=data.in_chans).total_ms

    timings: dict[str, float] = {}
    calibration = None
    if job.calibrate:
        prog.on_stage(f"calibrating the latency table on {job.calibrate} measured networks")
        t = time.perf_counter()
        calibration = calibrate_table(job, model, executor, num_classes=data.num_classes, in_chans=data.in_chans,
                                      table_path=table_path)  # fmt: skip
        timings["calibrate_s"] = time.perf_counter() - t
    supernet_info: dict[str, Any] | None = None
    if job.estimator == "supernet":
        prog.on_stage("training the supernet")
        t = time.perf_counter()
        supernet, supernet_info = prepare_supernet(job, data, out, resume=resume, progress=show_bars)
        timings["supernet_s"] = time.perf_counter() - t
        estimator: Callable[[list[str]], list[float]] = SupernetEstimator(supernet, job.data, job.estimate, executor)
    elif job.estimator.startswith("proxy-"):
        estimator = ProxyEstimator(job.estimator.removeprefix("proxy-"), proxy_batch(data, seed=job.search.seed),
                                   num_classes=data.num_classes, seed=job.search.seed)  # fmt: skip
    else:
        estimator = TrainEstimator(job.data, job.estimate, executor, seed=job.search.seed)
    state = out / STATE_FILE
    step = {"search_s": 0.0, "rerank_s": 0.0, "finalists_s": 0.0}

    def attempt(objective: Objective, config: SearchConfig, path: Path, again: bool, label: str = "") -> Attempt:
        """Search (or search on) under ``objective``, re-rank, measure the finalists: one attempt at the target."""
        prog.on_stage(f"searching{label} ({config.algorithm}, {config.budget} candidates)")
        t = time.perf_counter()
        result = run_search(job.space, estimator, latency, objective, config, state_path=path, resume=again,
                            on_batch=prog.on_search, estimate=job.estimate_kind)  # fmt: skip
        step["search_s"] += time.perf_counter() - t
        reranked = None
        if job.rerank:
            reading = "training speed" if job.rerank_by == "speed" else "top-1"
            prog.on_stage(f"short-training the best {job.rerank} candidates{label} ({job.estimate.train_steps} steps "
                          f"each; reordered by the estimate and the short training's {reading})")  # fmt: skip
            t = time.perf_counter()
            result, reranked = rerank(result, job.rerank, ShortTrainer(job.data, job.estimate, executor,
                                      seed=job.search.seed), by=job.rerank_by, path=out / RERANK_FILE,
                                      recipe=rerank_recipe(job), chunk=max(1, executor.workers))  # fmt: skip
            step["rerank_s"] += time.perf_counter() - t
        prog.on_stage(f"measuring the finalists{label} end to end")
        t = time.perf_counter()
        finalists = measure_finalists(job, result, data, executor)
        step["finalists_s"] += time.perf_counter() - t
        return Attempt(result, reranked, finalists)

    def smallest_ms() -> float:
        return latency(job.space.arch(job.space.extreme(False)).format())

    first = attempt(job.objective, job.search, state, resume and state.is_file())
    corrected = correct(job.objective, job.search, state, first, rounds=job.correct, extra=job.correct_extra,
                        finalists_of=lambda a: a.finalists, smallest_table_ms=smallest_ms,
                        search_on=lambda k, obj, cfg, path: attempt(obj, cfg, path, True, f" on, correction {k} "
                                                                    f"(target {obj.target_ms:.4g} ms by the table)"),
                        record=out / CORRECT_FILE, frozen=(out / CHOICE_FILE).is_file())  # fmt: skip
    result, reranked, finalists = corrected.attempt.result, corrected.attempt.reranked, corrected.attempt.finalists
    timings.update(step)
    if not job.rerank:
        del timings["rerank_s"]
    if job.references:
        prog.on_stage(f"measuring {len(job.references)} reference network(s) end to end")
    references = measure_references(job.references, model, executor, input_size=size, num_classes=data.num_classes,
                                    in_chans=data.in_chans, backend=job.backend, threads=job.threads)  # fmt: skip
    choice = choose_finalist(job.objective, [(f.arch, f.acc, f.measured_ms) for f in finalists], out / CHOICE_FILE)
    chosen = finalists[choice["index"]]
    final = None
    if job.final_epochs:
        prog.on_stage(f"training finalist {choice['index'] + 1} for {job.final_epochs} epochs ({choice['reason']})")
        t = time.perf_counter()
        final = train_final(job, chosen.arch, full, out / "final", resume=resume, progress=show_bars)
        timings["final_s"] = time.perf_counter() - t
        final["measured_ms"] = chosen.measured_ms
        if job.train_references and references:
            prog.on_stage(f"training {len(references)} reference network(s) with the same recipe")
            t = time.perf_counter()
            references = train_references(references, lambda arch, folder: train_final(
                job, arch, full, folder, resume=resume, progress=show_bars), out / "references")  # fmt: skip
            timings["references_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    table = {"path": str(table_path), "sources": dict(model.counts), "entries": len(model.table.entries),
             "calibration": calibration}
    doc = results_document(job, result, finalists, final, supernet_info, timings, table)
    doc["chosen"] = choice
    doc["corrections"] = {"rounds": [asdict(r) for r in corrected.rounds], "stop": corrected.stop,
                          "asked": job.correct, "extra": job.correct_extra}  # fmt: skip
    doc["rerank"] = None if reranked is None else [asdict(r) for r in reranked]
    doc["rerank_by"] = job.rerank_by if reranked is not None else None
    doc["references"] = to_rows(references)
    plot = plot_search({"kind": "search", **doc}, out / "pareto.png")
    doc["plot"] = None if plot is None else str(plot)
    return read_results(write_results(out, "search", doc))


def rerank_recipe(job: SearchJob) -> dict[str, Any]:
    """What a rerank's short trainings depend on (recorded in ``rerank.json``; a resume must match it)."""
    keys = ("image_size", "val_fraction", "split_seed", "train_steps", "train_lr", "train_batch_size")
    return {**{k: getattr(job.estimate, k) for k in keys}, "seed": job.search.seed, "data": asdict(job.data)}


def train_final(job: SearchJob, arch: str, data: DataSet, out: Path, *, resume: bool, progress: bool) -> dict[str, Any]:
    """Train the chosen network from scratch with the standard recipe on the full training split; test top-1."""
    cfg = job.final_config or TrainConfig(epochs=job.final_epochs)
    cfg = replace(cfg, image_size=job.space.input_size, progress=progress)
    torch.manual_seed(cfg.seed)
    net = build(arch, num_classes=data.num_classes, in_chans=data.in_chans)
    res = fit(net, data, cfg, out_dir=out, resume=resume and (out / "last.pt").is_file())
    return {"arch": arch, "epochs": cfg.epochs, "top1": res.top1, "top5": res.final.top5, "seconds": res.seconds,
            "checkpoint": res.checkpoint}  # fmt: skip


def results_document(job: SearchJob, result: SearchResult, finalists: list[Finalist], final: dict[str, Any] | None,
                     supernet: dict[str, Any] | None, timings: dict[str, float],
                     table: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The body of a search's results document (``kind: "search"``, :mod:`edgecnn.run_document`)."""
    return {
        "space": job.space.to_dict(),
        "data": asdict(job.data),
        "objective": {**asdict(job.objective), "formula": job.objective.describe()},
        "search": asdict(job.search),
        "estimator": job.estimator,
        "estimate": asdict(job.estimate),
        "supernet": None if supernet is None else {**supernet, "config": asdict(job.supernet)},
        "latency": {"backend": job.backend, "threads": job.threads, "device": job.device, "table": table},
        "history": [c.to_dict() for c in result.history],
        "front": [c.index for c in result.front],
        "best": [c.to_dict() for c in result.best[:10]],
        "finalists": [asdict(f) for f in finalists],
        "final": final,
        "timings": timings,
    }
