"""Receptive-field planning: the cheapest conv stack whose field reaches a target (docs/design.md §4).

The inverse of :mod:`edgecnn.analysis.receptive`: given a target ``T``, find
kernel/stride/dilation sequences ``(k_l, s_l, d_l)`` minimising MACs subject to
``R_L = 1 + Σ_l (k_l − 1)·d_l·Π_{i<l} s_i ≥ T`` (and, optionally, a total
output stride ``Π s_l = S``).

**Cost model.** A plain stack of ``C → C`` convs with "same" padding on a
square ``H_0 × H_0`` input: layer ``l`` costs ``H_l² · C² · k_l²`` MACs with
``H_l = ⌈H_0 / J_l⌉`` (so ``⌈⌈H/2⌉/2⌉ = ⌈H/4⌉``). Dilation is free in this
model -- it grows the field at no cost, which is its point, but leaves holes
in the field ("gridding", Wang et al. 2018); restrict ``dilations`` to
``(1,)`` to forbid it. Channel growth, BN, activations and the stem are not
modelled.

**Exact.** A dynamic programme over states ``(min(R, T), J)``: the future
of a partial stack depends only on its field (capped at ``T``, beyond which
growth no longer matters) and its jump (which fixes the spatial size), and
its cost is additive. Keeping the ``top`` cheapest partial stacks per state is
enough to find the ``top`` cheapest complete ones (if a prefix is not among
the ``top`` of its state, ``top`` other prefixes followed by the same suffix
are at least as cheap). So the answer is the true optimum of the model over
the whole choice set, not a heuristic; ties are broken by the choice order.
A stack is complete as soon as it meets the target (and stride), so runners-up
never append a useless layer to a cheaper answer. Strided layers whose taps
skip input pixels (``k = 1, s = 2``; ``s = 2`` with an even ``d``) are left out
unless ``allow_skips``: the model would otherwise "downsample" for free by
throwing pixels away. With ``R`` capped, there are
at most ``T·(depth+1)`` states per layer: depth 8, ``T`` = 500 and the 20
distinct choices of ``k ∈ {1,3,5,7}, s ∈ {1,2}, d ∈ {1,2,4}`` (a 1×1 conv
takes no dilation; 13 are left without skipping layers) run in about a
second, against 20⁸ ≈ 2.6·10¹⁰ sequences for brute force.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from edgecnn.limits import MAX_PLAN_STATES


@dataclass(frozen=True)
class PlanLayer:
    """One conv of a planned stack."""

    kernel: int  # k
    stride: int  # s
    dilation: int  # d
    rf: int  # receptive field R after this layer
    jump: int  # output stride J after this layer
    out_size: int  # output H = W
    macs: int  # H_out² · C² · k²


@dataclass(frozen=True)
class RFPlan:
    """A conv stack meeting the target field, with its cost."""

    layers: tuple[PlanLayer, ...]  # in order, input first
    macs: int  # total multiply-adds
    channels: int  # C, the width every layer has

    @property
    def rf(self) -> int:
        return self.layers[-1].rf

    @property
    def stride(self) -> int:
        return self.layers[-1].jump

    def arch(self) -> str:
        """The stack as an edgecnn arch string (convs without BN or activation choice beyond the default)."""
        parts = []
        for layer in self.layers:
            tok = f"conv_k{layer.kernel}"
            tok += f"_s{layer.stride}" if layer.stride > 1 else ""
            tok += f"_d{layer.dilation}" if layer.dilation > 1 else ""
            parts.append(f"{tok}_c{self.channels}")
        return " ".join(parts)

    def describe(self) -> str:
        """``k3s2 k3d2 k5``: the sequence in short form."""
        return " ".join(
            f"k{l.kernel}" + (f"s{l.stride}" if l.stride > 1 else "") + (f"d{l.dilation}" if l.dilation > 1 else "")
            for l in self.layers
        )


def reads_every_pixel(kernel: int, stride: int, dilation: int) -> bool:
    """Whether the taps ``t·d`` (t < k) hit every residue mod ``s``: otherwise some input pixels are never read."""
    return len({t * dilation % stride for t in range(kernel)}) == stride


def _choices(kernels: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
             allow_skips: bool) -> list[tuple[int, int, int]]:  # fmt: skip
    for name, values in (("kernels", kernels), ("strides", strides), ("dilations", dilations)):
        if not values or any(int(v) != v or v < 1 for v in values):
            raise ValueError(f"{name} must be a non-empty list of positive integers, got {list(values)}")
    out = set()
    for k, s, d in itertools.product(kernels, strides, dilations):
        d = 1 if k == 1 else d  # a 1×1 conv has nothing to dilate
        if allow_skips or reads_every_pixel(k, s, d):
            out.add((k, s, d))
    if not out:
        raise ValueError("every choice of kernel/stride/dilation skips input pixels; pass allow_skips=True")
    return sorted(out)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _layer_macs(size: int, jump_out: int, kernel: int, channels: int) -> int:
    return _ceil_div(size, jump_out) ** 2 * channels * channels * kernel * kernel


def plan_receptive_field(
    target: int,
    *,
    depth: int = 8,
    stride: int | None = None,
    channels: int = 64,
    input_size: int = 224,
    kernels: Sequence[int] = (1, 3, 5, 7),
    strides: Sequence[int] = (1, 2),
    dilations: Sequence[int] = (1, 2, 4),
    top: int = 5,
    exact_depth: bool = False,
    allow_skips: bool = False,
) -> list[RFPlan]:
    """The ``top`` cheapest stacks (fewest MACs) of at most ``depth`` convs with field ``R ≥ target``.

    Ranked are the stacks that meet the target (and ``stride``) with no
    useless layer: none has a proper prefix that already meets them, and none
    has a 1×1 stride-1 conv (both only add cost) unless ``exact_depth``.

    ``stride``: the total output stride the stack must have (``None``: any).
    ``exact_depth``: exactly ``depth`` layers instead of at most.
    ``allow_skips``: also allow strided layers that never read some input
    pixels (a 1×1 stride-2 conv, or stride 2 with an even dilation) -- the
    cheapest downsampling in this model, and a useless one. Raises
    ``ValueError`` when no stack in the choice set reaches the target.
    """
    for name, v in (("target", target), ("depth", depth), ("channels", channels), ("input_size", input_size),
                    ("top", top)):  # fmt: skip
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    if stride is not None and stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    choices = _choices(kernels, strides, dilations, allow_skips)
    if not exact_depth:  # a 1×1 stride-1 conv changes neither R nor J: never part of a cheapest stack
        choices = [c for c in choices if c[:2] != (1, 1)] or choices

    if _max_field(choices, depth, stride) < target:  # unreachable: say so at once instead of searching
        _unreachable(target, depth, stride, kernels, strides, dilations, exact_depth)
    budget, work = MAX_PLAN_STATES.value(), 0  # a search is bounded: partial stacks it may extend in all
    # state (min(R, T), J) -> up to `top` (cost, choice indices), cheapest first
    frontier: dict[tuple[int, int], list[tuple[int, tuple[int, ...]]]] = {(1, 1): [(0, ())]}
    finals: list[tuple[int, tuple[int, ...]]] = []
    for n in range(1, depth + 1):
        # the top-th best complete cost so far bounds every partial stack (costs only grow)
        bound = heapq.nsmallest(top, finals)[-1][0] if len(finals) >= top else None
        grown: dict[tuple[int, int], list[tuple[int, tuple[int, ...]]]] = defaultdict(list)
        for (r, j), entries in frontier.items():
            work += len(entries) * len(choices)
            if work > budget:
                MAX_PLAN_STATES.check(work, f"rf-plan for a field of {target} in {depth} layers")
            for idx, (k, s, d) in enumerate(choices):
                j2 = j * s
                if stride is not None and stride % j2:
                    continue  # this jump can no longer reach the required stride
                r2 = min(r + (k - 1) * d * j, target)
                cost = _layer_macs(input_size, j2, k, channels)
                bucket = grown[(r2, j2)]
                for c, seq in entries:
                    if bound is None or c + cost <= bound:
                        bucket.append((c + cost, seq + (idx,)))
        frontier = {}
        for state, bucket in grown.items():
            best = heapq.nsmallest(top, bucket)
            meets = state[0] >= target and (stride is None or state[1] == stride)
            if meets and (not exact_depth or n == depth):
                finals.extend(best)  # complete: extending it would only add cost
            elif n < depth and best:
                frontier[state] = best
    if not finals:
        _unreachable(target, depth, stride, kernels, strides, dilations, exact_depth)
    return [_plan(seq, choices, channels, input_size) for _, seq in heapq.nsmallest(top, finals)]


def _unreachable(target: int, depth: int, stride: int | None, kernels: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], exact_depth: bool) -> NoReturn:  # fmt: skip
    """The ``ValueError`` saying that no stack in the choice set reaches the target."""
    raise ValueError(
        f"no stack of {'exactly' if exact_depth else 'at most'} {depth} layers with kernels {sorted(set(kernels))}, "
        f"strides {sorted(set(strides))}, dilations {sorted(set(dilations))}"
        + (f" and total stride {stride}" if stride else "")
        + f" reaches a field of {target}; allow more depth, larger kernels or dilations"
    )


def _max_field(choices: list[tuple[int, int, int]], depth: int, stride: int | None) -> int:
    """The largest field any stack of at most ``depth`` layers reaches (an upper bound; one state per jump J)."""
    best, top = {1: 1}, 1
    for _ in range(depth):
        grown: dict[int, int] = {}
        for j, r in best.items():
            for k, s, d in choices:
                j2 = j * s
                if stride is not None and stride % j2:
                    continue
                grown[j2] = max(grown.get(j2, 0), r + (k - 1) * d * j)
        if len(grown) > MAX_PLAN_STATES.value():  # absurd stride lists: give up bounding, the search is bounded
            return 1 << 62
        best = grown
        top = max([top, *(r for j, r in best.items() if stride is None or j == stride)])
    return top


def _plan(seq: tuple[int, ...], choices: list[tuple[int, int, int]], channels: int, input_size: int) -> RFPlan:
    layers, r, j = [], 1, 1
    for idx in seq:
        k, s, d = choices[idx]
        r, j = r + (k - 1) * d * j, j * s
        layers.append(PlanLayer(k, s, d, r, j, _ceil_div(input_size, j), _layer_macs(input_size, j, k, channels)))
    return RFPlan(tuple(layers), sum(l.macs for l in layers), channels)
