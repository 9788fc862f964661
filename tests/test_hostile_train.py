"""Hostile inputs around training: damaged weights, --strict over a cache, absurd counts, the real memory
limit, absurd latency-table values.

Each refused case asserts the exit code (2), one stderr line naming the problem, and that the files present
before are byte-identical after (``tests/hostile.py``).
"""

from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hostile import TINY, TRAIN, cli, cli_env, refused, snapshot
from PIL import Image
from torch import nn

import edgecnn.limits as limits
from edgecnn import zoo
from edgecnn.build import build
from edgecnn.checkpoint import check_finite, checkpoint_of, load_checkpoint, save_checkpoint
from edgecnn.cli.main import main
from edgecnn.data import load_data, load_digits
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.table import PROBE_ARCH, LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.analysis.memory import estimate_memory
from edgecnn.plan import resolve
from edgecnn.train import NonFiniteLossError, TrainConfig, fit


# ------------------------------------------------------------------------------------------ damaged weights
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-epoch run of TINY on digits at 8 px: its last.pt."""
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", TINY, *TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    return out / "last.pt"


def _damaged(src: Path, dst: Path, field: str = "state_dict", value: float = math.nan, every: bool = False) -> str:
    """Copy checkpoint ``src`` to ``dst`` with NaN (or ``value``) in the first weight of ``field``; its name."""
    d = torch.load(src, weights_only=True)
    name = next(k for k, t in d[field].items() if t.is_floating_point())
    t = d[field][name]
    if every:
        t.fill_(value)
    else:
        t.view(-1)[0] = value
    torch.save(d, dst)
    return name


@pytest.mark.parametrize("value, every", [(math.nan, True), (math.inf, False), (-math.inf, False)])
def test_eval_refuses_nan_or_inf_weights(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         value: float, every: bool) -> None:  # fmt: skip
    bad = tmp_path / "bad.pt"
    name = _damaged(trained, bad, value=value, every=every)
    n = torch.load(bad, weights_only=True)["state_dict"][name].numel() if every else 1
    err = refused(["eval", str(bad)], f"{bad}: tensor state_dict[{name!r}] holds {n:,} NaN/Inf of", capsys, tmp_path)
    assert "use another checkpoint" in err


def test_every_loader_refuses_damaged_weights(trained: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The check is in the one loading function: eval, analyze, explain, compress, --teacher, --resume all refuse."""
    bad = tmp_path / "bad.pt"
    name = _damaged(trained, bad)
    msg = f"tensor state_dict[{name!r}] holds 1 NaN/Inf"
    for argv in (["analyze", str(bad)], ["explain", str(bad), "--data", "digits", "--out", str(tmp_path / "x")],
                 ["compress", str(bad), "--data", "digits", "--budget", "50%macs", "--method", "prune",
                  "--out", str(tmp_path / "c")],
                 ["train", TINY, *TRAIN, "--teacher", str(bad), "--out", str(tmp_path / "t")]):  # fmt: skip
        refused(argv, msg, capsys, tmp_path)
    with pytest.raises(ValueError, match=r"tensor state_dict\[.*\] holds 1 NaN/Inf .* use another checkpoint"):
        load_checkpoint(bad)
    # --resume: the run's own last.pt damaged
    run = tmp_path / "run"
    run.mkdir()
    _damaged(trained, run / "last.pt")
    refused(["train", TINY, *TRAIN, "--epochs", "2", "--out", str(run), "--resume"], msg, capsys, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "run"]  # no run folder was started


def test_damaged_ema_and_optimizer_state_are_named(tmp_path: Path) -> None:
    model = build(TINY, num_classes=10, in_chans=1)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    ema["blocks.0.bn.weight"][0] = math.inf
    save_checkpoint(checkpoint_of(model, ema_state_dict=ema), tmp_path / "ema.pt")
    with pytest.raises(ValueError, match=r"tensor ema_state_dict\['blocks.0.bn.weight'\] holds 1 NaN/Inf of 8 values"):
        load_checkpoint(tmp_path / "ema.pt")
    opt = {"state": {0: {"momentum_buffer": torch.tensor([1.0, math.nan])}}, "param_groups": [{"lr": 0.1}]}
    save_checkpoint(checkpoint_of(model, optimizer=opt), tmp_path / "opt.pt")
    with pytest.raises(ValueError, match=r"tensor optimizer\['state'\]\[0\]\['momentum_buffer'\] holds 1 NaN/Inf"):
        load_checkpoint(tmp_path / "opt.pt")


