"""The search calibrates its latency table on measured networks of the space before it searches."""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

import pytest

from edgecnn.executor import Executor
from edgecnn.latency.calibrate import group_sums
from edgecnn.latency.compare import Anchor
from edgecnn.latency.measure import LatencyStats
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable
from edgecnn.search.objective import Objective
from edgecnn.search.job import FINALIST_PAUSE_S, FINALIST_ROUNDS, SearchJob, calibrate_table
from edgecnn.train.task import DataRef
from search_helpers import TINY_SPACE, synthetic_table

V = importlib.import_module("edgecnn.latency.validate")  # the module (the package re-exports the function)


def _job(n: int) -> SearchJob:
    return SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0), calibrate=n, calibrate_seed=3)


def test_calibration_puts_the_table_on_the_measured_scale(monkeypatch, tmp_path: Path) -> None:
    table = synthetic_table(TINY_SPACE)
    model = LatencyModel(table)
    measured: list[str] = []

    def fake_measure(t, arch, *, input_size, num_classes=1000, in_chans=3):
        # "the device": 0.8 × the body entries + 1.5 × the fixed ones (stem, head, classifier, overhead)
        measured.append(arch)
        p = model.predict(arch, input_size=input_size, num_classes=num_classes, in_chans=in_chans, calibrated=False)
        s = group_sums((("overhead", p.overhead_ms), *p.blocks))
        ms = 0.8 * s["body"] + 1.5 * s["fixed"]
        return LatencyStats(ms, ms, ms, ms, ms, 5, True)

    def fake_fastest(nets, shape, *, backend, threads, device, rounds, pause_s, on_round=None):
        # measured as the finalists are: back to back in the search's rounds, apart, each round's fastest run
        assert rounds == FINALIST_ROUNDS and threads == 1 and pause_s == FINALIST_PAUSE_S
        return "cpu", {k: [fake_measure(None, n.arch, input_size=shape[-1], num_classes=10, in_chans=shape[1])]
                       * rounds for k, n in nets.items()}  # fmt: skip

    monkeypatch.setattr(importlib.import_module("edgecnn.latency.compare"), "fastest_runs", fake_fastest)
    path = tmp_path / "table.json"
    with Executor("serial") as ex:
        assert calibrate_table(_job(0), model, ex, num_classes=10, in_chans=1) is None  # 0: the table as it is
        assert table.calibration is None
        cal = calibrate_table(_job(6), model, ex, num_classes=10, in_chans=1, table_path=path)
    assert len(measured) == 6 and len(set(measured)) > 1  # six networks sampled from the space
    assert cal["scales"] == pytest.approx({"body": 0.8, "fixed": 1.5}, rel=1e-6)
    assert cal["info"] == {"input_size": 16, "stat": "median", "by": "fastest", "seed": 3, "n": 6}
    # the search's latency is now the measured scale, on a network the calibration never saw
    arch = next(a for a in V.sample_archs(20, TINY_SPACE.sample, seed=99) if a not in measured)
    got = model.predict(arch, input_size=16, num_classes=10, in_chans=1)
    assert got.calibrated and got.total_ms == pytest.approx(fake_measure(table, arch, input_size=16,
                                                                         num_classes=10, in_chans=1).median_ms)
    # stored in the table file; a second call with the same networks does not measure again
    assert LatencyTable.load(path).calibration.scales == pytest.approx(cal["scales"])
    with Executor("serial") as ex:
        again = calibrate_table(_job(6), model, ex, num_classes=10, in_chans=1)
    assert len(measured) == 7 and again["scales"] == cal["scales"]  # 7: the check above measured one
    # a table calibrated before the calibration networks were measured by fastest runs is calibrated again
    table.calibration = replace(table.calibration, info={"input_size": 16, "stat": "median", "seed": 3, "n": 6})
    with Executor("serial") as ex:
        calibrate_table(_job(6), model, ex, num_classes=10, in_chans=1)
    assert len(measured) == 13 and table.calibration.info["by"] == "fastest"
    # with an anchor the networks are read in its sitting: a table calibrated without it is calibrated again
    # ("the device" reads the anchor at 2x its recorded latency in this sitting: the scales come out halved)
    arch = V.sample_archs(1, TINY_SPACE.sample, seed=5)[0]
    anchor = Anchor(arch, fake_measure(table, arch, input_size=16, num_classes=10, in_chans=1).median_ms / 2.0)
    with Executor("serial") as ex:
        cal = calibrate_table(replace(_job(6), anchor=anchor), model, ex, num_classes=10, in_chans=1)
    assert len(measured) == 21  # the anchor's latency read above, then the six networks and the anchor
    assert cal["scales"] == pytest.approx({"body": 0.4, "fixed": 0.75}, rel=1e-6)
    assert cal["info"]["anchor"] == {"arch": anchor.arch, "ms": anchor.ms}
    with Executor("serial") as ex:
        assert calibrate_table(replace(_job(6), anchor=anchor), model, ex, num_classes=10, in_chans=1) == cal
    assert len(measured) == 21  # the same anchor: not again


def test_too_few_calibration_networks_is_refused() -> None:
    with pytest.raises(ValueError, match="calibrate needs at least 4"):
        _job(3)


def test_an_anchor_that_is_no_network_is_refused() -> None:
    with pytest.raises(ValueError, match="the anchor's arch: .*'bogus'"):
        replace(_job(0), anchor=Anchor("bogus_c8", 0.4))
