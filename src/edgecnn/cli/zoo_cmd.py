"""``edgecnn list``: the zoo at a glance."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from edgecnn import zoo
from edgecnn.build import count_params


def _zoo_table(width: float, show_arch: bool) -> Table:
    table = Table(title=f"edgecnn zoo (width {width:g})")
    table.add_column("model")
    table.add_column("input", justify="right")
    table.add_column("classes", justify="right")
    table.add_column("params", justify="right")
    table.add_column("paper")
    if show_arch:
        table.add_column("arch")
    for name in zoo.names():
        entry = zoo.get(name)
        model = zoo.create(name, width=width)
        row = [name, f"{entry.input_size}²", str(model.num_classes), f"{count_params(model):,}", entry.paper]
        if show_arch:
            row.append(model.arch)
        table.add_row(*row)
    return table


def cmd_list(args: argparse.Namespace) -> int:
    Console().print(_zoo_table(args.width, args.arch))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the model zoo with parameter counts")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--arch", action="store_true", help="also print each model's arch string")
    p.set_defaults(func=cmd_list)
