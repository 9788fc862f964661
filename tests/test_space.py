import random

import pytest

from edgecnn.build import build
from edgecnn.plan import output_stride, resolve
from edgecnn.search.space import MOBILENET_V3_SPACE, StageSpace, sample


def test_sample_is_reproducible_and_in_the_space():
    a = [sample(random.Random(7)).format() for _ in range(2)]
    assert a[0] == a[1]
    spec = sample(random.Random(7))
    irs = [b for b in spec.blocks if b.kind == "ir"][1:]  # the first ir is the fixed stem block
    assert len(irs) == len(MOBILENET_V3_SPACE.stages)
    for block, stage in zip(irs, MOBILENET_V3_SPACE.stages):
        assert block.k in stage.kernels and block.e in stage.expansions and block.r in stage.depths
        assert block.c in stage.widths and block.act in stage.acts and block.s == stage.stride
        assert block.se in (0.0, 0.25)
    head = [b for b in spec.blocks if b.kind == "conv"][-1]
    assert head.c == 6 * irs[-1].c


def test_samples_build_and_have_output_stride_32():
    rng = random.Random(0)
    for _ in range(5):
        spec = sample(rng)
        plans = resolve(spec, input_size=224)
        assert output_stride(plans) == 32 and plans[-1].cout == 1000
    build(sample(rng), num_classes=10)


def test_space_size_hand_count():
    # per stage: 3 widths × 3 depths × 3 kernels × 3 expansions × 2 SE × 2 activations = 324
    assert all(s.size == 324 for s in MOBILENET_V3_SPACE.stages)
    assert MOBILENET_V3_SPACE.size == 324**5


def test_bad_input():
    with pytest.raises(ValueError, match="random.Random"):
        sample(0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="odd"):
        StageSpace(1, widths=(8,), depths=(1,), kernels=(4,))
    with pytest.raises(ValueError, match="empty"):
        StageSpace(1, widths=(), depths=(1,))
