"""Every zoo model (at width 0.5, to keep it cheap) exports to ONNX with BN folded and runs in ONNX Runtime with PyTorch's outputs."""

import numpy as np
import pytest
import torch

from edgecnn import zoo
from edgecnn.build import build
from edgecnn.export import export_onnx, onnx_bytes, onnx_op_counts

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    # fresh BN layers are the identity; random statistics make the folding check meaningful
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_runs_in_onnxruntime_like_pytorch(name):
    model = zoo.create(name, width=0.5).eval()  # same blocks and strides; export time grows with the weights
    _randomize_bn(model)
    size = 32 if name.endswith("_cifar") else 64  # small inputs keep the test cheap
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    data = onnx_bytes(model, x)
    assert "BatchNormalization" not in onnx_op_counts(data)  # every BN follows a conv: all folded
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_pre_activation_bn_is_kept_and_still_correct(tmp_path):
    # BN → act → conv: BN precedes the conv, so it cannot be folded into it
    model = build("conv_k3_c8 conv_k3_c8_pre gap fc", num_classes=3).eval()
    _randomize_bn(model)
    path = export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 3, 16, 16))
    counts = onnx_op_counts(path.read_bytes())
    assert counts.get("BatchNormalization") == 1
    x = torch.randn(1, 3, 16, 16)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="positive"):
        export_onnx(model, tmp_path / "m.onnx", input_shape=(0, 3, 16, 16))
