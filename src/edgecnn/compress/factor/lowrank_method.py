"""Low-rank factorisation to a budget, ranks chosen against measured latency (``edgecnn compress --method lowrank``).

The transforms (truncated SVD of one layer, plans, applying a plan) are in
:mod:`edgecnn.compress.factor.lowrank` and :mod:`edgecnn.compress.factor.lowrank_plan`;
this file chooses the ranks for a whole network and a budget.

1. **Candidates.** Every exact ``nn.Conv2d`` (groups 1) and ``nn.Linear``
   that :func:`~edgecnn.compress.factor.lowrank_plan.plan_lowrank` accepts, in the
   ``channel`` form (k×k conv with ``r`` filters → 1×1) and, for convs with
   a kernel larger than 1, the ``spatial`` form (k×1 → 1×k), at a grid of
   ranks (``fractions`` of the full rank, rounded to ``round_to``) that cost
   fewer weights and MACs than the layer.
2. **Measured on the device.** The layer and each candidate pair are timed
   alone at the input shape the layer sees in the network
   (:mod:`edgecnn.compress.factor.layer_timing`; the command's backend and threads). A
   candidate that is not faster than the layer is dropped and reported
   (:class:`SlowerFactorisation`, with both times); a layer none of whose
   candidates is faster is skipped with that reason in the plan.
3. **Rank selection** (Zhang et al. 2016, §3.5; :func:`edgecnn.compress.factor.layer_timing.select_to_budget`):
   maximise ``Π_l E_l(k_l)``, the product over layers of the kept energy
   ``Σ_{i≤k}σ_i² / Σσ_i²``, subject to the budget, greedily down each
   layer's non-dominated candidates. The resource per layer is its measured
   time (latency budgets) or its exact MACs / params (``macs``/``params``
   budgets; the latency check of step 2 still applies).
4. **Checked end to end.** For a latency budget the greedy's walk is cut
   where the whole factorised network, timed end to end (``model_latency``),
   first meets the target (bisection). MACs and params are exact.

The result is a :class:`~edgecnn.build.PlainNet` for an EdgeNet (no arch
token for a factorised layer), a copy for any other module; fine-tuning and
evaluation are the caller's (:func:`edgecnn.train.finetune`; the CLI does it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from edgecnn.compress.factor.lowrank import factorize_conv, factorize_linear, singular_values
from edgecnn.compress.factor.lowrank_plan import LowRankLayer, LowRankPlan, LowRankSkip, lowrank, plan_lowrank
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

__all__ = ["LayerCandidates", "MeasuredLowRank", "RankOption", "SlowerFactorisation", "lowrank_to_budget"]

FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)  # ranks tried, as shares of the full rank


@dataclass(frozen=True)
class RankOption:
    """One factorisation of one layer that measured faster than the layer."""

    form: str  # "linear", "channel" or "spatial"
    rank: int
    energy: float  # kept Σ_{i≤k}σ_i² / Σσ_i²
    params: int  # weights + bias of the two factors
    macs: int  # per image, all calls
    latency_ms: float  # measured, summed over the layer's calls


@dataclass(frozen=True)
class SlowerFactorisation:
    """A factorisation that is not faster than the layer it would replace, on this device: skipped."""

    name: str
    form: str
    rank: int
    latency_ms: float  # the two factors, measured
    original_ms: float  # the layer, measured

    @property
    def reason(self) -> str:
        return (f"{self.form} rank {self.rank} measures {self.latency_ms:.4f} ms ≥ the layer's "
                f"{self.original_ms:.4f} ms: not faster on this device")  # fmt: skip


@dataclass(frozen=True)
class LayerCandidates:
    """A layer with its measured time and the factorisations that beat it (cheapest last)."""

    name: str
    params: int  # weights + bias of the layer
    macs: int
    latency_ms: float  # the layer alone, measured
    options: tuple[RankOption, ...]


@dataclass(frozen=True)
class MeasuredLowRank(MeasuredResult):
    """What :func:`lowrank_to_budget` did: the network, its plan, the measured candidates and what was skipped."""

    plan: LowRankPlan  # the applied ranks; plan.skipped holds a reason for every other candidate layer
    candidates: tuple[LayerCandidates, ...]
    slower: tuple[SlowerFactorisation, ...]  # every candidate dropped for being slower on the device

    def summary(self) -> str:
        """The plan's lines, then one per factorisation skipped for being slower."""
        lines = [self.plan.summary()]
        lines += [f"  skipped {s.name}: {s.reason}" for s in self.slower]
        return "\n".join(lines)


