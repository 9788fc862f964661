"""``edgecnn latency``: measure a network, build the lookup table, validate the predictor.

Usage::

    edgecnn latency MODEL [--backend eager|onnxruntime] [--threads N] [--per-layer]   (= latency measure MODEL)
    edgecnn latency --model MODULE:FN[:key=value,...] [...]                          (your own network)
    edgecnn latency build-table --table T.json [--models M ...] [--sample N] [--input-size S] [--sweeps N]
    edgecnn latency calibrate --table T.json [-n N] [--seed S] [--input-size S] [--sweeps N] [--passes N]
                              [--by table|fastest]
    edgecnn latency validate --table T.json [-n N] [--seed S] [--input-size S] [--time-cap SEC] [--no-retest]
                             [--sweeps N] [--passes N]

``MODEL`` and the action share the first position, so the parser takes one
positional ``TARGET`` (an action name, or a model for the default ``measure``)
and the union of the options; options that do not belong to the action are
rejected with a one-line error.

``measure`` takes a zoo name, an arch string, an edgecnn checkpoint, or a
network of your own code: ``--model MODULE:FN[:key=value,...]`` (or that
reference as MODEL), or the checkpoint of one that records its constructor
(:func:`edgecnn.cli.user_model.load_any`). Such a network has no arch string,
so ``--table`` cannot predict it: it is measured end to end only.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from edgecnn.progress import progress_bar
from edgecnn import zoo
from edgecnn.atomic import atomic_write_text
from edgecnn.build import build
from edgecnn.cli import args as num
from edgecnn.cli.device_args import add_device_args, use_agent_token
from edgecnn.cli.errors import UsageError
from edgecnn.cli.user_model import (add_model_option, build_ref, infer_in_chans, is_checkpoint_arg, load_any, model_spec,
                                    notice)
from edgecnn.latency.fingerprint import BACKENDS, is_agent_address
from edgecnn.latency.measure import CLOCKS, TimingConfig, default_threads, device_fingerprint, measure
from edgecnn.latency.per_layer import per_layer
from edgecnn.latency.predict import predict
from edgecnn.latency.table import LatencyTable
from edgecnn.latency.validate import CALIBRATE_BY, calibrate, sample_archs, validate
from edgecnn.latency.targets import default_target
from edgecnn.analysis.memory import check_memory
from edgecnn.run_folder import check_writable
from edgecnn.search.space import MOBILENET_V3_SPACE

ACTIONS = ("measure", "build-table", "calibrate", "validate")
_USAGE = """actions:
  edgecnn latency MODEL [--backend eager|onnxruntime] [--threads N] [--per-layer]   (= latency measure MODEL)
  edgecnn latency --model MODULE:FN[:key=value,...] [--input-size S] [...]         (your own network; or its CKPT)
  edgecnn latency build-table --table T.json [--models M ...] [--sample N] [--input-size S] [--sweeps N]
  edgecnn latency calibrate --table T.json [-n N] [--seed S] [--input-size S] [--sweeps N] [--passes N]
                            [--by table|fastest] (default seed 1000)
  edgecnn latency validate --table T.json [-n N] [--seed S] [--input-size S] [--time-cap SEC] [--no-retest]
                           [--sweeps N] [--passes N]"""
# which options each action accepts (dest names); the rest must stay unset
_COMMON = {"backend", "threads", "input_size", "batch", "device", "table", "force", "json", "num_classes", "max_seconds", "retries",
           "clock", "max_drift"}  # fmt: skip
_ALLOWED = {
    "measure": _COMMON | {"per_layer", "channels_last", "width", "model_ref"},
    "build-table": _COMMON | {"models", "sample", "seed", "sweeps"},
    "calibrate": _COMMON | {"num", "seed", "sweeps", "passes", "by"},
    "validate": _COMMON | {"num", "seed", "time_cap", "no_retest", "sweeps", "passes"},
}
CALIBRATION_SEED = 1000  # calibration networks are drawn apart from the validation ones (default seed 0)
_DEFAULTS: dict[str, Any] = {
    "batch": 1, "device": "cpu", "force": False, "per_layer": False, "channels_last": False,
    "width": 1.0, "models": [], "sample": 0, "num": 20, "no_retest": False, "max_seconds": 10.0, "retries": 3,
    "sweeps": 1, "passes": 1, "by": "table",
}  # fmt: skip


def _fill_defaults(args: argparse.Namespace, action: str) -> None:
    given = [k for k in vars(args) if k not in _ALLOWED[action] and k in _ALL_OPTS and getattr(args, k) is not None]
    if given:
        flags = ", ".join("--" + {"model_ref": "model"}.get(k, k).replace("_", "-") for k in given)
        raise UsageError(f"{flags} does not apply to `latency {action}`; see `edgecnn latency --help`")
    for k, v in _DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.seed is None:
        args.seed = CALIBRATION_SEED if action == "calibrate" else 0
    if args.backend is None:  # a deployment runtime; eager where the device is a GPU (only eager runs there)
        args.backend = "eager" if str(args.device).startswith("cuda") else default_target()
    if args.threads is None:  # one thread: what a phone app's inference thread gets, and comparable across machines
        args.threads = 1 if args.device == "cpu" or is_agent_address(args.device) else default_threads()
    if args.json:
        check_writable(args.json, what="--json")
    if action in ("measure", "validate") and args.table and not Path(args.table).is_file():  # they only read it
        raise FileNotFoundError(f"latency table {args.table} does not exist; create it with "
                                f"`edgecnn latency build-table --table {args.table} ...`")  # fmt: skip
    if args.table:
        check_writable(args.table, what="--table")


def _model_and_size(args: argparse.Namespace) -> tuple[str, str, int, int]:
    """(label, arch, input size, classes) for a zoo name or arch string."""
    m = zoo.model_arg(args.model, width=args.width)
    return args.model, m.arch, args.input_size or m.input_size, args.num_classes or m.num_classes


@dataclass(frozen=True)
class _Net:
    """The network to time: the module, its arch string (None: your own code), label, input channels and side."""

    model: nn.Module
    arch: str | None
    label: str
    in_chans: int
    size: int


def _network(args: argparse.Namespace) -> _Net:
    """The network of MODEL / --model: a zoo name or arch string, a checkpoint, or your own code."""
    spec = model_spec(args.model, args.model_ref)
    if is_checkpoint_arg(args.model):
        path = Path(args.model)
        got = load_any(path, spec, log=notice, command="latency")
        ck = got.checkpoint
        size = args.input_size or int(ck.data.get("image_size") or 224)
        if got.ref is None and args.num_classes is None and args.width == 1.0:
            return _Net(got.model, ck.arch, str(path), ck.in_chans, size)
        if got.ref is None:
            raise UsageError("--num-classes and --width do not apply to a checkpoint: its network is fixed")
        _no_zoo_options(args)
        return _Net(got.model, None, str(path), ck.in_chans, size)
    if spec is not None:
        _no_zoo_options(args)
        model = build_ref(spec, command="latency")
        return _Net(model, None, spec, infer_in_chans(model), args.input_size or 224)
    label, arch, size, ncls = _model_and_size(args)
    check_memory(arch, input_size=size, num_classes=ncls, batch=args.batch, what=label)
    return _Net(build(arch, num_classes=ncls), arch, label, 3, size)


def _no_zoo_options(args: argparse.Namespace) -> None:
    if args.num_classes is not None or args.width != 1.0:
        raise UsageError("--num-classes and --width apply to zoo models and arch strings; give your network's in "
                         "the reference, e.g. my_net.py:build:num_classes=10")  # fmt: skip


def cmd_measure(args: argparse.Namespace) -> int:
    if not args.model and not args.model_ref:
        raise UsageError("latency measure needs a MODEL (zoo name, arch string or checkpoint) or --model "
                         "MODULE:FN, e.g. `edgecnn latency mobilenet_v2`")  # fmt: skip
    n = _network(args)
    net, label, arch, size = n.model.eval(), n.label, n.arch, n.size
    ncls = args.num_classes or getattr(net, "num_classes", None) or 1000
    shape = (args.batch, n.in_chans, size, size)
    tab = None
    if args.table:  # measure as the table's entries were: normalised by its drift reference, with its clock
        fp_here = device_fingerprint(backend=args.backend, threads=args.threads, device=args.device)
        tab = LatencyTable.load(args.table, expect=fp_here, force=args.force)
    cfg = _config(args, tab)
    if tab is not None:
        tab.config = cfg
    kw = dict(backend=args.backend, threads=args.threads, device=args.device, config=cfg, label=label)
    console = Console()
    breakdown = per_layer(net, shape, channels_last=args.channels_last, **kw) if args.per_layer else None
    ref = None if tab is None else tab.drift()  # None on an agent: no reference workload runs there
    if breakdown is not None:
        result = breakdown.total
    else:
        result = measure(net, shape, channels_last=args.channels_last, reference=ref, **kw)
    s = result.stats
    fp = result.fingerprint
    console.print(
        f"[bold]{label}[/] {args.backend} · {fp.threads} thread(s) · batch {args.batch} · {size}² · {fp.device} "
        f"({fp.cpu})\nmedian [bold]{s.median_ms:.3f} ms[/]  IQR {s.iqr_ms:.3f}  min {s.min_ms:.3f}  "
        f"({s.repeats} runs{'' if s.stable else ', cap reached before the median settled'}"
        f"{'' if s.foreign_cpu is None else f', other processes used {s.foreign_cpu:.0%} of the CPUs'}"
        f"{'' if s.drift is None else f', machine at {1 / s.drift:.0%} of the reference speed; normalised'})"
    )
    out: dict[str, Any] = {"measurement": result.to_dict()}
    if breakdown is not None:
        table = Table(title=f"per-layer latency ({breakdown.method})")
        for col in ("layer", "block", "median ms", "IQR ms", "share"):
            table.add_column(col, justify="right" if "ms" in col or col == "share" else "left")
        denom = breakdown.layer_sum_ms or 1.0
        for layer in breakdown.layers:
            table.add_row(
                layer.name, layer.kind, f"{layer.median_ms:.3f}", f"{layer.iqr_ms:.3f}", f"{layer.median_ms / denom:.1%}"
            )
        if breakdown.unassigned_ms:
            table.add_row("(other)", "layout reorders", f"{breakdown.unassigned_ms:.3f}", "", "")
        table.add_row("sum", "", f"{breakdown.layer_sum_ms:.3f}", "", "")
        table.add_row("end to end", "", f"{s.median_ms:.3f}", f"{s.iqr_ms:.3f}", "")
        console.print(table)
        out["per_layer"] = breakdown.to_dict()
    if tab is not None and arch is None:
        console.print(f"no table prediction: {label} is no EdgeNet (no arch string); measured end to end only")
    elif tab is not None:
        pred = predict(tab, arch, input_size=size, batch=args.batch, num_classes=ncls)
        console.print(f"table prediction {pred.total_ms:.3f} ms ({pred.total_ms / s.median_ms - 1:+.1%} vs measured)")
        out["prediction"] = pred.to_dict()
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=1))
    return 0


def _config(args: argparse.Namespace, table: LatencyTable | None = None) -> TimingConfig:
    """Timing settings from the options; the clock is ``--clock``, else the table's, else wall."""
    if table is not None and args.clock and table.entries and args.clock != table.config.clock:
        raise UsageError(f"{args.table} was timed with the {table.config.clock!r} clock; measure against it with "
                         f"--clock {table.config.clock} (or build another table)")  # fmt: skip
    clock = args.clock or (table.config.clock if table is not None else "wall")
    return TimingConfig(max_seconds=args.max_seconds, retries=args.retries, clock=clock, max_drift=args.max_drift)


