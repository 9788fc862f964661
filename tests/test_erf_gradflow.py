"""Effective receptive field and gradient flow against hand-derived values and plain autograd."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from edgecnn.analysis.erf import effective_receptive_field
from edgecnn.analysis.gradflow import ScalarSkipChain, gradient_flow, skip_gradient
from edgecnn.analysis.receptive import receptive_field


def _box_stack(n: int) -> nn.Sequential:
    convs = [nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(n)]
    for c in convs:
        nn.init.constant_(c.weight, 1 / 9)
    return nn.Sequential(*convs).double()


@pytest.mark.parametrize("n", [1, 4, 8])
def test_erf_of_box_filters_is_the_binomial_like_kernel_with_variance_2n_over_3(n):
    erf = effective_receptive_field(_box_stack(n), (2, 1, 41, 41), samples=2)
    kernel = np.array([1.0])
    for _ in range(n):
        kernel = np.convolve(kernel, np.ones(3) / 3)  # the n-fold box: Luo et al.'s uniform-weight case
    line = np.zeros(41)
    line[20 - n:20 + n + 1] = kernel
    torch.testing.assert_close(erf.map, torch.tensor(np.outer(line, line)))
    assert erf.centre == (20.0, 20.0)
    # variance of a sum of n uniform {-1, 0, 1} steps: n·2/3 (the √n growth of Luo et al. §2.2)
    assert erf.std() == pytest.approx((math.sqrt(2 * n / 3),) * 2, rel=1e-9)


def test_erf_radii_by_hand_for_one_3x3_box():
    erf = effective_receptive_field(_box_stack(1), (1, 1, 9, 9), samples=1)
    # mass 1/9 at the centre, 4/9 at distance 1 (cumulative 5/9 ≥ 50%), 4/9 at √2
    assert erf.radius50 == 1.0 and erf.radius95 == pytest.approx(math.sqrt(2))
    assert erf.radius(1 / 9) == 0.0


def test_erf_of_a_relu_net_lies_inside_its_theoretical_field():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(8, 8, 5, padding=4, dilation=2), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))  # fmt: skip
    erf = effective_receptive_field(net, (4, 2, 45, 45), samples=8)
    rf = receptive_field(net, (1, 2, 45, 45))
    (r0, r1), (c0, c1) = rf.bounds(erf.output_index)
    inside = torch.zeros_like(erf.map, dtype=torch.bool)
    inside[math.ceil(r0):math.floor(r1) + 1, math.ceil(c0):math.floor(c1) + 1] = True
    assert erf.map[~inside].sum() == 0 and erf.map[inside].sum() == pytest.approx(1.0)
    assert erf.radius95 < (rf.size[0] - 1) / 2 * math.sqrt(2)


def test_erf_rejects_a_flat_output():
    with pytest.raises(ValueError, match="before global"):
        effective_receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten()), (1, 1, 8, 8), samples=1)


def test_skip_connection_example_of_spec():
    assert skip_gradient(skip=False) == pytest.approx(0.8 * 0.2 * 0.8, rel=1e-12)
    assert skip_gradient(skip=True) == pytest.approx(1 + 0.8 * 0.2 * 0.8, rel=1e-12)


@pytest.mark.parametrize(("skip", "factor"), [(False, 0.128), (True, 1.128)])
def test_gradient_flow_through_a_skip_chain_is_geometric(skip, factor):
    depth = 6
    chain = ScalarSkipChain(depth, skip=skip)
    flow = gradient_flow(chain, -torch.ones(1, 1, dtype=torch.float64), layers=[f"blocks.{i}" for i in range(depth)])
    # block l's output h^{l+1}: ∂h^L/∂h^{l+1} = factor^(L-1-l)
    assert flow.output_norms() == pytest.approx([factor ** (depth - 1 - l) for l in range(depth)], rel=1e-9)
    assert flow.attenuation() == pytest.approx(factor ** (depth - 1), rel=1e-9)


def test_gradient_flow_equals_plain_autograd_on_a_cnn():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))  # fmt: skip
    x, y = torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 3])
    flow = gradient_flow(net, x, y)
    assert [l.name for l in flow.layers] == ["0", "3", "7"]
    # reference: run the layers by hand, keep the intermediate outputs, backward the same loss
    acts, h = {}, x
    for i, m in enumerate(net):
        h = m(h)
        if str(i) in ("0", "3", "7"):
            h.retain_grad()
            acts[str(i)] = h
    loss = nn.functional.cross_entropy(h, y)
    loss.backward()
    assert flow.loss == pytest.approx(loss.item())
    for layer in flow.layers:
        assert layer.output_grad_norm == pytest.approx(float(acts[layer.name].grad.norm()), rel=1e-6)
        assert layer.weight_grad_norm == pytest.approx(float(net[int(layer.name)].weight.grad.norm()), rel=1e-6)


def test_gradient_flow_bad_layer_name():
    with pytest.raises(ValueError, match="no module named"):
        gradient_flow(nn.Linear(2, 2), torch.randn(1, 2), layers=["nope"])


def test_plots_build_figures():  # secondary: the figures are drawn without error
    pytest.importorskip("matplotlib")
    from edgecnn.plots import plot_erf, plot_gradient_flow, plot_rf_growth
    from edgecnn.analysis.receptive import layer_receptive_fields

    erf = effective_receptive_field(_box_stack(2), (1, 1, 15, 15), samples=1)
    flows = {s: gradient_flow(ScalarSkipChain(4, skip=s), -torch.ones(1, 1, dtype=torch.float64)) for s in (True, False)}
    fields = layer_receptive_fields(_box_stack(3), (1, 1, 16, 16))
    for fig in (plot_erf(erf), plot_gradient_flow({str(k): v for k, v in flows.items()}), plot_rf_growth(fields, input_size=16)):
        fig.savefig(io.BytesIO(), format="png")
        assert fig.axes
