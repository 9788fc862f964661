"""Entry point of the ``edgecnn`` command.

Each sub-command lives in its own module that exposes
``register(subparsers) -> None``; the parser it adds sets ``func`` to a
callable ``(args) -> int``. Errors a user can fix (``ValueError``,
``FileNotFoundError``, ``UsageError``) are printed as one line and exit with
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edgecnn import __version__

# Sub-command modules, in the order `edgecnn --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "edgecnn.cli.demo_cmd",     # demo
    "edgecnn.cli.zoo_cmd",      # list
    "edgecnn.cli.analyze_cmd",  # analyze
    "edgecnn.cli.rfplan_cmd",   # rf-plan
    "edgecnn.cli.latency_cmd",  # latency {measure,build-table,validate}
    "edgecnn.cli.train_cmd",    # train, eval
    "edgecnn.cli.compress_cmd",  # compress
)


class UsageError(Exception):
    """A mistake in how the command was called; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecnn",
        description="Make convolutional networks small and fast for the device they run on.",
    )
    parser.add_argument("--version", action="version", version=f"edgecnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("edgecnn: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, UsageError, NotADirectoryError, PermissionError) as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"edgecnn {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