def _ranks(full: int, fractions: Sequence[float], round_to: int) -> list[int]:
    out = set()
    for f in fractions:
        k = round(f * full / round_to) * round_to
        if 1 <= k < full:
            out.add(k)
    return sorted(out)


def lowrank_to_budget(
    model: nn.Module,
    resource: str,
    target: float,
    input_size: Sequence[int],
    *,
    layer_latency: LayerLatency,
    model_latency: Callable[[nn.Module], float] | None = None,
    forms: Sequence[str] = ("channel", "spatial"),
    fractions: Sequence[float] = FRACTIONS,
    round_to: int = 8,
    min_size: int = 1024,
    start: float | None = None,
) -> MeasuredLowRank:
    """Factorise ``model`` (not changed) so that its ``resource`` is at most ``target``; see the module docstring.

    ``input_size`` is (C, H, W). ``layer_latency`` times one module on one
    input shape (:func:`edgecnn.compress.factor.layer_timing.measured_layer_latency`, or a
    fake in tests); ``model_latency`` times the whole network (needed for a
    latency budget). ``start``: the resource of ``model`` if already known
    (latency measured by the caller). Whether the target was reached is
    ``result.met``; nothing is raised for a budget out of reach.
    """
    if resource not in ("latency", "macs", "params"):
        raise ValueError(f"resource must be 'latency', 'macs' or 'params', got {resource!r}")
    if resource == "latency" and model_latency is None:
        raise ValueError("a latency budget needs model_latency (the whole network timed on the device)")
    if round_to < 1 or not fractions or not all(0 < f < 1 for f in fractions):
        raise ValueError("round_to must be >= 1 and fractions in (0, 1)")
    bad = [f for f in forms if f not in ("channel", "spatial")]
    if bad or not forms:
        raise ValueError(f"forms must be a non-empty subset of ('channel', 'spatial'), got {tuple(forms)}")
    size = tuple(int(v) for v in input_size)
    # rank 1 of each form: which layers can be factorised (else why not), and their costs per unit of rank
    per_form = {f: plan_lowrank(model, rank=1, form=f, input_size=size, min_size=min_size) for f in forms}  # type: ignore[arg-type]
    unit: dict[tuple[str, str], LowRankLayer] = {(f, e.name): e for f, p in per_form.items() for e in p.layers}
    names = list(dict.fromkeys(name for _, name in unit))
    skipped = {s.name: s.reason for p in reversed(list(per_form.values())) for s in p.skipped}
    for n in names:
        skipped.pop(n, None)
    shapes = call_shapes(model, names, size)
    candidates, slower = [], []
    for name in names:
        m = model.get_submodule(name)
        c = _measure_layer(name, m, unit, forms, shapes[name], layer_latency, fractions, round_to)
        slower += c[1]
        if c[0].options:
            candidates.append(c[0])
        elif c[1]:
            best = min(c[1], key=lambda s: s.latency_ms)
            skipped[name] = (f"no factorisation is faster on this device: the fastest, {best.form} rank {best.rank}, "
                             f"measures {best.latency_ms:.4f} ms ≥ the layer's {best.original_ms:.4f} ms")  # fmt: skip
        else:
            skipped[name] = f"no rank on the grid (round_to={round_to}) is below the full rank and saves cost"
    pick = {"latency": lambda x: x.latency_ms, "macs": lambda x: float(x.macs), "params": lambda x: float(x.params)}
    cost = pick[resource]
    steps, index = {}, {}
    for c in candidates:
        steps[c.name], index[c.name] = front(cost(c), [(cost(o), o.energy) for o in c.options])
    if start is None:
        start = model_latency(model) if resource == "latency" else exact_resource(model, size, resource)  # type: ignore[misc]
    by_name = {c.name: c for c in candidates}
    plans: dict[tuple, LowRankPlan] = {}  # by choice: the bisection builds several networks

    def build(choice: dict[str, int]) -> nn.Module:
        chosen = {n: by_name[n].options[index[n][i - 1]] for n, i in choice.items()}
        plan = plans[tuple(sorted(choice.items()))] = _plan(model, chosen, size, min_size, skipped, by_name, resource)
        return lowrank(model, plan)

    def value(m: nn.Module) -> float:
        return model_latency(m) if resource == "latency" else exact_resource(m, size, resource)  # type: ignore[misc]

    choice, result, v, evaluated, note = select_to_budget(steps, float(start), target, build=build, value=value,
                                            measured=resource == "latency")  # fmt: skip
    plan = plans[tuple(sorted(choice.items()))]
    plan = dataclasses.replace(plan, skipped=tuple(dataclasses.replace(k, reason=k.reason.replace(NOT_CHOSEN, note))
                                                   for k in plan.skipped))  # fmt: skip
    return MeasuredLowRank(result, resource, float(start), float(v), float(target), evaluated, plan=plan,
                           candidates=tuple(candidates), slower=tuple(slower))  # fmt: skip


