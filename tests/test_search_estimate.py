import math

import torch
from search_helpers import TINY_SPACE

from edgecnn.data import load_digits
from edgecnn.executor import Executor
from edgecnn.search.estimate import (
    EstimateSettings,
    SupernetEstimator,
    TrainEstimator,
    rank_agreement,
    score_subnet,
    search_split,
)
from edgecnn.search.supernet import Supernet
from edgecnn.train import evaluate
from edgecnn.train.task import DataRef


def test_search_split_holds_out_training_images_only():
    data = load_digits(image_size=16, limit=20)
    split = search_split(data, val_fraction=0.25, seed=0)
    assert len(split.train) == 150 and len(split.test) == 50  # 5 of each class's 20 held out
    assert torch.bincount(split.test.labels).tolist() == [5] * 10
    pool = {bytes(x.numpy()) for x in data.train.images}
    assert all(bytes(x.numpy()) in pool for x in split.test.images)  # validation comes from the training split


def test_score_recalibrates_bn_before_evaluating():
    data = search_split(load_digits(image_size=16, limit=20), val_fraction=0.25)
    s = EstimateSettings(image_size=16, recal_batches=3, recal_batch_size=16)
    torch.manual_seed(0)
    net = Supernet(TINY_SPACE, num_classes=10, in_chans=1)
    model = net.extract(TINY_SPACE.extreme(False))
    stale = model.blocks[1].dw.bn.running_var.clone()
    top1 = score_subnet(model, data, s)
    assert not torch.equal(model.blocks[1].dw.bn.running_var, stale)  # statistics re-estimated
    assert top1 == evaluate(model, data, image_size=16, channels_last=False, precision="fp32").top1


def test_rank_agreement_runs_both_estimators_on_the_same_subnets():
    torch.manual_seed(0)
    net = Supernet(TINY_SPACE, num_classes=10, in_chans=1)
    ref = DataRef("digits", image_size=16, limit=12)
    s = EstimateSettings(image_size=16, recal_batches=2, recal_batch_size=16, train_steps=3, train_batch_size=16)
    with Executor("serial") as ex:
        agree = rank_agreement(TINY_SPACE, SupernetEstimator(net, ref, s, ex), TrainEstimator(ref, s, ex), n=3)
    assert len(set(agree.archs)) == 3 and len(agree.cheap) == len(agree.trained) == 3
    assert all(0 <= a <= 1 for a in agree.cheap + agree.trained)
    assert math.isnan(agree.tau) or -1 <= agree.tau <= 1  # nan when one estimator ties every subnet
    assert agree.to_dict()["n"] == 3
