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

Before any work (:func:`run_job`), the checks of :mod:`~edgecnn.search.job_checks`: the folder is
claimed, the run bounded, a resumed run checked, the time it implies estimated. The job itself is
:class:`~edgecnn.search.job_spec.SearchJob`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from edgecnn.build import build
from edgecnn.data import DataSet
from edgecnn.executor import Executor
from edgecnn.latency.measure import device_fingerprint
from edgecnn.latency.compare import sitting_ms
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable
from edgecnn.latency.validate import calibrate, sample_archs
from edgecnn.run_document import read_results, write_results
from edgecnn.search.choice import CHOICE_FILE, choose_finalist
from edgecnn.search.correct import CORRECT_FILE, correct
from edgecnn.search.estimate import ShortTrainer, SupernetEstimator, TrainEstimator, search_split
from edgecnn.search.evolution import SearchConfig, SearchResult, run_search
from edgecnn.search.job_checks import (SEARCH_FILES, STATE_FILE, SUPERNET_FILE, TimeEstimate, check_job,
                                       check_resume_state, check_resume_supernet, claim_search_dir,
                                       clear_previous_search, estimate_time, previous_search)
from edgecnn.search.job_spec import (ESTIMATORS, FINALIST_PAUSE_S, FINALIST_ROUNDS, Finalist, SearchJob,
                                     rerank_recipe)
from edgecnn.search.objective import Objective
from edgecnn.search.plot import plot_search
from edgecnn.search.proxies import ProxyEstimator, proxy_batch
from edgecnn.search.references import measure_references, to_rows, train_references
from edgecnn.search.rerank import RERANK_FILE, Reranked, best_distinct, rerank
from edgecnn.search.supernet import Supernet
from edgecnn.search.supernet_train import load_supernet, same_recipe, train_supernet
from edgecnn.train import TrainConfig, fit
from edgecnn.train.task import worker_data

__all__ = [  # the search's public face: the job (job_spec), the checks before any work (job_checks), the run (here)
    "ESTIMATORS", "FINALIST_PAUSE_S", "FINALIST_ROUNDS", "SEARCH_FILES", "STATE_FILE", "SUPERNET_FILE", "Attempt",
    "Finalist", "Progress",
    "SearchJob", "TimeEstimate", "calibrate_table", "check_job", "check_resume_state", "check_resume_supernet",
    "claim_search_dir", "clear_previous_search", "estimate_time", "latency_model", "measure_finalists",
    "prepare_supernet", "previous_search", "rerank_recipe", "results_document", "run_job", "train_final",
]


RETIME_SWEEPS = 2
"""More timings of each table entry of the finalists a correction re-times (the median of three is kept)."""


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
    info: dict[str, Any] = {"input_size": size, "seed": job.calibrate_seed, "n": job.calibrate, "by": "fastest"}
    if job.anchor is not None:  # a table calibrated at another speed than the anchor's is calibrated again
        info["anchor"] = asdict(job.anchor)
    cal = model.table.calibration
    if cal is not None and all(cal.info.get(k) == v for k, v in info.items()):
        return cal.to_dict()
    archs = sample_archs(job.calibrate, job.space.sample, seed=job.calibrate_seed)
    with executor.exclusive():  # measured as the finalists are: the scales map the table to that latency
        cal = calibrate(model.table, archs, input_size=size, num_classes=num_classes, in_chans=in_chans,
                        model=model, info={"seed": job.calibrate_seed, "n": job.calibrate}, by="fastest",
                        anchor=job.anchor, rounds=FINALIST_ROUNDS, pause_s=FINALIST_PAUSE_S,
                        table_path=None if table_path is None else str(table_path))  # fmt: skip
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
    choice of the network trained (:meth:`Objective.choose`) rests on it. With ``job.anchor`` each finalist is
    read against the anchor network timed in the same rounds (:func:`~edgecnn.latency.compare.sitting_ms`): the
    machine's speed hours after the target was set cancels.
    """
    size = job.space.input_size
    # each network once, none over the constraint (a corrected search's history holds some); all degenerate: as ranked
    best = best_distinct(result, job.finalists) or list(result.best[: job.finalists])
    nets = {c.arch: build(c.arch, num_classes=data.num_classes, in_chans=data.in_chans) for c in best}
    with executor.exclusive():
        sitting, runs = sitting_ms(nets, (1, data.in_chans, size, size), anchor=job.anchor,
                                   num_classes=data.num_classes, backend=job.backend, threads=job.threads,
                                   device=job.device, rounds=FINALIST_ROUNDS, pause_s=FINALIST_PAUSE_S)  # fmt: skip
    out: list[Finalist] = []
    for c in best:
        ms = sitting[c.arch]
        out.append(Finalist(c.arch, c.acc, c.score, c.lat_ms, ms, statistics.median(s.iqr_ms for s in runs[c.arch]),
                            job.objective.score(c.acc, ms), tuple(s.min_ms for s in runs[c.arch])))  # fmt: skip
    return out


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

    def retime(archs: list[str]) -> None:  # the blocks the search leaned on, timed again (search.correct)
        prog.on_stage(f"timing again the table's blocks of {len(archs)} finalist(s) over the target")
        with executor.exclusive():
            model.table.retime(archs, input_size=size, num_classes=data.num_classes, in_chans=data.in_chans,
                               sweeps=RETIME_SWEEPS, path=table_path)  # fmt: skip (bumps table.revision)

    first = attempt(job.objective, job.search, state, resume and state.is_file())
    corrected = correct(job.objective, job.search, state, first, rounds=job.correct, extra=job.correct_extra,
                        finalists_of=lambda a: a.finalists, smallest_table_ms=smallest_ms,
                        search_on=lambda k, obj, cfg, path: attempt(obj, cfg, path, True, f" on, correction {k} "
                                                                    f"(target {obj.target_ms:.4g} ms by the table)"),
                        record=out / CORRECT_FILE, frozen=(out / CHOICE_FILE).is_file(), retime=retime,
                        latency=latency)  # fmt: skip
    result, reranked, finalists = corrected.attempt.result, corrected.attempt.reranked, corrected.attempt.finalists
    timings.update(step)
    if not job.rerank:
        del timings["rerank_s"]
    if job.references:
        prog.on_stage(f"measuring {len(job.references)} reference network(s) end to end")
    references = measure_references(job.references, model, executor, input_size=size, num_classes=data.num_classes,
                                    in_chans=data.in_chans, backend=job.backend, threads=job.threads,
                                    rounds=FINALIST_ROUNDS, pause_s=FINALIST_PAUSE_S, anchor=job.anchor)  # fmt: skip
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
        "latency": {"backend": job.backend, "threads": job.threads, "device": job.device, "table": table,
                    "anchor": None if job.anchor is None else asdict(job.anchor)},
        "history": [c.to_dict() for c in result.history],
        "front": [c.index for c in result.front],
        "best": [c.to_dict() for c in result.best[:10]],
        "finalists": [asdict(f) for f in finalists],
        "final": final,
        "timings": timings,
    }
