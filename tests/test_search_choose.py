"""Which finalist a search trains: the measurement decides (``Objective.choose``), and the CLI and the report say
which one and why — above all when no finalist meets a hard target as measured."""

from __future__ import annotations

import json
import math

import pytest

from edgecnn.cli.search_cmd import _closing_table
from edgecnn.search.objective import Objective


def test_hard_constraint_takes_the_first_finalist_within_the_target_as_measured():
    obj = Objective(1.0, hard=True)
    c = obj.choose([(0.9, 1.0), (0.8, 0.95)])  # on the target is within it
    assert (c.index, c.meets_target) == (0, True) and c.reason == "the best finalist within the target as measured"
    c = obj.choose([(0.9, 1.08), (0.85, 1.02), (0.8, 0.97), (0.7, 0.5)])  # order = the table's, not accuracy
    assert (c.index, c.meets_target) == (2, True)
    assert c.reason.endswith(": the 2 ranked above it by the table measured over 1 ms")


def test_hard_constraint_with_no_finalist_within_it_takes_the_fastest_and_says_how_far_over():
    c = Objective(0.414, hard=True).choose([(774.5, 0.4432), (774.0, 0.4479), (773.2, 0.4334)])  # search_seeds seed 2
    assert (c.index, c.meets_target) == (2, False)
    assert c.reason == "no finalist meets the target as measured: the fastest, 0.4334 ms, is 4.7% over 0.414 ms"
    assert Objective(1.0, hard=True).choose([(0.5, 2.0), (0.4, 2.0)]).index == 0  # a tie: the table's order


def test_soft_objective_takes_the_highest_score_by_the_measured_latency():
    obj = Objective(1.0, w=-0.07)
    # by hand: 0.80·1.5^-0.07 = 0.77761, 0.79·0.9^-0.07 = 0.79585, 0.78·0.5^-0.07 = 0.81878
    c = obj.choose([(0.80, 1.5), (0.79, 0.9), (0.78, 0.5)])
    assert (c.index, c.meets_target) == (2, None) and c.reason.endswith("(#3 by the table)")
    assert obj.score(0.78, 0.5) == pytest.approx(0.78 * 2**0.07) == pytest.approx(0.81878, abs=1e-5)
    assert obj.choose([(0.8, 1.0), (0.8, 1.0)]).index == 0  # a tie keeps the table's order
    assert obj.choose([(0.8, 1.0)]).reason == "the highest objective by the measured latency"
    with pytest.raises(ValueError, match="no finalists"):
        obj.choose([])


def _doc(finalists, chosen, **extra):
    return {"objective": {"formula": "max ACC s.t. LAT <= 0.414 ms"}, "estimator": "proxy-naswot", "history": [{}],
            "front": [0], "timings": {"search_s": 1.0}, "finalists": finalists, "chosen": chosen} | extra


def test_closing_table_marks_the_choice_and_warns_when_the_hard_target_is_missed(tmp_path, capsys):
    """A hard target every finalist misses as measured: the JSON holds null scores (−inf has no JSON form); the
    table shows "over" instead of failing on them, stars the choice and names the fix."""
    fins = [{"arch": a, "acc": s, "score": s, "table_ms": t, "measured_ms": m, "measured_score": None}
            for a, s, t, m in (("a", 774.5, 0.410, 0.443), ("b", 774.0, 0.401, 0.448), ("c", 773.2, 0.408, 0.433))]
    choice = Objective(0.414, hard=True).choose([(f["acc"], f["measured_ms"]) for f in fins])
    doc = json.loads(json.dumps(_doc(fins, {"arch": "c", "index": choice.index, "meets_target": choice.meets_target,
                                              "reason": choice.reason})))  # fmt: skip
    _closing_table(doc, tmp_path)
    out = capsys.readouterr().out
    assert out.count("over") >= 3 and "3*" in out and "1*" not in out
    assert "chosen (*): finalist 3, no finalist meets the target as measured" in " ".join(out.split())
    assert "--calibrate N" in out


def test_closing_table_reads_a_results_file_from_before_the_choice_was_recorded(tmp_path, capsys):
    fins = [{"arch": "a", "acc": 0.5, "score": 0.5, "table_ms": 0.4, "measured_ms": 0.41, "measured_score": 0.5}]
    doc = _doc(fins, None, estimator="supernet")  # an accuracy estimate: the score shown to 4 places
    del doc["chosen"]
    _closing_table(doc, tmp_path)
    out = capsys.readouterr().out
    assert "0.5000" in out and "chosen (*)" not in out and "1*" not in out


