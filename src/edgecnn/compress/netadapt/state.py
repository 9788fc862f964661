"""NetAdapt's state file: written after every iteration, read back by ``resume`` — plain data, never pickle.

The state is a dict of tensors, numbers and strings saved with ``torch.save``
and read with ``torch.load(..., weights_only=True)``: the start network's key
(:func:`~edgecnn.compress.resource_meter.network_key`), the current network's weights,
the history and the run's settings (:func:`run_settings`: the budget and the
schedule). An EdgeNet is rebuilt from its arch string. Any other module
has no arch string, so it is rebuilt by **replay**: the start network pruned
again, iteration by iteration, to the group widths the history records
(:func:`replay`) — the structure only, the channels chosen do not matter
because the saved weights are loaded over it, strictly.

Nothing in a state is trusted (:func:`check_state`): every field is checked
for its type and range, the history must number its iterations ``1..n``
with nothing skipped or added, its last network must be the saved one, and a
resumed run must have the settings the state was written with — each error a
``ValueError`` that names the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn.ops import CustomOp
from edgecnn.atomic import atomic_write
from edgecnn.build import EdgeNet, build
from edgecnn.checkpoint import load_checkpoint
from edgecnn.compress.budget import RESOURCES, Budget
from edgecnn.compress.channels.groups import channel_groups
from edgecnn.compress.resource_meter import network_key
from edgecnn.compress.channels.prune import plan_prune, prune
from edgecnn.limits import MAX_CHANNELS, MAX_INPUT
from edgecnn.schema import Fields

STATE_FORMAT = "edgecnn-netadapt-state"
STATE_FILE = "netadapt_state.pt"
STATE_FIX = "the file is damaged or was not written by edgecnn: delete it, or start afresh with --overwrite"
MAX_HISTORY = 100_000  # more iterations than any run makes (NetAdaptConfig.max_iterations is 200)

# the fields of one history entry (edgecnn.compress.netadapt.loop.Iteration), in order
ITERATION_FIELDS: tuple[str, ...] = ("iteration", "target", "resource", "top1", "recal_top1", "group", "description",
                                     "width_before", "width_after", "proposals", "arch", "seconds")  # fmt: skip
# the settings that decide a run's iterations: name -> (type, the CLI option that sets it, or None)
SETTINGS: dict[str, tuple[type, str | None]] = {
    "initial_step": (float, "--initial-step"), "decay": (float, "--decay"), "short_steps": (int, "--short-steps"),
    "top_k": (int, "--top-k"), "selection": (str, "--selection"), "criterion": (str, "--criterion"),
    "round_to": (int, "--round-to"), "drop_blocks": (bool, "--drop-blocks"), "holdout": (float, None),
    "recal_batches": (int, None), "lr": (float, "--lr"), "batch_size": (int, "--batch-size"), "seed": (int, None),
}  # fmt: skip


def state_path(out: str | Path) -> Path:
    """Where a run writing to folder ``out`` keeps its state."""
    return Path(out) / STATE_FILE


def run_settings(budget: Budget, config: Any) -> dict[str, Any]:  # a NetAdaptConfig (netadapt imports this module)
    """What a run's state records of its budget and schedule; a resumed run must have the same (:func:`check_state`)."""
    train = config.train
    values = {**{k: getattr(config, k) for k in SETTINGS if hasattr(config, k)},
              "lr": train.peak_lr, "batch_size": train.batch_size, "seed": train.seed}  # fmt: skip
    return {"budget": budget.to_dict(), **{k: SETTINGS[k][0](values[k]) for k in SETTINGS}}


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a run's state atomically: a plain dict of tensors, numbers and strings (loads with weights_only)."""
    atomic_write(path, lambda f: torch.save({"format": STATE_FORMAT, **state}, f))


def load_state(path: Path, *, settings: Mapping[str, Any] | None = None,
               max_iterations: int = MAX_HISTORY) -> dict[str, Any]:  # fmt: skip
    """A state written by :func:`save_state`, every field checked (:func:`check_state`); ``ValueError`` otherwise.

    ``settings`` (:func:`run_settings` of the run that resumes): the state must
    have been written with the same budget and schedule.
    """
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a NetAdapt state; remove it or choose another --out")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe: nothing is executed
        raise ValueError(f"{path} is not a readable NetAdapt state ({type(exc).__name__}); delete it, or start "
                         "afresh with --overwrite") from None  # fmt: skip
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a NetAdapt state; delete it or choose another --out")
    check_state(st, str(path), settings=settings, max_iterations=max_iterations)
    return st


