"""Shared fixtures of the search tests: a tiny space (cheap on a loaded 2-core CPU) and a synthetic latency table."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.plan import resolve
from edgecnn.search.space import GENES, SearchSpace, StageChoice, space_from_dict
from edgecnn.search.supernet import Supernet

TINY_SPACE: SearchSpace = space_from_dict({
    "name": "tiny-16", "input_size": 16, "stem": "conv_k3_s2_c8_hswish", "head_mult": 2, "hidden": 32,
    "stages": [
        {"stride": 2, "widths": [8, 16], "depths": [1, 2], "kernels": [3, 5], "expansions": [3, 6]},
        {"stride": 1, "widths": [16, 24], "depths": [1, 2], "kernels": [3, 5], "expansions": [3, 4]},
    ],
})  # fmt: skip


def all_genomes(space: SearchSpace) -> list[tuple[StageChoice, ...]]:
    stages = [
        [StageChoice(*v) for v in itertools.product(*(s.options(g) for g in GENES))] for s in space.stages
    ]
    return [tuple(g) for g in itertools.product(*stages)]


def synthetic_ms(plan) -> float:
    """A latency proportional to the block's multiply-adds (1 ms per 10 M), plus 1 µs per block."""
    h, w = plan.in_size or (1, 1)
    if plan.spec.kind == "ir":
        macs = (plan.cin * plan.mid + (plan.spec.k or 3) ** 2 * plan.mid + plan.mid * plan.cout) * h * w
    else:
        macs = plan.cin * plan.cout * (plan.spec.k or 1) ** 2 * h * w
    return 1e-3 + macs / 1e7


def synthetic_table(space: SearchSpace, *, num_classes: int = 10, in_chans: int = 1) -> LatencyTable:
    """A table holding every block of every network of ``space`` (entries from :func:`synthetic_ms`)."""
    table = LatencyTable(fingerprint(backend="eager", threads=1))
    size = (space.input_size, space.input_size)
    for g in all_genomes(space):
        for p in resolve(space.arch(g), num_classes=num_classes, in_chans=in_chans, input_size=size):
            ms = synthetic_ms(p)
            table.entries[block_key(p)] = TableEntry(ms, ms, ms, ms, 1)
    okey = overhead_key(in_chans=in_chans, input_size=size, batch=1, num_classes=num_classes)
    table.entries[okey] = TableEntry(0.01, 0.01, 0.01, 0.01, 1)
    return table


def randomize(net: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, and kernel transforms away from the identity."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        for name, p in net.named_parameters():
            if "matrices" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def random_supernet(space: SearchSpace, *, transform: bool) -> tuple[Supernet, torch.Tensor]:
    """A supernet in eval mode with :func:`randomize`'d statistics, and a batch of two random inputs."""
    torch.manual_seed(0)
    net = Supernet(space, num_classes=10, in_chans=3, kernel_transform=transform)
    randomize(net)
    return net.eval(), torch.randn(2, 3, space.input_size, space.input_size)
