"""The building blocks of efficient CNNs (docs/design.md §1).

* :class:`ConvBNAct` — conv → BN → act ("post", the usual order) or
  BN → act → conv ("pre", He et al. 2016, *Identity Mappings in Deep
  Residual Networks*).
* :class:`DepthwiseSeparable` — MobileNetV1 (Howard et al. 2017, Fig. 3):
  depthwise k×k (groups = C_in) then pointwise 1×1. Its cost against a
  standard k×k conv is ``(k² + C_out)/(k²·C_out) = 1/C_out + 1/k²`` (§3.1).
* :class:`InvertedResidual` — MobileNetV2 (Sandler et al. 2018, Table 1):
  1×1 expansion → depthwise k×k → [SE] → linear 1×1 projection; identity skip
  only when stride 1 and C_in = C_out. MobileNetV3 (Howard et al. 2019, Fig. 4)
  adds SE and hard-swish.
* :class:`SqueezeExcite` — Hu et al. 2018: squeeze ``z_c = mean_ij x_c(i,j)``,
  excite ``s = gate(W₂·ReLU(W₁·z))``, rescale ``x̃_c = s_c·x_c``.
* :class:`BasicBlock`, :class:`Bottleneck` — ResNet (He et al. 2016, Table 1),
  in post- and pre-activation order, with projection ("conv", option B),
  zero-padding ("pad", option A, the CIFAR ResNets of §4.2) or no shortcut
  ("none": a plain network, for gradient-flow comparisons).

All builders are keyword-only and take explicit channel counts, so pruned
networks (uneven widths) are built by the same code as the reference ones.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgecnn.activations import GATES, make_activation

Order = Literal["post", "pre"]
Shortcut = Literal["conv", "pad", "none"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% below it.

    The rule of the MobileNet reference code (TF models ``_make_divisible``),
    used for width multipliers and squeeze widths.
    """
    if divisor <= 0:
        raise ValueError(f"divisor must be positive, got {divisor}")
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def same_padding(kernel: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size at stride 1 for an odd kernel: ``(k−1)/2·d``."""
    return (kernel - 1) // 2 * dilation


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")


class ConvBNAct(nn.Sequential):
    """Conv2d with batch norm and activation, in "post" (conv→BN→act) or "pre" (BN→act→conv) order."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: str = "relu",
        order: Order = "post",
        bn: bool = True,
        bias: bool = False,
    ) -> None:
        _positive(in_ch=in_ch, out_ch=out_ch, kernel=kernel, stride=stride, dilation=dilation, groups=groups)
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"groups={groups} must divide in_ch={in_ch} and out_ch={out_ch}")
        if order not in ("post", "pre"):
            raise ValueError(f"order must be 'post' or 'pre', got {order!r}")
        conv = nn.Conv2d(
            in_ch, out_ch, kernel, stride, same_padding(kernel, dilation), dilation, groups, bias=bias
        )
        layers: list[tuple[str, nn.Module]] = []
        if order == "post":
            layers.append(("conv", conv))
            if bn:
                layers.append(("bn", nn.BatchNorm2d(out_ch)))
            if act != "linear":
                layers.append(("act", make_activation(act)))
        else:
            if bn:
                layers.append(("bn", nn.BatchNorm2d(in_ch)))
            if act != "linear":
                layers.append(("act", make_activation(act)))
            layers.append(("conv", conv))
        super().__init__(OrderedDict(layers))


