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
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgecnn.atomic import atomic_write
from edgecnn.checkpoint import checkpoint_of, load_model, save_checkpoint
from edgecnn.cli.executor_args import add_executor_args, executor_from_args
from edgecnn.compress.budget import parse_budget
from edgecnn.compress.by_layer import LAYER_METHODS, LayerMethodResult, compress_layers, transform_record
from edgecnn.compress.document import QUICK_TIMING, ModelStats, compress_document, model_stats, write_document
from edgecnn.build import EdgeNet
from edgecnn.cli.user_model import user_model
from edgecnn.compress.meter import ResourceMeter, network_key
from edgecnn.compress.netadapt import NetAdaptConfig, netadapt
from edgecnn.compress.netadapt_state import prune_record
from edgecnn.compress.oneshot import prune_to_budget
from edgecnn.compress.recalibrate import recalibrate_bn_
from edgecnn.data import BatchLoader
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import default_threads
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable, new_table
from edgecnn.train.config import FINETUNE
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, worker_data

METHODS = ("netadapt", "prune", "lowrank", "separable")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="compress a trained network to a latency / MACs / params budget",
                       description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by `edgecnn train` (with --model: the "
                   "network's state_dict)")  # fmt: skip
    p.add_argument("--model", default=None, metavar="MODULE:FN", help="a network of your own code, e.g. "
                   "'torchvision.models:resnet18' or 'my_net.py:build' (netadapt and prune methods)")  # fmt: skip
    p.add_argument("--data", required=True, help="'digits' or an image folder / archive (CIFAR-10 tar)")
    p.add_argument("--budget", required=True, help="5ms | 50%%latency | 50%%macs | 1.2Mparams | 300Mmacs")
    p.add_argument("--method", default="netadapt", help="netadapt | prune | lowrank | separable")
    p.add_argument("--out", default=None, help="output folder (default runs/compress-<method>)")
    p.add_argument("--resume", action="store_true", help="NetAdapt: continue from the state in --out")
    p.add_argument("--image-size", type=int, default=None, help="stored image side (default: the checkpoint's)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per class and split")
    p.add_argument("--latency-table", default=None, help="latency table JSON (default <out>/latency_table.json); "
                   "missing blocks are measured and added")  # fmt: skip
    p.add_argument("--backend", choices=("eager", "onnxruntime"), default="eager", help="latency backend")
    p.add_argument("--threads", type=int, default=None, help="threads of the latency measurements (default: all)")
    g = p.add_argument_group("schedule")
    g.add_argument("--initial-step", type=float, default=0.05, help="NetAdapt: first step, share of the start")
    g.add_argument("--decay", type=float, default=0.98, help="NetAdapt: step decay per iteration")
    g.add_argument("--short-steps", type=int, default=50, help="NetAdapt: short fine-tune steps per proposal")
    g.add_argument("--top-k", type=int, default=3, help="NetAdapt: proposals fine-tuned per iteration")
    g.add_argument("--selection", choices=("accuracy", "ratio"), default="accuracy",
                   help="NetAdapt: best accuracy, or best ΔAcc/|Δresource| (MobileNetV3)")  # fmt: skip
    g.add_argument("--long-epochs", type=float, default=1.0, help="fine-tune epochs of the result")
    g.add_argument("--criterion", default="l1", help="channel importance: l1, l2, bn_scale, taylor, random")
    g.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of this")
    g.add_argument("--drop-blocks", action="store_true", help="NetAdapt: also propose removing whole blocks with an "
                   "identity skip (depth; helps where latency is per-layer overhead rather than width)")  # fmt: skip
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=0.01, help="fine-tune learning rate")
    add_executor_args(p)
    p.add_argument("--int8", action="store_true", help="also quantize the result to int8 (ONNX Runtime static PTQ) "
                   "and compare fp32 vs int8 ONNX models")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compress)


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


