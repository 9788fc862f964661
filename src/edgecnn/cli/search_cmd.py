"""``edgecnn search``: platform-aware architecture search against latency measured on this device.

Usage::

    edgecnn search --space mbv3-32 --data digits|PATH --target 3ms [--backend eager|onnxruntime]
                   [--budget 200] [--algorithm evolution|random] [--hard [--correct N]] [--w -0.07]
                   [--supernet-schedule sandwich|progressive]
                   [--references auto|none|ZOO[@WIDTH]...] [--no-train-references]
                   [--executor local|ray] [--workers N] [--resume | --overwrite] [--out DIR]

Trains a weight-sharing supernet once, searches it (regularized evolution by
default) with latencies from this device's lookup table, measures the best
candidates end to end, trains the chosen one with the standard recipe, puts
the zoo's networks of the setting next to it (latency predicted and measured
the same way, trained with the same recipe) and writes ``DIR/results.json``
(``kind: "search"``) and ``DIR/pareto.png``. See :mod:`edgecnn.search.job`
and docs/search.md.

Before any work: every option is bounded (``--budget`` by ``EDGECNN_MAX_CANDIDATES``,
steps by ``EDGECNN_MAX_STEPS``, epochs by ``EDGECNN_MAX_EPOCHS``, ...), the space's
largest network and its supernet are estimated against ``EDGECNN_MAX_MEMORY_GB``,
a folder holding a previous search needs ``--resume`` or ``--overwrite``, and the
time the run implies is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgecnn.progress import progress_bar
from edgecnn.cli import args as num
from edgecnn.cli.device_args import add_device_args, use_agent_token
from edgecnn.cli.executor_args import add_executor_args, executor_from_args
from edgecnn.latency.compare import Anchor
from edgecnn.latency.fingerprint import BACKENDS
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.targets import default_target
from edgecnn.limits import MAX_CANDIDATES, MAX_EPOCHS, MAX_NETWORKS, MAX_ROUNDS
from edgecnn.run_folder import check_writable
from edgecnn.search.estimate import READINGS, EstimateSettings
from edgecnn.search.evolution import ALGORITHMS, SearchConfig
from edgecnn.search.objective import MNASNET_W, Objective, parse_target
from edgecnn.search.job import ESTIMATORS, Progress as JobProgress, SearchJob, TimeEstimate, claim_search_dir
from edgecnn.search.job import check_job, check_resume_state, run_job
from edgecnn.search.references import AUTO_REFERENCES, reference_arch, resolve_references
from edgecnn.search.space import SPACES, get_space
from edgecnn.search.supernet_train import SCHEDULES, SupernetConfig
from edgecnn.train import TrainConfig
from edgecnn.train.task import DataRef


def parse_anchor(text: str | None, target_ms: float) -> Anchor | None:
    """``--anchor ZOO[@WIDTH][=LATENCY]``: the network every sitting is read against, and its latency when the
    target was set (default: the target itself — "as fast as this network was then"); ValueError naming the part."""
    if text is None:
        return None
    label, eq, latency = str(text).partition("=")
    try:
        arch = reference_arch(label.strip())
    except ValueError as exc:
        raise ValueError(f"--anchor {text!r}: {exc}; write ZOO[@WIDTH][=LATENCY], e.g. "
                         "mobilenet_v3_small_cifar@0.75=0.41ms") from None  # fmt: skip
    try:
        ms = parse_target(latency) if eq else target_ms
    except ValueError as exc:
        raise ValueError(f"--anchor {text!r}: the latency after '=': {exc}") from None
    return Anchor(arch, ms)


def job_from_args(args: argparse.Namespace) -> SearchJob:
    """The :class:`SearchJob` the options describe (ValueError naming a bad option)."""
    space = get_space(args.space)
    threads = args.threads or 1
    timing = TimingConfig(max_seconds=args.max_seconds, retries=args.retries)
    return SearchJob(
        space=space,
        data=DataRef(str(args.data), limit=args.limit),
        objective=Objective(target := parse_target(args.target), w=args.w, hard=args.hard),
        search=SearchConfig(args.algorithm, budget=args.budget, population=min(args.population, args.budget),
                            sample_size=min(args.sample_size, args.population, args.budget), batch=args.batch,
                            seed=args.seed),
        supernet=SupernetConfig(steps=args.supernet_steps, seed=args.seed, schedule=args.supernet_schedule),
        estimate=EstimateSettings(image_size=space.input_size, train_steps=args.train_steps),
        estimator=args.estimator, backend=args.backend or default_target(), threads=threads, device=args.device, timing=timing,
        table=args.table,
        finalists=args.finalists, final_epochs=args.final_epochs,
        final_config=TrainConfig(epochs=max(1, args.final_epochs), batch_size=args.final_batch_size, seed=args.seed,
                                 threads="auto"),
        references=resolve_references(args.references, space.input_size),
        train_references=not args.no_train_references, calibrate=args.calibrate, calibrate_seed=1000 + args.seed,
        rerank=args.rerank, rerank_by=args.rerank_by, correct=args.correct, correct_budget=args.correct_budget,
        anchor=parse_anchor(args.anchor, target),
    )  # fmt: skip


def cmd_search(args: argparse.Namespace) -> int:
    """``edgecnn search``: every check first (options, space, memory, run folder, --table), then the search."""
    use_agent_token(args)
    job = job_from_args(args)
    executor = executor_from_args(args, progress=False)  # checks the executor options before anything runs
    data_name = Path(str(args.data)).name.split(".")[0] or "data"
    out = Path(args.out) if args.out else Path("runs") / f"search-{job.space.name}-{data_name}"
    claim_search_dir(out, resume=args.resume, overwrite=args.overwrite)  # refused before any work
    if args.table:
        check_writable(args.table, what="--table")
    check_job(job)  # limits and memory of the space's largest network and its supernet, before the data is read
    if args.resume:
        check_resume_state(job, out)  # search_state.json field by field, and of this search's settings
    console = Console(stderr=True)
    show = not args.no_progress
    if show:
        console.print(f"space {job.space.name} ({job.space.size:.3g} networks), objective {job.objective.describe()}, "
                      f"{job.backend} with {job.threads} thread(s); run folder {out}")  # fmt: skip
    bar = progress_bar(console, disable=not show)
    task = None

    def on_stage(stage: str) -> None:
        if show:
            console.print(stage)

    def on_search(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task("candidates", total=total)
        bar.update(task, completed=done)

    def on_estimate(estimate: TimeEstimate) -> None:
        console.print(estimate.describe(), markup=False, highlight=False, soft_wrap=True)  # also with --no-progress

    try:
        with executor, bar:
            doc = run_job(job, out, executor, resume=args.resume, overwrite=args.overwrite,
                          progress=JobProgress(on_stage, on_search, on_estimate), show_bars=show)  # fmt: skip
    except KeyboardInterrupt:
        console.print(f"interrupted; {out} holds the search so far: add --resume to continue")
        return 130
    _closing_table(doc, out)
    return 0


def _closing_table(doc: dict, out: Path) -> None:
    proxy = str(doc.get("estimator", "")).startswith("proxy-")  # a proxy's score is no accuracy: shown as it is
    short = {r["arch"]: r["short_top1"] for r in doc.get("rerank") or []}
    speed = {r["arch"]: r["short_speed"] for r in doc.get("rerank") or []  # shown where the reorder used it
             if r.get("short_speed") is not None and doc.get("rerank_by") == "speed"}
    t = Table(title=f"search: {doc['objective']['formula']} — best candidates")
    cols = ("#", doc["estimator"] if proxy else "est. top-1", *(("short top-1",) if short else ()),
            *(("train speed",) if speed else ()), "table ms", "measured ms", "score", "arch")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col == "arch" else "right", overflow="fold")
    chosen = doc.get("chosen") or {}
    for i, f in enumerate(doc["finalists"], 1):
        est = f"{f['acc']:.4g}" if proxy else f"{f['acc']:.2%}"
        extra = (f"{short[f['arch']]:.2%}" if f["arch"] in short else "-",) if short else ()
        extra += (f"{speed[f['arch']]:+.4f}" if f["arch"] in speed else "-",) if speed else ()
        m = f.get("measured_score")  # None: over a hard target as measured (−inf in the search, null in JSON)
        score = "over" if m is None else f"{m:.4g}" if proxy else f"{m:.4f}"
        mark = "*" if chosen.get("index") == i - 1 else ""
        t.add_row(f"{i}{mark}", est, *extra, f"{f['table_ms']:.3f}", f"{f['measured_ms']:.3f}", score, f["arch"])
    console = Console()
    console.print(t)
    if chosen:
        style = "bold yellow" if chosen.get("meets_target") is False else ""
        fix = (" — the table underestimates this device where the search ended: search on under a corrected "
               "target with --correct N, fit the table with --calibrate N, measure more --finalists, or lower "
               "--target" if chosen.get("meets_target") is False else "")  # fmt: skip
        console.print(f"chosen (*): finalist {chosen['index'] + 1}, {chosen['reason']}{fix}", style=style,
                      markup=False, highlight=False)  # fmt: skip
    corr = doc.get("corrections") or {}
    for r in corr.get("rounds") or []:
        console.print(f"correction {r['round']}: finalists measured {r['ratio']:.3f}x the table; searched on to "
                      f"{r['budget']} candidates under {r['table_target_ms']:.4g} ms by the table", highlight=False)
    if corr.get("rounds"):
        console.print(f"corrections stopped: {corr['stop']}", markup=False, highlight=False)
    h = doc["history"]
    console.print(f"{len(h)} candidates evaluated, {len(doc['front'])} on the Pareto front; "
                  f"timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in doc["timings"].items()))  # fmt: skip
    if short:
        by = "training speed (minus the mean training loss)" if doc.get("rerank_by") == "speed" else "top-1"
        console.print(f"the best {len(short)} by {doc['estimator']} short-trained and reordered by the mean rank "
                      f"of both (two fidelities: {doc['estimator']} and the short training's {by})")  # fmt: skip
    if doc.get("final"):
        f = doc["final"]
        console.print(f"chosen network trained {f['epochs']} epochs: test top-1 {f['top1']:.2%} "
                      f"at {f['measured_ms']:.3f} ms measured")  # fmt: skip
    refs = doc.get("references") or []
    if refs:
        r = Table(title="the zoo's reference networks, same device, same recipe")
        for col in ("reference", "table ms", "measured ms", "test top-1"):
            r.add_column(col, justify="left" if col == "reference" else "right")
        for ref in refs:
            top1 = f"{ref['top1']:.2%}" if ref.get("top1") is not None else "not trained"
            r.add_row(ref["label"], f"{ref['table_ms']:.3f}", f"{ref['measured_ms']:.3f}", top1)
        console.print(r)
    plot = f", plot {doc['plot']}" if doc.get("plot") else ""
    console.print(f"results {out / 'results.json'}{plot}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="platform-aware architecture search against this device's latency",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    pos = num.positive_int
    cands, steps = num.within(MAX_CANDIDATES, "candidates"), num.steps
    opt = p.add_argument
    opt("--space", default="mbv3-32", help=f"built-in space ({', '.join(SPACES)}) or a JSON file")
    opt("--data", default="digits", help="digits (built in), a folder or an archive such as CIFAR-10")
    opt("--limit", type=pos, help="at most N images per class and split (quick runs)")
    opt("--target", required=True, help="latency target, e.g. 3ms, 0.8ms, 1200us")
    opt("--w", type=num.float_in(-10.0, 0.0), default=MNASNET_W,
        help="exponent of LAT/TAR (-0.07 MnasNet, -0.15 small models)")
    opt("--hard", action="store_true", help="LAT <= TAR as a hard constraint instead of the soft objective")
    opt("--backend", choices=BACKENDS, default=None, help="runtime latency is measured in (default: onnxruntime "
        "where installed, else eager)")  # fmt: skip
    add_device_args(p)
    opt("--threads", type=num.threads, help="threads latency is measured with (default 1)")
    opt("--table", help="the device's lookup table JSON (default OUT/latency_table.json, grown as needed)")
    opt("--calibrate", type=num.nonneg_within(MAX_NETWORKS, "networks"), default=0, metavar="N",
        help="first measure N networks of the space end to end and calibrate the table on them (N >= 4), so that "
        "its latency is on the scale of a measured target (a plain sum of isolated blocks runs ~20%% high)")
    opt("--max-seconds", type=num.float_in(0.0, 3600.0, open_lo=True), default=10.0,
        help="time cap of one latency measurement (at most an hour)")
    opt("--retries", type=num.rounds, default=3, help="re-measure a latency disturbed by other processes")
    opt("--budget", type=cands, default=200, help="candidates evaluated (at most EDGECNN_MAX_CANDIDATES)")
    opt("--algorithm", choices=ALGORITHMS, default="evolution",
        help="regularized evolution, the same with no network evaluated twice (evolution-novel), or random search")
    opt("--population", type=cands, default=50, help="evolution: population size P (at most --budget)")
    opt("--sample-size", type=cands, default=10, help="evolution: tournament size S (at most P)")
    opt("--batch", type=cands, default=4, help="candidates evaluated at once (one executor map)")
    opt("--estimator", choices=ESTIMATORS, default="supernet",
        help="supernet: weight sharing + BN recalibration (cheap); train: short training of each; proxy-NAME: a "
             "zero-cost proxy of the untrained network (with --hard; benchmarks/search_rank.py ranks them)")
    opt("--supernet-steps", type=steps, default=2000, help="supernet training steps (at most EDGECNN_MAX_STEPS)")
    opt("--supernet-schedule", choices=SCHEDULES, default="sandwich",
        help="sandwich rule (largest + smallest + random subnets every step) or OFA's progressive shrinking")
    opt("--train-steps", type=steps, default=300, help="--estimator train: steps per candidate")
    opt("--rerank", type=num.nonneg_within(MAX_CANDIDATES, "candidates"), default=0, metavar="K",
        help="two fidelities: short-train the search's K best candidates (--train-steps each) and reorder them by "
             "the mean rank of the estimate and the short training (0: off; with a proxy or the supernet)")
    opt("--rerank-by", choices=READINGS, default="top1",
        help="what of the short training --rerank blends with the estimate: its validation top-1, or its training "
             "speed (minus its mean training loss, Ru et al. 2021; with NASWOT the best-ranking estimator measured "
             "on mbv3-32, docs/search.md)")
    opt("--finalists", type=cands, default=3, help="best candidates measured end to end")
    opt("--anchor", metavar="ZOO[@WIDTH][=LATENCY]",
        help="time this network in the same rounds as the calibration, the finalists and the references, and read "
             "each as its share of it times LATENCY, its latency when the target was set (default: --target): a "
             "shared machine runs hours later at another speed (35%% slower here), the share stays")
    opt("--correct", type=num.nonneg_within(MAX_ROUNDS, "rounds"), default=0, metavar="N",
        help="with --hard: when no finalist meets the target as measured, time the table's blocks of the finalists "
             "again, then search on from the saved state under the target divided by the measured/table ratio "
             "left, up to N rounds (0: off; docs/search.md)")
    opt("--correct-budget", type=num.nonneg_within(MAX_CANDIDATES, "candidates"), default=0, metavar="N",
        help="candidates each --correct round adds to the search (0: half of --budget)")
    opt("--final-epochs", type=num.nonneg_within(MAX_EPOCHS, "epochs"), default=30,
        help="epochs of the chosen network's training (0: skip; at most EDGECNN_MAX_EPOCHS)")
    opt("--final-batch-size", type=num.batch, default=128, help="batch size of the final training")
    auto = "; ".join(f"{size}px: {' '.join(refs)}" for size, refs in AUTO_REFERENCES.items())
    opt("--references", nargs="+", default=["auto"], metavar="auto|none|ZOO[@WIDTH]",
        help="zoo networks put next to the search on its plot, latency predicted and measured like the finalists "
        f"and trained like the chosen one (auto, the default, by the space's input size: {auto})")
    opt("--no-train-references", action="store_true",
        help="only measure the references' latency (no training; the plot shows them as latency lines)")
    opt("--seed", type=num.seed, default=0, help="seeds the search, the supernet and the final training")
    opt("--out", help="run folder (default runs/search-SPACE-DATA)")
    opt("--resume", action="store_true", help="continue the search in --out after an interruption")
    opt("--overwrite", action="store_true", help="replace the previous search in --out (its latency table is kept)")
    opt("--no-progress", action="store_true", help="no progress bars")
    add_executor_args(p)
    p.set_defaults(func=cmd_search)