class ConvTransposeBNAct(nn.Sequential):
    """ConvTranspose2d → BN → act whose output is exactly ``stride ×`` the input size.

    Output size of a transposed conv: ``(i−1)·s − 2p + d·(k−1) + op + 1``
    (Dumoulin & Visin 2016, relationship 14). We pick ``p`` and ``op`` so that it
    equals ``i·s``: ``2p − op = d·(k−1) + 1 − s``.
    """

    def __init__(
        self, in_ch: int, out_ch: int, *, kernel: int = 4, stride: int = 2, dilation: int = 1, act: str = "relu"
    ) -> None:
        _positive(in_ch=in_ch, out_ch=out_ch, kernel=kernel, stride=stride, dilation=dilation)
        need = dilation * (kernel - 1) + 1 - stride
        if need < 0:
            raise ValueError(
                f"transposed conv k={kernel}, s={stride}, d={dilation} cannot give an output of stride×input; "
                f"use a kernel of at least {stride}"
            )
        padding, out_pad = (need + 1) // 2, need % 2
        if out_pad >= max(stride, dilation):
            raise ValueError(
                f"transposed conv k={kernel}, s={stride}, d={dilation} needs output_padding {out_pad}; "
                f"use an odd d·(k−1)+1−s or a larger stride"
            )
        layers: dict[str, nn.Module] = {
            "conv": nn.ConvTranspose2d(
                in_ch, out_ch, kernel, stride, padding, out_pad, dilation=dilation, bias=False
            ),
            "bn": nn.BatchNorm2d(out_ch),
        }
        if act != "linear":
            layers["act"] = make_activation(act)
        super().__init__(OrderedDict(layers))


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018, Fig. 3): channel-wise rescale by a gated global context.

    ``squeeze`` is the hidden width; callers derive it from the reduction ratio
    measured on the block's expanded width and round it to a multiple of 8, as
    in MobileNetV3 (see :func:`se_width`).
    """

    def __init__(self, channels: int, squeeze: int, *, gate: str = "sigmoid") -> None:
        super().__init__()
        _positive(channels=channels, squeeze=squeeze)
        if gate not in GATES:
            raise ValueError(f"unknown SE gate {gate!r}; valid: {', '.join(GATES)}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = make_activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * s


def se_width(channels: int, ratio: float, divisor: int = 8) -> int:
    """Squeezed width of an SE block: ``make_divisible(channels·ratio, 8)`` (MobileNetV3 rule)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"SE ratio must be in (0, 1], got {ratio}")
    return make_divisible(channels * ratio, divisor)


def _maybe_se(channels: int, se_ratio: float, gate: str) -> nn.Module | None:
    return SqueezeExcite(channels, se_width(channels, se_ratio), gate=gate) if se_ratio > 0 else None


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 depthwise separable conv: dw k×k → BN → act → [SE] → pw 1×1 → BN → act."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu",
        se_ratio: float = 0.0,
        gate: str = "sigmoid",
        order: Order = "post",
    ) -> None:
        super().__init__()
        self.dw = ConvBNAct(
            in_ch, in_ch, kernel=kernel, stride=stride, dilation=dilation, groups=in_ch, act=act, order=order
        )
        self.se = _maybe_se(in_ch, se_ratio, gate)
        self.pw = ConvBNAct(in_ch, out_ch, kernel=1, act=act, order=order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(x)
        if self.se is not None:
            x = self.se(x)
        return self.pw(x)


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 inverted residual with linear bottleneck.

    The expansion conv is omitted when ``mid_ch == in_ch`` (expansion 1, as in
    both papers' first block). The projection has BN but **no** activation
    (Sandler et al. 2018, §3.2: "linear bottlenecks").
    """

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu6",
        se_ratio: float = 0.0,
        gate: str = "sigmoid",
        skip: bool = True,
    ) -> None:
        super().__init__()
        _positive(in_ch=in_ch, mid_ch=mid_ch, out_ch=out_ch)
        self.expand = ConvBNAct(in_ch, mid_ch, kernel=1, act=act) if mid_ch != in_ch else None
        self.dw = ConvBNAct(
            mid_ch, mid_ch, kernel=kernel, stride=stride, dilation=dilation, groups=mid_ch, act=act
        )
        self.se = _maybe_se(mid_ch, se_ratio, gate)
        self.project = ConvBNAct(mid_ch, out_ch, kernel=1, act="linear")
        self.use_skip = skip and stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.dw(out)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return out + x if self.use_skip else out


class PadShortcut(nn.Module):
    """ResNet option-A shortcut (He et al. 2016, §4.2): subsample by the stride, zero-pad new channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"a zero-padding shortcut cannot reduce channels ({in_ch} -> {out_ch}); use 'conv'")
        self.stride = stride
        self.pad_front = (out_ch - in_ch) // 2
        self.pad_back = out_ch - in_ch - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


def _shortcut(in_ch: int, out_ch: int, stride: int, kind: Shortcut, order: Order) -> nn.Module | None:
    """``None`` means identity (or no skip at all when ``kind == 'none'``)."""
    if kind == "none" or (stride == 1 and in_ch == out_ch):
        return None
    if kind == "pad":
        return PadShortcut(in_ch, out_ch, stride)
    if kind != "conv":
        raise ValueError(f"shortcut must be 'conv', 'pad' or 'none', got {kind!r}")
    if order == "pre":  # pre-activation nets project the already-normalised input, without BN
        return nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
    return ConvBNAct(in_ch, out_ch, kernel=1, stride=stride, act="linear")


class _ResidualBase(nn.Module):
    """Shared forward of the ResNet blocks: ``act(body(x) + shortcut(x))`` or the pre-activation form."""

    body: nn.Sequential
    se: nn.Module | None
    shortcut: nn.Module | None

    def _setup(self, in_ch: int, out_ch: int, stride: int, act: str, order: Order, shortcut: Shortcut) -> None:
        self.order = order
        self.use_skip = shortcut != "none"
        self.shortcut = _shortcut(in_ch, out_ch, stride, shortcut, order)
        if order == "post":
            self.pre = None
            self.out_act = make_activation(act) if act != "linear" else None
        else:
            self.pre = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(in_ch), act=make_activation(act)))
            self.out_act = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pre-activation (He et al. 2016b, Fig. 4e): the identity path carries the raw x,
        # a projection shortcut sees the normalised input.
        h = x if self.pre is None else self.pre(x)
        out = self.body(h)
        if self.se is not None:
            out = self.se(out)
        if self.use_skip:
            out = out + (x if self.shortcut is None else self.shortcut(h))
        if self.out_act is not None:
            out = self.out_act(out)
        return out


