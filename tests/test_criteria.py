"""Importance criteria are one record each (edgecnn.compress.channels.importance.CRITERION_KINDS): a criterion that needs
batches is refused up front by the callers that have none, naming what to use instead."""

from __future__ import annotations

import pytest
import torch

from edgecnn.build import build
from edgecnn.compress.channels.groups import channel_groups
from edgecnn.compress.channels.importance import (
    CRITERIA,
    CRITERION_KINDS,
    check_criterion,
    data_free_criteria,
    importance,
)
from edgecnn.compress.resource_meter import ResourceMeter
from edgecnn.compress.netadapt.loop import NetAdaptConfig
from edgecnn.compress.netadapt.oneshot import prune_to_budget

NET = "conv_c8 conv_s2_c16 gap fc"


def test_the_records_are_the_criteria_and_say_which_need_data() -> None:
    assert CRITERIA == tuple(CRITERION_KINDS) == ("l1", "l2", "bn_scale", "taylor", "random")
    assert [n for n, c in CRITERION_KINDS.items() if c.needs_data] == ["taylor"]
    assert data_free_criteria() == ("l1", "l2", "bn_scale", "random")


def test_each_record_scores_every_prunable_channel_and_l1_is_the_folded_filter_norm() -> None:
    torch.manual_seed(0)
    model = build(NET, num_classes=10, in_chans=1).eval()
    graph = channel_groups(model, (1, 8, 8), round_to=1)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    for name in CRITERIA:
        scores = importance(graph, model, name, data=[(x, y)])
        assert {g.index: g.width for g in graph.prunable} == {k: v.numel() for k, v in scores.items()}
    # l1 by hand for the first conv: |W_j| summed, scaled by the BN that follows (|gamma| / sqrt(var + eps))
    conv, bn = model.blocks[0].conv, model.blocks[0].bn
    g0 = next(g for g in graph.prunable if g.width == 8)
    scale = bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)
    expected = conv.weight.abs().sum(dim=(1, 2, 3)) * scale
    torch.testing.assert_close(importance(graph, model, "l1")[g0.index], expected.detach())


def test_taylor_is_refused_up_front_where_there_are_no_batches() -> None:
    with pytest.raises(ValueError, match="taylor criterion scores channels from gradients on batches, which "
                                         "NetAdapt's per-group bisection does not give it; use one of l1, l2"):
        NetAdaptConfig(criterion="taylor")
    model = build(NET, num_classes=10, in_chans=1)
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match="one-shot pruning to a budget does not give it"):
        prune_to_budget(model, 1000, meter, criterion="taylor")
    with pytest.raises(ValueError, match="unknown importance criterion 'l3'; valid: l1, l2, bn_scale, taylor"):
        check_criterion("l3", has_data=True, where="")
    check_criterion(lambda g, m: {}, has_data=False, where="anywhere")  # a callable is the caller's business
