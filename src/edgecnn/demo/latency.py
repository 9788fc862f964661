"""The demo's latency stages: the baseline timed per block and end to end on every runtime installed, the
deployment target chosen, and the target's latency table built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from edgecnn.analysis import LayerCost
from edgecnn.data import DataSet
from edgecnn.demo.baseline import Baseline
from edgecnn.demo.config import BlockRow, DemoConfig
from edgecnn.demo.render import block_table
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.latency.model import LatencyModel, whole_network_model
from edgecnn.latency.per_layer import per_layer
from edgecnn.latency.remote import AgentError
from edgecnn.latency.table import LatencyTable, new_table
from edgecnn.latency.targets import get_target, target_names
from edgecnn.demo.stage_log import StageLog
from edgecnn.progress import progress_bar

# the latency table's timing: short loops (a few hundred block variants), one retry when disturbed
TABLE_TIMING = TimingConfig(warmup=3, min_repeats=10, max_repeats=100, max_seconds=0.25, retries=1, retry_wait_s=0.2)

TARGET_NAMES = {"eager": "PyTorch eager", "onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch"}

TIE = 0.10  # runtimes within this share of the fastest count as equally fast (run-to-run spread on this VM)


@dataclass(frozen=True)
class Timed:
    """The latency stage's result: the baseline per block (eager) and end to end on every runtime, the target."""

    timing: TimingConfig  # the timing loops' settings (the compression stages time with the same)
    eager_ms: float  # end to end, PyTorch eager, batch 1 (median)
    targets_ms: dict[str, float]  # end to end on every runtime installed (or of the agent's device)
    target: str  # the deployment runtime to optimise for
    rows: tuple[BlockRow, ...]  # per block: cost and latency alone (eager)
    cpu: str  # this machine's processor (the eager timings' fingerprint)


def latency_stage(log: StageLog, cfg: DemoConfig, base: Baseline) -> Timed:
    """The baseline per block and end to end (batch 1) on every runtime, and the target: ``cfg.target`` or the
    fastest (:func:`fastest`)."""
    where = "this machine" if cfg.device == "cpu" else f"the device at {cfg.device} (eager: this machine)"
    with log.stage("latency", f"latency on {where} (batch 1, {cfg.threads} thread(s))") as info:
        model, shape = base.model, base.shape
        model.eval()
        timing = TimingConfig(max_seconds=cfg.max_seconds)
        breakdown = per_layer(model, (1, *shape), backend="eager", threads=cfg.threads, config=timing)
        eager_ms = breakdown.total.stats.median_ms
        targets_ms = measure_targets(model, shape, cfg, timing, eager_ms, log.console)
        target, why = (cfg.target, "--target") if cfg.target else fastest(targets_ms)
        rows = tuple(block_row(name, lat.kind, params, macs, lat.median_ms, base.per_block)
                     for (name, params, macs), lat in zip(base.costs, breakdown.layers))  # fmt: skip
        log.console.print(block_table(rows))
        info["note"] = ("end to end: " + ", ".join(f"{TARGET_NAMES.get(k, k)} {v:.3f} ms" for k, v in
                                                   targets_ms.items())
                        + f"; target: {target} ({why})")  # fmt: skip
        log.console.print(info["note"])
    return Timed(timing, eager_ms, targets_ms, target, rows, breakdown.total.fingerprint.cpu)


def block_row(name: str, block: str, params: int, macs: int, ms: float,
              per_block: dict[str, LayerCost]) -> BlockRow:  # fmt: skip
    """One block's row: its cost, its latency and its receptive field along H (SE gates left out)."""
    lc = per_block.get(name)
    spatial = lc is not None and not lc.rf_whole and lc.rf_size and lc.rf_jump
    rf, jump = (lc.rf_size[0], lc.rf_jump[0]) if spatial else (None, None)
    return BlockRow(name, block, params, macs, ms, rf, jump, bool(lc is not None and (lc.rf_whole or lc.rf_global)))


