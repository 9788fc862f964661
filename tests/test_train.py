"""Training: accuracy on digits, exact resume, NaN stop, DDP = one process, distillation, workers, CLI.

All runs use one thread (``threads=1``): results are then bit-for-bit
reproducible on a machine, and parallel test processes do not oversubscribe
the cores.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgecnn
from edgecnn.build import build
from edgecnn.checkpoint import load_checkpoint, load_model
from edgecnn.cli.main import main
from edgecnn.data import load_digits
from edgecnn.train.distill import distillation_loss
from edgecnn.train import (
    FINETUNE,
    ModelEma,
    NonFiniteLossError,
    TrainConfig,
    evaluate,
    finetune,
    fit,
    lr_at,
    param_groups,
)

SMALL = "conv_k3_c16 basic_c16 basic_s2_c32 gap fc"  # 19.7k parameters
TINY = "conv_k3_c8 ir_s2_e2_c16 dropout_p0.2 gap fc"  # dropout: the torch RNG must be restored on resume
NO_BN = "conv_k3_c8_nobn_bias conv_k3_s2_c16_nobn_bias gap fc"  # DDP = one process exactly only without BN
QUIET = TrainConfig(threads=1, progress=False, batch_size=64)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # evaluate() and the direct computations too
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits16():
    return load_digits(image_size=16)


def _net(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build(arch, num_classes=10, in_chans=1)


# ----------------------------------------------------------------------------------------------- the pieces
def test_lr_schedule_warmup_then_cosine() -> None:
    kw = dict(total=110, warmup=10, peak=0.4, floor=0.02)
    assert [lr_at(s, **kw) for s in (0, 4, 9)] == pytest.approx([0.04, 0.2, 0.4])
    assert lr_at(10, **kw) == pytest.approx(0.4)  # cosine starts at the peak
    assert lr_at(60, **kw) == pytest.approx((0.4 + 0.02) / 2)  # half-way: the mean of peak and floor
    assert lr_at(35, **kw) == pytest.approx(0.02 + 0.38 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, **kw) == pytest.approx(0.02)


def test_no_weight_decay_on_bn_and_bias() -> None:
    m = _net(SMALL)
    decay, no_decay = param_groups(m, 5e-4)
    bn = [p for mod in m.modules() if isinstance(mod, nn.BatchNorm2d) for p in (mod.weight, mod.bias)]
    biases = [mod.bias for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv2d)) and mod.bias is not None]
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in bn + biases}
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 5e-4
    assert all(p.ndim == 4 or isinstance(p, nn.Parameter) and p.ndim == 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_ema_update_by_hand() -> None:
    m = nn.BatchNorm1d(3)
    ema = ModelEma(m, decay=0.9)
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
        m.running_mean.fill_(2.0)
        m.num_batches_tracked.fill_(7)
    ema.update(m, step=1000)  # decay = min(0.9, 1001/1010) = 0.9
    assert torch.allclose(ema.module.weight, 0.9 * w0 + 0.1 * (w0 + 1))
    assert torch.allclose(ema.module.running_mean, torch.full((3,), 0.2))
    assert ema.module.num_batches_tracked.item() == 7  # integer buffers are copied
    ema.update(m, step=0)  # warm-up: decay = 1/10
    assert torch.allclose(ema.module.running_mean, torch.full((3,), 0.1 * 0.2 + 0.9 * 2.0))


def test_bf16_autocast_on_the_cpu_and_fp16_refused(digits16) -> None:
    cfg = replace(FINETUNE, threads=1, batch_size=64, lr=0.05)
    a, b = _net(SMALL), _net(SMALL)
    ra = finetune(a, digits16, steps=3, config=cfg)
    rb = finetune(b, digits16, steps=3, config=replace(cfg, precision="bf16"))
    assert rb.final.loss == pytest.approx(ra.final.loss, rel=0.05)  # bf16 has an 8-bit mantissa
    w = "blocks.0.conv.weight"
    assert 0 < (a.state_dict()[w] - b.state_dict()[w]).abs().max() < 0.02
    with pytest.raises(ValueError, match="fp16 autocast needs CUDA"):
        finetune(_net(SMALL), digits16, steps=1, config=replace(cfg, precision="fp16"))


@pytest.mark.parametrize("kernels", [True, False], ids=["avx512", "avx2-only"])
def test_bf16_on_a_cpu_without_onednn_bf16_kernels_warns_it_is_slow(digits16, monkeypatch, kernels: bool) -> None:
    """Both kinds of CPU, whichever this one is: with oneDNN's bf16 kernels (AVX-512; native with AVX512-BF16 or
    AMX) bf16 autocast is the fast path and says nothing; without them (AVX2 only) it warns and names the fix."""
    from edgecnn.train import runtime

    monkeypatch.setattr(runtime, "_cpu_bf16_kernels", lambda: kernels)
    cfg = replace(FINETUNE, threads=1, batch_size=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finetune(_net(SMALL), digits16, steps=1, config=replace(cfg, precision="bf16"))
        finetune(_net(SMALL), digits16, steps=1, config=cfg)  # fp32: never
    said = [str(w.message) for w in caught if "bf16" in str(w.message)]
    assert len(said) == (0 if kernels else 1) and all("use precision 'auto' or 'fp32'" in m for m in said)


def test_distillation_loss_matches_hinton_formula() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.arange(6) % 5
    assert torch.allclose(distillation_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    T = 3.0
    p_t, log_p_s = F.softmax(t / T, 1), F.log_softmax(s / T, 1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    want = 0.3 * F.cross_entropy(s, y) + 0.7 * T * T * kl
    assert torch.allclose(distillation_loss(s, t, y, alpha=0.7, temperature=T), want, atol=1e-6)
    assert distillation_loss(s, s, y, alpha=1.0).abs() < 1e-6  # same logits: nothing to learn


def test_evaluate_matches_a_direct_computation(digits16) -> None:
    m = _net(SMALL, seed=3).eval()
    r = evaluate(m, digits16, batch_size=100)
    x = (digits16.test.images.float() / 255 - digits16.mean[0]) / digits16.std[0]
    with torch.no_grad():
        logits = m(x)
    y = digits16.test.labels.numpy()
    pred = logits.argmax(1).numpy()
    assert r.num_images == len(y)
    assert r.top1 == pytest.approx(np.mean(pred == y))
    top5 = np.argsort(-logits.numpy(), axis=1, kind="stable")[:, :5]
    assert r.top5 == pytest.approx(np.mean([y[i] in top5[i] for i in range(len(y))]))
    assert r.per_class == pytest.approx([np.mean(pred[y == c] == c) for c in range(10)])
    assert r.loss == pytest.approx(F.cross_entropy(logits, torch.from_numpy(y)).item(), rel=1e-5)


# ------------------------------------------------------------------------------------------- training results
def test_small_net_learns_digits(digits16) -> None:
    """Budget: 4 epochs of 22 steps at 16×16, one thread (~3 s on this project's Xeon).

    Measured (torch 2.13 CPU): 95.3% top-1, 100% top-5, EMA 95.5%; asserted: 93%.
    """
    m = _net(SMALL)
    r = fit(m, digits16, replace(QUIET, epochs=4, eval_every=0, ema_decay=0.99))
    assert r.steps == 4 * (len(digits16.train) // 64)
    assert r.top1 >= 0.93, r.final
    assert r.final.top5 >= 0.99
    assert r.ema is not None and r.ema.top1 >= 0.93
    assert len(r.history) == 4 and r.history[-1].test == r.final and r.history[0].test is None
    assert r.history[0].train_loss > r.history[-1].train_loss


def _interrupt_on_call(model: nn.Module, n: int) -> None:
    """Send Ctrl-C (a real SIGINT) to this process during the n-th training forward pass."""
    calls = {"n": 0}

    def hook(mod: nn.Module, args: tuple) -> None:
        if mod.training:
            calls["n"] += 1
            if calls["n"] == n:
                os.kill(os.getpid(), signal.SIGINT)

    model.register_forward_pre_hook(hook)


def test_interrupted_run_resumes_to_the_same_weights(digits16, tmp_path: Path) -> None:
    cfg = replace(QUIET, epochs=3, ema_decay=0.9, batch_size=128)  # 11 steps per epoch
    whole = _net(TINY)
    r_whole = fit(whole, digits16, cfg, out_dir=tmp_path / "whole")

    part = _net(TINY)
    _interrupt_on_call(part, 16)  # mid-epoch 2
    with pytest.raises(KeyboardInterrupt, match="interrupted at epoch 2, step 16"):
        fit(part, digits16, cfg, out_dir=tmp_path / "part")
    ck = load_checkpoint(tmp_path / "part" / "last.pt")
    assert (ck.epoch, ck.batch, ck.step) == (1, 5, 16)

    resumed = _net(TINY, seed=123)  # other initial weights: all must come from the checkpoint
    r_resumed = fit(resumed, digits16, cfg, out_dir=tmp_path / "part", resume=True)
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    ema_whole = load_checkpoint(tmp_path / "whole" / "last.pt").ema_state_dict
    ema_resumed = load_checkpoint(tmp_path / "part" / "last.pt").ema_state_dict
    assert all(torch.equal(ema_resumed[k], v) for k, v in ema_whole.items())
    assert r_resumed.final.top1 == r_whole.final.top1 and r_resumed.steps == r_whole.steps == 33
    # the interrupted epoch's statistics are whole again
    assert r_resumed.history[1].train_loss == pytest.approx(r_whole.history[1].train_loss, rel=1e-9)
    with pytest.raises(ValueError, match="different recipe .*lr"):
        fit(_net(TINY), digits16, replace(cfg, lr=0.5), out_dir=tmp_path / "part", resume=True)


def test_a_run_resumes_in_another_precision_and_each_epoch_records_its_own(digits16, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """fp32 for the first epoch and a half, bf16 autocast from the resume on (a CPU with native bf16 makes such a
    switch worth it): the recipe check lets it through, and the history says which epochs ran in which."""
    cfg = replace(QUIET, epochs=3, batch_size=128, eval_every=0)  # 11 steps per epoch
    m = _net(TINY)
    _interrupt_on_call(m, 16)  # mid-epoch 2
    with pytest.raises(KeyboardInterrupt):
        fit(m, digits16, cfg, out_dir=tmp_path)
    assert [h["precision"] for h in load_checkpoint(tmp_path / "last.pt").history] == ["fp32"]
    capsys.readouterr()
    r = fit(_net(TINY), digits16, replace(cfg, precision="bf16", log_epochs=True), out_dir=tmp_path, resume=True)
    assert [h.precision for h in r.history] == ["fp32", "bf16", "bf16"]  # epoch 2 finished in bf16
    assert r.steps == 33 and math.isfinite(r.final.loss)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and all(ln.endswith("  bf16") for ln in lines)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits16, tmp_path: Path) -> None:
    m = _net(TINY)
    calls = {"n": 0}

    def poison(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return out * float("nan") if mod.training and calls["n"] == 15 else out

    m.register_forward_hook(poison)
    cfg = replace(QUIET, epochs=3, batch_size=128, eval_every=0)
    want = r"loss became nan at epoch 2, step 15.*last good checkpoint is .*last.pt"
    with pytest.raises(NonFiniteLossError, match=want):
        fit(m, digits16, cfg, out_dir=tmp_path)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck.epoch, ck.step) == (1, 11)
    assert all(torch.isfinite(v).all() for v in ck.state_dict.values() if v.is_floating_point())


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    """``torchrun`` with 2 gloo processes on the CPU against one process: the same weights within float error."""
    args = ["train", NO_BN, "--data", "digits", "--image-size", "16", "--epochs", "2", "--lr", "0.05",
            "--threads", "1", "--no-progress", "--eval-every", "0"]  # fmt: skip
    src = str(Path(edgecnn.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "edgecnn.cli.main", *args, "--out", str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    ddp, one = load_checkpoint(tmp_path / "ddp/last.pt"), load_checkpoint(tmp_path / "one/last.pt")
    init = _net(NO_BN).state_dict()  # the CLI seeds with --seed 0 before building
    for k, v in one.state_dict.items():
        assert torch.allclose(ddp.state_dict[k], v, atol=2e-5, rtol=0), k
        assert (v - init[k]).abs().max() > 1e-3, k  # training moved every tensor far beyond the tolerance
    assert ddp.history[-1]["test"]["top1"] == pytest.approx(one.history[-1]["test"]["top1"], abs=1 / 359)


# --------------------------------------------------------------------------------- fine-tuning, distillation
@pytest.mark.slow
def test_finetune_runs_the_same_in_a_worker_process(digits16) -> None:
    model = _net(SMALL)
    cfg = replace(FINETUNE, threads=1, batch_size=64, lr=0.05)
    pickle.loads(pickle.dumps((model, digits16, cfg)))  # everything it takes pickles
    here = finetune(_net(SMALL), digits16, steps=12, config=cfg)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        there = pool.submit(finetune, model, digits16, steps=12, config=cfg).result(timeout=300)
    assert there.steps == here.steps == 12 and len(there.history) == 1
    assert there.top1 == here.top1 and there.final.loss == pytest.approx(here.final.loss, rel=1e-6)


def test_channels_last_trains_the_same(digits16) -> None:
    cfg = replace(FINETUNE, threads=1, batch_size=64, lr=0.05)
    a, b = _net(SMALL), _net(SMALL)
    finetune(a, digits16, steps=4, config=replace(cfg, channels_last=False))
    finetune(b, digits16, steps=4, config=replace(cfg, channels_last=True))
    for k, v in a.state_dict().items():
        assert torch.allclose(b.state_dict()[k], v, atol=2e-3), k  # other conv kernels, other rounding


class _FixedTeacher(nn.Module):
    """A teacher whose soft targets are known: the same logits for every image."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("v", torch.tensor([3.0, 0, 0, 0, 0, 0, 0, 0, 0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.v.expand(len(x), -1)


def test_distillation_pulls_the_student_to_the_teacher(digits16, tmp_path: Path) -> None:
    x = (digits16.test.images.float() / 255 - digits16.mean[0]) / digits16.std[0]
    want = F.softmax(_FixedTeacher().v, 0)

    def kl_to_teacher(alpha: float) -> float:
        student = _net(SMALL, seed=2)
        cfg = replace(FINETUNE, threads=1, batch_size=64, lr=0.05, distill_alpha=alpha, distill_temperature=2.0)
        finetune(student, digits16, steps=20, config=cfg, teacher=_FixedTeacher())
        with torch.no_grad():
            p = F.softmax(student.eval()(x), 1)
        return (want * (want.log() - p.log())).sum(1).mean().item()

    # measured: 0.92 from the labels alone, 0.22 from the teacher alone
    assert kl_to_teacher(1.0) < 0.5 * kl_to_teacher(0.0)
    # a teacher checkpoint loads by path; a teacher for other classes is refused
    from edgecnn.checkpoint import checkpoint_of, save_checkpoint

    save_checkpoint(checkpoint_of(_net(TINY)), tmp_path / "t.pt")
    r = finetune(_net(SMALL), digits16, steps=1, config=replace(FINETUNE, threads=1), teacher=tmp_path / "t.pt")
    assert r.steps == 1
    with pytest.raises(ValueError, match="teacher has 10 classes, the data 3"):
        finetune(_net(TINY), replace(digits16, classes=("a", "b", "c")), steps=1, teacher=tmp_path / "t.pt")


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["train", SMALL, "--data", "digits", "--image-size", "16", "--epochs", "1", "--threads", "1",
               "--no-progress", "--out", str(out), "--json", str(tmp_path / "r.json")])  # fmt: skip
    assert rc == 0 and (out / "last.pt").is_file()
    printed = capsys.readouterr().out
    model, ck = load_model(out / "last.pt")
    assert ck.arch == build(SMALL, num_classes=10, in_chans=1).arch and ck.data["image_size"] == 16
    assert main(["eval", str(out / "last.pt"), "--json"]) == 0
    import json

    got = json.loads(capsys.readouterr().out)
    want = evaluate(model, load_digits(image_size=16))
    assert got["top1"] == pytest.approx(want.top1) and f"top-1 {want.top1:.2%}" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nosuchnet"], "unknown model 'nosuchnet'"),
        (["train", "conv_c8 gap fc", "--data", "/no/such/path"], "data path /no/such/path does not exist"),
        (["train", "conv_c8 gap fc", "--optimizer", "sgd", "--lr", "-1"], "argument --lr: must be > 0, got -1"),
        (["eval", "/no/such.pt"], "checkpoint /no/such.pt does not exist"),
        (["train", "conv_c8 gap fc", "--resume", "--out", "/nonexistent-run"], "nothing to resume"),
    ],
)
def test_cli_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, *(["--no-progress"] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
