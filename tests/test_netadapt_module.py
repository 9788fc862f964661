"""NetAdapt and one-shot pruning on networks that are not EdgeNets (module space), on digits at 8×8."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch
from torch import nn

from edgecnn.analysis import analyze
from edgecnn.build import build
from edgecnn.compress.budget import parse_budget
from edgecnn.compress.resource_meter import ResourceMeter, network_key
from edgecnn.compress.netadapt.loop import NetAdaptConfig, load_state, netadapt
from edgecnn.compress.netadapt.state import replay
from edgecnn.compress.netadapt.oneshot import prune_to_budget
from edgecnn.executor import Executor
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable
from edgecnn.train.config import FINETUNE
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, worker_data

REF = DataRef("digits", image_size=8)
TRAIN = replace(FINETUNE, batch_size=64, lr=0.05)
CFG = NetAdaptConfig(initial_step=0.2, decay=0.9, short_steps=3, top_k=2, round_to=4, recal_batches=2, train=TRAIN)
SHAPE = (1, 8, 8)


def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    """A hand-written residual net (not an EdgeNet): the add couples the stem with both blocks' outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(1, 16)
        self.a = nn.Sequential(cbr(16, 24), nn.Conv2d(24, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.b = nn.Sequential(cbr(16, 32), nn.Conv2d(32, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.down = cbr(16, 32, 2)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = torch.relu(x + self.b(x))
        return self.head(self.down(x).mean((2, 3)))


def sequential() -> nn.Sequential:
    """Only torch classes, so it pickles into spawned workers."""
    return nn.Sequential(cbr(1, 16), cbr(16, 24), cbr(24, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10))  # fmt: skip


@pytest.fixture(scope="module")
def trained() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = Residual()
    finetune(model, worker_data(REF), steps=20, config=TRAIN)
    return model.state_dict()


def fresh(weights: dict[str, torch.Tensor]) -> Residual:
    model = Residual()
    model.load_state_dict(weights)
    return model


def strip(history) -> list[dict]:
    return [{k: v for k, v in asdict(h).items() if k != "seconds"} for h in history]


def macs(model: nn.Module) -> int:
    return analyze(model, SHAPE, receptive_fields=False).macs


def fake_latency(model: nn.Module) -> float:
    """A synthetic device: 0.1 ms + 1e-5 ms per MAC (deterministic; the real meter measures)."""
    return 0.1 + 1e-5 * macs(model)


def test_meets_a_macs_budget_on_a_hand_written_residual_net(trained, tmp_path) -> None:
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    r = netadapt(fresh(trained), REF, parse_budget("50%macs"), meter=meter, config=CFG, out=tmp_path)
    start = macs(Residual())
    assert r.start == start and r.target == 0.5 * start
    assert r.met and r.arch is None and isinstance(r.model, Residual)
    assert r.resource == macs(r.model) <= 0.5 * start  # the meter's count is analyze's of the result
    assert len(r.history) >= 2
    prev = start
    for h in r.history:
        assert h.resource <= h.target < prev and h.width_after < h.width_before
        prev = h.resource
    # the residual add is one group: the stem and both blocks' outputs keep the same width
    assert r.model.stem[0].out_channels == r.model.a[1].out_channels == r.model.b[1].out_channels
    assert r.model(torch.randn(2, *SHAPE)).shape == (2, 10)
    st = load_state(tmp_path / "netadapt_state.pt")
    assert st["arch"] == network_key(r.model) and len(st["history"]) == len(r.history)
    assert r.top1 > 0.3  # far above chance (0.1)


def test_meets_a_latency_budget_measured_on_the_module(trained) -> None:
    calls: list[str] = []

    def device(model: nn.Module) -> float:
        calls.append(network_key(model))
        return fake_latency(model)

    meter = ResourceMeter("latency", input_size=8, num_classes=10, in_chans=1, module_latency=device)
    r = netadapt(fresh(trained), REF, parse_budget("60%latency"), meter=meter, config=replace(CFG, short_steps=0))
    assert r.start == pytest.approx(fake_latency(Residual()))
    assert r.met and r.resource == pytest.approx(fake_latency(r.model)) and r.resource <= 0.6 * r.start
    assert len(calls) == len(set(calls))  # every distinct network is timed once, then remembered


def test_resume_after_a_crash_replays_the_structure(trained, tmp_path) -> None:
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    budget = parse_budget("50%macs")
    whole = netadapt(fresh(trained), REF, budget, meter=meter, config=CFG, out=tmp_path / "a")

    def crash(it) -> None:
        if it.iteration == 1:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        netadapt(fresh(trained), REF, budget, meter=meter, config=CFG, out=tmp_path / "b", on_iteration=crash)
    st = load_state(tmp_path / "b" / "netadapt_state.pt")
    again = replay(fresh(trained), [{h["group"]: h["width_after"]} for h in st["history"]], SHAPE, round_to=4)
    again.load_state_dict(st["state_dict"])  # strict: the replayed structure is the saved one
    seen: list[int] = []
    resumed = netadapt(fresh(trained), REF, budget, meter=meter, config=CFG, out=tmp_path / "b", resume=True,
                       on_iteration=lambda it: seen.append(it.iteration))  # fmt: skip
    assert seen[0] == 2
    assert strip(resumed.history) == strip(whole.history)
    assert resumed.top1 == whole.top1
    for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_another_network(trained, tmp_path) -> None:
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    cfg = replace(CFG, short_steps=0, max_iterations=1)
    netadapt(fresh(trained), REF, parse_budget("50%macs"), meter=meter, config=cfg, out=tmp_path)
    with pytest.raises(ValueError, match="another network"):
        netadapt(sequential(), REF, parse_budget("50%macs"), meter=meter, config=cfg, out=tmp_path, resume=True)


def test_block_dropping_needs_an_edgenet(trained) -> None:
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match="needs an EdgeNet"):
        netadapt(fresh(trained), REF, parse_budget("50%macs"), meter=meter, config=replace(CFG, drop_blocks=True))


def test_local_workers_give_the_serial_result_for_a_module() -> None:
    torch.manual_seed(1)
    net = sequential()
    meter = ResourceMeter("macs", input_size=8, num_classes=10, in_chans=1)
    cfg = replace(CFG, max_iterations=1)
    serial = netadapt(net, REF, parse_budget("50%macs"), meter=meter, config=cfg)
    with Executor("local", workers=2) as ex:
        local = netadapt(net, REF, parse_budget("50%macs"), meter=meter, config=cfg, executor=ex)
    assert strip(local.history) == strip(serial.history)
    for a, b in zip(local.model.state_dict().values(), serial.model.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("budget", ["40%macs", "50%params"])
def test_one_shot_pruning_of_a_module_to_a_count(trained, budget: str) -> None:
    b = parse_budget(budget)
    meter = ResourceMeter(b.resource, input_size=8, num_classes=10, in_chans=1)
    start = meter.of_model(fresh(trained))
    r = prune_to_budget(fresh(trained), b.target(start), meter, round_to=4)
    cost = analyze(r.model, SHAPE, receptive_fields=False)
    assert r.resource == (cost.macs if b.resource == "macs" else cost.params) <= b.target(start)
    assert isinstance(r.model, Residual)


def test_one_shot_pruning_of_a_module_to_a_latency(trained) -> None:
    meter = ResourceMeter("latency", input_size=8, num_classes=10, in_chans=1, module_latency=fake_latency)
    start = meter.of_model(fresh(trained))
    r = prune_to_budget(fresh(trained), 0.5 * start, meter, round_to=4)
    assert r.resource == pytest.approx(fake_latency(r.model)) and r.resource <= 0.5 * start


def test_a_module_is_timed_end_to_end_with_the_tables_settings() -> None:
    table = LatencyTable(fingerprint(backend="eager", threads=1))
    table.config = TimingConfig(warmup=2, min_repeats=5, max_repeats=5, max_seconds=1.0, max_foreign=None, retries=0)
    table.drift_reference = False
    meter = ResourceMeter("latency", input_size=8, num_classes=10, in_chans=1,
                          latency=LatencyModel(table, stat="min"))  # fmt: skip
    net = sequential().train()
    ms = meter.of_model(net)
    assert 0 < ms < 1000 and net.training  # measured in eval mode, handed back as it came
    assert meter.of_model(net) == ms  # remembered by structure
    wider = nn.Sequential(cbr(1, 32), cbr(32, 24), cbr(24, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10))  # fmt: skip
    assert network_key(wider) != network_key(net) and network_key(build("conv_c8 gap fc")) == "conv_c8 gap fc"
