"""``edgecnn train`` and ``edgecnn eval``: the training loop of :mod:`edgecnn.train` from the command line.

``edgecnn train MODEL --data digits|PATH`` builds a zoo model or an arch
string for the data's classes and input channels, trains it and writes
``<out>/last.pt`` after every epoch (``--resume`` continues it). Under
``torchrun --nproc-per-node N -m edgecnn.cli.main train ...`` the same command
trains with DDP. ``edgecnn eval CKPT`` rebuilds the network from the
checkpoint alone and reports top-1, top-5 and per-class accuracy.

A network of your own code trains or fine-tunes the same way:
``edgecnn train --model MODULE:FN[:key=value,...] [--weights W.pt]`` (or
``MODULE:FN`` as MODEL) — :func:`edgecnn.train.finetune_model`: its
checkpoint records the constructor, and the BatchNorm statistics are checked
after training and re-estimated where they lag (the log says so). MODEL may
also be a checkpoint to fine-tune from (an EdgeNet, or a network whose
checkpoint records its constructor: no ``--model`` needed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgecnn.atomic import atomic_write_text
from edgecnn.checkpoint import load_checkpoint
from edgecnn.cli import args as num
from edgecnn.data import DataSet, load_data
from edgecnn.analysis.memory import check_memory
from edgecnn.run_folder import check_writable, claim_run_dir
from edgecnn.run_document import write_results
from edgecnn.cli.user_model import (ModelRef, add_model_option, build_ref, check_runs, is_checkpoint_arg, load_any,
                                    load_into, model_spec, notice, parse_model_ref)
from edgecnn.train import PRECISIONS, EvalResult, NonFiniteLossError, TrainConfig, evaluate, finetune_model, fit
from edgecnn.train.config import TrainResult


def _model_arch(model: str, width: float) -> tuple[str, str]:
    """(arch string, short name for the run folder) of a MODEL argument."""
    from edgecnn import zoo

    m = zoo.model_arg(model, width=width)
    if m.name is not None:
        return m.arch, m.name if width == 1 else f"{m.name}-w{width:g}"
    return m.arch, "arch-" + hashlib.sha1(m.arch.encode()).hexdigest()[:8]


def _short_name(args: argparse.Namespace, spec: str | None) -> str:
    """The run folder's name part for the network: a zoo name, an arch hash, a checkpoint's run or the code's."""
    if spec is not None:
        ref = parse_model_ref(spec)
        where = ref.target.rpartition(":")[0]
        return f"{Path(where).stem if where.endswith('.py') else where.split('.')[-1]}-{ref.name}"
    if is_checkpoint_arg(args.model):
        path = Path(args.model)
        return f"{path.parent.name or path.stem}-finetune"
    return _model_arch(args.model, args.width)[1]


@dataclass
class _Network:
    """The network to train: the module, its arch string (EdgeNets) or constructor (your code), and its label."""

    model: torch.nn.Module
    arch: str | None
    ref: ModelRef | None
    label: str


def _network(args: argparse.Namespace, spec: str | None, data: DataSet, lead: bool) -> _Network:
    """Build (seeded) the network of MODEL / --model for ``data``, with --weights or a MODEL checkpoint's weights."""
    torch.manual_seed(args.seed)  # the same initial weights in every run (and process) with this seed
    say = notice if lead else (lambda _: None)
    if is_checkpoint_arg(args.model):
        if args.weights:
            raise ValueError(f"{args.model} brings its weights; drop --weights (or train --model with --weights)")
        got = load_any(args.model, spec, log=say, command="train")
        ck = got.checkpoint
        if (ck.num_classes, ck.in_chans) != (data.num_classes, data.in_chans):
            raise ValueError(f"{args.model} has {ck.num_classes} classes × {ck.in_chans} channels, {data.name} "
                             f"{data.num_classes} × {data.in_chans}: fine-tune on data of the same classes")
        return _Network(got.model, ck.arch if got.ref is None else None, got.ref, str(args.model))
    if spec is not None:
        if args.width != 1.0:
            raise ValueError("--width applies to zoo models; give your network's width in --model, e.g. "
                             "my_net.py:build:width_mult=0.5")  # fmt: skip
        ref = parse_model_ref(spec)
        model = build_ref(ref, command="train")
        if args.weights:
            load_into(model, args.weights, ref=ref)
        check_runs(model, ref.text, (data.in_chans, data.image_size, data.image_size), data.num_classes, "train")
        return _Network(model.train(), None, ref, ref.text)
    from edgecnn.build import build

    arch, _ = _model_arch(args.model, args.width)
    check_memory(arch, input_size=data.image_size, num_classes=data.num_classes, in_chans=data.in_chans,
                 batch=args.batch_size, training=True, what=f"training {args.model!r}")  # fmt: skip
    model = build(arch, num_classes=data.num_classes, in_chans=data.in_chans)
    if args.weights:
        load_into(model, args.weights)
    return _Network(model, arch, None, arch)


