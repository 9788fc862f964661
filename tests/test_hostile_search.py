"""``edgecnn search`` under hostile input: spaces, budgets, used run folders, tampered search states, kill -9.

Each refusal asserts the exit code 2, one stderr line with the message and that the files present before are
byte-identical after (tests/hostile.py). Every refusal comes before any work: no data is read, nothing trained.
The kill -9 test runs a real ``edgecnn search`` subprocess on a tiny space (a few seconds).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hostile import cli, cli_env, refused, snapshot
from search_helpers import TINY_SPACE, synthetic_table

from edgecnn.cli.main import build_parser, main
from edgecnn.search.evolution import SearchConfig, SearchState, run_search
from edgecnn.search.objective import Objective
from edgecnn.search.job import SearchJob, check_job, clear_previous_search, estimate_time
from edgecnn.search.space import MBV3_32_SPACE, space_from_dict
from edgecnn.search.supernet import Supernet, supernet_params
from edgecnn.search.supernet_train import SupernetConfig, load_supernet, save_supernet
from edgecnn.train.task import DataRef

TINY = TINY_SPACE.to_dict()
STAGE = {"stride": 2, "widths": [8], "depths": [1]}
# the fast configuration of tests/test_search_cli.py, serial, no final training, no references
FAST = ["--data", "digits", "--limit", "12", "--target", "0.5ms", "--budget", "6", "--population", "3",
        "--sample-size", "2", "--batch", "1", "--workers", "0", "--supernet-steps", "6", "--finalists", "1",
        "--final-epochs", "0", "--max-seconds", "0.1", "--references", "none", "--retries", "0", "--threads", "1",
        "--backend", "eager",  # the synthetic tables of search_helpers are eager ones
        "--no-progress"]  # fmt: skip


def _space_file(tmp_path: Path, doc: Any = None, *, text: str | None = None) -> Path:
    p = tmp_path / "space.json"
    p.write_text(text if text is not None else json.dumps(TINY if doc is None else doc))
    return p


def _search(space: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "--space", str(space), *FAST, "--out", str(out), *extra]


def _table(tmp_path: Path) -> list[str]:
    """``--table T``: a table holding every block of TINY_SPACE, so that runs measure only their finalist."""
    path = tmp_path / "table.json"
    synthetic_table(TINY_SPACE, num_classes=10, in_chans=1).save(path)
    return ["--table", str(path)]


# ---- hostile spaces ----------------------------------------------------------------------------------
def _stage(**change: Any) -> dict[str, Any]:
    return {**TINY, "stages": [{**STAGE, **change}]}


@pytest.mark.parametrize(
    "doc, message",
    [
        (_stage(kernels=[3, 9999]), "space.json.stages[0].kernels: 9999 is outside [1, 31]; it is not a sane"),
        (_stage(widths="16"), "stages[0].widths: must be a non-empty list, got '16'"),
        (_stage(depths=[1, -1]), "stages[0].depths: must be a positive integer, got -1"),
        (_stage(depths=[1, 100]), "stages[0].depths: 100 is outside [1, 64]"),
        (_stage(expansions=[3, 1e6]), "stages[0].expansions: 1000000.0 is outside (0, 32]"),
        (_stage(stride=1000), "stages[0].stride: 1000 is outside [1, 8]"),
        (_stage(widths=[8, 10**12]), "1000000000000 is outside [1, 65,536]; raise it with EDGECNN_MAX_CHANNELS=N"),
        (_stage(widths=list(range(1, 10_001))), "stages[0].widths: 10,000 values, at most 64 per choice"),
        (_stage(se=[1]), "stages[0].se: 1 is not a bool"),
        ({**TINY, "stages": [STAGE] * 1000}, "space.json.stages: 1,000 stages, at most 64"),
        ({**TINY, "hidden": True}, "space.json.hidden: must be a positive integer, got True"),
        ({**TINY, "head_mult": 10**6}, "space.json.head_mult: 1000000 is outside [1, 64]"),
        ({**TINY, "input_size": 10**9}, "space.json.input_size: 1000000000 is outside [1, 8,192]; raise it with"),
        ({**TINY, "name": "../../etc"}, "space.json.name: must be 1 to 64 letters, digits"),
        ({**TINY, "stem": "conv_c8 " * 10_000}, "space.json.stem: must be an arch string such as"),
        ({**TINY, "stem": "conv_r100000000_c8"}, "smallest network does not fit input_size 16: the arch (repeats "
         "expanded): 100,000,006 layers exceed the limit of 40; if that is really meant, raise it with "
         "EDGECNN_MAX_LAYERS=N"),
        ([TINY], "space.json: a search space is a JSON object, got list"),
        ({**TINY, "stages": [{**STAGE, "depths": [1, 20]}], "stem": "conv_r30_c8"},
         "space.json: the space's largest network does not fit input_size 16: "),
    ],
)
def test_hostile_space_is_one_line(doc: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("EDGECNN_MAX_LAYERS", "40")  # the last cases: 30 stem layers + 20 of the largest stage
    space = _space_file(tmp_path, doc)
    refused(_search(space, tmp_path / "run"), message, capsys, tmp_path)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        (json.dumps(TINY).replace('"input_size": 16', '"input_size": NaN'),
         "input_size: must be a positive integer, got nan"),
        (json.dumps(_stage(expansions=[3])).replace("[3]", "[Infinity]"),
         "expansions must be positive numbers, got inf"),
        ('{"stem": "conv_c8", "stages": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested 100001 levels deep"),
        ("{" * 10, "is not valid JSON"),
        (json.dumps(TINY).replace('"input_size": 16', '"input_size": 1' + "0" * 5000),
         "space.json is not valid JSON (Exceeds the limit (4300 digits)"),
    ],
)  # fmt: skip
def test_hostile_space_text(text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(_search(_space_file(tmp_path, text=text), tmp_path / "run"), message, capsys, tmp_path)


def test_space_files_that_are_too_large_or_not_text(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    big = tmp_path / "big.json"  # 50 MB: refused by its size before it is read
    with big.open("w") as f:
        f.write('{"stem": "conv_c8", "stages": [], "name": "')
        f.write("x" * 50 * 2**20)
        f.write('"}')
    monkeypatch.setenv("EDGECNN_MAX_FILE_MB", "10")
    refused(_search(big, tmp_path / "run"), "exceed the limit of 10 MB; if that is really meant, raise it with "
            "EDGECNN_MAX_FILE_MB=N", capsys, tmp_path)  # fmt: skip
    big.unlink()
    binary = tmp_path / "b.json"
    binary.write_bytes(b'{"name": "\xff\xfe"}')
    refused(_search(binary, tmp_path / "run"), "b.json: not UTF-8 text", capsys, tmp_path)


# ---- limits: memory of the largest network and its supernet, ceilings on the work ---------------------
def test_the_largest_network_and_its_supernet_are_estimated_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # within every field's bounds, but the largest choice trains at 224 px with 32768 inner channels (TBs)
    doc = {**TINY, "input_size": 224, "stages": [{"stride": 1, "widths": [8, 2048], "depths": [1, 4],
                                                  "expansions": [3, 16]}]}  # fmt: skip
    space = _space_file(tmp_path, doc)
    err = refused(_search(space, tmp_path / "run"), "training its supernet would need about", capsys, tmp_path)
    assert "raise EDGECNN_MAX_MEMORY_GB=N" in err and "use a smaller space" in err
    assert not (tmp_path / "run").exists()
    # the tiny space fits at the default limit; a limit below it refuses, naming the limit; raising it allows
    job = SearchJob(TINY_SPACE, DataRef("digits"), Objective(0.5), supernet=SupernetConfig(steps=6))
    assert check_job(job, num_classes=10, in_chans=1)["supernet"] < 0.1
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", "0.00001")
    with pytest.raises(ValueError, match="above the limit of 1e-05 GB; .* raise EDGECNN_MAX_MEMORY_GB=N"):
        check_job(job, num_classes=10, in_chans=1)
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", "1")
    check_job(job, num_classes=10, in_chans=1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--budget", "1000000000"], "--budget: 1,000,000,000 candidates exceed the limit of 100,000; raise it "
                                     "with EDGECNN_MAX_CANDIDATES=N"),
        (["--population", "1000000000"], "--population: 1,000,000,000 candidates exceed the limit"),
        (["--supernet-steps", "1000000000"], "--supernet-steps: 1,000,000,000 steps exceed the limit of 10,000,000; "
                                             "raise it with EDGECNN_MAX_STEPS=N"),
        (["--train-steps", "99999999999"], "EDGECNN_MAX_STEPS=N"),
        (["--final-epochs", "1000000000"], "--final-epochs: 1,000,000,000 epochs exceed the limit of 10,000"),
        (["--final-batch-size", "10000000"], "EDGECNN_MAX_BATCH=N"),
        (["--calibrate", "1000000000"], "--calibrate: 1,000,000,000 networks exceed the limit of 10,000"),
        (["--retries", "1000000000"], "EDGECNN_MAX_ROUNDS=N"),
        (["--max-seconds", "1e12"], "--max-seconds: must be in (0, 3600], got 1e12"),
        (["--finalists", "0"], "--finalists: must be a positive integer, got 0"),
        (["--seed", str(2**64)], "--seed: must be a seed in [0, 18,446,744,073,709,551,615]"),
        (["--references", "mobilenet_v3_small_cifar@1e6"], "reference mobilenet_v3_small_cifar@1e6: block 0 "
                                                           "'conv_c16000000_hswish': 16,000,000 channels exceed"),
        (["--references", "mobilenet_v3_small_cifar@30", "--final-epochs", "1"],
         "reference mobilenet_v3_small_cifar@30 would need about 36.6 GB for training at batch 128 (1,295,826,666 "
         "parameters, 15.8 GB of activations at 32px), above the limit of 8 GB"),
    ],
)  # fmt: skip
def test_work_ceilings(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", "8")  # the same refusal on any machine
    refused(["search", "--target", "3ms", "--out", str(tmp_path / "run"), *argv], message, capsys, tmp_path)
    assert not (tmp_path / "run").exists()


def test_ceilings_can_be_raised_and_bind_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="search budget: 1,000,000,000 candidates exceed the limit of 100,000"):
        SearchConfig(budget=10**9)
    with pytest.raises(ValueError, match="EDGECNN_MAX_STEPS"):
        SupernetConfig(steps=10**9)
    monkeypatch.setenv("EDGECNN_MAX_CANDIDATES", "2e9")
    monkeypatch.setenv("EDGECNN_MAX_STEPS", "2e9")
    args = build_parser().parse_args(["search", "--target", "3ms", "--budget", "1000000000",
                                      "--supernet-steps", "1000000000"])  # fmt: skip
    assert args.budget == args.supernet_steps == 10**9
    assert SearchConfig(budget=10**9).budget == 10**9


@pytest.mark.parametrize("space", [TINY_SPACE, MBV3_32_SPACE, space_from_dict({**TINY, "stages": [
    {**STAGE, "widths": [8, 24], "depths": [1, 3], "kernels": [3, 5, 9], "expansions": [1, 2.5], "se": [True]},
    {**STAGE, "stride": 1, "widths": [4, 16], "depths": [2], "se": [False]}]})])  # fmt: skip
@pytest.mark.parametrize("transform", [False, True])
def test_supernet_weights_are_counted_without_building_it(space: Any, transform: bool) -> None:
    built = Supernet(space, num_classes=7, in_chans=3, kernel_transform=transform)
    counted = supernet_params(space, num_classes=7, in_chans=3, kernel_transform=transform)
    assert counted == sum(p.numel() for p in built.parameters())


def test_time_estimate_scales_with_the_work() -> None:
    def job(budget: int, steps: int) -> SearchJob:
        return SearchJob(TINY_SPACE, DataRef("digits"), Objective(0.5), SearchConfig(budget=budget),
                         SupernetConfig(steps=steps), final_epochs=3)  # fmt: skip

    kw = {"train_images": 1000, "val_images": 100, "num_classes": 10, "in_chans": 1, "mac_rate": 1e10}
    small, big = estimate_time(job(100, 1000), **kw), estimate_time(job(100_000, 1_000_000), **kw)
    assert big.seconds["search"] == pytest.approx(1000 * small.seconds["search"])
    assert big.seconds["supernet"] == pytest.approx(1000 * small.seconds["supernet"])
    assert big.seconds["final training"] == small.seconds["final training"] > 0
    line = big.describe()
    assert line.startswith("estimated time: about ") and "days" in line and "10 GMAC/s" in line
    assert "\n" not in line


# ---- the run folder ------------------------------------------------------------------------------------
def _previous(out: Path, *, table: bool = True) -> None:
    """A folder as a previous search leaves it (contents are placeholders: none of it may be read)."""
    for name in ("search_state.json", "supernet.pt", "results.json", "pareto.png", "final/last.pt",
                 "references/r/last.pt", "notes.txt", *(["latency_table.json"] if table else [])):  # fmt: skip
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"previous {name}")


def test_a_used_folder_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space, out = _space_file(tmp_path), tmp_path / "run"
    _previous(out)
    refused(_search(space, out), "already holds a previous search (results.json, search_state.json, supernet.pt, "
            "pareto.png, ...); pass --resume to continue it, --overwrite to replace it, or another --out",
            capsys, tmp_path)  # fmt: skip
    refused(_search(space, out, "--resume", "--overwrite"), "pass one of them", capsys, tmp_path)
    # --overwrite over a folder it cannot use is refused before anything is removed
    refused(_search(space, out, "--overwrite", "--budget", "1000000000"), "EDGECNN_MAX_CANDIDATES", capsys, tmp_path)
    refused(_search(_space_file(tmp_path, _stage(kernels=[3, 9999])), out, "--overwrite"), "9999 is outside",
            capsys, tmp_path)  # fmt: skip


def test_clear_previous_search_keeps_the_latency_table(tmp_path: Path) -> None:
    _previous(tmp_path)
    gone = clear_previous_search(tmp_path)
    assert sorted(gone) == sorted(["results.json", "search_state.json", "supernet.pt", "pareto.png",
                                   "final/last.pt", "references/r/last.pt"])  # fmt: skip
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["latency_table.json", "notes.txt"]


def test_resume_needs_a_search_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = _space_file(tmp_path)
    refused(_search(space, tmp_path / "empty", "--resume"), "nothing to resume", capsys, tmp_path)
    assert not (tmp_path / "empty").exists()
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "latency_table.json").write_text("{}")  # a table alone is no search
    refused(_search(space, tmp_path / "table", "--resume"), "nothing to resume: ", capsys, tmp_path)


# ---- tampered search states ------------------------------------------------------------------------------
def _state() -> dict[str, Any]:
    """The state of a finished search with the FAST options over TINY_SPACE (synthetic accuracy and latency)."""
    cfg = SearchConfig("evolution", budget=6, population=3, sample_size=2, batch=1, seed=0)

    def evaluate(archs: list[str]) -> list[float]:
        return [random.Random(a).random() for a in archs]

    res = run_search(TINY_SPACE, evaluate, lambda a: 0.1 + len(a) / 1000, Objective(0.5), cfg)
    state = SearchState(cfg, Objective(0.5), TINY_SPACE.name, list(res.history), [3, 4, 5],
                        random.Random(0).getstate(), TINY_SPACE.to_dict())  # fmt: skip
    return state.to_dict()


def _tamper(path: str, value: Any) -> Any:
    doc = _state()
    *keys, last = path.split(".")
    node = doc
    for k in keys:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node[int(last) if isinstance(node, list) else last] = value
    return doc


@pytest.mark.parametrize(
    "doc, message",
    [
        (_tamper("version", 99), "field 'version' must be 1 (the version this edgecnn reads), got 99"),
        (_tamper("history.1.arch", "<script>alert(1)</script>"),
         "field 'history[1].arch' must be an arch string of a network of search space 'tiny-16', got '<script>"),
        (_tamper("history.0.arch", "conv_c8 gap fc"), "field 'history[0].arch' must be an arch string of a network"),
        (_tamper("history.2.arch", "ir_c8 " * 100_000), "field 'history[2].arch' must be an arch string of at most"),
        (_tamper("history.0.acc", float("nan")), "field 'history[0].acc' must be a finite number >= 0, got nan"),
        (_tamper("history.0.acc", 7), "field 'history[0].acc' must be an accuracy in [0, 1], got 7.0"),
        (_tamper("history.3.score", 0.999), "field 'history[3].score' must be the objective's score"),
        (_tamper("history.4.parent", 99), "field 'history[4].parent' must be an integer in [0, 3], got 99"),
        (_tamper("history.1.index", 7), "field 'history[1].index' must be an integer in [1, 1], got 7"),
        (_tamper("population", [0, 0, 99]), "field 'population' must be [3, 4, 5] (the newest 3 of the 6"),
        (_tamper("config.budget", "1e9"), "field 'config.budget' must be an integer in [1, 100,000], got '1e9'"),
        (_tamper("rng", [3, [0] * 10, None]), "field 'rng[1]' must be 625 integers"),
        (_tamper("objective.target_ms", -1), "field 'objective.target_ms' must be a finite number > 0"),
        (_tamper("history", [{}] * 10), "field 'history' must be at most config.budget = 6 candidates"),
        (_tamper("space_doc", {**TINY, "hidden": 64}), "holds a search of another space named 'tiny-16'"),
        (_tamper("config.seed", 5), "holds a search with other settings"),
        ([1, 2, 3], "search_state.json: a search state is a JSON object, got list"),
        ({"format": "edgecnn-search-state", "version": 1, "config": [[[[1]]]] * 2}, "field 'config' must be a dict"),
        ({"format": "something else"}, "search_state.json is not an edgecnn search state"),
        ({**_state(), "extra": 1}, "field 'extra' must be absent"),
    ],
)
def test_tampered_state_is_refused_on_resume(doc: Any, message: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    space, out = _space_file(tmp_path), tmp_path / "run"
    out.mkdir()
    (out / "search_state.json").write_text(json.dumps(doc))
    err = refused(_search(space, out, "--resume"), message, capsys, tmp_path)
    assert "search_state.json" in err


def test_the_untampered_state_passes_and_deep_or_huge_states_do_not_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_state()))
    assert len(SearchState.load(path, space=TINY_SPACE).history) == 6
    out = tmp_path / "run"
    out.mkdir()
    state = out / "search_state.json"
    state.write_text('{"format": "edgecnn-search-state", "history": ' + "[" * 200_000 + "]" * 200_000 + "}")
    refused(_search(_space_file(tmp_path), out, "--resume"), "JSON nested 200001 levels deep", capsys, tmp_path)
    state.write_text("not json")
    refused(_search(_space_file(tmp_path), out, "--resume"), "search_state.json is not valid JSON", capsys, tmp_path)
    state.write_text(json.dumps({**_state(), "pad": "x" * 3 * 2**20}))
    monkeypatch.setenv("EDGECNN_MAX_FILE_MB", "1")
    refused(_search(_space_file(tmp_path), out, "--resume"), "raise it with EDGECNN_MAX_FILE_MB=N", capsys, tmp_path)


def test_a_damaged_supernet_is_refused_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "supernet.pt").write_bytes(b"\x80\x02 not a checkpoint")
    refused(_search(_space_file(tmp_path), out, "--resume"), "supernet.pt is not a readable supernet checkpoint",
            capsys, tmp_path)  # fmt: skip


def test_a_supernet_of_another_space_or_too_large_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = tmp_path / "run"
    save_supernet(Supernet(TINY_SPACE, num_classes=10, in_chans=1), out / "supernet.pt", step=6,
                  config=SupernetConfig(steps=6))  # fmt: skip
    other = _space_file(tmp_path, {**TINY, "hidden": 64})  # same name, another head
    refused(_search(other, out, "--resume"), "supernet.pt is the supernet of another search space than this run's "
            "'tiny-16' (its stem, stages or head differ); resume with the same space, or pass --overwrite",
            capsys, tmp_path)  # fmt: skip
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", "0.0001")  # a file may declare a space larger than it holds
    with pytest.raises(ValueError, match="its space.s supernet has 36,786 weights .* above the limit of 0.0001 GB"):
        load_supernet(out / "supernet.pt")


# ---- --overwrite, kill -9 mid-search, then --resume ------------------------------------------------------
def test_overwrite_then_kill_9_mid_search_then_resume_keeps_every_finished_candidate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space, out = _space_file(tmp_path), tmp_path / "run"
    _previous(out, table=False)  # placeholders: --overwrite removes them before the search starts, reading none
    argv = _search(space, out, *_table(tmp_path))
    argv[argv.index("--budget") + 1] = "12"
    proc = subprocess.Popen(cli(*argv, "--overwrite"), env=cli_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    state, t0 = out / "search_state.json", time.monotonic()
    seen: list[dict[str, Any]] = []
    while len(seen) < 3:  # a few candidates finished and saved
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < 240, "the search made no progress"
        try:  # the previous search's placeholder until --overwrite removes it
            seen = json.loads(state.read_text())["history"]
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert "estimated time: about" in err  # printed before the work started
    assert not (out / "final/last.pt").exists() and not (out / "references/r/last.pt").exists()
    assert not (out / "results.json").exists()  # the previous search's results went before the new one began
    assert (out / "notes.txt").read_text() == "previous notes.txt"  # not a search's file: kept
    saved = json.loads(state.read_text())["history"]  # whole: the state is written atomically
    assert len(saved) >= len(seen) and saved[: len(seen)] == seen and len(saved) < 12
    supernet = (out / "supernet.pt").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert "estimated time: about" in capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["history"]) == 12 and doc["history"][: len(saved)] == saved  # nothing finished was lost
    assert doc["supernet"]["reused"] and (out / "supernet.pt").read_bytes() == supernet  # nor the supernet
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    before = snapshot(out)
    refused(argv, "already holds a previous search", capsys, out)  # a finished search is protected too
    assert snapshot(out) == before
