"""Accuracy estimates of search candidates that fit a CPU: supernet scores, short training, and their rank agreement.

Two estimators, both run as picklable tasks through :class:`edgecnn.executor.Executor`:

* **supernet** (cheap, seconds) — the candidate's weights are sliced out of the
  trained supernet (:meth:`Supernet.extract`), its BN statistics recalibrated on
  a few training batches (:func:`~edgecnn.train.recalibrate.recalibrate_bn_`;
  OFA §3.4: shared statistics are wrong for any one subnet) and its top-1
  measured on the validation split;
* **short training** (slower, truer) — the candidate trained from scratch for
  a few hundred steps (:func:`edgecnn.train.finetune`), then evaluated on the
  same split (MnasNet trains each sampled model for 5 epochs); the same training
  also gives :func:`training_speed`, its mean training loss (Ru et al. 2021).

A search needs only the *ranking* of candidates to be right. :func:`rank_agreement`
reports Kendall's τ between the two estimates on a sample of subnets (OFA and
its successors report the same statistic for their accuracy predictors).

Accuracy is estimated on a **validation split** cut from the training images
(:func:`search_split`), never on the test split the final network is reported on.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from edgecnn.build import build
from edgecnn.train.recalibrate import recalibrate_bn_
from edgecnn.data import BatchLoader, DataSet
from edgecnn.data.sets import make_dataset, stratified_split
from edgecnn.executor import Executor
from edgecnn.limits import MAX_BATCH, MAX_STEPS
from edgecnn.search.space import SearchSpace
from edgecnn.search.supernet import Supernet
from edgecnn.train import TrainConfig, TrainResult, evaluate, finetune
from edgecnn.train.task import DataRef, worker_data


@dataclass(frozen=True)
class EstimateSettings:
    """How candidates are scored; every field a plain value (tasks pickle to workers)."""

    image_size: int = 32  # network input side (the space's input size)
    val_fraction: float = 0.1  # share of each class's training images held out for validation
    split_seed: int = 0  # seeds the train/validation split and the recalibration batches
    recal_batches: int = 10  # batches of training images that re-estimate BN statistics
    recal_batch_size: int = 64  # images per recalibration batch
    train_steps: int = 300  # short training: optimiser steps from scratch
    train_lr: float = 0.05  # short training: peak learning rate (SGD, cosine, 10% warm-up)
    train_batch_size: int = 64  # short training: images per step

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.recal_batches < 1 or self.train_steps < 1:
            raise ValueError("recal_batches and train_steps must be positive")
        MAX_STEPS.check(self.train_steps, "short training of each candidate")
        MAX_STEPS.check(self.recal_batches, "BN recalibration")
        for name in ("recal_batch_size", "train_batch_size"):
            MAX_BATCH.check(getattr(self, name), name.replace("_", " "))

    def train_config(self, seed: int = 0) -> TrainConfig:
        """The short-training recipe (also what :func:`short_train` uses)."""
        return TrainConfig(lr=self.train_lr, batch_size=self.train_batch_size, warmup_epochs=0.0, eval_every=0,
                           progress=False, image_size=self.image_size, channels_last=False, seed=seed)  # fmt: skip


def search_split(data: DataSet, *, val_fraction: float = 0.1, seed: int = 0) -> DataSet:
    """The training images split stratified into a search-train part and a validation part (as ``test``)."""
    labels = data.train.labels.numpy()
    tr, val = stratified_split(labels, val_fraction, seed)
    return make_dataset(f"{data.name} (search split)", data.train.subset(tr), data.train.subset(val),
                        data.classes, augment=data.augment)  # fmt: skip


@lru_cache(maxsize=2)
def _worker_split(ref: DataRef, val_fraction: float, seed: int) -> DataSet:
    return search_split(worker_data(ref), val_fraction=val_fraction, seed=seed)


def recal_loader(data: DataSet, s: EstimateSettings) -> BatchLoader:
    """Training batches (shuffled with the split seed, not augmented) that re-estimate BN statistics."""
    return BatchLoader(data.train, batch_size=s.recal_batch_size, mean=data.mean, std=data.std, train=True,
                       image_size=s.image_size, seed=s.split_seed)  # fmt: skip


def score_subnet(model: torch.nn.Module, data: DataSet, s: EstimateSettings) -> float:
    """Top-1 on ``data.test`` after recalibrating BN on ``data.train`` (``model`` is changed in place)."""
    recalibrate_bn_(model, recal_loader(data, s), num_batches=s.recal_batches)
    return evaluate(model, data, image_size=s.image_size, channels_last=False, precision="fp32").top1


@dataclass(frozen=True)
class SubnetTask:
    """Score one subnet: its arch and extracted weights, where the data is, how to score."""

    name: str  # for progress and errors
    arch: str  # the subnet's arch string
    state_dict: dict[str, torch.Tensor]  # its weights, sliced from the supernet
    data: DataRef = field(default_factory=DataRef)
    settings: EstimateSettings = field(default_factory=EstimateSettings)


def run_subnet_task(task: SubnetTask) -> float:
    """The executor's function: build, load, recalibrate BN, evaluate on the validation split."""
    s = task.settings
    data = _worker_split(task.data, s.val_fraction, s.split_seed)
    model = build(task.arch, num_classes=data.num_classes, in_chans=data.in_chans)
    model.load_state_dict(task.state_dict)
    return score_subnet(model, data, s)


