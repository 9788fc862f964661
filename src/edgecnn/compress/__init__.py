"""Compression (docs/design.md §5): make a trained network smaller and faster for its device.

The package will own, one file each:

- :mod:`~edgecnn.compress.fold_bn` — fold inference-mode BatchNorm into the
  conv/linear layer before it (:func:`fold_bn`, :func:`fold_bn_`,
  :func:`plan_fold_bn`). *Here.*
- :mod:`~edgecnn.train.recalibrate` — re-estimate BN running statistics
  on a few batches, after a change to the network or the data
  (:func:`recalibrate_bn`, :func:`recalibrate_bn_`). *Here.*
- :mod:`~edgecnn.compress.factor.lowrank` — truncated-SVD factorisation of Linear
  and Conv2d layers, rank by kept energy, a cost target or given
  (:func:`plan_lowrank`, :func:`lowrank`, :func:`lowrank_`,
  :func:`factorize_linear`, :func:`factorize_conv`). *Here.*
- :mod:`~edgecnn.compress.channels.prune_inner` — prune the inner (expanded) width
  of ir/basic/bottleneck blocks, uncoupled from any residual add, in arch
  space with weight transfer (:func:`inner_importance`,
  :func:`plan_prune_inner`, :func:`prune_inner`). *Here.*
- :mod:`~edgecnn.compress.factor.separable` — standard → depthwise separable
  replacement of chosen convs, fitted by least squares
  (:func:`separable_pair`, :func:`fit_pointwise_`, :func:`separable_to_budget`). *Here.*
- :mod:`~edgecnn.compress.factor.lowrank_method` — low-rank ranks chosen to a budget
  against measured per-layer latency (:func:`lowrank_to_budget`); the
  measuring and the greedy choice shared with ``separable`` in
  :mod:`~edgecnn.compress.factor.layer_timing`; the ``edgecnn compress --method
  lowrank|separable`` run and loading its result in
  :mod:`~edgecnn.compress.factor.by_layer`. *Here* (import from the modules).
- :mod:`~edgecnn.compress.channels.groups` — coupled channel groups of any traced
  network (:func:`channel_groups`); the label run in
  :mod:`~edgecnn.compress.channels.labels`, union-find and grouping in
  :mod:`~edgecnn.compress.channels.components`. *Here.*
- :mod:`~edgecnn.compress.channels.importance` — channel scores: L1/L2 of
  BN-folded filters, BN |γ|, Taylor, random (:func:`importance`). *Here.*
- :mod:`~edgecnn.compress.channels.prune` — structured channel pruning over the
  groups, to a channel / MACs / params target, in arch space for EdgeNets
  (:func:`plan_prune`, :func:`prune`, :func:`zero_pruned_`); allocation and
  exact costs in :mod:`~edgecnn.compress.channels.prune_alloc`, arch-space writing in
  :mod:`~edgecnn.compress.channels.prune_arch`. *Here.*
- :mod:`~edgecnn.compress.netadapt.drop_block` — remove a block with an identity skip
  in arch space, the other weights transferred (:func:`droppable_blocks`,
  :func:`plan_drop`, :func:`drop_block`): NetAdapt's depth proposals. *Here*
  (import from the module).
- :mod:`~edgecnn.compress.netadapt.loop` — NetAdapt (Yang et al. 2018): budgeted,
  group-by-group pruning with BN recalibration and short fine-tunes on the
  executor, resumable (:func:`netadapt`), of an EdgeNet or any traceable
  module; what a network or plan costs in :mod:`~edgecnn.compress.resource_meter`, the
  state file and its replay in :mod:`~edgecnn.compress.netadapt.state`; budgets in
  :mod:`~edgecnn.compress.budget`, one-shot pruning to a budget in
  :mod:`~edgecnn.compress.netadapt.oneshot`, the ``kind: "compress"`` results document
  in :mod:`~edgecnn.compress.summary`. *Here* (import from the modules).
- :mod:`~edgecnn.compress.netadapt.variants` — pruned variants of a network at random
  uneven widths, to calibrate and validate latency on NetAdapt's family
  (:func:`random_variants`). *Here.*
- :mod:`~edgecnn.compress.quantize` — int8 static post-training quantization
  through ONNX Runtime, fp32 vs int8 (:func:`quantize_int8`, :func:`compare_int8`). *Here.*

The check that conv → BN is invariant to a positive scaling of the conv
weights lives in ``tests/test_compress_bn.py`` (a check, not a feature).
Transforms return a new module; the ones whose name ends in ``_`` work in place.
"""

from edgecnn.compress.channels.groups import ChannelGraph, Group, Member, channel_groups
from edgecnn.compress.channels.importance import CRITERIA, importance
from edgecnn.compress.channels.prune import GroupPrune, GroupSkip, Pruned, PrunePlan, apply_kept, plan_prune, prune, zero_pruned_
from edgecnn.compress.fold_bn import FoldPair, FoldPlan, SkippedBN, fold_bn, fold_bn_, plan_fold_bn
from edgecnn.compress.factor.lowrank import (
    budget_rank,
    energy_rank,
    factorize_conv,
    factorize_linear,
    singular_values,
    svd_rank,
)
from edgecnn.compress.factor.lowrank_plan import LowRankLayer, LowRankPlan, LowRankSkip, lowrank, lowrank_, plan_lowrank
from edgecnn.compress.channels.prune_inner import (
    InnerPrune,
    InnerPrunePlan,
    inner_importance,
    plan_prune_inner,
    prune_inner,
)
from edgecnn.train.recalibrate import Batches, recalibrate_bn, recalibrate_bn_

__all__ = [
    "CRITERIA",
    "Batches",
    "ChannelGraph",
    "Group",
    "GroupPrune",
    "GroupSkip",
    "Member",
    "PrunePlan",
    "Pruned",
    "apply_kept",
    "channel_groups",
    "importance",
    "plan_prune",
    "prune",
    "zero_pruned_",
    "FoldPair",
    "FoldPlan",
    "InnerPrune",
    "InnerPrunePlan",
    "LowRankLayer",
    "LowRankPlan",
    "LowRankSkip",
    "SkippedBN",
    "budget_rank",
    "energy_rank",
    "factorize_conv",
    "factorize_linear",
    "fold_bn",
    "fold_bn_",
    "inner_importance",
    "lowrank",
    "lowrank_",
    "plan_fold_bn",
    "plan_lowrank",
    "plan_prune_inner",
    "prune_inner",
    "recalibrate_bn",
    "recalibrate_bn_",
    "singular_values",
    "svd_rank",
]
