"""The long benchmarks' work folder (benchmarks/_work.py): processes sharing it keep each other's stages and skip
each other's claimed stages — the full NetAdapt benchmark runs one process per core on it."""

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

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


def test_torch_pruning_trains_a_choice_taken_from_a_stage_recorded_before_aligned_pruning(tmp_path, monkeypatch):
    """The pilot's ``tp-50-s0`` record predates ``round_to`` (no such key): seed 1 trains its choice, unaligned."""
    from types import SimpleNamespace

    import netadapt_cifar as nc
    from edgecnn.build import build
    from edgecnn.train.config import FINETUNE

    base = build(nc.zoo.arch_of(nc.BASE), num_classes=10, in_chans=3).eval()
    work, fits = Work(tmp_path), []
    work.done("tp-50-s0", {"arch": "a", "ratio": 0.788125, "measured_at_choice": 0.493, "steps": 4900, "top1": 0.81})
    work.done("na-50-s1", {"short_steps_spent": 1200})
    monkeypatch.setattr(nc, "recalibrate_bn_", lambda net, loader, num_batches: None)
    monkeypatch.setattr(nc, "BatchLoader", lambda *a, **k: None)
    monkeypatch.setattr(nc, "resumable_fit", lambda net, data, cfg, run_dir: fits.append((net.arch, cfg.steps)) or 0.8)
    pruned = []  # Torch-Pruning itself is the [bench] extra's; what the stage asks of it is what is checked

    def fake_tp_prune(model, ratio, example, round_to=None):
        pruned.append((model is base, ratio, round_to))
        return build("conv_c16 basic_m3_c16_padskip gap fc", num_classes=10, in_chans=3)

    monkeypatch.setattr(nc, "tp_prune", fake_tp_prune)
    r = SimpleNamespace(work=work, how=SimpleNamespace(backend="eager"), shape=(1, 3, 32, 32), long_steps=3900,
                        data=SimpleNamespace(train=None, mean=None, std=None), scale=SimpleNamespace(batch_size=128),
                        a=SimpleNamespace(compile=False), finetune_recipe=lambda seed: FINETUNE, stop=lambda n: None)  # fmt: skip
    nc.torch_pruning_stage(r, base, 50, 1)
    done = work.refresh()["tp-50-s1"]
    assert pruned == [(True, 0.788125, None)]  # seed 0's ratio, unaligned (no round_to recorded: none)
    assert fits == [(done["arch"], 1200 + 3900)] and done["from"] == "tp-50-s0" and done["top1"] == 0.8
    assert done["arch"] == "conv_c16 basic_m3_c16_padskip gap fc" and done["ratio"] == 0.788125


@pytest.mark.parametrize("multiple, aligned, want", [(16, True, 16), (8, True, 8), (1, True, 2), (16, False, 2)])
def test_aligned_netadapt_prunes_on_the_targets_channel_multiple(tmp_path, monkeypatch, multiple, aligned, want):
    """``na8``: NetAdapt's round_to is the target's NCHWc block on this CPU (16 AVX-512, 8 AVX2; 2, the table's
    finest, where the target has none), recorded with the stage; ``na`` keeps 2 on every CPU."""
    from types import SimpleNamespace

    import netadapt_cifar as nc
    from edgecnn.build import build
    from edgecnn.train.config import FINETUNE

    base = build(nc.zoo.arch_of(nc.BASE), num_classes=10, in_chans=3).eval()
    monkeypatch.setattr(nc, "get_target", lambda backend: SimpleNamespace(channel_multiple=lambda: multiple))
    monkeypatch.setattr(nc, "table_meter", lambda *a, **k: "meter")
    seen = {}

    def fake_run(model, ref, data, budget, how, *, method, meter, out, resume, netadapt_config, on_iteration):
        seen.update(round_to=netadapt_config.round_to, out=out.name, meter=meter, budget=budget.value)
        return SimpleNamespace(model=build("conv_c16 basic_m8_c16_padskip gap fc", num_classes=10, in_chans=3),
                               history=[1, 2, 3], met=True, stopped="met", document=lambda: {})  # fmt: skip

    monkeypatch.setattr(nc, "run_measured", fake_run)
    monkeypatch.setattr(nc, "resumable_fit", lambda net, data, cfg, run_dir: 0.85)
    work = Work(tmp_path)
    r = SimpleNamespace(work=work, how=SimpleNamespace(backend="onnxruntime", tolerance=0.0), data=None, ref=None,
                        scale=SimpleNamespace(short_steps=50), long_steps=3900, a=SimpleNamespace(compile=False),
                        finetune_recipe=lambda seed: FINETUNE, stop=lambda n: None)  # fmt: skip
    nc.netadapt_stage(r, base, 50, 0, aligned=aligned)
    name = "na8-50-s0" if aligned else "na-50-s0"
    done = work.refresh()[name]
    assert seen["round_to"] == want and done["round_to"] == want and seen["out"] == name
    assert done["short_steps_spent"] == 2 * 50 * 3 and done["top1"] == 0.85
    assert nc.netadapt_round_to("onnxruntime", aligned) == want


def test_methods_are_chosen_by_name():
    import netadapt_cifar as nc

    assert nc.selected_methods("na8, tp") == ("na8", "tp")
    with pytest.raises(SystemExit, match="unknown na16; valid: na, tp, tp8, uni, na8"):
        nc.selected_methods("na,na16")
    summary = nc.summary({"na8-50-s0": {"top1": 0.86, "ratio": 0.51}, "tp-50-s0": {"top1": 0.81, "ratio": 0.49}},
                         [50])["50"]  # fmt: skip
    assert summary["netadapt_aligned_minus_tp_pp"] == pytest.approx(5.0)
    assert summary["netadapt_aligned_within_5pct_of_budget"] and not summary["netadapt_aligned_not_slower_than_tp"]


