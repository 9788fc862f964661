"""``fc``: a linear layer (+ BN1d + act); without ``c`` it is the classifier (``num_classes`` outputs)."""

from __future__ import annotations

from torch import nn

from edgecnn.blocks import LinearAct
from edgecnn.kinds.base import BlockKind, Changes, Cost, KindInfo, Resolved, Spec


def _build(p: Resolved) -> nn.Module:
    if p.classifier:
        return nn.Linear(p.cin, p.cout)
    return LinearAct(p.cin, p.cout, act=p.spec.act or "linear", bn=bool(p.spec.bn))


def _cost(p: Resolved) -> Cost:
    """``c_in·c_out`` MACs; a bias, or BN1d (γ, β) instead of it."""
    w = p.cin * p.cout
    bn = bool(p.spec.bn) and not p.classifier
    return w + (2 * p.cout if bn else p.cout), w


def _folded(b: Spec) -> tuple[str, Changes] | None:
    return ("bn", {"bn": False}) if b.bn else None  # LinearAct without BN has a biased Linear


KIND = BlockKind(
    "fc",
    KindInfo(("c", "act", "bn"), dict(act="linear", bn=False), (),
             "linear layer; without c it is the classifier (num_classes outputs)"),  # fmt: skip
    _build, _cost, None, rank=100, layout="vector", latency_group="fixed", classifier_without_c=True,
    folded_bn=_folded,
)  # fmt: skip
