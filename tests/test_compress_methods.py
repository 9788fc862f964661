"""``--method lowrank`` and ``--method separable``: measured-latency skips, exact recovery, least-squares fits, CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecnn.analysis import analyze
from edgecnn.build import build, plain
from edgecnn.checkpoint import checkpoint_of, save_checkpoint
from edgecnn.cli.main import main
from edgecnn.compress.factor.by_layer import load_compressed
from edgecnn.compress.factor.lowrank_method import lowrank_to_budget
from edgecnn.compress.factor.layer_timing import exact_resource, front, greedy_path, select_to_budget
from edgecnn.compress.factor.separable import fit_pointwise_, separable_pair, separable_to_budget
from edgecnn.run_document import read_results
from edgecnn.train.config import FINETUNE
from edgecnn.train.evaluation import evaluate
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, worker_data

pytestmark = pytest.mark.usefixtures("one_thread")

OP_MS, MAC_MS = 0.05, 1e-6  # the fake device: 0.05 ms per conv / linear launch + 1 ns per MAC


def fake_latency(module: nn.Module, shape: tuple[int, ...]) -> float:
    """Deterministic stand-in for a measurement: a fixed cost per operator plus a cost per MAC."""
    ops = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())
    return OP_MS * ops + MAC_MS * analyze(module, shape[1:], receptive_fields=False).macs


def _planted_rank(conv: nn.Conv2d, rank: int, seed: int = 0) -> None:
    """Make the conv's (C_out, C_in·k²) matrix exactly rank ``rank``."""
    g = torch.Generator().manual_seed(seed)
    n = conv.weight.shape[0]
    a = torch.randn(n, rank, generator=g, dtype=torch.double)
    b = torch.randn(rank, conv.weight[0].numel(), generator=g, dtype=torch.double)
    with torch.no_grad():
        conv.weight.copy_((a @ b).reshape(conv.weight.shape))


# ---------------------------------------------------------------- lowrank against (fake) measured latency


def test_planted_low_rank_conv_is_recovered_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    _planted_rank(model[0], 8)
    size = (32, 16, 16)
    macs = exact_resource(model, size, "macs")  # 64·288·256 = 4 718 592
    r = lowrank_to_budget(model, "macs", 0.5 * macs, size, layer_latency=fake_latency, forms=("channel",))
    (e,) = r.plan.layers
    # ranks on the grid: 8, 16, 24, 32, 40, 48 (of 64); rank 8 keeps all the energy, so the greedy takes it first
    assert (e.name, e.form, e.rank, e.full_rank) == ("0", "channel", 8, 64)
    assert e.energy == pytest.approx(1.0, abs=1e-12) and e.relative_error < 1e-7
    assert r.met and r.value == exact_resource(r.model, size, "macs") == 8 * (288 + 64) * 256
    x = torch.randn(2, *size, dtype=torch.double)
    torch.testing.assert_close(r.model(x), model(x), rtol=0, atol=1e-10)


def test_slower_factorisation_is_skipped_with_its_reason() -> None:
    # on the fake device a pair costs one more launch (0.05 ms): a small layer's pair is slower, a big one's is not
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),  # 2304 weights on 4×4: 36 864 MACs
        nn.Conv2d(16, 128, 3, padding=1), nn.ReLU(),  # 18 432 weights: 294 912 MACs
    ).eval()  # fmt: skip
    size = (16, 4, 4)
    start = exact_resource(model, size, "macs")
    r = lowrank_to_budget(model, "macs", 0.7 * start, size, layer_latency=fake_latency, forms=("channel",))
    assert [e.name for e in r.plan.layers] == ["2"]
    skip = {s.name: s.reason for s in r.plan.skipped}
    assert skip["0"].startswith("no factorisation is faster on this device")
    slow0 = [s for s in r.slower if s.name == "0"]
    # layer 0 alone: 0.05 + 0.036864 ms; its only grid rank (8 of 16): 2·0.05 + 8·(144 + 16)·16·1e-6 = 0.12048 ms
    assert [(s.form, s.rank) for s in slow0] == [("channel", 8)]
    assert slow0[0].original_ms == pytest.approx(0.086864) and slow0[0].latency_ms == pytest.approx(0.12048)
    assert all(s.latency_ms >= s.original_ms for s in r.slower)
    assert "not faster on this device" in slow0[0].reason and f"{slow0[0].original_ms:.4f} ms" in slow0[0].reason
    assert r.met and r.value <= 0.7 * start


