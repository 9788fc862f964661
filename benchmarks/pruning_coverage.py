"""Structured-pruning coverage: edgecnn.compress.channels.prune against Torch-Pruning 1.6.1 on the same models.

For each model, both tools prune 50% of the channels of every group they
find (uniform, ``round_to=8``, L1 importance, the classifier's outputs
fixed) and the row records, per tool:

* ``ok`` — the pruned model runs forward at the model's input and gives the
  output shape of the original;
* ``kept`` — conv / linear output channels kept, as a fraction of the
  original's (lower = more of the network was reached);
* ``exact`` — with the removed channels' producing parameters zeroed in the
  original (filters and biases that write them, BN γ and β), its output
  equals the pruned model's: max abs diff < 1e-5 · max(1, max |output|)
  (the rule is explained in ``tests/test_compress_prune.py``). The bound is
  relative once outputs exceed 1 because float32 rounding is: torchvision's
  inception_v3 with random weights and random BN statistics has outputs of
  ~2·10¹² (its activations grow ~10× per Inception block), where the two
  forwards — same arithmetic, in another order and on fewer channels —
  differ by ~10⁶, a relative 6·10⁻⁷ (an absolute 1e-5 failed both tools
  there). Torch-Pruning's removed indices are read
  from its groups (``dep.handler`` = ``prune_out_channels``), mapped back to
  the original indices as groups are applied;
* ``plan_s`` / ``plan_cpu_s`` — wall-clock / process CPU seconds (medians of
  ``--repeats`` runs, the two tools interleaved; CPU time is the measure that
  holds on a shared, loaded machine) to build the groups and choose the channels (ours:
  :func:`channel_groups` + :func:`plan_prune`; Torch-Pruning: ``MetaPruner``
  construction, which builds its ``DependencyGraph``, + scoring its groups),
  and ``apply_s`` for applying.

Hand-written nets are folded (``fold_bn``) first; zoo EdgeNets keep their
BNs (ours prunes them in arch space). Every model has random weights and
random BN statistics.

Usage::

    PYTHONPATH=src python benchmarks/pruning_coverage.py [--out benchmarks/results/pruning_coverage.json]
        [--models module:function]   # extra rows: function() -> [(name, model, input), ...]
        [--only-extra]

``compare(cases)`` is the importable entry point: a list of
``(name, model, example input)`` gives the rows (the torchvision / timm rows
are added this way from a separate benchmark venv). Timings are wall-clock
on whatever machine runs it, one torch thread; the output records the load
average at the start.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from edgecnn import zoo  # noqa: E402
from edgecnn.atomic import atomic_write_text  # noqa: E402
from edgecnn.compress import channel_groups, fold_bn, plan_prune, prune, zero_pruned_  # noqa: E402

Case = tuple[str, nn.Module, torch.Tensor]
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(m.num_features, generator=g))
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def default_cases() -> list[Case]:
    """The zoo (CIFAR variants at 32², ImageNet ones at 64²) and the hand-written nets at 32²."""
    from handwritten_nets import NETS

    cases: list[Case] = []
    for name, cls in NETS.items():
        torch.manual_seed(0)
        cases.append((name, fold_bn(_randomize(cls())), torch.randn(2, 3, 32, 32)))
    for name in zoo.names():
        torch.manual_seed(0)
        s = 32 if name.endswith("_cifar") else 64
        cases.append((name, _randomize(zoo.create(name)), torch.randn(2, 3, s, s)))
    return cases


def _channels(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += m.out_features
        elif isinstance(m, _LAYERS):
            total += m.out_channels
    return total


def _classifier(model: nn.Module) -> nn.Module | None:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def _result(model: nn.Module, pruned: nn.Module, reference: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        y0 = model(x)
        y = pruned(x)
        ref = reference(x)
    ok = tuple(y.shape) == tuple(y0.shape)
    diff = float((y - ref).abs().max()) if ok else float("inf")
    scale = max(1.0, float(ref.abs().max())) if ok else 1.0  # float32 rounding grows with the output's size
    return {"ok": ok, "kept": round(_channels(pruned) / _channels(model), 4), "exact": ok and diff < 1e-5 * scale,
            "max_abs_diff": diff, "output_max_abs": scale}  # fmt: skip


def run_ours(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    cg = channel_groups(model, inputs=x)
    plan = plan_prune(model, keep=0.5, graph=cg)
    t1, c1 = time.perf_counter(), time.process_time()
    result = prune(model, plan)
    t2 = time.perf_counter()
    row = _result(model, result.model, zero_pruned_(copy.deepcopy(model), plan), x)
    return {**row, "groups": len(plan.free), "plan_s": round(t1 - t0, 4), "plan_cpu_s": round(c1 - c0, 4),
            "apply_s": round(t2 - t1, 3)}  # fmt: skip


def _zero_tp(reference: nn.Module, removed: dict[str, set[int]]) -> nn.Module:
    with torch.no_grad():
        for name, idx in removed.items():
            m = reference.get_submodule(name)
            index = torch.tensor(sorted(idx), dtype=torch.long)
            dim = 1 if isinstance(m, nn.ConvTranspose2d) else 0
            for p in (getattr(m, "weight", None), getattr(m, "bias", None)):
                if p is not None:
                    p.index_fill_(dim if p is m.weight else 0, index, 0.0)
    return reference


def run_torch_pruning(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    import torch_pruning as tp

    work = copy.deepcopy(model)
    names = {m: n for n, m in work.named_modules()}
    classifier = _classifier(work)
    t0, c0 = time.perf_counter(), time.process_time()
    pruner = tp.pruner.MetaPruner(work, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                                  ignored_layers=[classifier] if classifier is not None else [], round_to=8)  # fmt: skip
    groups = list(pruner.step(interactive=True))  # scores and picks the channels of every group
    t1, c1 = time.perf_counter(), time.process_time()
    original: dict[str, list[int]] = {}  # module -> original index of each current output channel
    removed: dict[str, set[int]] = {}
    for group in groups:
        hit: dict[str, set[int]] = {}
        for dep, idxs in group:
            if getattr(dep.handler, "__name__", "") != "prune_out_channels":
                continue
            name = names.get(dep.target.module)
            if name is None or not hasattr(dep.target.module, "weight"):
                continue
            current = original.setdefault(name, list(range(_out(dep.target.module))))
            hit.setdefault(name, set()).update(int(i) for i in idxs)
            removed.setdefault(name, set()).update(current[int(i)] for i in idxs)
        group.prune()
        for name, idx in hit.items():
            original[name] = [o for j, o in enumerate(original[name]) if j not in idx]
    t2 = time.perf_counter()
    row = _result(model, work, _zero_tp(copy.deepcopy(model), removed), x)
    return {**row, "groups": len(groups), "plan_s": round(t1 - t0, 4), "plan_cpu_s": round(c1 - c0, 4),
            "apply_s": round(t2 - t1, 3)}  # fmt: skip


def _out(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.num_features
    if isinstance(m, _LAYERS):
        return m.out_channels
    w = getattr(m, "weight", None)
    return int(w.shape[0]) if w is not None else 0


def _safe(fn: Any, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    try:
        return fn(model, x)
    except Exception as e:  # a tool failing on a model is a result, not a crash
        return {"ok": False, "exact": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}


def compare(cases: Sequence[Case], *, torch_pruning: bool = True, repeats: int = 5) -> list[dict[str, Any]]:
    """One row per ``(name, model, input)``: ours and Torch-Pruning's results (see the module docstring); the
    times are medians of ``repeats`` runs, the two tools interleaved."""
    from handwritten_nets import ConcatNet, ResidualNet

    for net in (ResidualNet, ConcatNet):  # first calls import and compile (a first torch.cat: seconds); not timed
        warm = (net().eval(), torch.randn(2, 3, 32, 32))
        run_ours(*warm)
        if torch_pruning:
            run_torch_pruning(*warm)
    rows = []
    for name, model, x in cases:
        tools = {"ours": run_ours, **({"torch_pruning": run_torch_pruning} if torch_pruning else {})}
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
        for _ in range(repeats):  # interleaved, so both tools see the same machine load
            for tool, fn in tools.items():
                runs[tool].append(_safe(fn, model, x))
        row: dict[str, Any] = {"model": name}
        for tool, got in runs.items():
            row[tool] = {**got[0], **{k: round(statistics.median(r[k] for r in got), 4) for k in ("plan_s", "plan_cpu_s")
                                      if all(k in r for r in got)}}  # fmt: skip
        rows.append(row)
        o, t = row["ours"], row.get("torch_pruning", {})
        print(f"{name:26s} ours ok={o.get('ok')} exact={o.get('exact')} kept={o.get('kept')} "
              f"plan={o.get('plan_s')}s | TP ok={t.get('ok')} exact={t.get('exact')} kept={t.get('kept')} "
              f"plan={t.get('plan_s')}s {o.get('error', '')} {t.get('error', '')}", flush=True)  # fmt: skip
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"models": len(rows)}
    for tool in ("ours", "torch_pruning"):
        got = [r[tool] for r in rows if tool in r]
        out[tool] = {
            "forward_ok": sum(bool(r.get("ok")) for r in got),
            "exact": sum(bool(r.get("exact")) for r in got),
            "plan_s_total": round(sum(r.get("plan_s", 0.0) for r in got), 3),
            "plan_cpu_s_total": round(sum(r.get("plan_cpu_s", 0.0) for r in got), 3),
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pruning_coverage.json"))
    ap.add_argument("--models", action="append", default=[], help="module:function returning [(name, model, input)]")
    ap.add_argument("--only-extra", action="store_true", help="skip the zoo and hand-written nets")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per tool and model (medians are kept)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cases = [] if args.only_extra else default_cases()
    for spec in args.models:
        mod, _, fn = spec.partition(":")
        cases += list(getattr(importlib.import_module(mod), fn)())
    rows = compare(cases, repeats=args.repeats)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    import torch_pruning

    doc = {"benchmark": "pruning_coverage", "torch": torch.__version__, "torch_pruning": torch_pruning.__version__,
           "load_average_1min": load, "load_average_1min_end": load_end, "repeats": args.repeats, "cpu_count": os.cpu_count(), "threads": 1, "target": "keep=0.5 uniform, "
           "round_to=8, L1", "summary": summary(rows), "rows": rows}  # fmt: skip
    atomic_write_text(Path(args.out), json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
