"""``edgecnn analyze MODEL``: the per-layer cost and receptive-field table of a network.

MODEL is a zoo name, an arch string or an edgecnn checkpoint (``*.pt``).
Only shapes matter for the table, so the model is built on the meta device:
no weights are allocated and a checkpoint's weights are not loaded into it.

A network of your own code: ``--model MODULE:FN[:key=value,...]`` (or that
reference as MODEL), or the checkpoint of one that records its constructor
(:func:`edgecnn.cli.user_model.load_any`); it is built on the CPU (its code
may not run on the meta device), with the checkpoint's weights when one is
given, and analysed at ``--input`` (default: the checkpoint's input size, else
224 with the channels of its first convolution).

``--out DIR`` makes a run folder: ``results.json`` (the analysis, kind
``analyze``) and ``report.html``. Unless ``--no-dynamics``, the document also
gets the effective receptive field and the gradient flow with and without
skips (:mod:`edgecnn.analysis.dynamics`), measured on real weights: the
checkpoint's, or a zoo/arch network's initialisation (``--seed``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgecnn import zoo
from edgecnn.analysis import Analysis, analyze
from edgecnn.analysis.dynamics import erf_section, gradflow_section
from edgecnn.analysis.cost_table import human
from edgecnn.atomic import atomic_write_text
from edgecnn.build import build
from edgecnn.checkpoint import load_checkpoint
from edgecnn.cli import args as num
from edgecnn.cli.user_model import (add_model_option, build_ref, infer_in_chans, is_checkpoint_arg, load_any, model_spec,
                                    notice)
from edgecnn.limits import MAX_CHANNELS, MAX_INPUT
from edgecnn.analysis.memory import check_memory
from edgecnn.run_folder import check_writable, claim_run_dir
from edgecnn.plan import resolve
from edgecnn.report import write_report
from edgecnn.run_document import write_results

DYNAMICS_BATCH = 8  # random inputs per ERF batch and in the gradient-flow pass
ERF_SAMPLES = 16  # random inputs the ERF is averaged over (Luo et al. 2016)

_INPUT_RE = re.compile(r"^\d+(x\d+x\d+)?$")


def parse_input(text: str, in_chans: int) -> tuple[int, ...]:
    """``"3x224x224"`` -> (3, 224, 224); ``"160"`` -> (in_chans, 160, 160)."""
    if not _INPUT_RE.match(text.strip().lower()):
        raise ValueError(f"--input {text!r} is not CxHxW (e.g. 3x224x224) or one size (e.g. 224)")
    dims = tuple(int(d) for d in text.strip().lower().split("x"))
    if min(dims) < 1:
        raise ValueError(f"--input {text!r} has a zero size")
    if len(dims) == 3:
        MAX_CHANNELS.check(dims[0], f"--input {text!r}")
    MAX_INPUT.check(max(dims[-2:]), f"--input {text!r}")
    if len(dims) == 1:
        return (in_chans, dims[0], dims[0])
    return dims


def _read_checkpoint(path: Path) -> tuple[str, int, int, int]:
    """Arch string, classes, input channels and training input size (224 if unknown) of an edgecnn checkpoint."""
    ckpt = load_checkpoint(path)  # weights_only=True: nothing in the file runs
    arch, classes, in_chans = ckpt.arch, ckpt.num_classes, ckpt.in_chans
    if not isinstance(arch, str):
        raise ValueError(f"{path} holds a model that is no EdgeNet (no arch string); analyse it from Python")
    return arch, classes, in_chans, int(ckpt.data.get("image_size") or 224)


def load_model_arg(model: str, *, num_classes: int | None, width: float) -> tuple[torch.nn.Module, int]:
    """The network named by a CLI MODEL argument, built on the meta device, and its default input size."""
    path = Path(model)
    if model.endswith((".pt", ".pth")) or (path.suffix and path.is_file()):
        if width != 1.0:
            raise ValueError("--width applies to zoo models only; a checkpoint's network is fixed")
        arch, classes, in_chans, size = _read_checkpoint(path)
        with torch.device("meta"):
            net = build(arch, num_classes=num_classes or classes, in_chans=in_chans)
        return net, size
    m = zoo.model_arg(model, width=width)  # refuses --width for an arch string, never ignores it
    with torch.device("meta"):
        net = build(m.arch, num_classes=num_classes or m.num_classes)
    return net, m.input_size


def real_model(model: str, *, num_classes: int | None, width: float, seed: int) -> tuple[torch.nn.Module, str]:
    """The network of a MODEL argument with real weights, and which: a checkpoint's, else initialised from ``seed``.

    A checkpoint analysed with another ``--num-classes`` has no weights for that classifier: it is initialised.
    """
    path = Path(model)
    if model.endswith((".pt", ".pth")) or (path.suffix and path.is_file()):
        ckpt = load_checkpoint(path)  # weights_only=True: nothing in the file runs
        classes = num_classes or ckpt.num_classes
        torch.manual_seed(seed)
        net = build(str(ckpt.arch), num_classes=classes, in_chans=ckpt.in_chans)
        if classes != ckpt.num_classes:
            return net, f"freshly initialised weights (seed {seed}; --num-classes differs from the checkpoint's)"
        net.load_state_dict(ckpt.state_dict)
        return net, f"the checkpoint's trained weights ({path.name})"
    m = zoo.model_arg(model, width=width)
    torch.manual_seed(seed)
    return build(m.arch, num_classes=num_classes or m.num_classes), f"freshly initialised weights (seed {seed})"


@dataclass(frozen=True)
class OwnNetwork:
    """A network of the user's code to analyse: the module, its default input and which weights it holds."""

    model: torch.nn.Module
    in_chans: int
    size: int  # default input side
    weights: str  # for the --out document: the checkpoint's, or freshly initialised