def test_latency_budget_is_cut_where_the_whole_network_meets_it() -> None:
    # the whole network costs 0.1 ms more per pair than the sum of its layers says: the per-layer prediction
    # would stop too early; the bisection on whole-network times stops at the first prefix that really meets it
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1) for _ in range(3)]).eval()
    size = (64, 8, 8)

    def whole(m: nn.Module) -> float:
        pairs = sum(isinstance(c, nn.Sequential) for c in m.modules()) - 1  # minus the outer Sequential
        return fake_latency(m, (1, *size)) + 0.1 * pairs

    start = whole(model)
    r = lowrank_to_budget(model, "latency", 0.8 * start, size, layer_latency=fake_latency, model_latency=whole,
                          forms=("channel",))  # fmt: skip
    assert r.met and r.value == pytest.approx(whole(r.model)) and len(r.plan.layers) == 3
    assert 2 <= r.evaluated <= 6  # 1 + ⌈log₂ 18⌉: 3 layers × 6 grid ranks at most on the walk


def _walk_value(options: dict, path: list[str], k: int, start: float) -> float:
    at = dict.fromkeys(options, 0)
    for n in path[:k]:
        at[n] += 1
    return start - sum(options[n][0][0] - options[n][i][0] for n, i in at.items())


def test_greedy_order_and_the_measured_cut() -> None:
    # B loses little energy per unit saved, A much: B's two steps come first, then A's
    opts = {"A": front(10.0, [(5.0, 0.5)])[0], "B": front(10.0, [(8.0, 0.99), (6.0, 0.9)])[0]}
    assert greedy_path(opts) == ["B", "B", "A"]

    def value(c: dict) -> float:
        return 20.0 - sum(10.0 - opts[n][i][0] for n, i in c.items())

    choice, model, v, n, _ = select_to_budget(opts, 20.0, 16.0, build=dict, value=value, measured=False)
    assert choice == {"B": 2} and v == 16.0 and n == 1
    choice, _, v, _, _ = select_to_budget(opts, 20.0, 12.0, build=dict, value=value, measured=False)
    assert choice == {"A": 1, "B": 2} and v == 11.0
    # measured: each replaced layer costs 1.5 more than its own saving says; the cut is the first prefix that meets
    slow = lambda c: value(c) + 1.5 * len(c)  # noqa: E731
    path = greedy_path(opts)
    want = next(k for k in range(len(path) + 1) if _walk_value(opts, path, k, 20.0) + 1.5 * len(set(path[:k])) <= 16.5)
    assert select_to_budget(opts, 20.0, 16.5, build=dict, value=value, measured=False)[0] == {"B": 2}  # predicted 16
    choice, _, v, _, _ = select_to_budget(opts, 20.0, 16.5, build=dict, value=slow, measured=True)
    assert want == 3 and choice == {"A": 1, "B": 2} and v == 14.0  # B, B measures 17.5: over
    choice, _, v, _, _ = select_to_budget(opts, 20.0, 10.0, build=dict, value=slow, measured=True)
    assert choice == {"A": 1, "B": 2} and v > 10.0  # out of reach: the whole walk, reported over
    # a walk whose whole network measures no faster than the start (a slow device for pairs) replaces nothing
    choice, _, v, _, why = select_to_budget(opts, 20.0, 10.0, build=dict, value=lambda c: value(c) + 5.0 * len(c),
                                            measured=True)  # fmt: skip
    assert choice == {} and v == 20.0 and why.startswith("with every candidate replaced the whole network measured 21")


# ---------------------------------------------------------------- separable: the fit


def _separable_conv(c_in: int, c_out: int, **kw) -> nn.Conv2d:
    torch.manual_seed(1)
    conv = nn.Conv2d(c_in, c_out, 3, **kw).double()
    p, d = torch.randn(c_out, c_in, dtype=torch.double), torch.randn(c_in, 3, 3, dtype=torch.double)
    with torch.no_grad():
        conv.weight.copy_(p[:, :, None, None] * d[None])
    return conv


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=1, bias=False), dict(dilation=2, padding=2,
                                                                                              padding_mode="reflect")])
