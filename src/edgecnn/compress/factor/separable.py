"""Standard k×k convolutions → depthwise separable pairs, fitted by least squares (``--method separable``).

A standard conv ``W`` (``C_out × C_in × kh × kw``, groups 1) becomes a
depthwise ``kh×kw`` conv ``D`` (``C_in`` filters, one per input channel, the
original stride, padding, dilation and padding mode, no bias) followed by a
pointwise ``1×1`` conv ``P`` (``C_in → C_out``, the original bias). Nothing is
put between the two: Chollet 2017 ("Xception", §4.7) found that a
depthwise separable conv trains faster and better with no nonlinearity
between depthwise and pointwise, and it keeps the pair a linear map that can
be fitted to ``W``; the BN and activation that followed the conv follow the
pair unchanged. The composed weight is ``Ŵ[n, c, i, j] = P[n, c] · D[c, i, j]``.

**Initialisation, step 1 — weights** (Guo et al. 2018, "Network Decoupling:
From Regular to Depthwise Separable Convolutions", BMVC, §3 with one term):
for every input channel ``c`` the slice ``W[:, c]`` read as a
``C_out × kh·kw`` matrix is replaced by its best rank-1 approximation
``σ₁ u₁ v₁ᵀ`` (``P[:, c] = √σ₁ u₁``, ``D[c] = √σ₁ v₁``). The slices are
independent and ``‖W − Ŵ‖²_F = Σ_c ‖W[:, c] − P[:, c] D[c]ᵀ‖²_F``, so by
Eckart–Young per slice this is the least-squares optimum over all
separable weights: error² ``Σ_c Σ_{i≥2} σ_{c,i}²``, zero exactly when every
slice has rank 1, i.e. when ``W`` is itself separable.

**Step 2 — outputs** (with calibration inputs; the linear least-squares
reconstruction of He, Zhang & Sun 2017, "Channel Pruning for Accelerating
Very Deep Neural Networks", §3.1): with ``D`` fixed, ``P`` (and the bias, if
the conv has one) is refitted to minimise ``‖Y − P·Z‖²_F`` over calibration
positions, where ``Y`` is the original conv's output (bias excluded when
there is none to fit) and ``Z = D ∗ X`` the depthwise output, on the layer's
real inputs ``X`` in the original network. The solution (``torch.linalg.lstsq``,
float64) is the optimum for ``P`` given ``D``; step 1's ``P`` is one candidate,
so the output error never rises.

Which layers are replaced, against measured latency and a budget, is the
greedy choice of :mod:`edgecnn.compress.factor.layer_timing` with ``E = 1 −
‖W − Ŵ‖²/‖W‖²``; a pair that is not faster on the device than the conv is
skipped with its times. The CLI then distils from the original (Hinton et
al. 2015, :mod:`edgecnn.train.distill`) while fine-tuning.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from edgecnn.build import EdgeNet, plain
from edgecnn.compress.factor.layer_timing import (
    NOT_CHOSEN,
    LayerLatency,
    MeasuredResult,
    call_shapes,
    exact_resource,
    front,
    layer_ms,
    select_to_budget,
)

__all__ = [
    "SeparableLayer",
    "SeparablePlan",
    "SeparableSkip",
    "MeasuredSeparable",
    "fit_pointwise_",
    "is_candidate",
    "separable_pair",
    "separable_to_budget",
]


def is_candidate(m: nn.Module) -> bool:
    """A standard (groups 1) ``nn.Conv2d`` with a kernel larger than 1×1: what this transform replaces."""
    return type(m) is nn.Conv2d and m.groups == 1 and tuple(m.kernel_size) != (1, 1)


def separable_pair(conv: nn.Conv2d) -> tuple[nn.Sequential, float]:
    """``Sequential(depthwise, pointwise)`` fitted to ``conv`` by per-channel rank-1 SVDs, and its kept energy.

    The energy is ``1 − ‖W − Ŵ‖²_F / ‖W‖²_F`` (1.0 when ``conv`` is separable).
    ``conv`` is not changed; the pair has its dtype, device, mode and grad flag.
    """
    if not is_candidate(conv):
        raise ValueError(f"separable_pair takes a groups=1 nn.Conv2d with a kernel > 1×1, got {conv!r}")
    c_out, c_in, kh, kw = conv.weight.shape
    w = conv.weight.detach().double().permute(1, 0, 2, 3).reshape(c_in, c_out, kh * kw)  # slice c: C_out × k²
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # batched over input channels
    root = s[:, 0].sqrt()
    pw = u[:, :, 0] * root[:, None]  # (C_in, C_out)
    dw = vh[:, 0, :] * root[:, None]  # (C_in, k²)
    total = float((s**2).sum())
    energy = float((s[:, 0] ** 2).sum()) / total if total > 0 else 1.0
    kwargs = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    depthwise = nn.Conv2d(c_in, c_in, (kh, kw), stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                          groups=c_in, bias=False, padding_mode=conv.padding_mode, **kwargs)  # fmt: skip
    pointwise = nn.Conv2d(c_in, c_out, 1, bias=conv.bias is not None, **kwargs)
    with torch.no_grad():
        depthwise.weight.copy_(dw.reshape(c_in, 1, kh, kw))
        pointwise.weight.copy_(pw.T.reshape(c_out, c_in, 1, 1))
        if conv.bias is not None:
            pointwise.bias.copy_(conv.bias)
    for p in (*depthwise.parameters(), *pointwise.parameters()):
        p.requires_grad_(conv.weight.requires_grad)
    return nn.Sequential(depthwise, pointwise).train(conv.training), energy


def fit_pointwise_(pair: nn.Sequential, conv: nn.Conv2d, inputs: Iterable[torch.Tensor], *,
                   max_rows: int = 65536, seed: int = 0) -> float:  # fmt: skip
    """Refit ``pair``'s pointwise conv (and bias) to ``conv``'s outputs on ``inputs`` by least squares, in place.

    ``inputs`` are batches of the conv's input. Returns the relative output
    error ``‖Y − Ŷ‖_F / ‖Y‖_F`` after the fit on the rows used (at most
    ``max_rows`` output positions, a seeded sample beyond that).
    """
    depthwise, pointwise = pair[0], pair[1]
    zs, ys = [], []
    with torch.no_grad():
        for x in inputs:
            x = x.to(conv.weight.dtype)
            y = conv._conv_forward(x, conv.weight, conv.bias)  # the conv itself, any padding mode
            zs.append(depthwise(x).permute(0, 2, 3, 1).reshape(-1, depthwise.out_channels).double())
            ys.append(y.permute(0, 2, 3, 1).reshape(-1, conv.out_channels).double())
    if not zs:
        raise ValueError("fit_pointwise_ needs at least one batch of the conv's inputs")
    z, y = torch.cat(zs), torch.cat(ys)
    if len(z) > max_rows:
        idx = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:max_rows]
        z, y = z[idx], y[idx]
    bias = pointwise.bias is not None
    a = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1) if bias else z
    sol = torch.linalg.lstsq(a, y, driver="gelsd").solution  # (C_in [+1], C_out): min-norm when Z is rank deficient
    with torch.no_grad():
        pointwise.weight.copy_(sol[: z.shape[1]].T.reshape(pointwise.weight.shape))
        if bias:
            pointwise.bias.copy_(sol[-1])
    fitted = a @ sol
    return float(torch.linalg.norm(y - fitted) / torch.linalg.norm(y).clamp_min(1e-300))


# ---------------------------------------------------------------- over a network, to a budget


@dataclass(frozen=True)
class SeparableLayer:
    """One conv replaced: costs before and after, the fit, and the measured times."""

    name: str
    weight_shape: tuple[int, ...]  # the conv's (C_out, C_in, kh, kw)
    energy: float  # 1 − ‖W − Ŵ‖²/‖W‖² after step 1 (weights)
    params_before: int
    params_after: int
    macs_before: int  # per image, all calls
    macs_after: int
    latency_ms_before: float  # the conv alone, measured (summed over its calls)
    latency_ms_after: float  # the pair alone, measured
    output_error: float | None = None  # relative output error after step 2 (None: not refitted)


@dataclass(frozen=True)
class SeparableSkip:
    """A candidate conv left as it is, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class SeparablePlan:
    """The replaced convs and the other candidates with their reasons, in module order."""

    layers: tuple[SeparableLayer, ...]
    skipped: tuple[SeparableSkip, ...]

    def summary(self) -> str:
        """A count, one line per replaced conv (MACs, params, ms before → after), one per skipped conv."""
        macs = sum(e.macs_before - e.macs_after for e in self.layers)
        params = sum(e.params_before - e.params_after for e in self.layers)
        lines = [f"replaced {len(self.layers)} conv(s) by depthwise separable pairs: saves {params:,} params, "
                 f"{macs:,} MACs"]  # fmt: skip
        for e in self.layers:
            err = "" if e.output_error is None else f", output error {e.output_error:.4f}"
            lines.append(f"  {e.name}: MACs {e.macs_before:,} → {e.macs_after:,}, params {e.params_before:,} → "
                         f"{e.params_after:,}, {e.latency_ms_before:.4f} → {e.latency_ms_after:.4f} ms, energy "
                         f"{e.energy:.4f}{err}")  # fmt: skip
        lines += [f"  kept {s.name}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


@dataclass(frozen=True)
class MeasuredSeparable(MeasuredResult):
    """What :func:`separable_to_budget` did."""

    plan: SeparablePlan

    def summary(self) -> str:
        """The plan's lines: per replaced conv its costs and times, per kept candidate its reason."""
        return self.plan.summary()


def _costs(conv: nn.Conv2d, out_positions: int) -> tuple[int, int, int, int]:
    """params before/after (bias included) and MACs before/after (bias excluded) for ``out_positions`` outputs."""
    c_out, c_in, kh, kw = conv.weight.shape
    bias = 0 if conv.bias is None else c_out
    k2 = kh * kw
    return (c_out * c_in * k2 + bias, c_in * k2 + c_in * c_out + bias,
            c_out * c_in * k2 * out_positions, (c_in * k2 + c_in * c_out) * out_positions)  # fmt: skip


def separable_to_budget(
    model: nn.Module,
    resource: str,
    target: float,
    input_size: Sequence[int],
    *,
    layer_latency: LayerLatency,
    model_latency: Callable[[nn.Module], float] | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
    start: float | None = None,
) -> MeasuredSeparable:
    """Replace convs of ``model`` (not changed) by separable pairs until ``resource`` ≤ ``target``.

    ``calibration``: network input batches for step 2 (the pointwise refit);
    None keeps step 1's weights. Other arguments as
    :func:`edgecnn.compress.factor.lowrank_method.lowrank_to_budget`.
    """
    if resource not in ("latency", "macs", "params"):
        raise ValueError(f"resource must be 'latency', 'macs' or 'params', got {resource!r}")
    if resource == "latency" and model_latency is None:
        raise ValueError("a latency budget needs model_latency (the whole network timed on the device)")
    size = tuple(int(v) for v in input_size)
    mods = dict(model.named_modules(remove_duplicate=False))
    counts: dict[int, int] = {}
    for m in mods.values():
        counts[id(m)] = counts.get(id(m), 0) + 1
    names = [n for n, m in model.named_modules() if n and is_candidate(m)]
    skipped: dict[str, str] = {}
    for n in names:
        if counts[id(mods[n])] > 1:
            skipped[n] = "module registered under several names: replacing one would leave the others"
    shapes = call_shapes(model, [n for n in names if n not in skipped], size)
    entries: dict[str, SeparableLayer] = {}
    pairs: dict[str, nn.Sequential] = {}
    for n in names:
        if n in skipped:
            continue
        if not shapes[n]:
            skipped[n] = "not called by the forward"
            continue
        conv = mods[n]
        with torch.no_grad():
            positions = sum(math.prod(conv(torch.zeros(s, dtype=conv.weight.dtype)).shape[2:]) for s in shapes[n])
        pb, pa, mb, ma = _costs(conv, positions)  # type: ignore[arg-type]
        if ma >= mb:
            skipped[n] = f"the pair costs {ma:,} ≥ {mb:,} MACs: saves nothing"
            continue
        pair, energy = separable_pair(conv)  # type: ignore[arg-type]
        before, after = layer_ms(conv, shapes[n], layer_latency), layer_ms(pair, shapes[n], layer_latency)
        if after >= before:
            skipped[n] = (f"the separable pair measures {after:.4f} ms ≥ the conv's {before:.4f} ms: "
                          "not faster on this device")  # fmt: skip
            continue
        entries[n] = SeparableLayer(n, tuple(conv.weight.shape), energy, pb, pa, mb, ma, before, after)
        pairs[n] = pair
    pick = {"latency": ("latency_ms_before", "latency_ms_after"), "macs": ("macs_before", "macs_after"),
            "params": ("params_before", "params_after")}[resource]  # fmt: skip
    steps = {n: front(float(getattr(e, pick[0])), [(float(getattr(e, pick[1])), e.energy)])[0]
             for n, e in entries.items()}  # fmt: skip
    for n in [n for n, s in steps.items() if len(s) == 1]:  # an energy-0 fit (a zero conv) offers no step
        skipped[n] = "the fitted pair keeps no energy of the conv (all-zero weight)"
        del steps[n]
    if start is None:
        start = model_latency(model) if resource == "latency" else exact_resource(model, size, resource)  # type: ignore[misc]
    inputs = _layer_inputs(model, list(steps), calibration) if calibration is not None else {}
    fitted: dict[str, float] = {}
    plans: dict[tuple, SeparablePlan] = {}  # by choice: the bisection builds several networks

    def build(choice: dict[str, int]) -> nn.Module:
        for n in choice:
            if n in inputs and n not in fitted:
                fitted[n] = fit_pointwise_(pairs[n], mods[n], inputs[n])  # type: ignore[arg-type]
        layers = [replace(entries[n], output_error=fitted.get(n)) for n, _ in model.named_modules() if n in choice]
        why = dict(skipped)
        why.update({n: NOT_CHOSEN for n in entries if n not in choice and n not in why})
        plans[tuple(sorted(choice.items()))] = SeparablePlan(
            tuple(layers), tuple(SeparableSkip(n, why[n]) for n in names if n in why))
        return _apply(model, {n: pairs[n] for n in choice})

    def value(m: nn.Module) -> float:
        return model_latency(m) if resource == "latency" else exact_resource(m, size, resource)  # type: ignore[misc]

    choice, result, v, evaluated, note = select_to_budget(steps, float(start), target, build=build, value=value,
                                            measured=resource == "latency")  # fmt: skip
    plan = plans[tuple(sorted(choice.items()))]
    plan = replace(plan, skipped=tuple(replace(k, reason=k.reason.replace(NOT_CHOSEN, note)) for k in plan.skipped))
    return MeasuredSeparable(result, resource, float(start), float(v), float(target), evaluated, plan=plan)


def _apply(model: nn.Module, pairs: dict[str, nn.Sequential]) -> nn.Module:
    """A copy of ``model`` with each named conv replaced by a copy of its pair (PlainNet for an EdgeNet)."""
    new = copy.deepcopy(model)
    if isinstance(new, EdgeNet) and pairs:
        new = plain(new, note=f"depthwise separable replacement of {len(pairs)} conv(s)")
    for name, pair in pairs.items():
        parent, _, attr = name.rpartition(".")
        setattr(new.get_submodule(parent), attr, copy.deepcopy(pair))
    return new


def _layer_inputs(model: nn.Module, names: list[str], batches: Iterable[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """The inputs each named module receives over ``batches`` (eval mode, no gradients)."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for n in names:
        def hook(_m: nn.Module, args: tuple, _n: str = n) -> None:
            got[_n].append(args[0].detach())

        handles.append(model.get_submodule(n).register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return got