def measure_targets(model: torch.nn.Module, shape: tuple[int, int, int], cfg: DemoConfig, timing: TimingConfig,
                    eager_ms: float, console: Console) -> dict[str, float]:  # fmt: skip
    """The baseline end to end (median, batch 1) on every runtime installed here (eager already measured), or with
    ``cfg.device`` an agent's address, on every runtime of that device (eager stays this machine's, for reference)."""
    out = {"eager": eager_ms}
    for name in target_names():
        if name == "eager" or (name == "onnxruntime" and not cfg.onnx) or get_target(name).version() is None:
            continue
        try:
            out[name] = measure(model, (1, *shape), backend=name, threads=cfg.threads, config=timing,
                                device=cfg.device).stats.median_ms  # fmt: skip
        except (ImportError, ValueError, RuntimeError, AgentError) as exc:  # a runtime that cannot take this network
            if cfg.target == name or (isinstance(exc, AgentError) and exc.code != "runtime_unavailable"):
                raise  # the runtime asked for, or an agent that is not there: not a runtime to skip
            console.print(f"[yellow]{name} skipped: {str(exc).splitlines()[0]}")
    return out


def fastest(targets_ms: dict[str, float]) -> tuple[str, str]:
    """The deployment runtime to optimise for, and why: the fastest measured; among runtimes within :data:`TIE` of
    it, the one whose latency table is cheapest to build (an ExecuTorch block takes seconds to lower, an ONNX one
    under one). Eager only where no other runtime is installed (no device runs eager)."""
    deployable = {k: v for k, v in targets_ms.items() if k != "eager"}
    if not deployable:
        return "eager", "no deployment runtime installed (pip install 'edgecnn[onnx]')"
    best = min(deployable.values())
    tied = [k for k, v in deployable.items() if v <= best * (1 + TIE)]
    pick = min(tied, key=lambda k: (get_target(k).export_seconds, deployable[k]))
    quickest = min(deployable, key=deployable.__getitem__)
    if pick == quickest:
        return pick, "the fastest here"
    return pick, (f"within {TIE:.0%} of the fastest ({quickest} {best:.3f} ms) and its table is quicker to build "
                  f"(--target {quickest} optimises for that one)")


def table_stage(log: StageLog, cfg: DemoConfig, arch: str | None, target: str, out: Path, data: DataSet,
                targets_ms: dict[str, float]) -> LatencyModel:  # fmt: skip
    """The target's latency table over a width grid of every block (reused from ``cfg.latency_table`` where given);
    a network without an arch string gets a model that times every proposal whole instead."""
    if arch is None:  # no arch string: no table, every proposal timed whole
        whole = whole_network_model(backend=target, threads=cfg.threads, device=cfg.device, config=TABLE_TIMING)
        log.skip("table", "latency table of this device", "your own network has no arch string: NetAdapt measures "
                 f"every proposal end to end on {target}")  # fmt: skip
        return whole
    with log.stage("table", f"latency table of this device on {target} (every block over a width grid)") as info:
        latency = _open_table(cfg, target, out)
        cost = get_target(target).export_seconds
        if cost >= 2:  # say up front what the table will cost where each block takes seconds to prepare
            log.console.print(f"{target}: each block variant takes about {cost:.0f} s to prepare for timing; "
                              "the table is saved as it fills (--latency-table reuses it)")  # fmt: skip
        with progress_bar(log.console) as bar:
            task = bar.add_task(f"measuring block variants on {target}", total=None)
            n = latency.ensure_grid(arch, input_size=cfg.image_size, fractions=cfg.grid,
                                    num_classes=len(data.classes), in_chans=data.in_chans,
                                    on_progress=lambda d, t: bar.update(task, completed=d, total=t))  # fmt: skip
        predicted = latency.predict(arch, input_size=cfg.image_size, num_classes=len(data.classes),
                                    in_chans=data.in_chans).total_ms  # fmt: skip
        info["note"] = (f"{n} block variants measured on {target}; the baseline by the table {predicted:.3f} ms "
                        f"(measured {targets_ms[target]:.3f} ms)")  # fmt: skip
        log.console.print(info["note"])
    return latency


def _open_table(cfg: DemoConfig, target: str, out: Path) -> LatencyModel:
    """A latency model over the target's table: ``cfg.latency_table`` where given (a table of another device is
    refused with the reason), else a new one saved as ``out/latency_table.json``."""
    path = Path(cfg.latency_table) if cfg.latency_table else out / "latency_table.json"
    table = new_table(backend=target, threads=cfg.threads, device=cfg.device, config=TABLE_TIMING)
    if cfg.latency_table:  # a table of another device (fingerprint) is refused with the reason
        table = LatencyTable.open_or_new(path, table.fingerprint)
        table.config = TABLE_TIMING
    return LatencyModel(table, measure=True, path=path)
