"""Host side of the device agent (:mod:`edgecnn.agent.server`): talk to the agent on the device, time a network there.

:class:`AgentClient` speaks the agent's wire protocol (:mod:`edgecnn.agent.server`,
docs/agent.md); :func:`measure_remote` exports a PyTorch model with the target's
exporter, has the agent time it, and summarises the per-run times exactly as a
local measurement is summarised (:func:`edgecnn.latency.timing.summarize`), so
a remote :class:`~edgecnn.latency.measurement.Measurement` reads like a local one —
its fingerprint names the agent's address as the device and the remote CPU.

Artifacts are addressed by sha256: a request first goes without the model, and
the model is uploaded only when the agent answers ``missing_artifact``; a second
timing of the same model sends nothing but the request.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecnn.latency.fingerprint import is_agent_address
from edgecnn.agent.server import (
    DEFAULT_MAX_BYTES,
    HEADER,
    MAGIC,
    MIN_UPLOAD_RATE,
    PROTOCOL_VERSION,
    RUNTIMES,
    decode_json,
    encode_message,
    RequestError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn

    from edgecnn.latency.fingerprint import DeviceFingerprint
    from edgecnn.latency.isa import InstructionSet
    from edgecnn.latency.measurement import Measurement
    from edgecnn.latency.timing import TimingConfig

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

RESPONSE_JSON_LIMIT = 64 * 1024 * 1024
"""Largest JSON answer read (a timing of a million runs is ~40 MB of samples)."""


class AgentError(OSError):
    """The agent refused or failed a request (``code`` says why, e.g. ``invalid_artifact``), or could not be reached.

    An :class:`OSError`, so the CLI reports it in one line like a missing file.
    """

    def __init__(self, message: str, *, code: str = "error", address: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.address = address

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.code


class AgentConnectionError(AgentError, ConnectionError):
    """No connection to the agent, or it went away in the middle of a request."""


class AgentTimeoutError(AgentConnectionError, TimeoutError):
    """The agent did not answer in time."""


class AgentBusyError(AgentError):
    """The agent is timing something else (it runs one measurement at a time)."""


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:8765"`` for IPv6) → ``(host, port)``; ValueError saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("agent address is empty; expected HOST:PORT, e.g. 127.0.0.1:8765")
    s = text.strip()
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad agent address {text!r}; an IPv6 address is written [ADDR]:PORT, e.g. [::1]:8765")
        port_text = rest[1:]
    else:
        host, sep, port_text = s.rpartition(":")
        if not sep:
            raise ValueError(f"agent address {text!r} has no port; expected HOST:PORT, e.g. 192.168.1.20:8765")
        if ":" in host:
            raise ValueError(f"bad agent address {text!r}; write an IPv6 address in brackets: [{host}]:{port_text}")
    if not host or any(c.isspace() or c in "/@?#[]" for c in host):
        raise ValueError(f"bad host in agent address {text!r}; expected HOST:PORT, e.g. raspberrypi.local:8765")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in agent address {text!r}; expected an integer in [1, 65535]")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class RemoteTiming:
    """What the agent measured: the raw per-run times and the device's state around them."""

    wall_ms: list[float]  # elapsed time of each timed run (time.perf_counter_ns around one synchronous run)
    cpu_ms: list[float]  # CPU time of each run: the thread's with 1 thread, the process's with more (cpu_clock)
    cpu_clock: str  # "thread" or "process"
    stable: bool  # the median settled within rel_tol before a cap stopped the loop
    warmup_runs: int  # untimed runs done before (stops early after max_seconds)
    foreign_cpu: float | None  # share of the device's CPUs other processes used meanwhile (None: unknown)
    uploaded: bool  # the artifact travelled with this request (False: it was cached on the agent)
    load_ms: float  # time to load the artifact into the runtime (0 when it was still loaded)
    fingerprint: dict[str, Any]  # the device's fingerprint just before the timed runs (server.fingerprint)
    after: dict[str, Any]  # frequencies and temperatures just after the timed runs
    details: dict[str, Any]  # runtime details (providers, versions, threadpool size)
    response: dict[str, Any] = field(repr=False, default_factory=dict)  # the whole answer

    @classmethod
    def from_response(cls, r: dict[str, Any]) -> RemoteTiming:
        try:
            return cls(
                wall_ms=[float(v) for v in r["wall_ms"]], cpu_ms=[float(v) for v in r["cpu_ms"]],
                cpu_clock=str(r["cpu_clock"]), stable=bool(r["stable"]), warmup_runs=int(r["warmup_runs"]),
                foreign_cpu=None if r.get("foreign_cpu") is None else float(r["foreign_cpu"]),
                uploaded=bool(r.get("uploaded")), load_ms=float(r.get("load_ms") or 0.0),
                fingerprint=dict(r["fingerprint"]), after=dict(r.get("after") or {}),
                details=dict(r.get("details") or {}), response=r,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise AgentError(f"malformed timing answer from the agent: {exc!r}", code="protocol") from None


class AgentClient:
    """A connection to one agent. Reuses its TCP connection between requests (reconnecting when the agent
    dropped an idle one); usable as a context manager (``bye`` and close on exit).

    ``timeout``: seconds to connect, and to wait for an answer beyond the work a request asks for
    (a timing may take up to about ``3 × max_seconds`` more).
    """

    def __init__(self, address: str, token: str, timeout: float = 30.0, *,
                 max_response_bytes: int = DEFAULT_MAX_BYTES) -> None:  # fmt: skip
        self.host, self.port = parse_address(address)
        self.address = format_address(self.host, self.port)
        if not isinstance(token, str) or not token:
            raise ValueError("the agent token is empty: pass the token the agent was started with")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.token = token
        self.timeout = float(timeout)
        self.max_response_bytes = int(max_response_bytes)
        self.uploads = 0  # artifacts this client has sent (a cache hit sends none)
        self._sock: socket.socket | None = None

    # -- requests

    def hello(self) -> dict[str, Any]:
        """The agent's answer to ``hello``: ``fingerprint``, ``limits``, ``cache``, versions."""
        return self._request({"op": "hello"})[0]

    def device_fingerprint(self, *, runtime: str = "onnxruntime", threads: int = 1) -> DeviceFingerprint:
        """The fingerprint measurements on this agent with ``runtime`` and ``threads`` will carry (from ``hello``),
        e.g. to open a latency table for the device before timing anything."""
        _check_runtime(runtime)
        fp = self.hello()["fingerprint"]
        version = (fp.get("runtimes") or {}).get(runtime)
        return remote_fingerprint(fp, self.address, runtime=runtime, threads=threads,
                                  runtime_version=None if version is None else str(version))  # fmt: skip

    def isa(self) -> InstructionSet:
        """The device's int8 instruction set (from the CPU flags ``hello`` reports), to quantise for it."""
        from edgecnn.latency.isa import parse_isa

        fp = self.hello()["fingerprint"]
        return parse_isa(str(fp.get("machine") or "unknown"), " ".join(str(f) for f in fp.get("cpu_flags") or []),
                         source=f"agent {self.address}")  # fmt: skip

    def put(self, artifact: bytes, *, runtime: str = "onnxruntime") -> dict[str, Any]:
        """Upload ``artifact`` (checked and cached by the agent)."""
        _check_runtime(runtime)
        resp = self._request({"op": "put", "runtime": runtime, "sha256": sha256(artifact)}, artifact)[0]
        self.uploads += 1
        return resp

    def time(self, artifact: bytes, *, input_shape: Sequence[int], runtime: str = "onnxruntime", threads: int = 1,
             config: TimingConfig | None = None, providers: list[str] | None = None) -> RemoteTiming:  # fmt: skip
        """Time ``artifact`` on the device at ``input_shape`` (random float32 input) with ``threads`` threads.

        The warm-up/repeat/stability settings are ``config``'s (:class:`~edgecnn.latency.timing.TimingConfig`);
        its retry settings are :func:`measure_remote`'s business. The artifact is uploaded only if the agent
        does not have it yet.
        """
        _check_runtime(runtime)
        if config is None:
            from edgecnn.latency.timing import TimingConfig

            config = TimingConfig()
        req: dict[str, Any] = {
            "op": "time", "runtime": runtime, "sha256": sha256(artifact),
            "input_shape": [int(d) for d in input_shape], "threads": int(threads),
            "warmup": config.warmup, "min_repeats": config.min_repeats, "max_repeats": config.max_repeats,
            "round_size": config.round_size, "rel_tol": config.rel_tol, "max_seconds": config.max_seconds,
            "clock": config.clock,
        }  # fmt: skip
        if providers:
            req["providers"] = list(providers)
        work_s = 3 * config.max_seconds + 60.0  # warm-up (≤ max_seconds), timed part, last round; loading the runtime
        try:
            resp = self._request(req, work_s=work_s)[0]
        except AgentError as exc:
            if exc.code != "missing_artifact":
                raise
            resp = self._request(req, artifact, work_s=work_s)[0]
            self.uploads += 1
        return RemoteTiming.from_response(resp)

    def run(self, artifact: bytes, x: Any, *, runtime: str = "onnxruntime", threads: int = 1) -> np.ndarray:
        """The first output (logits) of the model on the batch ``x`` (float32, e.g. N×C×H×W), computed on the device."""
        return self.run_all(artifact, x, runtime=runtime, threads=threads)[0]

    def run_all(self, artifact: bytes, x: Any, *, runtime: str = "onnxruntime", threads: int = 1) -> list[np.ndarray]:
        """Every output of the model on the batch ``x``, computed on the device (float32 arrays)."""
        _check_runtime(runtime)
        arr = np.ascontiguousarray(np.asarray(x), dtype="<f4")
        req = {"op": "run", "runtime": runtime, "sha256": sha256(artifact), "input_shape": list(arr.shape),
               "threads": int(threads)}  # fmt: skip
        data = arr.tobytes()
        try:
            resp, blob = self._request(req, data)
        except AgentError as exc:
            if exc.code != "missing_artifact":
                raise
            if not self.put(artifact, runtime=runtime).get("kept", True):
                raise AgentError(f"the model ({len(artifact):,} bytes) is larger than the artifact cache of the agent "
                                 f"at {self.address}: restart it with a larger --cache-bytes", code="too_large",
                                 address=self.address) from None  # fmt: skip
            resp, blob = self._request(req, data)
        outs, offset = [], 0
        try:
            for spec in resp["outputs"]:
                shape = tuple(int(d) for d in spec["shape"])
                n = 4 * int(np.prod(shape, dtype=np.int64))
                outs.append(np.frombuffer(blob, dtype="<f4", count=n // 4, offset=offset).reshape(shape).copy())
                offset += n
        except (KeyError, TypeError, ValueError) as exc:
            raise AgentError(f"malformed run answer from {self.address}: {exc}", code="protocol") from None
        if offset != len(blob) or not outs:
            raise AgentError(f"malformed run answer from {self.address}: outputs do not match the payload",
                             code="protocol")  # fmt: skip
        return outs

    def close(self) -> None:
        """Say ``bye`` (best effort) and close the connection."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.settimeout(min(self.timeout, 2.0))
            sock.sendall(encode_message({"op": "bye", "token": self.token}))
        except OSError:
            pass
        finally:
            sock.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.gaierror as exc:
            raise AgentConnectionError(f"cannot resolve the agent host {self.host!r} ({exc.strerror or exc}); "
                                       "check the --device address", address=self.address) from None  # fmt: skip
        except socket.timeout:
            raise AgentTimeoutError(f"no answer from the edgecnn agent at {self.address} within {self.timeout:g} s: "
                                    "check the address, that the device is up and that no firewall drops the port",
                                    address=self.address) from None  # fmt: skip
        except OSError as exc:
            raise AgentConnectionError(
                f"cannot reach the edgecnn agent at {self.address}: {exc.strerror or exc}. Is it running on the "
                f"device (`python3 server.py --port {self.port} --token …` or `edgecnn agent …`), and is the "
                f"address right? Through an SSH tunnel: ssh -N -L {self.port}:127.0.0.1:{self.port} user@device",
                address=self.address,
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _request(self, obj: dict[str, Any], payload: bytes = b"", *,
                 work_s: float = 0.0) -> tuple[dict[str, Any], bytes]:  # fmt: skip
        """Send one request, return (answer, answer payload); AgentError on an error answer."""
        message = encode_message({**obj, "token": self.token}, payload)
        for attempt in (0, 1):
            reused = self._sock is not None
            sock = self._sock if self._sock is not None else self._connect()
            self._sock = sock
            got = [False]
            try:
                sock.settimeout(self.timeout + len(payload) / MIN_UPLOAD_RATE)
                sock.sendall(message)
                resp, blob = self._read_response(sock, self.timeout + work_s, got)
                break
            except AgentError:
                self._drop()
                raise
            except (socket.timeout, TimeoutError):
                self._drop()
                raise AgentTimeoutError(
                    f"the edgecnn agent at {self.address} did not answer {obj.get('op')} within "
                    f"{self.timeout + work_s:g} s; is the device overloaded? (raise the client timeout)",
                    address=self.address,
                ) from None
            except OSError as exc:
                self._drop()
                if reused and not got[0] and attempt == 0:
                    continue  # the agent had closed the idle connection: once more on a fresh one
                raise AgentConnectionError(
                    f"the edgecnn agent at {self.address} closed the connection before answering {obj.get('op')} "
                    f"({exc.strerror or exc}); it may have stopped or crashed: see its log on the device",
                    address=self.address,
                ) from None
        if not resp.get("ok"):
            err = resp.get("error") if isinstance(resp.get("error"), dict) else {}
            code, text = str(err.get("code", "error")), str(err.get("message", "no message"))
            if code != "missing_artifact":
                self._drop()  # the agent closes after most errors; start clean next time
            cls = AgentBusyError if code == "busy" else AgentError
            raise cls(f"edgecnn agent at {self.address}: {text} [{code}]", code=code, address=self.address)
        return resp, blob

    def _read_response(self, sock: socket.socket, wait_s: float, got: list[bool]) -> tuple[dict[str, Any], bytes]:
        deadline = time.monotonic() + wait_s
        head = _recv_exact(sock, HEADER.size, deadline, got)
        magic, version, _flags, json_len, payload_len = HEADER.unpack(head)
        if magic != MAGIC:
            raise AgentError(f"the peer at {self.address} is not an edgecnn agent (it answered {head[:8]!r})",
                             code="protocol", address=self.address)  # fmt: skip
        if version != PROTOCOL_VERSION:
            raise AgentError(f"the agent at {self.address} speaks protocol {version}, this edgecnn {PROTOCOL_VERSION}:"
                             " copy this edgecnn's agent/server.py to the device", code="protocol",
                             address=self.address)  # fmt: skip
        if json_len > RESPONSE_JSON_LIMIT or payload_len > self.max_response_bytes:
            raise AgentError(f"answer from {self.address} too large ({json_len:,} + {payload_len:,} bytes)",
                             code="protocol", address=self.address)  # fmt: skip
        try:
            resp = decode_json(_recv_exact(sock, json_len, deadline, got))
        except RequestError as exc:
            raise AgentError(f"bad answer from {self.address}: {exc.message}", code="protocol",
                             address=self.address) from None  # fmt: skip
        blob = _recv_exact(sock, payload_len, deadline + payload_len / MIN_UPLOAD_RATE, got) if payload_len else b""
        return resp, blob


def _recv_exact(sock: socket.socket, n: int, deadline: float, got: list[bool]) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionResetError(104, "connection closed by the agent")
        got[0] = True
        buf += chunk
    return bytes(buf)


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown agent runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``: the name an artifact has on the agent."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- measurement


def export_artifact(model: nn.Module, x: Any, runtime: str) -> bytes:
    """``model`` exported for ``runtime`` by edgecnn's target of that name (fp32; ONNX with BN folded)."""
    from edgecnn.latency.targets import get_target, target_names

    _check_runtime(runtime)
    if runtime not in target_names():
        raise ValueError(f"this edgecnn cannot export for {runtime!r} (registered targets: {', '.join(target_names())})")
    return get_target(runtime).export(model, x)


def remote_fingerprint(fp: dict[str, Any], address: str, *, runtime: str, threads: int,
                       runtime_version: str | None) -> DeviceFingerprint:  # fmt: skip
    """The :class:`~edgecnn.latency.fingerprint.DeviceFingerprint` of a measurement made by the agent at ``address``.

    ``device`` is the agent's address (so a remote table never passes for a local one), ``cpu``/``cores``/
    ``system`` are the device's, ``isa`` is read from the device's CPU flags, ``torch`` is the exporter's
    version on this host.
    """
    import torch

    from edgecnn.latency.fingerprint import DeviceFingerprint
    from edgecnn.latency.isa import parse_isa

    runtimes = fp.get("runtimes") if isinstance(fp.get("runtimes"), dict) else {}
    isa = parse_isa(str(fp.get("machine") or "unknown"), " ".join(str(f) for f in fp.get("cpu_flags") or []),
                    source=f"agent {address}")  # fmt: skip
    return DeviceFingerprint(
        cpu=str(fp.get("cpu") or "unknown"),
        cores=int(fp.get("cores") or 1),
        threads=int(threads),
        backend=runtime,
        device=address,
        cuda_name=None,
        torch=torch.__version__,
        onnxruntime=runtimes.get("onnxruntime") if runtime == "onnxruntime" else None,
        system=str(fp.get("system") or "unknown"),
        runtime=runtime_version,
        isa=isa.int8_kind,
    )


def measure_remote(
    model: nn.Module | None,
    input_shape: Sequence[int],
    *,
    runtime: str = "onnxruntime",
    threads: int = 1,
    config: TimingConfig | None = None,
    client: AgentClient,
    label: str = "",
    artifact: bytes | None = None,
) -> Measurement:
    """End-to-end latency of ``model`` measured on the agent's device, as a :class:`Measurement`.

    The model is exported here (:func:`export_artifact`; pass ``artifact`` to time one exported elsewhere,
    e.g. an int8 model quantised for the device's CPU) and timed there with ``config``'s warm-up and
    stopping rule. The samples are summarised by :func:`~edgecnn.latency.timing.summarize` (wall clock, or
    the device's CPU clock with ``config.clock == "cpu"``); when other processes on the *device* used more
    than ``config.max_foreign`` of its CPUs, the timing is retried like a local one
    (:func:`~edgecnn.latency.timing.disturbance`). No drift reference runs remotely.
    """
    from edgecnn.latency.measurement import Measurement
    from edgecnn.latency.timing import TimingConfig, check_clock, disturbance, example_input, summarize

    _check_runtime(runtime)
    if int(threads) < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    cfg = config or TimingConfig()
    check_clock(cfg, threads=int(threads), device="cpu")
    shape = tuple(int(d) for d in input_shape)
    if artifact is None:
        if model is None:
            raise ValueError("measure_remote needs a model or an artifact")
        artifact = export_artifact(model, example_input(shape), runtime)
    attempts = []
    for attempt in range(cfg.retries + 1):
        timing = client.time(artifact, input_shape=shape, runtime=runtime, threads=int(threads), config=cfg)
        samples = timing.wall_ms if cfg.clock == "wall" else timing.cpu_ms
        stats = summarize(samples, stable=timing.stable, foreign_cpu=timing.foreign_cpu)
        attempts.append((stats, timing))
        if not any(disturbance(stats, cfg)) or attempt == cfg.retries:
            break
        time.sleep(cfg.retry_wait_s)
    stats, timing = min(attempts, key=lambda a: disturbance(a[0], cfg))
    version = timing.details.get(runtime) or (timing.fingerprint.get("runtimes") or {}).get(runtime)
    fp = remote_fingerprint(timing.fingerprint, client.address, runtime=runtime, threads=int(threads),
                            runtime_version=None if version is None else str(version))  # fmt: skip
    extra: dict[str, Any] = {
        "remote": {
            "address": client.address,
            "sha256": sha256(artifact),
            "artifact_bytes": len(artifact),
            "uploaded": timing.uploaded,
            "load_ms": timing.load_ms,
            "warmup_runs": timing.warmup_runs,
            "attempts": len(attempts),
            "cpu_clock": timing.cpu_clock,
            "cpu_median_ms": float(np.median(timing.cpu_ms)) if timing.cpu_ms else None,
            "details": timing.details,
            "fingerprint": timing.fingerprint,
            "after": timing.after,
        }
    }
    if runtime == "onnxruntime":
        from edgecnn.export import DEFAULT_OPSET

        extra["opset"] = DEFAULT_OPSET
        extra["providers"] = list(timing.details.get("providers") or [])
    return Measurement(stats, fp, shape, False, label, extra)


# --------------------------------------------------------------------------- devices named by address

AGENT_TOKEN_ENV = "EDGECNN_AGENT_TOKEN"
AGENT_TIMEOUT_ENV = "EDGECNN_AGENT_TIMEOUT"
_CLIENTS: dict[str, AgentClient] = {}


def client_for(device: str) -> AgentClient:
    """The (cached) client of the agent at ``device``; its token comes from ``EDGECNN_AGENT_TOKEN``.

    The connection timeout is ``EDGECNN_AGENT_TIMEOUT`` seconds (default 60: the first load of a
    ``.pte`` on a small board imports its runtime).
    """
    import os

    address = format_address(*parse_address(device))
    if address not in _CLIENTS:
        token = os.environ.get(AGENT_TOKEN_ENV, "")
        if not token:
            raise ValueError(f"device {address} is an edgecnn agent: set {AGENT_TOKEN_ENV} (or --agent-token) to the "
                             "token it was started with")  # fmt: skip
        try:
            timeout = float(os.environ.get(AGENT_TIMEOUT_ENV, "60"))
        except ValueError:
            raise ValueError(f"{AGENT_TIMEOUT_ENV} must be a number of seconds") from None
        _CLIENTS[address] = AgentClient(address, token, timeout=timeout)
    return _CLIENTS[address]


def check_remote_runtime(backend: str, device: str) -> None:
    """ValueError unless the agent can run ``backend`` (it runs exported models, not PyTorch eager)."""
    if backend not in RUNTIMES:
        raise ValueError(f"device {device} is an edgecnn agent: it runs {', '.join(RUNTIMES)} models, not {backend}; "
                         "pass --backend onnxruntime (or executorch)")  # fmt: skip
