"""``edgecnn analyze MODEL``: the per-layer cost and receptive-field table of a network.

MODEL is a zoo name, an arch string or an edgecnn checkpoint (``*.pt``).
Only shapes matter, so the model is built on the meta device: no weights are
allocated and a checkpoint's weights are not loaded into it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgecnn import zoo
from edgecnn.analysis import Analysis, analyze
from edgecnn.analysis.result import human
from edgecnn.atomic import atomic_write_text
from edgecnn.build import build
from edgecnn.checkpoint import load_checkpoint
from edgecnn.cli import args as num
from edgecnn.limits import MAX_CHANNELS, MAX_INPUT
from edgecnn.outputs import check_writable
from edgecnn.plan import resolve

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
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path:
            check_writable(path, what=flag)
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
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="per-layer params, MACs, activations and receptive fields",
                       description="Per-layer costs of a network. MACs exclude bias; FLOPs = 2·MACs.")  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="zoo name, arch string (quoted) or edgecnn checkpoint (.pt)")
    p.add_argument("--input", metavar="CxHxW", help="input size without batch, e.g. 3x224x224 (default: the model's)")
    p.add_argument("--num-classes", type=num.classes, default=None, help="classifier width (default: the model's)")
    p.add_argument("--width", type=num.width, default=1.0, help="width multiplier for zoo models (default 1.0)")
    p.add_argument("--depth", type=num.positive_int, default=None,
                   help="group rows by module path at this depth (default: per block for edgecnn models)")
    p.add_argument("--ops", action="store_true", help="one row per op instead of per block")
    p.add_argument("--mode", choices=("auto", "fx", "hooks"), default="auto", help="tracing mode (default auto)")
    p.add_argument("--json", metavar="FILE", help="also write the analysis as JSON (schema in docs/analysis.md)")
    p.add_argument("--markdown", metavar="FILE", help="also write it as Markdown")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the totals")
    p.set_defaults(func=cmd_analyze)
