"""``edgecnn compress`` end to end on digits: a trained tiny net to a MACs budget; bad budgets exit 2 with one line."""

from __future__ import annotations

import pytest
import torch

from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.build import build
from edgecnn.checkpoint import checkpoint_of, load_model, save_checkpoint
from edgecnn.cli.main import main
from edgecnn.run_document import read_results
from edgecnn.train.config import FINETUNE
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, worker_data

TINY = "conv_k3_c16 ir_s2_e3_c16 ir_c16 gap fc"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    data = worker_data(DataRef("digits", image_size=8))
    torch.manual_seed(0)
    model = build(TINY, num_classes=10, in_chans=1)
    finetune(model, data, steps=20, config=FINETUNE)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(checkpoint_of(model, data={"name": "digits", "image_size": 8}), path)
    return str(path)


@pytest.mark.parametrize("method", ["netadapt", "prune"])
def test_compress_to_a_macs_budget(ckpt, tmp_path, method, capsys) -> None:
    out = tmp_path / method
    rc = main(["compress", ckpt, "--data", "digits", "--budget", "60%macs", "--method", method, "--out", str(out),
               "--workers", "0", "--round-to", "4", "--short-steps", "2", "--top-k", "1", "--initial-step", "0.25",
               "--long-epochs", "0.2", "--batch-size", "64", "--no-progress", *(["--int8"] if method == "prune" else [])])
    assert rc == 0
    doc = read_results(out)
    assert doc["kind"] == "compress" and doc["method"] == method and doc["met"] is True
    start = cost_from_spec(TINY, 8, 10, 1)
    assert doc["before"]["macs"] == start.macs and doc["before"]["params"] == start.params
    assert doc["after"]["macs"] == cost_from_spec(doc["arch"], 8, 10, 1).macs <= 0.6 * start.macs
    assert doc["after"]["latency_ms"] > 0 and 0 <= doc["after"]["top1"] <= 1
    model, _ = load_model(out / "model.pt")
    assert model.arch == doc["arch"]
    assert (len(doc["history"]) >= 1) == (method == "netadapt")
    if method == "prune":  # --int8: the ONNX file and its comparison
        assert (out / "model-int8.onnx").is_file() and doc["int8"]["images"] == 359
        assert 0 <= doc["int8"]["agreement"] <= 1 and doc["int8"]["latency_int8_ms"] > 0
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed and doc["arch"] in printed


@pytest.mark.parametrize("budget", ["fast", "150%latency", "-3ms"])
def test_bad_budget_is_one_line_exit_2(ckpt, budget, capsys) -> None:
    assert main(["compress", ckpt, "--data", "digits", f"--budget={budget}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgecnn compress: error: budget")
