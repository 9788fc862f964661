"""``edgecnn demo``: the one-command tour on built-in data (see :mod:`edgecnn.demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from edgecnn.cli import args as num
from edgecnn.cli.device_args import add_device_args, use_agent_token
from edgecnn.cli.user_model import (
    RECORD_KEY,
    build_ref,
    check_importable,
    check_runs,
    is_model_ref,
    parse_model_ref,
)
from edgecnn.data import DataSet
from edgecnn.demo import CompressSettings, DemoConfig, Network, run_demo
from edgecnn.latency.targets import target_names


def cmd_demo(args: argparse.Namespace) -> int:
    use_agent_token(args)
    compress = None if args.no_compress else CompressSettings(
        budget=args.budget, initial_step=args.initial_step, short_steps=args.short_steps, top_k=args.top_k,
        long_epochs=args.long_epochs, int8=not args.no_int8, drop_blocks=not args.no_drop_blocks,
        measured_rounds=args.measured_rounds)  # fmt: skip
    cfg = DemoConfig(
        model=args.model, width=args.width, data=args.data, image_size=args.image_size, epochs=args.epochs,
        threads=args.threads, onnx=not args.no_onnx, target=args.target, device=args.device, out_dir=args.out, seed=args.seed, overwrite=args.overwrite,
        cam_images=args.cam_images, compress=compress, latency_table=args.latency_table,
    )  # fmt: skip
    run_demo(cfg, network=_network(args.model))
    return 0


def _network(spec: str) -> Network | None:
    """``--model MODULE:FN[:key=value,...]``: the demo's network from your code (imported and checked before any
    data is loaded), built for the data's classes; None for a zoo name or arch string."""
    if not is_model_ref(spec):
        return None
    ref = parse_model_ref(spec)
    check_importable(ref, "demo")  # a broken import fails now, not after the data is loaded

    def network(data: DataSet) -> tuple[nn.Module, dict[str, Any]]:
        model = build_ref(ref, command="demo")
        check_runs(model, ref.text, (data.in_chans, data.image_size, data.image_size), data.num_classes, "demo")
        return model, {RECORD_KEY: ref.record()}

    return network


def register(sub: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="train, analyse, time and explain a network on built-in data, and write a report",
        description="The one-command tour: train a MobileNetV3 on scikit-learn's digits (built in, no download), "
        "count its exact per-layer costs, measure its latency on every runtime installed here, shrink it with NetAdapt "
        "to half its latency on the fastest (the deployment target), fold BN, export ONNX and int8, explain it with "
        "Grad-CAM, and write a report.",
    )
    p.add_argument("--model", default=d.model, help=f"zoo name, arch string, or your own code as MODULE:FN[:key=value,"
                   f"...] (docs/own_network.md; default {d.model})")  # fmt: skip
    p.add_argument("--width", type=num.width, default=d.width, help=f"width multiplier (default {d.width})")
    p.add_argument("--data", default=d.data, help="'digits' (built in) or a CIFAR-10 / ImageFolder folder or archive")
    p.add_argument("--image-size", type=num.pixels, default=d.image_size, help=f"input side (default {d.image_size})")
    p.add_argument("--epochs", type=num.epochs, default=d.epochs, help=f"training epochs (default {d.epochs})")
    p.add_argument("--threads", type=num.threads, default=d.threads, help=f"threads for latency (default {d.threads})")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime measurement")
    p.add_argument("--target", choices=target_names(), default=None, help="the deployment runtime to measure and "
                   "optimise for (default: the fastest installed here, measured end to end on the baseline)")  # fmt: skip
    add_device_args(p)
    p.add_argument("--out", default=d.out_dir, help=f"output folder (default {d.out_dir})")
    p.add_argument("--seed", type=num.seed, default=d.seed)
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo's results in --out")
    p.add_argument("--cam-images", type=num.nonneg_int, default=d.cam_images,
                   help=f"test images explained with Grad-CAM in the report (default {d.cam_images}; 0 = none)")
    c = CompressSettings()
    g = p.add_argument_group("compression (NetAdapt → fold BN → ONNX / int8)")
    g.add_argument("--budget", type=num.float_in(0.0, 1.0, open_lo=True, open_hi=True), default=c.budget,
                   help=f"latency bound as a share of the baseline's (default {c.budget})")
    g.add_argument("--initial-step", type=num.float_in(0.0, 1.0, open_lo=True, open_hi=True), default=c.initial_step,
                   help=f"first NetAdapt step, share of the baseline's latency (default {c.initial_step})")
    g.add_argument("--short-steps", type=num.steps_or_0, default=c.short_steps,
                   help=f"short fine-tune steps per proposal (default {c.short_steps})")
    g.add_argument("--top-k", type=num.positive_int, default=c.top_k,
                   help=f"proposals fine-tuned per iteration (default {c.top_k})")
    g.add_argument("--long-epochs", type=num.epochs_float, default=c.long_epochs,
                   help=f"fine-tune epochs of the result (default {c.long_epochs})")
    g.add_argument("--latency-table", default=None, help="reuse this device's latency table (JSON; missing block "
                   "variants are measured and added; default: a new one in --out)")  # fmt: skip
    g.add_argument("--no-drop-blocks", action="store_true", help="NetAdapt narrows channels only (by default it may "
                   "also remove whole blocks with an identity skip)")  # fmt: skip
    g.add_argument("--measured-rounds", type=num.rounds, default=c.measured_rounds,
                   help="more NetAdapt rounds, each toward a table target refitted to the measured latency of the "
                   f"result so far, while the measured result misses the budget (default {c.measured_rounds}; "
                   "0 trusts the table)")  # fmt: skip
    g.add_argument("--no-int8", action="store_true", help="skip int8 quantisation")
    g.add_argument("--no-compress", action="store_true", help="baseline only: no NetAdapt, BN folding, ONNX, int8")
    p.set_defaults(func=cmd_demo)
