"""``edgecnn compress CKPT --model FILE.py:FN``: a network of the user's own code, compressed and rebuilt."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from edgecnn.analysis import analyze
from edgecnn.cli.main import main
from edgecnn.cli.user_model import load_factory
from edgecnn.compress.netadapt.state import load_pruned
from edgecnn.run_document import read_results
from edgecnn.train.config import FINETUNE
from edgecnn.train.evaluation import evaluate
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, worker_data

NET = '''
import torch
from torch import nn


def cbr(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Net(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = cbr(1, 16)
        self.a = nn.Sequential(cbr(16, 32), nn.Conv2d(32, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.down = cbr(16, 32, 2)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        return self.head(self.down(x).mean((2, 3)))


def build():
    return Net()


def build_wrong():
    return Net(classes=3)
'''
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> tuple[Path, Path]:
    """``net.py`` and the state_dict of its network, trained a little on digits."""
    folder = tmp_path_factory.mktemp("user")
    code = folder / "net.py"
    code.write_text(textwrap.dedent(NET))
    torch.manual_seed(0)
    model = load_factory(f"{code}:build")()
    finetune(model, worker_data(DataRef("digits", image_size=8)), steps=20, config=FINETUNE)
    weights = folder / "weights.pt"
    torch.save(model.state_dict(), weights)
    return code, weights


def run(user, out: Path, method: str, budget: str, *extra: str) -> int:
    code, weights = user
    return main(["compress", str(weights), "--model", f"{code}:build", "--data", "digits", "--budget", budget,
                 "--method", method, "--out", str(out), "--image-size", "8", "--workers", "0", "--round-to", "4",
                 "--short-steps", "2", "--top-k", "1", "--initial-step", "0.25", "--long-epochs", "0.2",
                 "--batch-size", "64", "--no-progress", *extra])  # fmt: skip


@pytest.mark.parametrize("method", ["netadapt", "prune"])
def test_compress_a_user_network_to_a_macs_budget_and_rebuild_it(user, tmp_path, method, capsys) -> None:
    out = tmp_path / method
    assert run(user, out, method, "50%macs") == 0
    doc = read_results(out)
    assert doc["met"] is True and doc["arch"] is None
    fresh = load_factory(f"{user[0]}:build")()
    before = analyze(fresh, SHAPE, receptive_fields=False)
    assert doc["before"]["macs"] == before.macs and doc["before"]["params"] == before.params
    rebuilt = load_pruned(out / "model.pt", fresh)  # replayed on the user's own code, weights loaded strictly
    after = analyze(rebuilt, SHAPE, receptive_fields=False)
    assert doc["after"]["macs"] == after.macs <= 0.5 * before.macs and doc["after"]["params"] == after.params
    data = worker_data(DataRef("digits", image_size=8))
    assert evaluate(rebuilt, data, channels_last=False).top1 == pytest.approx(doc["after"]["top1"])
    assert (len(doc["history"]) >= 1) == (method == "netadapt")
    assert "arch Net\n" in capsys.readouterr().out  # no arch string: the closing line names the class


def test_a_user_network_to_a_measured_latency_budget(user, tmp_path) -> None:
    out = tmp_path / "lat"
    # at 32² the network's time is mostly its convolutions (at 8² per-layer overhead would floor it near 85%)
    assert run(user, out, "prune", "60%latency", "--threads", "1", "--image-size", "32") == 0
    doc = read_results(out)
    assert doc["met"] is True and doc["budget"]["resource"] == "latency"
    assert 0 < doc["budget"]["target"] == pytest.approx(0.6 * doc["budget"]["start"])
    assert doc["after"]["macs"] < doc["before"]["macs"]


def test_bad_user_models_are_one_line_exit_2(user, tmp_path, capsys) -> None:
    code, weights = user
    base = ["compress", str(weights), "--data", "digits", "--image-size", "8", "--budget", "50%macs", "--out",
            str(tmp_path / "x")]
    cases = [
        (["--model", "build"], "MODULE:FUNCTION"),
        (["--model", "no_such_module_xyz:build"], "cannot import"),
        (["--model", f"{code}:nothing"], "no function or class 'nothing'"),
        (["--model", f"{code}:build_wrong"], "do not fit"),
        (["--model", f"{code}:build", "--method", "lowrank"], "not supported"),
    ]
    for args, says in cases:
        assert main(base + args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], (args, err)
    pickled = tmp_path / "module.pt"
    torch.save(load_factory(f"{code}:build")(), pickled)  # a whole pickled module: never unpickled
    assert main(["compress", str(pickled), *base[2:], "--model", f"{code}:build"]) == 2
    assert "refusing to load" in capsys.readouterr().err
