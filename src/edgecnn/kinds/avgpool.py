"""``avgpool``: average pooling with "same" padding; padded zeros do not dilute border averages."""

from __future__ import annotations

from torch import nn

from edgecnn.blocks import same_padding
from edgecnn.kinds.base import BlockKind, KindInfo, Resolved, free, pool_size


def _build(p: Resolved) -> nn.Module:
    return nn.AvgPool2d(p.spec.k or 2, p.spec.s, same_padding(p.spec.k or 1), count_include_pad=False)


KIND = BlockKind("avgpool", KindInfo(("k", "s"), dict(k=2, s=2), (), "average pooling, 'same' padding"),
                 _build, free, pool_size, rank=80)  # fmt: skip
