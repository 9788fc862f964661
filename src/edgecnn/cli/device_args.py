"""The options that say where latency is measured, shared by every command that measures it
(``latency``, ``compress``, ``search``, ``export``): ``--device`` (this machine, or an agent's
``HOST:PORT``, docs/agent.md) and ``--agent-token``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from edgecnn.cli import args as num
from edgecnn.latency.remote import AGENT_TOKEN_ENV


def add_device_args(parser: Any, *, default: str | None = "cpu", local: str = "cpu") -> None:
    """Add ``--device`` and ``--agent-token`` to ``parser`` (a parser or an argument group).

    ``local``: the local devices the command accepts, as its help names them (``latency`` also takes CUDA).
    """
    parser.add_argument("--device", type=num.measure_device, default=default,
                        help=f"where latency is measured: {local}, or HOST:PORT of an `edgecnn agent` on the device "
                             f"(default {default or 'cpu'}; docs/agent.md)")  # fmt: skip
    parser.add_argument("--agent-token", default=None, help=f"the agent's token (default: ${AGENT_TOKEN_ENV})")


def use_agent_token(args: argparse.Namespace) -> None:
    """Hand ``--agent-token`` to the agent client, which reads it where a measurement happens."""
    if getattr(args, "agent_token", None):
        os.environ[AGENT_TOKEN_ENV] = args.agent_token
