"""Search that beats its own baseline? Evolution vs random search over seeds, and the searched net vs MobileNetV3-Small.

Issue 20, item 2. With one estimator (``--estimator``: a zero-cost proxy, the
supernet, or short training — choose it by ``benchmarks/search_rank.py``'s
measured τ), for each seed of ``--seeds``:

1. **regularized evolution** and **random search** over ``mbv3-32`` at the same
   budget (``--budget`` candidates), hard latency constraint at the target
   (default: ``mobilenet_v3_small_cifar`` ×0.75 measured on the deployment
   target), each through :func:`edgecnn.search.job.run_job` — the pipeline of
   ``edgecnn search``: latency table of the target calibrated on measured
   networks, finalists measured end to end, the chosen network **trained with
   the final recipe** (this seed);
2. the **MobileNetV3-Small bracket**: ``mobilenet_v3_small_cifar`` at the
   width whose measured latency is nearest evolution's chosen network's
   (:func:`bracket_width`), trained with the same recipe and seed; and the
   **bracket's line**: the two neighbouring widths whose latencies enclose the
   chosen network's (:func:`bracket_pair`, the other one trained too), the
   straight line through them read at the chosen network's own latency — the
   hand design at equal latency where no width lands (:func:`bracket_line`; by
   the closing sitting's shares after ``--remeasure``).

Reported per method (evolution's choice, random's choice, the bracket): mean ±
spread of test top-1 over seeds and the measured latency. Evolution minus
random separates what the ranking earns from what the space gives; evolution
minus the bracket's line is the search's gain over the hand-designed network
at equal latency (random minus the line: the space's share of it).

With ``--correct N`` each search whose finalists all measure over the target searches on under the target
divided by the table's error there, up to ``N`` rounds (:mod:`edgecnn.search.correct`); evolution and random
search get the same extra budget. Each row records the rounds and whether the choice meets the target as
measured (``meets_target``).

With ``--rerank K`` each search's ``K`` best candidates are short-trained and
reordered by the blend of the estimate and the short training (two fidelities,
:mod:`edgecnn.search.rerank`), the estimator named ``<estimator>+rerank<K>``;
where the plain ``<estimator>`` run of that seed and algorithm is finished, the
rerank run starts from its search state (the same candidates, re-ordered).

Every run folder (``<work>/<estimator>/seed<S>-<algorithm>``) resumes where it
stopped (the search state, the final ``last.pt``); finished runs are read back. The full run's folder,
``benchmarks/state/search_seeds-full``, is committed as seeds finish, without the final trainings' checkpoints
(5-13 MB each with the optimiser): a run stopped on another machine loses at most the training under way.
The results file carries ``cpu_hours``: every run is one single-thread process, so its wall time is its CPU time.

    PYTHONPATH=src python benchmarks/search_seeds.py --estimator proxy-synflow [--seeds 0,1,2]
    PYTHONPATH=src python benchmarks/search_seeds.py --quick --estimator proxy-params --work runs/search_seeds_quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from _work import OtherMachine, check_same_machine  # benchmarks/_work.py (this folder is on sys.path)
from edgecnn import zoo
from edgecnn.atomic import atomic_write_text
from edgecnn.build import build
from edgecnn.executor import Executor
from edgecnn.latency.compare import ANCHOR, Anchor, fastest_ms, fastest_runs, sitting_ms
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.targets import default_target
from edgecnn.search.estimate import READINGS, EstimateSettings, ShortTrainer
from edgecnn.search.evolution import SearchConfig, run_search
from edgecnn.search.job import ESTIMATORS, STATE_FILE, SUPERNET_FILE, SearchJob, rerank_recipe, run_job, train_final
from edgecnn.search.rerank import RERANK_FILE, rerank
from edgecnn.search.objective import Objective
from edgecnn.search.space import MBV3_32_SPACE
from edgecnn.search.supernet_train import SupernetConfig
from edgecnn.train import TrainConfig
from edgecnn.train.task import DataRef, worker_data

CIFAR = "/work/shared/data/cifar10-jpeg.tar.xz"
RESULTS = Path(__file__).parent / "results"
STATE = Path(__file__).parent / "state"
BASELINE = "mobilenet_v3_small_cifar"
BRACKET_FILE = "bracket.json"  # a bracket's training, recorded in its folder
WIDTHS = (0.35, 0.5, 0.6, 0.75, 0.85, 1.0, 1.25)
METHODS = ("evolution", "random", "bracket")  # the chosen networks of one seed
PRESETS = {  # images per class, candidates, population, tournament, final epochs, supernet steps
    "quick": dict(limit=60, budget=8, population=4, sample_size=2, epochs=1, supernet_steps=12, calibrate=8),
    "full": dict(limit=None, budget=200, population=30, sample_size=8, epochs=2, supernet_steps=500, calibrate=12),
}


def args_() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--estimator", choices=ESTIMATORS, default="proxy-synflow")
    p.add_argument("--rerank", type=int, default=0, metavar="K",
                   help="two fidelities: short-train each search's K best (300 steps) and reorder them by the mean "
                        "rank of the estimate and the short training (edgecnn search --rerank)")
    p.add_argument("--rerank-by", choices=READINGS, default="top1",
                   help="what of the short training --rerank blends: its top-1, or its training speed (edgecnn "
                        "search --rerank-by; the run is named <estimator>+rerank<K>-speed)")
    p.add_argument("--correct", type=int, default=0, metavar="N",
                   help="measured corrections (edgecnn search --correct): when no finalist meets the target as "
                        "measured, search on under the corrected target, up to N rounds of budget/2 candidates each "
                        "(the run is named <label>+correct<N>)")
    p.add_argument("--evolution", choices=("evolution", "evolution-novel"), default="evolution",
                   help="the evolution variant: regularized evolution, or the one whose children are all new networks "
                        "(the run is named <label>+novel, and takes the plain run's random searches and brackets)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--remeasure", action="store_true",
                   help="then measure every chosen network again, back to back in rounds (run it on a quiet machine: "
                        "the runs' own measurements were taken beside whatever else the cores ran)")
    p.add_argument("--quick", action="store_true", help="60 images per class, 8 candidates (the pipeline only)")
    p.add_argument("--target", type=float, default=None, help=f"ms (default: {BASELINE}@0.75 measured)")
    p.add_argument("--backend", default=None, help="latency target (default: the fastest runtime installed)")
    p.add_argument("--work", default=None, help="default: benchmarks/state/search_seeds-<preset>")
    p.add_argument("--tag", default="",
                   help="appended to the results file's name (a run of its own, e.g. on another CPU with its own "
                        "--work: vnni); a rerank run takes the plain run's brackets from the file of the same tag")
    return p.parse_args()


def timing(quick: bool) -> TimingConfig:
    if quick:
        return TimingConfig(warmup=3, min_repeats=10, max_seconds=1.0, retries=0)
    return TimingConfig(warmup=5, min_repeats=20, max_seconds=3.0, retries=1, retry_wait_s=1.0)


def measuring_machine(work: Path, backend: str, here: dict[str, Any]) -> dict[str, Any]:
    """The machine this work folder's latencies are measured on (``machine-<backend>.json``), recorded with the
    first measurement; for a folder begun before it was recorded, its first run's latency table's fingerprint."""
    f = work / f"machine-{backend}.json"
    if not f.is_file():
        tables = sorted(work.glob("*/*/latency_table.json"))
        rec = json.loads(tables[0].read_text())["fingerprint"] if tables else here
        atomic_write_text(f, json.dumps(rec, indent=1) + "\n")
    return dict(json.loads(f.read_text()))


def measure_widths(backend: str, rounds: int = 3) -> dict[str, float]:
    """Each bracket width of ``mobilenet_v3_small_cifar`` measured on the target as the search measures its
    finalists (:func:`~edgecnn.latency.compare.fastest_runs`: back to back in interleaved rounds, the median of each
    round's fastest run). A work folder begun before 2026-12-07 holds drift-normalised medians instead."""
    nets = {str(w): build(zoo.arch_of(BASELINE, width=w), num_classes=10, in_chans=3).eval() for w in WIDTHS}
    _, runs = fastest_runs(nets, (1, 3, 32, 32), backend=backend, threads=1, rounds=rounds)
    return {w: fastest_ms(runs[w]) for w in nets}


def one_search(job: SearchJob, out: Path, ex: Executor, plain: Path | None = None) -> dict[str, Any]:
    """``run_job`` in ``out``, continued where it stopped; a finished run is read back.

    ``plain``: the folder of the same search without the rerank. When its search is finished, a new rerank run
    starts from its search state and latency table — the same search, only the finalists re-ordered — so the
    rerank's effect is measured on the very candidates the plain run chose from.
    """
    done = out / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    start_from_plain(out, plain)
    again = (out / STATE_FILE).is_file() or (out / SUPERNET_FILE).is_file()
    return run_job(job, out, ex, resume=again)


def start_from_plain(out: Path, plain: Path | None) -> bool:
    """Give a new rerank run folder the finished plain run's search state and latency table; whether ``out`` now
    starts from a finished search (its own or the plain run's)."""
    if plain is not None and (plain / "results.json").is_file() and not (out / STATE_FILE).is_file():
        out.mkdir(parents=True, exist_ok=True)
        for name in (STATE_FILE, "latency_table.json"):
            if (plain / name).is_file():
                atomic_write_text(out / name, (plain / name).read_text())
    return (out / STATE_FILE).is_file() and plain is not None and (plain / "results.json").is_file()


def _never(_: Any) -> Any:
    raise RuntimeError("a finished search evaluates and times nothing")


def run_label(a: argparse.Namespace) -> str:
    """The estimator's name in folders and results: ``<estimator>``, ``+rerank<K>`` with a rerank, ``-speed`` when
    it blends the training speed, ``+correct<N>`` with measured corrections."""
    label = a.estimator
    if a.rerank:
        label += f"+rerank{a.rerank}" + ("-speed" if a.rerank_by == "speed" else "")
    correct = getattr(a, "correct", 0)
    label += f"+correct{correct}" if correct else ""
    return label + ("+novel" if getattr(a, "evolution", "evolution") == "evolution-novel" else "")


def shared_label(a: argparse.Namespace) -> str:
    """The folder of the runs that do not depend on the evolution variant — random search and the brackets: the
    label without ``+novel``, so an ``evolution-novel`` run is compared with the very random searches and
    brackets of the plain one (same seeds, recipe and target), not with new draws of them."""
    return run_label(a).removesuffix("+novel")


def short_train_elsewhere(job: SearchJob, out: Path, plain: Path, ex: Executor) -> int:
    """On a machine other than the measuring one, the part of a rerank run that times nothing: its ``K`` short
    trainings, into ``out/rerank.json`` (recipe-keyed, read back by ``run_job``). The search is the plain run's,
    finished; the finalists' timing and the final training are left to ``run_job`` on the measuring machine, which
    finds the short trainings done. Returns how many the folder holds (0: nothing to do here yet)."""
    if (out / "results.json").is_file() or not start_from_plain(out, plain):
        return 0
    result = run_search(job.space, _never, _never, job.objective, job.search, state_path=out / STATE_FILE,
                        resume=True, estimate=job.estimate_kind)  # fmt: skip  # finished: the loop does not run
    _, rows = rerank(result, job.rerank, ShortTrainer(job.data, job.estimate, ex, seed=job.search.seed),
                     by=job.rerank_by, path=out / RERANK_FILE, recipe=rerank_recipe(job), chunk=1)  # fmt: skip
    return len(rows)


def bracket_width(chosen_ms: float, widths_ms: dict[float, float]) -> float:
    """The MobileNetV3-Small width whose measured latency is nearest ``chosen_ms``: the hand design at equal
    latency. (The widest not slower, the earlier rule, dropped a whole width step — ×0.75 to ×0.6, 25% faster —
    when the chosen network measured 1% under ×0.75 on one seed.)"""
    return min(widths_ms, key=lambda w: (abs(widths_ms[w] - chosen_ms), w))


def bracket_pair(chosen_ms: float, widths_ms: dict[float, float]) -> tuple[float, float]:
    """The two neighbouring MobileNetV3-Small widths whose measured latencies enclose ``chosen_ms`` (the two
    fastest or the two slowest when it lies outside them): the bracket's line through them gives the hand design's
    accuracy at the chosen network's own latency, where no one width lands (:func:`on_line`)."""
    ws = sorted(widths_ms, key=lambda w: (widths_ms[w], w))
    if len(ws) < 2:
        raise ValueError(f"a bracket needs two widths, got {ws}")
    for lo, hi in zip(ws, ws[1:]):
        if widths_ms[lo] <= chosen_ms <= widths_ms[hi]:
            return lo, hi
    return (ws[0], ws[1]) if chosen_ms < widths_ms[ws[0]] else (ws[-2], ws[-1])


def on_line(x: float, xs: tuple[float, float], ys: tuple[float, float]) -> float:
    """The value at ``x`` of the straight line through ``(xs[0], ys[0])`` and ``(xs[1], ys[1])``."""
    if xs[0] == xs[1]:
        raise ValueError(f"two points at the same latency {xs[0]} make no line")
    return ys[0] + (ys[1] - ys[0]) * (x - xs[0]) / (xs[1] - xs[0])


def bracket_line(row: dict[str, Any]) -> dict[str, Any] | None:
    """Evolution's and random search's test top-1 minus the bracket's line at their own latency, in pp: by the
    closing sitting's shares of the target network where every network of the row has one (one sitting, one
    load), else by the runs' measured ms. None for a row without a line (recorded before it)."""
    line = row.get("bracket_line")
    if not line:
        return None
    by = "remeasured_share" if all("remeasured_share" in row[m] for m in ("evolution", "random")) and \
        "remeasured_share" in line else "measured_ms"  # fmt: skip
    xs = tuple(line[by])
    out: dict[str, Any] = {"by": by, "widths": line["widths"]}
    for m in ("evolution", "random"):
        x = row[m][by]
        top = on_line(x, xs, tuple(line["top1"]))  # type: ignore[arg-type]
        out[m] = {"bracket_top1": top, "minus_pp": 100 * (row[m]["top1"] - top),
                  "extrapolated": not min(xs) <= x <= max(xs)}  # fmt: skip
    return out


def bracket(job: SearchJob, width: float, full: Any, out: Path, widths_ms: dict[float, float],
            trained: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """MobileNetV3-Small at ``width``, trained with the job's recipe. ``trained``: this seed's bracket from the
    plain estimator's results; at the same width it is the same network, recipe and seed — the same training —
    and is taken instead of training it again (a rerank run changes the search's choice, not the bracket)."""
    arch = zoo.arch_of(BASELINE, width=width)
    if trained is not None and trained.get("arch") == arch and trained.get("epochs") == job.final_epochs:
        return {**trained, "measured_ms": widths_ms[width], "reused": "the plain estimator's bracket of this seed",
                "seconds": 0.0, "trained_seconds": trained.get("seconds")}  # fmt: skip  # its CPU counted once
    done = out / BRACKET_FILE  # committed with the state (the checkpoint is not): a later session reads it back
    if done.is_file():
        res = json.loads(done.read_text())
        if res.get("arch") == arch and res.get("epochs") == job.final_epochs:
            return {**res, "width": width, "measured_ms": widths_ms[width]}
    res = train_final(job, arch, full, out, resume=(out / "last.pt").is_file(), progress=False)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done, json.dumps(res, indent=1, default=str))
    return {**res, "width": width, "measured_ms": widths_ms[width]}


def results_name(preset: str, label: str, tag: str) -> str:
    return f"search_seeds-{preset}-{label}{'-' + tag if tag else ''}.json"


def plain_brackets(preset: str, estimator: str, tag: str = "") -> dict[int, dict[str, Any]]:
    """Each seed's bracket in the plain estimator's results file of the same tag (none when it is not there)."""
    f = RESULTS / results_name(preset, estimator, tag)
    return {r["seed"]: r["bracket"] for r in json.loads(f.read_text())["rows"]} if f.is_file() else {}


REMEASURE_ROUNDS = 9  # rounds of the closing sitting (two sittings of 5 unpaused rounds disagreed by up to 8 points)
REMEASURE_PAUSE_S = 2.0  # seconds between them, as the search's finalists (FINALIST_PAUSE_S)


def remeasure(rows: list[dict[str, Any]], backend: str, target_ms: float | None = None,
              rounds: int = REMEASURE_ROUNDS, pause_s: float = REMEASURE_PAUSE_S) -> dict[str, Any]:  # fmt: skip
    """Every chosen network (each seed's evolution, random and bracket) and the bracket lines' widths in **one**
    sitting with the target network, ``mobilenet_v3_small_cifar`` ×0.75, as its anchor
    (:func:`~edgecnn.latency.compare.sitting_ms`: each network exported once, ``rounds`` interleaved rounds
    ``pause_s`` apart, each round's fastest run on the thread's CPU clock, the median over rounds of its ratio to
    the anchor's). One sitting, one load, so the methods' latencies compare: each run measured its finalists at
    its own time, and the machine's speed moves by a third over hours and by tens of percent between rounds
    seconds apart (docs/search.md) — the per-round ratio cancels what the rounds share.

    Each method's entry gets ``remeasured_share`` (of the target network), its ``remeasured_band`` (the per-round
    ratios' range), ``remeasured_ms`` (the median of its fastest runs) and ``within_target``: the share at most 1
    when the target is the ×0.75 network (the default), else ``remeasured_ms`` at most ``target_ms``."""
    line_widths = {w: zoo.arch_of(BASELINE, width=w) for r in rows
                   for w in (r.get("bracket_line") or {}).get("widths", ())}  # fmt: skip
    archs = list(dict.fromkeys([r[m]["arch"] for r in rows for m in METHODS] + list(line_widths.values())))
    names = {a: f"n{i}" for i, a in enumerate(archs)}
    nets = {names[a]: build(a, num_classes=10, in_chans=3).eval() for a in archs}
    load0 = os.getloadavg()
    share, runs = sitting_ms(nets, (1, 3, 32, 32), anchor=Anchor(zoo.arch_of(BASELINE, width=0.75), 1.0),
                             num_classes=10, backend=backend, threads=1, rounds=rounds, pause_s=pause_s)  # fmt: skip
    anchor_ms = fastest_ms(runs[ANCHOR])

    def read(arch: str) -> dict[str, Any]:
        n = names[arch]
        ratios = [s.min_ms / a.min_ms for s, a in zip(runs[n], runs[ANCHOR])]
        return {"remeasured_ms": fastest_ms(runs[n]), "remeasured_share": share[n],
                "remeasured_band": [min(ratios), max(ratios)], "target_net_ms": anchor_ms}  # fmt: skip

    widths = {w: share[names[a]] for w, a in line_widths.items()}
    for r in rows:
        for m in METHODS:
            got = read(r[m]["arch"])
            within = got["remeasured_share"] <= 1.0 if target_ms is None else got["remeasured_ms"] <= target_ms
            r[m].update(**got, within_target=within)
        if line := r.get("bracket_line"):
            line["remeasured_share"] = [widths[w] for w in line["widths"]]
    return {"how": f"one sitting, anchored on {BASELINE}@0.75: {rounds} interleaved rounds {pause_s:g} s apart, "
                   "fastest runs on the CPU clock, the median per-round ratio to the anchor "
                   "(edgecnn.latency.compare.sitting_ms)", "rounds": rounds, "pause_s": pause_s,
            "target_net_ms": anchor_ms, "bracket_widths_share": {f"{w:g}": v for w, v in sorted(widths.items())},
            "load_average_before": load0, "load_average_after": os.getloadavg()}  # fmt: skip


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean, standard deviation and spread of test top-1 over seeds; the gains paired per seed
    (evolution and random search of one seed share the seed's final-recipe randomness, so their difference is
    steadier than the difference of the means)."""
    out: dict[str, Any] = {}
    for method in METHODS:
        t = [r[method]["top1"] for r in rows]
        ms = [r[method]["measured_ms"] for r in rows]
        out[method] = {"top1_mean": statistics.fmean(t), "top1_std": statistics.stdev(t) if len(t) > 1 else 0.0,
                       "top1_spread": max(t) - min(t), "top1": t, "measured_ms_mean": statistics.fmean(ms)}  # fmt: skip
        if all("remeasured_share" in r[method] for r in rows):
            for key in ("remeasured_ms", "remeasured_share"):
                out[method][key] = [r[method][key] for r in rows]
                out[method][f"{key}_mean"] = statistics.fmean(out[method][key])
            out[method]["within_target_on"] = f"{sum(r[method]['within_target'] for r in rows)} of {len(rows)} seeds"
        if method != "bracket" and all("meets_target" in r[method] for r in rows):  # as the run measured it
            out[method]["meets_target_on"] = f"{sum(r[method]['meets_target'] is True for r in rows)} of {len(rows)} seeds"
            out[method]["correction_rounds"] = [len(r[method].get("corrections") or []) for r in rows]
    lines = [bracket_line(r) for r in rows]
    if lines and all(lines):
        for m in ("evolution", "random"):
            gains = [ln[m]["minus_pp"] for ln in lines]  # type: ignore[index]
            out[f"{m}_minus_bracket_line_pp"] = statistics.fmean(gains)
            out[f"{m}_minus_bracket_line_pp_per_seed"] = gains
            out[f"{m}_beats_bracket_line_on"] = f"{sum(g > 0 for g in gains)} of {len(gains)} seeds"
        out["bracket_line_by"] = sorted({ln["by"] for ln in lines})  # type: ignore[index]
    for other in ("random", "bracket"):
        gains = [100 * (r["evolution"]["top1"] - r[other]["top1"]) for r in rows]
        out[f"evolution_minus_{other}_pp"] = statistics.fmean(gains)
        out[f"evolution_minus_{other}_pp_per_seed"] = gains
        out[f"evolution_beats_{other}_on"] = f"{sum(g > 0 for g in gains)} of {len(gains)} seeds"
    return out


def make_job(a: argparse.Namespace, p: dict[str, Any], ref: DataRef, backend: str, target: float, seed: int,
             alg: str) -> SearchJob:  # fmt: skip
    """One search of the benchmark: ``alg`` at this seed, the hard constraint at ``target`` ms — by default the
    target network's (``mobilenet_v3_small_cifar`` ×0.75) latency in the widths' sitting, and that network the
    anchor of every sitting of the search (calibration, finalists: :class:`~edgecnn.latency.compare.Anchor`), so
    a machine slower or faster hours later reads every network at the speed the target was measured at."""
    algorithm = getattr(a, "evolution", "evolution") if alg == "evolution" else alg
    return SearchJob(MBV3_32_SPACE, ref, Objective(target, hard=True),
                     SearchConfig(algorithm, budget=p["budget"], population=p["population"],
                                  sample_size=p["sample_size"], batch=4, seed=seed),
                     SupernetConfig(steps=p["supernet_steps"], batch_size=64, seed=seed),
                     EstimateSettings(val_fraction=0.04), estimator=a.estimator, backend=backend,
                     timing=timing(a.quick), finalists=3, final_epochs=p["epochs"],
                     final_config=TrainConfig(epochs=p["epochs"], batch_size=128, seed=seed, progress=False),
                     calibrate=p["calibrate"], calibrate_seed=1000 + seed, rerank=a.rerank,
                     rerank_by=a.rerank_by if a.rerank else "top1", correct=getattr(a, "correct", 0),
                     anchor=None if a.target else Anchor(zoo.arch_of(BASELINE, width=0.75), target))  # fmt: skip


def short_train_all_elsewhere(a: argparse.Namespace, p: dict[str, Any], ref: DataRef, backend: str, work: Path,
                              widths: dict[str, float]) -> None:  # fmt: skip
    """:func:`short_train_elsewhere` for every seed and algorithm of ``--seeds``."""
    target = a.target or widths["0.75"]
    shared = shared_label(a)
    with Executor("local", workers=1) as ex:
        for seed in (int(s) for s in a.seeds.split(",")):
            for alg in ("evolution", "random"):
                if alg == "evolution" and run_label(a) != shared:  # not the plain estimator's search: its own
                    print(f"  seed {seed} {alg}: nothing to do here (evolution-novel searches here first)")
                    continue
                n = short_train_elsewhere(make_job(a, p, ref, backend, target, seed, alg),
                                          work / shared / f"seed{seed}-{alg}", work / a.estimator / f"seed{seed}-{alg}",
                                          ex)  # fmt: skip
                what = f"{n} short trainings done" if n else "nothing to do here (finished, or its plain run is not)"
                print(f"  seed {seed} {alg}: {what}", flush=True)


def main() -> None:
    a = args_()
    preset = "quick" if a.quick else "full"
    p = PRESETS[preset]
    backend = a.backend or default_target()
    work = Path(a.work) if a.work else STATE / f"search_seeds-{preset}"
    torch.set_num_threads(1)
    ref = DataRef(CIFAR, limit=p["limit"])
    widths_file = work / f"widths-{backend}.json"
    work.mkdir(parents=True, exist_ok=True)
    here = fingerprint(backend=backend, threads=1).to_dict()
    try:  # the target's ms, the bracket's widths and every run's table come from one machine
        check_same_machine(measuring_machine(work, backend, here), here, "search_seeds")
    except OtherMachine as exc:
        if not (a.rerank and widths_file.is_file()):
            raise SystemExit(str(exc)) from None
        print(f"{exc}\nHere: only the reranks' short trainings, which time nothing.", flush=True)
        short_train_all_elsewhere(a, p, ref, backend, work, json.loads(widths_file.read_text()))
        raise SystemExit("the short trainings are done; the finalists' timing and the final trainings need the "
                         "measuring machine: run this command there")  # fmt: skip
    full = worker_data(ref)  # after the machine check: the short trainings elsewhere load it in their worker
    if not widths_file.is_file():  # the bracket's widths, measured once on the target
        widths = measure_widths(backend)
        atomic_write_text(widths_file, json.dumps(widths, indent=1))
    widths_ms = {float(w): ms for w, ms in json.loads(widths_file.read_text()).items()}
    target = a.target or widths_ms[0.75]
    label, shared = run_label(a), shared_label(a)
    print(f"{full.summary()}; target {target:.3f} ms on {backend}; estimator {label}", flush=True)
    rows = []
    t0 = time.perf_counter()
    with Executor("local", workers=1) as ex:
        for seed in (int(s) for s in a.seeds.split(",")):
            runs = {}
            for alg in ("evolution", "random"):
                job = make_job(a, p, ref, backend, target, seed, alg)
                folder = label if alg == "evolution" else shared
                # a rerank run starts from the plain estimator's finished search - of the same algorithm only
                plain = work / a.estimator / f"seed{seed}-{alg}" if a.rerank and folder == shared else None
                doc = one_search(job, work / folder / f"seed{seed}-{alg}", ex, plain)
                corr = doc.get("corrections") or {}
                runs[alg] = {**doc["final"], "measured_ms": doc["final"]["measured_ms"],
                             "run_seconds": doc["timings"]["total_s"],
                             "meets_target": (doc.get("chosen") or {}).get("meets_target"),
                             "corrections": [{k: r[k] for k in ("round", "ratio", "table_target_ms", "budget")}
                                             for r in corr.get("rounds") or []],
                             "corrections_stop": corr.get("stop")}  # fmt: skip
                print(f"  seed {seed} {alg}: top-1 {runs[alg]['top1']:.4f} at {runs[alg]['measured_ms']:.3f} ms",
                      flush=True)  # fmt: skip
            trained = plain_brackets(preset, a.estimator, a.tag).get(seed) if a.rerank else None
            width = bracket_width(runs["evolution"]["measured_ms"], widths_ms)
            runs["bracket"] = bracket(job, width, full, work / shared / f"seed{seed}-bracket-w{width:g}", widths_ms,
                                      trained)  # fmt: skip
            pair = bracket_pair(runs["evolution"]["measured_ms"], widths_ms)  # the line at equal latency
            ends = [runs["bracket"] if w == width else
                    bracket(job, w, full, work / shared / f"seed{seed}-bracket-w{w:g}", widths_ms, trained)
                    for w in pair]  # fmt: skip
            line = {"widths": list(pair), "top1": [e["top1"] for e in ends],
                    "measured_ms": [widths_ms[w] for w in pair],
                    "seconds": sum(e["seconds"] for e in ends if e is not runs["bracket"])}  # fmt: skip
            rows.append({"seed": seed, **runs, "bracket_line": line})
            out = write(a, label, preset, p, backend, target, widths_ms, rows, time.perf_counter() - t0)
    if a.remeasure and rows:
        sitting = remeasure(rows, backend, a.target)
        out = write(a, label, preset, p, backend, target, widths_ms, rows, time.perf_counter() - t0, sitting)
    print(json.dumps(summary(rows), indent=1), f"\nwrote {out}")


def write(a: argparse.Namespace, label: str, preset: str, p: dict[str, Any], backend: str, target: float,
          widths_ms: dict[float, float], rows: list[dict[str, Any]], seconds: float,
          remeasured: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """The results file over the seeds finished so far (written after every seed: a stopped run keeps them)."""
    doc = {"benchmark": "search_seeds", "preset": preset, "estimator": label, "rerank": a.rerank,
           "rerank_by": a.rerank_by if a.rerank else None, "tag": a.tag, "backend": backend,
           "target_ms": target, "bracket_widths_ms": widths_ms, "params": p, "seeds_done": [r["seed"] for r in rows],
           "rows": rows, "summary": summary(rows), "seconds_this_call": seconds, "remeasured": remeasured,
           # every run is one process on 1 thread, so its wall time is its CPU time (within the load's share)
           "cpu_hours": (sum(r[m].get("run_seconds", r[m]["seconds"]) for r in rows for m in METHODS)
                         + sum((r.get("bracket_line") or {}).get("seconds", 0.0) for r in rows)) / 3600,
           "load_average": os.getloadavg(), "machine": {**fingerprint(backend=backend, threads=1).to_dict(),
                                                        "platform": platform.platform(), "cores": os.cpu_count()},
           "note": "QUICK: the pipeline only; accuracies mean nothing" if preset == "quick" else ""}  # fmt: skip
    out = RESULTS / results_name(preset, label, a.tag)
    atomic_write_text(out, json.dumps(doc, indent=1, default=str) + "\n")
    return out

if __name__ == "__main__":
    main()
