"""One-shot structured pruning to a budget: one plan for the whole network, then BN recalibration and fine-tuning.

The baseline NetAdapt is measured against (Li et al. 2017 with a global or
uniform allocation; Torch-Pruning's default flow): every coupled group is cut
at once by a chosen criterion (:mod:`edgecnn.compress.channels.importance`). A MACs or
params budget goes straight to :func:`~edgecnn.compress.channels.prune.plan_prune`
(``macs=`` / ``params=``, global ranking by default); a latency budget has no
closed form, so the kept fraction of a uniform plan is bisected until the
:class:`~edgecnn.compress.resource_meter.ResourceMeter` says the network fits (by
arch for an EdgeNet; any other module is pruned in module space, its latency
measured end to end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from edgecnn.compress.channels.importance import check_criterion
from edgecnn.compress.channels.groups import channel_groups
from edgecnn.compress.resource_meter import ResourceMeter
from edgecnn.compress.channels.prune import PrunePlan, plan_prune, prune
from edgecnn.ops import CustomOp


@dataclass(frozen=True)
class OneShot:
    """The pruned network and its plan."""

    model: nn.Module  # an EdgeNet when the input was one
    plan: PrunePlan
    resource: float  # the meter's value of the result


def prune_to_budget(model: nn.Module, target: float, meter: ResourceMeter, *, criterion: str = "l1",
                    allocation: str = "global", round_to: int = 8, bisections: int = 16,
                    custom_ops: Sequence[CustomOp] | None = None) -> OneShot:  # fmt: skip
    """Prune ``model`` once so that its resource is ``<= target``; ``ValueError`` if even the narrowest plan is over.
    ``custom_ops``: how modules of your own relate their channels (:class:`edgecnn.ops.CustomOp`)."""
    check_criterion(criterion, has_data=False, where="one-shot pruning to a budget")
    graph = channel_groups(model, meter.input_shape, round_to=round_to, custom_ops=custom_ops)
    if meter.resource in ("macs", "params"):
        try:
            plan = plan_prune(model, graph=graph, criterion=criterion, allocation=allocation, round_to=round_to,
                              **{meter.resource: max(1, int(target))})  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"one-shot pruning cannot reach {meter.resource} <= {target:.4g}: {exc}") from None
        if (narrowest := meter.of_plan(model, plan)) > target:
            raise ValueError(f"one-shot pruning reaches {meter.resource} {narrowest:.4g} at the narrowest, over the "
                             f"budget {target:.4g}: relax the budget or lower --round-to")  # fmt: skip
    else:
        def at(f: float) -> PrunePlan:
            return plan_prune(model, graph=graph, keep=f, criterion=criterion, allocation="uniform", round_to=round_to)

        lo_plan = at(1e-3)
        if (narrowest := meter.of_plan(model, lo_plan)) > target:
            raise ValueError(f"one-shot pruning reaches {narrowest:.4g} ms at the narrowest, over the budget "
                             f"{target:.4g} ms: relax the budget or lower --round-to")  # fmt: skip
        lo, hi, plan = 1e-3, 1.0, lo_plan
        for _ in range(bisections):  # invariant: keep=lo meets the budget
            mid = (lo + hi) / 2
            p = at(mid)
            if meter.of_plan(model, p) <= target:
                lo, plan = mid, p
            else:
                hi = mid
    result = prune(model, plan).model
    return OneShot(result, plan, meter.of_model(result))
