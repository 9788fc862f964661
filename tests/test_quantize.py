"""int8 static quantization through ONNX Runtime (edgecnn.compress.quantize) on a trained tiny digits net."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("onnxruntime")

from edgecnn.build import build  # noqa: E402
from edgecnn.compress.quantize import compare_int8, quantize_int8  # noqa: E402
from edgecnn.export import onnx_op_counts  # noqa: E402
from edgecnn.latency.measure import TimingConfig  # noqa: E402
from edgecnn.train.config import FINETUNE  # noqa: E402
from edgecnn.train.evaluation import evaluate  # noqa: E402
from edgecnn.train.loop import finetune  # noqa: E402
from edgecnn.train.task import DataRef, worker_data  # noqa: E402


def test_int8_runs_in_ort_and_agrees_with_fp32() -> None:
    data = worker_data(DataRef("digits", image_size=8))
    torch.manual_seed(0)
    model = build("conv_k3_c16 ir_s2_e3_c16 ir_c16 gap fc", num_classes=10, in_chans=1)
    finetune(model, data, steps=60, config=replace(FINETUNE, lr=0.05, batch_size=64))
    fp32, int8 = quantize_int8(model, data, calibration_images=200)
    ops = onnx_op_counts(int8)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    assert "BatchNormalization" not in onnx_op_counts(fp32)  # folded on export
    fast = TimingConfig(warmup=2, min_repeats=5, max_repeats=20, max_seconds=0.5, max_foreign=None)
    c = compare_int8(fp32, int8, data, threads=1, timing=fast)
    assert c.images == len(data.test)
    # the fp32 ONNX model is the PyTorch model: same top-1 as evaluate() on the same normalised images
    assert c.top1_fp32 == pytest.approx(evaluate(model, data, channels_last=False).top1, abs=1 / c.images)
    assert c.top1_fp32 > 0.5 and c.agreement >= 0.9  # int8 predicts what fp32 predicts on most inputs
    assert abs(c.top1_int8 - c.top1_fp32) <= 0.05
    assert c.latency_fp32_ms > 0 and c.latency_int8_ms > 0
