"""The ExecuTorch + XNNPACK target (edgecnn.latency.targets.executorch) against PyTorch itself.

fp32 ``.pte`` logits equal the module's; int8 (PT2E, XNNPACKQuantizer) agrees with fp32 on ≥ 95% of the digits
test set for a trained tiny net; threads=1 really runs on the calling thread alone (per-thread CPU time from
/proc); the delegated share is 1 for a net made of XNNPACK ops and below 1, naming the op, for one that is not;
the export stack's console noise stays out of a fresh process. Exports take seconds: module-scoped fixtures.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("executorch")

from edgecnn.build import build  # noqa: E402
from edgecnn.deploy import calibration_inputs, predictions  # noqa: E402
from edgecnn.latency.measure import TimingConfig, time_fn  # noqa: E402
from edgecnn.latency.targets import executorch as et_target  # noqa: E402
from edgecnn.latency.targets import get_target, target_names  # noqa: E402
from edgecnn.latency.targets.executorch import ExecuTorchTarget  # noqa: E402
from edgecnn.train.config import FINETUNE  # noqa: E402
from edgecnn.train.loop import finetune  # noqa: E402
from edgecnn.train.task import DataRef, worker_data  # noqa: E402

FAST = TimingConfig(warmup=2, min_repeats=5, max_repeats=20, max_seconds=0.5, max_foreign=None)
ARCH = "conv_k3_c16 ir_s2_e3_c16_se0.25_hswish ir_c16 gap fc"  # SE, hardswish, ReLU6, inverted residuals
TARGET = get_target("executorch")


@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, bytes]:
    """A random EdgeNet at 32×32 and its fp32 .pte."""
    torch.manual_seed(0)
    model = build(ARCH, num_classes=10, in_chans=1).eval()
    return model, TARGET.export(model, torch.zeros(1, 1, 32, 32))


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, object, bytes, bytes]:
    """A tiny net trained on 8×8 digits (channels-last, as edgecnn trains), its fp32 and int8 .pte."""
    data = worker_data(DataRef("digits", image_size=8))
    torch.manual_seed(0)
    model = build(ARCH, num_classes=10, in_chans=1)
    finetune(model, data, steps=60, config=replace(FINETUNE, lr=0.05, batch_size=64))
    model.eval()
    example = torch.zeros(1, 1, 8, 8)
    fp32 = TARGET.export(model, example)
    int8 = TARGET.export(model, example, calibration=calibration_inputs(data, 300))
    return model, data, fp32, int8


def _logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def test_registry_returns_the_target() -> None:
    assert "executorch" in target_names()
    t = get_target("executorch")
    assert isinstance(t, ExecuTorchTarget) and t is get_target("executorch")  # one instance per name
    assert (t.name, t.artifact_suffix, t.int8, t.profiles_layers) == ("executorch", ".pte", True, False)
    assert t.version() == importlib.metadata.version("executorch")


def test_version_is_none_without_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "executorch.extension.pybindings._C", None)
    et_target._version.cache_clear()
    try:
        assert TARGET.version() is None
        with pytest.raises(ValueError, match=r"needs its runtime: pip install 'edgecnn\[executorch\]'"):
            TARGET.export(nn.Linear(2, 2), torch.zeros(1, 2))
    finally:
        monkeypatch.undo()
        et_target._version.cache_clear()
    assert TARGET.version() is not None


def test_module_imports_and_says_none_where_executorch_is_missing() -> None:
    code = ("import sys; sys.modules['executorch'] = None\n"
            "from edgecnn.latency.targets import get_target\n"
            "t = get_target('executorch'); print(t.version())\n"
            "try:\n    t.require()\nexcept ValueError as e:\n    print(e)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.splitlines() == ["None", f"the executorch target needs its runtime: {ExecuTorchTarget.install}"]


def test_fp32_pte_equals_pytorch(small: tuple[nn.Module, bytes]) -> None:
    model, artifact = small
    program = TARGET.load(artifact, threads=1)
    torch.manual_seed(1)
    x = torch.randn(4, 1, 32, 32)  # four runs of the batch-1 program
    ref = _logits(model, x)
    out = program(x.numpy())
    assert out.shape == (4, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"takes inputs shaped \[1, 1, 32, 32\]"):
        program(np.zeros((1, 1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="runs on the CPU"):
        TARGET.load(artifact, threads=1, device="cuda")


def test_bind_runs_the_bound_input_and_times_positive(small: tuple[nn.Module, bytes]) -> None:
    model, artifact = small
    program = TARGET.load(artifact, threads=1)
    x = torch.randn(1, 1, 32, 32)
    run = program.bind(x)
    stats = time_fn(run, FAST)
    assert stats.median_ms > 0 and stats.min_ms > 0
    # the planned output buffer holds the last bound run's logits
    np.testing.assert_allclose(program._method.get_outputs()[0].numpy(), _logits(model, x), rtol=1e-4, atol=1e-5)
    program(np.zeros((1, 1, 32, 32), np.float32))  # a call replaces the method's input: the next run binds again
    run()
    np.testing.assert_allclose(program._method.get_outputs()[0].numpy(), _logits(model, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="takes inputs shaped"):
        program.bind(torch.zeros(2, 1, 32, 32))


def _cpu_seconds_by_thread() -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def _busy_threads(run: object, seconds: float = 0.6) -> dict[int, float]:
    before, end = _cpu_seconds_by_thread(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        run()  # type: ignore[operator]
    after = _cpu_seconds_by_thread()
    return {tid: after[tid] - before.get(tid, 0.0) for tid in after if after[tid] - before.get(tid, 0.0) > 0}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread CPU time is read from Linux /proc")
def test_threads_one_runs_on_the_calling_thread_alone(small: tuple[nn.Module, bytes], one_thread: None) -> None:
    """threads=1 starts no pool worker and the calling thread does the work; threads=2 starts one that shares it.

    (one_thread: PyTorch's own OpenMP workers, woken by the reference logits, spin and would count here. Other
    threads of the process may still take a stray 10 ms tick, hence the 90% share rather than all of it.)
    """
    model, artifact = small
    x = torch.randn(1, 1, 32, 32)
    me, rt = threading.get_native_id(), et_target._runtime()
    one = TARGET.load(artifact, threads=1)
    run_one = one.bind(x)
    assert rt._threadpool_get_thread_count() == 1
    tids = set(_cpu_seconds_by_thread())
    busy = _busy_threads(run_one)
    assert not set(busy) - tids, busy  # no thread started to run it
    assert busy[me] >= 0.9 * sum(busy.values()), busy

    two = TARGET.load(artifact, threads=2)  # replaces the process-wide pool …
    assert rt._threadpool_get_thread_count() == 2
    workers = set(_cpu_seconds_by_thread()) - tids
    assert len(workers) == 1, workers  # pthreadpool: the caller plus one worker
    np.testing.assert_allclose(two(x.numpy()), _logits(model, x), rtol=1e-4, atol=1e-5)
    busy = _busy_threads(two.bind(x))  # the control: the worker shares the work
    assert busy.get(me, 0) > 0 and all(busy.get(w, 0) > 0 for w in workers), busy

    # … and the threads=1 program reloads itself on its next use instead of using the freed pool
    np.testing.assert_allclose(one(x.numpy()), _logits(model, x), rtol=1e-4, atol=1e-5)
    assert rt._threadpool_get_thread_count() == 1
    assert not workers & set(_cpu_seconds_by_thread())  # the worker is gone with its pool
    busy = _busy_threads(run_one)
    assert not set(busy) - tids and busy[me] >= 0.9 * sum(busy.values()), busy


def test_fully_xnnpack_net_is_delegated_whole(small: tuple[nn.Module, bytes]) -> None:
    _, artifact = small
    d = TARGET.details(artifact)
    assert d["executorch"] == TARGET.version() and d["backend"] == "XnnpackBackend"
    assert d["share_basis"] == "compute"
    assert d["delegated_share"] == 1.0 and d["delegated_node_share"] == 1.0
    assert d["delegated_nodes"] == d["total_nodes"] > 10 and d["partitions"] == 1 and d["not_delegated"] == {}
    # an artifact this process did not export: read from the .pte (nodes as XNNPACK runs them)
    key = hashlib.sha256(artifact).hexdigest()
    cached = et_target._EXPORTED.pop(key)
    try:
        read = TARGET.details(artifact)
    finally:
        et_target._EXPORTED[key] = cached
    assert read["share_basis"] == "nodes" and read["delegated_share"] == 1.0
    assert 0 < read["delegated_nodes"] == read["total_nodes"] <= d["total_nodes"] and read["not_delegated"] == {}


QUIET_PARTIAL = """
import json, torch
from torch import nn
from edgecnn.latency.targets import get_target

