#!/usr/bin/env python3
"""edgecnn device agent: time (and run) a network on the device it will be deployed to.

Copy this one file to the device and start it there::

    pip install onnxruntime            # for ONNX models; `pip install executorch` for .pte
    python3 server.py --port 8765 --token "$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"

(or ``edgecnn agent --port 8765 --token T`` where edgecnn is installed). The host
sends it an exported model (ONNX or ExecuTorch ``.pte``) and asks for a timing
(:func:`edgecnn.latency.remote.measure_remote`); the agent answers with the raw
per-run times measured on the device, with the device's fingerprint.

This file must run on a bare device: it imports only Python's standard library
at module level (Python >= 3.8). ``onnxruntime`` (and the ``numpy`` it needs)
or ``executorch.runtime`` are imported when a request first needs them. It
never imports ``torch`` for ONNX, nor anything from edgecnn.

Wire protocol (docs/agent.md has the byte-level description): every message,
in both directions, is a 20-byte header ``>4sHHIQ`` (magic ``b"ECNA"``,
protocol version, flags = 0, JSON length, payload length), a UTF-8 JSON object,
then the payload bytes. Requests carry the token in their JSON. Every size is
checked against the limits before a byte of the body is read, the token
before the payload. Received data is only ever parsed as JSON, as raw float32
or handed to the runtime as a model after a format check; nothing is
unpickled, evaluated or imported from it.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import platform
import re
import secrets
import socket
import socketserver
import statistics
import struct
import sys
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

AGENT_NAME = "edgecnn-agent"
AGENT_VERSION = "1.0"
PROTOCOL_VERSION = 1
MAGIC = b"ECNA"
HEADER = struct.Struct(">4sHHIQ")
"""magic (4 bytes), protocol version (u16), flags (u16, 0), JSON length (u32), payload length (u64); big-endian."""
MAX_JSON = 64 * 1024
"""Largest JSON object accepted (requests) and sent (responses but ``hello``'s stay far below)."""
DEFAULT_PORT = 8765
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Largest payload accepted: an artifact upload, or a ``run`` batch of float32 inputs."""
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_BUSY_WAIT_S = 5.0
DEFAULT_MAX_CONNECTIONS = 8
MIN_UPLOAD_RATE = 64 * 1024
"""Bytes/s a payload must at least arrive at (on top of ``timeout``): a trickling client cannot hold a slot."""
MAX_SECONDS_CAP = 600.0
"""Longest timed part a request may ask for."""
RUNTIMES = ("onnxruntime", "executorch")
PAYLOAD_OPS = ("time", "run", "put")
ENV_TOKEN = "EDGECNN_AGENT_TOKEN"


# --------------------------------------------------------------------------- errors


class RequestError(Exception):
    """A request the agent refuses; becomes an error response. ``close``: end the connection afterwards."""

    def __init__(self, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close


class _Closed(Exception):
    """The peer closed the connection (``partial``: in the middle of a message)."""

    def __init__(self, partial: bool) -> None:
        super().__init__("peer closed the connection")
        self.partial = partial


class _Timeout(Exception):
    """A message did not arrive in time (``partial``: some of it did)."""

    def __init__(self, partial: bool) -> None:
        super().__init__("timed out")
        self.partial = partial


# --------------------------------------------------------------------------- framing


def encode_message(obj: dict[str, Any], payload: bytes = b"") -> bytes:
    """Header + JSON (+ payload) of one message."""
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, 0, len(body), len(payload)) + body + payload


def decode_header(raw: bytes, *, max_json: int, max_payload: int) -> tuple[int, int]:
    """``(json_len, payload_len)`` of a 20-byte header; RequestError (connection to close) when it is refused."""
    magic, version, flags, json_len, payload_len = HEADER.unpack(raw)
    if magic != MAGIC:
        raise RequestError("bad_header", f"not an edgecnn agent message (magic {magic!r}, expected {MAGIC!r})",
                           close=True)  # fmt: skip
    if version != PROTOCOL_VERSION:
        raise RequestError("bad_version", f"protocol version {version} not supported; this agent speaks "
                           f"{PROTOCOL_VERSION}: use the agent from the same edgecnn version", close=True)  # fmt: skip
    if flags != 0:
        raise RequestError("bad_header", f"unknown header flags {flags:#x}", close=True)
    if json_len == 0:
        raise RequestError("bad_header", "empty JSON part: every message carries a JSON object", close=True)
    if json_len > max_json:
        raise RequestError("too_large", f"JSON part of {json_len:,} bytes over the limit of {max_json:,}", close=True)
    if payload_len > max_payload:
        raise RequestError("too_large", f"payload of {payload_len:,} bytes over this agent's limit of "
                           f"{max_payload:,} (--max-bytes)", close=True)  # fmt: skip
    return json_len, payload_len


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(raw: bytes) -> dict[str, Any]:
    """The JSON object of a message; RequestError ``bad_json`` otherwise (NaN/Infinity and deep nesting refused)."""
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError("bad_json", f"the JSON part is not valid UTF-8 JSON: {exc}", close=True) from None
    if not isinstance(obj, dict):
        raise RequestError("bad_json", f"the JSON part must be an object, got {type(obj).__name__}", close=True)
    return obj


class Connection:
    """One socket with deadline-bounded reads: every read waits at most ``idle_s``, a whole message at most
    until its deadline, so a silent or trickling peer is dropped instead of holding the agent."""

    def __init__(self, sock: socket.socket, idle_s: float) -> None:
        self.sock = sock
        self.idle_s = idle_s

    def recv_exact(self, n: int, deadline: float, *, started: bool) -> bytes:
        """Exactly ``n`` bytes before ``deadline`` (``time.monotonic``); ``started``: part of the message came."""
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout(started or bool(buf))
            self.sock.settimeout(min(remaining, self.idle_s))
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                raise _Timeout(started or bool(buf)) from None
            except OSError:  # reset by the peer
                raise _Closed(started or bool(buf)) from None
            if not chunk:
                raise _Closed(started or bool(buf))
            buf += chunk
        return bytes(buf)

    def send(self, obj: dict[str, Any], payload: bytes = b"") -> None:
        self.sock.settimeout(self.idle_s + len(payload) / MIN_UPLOAD_RATE)
        self.sock.sendall(encode_message(obj, payload))

    def linger_close(self) -> None:
        """Stop sending, read (and drop) what the peer still sends for a moment, then close.

        Closing a socket with unread input makes the kernel send a reset, which can
        destroy the error response we just sent before the peer reads it.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            end = time.monotonic() + 1.0
            drained = 0
            while drained < (1 << 20) and time.monotonic() < end:
                self.sock.settimeout(max(0.01, end - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
        finally:
            self.sock.close()


# --------------------------------------------------------------------------- artifact checks


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _pb_fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """Protobuf wire-format fields of ``buf[start:end]``: ``(field, wire_type, varint value or (start, end))``."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _Malformed("truncated fixed-size field")
            yield field, wire, None
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Malformed("length-delimited field runs past its message")
            yield field, wire, (pos, pos + n)
            pos += n
        else:
            raise _Malformed(f"wire type {wire}")


# Which fields of which ONNX message hold a sub-message worth descending into (onnx.proto field numbers).
_ONNX_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_MAX_ONNX_DEPTH = 64


def _walk_onnx(buf: memoryview, start: int, end: int, kind: str, depth: int) -> dict[int, Any]:
    if depth > _MAX_ONNX_DEPTH:
        raise _Malformed("sub-graphs nested too deeply")
    children = _ONNX_CHILDREN[kind]
    seen: dict[int, Any] = {}
    for field, wire, value in _pb_fields(buf, start, end):
        seen.setdefault(field, value)
        if kind == "tensor" and (field == 13 or (field == 14 and wire == 0 and value == 1)):
            raise RequestError("invalid_artifact", "the ONNX model refers to external data files; the agent only "
                               "loads self-contained models (no file on the device is ever read for a model)")  # fmt: skip
        if field in children:
            if wire != 2:
                raise _Malformed(f"{kind} field {field} has wire type {wire}")
            _walk_onnx(buf, value[0], value[1], children[field], depth + 1)
    return seen


def check_onnx(data: bytes) -> None:
    """RequestError ``invalid_artifact`` unless ``data`` is a self-contained ONNX ModelProto.

    ONNX files have no magic number: this walks the protobuf wire format of the
    model, its graphs, nodes, attributes and tensors (standard library only),
    requires an ``ir_version`` and a ``graph``, and refuses tensors stored as
    external data (a model could otherwise make the runtime read any file).
    """
    buf = memoryview(data)
    try:
        seen = _walk_onnx(buf, 0, len(buf), "model", 0)
    except _Malformed as exc:
        raise RequestError("invalid_artifact", f"not an ONNX model (protobuf ModelProto): {exc}") from None
    if not isinstance(seen.get(1), int) or not isinstance(seen.get(7), tuple):
        raise RequestError("invalid_artifact", "not an ONNX model: no ir_version and graph fields")


def check_pte(data: bytes) -> None:
    """RequestError ``invalid_artifact`` unless ``data`` starts like an ExecuTorch program (flatbuffer ``ET..``)."""
    ident = data[4:8]
    if len(data) < 16 or ident[:2] != b"ET" or not ident[2:].isdigit():
        raise RequestError("invalid_artifact", f"not an ExecuTorch program (.pte): file identifier {ident!r}, "
                           "expected b'ET' + two digits at bytes 4..8")  # fmt: skip
    root = struct.unpack_from("<I", data, 0)[0]
    if not 8 <= root < len(data):
        raise RequestError("invalid_artifact", "not an ExecuTorch program (.pte): root table offset out of range")


ARTIFACT_CHECKS: dict[str, Callable[[bytes], None]] = {"onnxruntime": check_onnx, "executorch": check_pte}


class ArtifactCache:
    """Artifacts by sha256, least recently used dropped first; bounded by total bytes. Thread-safe."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.total = 0

    def get(self, sha: str) -> bytes | None:
        with self._lock:
            data = self._items.get(sha)
            if data is not None:
                self._items.move_to_end(sha)
            return data

    def put(self, sha: str, data: bytes) -> bool:
        """Keep ``data``; False when it alone is over the limit (then it is used once and not kept)."""
        if len(data) > self.limit:
            return False
        with self._lock:
            if sha in self._items:
                self._items.move_to_end(sha)
                return True
            while self._items and self.total + len(data) > self.limit:
                _, old = self._items.popitem(last=False)
                self.total -= len(old)
            self._items[sha] = data
            self.total += len(data)
            return True

    def discard(self, sha: str) -> None:
        """Forget ``sha`` (an artifact the runtime refused to load)."""
        with self._lock:
            data = self._items.pop(sha, None)
            if data is not None:
                self.total -= len(data)

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------- fingerprint


ARM_PARTS: dict[tuple[int, int], str] = {
    (0x41, 0xB76): "ARM1176", (0x41, 0xC07): "Cortex-A7", (0x41, 0xC08): "Cortex-A8", (0x41, 0xC09): "Cortex-A9",
    (0x41, 0xC0F): "Cortex-A15", (0x41, 0xC0E): "Cortex-A17", (0x41, 0xD01): "Cortex-A32",
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD06): "Cortex-A65", (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD09): "Cortex-A73", (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1", (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD0E): "Cortex-A76AE",
    (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78", (0x41, 0xD42): "Cortex-A78AE",
    (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4B): "Cortex-A78C",
    (0x41, 0xD4D): "Cortex-A715", (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD80): "Cortex-A520", (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4",
    (0x4E, 0x004): "NVIDIA Carmel",
    (0x51, 0x800): "Kryo Gold (A73)", (0x51, 0x801): "Kryo Silver (A53)", (0x51, 0x802): "Kryo Gold (A75)",
    (0x51, 0x803): "Kryo Silver (A55)", (0x51, 0x804): "Kryo Gold (A76)", (0x51, 0x805): "Kryo Silver (A55)",
}  # fmt: skip
"""(implementer, part) of ``/proc/cpuinfo`` → core name: ARM Linux has no ``model name`` worth reading."""

INT8_FLAGS = frozenset(
    "ssse3 sse4_1 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx_vnni avx_vnni_int8 avx512_bf16 "
    "avx512_fp16 amx_tile amx_int8 amx_bf16 neon asimd asimddp asimdhp fphp i8mm bf16 sve sve2 svei8mm sme".split()
)
"""CPU flags that decide which int8/fp16 kernels a runtime can use (x86 ``flags``, ARM ``Features``)."""


def _read(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace").strip("\x00 \n\t")
    except OSError:
        return None


def _cpuinfo() -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one dict per block (empty where unreadable: macOS, some Android)."""
    text = _read("/proc/cpuinfo", 4 << 20) or ""
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, sep, value = line.partition(":")
        if sep:
            blocks[-1][key.strip().lower()] = value.strip()
    return [b for b in blocks if b]


def _cores_described(blocks: list[dict[str, str]]) -> str | None:
    """``"4x Cortex-A55 + 4x Cortex-A76"`` from the ``CPU implementer``/``CPU part`` lines (ARM Linux)."""
    counts: OrderedDict[str, int] = OrderedDict()
    for b in blocks:
        if "cpu part" not in b:
            continue
        try:
            key = (int(b.get("cpu implementer", "0"), 0), int(b["cpu part"], 0))
        except ValueError:
            continue
        name = ARM_PARTS.get(key, f"ARM impl {key[0]:#x} part {key[1]:#x}")
        counts[name] = counts.get(name, 0) + 1
    return " + ".join(f"{n}x {name}" for name, n in counts.items()) or None


def board_model() -> str | None:
    """The board or machine name: device tree ``model`` (Raspberry Pi, Jetson, ARM boards) or DMI (PCs)."""
    for path in ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model"):
        text = _read(path, 4096)
        if text:
            return text
    vendor, product = _read("/sys/class/dmi/id/sys_vendor", 4096), _read("/sys/class/dmi/id/product_name", 4096)
    joined = " ".join(t for t in (vendor, product) if t)
    return joined or None


def cpu_model(blocks: list[dict[str, str]]) -> str:
    """The CPU name the way :func:`edgecnn.latency.fingerprint.cpu_model` reads it (so tables compare)."""
    for b in blocks:
        if "model name" in b:
            return b["model name"]
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(blocks: list[dict[str, str]]) -> list[str]:
    """The int8-relevant flags of the first CPU (:data:`INT8_FLAGS`), sorted."""
    for b in blocks:
        flags = b.get("flags") or b.get("features")
        if flags is not None:
            return sorted(set(flags.lower().split()) & INT8_FLAGS)
    return []


def cpufreq() -> list[dict[str, Any]]:
    """One entry per cpufreq policy (a cluster of cores sharing a clock): governor and frequencies in MHz."""
    out: list[dict[str, Any]] = []
    base = "/sys/devices/system/cpu/cpufreq"
    try:
        names = sorted((n for n in os.listdir(base) if re.fullmatch(r"policy\d+", n)), key=lambda n: int(n[6:]))
    except OSError:
        return out
    for name in names[:64]:
        d = os.path.join(base, name)

        def mhz(file: str, d: str = d) -> float | None:
            v = _read(os.path.join(d, file), 64)
            return round(int(v) / 1000.0, 1) if v and v.isdigit() else None

        out.append({
            "policy": name, "cpus": _read(os.path.join(d, "related_cpus"), 4096),
            "governor": _read(os.path.join(d, "scaling_governor"), 256),
            "cur_mhz": mhz("scaling_cur_freq"), "min_mhz": mhz("scaling_min_freq"),
            "max_mhz": mhz("scaling_max_freq"), "hw_max_mhz": mhz("cpuinfo_max_freq"),
        })  # fmt: skip
    return out


def thermal() -> list[dict[str, Any]]:
    """Every readable ``/sys/class/thermal`` zone: its type and temperature in °C."""
    out: list[dict[str, Any]] = []
    base = "/sys/class/thermal"
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith("thermal_zone"))
    except OSError:
        return out
    for name in names[:32]:
        raw = _read(os.path.join(base, name, "temp"), 64)
        try:
            value = int(raw) if raw is not None else None
        except ValueError:
            value = None
        if value is None:
            continue
        celsius = value / 1000.0 if abs(value) >= 1000 else float(value)  # millidegrees on Linux, a few say degrees
        out.append({"zone": name, "type": _read(os.path.join(base, name, "type"), 256), "celsius": celsius})
    return out


def memory_mb() -> dict[str, float]:
    """``MemTotal`` and ``MemAvailable`` from /proc/meminfo, in MiB (empty where unreadable)."""
    out: dict[str, float] = {}
    for line in (_read("/proc/meminfo", 1 << 16) or "").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and value.split() and value.split()[0].isdigit():
            out[key] = round(int(value.split()[0]) / 1024.0, 1)
    return out


_RUNTIME_VERSIONS: dict[str, str | None] = {}


def runtime_versions() -> dict[str, str | None]:
    """Installed runtimes and versions (None: not installed); ONNX Runtime is imported once to be sure it loads."""
    if not _RUNTIME_VERSIONS:
        try:
            import onnxruntime  # noqa: PLC0415 - imported only on the device, only when asked

            _RUNTIME_VERSIONS["onnxruntime"] = str(onnxruntime.__version__)
        except Exception:  # noqa: BLE001 - ImportError, or a broken install
            _RUNTIME_VERSIONS["onnxruntime"] = None
        for dist in ("executorch", "numpy"):
            _RUNTIME_VERSIONS[dist] = _dist_version(dist)
    return dict(_RUNTIME_VERSIONS)


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def fingerprint() -> dict[str, Any]:
    """What the device is and what state it is in (JSON-ready): the ``hello`` answer."""
    blocks = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "cpu": cpu_model(blocks),
        "cpu_cores": _cores_described(blocks),
        "board": board_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "machine": platform.machine(),
        "system": f"{platform.system()}-{platform.machine()}",
        "os": platform.platform(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
        "cpu_flags": cpu_flags(blocks),
        "cpufreq": cpufreq(),
        "thermal": thermal(),
        "memory_mb": memory_mb(),
        "loadavg": load,
        "termux": bool(os.environ.get("TERMUX_VERSION")) or "com.termux" in sys.prefix,
    }


class ForeignCpu:
    """Share of all CPUs other processes used during a ``with`` block (Linux /proc/stat; None elsewhere)."""

    def __init__(self) -> None:
        self.share: float | None = None

    @staticmethod
    def _busy_s() -> float | None:
        line = (_read("/proc/stat", 4096) or "").splitlines()[:1]
        try:
            vals = [int(v) for v in line[0].split()[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        except (IndexError, ValueError, OSError, AttributeError):
            return None

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system

    def __enter__(self) -> ForeignCpu:
        self._b0, self._o0, self._w0 = self._busy_s(), self._own_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, wall = self._busy_s(), time.perf_counter() - self._w0
        if busy is None or self._b0 is None or wall < 0.05:  # jiffies are 10 ms: too short to judge
            return
        foreign = (busy - self._b0) - (self._own_s() - self._o0)
        self.share = min(max(foreign / (wall * (os.cpu_count() or 1)), 0.0), 1.0)


# --------------------------------------------------------------------------- runtimes


class Program:
    """A loaded artifact: ``bind(shape)`` gives a one-inference callable, ``run(x)`` the outputs."""

    details: dict[str, Any]

    def bind(self, shape: tuple[int, ...]) -> Callable[[], object]:
        raise NotImplementedError

    def run(self, x: Any) -> list[Any]:
        raise NotImplementedError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


class OrtProgram(Program):
    """ONNX Runtime session set up like edgecnn's host sessions: ``threads`` intra-op threads, sequential
    executor, all graph optimisations; timing runs through an IOBinding with the input bound once."""

    def __init__(self, artifact: bytes, threads: int, providers: list[str] | None) -> None:
        try:
            import numpy as np  # noqa: PLC0415
            import onnxruntime as ort  # noqa: PLC0415
        except Exception as exc:  # noqa: BLE001
            raise RequestError("runtime_unavailable", f"ONNX Runtime is not usable on this device ({_first_line(exc)})"
                               ": pip install onnxruntime") from None  # fmt: skip
        self.np = np
        available = list(ort.get_available_providers())
        chosen = list(providers) if providers else ["CPUExecutionProvider"]
        unknown = [p for p in chosen if p not in available]
        if unknown:
            raise RequestError("bad_request", f"execution provider(s) {unknown} not in this onnxruntime: {available}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(artifact, opts, providers=chosen)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise RequestError("invalid_artifact", f"ONNX Runtime cannot load the model: {_first_line(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise RequestError("invalid_artifact", f"the model has {len(inputs)} inputs; the agent feeds exactly one")
        self.input = inputs[0].name
        self.details = {"providers": list(self.session.get_providers()), "onnxruntime": ort.__version__}

    def bind(self, shape: tuple[int, ...]) -> Callable[[], object]:
        x = self.np.random.default_rng(0).standard_normal(shape).astype(self.np.float32)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input, x)
        for out in self.session.get_outputs():
            binding.bind_output(out.name)
        session = self.session

        def run() -> object:
            session.run_with_iobinding(binding)  # synchronous: returns when the outputs are ready
            return None

        return run

    def run(self, x: Any) -> list[Any]:
        return [self.np.asarray(o) for o in self.session.run(None, {self.input: x})]


class EtProgram(Program):
    """ExecuTorch program through ``executorch.runtime`` (which works on torch tensors), method ``forward``."""

    def __init__(self, artifact: bytes, threads: int) -> None:
        try:
            import torch  # noqa: PLC0415 - ExecuTorch's Python runtime takes torch tensors
            from executorch.runtime import Runtime  # noqa: PLC0415
        except Exception as exc:  # noqa: BLE001
            raise RequestError("runtime_unavailable", f"ExecuTorch is not usable on this device ({_first_line(exc)})"
                               ": pip install executorch") from None  # fmt: skip
        self.torch = torch
        applied: int | None = None
        try:
            from executorch.extension.pybindings import portable_lib  # noqa: PLC0415

            reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
            if reset is not None:
                reset(int(threads))
            count = getattr(portable_lib, "_threadpool_get_thread_count", None)
            applied = int(count()) if count is not None else None
        except Exception:  # noqa: BLE001 - threadpool control is best effort
            applied = None
        try:
            program = Runtime.get().load_program(artifact)  # default verification: InternalConsistency
            self.method = program.load_method("forward")
        except Exception as exc:  # noqa: BLE001
            raise RequestError("invalid_artifact", f"ExecuTorch cannot load the program: {_first_line(exc)}") from None
        self._program = program  # keeps the program (and its buffer) alive with the method
        self.details = {"executorch": _dist_version("executorch"), "threadpool_threads": applied}

    def bind(self, shape: tuple[int, ...]) -> Callable[[], object]:
        gen = self.torch.Generator().manual_seed(0)
        inputs = (self.torch.randn(*shape, generator=gen),)
        method = self.method

        def run() -> object:
            return method.execute(inputs)

        return run

    def run(self, x: Any) -> list[Any]:
        outs = self.method.execute((self.torch.from_numpy(x),))
        return [o.detach().cpu().numpy() if hasattr(o, "numpy") else o for o in outs]


# --------------------------------------------------------------------------- timing


def timing_loop(fn: Callable[[], object], *, threads: int, warmup: int, min_repeats: int, max_repeats: int,
                round_size: int, rel_tol: float, max_seconds: float, clock: str) -> dict[str, Any]:  # fmt: skip
    """Warm-up, then rounds of timed runs until the median settles (edgecnn's ``time_fn`` rule) or a cap.

    Every run is timed with ``time.perf_counter_ns`` (wall) and a CPU clock around
    it: the calling thread's CPU time with one thread (the inference then runs
    on it, as edgecnn's ``cpu`` clock), the process's with more. ``clock`` picks
    which of the two the stopping rule watches. The warm-up stops early once it
    took ``max_seconds``, so a request's duration stays bounded.
    """
    thread_clock = getattr(time, "thread_time_ns", None)
    cpu_clock = thread_clock if threads == 1 and thread_clock is not None else time.process_time_ns
    wall_clock = time.perf_counter_ns
    t_start = time.perf_counter()
    done_warmup = 0
    for _ in range(warmup):
        fn()
        done_warmup += 1
        if time.perf_counter() - t_start > max_seconds:
            break
    wall: list[float] = []
    cpu: list[float] = []
    samples = wall if clock == "wall" else cpu
    previous: float | None = None
    start = time.perf_counter()
    while True:
        for _ in range(round_size):
            c0 = cpu_clock()
            t0 = wall_clock()
            fn()
            t1 = wall_clock()
            c1 = cpu_clock()
            wall.append((t1 - t0) / 1e6)
            cpu.append((c1 - c0) / 1e6)
        stop = len(samples) >= max_repeats or time.perf_counter() - start > max_seconds
        stable = False
        if len(samples) >= min_repeats:
            median = statistics.median(samples)
            stable = previous is not None and abs(median - previous) <= rel_tol * previous
            previous = median
        if stable or stop:
            return {
                "wall_ms": wall, "cpu_ms": cpu, "stable": stable, "warmup_runs": done_warmup,
                "cpu_clock": "thread" if cpu_clock is thread_clock else "process",
                "timed_s": round(time.perf_counter() - start, 6),
            }  # fmt: skip


# --------------------------------------------------------------------------- request fields


def _field(req: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = req.get(name, default)
    if value is None and default is None and name not in req:
        raise RequestError("bad_request", f"missing field {name!r}")
    # bool is an int in Python; never accept it where a number is asked for
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise RequestError("bad_request", f"field {name!r} must be {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise RequestError("bad_request", f"field {name!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _int(req: dict[str, Any], name: str, lo: int, hi: int, default: int | None = None) -> int:
    value = _field(req, name, int, default)
    if not lo <= value <= hi:
        raise RequestError("bad_request", f"field {name!r} must be in [{lo}, {hi}], got {value}")
    return int(value)


def _float(req: dict[str, Any], name: str, lo: float, hi: float, default: float | None = None) -> float:
    value = float(_field(req, name, (int, float), default))
    if not lo < value <= hi:
        raise RequestError("bad_request", f"field {name!r} must be in ({lo:g}, {hi:g}], got {value}")
    return value


def _choice(req: dict[str, Any], name: str, choices: tuple[str, ...], default: str | None = None) -> str:
    value = _field(req, name, str, default)
    if value not in choices:
        raise RequestError("bad_request", f"field {name!r} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _sha(req: dict[str, Any]) -> str:
    value = _field(req, "sha256", str)
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise RequestError("bad_request", "field 'sha256' must be 64 lowercase hex digits")
    return str(value)


def _shape(req: dict[str, Any], name: str, max_elements: int) -> tuple[int, ...]:
    value = _field(req, name, list)
    if not 1 <= len(value) <= 8 or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 20
                                           for d in value):  # fmt: skip
        raise RequestError("bad_request", f"field {name!r} must be 1 to 8 positive integers, got {value!r}")
    n = 1
    for d in value:
        n *= d
    if n > max_elements:
        raise RequestError("bad_request", f"{name} {value} has {n:,} elements, over the limit of {max_elements:,}")
    return tuple(int(d) for d in value)


# --------------------------------------------------------------------------- the agent


class AgentConfig:
    """What ``python3 server.py`` / ``edgecnn agent`` was started with."""

    def __init__(self, *, token: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 max_bytes: int = DEFAULT_MAX_BYTES, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 timeout_s: float = DEFAULT_TIMEOUT_S, busy_wait_s: float = DEFAULT_BUSY_WAIT_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, quiet: bool = False) -> None:  # fmt: skip
        if not token:
            raise ValueError("the agent needs a non-empty token")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {port}")
        if max_bytes < 1 or cache_bytes < 0 or timeout_s <= 0 or busy_wait_s < 0 or max_connections < 1:
            raise ValueError("max_bytes, timeout and max_connections must be positive; cache_bytes, busy_wait >= 0")
        self.token = token
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.cache_bytes = cache_bytes
        self.timeout_s = timeout_s
        self.busy_wait_s = busy_wait_s
        self.max_connections = max_connections
        self.quiet = quiet


class Agent:
    """The request handlers and shared state (cache, measurement lock); transport-independent."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.cache = ArtifactCache(config.cache_bytes)
        self.measure_lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(config.max_connections)
        self._program_key: tuple[Any, ...] | None = None
        self._program: Program | None = None
        self._token = config.token.encode("utf-8")
        self._log_lock = threading.Lock()

    # -- helpers

    def log(self, text: str) -> None:
        if not self.config.quiet:
            with self._log_lock:
                print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def authorized(self, req: dict[str, Any]) -> bool:
        token = req.get("token")
        return isinstance(token, str) and hmac.compare_digest(token.encode("utf-8"), self._token)

    @contextmanager
    def measuring(self) -> Iterator[None]:
        """Hold the measurement lock (one timing or run at a time), or answer ``busy`` after ``busy_wait_s``."""
        if not self.measure_lock.acquire(timeout=self.config.busy_wait_s):
            raise RequestError("busy", f"another measurement is running on this device; waited "
                               f"{self.config.busy_wait_s:g} s (--busy-wait). Try again later")  # fmt: skip
        try:
            yield
        finally:
            self.measure_lock.release()

    def accept_artifact(self, runtime: str, sha: str, payload: bytes) -> None:
        """Check an uploaded artifact (digest, format for ``runtime``) and cache it."""
        digest = hashlib.sha256(payload).hexdigest()
        if digest != sha:
            raise RequestError("invalid_artifact", f"payload sha256 {digest} differs from the declared {sha}")
        ARTIFACT_CHECKS[runtime](payload)
        self.cache.put(sha, payload)

    def artifact(self, sha: str, payload: bytes | None) -> bytes:
        data = payload if payload else self.cache.get(sha)
        if data is None:
            raise RequestError("missing_artifact", f"artifact {sha[:12]}… is not cached here; send it as the payload")
        return data

    def program(self, runtime: str, sha: str, artifact: bytes, threads: int,
                providers: list[str] | None) -> tuple[Program, float]:  # fmt: skip
        """The loaded artifact (the last one is kept loaded) and the load time in ms. Call under the lock."""
        key = (runtime, sha, threads, tuple(providers or ()))
        if self._program_key == key and self._program is not None:
            return self._program, 0.0
        self._program = self._program_key = None
        ARTIFACT_CHECKS[runtime](artifact)  # also for cached bytes first uploaded for another runtime
        t0 = time.perf_counter()
        try:
            prog: Program = OrtProgram(artifact, threads, providers) if runtime == "onnxruntime" \
                else EtProgram(artifact, threads)  # fmt: skip
        except RequestError as exc:
            if exc.code == "invalid_artifact":
                self.cache.discard(sha)  # the runtime refuses it: keep no junk
            raise
        self._program, self._program_key = prog, key
        return prog, (time.perf_counter() - t0) * 1e3

    def limits(self) -> dict[str, Any]:
        c = self.config
        return {"max_bytes": c.max_bytes, "max_json": MAX_JSON, "cache_bytes": c.cache_bytes,
                "timeout_s": c.timeout_s, "busy_wait_s": c.busy_wait_s, "max_connections": c.max_connections,
                "max_seconds": MAX_SECONDS_CAP}  # fmt: skip

    # -- operations: (request, payload) -> (response, response payload)

    def op_hello(self, req: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        return {"agent": AGENT_NAME, "agent_version": AGENT_VERSION, "protocol": PROTOCOL_VERSION,
                "fingerprint": fingerprint(), "limits": self.limits(),
                "cache": {"artifacts": len(self.cache), "bytes": self.cache.total}}, b""  # fmt: skip

    def op_bye(self, req: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        return {}, b""

    def op_put(self, req: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        runtime, sha = _choice(req, "runtime", RUNTIMES), _sha(req)
        if not payload:
            raise RequestError("bad_request", "put needs the artifact as the payload")
        had = self.cache.get(sha) is not None
        self.accept_artifact(runtime, sha, payload)
        return {"sha256": sha, "already_cached": had, "kept": self.cache.get(sha) is not None}, b""

    def op_time(self, req: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        runtime, sha = _choice(req, "runtime", RUNTIMES), _sha(req)
        shape = _shape(req, "input_shape", max(1, self.config.max_bytes // 4))
        threads = _int(req, "threads", 1, 1024, 1)
        warmup = _int(req, "warmup", 0, 100_000, 10)
        min_repeats = _int(req, "min_repeats", 1, 1_000_000, 20)
        max_repeats = _int(req, "max_repeats", min_repeats, 1_000_000, 500)
        round_size = _int(req, "round_size", 1, 100_000, 10)
        rel_tol = _float(req, "rel_tol", 0.0, 1.0, 0.01)
        max_seconds = _float(req, "max_seconds", 0.0, MAX_SECONDS_CAP, 10.0)
        clock = _choice(req, "clock", ("wall", "cpu"), "wall")
        providers = _providers(req)
        uploaded = bool(payload)
        if payload:
            self.accept_artifact(runtime, sha, payload)
        artifact = self.artifact(sha, payload)
        with self.measuring():
            prog, load_ms = self.program(runtime, sha, artifact, threads, providers)
            try:
                fn = prog.bind(shape)
                fn()  # one untimed run: a shape the model does not take fails here, cleanly
            except RequestError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise RequestError("runtime_error", f"{runtime} failed to run the model on input {list(shape)}: "
                                   f"{_first_line(exc)}") from None  # fmt: skip
            before = fingerprint()
            with ForeignCpu() as foreign:
                result = timing_loop(fn, threads=threads, warmup=warmup, min_repeats=min_repeats,
                                     max_repeats=max_repeats, round_size=round_size, rel_tol=rel_tol,
                                     max_seconds=max_seconds, clock=clock)  # fmt: skip
            after = {"cpufreq": cpufreq(), "thermal": thermal()}
        return {
            "runtime": runtime, "sha256": sha, "uploaded": uploaded, "load_ms": round(load_ms, 3),
            "input_shape": list(shape), "threads": threads, "clock": clock, **result,
            "foreign_cpu": foreign.share, "details": prog.details, "fingerprint": before, "after": after,
        }, b""  # fmt: skip

    def op_run(self, req: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        runtime, sha = _choice(req, "runtime", RUNTIMES), _sha(req)
        shape = _shape(req, "input_shape", max(1, self.config.max_bytes // 4))
        threads = _int(req, "threads", 1, 1024, 1)
        providers = _providers(req)
        n = 1
        for d in shape:
            n *= d
        if len(payload) != 4 * n:
            raise RequestError("bad_request", f"run needs {4 * n:,} payload bytes (float32 {list(shape)}), "
                               f"got {len(payload):,}")  # fmt: skip
        artifact = self.artifact(sha, None)
        with self.measuring():
            prog, load_ms = self.program(runtime, sha, artifact, threads, providers)
            try:
                import numpy as np  # noqa: PLC0415 - present wherever a runtime is

                x = np.frombuffer(payload, dtype="<f4").reshape(shape).astype(np.float32)
                outs = [np.ascontiguousarray(np.asarray(o, dtype="<f4")) for o in prog.run(x)]
            except Exception as exc:  # noqa: BLE001
                raise RequestError("runtime_error", f"{runtime} failed to run the model on input {list(shape)}: "
                                   f"{_first_line(exc)}") from None  # fmt: skip
        blob = b"".join(o.tobytes() for o in outs)
        if len(blob) > self.config.max_bytes:
            raise RequestError("too_large", f"outputs of {len(blob):,} bytes over --max-bytes; send a smaller batch")
        return {"runtime": runtime, "sha256": sha, "load_ms": round(load_ms, 3),
                "outputs": [{"shape": list(o.shape), "dtype": "float32"} for o in outs]}, blob  # fmt: skip

    # -- one connection

    def serve_connection(self, sock: socket.socket, peer: str) -> None:
        """Answer requests on ``sock`` until ``bye``, an error that ends the connection, or a timeout."""
        conn = Connection(sock, self.config.timeout_s)
        if not self.slots.acquire(blocking=False):
            self._send_error(conn, "busy", f"too many connections (--max-connections {self.config.max_connections})")
            conn.linger_close()
            return
        try:
            while self._serve_one(conn, peer):
                pass
        except Exception as exc:  # noqa: BLE001 - never let one connection take the agent down
            self.log(f"{peer}: internal error {type(exc).__name__}: {exc}")
            self._send_error(conn, "internal", f"{type(exc).__name__}: {_first_line(exc)}")
        finally:
            conn.linger_close()
            self.slots.release()

    def _serve_one(self, conn: Connection, peer: str) -> bool:
        """One request and its response; False when the connection is to be closed."""
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout_s
        op = "?"
        try:
            json_len, payload_len = decode_header(conn.recv_exact(HEADER.size, deadline, started=False),
                                                  max_json=MAX_JSON, max_payload=cfg.max_bytes)  # fmt: skip
            req = decode_json(conn.recv_exact(json_len, deadline, started=True))
            if not self.authorized(req):
                raise RequestError("unauthorized", "wrong or missing token", close=True)
            op = req.get("op") if isinstance(req.get("op"), str) else "?"
            handler = getattr(self, f"op_{op}", None) if op in ("hello", "time", "run", "put", "bye") else None
            if handler is None:
                raise RequestError("unknown_op", f"unknown op {str(req.get('op'))[:64]!r}; valid: hello, time, run, "
                                   "put, bye", close=True)  # fmt: skip
            if payload_len and op not in PAYLOAD_OPS:
                raise RequestError("bad_request", f"op {op!r} takes no payload", close=True)
            payload_deadline = time.monotonic() + cfg.timeout_s + payload_len / MIN_UPLOAD_RATE
            payload = conn.recv_exact(payload_len, payload_deadline, started=True) if payload_len else b""
        except _Closed as exc:
            if exc.partial:
                self.log(f"{peer}: connection closed in the middle of a message ({op}); dropped")
            return False
        except _Timeout as exc:
            if exc.partial:
                self.log(f"{peer}: message not complete within the time limit ({op}); connection closed")
                self._send_error(conn, "timeout", "message not complete within the time limit (--timeout)")
            return False
        except RequestError as exc:
            self.log(f"{peer}: refused ({exc.code}): {exc.message}")
            self._send_error(conn, exc.code, exc.message)
            return False
        t0 = time.perf_counter()
        try:
            response, out = handler(req, payload)
            response = {"ok": True, "op": op, **response}
        except RequestError as exc:
            self.log(f"{peer}: {op} failed ({exc.code}): {exc.message}")
            return self._send_error(conn, exc.code, exc.message, op=op) and not exc.close
        try:
            conn.send(response, out)
        except OSError:
            return False
        self.log(f"{peer}: {op} ok in {(time.perf_counter() - t0) * 1e3:.1f} ms")
        return op != "bye"

    def _send_error(self, conn: Connection, code: str, message: str, op: str | None = None) -> bool:
        try:
            conn.send({"ok": False, "op": op, "error": {"code": code, "message": message}})
            return True
        except OSError:
            return False


def _providers(req: dict[str, Any]) -> list[str] | None:
    value = req.get("providers")
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= 8 or not all(isinstance(p, str) for p in value):
        raise RequestError("bad_request", "field 'providers' must be a list of 1 to 8 provider names")
    return list(value)


# --------------------------------------------------------------------------- server


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        host, port = self.client_address[:2]
        self.server.agent.serve_connection(self.request, f"{host}:{port}")  # type: ignore[attr-defined]


class AgentServer(socketserver.ThreadingTCPServer):
    """A thread per connection (bounded by the agent's connection slots); measurements serialised by a lock."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, config: AgentConfig) -> None:
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.agent = Agent(config)
        super().__init__((config.host, config.port), _Handler)

    @property
    def address(self) -> str:
        """``HOST:PORT`` actually bound (``[v6]:PORT`` for IPv6), the port resolved when 0 was asked."""
        host, port = self.server_address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:  # pragma: no cover - serve_connection catches
        self.agent.log(f"{client_address}: unhandled error in the connection thread")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The agent's options (shared by ``python3 server.py`` and ``edgecnn agent``)."""
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; use an SSH tunnel, "
                   "see docs/agent.md — 0.0.0.0 exposes the agent to the network, with the token in clear)")  # fmt: skip
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any free)")
    p.add_argument("--token", default=None,
                   help=f"shared secret every request must carry (default: ${ENV_TOKEN}, else a random one is "
                   "printed); visible to other users in `ps` — prefer the environment variable")  # fmt: skip
    p.add_argument("--max-bytes", type=_size, default=DEFAULT_MAX_BYTES,
                   help=f"largest payload (artifact or input batch) accepted, e.g. 64M (default {_mib(DEFAULT_MAX_BYTES)})")
    p.add_argument("--cache-bytes", type=_size, default=DEFAULT_CACHE_BYTES,
                   help=f"artifact cache size, least recently used dropped first (default {_mib(DEFAULT_CACHE_BYTES)})")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds a request may take to arrive (+1 s per 64 KiB of payload) and a connection may "
                   f"sit idle (default {DEFAULT_TIMEOUT_S:g})")  # fmt: skip
    p.add_argument("--busy-wait", type=_nonnegative_float, default=DEFAULT_BUSY_WAIT_S,
                   help=f"seconds a timing waits for another one to finish before answering busy "
                   f"(default {DEFAULT_BUSY_WAIT_S:g})")  # fmt: skip
    p.add_argument("--max-connections", type=_positive_int, default=DEFAULT_MAX_CONNECTIONS,
                   help=f"connections served at once (default {DEFAULT_MAX_CONNECTIONS})")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines on stderr")


def config_from_args(args: argparse.Namespace) -> tuple[AgentConfig, bool]:
    """The :class:`AgentConfig` of parsed options, and whether the token was generated here."""
    token = args.token or os.environ.get(ENV_TOKEN) or ""
    generated = not token
    if generated:
        token = secrets.token_urlsafe(24)
    return AgentConfig(token=token, host=args.host, port=args.port, max_bytes=args.max_bytes,
                       cache_bytes=args.cache_bytes, timeout_s=args.timeout, busy_wait_s=args.busy_wait,
                       max_connections=args.max_connections, quiet=args.quiet), generated  # fmt: skip


def serve(config: AgentConfig, *, token_generated: bool = False, ready: Callable[[AgentServer], None] | None = None,
          stdout: Any = None) -> int:  # fmt: skip
    """Listen and serve until interrupted (Ctrl-C / SIGTERM); prints ``listening on HOST:PORT`` first."""
    out = stdout or sys.stdout
    if not is_loopback(config.host):
        print(f"warning: listening on {config.host}, reachable from the network: the token and the models travel "
              "in clear. Prefer --host 127.0.0.1 with an SSH tunnel from the host "
              f"(ssh -N -L {config.port or DEFAULT_PORT}:127.0.0.1:{config.port or DEFAULT_PORT} user@device); "
              "see docs/agent.md", file=sys.stderr, flush=True)  # fmt: skip
    if len(config.token) < 16 and not token_generated:
        print("warning: the token is short; use at least 16 random characters", file=sys.stderr, flush=True)
    server = AgentServer(config)
    try:
        if token_generated:
            print(f"token {config.token}", file=out, flush=True)
        print(f"listening on {server.address}", file=out, flush=True)
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _sigterm_exits() -> None:
    import signal  # noqa: PLC0415

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    """``python3 server.py [options]``."""
    p = argparse.ArgumentParser(prog="server.py", description="edgecnn device agent: times models on this device "
                                "for a host running edgecnn (docs/agent.md).")  # fmt: skip
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        config, generated = config_from_args(args)
    except ValueError as exc:
        p.error(str(exc))
    _sigterm_exits()
    try:
        return serve(config, token_generated=generated)
    except OSError as exc:
        print(f"server.py: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------- option types


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], got {text}")
    return v


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size such as 67108864, 64M or 1G, got {text!r}")
    v = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    if not 1 <= v <= 1 << 40:
        raise argparse.ArgumentTypeError(f"must be between 1 byte and 1 TiB, got {text}")
    return v


def _mib(n: int) -> str:
    return f"{n // (1 << 20)}M"


def _float_from(zero_ok: bool) -> Callable[[str], float]:
    """An argparse type: a number below 1e6 that is > 0 (``>= 0`` with ``zero_ok``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (0 <= v if zero_ok else 0 < v) or not v < 1e6:
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero_ok else '>'} 0, got {text}")
        return v

    return parse


_positive_float = _float_from(zero_ok=False)
_nonnegative_float = _float_from(zero_ok=True)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= v <= 4096:
        raise argparse.ArgumentTypeError(f"must be in [1, 4096], got {text}")
    return v


if __name__ == "__main__":
    sys.exit(main())
