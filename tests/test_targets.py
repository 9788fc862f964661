"""Deployment targets (edgecnn.latency.targets): the registry, each target's export/load/run against PyTorch itself,
and that a new runtime is one class plus one registry entry."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

import numpy as np
import pytest
import torch
from torch import nn

from edgecnn.build import build
from edgecnn.latency import targets as registry
from edgecnn.latency.fingerprint import DeviceFingerprint, fingerprint
from edgecnn.latency.isa import detect_isa
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.latency.per_layer import per_layer
from edgecnn.latency.table import new_table
from edgecnn.plan import resolve
from edgecnn.latency.targets import get_target, target_names
from edgecnn.latency.targets.base import Program, Target

FAST = TimingConfig(warmup=1, min_repeats=3, max_repeats=5, max_seconds=0.5, max_foreign=None)
ARCH = "conv_k3_c16 ir_s2_e3_c16_se0.25_hswish ir_c16 gap fc"


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return build(ARCH, num_classes=10).eval()


def test_registry_names_and_errors() -> None:
    assert target_names()[:2] == ("eager", "onnxruntime")
    assert get_target("eager").name == "eager" and get_target("eager") is get_target("eager")
    with pytest.raises(ValueError, match=r"unknown target 'tflite'; valid: eager, onnxruntime"):
        get_target("tflite")


@pytest.mark.parametrize("name", ["eager", "onnxruntime"])
def test_export_load_run_matches_pytorch(net: nn.Module, name: str) -> None:
    target = get_target(name)
    if target.version() is None:
        pytest.skip(f"{name} not installed")
    x = torch.randn(2, 3, 32, 32)
    artifact = target.export(net, x[:1])
    assert isinstance(artifact, bytes) and len(artifact) > 1000
    program = target.load(artifact, threads=1)
    with torch.inference_mode():
        want = net(x[:1]).numpy()
    np.testing.assert_allclose(program(x[:1].numpy()), want, rtol=1e-4, atol=1e-4)
    run = program.bind(x[:1])
    run()  # one synchronous inference, nothing returned that the timer needs


def test_ort_int8_export_uses_this_cpus_settings(net: nn.Module) -> None:
    pytest.importorskip("onnxruntime")
    from edgecnn.export import onnx_op_counts

    target = get_target("onnxruntime")
    assert target.int8
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(1, 3, 32, 32, generator=gen) for _ in range(16)]
    int8 = target.export(net, calib[0], calibration=calib)
    assert onnx_op_counts(int8).get("QuantizeLinear", 0) > 0
    out8 = target.load(int8, threads=1)(calib[0].numpy())
    with torch.inference_mode():
        want = net(calib[0]).numpy()
    assert out8.shape == want.shape and np.isfinite(out8).all()
    assert np.corrcoef(out8.ravel(), want.ravel())[0, 1] > 0.9  # an untrained net: close, not equal


def test_eager_has_no_int8_and_targets_without_a_profiler_say_so(net: nn.Module) -> None:
    with pytest.raises(ValueError, match="no int8 export"):
        get_target("eager").export(net, torch.zeros(1, 3, 32, 32), calibration=[torch.zeros(1, 3, 32, 32)])
    with pytest.raises(ValueError, match="channels_last applies to the eager backend only; onnxruntime"):
        measure(net, (1, 3, 32, 32), backend="onnxruntime", threads=1, channels_last=True, config=FAST)


def test_fingerprint_records_runtime_and_isa_and_reads_old_tables() -> None:
    fp = fingerprint(backend="eager", threads=1)
    assert fp.runtime is None and fp.isa == detect_isa().int8_kind
    old = fp.to_dict()
    del old["runtime"], old["isa"]
    back = DeviceFingerprint.from_dict(old)  # a table written before the fields existed
    assert back.runtime is None and back.isa is None
    assert back.differences(fp) == [f"isa: None != {fp.isa!r}"]  # such a table is not trusted on this CPU
    if get_target("onnxruntime").version() is not None:
        ort = fingerprint(backend="onnxruntime", threads=1)
        assert ort.runtime == ort.onnxruntime == get_target("onnxruntime").version()


class _NumpyProgram(Program):
    """Runs a model's torch forward through numpy round trips: a stand-in for a foreign runtime."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x)).numpy()

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        arr = x.numpy()
        return lambda: self(arr)