def test_stages_that_time_networks_refuse_another_machine_and_trainings_go_on(tmp_path):
    """A run measured on an AVX2 CPU continued on an AVX-512 one: timing there would mix two CPUs' ratios."""
    import netadapt_cifar as nc
    from edgecnn.latency.fingerprint import fingerprint

    r = _run(tmp_path)
    here = fingerprint(backend="eager", threads=1).to_dict()
    other = {**here, "isa": "avx2" if here["isa"] != "avx2" else "vnni", "cpu": "another CPU"}
    r.work.done("machine", other)
    with pytest.raises(nc.OtherMachine, match=r"isa .*here .*work folder \(--work\)"):
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


def _baseline_run(tmp_path, monkeypatch, calls, baseline_from=None):
    from types import SimpleNamespace

    import netadapt_cifar as nc
    import torch
    from edgecnn.train.config import TrainConfig

    def fake_fit(model, data, cfg, run_dir):  # "training": every weight +1, the top-1 from the seed
        calls.append((cfg.seed, run_dir.name, model.blocks[-1].bias[0].item()))
        with torch.no_grad():
            model.blocks[-1].bias.add_(1.0)
        return 0.5 + cfg.seed / 10

    monkeypatch.setattr(nc, "resumable_fit", fake_fit)
    monkeypatch.setattr(nc, "evaluate", lambda model, data: SimpleNamespace(top1=0.8784))
    return SimpleNamespace(work=Work(tmp_path), scale=nc.SCALES["full100"], per_epoch=390, data=None,
                           a=SimpleNamespace(baseline_from=baseline_from, stop_after=None, device="cpu"),
                           recipe=lambda seed: TrainConfig(epochs=50, lr=0.1, seed=seed), stop=lambda name: None)  # fmt: skip


def test_baseline_cycles_restart_from_the_last_cycle_and_resume_by_cycle(tmp_path, monkeypatch):
    """full100's baseline: two cosine cycles (warm restart), the second from the first's weights with its own seed;
    each cycle recorded with its checkpoint, so a stopped run trains only the cycles it lacks."""
    import netadapt_cifar as nc
    from edgecnn.checkpoint import load_model

    calls: list = []
    base = nc.baseline_stage(_baseline_run(tmp_path, monkeypatch, calls))
    b0 = calls[0][2]
    assert [(s, d) for s, d, _ in calls] == [(0, "baseline_run"), (1, "baseline_run2")]
    assert calls[1][2] == pytest.approx(b0 + 1)  # cycle 2 starts from cycle 1's weights
    assert base.blocks[-1].bias[0].item() == pytest.approx(b0 + 2)
    stages = Work(tmp_path).refresh()
    assert (stages["baseline-c1"]["top1"], stages["baseline-c2"]["top1"]) == (0.5, 0.6)
    assert (stages["baseline"]["epochs"], stages["baseline"]["steps"], stages["baseline"]["top1"]) == (100, 39000, 0.6)
    assert load_model(tmp_path / "baseline-c1.pt")[0].blocks[-1].bias[0].item() == pytest.approx(b0 + 1)

    for k in ("baseline", "baseline-c2"):  # stopped during cycle 2: cycle 1 is not trained again
        del stages[k]
    (tmp_path / "stages.json").write_text(json.dumps(stages))
    calls.clear()
    base = nc.baseline_stage(_baseline_run(tmp_path, monkeypatch, calls))
    assert calls == [(1, "baseline_run2", pytest.approx(b0 + 1))] and base.blocks[-1].bias[0].item() == pytest.approx(b0 + 2)


def test_baseline_from_is_taken_as_the_first_cycle_only_with_the_same_recipe(tmp_path, monkeypatch):
    import netadapt_cifar as nc
    import torch
    from dataclasses import asdict
    from edgecnn import zoo
    from edgecnn.checkpoint import checkpoint_of, save_checkpoint
    from edgecnn.train.config import TrainConfig

    torch.manual_seed(3)
    src = tmp_path / "src.pt"
    model = zoo.create(nc.BASE, num_classes=10)
    save_checkpoint(checkpoint_of(model, config={**asdict(TrainConfig(epochs=50, lr=0.1, seed=0)), "threads": 7}), src)
    calls: list = []
    work = tmp_path / "run"
    base = nc.baseline_stage(_baseline_run(work, monkeypatch, calls, baseline_from=str(src)))
    assert [s for s, _, _ in calls] == [1]  # only cycle 2 trained, from the adopted weights
    assert calls[0][2] == model.blocks[-1].bias[0].item()
    assert base.blocks[-1].bias[0].item() == pytest.approx(model.blocks[-1].bias[0].item() + 1)  # cycle 2's result
    assert Work(work).refresh()["baseline-c1"]["from"] == str(src)
    assert Work(work).refresh()["baseline-c1"]["top1"] == 0.8784  # measured on the test set (stubbed here)
    save_checkpoint(checkpoint_of(model, config=asdict(TrainConfig(epochs=50, seed=0, lr=0.05))), src)
    with pytest.raises(SystemExit, match=r"lr: 0\.05 there, 0\.1 here"):
        nc.baseline_stage(_baseline_run(tmp_path / "other", monkeypatch, [], baseline_from=str(src)))


