"""Fold inference-mode batch norm into the conv or linear layer before it (docs/design.md §5).

In eval mode a BatchNorm is a per-channel affine map with its running
statistics, ``BN(y) = γ·(y − μ)/√(σ² + ε) + β`` (Ioffe & Szegedy 2015, Alg. 2,
the inference network). When ``y = W∗x + b`` comes straight from a conv or
linear layer, the two compose into one layer with, per output channel ``c``,
``s_c = γ_c/√(σ²_c + ε)``::

    W'_c = W_c · s_c          b'_c = (b_c − μ_c) · s_c + β_c

(Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", §3.2). The BN becomes
``nn.Identity`` and the layer gains a bias if it had none: the network loses
``γ, β`` (2·C parameters per affine BN) and gains ``C`` biases per folded BN
whose layer had no bias.

Which BNs fold is read from the model's graph (:func:`edgecnn.graph.trace_graph`,
one ``torch.fx`` trace), not from its module names, so any fx-traceable
network works, not only EdgeNet: a BN folds when its input is the output of a
``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d`` or ``Linear`` module call **whose
only user is that BN** (a conv whose output also feeds a skip connection must
keep its raw output), each called once, and with matching channel counts.
Grouped and depthwise convs fold like any other (the scale is per output
channel). Pre-activation BNs (BN → act → conv, He et al. 2016b) have no conv
before them and stay: folding them forward into the next conv is not exact in
general — the activation sits in between, and even without one, zero padding
of the normalised input is not the normalisation of a zero-padded input.

timm's ``BatchNormAct2d`` (``timm/layers/norm_act.py``) is a ``BatchNorm2d``
subclass that applies ``self.drop`` then ``self.act`` after the affine BN; it
is traced as one call (every BN subclass is a leaf), its BN part folds and
``drop → act`` stay in its place. Any other BN subclass with a forward of its
own is kept (folding would drop what it adds).

EdgeNets stay true to their arch (docs/design.md §5, "transforms keep the arch"): a
folded ``conv`` block is ``conv_…_nobn_bias`` and a folded ``fc_…_bn`` is
``fc_…``, so when only such blocks fold :func:`fold_bn` returns an EdgeNet of
the new arch (weights loaded strictly); BN folded inside ``ir``/``ds``/
``basic``/``bottleneck``/``tconv`` blocks has no token, and the result is a
:class:`~edgecnn.build.PlainNet` (the same modules, no arch string).
:func:`fold_bn_` changes an EdgeNet in place only when its arch stays true.

Choice on modes: folding always uses the running statistics, whatever mode
the model is in, and the result is an **inference** model — training it
further trains a network without those BNs. Modes are left as they were.

Caveat: ``Linear → BatchNorm1d`` is folded for a ``(N, F)`` linear output. On
a ``(N, L, F)`` output BatchNorm1d normalises dim 1 (``L``), which only runs
when ``L == F`` and then is not a per-feature map; such models are rare and
are not detected (the graph has no shapes).
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecnn.arch import ArchSpec, BlockSpec
from edgecnn.build import EdgeNet, build, plain
from edgecnn.graph import Graph, GraphError, trace_graph
from edgecnn.kinds import BLOCK_KINDS
from edgecnn.plan import resolve

__all__ = ["FoldPair", "FoldPlan", "SkippedBN", "fold_bn", "fold_bn_", "plan_fold_bn"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TCONV = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_FOLDABLE = _CONV + _TCONV + (nn.Linear,)
_TORCH_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LazyBatchNorm1d,
              nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)  # fmt: skip
_AFTER_BN = ("drop", "act")  # timm's BatchNormAct2d: forward = act(drop(batch_norm(x)))


@dataclass(frozen=True)
class FoldPair:
    """A layer and the BN that folds into it."""

    layer: str  # qualified name of the Conv/ConvTranspose/Linear module
    bn: str  # qualified name of the BatchNorm that follows it
    channels: int  # output channels of the layer = BN features
    adds_bias: bool  # the layer had no bias, folding gives it one (+channels parameters)
    keeps: tuple[str, ...] = ()  # submodules of the BN applied after it, kept in its place (timm: "drop", "act")


@dataclass(frozen=True)
class SkippedBN:
    """A BatchNorm that stays, and why."""

    bn: str  # qualified name of the BatchNorm module
    reason: str  # one line, e.g. "input is not a conv/linear output (pre-activation BN?)"


@dataclass(frozen=True)
class FoldPlan:
    """What :func:`fold_bn` will do to a model: the pairs it folds and the BNs it leaves."""

    pairs: tuple[FoldPair, ...]  # in graph order
    skipped: tuple[SkippedBN, ...]  # every other BatchNorm of the model, in module order

    @property
    def num_folded(self) -> int:
        return len(self.pairs)

    def summary(self) -> str:
        """One line per skipped BN after a count, for logs and the CLI."""
        lines = [f"folded {self.num_folded} BatchNorm(s), kept {len(self.skipped)}"]
        lines += [f"  kept {s.bn}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def _out_channels(layer: nn.Module) -> int:
    return int(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)  # type: ignore[arg-type]


def _after_bn(bn: _BatchNorm) -> tuple[str, ...] | None:
    """The submodules a BN subclass applies after the affine BN (``()`` for torch's own), None when unknown."""
    if type(bn) in _TORCH_BNS:
        return ()
    children = tuple(name for name, _ in bn.named_children())
    return _AFTER_BN if children == _AFTER_BN else None


def _graph(model: nn.Module) -> Graph:
    try:  # every BN subclass is one call: timm's BatchNormAct2d would otherwise be traced into F.batch_norm
        return trace_graph(model, leaf_modules=(_BatchNorm,))
    except GraphError as e:
        raise ValueError(
            f"cannot fold BatchNorm: torch.fx cannot trace {type(model).__name__} ({e.reason}); "
            "fold its traceable submodules instead, e.g. fold_bn_(model.features)"
        ) from e


def plan_fold_bn(model: nn.Module) -> FoldPlan:
    """Find the (layer, BN) pairs of ``model`` that fold, and say why each other BN does not.

    Reads the model only (one symbolic trace); :func:`fold_bn` applies the plan.
    """
    g = _graph(model)
    times_called = g.times_called()
    # modules registered under two names: replacing one name would leave the other live
    aliases = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    # parameters read directly (get_attr), e.g. weight standardisation: folding would change them too
    read_directly = g.read_directly()

    pairs: list[FoldPair] = []
    folded: set[str] = set()
    reasons: dict[str, str] = {}
    for node, bn in g.module_calls(_BatchNorm):
        name = str(node.target)
        if name in reasons or name in folded:
            continue
        src = g.producer(node)
        layer = g.module(src) if src is not None else None
        keeps = _after_bn(bn)  # type: ignore[arg-type]
        if src is None or not isinstance(layer, _FOLDABLE):
            reasons[name] = "input is not a conv/linear module output (pre-activation BN?)"
            continue
        src_name, users, out = str(src.target), len(g.users(src)), _out_channels(layer)
        if keeps is None:
            reasons[name] = f"{type(bn).__name__} is a BatchNorm subclass with its own forward: folding would drop it"
        elif not bn.track_running_stats or bn.running_mean is None:
            reasons[name] = "no running statistics (track_running_stats=False): it always uses batch statistics"
        elif isinstance(bn.running_mean, nn.parameter.UninitializedBuffer):
            reasons[name] = "lazy BatchNorm not initialised yet: run one forward pass first"
        elif times_called[name] > 1 or times_called[src_name] > 1:
            reasons[name] = f"{name} or {src_name} is called more than once (shared module)"
        elif users != 1:
            reasons[name] = f"{src_name}'s output has {users} users, not only the BN"
        elif out != bn.num_features:
            reasons[name] = f"{src_name} has {out} output channels, the BN {bn.num_features}"
        elif aliases[id(bn)] > 1 or aliases[id(layer)] > 1:
            reasons[name] = "module registered under several names"
        elif name in read_directly or src_name in read_directly:
            reasons[name] = "its parameters are also read directly by the forward"
        else:
            pairs.append(FoldPair(src_name, name, bn.num_features, layer.bias is None, keeps))
            folded.add(name)
    skipped = []
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and name not in folded:
            skipped.append(SkippedBN(name, reasons.get(name, "not called by the traced forward")))
    return FoldPlan(tuple(pairs), tuple(skipped))


@torch.no_grad()
def _fold_into(layer: nn.Module, bn: _BatchNorm) -> None:
    w = layer.weight
    # float64 for the scale: √(σ²+ε) of a tiny variance loses digits in float32
    var, mean = bn.running_var.double(), bn.running_mean.double()  # type: ignore[union-attr]
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    b = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
    if isinstance(layer, _TCONV):
        # weight is (C_in, C_out/g, k…): output channel g·(C_out/g)+j lives at [group g's rows, j]
        g = layer.groups
        shape = (g, w.shape[0] // g, w.shape[1]) + w.shape[2:]
        s = scale.view(g, 1, w.shape[1], *([1] * (w.dim() - 2)))
        new_w = (w.double().reshape(shape) * s).reshape(w.shape)
    else:  # Conv (C_out, C_in/g, k…) and Linear (out, in): output channel is dim 0
        new_w = w.double() * scale.view(-1, *([1] * (w.dim() - 1)))
    w.copy_(new_w.to(w.dtype))
    new_b = ((b - mean) * scale + beta).to(dtype=w.dtype, device=w.device)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b, requires_grad=w.requires_grad)
    else:
        layer.bias.copy_(new_b)


def _apply(model: nn.Module, plan: FoldPlan) -> None:
    for p in plan.pairs:
        bn = model.get_submodule(p.bn)
        _fold_into(model.get_submodule(p.layer), bn)  # type: ignore[arg-type]
        rest = OrderedDict((k, bn.get_submodule(k)) for k in p.keeps)
        parent, _, attr = p.bn.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Sequential(rest) if rest else nn.Identity())


