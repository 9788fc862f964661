"""Reference networks, each a few lines of arch string that follow its paper's table.

Channel counts in ``{N}`` are scaled by the width multiplier and rounded with
:func:`~edgecnn.blocks.make_divisible` (the MobileNet rule: to a multiple of
``divisor``, 8 by default as in the reference code, torchvision's
``round_nearest``; a smaller divisor gives the widths in between: ResNet-20's
16/32/64 channels at width 0.7 are 16/24/48 with divisor 8, 12/24/44 with 4,
11/22/45 with 1 — but see ``Target.channel_multiple`` for the widths a
runtime's fast kernels want). ``{N+}`` only
scales up (MobileNetV2's last layer "is not reduced for multipliers < 1",
Sandler et al. 2018, §5.1), and ``{NxM}`` is M times the scaled N
(MobileNetV3's last conv is 6× its input width).

At 224×224 and 1000 classes the trainable parameter counts equal the
reference implementations (TF-slim for MobileNetV1, torchvision for the
others); ``tests/test_zoo.py`` checks each. The ``*_cifar`` variants keep the
blocks but use a stride-1 stem and drop early downsamplings, as the common
CIFAR ports (kuangliu/pytorch-cifar) do, so a 32×32 input ends at 4×4 or 2×2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgecnn.arch import parse
from edgecnn.blocks import make_divisible
from edgecnn.build import EdgeNet, build


@dataclass(frozen=True)
class ZooEntry:
    """A registered reference network."""

    name: str  # registry name, e.g. "mobilenet_v2"
    template: str  # arch string with {N} width placeholders
    paper: str  # the source table the template follows
    num_classes: int = 1000  # default classifier width
    input_size: int = 224  # the resolution the network is designed for
    reference_params: int | None = None  # trainable parameters of the reference implementation (default classes)

    def arch(self, width: float = 1.0, divisor: int = 8) -> str:
        """The arch string at width multiplier ``width``, channels rounded to multiples of ``divisor``."""
        if not (width > 0):
            raise ValueError(f"width multiplier must be positive, got {width}")
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
            raise ValueError(f"channel divisor must be a positive integer (8: the MobileNet rule), got {divisor!r}")

        def scale(m: re.Match[str]) -> str:
            n, up, times = int(m.group(1)), m.group(2), m.group(3)
            scaled = make_divisible(n * (max(1.0, width) if up else width), divisor)
            return str(scaled * int(times) if times else scaled)

        return parse(re.sub(r"\{(\d+)(\+)?(?:x(\d+))?\}", scale, self.template)).format()


_V1 = (
    "conv_k3_s{stem}_c{{32}}_relu6 ds_c{{64}}_relu6 ds_s{s1}_c{{128}}_relu6 ds_c{{128}}_relu6 "
    "ds_s2_c{{256}}_relu6 ds_c{{256}}_relu6 ds_s2_c{{512}}_relu6 ds_r5_c{{512}}_relu6 "
    "ds_s2_c{{1024}}_relu6 ds_c{{1024}}_relu6 gap fc"
)
_V2 = (
    "conv_k3_s{stem}_c{{32}}_relu6 ir_e1_c{{16}} ir_r2_s{s1}_c{{24}} ir_r3_s2_c{{32}} ir_r4_s2_c{{64}} "
    "ir_r3_c{{96}} ir_r3_s2_c{{160}} ir_c{{320}} conv_k1_c{{1280+}}_relu6 gap dropout_p0.2 fc"
)
_V3_LARGE = (
    "conv_k3_s{stem}_c{{16}}_hswish "
    "ir_m{{16}}_c{{16}}_relu "
    "ir_s{s1}_m{{64}}_c{{24}}_relu ir_m{{72}}_c{{24}}_relu "
    "ir_k5_s2_m{{72}}_c{{40}}_se0.25_hsgate_relu ir_r2_k5_m{{120}}_c{{40}}_se0.25_hsgate_relu "
    "ir_s2_m{{240}}_c{{80}}_hswish ir_m{{200}}_c{{80}}_hswish ir_r2_m{{184}}_c{{80}}_hswish "
    "ir_m{{480}}_c{{112}}_se0.25_hsgate_hswish ir_m{{672}}_c{{112}}_se0.25_hsgate_hswish "
    "ir_k5_s2_m{{672}}_c{{160}}_se0.25_hsgate_hswish ir_r2_k5_m{{960}}_c{{160}}_se0.25_hsgate_hswish "
    "conv_k1_c{{160x6}}_hswish gap fc_c{{1280}}_hswish dropout_p0.2 fc"
)
_V3_SMALL = (
    "conv_k3_s{stem}_c{{16}}_hswish "
    "ir_s{s1}_m{{16}}_c{{16}}_se0.25_hsgate_relu "
    "ir_s2_m{{72}}_c{{24}}_relu ir_m{{88}}_c{{24}}_relu "
    "ir_k5_s2_m{{96}}_c{{40}}_se0.25_hsgate_hswish ir_r2_k5_m{{240}}_c{{40}}_se0.25_hsgate_hswish "
    "ir_k5_m{{120}}_c{{48}}_se0.25_hsgate_hswish ir_k5_m{{144}}_c{{48}}_se0.25_hsgate_hswish "
    "ir_k5_s2_m{{288}}_c{{96}}_se0.25_hsgate_hswish ir_r2_k5_m{{576}}_c{{96}}_se0.25_hsgate_hswish "
    "conv_k1_c{{96x6}}_hswish gap fc_c{{1024}}_hswish dropout_p0.2 fc"
)
_RESNET_STEM = {"imagenet": "conv_k7_s2_c{64} maxpool", "cifar": "conv_k3_c{64}"}
_R18 = "basic_r2_c{{64}} basic_r2_s2_c{{128}} basic_r2_s2_c{{256}} basic_r2_s2_c{{512}} gap fc"
_R50 = "bottleneck_r3_c{{256}} bottleneck_r4_s2_c{{512}} bottleneck_r6_s2_c{{1024}} bottleneck_r3_s2_c{{2048}} gap fc"


def _cifar_resnet(n: int) -> str:
    return (
        f"conv_k3_c{{16}} basic_r{n}_c{{16}}_padskip basic_r{n}_s2_c{{32}}_padskip "
        f"basic_r{n}_s2_c{{64}}_padskip gap fc"
    )


_V1_PAPER = "Howard et al. 2017, MobileNets, Table 1 (TF-slim layout)"
_V2_PAPER = "Sandler et al. 2018, MobileNetV2, Table 2"
_V3L_PAPER = "Howard et al. 2019, Searching for MobileNetV3, Table 1"
_V3S_PAPER = "Howard et al. 2019, Searching for MobileNetV3, Table 2"
_R_PAPER = "He et al. 2016, Deep Residual Learning, Table 1"
_RC_PAPER = "He et al. 2016, Deep Residual Learning, §4.2 (6n+2 layers, option A shortcuts)"

_ENTRIES = [
    ZooEntry("mobilenet_v1", _V1.format(stem=2, s1=2), _V1_PAPER, reference_params=4_231_976),
    ZooEntry("mobilenet_v2", _V2.format(stem=2, s1=2), _V2_PAPER, reference_params=3_504_872),
    ZooEntry("mobilenet_v3_large", _V3_LARGE.format(stem=2, s1=2), _V3L_PAPER, reference_params=5_483_032),
    ZooEntry("mobilenet_v3_small", _V3_SMALL.format(stem=2, s1=2), _V3S_PAPER, reference_params=2_542_856),
    ZooEntry("resnet18", _RESNET_STEM["imagenet"] + " " + _R18.format(), _R_PAPER, reference_params=11_689_512),
    ZooEntry("resnet50", _RESNET_STEM["imagenet"] + " " + _R50.format(), _R_PAPER, reference_params=25_557_032),
    ZooEntry("mobilenet_v1_cifar", _V1.format(stem=1, s1=2), _V1_PAPER, 10, 32),
    ZooEntry("mobilenet_v2_cifar", _V2.format(stem=1, s1=1), _V2_PAPER, 10, 32),
    ZooEntry("mobilenet_v3_large_cifar", _V3_LARGE.format(stem=1, s1=1), _V3L_PAPER, 10, 32),
    ZooEntry("mobilenet_v3_small_cifar", _V3_SMALL.format(stem=1, s1=1), _V3S_PAPER, 10, 32),
    ZooEntry("resnet18_cifar", _RESNET_STEM["cifar"] + " " + _R18.format(), _R_PAPER, 10, 32),
    ZooEntry("resnet50_cifar", _RESNET_STEM["cifar"] + " " + _R50.format(), _R_PAPER, 10, 32),
    ZooEntry("resnet20_cifar", _cifar_resnet(3), _RC_PAPER, 10, 32, reference_params=269_722),
    ZooEntry("resnet56_cifar", _cifar_resnet(9), _RC_PAPER, 10, 32, reference_params=853_018),
]
REGISTRY: dict[str, ZooEntry] = {e.name: e for e in _ENTRIES}


def names() -> list[str]:
    """Registered model names."""
    return list(REGISTRY)


def get(name: str) -> ZooEntry:
    """The registry entry for ``name``; ValueError listing the valid names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(REGISTRY)}") from None