def test_search_rank_measures_new_latencies_only_on_its_machine(tmp_path, monkeypatch):
    """Recorded latencies are read back anywhere; a subnet not yet timed is timed only on the machine the others
    were (the estimator "measured latency" and the equal-latency pairs compare them)."""
    import search_rank as sr
    from edgecnn.latency.fingerprint import fingerprint

    monkeypatch.setattr(sr, "default_target", lambda: "eager")
    monkeypatch.setattr(sr, "measured_ms", lambda arch, backend, cfg: float(len(arch)))
    w = Work(tmp_path)
    assert sr.latencies(w, ["ab", "abc"]) == [2.0, 3.0]  # the first measurement records the machine
    here = fingerprint(backend="eager", threads=1).to_dict()
    assert {k: w.refresh()["machine"][k] for k in ("cpu", "isa")} == {"cpu": here["cpu"], "isa": here["isa"]}
    w.done("machine", {**here, "isa": "some other ISA"})
    assert sr.latencies(w, ["abc", "ab"]) == [3.0, 2.0]  # all recorded: nothing to time
    with pytest.raises(SystemExit, match="isa 'some other ISA'"):
        sr.latencies(w, ["ab", "abcd"])
    assert "abcd" not in w.refresh()["latency"]


# ---------------------------------------------------------------- search_seeds: what runs off the measuring machine


