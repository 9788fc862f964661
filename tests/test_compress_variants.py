"""Random pruned variants: distinct, reproducible, narrower than the network in every width, buildable."""

from __future__ import annotations

import pytest

from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.build import build
from edgecnn.compress.netadapt.variants import random_variants
from edgecnn.plan import resolve

ARCH = "conv_k3_c16 basic_r2_c16_padskip basic_s2_c32_padskip basic_c32_padskip gap fc"


def test_variants_are_distinct_reproducible_narrower_and_buildable() -> None:
    model = build(ARCH, num_classes=10)
    got = random_variants(model, 6, input_size=16, seed=1)
    assert len(set(got)) == 6 and model.arch not in got
    assert got == random_variants(model, 6, input_size=16, seed=1) != random_variants(model, 6, input_size=16, seed=2)
    base = resolve(model.arch, num_classes=10, input_size=16)
    base_macs = cost_from_spec(model.arch, 16, 10, 3).macs
    for arch in got:
        plans = resolve(arch, num_classes=10, input_size=16)
        assert [p.spec.kind for p in plans] == [p.spec.kind for p in base]  # the same blocks, only widths change
        assert all(p.cout <= q.cout and (p.mid or 0) <= (q.mid or 0) for p, q in zip(plans, base))
        # the padskip shortcuts tie the stage widths: only the blocks' inner widths are free here
        assert [p.cout for p in plans] == [q.cout for q in base]
        assert cost_from_spec(arch, 16, 10, 3).macs < base_macs
        assert all(p.mid % 2 == 0 and p.mid >= 0.25 * q.mid for p, q in zip(plans, base) if p.mid)  # round_to=2 grid
        build(arch, num_classes=10)


def test_bad_arguments() -> None:
    model = build(ARCH, num_classes=10)
    with pytest.raises(ValueError, match="must be positive"):
        random_variants(model, 0, input_size=16)
    with pytest.raises(ValueError, match="min_keep"):
        random_variants(model, 2, input_size=16, min_keep=0.0)
    with pytest.raises(ValueError, match="no channel group that can be pruned"):
        random_variants(build("conv_k3_c1 gap fc", num_classes=10), 2, input_size=8)