def own_network(args: argparse.Namespace, log: Callable[[str], None]) -> OwnNetwork | None:
    """The network of ``--model`` / a ``MODULE:FN`` MODEL / a checkpoint that is no EdgeNet; None otherwise."""
    spec = model_spec(args.model, args.model_ref)
    path = Path(args.model) if is_checkpoint_arg(args.model) else None  # type: ignore[arg-type]
    if spec is None and (path is None or load_checkpoint(path).arch is not None):
        return None
    if args.num_classes is not None or args.width != 1.0:
        raise ValueError("--num-classes and --width apply to zoo models and arch strings; give your network's "
                         "in the reference, e.g. my_net.py:build:num_classes=10")  # fmt: skip
    torch.manual_seed(args.seed)
    if path is not None:
        got = load_any(path, spec, log=log, command="analyze")
        ck = got.checkpoint
        size = int(ck.data.get("image_size") or 224)
        return OwnNetwork(got.model.eval(), ck.in_chans, size, f"the checkpoint's trained weights ({path.name})")
    model = build_ref(spec, command="analyze")  # type: ignore[arg-type]
    return OwnNetwork(model.eval(), infer_in_chans(model), 224, f"freshly initialised weights (seed {args.seed})")


def dynamics(model: torch.nn.Module, size: tuple[int, ...], weights: str, *, seed: int) -> dict[str, object]:
    """The ``erf`` and ``gradflow`` sections of ``model`` on random inputs (random labels for the loss)."""
    arch = getattr(model, "arch", None)
    if isinstance(arch, str):
        check_memory(arch, input_size=tuple(size[1:]), num_classes=getattr(model, "num_classes", 1000),
                     in_chans=size[0], batch=DYNAMICS_BATCH, training=True,
                     what="the ERF / gradient-flow pass (--no-dynamics skips it)")  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((DYNAMICS_BATCH, *size), generator=gen)
    y = torch.randint(0, getattr(model, "num_classes", 2), (DYNAMICS_BATCH,), generator=gen)
    out: dict[str, object] = {}
    try:
        out["erf"] = {**erf_section(model, size, samples=ERF_SAMPLES, batch=DYNAMICS_BATCH, seed=seed),
                      "weights": weights, "inputs": "standard normal"}  # fmt: skip
    except ValueError as exc:  # no spatial trunk: the report shows what it has
        out["erf_note"] = str(exc)
    out["gradflow"] = {**gradflow_section(model, x, y, seed=seed), "weights": weights,
                       "inputs": "standard normal, random labels"}  # fmt: skip
    return out