def cmd_train(args: argparse.Namespace) -> int:
    spec = model_spec(args.model, args.model_ref)
    if args.model is None and spec is None:
        raise ValueError("give MODEL (a zoo name, an arch string or a checkpoint) or --model MODULE:FN[:key=value,...]")
    if spec is not None:
        parse_model_ref(spec)  # a malformed reference costs nothing
    elif not is_checkpoint_arg(args.model):
        _model_arch(args.model, args.width)  # an unknown model costs nothing either
    lead = os.environ.get("RANK", "0") == "0"  # under torchrun, only the first process talks
    short = _short_name(args, spec)
    out = Path(args.out) if args.out else Path("runs") / f"{short}-{Path(str(args.data)).name.split('.')[0]}"
    # where the results go is checked before the data is read or an epoch is trained
    claim_run_dir(out, resume=args.resume, overwrite=args.overwrite)
    if args.json:
        check_writable(args.json, what="--json")
    cfg = TrainConfig(
        epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, warmup_epochs=args.warmup,
        label_smoothing=args.label_smoothing, ema_decay=args.ema, grad_clip=args.grad_clip,
        augment=not args.no_augment, precision=args.precision, channels_last=not args.no_channels_last,
        compile=args.compile,
        distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature,
        eval_every=args.eval_every, seed=args.seed, device=args.device, threads=args.threads,
        progress=not args.no_progress, log_epochs=True,
    )  # fmt: skip
    data = load_data(args.data, image_size=args.image_size, limit=args.limit, strict=args.strict,
                     progress=lead and not args.no_progress)  # fmt: skip
    console = Console(stderr=True)
    net = _network(args, spec, data, lead)
    if lead and not args.no_progress:
        console.print(f"{data.summary()}\nmodel {net.label}\nrun folder {out}")
    if lead and data.num_classes < 2:
        print(f"edgecnn train: warning: {data.name} has a single class ({data.classes[0]!r}): every prediction "
              "is right, so accuracy says nothing; add images of other classes", file=sys.stderr)  # fmt: skip
    bn = None
    try:
        if net.arch is None:  # your code: the constructor recorded, the BN statistics checked
            own = finetune_model(net.model, data, cfg, constructor=net.ref, out_dir=out, resume=args.resume,
                                 overwrite=args.overwrite, teacher=args.teacher,
                                 log=notice)  # fmt: skip
            result, bn = own.train, own.bn
        else:
            result = fit(net.model, data, cfg, out_dir=out, resume=args.resume, overwrite=args.overwrite,
                         teacher=args.teacher)  # fmt: skip
    except NonFiniteLossError as exc:
        print(f"edgecnn train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not lead:
            return 130
        print(f"edgecnn train: interrupted; {out / 'last.pt'} holds the run so far: add --resume to continue",
              file=sys.stderr)  # fmt: skip
        return 130
    if not lead:
        return 0
    ema = f", EMA top-1 {result.ema.top1:.2%}" if result.ema else ""
    print(f"top-1 {result.final.top1:.2%}, top-5 {result.final.top5:.2%}{ema} after {result.steps} steps "
          f"({result.seconds:.0f} s); checkpoint {result.checkpoint}")  # fmt: skip
    if args.json:
        atomic_write_text(args.json, json.dumps(asdict(result), indent=1))
    doc = _results_document(net.arch, data.name, cfg, result)
    if net.ref is not None:
        doc.update(model=net.ref.text, constructor=net.ref.record(), bn_check=asdict(bn) if bn else None)
    write_results(out, "train", doc)
    return 0


def _results_document(arch: str | None, data: str, cfg: TrainConfig, result: TrainResult) -> dict:
    """The run's results.json (kind "train", fields in docs/report.md): `edgecnn report RUN_DIR` draws it."""
    history = [{"epoch": e.epoch, "steps": e.steps, "lr": e.lr, "train_loss": e.train_loss, "train_top1": e.train_top1,
                "test_loss": e.test.loss if e.test else None, "test_top1": e.test.top1 if e.test else None,
                "seconds": e.seconds, "images_per_s": e.images_per_s} for e in result.history]  # fmt: skip
    return {"arch": arch, "data": data, "config": asdict(cfg), "top1": result.final.top1, "top5": result.final.top5,
            "ema_top1": result.ema.top1 if result.ema else None, "steps": result.steps,
            "train_seconds": result.seconds, "images_per_s": result.images_per_s, "checkpoint": result.checkpoint,
            "history": history}  # fmt: skip


def _eval_table(r: EvalResult, classes: list[str], title: str) -> Table:
    table = Table(title=title)
    table.add_column("class")
    table.add_column("top-1", justify="right")
    for name, acc in zip(classes, r.per_class):
        table.add_row(name, f"{acc:.2%}")
    table.add_section()
    table.add_row("all (top-1)", f"{r.top1:.2%}")
    table.add_row("all (top-5)", f"{r.top5:.2%}")
    table.add_row("loss", f"{r.loss:.4f}")
    table.add_row("images", str(r.num_images))
    return table


def cmd_eval(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)  # every field checked (edgecnn.schema) before use
    meta = ckpt.data
    size = meta.get("image_size")
    if ckpt.arch is not None:
        check_memory(ckpt.arch, input_size=args.image_size or size or 224, num_classes=ckpt.num_classes,
                     in_chans=ckpt.in_chans, batch=args.batch_size, what=str(args.checkpoint))  # fmt: skip
    # an EdgeNet from its arch string; any other network by --model or the constructor the checkpoint records
    model = load_any(args.checkpoint, args.model_ref, ema=args.ema, log=notice, command="eval").model
    source = args.data or meta.get("name")
    if not source:
        raise ValueError("the checkpoint does not say which data it was trained on; pass --data digits|PATH")
    data = load_data(source, image_size=size if source == "digits" else args.image_size, limit=args.limit,
                     strict=args.strict)  # fmt: skip
    if meta.get("classes") and list(data.classes) != list(meta["classes"]):
        raise ValueError(f"{source} has classes {list(data.classes)[:5]}..., the checkpoint {meta['classes'][:5]}...; "
                         "evaluate on data with the same classes")  # fmt: skip
    mean = tuple(meta["mean"]) if "mean" in meta else None
    std = tuple(meta["std"]) if "std" in meta else None
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    r = evaluate(model, data, split=args.split, batch_size=args.batch_size, image_size=size, mean=mean, std=std)
    if args.json:
        print(json.dumps(asdict(r)))
    else:
        Console().print(_eval_table(r, list(data.classes), f"{args.checkpoint} on {source} ({args.split})"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a zoo model or arch string on digits, CIFAR-10 or an ImageFolder tree")
    p.add_argument("model", nargs="?", default=None,
                   help="zoo name (see `edgecnn list`), arch string (e.g. 'conv_c16 ir_s2_c24 gap fc'), a "
                        "checkpoint to fine-tune, or MODULE:FN[:key=value,...] (= --model)")  # fmt: skip
    add_model_option(p, dest="model_ref", also="; its checkpoint records the reference")
    p.add_argument("--weights", default=None, metavar="W.pt",
                   help="start from these weights (a state_dict or an edgecnn checkpoint), loaded strictly")
    p.add_argument("--data", default="digits", help="'digits' (built-in, default), a folder or an archive")
    p.add_argument("--epochs", type=num.epochs, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--steps", type=num.steps, default=None, help="optimiser steps instead of epochs")
    p.add_argument("--batch-size", type=num.batch, default=d.batch_size, help=f"global batch size (default {d.batch_size})")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=d.optimizer, help="default sgd (Nesterov)")
    p.add_argument("--lr", type=num.positive_float, default=None, help="peak learning rate (default 0.1 SGD, 2e-3 AdamW)")
    p.add_argument("--momentum", type=num.fraction, default=d.momentum, help=f"SGD momentum (default {d.momentum})")
    p.add_argument("--weight-decay", type=num.nonneg_float, default=None, help="default 5e-4 SGD, 0.05 AdamW; not on BN/bias")
    p.add_argument("--warmup", type=num.epochs_float, default=d.warmup_epochs, help="linear warm-up epochs (default 1)")
    p.add_argument("--label-smoothing", type=num.fraction, default=d.label_smoothing, help="default 0.1")
    p.add_argument("--ema", type=num.float_in(0.0, 1.0, open_lo=True, open_hi=True), default=None, metavar="DECAY", help="keep an EMA of the weights, e.g. 0.999")
    p.add_argument("--grad-clip", type=num.positive_float, default=None, help="clip the gradient norm to this")
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--image-size", type=num.pixels, default=None, help="input side (digits: 32; folders: the files' size)")
    p.add_argument("--limit", type=num.positive_int, default=None, help="at most N images per class and split (quick runs)")
    p.add_argument("--strict", action="store_true", help="stop at an unreadable image (default: skip, counted)")
    p.add_argument("--width", type=num.width, default=1.0, help="width multiplier of a zoo model (default 1)")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto: bf16/fp16 autocast on CUDA, fp32 on the CPU; bf16 also suits CPUs with AMX or "
                        "AVX512-BF16 (--resume may change it)")  # fmt: skip
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW (channels_last is faster)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off in long runs)")
    p.add_argument("--teacher", default=None, metavar="CKPT", help="distil from this checkpoint (Hinton 2015)")
    p.add_argument("--distill-alpha", type=num.unit, default=d.distill_alpha, help="weight of the soft targets")
    p.add_argument("--distill-temperature", type=num.positive_float, default=d.distill_temperature, help="softmax temperature")
    p.add_argument("--eval-every", type=num.epochs_or_0, default=d.eval_every, help="test every N epochs (0: at the end)")
    p.add_argument("--seed", type=num.seed, default=d.seed, help="random seed (default 0)")
    p.add_argument("--device", type=num.device, default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=num.threads_or_auto, default="auto",
                   help="CPU threads for training: a count, or auto (default): the cores other work leaves free, "
                        "looked at every few seconds (2 threads on 2 cores beside one busy process train 2x slower "
                        "than 1)")  # fmt: skip
    p.add_argument("--out", default=None, help="run folder for last.pt (default runs/<model>-<data>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the previous run in --out (without this or --resume, a used folder is refused)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (batch jobs); one line per epoch")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="top-1 / top-5 / per-class accuracy of a checkpoint")
    e.add_argument("checkpoint", help="a .pt file written by `edgecnn train`")
    e.add_argument("--data", default=None, help="digits or a path (default: the data it was trained on)")
    e.add_argument("--split", choices=("test", "train"), default="test", help="default test")
    e.add_argument("--batch-size", type=num.batch, default=256, help="default 256")
    e.add_argument("--image-size", type=num.pixels, default=None, help="decode folder images at this size")
    e.add_argument("--limit", type=num.positive_int, default=None, help="at most N images per class")
    e.add_argument("--strict", action="store_true", help="stop at an unreadable image (default: skip, counted)")
    e.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    add_model_option(e, dest="model_ref", also=" (default: the constructor the checkpoint records)")
    e.add_argument("--device", type=num.device, default="auto", help="auto, cpu, cuda ...")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_eval)
