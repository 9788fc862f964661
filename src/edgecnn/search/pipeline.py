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
4. the best candidates **measured end to end** on the device (again in the
   exclusive lane) — both the table's and the measured latency are reported;
5. the chosen network trained with the standard recipe (:func:`edgecnn.train.fit`);
6. a results document (``kind: "search"``), the Pareto front and a plot.

Next to them, the zoo's reference networks of the setting
(:mod:`~edgecnn.search.references`): latency by the same model and measured
like the finalists, top-1 after the same final training.

Everything written goes to ``out/``: ``latency_table.json``, ``supernet.pt``,
``search_state.json``, ``final/last.pt``, ``references/<name>/last.pt``,
``results.json``, ``pareto.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edgecnn.build import build
from edgecnn.data import DataSet
from edgecnn.executor import Executor
from edgecnn.latency.calibrate import GROUPS
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable
from edgecnn.latency.validate import calibrate, sample_archs
from edgecnn.results import read_results, write_results
from edgecnn.search.estimate import EstimateSettings, SupernetEstimator, TrainEstimator, search_split
from edgecnn.search.evolution import SearchConfig, SearchResult, run_search
from edgecnn.search.objective import Objective
from edgecnn.search.plot import plot_search
from edgecnn.search.references import measure_references, reference_arch, to_rows, train_references
from edgecnn.search.space import SearchSpace
from edgecnn.search.supernet import Supernet
from edgecnn.search.supernet_train import SupernetConfig, load_supernet, same_recipe, train_supernet
from edgecnn.train import TrainConfig, fit
from edgecnn.train.task import DataRef, worker_data

ESTIMATORS: tuple[str, ...] = ("supernet", "train")


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
    timing: TimingConfig = field(default_factory=TimingConfig)  # timing of new table entries and finalists
    table: str | None = None  # lookup table JSON (default: out/latency_table.json, extended as needed)
    finalists: int = 3  # best candidates measured end to end
    final_epochs: int = 0  # epochs of the final training of the chosen network (0: skip)
    final_config: TrainConfig | None = None  # the final recipe (default: TrainConfig(epochs=final_epochs))
    references: tuple[str, ...] = ()  # zoo networks ("name" or "name@width") on the plot (search.references)
    train_references: bool = True  # also train them with the final recipe when final_epochs > 0
    calibrate: int = 0  # networks of the space measured to calibrate the table first (0: use it as it is)
    calibrate_seed: int = 1000  # their sampling seed

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if self.finalists < 1 or self.final_epochs < 0 or self.threads < 1:
            raise ValueError("finalists and threads must be positive, final_epochs >= 0")
        if self.calibrate and self.calibrate < 2 * len(GROUPS):
            raise ValueError(f"calibrate needs at least {2 * len(GROUPS)} networks (or 0 to skip), got {self.calibrate}")
        for ref in self.references:
            reference_arch(ref)


@dataclass(frozen=True)
class Finalist:
    """A best candidate with its table latency and its measured one."""

    arch: str  # canonical arch string
    acc: float  # the search's accuracy estimate
    score: float  # the objective by the table latency
    table_ms: float  # latency predicted from the table
    measured_ms: float  # median of an end-to-end measurement in the exclusive lane
    measured_iqr_ms: float  # its interquartile range
    measured_score: float  # the objective by the measured latency


class Progress:
    """Callbacks the CLI turns into rich progress bars (all optional)."""

    def __init__(self, on_stage: Callable[[str], None] | None = None,
                 on_search: Callable[[int, int], None] | None = None) -> None:  # fmt: skip
        self.on_stage = on_stage or (lambda s: None)
        self.on_search = on_search or (lambda d, t: None)


def latency_model(job: SearchJob, out: Path, executor: Executor) -> tuple[LatencyModel, Path]:
    """The device's table (opened or started at ``job.table`` or ``out/latency_table.json``) behind a latency model."""
    path = Path(job.table) if job.table else out / "latency_table.json"
    table = LatencyTable.open_or_new(path, fingerprint(backend=job.backend, threads=job.threads))
    table.config = job.timing
    return LatencyModel(table, measure=True, lane=executor.exclusive, path=path), path


