"""Small hand-written networks with the couplings structured pruning must get right.

Shared by ``tests/test_compress_prune.py`` and ``benchmarks/pruning_coverage.py``:
each one exercises one coupling — concatenation, channel split + shuffle,
squeeze-and-excitation, residual adds, depthwise (with a channel multiplier),
flatten → linear, grouped conv, transposed conv. Every net has BatchNorm
after its convs, takes a ``(N, 3, 32, 32)`` input and returns ``(N, 10)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())  # fmt: skip


class Head(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class ConcatNet(nn.Module):
    """Two branches concatenated (Inception / DenseNet style), then a conv reading both."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.a = _cbr(16, 16)
        self.b = _cbr(16, 24, k=1)
        self.mix = _cbr(40, 32)
        self.dense = _cbr(72, 32, k=1)  # reads cat([mix, a, b]): a DenseNet-style concat of three
        self.head = Head(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a, b = self.a(x), self.b(x)
        m = self.mix(torch.cat([a, b], 1))
        return self.head(self.dense(torch.cat([m, a, b], dim=1)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ShuffleNet(nn.Module):
    """ShuffleNetV2 units (Ma et al. 2018, Fig. 3c): channel split, a branch, concat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 32)
        self.branch = nn.Sequential(_cbr(16, 16, k=1), nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False),
                                    nn.BatchNorm2d(16), _cbr(16, 16, k=1))  # fmt: skip
        self.expand = _cbr(32, 32, k=1)
        self.head = Head(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x1, x2 = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat([x1, self.branch(x2)], 1), 2)
        return self.head(self.expand(x))


class SENet(nn.Module):
    """Squeeze-and-excitation written with functional pooling and Linear layers (Hu et al. 2018, Fig. 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 32)
        self.fc1 = nn.Linear(32, 8)
        self.fc2 = nn.Linear(8, 32)
        self.conv = _cbr(32, 24)
        self.head = Head(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return self.head(self.conv(x * s[:, :, None, None]))


class ResidualNet(nn.Module):
    """Two residual adds sharing one channel set, then a projection shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.b1 = nn.Sequential(_cbr(16, 24), nn.Conv2d(24, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.b2 = nn.Sequential(_cbr(16, 24), nn.Conv2d(24, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.b3 = nn.Sequential(_cbr(16, 32, s=2), nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32))
        self.proj = nn.Sequential(nn.Conv2d(16, 32, 1, 2, bias=False), nn.BatchNorm2d(32))
        self.head = Head(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.b1(x))
        x = F.relu(self.b2(x) + x)
        x = F.relu(self.b3(x) + self.proj(x))
        return self.head(x)


class DepthwiseNet(nn.Module):
    """Depthwise convs with a channel multiplier of 2 and of 1, separated by pointwise convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.dw = _cbr(16, 32, groups=16)  # multiplier 2: output o reads input o // 2
        self.pw = _cbr(32, 24, k=1)
        self.dw2 = _cbr(24, 24, groups=24)
        self.head = Head(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dw2(self.pw(self.dw(self.stem(x)))))


class FlattenLinearNet(nn.Module):
    """A VGG/LeNet-style head: flatten a 4×4 map into a Linear (each channel owns 16 features)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 16, s=2), _cbr(16, 24, s=2), nn.AdaptiveAvgPool2d(4))
        self.fc1 = nn.Linear(24 * 16, 64)
        self.bn = nn.BatchNorm1d(64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(self.features(x).flatten(1)))))


class GroupedConvNet(nn.Module):
    """A ResNeXt-style grouped conv (groups=4) between pointwise convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.reduce = _cbr(16, 32, k=1)
        self.grouped = _cbr(32, 32, groups=4)
        self.expand = _cbr(32, 24, k=1)
        self.head = Head(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.expand(self.grouped(self.reduce(self.stem(x)))))


class TConvNet(nn.Module):
    """Downsample, upsample with a transposed conv, then a conv (a tiny decoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = _cbr(3, 16, s=2)
        self.up = nn.ConvTranspose2d(16, 24, 2, 2, bias=False)
        self.bn = nn.BatchNorm2d(24)
        self.out = _cbr(24, 16)
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.out(F.relu(self.bn(self.up(self.down(x))))))


NETS: dict[str, type[nn.Module]] = {
    "concat": ConcatNet,
    "shuffle": ShuffleNet,
    "se": SENet,
    "residual": ResidualNet,
    "depthwise": DepthwiseNet,
    "flatten_linear": FlattenLinearNet,
    "grouped_conv": GroupedConvNet,
    "tconv": TConvNet,
}
