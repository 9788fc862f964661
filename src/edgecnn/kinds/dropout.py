"""``dropout``: dropout with probability p (Srivastava et al. 2014); on a map or a vector."""

from __future__ import annotations

from torch import nn

from edgecnn.kinds.base import BlockKind, KindInfo, Resolved, free, same_size


def _build(p: Resolved) -> nn.Module:
    return nn.Dropout(p.spec.p or 0.0)


KIND = BlockKind("dropout", KindInfo(("p",), {}, ("p",), "dropout with probability p"), _build, free, same_size,
                 rank=110, layout="any", latency_group="fixed")  # fmt: skip
