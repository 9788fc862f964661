"""``edgecnn list``: the zoo at a glance."""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from edgecnn import zoo
from edgecnn.build import count_params
from edgecnn.cli import args as num


def _zoo_table(width: float, divisor: int) -> Table:
    rounding = f", channels to multiples of {divisor}" if divisor != 8 else ""
    table = Table(title=f"edgecnn zoo (width {width:g}{rounding})")
    table.add_column("model")
    table.add_column("input", justify="right")
    table.add_column("classes", justify="right")
    table.add_column("params", justify="right")
    table.add_column("paper")
    for name in zoo.names():
        entry = zoo.get(name)
        with torch.device("meta"):  # parameter counts need shapes only, not weights
            model = zoo.create(name, width=width, divisor=divisor)
        table.add_row(name, f"{entry.input_size}²", str(model.num_classes), f"{count_params(model):,}", entry.paper)
    return table


def cmd_list(args: argparse.Namespace) -> int:
    console = Console()
    console.print(_zoo_table(args.width, args.divisor))
    if args.arch:  # whole strings, one per line: a table cell would cut them with "…"
        for name in zoo.names():
            arch = zoo.arch_of(name, width=args.width, divisor=args.divisor)
            console.print(f"{name}: {arch}", soft_wrap=True, highlight=False, markup=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the model zoo with parameter counts")
    p.add_argument("--width", type=num.width, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--divisor", type=num.int_in(1, 1024, "a channel divisor"), default=8,
                   help="round scaled channels to multiples of this (default 8, the MobileNet rule; 1: exact)")
    p.add_argument("--arch", action="store_true", help="also print each model's whole arch string (one line each)")
    p.set_defaults(func=cmd_list)