def _open_table(args: argparse.Namespace) -> LatencyTable:
    if not args.table:
        raise UsageError("--table PATH is required (the JSON lookup table to create, extend or read)")
    fp = device_fingerprint(backend=args.backend, threads=args.threads, device=args.device)
    table = LatencyTable.open_or_new(args.table, fp, force=args.force)
    if table.fingerprint.differences(fp):
        # build-table, calibrate and validate add this machine's measurements to the table; under the
        # other machine's fingerprint that would mix two devices in one table (`measure --force` only reads)
        raise UsageError(f"{args.table} was measured on another device/backend; --force reads it but does not "
                         "add this machine's measurements to it: build a table of your own (another --table)")
    table.config = _config(args, table)
    return table


def cmd_build_table(args: argparse.Namespace) -> int:
    archs = [zoo.model_arg(m).arch for m in args.models]
    if args.sample:
        archs += sample_archs(args.sample, MOBILENET_V3_SPACE.sample, seed=args.seed)
    if not archs:
        raise UsageError("nothing to measure: give --models NAME ... and/or --sample N")
    size = args.input_size or 224
    ncls = args.num_classes or 1000
    for arch in archs:
        check_memory(arch, input_size=size, num_classes=ncls, batch=args.batch, what=arch[:60])
    table = _open_table(args)
    with progress_bar() as bar:
        task = bar.add_task("measuring blocks", total=None)
        added = table.ensure(
            archs, input_size=size, batch=args.batch, num_classes=ncls, path=args.table,
            on_progress=lambda d, t: bar.update(task, completed=d, total=t), sweeps=args.sweeps,
        )  # fmt: skip
    Console().print(f"{args.table}: {len(table.entries)} entries ({added} measured now) for {len(archs)} network(s)")
    return 0