def _fraction(f: Fields, name: str, v: Any) -> float:
    x = f.number(name, v, 0)
    if x > 1:
        raise f.fail(name, "a fraction in [0, 1]", v)
    return x


def check_state(st: Mapping[str, Any], source: str, *, settings: Mapping[str, Any] | None = None,
                max_iterations: int = MAX_HISTORY) -> None:  # fmt: skip
    """Check every field of a NetAdapt state; ``ValueError`` naming ``source`` and the field.

    Types and ranges of every field; the history numbers its iterations
    ``1..n`` (at most ``max_iterations``), every step meets its bound and
    narrows (or drops) something, and its last network is the saved ``arch``.
    With ``settings`` (:func:`run_settings` of the resuming run) the budget and
    the schedule must be the ones the state was written with.
    """
    f = Fields(source, STATE_FIX)
    start_arch = f.text("start_arch", st.get("start_arch"))
    _fraction(f, "start_top1", st.get("start_top1"))
    arch = f.text("arch", st.get("arch"))
    f.tensors("state_dict", st.get("state_dict"))
    for k, t in st["state_dict"].items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise f.fail(f"state_dict[{k!r}]", "a tensor of finite numbers", "NaN or inf")
    if "settings" not in st:
        raise ValueError(f"{source}: field 'settings' is missing: the state was written by an older edgecnn, which did "
                         "not record the run's budget and schedule; start afresh with --overwrite")  # fmt: skip
    saved = f.mapping("settings", st.get("settings")) or {}
    b = f.mapping("settings.budget", saved.get("budget")) or {}
    if b.get("resource") not in RESOURCES:
        raise f.fail("settings.budget.resource", f"one of {', '.join(RESOURCES)}", b.get("resource"))
    if not isinstance(b.get("relative"), bool):
        raise f.fail("settings.budget.relative", "true or false", b.get("relative"))
    value = f.number("settings.budget.value", b.get("value"), positive=True)
    if b["relative"] and value >= 1:
        raise f.fail("settings.budget.value", "a fraction in (0, 1) (the budget is relative)", value)
    f.text("settings.budget.text", b.get("text"))
    for name, (kind, _) in SETTINGS.items():
        v = saved.get(name)
        ok = isinstance(v, kind) and (kind is bool or not isinstance(v, bool))
        if kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok:
            raise f.fail(f"settings.{name}", {float: "a finite number", int: "an integer", str: "a string",
                                              bool: "true or false"}[kind], v)  # fmt: skip
    history = f.listing("history", st.get("history"))
    if len(history) > max_iterations:
        raise f.fail("history", f"at most {max_iterations:,} iterations", f"{len(history):,} iterations")
    for i, h in enumerate(history):
        _check_iteration(f, f"history[{i}]", h, i + 1)
    last = history[-1]["arch"] if history else start_arch
    if arch != last:
        what = "the last iteration's arch" if history else "start_arch (no iteration is recorded)"
        raise f.fail("arch", f"{what} {last[:60]!r}", arch)
    if settings is not None:
        _same_settings(source, saved, settings)


