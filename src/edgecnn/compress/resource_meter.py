"""The resource a compression budget is on — latency, MACs or params — of an EdgeNet, a plan, or any module.

NetAdapt (:mod:`edgecnn.compress.netadapt.loop`) and one-shot pruning
(:mod:`edgecnn.compress.netadapt.oneshot`) ask one question many times: what does this
network, or this pruning plan of it, cost? :class:`ResourceMeter` answers it

* for an :class:`~edgecnn.build.EdgeNet` (or a plan of one) by its arch
  string: MACs and params in closed form (:mod:`edgecnn.analysis.spec_cost`),
  latency from the device's :class:`~edgecnn.latency.model.LatencyModel`
  (table entry, else interpolated across widths, else measured);
* for any other module by what it is: MACs and params exactly — a plan's
  ``macs_after`` / ``params_after``, which equal :func:`~edgecnn.analysis.analyze`
  of the pruned network — and latency **measured** end to end, the way the
  NetAdapt paper's empirical measurements do (Yang et al. 2018, §3.2), with the
  latency model's backend, threads, timing and statistic, inside its exclusive
  lane. A foreign network has no arch string for the table to look up, so
  every distinct shape is timed once and remembered by :func:`network_key`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from torch import nn

from edgecnn.analysis import analyze
from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.build import EdgeNet
from edgecnn.compress.channels.prune import PrunePlan, prune
from edgecnn.latency.measure import measure
from edgecnn.latency.model import LatencyModel

RESOURCES: tuple[str, ...] = ("latency", "macs", "params")


def network_key(model: nn.Module) -> str:
    """An EdgeNet's arch string; for any other module its class and a digest of every parameter and buffer shape.

    Two modules with the same key have the same structure as far as pruning can
    change it (channel counts), so they cost the same.
    """
    if isinstance(model, EdgeNet):
        return model.arch
    shapes = ";".join(f"{k}{tuple(v.shape)}" for k, v in model.state_dict().items())
    return f"{type(model).__name__}#{hashlib.sha1(shapes.encode()).hexdigest()[:12]}"


class ResourceMeter:
    """The resource of a network at one input size: ``latency`` (ms), ``macs`` or ``params`` (see the module doc).

    ``meter(arch)`` costs an arch string; :meth:`of_model` any module;
    :meth:`of_plan` the network a pruning plan would make. ``module_latency``
    replaces the end-to-end measurement of non-EdgeNet modules (a synthetic
    device in tests, a remote device in practice).
    """

    def __init__(self, resource: str, *, input_size: int, num_classes: int, in_chans: int,
                 latency: LatencyModel | None = None,
                 module_latency: Callable[[nn.Module], float] | None = None) -> None:  # fmt: skip
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}; valid: {', '.join(RESOURCES)}")
        if resource == "latency" and latency is None and module_latency is None:
            raise ValueError("a latency budget needs a latency model (LatencyModel over a table of this device)")
        self.resource, self.latency, self.module_latency = resource, latency, module_latency
        self.input_size, self.num_classes, self.in_chans = input_size, num_classes, in_chans
        self._cache: dict[str, float] = {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.input_size, self.input_size)

    def __call__(self, arch: str) -> float:
        """The resource of an EdgeNet arch string."""
        if arch not in self._cache:
            if self.resource == "latency":
                if self.latency is None:
                    raise ValueError("this meter times modules only (module_latency); an arch needs a LatencyModel")
                p = self.latency.predict(arch, input_size=self.input_size, num_classes=self.num_classes,
                                         in_chans=self.in_chans)  # fmt: skip
                self._cache[arch] = float(p.total_ms)
            else:
                c = cost_from_spec(arch, self.input_size, self.num_classes, self.in_chans)
                self._cache[arch] = float(c.macs if self.resource == "macs" else c.params)
        return self._cache[arch]

    def of_model(self, model: nn.Module) -> float:
        """The resource of any module: by arch for an EdgeNet, else exact counts or an end-to-end measurement."""
        if isinstance(model, EdgeNet):
            return self(model.arch)
        key = network_key(model)
        if key not in self._cache:
            if self.resource == "latency":
                self._cache[key] = self._measured(model)
            else:
                c = analyze(model, self.input_shape, receptive_fields=False)
                self._cache[key] = float(c.macs if self.resource == "macs" else c.params)
        return self._cache[key]

    def of_plan(self, model: nn.Module, plan: PrunePlan) -> float:
        """The resource of ``prune(model, plan).model``, without pruning when the plan says it (arch, counts)."""
        if plan.arch is not None:
            return self(plan.arch)
        if self.resource == "macs":
            return float(plan.macs_after)
        if self.resource == "params":
            return float(plan.params_after)
        return self.of_model(prune(model, plan).model)

    def _measured(self, model: nn.Module) -> float:
        if self.module_latency is not None:
            return float(self.module_latency(model))
        lat = self.latency
        assert lat is not None
        t = lat.table
        was_training = model.training
        with lat.lane():
            m = measure(model.eval(), (1, *self.input_shape), backend=t.backend, threads=t.fingerprint.threads,
                        device=t.fingerprint.device, config=t.config, reference=t.drift())  # fmt: skip
        model.train(was_training)
        return float(m.stats.min_ms if lat.stat == "min" else m.stats.median_ms)