def test_planted_separable_conv_is_recovered_exactly(kw: dict) -> None:
    conv = _separable_conv(5, 7, **kw)
    pair, energy = separable_pair(conv)
    x = torch.randn(3, 5, 11, 10, dtype=torch.double)
    assert energy == pytest.approx(1.0, abs=1e-12)
    assert pair[0].groups == 5 and pair[0].kernel_size == (3, 3) and pair[1].kernel_size == (1, 1)
    torch.testing.assert_close(pair(x), conv(x), rtol=0, atol=1e-11)
    assert fit_pointwise_(pair, conv, [x]) < 1e-12  # the data fit keeps it exact
    torch.testing.assert_close(pair(x), conv(x), rtol=0, atol=1e-11)


def _composed(pair: nn.Sequential) -> torch.Tensor:
    return pair[1].weight[:, :, 0, 0, None, None] * pair[0].weight[:, 0][None]


def test_weight_fit_is_the_least_squares_optimum_over_separable_weights() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 9, 3).double()
    pair, energy = separable_pair(conv)
    w = conv.weight.detach()
    err2 = ((w - _composed(pair)) ** 2).sum()
    # Eckart–Young per input channel: the error is the discarded singular values of each C_out × 9 slice
    s = torch.stack([torch.linalg.svdvals(w[:, c].reshape(9, 9)) for c in range(6)])
    assert err2.item() == pytest.approx((s[:, 1:] ** 2).sum().item(), rel=1e-10)
    assert energy == pytest.approx(1 - err2.item() / (w**2).sum().item(), rel=1e-10)
    d, p = pair[0].weight.detach(), pair[1].weight.detach()
    for k in range(30):  # no nearby or random separable weight is closer
        g = torch.Generator().manual_seed(k)
        scale = 10 ** (-k % 4)
        d2 = d + scale * torch.randn(d.shape, generator=g, dtype=torch.double)
        p2 = p + scale * torch.randn(p.shape, generator=g, dtype=torch.double)
        other = p2[:, :, 0, 0, None, None] * d2[:, 0][None]
        assert ((w - other) ** 2).sum() > err2


def test_pointwise_fit_is_the_output_least_squares_optimum_and_beats_the_weight_fit_and_random() -> None:
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 9, 3, padding=1).double()
    x = torch.randn(4, 6, 10, 10, dtype=torch.double)
    x[:, 1] = x[:, 0] * 0.5 + 0.1 * x[:, 1]  # correlated channels: the data fit differs from the weight fit
    y = conv(x)

    def rel(pair: nn.Sequential) -> float:
        return ((pair(x) - y).norm() / y.norm()).item()

    pair, _ = separable_pair(conv)
    weight_fit = rel(pair)
    rand = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), nn.Conv2d(6, 9, 1)).double()
    err = fit_pointwise_(pair, conv, [x[:2], x[2:]])
    assert err == pytest.approx(rel(pair), rel=1e-9) and err < weight_fit < rel(rand)
    # optimality: the residual is orthogonal to every regressor (depthwise outputs and the bias column)
    z = pair[0](x).permute(0, 2, 3, 1).reshape(-1, 6)
    a = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)
    r = (y - pair(x)).permute(0, 2, 3, 1).reshape(-1, 9)
    assert (a.T @ r).abs().max().item() < 1e-9 * (a.norm() * r.norm()).item()


def test_separable_slower_pair_is_skipped_and_costs_are_per_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),  # 36 weights: the pair (1 launch more) is slower on the fake device
        nn.Conv2d(4, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
    ).eval()  # fmt: skip
    size = (1, 16, 16)
    start = exact_resource(model, size, "macs")
    r = separable_to_budget(model, "macs", 0.5 * start, size, layer_latency=fake_latency,
                            calibration=[torch.randn(8, *size)])  # fmt: skip
    (e,) = r.plan.layers
    assert e.name == "2" and (e.macs_before, e.macs_after) == (64 * 36 * 256, (36 + 4 * 64) * 256)
    assert (e.params_before, e.params_after) == (64 * 36 + 64, 36 + 4 * 64 + 64)
    assert e.latency_ms_after < e.latency_ms_before and e.output_error is not None
    skip = {s.name: s.reason for s in r.plan.skipped}
    assert "not faster on this device" in skip["0"] and "ms ≥ the conv's" in skip["0"]
    assert r.met and r.value == exact_resource(r.model, size, "macs") == start - e.macs_before + e.macs_after
    assert isinstance(r.model[2][0], nn.Conv2d) and r.model[2][0].groups == 4 and isinstance(model[2], nn.Conv2d)


