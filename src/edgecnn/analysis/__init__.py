"""Per-layer analysis of any network: costs, receptive fields, gradient flow (docs/design.md §3).

* :func:`analyze` — one traced pass (the graph of :mod:`edgecnn.graph`): per-op
  shapes, params, MACs, other ops, activation memory and receptive fields
  (:mod:`.trace`, with :func:`shape_graph` for shapes without costs; one node's cost in
  :mod:`.node_cost`, the forward-hooks fallback in :mod:`.hooks`, cost rules
  in :mod:`.handlers` on the pure formulas of :mod:`.shapes`, result objects
  in :mod:`.result`);
* :func:`cost_from_spec` — params and MACs of an arch string in closed form,
  without building the model (:mod:`.spec_cost`);
* :func:`receptive_fields` and friends (:mod:`.receptive`; per-op rules in
  :mod:`.rf_rules`, the algebra in :mod:`.rf_math`), the effective
  receptive field (:mod:`.erf`), gradient flow (:mod:`.gradflow`), conv
  arithmetic (:mod:`.convmath`) and the receptive-field planner
  (:mod:`.rfplan`), imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgecnn.analysis.handlers import Cost
from edgecnn.analysis.cost_table import CONVENTIONS, Analysis, LayerCost, Totals
from edgecnn.analysis.spec_cost import LayerSpecCost, SpecCost, cost_from_spec
from edgecnn.analysis.trace import analyze, shape_graph

__all__ = ["CONVENTIONS", "Analysis", "Cost", "LayerCost", "LayerSpecCost", "SpecCost", "Totals", "analyze",
           "cost_from_spec", "shape_graph"]  # fmt: skip

# name -> module of the sibling analyses, loaded lazily (they pull in more of torch, or are optional)
_LAZY = {
    "RF": "receptive",
    "receptive_fields": "receptive",
    "receptive_field": "receptive",
    "layer_receptive_fields": "receptive",
    "ERF": "erf",
    "effective_receptive_field": "erf",
    "GradFlow": "gradflow",
    "gradient_flow": "gradflow",
    "skip_gradient": "gradflow",
    "conv_output_size": "convmath",
    "conv_transpose_output_size": "convmath",
    "pool_output_size": "convmath",
    "conv_matrix": "convmath",
    "RFPlan": "rfplan",
    "plan_receptive_field": "rfplan",
}


def __dir__() -> list[str]:
    return sorted([*__all__, *_LAZY])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecnn.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgecnn.analysis.{module}"), name)