class CumsumNet(nn.Module):  # cumsum has no XNNPACK kernel: it stays on ExecuTorch's CPU kernels
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Linear(8, 10)
    def forward(self, x):
        return self.fc(torch.cumsum(torch.relu(self.conv(x)), dim=3).mean((2, 3)))

torch.manual_seed(0)
net, x = CumsumNet().eval(), torch.randn(1, 1, 8, 8)
t = get_target("executorch")
art = t.export(net, x)
out = t.load(art, threads=1)(x.numpy())
with torch.no_grad():
    diff = float((torch.from_numpy(out) - net(x)).abs().max())
print(json.dumps({"details": t.details(art), "diff": diff}))
"""


@pytest.mark.slow
def test_partly_delegated_net_says_what_stayed_out_and_the_console_stays_quiet() -> None:
    """A fresh process (imports print once): export, load, run and details with every warning shown print nothing."""
    out = subprocess.run([sys.executable, "-W", "always", "-c", QUIET_PARTIAL], capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    assert out.stderr == ""
    doc = json.loads(out.stdout)
    d = doc["details"]
    assert doc["diff"] < 1e-4  # the portable kernels compute it right too
    assert 0 < d["delegated_share"] < 1 and 0 < d["delegated_node_share"] < 1
    assert d["delegated_nodes"] < d["total_nodes"] and d["partitions"] >= 1
    assert "aten.cumsum.default" in d["not_delegated"]


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_digits(trained: tuple[nn.Module, object, bytes, bytes]) -> None:
    model, data, fp32, int8 = trained
    p32, p8 = TARGET.load(fp32, threads=1), TARGET.load(int8, threads=1)
    x = calibration_inputs(data, 1)[0]
    np.testing.assert_allclose(p32(x.numpy()), _logits(model, x), rtol=1e-4, atol=1e-5)
    # trained channels-last: exported contiguous, so nothing splits the graph
    assert TARGET.details(fp32)["partitions"] == 1 and TARGET.details(fp32)["delegated_share"] == 1.0
    pred32, labels = predictions(p32, data)
    pred8, _ = predictions(p8, data)
    agreement = float((pred32 == pred8).mean())
    assert len(labels) > 300 and agreement >= 0.95, agreement
    assert (pred32 == labels).mean() > 0.5  # trained: far above chance
    d = TARGET.details(int8)
    assert d["delegated_share"] == 1.0 and d["not_delegated"] == {}  # quantised convs, adds, SE: all on XNNPACK
    assert len(int8) < len(fp32)
    assert time_fn(p8.bind(torch.zeros(1, 1, 8, 8)), FAST).median_ms > 0