def _folded_arch(model: EdgeNet, plan: FoldPlan) -> str | None:
    """The arch string of ``model`` after ``plan``, or None when a folded BN sits where no token says so.

    Each kind says which of its BNs has a folded form (:attr:`edgecnn.kinds.BlockKind.folded_bn`).
    """
    folded = {p.bn for p in plan.pairs}
    plans = resolve(model.arch, num_classes=model.num_classes, in_chans=model.in_chans)
    blocks: list[BlockSpec] = []
    for index, block in enumerate(model.spec.blocks):
        reps = [p for p in plans if p.index == index]
        touched = {bn for p in reps for bn in folded if bn.startswith(f"{p.name}.")}
        if not touched:
            blocks.append(block)
            continue
        form = BLOCK_KINDS[block.kind].folded_bn(block)  # repeats share every token that matters here
        if form is None or touched != {f"{p.name}.{form[0]}" for p in reps}:
            return None
        blocks.append(block.with_(**form[1]))
    return ArchSpec(tuple(blocks)).format()


def fold_bn_(model: nn.Module) -> nn.Module:
    """Fold every BN that directly follows a conv/linear layer into it, in place; returns ``model``.

    Uses the running statistics whatever the mode (see the module docstring);
    :func:`plan_fold_bn` says what folds and what stays. An EdgeNet is changed
    in place only when its arch string can stay true (only ``conv``/``fc``
    BNs fold; its ``arch`` is updated); otherwise ValueError — use
    :func:`fold_bn`, which returns a :class:`~edgecnn.build.PlainNet`.
    """
    plan = plan_fold_bn(model)
    if isinstance(model, EdgeNet) and plan.pairs:
        arch = _folded_arch(model, plan)
        if arch is None:
            raise ValueError(
                "fold_bn_ would leave this EdgeNet's arch string false (BN folded inside a block that has no "
                "folded form); use fold_bn(model), a copy without an arch, or fold_bn_(edgecnn.build.plain(model, "
                "note='BN folded')) in place"
            )
        _apply(model, plan)
        model.arch = arch
        return model
    _apply(model, plan)
    return model


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BN that directly follows a conv/linear layer folded into it.

    The input model is not changed. Eval-mode outputs of the copy equal the
    original's to float tolerance. From an EdgeNet: an EdgeNet of the folded
    arch when one describes the result, else a :class:`~edgecnn.build.PlainNet`.
    """
    plan = plan_fold_bn(model)
    new = copy.deepcopy(model)
    _apply(new, plan)
    if not isinstance(model, EdgeNet) or not plan.pairs:
        return new
    arch = _folded_arch(model, plan)
    if arch is None:
        return plain(new, note=f"BN folded ({plan.num_folded} of {plan.num_folded + len(plan.skipped)})")
    out = build(arch, num_classes=model.num_classes, in_chans=model.in_chans)
    out.load_state_dict(new.state_dict())  # strict: the new arch builds exactly these weights
    first = next(model.parameters(), None)
    if first is not None:
        out.to(device=first.device, dtype=first.dtype)
    return out.train(model.training)
