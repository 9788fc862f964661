"""The device agent (edgecnn.agent): a real agent process on loopback, the host-side client, hostile peers.

The agent runs as a separate process from a copy of ``server.py`` with ``torch``
and ``edgecnn`` made unimportable, as it would on a bare device. Every hostile
case ends by checking that the same agent still answers a good request.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import edgecnn
from edgecnn.latency.remote import (
    AgentBusyError,
    AgentClient,
    AgentConnectionError,
    AgentError,
    AgentTimeoutError,
    measure_remote,
    parse_address,
)
from edgecnn.agent import server as agent_server
from edgecnn.export import onnx_bytes
from edgecnn.latency.measure import TimingConfig, example_input, measure

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOKEN = "test-token-0123456789abcdef"
ARCH = "conv_k3_c16 ir_s2_e3_c16 gap fc"
SHAPE = (1, 3, 32, 32)
MAX_BYTES = 4 * 1024 * 1024  # the test agent's --max-bytes
IDLE_S = 1.0  # the test agent's --timeout
QUICK = TimingConfig(warmup=3, min_repeats=20, max_repeats=200, max_seconds=0.5, retries=0)
SERVER = Path(agent_server.__file__)
# Runs the copied server.py as a script with torch and edgecnn unimportable: what a bare device has.
LAUNCH = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['edgecnn'] = None; "
          "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")  # fmt: skip
HEADER = struct.Struct(">4sHHIQ")


# --------------------------------------------------------------------------- fixtures and helpers


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    address: str
    log: Path

    def client(self, token: str = TOKEN, timeout: float = 10.0) -> AgentClient:
        return AgentClient(self.address, token, timeout=timeout)


def start_agent(folder: Path, *args: str, argv: list[str] | None = None, env: dict[str, str] | None = None) -> Agent:
    """Start an agent process on 127.0.0.1 with --port 0; read the port it prints."""
    script = folder / "server.py"
    shutil.copy(SERVER, script)
    log = folder / "agent.log"
    cmd = argv or [sys.executable, "-c", LAUNCH, str(script)]
    with open(log, "wb") as err:
        proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", "0", "--token", TOKEN, *args],
                                stdout=subprocess.PIPE, stderr=err, cwd=folder, env=env)  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("listening on "):
        stop(proc)
        raise AssertionError(f"agent did not start: {line!r}; log: {log.read_text()[-2000:]}")
    return Agent(proc, line.split()[-1], log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_agent(tmp_path_factory.mktemp("agent"), "--timeout", str(IDLE_S), "--busy-wait", "0.3",
                    "--max-bytes", str(MAX_BYTES))  # fmt: skip
    try:
        yield a
    finally:
        stop(a.proc)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return edgecnn.build(ARCH, num_classes=10).eval()


@pytest.fixture(scope="module")
def artifact(model: torch.nn.Module) -> bytes:
    return onnx_bytes(model, example_input(SHAPE))


def fresh_artifact(seed: int) -> bytes:
    """An ONNX model no other test has sent (a different sha256)."""
    torch.manual_seed(seed)
    return onnx_bytes(edgecnn.build(ARCH, num_classes=10).eval(), example_input(SHAPE))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def connect(agent: Agent) -> socket.socket:
    host, port = parse_address(agent.address)
    sock = socket.create_connection((host, port), timeout=5)
    sock.settimeout(5)
    return sock


def frame(obj: dict | bytes, payload_len: int | None = None, *, payload: bytes = b"", version: int = 1) -> bytes:
    """A message as the protocol lays it out: header, JSON, payload (``payload_len`` may lie)."""
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    n = len(payload) if payload_len is None else payload_len
    return HEADER.pack(b"ECNA", version, 0, len(body), n) + body + payload


def read_reply(sock: socket.socket, timeout: float = 5.0) -> dict | None:
    """The next answer's JSON, None when the agent closed the connection first."""
    sock.settimeout(timeout)
    buf = b""
    try:
        while len(buf) < HEADER.size:
            chunk = sock.recv(HEADER.size - len(buf))
            if not chunk:
                return None
            buf += chunk
        magic, version, _, json_len, payload_len = HEADER.unpack(buf)
        assert (magic, version) == (b"ECNA", 1)
        body = b""
        while len(body) < json_len + payload_len:
            chunk = sock.recv(json_len + payload_len - len(body))
            if not chunk:
                return None
            body += chunk
    except ConnectionResetError:
        return None
    return json.loads(body[:json_len])


