"""int8 static quantization through ONNX Runtime (edgecnn.compress.quantize) on a trained tiny digits net.

The settings depend on the CPU (edgecnn.latency.isa): each named setting is run here and must hold ≥ 95% int8/fp32
agreement wherever it is documented to be right; the one this CPU cannot run right (full-range weights on x86
without VNNI) is skipped with the reason, and the automatic choice must hold on every CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers import trained_digits_net

pytest.importorskip("onnxruntime")

from edgecnn.compress.quantize import INT8_SETTINGS, compare_int8, int8_settings, quantize_int8  # noqa: E402
from edgecnn.export import onnx_op_counts  # noqa: E402
from edgecnn.latency.isa import _proc_cpuinfo_flags, detect_isa, parse_isa  # noqa: E402
from edgecnn.latency.measure import TimingConfig  # noqa: E402
from edgecnn.train.evaluation import evaluate  # noqa: E402

FAST = TimingConfig(warmup=2, min_repeats=5, max_repeats=20, max_seconds=0.5, max_foreign=None)

# /proc/cpuinfo flag lines (abridged to the int8-relevant part plus neighbours) of real CPUs
EPYC_ZEN3 = "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 smep bmi2 sha_ni vaes vpclmulqdq rdpid fsrm"
SAPPHIRE_RAPIDS = "avx avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ALDER_LAKE = "avx avx2 fma avx_vnni sha_ni gfni vaes"
SKYLAKE_SP = "avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl"  # AVX-512 without VNNI: still saturates
GRAVITON2 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"
CORTEX_A53 = "fp asimd evtstrm crc32 cpuid"  # Raspberry Pi 3: no dot product


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, object]:
    return trained_digits_net()


@pytest.mark.parametrize(
    ("machine", "flags", "kind", "setting"),
    [
        ("x86_64", EPYC_ZEN3, "avx2", "u8s8-reduce"),
        ("x86_64", SKYLAKE_SP, "avx2", "u8s8-reduce"),
        ("x86_64", SAPPHIRE_RAPIDS, "vnni", "s8s8"),
        ("x86_64", ALDER_LAKE, "vnni", "s8s8"),
        ("AMD64", "", "unknown", "u8s8-reduce"),  # Windows, nothing readable: the settings right everywhere
        ("aarch64", GRAVITON2, "arm-dot", "s8s8"),
        ("aarch64", CORTEX_A53, "arm", "s8s8"),
        ("arm64", "asimddp i8mm", "arm-dot", "s8s8"),  # macOS through sysctl
        ("riscv64", "rv64imafdc", "unknown", "u8s8-reduce"),
    ],
)
def test_instruction_set_and_its_int8_settings(machine: str, flags: str, kind: str, setting: str) -> None:
    isa = parse_isa(machine, flags)
    assert isa.int8_kind == kind
    assert isa.saturates_int8 == (kind in ("avx2", "unknown"))
    chosen, reason = int8_settings(isa)
    assert chosen.name == setting and reason
    assert chosen.reduce_range == isa.saturates_int8  # 7-bit weights exactly where 16-bit sums can overflow
    doc = isa.to_dict()
    assert doc["int8_kind"] == kind and doc["arch"] == machine and isinstance(doc["features"], list)


def test_forced_settings_name_the_risk_and_unknown_names_are_refused() -> None:
    avx2, vnni = parse_isa("x86_64", EPYC_ZEN3), parse_isa("x86_64", SAPPHIRE_RAPIDS)
    s, why = int8_settings(avx2, name="s8s8")
    assert s.name == "s8s8" and "saturate" in why
    assert "saturate" not in int8_settings(vnni, name="s8s8")[1]
    assert "saturate" not in int8_settings(avx2, name="u8s8-reduce")[1]
    with pytest.raises(ValueError, match="unknown int8 settings 'u4'.*valid: auto, s8s8"):
        int8_settings(avx2, name="u4")


def test_cpuinfo_reader_takes_x86_flags_and_arm_features(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {EPYC_ZEN3}\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text(f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {GRAVITON2}\nCPU implementer\t: 0x41\n")
    assert parse_isa("x86_64", _proc_cpuinfo_flags(str(x86)) or "").int8_kind == "avx2"
    assert parse_isa("aarch64", _proc_cpuinfo_flags(str(arm)) or "").int8_kind == "arm-dot"
    assert _proc_cpuinfo_flags(str(tmp_path / "missing")) is None


def test_this_machine_is_read_from_its_own_flags() -> None:
    isa = detect_isa()
    flags = _proc_cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo here")
    words = set(flags.split())
    assert isa.source == "/proc/cpuinfo"
    assert isa.vnni == bool(words & {"avx512_vnni", "avx_vnni", "amx_int8"})
    assert set(isa.features) <= words


def test_int8_runs_in_ort_and_agrees_with_fp32(trained, caplog: pytest.LogCaptureFixture) -> None:
    """The automatic settings on this CPU, whatever it is: the acceptance test for every machine CI may run on."""
    model, data = trained
    with caplog.at_level(logging.WARNING):
        q = quantize_int8(model, data, calibration_images=200)
    assert not [r for r in caplog.records if "pre-process" in r.getMessage()]  # ORT's advice does not leak
    assert q.isa == detect_isa() and q.settings == int8_settings()[0]
    rec = q.record()
    assert rec["settings"]["name"] == q.settings.name and rec["isa"]["int8_kind"] == q.isa.int8_kind and rec["reason"]
    ops = onnx_op_counts(q.int8)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    assert "BatchNormalization" not in onnx_op_counts(q.fp32)  # folded on export
    c = compare_int8(q.fp32, q.int8, data, threads=1, timing=FAST)
    assert c.images == len(data.test)
    # the fp32 ONNX model is the PyTorch model: same top-1 as evaluate() on the same normalised images
    assert c.top1_fp32 == pytest.approx(evaluate(model, data, channels_last=False).top1, abs=1 / c.images)
    assert c.top1_fp32 > 0.5 and c.agreement >= 0.95, q.record()  # int8 predicts what fp32 predicts
    assert abs(c.top1_int8 - c.top1_fp32) <= 0.03
    assert c.latency_fp32_ms > 0 and c.latency_int8_ms > 0


@pytest.mark.parametrize("name", sorted(INT8_SETTINGS))
def test_each_setting_holds_where_it_is_right(trained, name: str) -> None:
    """Every named setting, forced: ≥ 95% agreement wherever the CPU does not saturate it."""
    model, data = trained
    isa = detect_isa()
    settings = INT8_SETTINGS[name]
    if isa.saturates_int8 and not settings.reduce_range:
        pytest.skip(f"{name}: full-range int8 weights saturate 16-bit sums on this CPU ({isa.describe()}); "
                    "this case runs on CPUs with VNNI or on ARM")  # fmt: skip
    q = quantize_int8(model, data, calibration_images=200, settings=name)
    assert q.settings is settings and q.reason.startswith("forced")
    c = compare_int8(q.fp32, q.int8, data, threads=1, measure_latency=False)
    assert c.agreement >= 0.95 and abs(c.top1_int8 - c.top1_fp32) <= 0.03, (name, c)
    assert c.latency_int8_ms is None


def test_calibration_needs_an_image(trained) -> None:
    model, data = trained
    with pytest.raises(ValueError, match="at least one image"):
        quantize_int8(model, data, calibration_images=0)


def test_shared_constant_biases_are_inlined_and_quantised_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """The exporter shares equal biases through Identity nodes; ORT's quantiser would leave them float, warning."""
    import numpy as np
    import onnx

    from edgecnn.export import onnx_bytes
    from edgecnn.latency.targets import get_target
    from edgecnn.latency.targets.ort_int8 import inline_constant_identities, quantize_onnx
    from edgecnn.zoo import create

    torch.manual_seed(0)
    net = create("mobilenet_v3_small", num_classes=10, width=0.5).eval()
    x = torch.randn(1, 3, 32, 32)
    before = onnx_bytes(net, x)
    g = onnx.load_from_string(before).graph
    inits = {i.name for i in g.initializer}
    shared = [n for n in g.node if n.op_type == "Identity" and n.input[0] in inits]
    assert shared, "the exporter no longer shares constants: this test guards nothing"
    after = inline_constant_identities(before)
    g2 = onnx.load_from_string(after).graph
    assert not [n for n in g2.node if n.op_type == "Identity" and n.input[0] in inits]
    ort = get_target("onnxruntime")
    np.testing.assert_array_equal(ort.load(before, threads=1)(x.numpy()), ort.load(after, threads=1)(x.numpy()))
    with caplog.at_level(logging.WARNING):
        quantize_onnx(before, [torch.randn(1, 3, 32, 32).numpy() for _ in range(4)], INT8_SETTINGS["u8s8-reduce"])
    assert not [r for r in caplog.records if "Expected bias" in r.getMessage()]
