"""A once-for-all weight-sharing supernet over a :class:`~edgecnn.search.space.SearchSpace` (Cai et al. 2020, OFA).

Every network of the space is a *subnet* of one set of weights, sized for the
largest choices; a subnet uses a slice of them (OFA §3.2–3.3):

* **elastic kernel** — a k×k depthwise kernel is the centre k×k of the largest
  one; with ``kernel_transform=True`` each smaller kernel is the centre crop
  times a learned ``k²×k²`` matrix shared by the layer's channels (OFA's
  kernel transformation, initialised to the identity), applied 7→5→3;
* **elastic expansion and width** — the first ``mid`` inner channels and the
  first ``c`` output channels (:meth:`Supernet.sort_channels_` puts the most
  important first, OFA §3.3; the sandwich rule instead trains the first
  channels to be the shared ones from the start);
* **elastic depth** — the first ``d`` layers of a stage;
* **SE and activation per stage** — the SE weights are shared by every subnet
  that has SE (a slice of the largest SE); activations carry no weights.

BatchNorm keeps the largest statistics and a subnet reads their first
channels; those statistics mix all subnets trained, so a subnet is scored only
after its BN statistics are recalibrated on a few batches
(:func:`edgecnn.train.recalibrate.recalibrate_bn_`, OFA §3.4).

Training (the sandwich rule, or OFA's progressive shrinking) and checkpoints are in
:mod:`edgecnn.search.supernet_train`.

:meth:`Supernet.extract` returns a stand-alone :class:`~edgecnn.build.EdgeNet`
built from the subnet's arch string and loaded with the subnet's slices; its
outputs equal the subnet's outputs inside the supernet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from edgecnn.arch import ArchSpec, BlockSpec
from edgecnn.blocks import se_width
from edgecnn.build import BUILDERS, EdgeNet, build
from edgecnn.kinds import kind_of
from edgecnn.plan import LayerPlan, resolve
from edgecnn.search.space import Genome, SearchSpace, StageSpace

FORMAT = "edgecnn-supernet"
_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "relu6": F.relu6, "hswish": F.hardswish, "swish": F.silu, "sigmoid": torch.sigmoid,
    "hsigmoid": F.hardsigmoid, "tanh": torch.tanh, "linear": lambda x: x,
}  # fmt: skip


def _act(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return _ACT[name]


class DynamicBN(nn.Module):
    """A BatchNorm2d of the largest width; a subnet with ``c`` channels uses the first ``c`` of everything."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, bn = x.shape[1], self.bn
        # slices of the running buffers are views: training updates the shared statistics in place (as OFA does)
        mean, var = bn.running_mean[:c], bn.running_var[:c]  # type: ignore[index]
        return F.batch_norm(x, mean, var, bn.weight[:c], bn.bias[:c], self.training, bn.momentum or 0.0, bn.eps)

    def permute_(self, idx: torch.Tensor) -> None:
        """Reorder the channels (weights and running statistics) by ``idx``."""
        bn = self.bn
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            t.data.copy_(t.data[idx])  # type: ignore[union-attr]

    def fill(self, target: nn.BatchNorm2d) -> None:
        c, bn = target.num_features, self.bn
        target.weight.data.copy_(bn.weight[:c])
        target.bias.data.copy_(bn.bias[:c])
        target.running_mean.copy_(bn.running_mean[:c])  # type: ignore[index, union-attr]
        target.running_var.copy_(bn.running_var[:c])  # type: ignore[index, union-attr]


