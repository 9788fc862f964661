"""NetAdapt's state file: written after every iteration, read back by ``resume`` — plain data, never pickle.

The state is a dict of tensors, numbers and strings saved with ``torch.save``
and read with ``torch.load(..., weights_only=True)``: the start network's key
(:func:`~edgecnn.compress.meter.network_key`), the current network's weights
and the history. An EdgeNet is rebuilt from its arch string. Any other module
has no arch string, so it is rebuilt by **replay**: the start network pruned
again, iteration by iteration, to the group widths the history records
(:func:`replay`) — the structure only, the channels chosen do not matter
because the saved weights are loaded over it, strictly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn.atomic import atomic_write
from edgecnn.build import EdgeNet, build
from edgecnn.checkpoint import load_checkpoint
from edgecnn.compress.groups import channel_groups
from edgecnn.compress.meter import network_key
from edgecnn.compress.prune import plan_prune, prune

STATE_FORMAT = "edgecnn-netadapt-state"
STATE_FILE = "netadapt_state.pt"


def state_path(out: str | Path) -> Path:
    """Where a run writing to folder ``out`` keeps its state."""
    return Path(out) / STATE_FILE


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a run's state atomically: a plain dict of tensors, numbers and strings (loads with weights_only)."""
    atomic_write(path, lambda f: torch.save({"format": STATE_FORMAT, **state}, f))


def load_state(path: Path) -> dict[str, Any]:
    """A state written by :func:`save_state`; ``ValueError`` if the file is not one."""
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe: nothing is executed
        raise ValueError(f"{path} is not a readable NetAdapt state ({type(exc).__name__}); delete it or drop --resume"
                         ) from None  # fmt: skip
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a NetAdapt state; delete it or choose another --out")
    return st


def replay(model: nn.Module, steps: Iterable[Mapping[int, int]], input_shape: tuple[int, ...], *,
           round_to: int) -> nn.Module:  # fmt: skip
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
        graph = channel_groups(current, input_shape, round_to=round_to)
        if any(g >= len(graph.groups) for g in widths):
            raise ValueError(f"step {n} prunes channel group {max(widths)}, but the network has {len(graph.groups)}: "
                             "this state belongs to another network")  # fmt: skip
        plan = plan_prune(current, graph=graph, widths=widths, round_to=round_to)
        current = prune(current, plan).model
    return current


def restore(model: nn.Module, st: dict[str, Any], input_shape: tuple[int, ...], *, round_to: int) -> nn.Module:
    """The network a state describes, with its weights: from the arch (EdgeNet) or by :func:`replay` of ``model``."""
    if st["start_arch"] != network_key(model):
        raise ValueError(f"the state continues another network ({st['start_arch']!r}, not {network_key(model)!r}); "
                         "drop --resume or choose another --out")  # fmt: skip
    if isinstance(model, EdgeNet):
        current: nn.Module = build(st["arch"], num_classes=model.num_classes, in_chans=model.in_chans)
    else:
        steps = [{int(h["group"]): int(h["width_after"])} for h in st["history"]]
        current = replay(model, steps, input_shape, round_to=round_to)
    try:
        current.load_state_dict(st["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"the saved weights do not fit the rebuilt network: {str(exc).splitlines()[0]}") from None
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
    steps = [{g: w for g, w in step} for step in rec["steps"]]
    out = replay(model, steps, tuple(rec["input_shape"]), round_to=int(rec["round_to"]))
    try:
        out.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit the replayed network ({str(exc).splitlines()[0]}); "
                         "was the start network built by the same code?") from None  # fmt: skip
    return out
