"""benchmarks/plot_results.py: the figures of the long benchmarks draw exactly the committed results' numbers."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import plot_results as pr  # noqa: E402

SEARCH = "search_seeds-full-proxy-naswot+rerank8-speed+correct2-vnni4.json"
NOVEL = "search_seeds-full-proxy-naswot+rerank8-speed+correct2+novel-vnni4.json"
NETADAPT = "netadapt_cifar-full-onnxruntime-on-vnni.json"


def _doc(name: str) -> dict:
    return json.loads((pr.RESULTS / name).read_text())


def test_search_figure_draws_each_seeds_bracket_line_and_choices_at_their_measured_shares():
    doc, novel = _doc(SEARCH), _doc(NOVEL)
    points = pr.search_seeds_points(doc, extra={"novel": novel})
    seed0 = {p["what"]: (p["share"], p["top1"]) for p in points if p["seed"] == 0}
    # docs/search.md's seed-0 row: evolution 71.55% at 0.858, random 69.92% at 0.990, x0.6 67.48% at 0.753
    assert seed0["evolution"] == pytest.approx((0.858, 71.55), abs=5e-4)
    assert seed0["random"] == pytest.approx((0.990, 69.92), abs=5e-4)
    assert seed0["x0.6"] == pytest.approx((0.753, 67.48), abs=5e-4) and seed0["x0.75"][1] == pytest.approx(69.46)
    assert seed0["novel"][1] == pytest.approx(71.14)
    assert len(points) == 3 * 5  # 3 seeds x (two widths, evolution, random, novel)

    fig = pr.search_seeds_figure(doc, extra={"novel": novel})
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(lines) == 3
    for seed, ln in enumerate(lines):  # each seed's dashed line runs through its two bracket widths
        row = doc["rows"][seed]["bracket_line"]
        assert list(ln.get_xdata()) == pytest.approx(sorted(row["remeasured_share"]))
        assert list(ln.get_ydata()) == pytest.approx([100 * t for _, t in sorted(zip(row["remeasured_share"],
                                                                                      row["top1"]))])
    drawn = sorted(tuple(map(float, xy)) for c in ax.collections for xy in c.get_offsets())
    want = sorted((p["share"], p["top1"]) for p in points if not p["what"].startswith("x"))
    assert [x for xy in drawn for x in xy] == pytest.approx([x for xy in want for x in xy])


def test_search_figure_refuses_an_extra_run_of_other_seeds():
    doc, novel = _doc(SEARCH), _doc(NOVEL)
    novel["rows"] = novel["rows"][:2]
    with pytest.raises(ValueError, match=r"seeds \[0, 1\] differ"):
        pr.search_seeds_points(doc, extra={"novel": novel})


def test_netadapt_figure_draws_every_measured_network_by_method_with_the_budgets():
    doc = _doc(NETADAPT)
    points = pr.netadapt_points(doc)
    na = [(p["pct"], p["seed"], round(p["top1"], 2)) for p in points if p["method"] == "na"]
    assert na == [(50, 0, 85.54), (50, 1, 85.22), (75, 0, 87.12)]  # docs/compress.md's NetAdapt rows
    assert all(p["share"] == doc["rows"][f"{p['method']}-{p['pct']}-s{p['seed']}"]["ratio"] for p in points)
    fig = pr.netadapt_figure(doc)
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(points)
    verticals = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":")
    assert verticals == [0.5, 0.75]
    baseline = [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert baseline == pytest.approx([87.84])


def test_netadapt_figure_needs_a_closing_measurement():
    with pytest.raises(ValueError, match="no measured rows yet"):
        pr.netadapt_points(_doc("netadapt_cifar-full-onnxruntime.json"))


def test_every_committed_figure_is_drawn_from_its_results(tmp_path):
    for image, results, extra, title in pr.FIGURES:
        path = pr.draw(image, results, extra, title, out=tmp_path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
