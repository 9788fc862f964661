"""The ERF and gradient-flow sections of a results document, against plain autograd and hand-built references."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from edgecnn.analysis.dynamics import erf_section, gradflow_section, spatial_trunk, without_skips
from edgecnn.analysis.gradflow import gradient_flow
from edgecnn.build import build

TINY = "conv_c4_relu conv_s2_c4_relu conv_c4_relu gap fc"  # three 3×3 convs: field 3 → 5 (J2) → 9


def test_erf_section_equals_autograd_on_a_tiny_net():
    torch.manual_seed(0)
    net = build(TINY, num_classes=3, in_chans=2).eval()
    sec = erf_section(net, (2, 15, 15), samples=6, batch=4, seed=5)
    assert json.loads(json.dumps(sec)) == sec  # plain JSON values only
    # the trunk is the three convs: blocks.2 gives an 8×8 map, central unit (4, 4) sits at input pixel 8
    assert sec["layer"] == "blocks.2" and sec["output_index"] == [4, 4] and sec["centre"] == [8.0, 8.0]
    assert sec["rf_size"] == [9.0, 9.0] and not sec["rf_whole"] and sec["samples"] == 6
    # reference: the same random inputs, ∂(Σ_c y[:, c, 4, 4])/∂x by autograd, |·| summed over channels and samples
    gen, total = torch.Generator().manual_seed(5), torch.zeros(15, 15, dtype=torch.float64)
    for n in (4, 2):
        x = torch.randn((n, 2, 15, 15), generator=gen).requires_grad_(True)
        y = net.blocks[:3](x)
        (g,) = torch.autograd.grad(y[:, :, 4, 4].sum(), x)
        total += g.abs().double().sum((0, 1))
    ref = total / total.sum()
    got = torch.tensor(sec["map"], dtype=torch.float64)
    assert torch.equal(got != 0, ref != 0)  # the same support: inside the 9×9 field around pixel 8
    assert (ref != 0).nonzero().min().item() >= 4 and (ref != 0).nonzero().max().item() <= 12
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=0)  # 5 significant digits kept
    # radii as the ERF object computes them from the map: the 50% mass within radius50
    grid = torch.stack(torch.meshgrid(torch.arange(15.0), torch.arange(15.0), indexing="ij"))
    dist = ((grid - 8.0) ** 2).sum(0).sqrt().double()
    assert ref[dist <= sec["radius50"]].sum() >= 0.5 > ref[dist < sec["radius50"]].sum()


def test_erf_section_of_a_model_without_blocks_is_refused():
    with pytest.raises(ValueError, match="no 'blocks'"):
        erf_section(nn.Conv2d(1, 1, 3), (1, 8, 8))
    with pytest.raises(ValueError, match="first block"):
        spatial_trunk(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 1, 2, 2))


class _Block(nn.Module):
    """``h = relu(conv2(relu(conv1(h)))) [+ h]``: a residual block without BN (He et al. 2016's plain/res pair)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.use_skip = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return h + x if self.use_skip else h


def test_skips_keep_early_gradients_of_a_deep_plain_net():
    torch.manual_seed(0)
    depth = 10
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), *(_Block(8) for _ in range(depth)),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
    x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 4, (8,))
    sec = gradflow_section(net, x, y)
    assert sec["skips"] == depth and sec["batch"] == 8 and json.loads(json.dumps(sec)) == sec
    with_s, without = sec["runs"]["with skips"], sec["runs"]["without skips"]
    assert len(with_s["layers"]) == len(without["layers"]) == 2 * depth + 2
    # default init shrinks the signal in each plain conv pair: without the identity term the first layer's
    # gradient is orders of magnitude below the last one's; with it, it is not
    first = lambda run: run["layers"][0]["output_grad_norm"]  # noqa: E731
    assert first(with_s) > 100 * first(without)
    assert without["attenuation"] < 1e-3 < with_s["attenuation"]
    # the numbers are plain autograd's: gradient_flow on a copy with use_skip turned off by hand
    assert all(b.use_skip for b in net[1:1 + depth])  # the model itself is untouched
    plain = copy.deepcopy(net).train()
    for b in plain[1:1 + depth]:
        b.use_skip = False
    flow = gradient_flow(plain, x, y)
    assert [l["output_grad_norm"] for l in without["layers"]] == pytest.approx(flow.output_norms(), rel=1e-6)
    assert without["loss"] == pytest.approx(flow.loss)


def test_without_skips_equals_the_noskip_arch_with_the_same_weights():
    arch = "conv_c8_relu ir_m16_c8_relu ir_m16_c8_relu ir_s2_m16_c16_relu gap fc"
    torch.manual_seed(0)
    net = build(arch, num_classes=5, in_chans=1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-zero last-BN scales, so the skipped path carries signal
            nn.init.uniform_(m.weight, 0.5, 1.5)
    plain, n = without_skips(net)
    assert n == 2 and not any(getattr(m, "use_skip", False) for m in plain.modules())  # stride 2: no skip
    assert sum(getattr(m, "use_skip", False) for m in net.modules()) == 2  # the original keeps its skips
    ref = build(arch.replace("ir_m16_c8_relu", "ir_m16_c8_relu_noskip"), num_classes=5, in_chans=1)
    ref.load_state_dict(net.state_dict())
    x0 = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(plain.eval()(x0), ref.eval()(x0))
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    sec = gradflow_section(net, x, y)
    flow = gradient_flow(ref.train(), x, y)
    got = [l["output_grad_norm"] for l in sec["runs"]["without skips"]["layers"]]
    assert got == pytest.approx(flow.output_norms(), rel=1e-5)
    assert sec["runs"]["with skips"]["layers"][0]["output_grad_norm"] != pytest.approx(got[0], rel=1e-3)
    assert not math.isnan(sec["runs"]["with skips"]["loss"])
