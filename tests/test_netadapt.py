"""NetAdapt (edgecnn.compress.netadapt.loop) and budgets (edgecnn.compress.budget) on digits with a tiny network."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch

from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.build import build
from edgecnn.compress.budget import parse_budget
from edgecnn.compress.netadapt.loop import NetAdaptConfig, ResourceMeter, load_state, netadapt
from edgecnn.executor import Executor
from edgecnn.kinds import kind_of
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.model import LatencyModel, _plans
from edgecnn.latency.widths import width_grid
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.train.config import FINETUNE
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, worker_data

TINY = "conv_k3_c16 ir_s2_e3_c16 ir_c16 gap fc"
REF = DataRef("digits", image_size=8)
TRAIN = replace(FINETUNE, batch_size=64, lr=0.05)
CFG = NetAdaptConfig(initial_step=0.2, decay=0.9, short_steps=3, top_k=2, round_to=4, recal_batches=2, train=TRAIN)


@pytest.fixture(scope="module")
def trained() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build(TINY, num_classes=10, in_chans=1)
    finetune(model, worker_data(REF), steps=20, config=TRAIN)
    return model.state_dict()


def fresh(weights: dict[str, torch.Tensor]):
    model = build(TINY, num_classes=10, in_chans=1)
    model.load_state_dict(weights)
    return model


def strip(history) -> list[dict]:
    return [{k: v for k, v in asdict(h).items() if k != "seconds"} for h in history]


def synthetic_latency(per_block: float = 0.01, per_mac: float = 1e-5) -> LatencyModel:
    """A table on a width grid whose entries are ``per_mac`` ms per MAC of the block + ``per_block`` ms, and a 0.1 ms
    overhead."""
    table = LatencyTable(fingerprint(backend="eager", threads=1))
    fractions = tuple(i / 16 for i in range(1, 17))
    for p in _plans(build(TINY, num_classes=10, in_chans=1).spec, (8, 8), 10, 1):
        for v in width_grid(p, fractions, divisor=1):
            ms = per_mac * kind_of(v.spec.kind).cost(v)[1] + per_block  # the block's MACs
            table.entries[block_key(v)] = TableEntry(ms, ms, ms, ms, 1)
    okey = overhead_key(in_chans=1, input_size=(8, 8), batch=1, num_classes=10)
    table.entries[okey] = TableEntry(0.1, 0.1, 0.1, 0.1, 1)
    return LatencyModel(table, extrapolate=True)  # linear in each width: extrapolation is exact too


@pytest.mark.parametrize(
    ("text", "resource", "value", "relative"),
    [("5ms", "latency", 5.0, False), ("50%latency", "latency", 0.5, True), ("50%macs", "macs", 0.5, True),
     ("1.2Mparams", "params", 1.2e6, False), ("300Mmacs", "macs", 3e8, False), ("12.5 % params", "params", 0.125, True)],
)  # fmt: skip
def test_budget_forms(text: str, resource: str, value: float, relative: bool) -> None:
    b = parse_budget(text)
    assert (b.resource, b.relative) == (resource, relative)
    assert b.value == pytest.approx(value)
    assert b.target(200.0) == pytest.approx(value * 200.0 if relative else value)


@pytest.mark.parametrize(("text", "says"), [("5", "not understood"), ("150%macs", "percentage"),
                                            ("0ms", "positive"), ("3Mms", "plain milliseconds"),
                                            ("50%flops", "not understood"), ("", "not understood")])  # fmt: skip
def test_bad_budgets_say_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_budget(text)


def test_meets_a_macs_budget_one_group_per_iteration(trained, tmp_path) -> None:
    model = fresh(trained)
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    steps: list[tuple[str, int, int]] = []
    r = netadapt(model, REF, parse_budget("50%macs"), meter=meter, config=replace(CFG, long_epochs=0.1),
                 out=tmp_path, on_step=lambda what, d, t: steps.append((what, d, t)))  # fmt: skip
    start = cost_from_spec(TINY, 8, 10, 1).macs
    assert r.start == start and r.target == 0.5 * start
    assert r.met and r.stopped == "met"
    assert r.resource == cost_from_spec(r.arch, 8, 10, 1).macs <= 0.5 * start
    assert r.model.arch == r.arch
    assert len(r.history) >= 2  # a 20% first step cannot reach 50% at once
    prev = start
    for h in r.history:
        assert h.resource <= h.target < prev  # every iteration met its step
        assert h.width_after < h.width_before
        assert cost_from_spec(h.arch, 8, 10, 1).macs == h.resource
        prev = h.resource
    # the first step asks for exactly 20% of the start off
    assert r.history[0].target == pytest.approx(0.8 * start)
    st = load_state(tmp_path / "netadapt_state.pt")
    assert st["arch"] == r.arch and len(st["history"]) == len(r.history)
    assert 0.0 <= r.top1 <= 1.0 and r.top1 > 0.3  # a trained digits net stays far above chance (0.1)
    # every part of an iteration says what it does, with counts: bisection per group, scoring, short fine-tunes
    said = {what.split(": ", 1)[1].split(" ")[0] for what, _, _ in steps if what.startswith("iteration 1:")}
    assert said == {"bisecting", "scoring", "short"}
    bisect = [(d, t) for what, d, t in steps if what.startswith("iteration 1: bisecting")]
    assert bisect[0][0] == 0 and bisect[-1][0] == bisect[-1][1] > 0
    assert steps[-1][0].startswith("long fine-tune of the result")


def test_meets_a_latency_budget_from_a_synthetic_table(trained) -> None:
    lat = synthetic_latency()
    meter = ResourceMeter("latency", input_size=8, num_classes=10, in_chans=1, latency=lat)
    r = netadapt(fresh(trained), REF, parse_budget("60%latency"), meter=meter, config=replace(CFG, short_steps=0))
    expect = lat.predict(TINY, input_size=8, num_classes=10, in_chans=1).total_ms
    # the table's latency is an affine function of MACs: check the start by hand
    blocks = [1e-5 * c.macs + 0.01 for c in cost_from_spec(TINY, 8, 10, 1).layers]
    assert r.start == pytest.approx(expect) and expect == pytest.approx(0.1 + sum(blocks))
    assert r.met and r.resource <= 0.6 * r.start
    assert r.resource == pytest.approx(lat.predict(r.arch, input_size=8, num_classes=10, in_chans=1).total_ms)


class Crash(Exception):
    pass


def test_resume_after_a_crash_continues_with_the_same_history(trained, tmp_path) -> None:
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    budget = parse_budget("50%macs")
    whole = netadapt(fresh(trained), REF, budget, meter=meter, config=CFG, out=tmp_path / "a")

    def crash(it) -> None:
        if it.iteration == 1:
            raise Crash  # after iteration 1 was saved

    with pytest.raises(Crash):
        netadapt(fresh(trained), REF, budget, meter=meter, config=CFG, out=tmp_path / "b", on_iteration=crash)
    seen: list[int] = []
    resumed = netadapt(fresh(trained), REF, budget, meter=meter, config=CFG, out=tmp_path / "b", resume=True,
                       on_iteration=lambda it: seen.append(it.iteration))  # fmt: skip
    assert seen[0] == 2  # continues at the next iteration
    assert strip(resumed.history) == strip(whole.history)
    assert resumed.arch == whole.arch and resumed.top1 == whole.top1


def test_resume_refuses_another_network(trained, tmp_path) -> None:
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    cfg = replace(CFG, short_steps=0, max_iterations=1)
    netadapt(fresh(trained), REF, parse_budget("50%macs"), meter=meter, config=cfg, out=tmp_path)
    other = build("conv_k3_c8 ir_s2_e3_c16 gap fc", num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match="continues another network"):
        netadapt(other, REF, parse_budget("50%macs"), meter=meter, config=cfg, out=tmp_path, resume=True)


def test_local_workers_give_the_serial_result(trained) -> None:
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    cfg = replace(CFG, max_iterations=1)
    serial = netadapt(fresh(trained), REF, parse_budget("50%macs"), meter=meter, config=cfg)
    with Executor("local", workers=2) as ex:
        local = netadapt(fresh(trained), REF, parse_budget("50%macs"), meter=meter, config=cfg, executor=ex)
    assert strip(local.history) == strip(serial.history)
    # the same up to float summation order (a worker runs one torch thread, this process several)
    for a, b in zip(local.model.state_dict().values(), serial.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="latency model"):
        ResourceMeter("latency", input_size=8, num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match="selection"):
        NetAdaptConfig(selection="best")
    meter = ResourceMeter("params", input_size=8, num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match="budget is on macs"):
        netadapt(build(TINY, num_classes=10, in_chans=1), REF, parse_budget("50%macs"), meter=meter)


def test_a_step_no_group_can_take_is_halved(trained) -> None:
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    cfg = replace(CFG, initial_step=0.9, short_steps=0, max_iterations=1)  # no one group holds 90% of the MACs
    r = netadapt(fresh(trained), REF, parse_budget("50%macs"), meter=meter, config=cfg)
    first = r.history[0]
    assert first.target > 0.5 * r.start  # the bound moved back towards the start (0.1 → halfway, …)
    assert first.resource <= first.target < r.start
    without = replace(cfg, step_halvings=0)
    stuck = netadapt(fresh(trained), REF, parse_budget("50%macs"), meter=meter, config=without)
    assert stuck.history == [] and not stuck.met and stuck.stopped.startswith("no channel group can meet the step")


def test_overhead_bound_latency_is_met_by_dropping_a_block(trained) -> None:
    # 0.3 ms per block whatever its width, 1e-7 ms per MAC: narrowing saves < 2% (TINY has ~0.1 M MACs), while
    # blocks.2 (ir_c16 after a 16-channel block: an identity skip) is 0.3 of ~1.6 ms
    lat = synthetic_latency(per_block=0.3, per_mac=1e-7)
    meter = ResourceMeter("latency", input_size=8, num_classes=10, in_chans=1, latency=lat)
    budget = parse_budget("85%latency")
    cfg = replace(CFG, short_steps=2, top_k=1)
    narrow = netadapt(fresh(trained), REF, budget, meter=meter, config=cfg)
    assert not narrow.met and narrow.stopped.startswith("no channel group can meet the step")
    r = netadapt(fresh(trained), REF, budget, meter=meter, config=replace(cfg, drop_blocks=True))
    assert r.met and r.resource <= 0.85 * r.start
    dropped = [h for h in r.history if h.group == -1]
    assert [(h.description, h.width_before, h.width_after) for h in dropped] == [
        ("blocks.2 dropped (ir_c16)", 16, 0)]  # fmt: skip
    assert "ir_c16" not in r.arch.split() and len(r.model.blocks) == 4
    # the result's latency is the table's sum over its blocks: by hand, one 0.3 ms block fewer
    blocks = [1e-7 * c.macs + 0.3 for c in cost_from_spec(r.arch, 8, 10, 1).layers]
    assert r.resource == pytest.approx(0.1 + sum(blocks))
    again = build(r.arch, num_classes=10, in_chans=1)
    again.load_state_dict(r.model.state_dict())  # strict
