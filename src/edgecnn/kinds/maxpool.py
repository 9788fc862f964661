"""``maxpool``: max pooling with "same" padding; the width is the input's."""

from __future__ import annotations

from torch import nn

from edgecnn.blocks import same_padding
from edgecnn.kinds.base import BlockKind, KindInfo, Resolved, free, pool_size


def _build(p: Resolved) -> nn.Module:
    return nn.MaxPool2d(p.spec.k or 3, p.spec.s, same_padding(p.spec.k or 1))


KIND = BlockKind("maxpool", KindInfo(("k", "s"), dict(k=3, s=2), (), "max pooling, 'same' padding"),
                 _build, free, pool_size, rank=70)  # fmt: skip
