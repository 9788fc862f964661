"""Remote device agent: measure latency on the device the network will run on.

* :mod:`edgecnn.agent.server` — the agent. One self-contained file (standard library
  plus the runtime) copied to a Raspberry Pi, a Jetson, an Android phone under
  Termux …, started as ``python3 server.py --port 8765 --token T`` (or ``edgecnn agent``).
  It imports nothing from edgecnn.
* The host side lives with the rest of latency measurement, in :mod:`edgecnn.latency.remote`:
  :class:`~edgecnn.latency.remote.AgentClient` and :func:`~edgecnn.latency.remote.measure_remote`,
  used by :func:`edgecnn.latency.measure` whenever ``device`` is an agent's ``HOST:PORT``.

docs/agent.md describes the set-up, the wire protocol byte by byte and the security model.
"""
