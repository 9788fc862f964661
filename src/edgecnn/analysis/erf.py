"""Effective receptive field (Luo et al. 2016, *Understanding the Effective Receptive Field in Deep CNNs*).

The theoretical field (:mod:`.receptive`) says which pixels *can* reach an
output; the effective one says how much each does: the gradient of one
central output unit with respect to the input, ``∂y_centre/∂x``, averaged in
magnitude over random inputs. Luo et al. show it is roughly Gaussian and
grows like ``√n`` with depth, so it fills only a fraction of the theoretical
field. Following their §3 we set the output gradient to 1 at the central
position of *every* output channel and 0 elsewhere, sum ``|∂/∂x|`` over
input channels and average over samples; the map is normalised to sum 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgecnn.analysis.receptive import RF, eval_mode, receptive_field


@dataclass(frozen=True)
class ERF:
    """An effective receptive field map and the radii holding shares of its mass."""

    map: torch.Tensor  # (*spatial) of the input, non-negative, sums to 1
    centre: tuple[float, ...]  # input coordinates the radii are measured from (the field's centre)
    output_index: tuple[int, ...]  # the output position whose gradient was taken
    samples: int  # random inputs averaged over
    rf: RF | None  # the theoretical field, when the model could be traced

    def radius(self, share: float) -> float:
        """Smallest Euclidean distance ``r`` from :attr:`centre` such that pixels within ``r`` hold ``share`` of the mass."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in self.map.shape), indexing="ij")
        dist = torch.sqrt(sum((g - c) ** 2 for g, c in zip(grids, self.centre))).flatten()
        order = torch.argsort(dist, stable=True)
        mass = torch.cumsum(self.map.flatten().double()[order], 0)
        hit = int(torch.searchsorted(mass, torch.tensor(share - 1e-12, dtype=torch.float64)))
        return float(dist[order][min(hit, dist.numel() - 1)])

    @property
    def radius50(self) -> float:
        return self.radius(0.5)

    @property
    def radius95(self) -> float:
        return self.radius(0.95)

    def std(self) -> tuple[float, ...]:
        """Per-axis standard deviation of the map about :attr:`centre` (Luo et al.: grows like √depth)."""
        out = []
        for axis, c in enumerate(self.centre):
            coords = torch.arange(self.map.shape[axis], dtype=torch.float64) - c
            marginal = self.map.double().sum(dim=tuple(a for a in range(self.map.dim()) if a != axis))
            out.append(math.sqrt(float((marginal * coords**2).sum())))
        return tuple(out)


def effective_receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    samples: int = 16,
    output_index: Sequence[int] | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> ERF:
    """ERF of ``model`` (whose output keeps spatial axes: pass the trunk, before global pooling).

    ``input_shape`` is ``(N, C, *spatial)``; ``samples`` standard-normal inputs
    are drawn in batches of ``N``. ``output_index`` defaults to the central
    output position. Inputs take ``dtype``, by default that of the model's
    first parameter. The model runs in eval mode (BN with running statistics,
    so that batch samples do not mix) and is restored afterwards.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 3:
        raise ValueError(f"input_shape {shape} must be (N, C, *spatial)")
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    gen = torch.Generator().manual_seed(seed)
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    total, index, done = torch.zeros(shape[2:], dtype=torch.float64), None, 0
    with eval_mode(model):
        while done < samples:
            n = min(shape[0], samples - done)
            x = torch.randn((n, *shape[1:]), generator=gen, dtype=dtype).requires_grad_(True)
            y = model(x)
            if y.dim() != len(shape):
                raise ValueError(
                    f"the model's output {tuple(y.shape)} has no spatial axes; pass the part before global "
                    f"pooling (e.g. model.blocks[:i])"
                )
            if index is None:
                index = tuple(output_index) if output_index is not None else tuple(s // 2 for s in y.shape[2:])
                if len(index) != y.dim() - 2 or any(not 0 <= i < s for i, s in zip(index, y.shape[2:])):
                    raise ValueError(f"output_index {index} is outside the output's spatial shape {tuple(y.shape[2:])}")
            seed_grad = torch.zeros_like(y)
            seed_grad[(slice(None), slice(None), *index)] = 1.0
            (g,) = torch.autograd.grad(y, x, seed_grad)
            total += g.abs().double().sum(dim=1).sum(dim=0)  # over channels, then samples
            done += n
    assert index is not None
    mass = float(total.sum())
    if mass == 0:
        raise ValueError("the output does not depend on the input (zero gradient everywhere)")
    rf: RF | None
    try:
        rf = receptive_field(model, (1, *shape[1:]))
    except Exception:  # noqa: BLE001 - an untraceable model still has an ERF; centre it on the mass instead
        rf = None
    erf_map = total / mass
    if rf is not None and not rf.whole:
        centre = tuple(float(c + i * j) for c, i, j in zip(rf.start, index, rf.jump))
    else:
        centre = tuple(
            float((erf_map.sum(dim=tuple(a for a in range(erf_map.dim()) if a != axis)) *
                   torch.arange(erf_map.shape[axis], dtype=torch.float64)).sum())
            for axis in range(erf_map.dim())
        )  # fmt: skip
    return ERF(erf_map, centre, index, samples, rf)