# ---------------------------------------------------------------- the command


NET = "conv_k3_c16 conv_k3_s2_c32 conv_k3_c32 gap fc"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    data = worker_data(DataRef("digits", image_size=8))
    torch.manual_seed(0)
    model = build(NET, num_classes=10, in_chans=1)
    finetune(model, data, steps=10, config=FINETUNE)
    path = tmp_path_factory.mktemp("ckpt") / "net.pt"
    save_checkpoint(checkpoint_of(model, data={"name": "digits", "image_size": 8}), path)
    return str(path)


@pytest.mark.parametrize("method", ["lowrank", "separable"])
def test_cli_method_to_a_macs_budget(ckpt, tmp_path, method, monkeypatch, capsys) -> None:
    # per-layer times from the fake device (deterministic choice); the before/after latency is really measured
    monkeypatch.setattr("edgecnn.compress.factor.by_layer.measured_layer_latency", lambda **kw: fake_latency)
    out = tmp_path / method
    rc = main(["compress", ckpt, "--data", "digits", "--budget", "70%macs", "--method", method, "--out", str(out),
               "--round-to", "4", "--long-epochs", "0.1", "--batch-size", "64", "--workers", "0", "--no-progress"])
    assert rc == 0
    doc = read_results(out)
    start = analyze(build(NET, num_classes=10, in_chans=1), (1, 8, 8))
    assert doc["method"] == method and doc["met"] is True and doc["arch"] is None
    assert (doc["before"]["macs"], doc["before"]["params"]) == (start.macs, start.params)
    assert doc["after"]["macs"] <= 0.7 * start.macs and doc["after"]["latency_ms"] > 0
    layers = doc["plan"]["layers"]
    assert layers and doc["after"]["macs"] == start.macs - sum(e["macs_before"] - e["macs_after"] for e in layers)
    assert all(s["reason"] for s in doc["plan"]["skipped"])
    model, ck = load_compressed(out / "model.pt")  # rebuilt from the record, weights loaded strictly
    assert ck.config["compress"]["method"] == method
    data = worker_data(DataRef("digits", image_size=8))
    assert evaluate(model, data, channels_last=False).top1 == doc["after"]["top1"]
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed


@pytest.mark.parametrize("argv", [["--budget", "50%macs", "--method", "bogus"],
                                  ["--budget", "fast", "--method", "lowrank"],
                                  ["--budget", "0%latency", "--method", "separable"]])  # fmt: skip
def test_cli_bad_method_or_budget_is_one_line_exit_2(ckpt, argv, capsys) -> None:
    assert main(["compress", ckpt, "--data", "digits", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgecnn compress: error:")


def test_layer_latency_runs_on_both_backends() -> None:
    # the default measurement: each backend times a layer and its replacements alone (no timing asserted)
    from edgecnn.compress.factor.lowrank import factorize_conv
    from edgecnn.compress.factor.layer_timing import measured_layer_latency

    conv = nn.Conv2d(8, 16, 3, padding=1).eval()
    for backend in ("eager", "onnxruntime"):
        lat = measured_layer_latency(backend=backend, threads=1)
        for m in (conv, factorize_conv(conv, 4), separable_pair(conv)[0]):
            assert lat(m, (1, 8, 6, 6)) > 0


def test_damaged_replacement_record_is_refused(tmp_path) -> None:
    net = build(NET, num_classes=10, in_chans=1)
    rec = {"compress": {"method": "lowrank", "source_arch": NET, "layers": [{"name": "blocks.9.conv", "rank": 2}]}}
    save_checkpoint(checkpoint_of(plain(net, note="damaged"), config=rec), tmp_path / "bad.pt")  # arch None
    with pytest.raises(ValueError, match="does not describe a replacement"):
        load_compressed(tmp_path / "bad.pt")
    save_checkpoint(checkpoint_of(net, config={}), tmp_path / "plain.pt")
    model, _ = load_compressed(tmp_path / "plain.pt")  # an ordinary EdgeNet checkpoint loads as it is
    assert model.arch == net.arch
