"""One-shot structured pruning to a budget: one plan for the whole network, then BN recalibration and fine-tuning.

The baseline NetAdapt is measured against (Li et al. 2017 with a global or
uniform allocation; Torch-Pruning's default flow): every coupled group is cut
at once by a chosen criterion (:mod:`edgecnn.compress.importance`). A MACs or
params budget goes straight to :func:`~edgecnn.compress.prune.plan_prune`
(``macs=`` / ``params=``, global ranking by default); a latency budget has no
closed form, so the kept fraction of a uniform plan is bisected until the
:class:`~edgecnn.compress.netadapt.ResourceMeter` says the arch fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecnn.build import EdgeNet
from edgecnn.compress.groups import channel_groups
from edgecnn.compress.netadapt import ResourceMeter
from edgecnn.compress.prune import PrunePlan, plan_prune, prune


@dataclass(frozen=True)
class OneShot:
    """The pruned network and its plan."""

    model: EdgeNet
    plan: PrunePlan
    resource: float  # the meter's value of the result


def prune_to_budget(model: EdgeNet, target: float, meter: ResourceMeter, *, criterion: str = "l1",
                    allocation: str = "global", round_to: int = 8, bisections: int = 16) -> OneShot:  # fmt: skip
    """Prune ``model`` once so that ``meter(arch) <= target``; ``ValueError`` if even the narrowest plan is over."""
    if not isinstance(model, EdgeNet):
        raise ValueError("one-shot pruning to a budget works in arch space: give an EdgeNet")
    graph = channel_groups(model, (model.in_chans, meter.input_size, meter.input_size), round_to=round_to)
    if meter.resource in ("macs", "params"):
        try:
            plan = plan_prune(model, graph=graph, criterion=criterion, allocation=allocation, round_to=round_to,
                              **{meter.resource: max(1, int(target))})  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"one-shot pruning cannot reach {meter.resource} <= {target:.4g}: {exc}") from None
        if meter(plan.arch) > target:
            raise ValueError(f"one-shot pruning reaches {meter.resource} {meter(plan.arch):.4g} at the narrowest, "
                             f"over the budget {target:.4g}: relax the budget or lower --round-to")  # fmt: skip
    else:
        def at(f: float) -> PrunePlan:
            return plan_prune(model, graph=graph, keep=f, criterion=criterion, allocation="uniform", round_to=round_to)

        lo_plan = at(1e-3)
        if meter(lo_plan.arch) > target:
            raise ValueError(f"one-shot pruning reaches {meter(lo_plan.arch):.4g} ms at the narrowest, over the budget "
                             f"{target:.4g} ms: relax the budget or lower --round-to")  # fmt: skip
        lo, hi, plan = 1e-3, 1.0, lo_plan
        for _ in range(bisections):  # invariant: keep=lo meets the budget
            mid = (lo + hi) / 2
            p = at(mid)
            if meter(p.arch) <= target:
                lo, plan = mid, p
            else:
                hi = mid
    result = prune(model, plan).model
    assert isinstance(result, EdgeNet)
    return OneShot(result, plan, meter(result.arch))