def _check_iteration(f: Fields, where: str, h: Any, number: int) -> None:
    """One history entry: exactly the fields of an ``Iteration``, numbered ``number``, each in its range."""
    f.mapping(where, h)
    if set(h) != set(ITERATION_FIELDS):
        raise f.fail(where, f"a dict of exactly {', '.join(ITERATION_FIELDS)}", sorted(h))
    if f.integer(f"{where}.iteration", h["iteration"], 1) != number:
        raise f.fail(f"{where}.iteration", f"{number} (iterations are numbered 1, 2, ... in order)", h["iteration"])
    target = f.number(f"{where}.target", h["target"], 0)
    resource = f.number(f"{where}.resource", h["resource"], 0)
    if resource > target * (1 + 1e-9):
        raise f.fail(f"{where}.resource", f"at most the step's bound (target {target:.6g})", resource)
    _fraction(f, f"{where}.top1", h["top1"])
    _fraction(f, f"{where}.recal_top1", h["recal_top1"])
    group = f.integer(f"{where}.group", h["group"], -1)
    f.text(f"{where}.description", h["description"])
    before = f.integer(f"{where}.width_before", h["width_before"], 1)
    after = f.integer(f"{where}.width_after", h["width_after"], 0, before - 1)
    if (group == -1) != (after == 0):
        raise f.fail(f"{where}.width_after", "0 exactly when a block is dropped (group -1)", after)
    f.integer(f"{where}.proposals", h["proposals"], 1)
    f.text(f"{where}.arch", h["arch"])
    f.number(f"{where}.seconds", h["seconds"], 0)


