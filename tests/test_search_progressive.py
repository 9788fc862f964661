import random

import pytest
import torch
from search_helpers import random_supernet

from edgecnn.build import build
from edgecnn.data import load_digits
from edgecnn.search import supernet_train as sn
from edgecnn.search.progressive import PHASES, phase_space, phase_spans, span_at
from edgecnn.search.space import GENES, MBV3_32_SPACE, space_from_dict
from edgecnn.search.supernet import DynamicDepthwise, Supernet
from edgecnn.search.supernet_train import SupernetConfig, load_supernet, phase_subnets, train_supernet

# kernels 3/5/7 (the transformation chain 7→5→3); stage 1 is stride 1 with stage 0's largest width, so a residual
# joins the two stages in the full network and their output channels must share one order
K7_SPACE = space_from_dict({
    "name": "tiny-k7", "input_size": 16, "stem": "conv_k3_s2_c8_hswish", "head_mult": 2, "hidden": 32,
    "stages": [
        {"stride": 2, "widths": [8, 16], "depths": [1, 2], "kernels": [3, 5, 7], "expansions": [3, 6]},
        {"stride": 1, "widths": [12, 16], "depths": [1, 2], "kernels": [3, 5, 7], "expansions": [3, 4]},
    ],
})  # fmt: skip


def test_phase_spans_cover_the_steps_in_order():
    spans = phase_spans(1000)
    assert [s.phase.name for s in spans] == ["full", "kernel", "depth-1", "depth-2", "width-1", "width-2"]
    assert spans[0].start == 0 and spans[-1].end == 1000
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
    assert [s.steps for s in spans] == [220, 220, 50, 220, 50, 240]  # OFA's shares 0.22/0.22/0.05/0.22/0.05/0.24
    assert span_at(spans, 440).phase.name == "depth-1" and span_at(spans, 439).phase.name == "kernel"
    assert all(s.steps == 1 for s in phase_spans(6))  # a tiny run still visits every phase
    with pytest.raises(ValueError, match="at least 6 supernet steps"):
        phase_spans(5)


def _values(space, phase, n=80):
    """Every value each gene takes in ``n`` steps of ``phase``'s subnets, over all stages."""
    spans = [s for s in phase_spans(600) if s.phase is phase]
    seen = {g: set() for g in GENES}
    for step in range(spans[0].start, spans[0].start + n):
        for genome in phase_subnets(space, spans[0], 0, step):
            for c in genome:
                for g in GENES:
                    seen[g].add(getattr(c, g))
    return seen


def test_phases_open_the_choices_in_order():
    space = MBV3_32_SPACE
    full, kernel, depth1, depth2, width1, width2 = (_values(space, p) for p in PHASES)
    largest = space.extreme(True)
    assert full == {g: {getattr(c, g) for c in largest} for g in GENES}  # only the full network
    assert len(phase_subnets(space, phase_spans(600)[0], 0, 3)) == 1
    assert kernel["kernel"] == {3, 5, 7} and kernel["depth"] == {3} and kernel["expansion"] == {6.0}
    assert depth1["depth"] == {2, 3} and depth1["kernel"] == {3, 5, 7} and depth1["expansion"] == {6.0}
    assert depth2["depth"] == {1, 2, 3} and depth2["se"] == {True} and depth2["act"] == {"hswish"}
    assert depth2["width"] == {32, 48, 80, 112}  # every stage at its largest width
    assert width1["expansion"] == {4.0, 6.0} and width1["se"] == {False, True} and width1["act"] == {"relu", "hswish"}
    assert width1["width"] == {24, 32, 40, 48, 64, 80, 96, 112}  # the two largest of each stage
    assert width2["expansion"] == {3.0, 4.0, 6.0} and 16 in width2["width"]
    # each phase keeps every choice the previous one had open
    for a, b in zip((full, kernel, depth1, depth2, width1), (kernel, depth1, depth2, width1, width2)):
        assert all(a[g] <= b[g] for g in GENES)
    # the restricted space keeps the same largest network (extreme() reads the kept options' order)
    assert all(phase_space(space, p).extreme(True) == largest for p in PHASES)