def test_report_stars_the_choice_and_says_when_the_hard_target_is_missed():
    pytest.importorskip("matplotlib")
    from edgecnn.report import render_html

    hist = [{"index": i, "arch": a, "lat_ms": lat, "acc": acc, "generation": 0}
            for i, (a, lat, acc) in enumerate([("a", 0.41, 0.7), ("b", 0.40, 0.69)])]  # fmt: skip
    fins = [{"arch": "a", "acc": 0.7, "score": 0.7, "table_ms": 0.41, "measured_ms": 0.45, "measured_iqr_ms": 0.01,
             "measured_score": None},
            {"arch": "b", "acc": 0.69, "score": 0.69, "table_ms": 0.40, "measured_ms": 0.43, "measured_iqr_ms": 0.01,
             "measured_score": None}]  # fmt: skip
    choice = Objective(0.414, hard=True).choose([(f["acc"], f["measured_ms"]) for f in fins])
    doc = {"kind": "search", "schema": 1, "space": {"name": "mbv3-32", "input_size": 32},
           "objective": {"target_ms": 0.414, "formula": "max ACC s.t. LAT <= 0.414 ms", "hard": True},
           "search": {"algorithm": "evolution"}, "estimator": "supernet", "latency": {"backend": "eager", "threads": 1},
           "history": hist, "front": [0, 1], "finalists": fins,
           "chosen": {"arch": "b", "index": choice.index, "meets_target": False, "reason": choice.reason},
           "final": {"arch": "b", "epochs": 2, "top1": 0.72, "measured_ms": 0.43}}  # fmt: skip
    html = render_html(doc)
    assert '<td class="l">2*</td>' in html and '<td class="l">1*</td>' not in html
    assert ("Chosen (*): no finalist meets the target as measured: the fastest, 0.43 ms, is 3.9% over 0.414 ms. "
            "The hard latency target is not met.") in html


def test_a_resume_keeps_the_recorded_choice_while_its_network_is_a_finalist(tmp_path):
    """Measured again on resume, the finalists may order differently; the final training under way is of the
    network chosen first, so that choice is kept — and chosen afresh only when it is no finalist any more."""
    from edgecnn.search.choice import CHOICE_FILE, KEPT, choose_finalist

    obj, path = Objective(1.0, hard=True), tmp_path / CHOICE_FILE
    first = choose_finalist(obj, [("a", 0.9, 1.05), ("b", 0.8, 0.98)], path)
    assert first == {"arch": "b", "index": 1, "meets_target": True,
                     "reason": "the best finalist within the target as measured: the 1 ranked above it by the table "
                               "measured over 1 ms"}  # fmt: skip
    assert json.loads(path.read_text()) == first
    again = choose_finalist(obj, [("b", 0.8, 1.01), ("a", 0.9, 0.99)], path)  # a now measures within, b over
    assert (again["arch"], again["index"], again["meets_target"]) == ("b", 0, True)
    assert again["reason"] == first["reason"] + KEPT
    assert choose_finalist(obj, [("b", 0.8, 1.01)], path)["reason"].count(KEPT) == 1  # not appended twice
    fresh = choose_finalist(obj, [("c", 0.7, 0.9), ("a", 0.9, 0.99)], path)  # b is gone: chosen again, recorded
    assert (fresh["arch"], fresh["index"]) == ("c", 0) and json.loads(path.read_text())["arch"] == "c"
    path.write_text("{broken")
    assert choose_finalist(obj, [("a", 0.9, 0.99)], path)["arch"] == "a"  # an unreadable record: chosen again
    assert choose_finalist(obj, [("a", 0.9, 0.99)], None)["reason"] == "the best finalist within the target as measured"


