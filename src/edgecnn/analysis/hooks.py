"""The forward-hooks fallback of :func:`edgecnn.analysis.analyze` (``mode="hooks"``; docs/design.md §3).

Taken automatically when ``torch.fx`` cannot trace the module (e.g. Python
control flow on tensor values): one real forward pass on the given input
with forward hooks on the leaf modules, inside ``FlopCounterMode``. Each
leaf call is costed by its rule in :mod:`edgecnn.analysis.handlers` (by
``FlopCounterMode``'s per-module count when it has none). It loses, against
the fx pass of :mod:`edgecnn.analysis.trace`: receptive fields (no graph);
rows for functional ops — their MACs are still in the totals, as one
``"<module> (functional)"`` row per module that issued them (from
``FlopCounterMode``'s per-module counts), but their other ops (residual
adds, SE multiplies), shapes and activation memory are not counted; and it
runs real compute. Parameters no leaf module owns (bare ``nn.Parameter``s)
are added as one row. Leaf modules the run never called (the branch of an
``if`` not taken) are listed in ``Analysis.unreached``; their parameters go
to ``unused_params``, not into the totals (issue 13, point 7).

Because it runs real compute, :func:`check_fallback_memory` bounds it first:
a no-grad forward holds about one layer's input and output at a time, so its
peak is estimated as the inputs + the parameters + the batch × input area ×
(the widest layer's in + out channels) × the element size (layers are assumed
not to upsample past the input), and refused above ``EDGECNN_MAX_MEMORY_GB``
(:mod:`edgecnn.limits`) before anything is allocated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.analysis import handlers as H
from edgecnn.analysis.node_cost import activation, tensors
from edgecnn.analysis.cost_table import Analysis, LayerCost, model_label
from edgecnn.limits import MAX_MEMORY_GB
from edgecnn.ops import OPS, OpTable


def fallback_peak_bytes(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """Estimated peak memory of one no-grad forward of ``model`` on ``inputs`` (see the module docstring)."""
    widest = 0
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widest = max(widest, m.in_channels + m.out_channels)
        elif isinstance(m, nn.Linear):
            widest = max(widest, m.in_features + m.out_features)
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            widest = max(widest, 2 * m.num_features)
    peak = 0
    for x in inputs:
        per = x.element_size()
        area = x[0, 0].numel() if x.dim() >= 2 else 1  # spatial extent of one channel
        batch = x.shape[0] if x.dim() >= 1 else 1
        peak += x.numel() * per + batch * area * widest * per
    return peak + sum(p.numel() * p.element_size() for p in model.parameters())


def check_fallback_memory(model: nn.Module, inputs: Sequence[torch.Tensor], why: str) -> None:
    """``ValueError`` before the fallback runs when its estimated peak exceeds ``EDGECNN_MAX_MEMORY_GB``."""
    gb = fallback_peak_bytes(model, inputs) / 2**30
    shapes = ", ".join("×".join(map(str, x.shape)) for x in inputs)
    MAX_MEMORY_GB.check(round(gb, 1), f"the forward-hooks fallback ({why}) would run the model for real on "
                                      f"{shapes}: analyse a smaller input")  # fmt: skip


def analyze_hooks(
    model: nn.Module, inputs: Sequence[torch.Tensor], *, leaf_modules: Sequence[type[nn.Module]] = (),
    ops: OpTable = OPS,
) -> Analysis:
    """One real forward with hooks on leaf modules inside ``FlopCounterMode`` (see the module docstring);
    ``ops``: the op table (its custom module types are leaves too)."""
    leaf_types = (*leaf_modules, *ops.leaf_types)
    leaves: dict[nn.Module, str] = {}
    inside: tuple[str, ...] = ()  # paths of leaf-type modules: their submodules are not rows of their own
    for name, m in model.named_modules():
        if not name or name.startswith(inside):
            continue
        if leaf_types and isinstance(m, leaf_types):
            leaves[m], inside = name, (*inside, name + ".")
        elif not any(True for _ in m.children()):
            leaves.setdefault(m, name)  # a shared module: hooked once, under its first name
    rows: list[LayerCost] = []
    counted: set[int] = set()
    calls: dict[str, int] = {}

    def hook(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        name = leaves[m]
        handler = H.module_handler(m, ops)
        note = ""
        cost = H.Cost("other")
        if handler is not None:
            try:
                got = handler(H.Call(m, args, kwargs, None, out))
                cost = got if isinstance(got, H.Cost) else got[1]
            except NotImplementedError:
                handler = None
        if handler is None:
            note = "no rule: MACs from FlopCounterMode"
        params = 0
        for p in m.parameters():
            if id(p) not in counted:
                counted.add(id(p))
                params += p.numel()
        n = calls[name] = calls.get(name, 0) + 1
        outs = tensors(out)
        elements, nbytes = activation(outs, cost.kind)
        rows.append(LayerCost(name if n == 1 else f"{name}#{n}", "", type(m).__name__, cost.kind, name, name,
                              tuple(outs[0].shape) if outs else None, params, cost.macs, cost.other_ops,
                              elements, nbytes, note=note))  # fmt: skip

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in leaves]
    try:
        with torch.no_grad(), _attention_as_matmuls(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items() if k != "Global"}
    root = type(model).__name__
    paths = {k: k[len(root) + 1 :] if k != root else "" for k in flops}
    by_path = {paths[k]: v for k, v in flops.items()}
    for row in rows:  # leaves without a rule: their FlopCounterMode count, split over their calls
        if row.note.startswith("no rule"):
            row.macs = by_path.get(row.target, 0) // 2 // calls[row.target]
    leaf_paths = set(leaves.values())
    inside_leaf = tuple(p + "." for p in leaf_paths)
    # a module's own functional MACs = its count minus its nearest *recorded* descendants' (a ModuleList or
    # ModuleDict is never called, so FlopCounterMode has no entry for it: its items count for its parent)
    below: dict[str, int] = {}
    for p, v in by_path.items():
        parent = _recorded_parent(p, by_path)
        if parent is not None:
            below[parent] = below.get(parent, 0) + v
    for path, f in by_path.items():
        if path in leaf_paths or path.startswith(inside_leaf):
            continue  # counted by the leaf's own row
        rest = (f - below.get(path, 0)) // 2
        if rest > 0:
            rows.append(LayerCost(f"{path or '(root)'} (functional)", "", "functional", "other", path, path, None, 0,
                                  rest, 0, 0, 0, note="functional ops: MACs from FlopCounterMode"))  # fmt: skip
    # leaves the run never called (the branch not taken): their parameters are not the network's cost
    unreached = [name for m, name in leaves.items() if name not in calls and any(True for _ in m.parameters())]
    skipped = {id(p) for m, name in leaves.items() if name not in calls for p in m.parameters()} - counted
    bare = [p for p in model.parameters() if id(p) not in counted and id(p) not in skipped]
    if bare:
        rows.append(LayerCost("(parameters outside leaf modules)", "", "Parameter", "data", "", "", None,
                              sum(p.numel() for p in bare), 0, 0, 0, 0))  # fmt: skip
    unused = sum(p.numel() for p in model.parameters() if id(p) in skipped)
    analysis = Analysis(model_label(model), [tuple(t.shape) for t in inputs], rows, "hooks", unused)
    analysis.unreached = unreached
    if unreached:
        analysis.notes.append(f"not reached by the run, parameters left out of the totals ({unused:,}): "
                              + ", ".join(unreached))  # fmt: skip
    return analysis


def _recorded_parent(path: str, recorded: dict[str, int]) -> str | None:
    """The nearest ancestor of module ``path`` that ``FlopCounterMode`` recorded ("" = the root), or None."""
    while path:
        path = path.rpartition(".")[0]
        if path in recorded:
            return path
    return None


@contextlib.contextmanager
def _attention_as_matmuls() -> Iterator[None]:
    """Attention on paths FlopCounterMode counts: the math SDPA backend, no fused MultiheadAttention fast path.

    Under ``no_grad`` ``nn.MultiheadAttention`` runs ``aten._native_multi_head_attention`` and on CPU
    ``F.scaled_dot_product_attention`` runs ``aten._scaled_dot_product_flash_attention_for_cpu``;
    FlopCounterMode has no formula for either (torch 2.14), so their matmuls would go uncounted.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
