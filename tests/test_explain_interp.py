"""Image ↔ activation-map coordinates and upsampling (docs/design.md §7): hand-computed weights and PyTorch as reference."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from edgecnn.explain.interp import Grid, upsample

SIZES = [(10, 32), (4, 32), (7, 10), (3, 9), (5, 17), (1, 6), (8, 8)]  # (map side, image side)


def test_spec_example_corner_convention():
    # 32×32 image over a 10×10 map: S = 3.2; pixel (4, 8) -> (4/3.2, 8/3.2) = (1.25, 2.5)
    g = Grid((32, 32), (10, 10), "corner")
    assert g.scale == (3.2, 3.2)
    assert g.to_map(4, 8) == pytest.approx((1.25, 2.5))
    assert g.to_image(1.25, 2.5) == pytest.approx((4.0, 8.0))
    # rows 1 and 2 with weights 0.75 / 0.25, columns 2 and 3 with 0.5 / 0.5
    assert g.bilinear_weights(4, 8) == pytest.approx({(1, 2): 0.375, (1, 3): 0.375, (2, 2): 0.125, (2, 3): 0.125})
    assert g.nearest_cell(4, 8) == (1, 2)  # the cell whose square [1, 2)×[2, 3) holds (1.25, 2.5)


def test_spec_example_half_pixel_convention():
    # (4 + 0.5)/3.2 - 0.5 = 0.90625, (8 + 0.5)/3.2 - 0.5 = 2.15625
    g = Grid((32, 32), (10, 10), "half_pixel")
    assert g.to_map(4, 8) == pytest.approx((0.90625, 2.15625))
    assert g.to_image(0.90625, 2.15625) == pytest.approx((4.0, 8.0))
    a, b = 0.90625, 0.15625  # rows 0/1, columns 2/3
    want = {(0, 2): (1 - a) * (1 - b), (0, 3): (1 - a) * b, (1, 2): a * (1 - b), (1, 3): a * b}
    assert g.bilinear_weights(4, 8) == pytest.approx(want)
    assert g.nearest_cell(4, 8) == (1, 2)  # floor(0.90625 + 0.5), floor(2.15625 + 0.5)


def test_weights_clamp_at_the_border_and_sum_to_one():
    g = Grid((32, 32), (10, 10), "half_pixel")
    assert g.bilinear_weights(0, 0) == pytest.approx({(0, 0): 1.0})  # -0.34 clamps to cell 0
    assert g.bilinear_weights(31, 31) == pytest.approx({(9, 9): 1.0})  # 9.34 clamps to cell 9
    c = Grid((32, 32), (10, 10), "corner")
    assert c.bilinear_weights(31, 0) == pytest.approx({(9, 0): 1.0})  # 9.6875 clamps to 9
    for y, x in itertools.product(range(0, 32, 3), repeat=2):
        assert sum(g.bilinear_weights(y, x).values()) == pytest.approx(1.0)


@pytest.mark.parametrize(("n", "out"), SIZES)
def test_half_pixel_bilinear_equals_interpolate_align_corners_false(n, out):
    torch.manual_seed(n * 100 + out)
    x = torch.randn(2, 3, n, n + 1)
    ours = upsample(x, (out, out + 3), mode="bilinear", convention="half_pixel")
    ref = F.interpolate(x, size=(out, out + 3), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "out"), SIZES)
def test_half_pixel_nearest_equals_nearest_exact(n, out):
    x = torch.arange(n * n, dtype=torch.float32).view(1, 1, n, n)
    ours = upsample(x, out, mode="nearest", convention="half_pixel")
    assert torch.equal(ours, F.interpolate(x, size=(out, out), mode="nearest-exact"))


@pytest.mark.parametrize(("n", "out"), SIZES)
def test_corner_nearest_equals_legacy_nearest(n, out):
    x = torch.arange(n * n, dtype=torch.float32).view(1, 1, n, n)
    ours = upsample(x, out, mode="nearest", convention="corner")
    assert torch.equal(ours, F.interpolate(x, size=(out, out), mode="nearest"))


@pytest.mark.parametrize(("n", "out"), SIZES)
def test_corner_bilinear_equals_grid_sample_at_the_corner_coordinates(n, out):
    # PyTorch's resize has no corner-convention bilinear; grid_sample with align_corners=True puts -1 and +1
    # on the centres of the first and last cells, so map coordinate c is 2c/(n-1) - 1; border = clamping.
    torch.manual_seed(n + out)
    x = torch.randn(1, 2, n, n)
    c = torch.arange(out, dtype=torch.float64) * n / out
    g = (2 * c / max(n - 1, 1) - 1).float() if n > 1 else torch.zeros(out)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij")[::-1], dim=-1).unsqueeze(0)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    torch.testing.assert_close(upsample(x, out, mode="bilinear", convention="corner"), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("convention", "mode"), [(c, m) for c in ("corner", "half_pixel") for m in ("bilinear", "nearest")])
def test_upsample_pixel_by_pixel_equals_grid_weights(convention, mode):
    torch.manual_seed(1)
    m = torch.randn(10, 10)
    up = upsample(m, 32, mode=mode, convention=convention)
    g = Grid(32, 10, convention)
    for y, x in [(4, 8), (0, 31), (17, 5), (31, 31)]:
        if mode == "bilinear":
            want = sum(w * m[i, j] for (i, j), w in g.bilinear_weights(y, x).items())
        else:
            want = m[g.nearest_cell(y, x)]
        assert float(up[y, x]) == pytest.approx(float(want), abs=1e-6)


def test_round_trip_and_bad_input():
    for conv in ("corner", "half_pixel"):
        g = Grid((224, 160), (7, 5), conv)
        assert g.to_image(*g.to_map(100.0, 33.0)) == pytest.approx((100.0, 33.0))
    with pytest.raises(ValueError, match="unknown coordinate convention 'centre'"):
        Grid(32, 10, "centre")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown interpolation 'bicubic'"):
        upsample(torch.zeros(2, 2), 4, mode="bicubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be positive"):
        Grid((0, 3), 1)


def test_points_on_a_cell_boundary_use_exact_arithmetic():
    # pixel 20 of 41 over 2 cells: (20 + 0.5)/(41/2) = 1 exactly, the boundary between cells 0 and 1 -> cell 1.
    # F.interpolate(mode="nearest-exact") computes the scale 2/41 in float32 and lands on 0.99999994 -> cell 0:
    # one of the size pairs where PyTorch differs from the exact rule (docs/explain.md counts them).
    g = Grid((1, 41), (1, 2), "half_pixel")
    assert g.nearest_cell(0, 20) == (0, 1)
    x = torch.tensor([[[[0.0, 1.0]]]])
    assert float(upsample(x, (1, 41), mode="nearest")[0, 0, 0, 20]) == 1.0