def test_three_by_three_kernel_is_the_transformed_centre_of_the_seven_by_seven():
    """OFA §3.3: 7×7 → centre 5×5 × M(25×25) → centre 3×3 × M(9×9), against a hand computation."""
    dw = DynamicDepthwise(2, (3, 5, 7), transform=True)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        dw.weight.copy_(torch.randn(2, 1, 7, 7, generator=g))
        dw.matrices["7to5"].copy_(torch.randn(25, 25, generator=g))
        dw.matrices["5to3"].copy_(torch.randn(9, 9, generator=g))
    w, m75, m53 = (t.detach().double() for t in (dw.weight, dw.matrices["7to5"], dw.matrices["5to3"]))
    for c in range(2):
        k5 = [[sum(w[c, 0, 1 + p, 1 + q] * m75[p * 5 + q, i * 5 + j] for p in range(5) for q in range(5))
               for j in range(5)] for i in range(5)]  # fmt: skip
        k3 = [[sum(k5[1 + p][1 + q] * m53[p * 3 + q, i * 3 + j] for p in range(3) for q in range(3))
               for j in range(3)] for i in range(3)]  # fmt: skip
        expect = torch.tensor([[float(v) for v in row] for row in k3])
        torch.testing.assert_close(dw.kernel(3, 2)[c, 0], expect, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(dw.kernel(5, 2)[c, 0], torch.tensor([[float(v) for v in r] for r in k5]),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    assert torch.equal(dw.kernel(7, 2), dw.weight)


def test_channel_sorting_keeps_the_full_network():
    for space in (MBV3_32_SPACE, K7_SPACE):
        net, x = random_supernet(space, transform=True)
        # every network trained before the width phases: any kernel and depth, the largest expansion and width
        rng = random.Random(0)
        open_before = phase_space(space, PHASES[3])
        genomes = [space.extreme(True), *(open_before.sample_genome(rng) for _ in range(3))]
        with torch.no_grad():
            reference = [net.extract(g).eval()(x) for g in genomes]  # plain PyTorch modules, before sorting
            before_proj = [layer.project.weight.clone() for stage in net.stages for layer in stage]
            done = net.sort_channels_()
            for g, ref in zip(genomes, reference):
                torch.testing.assert_close(net(x, g), ref, rtol=1e-5, atol=1e-5)
        layers = [layer for stage in net.stages for layer in stage]
        assert done["layers"] == len(layers)
        moved = 0
        for layer, old in zip(layers, before_proj):
            imp = layer.project.weight.abs().sum((0, 2, 3))
            assert torch.all(imp[:-1] >= imp[1:])  # most important inner channels first
            moved += not torch.equal(layer.project.weight, old)
        assert moved == len(layers)  # the sort did reorder (a no-op would pass the equality above)
    # K7_SPACE's two stages share one output order (the residual at width 16 joins them)
    assert net._width_groups() == [[0, 1]] and done["stage_groups"] == 1


def test_stage_outputs_are_sorted_by_what_reads_them():
    torch.manual_seed(0)
    net = Supernet(MBV3_32_SPACE, num_classes=10, in_chans=3, kernel_transform=True)
    net.sort_channels_()
    stage0 = list(net.stages[0])
    readers = [layer.expand.weight for layer in stage0[1:]] + [net.stages[1][0].expand.weight]
    imp = sum(w.abs().sum((0, 2, 3)) for w in readers)
    assert torch.all(imp[:-1] >= imp[1:])


def _digits():
    return load_digits(image_size=16, limit=12)


def test_tiny_progressive_run_extracts_exact_subnets_and_resumes(tmp_path, monkeypatch):
    data = _digits()
    cfg = SupernetConfig(steps=14, batch_size=16, lr=0.05, warmup_steps=1, checkpoint_every=4, schedule="progressive")
    torch.manual_seed(0)
    whole = Supernet(K7_SPACE, num_classes=10, in_chans=1, kernel_transform=True)
    res = train_supernet(whole, data, cfg, checkpoint=tmp_path / "a.pt")
    assert res.steps == 14 and res.final_loss == res.final_loss
    assert set(res.phase_seconds) == {p.name for p in PHASES}
    # the kernel transforms were trained (not the identity any more)
    dw = whole.stages[0][0].dw
    assert not torch.equal(dw.matrices["7to5"], torch.eye(25)) or not torch.equal(dw.matrices["5to3"], torch.eye(9))
    doc = load_supernet(tmp_path / "a.pt")[1]
    assert doc["step"] == 14 and doc["teacher"] is not None and doc["config"]["schedule"] == "progressive"

    # a subnet taken from the trained supernet equals the same arch built and loaded with those weights
    whole.eval()
    x = data.train.images[:4].float().div(255).sub(data.mean[0]).div(data.std[0])
    rng = random.Random(0)
    with torch.no_grad():
        for g in [K7_SPACE.extreme(True), K7_SPACE.extreme(False), *(K7_SPACE.sample_genome(rng) for _ in range(4))]:
            inside = whole(x, g)
            alone = whole.extract(g)
            rebuilt = build(alone.arch, num_classes=10, in_chans=1)
            rebuilt.load_state_dict(alone.state_dict())
            torch.testing.assert_close(rebuilt.eval()(x), inside, rtol=0, atol=1e-5)

    # phases of 14 steps: full 0-3, kernel 3-6, depth-1 6-7, depth-2 7-10, width-1 10-11 (sorts), width-2 11-14;
    # a crash at step 13 resumes from the step-12 checkpoint: sorted weights, the teacher and the optimiser of a
    # phase under way come back, and the run ends where the uninterrupted one ended
    real = sn._progressive_step

    def crash(net, opt, c, span, teacher, x, y, step):
        if step == 13:
            raise KeyboardInterrupt
        return real(net, opt, c, span, teacher, x, y, step)

    torch.manual_seed(0)
    part = Supernet(K7_SPACE, num_classes=10, in_chans=1, kernel_transform=True)
    monkeypatch.setattr(sn, "_progressive_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(part, data, cfg, checkpoint=tmp_path / "b.pt")
    monkeypatch.setattr(sn, "_progressive_step", real)
    assert load_supernet(tmp_path / "b.pt")[1]["step"] == 12
    resumed = Supernet(K7_SPACE, num_classes=10, in_chans=1, kernel_transform=True)
    res = train_supernet(resumed, data, cfg, checkpoint=tmp_path / "b.pt", resume=True)
    assert res.resumed_from == 12 and res.steps == 14
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)


def test_progressive_needs_the_kernel_transform_and_a_known_schedule():
    with pytest.raises(ValueError, match="kernel_transform=True"):
        train_supernet(Supernet(K7_SPACE, num_classes=10, in_chans=1), _digits(),
                       SupernetConfig(steps=6, batch_size=16, schedule="progressive"))  # fmt: skip
    with pytest.raises(ValueError, match="unknown supernet schedule 'ofa'; valid: sandwich, progressive"):
        SupernetConfig(schedule="ofa")