class DynamicPointwise(nn.Module):
    """A 1×1 conv ``cin_max → cout_max`` (no bias); a subnet uses ``weight[:cout, :cin]``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def sliced(self, cin: int, cout: int) -> torch.Tensor:
        return self.weight[:cout, :cin]

    def forward(self, x: torch.Tensor, cout: int) -> torch.Tensor:
        return F.conv2d(x, self.sliced(x.shape[1], cout))


class _ElasticKernel(nn.Module):
    """Filters of the largest kernel; smaller kernels are centre crops (optionally transformed, OFA §3.3)."""

    def __init__(self, cout: int, cin: int, kernels: tuple[int, ...], *, transform: bool = False) -> None:
        super().__init__()
        self.kernels = tuple(sorted(set(kernels), reverse=True))
        k = self.kernels[0]
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transform = transform
        self.matrices = nn.ParameterDict()
        if transform:
            for big, small in zip(self.kernels, self.kernels[1:]):
                self.matrices[f"{big}to{small}"] = nn.Parameter(torch.eye(small * small))

    def _crop(self, w: torch.Tensor, k: int) -> torch.Tensor:
        """The centre ``k × k`` of the filters ``w``, through each transformation on the way (7→5→3)."""
        if k not in self.kernels:
            raise ValueError(f"kernel {k} is not one of this layer's kernels {self.kernels}")
        cur = self.kernels[0]
        for small in self.kernels[1:]:
            if cur == k:
                break
            s = (cur - small) // 2
            w = w[:, :, s : s + small, s : s + small]
            if self.transform:
                w = (w.reshape(-1, small * small) @ self.matrices[f"{cur}to{small}"]).reshape(
                    w.shape[0], w.shape[1], small, small
                )
            cur = small
        return w


class DynamicDepthwise(_ElasticKernel):
    """A depthwise conv of the largest kernel; smaller kernels are centre crops (optionally transformed, OFA §3.3)."""

    def __init__(self, channels: int, kernels: tuple[int, ...], *, transform: bool = False) -> None:
        super().__init__(channels, 1, kernels, transform=transform)

    def kernel(self, k: int, channels: int) -> torch.Tensor:
        """The ``channels × 1 × k × k`` kernel of a subnet."""
        return self._crop(self.weight[:channels], k)

    def forward(self, x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel(k, c), None, stride, (k - 1) // 2, 1, c)


class DynamicConv(_ElasticKernel):
    """A regular conv ``cin_max → cout_max`` of the largest kernel; a subnet uses the centre ``k × k`` of the first
    ``cout × cin`` filters (fused-MBConv's expansion; elastic as :class:`DynamicDepthwise`)."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], *, transform: bool = False) -> None:
        super().__init__(cout, cin, kernels, transform=transform)

    def kernel(self, k: int, cout: int, cin: int) -> torch.Tensor:
        """The ``cout × cin × k × k`` kernel of a subnet."""
        return self._crop(self.weight[:cout, :cin], k)

    def forward(self, x: torch.Tensor, k: int, stride: int, cout: int) -> torch.Tensor:
        return F.conv2d(x, self.kernel(k, cout, x.shape[1]), None, stride, (k - 1) // 2)


class DynamicSE(nn.Module):
    """Squeeze-and-excitation of the largest width; a subnet uses the first ``mid`` channels and ``sq`` squeezed."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor, squeeze: int, gate: str) -> torch.Tensor:
        c = x.shape[1]
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, self.fc1.weight[:squeeze, :c], self.fc1.bias[:squeeze]))  # type: ignore[index]
        s = F.conv2d(s, self.fc2.weight[:c, :squeeze], self.fc2.bias[:c])  # type: ignore[index]
        return x * _act(gate)(s)

    def fill(self, target: nn.Module) -> None:
        sq, c = target.fc1.weight.shape[:2]  # type: ignore[union-attr, index]
        target.fc1.weight.data.copy_(self.fc1.weight[:sq, :c])  # type: ignore[union-attr]
        target.fc1.bias.data.copy_(self.fc1.bias[:sq])  # type: ignore[union-attr, index]
        target.fc2.weight.data.copy_(self.fc2.weight[:c, :sq])  # type: ignore[union-attr]
        target.fc2.bias.data.copy_(self.fc2.bias[:c])  # type: ignore[union-attr, index]



def _kernel_se_params(kernels: tuple[int, ...], transform: bool, mid: int, squeeze: int) -> tuple[int, int]:
    """The largest kernel, and the parameters of the kernel-transform matrices (OFA §3.2: k² × k² for every
    smaller kernel) plus the SE on ``mid`` channels (two 1×1 convs with bias)."""
    ks = sorted(set(kernels), reverse=True)
    matrices = sum(k**4 for k in ks[1:]) if transform else 0
    return ks[0], matrices + 2 * squeeze * mid + squeeze + mid


def _sort_inner_(project: nn.Module, se: nn.Module,
                 producers: tuple[tuple[nn.Module, DynamicBN], ...]) -> torch.Tensor:  # fmt: skip
    """Permute a layer's inner channels by the L1 norm of the projection weights reading them, most important first
    (OFA §3.3, ``re_organize_middle_weights``): every filter and BN that makes them, the SE that reads and
    rescales them, and the projection's input channels; returns the permutation."""
    idx = torch.sort(project.weight.data.abs().sum((0, 2, 3)), descending=True, stable=True).indices
    for conv, bn in producers:
        conv.weight.data.copy_(conv.weight.data[idx])
        bn.permute_(idx)
    se.fc1.weight.data.copy_(se.fc1.weight.data[:, idx])
    se.fc2.weight.data.copy_(se.fc2.weight.data[idx])
    se.fc2.bias.data.copy_(se.fc2.bias.data[idx])
    project.weight.data.copy_(project.weight.data[:, idx])
    return idx


class DynamicInvertedResidual(nn.Module):
    """A stage's layer: 1×1 expand → depthwise k×k → [SE] → linear 1×1 (MobileNetV2/V3), every part elastic."""

    def __init__(self, cin: int, mid: int, cout: int, squeeze: int, kernels: tuple[int, ...], *,
                 transform: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.expand, self.expand_bn = DynamicPointwise(cin, mid), DynamicBN(mid)
        self.dw, self.dw_bn = DynamicDepthwise(mid, kernels, transform=transform), DynamicBN(mid)
        self.se = DynamicSE(mid, squeeze)
        self.project, self.project_bn = DynamicPointwise(mid, cout), DynamicBN(cout)

    @staticmethod
    def params(cin: int, mid: int, cout: int, squeeze: int, kernels: tuple[int, ...], transform: bool) -> int:
        """Parameters of the layer of these largest widths, counted without building it."""
        k, extra = _kernel_se_params(kernels, transform, mid, squeeze)
        return mid * cin + mid * k**2 + extra + cout * mid + 4 * mid + 2 * cout

    def sort_middle_(self) -> torch.Tensor:
        """Reorder the inner channels by importance, most important first (OFA §3.3); the permutation used.

        Importance is the L1 norm of the projection's weights reading the channel
        (OFA's ``re_organize_middle_weights``). Every tensor indexed by inner
        channels is permuted alike, so the largest subnet computes the same function.
        """
        return _sort_inner_(self.project, self.se, ((self.expand, self.expand_bn), (self.dw, self.dw_bn)))

    def forward(self, x: torch.Tensor, plan: LayerPlan) -> torch.Tensor:
        b, act = plan.spec, _act(plan.spec.act or "relu")
        assert plan.mid is not None
        out = x
        if plan.mid != plan.cin:  # InvertedResidual drops the expansion conv at expansion 1
            out = act(self.expand_bn(self.expand(out, plan.mid)))
        out = act(self.dw_bn(self.dw(out, b.k or 3, b.s or 1)))
        if plan.squeeze:
            out = self.se(out, plan.squeeze, b.gate or "sigmoid")
        out = self.project_bn(self.project(out, plan.cout))
        skip = b.skip != "none" and (b.s or 1) == 1 and plan.cin == plan.cout
        return out + x if skip else out

    def fill(self, target: nn.Module, plan: LayerPlan) -> None:
        assert plan.mid is not None
        if target.expand is not None:  # type: ignore[union-attr]
            target.expand.conv.weight.data.copy_(self.expand.sliced(plan.cin, plan.mid))  # type: ignore[union-attr]
            self.expand_bn.fill(target.expand.bn)  # type: ignore[union-attr, arg-type]
        target.dw.conv.weight.data.copy_(self.dw.kernel(plan.spec.k or 3, plan.mid))  # type: ignore[union-attr]
        self.dw_bn.fill(target.dw.bn)  # type: ignore[union-attr, arg-type]
        if target.se is not None:  # type: ignore[union-attr]
            self.se.fill(target.se)  # type: ignore[arg-type]
        target.project.conv.weight.data.copy_(self.project.sliced(plan.mid, plan.cout))  # type: ignore[union-attr]
        self.project_bn.fill(target.project.bn)  # type: ignore[union-attr, arg-type]


class DynamicFusedMBConv(nn.Module):
    """A stage's layer: k×k conv → [SE] → linear 1×1 (fused-MBConv, Tan & Le 2021, Fig. 2), every part elastic.

    The k×k conv is both the elastic kernel (the centre of the largest, as OFA's
    depthwise kernels) and the elastic expansion (its first ``mid`` filters).
    """

    def __init__(self, cin: int, mid: int, cout: int, squeeze: int, kernels: tuple[int, ...], *,
                 transform: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.expand, self.expand_bn = DynamicConv(cin, mid, kernels, transform=transform), DynamicBN(mid)
        self.se = DynamicSE(mid, squeeze)
        self.project, self.project_bn = DynamicPointwise(mid, cout), DynamicBN(cout)

    @staticmethod
    def params(cin: int, mid: int, cout: int, squeeze: int, kernels: tuple[int, ...], transform: bool) -> int:
        """Parameters of the layer of these largest widths, counted without building it."""
        k, extra = _kernel_se_params(kernels, transform, mid, squeeze)
        return mid * cin * k**2 + extra + cout * mid + 2 * mid + 2 * cout

    def sort_middle_(self) -> torch.Tensor:
        """Reorder the inner channels by the L1 of the projection reading them (as the inverted residual's)."""
        return _sort_inner_(self.project, self.se, ((self.expand, self.expand_bn),))

    def forward(self, x: torch.Tensor, plan: LayerPlan) -> torch.Tensor:
        b, act = plan.spec, _act(plan.spec.act or "swish")
        assert plan.mid is not None
        out = act(self.expand_bn(self.expand(x, b.k or 3, b.s or 1, plan.mid)))
        if plan.squeeze:
            out = self.se(out, plan.squeeze, b.gate or "sigmoid")
        out = self.project_bn(self.project(out, plan.cout))
        return out + x if plan.residual else out

    def fill(self, target: nn.Module, plan: LayerPlan) -> None:
        assert plan.mid is not None
        conv = self.expand.kernel(plan.spec.k or 3, plan.mid, plan.cin)
        target.expand.conv.weight.data.copy_(conv)  # type: ignore[union-attr]
        self.expand_bn.fill(target.expand.bn)  # type: ignore[union-attr, arg-type]
        if target.se is not None:  # type: ignore[union-attr]
            self.se.fill(target.se)  # type: ignore[arg-type]
        target.project.conv.weight.data.copy_(self.project.sliced(plan.mid, plan.cout))  # type: ignore[union-attr]
        self.project_bn.fill(target.project.bn)  # type: ignore[union-attr, arg-type]


ElasticLayer = DynamicInvertedResidual | DynamicFusedMBConv
ELASTIC: dict[str, type[DynamicInvertedResidual] | type[DynamicFusedMBConv]] = {
    "ir": DynamicInvertedResidual, "er": DynamicFusedMBConv,
}  # fmt: skip
"""The supernet's elastic layer of each searchable block kind (:attr:`edgecnn.kinds.BlockKind.searchable`)."""


def _elastic(kind: str) -> type[DynamicInvertedResidual] | type[DynamicFusedMBConv]:
    if kind not in ELASTIC:
        raise ValueError(f"the supernet has no elastic layer for {kind!r} stages (it has {', '.join(ELASTIC)}); "
                         "estimate accuracy by short training instead")  # fmt: skip
    return ELASTIC[kind]


class DynamicHead(nn.Module):
    """1×1 conv to ``head_mult ×`` the last width → BN → hswish → pool → hidden fc → hswish → classifier."""

    def __init__(self, cin: int, conv_out: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.conv, self.bn = DynamicPointwise(cin, conv_out), DynamicBN(conv_out)
        self.fc = nn.Linear(conv_out, hidden)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, plans: list[LayerPlan]) -> torch.Tensor:
        conv, _, fc, _ = plans
        x = _act(conv.spec.act or "relu")(self.bn(self.conv(x, conv.cout)))
        x = x.mean((2, 3))
        x = _act(fc.spec.act or "linear")(F.linear(x, self.fc.weight[:, : x.shape[1]], self.fc.bias))
        return self.classifier(x)

    def fill(self, targets: list[nn.Module], plans: list[LayerPlan]) -> None:
        conv, _, fc, cls = targets
        targets[0].conv.weight.data.copy_(self.conv.sliced(plans[0].cin, plans[0].cout))  # type: ignore[union-attr]
        self.bn.fill(conv.bn)  # type: ignore[union-attr, arg-type]
        fc.fc.weight.data.copy_(self.fc.weight[:, : plans[2].cin])  # type: ignore[union-attr]
        fc.fc.bias.data.copy_(self.fc.bias)  # type: ignore[union-attr]
        cls.load_state_dict(self.classifier.state_dict())


def _max_dims(space: SearchSpace, stem_out: int) -> list[list[tuple[int, int, int, int]]]:
    """Per stage and layer: (cin, mid, cout, squeeze) of the largest weights any subnet may slice."""
    out, prev = [], (stem_out,)
    for s in space.stages:
        layers = []
        for j in range(max(s.depths)):
            cins = prev if j == 0 else s.widths
            mids = [_inner(s.block, c, e) for c in cins for e in s.expansions]
            sq = max(se_width(m, 0.25) for m in mids) if True in s.se else 1
            layers.append((max(cins), max(mids), max(s.widths), sq))
        out.append(layers)
        prev = s.widths
    return out


def supernet_params(space: SearchSpace, *, num_classes: int, in_chans: int, kernel_transform: bool) -> int:
    """Parameters of the space's supernet, counted from its largest dimensions without building it.

    The stem's from its resolved plan; every stage layer as its elastic layer sizes it (``params``: the
    convs at the largest kernel with OFA's transformation matrices, SE, their BNs); the head.
    ``tests/test_hostile_search.py`` checks the count against a built supernet.
    """
    stem = resolve(space.stem, in_chans=in_chans, input_size=space.input_size)
    total = sum(kind_of(p.spec.kind).cost(p)[0] for p in stem)
    for s, layers in zip(space.stages, _max_dims(space, stem[-1].cout)):
        layer = _elastic(s.block)
        total += sum(layer.params(*dims, s.kernels, kernel_transform) for dims in layers)
    last = max(space.stages[-1].widths)
    conv_out = space.head_mult * last
    total += conv_out * last + 2 * conv_out + (conv_out + 1) * space.hidden + (space.hidden + 1) * num_classes
    return total


def _inner(kind: str, cin: int, expansion: float) -> int:
    """The inner width the arch format gives a stage block of ``kind``, input ``cin`` and expansion ``e``."""
    mid = kind_of(kind).mid
    assert mid is not None
    return mid(BlockSpec(kind, e=expansion, c=8), cin)


def _expand_may_vanish(stage: StageSpace) -> bool:
    """Whether a layer of ``stage`` may have no expansion conv (an ``ir`` at expansion 1): its inner channels
    are then its input's, which sorting must leave alone."""
    inner = kind_of(stage.block).inner.get(False)
    return inner is not None and inner.tied_to_input and 1.0 in stage.expansions


class Supernet(nn.Module):
    """All networks of ``space`` in one set of weights; ``forward(x, genome)`` runs one subnet (see module doc)."""

    def __init__(self, space: SearchSpace, *, num_classes: int, in_chans: int = 3,
                 kernel_transform: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.space, self.num_classes, self.in_chans = space, num_classes, in_chans
        self.kernel_transform = kernel_transform
        stem = resolve(space.stem, in_chans=in_chans, input_size=space.input_size)
        self.stem = nn.ModuleList(BUILDERS[p.spec.kind](p) for p in stem)
        dims = _max_dims(space, stem[-1].cout)
        self.stages = nn.ModuleList(
            nn.ModuleList(_elastic(s.block)(*d, s.kernels, transform=kernel_transform) for d in layers)
            for s, layers in zip(space.stages, dims)
        )
        last = max(space.stages[-1].widths)
        self.head = DynamicHead(last, space.head_mult * last, space.hidden, num_classes)

    def arch(self, genome: Genome) -> str:
        """The canonical arch string of a subnet."""
        return self.space.arch(genome).format()

    def plans(self, genome: Genome) -> list[LayerPlan]:
        """The subnet's resolved layers, as :func:`edgecnn.plan.resolve` gives them for its arch string."""
        return _plans(self.space.arch(genome), self.num_classes, self.in_chans, self.space.input_size)

    def _layers(self, genome: Genome) -> Iterator[tuple[ElasticLayer, LayerPlan]]:
        plans = self.plans(genome)
        pos = len(self.stem)
        for stage, choice in zip(self.stages, genome):
            for j in range(choice.depth):
                yield stage[j], plans[pos]  # type: ignore[misc]
                pos += 1

    def forward(self, x: torch.Tensor, genome: Genome) -> torch.Tensor:
        for m in self.stem:
            x = m(x)
        for layer, plan in self._layers(genome):
            x = layer(x, plan)
        return self.head(x, self.plans(genome)[-4:])

    @torch.no_grad()
    def extract(self, genome_or_arch: Genome | str) -> EdgeNet:
        """A stand-alone EdgeNet of the subnet, with the supernet's (sliced, transformed) weights."""
        genome = self.space.decode(genome_or_arch) if isinstance(genome_or_arch, str) else genome_or_arch
        net = build(self.space.arch(genome), num_classes=self.num_classes, in_chans=self.in_chans)
        blocks = list(net.blocks)
        for target, m in zip(blocks, self.stem):
            target.load_state_dict(m.state_dict())
        pos = len(self.stem)
        for layer, plan in self._layers(genome):
            layer.fill(blocks[pos], plan)
            pos += 1
        self.head.fill(blocks[-4:], self.plans(genome)[-4:])
        return net.train(self.training)

    @torch.no_grad()
    def sort_channels_(self) -> dict[str, int]:
        """Sort inner and stage-output channels by importance, most important first (OFA §3.3), in place.

        OFA sorts the inner (expanded) channels of every layer before it makes
        the expansion elastic; this space's stage widths are elastic too, so the
        output channels of each stage are sorted as well, by the L1 norm of the
        weights that read them (the next layers' expansion convs, or the head).
        The stages a residual joins at full width (a stride-1 stage whose largest
        width equals the previous stage's) share one permutation. Every subnet at
        the largest expansion and width — all that progressive shrinking has
        trained before it sorts — computes the same function afterwards.
        Layers whose stage allows expansion 1 (no expansion conv: the inner
        channels are the input channels) and stages tied to the fixed stem are
        left as they are. Returns how many layers and stage groups were sorted.
        """
        layers = 0
        for s, stage in zip(self.space.stages, self.stages):
            if not _expand_may_vanish(s):
                for layer in stage:
                    layer.sort_middle_()  # type: ignore[operator]
                    layers += 1
        groups = 0
        for group in self._width_groups():
            self._sort_outputs(group)
            groups += 1
        return {"layers": layers, "stage_groups": groups}

    def _width_groups(self) -> list[list[int]]:
        """Stages whose outputs must share one channel order (joined by a residual at the largest widths)."""
        st, groups = self.space.stages, [[0]]
        for i in range(1, len(st)):
            if st[i].stride == 1 and max(st[i].widths) == max(st[i - 1].widths):
                groups[-1].append(i)
            else:
                groups.append([i])
        stem_out = resolve(self.space.stem, in_chans=self.in_chans, input_size=self.space.input_size)[-1].cout
        tied_to_stem = st[0].stride == 1 and max(st[0].widths) == stem_out
        n = len(st)
        ok = [g for g in groups if not (tied_to_stem and g[0] == 0)]
        # a stage whose output feeds a layer with no expansion conv would need its inner channels permuted too
        return [g for g in ok if not any(_expand_may_vanish(st[i]) for i in [*g, g[-1] + 1] if i < n)]

    def _sort_outputs(self, group: list[int]) -> None:
        readers: list[torch.Tensor] = []  # weights [out, in, 1, 1] whose input channels are the group's outputs
        writers: list[ElasticLayer] = []
        for i in group:
            stage = list(self.stages[i])
            writers += stage  # type: ignore[arg-type]
            first = 1 if i == group[0] else 0  # a tied stage's first layer reads the previous stage's output
            readers += [layer.expand.weight for layer in stage[first:]]  # type: ignore[union-attr]
        last = group[-1]
        nxt = self.stages[last + 1][0].expand.weight if last + 1 < len(self.stages) else self.head.conv.weight
        readers.append(nxt)  # type: ignore[arg-type]
        c = writers[0].project.weight.shape[0]
        importance = sum(w.data[:, :c].abs().sum((0, 2, 3)) for w in readers)
        idx = torch.sort(importance, descending=True, stable=True).indices  # type: ignore[call-overload]
        for layer in writers:
            layer.project.weight.data.copy_(layer.project.weight.data[idx])
            layer.project_bn.permute_(idx)
        for w in readers:
            w.data[:, :c].copy_(w.data[:, idx])


@lru_cache(maxsize=4096)
def _plans(spec: ArchSpec, num_classes: int, in_chans: int, size: int) -> list[LayerPlan]:
    return resolve(spec, num_classes=num_classes, in_chans=in_chans, input_size=size)
