"""The long benchmarks' work folder (benchmarks/_work.py): processes sharing it keep each other's stages and skip
each other's claimed stages — the full NetAdapt benchmark runs one process per core on it."""

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _work import Work  # noqa: E402


def _record_many(path: str, tag: str, n: int, start) -> None:
    w = Work(Path(path))
    start.wait(60)  # all writers opened the folder (empty) before any writes: their views are stale at once
    for i in range(n):
        w.done(f"{tag}-{i}", {"i": i, "pid": os.getpid()})
        time.sleep(0.005)


def test_concurrent_writers_keep_every_stage(tmp_path):
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_record_many, args=(str(tmp_path), tag, 25, start)) for tag in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    stages = json.loads((tmp_path / "stages.json").read_text())
    # without the re-read under the lock, each writer's last write drops the others' stages
    assert sorted(stages) == sorted(f"{t}-{i}" for t in "abc" for i in range(25))
    assert Work(tmp_path).stages == stages


def _add_many(path: str, tag: str, n: int, start) -> None:
    w = Work(Path(path))
    start.wait(60)
    for i in range(n):
        w.add("pieces", f"{tag}-{i}", {"i": i})
        time.sleep(0.005)


def test_concurrent_writers_of_one_stage_keep_every_piece(tmp_path):
    # search_rank's confirmation set: one process records ground truths and short trainings forward, another
    # short trainings backward, into the same stage; a whole-stage write would drop the other's pieces
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path), tag, 25, start)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    pieces = json.loads((tmp_path / "stages.json").read_text())["pieces"]
    assert sorted(pieces) == sorted(f"{t}-{i}" for t in "ab" for i in range(25))


def test_a_live_claim_is_respected_a_dead_one_taken_over(tmp_path):
    w = Work(tmp_path)
    assert w.claim("na-50-s0") is None  # ours now
    assert w.claim("na-50-s0") is None  # claiming our own stage again is fine
    # another live process running the same script holds a stage
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claims = json.loads((tmp_path / "claims.json").read_text())
        claims["tp-50-s0"] = {**claims["na-50-s0"], "pid": other.pid}
        (tmp_path / "claims.json").write_text(json.dumps(claims))
        w.script = "-c"  # the sleeper's command line holds "-c", as a sibling's holds the benchmark's name
        assert w.claim("tp-50-s0") == other.pid
        w.script = "netadapt_cifar.py"  # a reused pid running something else is not a sibling
        assert w.claim("tp-50-s0") is None
    finally:
        other.kill()
        other.wait()
    claims = json.loads((tmp_path / "claims.json").read_text())
    claims["uni-50-s0"] = {**claims["na-50-s0"], "pid": other.pid}  # that process has exited
    (tmp_path / "claims.json").write_text(json.dumps(claims))
    w.script = "-c"
    assert w.claim("uni-50-s0") is None
    w.done("na-50-s0", {"top1": 0.9})  # finishing a stage releases its claim
    assert "na-50-s0" not in json.loads((tmp_path / "claims.json").read_text())
    assert w.refresh() == {"na-50-s0": {"top1": 0.9}}


def test_fresh_refuses_a_folder_with_a_run(tmp_path):
    Work(tmp_path).done("baseline", {"top1": 0.5})
    with pytest.raises(SystemExit, match="holds a previous run"):
        Work(tmp_path, fresh=True)


def test_release_drops_only_our_own_claim(tmp_path):
    """A stage recorded piece by piece (search_rank's short trainings) holds a separate claim that ``done`` keeps;
    ``release`` drops it, but never a claim another process holds."""
    w = Work(tmp_path)
    assert w.claim("train-100 (running)") is None
    w.done("train-100", {"arch-a": {"top1": 0.3}})  # one piece done: the running claim stays
    assert "train-100 (running)" in json.loads((tmp_path / "claims.json").read_text())
    w.release("train-100 (running)")
    assert json.loads((tmp_path / "claims.json").read_text()) == {}
    claims = {"train-300 (running)": {"pid": os.getpid() + 1, "host": "elsewhere"}}
    (tmp_path / "claims.json").write_text(json.dumps(claims))
    w.release("train-300 (running)")  # not ours: kept
    assert json.loads((tmp_path / "claims.json").read_text()) == claims
    w.release("never-claimed")  # nothing to drop: no error


