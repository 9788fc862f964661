"""Prune the inner width of EdgeNet blocks, in arch space, with weight transfer (docs/design.md §5).

The inner (expanded) channels of an inverted residual, and the middle
channels of a ResNet basic or bottleneck block, are produced and consumed
inside the block: no residual add, concatenation or other block sees them.
So each block's inner width can shrink on its own — this is most of what
NetAdapt (Yang et al. 2018, §4 and Fig. 4) removes from MobileNets. The
arch format already expresses the result (``ir_m72_c24`` → ``ir_m40_c24``),
so a pruned network is an ordinary EdgeNet: :func:`prune_inner` builds the
new arch string and copies the kept channels' weights into it.

What moves with an inner channel ``j`` of a block (everything else is copied):

========== ============================================================
ir         expand conv filter ``j`` + its BN, depthwise filter ``j`` + its
           BN, SE ``fc1`` input ``j`` and ``fc2`` output ``j``, projection
           input ``j``
basic      conv1 filter ``j`` + the BN after it, conv2 input ``j``
bottleneck conv1 filter ``j`` + BN1, conv2 input and output ``j`` + BN2,
           conv3 input ``j``
========== ============================================================

(In pre-activation blocks the BN after a conv is the first layer of the next
:class:`~edgecnn.blocks.ConvBNAct`; the table is the same.) SE in basic and
bottleneck blocks acts on the output width, which stays. The table is not
written out here: the weights are sliced by the channel groups of
:mod:`edgecnn.compress.channels.groups` (the block's inner group, its bottleneck
middle group with the same channels, its SE squeeze group) through
:func:`edgecnn.compress.channels.prune.apply_kept`, the one slicing step of every
pruning; :func:`edgecnn.compress.channels.prune.plan_prune` generalises this file to
every group (residual runs' ``c`` included).

Choices:

* **Importance** (:func:`inner_importance`) is the L1 norm of the filter
  that produces the channel (Li et al. 2017, "Pruning Filters for Efficient
  ConvNets", §3.1) *after folding the BN that follows it*:
  ``‖W_j‖₁ · |γ_j| / √(σ²_j + ε)``. A conv followed by BN is invariant to the
  scale of its filters (``BN(αW∗x) = BN(W∗x)``, docs/design.md §5), so the raw L1 says
  little about what the channel contributes; the folded filter is what runs
  at inference (it also covers Network Slimming's ``|γ|``, Liu et al. 2017).
  ``bn_scale=False`` gives Li et al.'s raw L1.
* **ir without expansion** (``m`` equal to the input width, e.g. ``ir_e1``)
  has no expand conv: its inner channels *are* the input channels, tied to
  the previous block and any residual add. Such blocks are not prunable
  here (``InnerPrunePlan.skipped`` says so); neither is a width that would
  become equal to the input width, since the builder would then drop the
  expand conv.
* **SE squeeze width** is derived from the inner width
  (``make_divisible(m·ratio, 8)``), so it may shrink with it. The kept
  hidden units are those with the largest L1 of their ``fc1`` row over the
  kept inputs (the same filter-norm criterion, on the weights that remain).
* ``keep`` as a count keeps the top-k channels by importance in their
  original order; as indices it keeps exactly those, in the given order
  (a permutation keeps the function and the arch string).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgecnn.arch import ArchSpec, BlockSpec
from edgecnn.blocks import se_width
from edgecnn.build import EdgeNet, build
from edgecnn.compress.channels.groups import channel_groups
from edgecnn.compress.channels.prune import apply_kept
from edgecnn.compress.channels.prune_arch import ArchSpace
from edgecnn.kinds import BLOCK_KINDS, InnerChannels
from edgecnn.plan import LayerPlan, output_stride, resolve

__all__ = ["InnerPrune", "InnerPrunePlan", "inner_importance", "plan_prune_inner", "prune_inner"]

Keep = Mapping[int, int] | Mapping[int, Sequence[int]]
_KINDS = tuple(name for name, k in BLOCK_KINDS.items() if k.inner)  # kinds with a prunable inner width


def _inner(p: LayerPlan) -> InnerChannels:
    return BLOCK_KINDS[p.spec.kind].inner[bool(p.spec.pre)]


@dataclass(frozen=True)
class InnerPrune:
    """One block whose inner width changes (or whose inner channels are reordered)."""

    position: int  # index into EdgeNet.blocks
    kind: str  # a kind with inner channels (BlockKind.inner), e.g. "ir", "basic" or "bottleneck"
    width_before: int  # inner width m of the original block
    kept: tuple[int, ...]  # original inner channels kept, in their new order
    squeeze_before: int  # SE hidden width before (0 without SE; ir only)
    squeeze_kept: tuple[int, ...]  # original SE hidden units kept (empty without SE)

    @property
    def width_after(self) -> int:
        return len(self.kept)


@dataclass(frozen=True)
class InnerPrunePlan:
    """What :func:`prune_inner` does to a model: the new arch and each changed block."""

    arch_before: str  # canonical arch of the original model
    arch: str  # canonical arch of the pruned model
    blocks: tuple[InnerPrune, ...]  # the blocks in ``keep``, by position
    skipped: tuple[tuple[int, str], ...]  # (position, reason) of ir/basic/bottleneck blocks that cannot be pruned


def _plans(model: EdgeNet) -> list[LayerPlan]:
    if not isinstance(model, EdgeNet):
        raise ValueError(f"inner-width pruning needs an EdgeNet (edgecnn.build), got {type(model).__name__}")
    return resolve(model.arch, num_classes=model.num_classes, in_chans=model.in_chans)


def _unprunable(p: LayerPlan) -> str | None:
    """Why block ``p`` has no prunable inner width, or None when it has one."""
    if p.spec.kind not in _KINDS:
        return f"a {p.spec.kind!r} block has no inner width (only {', '.join(_KINDS)} blocks do)"
    if _inner(p).tied_to_input and p.mid == p.cin:
        return (
            f"{p.spec.kind} block without expansion (m = input width {p.cin}): its inner channels are the input "
            "channels, coupled to the previous block"
        )
    return None


def _producer(block: nn.Module, p: LayerPlan) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The conv that produces the inner channels and the BN right after it."""
    conv, bn = _inner(p).producer
    return block.get_submodule(conv), block.get_submodule(bn)  # type: ignore[return-value]


