import json

import pytest
from search_helpers import TINY_SPACE

from edgecnn.cli.main import main
from edgecnn.search.evolution import Candidate, _result
from edgecnn.search.job import SearchJob
from edgecnn.search.objective import Objective
from edgecnn.search.rerank import FORMAT, rerank
from edgecnn.train.task import DataRef


def _search(proxy: dict[str, float], lat: dict[str, float]) -> tuple:
    history = [Candidate(i, a, s, lat[a], s, None) for i, (a, s) in enumerate(proxy.items())]
    return _result(history, 0)


PROXY = {"a": 40.0, "b": 30.0, "c": 20.0, "d": 10.0, "e": 5.0}  # the search's order: a b c d e
LAT = {"a": 1.0, "b": 0.9, "c": 0.8, "d": 0.7, "e": 0.6}
SHORT = {"a": 0.30, "b": 0.50, "c": 0.45, "d": 0.60, "e": 0.9}
SPEED_LOSS = {"a": 1.7, "b": 2.1, "c": 1.9, "d": 2.0, "e": 1.5}  # mean training loss: a learns fastest of a-d


def test_rerank_orders_the_best_k_by_the_mean_rank_by_hand(tmp_path):
    result = _search(PROXY, LAT)
    calls: list[list[str]] = []

    def short(archs):
        calls.append(list(archs))
        return [{"top1": SHORT[a], "speed": -SPEED_LOSS[a]} for a in archs]

    # k = 4 (e is left out): proxy ranks a4 b3 c2 d1, short ranks a1 b3 c2 d4 -> means a2.5 b3 c2 d2.5;
    # b first, then a and d tie at 2.5 and the higher short top-1 (d 0.60) goes first, then c
    new, rows = rerank(result, 4, short, path=tmp_path / "r.json", recipe={"steps": 3}, chunk=3)
    assert [r.arch for r in rows] == ["b", "d", "a", "c"]
    assert [r.blend for r in rows] == [3.0, 2.5, 2.5, 2.0]
    assert [c.arch for c in new.best] == ["b", "d", "a", "c", "e"]  # the rest keep their order after the k
    assert new.history == result.history
    assert calls == [["a", "b", "c"], ["d"]]  # in chunks, recorded after each
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["format"] == FORMAT and doc["top1"] == {a: SHORT[a] for a in "abcd"}
    assert doc["speed"] == {a: -SPEED_LOSS[a] for a in "abcd"}  # both readings of each training are kept
    assert rows[0].short_speed == -2.1 and rows[0].by == "top1"
    # read back: nothing is trained again; a larger k trains only the new one
    calls.clear()
    assert rerank(result, 4, short, path=tmp_path / "r.json", recipe={"steps": 3})[1] == rows
    assert calls == []
    rerank(result, 5, short, path=tmp_path / "r.json", recipe={"steps": 3})
    assert calls == [["e"]]
    with pytest.raises(ValueError, match="another recipe"):
        rerank(result, 4, short, path=tmp_path / "r.json", recipe={"steps": 4})
    (tmp_path / "r.json").write_text(json.dumps({**doc, "top1": {"a": 7.0}}))
    with pytest.raises(ValueError, match=r"top1\['a'\]' must be an accuracy in \[0, 1\]"):
        rerank(result, 4, short, path=tmp_path / "r.json", recipe={"steps": 3})
    with pytest.raises(ValueError, match="at least 2"):
        rerank(result, 1, short)


def test_rerank_counts_each_network_once():
    # a duplicate in the history (evolution re-draws a network; the cache scores it again) is one candidate
    history = [Candidate(0, "a", 9.0, 1.0, 9.0, None), Candidate(1, "a", 9.0, 1.0, 9.0, 0),
               Candidate(2, "b", 8.0, 1.0, 8.0, None), Candidate(3, "c", 7.0, 1.0, 7.0, None)]  # fmt: skip
    new, rows = rerank(_result(history, 0), 2, lambda archs: [{"top1": {"a": 0.1, "b": 0.2}[x]} for x in archs])
    # ranks: a (2, 1) and b (1, 2) tie at 1.5; b's short top-1 is the higher, so b goes first; c is not trained
    assert [r.arch for r in rows] == ["b", "a"] and rows[0].blend == rows[1].blend == 1.5
    assert [c.index for c in new.best] == [2, 0, 1, 3]  # a's duplicate follows with the rest


