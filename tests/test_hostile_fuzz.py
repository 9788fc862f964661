"""Fuzzing (hypothesis) of the three inputs a user or a file controls: arch strings, checkpoints, latency tables.

The property is the same for each: a ``ValueError`` with a message, or a valid
result — never another exception, a hang or a blow-up. Time is bounded by
hypothesis' per-example deadline, memory of the pure-Python spec path by
tracemalloc; ``max_examples`` stays small so CI stays fast.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecnn import zoo
from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.build import build
from edgecnn.checkpoint import checkpoint_of, load_checkpoint, load_model
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.predict import predict
from edgecnn.latency.table import PROBE_ARCH, LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.plan import resolve

FUZZ = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

NUMBERS = st.sampled_from(["0", "1", "2", "3", "7", "64", "4097", "65537", "99999999", "9" * 40, "1e9", "-1", "nan",
                           "inf", "0.5", "1e-9", ""])  # fmt: skip
SEEDS = st.sampled_from([zoo.arch_of(n) for n in zoo.names()] + ["conv_c16 ir_c24 gap fc", "conv_k3_s2_c8 gap fc"])


@st.composite
def mutated_arch(draw: st.DrawFn) -> str:
    """A zoo arch string with a few key tokens' numbers swapped for hostile ones, tokens dropped or blocks doubled."""
    blocks = [b.split("_") for b in draw(SEEDS).split()]
    for _ in range(draw(st.integers(1, 3))):
        b = draw(st.integers(0, len(blocks) - 1))
        tokens = blocks[b]
        op = draw(st.sampled_from(["number"] * 6 + ["drop", "dup", "junk", "junk"]))
        if op == "dup":
            blocks.insert(b, list(tokens))
        elif len(tokens) == 1:  # a bare kind (gap, fc): give it a key
            tokens.append("c" + draw(NUMBERS))
        else:
            i = draw(st.integers(1, len(tokens) - 1))
            if op == "number":
                tokens[i] = (tokens[i].rstrip("0123456789.") or "c") + draw(NUMBERS)
            elif op == "drop":
                del tokens[i]
            else:
                tokens[i] = draw(st.sampled_from(["padskip", "noskip", "hsgate", "pre", "r99999999", "zz", ""]))
    return " ".join("_".join(t) for t in blocks)


def _ok_or_value_error(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except ValueError as exc:
        assert str(exc).strip(), "a ValueError without a message"
        return None


@FUZZ
@given(arch=mutated_arch(), size=st.sampled_from([1, 8, 32, 224, 10**7]))
def test_mutated_arch_strings(arch: str, size: int) -> None:
    tracemalloc.start()
    try:
        cost = _ok_or_value_error(cost_from_spec, arch, input_size=size, num_classes=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MB for {arch!r}"
    if cost is not None:
        assert cost.params > 0 and cost.macs >= 0 and len(cost.layers) == len(resolve(arch, num_classes=10))


HOSTILE_VALUES = st.sampled_from([None, -1, 0, 10**12, math.nan, math.inf, "x", "", [], {}, [1.0], True, {"a": 1},
                                  [torch.zeros(1)], "conv_r100000000_c8 gap fc", "conv_c99999999 gap fc"])  # fmt: skip
CKPT_FIELDS = ["arch", "num_classes", "in_chans", "state_dict", "ema_state_dict", "optimizer", "epoch", "batch",
               "step", "rng", "config", "data", "history", "partial", "data.mean", "data.std", "data.image_size",
               "data.classes", "data.name", "data.in_chans", "version", "format"]  # fmt: skip


def _good_checkpoint() -> dict[str, Any]:
    meta = {"name": "digits", "classes": [str(i) for i in range(10)], "mean": [0.3], "std": [0.4],
            "image_size": 8, "in_chans": 1}  # fmt: skip
    return checkpoint_of(build("conv_k3_s2_c8 gap fc", num_classes=10, in_chans=1), data=meta).to_dict()


GOOD_CKPT = _good_checkpoint()


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(CKPT_FIELDS), HOSTILE_VALUES), min_size=1, max_size=3))
def test_mutated_checkpoints(edits: list[tuple[str, Any]]) -> None:
    d = copy.deepcopy(GOOD_CKPT)
    for field, value in edits:
        node, *rest = field.split(".")
        if rest and isinstance(d.get(node), dict):
            d[node][rest[0]] = value
        elif not rest:
            d[node] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pt"
        torch.save(d, path)
        ckpt = _ok_or_value_error(load_checkpoint, path)
        if ckpt is not None and ckpt.arch is not None:  # a valid result: it rebuilds (or says why not)
            got = _ok_or_value_error(load_model, ckpt)
            if got is not None:
                assert got[0](torch.zeros(1, ckpt.in_chans, 8, 8)).shape == (1, ckpt.num_classes)


def _good_table() -> dict[str, Any]:
    table = LatencyTable(fingerprint(backend="eager", threads=1), reference_ms=1.0)
    for p in resolve(PROBE_ARCH, input_size=8):
        table.entries[block_key(p)] = TableEntry(0.02, 0.01, 0.03, 0.01, 10)
    okey = overhead_key(in_chans=3, input_size=(8, 8), batch=1, num_classes=1000)
    table.entries[okey] = TableEntry(0.05, 0.04, 0.06, 0.04, 10)
    return table.to_dict()


GOOD_TABLE = _good_table()
TABLE_PATHS = ["entries.*.median_ms", "entries.*.min_ms", "entries.*.repeats", "entries.*", "entries",
               "fingerprint.threads", "fingerprint", "calibration", "reference_ms", "call_overhead_ms",
               "version"]  # fmt: skip


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(TABLE_PATHS), HOSTILE_VALUES), min_size=1, max_size=3),
       which=st.integers(0, 10))
def test_mutated_tables(edits: list[tuple[str, Any]], which: int) -> None:
    d = copy.deepcopy(GOOD_TABLE)
    keys = sorted(d["entries"])
    for path, value in edits:
        if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            value = [1.0]  # JSON holds no tensors
        parts = path.split(".")
        node: Any = d
        for p in parts[:-1]:
            p = keys[which % len(keys)] if p == "*" else p
            node = node.get(p) if isinstance(node, dict) else None
        last = keys[which % len(keys)] if parts[-1] == "*" else parts[-1]
        if isinstance(node, dict):
            node[last] = value
    with tempfile.TemporaryDirectory() as tmp:
        path_ = Path(tmp) / "t.json"
        path_.write_text(json.dumps(d))
        table = _ok_or_value_error(LatencyTable.load, path_)
        if table is not None:
            pred = _ok_or_value_error(predict, table, PROBE_ARCH, input_size=8)
            if pred is not None:
                assert math.isfinite(pred.total_ms) and pred.total_ms >= 0
