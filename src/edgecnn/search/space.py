"""The MobileNetV3/MnasNet-style search space: per stage kernel, expansion, SE, activation, width, depth.

MnasNet (Tan et al. 2019, §4.1, "factorized hierarchical search space")
splits the network into stages and searches one configuration per stage,
shared by the stage's layers: kernel size, expansion ratio, squeeze-and-
excitation on/off, number of layers and output width. MobileNetV3 (Howard
et al. 2019, §4) searches the same space and adds the activation (ReLU or
hard-swish). The fixed stem and head are MobileNetV3-Large's (Table 1): a
3×3 stride-2 conv with 16 channels and one 16-channel inverted residual;
then a 1×1 conv to 6× the last width, global pooling and a 1280-wide hidden
layer before the classifier.

:func:`sample` draws a candidate; its result is an :class:`~edgecnn.arch.ArchSpec`,
so a candidate is built, costed and written down like any other network.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from edgecnn.arch import ArchSpec, parse


@dataclass(frozen=True)
class StageSpace:
    """The choices of one stage; every layer of the stage shares the drawn configuration."""

    stride: int  # stride of the stage's first layer
    widths: tuple[int, ...]  # output channels
    depths: tuple[int, ...]  # number of layers
    kernels: tuple[int, ...] = (3, 5, 7)  # depthwise kernel sizes
    expansions: tuple[float, ...] = (3.0, 4.0, 6.0)  # inner width / input width
    se: tuple[bool, ...] = (False, True)  # squeeze-and-excitation (ratio 0.25, hard-sigmoid gate)
    acts: tuple[str, ...] = ("relu", "hswish")  # activation

    def __post_init__(self) -> None:
        for name in ("widths", "depths", "kernels", "expansions", "se", "acts"):
            if not getattr(self, name):
                raise ValueError(f"stage choice {name!r} is empty; give at least one value")
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd, got {self.kernels}")

    @property
    def size(self) -> int:
        """Number of distinct configurations of this stage."""
        return math.prod(len(v) for v in (self.widths, self.depths, self.kernels, self.expansions, self.se, self.acts))

    def sample(self, rng: random.Random) -> str:
        """One stage as an arch block, e.g. ``ir_r3_k5_s2_e4_c40_se0.25_hsgate_hswish``."""
        depth, k, e = rng.choice(self.depths), rng.choice(self.kernels), rng.choice(self.expansions)
        width, se, act = rng.choice(self.widths), rng.choice(self.se), rng.choice(self.acts)
        se_tokens = "_se0.25_hsgate" if se else ""
        return f"ir_r{depth}_k{k}_s{self.stride}_e{e:g}_c{width}{se_tokens}_{act}"


@dataclass(frozen=True)
class SearchSpace:
    """A fixed stem, searchable stages, a head whose 1×1 conv is ``head_mult`` × the last width."""

    stem: str  # arch blocks before the first stage
    stages: tuple[StageSpace, ...]  # the searchable stages, input to output
    head_mult: int = 6  # width of the last 1×1 conv, as a multiple of the last stage's width
    hidden: int = 1280  # width of the hidden fc layer before the classifier

    @property
    def size(self) -> int:
        """Number of distinct networks in the space."""
        return math.prod(s.size for s in self.stages)

    def sample(self, rng: random.Random) -> ArchSpec:
        """Draw one network uniformly (each stage's choices independently)."""
        stages = [s.sample(rng) for s in self.stages]
        last = parse(stages[-1]).blocks[0].c or 1
        head = f"conv_k1_c{self.head_mult * last}_hswish gap fc_c{self.hidden}_hswish fc"
        return parse(" ".join([self.stem, *stages, head]))


MOBILENET_V3_SPACE = SearchSpace(
    stem="conv_k3_s2_c16_hswish ir_m16_c16_relu",
    stages=(  # MobileNetV3-Large's widths (24, 40, 80, 112, 160) ± one step of 8/16
        StageSpace(2, widths=(16, 24, 32), depths=(1, 2, 3)),
        StageSpace(2, widths=(32, 40, 48), depths=(2, 3, 4)),
        StageSpace(2, widths=(64, 80, 96), depths=(2, 3, 4)),
        StageSpace(1, widths=(96, 112, 128), depths=(1, 2, 3)),
        StageSpace(2, widths=(144, 160, 176), depths=(2, 3, 4)),
    ),
)
"""The default space: 5 stages at MobileNetV3-Large's strides (output stride 32)."""


def sample(rng: random.Random, space: SearchSpace = MOBILENET_V3_SPACE) -> ArchSpec:
    """A random network from ``space`` (default :data:`MOBILENET_V3_SPACE`), reproducible from ``rng``."""
    if not isinstance(rng, random.Random):
        raise ValueError(f"rng must be a random.Random (e.g. random.Random(0)), got {type(rng).__name__}")
    return space.sample(rng)