def test_rerank_by_training_speed_by_hand(tmp_path):
    """The estimate blended with the training speed (Ru et al. 2021) instead of the top-1, from the same trainings:
    a file of an earlier version (top-1 only) trains the networks again for their speed."""
    result = _search(PROXY, LAT)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"format": FORMAT, "recipe": {"steps": 3}, "top1": {a: SHORT[a] for a in "abcd"}}))
    calls: list[list[str]] = []

    def short(archs):
        calls.append(list(archs))
        return [{"top1": SHORT[a], "speed": -SPEED_LOSS[a]} for a in archs]

    assert rerank(result, 4, short, path=path, recipe={"steps": 3})[1][0].short_speed is None  # top-1: no retraining
    assert calls == []
    new, rows = rerank(result, 4, short, by="speed", path=path, recipe={"steps": 3}, chunk=4)
    assert calls == [["a", "b", "c", "d"]]
    # proxy ranks a4 b3 c2 d1; speed (-loss) a -1.7, b -2.1, c -1.9, d -2.0 ranks a4 b1 c3 d2 -> a4 b2 c2.5 d1.5;
    # a first, then c, b, d
    assert [r.arch for r in rows] == ["a", "c", "b", "d"] and [r.blend for r in rows] == [4.0, 2.5, 2.0, 1.5]
    assert [r.by for r in rows] == ["speed"] * 4 and rows[0].short_top1 == SHORT["a"]
    assert [c.arch for c in new.best] == ["a", "c", "b", "d", "e"]
    calls.clear()
    assert rerank(result, 4, short, by="speed", path=path, recipe={"steps": 3})[1] == rows and calls == []
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "speed": {"z": -1.0}}))
    with pytest.raises(ValueError, match=r"speed\['z'\]' must be a network with a top-1"):
        rerank(result, 4, short, by="speed", path=path, recipe={"steps": 3})
    with pytest.raises(ValueError, match="not a reading of a short training"):
        rerank(result, 4, short, by="loss")
    with pytest.raises(ValueError, match=r"gave \['top1'\], not 'top1' and 'speed'"):
        rerank(result, 4, lambda archs: [{"top1": 0.5} for _ in archs], by="speed")


def test_rerank_setting_is_checked():
    with pytest.raises(ValueError, match="rerank short-trains the best N >= 2"):
        SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0, hard=True), estimator="proxy-naswot", rerank=1)
    with pytest.raises(ValueError, match="every candidate is trained already"):
        SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0), estimator="train", rerank=3)
    with pytest.raises(ValueError, match="reads the short trainings of rerank, which is off"):
        SearchJob(TINY_SPACE, DataRef("digits"), Objective(1.0, hard=True), estimator="proxy-naswot", rerank_by="speed")


def test_cli_proxy_search_with_rerank(tmp_path, capsys, monkeypatch):
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE.to_dict()))
    out = tmp_path / "run"
    argv = ["search", "--space", str(space), "--data", "digits", "--limit", "12", "--target", "5ms", "--hard",
            "--estimator", "proxy-naswot", "--budget", "6", "--population", "3", "--sample-size", "2", "--batch",
            "2", "--workers", "0", "--finalists", "2", "--max-seconds", "0.2", "--references", "none", "--retries",
            "0", "--threads", "1", "--final-epochs", "0", "--no-progress", "--rerank", "3", "--train-steps", "4",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "short top-1" in shown and "proxy-naswot" in shown and "reordered by the mean rank" in shown
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rerank"]
    assert len(rows) == 3
    assert [r["blend"] for r in rows] == sorted((r["blend"] for r in rows), reverse=True)
    assert doc["finalists"][0]["arch"] == rows[0]["arch"]  # the finalists come from the reranked order
    distinct = list(dict.fromkeys(c["arch"] for c in sorted(doc["history"], key=lambda c: -c["score"])))
    assert {r["arch"] for r in rows} == set(distinct[:3])  # the three best by NASWOT
    assert sum(r["blend"] for r in rows) == pytest.approx(6.0)  # mean ranks of 3: 1 + 2 + 3 over both
    trained = json.loads((out / "rerank.json").read_text())["top1"]
    assert {r["arch"]: r["short_top1"] for r in rows} == trained
    assert main([*argv, "--resume"]) == 0  # read back, not retrained
    assert json.loads((out / "results.json").read_text())["rerank"] == rows
    other = [x if x != "4" else "5" for x in argv]  # --train-steps 5: another recipe
    assert main([*other, "--resume"]) == 2
    # the same search reordered by the training speed: the same short trainings, read the other way
    fast = tmp_path / "speed"
    monkeypatch.setenv("COLUMNS", "240")  # a table one column wider: its headers unwrapped
    by_speed = [*(x if x != str(out) else str(fast) for x in argv), "--rerank-by", "speed"]
    assert main(by_speed) == 0
    shown = capsys.readouterr().out
    assert "train speed" in shown and "short training's training speed" in shown
    doc = json.loads((fast / "results.json").read_text())
    srows = doc["rerank"]
    assert doc["rerank_by"] == "speed" and {r["by"] for r in srows} == {"speed"}
    assert {r["arch"]: r["short_top1"] for r in srows} == trained  # same recipe and seed: the same trainings
    assert all(r["short_speed"] < 0 for r in srows)  # minus a mean cross-entropy
    est = {r["arch"]: r["estimate"] for r in srows}
    rank = {a: sorted(est.values()).index(v) + 1 for a, v in est.items()}  # NASWOT scores differ here
    spd = sorted(r["short_speed"] for r in srows)
    for r in srows:  # the blend is the mean of the two ranks (no ties among these speeds)
        assert r["blend"] == pytest.approx((rank[r["arch"]] + spd.index(r["short_speed"]) + 1) / 2)
    assert main([*argv[:-2], "--out", str(tmp_path / "x"), "--rerank", "0", "--rerank-by", "speed"]) == 2
    assert "reads the short trainings of rerank, which is off" in capsys.readouterr().err
