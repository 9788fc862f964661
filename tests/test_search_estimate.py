import math

import pytest
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
    short_train,
    short_train_run,
    training_speed,
)
from edgecnn.search.supernet import Supernet
from edgecnn.train import EpochStats, EvalResult, TrainResult, evaluate
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


def _stats(epoch: int, steps: int, loss: float) -> EpochStats:
    return EpochStats(epoch=epoch, steps=steps, lr=0.1, train_loss=loss, train_top1=0.5, images_per_s=1.0,
                      seconds=1.0, test=None)  # fmt: skip


def test_training_speed_is_minus_the_step_weighted_mean_training_loss():
    final = EvalResult(top1=0.5, top5=1.0, loss=1.0, per_class=(0.5,) * 10, num_images=10, seconds=0.0)
    one = TrainResult(final=final, ema=None, history=(_stats(1, 300, 1.25),), steps=300, seconds=1.0, checkpoint=None)
    assert training_speed(one) == -1.25
    # 10 steps at mean loss 2.0, then a partial epoch of 3 steps at 1.0: -(10*2 + 3*1) / 13
    two = TrainResult(final=final, ema=None, history=(_stats(1, 10, 2.0), _stats(2, 13, 1.0)), steps=13, seconds=1.0,
                      checkpoint=None)  # fmt: skip
    assert math.isclose(training_speed(two), -23 / 13)
    with pytest.raises(ValueError, match="at least one step"):
        training_speed(TrainResult(final=final, ema=None, history=(), steps=0, seconds=0.0, checkpoint=None))


def test_short_train_run_is_the_short_training_and_its_speed_reads_fits_own_loss():
    data = search_split(load_digits(image_size=16, limit=20), val_fraction=0.25)
    s = EstimateSettings(image_size=16, train_steps=4, train_batch_size=16)
    arch = str(TINY_SPACE.arch(TINY_SPACE.extreme(True)))
    run = short_train_run(arch, data, s, seed=3)
    assert run.steps == 4 and len(run.history) == 1  # 4 steps of 16 of 150 images: within the first epoch
    assert run.top1 == short_train(arch, data, s, seed=3)  # same seed, same training
    assert training_speed(run) == -run.history[0].train_loss