def _measure_layer(name: str, m: nn.Module, unit: dict[tuple[str, str], LowRankLayer], forms: Sequence[str],
                   shapes: list[tuple[int, ...]], latency: LayerLatency, fractions: Sequence[float],
                   round_to: int) -> tuple[LayerCandidates, list[SlowerFactorisation]]:  # fmt: skip
    """Time the layer and each candidate factorisation at its input shapes; split faster from not."""
    base = next(unit[(f, name)] for f in forms if (f, name) in unit)
    original = layer_ms(m, shapes, latency)
    options, slower = [], []
    is_linear = isinstance(m, nn.Linear)
    for f in (("linear",) if is_linear else forms):
        e = unit.get((forms[0] if is_linear else f, name))
        if e is None or (f == "spatial" and tuple(m.weight.shape[2:]) == (1, 1)):
            continue  # the spatial form of a 1×1 conv is the channel form again
        bias = e.params_before - math.prod(e.weight_shape)
        per_rank_w, per_rank_macs = e.params_after - bias, e.macs_after or 0
        s2 = singular_values(m, form="channel" if is_linear else f) ** 2  # type: ignore[arg-type]
        cum, total = s2.cumsum(0), float(s2.sum())
        for k in _ranks(e.full_rank, fractions, round_to):
            w, macs = k * per_rank_w, k * per_rank_macs
            if w >= e.params_before - bias or macs >= (e.macs_before or 0):
                continue
            pair = factorize_linear(m, k) if is_linear else factorize_conv(m, k, form=f)  # type: ignore[arg-type]
            ms = layer_ms(pair, shapes, latency)
            if ms >= original:
                slower.append(SlowerFactorisation(name, f, k, ms, original))
                continue
            energy = float(cum[k - 1]) / total if total > 0 else 1.0
            options.append(RankOption(f, k, energy, w + bias, macs, ms))
    return LayerCandidates(name, base.params_before, base.macs_before or 0, original, tuple(options)), slower


def _plan(model: nn.Module, chosen: dict[str, RankOption], size: tuple[int, ...], min_size: int,
          skipped: dict[str, str], cands: dict[str, LayerCandidates], resource: str) -> LowRankPlan:  # fmt: skip
    """The :class:`LowRankPlan` of the chosen (form, rank) per layer, planned by ``plan_lowrank`` itself."""
    groups: dict[tuple[str, int], list[str]] = {}
    for name, o in chosen.items():
        groups.setdefault(("channel" if o.form == "linear" else o.form, o.rank), []).append(name)
    layers: dict[str, LowRankLayer] = {}
    for (form, rank), names in groups.items():
        p = plan_lowrank(model, rank=rank, form=form, input_size=size, min_size=min_size, layers=names)  # type: ignore[arg-type]
        layers.update({e.name: e for e in p.layers})
    order = [n for n, _ in model.named_modules()]
    why = dict(skipped)
    why.update({n: f"{NOT_CHOSEN} ({len(c.options)} faster factorisation(s) measured)"
                for n, c in cands.items() if n not in chosen})  # fmt: skip
    rule = f"measured {resource}, greedy Π energy (Zhang et al. 2016)"
    return LowRankPlan(tuple(layers[n] for n in order if n in layers),
                       tuple(LowRankSkip(n, why[n]) for n in order if n in why), rule, size)  # fmt: skip