def cmd_compress(args: argparse.Namespace) -> int:
    budget = parse_budget(args.budget)  # first: a bad budget costs nothing
    if args.method not in METHODS:
        raise ValueError(f"--method {args.method!r} is not one of {', '.join(METHODS)}")
    if args.round_to < 1 or args.batch_size < 1:
        raise ValueError("--round-to and --batch-size must be >= 1")
    if args.model and args.method in LAYER_METHODS:
        raise ValueError(f"--method {args.method} with --model is not supported: use netadapt or prune, or "
                         "edgecnn.compress.lowrank / plan_lowrank from Python")  # fmt: skip
    if args.model:
        ref = DataRef(str(args.data), image_size=args.image_size, limit=args.limit)
        data = worker_data(ref)
        model = user_model(args.model, args.checkpoint, input_shape=(data.in_chans, data.image_size, data.image_size),
                           num_classes=data.num_classes)  # fmt: skip
        ckpt_data: dict = {"name": str(args.data), "image_size": data.image_size}
    else:
        model, ckpt = load_model(args.checkpoint)
        size = args.image_size or int(ckpt.data.get("image_size", 0)) or None
        ref = DataRef(str(args.data), image_size=size, limit=args.limit)
        data = worker_data(ref)
        if data.num_classes != ckpt.num_classes or data.in_chans != ckpt.in_chans:
            raise ValueError(f"{args.data} has {data.num_classes} classes × {data.in_chans} channels, the "
                             f"checkpoint {ckpt.num_classes} × {ckpt.in_chans}: compress on the data it was trained on"
                             )  # fmt: skip
        ckpt_data = ckpt.data
    out = Path(args.out) if args.out else Path("runs") / f"compress-{args.method}"
    console = Console(stderr=True, quiet=args.no_progress)
    console.print(f"{data.summary()}\nmodel {network_key(model)}\nbudget {budget.text}, method {args.method}, "
                  f"out {out}")  # fmt: skip
    threads = args.threads or default_threads()
    executor = executor_from_args(args, progress=False)
    latency = None
    if budget.resource == "latency" and not isinstance(model, EdgeNet):  # no arch: each network timed whole
        eager = args.backend == "eager"
        latency = LatencyModel(new_table(backend=args.backend, threads=threads, config=QUICK_TIMING,
                                         drift_reference=not eager), lane=executor.exclusive,
                               stat="min" if eager else "median")  # fmt: skip
        console.print("latency: every pruned network is measured end to end (no arch string to look up)")
    elif budget.resource == "latency" and args.method not in LAYER_METHODS:  # those time layers and the whole net
        path = Path(args.latency_table) if args.latency_table else out / "latency_table.json"
        table = LatencyTable.open_or_new(path, fingerprint(backend=args.backend, threads=threads))
        latency = LatencyModel(table, measure=True, lane=executor.exclusive, path=path)
        console.print(f"latency table {path}: measuring a width grid of every block once (then interpolating)")
        latency.ensure_grid(model.arch, input_size=data.image_size, num_classes=data.num_classes,
                            in_chans=data.in_chans)  # fmt: skip
    meter = None if args.method in LAYER_METHODS else ResourceMeter(  # layer methods time the network itself
        budget.resource, input_size=data.image_size, num_classes=data.num_classes, in_chans=data.in_chans,
        latency=latency)  # fmt: skip
    train = replace(FINETUNE, batch_size=args.batch_size, lr=args.lr)
    before = model_stats(model, data, backend=args.backend, threads=threads)
    history: list[dict] = []
    layered: LayerMethodResult | None = None
    prune_steps: list[dict[int, int]] = []  # one-shot pruning of a --model network: its one step
    with executor:
        if args.method == "netadapt":
            cfg = NetAdaptConfig(args.initial_step, args.decay, args.short_steps, args.top_k, args.long_epochs,
                                 args.selection, args.criterion, args.round_to, drop_blocks=args.drop_blocks,
                                 train=train)  # fmt: skip
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

                r = netadapt(model, ref, budget, meter=meter, config=cfg, executor=executor, out=out,
                             resume=args.resume, on_iteration=iteration, on_proposal=proposal)  # fmt: skip
            result, met, stopped = r.model, r.met, r.stopped
            history = [asdict(h) for h in r.history]
        elif args.method in LAYER_METHODS:
            layered = compress_layers(args.method, model, data, budget, before, backend=args.backend, threads=threads,
                                      train=train, long_epochs=args.long_epochs, batch_size=args.batch_size,
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
    after = model_stats(result, data, backend=args.backend, threads=threads)
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
                            backend=args.backend, threads=threads)  # fmt: skip
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