def _same_settings(source: str, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """``ValueError`` unless the resuming run's budget and schedule are those the state was written with."""
    fix = "or start afresh with --overwrite"
    b, nb = saved["budget"], now["budget"]
    if (b["resource"], b["relative"]) != (nb["resource"], nb["relative"]) or not math.isclose(
            b["value"], nb["value"], rel_tol=1e-12):  # fmt: skip
        raise ValueError(f"{source}: field 'settings.budget': the run being resumed has budget {b['text']!r}, this "
                         f"one {nb['text']!r}; resume with --budget {b['text']} {fix}")  # fmt: skip
    for name, (kind, flag) in SETTINGS.items():
        was, is_ = saved[name], now[name]
        same = math.isclose(was, is_, rel_tol=1e-12) if kind is float else was == is_
        if not same:
            if flag is None:
                how = "the same settings"
            elif kind is bool:
                how = flag if was else f"no {flag}"
            else:
                how = f"{flag} {was}"
            raise ValueError(f"{source}: field 'settings.{name}': the run being resumed has {name} {was!r}, this "
                             f"one {is_!r}; resume with {how} {fix}")  # fmt: skip


def replay(model: nn.Module, steps: Iterable[Mapping[int, int]], input_shape: tuple[int, ...], *,
           round_to: int, custom_ops: Sequence[CustomOp] | None = None) -> nn.Module:  # fmt: skip
    """``model`` pruned again to each step's ``{group: width}`` in turn: the structure a run reached.

    Group numbers are those of the network at that step (:func:`channel_groups`
    is deterministic for one structure): NetAdapt records one group per step,
    one-shot pruning one step of many groups. Block drops (group ``-1``) exist
    for EdgeNets only, which are rebuilt from their arch instead.
    """
    current = model
    for n, step in enumerate(steps, 1):
        widths = {int(g): int(w) for g, w in step.items()}
        if any(g < 0 for g in widths):
            raise ValueError(f"step {n} drops a block: only an EdgeNet run can do that (rebuild it from its arch)")
        graph = channel_groups(current, input_shape, round_to=round_to, custom_ops=custom_ops)
        if any(g >= len(graph.groups) for g in widths):
            raise ValueError(f"step {n} prunes channel group {max(widths)}, but the network has {len(graph.groups)}: "
                             "this state belongs to another network")  # fmt: skip
        for g, w in widths.items():
            if not 1 <= w <= graph.groups[g].width:
                raise ValueError(f"step {n} keeps {w} channels of group {g}, which has {graph.groups[g].width}")
        plan = plan_prune(current, graph=graph, widths=widths, round_to=round_to)
        current = prune(current, plan).model
    return current


def restore(model: nn.Module, st: dict[str, Any], input_shape: tuple[int, ...], *, round_to: int,
            custom_ops: Sequence[CustomOp] | None = None) -> nn.Module:  # fmt: skip
    """The network a (checked) state describes, with its weights: from the arch (EdgeNet) or by :func:`replay`.

    ``ValueError`` naming the field when the state does not continue ``model``
    (another start network), its arch does not build, its history does not
    replay, or its weights do not fit; the caller prefixes the file name.
    """
    if st["start_arch"] != network_key(model):
        raise ValueError(f"field 'start_arch': the state continues another network ({st['start_arch'][:80]!r}, not "
                         f"{network_key(model)[:80]!r}); resume with that network, or start afresh with --overwrite"
                         )  # fmt: skip
    if isinstance(model, EdgeNet):
        try:
            current: nn.Module = build(st["arch"], num_classes=model.num_classes, in_chans=model.in_chans)
        except ValueError as exc:
            raise ValueError(f"field 'arch' {st['arch'][:60]!r} does not build ({str(exc).splitlines()[0]}); "
                             f"{STATE_FIX}") from None  # fmt: skip
    else:
        steps = [{int(h["group"]): int(h["width_after"])} for h in st["history"]]
        try:
            current = replay(model, steps, input_shape, round_to=round_to, custom_ops=custom_ops)
        except ValueError as exc:
            raise ValueError(f"field 'history' does not replay on this network ({str(exc).splitlines()[0]}); "
                             f"{STATE_FIX}") from None  # fmt: skip
    try:
        current.load_state_dict(st["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"field 'state_dict' does not fit the rebuilt network ({str(exc).splitlines()[0][:160]}); "
                         f"{STATE_FIX}") from None  # fmt: skip
    return current


def prune_record(method: str, steps: Iterable[Mapping[int, int]], *, round_to: int, input_shape: tuple[int, ...],
                 source: str | None = None) -> dict[str, Any]:  # fmt: skip
    """What :func:`load_pruned` needs to rebuild a pruned module: ``{"compress": {method, steps, ...}}``.

    Goes into the result checkpoint's ``config``; ``source`` says which code built the start network
    (e.g. the CLI's ``--model MODULE:FN``), for the reader.
    """
    rows = [[[int(g), int(w)] for g, w in step.items()] for step in steps]
    return {"compress": {"method": method, "source": source, "steps": rows, "round_to": int(round_to),
                         "input_shape": [int(d) for d in input_shape]}}  # fmt: skip


def load_pruned(path: str | Path, model: nn.Module) -> nn.Module:
    """A pruned result of ``model`` (the unpruned network, built by the same code) from its checkpoint at ``path``.

    The checkpoint's ``config["compress"]`` (:func:`prune_record`) is replayed on
    ``model`` (:func:`replay`), then its weights are loaded strictly. Nothing in the
    file is executed (``weights_only=True``).
    """
    ckpt = load_checkpoint(path)
    rec: Any = ckpt.config.get("compress") if isinstance(ckpt.config, dict) else None
    if not isinstance(rec, dict) or not isinstance(rec.get("steps"), list):
        raise ValueError(f"{path} records no pruning steps (config['compress']['steps']); an EdgeNet result loads "
                         "with edgecnn.checkpoint.load_model(path)")  # fmt: skip
    f = Fields(str(path), "the file is damaged or was not written by edgecnn compress")
    steps = []
    for i, step in enumerate(rec["steps"]):
        pairs = f.listing(f"config.compress.steps[{i}]", step)
        if not all(isinstance(x, (list, tuple)) and len(x) == 2 for x in pairs):
            raise f.fail(f"config.compress.steps[{i}]", "a list of [group, width] pairs", step)
        steps.append({f.integer(f"config.compress.steps[{i}]", g, -1): f.integer(f"config.compress.steps[{i}]", w, 0)
                      for g, w in pairs})  # fmt: skip
    shape = f.listing("config.compress.input_shape", rec.get("input_shape"))
    if len(shape) != 3:
        raise f.fail("config.compress.input_shape", "[channels, height, width]", shape)
    for i, d in enumerate(shape):
        f.integer(f"config.compress.input_shape[{i}]", d, 1, MAX_INPUT.value() if i else MAX_CHANNELS.value())
    round_to = f.integer("config.compress.round_to", rec.get("round_to"), 1, MAX_CHANNELS.value())
    try:
        out = replay(model, steps, tuple(shape), round_to=round_to)
    except ValueError as exc:
        raise ValueError(f"{path}: field 'config.compress.steps' does not replay on this network "
                         f"({str(exc).splitlines()[0]}); was the start network built by the same code?") from None
    try:
        out.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit the replayed network ({str(exc).splitlines()[0]}); "
                         "was the start network built by the same code?") from None  # fmt: skip
    return out
