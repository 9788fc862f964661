"""``gap``: global average pooling to a ``(N, C)`` vector (Lin et al. 2014, "Network in Network", §3.2)."""

from __future__ import annotations

from torch import nn

from edgecnn.blocks import GlobalAvgPool
from edgecnn.kinds.base import BlockKind, KindInfo, Resolved, free


def _build(p: Resolved) -> nn.Module:
    return GlobalAvgPool()


KIND = BlockKind("gap", KindInfo((), {}, (), "global average pooling to a vector"), _build, free, None, rank=90,
                 latency_group="fixed")  # fmt: skip
