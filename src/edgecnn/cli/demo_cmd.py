"""``edgecnn demo``: the one-command tour on built-in data (see :mod:`edgecnn.demo`)."""

from __future__ import annotations

import argparse

from edgecnn.cli import args as num
from edgecnn.demo import DemoConfig, run_demo


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        model=args.model, width=args.width, data=args.data, image_size=args.image_size, epochs=args.epochs,
        threads=args.threads, onnx=not args.no_onnx, out_dir=args.out, seed=args.seed, overwrite=args.overwrite,
        cam_images=args.cam_images,
    )  # fmt: skip
    run_demo(cfg)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="train, analyse, time and explain a network on built-in data, and write a report",
        description="The one-command tour: train a MobileNetV3 on scikit-learn's digits (built in, no download), "
        "count its exact per-layer costs, measure its latency on this machine, and write a report.",
    )
    p.add_argument("--model", default=d.model, help=f"zoo name or arch string (default {d.model})")
    p.add_argument("--width", type=num.width, default=d.width, help=f"width multiplier (default {d.width})")
    p.add_argument("--data", default=d.data, help="'digits' (built in) or a CIFAR-10 / ImageFolder folder or archive")
    p.add_argument("--image-size", type=num.pixels, default=d.image_size, help=f"input side (default {d.image_size})")
    p.add_argument("--epochs", type=num.positive_int, default=d.epochs, help=f"training epochs (default {d.epochs})")
    p.add_argument("--threads", type=num.threads, default=d.threads, help=f"threads for latency (default {d.threads})")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime measurement")
    p.add_argument("--out", default=d.out_dir, help=f"output folder (default {d.out_dir})")
    p.add_argument("--seed", type=num.nonneg_int, default=d.seed)
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo's results in --out")
    p.add_argument("--cam-images", type=num.nonneg_int, default=d.cam_images,
                   help=f"test images explained with Grad-CAM in the report (default {d.cam_images}; 0 = none)")
    p.set_defaults(func=cmd_demo)
