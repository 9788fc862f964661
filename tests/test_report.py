"""The demo's HTML report, rendered from a hand-built result (no training): tables, figures, no-matplotlib path."""

import base64
import re
import sys
from html.parser import HTMLParser

import pytest

from edgecnn import plots
from edgecnn.report import _rf_items, render_html, write_report
from edgecnn.run_document import read_results, write_results

# A hand-built results document of kind "demo" (plain dicts, as results.json holds them): four blocks of a
# 16×16 network: a stride-2 3×3 stem (R 3, J 2), an SE block whose 3×3 depthwise grows the conv-path field
# to 3 + 2·2 = 7 while its gate makes the output see the whole input, global pooling, classifier.
BLOCKS = [
    {"name": "blocks.0", "block": "conv_s2_c8_hswish", "params": 88, "macs": 4_608, "ms": 0.05, "rf": 3.0,
     "rf_jump": 2.0, "rf_whole": False},
    {"name": "blocks.1", "block": "ir_m16_c8_se0.25_hsgate_relu", "params": 584, "macs": 20_480, "ms": 0.2,
     "rf": 7.0, "rf_jump": 2.0, "rf_whole": True},
    {"name": "blocks.2", "block": "gap", "params": 0, "macs": 0, "ms": 0.01, "rf": None, "rf_jump": None,
     "rf_whole": True},
    {"name": "blocks.3", "block": "fc", "params": 90, "macs": 80, "ms": 0.004, "rf": None, "rf_jump": None,
     "rf_whole": True},
]  # fmt: skip
HISTORY = [
    {"epoch": 1, "lr": 4e-3, "train_loss": 2.1, "train_top1": 0.3, "test_loss": 1.5, "test_top1": 0.6, "seconds": 3.0},
    {"epoch": 2, "lr": 1e-3, "train_loss": 1.2, "train_top1": 0.7, "test_loss": 0.9, "test_top1": 0.8, "seconds": 2.9},
]
IMG = '<img src="data:image/png;base64,'


def _doc(**kw: object) -> dict:
    base = dict(kind="demo", schema=1, arch="conv_s2_c8_hswish ir_m16_c8_se0.25_hsgate_relu gap fc", data="digits",
                params=762, macs=25_168, top1=0.8, top5=0.99, train_seconds=5.9, images_per_s=400.0,
                receptive_field="whole input", eager_ms=0.3, onnx_ms=None, blocks=BLOCKS,
                machine={"cpu": "test <cpu>", "threads": 1, "torch": "x"}, out_dir="/tmp/x",
                history=HISTORY, input_size=16)  # fmt: skip
    base.update(kw)
    return base


