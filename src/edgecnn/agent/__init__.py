"""Remote device agent: measure latency on the device the network will run on.

* :mod:`edgecnn.agent.server` — the agent. One self-contained file (standard library
  plus the runtime) copied to a Raspberry Pi, a Jetson, an Android phone under
  Termux …, started as ``python3 server.py --port 8765 --token T`` (or ``edgecnn agent``).
* :mod:`edgecnn.agent.client` — the host side: :class:`AgentClient` and
  :func:`measure_remote`, which returns the same :class:`~edgecnn.latency.measure.Measurement`
  as a local measurement, with the device's fingerprint.

docs/agent.md describes the set-up, the wire protocol byte by byte and the security model.
"""

from __future__ import annotations

from edgecnn.agent.client import (
    AgentBusyError,
    AgentClient,
    AgentConnectionError,
    AgentError,
    AgentTimeoutError,
    RemoteTiming,
    measure_remote,
    parse_address,
    remote_fingerprint,
)

__all__ = [
    "AgentBusyError",
    "AgentClient",
    "AgentConnectionError",
    "AgentError",
    "AgentTimeoutError",
    "RemoteTiming",
    "measure_remote",
    "parse_address",
    "remote_fingerprint",
]
