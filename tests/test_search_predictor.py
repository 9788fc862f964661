"""The OFA-style accuracy predictor (edgecnn.search.predictor): its encoding, and that it learns a ranking."""

from __future__ import annotations


import numpy as np
import pytest

from edgecnn.search.estimate import distinct_archs, kendall_tau
from edgecnn.search.predictor import AccuracyPredictor, cross_validated, encode
from edgecnn.search.space import GENES, get_space


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3-32")


def _archs(space, n, seed):
    return distinct_archs(space, n, seed)


def test_encoding_is_one_hot_per_gene_and_stage(space):
    arch = _archs(space, 1, 0)[0]
    v = encode(space, arch)
    assert len(v) == sum(len(s.options(g)) for s in space.stages for g in GENES)
    assert v.sum() == len(space.stages) * len(GENES)  # exactly one option of every gene is on
    genome = space.decode(arch)
    first = space.stages[0]
    depth_hot = v[: len(first.depths)]
    assert first.depths[int(np.argmax(depth_hot))] == genome[0].depth


def test_encoding_refuses_a_network_of_another_space(space):
    with pytest.raises(ValueError, match="not a network of search space|too few blocks"):
        encode(space, "conv_c8 gap fc")


def _truth(space, arch):  # an accuracy that depends on the genes: deeper, wider, larger kernels are better
    g = space.decode(arch)
    return sum(c.depth * 0.02 + c.width / 1000 + c.kernel * 0.005 for c in g)


@pytest.mark.parametrize("model", ["gbt", "mlp"])
def test_predictor_ranks_held_out_networks(space, model):
    train, test = _archs(space, 60, 1), _archs(space, 20, 2)
    p = AccuracyPredictor(space, model=model).fit(train, [_truth(space, a) for a in train])
    tau, _ = kendall_tau(p(test), [_truth(space, a) for a in test])
    assert tau > 0.6


def test_cross_validated_predicts_each_pair_without_seeing_it(space):
    archs = _archs(space, 40, 3)
    acc = [_truth(space, a) for a in archs]
    pred = cross_validated(space, archs, acc, k=5)
    assert len(pred) == 40 and pred != acc
    assert kendall_tau(pred, acc)[0] > 0.4  # chance: 0 ± 0.11 at n = 40


def test_predictor_errors_name_the_problem(space):
    with pytest.raises(ValueError, match="not fitted"):
        AccuracyPredictor(space)(["x"])
    with pytest.raises(ValueError, match=">= 3"):
        AccuracyPredictor(space).fit(_archs(space, 2, 0), [0.1, 0.2])
    with pytest.raises(ValueError, match="unknown predictor model"):
        AccuracyPredictor(space, model="xgb")
    with pytest.raises(ValueError, match="k-fold"):
        cross_validated(space, _archs(space, 3, 0), [0.1, 0.2, 0.3], k=5)