def closed_by_agent(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the agent closes ``sock`` within ``timeout`` (any answer before the close is read and dropped)."""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            sock.settimeout(max(0.01, end - time.monotonic()))
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def refused(sock: socket.socket, code: str) -> dict:
    """The agent answered an error ``code`` and then closed the connection."""
    reply = read_reply(sock)
    assert reply is not None and reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    assert closed_by_agent(sock)
    return reply


def assert_serving(agent: Agent) -> None:
    """The agent process is alive and answers a good request on a new connection."""
    assert agent.proc.poll() is None, agent.log.read_text()[-2000:]
    with agent.client() as c:
        assert c.hello()["ok"] is True


def missing(agent: Agent, data: bytes) -> bool:
    """Whether the agent lacks ``data`` (a time request without payload is answered missing_artifact)."""
    with connect(agent) as sock:
        sock.sendall(frame({"op": "time", "token": TOKEN, "runtime": "onnxruntime", "sha256": sha(data),
                            "input_shape": list(SHAPE)}))  # fmt: skip
        reply = read_reply(sock)
    assert reply is not None
    return reply["ok"] is False and reply["error"]["code"] == "missing_artifact"


# --------------------------------------------------------------------------- the agent file itself


def test_server_is_a_standalone_stdlib_file() -> None:
    """Importable with torch, numpy, onnxruntime and edgecnn all unavailable; Python 3.8 syntax."""
    blocked = "torch numpy onnxruntime edgecnn executorch".split()
    code = (f"import runpy, sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            f"ns = runpy.run_path({str(SERVER)!r})\nassert callable(ns['main'])\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {blocked!r} and sys.modules[m] is not None))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    ast.parse(SERVER.read_text(), feature_version=(3, 8))


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_address(" raspberrypi.local:9000 ") == ("raspberrypi.local", 9000)
    assert parse_address("[::1]:8765") == ("::1", 8765)
    for bad, why in [("", "empty"), ("127.0.0.1", "no port"), ("host:0", "bad port"), ("host:65536", "bad port"),
                     ("host:http", "bad port"), (":8765", "bad host"), ("::1:8765", "brackets"),
                     ("[::1]8765", "IPv6"), ("a b:1", "bad host")]:  # fmt: skip
        with pytest.raises(ValueError, match=why):
            parse_address(bad)
    with pytest.raises(ValueError, match="token"):
        AgentClient("127.0.0.1:1", "")


def test_onnx_check_accepts_exports_and_refuses_external_data(artifact: bytes) -> None:
    from onnx import TensorProto, helper

    agent_server.check_onnx(artifact)  # a real export passes
    # a Constant node whose tensor lives in a file on the device: /etc/hostname
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("float_data")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/hostname"
    node = helper.make_node("Constant", [], ["y"], value=tensor)
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    sneaky = helper.make_model(graph).SerializeToString()
    with pytest.raises(agent_server.RequestError, match="external data"):
        agent_server.check_onnx(sneaky)
    for junk in (b"", b"\xff" * 64, artifact[:-7], b"\x08\x07"):  # no graph in the last one
        with pytest.raises(agent_server.RequestError, match="not an ONNX model"):
            agent_server.check_onnx(junk)
    with pytest.raises(agent_server.RequestError, match="ExecuTorch"):
        agent_server.check_pte(artifact)


def test_artifact_cache_is_lru_bounded_by_bytes() -> None:
    cache = agent_server.ArtifactCache(10)
    for name in "abc":
        assert cache.put(name, name.encode() * 4)
        if name == "b":
            assert cache.get("a") is not None  # a is now the most recently used
    assert cache.get("b") is None and cache.get("a") == b"aaaa" and cache.get("c") == b"cccc"
    assert cache.total == 8
    assert not cache.put("big", b"x" * 11) and cache.get("big") is None


# --------------------------------------------------------------------------- good requests


def test_hello_returns_the_device_fingerprint(agent: Agent) -> None:
    with agent.client() as c:
        h = c.hello()
    fp = h["fingerprint"]
    assert h["agent"] == "edgecnn-agent" and h["protocol"] == 1
    assert fp["cores"] == os.cpu_count() and fp["system"].startswith(os.uname().sysname)
    assert fp["cpu"] and fp["python"].count(".") == 2
    assert fp["runtimes"]["onnxruntime"] == ort.__version__
    assert isinstance(fp["cpu_flags"], list) and isinstance(fp["thermal"], list) and isinstance(fp["cpufreq"], list)
    assert h["limits"]["max_bytes"] == MAX_BYTES and h["limits"]["timeout_s"] == IDLE_S


def test_remote_latency_is_the_local_latency(agent: Agent, model: torch.nn.Module) -> None:
    with agent.client() as c:
        remote = measure_remote(model, SHAPE, client=c, config=QUICK, label="tiny")
        table_fp = c.device_fingerprint(threads=1)
    local = measure(model, SHAPE, backend="onnxruntime", threads=1, config=QUICK)
    s = remote.stats
    assert s.repeats >= QUICK.min_repeats and 0 < s.min_ms <= s.median_ms <= s.q3_ms
    ratio = s.median_ms / local.stats.median_ms
    assert 1 / 5 < ratio < 5, (s, local.stats)  # same CPU, same runtime: same latency up to a shared machine's noise
    fp = remote.fingerprint
    assert table_fp == fp  # what a latency table for the device is opened with
    assert fp.device == agent.address and fp.backend == "onnxruntime" and fp.threads == 1
    assert fp.cpu == local.fingerprint.cpu and fp.cores == local.fingerprint.cores
    assert fp.runtime == ort.__version__ and fp.isa == local.fingerprint.isa
    r = remote.extra["remote"]
    assert r["address"] == agent.address and r["fingerprint"]["runtimes"]["onnxruntime"] == ort.__version__
    assert remote.to_dict()["fingerprint"]["device"] == agent.address and remote.label == "tiny"


def test_second_timing_hits_the_cache(agent: Agent) -> None:
    art = fresh_artifact(1)
    assert missing(agent, art)
    with agent.client() as c:
        first = c.time(art, input_shape=SHAPE, config=QUICK)
        assert first.uploaded and c.uploads == 1 and first.load_ms > 0
        second = c.time(art, input_shape=SHAPE, config=QUICK)
    assert not second.uploaded and c.uploads == 1  # no payload sent the second time
    assert second.load_ms == 0  # and the session was still loaded
    assert len(second.wall_ms) == len(second.cpu_ms) >= QUICK.min_repeats
    assert second.cpu_clock == "thread"
    assert not missing(agent, art)


def test_run_gives_the_local_logits(agent: Agent) -> None:
    torch.manual_seed(5)
    net = edgecnn.build(ARCH, num_classes=10).eval()
    art = onnx_bytes(net, example_input(SHAPE))
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    local = ort.InferenceSession(art, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with agent.client() as c:
        remote = c.run(art, x)  # not cached yet: uploaded with `put`, then run
        assert c.uploads == 1
        np.testing.assert_allclose(remote, local, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(remote, net(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
        assert np.array_equal(c.run(art, x), remote) and c.uploads == 1  # cached: nothing sent but the batch
        # a batch the model was not exported for: a clean error, and the agent goes on
        with pytest.raises(AgentError) as err:
            c.run(art, np.zeros((4, 3, 32, 32), np.float32))
        assert err.value.code == "runtime_error"
    assert_serving(agent)


def test_one_timing_at_a_time(agent: Agent, artifact: bytes) -> None:
    long = TimingConfig(warmup=0, min_repeats=10**6, max_repeats=10**6, rel_tol=1e-12, max_seconds=1.5, retries=0)
    with agent.client() as c:
        c.time(artifact, input_shape=SHAPE, config=QUICK)  # cached and loaded: the next one starts at once
    results: list[object] = []

    def long_timing() -> None:
        with agent.client() as c:
            results.append(c.time(artifact, input_shape=SHAPE, config=long))

    t = threading.Thread(target=long_timing)
    t.start()
    try:
        time.sleep(0.5)
        with agent.client() as c:
            assert c.hello()["ok"]  # requests that measure nothing are still answered
            with pytest.raises(AgentBusyError, match="another measurement"):
                c.time(artifact, input_shape=SHAPE, config=QUICK)
    finally:
        t.join(30)
    assert len(results) == 1 and len(results[0].wall_ms) > 100  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- hostile peers


def test_wrong_token(agent: Agent) -> None:
    with agent.client(token="not-the-token") as c, pytest.raises(AgentError) as err:
        c.hello()
    assert err.value.code == "unauthorized" and agent.address in str(err.value)
    # with an upload: refused before the payload is read, and nothing is cached
    art = fresh_artifact(2)
    with connect(agent) as sock:
        sock.sendall(frame({"op": "put", "token": "x" * len(TOKEN), "runtime": "onnxruntime", "sha256": sha(art)},
                           payload=art))  # fmt: skip
        refused(sock, "unauthorized")
    with connect(agent) as sock:  # no token at all
        sock.sendall(frame({"op": "hello"}))
        refused(sock, "unauthorized")
    assert missing(agent, art)
    assert_serving(agent)


def test_oversized_declarations_are_refused_before_the_body_is_read(agent: Agent) -> None:
    # only the 20-byte header is sent: the answer comes without the agent waiting for the JSON or the payload
    with connect(agent) as sock:
        sock.sendall(HEADER.pack(b"ECNA", 1, 0, 40, MAX_BYTES + 1))
        reply = refused(sock, "too_large")
        assert "--max-bytes" in reply["error"]["message"]
    with connect(agent) as sock:
        sock.sendall(HEADER.pack(b"ECNA", 1, 0, 2**32 - 1, 0))
        refused(sock, "too_large")
    with connect(agent) as sock:
        sock.sendall(HEADER.pack(b"ECNA", 1, 0, 40, 2**64 - 1))
        refused(sock, "too_large")
    assert_serving(agent)


def test_malformed_headers(agent: Agent) -> None:
    with connect(agent) as sock:  # somebody's browser
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        refused(sock, "bad_header")
    with connect(agent) as sock:
        sock.sendall(frame({"op": "hello", "token": TOKEN}, version=99))
        refused(sock, "bad_version")
    with connect(agent) as sock:
        sock.sendall(HEADER.pack(b"ECNA", 1, 0, 0, 0))
        refused(sock, "bad_header")
    with connect(agent) as sock:  # half a header, then gone
        sock.sendall(b"ECNA\x00")
    assert_serving(agent)


def test_invalid_json(agent: Agent) -> None:
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe{}", b'{"op": "hello", "token": "%s", "x": NaN}' % TOKEN.encode(),
                 b"[" * 20000 + b"]" * 20000):  # fmt: skip
        with connect(agent) as sock:
            sock.sendall(frame(body))
            refused(sock, "bad_json")
    assert_serving(agent)


def test_unknown_ops(agent: Agent) -> None:
    # nothing received is ever executed: an op names one of five handlers or is refused
    for op in ("exec", "serve_connection", "__init__", "log", None, 7):
        with connect(agent) as sock:
            sock.sendall(frame({"op": op, "token": TOKEN, "code": "import os; os.remove('x')"}))
            refused(sock, "unknown_op")
    with connect(agent) as sock:  # an op that takes no payload, with one
        sock.sendall(frame({"op": "hello", "token": TOKEN}, payload=b"1234"))
        refused(sock, "bad_request")
    assert_serving(agent)


def test_garbage_artifacts(agent: Agent, artifact: bytes) -> None:
    garbage = np.random.default_rng(0).bytes(4096)
    protobuf_but_no_model = b"\x08\x07\x3a\x00"  # ir_version 7 and an empty graph: passes the format check
    with agent.client() as c:
        for data, why in [(garbage, "not an ONNX model"), (protobuf_but_no_model, "ONNX Runtime cannot load")]:
            with pytest.raises(AgentError, match=why) as err:
                c.time(data, input_shape=SHAPE, config=QUICK)
            assert err.value.code == "invalid_artifact"
            assert missing(agent, data)  # refused artifacts are not cached
        # ONNX bytes sent as an ExecuTorch program: refused by the .pte identifier check, before any loading
        pte_claim = fresh_artifact(3)
        with pytest.raises(AgentError, match="not an ExecuTorch program") as err:
            c.time(pte_claim, input_shape=SHAPE, runtime="executorch", config=QUICK)
        assert err.value.code == "invalid_artifact"
    with connect(agent) as sock:  # a payload whose digest is not the one declared
        sock.sendall(frame({"op": "put", "token": TOKEN, "runtime": "onnxruntime", "sha256": sha(b"x")},
                           payload=artifact))  # fmt: skip
        reply = read_reply(sock)
        assert reply is not None and reply["error"]["code"] == "invalid_artifact" and "differs" in reply["error"]["message"]
    with connect(agent) as sock:  # fields of the wrong type
        sock.sendall(frame({"op": "time", "token": TOKEN, "runtime": "onnxruntime", "sha256": sha(artifact),
                            "input_shape": [1, 3, True, 32], "threads": 1}))  # fmt: skip
        reply = read_reply(sock)
        assert reply is not None and reply["error"]["code"] == "bad_request"
    assert_serving(agent)


def test_client_killed_mid_upload(agent: Agent) -> None:
    art = fresh_artifact(4)
    msg = frame({"op": "put", "token": TOKEN, "runtime": "onnxruntime", "sha256": sha(art)}, payload=art)
    with connect(agent) as sock:  # half the payload, then the client dies
        sock.sendall(msg[: len(msg) - len(art) // 2])
    assert_serving(agent)
    assert missing(agent, art)  # the half upload was dropped
    with connect(agent) as sock:  # half the payload, then the client hangs: dropped after the upload deadline
        sock.sendall(msg[: len(msg) - len(art) // 2])
        t0 = time.monotonic()
        assert closed_by_agent(sock, timeout=IDLE_S + 4)
        assert time.monotonic() - t0 < IDLE_S + 3
    assert missing(agent, art)
    assert_serving(agent)


def test_silent_and_trickling_connections_are_dropped(agent: Agent) -> None:
    with connect(agent) as silent:
        t0 = time.monotonic()
        assert_serving(agent)  # a silent connection does not block the others
        assert closed_by_agent(silent, timeout=IDLE_S + 4)
        assert IDLE_S * 0.5 < time.monotonic() - t0 < IDLE_S + 3
    with connect(agent) as slow:  # a valid message, one byte every 0.2 s: 20+ s if it were let through
        msg, t0, closed = frame({"op": "hello", "token": TOKEN}), time.monotonic(), False
        for i in range(len(msg)):
            try:
                slow.sendall(msg[i : i + 1])
            except OSError:
                closed = True
                break
            if closed_by_agent(slow, timeout=0.2):
                closed = True
                break
        assert closed and time.monotonic() - t0 < IDLE_S + 3
    assert_serving(agent)


# --------------------------------------------------------------------------- a dead agent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dead_agents_give_clean_errors(tmp_path: Path) -> None:
    # nothing listening
    c = AgentClient(f"127.0.0.1:{_free_port()}", TOKEN, timeout=3)
    t0 = time.monotonic()
    with pytest.raises(AgentConnectionError, match="cannot reach the edgecnn agent at 127.0.0.1:.*running"):
        c.hello()
    assert time.monotonic() - t0 < 3
    # an agent killed between two requests
    a = start_agent(tmp_path, "--quiet")
    try:
        c = a.client(timeout=3)
        assert c.hello()["ok"]
    finally:
        stop(a.proc)
    t0 = time.monotonic()
    with pytest.raises(AgentConnectionError, match=a.address):
        c.hello()
    assert time.monotonic() - t0 < 3
    # something that accepts the connection but never answers
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        c = AgentClient(f"127.0.0.1:{mute.getsockname()[1]}", TOKEN, timeout=1)
        t0 = time.monotonic()
        with pytest.raises(AgentTimeoutError, match="did not answer hello within 1 s"):
            c.hello()
        assert time.monotonic() - t0 < 3
        c.close()


def test_edgecnn_agent_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """``edgecnn agent`` serves the same agent (run in a thread here, stopped through the server it started)."""
    from edgecnn.cli.main import build_parser, main

    args = build_parser().parse_args(["agent", "--port", "0", "--token", TOKEN, "--max-bytes", "64M"])
    assert args.func.__name__ == "cmd_agent" and args.max_bytes == 64 << 20 and args.host == "127.0.0.1"
    started: list[agent_server.AgentServer] = []
    real_serve = agent_server.serve
    monkeypatch.setattr(agent_server, "serve", lambda config, **kw: real_serve(config, ready=started.append, **kw))
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(main(["agent", "--port", "0", "--token", TOKEN, "--quiet"])))
    t.start()
    try:
        for _ in range(200):
            if started or not t.is_alive():
                break
            time.sleep(0.05)
        assert started, "edgecnn agent did not start"
        with AgentClient(started[0].address, TOKEN, timeout=10) as c:
            assert c.hello()["agent"] == "edgecnn-agent"
    finally:
        if started:
            started[0].shutdown()
        t.join(10)
    assert codes == [0]
    assert agent_server.is_loopback("127.0.0.1") and agent_server.is_loopback("::1")
    assert not agent_server.is_loopback("0.0.0.0") and not agent_server.is_loopback("192.168.1.2")