# ---------------------------------------------------------------- netadapt_cifar: one measuring machine, choices made once


def _run(tmp_path):
    from types import SimpleNamespace

    return SimpleNamespace(work=Work(tmp_path), how=SimpleNamespace(backend="eager"))


def test_choice_is_made_once_and_reused_by_every_seed(tmp_path):
    import netadapt_cifar as nc

    r, calls = _run(tmp_path), []

    def make():
        calls.append(1)
        return {"ratio": 0.3, "round_to": 8, "measured_at_choice": 0.68}

    first = nc.choice(r, "tp8-75", make)
    again = nc.choice(r, "tp8-75", make)  # seed 1, or seed 0 resumed: not timed again
    assert first == again == {"ratio": 0.3, "round_to": 8, "measured_at_choice": 0.68} and calls == [1]
    assert Work(tmp_path).refresh()["choices"]["tp8-75"] == first  # recorded before any training
    assert "machine" in Work(tmp_path).refresh()  # the machine it was timed on, recorded at the first measurement


def test_choice_of_a_run_begun_before_choices_were_recorded_comes_from_its_finished_stage(tmp_path):
    import netadapt_cifar as nc

    r = _run(tmp_path)
    r.work.done("tp-50-s0", {"arch": "a", "ratio": 0.788, "round_to": None, "measured_at_choice": 0.493,
                             "steps": 4900, "top1": 0.81})  # fmt: skip
    got = nc.choice(r, "tp-50", lambda: pytest.fail("a recorded choice is never measured again"))
    assert got == {"ratio": 0.788, "round_to": None, "measured_at_choice": 0.493, "from": "tp-50-s0"}
    r.work.done("tp8-50-s0", {"feasible": False, "round_to": 8, "measured_grid": {"0.00": {}}, "seconds": 6.6})
    assert nc.choice(r, "tp8-50", lambda: pytest.fail("measured"))["feasible"] is False


def test_stages_that_time_networks_refuse_another_machine_and_trainings_go_on(tmp_path):
    """A run measured on an AVX2 CPU continued on an AVX-512 one: timing there would mix two CPUs' ratios."""
    import netadapt_cifar as nc
    from edgecnn.latency.fingerprint import fingerprint

    r = _run(tmp_path)
    here = fingerprint(backend="eager", threads=1).to_dict()
    other = {**here, "isa": "avx2" if here["isa"] != "avx2" else "vnni", "cpu": "another CPU"}
    r.work.done("machine", other)
    with pytest.raises(nc.OtherMachine, match=r"isa .*here .*another --work"):
        nc.check_machine(r, "the closing measurement")
    with pytest.raises(nc.OtherMachine, match="choosing uni-50"):
        nc.choice(r, "uni-50", lambda: pytest.fail("timed on the wrong machine"))
    assert "uni-50" not in r.work.refresh().get("choices", {})
    r.work.add("choices", "uni-50", {"width": 0.5, "measured_at_choice": 0.384})  # chosen where it was measured
    assert nc.choice(r, "uni-50", lambda: pytest.fail("measured"))["width"] == 0.5  # its training goes on here
    r.work.done("machine", here)
    nc.check_machine(r, "the closing measurement")  # the measuring machine itself: no error
    (tmp_path / "stages.json").write_text("{}")
    (tmp_path / "latency_table.json").write_text(json.dumps({"fingerprint": other}))
    with pytest.raises(nc.OtherMachine):  # a run begun before the machine was recorded: its table's fingerprint
        nc.check_machine(r, "na-50-s1")
    assert r.work.refresh()["machine"] == other
