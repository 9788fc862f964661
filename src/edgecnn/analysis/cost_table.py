"""The result of an analysis: one :class:`LayerCost` per op, totals, queries and exports.

The JSON layout (``schema: "edgecnn.analysis/2"``) is documented field by
field in ``docs/analysis.md``; :meth:`Analysis.to_dict` is its single source.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write_text

SCHEMA = "edgecnn.analysis/2"

CONVENTIONS = (
    "MACs = multiply-accumulates of conv, transposed conv (per input pixel), linear and matmul, bias excluded; "
    "FLOPs = 2·MACs. Other ops counted apart, per output element: bias 1, batch norm 2, layer/group norm 5, "
    "activation 1, add/sub/mul/div 1, softmax 3, pool k·k, global/adaptive pool 1 per input element, "
    "interpolate 1 per tap (nearest 0, bilinear 4, bicubic 16), mean/sum 1 per input element, "
    "reshape/concat/pad/dropout 0. Params: each parameter once, by identity. Activation memory: "
    "output tensors, views excluded."
)
"""One paragraph that every exported analysis carries."""


@dataclass
class LayerCost:
    """The cost of one op (one fx node, or one leaf-module call in the hooks fallback)."""

    name: str  # unique row name: module path ("blocks.3.dw.conv", "#2" for a repeated call) or "<scope>.<node>"
    node: str  # fx node name (the key of receptive_fields); "" in the hooks fallback
    op: str  # module class ("Conv2d") or function / method name ("conv2d", "add", "matmul")
    kind: str  # cost category: conv, conv_transpose, linear, matmul, norm, act, pool, elementwise, ... (see handlers)
    target: str  # module path, or the function's qualified name ("torch.nn.functional.conv2d")
    module: str  # owning module path: the called module itself, or the module whose forward issued the function ("" = root)
    out_shape: tuple[int, ...] | None  # shape of the output tensor (the first one when several)
    params: int  # parameters first used by this op (shared ones are counted at their first use)
    macs: int  # multiply-accumulates of conv/linear/matmul, bias excluded (the headline)
    other_ops: int  # all other arithmetic, by the stated rules
    activation_elements: int  # elements of the output tensor(s)
    activation_bytes: int  # bytes of the output tensor(s); 0 for views (reshape, identity, dropout)
    rf_size: tuple[float, ...] | None = None  # receptive field R per spatial axis (input pixels)
    rf_jump: tuple[float, ...] | None = None  # effective stride J per spatial axis
    rf_start: tuple[float, ...] | None = None  # centre of the first output's field, input pixel coordinates
    rf_whole: bool | None = None  # the conv path sees the whole input (global pooling, flatten→linear)
    note: str = ""  # how it was counted when not by a rule ("run on meta", "second call", ...)
    rf_global: bool | None = None  # the output also depends on global context (SE gate, attention, pooling)

    @property
    def flops(self) -> int:
        """2·MACs."""
        return 2 * self.macs

    def rf_label(self) -> str:
        """``"11×11 J4"``, ``"51×51 J8 +global"`` (conv-path field, and global context reaches the output),
        ``"whole"`` or ``""`` without a receptive field."""
        if self.rf_whole:
            return "whole"
        if self.rf_size is None:
            return ""
        size = "×".join(f"{r:g}" for r in self.rf_size)
        jump = "×".join(f"{j:g}" for j in dict.fromkeys(self.rf_jump or ()))
        return f"{size} J{jump}" + (" +global" if self.rf_global else "")


@dataclass(frozen=True)
class Totals:
    """Sums over an analysis (or over a group of its rows)."""

    params: int  # parameters (each once)
    macs: int  # conv/linear/matmul multiply-accumulates, bias excluded
    other_ops: int  # the rest of the arithmetic
    activation_elements: int  # output elements of all non-view ops
    activation_bytes: int  # their bytes
    layers: int  # rows summed

    @property
    def flops(self) -> int:
        """2·MACs."""
        return 2 * self.macs


def _sum(rows: list[LayerCost]) -> Totals:
    return Totals(
        sum(r.params for r in rows),
        sum(r.macs for r in rows),
        sum(r.other_ops for r in rows),
        sum(r.activation_elements for r in rows if r.activation_bytes),
        sum(r.activation_bytes for r in rows),
        len(rows),
    )


@dataclass
class Analysis:
    """Per-layer costs of one network for one input shape."""

    model: str  # class name of the analysed module (and its arch string for an EdgeNet)
    input_shapes: list[tuple[int, ...]]  # shapes of the inputs it was analysed with (batch included)
    layers: list[LayerCost]  # one row per op, in execution order
    mode: str  # "fx" (one traced pass on meta tensors) or "hooks" (the fallback; see fallback_reason)
    unused_params: int = 0  # parameters of the model that no op used (dead modules); not in totals
    notes: list[str] = field(default_factory=list)  # what could not be counted exactly, and why
    conventions: str = CONVENTIONS  # the counting rules, for whoever reads the export
    fallback_reason: str = ""  # mode "hooks": why fx could not trace the model (one line); "" in mode "fx"
    unreached: list[str] = field(default_factory=list)  # mode "hooks": modules with parameters the run never
    # called (a branch not taken); their parameters are in unused_params, not in the totals

    def __iter__(self) -> Iterator[LayerCost]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def total(self) -> Totals:
        """Totals over all rows."""
        return _sum(self.layers)

    @property
    def macs(self) -> int:
        """Headline MACs."""
        return sum(r.macs for r in self.layers)

    @property
    def params(self) -> int:
        """Parameters used by the network (each once)."""
        return sum(r.params for r in self.layers)

    def by_layer(self) -> dict[str, LayerCost]:
        """Rows by name."""
        return {r.name: r for r in self.layers}

    def by_op(self) -> dict[str, Totals]:
        """Totals per op (``"Conv2d"``, ``"add"``, ...), most MACs first."""
        groups: dict[str, list[LayerCost]] = {}
        for r in self.layers:
            groups.setdefault(r.op, []).append(r)
        return dict(sorted(((k, _sum(v)) for k, v in groups.items()), key=lambda kv: (-kv[1].macs, kv[0])))

    def by_kind(self) -> dict[str, Totals]:
        """Totals per cost category (conv, linear, norm, act, ...)."""
        groups: dict[str, list[LayerCost]] = {}
        for r in self.layers:
            groups.setdefault(r.kind, []).append(r)
        return {k: _sum(v) for k, v in groups.items()}

    def by_module(self, depth: int = 2) -> dict[str, Totals]:
        """Totals per module path cut to ``depth`` components (``blocks.3`` at depth 2), in execution order."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        groups: dict[str, list[LayerCost]] = {}
        for r in self.layers:
            key = ".".join(r.module.split(".")[:depth]) or "(root)"
            groups.setdefault(key, []).append(r)
        return {k: _sum(v) for k, v in groups.items()}

    def last_by_module(self, depth: int = 2) -> dict[str, LayerCost]:
        """The last row of each module group of :meth:`by_module`: it carries the group's output shape and field."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        return {".".join(r.module.split(".")[:depth]) or "(root)": r for r in self.layers}

    def fallback_line(self) -> str:
        """One line stating the forward-hooks fallback and what it loses; ``""`` in mode fx."""
        if self.mode == "fx":
            return ""
        return (f"Forward-hooks fallback ({self.fallback_reason or 'fx failed'}): no receptive "
                "fields; functional ops' other ops and shapes not counted.")  # fmt: skip

    def output_rf(self) -> LayerCost | None:
        """The last row that carries a receptive field (the network's output field)."""
        return next((r for r in reversed(self.layers) if r.rf_size is not None or r.rf_whole), None)

    # ------------------------------------------------------------ exports

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (schema ``edgecnn.analysis/2``, see docs/analysis.md)."""
        t = self.total()
        layers = []
        for r in self.layers:
            d = asdict(r)
            d["out_shape"] = list(r.out_shape) if r.out_shape is not None else None
            rf = {k[3:]: d.pop(k) for k in ("rf_size", "rf_jump", "rf_start", "rf_whole", "rf_global")}
            d["rf"] = None if rf["size"] is None and not rf["whole"] else {k: (list(v) if isinstance(v, tuple) else v) for k, v in rf.items()}
            layers.append(d)
        return {
            "kind": "analyze",  # an edgecnn results document (edgecnn.run_document): `edgecnn report` draws it
            "schema": SCHEMA,
            "model": self.model,
            "mode": self.mode,
            "fallback_reason": self.fallback_reason,
            "unreached": list(self.unreached),
            "input_shapes": [list(s) for s in self.input_shapes],
            "conventions": self.conventions,
            "totals": {
                "params": t.params,
                "macs": t.macs,
                "flops": t.flops,
                "other_ops": t.other_ops,
                "activation_elements": t.activation_elements,
                "activation_bytes": t.activation_bytes,
                "unused_params": self.unused_params,
                "layers": t.layers,
            },
            "by_op": {k: {"count": v.layers, "params": v.params, "macs": v.macs, "other_ops": v.other_ops}
                      for k, v in self.by_op().items()},  # fmt: skip
            "layers": layers,
            "notes": list(self.notes),
        }

    def to_json(self, path: str | Path | None = None, *, indent: int = 1) -> str:
        """The analysis as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    def to_markdown(self, *, depth: int | None = None) -> str:
        """A Markdown report: conventions, totals, then one table row per op (or per module at ``depth``)."""
        t = self.total()
        shapes = ", ".join("×".join(map(str, s)) for s in self.input_shapes)
        lines = [
            f"# Analysis of {self.model}",
            "",
            f"Input {shapes}; mode `{self.mode}`." + (f" {self.fallback_line()}" if self.mode != "fx" else ""),
            "",
            f"> {self.conventions}",
            "",
            "| total | value |",
            "|---|---:|",
            f"| params | {t.params:,} |",
            f"| MACs | {t.macs:,} ({human(t.macs)}) |",
            f"| FLOPs (2·MACs) | {t.flops:,} |",
            f"| other ops | {t.other_ops:,} |",
            f"| activation memory | {human(t.activation_bytes, 'B')} |",
        ]
        out = self.output_rf()
        if out is not None:
            lines.append(f"| output receptive field | {out.rf_label()} |")
        lines.append("")
        if depth is None:
            lines += ["| layer | op | output | params | MACs | other ops | RF |", "|---|---|---|---:|---:|---:|---|"]
            for r in self.layers:
                shape = "×".join(map(str, r.out_shape)) if r.out_shape else ""
                lines.append(f"| {r.name} | {r.op} | {shape} | {r.params:,} | {r.macs:,} | {r.other_ops:,} | {r.rf_label()} |")
        else:
            lines += ["| module | ops | params | MACs | other ops |", "|---|---:|---:|---:|---:|"]
            for k, v in self.by_module(depth).items():
                lines.append(f"| {k} | {v.layers} | {v.params:,} | {v.macs:,} | {v.other_ops:,} |")
        if self.notes:
            lines += ["", "Notes:", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"


def model_label(model: object) -> str:
    """:attr:`Analysis.model` for ``model``: its class name, with the arch string of an EdgeNet."""
    arch = getattr(model, "arch", None)
    return f"{type(model).__name__}({arch!r})" if isinstance(arch, str) else type(model).__name__


def human(n: float, unit: str = "") -> str:
    """``568740352`` -> ``"568.74M"`` (decimal prefixes)."""
    if n == 0:
        return f"0{unit}"
    exp = min(int(math.log10(abs(n)) // 3), 4)
    return f"{n / 1000**exp:.2f}{' KMGT'[exp].strip()}{unit}" if exp > 0 else f"{n:g}{unit}"