@dataclass(frozen=True)
class TrainTask:
    """Train one candidate from scratch for a few steps and evaluate it on the validation split."""

    name: str
    arch: str
    data: DataRef = field(default_factory=DataRef)
    settings: EstimateSettings = field(default_factory=EstimateSettings)
    seed: int = 0  # initial weights and batch order


def short_train_run(arch: str, data: DataSet, s: EstimateSettings, *, seed: int = 0) -> TrainResult:
    """``arch`` trained from scratch for ``s.train_steps`` steps on ``data.train`` and evaluated on ``data.test``:
    the whole :class:`~edgecnn.train.TrainResult` (top-1 and the training history :func:`training_speed` reads)."""
    torch.manual_seed(seed)
    model = build(arch, num_classes=data.num_classes, in_chans=data.in_chans)
    return finetune(model, data, steps=s.train_steps, config=s.train_config(seed))


def short_train(arch: str, data: DataSet, s: EstimateSettings, *, seed: int = 0) -> float:
    """Top-1 on ``data.test`` of ``arch`` trained from scratch for ``s.train_steps`` steps on ``data.train``."""
    return short_train_run(arch, data, s, seed=seed).top1


def training_speed(result: TrainResult) -> float:
    """The training speed estimate of a short training: minus its mean training loss over every step (higher =
    trains faster = ranked better).

    Ru et al. 2021 ("Speedy Performance Estimation for Neural Architecture
    Search", NeurIPS; TSE) rank architectures by the *sum* of their training
    losses over the first steps of training from scratch — how fast a network
    learns, read from the mini-batches it was trained on — instead of the top-1
    at the end of a budget that short: the sum averages thousands of training
    images where the top-1 is one reading of a validation split. With a fixed
    batch size the sum is the step count times the mean used here, so the
    ranking is the same. Each epoch entry of ``result.history`` counts by the
    steps it holds (the last one may be partial).
    """
    total, done = 0.0, 0  # done: the steps counted so far (each entry's ``steps`` is the running total)
    for e in result.history:
        total += e.train_loss * (e.steps - done)
        done = e.steps
    if done <= 0:
        raise ValueError("training_speed needs a training of at least one step; this result's history holds none")
    return -total / done


def _task_run(task: TrainTask) -> TrainResult:
    s = task.settings
    return short_train_run(task.arch, _worker_split(task.data, s.val_fraction, s.split_seed), s, seed=task.seed)


def run_train_task(task: TrainTask) -> float:
    """The executor's function for :class:`TrainTask`: the short training's top-1."""
    return _task_run(task).top1


READINGS = ("top1", "speed")  # what a short training says of a network: validation top-1, training speed


def short_reading(result: TrainResult) -> dict[str, float]:
    """Both readings of one short training (:data:`READINGS`): its top-1 on the validation split and its
    :func:`training_speed` — one training, two estimates."""
    return {"top1": result.top1, "speed": training_speed(result)}