def test_finalists_are_timed_back_to_back_by_their_fastest_runs(monkeypatch):
    """measure_finalists: all finalists in one interleaved sitting; a finalist's latency is the median over rounds
    of its fastest run, and its score under a hard target is by that number."""
    from types import SimpleNamespace

    from edgecnn.executor import Executor
    from edgecnn.latency import compare as compare_mod
    from edgecnn.latency.timing import summarize
    from edgecnn.search import job as job_mod

    script = {"a": [[0.50, 0.70], [0.43, 0.60], [0.44, 0.52]], "b": [[0.40, 0.41], [0.39, 0.45], [0.70, 0.71]]}
    seen = {}

    def scripted(nets, shape, *, backend, threads, device, rounds, pause_s):
        seen.update(archs=list(nets), shape=shape, backend=backend, threads=threads, rounds=rounds, pause_s=pause_s)
        return "cpu", {a: [summarize(r) for r in script[a]] for a in nets}

    monkeypatch.setattr(compare_mod, "fastest_runs", scripted)
    monkeypatch.setattr(job_mod, "build", lambda arch, **_: arch)
    cands = [SimpleNamespace(arch=a, acc=acc, score=acc, lat_ms=0.41) for a, acc in (("a", 0.7), ("b", 0.6))]
    job = SimpleNamespace(finalists=2, space=SimpleNamespace(input_size=32), backend="onnxruntime", threads=1,
                          device="cpu", objective=Objective(0.42, hard=True), anchor=None)  # fmt: skip
    data = SimpleNamespace(num_classes=10, in_chans=3)
    with Executor("serial") as ex:
        fa, fb = job_mod.measure_finalists(job, SimpleNamespace(best=cands), data, ex)
    assert seen == {"archs": ["a", "b"], "shape": (1, 3, 32, 32), "backend": "onnxruntime", "threads": 1,
                    "rounds": job_mod.FINALIST_ROUNDS, "pause_s": job_mod.FINALIST_PAUSE_S}  # fmt: skip
    assert fa.measured_rounds_ms == (0.50, 0.43, 0.44) and fa.measured_ms == 0.44 and fb.measured_ms == 0.40
    assert fa.measured_score == -math.inf and fb.measured_score == 0.6  # 0.44 ms is over 0.42, 0.40 within
    assert Objective(0.42, hard=True).choose([(f.acc, f.measured_ms) for f in (fa, fb)]).index == 1


def test_finalists_read_against_an_anchor_are_its_share_in_each_round_times_its_latency(monkeypatch):
    """With an anchor (the network the target was set by, e.g. MobileNetV3-Small x0.75 at 0.408 ms), the
    finalists are timed in the same rounds as the anchor's network and each one reads as its median per-round
    ratio to it times the anchor's recorded latency: a machine 35% slower in this sitting reads the same."""
    from types import SimpleNamespace

    from edgecnn.executor import Executor
    from edgecnn.latency import compare as compare_mod
    from edgecnn.latency.compare import ANCHOR, Anchor
    from edgecnn.latency.timing import summarize
    from edgecnn.search import job as job_mod

    slow = 1.35  # this sitting: everything 35% slower than when the anchor read 0.408 ms
    script = {"a": (0.40, 0.43, 0.41), "b": (0.45, 0.40, 0.44), ANCHOR: (0.408, 0.430, 0.408)}  # at nominal speed
    built = []

    def scripted(nets, shape, *, backend, threads, device, rounds, pause_s):
        return "cpu", {n: [summarize([slow * v]) for v in script[n]] for n in nets}

    monkeypatch.setattr(compare_mod, "fastest_runs", scripted)
    monkeypatch.setattr(compare_mod, "build", lambda arch, **kw: built.append((arch, kw)) or arch)
    monkeypatch.setattr(job_mod, "build", lambda arch, **_: arch)
    cands = [SimpleNamespace(arch=a, acc=acc, score=acc, lat_ms=0.41) for a, acc in (("a", 0.7), ("b", 0.6))]
    anchor = Anchor("conv_k3_c8 gap fc", 0.408)
    job = SimpleNamespace(finalists=2, space=SimpleNamespace(input_size=32), backend="onnxruntime", threads=1,
                          device="cpu", objective=Objective(0.42, hard=True), anchor=anchor)  # fmt: skip
    with Executor("serial") as ex:
        fa, fb = job_mod.measure_finalists(job, SimpleNamespace(best=cands), SimpleNamespace(num_classes=10,
                                                                                            in_chans=3), ex)  # fmt: skip
    assert built == [(anchor.arch, {"num_classes": 10, "in_chans": 3})]
    # a: ratios 0.40/0.408, 0.43/0.430, 0.41/0.408 -> median 1.0 -> 0.408 ms; b: 0.45/0.408, 0.40/0.43, 0.44/0.408
    assert fa.measured_ms == pytest.approx(0.408) and fb.measured_ms == pytest.approx(0.408 * 0.44 / 0.408)
    assert fa.measured_rounds_ms == pytest.approx(tuple(slow * v for v in script["a"]))  # the raw runs are kept
    assert fa.measured_score == 0.7 and fb.measured_score == -math.inf  # 0.408 within 0.42; 0.44 over it
    # without the anchor the same sitting reads every finalist over the target
    job = SimpleNamespace(**{**vars(job), "anchor": None})
    with Executor("serial") as ex:
        raw = job_mod.measure_finalists(job, SimpleNamespace(best=cands), SimpleNamespace(num_classes=10,
                                                                                         in_chans=3), ex)  # fmt: skip
    assert all(f.measured_score == -math.inf for f in raw)
