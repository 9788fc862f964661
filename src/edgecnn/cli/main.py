"""Entry point of the ``edgecnn`` command.

Each sub-command lives in its own module that exposes
``register(subparsers) -> None``; the parser it adds sets ``func`` to a
callable ``(args) -> int``. Errors a user can fix (``ValueError``,
``UsageError``, any ``OSError``: a missing file, a full disk, a read-only
folder) are printed as one line and exit with code 2, as are bad options
(:class:`edgecnn.cli.args.Parser`); ``--debug`` shows the traceback instead.
SIGTERM — what a job scheduler sends — is treated as Ctrl-C (training saves
its checkpoint first), with the same exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from edgecnn import __version__
from edgecnn.cli.args import Parser
from edgecnn.cli.errors import UsageError

__all__ = ["COMMAND_MODULES", "UsageError", "build_parser", "main"]

# Sub-command modules, in the order `edgecnn --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "edgecnn.cli.demo_cmd",     # demo
    "edgecnn.cli.zoo_cmd",      # list
    "edgecnn.cli.analyze_cmd",  # analyze
    "edgecnn.cli.rfplan_cmd",   # rf-plan
    "edgecnn.cli.latency_cmd",  # latency {measure,build-table,validate}
    "edgecnn.cli.train_cmd",    # train, eval
    "edgecnn.cli.compress_cmd",  # compress
    "edgecnn.cli.export_cmd",   # export
    "edgecnn.cli.explain_cmd",  # explain
    "edgecnn.cli.report_cmd",   # report
    "edgecnn.cli.search_cmd",   # search
    "edgecnn.cli.agent_cmd",    # agent (serve timings on this device, docs/agent.md)
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgecnn",
        description="Make convolutional networks small and fast for the device they run on.",
    )
    parser.add_argument("--version", action="version", version=f"edgecnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (already reported in one line)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    old = _sigterm_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("edgecnn: interrupted", file=sys.stderr)
        return 130
    except (ValueError, UsageError, OSError) as exc:
        if args.debug:
            raise
        print(f"edgecnn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"  # "[Errno 13] ..." reads worse
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sigterm_as_interrupt() -> object:
    """Make SIGTERM raise KeyboardInterrupt (as Ctrl-C does) in the main thread; returns the old handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, signal.default_int_handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
