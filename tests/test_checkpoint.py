"""Checkpoints: rebuild from the arch string alone; foreign, truncated and malicious files refused, nothing run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from edgecnn.build import build
from edgecnn.checkpoint import VERSION, Checkpoint, checkpoint_of, load_checkpoint, load_model, save_checkpoint

ARCH = "conv_k3_c8 ir_s2_e2_c16 basic_c16 gap fc"


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = build(ARCH, num_classes=7, in_chans=2)
    m.eval()
    with torch.no_grad():  # non-trivial BN statistics, so buffers are checked too
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
    return m


def test_round_trip_rebuilds_the_model_without_code(tmp_path: Path) -> None:
    m = _model()
    ema = {k: v + 1 for k, v in m.state_dict().items() if v.is_floating_point()}
    path = save_checkpoint(checkpoint_of(m, epoch=3, ema_state_dict=None, data={"mean": [0.5, 0.5]}), tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left behind
    back, ck = load_model(path)
    assert (ck.arch, ck.num_classes, ck.in_chans, ck.epoch, ck.data) == (m.arch, 7, 2, 3, {"mean": [0.5, 0.5]})
    assert back.arch == m.arch
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    x = torch.randn(3, 2, 12, 12)
    assert torch.equal(back.eval()(x), m(x))
    # the EMA weights load instead when asked, and a missing EMA is a clear error
    with pytest.raises(ValueError, match="holds no EMA weights"):
        load_model(path, ema=True)
    full = {**m.state_dict(), **ema}
    save_checkpoint(checkpoint_of(m, ema_state_dict=full), tmp_path / "b.pt")
    back_ema, _ = load_model(tmp_path / "b.pt", ema=True)
    assert torch.equal(back_ema.state_dict()["blocks.0.conv.weight"], m.state_dict()["blocks.0.conv.weight"] + 1)


def test_plain_module_saves_and_loads_into_a_given_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    save_checkpoint(checkpoint_of(net), tmp_path / "p.pt")
    ck = load_checkpoint(tmp_path / "p.pt")
    assert (ck.arch, ck.num_classes, ck.in_chans) == (None, 5, 3)
    with pytest.raises(ValueError, match="no EdgeNet .* pass model="):
        load_model(ck)
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    got, _ = load_model(ck, model=other)
    assert torch.equal(got[2].weight, net[2].weight)
    with pytest.raises(ValueError, match="do not fit the model"):
        load_model(ck, model=nn.Linear(2, 2))


class _Evil:
    """Unpickling this calls os.system — the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle-protocol-2", "pickle-protocol-4"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = Checkpoint(ARCH, 7, 2, {}).to_dict() | {"state_dict": {"w": _Evil(marker)}}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))
    # the payload really is live: a plain pickle load would have run it
    if how != "torch.save":
        pickle.loads(path.read_bytes())
        assert marker.exists()
        marker.unlink()
    with pytest.raises(ValueError, match="refusing to load|not a PyTorch checkpoint that loads safely") as err:
        load_checkpoint(path)
    assert "nothing was executed" in str(err.value)
    assert not marker.exists()


def test_truncated_foreign_and_future_files(tmp_path: Path) -> None:
    m = _model()
    good = save_checkpoint(checkpoint_of(m), tmp_path / "good.pt")
    blob = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated or not a PyTorch file"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="text.pt is truncated or not a PyTorch file"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save(m.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not an edgecnn checkpoint .*bare state_dict"):
        load_checkpoint(tmp_path / "bare.pt")
    torch.save({"format": "edgecnn-checkpoint", "version": VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="upgrade edgecnn"):
        load_checkpoint(tmp_path / "new.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = _model()
    path = save_checkpoint(checkpoint_of(m, epoch=1), tmp_path / "last.pt")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(checkpoint_of(m, epoch=2), path)
    monkeypatch.undo()
    assert load_checkpoint(path).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
