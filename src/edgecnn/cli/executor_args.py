"""The executor options every command that evaluates many candidates shares (``edgecnn compress``, ``edgecnn search``).

``--executor local|ray``, ``--workers N``, ``--address HOST:PORT`` and the Ray
per-task resources; :func:`executor_from_args` turns them into an
:class:`edgecnn.executor.Executor`, with a ``ValueError`` (one line, exit code
2 in the CLI) for combinations that make no sense.
"""

from __future__ import annotations

import argparse
import re

from edgecnn.cli import args as num
from edgecnn.executor import Executor

_ADDRESS = re.compile(r"(ray://)?[\w.\-\[\]:]+:\d{1,5}\Z")


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """Add the executor options to a sub-command's parser."""
    g = parser.add_argument_group("parallel evaluation")
    g.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="where candidates are fine-tuned: local worker processes (default) or a Ray cluster",
    )  # fmt: skip
    g.add_argument(
        "--workers", type=num.int_in(0, 4096, "a worker count"), default=None, metavar="N",
        help="tasks at once (default: local = this machine's cores, ray = what the cluster fits); 0 = in this process",
    )  # fmt: skip
    g.add_argument(
        "--address", default=None, metavar="HOST:PORT",
        help="Ray cluster to join (HOST:PORT, ray://HOST:PORT or 'auto'); default: start a local Ray",
    )  # fmt: skip
    g.add_argument("--cpus-per-task", type=num.float_in(0.0, 4096.0, open_lo=True), default=1.0, metavar="N",
                   help="Ray: CPUs each task reserves")  # fmt: skip
    g.add_argument("--gpus-per-task", type=num.float_in(0.0, 64.0), default=0.0, metavar="N",
                   help="Ray: GPUs each task reserves")  # fmt: skip


def check_address(address: str) -> str:
    """``address`` if it is ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; else a ValueError saying so."""
    if address == "auto" or _ADDRESS.match(address):
        return address
    raise ValueError(f"--address {address!r} is not a Ray address; give HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")


def executor_from_args(args: argparse.Namespace, *, progress: bool = True) -> Executor:
    """The executor the options ask for (nothing is started until its first map)."""
    address = getattr(args, "address", None)
    if address is not None:
        if args.executor != "ray":
            raise ValueError(f"--address is a Ray cluster address; it needs --executor ray (got {args.executor!r})")
        address = check_address(address)
    return Executor(
        args.executor, workers=args.workers, address=address, cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task, progress=progress,
    )  # fmt: skip