class FakeTarget(Target):
    """A runtime added by one class and one registry line, as a user would."""

    name = "fake"
    install = "pip install fake-runtime"
    artifact_suffix = ".fake"
    exported: list[tuple[int, ...]] = []

    def version(self) -> str | None:
        return "0.1"

    def export(self, model: nn.Module, example: torch.Tensor, *,
               calibration: Iterable[torch.Tensor] | None = None) -> bytes:  # fmt: skip
        FakeTarget.exported.append(tuple(example.shape))
        import io

        buf = io.BytesIO()
        torch.save(model, buf)
        return buf.getvalue()

    def load(self, artifact: bytes, *, threads: int, device: str = "cpu") -> Program:
        import io

        return _NumpyProgram(torch.load(io.BytesIO(artifact), weights_only=False))  # our own bytes, in-process

    def details(self, artifact: bytes) -> dict[str, object]:
        return {"bytes": len(artifact)}


def test_a_new_runtime_is_one_class_and_one_registry_entry(net: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.TARGETS, "fake", f"{__name__}:FakeTarget")
    monkeypatch.setitem(sys.modules, __name__, sys.modules[__name__])
    registry.get_target.cache_clear()
    try:
        m = measure(net, (1, 3, 32, 32), backend="fake", threads=1, config=FAST)
        assert FakeTarget.exported == [(1, 3, 32, 32)]
        assert m.fingerprint.backend == "fake" and m.fingerprint.runtime == "0.1"
        assert m.extra["bytes"] > 1000 and m.stats.median_ms > 0
        with pytest.raises(ValueError, match="fake target has no per-layer profiler"):
            per_layer(net, (1, 3, 32, 32), backend="fake", threads=1, config=FAST)
        # a latency table for it: entries timed through the target, drift-normalised by its own reference
        table = new_table(backend="fake", threads=1, config=FAST)
        plan = resolve(ARCH, num_classes=10, input_size=32)[1]
        entry = table.measure_block(plan)
        assert entry.median_ms > 0 and table.reference_ms is not None and table.call_overhead_ms is None
        with pytest.raises(ValueError, match=r"drift_reference=False is for the eager, executorch target\(s\); fake"):
            new_table(backend="fake", threads=1, drift_reference=False)
    finally:
        registry.get_target.cache_clear()


# the CPUs of tests/test_quantize.py: ONNX Runtime's NCHWc block is 8 floats with AVX2, 16 with AVX-512F, none on ARM
@pytest.mark.parametrize(("machine", "flags", "multiple"), [
    ("x86_64", "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2", 8),  # AMD EPYC Zen 3
    ("x86_64", "avx avx2 fma avx_vnni sha_ni gfni vaes", 8),  # Alder Lake: VNNI, no AVX-512
    ("x86_64", "avx avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni amx_int8", 16),  # Sapphire Rapids
    ("x86_64", "fpu sse sse2 ssse3 sse4_1 sse4_2", 1),  # SSE only: no NCHWc kernels
    ("aarch64", "fp asimd evtstrm aes pmull asimddp", 1),  # Graviton2
])  # fmt: skip
def test_channel_multiple_per_cpu(machine: str, flags: str, multiple: int) -> None:
    from edgecnn.latency.isa import parse_isa

    isa = parse_isa(machine, flags)
    assert get_target("onnxruntime").channel_multiple(isa) == multiple
    assert get_target("eager").channel_multiple(isa) == 1  # no known preference


def _nchwc_convs(conv: nn.Module, shape: tuple[int, ...], tmp_path) -> int:
    """Convolutions ONNX Runtime itself moved to its NCHWc kernels (domain com.microsoft.nchwc) in ``conv``'s
    optimised graph."""
    import onnx
    import onnxruntime as ort

    from edgecnn.export import onnx_bytes

    out = tmp_path / "optimised.onnx"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3  # not the warning that the saved graph is for this CPU only: it is read back here
    ort.InferenceSession(onnx_bytes(conv.eval(), torch.randn(shape)), opts, providers=["CPUExecutionProvider"])
    return sum(n.op_type == "Conv" and n.domain == "com.microsoft.nchwc" for n in onnx.load(str(out)).graph.node)


def test_channel_multiple_is_what_onnxruntime_does_here(tmp_path) -> None:
    """Checked against ONNX Runtime's own graph optimiser on this CPU (no timing): two convolutions whose channels
    are multiples of ``channel_multiple()`` both go to the NCHWc kernels; with one channel more the second (odd
    input channels) does not, on every ONNX Runtime version's rule (block multiples, or multiples of 4)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = get_target("onnxruntime").channel_multiple()
    c = max(m, 8)

    def pair(mid: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c, mid, 3, padding=1), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1))

    on = _nchwc_convs(pair(c), (1, c, 16, 16), tmp_path)
    off = _nchwc_convs(pair(c + 1), (1, c, 16, 16), tmp_path)
    if m == 1:  # no NCHWc kernels on this CPU
        assert on == off == 0
    else:
        assert on == 2 and off <= 1
