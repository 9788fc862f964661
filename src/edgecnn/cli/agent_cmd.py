"""``edgecnn agent``: run the device agent here, so another machine can time networks on this one.

The same program as ``python3 server.py`` (:mod:`edgecnn.agent.server`, the
single file to copy to a device without edgecnn); see docs/agent.md.
"""

from __future__ import annotations

import argparse

from edgecnn.agent import server
from edgecnn.cli.errors import UsageError


def cmd_agent(args: argparse.Namespace) -> int:
    try:
        config, generated = server.config_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return server.serve(config, token_generated=generated)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="serve latency measurements on this device to a host running edgecnn",
        description="Listen for an edgecnn host that sends exported networks (ONNX, ExecuTorch .pte) and asks "
        "for timings on this device. Listens on 127.0.0.1 unless --host says otherwise: reach it through an SSH "
        "tunnel. Prints 'listening on HOST:PORT'. Without edgecnn on the device, copy "
        "src/edgecnn/agent/server.py there and run `python3 server.py` with the same options (docs/agent.md).",
    )
    server.add_arguments(p)
    p.set_defaults(func=cmd_agent)
