"""CAM and Grad-CAM: the map finds a planted discriminative patch; Grad-CAM = ReLU(CAM)/(h·w) for GAP → linear."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgecnn.build import build
from edgecnn.explain.cam import class_activation_map, find_target_layer, spatial_layers

SIDE, PATCH = 16, 4


def _patch_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images; class 1 carries a bright PATCH×PATCH square at a random place. Returns x, y, top-left corners."""
    x = 0.3 * torch.randn(n, 1, SIDE, SIDE, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    corners = torch.randint(0, SIDE - PATCH + 1, (n, 2), generator=gen)
    rows = torch.arange(SIDE)
    inside_r = (rows >= corners[:, :1]) & (rows < corners[:, :1] + PATCH)  # n×SIDE
    inside_c = (rows >= corners[:, 1:]) & (rows < corners[:, 1:] + PATCH)
    x += 2.0 * (y[:, None, None] * inside_r[:, :, None] * inside_c[:, None, :]).unsqueeze(1)
    return x, y, corners


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = build("conv_c8 conv_s2_c16 gap fc", num_classes=2, in_chans=1)  # 8×8 map at 16×16 input
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):  # a few seconds on one CPU core
        x, y, _ = _patch_data(64, gen)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), gen


def test_target_layer_is_the_last_spatial_block(trained):
    net, _ = trained
    assert find_target_layer(net, (1, SIDE, SIDE)) == "blocks.1"
    layers = dict(spatial_layers(net, (1, SIDE, SIDE)))
    assert layers["blocks.0"] == (1, 8, 16, 16) and layers["blocks.1"] == (1, 16, 8, 8)
    assert "blocks.2" not in layers  # global pooling: no spatial extent left


def test_cam_peak_falls_on_the_planted_patch(trained):
    net, gen = trained
    x, y, corners = _patch_data(200, gen)
    cam = class_activation_map(net, x, method="cam", target=1)
    assert cam.layer == "blocks.1" and cam.maps.shape == (200, 8, 8)
    assert (cam.logits.argmax(1) == y).float().mean() > 0.95  # the net learned the task
    up = cam.upsampled(SIDE, mode="bilinear", convention="half_pixel")
    hits = []
    for i in torch.nonzero(y).flatten().tolist():
        pr, pc = divmod(int(up[i].argmax()), SIDE)
        r, c = corners[i].tolist()
        hits.append(r <= pr < r + PATCH and c <= pc < c + PATCH)
    assert sum(hits) / len(hits) >= 0.95, f"peak on the patch in {sum(hits)} of {len(hits)} images"


def test_cam_mean_plus_bias_is_the_logit(trained):
    # Zhou et al. eq. 2: y_c = mean_ij M_c(i, j) + b_c
    net, gen = trained
    x, _, _ = _patch_data(8, gen)
    cam = class_activation_map(net, x, method="cam")
    fc = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    want = cam.logits.gather(1, cam.classes[:, None]).squeeze(1) - fc.bias.detach()[cam.classes]
    torch.testing.assert_close(cam.maps.mean(dim=(1, 2)), want, rtol=1e-4, atol=1e-5)


def test_gradcam_equals_relu_cam_over_hw_for_a_gap_linear_head(trained):
    net, gen = trained
    x, _, _ = _patch_data(16, gen)
    for target in (0, 1, None):
        cam = class_activation_map(net, x, method="cam", target=target)
        grad = class_activation_map(net, x, method="gradcam", target=target)
        assert torch.equal(cam.classes, grad.classes)
        torch.testing.assert_close(grad.maps, torch.relu(cam.maps) / 64, rtol=1e-4, atol=1e-6)  # h·w = 8·8


def test_cam_refuses_a_head_that_is_not_gap_linear_and_gradcam_works():
    net = build("conv_c8 conv_s2_c16 gap fc_c12_relu fc", num_classes=3, in_chans=1).eval()
    x = torch.randn(2, 1, SIDE, SIDE)
    with pytest.raises(ValueError, match="use method 'gradcam'"):
        class_activation_map(net, x, method="cam")
    g = class_activation_map(net, x, method="gradcam")
    assert g.maps.shape == (2, 8, 8) and bool((g.maps >= 0).all())


def test_named_layer_train_flag_and_bad_input(trained):
    net, gen = trained
    x, _, _ = _patch_data(2, gen)
    net.train()
    cam = class_activation_map(net, x, method="gradcam", layer="blocks.0")
    assert cam.maps.shape == (2, 16, 16) and net.training  # restored after the eval-mode pass
    net.eval()
    with pytest.raises(ValueError, match="no module named 'blocks.9'"):
        class_activation_map(net, x, layer="blocks.9")
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        class_activation_map(net, x, method="lime")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target class out of range"):
        class_activation_map(net, x, target=5)
    with pytest.raises(ValueError, match="one target class for all 2 images or one per image, got 3"):
        class_activation_map(net, x, target=[0, 1, 1])
    assert class_activation_map(net, x, target=[1, 0]).classes.tolist() == [1, 0]


class _Untraceable(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it, so the hooks pass finds the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1))
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        a = self.features(x)
        if a.sum() > -1e9:  # data-dependent branch
            a = torch.relu(a)
        return self.fc(a.mean(dim=(2, 3)))


def test_graph_and_hooks_find_the_same_layers():
    from edgecnn.explain.cam import _spatial_by_graph, _spatial_by_hooks

    net = build("conv_c8 ir_s2_m16_c16_se0.25 conv_k1_c32 gap fc", num_classes=3, in_chans=1)
    by_graph = _spatial_by_graph(net, (1, 1, 16, 16))
    assert by_graph == _spatial_by_hooks(net, (1, 1, 16, 16))
    assert [n for n, _ in by_graph][-3:] == ["blocks.2.bn", "blocks.2.act", "blocks.2"]
    assert dict(by_graph)["blocks.1"] == (1, 16, 8, 8)
    odd = _Untraceable()
    assert find_target_layer(odd, (1, 8, 8)) == "features"  # fx fails on `if a.sum() > ...`: found by hooks
    cam = class_activation_map(odd, torch.randn(2, 1, 8, 8), method="gradcam")
    assert cam.layer == "features" and cam.maps.shape == (2, 4, 4)