def _stage_progress(bar: Progress) -> Any:
    tasks: dict[str, Any] = {}
    names = {"table": "table entries", "measure": "networks", "retest": "networks again", "calibrate": "networks"}

    def on_stage(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(names[stage], total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return on_stage


def cmd_calibrate(args: argparse.Namespace) -> int:
    table = _open_table(args)
    size = args.input_size or 224
    archs = sample_archs(args.num, MOBILENET_V3_SPACE.sample, seed=args.seed)
    with progress_bar() as bar:
        cal = calibrate(
            table, archs, input_size=size, num_classes=args.num_classes or 1000, table_path=args.table,
            info={"seed": args.seed, "n": args.num}, on_stage=_stage_progress(bar), rounds=args.passes,
            sweeps=args.sweeps, by=args.by,
        )  # fmt: skip
    scales = ", ".join(f"{g} ×{v:.3f}" for g, v in cal.scales.items())
    Console().print(
        f"{args.table}: calibrated on {cal.networks} networks (seed {args.seed}, measured by {args.by}): {scales}; "
        f"MAPE on them {cal.raw_mape:.1%} → {cal.fit_mape:.1%}"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(cal.to_dict(), indent=1))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    table = _open_table(args)
    size = args.input_size or 224
    archs = sample_archs(args.num, MOBILENET_V3_SPACE.sample, seed=args.seed)
    with progress_bar() as bar:
        report = validate(
            table, archs, input_size=size, num_classes=args.num_classes or 1000, time_cap_s=args.time_cap,
            seed=args.seed, table_path=args.table, retest=not args.no_retest, on_stage=_stage_progress(bar),
            sampler=MOBILENET_V3_SPACE.sample, rounds=args.passes, sweeps=args.sweeps,
        )  # fmt: skip
    console = Console()
    t = Table(title=f"predictor vs measured ({table.backend}, {table.fingerprint.threads} threads, {size}²)")
    for col in ("#", "predicted ms", "measured ms", "IQR ms", "error", "retest"):
        t.add_column(col, justify="right")
    for i, r in enumerate(report.rows):
        again = "" if r.retest is None else f"{r.retest.median_ms / r.measured.median_ms - 1:+.1%}"
        t.add_row(
            str(i), f"{r.predicted_ms:.3f}", f"{r.measured.median_ms:.3f}", f"{r.measured.iqr_ms:.3f}",
            f"{r.error:+.1%}", again,
        )  # fmt: skip
    console.print(t)
    d = report.to_dict()

    def line(name: str, summary: dict[str, Any]) -> str:
        if not summary.get("n"):
            return f"{name}: -"
        w = summary["within"]
        return (
            f"{name}: MAPE [bold]{summary['mape']:.1%}[/], within ±5/10/20%: {w['0.05']:.0%} / "
            f"[bold]{w['0.10']:.0%}[/] / {w['0.20']:.0%}, bias {summary['mean_error']:+.1%}"
        )

    cal = "calibrated" if table.calibration is not None else "uncalibrated (run `latency calibrate`)"
    console.print(f"{len(report.rows)} networks, predictor {cal}")
    console.print(line("predictor", d["predictor"]))
    console.print(line("noise floor (same networks measured again)", d["noise_floor"]))
    load = d["load"]
    if load.get("foreign_cpu_median") is not None:
        console.print(
            f"other processes used {load['foreign_cpu_median']:.0%} of the CPUs (median); "
            f"loadavg {load['loadavg_start']}"
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(d, indent=1))
    return 0


_COMMANDS = {
    "measure": cmd_measure, "build-table": cmd_build_table, "calibrate": cmd_calibrate, "validate": cmd_validate,
}  # fmt: skip
_ALL_OPTS: set[str] = set().union(*_ALLOWED.values())


def cmd_latency(args: argparse.Namespace) -> int:
    if args.target is None:  # `edgecnn latency --model MODULE:FN`
        if args.model_ref is None:
            raise UsageError(f"give a MODEL, --model MODULE:FN or an action ({', '.join(ACTIONS)})")
        args.target = "measure"
    if args.target in ACTIONS:
        action = args.target
    else:  # `edgecnn latency MODEL` = `edgecnn latency measure MODEL`
        if args.model is not None:
            raise UsageError(f"unexpected argument {args.model!r}; actions: {', '.join(ACTIONS)}")
        action, args.model = "measure", args.target
    if action != "measure" and args.model is not None:
        raise UsageError(f"`latency {action}` takes no MODEL; use --models for build-table")
    _fill_defaults(args, action)
    use_agent_token(args)
    return _COMMANDS[action](args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="measure latency, build the lookup table, validate the predictor",
        description=_USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="MODEL|ACTION", nargs="?", default=None,
                   help=f"a zoo name, arch string, checkpoint or MODULE:FN[:kw], or one of: {', '.join(ACTIONS)}")
    p.add_argument("model", nargs="?", metavar="MODEL", help="the model, after `measure`")
    g = p.add_argument_group("all actions")
    g.add_argument("--backend", choices=BACKENDS, help="runtime to measure (default: onnxruntime where installed, "
                   "else eager; eager on a GPU)")  # fmt: skip
    g.add_argument("--threads", type=num.threads, help="intra-op threads (default 1 on a CPU)")
    g.add_argument("--input-size", type=num.pixels, help="input resolution (default: the model's, else 224)")
    g.add_argument("--batch", type=num.batch, help="batch size (default 1)")
    add_device_args(g, default=None, local="cpu, cuda[:i]")  # None: _fill_defaults sets cpu
    g.add_argument("--num-classes", type=num.classes, help="classifier width (default: the model's, else 1000)")
    g.add_argument("--table", help="lookup table JSON (measure: predict too; build-table: create/extend)")
    g.add_argument("--force", action="store_true", default=None, help="use a table from another device/backend")
    g.add_argument("--json", help="also write the result as JSON to this path")
    g.add_argument("--max-seconds", type=num.positive_float, help="time cap per timing loop (default 10)")
    g.add_argument("--retries", type=num.rounds, help="re-measure when other processes load the CPUs (default 3)")
    g.add_argument("--max-drift", type=num.float_in(1.0, 100.0), help="drop the runs around which the drift "
                   "reference ran more than this many times slower than its baseline, e.g. 1.3; re-measure (up to "
                   "--retries times, keeping the least drifted) when too few calm runs remain (default: off)")  # fmt: skip
    g.add_argument("--clock", choices=CLOCKS, help="time runs by the wall clock or, with --threads 1 on the CPU, by the "
                   "thread's CPU time (steady on a shared machine); default: the table's, else wall")  # fmt: skip
    m = p.add_argument_group("measure")
    m.add_argument("--per-layer", action="store_true", default=None, help="also time every block")
    m.add_argument("--channels-last", action="store_true", default=None, help="eager: NHWC memory format")
    m.add_argument("--width", type=num.width, help="width multiplier of a zoo model (default 1.0)")
    add_model_option(m, dest="model_ref", also="; with MODEL a checkpoint, its weights load into it")
    b = p.add_argument_group("build-table")
    b.add_argument("--models", nargs="+", help="zoo names or arch strings whose blocks to measure")
    b.add_argument("--sample", type=num.networks, help="also N random networks from the MobileNetV3-style space")
    b.add_argument("--seed", type=num.seed, help="sampling seed (default 0; calibrate: 1000)")
    v = p.add_argument_group("calibrate / validate")
    v.add_argument("-n", "--num", type=num.networks, help="number of random networks (default 20)")
    v.add_argument("--by", choices=CALIBRATE_BY, help="calibrate: measure the networks as the table's entries are "
                   "(table, the default) or as every latency verdict and a search's finalists are: back to back, "
                   "each pass's fastest run on the CPU clock, the median over --passes (fastest; use with --passes 3 "
                   "on a shared machine)")
    v.add_argument("--time-cap", type=num.positive_float, help="validate: stop measuring new networks after this many seconds")
    v.add_argument("--no-retest", action="store_true", default=None, help="validate: measure each network once")
    v.add_argument("--passes", type=num.timing_rounds, help="measure every network in N passes over all of them "
                   "(each exported once), the median pass kept (default 1; 3 on a shared machine)")
    b.add_argument("--sweeps", type=num.timing_rounds, help="build-table / calibrate / validate: time every new "
                   "entry N times, a sweep over all new entries apart (each block exported once), the median sweep "
                   "kept (default 1; 3 on a shared machine)")
    p.set_defaults(func=cmd_latency)