@torch.no_grad()
def inner_importance(model: EdgeNet, *, bn_scale: bool = True) -> dict[int, torch.Tensor]:
    """Per prunable block position, a score per inner channel (higher = more important).

    The score is the L1 norm of the producing filter (Li et al. 2017),
    scaled by the following BN's ``|γ|/√(σ²+ε)`` unless ``bn_scale=False``
    (see the module docstring). ir blocks without an expand conv are left
    out (:func:`plan_prune_inner` reports them in ``skipped``).
    """
    plans = _plans(model)
    scores: dict[int, torch.Tensor] = {}
    for p in plans:
        if _unprunable(p) is not None:
            continue
        conv, bn = _producer(model.blocks[p.position], p)
        s = conv.weight.detach().abs().flatten(1).sum(1).float()
        if bn_scale:
            s = s * (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)).float()
        scores[p.position] = s.cpu()
    return scores


def _indices(value: object, width: int, where: str) -> list[int]:
    """Validate one ``keep`` entry against an inner width; a count becomes None-free indices later."""
    try:
        idx = [operator.index(i) for i in value]  # type: ignore[attr-defined]
    except TypeError:
        raise ValueError(f"{where}: keep must be a count or a sequence of channel indices, got {value!r}") from None
    if not idx:
        raise ValueError(f"{where}: keep no channels at all? give at least one index")
    bad = [i for i in idx if not 0 <= i < width]
    if bad:
        raise ValueError(f"{where}: channel indices {bad} out of range; the inner width is {width} (0..{width - 1})")
    if len(set(idx)) != len(idx):
        dup = sorted({i for i in idx if idx.count(i) > 1})
        raise ValueError(f"{where}: duplicate channel indices {dup}; list each kept channel once")
    return idx


