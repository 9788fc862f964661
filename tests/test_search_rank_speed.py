"""search_rank's second round: the training speed (Ru et al. 2021) of each held-out subnet's short training,
recorded one subnet at a time by two processes (forward and backward), judged on the confirmation sets."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import search_rank as sr  # noqa: E402
from _work import Work  # noqa: E402

from edgecnn.search.estimate import kendall_tau  # noqa: E402
from edgecnn.train import EpochStats, EvalResult, TrainResult  # noqa: E402


def _result(loss: float, top1: float) -> TrainResult:
    ev = EvalResult(top1=top1, top5=1.0, loss=loss, per_class=(top1,) * 10, num_images=10, seconds=0.0)
    st = EpochStats(epoch=1, steps=300, lr=0.0, train_loss=loss, train_top1=0.3, images_per_s=1.0, seconds=1.0,
                    test=None)  # fmt: skip
    return TrainResult(final=ev, ema=None, history=(st,), steps=300, seconds=1.0, checkpoint=None)


@pytest.fixture
def fake(monkeypatch):
    """Two confirmation sets of 2 subnets and a first set of 3; a subnet's loss is its name's length / 10."""
    calls: list[str] = []

    def run(arch, split, settings, *, seed):
        assert settings.train_steps == 300 and seed == 0  # the train-300 stage's recipe and seed
        calls.append(arch)
        return _result(len(arch) / 10, 0.4)

    monkeypatch.setattr(sr, "short_train_run", run)
    monkeypatch.setattr(sr, "confirm_sets", lambda space, scale, archs: {2025: ["c1", "c11"], 2026: ["d1", "d111"]})
    return calls


def test_speed_stage_runs_the_confirmation_sets_first_and_a_second_process_from_the_end(tmp_path, fake):
    w = Work(tmp_path)
    first = ["a", "aa", "aaa"]
    sr.speed_stage(w, None, None, sr.SCALES["full"], first, backward=True)
    assert fake == ["aaa", "aa", "a", "d111", "d1", "c11", "c1"]  # backward: the first set's last subnet first
    fake.clear()
    sr.speed_stage(w, None, None, sr.SCALES["full"], first)  # all recorded: nothing trains again
    assert fake == []
    got = w.refresh()
    assert got["confirm2026-speed-300"]["d111"]["speed"] == pytest.approx(-0.4)
    assert got["confirm2026-speed-300"]["d111"]["train_loss"] == pytest.approx(0.4)
    assert got["speed-machine"]["isa"]
    speeds, cpu, top1 = sr.speed_scores(w, "speed-300", first)
    assert speeds == pytest.approx([-0.1, -0.2, -0.3]) and top1 == [0.4] * 3 and cpu >= 0
    assert sr.speed_scores(w, "speed-300", [*first, "missing"]) is None


def test_speed_stage_forward_order(tmp_path, fake):
    sr.speed_stage(Work(tmp_path), None, None, sr.SCALES["full"], ["a", "aa"])
    assert fake == ["c1", "c11", "d1", "d111", "a", "aa"]  # the sets the estimator is judged on come first


def test_measured_rows_score_the_training_speed_and_its_blend_only_when_every_subnet_has_one():
    scale = sr.SCALES["full"]
    truth, lat = [0.60, 0.62, 0.64, 0.66], [1.0, 1.05, 2.0, 3.0]
    speed = [-1.9, -1.7, -1.8, -1.5]
    again = [0.41, 0.46, 0.47, 0.52]
    one = sr.Measured(truth, [0.4, 0.5, 0.45, 0.5], lat, [1.0, 2.0, 3.0, 4.0], 1.0, 1.0, speed, 5.0, again)
    rows = one.rows(scale)
    assert rows[sr.SPEED]["tau"] == pytest.approx(kendall_tau(speed, truth)[0])  # 5 of 6 pairs agree: 4/6
    assert rows[sr.SPEED]["tau"] == pytest.approx(4 / 6)
    assert rows[sr.SPEED]["cpu_seconds"] == 5.0
    assert f"two-fidelity-naswot+{sr.SPEED}" in rows
    assert rows["short-train-300-again"]["tau"] == pytest.approx(1.0)  # the second draw orders them as the truth
    none = sr.Measured(truth, [0.4, 0.5, 0.45, 0.5], lat, [1.0, 2.0, 3.0, 4.0], 1.0, 1.0)
    assert sr.SPEED not in none.rows(scale) and f"two-fidelity-naswot+{sr.SPEED}" not in none.rows(scale)
    assert (one + none).speed is None  # a pool is scored only where every set has its speeds
    assert (one + none).again is None
    assert (one + one).speed == speed + speed and (one + one).speed_cpu == 10.0 and (one + one).again == again * 2


def test_the_second_round_criterion_names_the_training_speed_alone():
    assert "training speed" in sr.SPEED_NAMED and "alone" in sr.SPEED_NAMED and "32" in sr.SPEED_CRITERION
    assert sr.reaches({"tau": 0.5, "p_value": 0.049}) and not sr.reaches({"tau": 0.49, "p_value": 0.001})


# ---------------------------------------------------------------- the third round: a new set, the blend named


def test_third_set_is_new_subnets_drawn_with_its_own_seed():
    from edgecnn.search.space import get_space

    space, scale = get_space(sr.SPACE), sr.SCALES["full"]
    first = sr.held_out(space, scale.n)
    b = sr.third_set(space, scale, first)
    earlier = set(first).union(*sr.confirm_sets(space, scale, first).values())
    assert len(b) == len(set(b)) == 32 and not set(b) & earlier and len(earlier) == 56
    assert b == sr.third_set(space, scale, first)  # the same draw every time (seed 2027)


def test_third_trainings_record_ground_truth_then_short_training_per_subnet(tmp_path, monkeypatch, fake):
    order: list[str] = []
    monkeypatch.setattr(sr, "third_set", lambda space, scale, archs: ["t1", "t22", "t333"])
    monkeypatch.setattr(sr, "train_top1", lambda arch, split, epochs, bs: order.append(f"gt {arch}") or 0.6)
    w = Work(tmp_path)
    sr.third_trainings(w, None, None, sr.SCALES["full"], [], backward=True)
    assert order == ["gt t333", "gt t22", "gt t1"] and fake == ["t333", "t22", "t1"]
    order.clear()
    sr.third_trainings(w, None, None, sr.SCALES["full"], [])  # all recorded
    assert order == [] and sorted(w.refresh()["confirm2027-speed-300"]) == ["t1", "t22", "t333"]
    # the machine the round's trainings ran on, with its instruction set, recorded once
    here = sr.fingerprint(backend="eager", threads=1).to_dict()
    assert {k: w.stages["confirm2027-machine"][k] for k in ("cpu", "isa")} == {k: here[k] for k in ("cpu", "isa")}


def test_third_round_judges_the_named_blend_on_the_new_set_alone(tmp_path):
    w = Work(tmp_path)
    b = ["n1", "n2", "n3", "n4", "n5"]
    truth = [0.60, 0.61, 0.62, 0.63, 0.64]
    speed = [-1.9, -1.8, -1.85, -1.7, -1.6]
    for arch, t, sp in zip(b[:-1], truth, speed):
        w.add("confirm2027-gt", arch, {"top1": t, "cpu_seconds": 1.0})
        w.add("confirm2027-speed-300", arch, {"top1": 0.4, "speed": sp, "cpu_seconds": 2.0})
    naswot = lambda archs: [1.0, 3.0, 2.0, 5.0, 4.0][: len(archs)]  # noqa: E731
    part = sr.third_round(w, b, sr.SCALES["full"], naswot, 2000)
    assert part["complete"] is False and part["done"] == 4 and part["met"] is None
    w.add("confirm2027-gt", "n5", {"top1": truth[4], "cpu_seconds": 1.0})
    w.add("confirm2027-speed-300", "n5", {"top1": 0.45, "speed": speed[4], "cpu_seconds": 2.0})
    w.done("confirm2027-machine", {"cpu": "AMD EPYC", "isa": "vnni"})
    got = sr.third_round(w, b, sr.SCALES["full"], naswot, 2000)
    assert got["trained_on"] == {"cpu": "AMD EPYC", "isa": "vnni"}
    rows = got["estimators"]
    # mean ranks: naswot 1,3,2,5,4 and speed 1,3,2,4,5 -> 1,3,2,4.5,4.5: 8 concordant pairs, 1 discordant, 1 tie
    blend = rows["two-fidelity-naswot+training-speed"]
    assert blend["scores"] == [1.0, 3.0, 2.0, 4.5, 4.5]
    assert blend["tau"] == pytest.approx(kendall_tau(blend["scores"], truth)[0])
    assert got["preregistered"] == "two-fidelity-naswot+training-speed" and got["met"] is sr.reaches(blend)
    assert rows["training-speed"]["tau"] == pytest.approx(0.8)  # 9 of 10 pairs agree
    assert "tau_equal_latency" not in blend and got["latency_recorded"] is False
    for arch, ms in zip(b, [1.0, 1.05, 2.0, 3.0, 3.1]):
        w.add("confirm2027-latency", arch, ms)
    timed = sr.third_round(Work(tmp_path), b, sr.SCALES["full"], naswot, 2000)
    assert timed["latency_recorded"] and "measured-latency" in timed["estimators"]
    # two pairs within 10% of latency (n1/n2, n4/n5); the blend ties n4 and n5, so one pair is counted
    assert timed["estimators"]["two-fidelity-naswot+training-speed"]["pairs_equal_latency"] == 1
    assert timed["estimators"]["training-speed"]["pairs_equal_latency"] == 2


def test_a_recorded_supernet_stage_is_not_trained_again_and_says_so(tmp_path, monkeypatch):
    """main writes the results after a supernet stage only when it ran now (it used to score every estimator again
    for each recorded stage)."""
    w = Work(tmp_path)
    w.done("supernet-sandwich", {"held_out": [0.5], "predictor_set": [], "cpu_seconds": 1.0})
    monkeypatch.setattr(sr, "train_supernet", lambda *a, **k: pytest.fail("trained a recorded supernet again"))
    assert sr.supernet_stage(w, "supernet-sandwich", "sandwich", None, None, None, [], [], sr.SCALES["full"]) is False


def test_the_target_over_the_rounds_holds_only_after_a_bonferroni_correction():
    """Three preregistered rounds are three tests of one target: the round that meets it must also hold at 0.05 / 3.
    """
    def row(tau, p):
        return {"tau": tau, "p_value": p}

    unseen = {"blend": row(0.48, 0.00014), "speed": row(0.40, 0.0012)}
    confirmed = {"preregistered": "blend", "second_round": {"preregistered": "speed"},
                 "unseen": {"complete": True, "estimators": unseen}}  # fmt: skip
    third = {"complete": True, "preregistered": "nw+speed", "estimators": {"nw+speed": row(0.565, 6.8e-6)}}
    got = sr.rounds_verdict(confirmed, third)
    assert [(k, v["met"]) for k, v in got["rounds"].items()] == [("first", False), ("second", False), ("third", True)]
    assert got["met_by"] == "third" and got["bonferroni_alpha"] == pytest.approx(0.05 / 3)
    assert got["holds_after_correction"] is True
    # tau 0.5 at p 0.03 meets a round's own criterion (p < 0.05) but not the corrected one (0.0167)
    third["estimators"]["nw+speed"] = row(0.52, 0.03)
    weak = sr.rounds_verdict(confirmed, third)
    assert weak["met"] is True and weak["holds_after_correction"] is False
    # a round still running is not judged; nothing judged is nothing met
    third["complete"] = False
    assert list(sr.rounds_verdict(confirmed, third)["rounds"]) == ["first", "second"]
    assert sr.rounds_verdict(None, None) == {"rounds": {}, "met": False, "met_by": None, "bonferroni_alpha": 0.05,
                                            "holds_after_correction": False}  # fmt: skip
