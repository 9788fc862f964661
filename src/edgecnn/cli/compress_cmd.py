"""``edgecnn compress CKPT --data PATH|digits --budget B --method netadapt|prune|lowrank|separable``: compress a net.

Loads the checkpoint and the data, turns ``--budget`` (``5ms``, ``50%latency``,
``50%macs``, ``1.2Mparams``; :mod:`edgecnn.compress.budget`) into a bound,
runs the method — NetAdapt (:mod:`edgecnn.compress.netadapt`, parallel short
fine-tunes on the executor, resumable with ``--resume``) or one-shot pruning
(:mod:`edgecnn.compress.oneshot`, then a long fine-tune), or layer replacement
checked against measured per-layer latency — truncated SVD (``lowrank``) or
depthwise separable pairs (``separable``), :mod:`edgecnn.compress.by_layer` — and writes into
``--out``: ``model.pt`` (checkpoint), ``results.json`` (``kind: "compress"``
results document, drawn by ``edgecnn report``) and, for NetAdapt, ``netadapt_state.pt``. It ends with a
table of the network before and after: test top-1, measured latency, MACs and params.

``--model MODULE:FN`` compresses a network of the user's own code instead
(:mod:`edgecnn.cli.user_model`; ``CKPT`` is then its weights): NetAdapt and
``prune`` work on it in module space, a latency budget measured end to end
(:class:`~edgecnn.compress.meter.ResourceMeter`); the result checkpoint
records the pruning steps, and
:func:`edgecnn.compress.netadapt_state.load_pruned` rebuilds it from the same code.

Before any work (loading data, timing, fine-tuning) the command checks what
it will write and what it will continue: ``--out`` must be writable
(:func:`edgecnn.outputs.check_writable`) and may not hold a previous run
(``model.pt``, ``results.json``, ``netadapt_state.pt``) unless ``--resume``
continues it or ``--overwrite`` replaces it; ``--resume`` needs a NetAdapt
state there, checked field by field and against this run's network, budget and
schedule (:func:`edgecnn.compress.netadapt_state.check_state`). Every number
is typed (:mod:`edgecnn.cli.args`). A ``--model`` whose code fails to import,
to parse or to build is one line naming the file and line
(``edgecnn --debug compress ...`` shows the traceback). Every file is written
atomically.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from edgecnn.atomic import atomic_write
from edgecnn.checkpoint import checkpoint_of, load_model, save_checkpoint
from edgecnn.cli import args as num
from edgecnn.cli.device_args import add_device_args, use_agent_token
from edgecnn.cli.executor_args import add_executor_args, executor_from_args
from edgecnn.compress.budget import Budget, parse_budget
from edgecnn.compress.by_layer import LAYER_METHODS, LayerMethodResult, compress_layers, transform_record
from edgecnn.compress.document import QUICK_TIMING, ModelStats, compress_document, model_stats, write_document
from edgecnn.build import EdgeNet
from edgecnn.cli.user_model import build_user_model, user_model
from edgecnn.compress.importance import CRITERIA
from edgecnn.compress.meter import ResourceMeter, network_key
from edgecnn.compress.netadapt import NetAdaptConfig, netadapt
from edgecnn.compress.netadapt_state import STATE_FILE, load_state, prune_record, restore, run_settings, state_path
from edgecnn.compress.oneshot import prune_to_budget
from edgecnn.compress.recalibrate import recalibrate_bn_
from edgecnn.data import BatchLoader, DataSet
from edgecnn.executor import Executor
from edgecnn.latency.fingerprint import BACKENDS
from edgecnn.latency.targets import get_target
from edgecnn.latency.measure import default_threads, device_fingerprint
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable, new_table
from edgecnn.limits import MAX_CHANNELS
from edgecnn.memory import check_memory
from edgecnn.outputs import RUN_FILES, check_writable, claim_run_dir
from edgecnn.train.config import FINETUNE
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, worker_data

METHODS = ("netadapt", "prune", "lowrank", "separable")


_round_to = num.within(MAX_CHANNELS, "channels")  # a width grid: at most the widest layer allowed
# channel importance the CLI can compute ("taylor" needs batches and a loss: edgecnn.compress.prune from Python)
_CRITERIA = tuple(c for c in CRITERIA if c != "taylor")
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
    p.add_argument("--backend", choices=BACKENDS, default="eager", help="latency backend (a deployment target)")
    add_device_args(p)
    p.add_argument("--threads", type=num.threads, default=None, help="threads of the latency measurements "
                   "(default: all)")  # fmt: skip
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
    g.add_argument("--round-to", type=_round_to, default=8, help="kept widths are multiples of this")
    g.add_argument("--drop-blocks", action="store_true", help="NetAdapt: also propose removing whole blocks with an "
                   "identity skip (depth; helps where latency is per-layer overhead rather than width)")  # fmt: skip
    g.add_argument("--batch-size", type=num.batch, default=128)
    g.add_argument("--lr", type=num.positive_float, default=0.01, help="fine-tune learning rate")
    add_executor_args(p)
    p.add_argument("--int8", action="store_true", help="also quantize the result to int8 (ONNX Runtime static PTQ) "
                   "and compare fp32 vs int8 ONNX models")  # fmt: skip
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


def _table(before: ModelStats, after: ModelStats, title: str) -> Table:
    t = Table(title=title)
    for c in ("", "top-1", "latency (ms)", "MACs", "params"):
        t.add_column(c, justify="right" if c else "left")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for name, s in (("before", before), ("after", after)):
        t.add_row(name, f"{s.top1:.2%}", ms(s.latency_ms), f"{s.macs:,}", f"{s.params:,}")
    t.add_row("after / before", f"{after.top1 - before.top1:+.2%}",
              "-" if before.latency_ms is None or after.latency_ms is None else f"{after.latency_ms / before.latency_ms:.2f}×",
              f"{after.macs / before.macs:.2f}×", f"{after.params / before.params:.2f}×")  # fmt: skip
    return t


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
                   threads: int, executor: Executor, console: Console) -> LatencyModel | None:  # fmt: skip
    """What prices a latency budget: a table of the device (EdgeNets), or every network timed whole (others)."""
    latency = None
    if budget.resource == "latency" and not isinstance(model, EdgeNet):  # no arch: each network timed whole
        back_to_back = not get_target(args.backend).always_normalised  # eager: fastest runs, no reference
        latency = LatencyModel(new_table(backend=args.backend, threads=threads, device=args.device,
                                         config=QUICK_TIMING, drift_reference=not back_to_back),
                               lane=executor.exclusive, stat="min" if back_to_back else "median")  # fmt: skip
        console.print("latency: every pruned network is measured end to end (no arch string to look up)")
    elif budget.resource == "latency" and args.method not in LAYER_METHODS:  # those time layers and the whole net
        path = Path(args.latency_table) if args.latency_table else out / "latency_table.json"
        fp = device_fingerprint(backend=args.backend, threads=threads, device=args.device)
        table = LatencyTable.open_or_new(path, fp)
        latency = LatencyModel(table, measure=True, lane=executor.exclusive, path=path)
        console.print(f"latency table {path}: measuring a width grid of every block once (then interpolating)")
        latency.ensure_grid(model.arch, input_size=data.image_size, num_classes=data.num_classes,
                            in_chans=data.in_chans)  # fmt: skip
    return latency


def _model_and_data(args: argparse.Namespace, resumed: dict[str, Any] | None,
                    out: Path) -> tuple[nn.Module, DataRef, DataSet, dict[str, Any]]:  # fmt: skip
    """The network (the user's code first, or the checkpoint's EdgeNet) and the data (its reference for the
    workers, and the loaded set), each checked before the next is loaded; the data record the result's checkpoint
    keeps."""
    if args.model:
        net = build_user_model(args.model)  # the user's code first: a mistake there costs no data loading
        _same_start(resumed, out, net)
        ref = DataRef(str(args.data), image_size=args.image_size, limit=args.limit)
        data = worker_data(ref)
        shape = (data.in_chans, data.image_size, data.image_size)
        model = user_model(args.model, args.checkpoint, input_shape=shape, num_classes=data.num_classes, model=net)
        _resumable(resumed, out, model, shape, args.round_to)  # its history replays on this network
        ckpt_data: dict = {"name": str(args.data), "image_size": data.image_size}
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


def cmd_compress(args: argparse.Namespace) -> int:
    """Run ``edgecnn compress``; 0 when the budget is met, 1 when the result is over it."""
    budget = parse_budget(args.budget)  # first: a bad budget costs nothing
    use_agent_token(args)
    if args.model and args.method in LAYER_METHODS:
        raise ValueError(f"--method {args.method} with --model is not supported: use netadapt or prune, or "
                         "edgecnn.compress.lowrank / plan_lowrank from Python")  # fmt: skip
    out = Path(args.out) if args.out else Path("runs") / f"compress-{args.method}"
    _claim(out, args)  # where the results go, and what is there, before anything is loaded
    if args.latency_table and budget.resource == "latency" and args.method not in LAYER_METHODS:
        check_writable(args.latency_table, what="--latency-table")
    train = replace(FINETUNE, batch_size=args.batch_size, lr=args.lr)
    cfg = None
    if args.method == "netadapt":
        cfg = NetAdaptConfig(args.initial_step, args.decay, args.short_steps, args.top_k, args.long_epochs,
                             args.selection, args.criterion, args.round_to, drop_blocks=args.drop_blocks,
                             train=train)  # fmt: skip
    # --resume: the state is checked field by field, and against this run's budget and schedule, before any work
    resumed = load_state(state_path(out), settings=run_settings(budget, cfg)) if args.resume and cfg else None
    model, ref, data, ckpt_data = _model_and_data(args, resumed, out)
    console = Console(stderr=True, quiet=args.no_progress)
    console.print(f"{data.summary()}\nmodel {network_key(model)}\nbudget {budget.text}, method {args.method}, "
                  f"out {out}")  # fmt: skip
    threads = args.threads if args.threads is not None else default_threads()
    executor = executor_from_args(args, progress=False)
    latency = _latency_model(args, budget, model, data, out, threads, executor, console)
    meter = None if args.method in LAYER_METHODS else ResourceMeter(  # layer methods time the network itself
        budget.resource, input_size=data.image_size, num_classes=data.num_classes, in_chans=data.in_chans,
        latency=latency)  # fmt: skip
    before = model_stats(model, data, backend=args.backend, threads=threads, device=args.device)
    history: list[dict] = []
    layered: LayerMethodResult | None = None
    prune_steps: list[dict[int, int]] = []  # one-shot pruning of a --model network: its one step
    with executor:
        if cfg is not None:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True) as bar:  # fmt: skip
                task = bar.add_task("iteration 1: proposals", total=None)
                state = {"i": 1}

                def proposal(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, description=f"iteration {state['i']}: proposals")

                def iteration(it) -> None:
                    console.print(f"iteration {it.iteration}: {budget.resource} {it.resource:.4g} (step bound "
                                  f"{it.target:.4g}), hold-out top-1 {it.top1:.2%}, {it.description.split(':')[0]} "
                                  f"{it.width_before}→{it.width_after}, {it.seconds:.0f} s")  # fmt: skip
                    state["i"] = it.iteration + 1
                    bar.reset(task, total=None, description=f"iteration {state['i']}: proposals")

                try:
                    r = netadapt(model, ref, budget, meter=meter, config=cfg, executor=executor, out=out,
                                 resume=args.resume, on_iteration=iteration, on_proposal=proposal)  # fmt: skip
                except KeyboardInterrupt:
                    if not state_path(out).is_file():
                        raise
                    bar.stop()
                    print(f"edgecnn compress: interrupted; {state_path(out)} holds the finished iterations: add "
                          "--resume to continue", file=sys.stderr)  # fmt: skip
                    return 130
            result, met, stopped = r.model, r.met, r.stopped
            history = [asdict(h) for h in r.history]
        elif args.method in LAYER_METHODS:
            layered = compress_layers(args.method, model, data, budget, before, backend=args.backend,
                                      threads=threads, device=args.device, train=train, long_epochs=args.long_epochs, batch_size=args.batch_size,
                                      round_to=args.round_to, log=console.print)  # fmt: skip
            result, met, stopped = layered.model, layered.met, layered.stopped
        else:
            target = budget.target(meter.of_model(model))
            shot = prune_to_budget(model, target, meter, criterion=args.criterion, round_to=args.round_to)
            prune_steps = [{g.group: g.width_after for g in shot.plan.groups}]
            result = shot.model
            loader = BatchLoader(data.train, batch_size=args.batch_size, mean=data.mean, std=data.std, train=True)
            recalibrate_bn_(result, loader, num_batches=20)
            if args.long_epochs > 0:
                steps = max(1, round(args.long_epochs * max(1, len(data.train) // args.batch_size)))
                finetune(result, data, steps=steps, config=train)
            met, stopped = shot.resource <= target, "met" if shot.resource <= target else "over budget"
    after = model_stats(result, data, backend=args.backend, threads=threads, device=args.device)
    if layered is not None and budget.resource == "latency" and after.latency_ms is not None:
        layered = replace(layered, value=after.latency_ms)  # the table's measurement decides, not the selection's
        met, stopped = layered.met, layered.stopped
    record = {} if layered is None else transform_record(args.method, model, layered.chosen)
    if not isinstance(model, EdgeNet):  # the steps that rebuild it from the user's code (load_pruned)
        if args.method == "netadapt":
            prune_steps = [{h["group"]: h["width_after"]} for h in history]
        record = prune_record(args.method, prune_steps, round_to=args.round_to, source=args.model,
                              input_shape=(data.in_chans, data.image_size, data.image_size))  # fmt: skip
    save_checkpoint(checkpoint_of(result, data=ckpt_data, config=record), out / "model.pt")
    start = layered.start if layered is not None else meter.of_model(model)  # type: ignore[union-attr]
    extra = {} if layered is None else layered.document()
    doc = compress_document(args.method, {**budget.to_dict(), "start": start, "target": budget.target(start)},
                            before, after, met=met, history=history, stopped=stopped, arch=after.arch, **extra,
                            checkpoint=str(out / "model.pt"), source=str(args.checkpoint), data=str(args.data),
                            backend=args.backend, threads=threads, device=args.device)  # fmt: skip
    table = _table(before, after, f"{args.method} to {budget.text}: {stopped}")
    if args.int8:
        from edgecnn.compress.quantize import compare_int8, quantize_int8

        q = quantize_int8(result, data, calibration_images=300)
        atomic_write(out / "model-int8.onnx", lambda f: f.write(q.int8))
        c = compare_int8(q.fp32, q.int8, data, threads=threads)
        doc["int8"] = {**asdict(c), **q.record(), "onnx": str(out / "model-int8.onnx")}
        table.add_row("after, ORT fp32", f"{c.top1_fp32:.2%}", f"{c.latency_fp32_ms:.3f}", "", "")
        table.add_row("after, ORT int8", f"{c.top1_int8:.2%}", f"{c.latency_int8_ms:.3f}", "", "")
    write_document(doc, out)
    Console().print(table)
    print(f"arch {after.arch or getattr(result, 'note', type(result).__name__)}\n"
          f"checkpoint {out / 'model.pt'}, results {out / 'results.json'}")
    return 0 if met else 1