def run_reading_task(task: TrainTask) -> dict[str, float]:
    """The executor's function for :class:`ShortTrainer`: :func:`short_reading` of the task's short training."""
    return short_reading(_task_run(task))


class SupernetEstimator:
    """``estimator(archs) -> accuracies``: supernet subnets scored through the executor (the cheap estimate)."""

    def __init__(self, supernet: Supernet, data: DataRef, settings: EstimateSettings, executor: Executor) -> None:
        self.supernet, self.data, self.settings, self.executor = supernet, data, settings, executor

    def __call__(self, archs: list[str]) -> list[float]:
        tasks = []
        for i, arch in enumerate(archs):
            weights = {k: v.detach().clone() for k, v in self.supernet.extract(arch).state_dict().items()}
            tasks.append(SubnetTask(f"subnet {i}: {arch}", arch, weights, self.data, self.settings))
        return self.executor.map(run_subnet_task, tasks, description="scoring subnets")


class TrainEstimator:
    """``estimator(archs) -> accuracies``: every candidate trained briefly through the executor (slower, truer)."""

    task_fn: Callable[[TrainTask], Any] = staticmethod(run_train_task)  # what each worker returns of its training
    description = "training candidates"

    def __init__(self, data: DataRef, settings: EstimateSettings, executor: Executor, *, seed: int = 0) -> None:
        self.data, self.settings, self.executor, self.seed = data, settings, executor, seed

    def __call__(self, archs: list[str]) -> list[Any]:
        tasks = [TrainTask(f"train {i}: {a}", a, self.data, self.settings, self.seed) for i, a in enumerate(archs)]
        return self.executor.map(self.task_fn, tasks, description=self.description)


class ShortTrainer(TrainEstimator):
    """``trainer(archs) -> readings``: every network trained briefly through the executor, each read both ways
    (:func:`short_reading`) — the second fidelity of ``edgecnn search --rerank``."""

    task_fn = staticmethod(run_reading_task)
    description = "short-training candidates"