def rich_table(analysis: Analysis, depth: int | None = None, model: torch.nn.Module | None = None) -> Table:
    """The analysis as a rich table: one row per op (or per module at ``depth``), then the totals."""
    t = analysis.total()
    table = Table(title=analysis.model if len(analysis.model) < 120 else analysis.model[:117] + "...",
                  caption=analysis.conventions, caption_justify="left")  # fmt: skip
    if depth is None:
        for col, right in [("layer", False), ("op", False), ("output", False), ("params", True), ("MACs", True),
                           ("other ops", True), ("act. mem", True), ("receptive field", False)]:  # fmt: skip
            table.add_column(col, justify="right" if right else "left")
        for r in analysis.layers:
            shape = "×".join(map(str, r.out_shape)) if r.out_shape else ""
            table.add_row(r.name, r.op, shape, f"{r.params:,}", f"{r.macs:,}", f"{r.other_ops:,}",
                          human(r.activation_bytes, "B"), r.rf_label())  # fmt: skip
        out = analysis.output_rf()
        table.add_section()
        table.add_row("total", "", "", f"{t.params:,}", f"{t.macs:,}", f"{t.other_ops:,}",
                      human(t.activation_bytes, "B"), out.rf_label() if out else "", style="bold")  # fmt: skip
    else:
        for col in ("module", "block", "output", "params", "MACs", "other ops", "act. mem", "receptive field"):
            table.add_column(col, justify="left" if col in ("module", "block", "output", "receptive field") else "right")
        last = analysis.last_by_module(depth)
        names = _block_names(model, depth)
        for name, v in analysis.by_module(depth).items():
            end = last[name]
            shape = "×".join(map(str, end.out_shape)) if end.out_shape else ""
            table.add_row(name, names.get(name, ""), shape, f"{v.params:,}", f"{v.macs:,}", f"{v.other_ops:,}",
                          human(v.activation_bytes, "B"), end.rf_label())  # fmt: skip
        out = analysis.output_rf()
        table.add_section()
        table.add_row("total", "", "", f"{t.params:,}", f"{t.macs:,}", f"{t.other_ops:,}",
                      human(t.activation_bytes, "B"), out.rf_label() if out else "", style="bold")  # fmt: skip
    return table


def _block_names(model: torch.nn.Module | None, depth: int) -> dict[str, str]:
    """``blocks.<i>`` -> the block's arch string, for an EdgeNet grouped per block."""
    arch = getattr(model, "arch", None)
    if depth != 2 or not isinstance(arch, str):
        return {}
    plans = resolve(arch, num_classes=getattr(model, "num_classes", 1000), in_chans=getattr(model, "in_chans", 3))
    return {p.name: p.spec.format() for p in plans}