def test_legitimate_checkpoints_pass_and_the_check_is_cheap(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = load_checkpoint(trained)  # BN running_var, integer num_batches_tracked, SGD momentum: all fine
    assert any(not t.is_floating_point() for t in ck.state_dict.values())  # an integer buffer was checked
    assert any(k.endswith("running_var") for k in ck.state_dict)
    assert main(["eval", str(trained), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] > 0.1
    # integer and boolean tensors cannot hold NaN and are skipped, not refused; half precision is checked too
    check_finite({"state_dict": {"n": torch.tensor(3), "b": torch.ones(2, dtype=torch.bool)}}, "x")
    with pytest.raises(ValueError, match=r"tensor state_dict\['h'\] holds 1 NaN/Inf of 2 values"):
        check_finite({"state_dict": {"h": torch.tensor([1.0, math.inf], dtype=torch.float16)}}, "x")
    d = checkpoint_of(build(zoo.arch_of("mobilenet_v2"), num_classes=1000)).to_dict()  # 3.5 M weights
    threads, times = torch.get_num_threads(), []
    torch.set_num_threads(1)  # the cost of the check, not of OpenMP waiting for cores on a shared test machine
    try:
        for _ in range(10):
            t0 = time.perf_counter()
            check_finite(d, "mobilenet_v2")
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    assert min(times) < 0.05  # about 2 ms (torch.load of this checkpoint: about 100 ms)


class _Poisoned(nn.Module):
    """A model whose (unused) float buffer is NaN: its loss stays finite, its state does not."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build(TINY, num_classes=10, in_chans=1)
        self.register_buffer("scale", torch.tensor([math.nan]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_training_never_saves_non_finite_weights(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, progress=False, eval_every=0, threads=1)
    with pytest.raises(NonFiniteLossError, match=r"weights became NaN/Inf \(state_dict\['scale'\]: 1 of 1 values\)"):
        fit(_Poisoned(), load_digits(image_size=8), cfg, out_dir=tmp_path / "r")
    assert not (tmp_path / "r" / "last.pt").exists()


# ------------------------------------------------------------------------------------ --strict over a cache
def _tree_with_a_broken_image(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"not a png")
    return root


def test_strict_is_honoured_whatever_the_cache_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    src = _tree_with_a_broken_image(tmp_path / "data")
    argv = ["train", TINY, "--data", str(src), "--epochs", "1", "--batch-size", "4", "--threads", "1",
            "--no-progress", "--eval-every", "0"]  # fmt: skip
    msg = "cannot decode image a/broken.png: cannot identify image file"
    refused([*argv, "--out", str(tmp_path / "s0"), "--strict"], msg, capsys, tmp_path)  # no cache: stops
    with pytest.warns(UserWarning, match="skipped 1 unreadable images"):
        assert main([*argv, "--out", str(tmp_path / "r")]) == 0  # not strict: skipped (warned), cache written
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    err = refused([*argv, "--out", str(tmp_path / "s1"), "--strict"], msg, capsys, tmp_path)  # cache: still stops
    assert "drop strict (--strict) to skip it" in err
    refused(["eval", str(tmp_path / "r" / "last.pt"), "--strict"], msg, capsys, tmp_path)
    with pytest.raises(ValueError, match="cannot decode image a/broken.png"):
        load_data(str(src), strict=True)
    (src / "a" / "broken.png").unlink()  # fixed: a new fingerprint, decoded again, strict passes
    assert len(load_data(str(src), strict=True).train) > 0


# -------------------------------------------------------------------------------------------- absurd counts
HUGE = "1000000000"
COUNTS = [
    (["train", TINY, *TRAIN, "--epochs", HUGE], "argument --epochs: 1,000,000,000 epochs exceed the limit of 10,000; "
                                                 "raise it with EDGECNN_MAX_EPOCHS=N"),
    (["train", TINY, *TRAIN, "--steps", HUGE], "argument --steps: 1,000,000,000 steps exceed the limit of 10,000,000"),
    (["train", TINY, *TRAIN, "--batch-size", HUGE], "argument --batch-size: 1,000,000,000 images per batch exceed "
                                                     "the limit of 65,536; raise it with EDGECNN_MAX_BATCH=N"),
    (["train", TINY, *TRAIN, "--warmup", "1e9"], "argument --warmup: 1e+09 epochs exceed the limit of 10,000"),
    (["train", TINY, *TRAIN, "--eval-every", HUGE], "argument --eval-every: 1,000,000,000 epochs exceed"),
    (["train", TINY, *TRAIN, "--seed", str(2**64)], "argument --seed: must be a seed in [0, 18,446,744,073,709,551,6"),
    (["eval", "x.pt", "--batch-size", HUGE], "argument --batch-size: 1,000,000,000 images per batch exceed"),
    (["latency", TINY, "--batch", HUGE], "argument --batch: 1,000,000,000 images per batch exceed"),
    (["latency", TINY, "--retries", HUGE], "argument --retries: 1,000,000,000 rounds exceed the limit of 1,000; "
                                            "raise it with EDGECNN_MAX_ROUNDS=N"),
    (["latency", "build-table", "--table", "t.json", "--sample", HUGE],
     "argument --sample: 1,000,000,000 networks exceed the limit of 10,000; raise it with EDGECNN_MAX_NETWORKS=N"),
    (["latency", "validate", "--table", "t.json", "-n", HUGE], "argument -n/--num: 1,000,000,000 networks exceed"),
    (["latency", "build-table", "--table", "t.json", "--seed", "-1"], "argument --seed: must be a seed in [0, "),
    (["analyze", TINY, "--seed", str(2**70)], "argument --seed: must be a seed in"),
    (["demo", "--epochs", HUGE], "argument --epochs: 1,000,000,000 epochs exceed the limit of 10,000"),
    (["demo", "--short-steps", HUGE], "argument --short-steps: 1,000,000,000 steps exceed"),
    (["demo", "--long-epochs", "1e9"], "argument --long-epochs: 1e+09 epochs exceed"),
    (["demo", "--measured-rounds", HUGE], "argument --measured-rounds: 1,000,000,000 rounds exceed"),
]


@pytest.mark.parametrize("argv, message", COUNTS, ids=[" ".join(a[:1] + a[-2:])[:50] for a, _ in COUNTS])
def test_absurd_counts_are_refused_while_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                                 message: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "before.txt").write_text("kept")
    refused(argv, message, capsys, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.txt"]


def test_count_limits_are_raisable_and_apply_to_the_api(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("EDGECNN_MAX_EPOCHS", "2")
    refused(["train", TINY, *TRAIN, "--epochs", "3", "--out", str(tmp_path / "r")],
            "3 epochs exceed the limit of 2; raise it with EDGECNN_MAX_EPOCHS=N", capsys, tmp_path)  # fmt: skip
    assert main(["train", TINY, *TRAIN, "--epochs", "2", "--out", str(tmp_path / "r")]) == 0
    monkeypatch.delenv("EDGECNN_MAX_EPOCHS")
    data = load_digits(image_size=8)
    for cfg, message in ((TrainConfig(epochs=10**9), "TrainConfig.epochs: 1,000,000,000 epochs exceed the limit"),
                         (TrainConfig(steps=10**9), "TrainConfig.steps: 1,000,000,000 steps exceed the limit"),
                         (TrainConfig(batch_size=10**6), "TrainConfig.batch_size: 1,000,000 images per batch")):
        with pytest.raises(ValueError, match=message):
            fit(build(TINY, num_classes=10, in_chans=1), data, cfg, out_dir=tmp_path / "api")
    assert not (tmp_path / "api").exists()  # refused before the run folder was claimed


# ------------------------------------------------------------------------------------- the real memory limit
def _fake_cgroup(tmp_path: Path, lines: str, files: dict[str, str]) -> tuple[str, str]:
    tmp_path.mkdir()
    (tmp_path / "proc").write_text(lines)
    for rel, text in files.items():
        (tmp_path / "fs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / rel).write_text(text)
    return str(tmp_path / "proc"), str(tmp_path / "fs")


def test_cgroup_limits_v2_v1_ancestors_and_none(tmp_path: Path) -> None:
    gib = 2**30
    proc, root = _fake_cgroup(tmp_path / "v2", "0::/job/step\n",
                              {"job/step/memory.max": "max\n", "job/memory.max": f"{3 * gib}\n"})  # fmt: skip
    assert limits._cgroup_limit_gb(proc, root) == 3.0  # the parent's limit binds the child
    proc, root = _fake_cgroup(tmp_path / "v1", "4:memory:/docker/abc\n2:cpu:/x\n",
                              {"memory/memory.limit_in_bytes": f"{2 * gib}\n"})  # fmt: skip
    assert limits._cgroup_limit_gb(proc, root) == 2.0  # the container's own cgroup mounted at the root
    proc, root = _fake_cgroup(tmp_path / "none", "4:memory:/\n",
                              {"memory/memory.limit_in_bytes": "9223372036854771712\n"})  # fmt: skip
    assert limits._cgroup_limit_gb(proc, root) is None  # v1's "unlimited"
    assert limits._cgroup_limit_gb(str(tmp_path / "missing"), root) is None


def test_memory_limit_is_the_tightest_bound_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGECNN_MAX_MEMORY_GB", raising=False)
    monkeypatch.setattr(limits, "_physical_gb", lambda: 64.0)
    monkeypatch.setattr(limits, "_address_space_left_gb", lambda: None)
    monkeypatch.setattr(limits, "_cgroup_limit_gb", lambda: 10.0)
    assert limits.MAX_MEMORY_GB.value() == 8.0
    assert limits.MAX_MEMORY_GB.origin() == " (80% of the 10 GB of cgroup memory limit)"
    monkeypatch.setattr(limits, "_address_space_left_gb", lambda: 5.0)
    assert limits.MAX_MEMORY_GB.value() == 4.0 and "`ulimit -v` (RLIMIT_AS)" in limits.MAX_MEMORY_GB.origin()
    with pytest.raises(ValueError, match=r"limit of 4 GB \(80% of the 5 GB of address space `ulimit -v`"):
        limits.MAX_MEMORY_GB.check(6.0, "decoding")
    monkeypatch.setenv("EDGECNN_MAX_MEMORY_GB", "30")  # the variable still raises it, past every bound
    assert limits.MAX_MEMORY_GB.value() == 30.0 and limits.MAX_MEMORY_GB.origin() == ""


def test_ulimit_v_bounds_the_memory_limit(tmp_path: Path) -> None:
    """A real process under `ulimit -v` (RLIMIT_AS): a network that fits RAM but not the address space is refused."""
    import subprocess

    arch, size = "conv_c64 gap fc", 4096
    need = estimate_memory(arch, input_size=size, num_classes=1000, in_chans=3).gb  # 8.6 GB for inference
    roomy = 0.8 * min(limits._physical_gb(), limits._cgroup_limit_gb() or math.inf)
    if roomy < 1.5 * need:
        pytest.skip(f"this machine's RAM / cgroup limit ({roomy:.1f} GB) already refuses {need:.1f} GB")
    cap = 4 * 2**30  # 4 GiB of address space: the interpreter and torch fit, 8.6 GB does not

    def limit_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))

    env = {k: v for k, v in cli_env().items() if k != "EDGECNN_MAX_MEMORY_GB"}
    before = snapshot(tmp_path)
    r = subprocess.run(cli("latency", arch, "--input-size", str(size), "--threads", "1"), env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, preexec_fn=limit_address_space)  # fmt: skip
    err = r.stderr.strip()
    assert r.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    assert f"{arch} would need about 8.59 GB for inference at batch 1" in err
    assert "of address space `ulimit -v` (RLIMIT_AS) leaves this process" in err
    assert "raise EDGECNN_MAX_MEMORY_GB=N" in err
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------- absurd table values
def _table(tmp_path: Path) -> Path:
    table = LatencyTable(fingerprint(backend="eager", threads=1))
    table.reference_ms = 1.0
    for p in resolve(PROBE_ARCH, num_classes=1000, in_chans=3, input_size=8):
        table.entries[block_key(p)] = TableEntry(0.02, 0.01, 0.03, 0.0, 10)  # 0 ms: a clamped entry is legitimate
    key = overhead_key(in_chans=3, input_size=(8, 8), batch=1, num_classes=1000)
    table.entries[key] = TableEntry(0.05, 0.04, 0.06, -0.01, 10)
    return table.save(tmp_path / "t.json")


def _first_block(d: dict[str, Any]) -> dict[str, Any]:
    return next(v for k, v in d["entries"].items() if not k.startswith("overhead"))


TABLE_CASES = [
    (lambda d: _first_block(d).update(median_ms=1e300), ".median_ms' must be a latency within ±1,000,000 ms, "
                                                         "got 1e+300"),
    (lambda d: _first_block(d).update(q3_ms=2e6), ".q3_ms' must be a latency within ±1,000,000 ms"),
    (lambda d: next(v for k, v in d["entries"].items() if k.startswith("overhead")).update(median_ms=-1e300),
     ".median_ms' must be a latency within ±1,000,000 ms, got -1e+300"),
    (lambda d: _first_block(d).update(repeats=10**12), ".repeats' must be at most 1,000,000,000"),
    (lambda d: d.update(reference_ms=1e300), "field 'reference_ms' must be at most 1,000,000 ms"),
    (lambda d: d.update(call_overhead_ms=1e9), "field 'call_overhead_ms' must be at most 1,000,000 ms"),
    (lambda d: d.update(calibration={"scales": {"body": 1e300, "fixed": 1.0}, "networks": 3, "fit_mape": 0.1,
                                     "raw_mape": 0.2}), "field 'calibration.scales.body' must be at most 1e+06"),
]


@pytest.mark.parametrize("edit, message", TABLE_CASES, ids=[m.split("'")[0][:30] or m[:30] for _, m in TABLE_CASES])
def test_absurd_table_values_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any,
                                         message: str) -> None:  # fmt: skip
    path = _table(tmp_path)
    LatencyTable.load(path)  # the untouched table (0 ms and a negative overhead minimum) loads
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    err = refused(["latency", PROBE_ARCH, "--input-size", "8", "--table", str(path), "--threads", "1"], message,
                  capsys, tmp_path)  # fmt: skip
    assert f"latency table {str(path)!r}" in err and "rebuild it with `edgecnn latency build-table`" in err
    with pytest.raises(ValueError, match="rebuild it"):
        LatencyTable.load(path)
