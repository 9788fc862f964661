"""Zero-cost proxies (edgecnn.search.proxies) against values derived by hand and against PyTorch's autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgecnn.search.proxies import PROXIES, ProxyEstimator, grad_norm, naswot, param_count, synflow


def _mlp(w1: list[list[float]], w2: list[list[float]]) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1))
        net[2].weight.copy_(torch.tensor(w2))
    return net


def test_synflow_of_a_two_layer_net_is_twice_its_path_sum():
    # |W| with an all-ones input: R = sum_j |w2_j| * sum_i |w1_ji|; each layer's sum of |θ·∂R/∂θ| is R again
    w1, w2 = [[1.0, -2.0], [0.5, 0.5], [-3.0, 1.0]], [[2.0, -1.0, 0.5]]
    r = 2 * 3 + 1 * 1 + 0.5 * 4  # = 9
    net = _mlp(w1, w2)
    assert synflow(net, (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))) == pytest.approx(math.log(2 * r))
    assert net[0].weight[0, 1].item() == -2.0  # the model is left as it was


def test_naswot_is_the_log_determinant_of_the_agreement_kernel():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, -1.0], [1.0, 1.0]])  # codes [1, 0] and [1, 1]: K = [[2, 1], [1, 2]], det 3
    assert naswot(net, (x, torch.zeros(2, dtype=torch.long))) == pytest.approx(math.log(3))


def test_naswot_of_identical_codes_is_minus_infinity():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU())
    x = torch.ones(3, 2)  # three equal images: K has equal rows
    assert naswot(net, (x, torch.zeros(3, dtype=torch.long))) == float("-inf")


def test_naswot_refuses_a_network_without_activations():
    with pytest.raises(ValueError, match="activation"):
        naswot(nn.Linear(2, 2), (torch.ones(2, 2), torch.zeros(2, dtype=torch.long)))


def test_grad_norm_matches_the_softmax_gradient_by_hand():
    torch.manual_seed(0)
    lin = nn.Linear(3, 4, bias=False)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    w = lin.weight.detach().numpy().astype(np.float64)
    logits = x.numpy() @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(5), y.numpy()] -= 1  # dL/dlogits of the mean cross-entropy, times N
    grad = p.T @ x.numpy() / 5
    assert grad_norm(lin, (x, y)) == pytest.approx(float(np.linalg.norm(grad)), rel=1e-5)
    assert lin.weight.grad is None  # computed on a copy


def test_param_count():
    assert param_count(nn.Linear(3, 4), (torch.ones(1, 3), torch.zeros(1))) == 16


ARCHS = ["conv_c8 ir_e2_c8 conv_k1_c16 gap fc", "conv_c16 ir_e4_c16 ir_s2_e4_c24 conv_k1_c32 gap fc"]


@pytest.mark.parametrize("proxy", sorted(PROXIES))
def test_every_proxy_scores_arch_strings_repeatably(proxy):
    torch.manual_seed(1)
    batch = (torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))
    est = ProxyEstimator(proxy, batch, num_classes=10)
    a, b = est(ARCHS), est(ARCHS)
    assert a == b and all(math.isfinite(v) for v in a)
    if proxy in ("params", "synflow"):  # the larger network: more parameters, more paths
        assert a[1] > a[0]


def test_unknown_proxy_is_refused():
    with pytest.raises(ValueError, match="unknown proxy 'jacov'.*synflow"):
        ProxyEstimator("jacov", (torch.ones(1, 3, 8, 8), torch.zeros(1)), num_classes=10)