def cmd_analyze(args: argparse.Namespace) -> int:
    if args.model is None and args.model_ref is None:
        raise ValueError("give MODEL (a zoo name, an arch string or a checkpoint) or --model MODULE:FN[:key=value,...]")
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path:
            check_writable(path, what=flag)
    out = claim_run_dir(args.out, overwrite=args.overwrite, resumable=False) if args.out else None
    own = own_network(args, notice)
    if own is not None:
        model, default_size, in_chans = own.model, own.size, own.in_chans
    else:
        model, default_size = load_model_arg(args.model, num_classes=args.num_classes, width=args.width)
        in_chans = getattr(model, "in_chans", 3)
    size = parse_input(args.input, in_chans) if args.input else (in_chans, default_size, default_size)
    if size[0] != in_chans:
        raise ValueError(f"--input has {size[0]} channels but the model takes {in_chans}; use {in_chans}x{size[1]}x...")
    analysis = analyze(model, size, mode=args.mode)
    # one row per block for an EdgeNet unless --ops; a pipe gets a wide table instead of truncated cells
    depth = args.depth if args.depth is not None or args.ops or not hasattr(model, "arch") else 2
    console = Console(width=None if sys.stdout.isatty() else 200)
    if not args.quiet:
        console.print(rich_table(analysis, depth, model))
    t = analysis.total()
    console.print(f"MACs {t.macs:,} ({human(t.macs)}), FLOPs {t.flops:,} (= 2·MACs), params {t.params:,}, "
                  f"other ops {t.other_ops:,}, activations {human(t.activation_bytes, 'B')}")  # fmt: skip
    if analysis.mode != "fx":
        console.print(f"[yellow]{analysis.fallback_line()}", highlight=False)
    for note in analysis.notes:
        console.print(f"note: {note}")
    if args.json:
        atomic_write_text(args.json, analysis.to_json() + "\n")
        console.print(f"wrote {args.json}")
    if args.markdown:
        atomic_write_text(args.markdown, analysis.to_markdown(depth=depth))
        console.print(f"wrote {args.markdown}")
    if out is not None:
        doc = analysis.to_dict()
        if not args.no_dynamics:
            if own is not None:
                net, weights = own.model, own.weights
            else:
                net, weights = real_model(args.model, num_classes=args.num_classes, width=args.width, seed=args.seed)
            doc.update(dynamics(net, size, weights, seed=args.seed))
            if "erf" in doc:
                e = doc["erf"]
                console.print(f"effective receptive field of {e['layer']}: 50% of the mass within "
                              f"{e['radius50']:.1f} px, 95% within {e['radius95']:.1f} px ({weights})")  # fmt: skip
        write_results(out, str(doc.pop("kind")), doc)
        console.print(f"wrote {out / 'results.json'} and {write_report(out)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="per-layer params, MACs, activations and receptive fields",
                       description="Per-layer costs of a network. MACs exclude bias; FLOPs = 2·MACs.")  # fmt: skip
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="zoo name, arch string (quoted), edgecnn checkpoint (.pt) or MODULE:FN[:key=value,...]")
    add_model_option(p, dest="model_ref", also="; with MODEL a checkpoint, its weights load into it")
    p.add_argument("--input", metavar="CxHxW", help="input size without batch, e.g. 3x224x224 (default: the model's)")
    p.add_argument("--num-classes", type=num.classes, default=None, help="classifier width (default: the model's)")
    p.add_argument("--width", type=num.width, default=1.0, help="width multiplier for zoo models (default 1.0)")
    p.add_argument("--depth", type=num.positive_int, default=None,
                   help="group rows by module path at this depth (default: per block for edgecnn models)")
    p.add_argument("--ops", action="store_true", help="one row per op instead of per block")
    p.add_argument("--mode", choices=("auto", "fx", "hooks"), default="auto", help="tracing mode (default auto)")
    p.add_argument("--json", metavar="FILE", help="also write the analysis as JSON (schema in docs/analysis.md)")
    p.add_argument("--markdown", metavar="FILE", help="also write it as Markdown")
    p.add_argument("--out", metavar="DIR", help="run folder: results.json and report.html (with ERF and gradient "
                   "flow unless --no-dynamics)")  # fmt: skip
    p.add_argument("--no-dynamics", action="store_true",
                   help="--out without the effective receptive field and gradient flow (no weights, no forward pass)")
    p.add_argument("--seed", type=num.seed, default=0, help="initialisation and random inputs of --out's "
                   "ERF / gradient flow (default 0)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the totals")
    p.set_defaults(func=cmd_analyze)
