import random

import pytest
import torch
from search_helpers import TINY_SPACE, random_supernet

from edgecnn.build import build
from edgecnn.data import load_digits
from edgecnn.search import supernet_train as sn
from edgecnn.search.space import MBV3_32_SPACE
from edgecnn.search.supernet import Supernet
from edgecnn.search.supernet_train import SupernetConfig, load_supernet, step_subnets, train_supernet


@pytest.mark.parametrize("space, transform", [(TINY_SPACE, False), (TINY_SPACE, True), (MBV3_32_SPACE, True)])
def test_extracted_subnet_equals_subnet_in_supernet(space, transform):
    net, x = random_supernet(space, transform=transform)
    rng = random.Random(0)
    genomes = [space.extreme(True), space.extreme(False), *(space.sample_genome(rng) for _ in range(4))]
    with torch.no_grad():
        for g in genomes:
            inside = net(x, g)
            alone = net.extract(g).eval()
            assert alone.arch == space.arch(g).format()
            torch.testing.assert_close(alone(x), inside, rtol=0, atol=1e-5)
            # the same arch built from its string and loaded with those weights
            rebuilt = build(alone.arch, num_classes=10, in_chans=3)
            rebuilt.load_state_dict(alone.state_dict())
            torch.testing.assert_close(rebuilt.eval()(x), inside, rtol=0, atol=1e-5)


def test_elastic_kernel_is_centre_crop_and_width_is_first_channels():
    net = Supernet(TINY_SPACE, num_classes=10, in_chans=1)
    layer = net.stages[0][0]
    big = layer.dw.weight
    k3 = layer.dw.kernel(3, 10)
    assert torch.equal(k3, big[:10, :, 1:4, 1:4])  # 5x5 -> centre 3x3, first 10 channels
    g = TINY_SPACE.extreme(False)
    sub = net.extract(g)
    p = net.plans(g)[1]  # the first searchable layer
    assert torch.equal(sub.blocks[1].expand.conv.weight, layer.expand.weight[: p.mid, : p.cin])
    assert torch.equal(sub.blocks[1].project.conv.weight, layer.project.weight[: p.cout, : p.mid])


def test_kernel_transform_starts_as_identity_and_is_applied():
    net = Supernet(TINY_SPACE, num_classes=10, in_chans=1, kernel_transform=True)
    dw = net.stages[0][0].dw
    crop = dw.weight[:4, :, 1:4, 1:4]
    assert torch.equal(dw.kernel(3, 4), crop)
    with torch.no_grad():
        dw.matrices["5to3"].mul_(2.0)
    torch.testing.assert_close(dw.kernel(3, 4), 2 * crop)
    with pytest.raises(ValueError, match="kernel 7 is not one"):
        dw.kernel(7, 4)


def test_sandwich_subnets_are_a_function_of_the_step():
    a = step_subnets(TINY_SPACE, 0, 5, 2)
    assert a == step_subnets(TINY_SPACE, 0, 5, 2) and a != step_subnets(TINY_SPACE, 0, 6, 2)
    assert a[0] == TINY_SPACE.extreme(True) and a[1] == TINY_SPACE.extreme(False) and len(a) == 4


def _data():
    return load_digits(image_size=16, limit=12)


def test_training_learns_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    data = _data()
    cfg = SupernetConfig(steps=6, batch_size=16, lr=0.05, warmup_steps=1, checkpoint_every=3)
    torch.manual_seed(0)
    whole = Supernet(TINY_SPACE, num_classes=10, in_chans=1)
    before = {k: v.clone() for k, v in whole.state_dict().items()}
    res = train_supernet(whole, data, cfg, checkpoint=tmp_path / "a.pt")
    assert res.steps == 6 and res.final_loss == res.final_loss  # finite
    assert any(not torch.equal(before[k], v) for k, v in whole.state_dict().items())
    saved, doc = load_supernet(tmp_path / "a.pt")
    assert doc["step"] == 6
    for k, v in whole.state_dict().items():
        assert torch.equal(saved.state_dict()[k], v)

    # a crash after step 4: the checkpoint holds step 3; resuming ends where the uninterrupted run ended
    real = sn._sandwich_step

    def crash(net, opt, c, x, y, step):
        if step == 4:
            raise KeyboardInterrupt
        return real(net, opt, c, x, y, step)

    torch.manual_seed(0)
    part = Supernet(TINY_SPACE, num_classes=10, in_chans=1)
    monkeypatch.setattr(sn, "_sandwich_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(part, data, cfg, checkpoint=tmp_path / "b.pt")
    monkeypatch.setattr(sn, "_sandwich_step", real)
    assert load_supernet(tmp_path / "b.pt")[1]["step"] == 3
    resumed = Supernet(TINY_SPACE, num_classes=10, in_chans=1)  # other initial weights: the checkpoint wins
    res = train_supernet(resumed, data, cfg, checkpoint=tmp_path / "b.pt", resume=True)
    assert res.resumed_from == 3 and res.steps == 6
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="another supernet recipe"):
        train_supernet(resumed, data, SupernetConfig(steps=7, batch_size=16), checkpoint=tmp_path / "b.pt", resume=True)


def test_builtin_space_checkpoint_loads_against_that_space(tmp_path):
    # mbv3-32's stem is written 'conv_k3_...'; the saved document must read back as the same space (a resume of
    # a benchmark's supernet failed with "another search space" when the stem came back reformatted)
    net = Supernet(MBV3_32_SPACE, num_classes=10, in_chans=3)
    sn.save_supernet(net, tmp_path / "s.pt", step=2)
    saved, doc = load_supernet(tmp_path / "s.pt", space=MBV3_32_SPACE, num_classes=10, in_chans=3)
    assert saved.space == MBV3_32_SPACE and doc["step"] == 2
    with pytest.raises(ValueError, match="another search space"):
        load_supernet(tmp_path / "s.pt", space=TINY_SPACE)


def test_bad_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable supernet checkpoint"):
        load_supernet(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        load_supernet(tmp_path / "none.pt")
