"""Measured corrections of a hard latency constraint (``edgecnn.search.correct``): when every finalist measures
over the target, the search goes on from its saved state under the target divided by the table's error there."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
from search_helpers import TINY_SPACE, all_genomes, synthetic_table

from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable
from edgecnn.search.correct import (
    CORRECT_FILE,
    continued_state,
    correct,
    load_corrections,
    save_corrections,
    state_path,
    table_ratio,
)
from edgecnn.search.evolution import SearchConfig, SearchState, run_search
from edgecnn.search.objective import Objective

MODEL = LatencyModel(synthetic_table(TINY_SPACE, num_classes=10, in_chans=1))  # measure=False: the table only


def table_ms(arch: str) -> float:
    return MODEL.predict(arch, input_size=16, num_classes=10, in_chans=1).total_ms


LATS = sorted(table_ms(TINY_SPACE.arch(g).format()) for g in all_genomes(TINY_SPACE))
TARGET = LATS[len(LATS) // 2]  # half the space fits by the table


def accuracy(archs):  # larger networks are more accurate: the constraint binds
    return [table_ms(a) / LATS[-1] for a in archs]


@dataclass(frozen=True)
class Fin:
    arch: str
    acc: float
    table_ms: float
    measured_ms: float


class Device:
    """A device the table under-rates: measured = table × ``bias(arch)``; counts what the loop asks of it."""

    def __init__(self, bias=lambda arch: 1.25, finalists: int = 3, latency=table_ms) -> None:
        self.bias, self.finalists, self.calls, self.evaluated, self.latency = bias, finalists, [], 0, latency

    def evaluate(self, archs):
        self.evaluated += len(archs)
        return accuracy(archs)

    def attempt(self, objective: Objective, config: SearchConfig, path, resume: bool):
        result = run_search(TINY_SPACE, self.evaluate, self.latency, objective, config, state_path=path, resume=resume)
        from edgecnn.search.rerank import best_distinct  # what run_job measures: each network once, feasible

        best = best_distinct(result, self.finalists)
        return [Fin(c.arch, c.acc, c.lat_ms, self.latency(c.arch) * self.bias(c.arch)) for c in best]

    def search_on(self, k, objective, config, path):
        self.calls.append((k, objective, config))
        return self.attempt(objective, config, path, True)


CONFIG = SearchConfig("evolution", budget=16, population=6, sample_size=3, batch=2, seed=3)


def run(tmp_path, device: Device, *, rounds: int = 2, extra: int = 8, frozen: bool = False, first=None,
        smallest=lambda: LATS[0]):  # fmt: skip
    obj = Objective(TARGET, hard=True)
    state = tmp_path / "search_state.json"
    if first is None:
        first = device.attempt(obj, CONFIG, state, state.is_file())
    return correct(obj, CONFIG, state, first, rounds=rounds, extra=extra, finalists_of=lambda a: a,
                   search_on=device.search_on, smallest_table_ms=smallest, record=tmp_path / CORRECT_FILE,
                   frozen=frozen)  # fmt: skip


def test_the_ratio_is_the_largest_measured_over_table():
    # search_seeds seed 0 (vnni2): evolution's finalists at 0.397-0.404 ms by the table measured 0.446-0.451
    pairs = [(0.3970, 0.4459), (0.4040, 0.4510), (0.4000, 0.4480)]
    assert table_ratio(pairs) == pytest.approx(0.4459 / 0.3970) == pytest.approx(1.12317, abs=1e-5)
    assert table_ratio([(1.0, 0.8)]) == 0.8  # a table that over-rates: the constraint loosens
    with pytest.raises(ValueError, match="at least one measured finalist"):
        table_ratio([])
    with pytest.raises(ValueError, match="positive numbers"):
        table_ratio([(0.0, 0.4)])


def test_a_continued_state_is_the_search_rescored_and_resumes_with_the_larger_budget(tmp_path):
    hard = Objective(TARGET, hard=True)
    first = tmp_path / "s.json"
    before = run_search(TINY_SPACE, accuracy, table_ms, hard, CONFIG, state_path=first)
    tight = Objective(TARGET / 1.25, hard=True)
    cfg = SearchConfig("evolution", budget=24, population=6, sample_size=3, batch=2, seed=3)
    cont = continued_state(SearchState.load(first, space=TINY_SPACE), tight, cfg)
    assert [c.score for c in cont.history] == [tight.score(c.acc, c.lat_ms) for c in before.history]
    assert any(c.score == -math.inf for c in cont.history)  # over the tighter constraint now
    assert [(c.arch, c.acc, c.lat_ms) for c in cont.history] == [(c.arch, c.acc, c.lat_ms) for c in before.history]
    path = state_path(first, 1)
    assert path.name == "s.correct1.json"
    cont.save(path)
    evaluated = []

    def counting(archs):
        evaluated.extend(archs)
        return accuracy(archs)

    after = run_search(TINY_SPACE, counting, table_ms, tight, cfg, state_path=path, resume=True)
    assert after.resumed_from == 16 and len(after.history) == 24
    assert all(c.lat_ms <= TARGET / 1.25 for c in after.history[16:])  # the new draws meet the corrected target
    assert not set(evaluated) & {c.arch for c in before.history}  # nothing evaluated twice
    assert after.best[0].score > -math.inf and after.best[0].lat_ms <= TARGET / 1.25
    with pytest.raises(ValueError, match="changes only the budget"):
        continued_state(SearchState.load(first), tight, SearchConfig("random", budget=24, seed=3))
    with pytest.raises(ValueError, match="below the 16 candidates"):
        continued_state(SearchState.load(first), tight, SearchConfig("evolution", budget=10, population=6,
                                                                     sample_size=3, batch=2, seed=3))  # fmt: skip


def test_a_uniformly_biased_table_is_corrected_in_one_round(tmp_path):
    device = Device(lambda arch: 1.25)
    out = run(tmp_path, device)
    first = json.loads((tmp_path / CORRECT_FILE).read_text())["rounds"][0]
    assert max(m / t for _, t, m in first["measured"]) == pytest.approx(1.25)
    assert min(m for _, _, m in first["measured"]) > TARGET  # why it ran: every finalist over the target
    assert [(r.round, r.budget) for r in out.rounds] == [(1, 24)]
    assert out.rounds[0].ratio == pytest.approx(1.25)
    assert out.rounds[0].table_target_ms == pytest.approx(TARGET / 1.25)
    k, obj, cfg = device.calls[0]
    assert (k, obj.hard, cfg.budget) == (1, True, 24) and obj.target_ms == pytest.approx(TARGET / 1.25)
    assert out.choice.meets_target and out.choice.index == 0
    assert all(f.measured_ms <= TARGET * (1 + 1e-12) for f in out.attempt)
    assert out.stop == "a finalist meets the target as measured"
    assert state_path(tmp_path / "search_state.json", 1).is_file()


def test_a_bias_that_grows_where_the_search_goes_takes_two_rounds_and_the_ratio_only_grows(tmp_path):
    # the table errs more on the smaller networks the corrected search moves to (MnasNet's point: measure there)
    def bias(arch: str) -> float:
        return 1.25 if table_ms(arch) > TARGET / 1.25 else 1.4

    device = Device(bias)
    out = run(tmp_path, device, rounds=3)
    assert [r.ratio for r in out.rounds] == pytest.approx([1.25, 1.4])
    assert [r.budget for r in out.rounds] == [24, 32]
    assert out.choice.meets_target and out.stop == "a finalist meets the target as measured"
    (tmp_path / "one").mkdir()
    one = run(tmp_path / "one", Device(bias), rounds=1)
    assert len(one.rounds) == 1 and one.choice.meets_target is False and one.stop == "1 correction round(s) done"


def test_retiming_the_finalists_blocks_fixes_what_the_table_under_rated(tmp_path):
    """The table under-rates the networks whose second stage is 24 wide by 30% (an entry timed low); the first
    finalists lean on it and measure over the target. Re-timed, the table is right about them: the remaining
    ratio is 1, the history is predicted again (they are now over the constraint) and the search goes on to
    networks that meet the target as measured."""
    def slow(arch: str) -> bool:
        return TINY_SPACE.decode(arch)[1].width == 24

    fixed = []

    def true_ms(arch: str) -> float:
        return table_ms(arch) * (1.3 if slow(arch) else 1.0)

    def now(arch: str) -> float:  # the table: right about the slow networks once their blocks were re-timed
        return true_ms(arch) if fixed else table_ms(arch)

    device = Device(lambda arch: true_ms(arch) / now(arch), latency=now)
    obj = Objective(TARGET, hard=True)
    state = tmp_path / "search_state.json"
    first = device.attempt(obj, CONFIG, state, False)
    assert any(slow(f.arch) for f in first) and min(f.measured_ms for f in first) > TARGET  # the table's miss
    out = correct(obj, CONFIG, state, first, rounds=2, extra=8, finalists_of=lambda a: a, search_on=device.search_on,
                  smallest_table_ms=lambda: LATS[0], record=tmp_path / CORRECT_FILE,
                  retime=lambda archs: fixed.append(list(archs)), latency=now)  # fmt: skip
    assert fixed == [[f.arch for f in first]]  # the finalists' blocks, timed again once
    assert len(out.rounds) == 1 and out.rounds[0].ratio == pytest.approx(1.0)  # nothing left for the ratio
    assert [t for _, t, _ in out.rounds[0].measured] == pytest.approx([true_ms(f.arch) for f in first])
    cont = SearchState.load(state_path(state, 1))
    assert all(c.lat_ms == pytest.approx(true_ms(c.arch)) for c in cont.history)  # predicted again
    assert out.choice.meets_target and all(f.measured_ms <= TARGET * (1 + 1e-12) for f in out.attempt)


def test_a_resume_replays_the_recorded_ratio_and_a_recorded_choice_starts_no_round(tmp_path):
    run(tmp_path, Device(lambda arch: 1.25))
    recorded = load_corrections(tmp_path / CORRECT_FILE, TARGET)
    again = Device(lambda arch: 1.2)  # measured again, the device reads otherwise: the recorded ratio stands
    out = run(tmp_path, again)
    assert out.rounds == tuple(recorded)
    assert again.calls[0][1].target_ms == pytest.approx(TARGET / 1.25) and again.evaluated == 0
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    frozen = run(fresh, Device(lambda arch: 1.25), frozen=True)
    assert frozen.rounds == () and frozen.choice.meets_target is False
    assert frozen.stop == "the choice for the final training was recorded before this round"


def test_the_loop_stops_where_the_corrected_target_is_below_the_smallest_network(tmp_path):
    out = run(tmp_path, Device(lambda arch: 1.25), smallest=lambda: TARGET)
    assert out.rounds == () and not (tmp_path / CORRECT_FILE).exists()
    assert out.stop.startswith(f"the corrected target {TARGET / 1.25:.4g} ms by the table is below the space's "
                               f"smallest network ({TARGET:.4g} ms)")  # fmt: skip


def test_no_rounds_asked_or_needed(tmp_path):
    out = run(tmp_path, Device(lambda arch: 1.25), rounds=0)
    assert out.rounds == () and out.stop == "no corrections asked for (--correct 0)"
    (tmp_path / "x").mkdir()
    fits = run(tmp_path / "x", Device(lambda arch: 0.9))
    assert fits.rounds == () and fits.stop == "a finalist meets the target as measured"


def test_the_soft_objective_has_no_corrections(tmp_path):
    with pytest.raises(ValueError, match="tighten a hard latency constraint"):
        correct(Objective(TARGET), CONFIG, tmp_path / "s.json", [], rounds=1, extra=4, finalists_of=lambda a: a,
                search_on=None, smallest_table_ms=lambda: 0.0, record=tmp_path / CORRECT_FILE)  # fmt: skip
    from edgecnn.search.job import SearchJob
    from edgecnn.train.task import DataRef

    with pytest.raises(ValueError, match="tighten a hard latency constraint"):
        SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0), correct=1)
    job = SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0, hard=True), SearchConfig(budget=200), correct=2)
    assert job.correct_extra == 100
    assert SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0, hard=True), correct=2,
                     correct_budget=7).correct_extra == 7  # fmt: skip


def test_a_recorded_file_is_checked_field_by_field(tmp_path):
    path = tmp_path / CORRECT_FILE
    from edgecnn.search.correct import Correction

    save_corrections(path, 0.5, [Correction(1, 1.25, 0.4, 24, (("a", 0.39, 0.49),))])
    assert load_corrections(path, 0.5)[0].measured == (("a", 0.39, 0.49),)
    with pytest.raises(ValueError, match="target 0.5 ms, not 0.6"):
        load_corrections(path, 0.6)
    doc = json.loads(path.read_text())
    doc["rounds"][0]["table_target_ms"] = 0.41
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"table_target_ms.*target_ms / ratio = 0.4"):
        load_corrections(path, 0.5)
    save_corrections(path, 0.5, [Correction(1, 1.25, 0.4, 24, ()), Correction(2, 0, 0.5, 32, ())])
    with pytest.raises(ValueError, match=r"rounds\[1\].ratio"):
        load_corrections(path, 0.5)
    path.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="format"):
        load_corrections(path, 0.5)


def test_cli_search_with_corrections_meets_the_target_the_table_missed(tmp_path, monkeypatch, capsys):
    """End to end through ``edgecnn search --hard --correct``: a device 25% slower than its table everywhere; the
    first finalists miss the target as measured, one round searches on under target/1.25 and meets it; the
    results, the closing table and the report say so, and a resume replays the round."""
    pytest.importorskip("matplotlib")
    import edgecnn.search.job as job_mod
    from edgecnn.cli.main import main
    from edgecnn.report import render_html

    def model(job, out, executor):
        return LatencyModel(synthetic_table(TINY_SPACE, num_classes=10, in_chans=1)), out / "latency_table.json"

    def measured(job, result, data, executor):
        from edgecnn.search.rerank import best_distinct

        return [job_mod.Finalist(c.arch, c.acc, c.score, c.lat_ms, 1.25 * c.lat_ms, 0.0,
                                 job.objective.score(c.acc, 1.25 * c.lat_ms), (1.25 * c.lat_ms,) * 3)
                for c in best_distinct(result, job.finalists)]  # fmt: skip

    monkeypatch.setattr(job_mod, "latency_model", model)
    retimed = []  # the synthetic table stays as it is: re-timing it would put this machine's timings in it
    monkeypatch.setattr(LatencyTable, "retime", lambda self, archs, **kw: retimed.append((list(archs), kw)) or {})
    monkeypatch.setattr(job_mod, "measure_finalists", measured)
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE.to_dict()))
    out = tmp_path / "run"
    argv = ["search", "--space", str(space), "--data", "digits", "--limit", "12", "--target", f"{TARGET}ms",
            "--hard", "--estimator", "proxy-synflow", "--budget", "8", "--population", "4", "--sample-size", "2",
            "--batch", "2", "--workers", "0", "--finalists", "2", "--references", "none", "--retries", "0",
            "--threads", "1", "--final-epochs", "0", "--no-progress", "--correct", "2", "--correct-budget", "6",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    shown = " ".join(capsys.readouterr().out.split())
    c = doc["corrections"]
    if not c["rounds"]:  # synflow ranked the smallest networks first: nothing to correct (not this space's case)
        pytest.fail(f"the first finalists met the target: {doc['finalists']}")
    assert [(r["round"], r["budget"]) for r in c["rounds"]] == [(1, 14)] and (c["asked"], c["extra"]) == (2, 6)
    assert c["rounds"][0]["ratio"] == pytest.approx(1.25) and c["stop"] == "a finalist meets the target as measured"
    assert len(doc["history"]) == 14 and doc["chosen"]["meets_target"] is True
    assert len(retimed) == 1 and retimed[0][1]["sweeps"] == job_mod.RETIME_SWEEPS
    assert sorted(retimed[0][0]) == sorted(a for a, _, _ in c["rounds"][0]["measured"])  # the first finalists
    assert all(f["table_ms"] <= TARGET / 1.25 + 1e-12 for f in doc["finalists"])
    assert "correction 1: finalists measured 1.250x the table; searched on to 14 candidates under" in shown
    assert "corrections stopped: a finalist meets the target as measured" in shown
    html = render_html(doc)
    assert "Measured corrections" in html and "round 1: ×1.250" in html
    assert (out / "search_state.correct1.json").is_file()
    assert main([*argv, "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["corrections"] == c and again["history"] == doc["history"]
    assert main([*argv, "--overwrite"]) == 0  # the rounds of the previous search are replaced, not replayed
    assert json.loads((out / "results.json").read_text())["corrections"]["rounds"][0]["round"] == 1


def test_the_time_estimate_counts_the_rounds_at_most():
    """Each round: ``extra`` more candidates at the search's rate per candidate, a re-ranking, the finalists."""
    from edgecnn.latency.compare import COMPARE_TIMING
    from edgecnn.search.job import FINALIST_PAUSE_S, FINALIST_ROUNDS, SearchJob, estimate_time
    from edgecnn.train.task import DataRef

    def job(correct: int) -> SearchJob:
        return SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0, hard=True), SearchConfig(budget=40),
                         estimator="proxy-naswot", rerank=4, finalists=3, correct=correct, correct_budget=10)  # fmt: skip

    kw = {"train_images": 1000, "val_images": 100, "num_classes": 10, "in_chans": 1, "mac_rate": 1e9}
    plain, two = estimate_time(job(0), **kw).seconds, estimate_time(job(2), **kw).seconds
    assert "corrections (at most)" not in plain
    sitting = 3 * FINALIST_ROUNDS * COMPARE_TIMING.max_seconds + (FINALIST_ROUNDS - 1) * FINALIST_PAUSE_S
    per_round = plain["search"] / 40 * 10 + plain["rerank"] + sitting
    assert two["corrections (at most)"] == pytest.approx(2 * per_round)
    assert {k: v for k, v in two.items() if k != "corrections (at most)"} == plain