def kendall_tau(a: list[float], b: list[float]) -> tuple[float, float]:
    """Kendall's τ-b between two score lists and its two-sided p-value (scipy, a dependency of scikit-learn)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"Kendall's tau needs two equally long lists of at least 2 scores, got {len(a)} and {len(b)}")
    from scipy.stats import kendalltau

    res = kendalltau(a, b)
    return float(res.statistic), float(res.pvalue)


def kendall_tau_interval(a: list[float], b: list[float], *, level: float = 0.95, resamples: int = 2000,
                         seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """A percentile-bootstrap confidence interval of Kendall's τ-b between ``a`` and ``b`` (pairs resampled together).

    On 15–25 subnets a τ of 0.5 carries an interval about ±0.25 wide, which the
    p-value alone does not show. A resample whose values are all tied in one list
    has no τ and is dropped (``scipy.stats.bootstrap`` would return NaN for the
    whole interval once one such resample is drawn, likely on a handful of pairs).
    """
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"a bootstrap interval of tau needs two equally long lists of at least 3 scores, "
                         f"got {len(a)} and {len(b)}")  # fmt: skip
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    import numpy as np
    from scipy.stats import kendalltau

    x, y = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("every score of one list is equal, so tau is undefined (an estimator that cannot rank: "
                         "e.g. chance accuracy after too few training steps); score with more signal")  # fmt: skip
    picks = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on each all-tied resample; they are dropped below
        taus = np.array([kendalltau(x[i], y[i]).statistic for i in picks], dtype=float)
    taus = taus[np.isfinite(taus)]
    tail = 100 * (1 - level) / 2
    return float(np.percentile(taus, tail)), float(np.percentile(taus, 100 - tail))


def kendall_tau_within(a: list[float], b: list[float], control: list[float], *,
                       rel: float = 0.1) -> tuple[float | None, int]:  # fmt: skip
    """Kendall's τ of ``a`` and ``b`` over only the pairs whose ``control`` values are within ``rel`` of each
    other (relative to the smaller): ``(concordant − discordant) / (concordant + discordant)``, ties left out;
    returns (τ, pairs counted), τ None when no untied pair is left.

    An estimator that mostly tracks network size ranks subnets of *different*
    latencies well; a latency-constrained search chooses between subnets of about
    *equal* latency, and this τ — with ``control`` the measured latency — is its
    ranking there. (Kendall's partial τ is no substitute: it stays well above
    zero for an estimator and a truth that share only the control.)
    """
    if not len(a) == len(b) == len(control) or len(a) < 2:
        raise ValueError(f"tau within bands needs three equally long lists of at least 2 scores, "
                         f"got {len(a)}, {len(b)} and {len(control)}")  # fmt: skip
    if not rel >= 0 or any(c <= 0 for c in control):
        raise ValueError(f"rel must be >= 0 and every control value positive (a latency), got rel={rel}")
    conc = disc = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            if abs(control[i] - control[j]) > rel * min(control[i], control[j]):
                continue
            s = (a[i] - a[j]) * (b[i] - b[j])
            conc, disc = conc + (s > 0), disc + (s < 0)
    n = conc + disc
    return ((conc - disc) / n if n else None), n


def rank_blend(*scores: list[float]) -> list[float]:
    """The mean of each estimator's rank of every subnet (ties share the mean rank; 1 = lowest score).

    Two fidelities that fail in opposite ways: a zero-cost proxy such as NASWOT
    ranks subnets of *different* size well (Mellor et al. 2021; here it tracks the
    measured latency) and is at chance among subnets of equal latency, while a
    short training from scratch ranks equal-latency subnets but under-rates the
    large ones, which have not caught up after a few hundred steps. The mean rank
    (the combination of Abdelfattah et al. 2021 §5's proxy vote) needs no scale
    shared between the two. Scores of ``-inf`` (a degenerate proxy) rank lowest.
    """
    if not scores or len({len(s) for s in scores}) != 1 or not scores[0]:
        raise ValueError(f"rank_blend needs one or more equally long, non-empty score lists, got lengths "
                         f"{[len(s) for s in scores]}")  # fmt: skip
    if any(v != v for s in scores for v in s):
        raise ValueError("rank_blend: a score is NaN; an estimator failed on that subnet, so it cannot be ranked")
    from scipy.stats import rankdata

    return [float(v) for v in sum(rankdata(s) for s in scores) / len(scores)]


@dataclass(frozen=True)
class RankAgreement:
    """How well the cheap estimate ranks subnets like short stand-alone training."""

    archs: tuple[str, ...]  # the sampled subnets
    cheap: tuple[float, ...]  # supernet estimate (after BN recalibration)
    trained: tuple[float, ...]  # short stand-alone training
    tau: float  # Kendall's τ-b between the two
    p_value: float  # two-sided p-value of τ = 0

    def to_dict(self) -> dict[str, Any]:
        rows = [{"arch": a, "cheap": c, "trained": t} for a, c, t in zip(self.archs, self.cheap, self.trained)]
        return {"n": len(self.archs), "tau": self.tau, "p_value": self.p_value, "rows": rows}


Estimator = Callable[[list[str]], list[float]]
"""Accuracy estimates of a batch of arch strings (a :class:`SupernetEstimator`, a :class:`TrainEstimator`)."""


def distinct_archs(space: SearchSpace, n: int, seed: int) -> list[str]:
    """``n`` different arch strings drawn from ``space`` with ``seed`` (repeats skipped), in draw order."""
    rng = random.Random(seed)
    archs: list[str] = []
    while len(archs) < n:
        a = space.sample(rng).format()
        if a not in archs:
            archs.append(a)
    return archs


def rank_agreement(space: SearchSpace, cheap: Estimator, trained: Estimator, *, n: int = 8,
                   seed: int = 0) -> RankAgreement:  # fmt: skip
    """Kendall's τ between the two estimators on ``n`` subnets drawn from ``space`` with ``seed``."""
    if n < 2:
        raise ValueError(f"rank agreement needs at least 2 subnets, got {n}")
    archs = distinct_archs(space, n, seed)
    c, t = cheap(archs), trained(archs)
    tau, p = kendall_tau(list(c), list(t))
    return RankAgreement(tuple(archs), tuple(c), tuple(t), tau, p)