def plan_prune_inner(model: EdgeNet, keep: Keep, *, bn_scale: bool = True) -> InnerPrunePlan:
    """Check ``keep`` against ``model`` and work out the pruned arch and the kept channels.

    ``keep`` maps a block position (index into ``model.blocks``) to a count
    (top-k by :func:`inner_importance`) or to the exact inner channels to keep.
    """
    plans = _plans(model)
    if not isinstance(keep, Mapping):
        raise ValueError(f"keep must be a dict {{block position: count or indices}}, got {type(keep).__name__}")
    scores = inner_importance(model, bn_scale=bn_scale)
    by_pos = {p.position: p for p in plans}
    entries: dict[int, InnerPrune] = {}
    for pos, value in keep.items():
        if isinstance(pos, bool) or not isinstance(pos, int) or pos not in by_pos:
            raise ValueError(f"keep: {pos!r} is not a block position; valid: 0..{len(plans) - 1} (model.blocks)")
        p = by_pos[pos]
        where = f"block {pos} {p.spec.format()!r}"
        reason = _unprunable(p)
        if reason is not None:
            raise ValueError(f"{where} cannot be pruned: {reason}; leave it out of keep")
        assert p.mid is not None
        if isinstance(value, bool):
            raise ValueError(f"{where}: keep must be a count or indices, got {value!r}")
        if isinstance(value, int):
            if not 1 <= value <= p.mid:
                raise ValueError(f"{where}: keep {value} channels? give a count from 1 to its inner width {p.mid}")
            order = torch.argsort(scores[pos], descending=True, stable=True)
            kept = sorted(order[:value].tolist())
        else:
            kept = _indices(value, p.mid, where)
        if _inner(p).tied_to_input and len(kept) == p.cin:
            raise ValueError(
                f"{where}: an inner width equal to the input width ({p.cin}) drops the expand conv "
                f"(the builder omits it); keep {p.cin - 1} or {p.cin + 1} channels"
            )
        squeeze_kept: tuple[int, ...] = ()
        if _inner(p).squeeze_inside and p.squeeze:
            fc1 = model.blocks[pos].se.fc1.weight.detach()  # type: ignore[union-attr]
            rows = fc1[:, kept].abs().flatten(1).sum(1)
            n = se_width(len(kept), p.spec.se or 0.0)
            order = torch.argsort(rows, descending=True, stable=True)
            squeeze_kept = tuple(sorted(order[:n].tolist()))
        entries[pos] = InnerPrune(pos, p.spec.kind, p.mid, tuple(kept), p.squeeze, squeeze_kept)

    # Rewrite only the arch blocks that change; a changed repeat writes out its block's repeats.
    changed = {pos for pos, e in entries.items() if e.width_after != e.width_before}
    out: list[BlockSpec] = []
    for index, block in enumerate(model.spec.blocks):
        reps = [p for p in plans if p.index == index]
        if not any(p.position in changed for p in reps):
            out.append(block)
            continue
        for p in reps:
            b = p.spec.with_(m=entries[p.position].width_after) if p.position in changed else p.spec
            out.append(b)
    arch = ArchSpec(tuple(out)).format()
    skipped = tuple(
        (p.position, r) for p in plans if p.spec.kind in _KINDS and (r := _unprunable(p)) is not None
    )
    return InnerPrunePlan(model.arch, arch, tuple(entries[k] for k in sorted(entries)), skipped)


@torch.no_grad()
def prune_inner(model: EdgeNet, keep: Keep | InnerPrunePlan, *, bn_scale: bool = True) -> EdgeNet:
    """A new EdgeNet with the inner widths in ``keep`` reduced and the kept channels' weights copied.

    ``keep``: ``{block position: count or channel indices}`` (see
    :func:`plan_prune_inner`) or a plan made for this model. The original is
    not modified; the copy has its device, dtype and train/eval mode.
    Recalibrate BN and fine-tune after pruning.
    """
    plan = keep if isinstance(keep, InnerPrunePlan) else plan_prune_inner(model, keep, bn_scale=bn_scale)
    if not isinstance(model, EdgeNet):
        raise ValueError(f"inner-width pruning needs an EdgeNet (edgecnn.build), got {type(model).__name__}")
    if plan.arch_before != model.arch:
        raise ValueError(f"the plan was made for {plan.arch_before!r}, not this model ({model.arch!r})")
    new = build(plan.arch, num_classes=model.num_classes, in_chans=model.in_chans)
    size = 2 * output_stride(_plans(model))
    cg = channel_groups(model, (model.in_chans, size, size))
    where = ArchSpace(model, cg).by_field
    chosen: dict[int, tuple[int, ...]] = {}  # channel group -> kept channels (the weight slicing of prune)
    for e in plan.blocks:
        chosen[where[("m", e.position)]] = e.kept
        if ("m2", e.position) in where:  # a bottleneck's middle conv: the same inner channels in and out
            chosen[where[("m2", e.position)]] = e.kept
        if e.squeeze_kept:
            chosen[where[("sq", e.position)]] = e.squeeze_kept
    sd = apply_kept(model, cg, chosen)[0].state_dict()
    new.load_state_dict(sd)  # strict: every shape must match the rebuilt block
    first = next(model.parameters(), None)
    if first is not None:
        new.to(device=first.device, dtype=first.dtype)
    return new.train(model.training)
