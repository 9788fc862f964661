"""``edgecnn rf-plan``: the cheapest conv stack whose receptive field reaches a target (docs/design.md §4)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from edgecnn.analysis.rfplan import RFPlan, plan_receptive_field
from edgecnn.cli import args as num


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _best_table(plan: RFPlan, input_size: int) -> Table:
    table = Table(title=f"cheapest stack: {plan.describe()}  (C = {plan.channels}, input {input_size}²)")
    for col in ("layer", "k", "s", "d", "RF", "output stride", "output", "MACs"):
        table.add_column(col, justify="right" if col != "layer" else "left")
    for i, l in enumerate(plan.layers):
        table.add_row(str(i + 1), str(l.kernel), str(l.stride), str(l.dilation), str(l.rf), str(l.jump),
                      f"{l.out_size}²", f"{l.macs:,}")  # fmt: skip
    table.add_row("total", "", "", "", str(plan.rf), str(plan.stride), "", f"{plan.macs:,}", style="bold")
    return table


def _runners_up(plans: list[RFPlan]) -> Table:
    table = Table(title="runners-up")
    for col in ("rank", "stack", "RF", "output stride", "MACs", "vs best"):
        table.add_column(col, justify="left" if col == "stack" else "right")
    best = plans[0].macs
    for rank, p in enumerate(plans[1:], start=2):
        table.add_row(str(rank), p.describe(), str(p.rf), str(p.stride), f"{p.macs:,}", f"+{(p.macs - best) / best:.2%}")
    return table


def cmd_rf_plan(args: argparse.Namespace) -> int:
    plans = plan_receptive_field(
        args.target, depth=args.depth, stride=args.stride, channels=args.channels, input_size=args.input,
        kernels=args.kernels, strides=args.strides, dilations=args.dilations, top=args.top,
        exact_depth=args.exact_depth, allow_skips=args.allow_skips,
    )  # fmt: skip
    console = Console()
    console.print(_best_table(plans[0], args.input))
    if len(plans) > 1:
        console.print(_runners_up(plans))
    console.print(f"arch: {plans[0].arch()}")
    console.print("MACs = H_out²·C²·k² per layer (C → C convs, 'same' padding); FLOPs = 2·MACs.")
    if args.stride is None:
        console.print("No --stride given: the plan may shrink the map as far as it likes; set --stride to keep resolution.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rf-plan",
        help="fewest-MACs kernel/stride/dilation stack whose receptive field reaches a target",
        description="Exact search (dynamic programming) for the conv stacks with the fewest MACs whose "
        "receptive field R = 1 + Σ (k−1)·d·Π s is at least --target; see docs/receptive_field.md.",
    )
    p.add_argument("--target", type=num.positive_int, required=True, help="receptive field to reach, in input pixels")
    p.add_argument("--depth", type=num.int_in(1, 256, "a layer count"), default=8, help="at most this many layers (default 8)")
    p.add_argument("--exact-depth", action="store_true", help="exactly --depth layers")
    p.add_argument("--stride", type=num.positive_int, default=None, help="required total output stride (default: any)")
    p.add_argument("--channels", type=num.classes, default=64, help="channels of every layer (default 64)")
    p.add_argument("--input", type=num.pixels, default=224, help="input height = width (default 224)")
    p.add_argument("--kernels", type=_int_list, default=(1, 3, 5, 7), help="kernel sizes (default 1,3,5,7)")
    p.add_argument("--strides", type=_int_list, default=(1, 2), help="per-layer strides (default 1,2)")
    p.add_argument("--dilations", type=_int_list, default=(1, 2, 4), help="dilations (default 1,2,4)")
    p.add_argument("--top", type=num.int_in(1, 1000, "a plan count"), default=5, help="plans to show, best first (default 5)")
    p.add_argument("--allow-skips", action="store_true",
                   help="allow strided layers that never read some pixels (1×1 stride 2, even dilation with stride 2)")  # fmt: skip
    p.set_defaults(func=cmd_rf_plan)
