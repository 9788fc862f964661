"""``edgecnn compress CKPT --data PATH|digits --budget B --method netadapt|prune|lowrank|separable``: compress a net.

Loads the checkpoint and the data, turns ``--budget`` (``5ms``, ``50%latency``,
``50%macs``, ``1.2Mparams``; :mod:`edgecnn.compress.budget`) into a bound,
runs the method — NetAdapt (:mod:`edgecnn.compress.netadapt.loop`, parallel short
fine-tunes on the executor, resumable with ``--resume``) or one-shot pruning
(:mod:`edgecnn.compress.netadapt.oneshot`, then a long fine-tune), or layer replacement
checked against measured per-layer latency — truncated SVD (``lowrank``) or
depthwise separable pairs (``separable``), :mod:`edgecnn.compress.factor.by_layer` — and writes into
``--out``: ``model.pt`` (checkpoint), ``results.json`` (``kind: "compress"``
results document, drawn by ``edgecnn report``) and, for NetAdapt, ``netadapt_state.pt``. It ends with a
table of the network before and after: test top-1, measured latency, MACs and params.

``--model MODULE:FN`` compresses a network of the user's own code instead
(:mod:`edgecnn.cli.user_model`; ``CKPT`` is then its weights): NetAdapt and
``prune`` work on it in module space, a latency budget measured end to end
(:class:`~edgecnn.compress.resource_meter.ResourceMeter`); the result checkpoint
records the pruning steps, and
:func:`edgecnn.compress.netadapt.state.load_pruned` rebuilds it from the same code.

Before any work (loading data, timing, fine-tuning) the command checks what
it will write and what it will continue: ``--out`` must be writable
(:func:`edgecnn.run_folder.check_writable`) and may not hold a previous run
(``model.pt``, ``results.json``, ``netadapt_state.pt``) unless ``--resume``
continues it or ``--overwrite`` replaces it; ``--resume`` needs a NetAdapt
state there, checked field by field and against this run's network, budget and
schedule (:func:`edgecnn.compress.netadapt.state.check_state`). Every number
is typed (:mod:`edgecnn.cli.args`). A ``--model`` whose code fails to import,
to parse or to build is one line naming the file and line
(``edgecnn --debug compress ...`` shows the traceback). Every file is written
atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from edgecnn.progress import progress_bar, run_callbacks
from edgecnn.build import EdgeNet
from edgecnn.checkpoint import checkpoint_of, load_checkpoint, load_model, save_checkpoint
from edgecnn.cli import args as num
from edgecnn.cli.device_args import add_device_args, use_agent_token
from edgecnn.cli.executor_args import add_executor_args, executor_from_args
from edgecnn.cli.user_model import (
    RECORD_KEY,
    ModelRef,
    build_recorded,
    build_user_model,
    notice,
    parse_model_ref,
    recorded_ref,
    user_model,
)
from edgecnn.compress.budget import Budget, parse_budget
from edgecnn.compress.factor.by_layer import LAYER_METHODS, LayerMethodResult, compress_layers, transform_record
from edgecnn.compress.summary import (
    QUICK_TIMING,
    closing_table,
    compress_document,
    history_step,
    model_stats,
    write_document,
)
from edgecnn.compress.channels.importance import data_free_criteria
from edgecnn.compress.job import Check, MeasuredRun, Shrunk, check, run_measured, table_meter
from edgecnn.compress.resource_meter import ResourceMeter, network_key
from edgecnn.compress.netadapt.loop import Iteration, NetAdaptConfig
from edgecnn.compress.netadapt.state import STATE_FILE, load_state, prune_record, restore, run_settings, state_path
from edgecnn.data import DataSet
from edgecnn.deploy import INT8_CHOICES, deploy_int8
from edgecnn.executor import Executor
from edgecnn.latency.fingerprint import BACKENDS
from edgecnn.latency.model import LatencyModel, whole_network_model
from edgecnn.latency.targets import default_target
from edgecnn.limits import MAX_CHANNELS
from edgecnn.analysis.memory import check_memory
from edgecnn.run_folder import RUN_FILES, check_writable, claim_run_dir
from edgecnn.train.config import FINETUNE
from edgecnn.train.task import DataRef, worker_data

METHODS = ("netadapt", "prune", "lowrank", "separable")


_round_to = num.within(MAX_CHANNELS, "channels")  # a width grid: at most the widest layer allowed
# channel importance the CLI can compute ("taylor" needs batches and a loss: edgecnn.compress.channels.prune from Python)
_CRITERIA = data_free_criteria()
_open_unit = num.float_in(0.0, 1.0, open_lo=True, open_hi=True)  # a share in (0, 1)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``edgecnn compress``; every number is typed (:mod:`edgecnn.cli.args`), refused while parsing."""
    p = sub.add_parser("compress", help="compress a trained network to a latency / MACs / params budget",
                       description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by `edgecnn train` (with --model: the "
                   "network's state_dict)")  # fmt: skip
    p.add_argument("--model", default=None, metavar="MODULE:FN", help="a network of your own code, e.g. "
                   "'torchvision.models:resnet18' or 'my_net.py:build' (netadapt and prune methods)")  # fmt: skip
    p.add_argument("--data", required=True, help="'digits' or an image folder / archive (CIFAR-10 tar)")
    p.add_argument("--budget", required=True, help="5ms | 50%%latency | 50%%macs | 1.2Mparams | 300Mmacs")
    p.add_argument("--method", choices=METHODS, default="netadapt", help="netadapt | prune | lowrank | separable")
    p.add_argument("--out", default=None, help="output folder (default runs/compress-<method>)")
    p.add_argument("--resume", action="store_true", help="NetAdapt: continue the run in --out from its "
                   f"{STATE_FILE}")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace a previous run's results in --out")
    p.add_argument("--image-size", type=num.pixels, default=None, help="stored image side (default: the "
                   "checkpoint's)")  # fmt: skip
    p.add_argument("--limit", type=num.positive_int, default=None, help="at most this many images per class and split")
    p.add_argument("--latency-table", default=None, help="latency table JSON (default <out>/latency_table.json); "
                   "missing blocks are measured and added")  # fmt: skip
    p.add_argument("--backend", choices=BACKENDS, default=None, help="the deployment target latency is measured on "
                   "(default: onnxruntime where installed, else eager)")  # fmt: skip
    add_device_args(p)
    p.add_argument("--threads", type=num.threads, default=1, help="threads of the latency measurements "
                   "(default 1: a phone app's inference thread, and comparable across machines)")  # fmt: skip
    g = p.add_argument_group("schedule")
    g.add_argument("--initial-step", type=_open_unit, default=0.05, help="NetAdapt: first step, share of the start, "
                   "in (0, 1)")  # fmt: skip
    g.add_argument("--decay", type=num.float_in(0.0, 1.0, open_lo=True), default=0.98,
                   help="NetAdapt: step decay per iteration, in (0, 1]")  # fmt: skip
    g.add_argument("--short-steps", type=num.steps_or_0, default=50, help="NetAdapt: short fine-tune steps per "
                   "proposal (0: rank by BN recalibration only)")  # fmt: skip
    g.add_argument("--top-k", type=num.positive_int, default=3, help="NetAdapt: proposals fine-tuned per iteration")
    g.add_argument("--selection", choices=("accuracy", "ratio"), default="accuracy",
                   help="NetAdapt: best accuracy, or best ΔAcc/|Δresource| (MobileNetV3)")  # fmt: skip
    g.add_argument("--long-epochs", type=num.epochs_float, default=1.0, help="fine-tune epochs of the result "
                   "(0: none)")  # fmt: skip
    g.add_argument("--criterion", choices=_CRITERIA, default="l1", help="channel importance: "
                   f"{', '.join(_CRITERIA)}")  # fmt: skip
    g.add_argument("--round-to", type=_round_to, default=8,
                   help="kept widths are multiples of this (default 8; ONNX Runtime's fast NCHWc kernels want "
                        "multiples of 8 with AVX2, 16 with AVX-512)")  # fmt: skip
    g.add_argument("--drop-blocks", action="store_true", help="NetAdapt: also propose removing whole blocks with an "
                   "identity skip (depth; helps where latency is per-layer overhead rather than width)")  # fmt: skip
    g.add_argument("--batch-size", type=num.batch, default=128)
    g.add_argument("--lr", type=num.positive_float, default=0.01, help="fine-tune learning rate")
    add_executor_args(p)
    p.add_argument("--int8", nargs="?", const="auto", default="off", choices=INT8_CHOICES,
                   help="also deploy the result in int8 (static PTQ on the target, ONNX Runtime where the target has "
                   "none): 'auto' (plain --int8) keeps int8 only where it measured faster within --max-drop, 'on' "
                   "forces it; both forms are evaluated and timed interleaved (default off)")  # fmt: skip
    p.add_argument("--max-drop", type=num.float_in(0.0, 100.0), default=1.0, help="--int8 auto: the largest top-1 "
                   "loss int8 may cost, in percentage points (default 1)")  # fmt: skip
    v = p.add_argument_group("verdict (the result timed back to back with the start on the target)")
    v.add_argument("--verify-rounds", type=num.timing_rounds, default=5, help="interleaved before/after timing rounds per "
                   "verdict (default 5; the median per-round ratio decides)")  # fmt: skip
    v.add_argument("--tolerance", type=num.float_in(0.0, 0.5), default=0.03, help="share above a latency budget "
                   "still counted as met, stated with the verdict (default 0.03)")  # fmt: skip
    v.add_argument("--measured-rounds", type=num.rounds,
                   default=2, help="NetAdapt / prune: more rounds toward a bound refitted to the measurements while "
                   "the measured result misses a latency budget (default 2; 0: stop and say by how much)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compress)


def _claim(out: Path, args: argparse.Namespace) -> None:
    """Check ``out`` before any work: writable, and a previous run (its results or a NetAdapt state) only
    continued (``--resume``, which needs that state) or replaced (``--overwrite``) when asked."""
    claim_run_dir(out, resume=args.resume, overwrite=args.overwrite)
    state = state_path(out)
    if args.resume and args.method != "netadapt":
        raise ValueError(f"--resume continues a NetAdapt run (its {STATE_FILE}); --method {args.method} runs in one "
                         "go: drop --resume (with --overwrite to replace a previous run in --out)")  # fmt: skip
    if args.resume and not state.is_file():
        previous = [name for name in RUN_FILES if (out / name).is_file()]
        hint = " (with --overwrite: --out holds a previous run)" if previous else ""
        raise FileNotFoundError(f"nothing to resume: {state} does not exist; drop --resume to start afresh{hint}")
    if state.exists() and not args.resume and not args.overwrite:
        raise FileExistsError(f"{out} already holds a previous run ({STATE_FILE}); pass --resume to continue it, "
                              "--overwrite to replace it, or another --out")  # fmt: skip


def _same_start(state: dict | None, out: Path, model: nn.Module) -> None:
    """``ValueError`` when a resumed state continues another network than the one this run starts from."""
    key = network_key(model)
    if state is not None and state["start_arch"] != key:
        raise ValueError(f"{state_path(out)}: field 'start_arch': the state continues another network "
                         f"({state['start_arch'][:80]!r}, not {key[:80]!r}); resume with the network the run started "
                         "from, or start afresh with --overwrite")  # fmt: skip


def _resumable(state: dict | None, out: Path, model: nn.Module, input_shape: tuple[int, int, int],
               round_to: int) -> None:  # fmt: skip
    """Rebuild the network a resumed state holds, as NetAdapt will (arch or replay, weights loaded strictly), and
    throw it away: a state that does not continue ``model`` is refused before any work, naming file and field."""
    if state is None:
        return
    _same_start(state, out, model)
    try:
        restore(model, state, input_shape, round_to=round_to)
    except ValueError as exc:
        raise ValueError(f"{state_path(out)}: {exc}") from None


def _latency_model(args: argparse.Namespace, budget: Budget, model: nn.Module, data: DataSet, out: Path,
                   how: Check, executor: Executor, console: Console) -> LatencyModel | None:  # fmt: skip
    """What prices a latency budget: a table of the device (EdgeNets), or every network timed whole (others)."""
    latency = None
    if budget.resource == "latency" and not isinstance(model, EdgeNet):  # no arch: each network timed whole
        latency = whole_network_model(backend=how.backend, threads=how.threads, device=how.device,
                                      config=QUICK_TIMING, lane=executor.exclusive)  # fmt: skip
        console.print("latency: every pruned network is measured end to end (no arch string to look up)")
    elif budget.resource == "latency" and args.method not in LAYER_METHODS:  # those time layers and the whole net
        path = Path(args.latency_table) if args.latency_table else out / "latency_table.json"
        console.print(f"latency table {path}: measuring a width grid of every block once on {how.backend} "
                      "(then interpolating)")  # fmt: skip
        with progress_bar(console) as bar:
            task = bar.add_task(f"latency table: block variants on {how.backend}", total=None)
            latency = table_meter(model.arch, data, how, path, lane=executor.exclusive,
                                  on_progress=lambda d, t: bar.update(task, completed=d, total=t)).latency
    return latency


def _recorded(checkpoint: str) -> ModelRef | None:
    """The constructor a checkpoint of a network that is no EdgeNet records (``edgecnn train --model``), or None
    for an EdgeNet; a network already pruned by ``edgecnn compress --model`` is refused with what to do instead."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.arch is not None:
        return None
    pruned = ckpt.config.get("compress") if isinstance(ckpt.config, dict) else None
    if isinstance(pruned, dict) and pruned.get("steps"):
        raise ValueError(f"{checkpoint} is already a result of edgecnn compress --model; compress the network it "
                         "started from to the new budget instead (its steps would not compose with new ones)")
    ref = recorded_ref(ckpt, str(checkpoint))
    if ref is None:
        raise ValueError(f"{checkpoint} holds a network that is no EdgeNet and records no constructor; pass --model "
                         "MODULE:FN[:key=value,...] to build it")  # fmt: skip
    return ref


def _model_and_data(args: argparse.Namespace, resumed: dict[str, Any] | None,
                    out: Path) -> tuple[nn.Module, DataRef, DataSet, dict[str, Any]]:  # fmt: skip
    """The network (the user's code first, or the checkpoint's EdgeNet) and the data (its reference for the
    workers, and the loaded set), each checked before the next is loaded; the data record the result's checkpoint
    keeps."""
    recorded = None if args.model else _recorded(args.checkpoint)
    if args.model or recorded is not None:
        args.model_ref = recorded or parse_model_ref(args.model)  # what the result's checkpoint records
        if recorded is not None:  # the checkpoint says which code builds its network: as if --model named it
            args.model = recorded.text
            notice(f"{args.checkpoint}: the network built by its recorded constructor {recorded.text} (that code "
                   "is imported and called; --model overrides it)")  # fmt: skip
            net = build_recorded(recorded, str(args.checkpoint))
        else:
            net = build_user_model(args.model)  # the user's code first: a mistake there costs no data loading
        _same_start(resumed, out, net)
        ref = DataRef(str(args.data), image_size=args.image_size, limit=args.limit)
        data = worker_data(ref)
        shape = (data.in_chans, data.image_size, data.image_size)
        model = user_model(args.model, args.checkpoint, input_shape=shape, num_classes=data.num_classes, model=net)
        _resumable(resumed, out, model, shape, args.round_to)  # its history replays on this network
        ckpt_data: dict = {"name": str(args.data), "image_size": data.image_size, "mean": list(data.mean),
                           "std": list(data.std), "classes": list(data.classes)}  # fmt: skip
    else:
        model, ckpt = load_model(args.checkpoint)
        size = args.image_size or int(ckpt.data.get("image_size", 0)) or None
        if isinstance(model, EdgeNet):  # its arch builds and its weights fit: checked before the data is read
            _resumable(resumed, out, model, (ckpt.in_chans, size or 1, size or 1), args.round_to)
        ref = DataRef(str(args.data), image_size=size, limit=args.limit)
        data = worker_data(ref)
        if data.num_classes != ckpt.num_classes or data.in_chans != ckpt.in_chans:
            raise ValueError(f"{args.data} has {data.num_classes} classes × {data.in_chans} channels, the "
                             f"checkpoint {ckpt.num_classes} × {ckpt.in_chans}: compress on the data it was trained on"
                             )  # fmt: skip
        ckpt_data = ckpt.data
        if isinstance(model, EdgeNet):  # fine-tuning holds a batch of activations: refuse what cannot fit
            check_memory(model.arch, input_size=data.image_size, num_classes=data.num_classes, in_chans=data.in_chans,
                         batch=args.batch_size, training=True, what=f"fine-tuning {args.checkpoint}")  # fmt: skip
    return model, ref, data, ckpt_data


def _layers(args: argparse.Namespace, model: nn.Module, data: DataSet, budget: Budget, how: Check, train: Any,
            console: Console) -> tuple[MeasuredRun, LayerMethodResult]:  # fmt: skip
    """A layer method (lowrank / separable): its selection times layers and the whole network; the verdict is
    then measured back to back like every other method's."""
    start = model_stats(model, data, backend=how.backend, threads=how.threads, device=how.device)
    layered = compress_layers(args.method, model, data, budget, start, backend=how.backend, threads=how.threads,
                              device=how.device, train=train, long_epochs=args.long_epochs,
                              batch_size=args.batch_size, round_to=args.round_to, log=console.print)  # fmt: skip
    shape = (1, data.in_chans, data.image_size, data.image_size)
    with _rounds_bar(console) as on_round:
        cmp, verdict = check(model, layered.model, shape, budget, how, on_round=on_round)
    met = verdict.met if verdict is not None else layered.met
    stopped = ("met (measured back to back)" if met else verdict.reason) if verdict is not None else layered.stopped
    shrunk = Shrunk(layered.model, layered.start, layered.value, layered.target, layered.stopped)
    return MeasuredRun(layered.model, [shrunk], cmp, verdict, met, stopped), layered


@contextlib.contextmanager
def _rounds_bar(console: Console) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over the interleaved before/after timing rounds."""
    with progress_bar(console) as bar:
        task = bar.add_task("timing before and after back to back", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)



def _shrink_measured(args: argparse.Namespace, model: nn.Module, ref: DataRef, data: DataSet, budget: Budget,
                     how: Check, meter: ResourceMeter, cfg: NetAdaptConfig | None, executor: Executor, train: Any,
                     out: Path, console: Console) -> MeasuredRun | None:  # fmt: skip
    """NetAdapt or one-shot pruning, checked measured and continued where it misses; None on Ctrl-C with a state."""
    def line(it: Iteration) -> str:
        return (f"iteration {it.iteration}: {budget.resource} {it.resource:.4g} by the meter (step bound "
                f"{it.target:.4g}), hold-out top-1 {it.top1:.2%}, {history_step(asdict(it))}, {it.seconds:.0f} s")

    with progress_bar(console) as bar:
        callbacks = run_callbacks(bar, console.print, line, "timing before and after back to back")
        try:
            return run_measured(model, ref, data, budget, how, method=args.method, meter=meter, out=out,
                                resume=args.resume, say=console.print, netadapt_config=cfg,
                                executor=executor, criterion=args.criterion, round_to=args.round_to, train=train,
                                long_epochs=args.long_epochs, batch_size=args.batch_size, **callbacks)  # fmt: skip
        except KeyboardInterrupt:
            if not state_path(out).is_file():
                raise
            bar.stop()
            print(f"edgecnn compress: interrupted; {state_path(out)} holds the finished iterations: add "
                  "--resume to continue", file=sys.stderr)  # fmt: skip
            return None


def _int8(args: argparse.Namespace, result: nn.Module, data: DataSet, how: Check, out: Path,
          console: Console) -> dict[str, Any] | None:  # fmt: skip
    """``--int8 auto|on``: the result deployed fp32 and int8 on the target (:func:`edgecnn.deploy.deploy_int8`);
    the results document's section, its reason said."""
    if args.int8 == "off":
        return None
    section = deploy_int8(result, data, out, target=how.backend, int8=args.int8, max_drop=args.max_drop / 100,
                          threads=how.threads, device=how.device, calibration_images=300,
                          progress=console.print)  # fmt: skip
    console.print(section["reason"])
    return section


def cmd_compress(args: argparse.Namespace) -> int:
    """Run ``edgecnn compress``; 0 when the budget is met (measured back to back), 1 when the result misses it."""
    budget = parse_budget(args.budget)  # first: a bad budget costs nothing
    use_agent_token(args)
    if args.model and args.method in LAYER_METHODS:
        raise ValueError(f"--method {args.method} with --model is not supported: use netadapt or prune, or "
                         "edgecnn.compress.factor.lowrank / plan_lowrank from Python")  # fmt: skip
    out = Path(args.out) if args.out else Path("runs") / f"compress-{args.method}"
    _claim(out, args)  # where the results go, and what is there, before anything is loaded
    if args.latency_table and budget.resource == "latency" and args.method not in LAYER_METHODS:
        check_writable(args.latency_table, what="--latency-table")
    train = replace(FINETUNE, batch_size=args.batch_size, lr=args.lr, threads="auto")  # the free cores
    cfg = None
    if args.method == "netadapt":
        cfg = NetAdaptConfig(args.initial_step, args.decay, args.short_steps, args.top_k, args.long_epochs,
                             args.selection, args.criterion, args.round_to, drop_blocks=args.drop_blocks,
                             train=train)  # fmt: skip
    # --resume: the state is checked field by field, and against this run's budget and schedule, before any work
    resumed = load_state(state_path(out), settings=run_settings(budget, cfg)) if args.resume and cfg else None
    model, ref, data, ckpt_data = _model_and_data(args, resumed, out)
    console = Console(stderr=True, quiet=args.no_progress)
    how = Check(args.backend or default_target(), args.threads, args.device, rounds=args.verify_rounds,
                tolerance=args.tolerance, measured_rounds=args.measured_rounds)  # fmt: skip
    console.print(f"{data.summary()}\nmodel {network_key(model)}\nbudget {budget.text}, method {args.method}, "
                  f"target {how.backend} with {how.threads} thread(s), out {out}")  # fmt: skip
    if how.backend == "eager":
        console.print("[yellow]note: eager PyTorch pays a per-operator overhead no deployment runtime pays; at small "
                      "inputs it is most of the latency, so pruning may gain little there (--backend onnxruntime)")
    executor = executor_from_args(args, progress=False)
    latency = _latency_model(args, budget, model, data, out, how, executor, console)
    meter = None if args.method in LAYER_METHODS else ResourceMeter(  # layer methods time the network itself
        budget.resource, input_size=data.image_size, num_classes=data.num_classes, in_chans=data.in_chans,
        latency=latency)  # fmt: skip
    layered: LayerMethodResult | None = None
    with executor:
        if args.method in LAYER_METHODS:
            run, layered = _layers(args, model, data, budget, how, train, console)
        else:
            shrunk = _shrink_measured(args, model, ref, data, budget, how, meter, cfg, executor, train, out, console)
            if shrunk is None:
                return 130
            run = shrunk
    save_checkpoint(checkpoint_of(run.model, data=ckpt_data, config=_record(args, model, run, layered, data)),
                    out / "model.pt")  # fmt: skip
    doc = _document(args, model, run, layered, data, budget, how, out)
    doc["int8"] = _int8(args, run.model, data, how, out, console)
    write_document(doc, out)
    Console().print(closing_table(doc))
    print(f"arch {doc['after']['arch'] or getattr(run.model, 'note', type(run.model).__name__)}\n"
          f"checkpoint {out / 'model.pt'}, results {out / 'results.json'}")
    if not run.met:
        print(f"edgecnn compress: budget {budget.text} not met: {run.stopped}", file=sys.stderr)
    return 0 if run.met else 1


def _record(args: argparse.Namespace, model: nn.Module, run: MeasuredRun, layered: LayerMethodResult | None,
            data: DataSet) -> dict[str, Any]:  # fmt: skip
    """What the result's checkpoint records to be rebuilt: a layer method's transform, or for a network of your own
    code the pruning steps and its constructor (``load_pruned`` / ``load_any`` replay them)."""
    record = {} if layered is None else transform_record(args.method, model, layered.chosen)
    if isinstance(model, EdgeNet):  # its arch string says it all
        return record
    record = prune_record(args.method, run.prune_steps(), round_to=args.round_to, source=args.model,
                          input_shape=(data.in_chans, data.image_size, data.image_size))  # fmt: skip
    record[RECORD_KEY] = args.model_ref.record()  # rebuilt without --model (a file by its absolute path)
    return record


def _document(args: argparse.Namespace, model: nn.Module, run: MeasuredRun, layered: LayerMethodResult | None,
              data: DataSet, budget: Budget, how: Check, out: Path) -> dict[str, Any]:  # fmt: skip
    """The ``kind: "compress"`` results document; one "before" and one "after" everywhere: the latencies of the
    back-to-back comparison."""
    before = replace(model_stats(model, data, measure_latency=False), latency_ms=run.comparison.before)
    after = replace(model_stats(run.model, data, measure_latency=False), latency_ms=run.comparison.after)
    first = run.passes[0]
    extra = {} if layered is None else layered.document()
    return compress_document(args.method, {**budget.to_dict(), "start": first.start, "target": first.target},
                             before, after, met=run.met, history=run.history, arch=after.arch, **extra,
                             **run.document(), checkpoint=str(out / "model.pt"), source=str(args.checkpoint),
                             data=str(args.data), backend=how.backend, threads=how.threads,
                             device=how.device)  # fmt: skip
