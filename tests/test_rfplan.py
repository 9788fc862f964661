"""The receptive-field planner against brute force, receptive.py and PyTorch's FLOP counter."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.analysis.receptive import receptive_field
from edgecnn.analysis.rfplan import plan_receptive_field, reads_every_pixel
from edgecnn.build import build
from edgecnn.cli.main import main


def _brute_force(target, depth, stride, channels, size, allow_skips, exact_depth, top):
    """Every sequence, scored independently of the planner's dynamic programme."""
    layer = sorted({(k, s, 1 if k == 1 else d) for k in (1, 3, 5, 7) for s in (1, 2) for d in (1, 2, 4)})
    layer = [c for c in layer if allow_skips or reads_every_pixel(*c)]
    costs = []
    for n in ([depth] if exact_depth else range(1, depth + 1)):
        for seq in itertools.product(layer, repeat=n):
            if not exact_depth and any(k == 1 and s == 1 for k, s, _ in seq):
                continue
            r, j, cost, met_early = 1, 1, 0, False
            for i, (k, s, d) in enumerate(seq):
                r, j = r + (k - 1) * d * j, j * s
                cost += (-(-size // j)) ** 2 * channels**2 * k * k  # ⌈size/J⌉² C² k²
                meets = r >= target and (stride is None or j == stride)
                met_early |= meets and i < n - 1
            if meets and not (met_early and not exact_depth):
                costs.append(cost)
    return sorted(costs)[:top]


@pytest.mark.parametrize(
    ("target", "depth", "stride", "allow_skips", "exact_depth"),
    [(9, 3, None, False, False), (23, 3, None, True, False), (40, 3, 4, False, False),
     (15, 2, 2, True, False), (11, 3, None, False, True), (60, 3, None, False, False)],
)  # fmt: skip
def test_planner_matches_brute_force(target, depth, stride, allow_skips, exact_depth):
    kw = dict(target=target, depth=depth, stride=stride, channels=8, top=6)
    plans = plan_receptive_field(**kw, input_size=37, allow_skips=allow_skips, exact_depth=exact_depth)
    expected = _brute_force(target, depth, stride, 8, 37, allow_skips, exact_depth, 6)
    assert [p.macs for p in plans] == expected
    for p in plans:
        assert p.rf >= target and (stride is None or p.stride == stride)
        assert len({(p.describe()) for p in plans}) == len(plans)  # distinct sequences


def test_plan_field_and_macs_agree_with_receptive_field_and_flop_counter():
    (best, *_) = plan_receptive_field(100, depth=6, stride=8, channels=4, input_size=45, top=3)
    net = nn.Sequential(*(nn.Conv2d(4, 4, l.kernel, l.stride, (l.kernel - 1) // 2 * l.dilation, l.dilation, bias=False)
                          for l in best.layers))  # fmt: skip
    rf = receptive_field(net, (1, 4, 45, 45))
    assert rf.size == (best.rf, best.rf) and rf.jump == (best.stride, best.stride)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 4, 45, 45))
    assert counter.get_total_flops() == 2 * best.macs  # FLOPs = 2·MACs
    built = build(best.arch(), in_chans=4)  # the arch string builds the same stack (with BN and ReLU)
    assert receptive_field(built, (1, 4, 45, 45)).size == (best.rf, best.rf)


def test_unreachable_target_and_bad_arguments():
    with pytest.raises(ValueError, match="reaches a field of 1000"):
        plan_receptive_field(1000, depth=2, dilations=(1,))
    with pytest.raises(ValueError, match="target"):
        plan_receptive_field(0)
    with pytest.raises(ValueError, match="kernels"):
        plan_receptive_field(10, kernels=())


def test_cli_prints_the_plan(capsys):
    assert main(["rf-plan", "--target", "100", "--depth", "6", "--stride", "8", "--channels", "16", "--top", "2"]) == 0
    out = capsys.readouterr().out
    best = plan_receptive_field(100, depth=6, stride=8, channels=16, top=1)[0]
    assert best.describe() in out and f"{best.macs:,}" in out
    assert main(["rf-plan", "--target", "1000", "--depth", "2", "--dilations", "1"]) == 2