class BasicBlock(_ResidualBase):
    """ResNet basic block: two k×k convs (He et al. 2016, Table 1, ResNet-18/34 and the CIFAR nets)."""

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu",
        order: Order = "post",
        shortcut: Shortcut = "conv",
        se_ratio: float = 0.0,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__()
        if order == "post":
            self.body = nn.Sequential(
                ConvBNAct(in_ch, mid_ch, kernel=kernel, stride=stride, dilation=dilation, act=act),
                ConvBNAct(mid_ch, out_ch, kernel=kernel, dilation=dilation, act="linear"),
            )
        else:
            self.body = nn.Sequential(
                nn.Conv2d(in_ch, mid_ch, kernel, stride, same_padding(kernel, dilation), dilation, bias=False),
                ConvBNAct(mid_ch, out_ch, kernel=kernel, dilation=dilation, act=act, order="pre"),
            )
        self.se = _maybe_se(out_ch, se_ratio, gate)
        self._setup(in_ch, out_ch, stride, act, order, shortcut)


class Bottleneck(_ResidualBase):
    """ResNet bottleneck 1×1 → k×k (strided, "v1.5" as in torchvision) → 1×1 (He et al. 2016, Table 1)."""

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu",
        order: Order = "post",
        shortcut: Shortcut = "conv",
        se_ratio: float = 0.0,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__()
        if order == "post":
            self.body = nn.Sequential(
                ConvBNAct(in_ch, mid_ch, kernel=1, act=act),
                ConvBNAct(mid_ch, mid_ch, kernel=kernel, stride=stride, dilation=dilation, act=act),
                ConvBNAct(mid_ch, out_ch, kernel=1, act="linear"),
            )
        else:
            self.body = nn.Sequential(
                nn.Conv2d(in_ch, mid_ch, 1, bias=False),
                ConvBNAct(mid_ch, mid_ch, kernel=kernel, stride=stride, dilation=dilation, act=act, order="pre"),
                ConvBNAct(mid_ch, out_ch, kernel=1, act=act, order="pre"),
            )
        self.se = _maybe_se(out_ch, se_ratio, gate)
        self._setup(in_ch, out_ch, stride, act, order, shortcut)


class GlobalAvgPool(nn.Sequential):
    """Global average pooling to a ``(N, C)`` vector."""

    def __init__(self) -> None:
        super().__init__(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))


class LinearAct(nn.Sequential):
    """Linear → [BN1d] → act, for classifier heads (MobileNetV3's 1280-wide hidden layer)."""

    def __init__(self, in_features: int, out_features: int, *, act: str = "linear", bn: bool = False) -> None:
        _positive(in_features=in_features, out_features=out_features)
        layers: dict[str, nn.Module] = {"fc": nn.Linear(in_features, out_features, bias=not bn)}
        if bn:
            layers["bn"] = nn.BatchNorm1d(out_features)
        if act != "linear":
            layers["act"] = make_activation(act)
        super().__init__(OrderedDict(layers))