class _Strict(HTMLParser):
    """Fails on a closing tag that does not close the innermost open one (void elements excepted)."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}> at {self.getpos()}")


def _check_html(text: str) -> None:
    p = _Strict()
    p.feed(text)
    p.close()
    assert p.errors == [] and p.stack == []


def test_report_has_the_tables_and_one_png_per_figure():
    text = render_html(_doc())
    _check_html(text)
    # the per-block rows, with µs per M MACs = 1e3·ms / (MACs/1e6): 50/0.004608 = 10851, 200/0.02048 = 9766, 4/8e-5
    assert ('<td class="l">blocks.0</td><td class="l"><code>conv_s2_c8_hswish</code></td><td>88</td>'
            "<td>4,608</td><td>0.050</td><td>10851</td><td>3 J2</td>") in text  # fmt: skip
    assert "<td>20,480</td><td>0.200</td><td>9766</td><td>7 J2 (whole input via SE)</td>" in text
    assert "<td>0</td><td>0</td><td>0.010</td><td>–</td><td>whole input</td>" in text
    assert "<td>90</td><td>80</td><td>0.004</td><td>50000</td><td>whole input</td>" in text
    assert "25,168 per image" in text and "top-1 80.00%, top-5 99.00%" in text and "test &lt;cpu&gt;" in text
    assert "not measured" in text  # no ONNX Runtime time
    assert "<title>edgecnn demo report</title>" in text
    pngs = re.findall(re.escape(IMG) + r'([A-Za-z0-9+/=]+)"', text)
    assert text.count(IMG) == len(pngs) == 4  # block costs, µs/MMAC, RF growth, training curve
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "<script" not in text and "http" not in text  # self-contained


def test_figures_without_their_data_are_left_out():
    blocks = [{**b, "rf": None, "rf_jump": None, "rf_whole": False} for b in BLOCKS]
    text = render_html(_doc(history=[], blocks=blocks))
    _check_html(text)
    assert text.count(IMG) == 2  # no training curve, no receptive fields


def test_figures_draw_the_numbers():
    names, macs, ms = ["0", "1", "2", "3"], [b["macs"] for b in BLOCKS], [b["ms"] for b in BLOCKS]
    ax_macs, ax_ms = plots.plot_block_costs(names, macs, ms).axes
    assert [p.get_height() for p in ax_macs.patches] == pytest.approx([m / 1e6 for m in macs])
    assert [p.get_height() for p in ax_ms.patches] == pytest.approx(ms)
    (ax,) = plots.plot_us_per_mmac(names, macs, ms, total_ms=0.3, total_macs=25_168).axes
    assert [p.get_height() for p in ax.patches] == pytest.approx([10850.7, 9765.6, float("nan"), 50000.0],
                                                                 rel=1e-4, nan_ok=True)  # fmt: skip
    assert ax.lines[0].get_ydata()[0] == pytest.approx(0.3e3 / 0.025168)  # the whole network's µs/MMAC
    field, jump = plots.plot_rf_growth(_rf_items(_doc()), input_size=16).axes[0].lines[:2]
    # global pooling and the classifier see the whole input: drawn at max(input side 16, last conv field 7)
    assert list(field.get_ydata()) == [3.0, 7.0, 16.0, 16.0]
    assert list(jump.get_ydata()) == [2.0, 2.0, 16.0, 16.0]
    # blocks.1's conv path sees 7 pixels, its SE gate the whole input: circled at R = 7
    (circles,) = plots.plot_rf_growth(_rf_items(_doc()), input_size=16).axes[0].collections[:1]
    assert circles.get_offsets().tolist() == [[1.0, 7.0]]
    loss, acc = (a.lines[0] for a in plots.plot_training(HISTORY).axes)
    assert list(loss.get_ydata()) == [2.1, 1.2] and list(acc.get_ydata()) == pytest.approx([60.0, 80.0])


def test_report_without_matplotlib_has_a_note(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes `import` raise ImportError
    text = render_html(_doc())
    _check_html(text)
    assert IMG not in text and "pip install 'edgecnn[plot]'" in text
    assert "<td>4,608</td><td>0.050</td><td>10851</td>" in text


def _cam_section(files: list[str]) -> dict:
    rows = [{"file": f, "name": None, "label": str(i), "predicted": str(i), "probability": 0.9, "explained": str(i),
             "peak_cell": [1, 2], "peak_pixel": [4.0, 8.0]} for i, f in enumerate(files)]  # fmt: skip
    return {"method": "gradcam", "interp": "bilinear", "convention": "half_pixel", "layer": "blocks.2",
            "map_size": [4, 4], "image_size": [16, 16], "scale": [4.0, 4.0], "images": rows}  # fmt: skip


def test_cam_overlays_are_inlined_from_the_run_folder_only(tmp_path):
    from PIL import Image

    (tmp_path / "cam").mkdir()
    Image.new("RGB", (8, 4), (200, 10, 10)).save(tmp_path / "cam" / "0.png")
    (tmp_path.parent / "outside.png").write_bytes((tmp_path / "cam" / "0.png").read_bytes())
    (tmp_path / "cam" / "fake.png").write_text("not a png")
    doc = {"kind": "explain", "schema": 1, "cam": _cam_section(["cam/0.png", "../outside.png", "cam/fake.png"])}
    text = render_html(doc, run_dir=tmp_path)
    _check_html(text)
    assert text.count(IMG) == 1  # a path out of the run folder and a file that is no PNG are not inlined
    assert "Missing overlay files: ../outside.png, cam/fake.png" in text
    assert "Grad-CAM (Selvaraju et al. 2017) at layer <code>blocks.2</code>: a 4×4 map over the 16×16 image" in text
    assert "label 0, predicted 0 (p 0.90), map of 0, peak at cell (1, 2)" in text


def test_netadapt_search_and_pareto_sections_render_from_plain_lists():
    history = [{"iteration": 0, "latency_ms": 4.0, "top1": 0.99},
               {"iteration": 1, "latency_ms": 3.1, "top1": 0.985, "block": "blocks.3"},
               {"iteration": 2, "latency_ms": 1.9, "top1": 0.98, "block": "blocks.5"}]  # fmt: skip
    cands = [{"latency_ms": 1.0, "top1": 0.90, "generation": 0}, {"latency_ms": 2.0, "top1": 0.95, "generation": 1},
             {"latency_ms": 2.5, "top1": 0.93, "generation": 1}, {"latency_ms": 3.0, "top1": 0.97, "generation": 2}]
    zoo = [{"name": "mobilenet_v2", "latency_ms": 2.2, "top1": 0.96}]
    doc = {"kind": "search", "schema": 1, "netadapt": {"budget_ms": 2.0, "history": history},
           "search": {"candidates": cands, "reference": zoo}, "pareto": {"points": cands, "reference": zoo}}
    text = render_html(doc)
    _check_html(text)
    assert text.count(IMG) == 3
    assert '<td class="l">2</td><td class="l">blocks.5</td><td>1.900</td><td>98.00%</td>' in text
    # the front: (2.5 ms, 93%) is beaten by (2.0 ms, 95%)
    assert plots.pareto_front(cands) == [0, 1, 3]
    ax = plots.plot_search_front(cands, reference=zoo).axes[0]
    front = [l for l in ax.lines if l.get_label() == "Pareto front"][0]
    assert list(front.get_xdata()) == [1.0, 2.0, 3.0] and list(front.get_ydata()) == pytest.approx([90, 95, 97])
    (na_ax, top1_ax) = plots.plot_netadapt_history(history, budget_ms=2.0).axes
    assert list(na_ax.lines[0].get_ydata()) == [4.0, 3.1, 1.9] and na_ax.lines[1].get_ydata()[0] == 2.0


def test_results_documents_round_trip_and_bad_ones_are_named(tmp_path):
    write_results(tmp_path, "demo", {"top1": float("nan"), "blocks": []})
    doc = read_results(tmp_path)
    assert doc == {"kind": "demo", "schema": 1, "top1": None, "blocks": []}  # NaN is no JSON number
    assert write_report(tmp_path) == tmp_path / "report.html"
    (tmp_path / "x.json").write_text('{"schema": 1}')
    with pytest.raises(ValueError, match="no 'kind' field"):
        read_results(tmp_path / "x.json")
    (tmp_path / "x.json").write_text('{"kind": "demo", "schema": 99}')
    with pytest.raises(ValueError, match="schema 99, this edgecnn reads up to 1"):
        read_results(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="holds results.json"):
        read_results(tmp_path / "nothing")


def test_an_analysis_json_is_a_results_document(tmp_path):
    from edgecnn.analysis import analyze
    from edgecnn.build import build

    a = analyze(build("conv_s2_c8 conv_c8 gap fc", num_classes=3, in_chans=1), (1, 8, 8))
    a.to_json(tmp_path / "results.json")
    text = (write_report(tmp_path)).read_text()
    _check_html(text)
    # conv 3×3 s2, 1 -> 8 channels to 4×4: 9·8·16 = 1,152 MACs; fc 8 -> 3: 24
    assert "<title>edgecnn analyze report</title>" in text and "<td>1,152</td>" in text
    # the receptive-field column, as the console's table says it: R = 3 after the stride-2 conv (J 2),
    # R = 3 + 2·2 = 7 after the second 3×3 (J 2), the whole input after global pooling
    assert "<th>receptive field</th>" in text
    labels = {r.name: r.rf_label() for r in a.layers}
    assert (labels["blocks.0.conv"], labels["blocks.1.conv"], labels["blocks.3"]) == ("3×3 J2", "7×7 J2", "whole")
    for label in ("3×3 J2", "7×7 J2", "whole"):
        assert f"<td>{label}</td>" in text


def dynamics_sections() -> tuple[dict, dict]:
    """Real ``erf`` and ``gradflow`` sections of a small residual network (edgecnn.analysis.dynamics)."""
    import torch

    from edgecnn.analysis.dynamics import erf_section, gradflow_section
    from edgecnn.build import build

    torch.manual_seed(0)
    net = build("conv_c8_relu ir_m16_c8_relu ir_m16_c8_relu gap fc", num_classes=3, in_chans=1)
    x, y = torch.randn(4, 1, 12, 12), torch.tensor([0, 1, 2, 0])
    return erf_section(net, (1, 12, 12), samples=2), gradflow_section(net, x, y)


def test_erf_and_gradflow_sections_draw_the_document_numbers():
    erf, flow = dynamics_sections()
    text = render_html(_doc(erf=erf, gradflow=flow))
    _check_html(text)
    assert text.count(IMG) == 4 + 2
    assert "<h2>Effective receptive field</h2>" in text and "<h2>Gradient flow</h2>" in text
    assert f"Half its mass lies within {erf['radius50']:.1f} pixels" in text
    assert "the theoretical field is 7×7 pixels" in text  # three 3×3 convs at stride 1: 1 + 3·2
    w = flow["runs"]["with skips"]
    assert (f'<td class="l">with skips</td><td>{len(w["layers"])}</td><td>{w["loss"]:.4g}</td>'
            f"<td>{w['layers'][0]['output_grad_norm']:.3g}</td>") in text  # fmt: skip
    # the figures hold the document's numbers, not a recomputation
    (ax, _cbar) = plots.plot_erf(erf).axes
    assert ax.images[0].get_array().tolist() == erf["map"]
    (ax,) = plots.plot_gradient_flow(flow["runs"]).axes
    for line, run in zip(ax.lines, flow["runs"].values()):
        assert list(line.get_ydata()) == pytest.approx([l["output_grad_norm"] for l in run["layers"]])
    assert [l.get_label() for l in ax.lines] == ["with skips", "without skips"]


def test_compress_run_shows_budget_and_before_after():
    from edgecnn.compress.budget import parse_budget
    from edgecnn.compress.summary import ModelStats, closing_table, compress_document
    from edgecnn.latency.compare import Comparison

    before = ModelStats("conv_c16 gap fc", 0.9912, 4.0, 5_400_000, 409_250)
    after = ModelStats("conv_c8 gap fc", 0.9861, 1.642, 2_488_448, 217_834)
    cmp = Comparison("onnxruntime", 1, "cpu", "cpu", (4.0, 4.1, 3.9), (1.642, 1.7, 1.6))
    int8 = {"target": "onnxruntime", "kept": "fp32", "reason": "fp32 kept: int8 is not faster here",
            "top1_fp32": 0.9861, "top1_int8": 0.9833, "latency_fp32_ms": 1.642, "latency_int8_ms": 2.5}
    doc = {"kind": "compress", "schema": 1,
           **compress_document("netadapt", parse_budget("50%latency").to_dict(), before, after, met=True,
                               backend="onnxruntime", threads=1, stopped="met (measured back to back)",
                               measured=cmp.to_dict(), int8=int8)}  # fmt: skip
    html = render_html(doc)
    assert "<h2>Compression</h2>" in html and "<code>50%latency</code>: met" in html
    assert "Stopped: met (measured back to back)" in html and cmp.text() in html
    # one row per quantity, before then after, formatted from the document's own numbers
    assert '<td class="l">test top-1</td><td>99.12%</td><td>98.61%</td>' in html
    assert ('<td class="l">latency, measured (onnxruntime, 1 thread(s); ms)</td><td>4.000</td><td>1.642</td>'
            in html)  # fmt: skip
    assert '<td class="l">MACs</td><td>5,400,000</td><td>2,488,448</td>' in html
    assert '<td class="l">params</td><td>409,250</td><td>217,834</td>' in html
    assert "<code>conv_c16 gap fc</code>" in html and "<code>conv_c8 gap fc</code>" in html
    assert "<h3>int8</h3><p>Kept: <b>fp32</b> — fp32 kept: int8 is not faster here</p>" in html
    assert '<td class="l">onnxruntime int8</td><td>98.33%</td><td>2.500</td>' in html
    # the console's closing table is drawn from the same document: the same before/after and int8 numbers
    table = closing_table(doc)
    cells = {c.header: list(c._cells) for c in table.columns}
    assert cells[""][:3] == ["before", "after", "after / before"]
    assert cells["latency, ms (onnxruntime, 1 thread(s))"][:2] == ["4.000", "1.642"]
    assert cells["top-1"][:2] == ["99.12%", "98.61%"] and cells["top-1"][4] == "98.33%"
    assert cells["latency, ms (onnxruntime, 1 thread(s))"][2].startswith(f"{cmp.ratio:.2f}×")
    assert "met (measured back to back)" in str(table.title)
    assert "not met" in render_html({**doc, "met": False})
    assert "<h2>Compression</h2>" not in render_html({**doc, "kind": "demo"})