def test_search_seeds_short_trains_a_rerank_elsewhere_from_the_finished_plain_search_and_times_nothing(
    tmp_path, monkeypatch
):
    """On another CPU a rerank run does its K short trainings only, from the plain run's finished search state,
    into rerank.json where run_job on the measuring machine reads them back; a finished run or an unfinished
    plain run gives nothing to do."""
    from types import SimpleNamespace

    import search_seeds as ss
    from edgecnn.train.task import DataRef

    a = SimpleNamespace(estimator="proxy-naswot", rerank=8, rerank_by="speed", quick=True, target=None)
    job = ss.make_job(a, ss.PRESETS["quick"], DataRef("digits", limit=10), "eager", 0.6, 0, "evolution")
    assert job.rerank_by == "speed" and ss.run_label(a) == "proxy-naswot+rerank8-speed"
    # the target is the x0.75 network's latency: that network anchors every sitting, at that latency
    assert job.anchor == ss.Anchor(ss.zoo.arch_of(ss.BASELINE, width=0.75), 0.6)
    assert ss.make_job(SimpleNamespace(**{**vars(a), "target": 0.5}), ss.PRESETS["quick"], DataRef("digits"),
                       "eager", 0.5, 0, "evolution").anchor is None  # a target in ms given: no network to anchor on
    assert ss.run_label(SimpleNamespace(estimator="proxy-naswot", rerank=8, rerank_by="top1")) == "proxy-naswot+rerank8"
    assert ss.run_label(SimpleNamespace(estimator="proxy-naswot", rerank=0, rerank_by="top1")) == "proxy-naswot"
    corrected = SimpleNamespace(estimator="proxy-naswot", rerank=8, rerank_by="speed", quick=True, correct=2,
                                target=None)  # fmt: skip
    assert ss.run_label(corrected) == "proxy-naswot+rerank8-speed+correct2"
    job2 = ss.make_job(corrected, ss.PRESETS["quick"], DataRef("digits", limit=10), "eager", 0.6, 0, "random")
    assert (job2.correct, job2.correct_extra) == (2, ss.PRESETS["quick"]["budget"] // 2)
    plain, out, calls = tmp_path / "proxy-naswot" / "seed0-evolution", tmp_path / "rr" / "seed0-evolution", []
    plain.mkdir(parents=True)
    for name, text in (("search_state.json", '{"s": 1}'), ("latency_table.json", '{"t": 1}')):
        (plain / name).write_text(text)

    def fake_search(space, evaluate, latency, objective, config, *, state_path, resume, estimate):
        calls.append(("search", Path(state_path).read_text(), resume, estimate))
        with pytest.raises(RuntimeError):
            latency("conv_c16 gap fc")  # nothing may be timed here
        return "the finished search"

    def fake_rerank(result, k, short_train, *, by, path, recipe, chunk):
        calls.append(("rerank", result, k, by, Path(path).name, recipe == ss.rerank_recipe(job)))
        return result, [object()] * k

    monkeypatch.setattr(ss, "run_search", fake_search)
    monkeypatch.setattr(ss, "rerank", fake_rerank)
    monkeypatch.setattr(ss, "ShortTrainer", lambda *args, **kw: "short training")
    assert ss.short_train_elsewhere(job, out, plain, ex=None) == 0 and calls == []  # plain run not finished
    (plain / "results.json").write_text("{}")
    assert ss.short_train_elsewhere(job, out, plain, ex=None) == 8
    assert (out / "latency_table.json").read_text() == '{"t": 1}'  # the plain run's table and state, copied
    assert calls == [("search", '{"s": 1}', True, job.estimate_kind), ("rerank", "the finished search", 8, "speed",
                                                                      "rerank.json", True)]  # fmt: skip
    (out / "results.json").write_text("{}")
    assert ss.short_train_elsewhere(job, out, plain, ex=None) == 0 and len(calls) == 2  # finished: nothing


def test_search_seeds_rerank_takes_the_plain_runs_bracket_at_the_same_width_and_trains_another(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import search_seeds as ss

    trained = []
    monkeypatch.setattr(ss, "train_final", lambda job, arch, full, out, resume, progress: trained.append(arch) or
                        {"arch": arch, "epochs": 2, "top1": 0.66})  # fmt: skip
    job = SimpleNamespace(final_epochs=2)
    w75 = ss.zoo.arch_of(ss.BASELINE, width=0.75)
    plain = {"arch": w75, "epochs": 2, "top1": 0.6912, "width": 0.75, "measured_ms": 0.583}
    widths = {0.6: 0.43, 0.75: 0.59}
    got = ss.bracket(job, 0.75, None, tmp_path / "b", widths, plain)
    assert got["top1"] == 0.6912 and got["measured_ms"] == 0.59 and "reused" in got and trained == []
    assert got["seconds"] == 0.0  # its CPU time is the plain run's: not counted again
    got = ss.bracket(job, 0.6, None, tmp_path / "b6", widths, plain)  # another width: another network, trained
    assert got["top1"] == 0.66 and got["width"] == 0.6 and trained == [ss.zoo.arch_of(ss.BASELINE, width=0.6)]
    assert ss.bracket(SimpleNamespace(final_epochs=30), 0.75, None, tmp_path / "b30", widths, plain)["top1"] == 0.66
    # a trained bracket is recorded in its folder (its checkpoint is not committed) and read back, not trained again
    trained.clear()
    again = ss.bracket(job, 0.6, None, tmp_path / "b6", {0.6: 0.45, 0.75: 0.59}, plain)
    assert trained == [] and again["top1"] == 0.66 and again["measured_ms"] == 0.45
    assert ss.bracket(SimpleNamespace(final_epochs=3), 0.6, None, tmp_path / "b6", widths, None) and len(trained) == 1


def fake_sitting(monkeypatch, per_round: dict[str, tuple[float, ...]], seen: list) -> None:
    """search_seeds' networks and the anchor built as their arch, timed as ``per_round`` says (fastest run, ms)."""
    import search_seeds as ss
    from edgecnn.latency import compare as C
    from edgecnn.latency.timing import summarize

    net = lambda arch, **_: SimpleNamespace(arch=arch, eval=lambda: SimpleNamespace(arch=arch))  # noqa: E731
    monkeypatch.setattr(ss, "build", net)
    monkeypatch.setattr(C, "build", lambda arch, **_: SimpleNamespace(arch=arch))

    def scripted(nets, shape, *, backend, threads, rounds, pause_s):
        seen.append({"archs": [n.arch for n in nets.values()], "shape": shape, "backend": backend,
                     "threads": threads, "rounds": rounds, "pause_s": pause_s})  # fmt: skip
        return "cpu", {k: [summarize([v, 9.0]) for v in per_round[n.arch]] for k, n in nets.items()}

    monkeypatch.setattr(C, "fastest_runs", scripted)


def test_search_seeds_remeasure_times_each_choice_back_to_back_against_the_target_network(monkeypatch):
    """The closing sitting: every chosen network in one sitting anchored on mobilenet_v3_small_cifar x0.75 (the
    fastest runs of interleaved rounds 2 s apart); the share is the median per-round ratio, within at <= 1."""
    import search_seeds as ss

    w75 = ss.zoo.arch_of(ss.BASELINE, width=0.75)
    per_round = {w75: (0.40, 0.41, 0.40), "conv_e": (0.50, 0.47, 0.46), "conv_r": (0.38, 0.40, 0.39),
                 "conv_b": (0.41, 0.40, 0.40)}  # fmt: skip
    seen: list = []
    fake_sitting(monkeypatch, per_round, seen)
    rows = [{"seed": 0, "evolution": {"arch": "conv_e", "top1": 0.75, "measured_ms": 0.39},
             "random": {"arch": "conv_r", "top1": 0.71, "measured_ms": 0.36},
             "bracket": {"arch": "conv_b", "top1": 0.69, "measured_ms": 0.41}}]  # fmt: skip
    sitting = ss.remeasure(rows, "onnxruntime", rounds=3)
    assert seen == [{"archs": ["conv_e", "conv_r", "conv_b", w75], "shape": (1, 3, 32, 32), "backend": "onnxruntime",
                     "threads": 1, "rounds": 3, "pause_s": ss.REMEASURE_PAUSE_S}]  # one sitting, the anchor last
    assert sitting["rounds"] == 3 and sitting["target_net_ms"] == 0.40
    e, r, b = (rows[0][m] for m in ss.METHODS)
    # per-round ratios e: 1.25, 1.1463, 1.15 -> median 1.15; r: 0.95, 0.9756, 0.975 -> 0.975; b: 1.025, 0.9756, 1.0
    assert e["remeasured_share"] == pytest.approx(1.15) and not e["within_target"]
    assert e["remeasured_band"] == pytest.approx([0.47 / 0.41, 1.25]) and e["remeasured_ms"] == 0.47
    assert r["remeasured_share"] == pytest.approx(0.975) and r["within_target"] and r["target_net_ms"] == 0.40
    assert b["remeasured_share"] == pytest.approx(1.0) and b["within_target"]  # on the target is within it
    s = ss.summary(rows)
    assert s["evolution"]["within_target_on"] == "0 of 1 seeds" and s["random"]["within_target_on"] == "1 of 1 seeds"
    assert s["bracket"]["remeasured_share_mean"] == pytest.approx(1.0) and s["random"]["remeasured_ms"] == [0.39]
    assert "meets_target_on" not in s["evolution"]  # rows of runs before corrections: nothing recorded
    rows[0]["evolution"].update(meets_target=True, corrections=[{"round": 1}])
    rows[0]["random"].update(meets_target=False, corrections=[{"round": 1}, {"round": 2}])
    s = ss.summary(rows)
    assert (s["evolution"]["meets_target_on"], s["evolution"]["correction_rounds"]) == ("1 of 1 seeds", [1])
    assert (s["random"]["meets_target_on"], s["random"]["correction_rounds"]) == ("0 of 1 seeds", [2])
    ss.remeasure(rows, "onnxruntime", target_ms=0.465, rounds=3)  # a target in ms: the fastest runs' median decides
    assert [rows[0][m]["within_target"] for m in ss.METHODS] == [False, True, True]


def test_search_seeds_measures_the_bracket_widths_by_their_fastest_runs(monkeypatch):
    import search_seeds as ss
    from edgecnn.latency.timing import summarize

    def scripted(nets, shape, *, backend, threads, rounds):
        assert shape == (1, 3, 32, 32) and threads == 1 and rounds == 3 and backend == "onnxruntime"
        return "cpu", {w: [summarize([float(w) + d, 9.0]) for d in (0.3, 0.1, 0.2)] for w in nets}

    monkeypatch.setattr(ss, "fastest_runs", scripted)
    got = ss.measure_widths("onnxruntime")
    assert list(got) == [str(w) for w in ss.WIDTHS]  # the keys of widths-<backend>.json
    assert got["0.75"] == pytest.approx(0.95) and got["1.25"] == pytest.approx(1.45)  # median of the fastest runs


def test_search_seeds_bracket_pair_encloses_the_chosen_latency_and_the_line_reads_it_there():
    import search_seeds as ss

    widths = {0.35: 0.197, 0.5: 0.266, 0.6: 0.306, 0.75: 0.408, 0.85: 0.455}
    assert ss.bracket_pair(0.349, widths) == (0.6, 0.75)
    assert ss.bracket_pair(0.408, widths) == (0.6, 0.75)  # on a width: the first pair that encloses it
    assert ss.bracket_pair(0.42, widths) == (0.75, 0.85)
    assert ss.bracket_pair(0.1, widths) == (0.35, 0.5) and ss.bracket_pair(0.9, widths) == (0.75, 0.85)
    with pytest.raises(ValueError, match="two widths"):
        ss.bracket_pair(0.3, {0.75: 0.408})
    # seed 0 of the vnni4 run: x0.6 67.48% at 0.306 ms, x0.75 69.46% at 0.408 ms; read at evolution's 0.349 ms
    assert ss.on_line(0.349, (0.306, 0.408), (0.6748, 0.6946)) == pytest.approx(0.6748 + 0.0198 * 43 / 102)
    assert ss.on_line(0.5, (0.3, 0.4), (0.6, 0.7)) == pytest.approx(0.8)  # beyond the ends: extrapolated
    with pytest.raises(ValueError, match="same latency"):
        ss.on_line(0.3, (0.4, 0.4), (0.6, 0.7))


def test_search_seeds_bracket_line_by_the_runs_ms_then_by_the_closing_sittings_shares(monkeypatch):
    """Each method minus the bracket's line at its own latency; after --remeasure, every x of the row from that
    one sitting (shares of the target network), the line's ends timed once per width."""
    import search_seeds as ss

    row = {"seed": 0, "evolution": {"arch": "conv_e", "top1": 0.7155, "measured_ms": 0.349},
           "random": {"arch": "conv_r", "top1": 0.6992, "measured_ms": 0.403},
           "bracket": {"arch": "conv_b", "top1": 0.6946, "measured_ms": 0.408},
           "bracket_line": {"widths": [0.6, 0.75], "top1": [0.6748, 0.6946], "measured_ms": [0.306, 0.408],
                            "seconds": 400.0}}  # fmt: skip
    ln = ss.bracket_line(row)
    at_e = 0.6748 + 0.0198 * (0.349 - 0.306) / 0.102
    assert ln["by"] == "measured_ms" and ln["evolution"]["bracket_top1"] == pytest.approx(at_e)
    assert ln["evolution"]["minus_pp"] == pytest.approx(100 * (0.7155 - at_e)) and not ln["random"]["extrapolated"]
    assert ss.bracket_line({"seed": 1}) is None  # a row recorded before the line

    w60, w75 = (ss.zoo.arch_of(ss.BASELINE, width=w) for w in (0.6, 0.75))
    per_round = {"conv_e": (0.36,) * 3, "conv_r": (0.40,) * 3, "conv_b": (0.40,) * 3, w60: (0.30,) * 3,
                 w75: (0.40,) * 3}  # ms; the anchor (x0.75) 0.40
    seen: list = []
    fake_sitting(monkeypatch, per_round, seen)
    rows = [row, {**row, "seed": 1, "bracket_line": dict(row["bracket_line"])}]
    sitting = ss.remeasure(rows, "onnxruntime", rounds=3)
    assert seen[0]["archs"] == ["conv_e", "conv_r", "conv_b", w60, w75, w75]  # each end once for both seeds
    assert sitting["bracket_widths_share"] == {"0.6": pytest.approx(0.75), "0.75": pytest.approx(1.0)}
    ln = ss.bracket_line(row)  # shares: evolution 0.9, the line through (0.75, 67.48%) and (1.0, 69.46%)
    assert ln["by"] == "remeasured_share"
    assert ln["evolution"]["bracket_top1"] == pytest.approx(0.6748 + 0.0198 * 0.15 / 0.25)
    s = ss.summary(rows)
    assert s["evolution_minus_bracket_line_pp"] == pytest.approx(100 * (0.7155 - (0.6748 + 0.0198 * 0.6)))
    assert s["random_minus_bracket_line_pp_per_seed"] == pytest.approx([100 * (0.6992 - 0.6946)] * 2)
    assert s["evolution_beats_bracket_line_on"] == "2 of 2 seeds" and s["bracket_line_by"] == ["remeasured_share"]


def test_netadapt_cifar_wide_scale_builds_resnet20_x2_and_its_uniform_family_from_its_stem():
    """--scale full-w2: ResNet-20 at width 2 (32/64/128, He et al.'s 6n+2 layout) as the baseline; the uniform
    family runs c/2c/4c from the baseline's stem (32) down to 8; the other scales keep ResNet-20 and 16..8."""
    import netadapt_cifar as nc

    wide, full = nc.SCALES["full-w2"], nc.SCALES["full"]
    assert wide.base_arch == ("conv_c32 basic_r3_c32_padskip basic_r3_s2_c64_padskip basic_r3_s2_c128_padskip "
                              "gap fc")  # fmt: skip
    assert full.base_arch == nc.zoo.arch_of(nc.BASE) and nc.SCALES["full100"].base_arch == full.base_arch
    net = nc.build(wide.base_arch, num_classes=10)
    # by hand: stem 3*32*9 + BN 64 = 928; stage 1: 6 convs 32*32*9 + BN 64 = 55 680; stage 2: 32*64*9 + 5 * 64*64*9
    # + 6 BN 128 = 203 520; stage 3: 64*128*9 + 5 * 128*128*9 + 6 BN 256 = 812 544; fc 128*10 + 10 = 1 290
    assert sum(p.numel() for p in net.parameters()) == 928 + 55_680 + 203_520 + 812_544 + 1_290  # 1 073 962
    assert list(nc.uniform_stems(wide)) == list(range(32, 7, -1)) and list(nc.uniform_stems(full)) == list(
        range(16, 7, -1))  # fmt: skip
    assert nc.uniform(24 / 16).arch == nc.zoo.arch_of(nc.BASE, width=1.5, divisor=1)  # 24/48/96
    assert (wide.base_epochs, wide.long_epochs, wide.short_steps) == (full.base_epochs, full.long_epochs,
                                                                      full.short_steps)  # same recipe  # fmt: skip


def test_search_seeds_novel_evolution_is_a_run_of_its_own_sharing_random_search_and_brackets():
    import search_seeds as ss
    from edgecnn.train.task import DataRef

    a = SimpleNamespace(estimator="proxy-naswot", rerank=8, rerank_by="speed", quick=True, correct=2, target=None,
                        evolution="evolution-novel")  # fmt: skip
    assert ss.run_label(a) == "proxy-naswot+rerank8-speed+correct2+novel"
    assert ss.shared_label(a) == "proxy-naswot+rerank8-speed+correct2"  # random search and brackets: the plain run's
    p = ss.PRESETS["quick"]
    assert ss.make_job(a, p, DataRef("digits"), "eager", 0.6, 0, "evolution").search.algorithm == "evolution-novel"
    assert ss.make_job(a, p, DataRef("digits"), "eager", 0.6, 0, "random").search.algorithm == "random"
    plain = SimpleNamespace(**{**vars(a), "evolution": "evolution"})
    assert ss.run_label(plain) == ss.shared_label(plain) == "proxy-naswot+rerank8-speed+correct2"


def test_netadapt_cifar_trains_in_bf16_evaluates_in_fp32_and_records_each_epochs_precision(tmp_path, monkeypatch):
    """--precision bf16 (1.8x faster steps on a CPU with native bf16): the stage's top-1 is the fp32 evaluation of
    the trained network, and the stage records how many epochs ran in which arithmetic, over every run folder."""
    import netadapt_cifar as nc
    import torch
    from edgecnn.build import build
    from edgecnn.checkpoint import checkpoint_of, save_checkpoint
    from edgecnn.data import load_digits
    from edgecnn.train.config import TrainConfig

    data = load_digits(image_size=8)
    torch.manual_seed(0)
    model = build("conv_k3_c8 gap fc", num_classes=10, in_chans=1)
    asked: list = []
    real = nc.evaluate
    monkeypatch.setattr(nc, "evaluate", lambda m, d, **kw: asked.append(kw) or real(m, d, **kw))
    cfg = TrainConfig(epochs=2, batch_size=256, threads=1, progress=False, precision="bf16", eval_every=0)
    top1 = nc.resumable_fit(model, data, cfg, tmp_path / "run")
    assert asked == [{"precision": "fp32"}] and top1 == real(model, data, precision="fp32").top1
    assert nc.epochs_by_precision(tmp_path / "run") == {"bf16": 2}

    asked.clear()  # an fp32 run's own final evaluation is already fp32: not repeated
    nc.resumable_fit(model, data, TrainConfig(epochs=1, batch_size=256, threads=1, progress=False, eval_every=0),
                     tmp_path / "fp32")  # fmt: skip
    assert asked == []
    old = tmp_path / "old"  # a run begun before epochs recorded their arithmetic (the full-w2 baseline's first 10)
    save_checkpoint(checkpoint_of(model, history=[{"epoch": 1}, {"epoch": 2, "precision": None}]), old / "last.pt")
    assert nc.epochs_by_precision(tmp_path / "run", tmp_path / "fp32", old, tmp_path / "none") == {
        "bf16": 2, "fp32": 1, "unrecorded": 2}


# ---------------------------------------------------------------- one process per core: wait for a stage to free


def _sibling(tmp_path, stages):
    """A live process of "the same script" (its command line holds ``-c``) holding ``stages``."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    claims = {name: {"pid": other.pid, "host": __import__("socket").gethostname()} for name in stages}
    (tmp_path / "claims.json").write_text(json.dumps(claims))
    return other


def test_live_claims_name_other_live_processes_and_wait_returns_when_a_stage_finishes(tmp_path):
    w = Work(tmp_path)
    w.script = "-c"
    assert w.claim("na8-50-s0") is None  # our own claim: never waited for
    other = _sibling(tmp_path, ["na-50-s0"])
    try:
        assert w.claim("na8-50-s0") is None
        assert w.live_claims() == {"na-50-s0": other.pid}
        seen = set(w.refresh())
        t0 = time.perf_counter()
        import threading

        threading.Timer(0.3, lambda: Work(tmp_path).done("na-50-s0", {"top1": 0.85})).start()
        w.wait_for_change(seen, poll_s=0.02)  # returns once the sibling's stage is recorded
        assert time.perf_counter() - t0 >= 0.25 and "na-50-s0" in w.stages
    finally:
        other.kill()
        other.wait()
    w.claim("tp-50-s0")
    claims = json.loads((tmp_path / "claims.json").read_text())
    (tmp_path / "claims.json").write_text(json.dumps({**claims, "uni-50-s0": {**claims["tp-50-s0"],
                                                                              "pid": other.pid}}))  # fmt: skip
    assert w.live_claims() == {}  # that process has exited: its stage is free, nothing to wait for
    w.wait_for_change(set(w.refresh()), poll_s=60)  # returns at once


def _stages_run(tmp_path, monkeypatch, log):
    """netadapt_cifar's run_stages over one budget and seed, with stages that only record themselves; the uniform
    stage needs NetAdapt's, as the real one does (its step count)."""
    import netadapt_cifar as nc

    def stage(method):
        def run(r, base, pct, seed):
            name = f"{method}-{pct}-s{seed}"
            if nc.taken(r, name, needs=None if method == "na" else f"na-{pct}-s{seed}"):
                return
            log.append(name)
            r.work.done(name, {"top1": 0.5})
        return run

    monkeypatch.setattr(nc, "STAGES", {m: stage(m) for m in ("na", "uni")})
    monkeypatch.setattr(nc, "write_results", lambda r, rows=None: None)
    w = Work(tmp_path)
    w.script = "-c"
    return nc, SimpleNamespace(work=w, a=SimpleNamespace(budgets="50", seeds="0"))


def test_a_process_waits_for_the_stage_its_next_stage_needs_and_then_runs_it(tmp_path, monkeypatch):
    """Two processes, one core each: the sibling runs NetAdapt at 50%; this one finds nothing free (the uniform
    stage needs NetAdapt's steps), waits, and runs the uniform stage as soon as NetAdapt's is recorded."""
    log = []
    nc, r = _stages_run(tmp_path, monkeypatch, log)
    other = _sibling(tmp_path, ["na-50-s0"])
    try:
        import threading

        threading.Timer(0.3, lambda: Work(tmp_path).done("na-50-s0", {"top1": 0.85})).start()
        with pytest.raises(SystemExit, match=r"uni-50-s0 are not finished \(na-50-s0 run in other processes\)"):
            nc.run_stages(r, None, ("na", "uni"), wait=False)  # --no-wait: one pass, then exit
        assert log == []
        nc.run_stages(r, None, ("na", "uni"), poll_s=0.02)
        assert log == ["uni-50-s0"] and set(r.work.refresh()) == {"na-50-s0", "uni-50-s0"}
    finally:
        other.kill()
        other.wait()


def test_a_process_takes_over_the_stage_of_a_sibling_that_stopped_and_exits_when_none_can_run(tmp_path,
                                                                                         monkeypatch):
    log = []
    nc, r = _stages_run(tmp_path, monkeypatch, log)
    other = _sibling(tmp_path, ["na-50-s0"])
    other.kill()
    other.wait()  # Ctrl-C'd at the end of a session: its claim is left behind
    nc.run_stages(r, None, ("na", "uni"), poll_s=60)
    assert log == ["na-50-s0", "uni-50-s0"]
    # a stage that cannot run here (e.g. it times networks, and the run is measured on another CPU) with nothing
    # running anywhere: an exit naming it, not a wait for ever
    monkeypatch.setitem(nc.STAGES, "na", lambda r, base, pct, seed: None)
    (tmp_path / "stages.json").write_text("{}")
    with pytest.raises(SystemExit, match="na-50-s0, uni-50-s0 are not finished and none can run here"):
        nc.run_stages(r, None, ("na", "uni"), poll_s=60)


# ---------------------------------------------------------------- netadapt_cifar: the closing measurement


def test_closing_measurement_times_each_budget_and_seed_in_one_sitting_and_netadapt_against_its_peer_directly(
        tmp_path, monkeypatch):
    """Each budget-and-seed group is timed in one interleaved sitting with the baseline; NetAdapt against
    Torch-Pruning is the median of their per-round ratios in it, and that direct reading decides "not slower"."""
    from dataclasses import dataclass

    import netadapt_cifar as nc

    @dataclass
    class Stats:
        top1: float

    rounds = {nc.BEFORE: [10.0, 12.0, 10.0], "na-50-s0": [5.1, 6.0, 5.2], "tp-50-s0": [4.9, 6.1, 5.0],
              "uni-50-s0": [4.0, 4.8, 4.0], "na-75-s0": [7.4, 9.0, 7.6]}  # fastest run per round (ms)  # fmt: skip
    sat = []

    def fake_runs(models, shape, **kw):
        sat.append(sorted(models))
        assert models[nc.BEFORE] == "base"
        return "cpu", {n: [SimpleNamespace(min_ms=t, median_ms=t * 1.1) for t in rounds[n]] for n in models}

    monkeypatch.setattr(nc, "fastest_runs", fake_runs)
    monkeypatch.setattr(nc, "load_model", lambda path: (Path(path).stem, None))
    monkeypatch.setattr(nc, "model_stats", lambda net, data, measure_latency: Stats(top1={
        "baseline": 0.9, "na-50-s0": 0.86, "tp-50-s0": 0.84, "uni-50-s0": 0.83, "na-75-s0": 0.88}[net]))
    monkeypatch.setattr(nc, "compare_latency", lambda b, a, shape, **kw: nc.Comparison(
        "onnxruntime", 1, "cpu", "cpu", (10.0, 10.2, 9.8), (10.1, 10.0, 9.8)))
    w = Work(tmp_path)
    for name in ("baseline", "na-50-s0", "tp-50-s0", "uni-50-s0", "na-75-s0"):
        w.done(name, {"top1": 0.5})
    w.done("tp8-50-s0", {"feasible": False})  # nothing within the budget on the channel grid: not timed
    r = SimpleNamespace(work=w, how=SimpleNamespace(backend="onnxruntime", rounds=3), shape=(1, 3, 32, 32), data=None)
    rows = nc.measure_stage(r, "base", anywhere=True)
    assert sat == [sorted([nc.BEFORE, "na-50-s0", "tp-50-s0", "uni-50-s0"]), sorted([nc.BEFORE, "na-75-s0"])]
    assert rows["na-50-s0"]["ratio"] == pytest.approx(0.51)  # median of 0.51, 0.5, 0.52
    assert rows["tp-50-s0"]["ratio"] == pytest.approx(0.5)  # median of 0.49, 0.508, 0.5
    assert rows["na-50-s0"]["latency_ms"] == 5.2 and rows["na-50-s0"]["baseline_ms"] == 10.0
    assert rows["na-50-s0"]["ratio_band"] == pytest.approx([0.5, 0.52])
    assert rows["na-50-s0"]["over_tp"]["ratio"] == pytest.approx(1.04)  # median of 5.1/4.9, 6.0/6.1, 5.2/5.0
    assert "over_tp" not in rows["na-75-s0"] and "over_tp8" not in rows["na-50-s0"]
    assert rows["baseline"]["ratio"] == pytest.approx(1.0) and rows["baseline"]["top1"] == 0.9
    s = nc.summary(rows, [50, 75])
    # the two shares (0.51 against 0.50) would pass within a point of the baseline; the direct rounds say 4% slower
    assert s["50"]["netadapt_over_tp_ratio"] == pytest.approx(1.04)
    assert s["50"]["netadapt_not_slower_than_tp"] is False
    assert s["50"]["netadapt_minus_tp_pp"] == pytest.approx(2.0)
    rows["na-50-s0"]["over_tp"]["ratio"] = 1.015  # within 0.01 / 0.5 = 2% of Torch-Pruning's latency
    assert nc.summary(rows, [50])["50"]["netadapt_not_slower_than_tp"] is True
    del rows["na-50-s0"]["over_tp"]  # results measured before the direct reading: the two shares decide
    assert nc.summary(rows, [50])["50"]["netadapt_not_slower_than_tp"] is True


def test_the_closing_measurement_is_made_once_by_one_process_and_a_pass_that_finishes_nothing_keeps_the_file(
        tmp_path, monkeypatch):
    """Two processes reach the end one after the other: the first measures, the second finds the same networks
    measured and leaves the results as they are (--remeasure times them again); a sibling measuring now is not
    joined. A later pass that finishes no stage does not rewrite the results file (it would drop the table)."""
    log = []
    nc, r = _stages_run(tmp_path, monkeypatch, log)
    timed = []
    monkeypatch.setattr(nc, "measure_stage", lambda r, base: timed.append(nc.finished_networks(r)) or {"rows": 1})
    monkeypatch.setattr(nc, "results_path", lambda r: tmp_path / "results.json")
    for name in ("baseline", "na-50-s0", "uni-50-s0"):
        r.work.done(name, {"top1": 0.5})
    r.work.done("tp8-50-s0", {"feasible": False})
    assert nc.closing_measurement(r, "base") == {"rows": 1} and timed == [["na-50-s0", "uni-50-s0"]]
    assert r.work.refresh()["measured"]["networks"] == ["na-50-s0", "uni-50-s0"]
    assert nc.closing_measurement(r, "base") is None and len(timed) == 1  # measured already: not again
    assert nc.closing_measurement(r, "base", again=True) == {"rows": 1} and len(timed) == 2
    r.work.done("na-50-s1", {"top1": 0.5})  # a network more (another seed): its closing measurement is due
    nc.closing_measurement(r, "base")
    assert timed[-1] == ["na-50-s0", "na-50-s1", "uni-50-s0"]
    other = _sibling(tmp_path, ["measure"])
    try:
        with pytest.raises(SystemExit, match=f"process {other.pid} measures the results"):
            nc.closing_measurement(r, "base", again=True)
    finally:
        other.kill()
        other.wait()
    writes = []
    monkeypatch.setattr(nc, "write_results", lambda r, rows=None: writes.append(rows))
    nc.run_pass(r, None, ("na", "uni"))  # everything finished: nothing to write
    assert writes == [] and log == []
    (tmp_path / "stages.json").write_text(json.dumps({k: v for k, v in r.work.stages.items() if k != "uni-50-s0"}))
    nc.run_pass(r, None, ("na", "uni"))  # the uniform stage runs: the file is written with the finished stages
    assert log == ["uni-50-s0"] and writes == [None]