def calibrate_table(job: SearchJob, model: LatencyModel, executor: Executor, *, num_classes: int, in_chans: int,
                    table_path: Path | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Calibrate ``model``'s table on ``job.calibrate`` networks sampled from the space, unless it is already.

    Already: the table holds a calibration at the space's input size from the same seed and number. The networks
    are measured end to end in the executor's exclusive lane; blocks the table lacks come from the latency model.
    Returns the calibration (its scales and fit error) or None when ``job.calibrate`` is 0.
    """
    if not job.calibrate:
        return None
    size = job.space.input_size
    info = {"input_size": size, "seed": job.calibrate_seed, "n": job.calibrate}
    cal = model.table.calibration
    if cal is not None and all(cal.info.get(k) == v for k, v in info.items()):
        return cal.to_dict()
    archs = sample_archs(job.calibrate, job.space.sample, seed=job.calibrate_seed)
    with executor.exclusive():
        cal = calibrate(model.table, archs, input_size=size, num_classes=num_classes, in_chans=in_chans,
                        model=model, info={"seed": job.calibrate_seed, "n": job.calibrate},
                        table_path=None if table_path is None else str(table_path))  # fmt: skip
    return cal.to_dict()


def prepare_supernet(job: SearchJob, data: DataSet, out: Path, *, resume: bool,
                     progress: bool) -> tuple[Supernet, dict[str, Any]]:  # fmt: skip
    """Load the finished supernet of ``out``, or train it (continuing a partial one when ``resume``)."""
    path = out / "supernet.pt"
    if resume and path.is_file():
        net, doc = load_supernet(path)
        if same_recipe(doc.get("config"), job.supernet) and doc["step"] >= job.supernet.steps:
            return net, {"steps": doc["step"], "seconds": 0.0, "reused": True}
    torch.manual_seed(job.supernet.seed)
    net = Supernet(job.space, num_classes=data.num_classes, in_chans=data.in_chans,
                   kernel_transform=job.supernet.schedule == "progressive")  # fmt: skip
    res = train_supernet(net, data, job.supernet, checkpoint=path, resume=resume, progress=progress)
    return net, {"steps": res.steps, "seconds": res.seconds, "final_loss": res.final_loss,
                 "resumed_from": res.resumed_from, "reused": False, "phase_seconds": res.phase_seconds}  # fmt: skip


def measure_finalists(job: SearchJob, result: SearchResult, data: DataSet, executor: Executor,
                      model: LatencyModel) -> list[Finalist]:  # fmt: skip
    """End-to-end latency of the best distinct candidates, measured with no task running (the exclusive lane)."""
    out: list[Finalist] = []
    size = job.space.input_size
    for c in result.best[: job.finalists]:
        net = build(c.arch, num_classes=data.num_classes, in_chans=data.in_chans)
        with executor.exclusive():
            m = measure(net, (1, data.in_chans, size, size), backend=job.backend, threads=job.threads,
                        config=job.timing, label=c.arch, reference=model.table.reference())  # fmt: skip
        s = m.stats
        out.append(Finalist(c.arch, c.acc, c.score, c.lat_ms, s.median_ms, s.iqr_ms,
                            job.objective.score(c.acc, s.median_ms)))  # fmt: skip
    return out


def run_job(job: SearchJob, out_dir: str | Path, executor: Executor, *, resume: bool = False,
            progress: Progress | None = None, show_bars: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run the search end to end and write ``out/results.json`` (returned as a dict)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prog = progress or Progress()
    t0 = time.perf_counter()
    full = worker_data(job.data)
    data = search_split(full, val_fraction=job.estimate.val_fraction, seed=job.estimate.split_seed)
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
    else:
        estimator = TrainEstimator(job.data, job.estimate, executor, seed=job.search.seed)
    prog.on_stage(f"searching ({job.search.algorithm}, {job.search.budget} candidates)")
    t = time.perf_counter()
    state = out / "search_state.json"
    result = run_search(job.space, estimator, latency, job.objective, job.search, state_path=state,
                        resume=resume and state.is_file(), on_batch=prog.on_search)  # fmt: skip
    timings["search_s"] = time.perf_counter() - t
    prog.on_stage("measuring the finalists end to end")
    t = time.perf_counter()
    finalists = measure_finalists(job, result, data, executor, model)
    timings["finalists_s"] = time.perf_counter() - t
    if job.references:
        prog.on_stage(f"measuring {len(job.references)} reference network(s) end to end")
    references = measure_references(job.references, model, executor, input_size=size, num_classes=data.num_classes,
                                    in_chans=data.in_chans, backend=job.backend, threads=job.threads,
                                    timing=job.timing)  # fmt: skip
    final = None
    if job.final_epochs:
        prog.on_stage(f"training the chosen network for {job.final_epochs} epochs")
        t = time.perf_counter()
        final = train_final(job, finalists[0].arch, full, out / "final", resume=resume, progress=show_bars)
        timings["final_s"] = time.perf_counter() - t
        final["measured_ms"] = finalists[0].measured_ms
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
    doc["references"] = to_rows(references)
    plot = plot_search({"kind": "search", **doc}, out / "pareto.png")
    doc["plot"] = None if plot is None else str(plot)
    return read_results(write_results(out, "search", doc))


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
    """The body of a search's results document (``kind: "search"``, :mod:`edgecnn.results`)."""
    return {
        "space": job.space.to_dict(),
        "data": asdict(job.data),
        "objective": {**asdict(job.objective), "formula": job.objective.describe()},
        "search": asdict(job.search),
        "estimator": job.estimator,
        "estimate": asdict(job.estimate),
        "supernet": None if supernet is None else {**supernet, "config": asdict(job.supernet)},
        "latency": {"backend": job.backend, "threads": job.threads, "table": table},
        "history": [c.to_dict() for c in result.history],
        "front": [c.index for c in result.front],
        "best": [c.to_dict() for c in result.best[:10]],
        "finalists": [asdict(f) for f in finalists],
        "final": final,
        "timings": timings,
    }
