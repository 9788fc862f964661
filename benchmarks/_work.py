"""The work folder of a long benchmark run: ``stages.json`` (each finished stage's record, written atomically as
it finishes) and its checkpoints, committed under ``benchmarks/state/`` so a later session continues the run.

Several processes may share one work folder (one per core, each taking the stages no other live process has
claimed): every write of ``stages.json`` re-reads it under a file lock and adds its own stage, so no process
drops another's; ``claims.json`` (not committed: process ids mean nothing on another machine) says which live
process runs which stage.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write_text

CLAIMS = "claims.json"
MEASURED_BY = ("cpu", "isa", "system", "backend", "runtime", "threads")  # fingerprint fields a latency depends on


class OtherMachine(Exception):
    """A stage has to time networks, and this is not the machine the run's latencies come from."""


def check_same_machine(recorded: dict[str, Any] | None, here: dict[str, Any], what: str) -> None:
    """Raise :class:`OtherMachine` unless ``here`` (a latency fingerprint, ``DeviceFingerprint.to_dict()``) is the
    ``recorded`` measuring machine of a run in the fields a latency depends on: ratios or milliseconds timed on two
    CPUs (AVX2 and AVX-512 run other ONNX Runtime kernels) are not one comparison. None: nothing recorded yet."""
    if recorded is None:
        return
    diff = [f"{k} {recorded.get(k)!r}, here {here.get(k)!r}" for k in MEASURED_BY if recorded.get(k) != here.get(k)]
    if diff:
        raise OtherMachine(f"{what} times networks on {here.get('backend')}, and this run's latencies were measured "
                           f"on another machine ({'; '.join(diff)}). Continue it on a machine like that one, or "
                           "start a run measured here in another work folder (--work)")  # fmt: skip


def _alive(pid: int, script: str) -> bool:
    """Whether ``pid`` is a live process running ``script`` (a reused pid running something else is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.is_file():
        return script in cmdline.read_bytes().decode(errors="replace")
    return True


class Work:
    """``path/stages.json`` read back on start; ``fresh``: refuse a folder that already holds a run."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.file = path / "stages.json"
        if fresh and self.file.is_file():
            raise SystemExit(f"{path} holds a previous run; drop --fresh to continue it, or another --work")
        path.mkdir(parents=True, exist_ok=True)
        self.script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
        self.stages: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        return json.loads(self.file.read_text()) if self.file.is_file() else {}

    @contextmanager
    def lock(self, name: str = "stages") -> Iterator[None]:
        """An exclusive lock on ``<work>/.<name>.lock`` between the processes sharing this folder (blocks)."""
        with open(self.path / f".{name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def refresh(self) -> dict[str, Any]:
        """The stages as they are on disk now (another process may have finished some)."""
        with self.lock():
            self.stages = self._read()
        return self.stages

    def done(self, name: str, value: Any) -> None:
        """Record a finished stage: re-read under the lock, add it, write atomically; releases its claim."""
        with self.lock():
            self.stages = {**self._read(), name: value}
            atomic_write_text(self.file, json.dumps(self.stages, indent=1) + "\n")
            self._set_claim(name, None)

    def add(self, name: str, key: str, value: Any) -> None:
        """Record one piece of a stage recorded piece by piece (``stages[name][key] = value``), merged under the
        lock with what other processes recorded meanwhile: two processes may fill one stage."""
        with self.lock():
            now = self._read()
            self.stages = {**now, name: {**now.get(name, {}), key: value}}
            atomic_write_text(self.file, json.dumps(self.stages, indent=1) + "\n")

    def claim(self, name: str) -> int | None:
        """Take stage ``name`` for this process: None when it is ours now, else the pid of the live process
        that holds it. A claim of a process that has died (or of another host) is taken over."""
        with self.lock():
            claims = self._claims()
            held = claims.get(name)
            if held and self._held_elsewhere(held):
                return int(held["pid"])
            self._set_claim(name, {"pid": os.getpid(), "host": socket.gethostname()})
            return None

    def release(self, name: str) -> None:
        """Drop this process's claim on ``name`` (a stage recorded piece by piece, whose claim ``done`` keeps)."""
        with self.lock():
            if self._claims().get(name, {}).get("pid") == os.getpid():
                self._set_claim(name, None)

    def live_claims(self) -> dict[str, int]:
        """The stages other live processes of this host hold now: ``{stage: pid}`` (dead claims left out)."""
        with self.lock():
            claims = self._claims()
        return {name: int(c["pid"]) for name, c in claims.items() if self._held_elsewhere(c)}

    def _held_elsewhere(self, claim: dict[str, Any]) -> bool:
        """Whether ``claim`` belongs to another live process of this host running this script (a claim of a dead
        process, or of another host, is free to take over)."""
        return (claim["pid"] != os.getpid() and claim["host"] == socket.gethostname()
                and _alive(int(claim["pid"]), self.script))  # fmt: skip

    def wait_for_change(self, seen: set[str], poll_s: float = 60.0) -> None:
        """Block until the finished stages are no longer ``seen`` (another process finished one) or no other live
        process holds a stage (one died or stopped: its stages are free to take over)."""
        while set(self.refresh()) == seen and self.live_claims():
            time.sleep(poll_s)

    def _claims(self) -> dict[str, Any]:
        f = self.path / CLAIMS
        return json.loads(f.read_text()) if f.is_file() else {}

    def _set_claim(self, name: str, value: dict[str, Any] | None) -> None:  # call under the lock
        claims = self._claims()
        if value is None:
            if claims.pop(name, None) is None:
                return
        else:
            claims[name] = value
        atomic_write_text(self.path / CLAIMS, json.dumps(claims, indent=1) + "\n")

    def recorded_machine(self, table: Path | None = None) -> dict[str, Any] | None:
        """The machine this run's latencies are measured on: recorded (``machine`` in ``stages.json``), else the
        fingerprint of ``table`` (a latency table measured before the machine was recorded), else None."""
        rec = self.refresh().get("machine")
        if rec is None and table is not None and table.is_file():
            rec = json.loads(table.read_text())["fingerprint"]
        return None if rec is None else dict(rec)

    def check_machine(self, here: dict[str, Any], what: str, table: Path | None = None) -> None:
        """Record the measuring machine (``here`` when none is yet) and raise :class:`OtherMachine` unless ``here``
        is it (:func:`check_same_machine`): call before timing anything."""
        rec = self.recorded_machine(table) or here
        if self.stages.get("machine") != rec:
            self.done("machine", rec)
        check_same_machine(rec, here, what)

    def ckpt(self, name: str) -> Path:
        return self.path / f"{name}.pt"
