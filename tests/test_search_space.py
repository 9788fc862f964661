import json
import random

import pytest

from edgecnn.plan import output_stride, resolve
from edgecnn.search.objective import Objective, parse_target, pareto_front
from edgecnn.search.space import GENES, MBV3_32_SPACE, SPACES, StageChoice, get_space, load_space, space_from_dict

TINY = {
    "name": "tiny", "input_size": 32, "stem": "conv_k3_c16_hswish", "head_mult": 6, "hidden": 64,
    "stages": [
        {"stride": 2, "widths": [16, 24], "depths": [1, 2], "kernels": [3, 5], "expansions": [3, 6]},
        {"stride": 2, "widths": [32, 40], "depths": [1, 2], "se": [False, True], "acts": ["relu", "hswish"]},
    ],
}  # fmt: skip


def test_builtin_spaces_resolve_at_their_input_size():
    assert set(SPACES) == {"mbv3-224", "mbv3-32"}
    for space in SPACES.values():
        for largest in (True, False):
            plans = resolve(space.arch(space.extreme(largest)), input_size=space.input_size)
            assert output_stride(plans) == space.input_size // 4 if space.name == "mbv3-32" else 32
    # mbv3-32: strides 1 (stem), 2, 2, 1, 2 -> a 32x32 input ends at 4x4
    plans = resolve(MBV3_32_SPACE.arch(MBV3_32_SPACE.extreme(True)), input_size=32)
    assert [p for p in plans if not p.flat][-1].out_size == (4, 4)


def test_genome_arch_round_trip_and_mutation_changes_one_gene():
    rng = random.Random(3)
    space = MBV3_32_SPACE
    for _ in range(20):
        g = space.sample_genome(rng)
        arch = space.arch(g).format()
        assert space.decode(arch) == g
        child = space.mutate(g, rng)
        diffs = [(i, n) for i, (a, b) in enumerate(zip(g, child)) for n in GENES if getattr(a, n) != getattr(b, n)]
        assert len(diffs) == 1
        space.check(child)


def test_stage_block_string():
    c = StageChoice(depth=3, kernel=5, expansion=4.0, se=True, act="hswish", width=40)
    assert c.block(2) == "ir_r3_k5_s2_e4_c40_se0.25_hsgate_hswish"
    with pytest.raises(ValueError, match="stage 0: kernel 9"):
        MBV3_32_SPACE.check((StageChoice(1, 9, 3.0, False, "relu", 16), *MBV3_32_SPACE.extreme(False)[1:]))
    with pytest.raises(ValueError, match="not a network of search space"):
        MBV3_32_SPACE.decode("conv_c16_hswish ir_m16_c16_relu ir_c16 ir_c32 ir_c48 ir_c80 conv_k1_c480 gap fc")


def test_user_space_from_json_file(tmp_path):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(TINY))
    space = get_space(p)
    assert space.name == "tiny" and space.hidden == 64 and len(space.stages) == 2
    # 2 widths x 2 depths x 2 kernels x 2 expansions x 2 SE x 2 acts; second stage: kernels 3 x expansions 3
    assert space.stages[0].size == 64 and space.stages[1].size == 2 * 2 * 3 * 3 * 2 * 2
    assert space_from_dict(space.to_dict()) == space  # to_dict is the file format


@pytest.mark.parametrize("name", sorted(SPACES))
def test_builtin_space_round_trips_through_its_document(name):
    # the supernet checkpoint and the search state store to_dict(); resuming compares against the built-in
    space = SPACES[name]
    assert space_from_dict(space.to_dict()) == space


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stages": [{"stride": 2, "widths": [16], "depths": [1], "kernels": [4]}]}, r"stages\[0\]\.kernels: .*odd"),
        ({"stages": [{"stride": 2, "widths": [16], "depths": [1], "acts": ["gelu"]}]}, r"stages\[0\]\.acts: unknown"),
        ({"stages": [{"stride": 2, "widths": [16], "depth": [1]}]}, r"stages\[0\]: unknown field 'depth'"),
        ({"stages": [{"stride": 2, "widths": [16]}]}, r"stages\[0\]: missing field 'depths'"),
        ({"stages": [{"stride": 2, "widths": [0], "depths": [1]}]}, r"stages\[0\]\.widths: must be a positive"),
        ({"stages": [{"stride": 2, "widths": [16], "depths": [1], "expansions": [-1]}]},
         r"stages\[0\]\.expansions: expansions must be pos"),
        ({"stages": [{"stride": 2, "widths": [16], "depths": [1], "se": [1]}]}, r"stages\[0\]\.se: 1 is not a bool"),
        ({"stem": "conv_k3_c16 gap"}, r"stem: the stem must be spatial"),
        ({"stem": "conv_q3"}, r"stem: unknown key"),
        ({"hidden": "big"}, r"hidden: must be a positive integer"),
        ({"colour": 1}, r"unknown field 'colour'"),
        ({"input_size": 0}, r"tiny\.json\.input_size: must be a positive integer"),
    ],
)
def test_user_space_errors_name_the_field(tmp_path, change, message):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps({**TINY, **change}))
    with pytest.raises(ValueError, match=message):
        load_space(p)


def test_space_file_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown search space 'mbv9'"):
        get_space("mbv9")
    with pytest.raises(FileNotFoundError):
        get_space(tmp_path / "none.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_space(tmp_path / "broken.json")


def test_objective_mnasnet_numbers():
    obj = Objective(10.0, w=-0.07)
    # twice the target costs 1 - 2^-0.07 = 4.7% of the score; at the target the score is the accuracy
    assert obj.score(0.8, 10.0) == pytest.approx(0.8)
    assert obj.score(0.8, 20.0) == pytest.approx(0.8 * 2**-0.07)
    assert obj.score(0.8, 5.0) == pytest.approx(0.8 * 0.5**-0.07)
    hard = Objective(10.0, hard=True)
    assert hard.score(0.8, 9.0) == 0.8 and hard.score(0.9, 11.0) == float("-inf")
    assert hard.feasible(10.0) and not hard.feasible(10.01) and obj.feasible(1e9)
    with pytest.raises(ValueError, match="w must be <= 0"):
        Objective(3.0, w=0.5)


def test_parse_target_and_pareto_front():
    assert parse_target("3ms") == 3.0 and parse_target("1200us") == pytest.approx(1.2)
    assert parse_target("0.5s") == 500.0 and parse_target("2.5") == 2.5
    for bad in ("fast", "-3ms", "0ms"):
        with pytest.raises(ValueError, match="latency target"):
            parse_target(bad)
    pts = [(0.7, 1.0), (0.6, 2.0), (0.8, 3.0), (0.75, 2.5), (0.8, 4.0)]  # (acc, lat)
    assert pareto_front(pts) == [0, 3, 2]
