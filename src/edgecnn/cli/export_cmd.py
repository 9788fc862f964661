"""``edgecnn export CKPT --target onnxruntime|executorch``: the deployable artifact and its manifest.

The network is exported for the target, evaluated on the test images and
timed there (fp32, and int8 where the target quantises: ``--int8 auto`` keeps
it only where it is measured faster within ``--max-drop``; see
:mod:`edgecnn.deploy`). Writes into ``--out``: ``model.<suffix>`` (``.onnx``,
``.pte``), ``manifest.json`` (runtime and version, input shape and
normalisation, class names, measured latency and top-1, int8 settings and
the decision) and ``results.json`` (kind ``export``, the same manifest) — what a
mobile engineer takes into an app.

A network of your own code is built by the constructor its checkpoint
records, or by ``--model MODULE:FN[:key=value,...]`` (which wins;
:func:`edgecnn.cli.user_model.load_any`); the manifest names it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgecnn.atomic import atomic_write, atomic_write_text
from edgecnn.cli.user_model import add_model_option, load_any, notice
from edgecnn.cli import args as num
from edgecnn.cli.device_args import add_device_args, use_agent_token
from edgecnn.data import load_data
from edgecnn.deploy import INT8_CHOICES, deploy
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.targets import target_names
from edgecnn.run_folder import claim_run_dir
from edgecnn.run_document import write_results


def cmd_export(args: argparse.Namespace) -> int:
    use_agent_token(args)
    out = claim_run_dir(args.out, overwrite=args.overwrite, resumable=False)  # before any work: writable, no previous run replaced
    got = load_any(args.checkpoint, args.model, log=notice, command="export")
    model, ckpt = got.model, got.checkpoint
    meta = ckpt.data
    source = args.data or meta.get("name")
    if not source:
        raise ValueError("the checkpoint does not say which data it was trained on; pass --data digits|PATH")
    size = meta.get("image_size")
    data = load_data(source, image_size=size if source == "digits" else args.image_size, limit=args.limit)
    if meta.get("classes") and list(data.classes) != list(meta["classes"]):
        raise ValueError(f"{source} has classes {list(data.classes)[:5]}..., the checkpoint {meta['classes'][:5]}...; "
                         "export with data of the same classes")  # fmt: skip
    if "mean" in meta and "std" in meta:  # the normalisation the network was trained with
        data = replace(data, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    console = Console(stderr=True)
    timing = TimingConfig(max_seconds=args.max_seconds)
    with console.status("exporting") as status:
        dep = deploy(model, data, target=args.target, int8=args.int8, max_drop=args.max_drop / 100,
                     threads=args.threads, calibration_images=args.calibration_images, images=args.images,
                     rounds=args.rounds, timing=timing, device=args.device,
                     progress=lambda m: status.update(m))  # fmt: skip
    artifact = out / f"model{dep.manifest['artifact_suffix']}"
    manifest = {**dep.manifest, "file": artifact.name, "checkpoint": str(args.checkpoint), "data": str(source)}
    if got.ref is not None:
        manifest["model"] = got.ref.text
    atomic_write(artifact, lambda f: f.write(dep.artifact))
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    write_results(out, "export", {"export": manifest})
    table = Table(title=f"{args.checkpoint} → {args.target} ({dep.form} kept)")
    for col in ("form", "top-1", "latency ms (median)", "fastest ms", "size KiB"):
        table.add_column(col, justify="left" if col == "form" else "right")
    for form, r in dep.forms.items():
        table.add_row(form + (" ✓" if form == dep.form else ""), f"{r.top1:.2%}", f"{r.latency_ms:.3f}",
                      f"{r.fastest_ms:.3f}", f"{r.size_bytes / 1024:.1f}")  # fmt: skip
    Console().print(table)
    print(f"{dep.reason}\nartifact {artifact}, manifest {out / 'manifest.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the deployable artifact (ONNX, ExecuTorch .pte) with a measured manifest")
    p.add_argument("checkpoint", help="an edgecnn checkpoint (model.pt / last.pt)")
    p.add_argument("--target", choices=[t for t in target_names() if t != "eager"], default="onnxruntime",
                   help="the runtime to deploy to (default onnxruntime)")  # fmt: skip
    p.add_argument("--int8", choices=INT8_CHOICES, default="auto",
                   help="auto (default): keep int8 only where it is measured faster and within --max-drop; "
                        "on: always; off: fp32 only")  # fmt: skip
    p.add_argument("--max-drop", type=num.float_in(0.0, 100.0), default=1.0,
                   help="top-1 points int8 may lose under --int8 auto (default 1)")  # fmt: skip
    p.add_argument("--data", default=None, help="test and calibration data (default: the checkpoint's)")
    p.add_argument("--image-size", type=num.pixels, default=None, help="input side for folder data")
    p.add_argument("--limit", type=num.positive_int, default=None, help="at most this many images per class")
    p.add_argument("--images", type=num.positive_int, default=None, help="test images evaluated (default: all)")
    p.add_argument("--calibration-images", type=num.int_in(1, 100_000, "images"), default=300,
                   help="training images that calibrate int8 (default 300)")  # fmt: skip
    p.add_argument("--threads", type=num.threads, default=1, help="intra-op threads on the target (default 1)")
    add_device_args(p)  # on an agent, top-1 is computed there too and int8 quantised for the device's CPU
    p.add_argument("--rounds", type=num.int_in(1, 100, "rounds"), default=3,
                   help="interleaved timing rounds of fp32 and int8 (default 3)")  # fmt: skip
    p.add_argument("--max-seconds", type=num.float_in(0.05, 600.0), default=2.0,
                   help="timing budget per form and round (default 2 s)")  # fmt: skip
    add_model_option(p, also="; default: the constructor CKPT records, if any (its weights load into the network)")
    p.add_argument("--out", type=Path, default=Path("runs/export"), help="output folder (default runs/export)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")
    p.set_defaults(func=cmd_export)