def arch_of(name: str, *, width: float = 1.0, divisor: int = 8) -> str:
    """The arch string of a zoo model at a width multiplier (channels rounded to multiples of ``divisor``)."""
    return get(name).arch(width, divisor)


def create(name: str, *, num_classes: int | None = None, width: float = 1.0, in_chans: int = 3,
           divisor: int = 8) -> EdgeNet:  # fmt: skip
    """Build zoo model ``name`` (ImageNet models default to 1000 classes, CIFAR ones to 10) at width multiplier
    ``width``, channels rounded to multiples of ``divisor``."""
    entry = get(name)
    return build(entry.arch(width, divisor), num_classes=num_classes or entry.num_classes, in_chans=in_chans)


@dataclass(frozen=True)
class ModelArg:
    """What a CLI ``MODEL`` argument (zoo name or arch string) stands for."""

    arch: str  # canonical arch string
    name: str | None  # the zoo name, None for an arch string
    input_size: int  # the resolution the network is designed for (224 for an arch string)
    num_classes: int  # its default classifier width (1000 for an arch string)


def model_arg(model: str, *, width: float = 1.0) -> ModelArg:
    """Resolve a ``MODEL`` argument (zoo name or arch string) — the one resolver of the CLI and the demo.

    A width multiplier applies to zoo models only (ValueError otherwise).
    """
    if model in REGISTRY:
        entry = REGISTRY[model]
        return ModelArg(entry.arch(width), model, entry.input_size, entry.num_classes)
    if width != 1.0:
        raise ValueError("--width applies to zoo models only; scale the channels of an arch string instead")
    try:
        arch = parse(model).format()
    except ValueError as exc:
        if len(model.split()) == 1:  # one word: most likely a mistyped zoo name
            raise ValueError(
                f"unknown model {model!r}: not a zoo name ({', '.join(REGISTRY)}) nor an arch string ({exc})"
            ) from None
        raise
    return ModelArg(arch, None, 224, 1000)
