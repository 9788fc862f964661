"""The demo's HTML report, rendered from a hand-built result (no training): tables, figures, no-matplotlib path."""

import base64
import re
import sys
from html.parser import HTMLParser

import pytest

from edgecnn.demo import BlockRow, DemoResult, EpochRow
from edgecnn.report import fig_block_costs, fig_rf_growth, fig_us_per_mmac, render_html

# Four blocks of a 16×16 network: a stride-2 3×3 stem (R 3, J 2), an SE block whose 3×3 depthwise grows the
# conv-path field to 3 + 2·2 = 7 while its gate makes the output see the whole input, global pooling, classifier.
BLOCKS = (
    BlockRow("blocks.0", "conv_s2_c8_hswish", 88, 4_608, 0.05, rf=3.0, rf_jump=2.0),
    BlockRow("blocks.1", "ir_m16_c8_se0.25_hsgate_relu", 584, 20_480, 0.2, rf=7.0, rf_jump=2.0, rf_whole=True),
    BlockRow("blocks.2", "gap", 0, 0, 0.01, rf_whole=True),
    BlockRow("blocks.3", "fc", 90, 80, 0.004, rf_whole=True),
)
HISTORY = (EpochRow(1, 4e-3, 2.1, 0.3, 1.5, 0.6, 3.0), EpochRow(2, 1e-3, 1.2, 0.7, 0.9, 0.8, 2.9))
IMG = '<img src="data:image/png;base64,'


def _result(**kw: object) -> DemoResult:
    base = dict(arch="conv_s2_c8_hswish ir_m16_c8_se0.25_hsgate_relu gap fc", data="digits", params=762,
                macs=25_168, top1=0.8, top5=0.99, train_seconds=5.9, images_per_s=400.0,
                receptive_field="whole input", eager_ms=0.3, onnx_ms=None, blocks=BLOCKS,
                machine={"cpu": "test <cpu>", "threads": 1, "torch": "x"}, out_dir="/tmp/x",
                history=HISTORY, input_size=16)  # fmt: skip
    base.update(kw)
    return DemoResult(**base)  # type: ignore[arg-type]


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
    text = render_html(_result())
    _check_html(text)
    # the per-block rows, with µs per M MACs = 1e3·ms / (MACs/1e6): 50/0.004608 = 10851, 200/0.02048 = 9766, 4/8e-5
    assert ('<td class="l">blocks.0</td><td class="l"><code>conv_s2_c8_hswish</code></td><td>88</td>'
            "<td>4,608</td><td>0.050</td><td>10851</td><td>3 J2</td>") in text  # fmt: skip
    assert "<td>20,480</td><td>0.200</td><td>9766</td><td>7 J2 (whole input via SE)</td>" in text
    assert "<td>0</td><td>0</td><td>0.010</td><td>–</td><td>whole input</td>" in text
    assert "<td>90</td><td>80</td><td>0.004</td><td>50000</td><td>whole input</td>" in text
    assert "25,168 per image" in text and "top-1 80.00%, top-5 99.00%" in text and "test &lt;cpu&gt;" in text
    assert "not measured" in text  # no ONNX Runtime time
    pngs = re.findall(re.escape(IMG) + r'([A-Za-z0-9+/=]+)"', text)
    assert text.count(IMG) == len(pngs) == 4  # block costs, µs/MMAC, training curve, RF growth
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "<script" not in text and "http" not in text  # self-contained


def test_figures_without_their_data_are_left_out():
    text = render_html(_result(history=(), blocks=tuple(BlockRow(b.name, b.block, b.params, b.macs, b.ms)
                                                         for b in BLOCKS)))  # fmt: skip
    _check_html(text)
    assert text.count(IMG) == 2  # no training curve, no receptive fields


def test_figures_draw_the_numbers():
    d = _result()
    ax_macs, ax_ms = fig_block_costs(d).axes
    assert [p.get_height() for p in ax_macs.patches] == pytest.approx([b.macs / 1e6 for b in BLOCKS])
    assert [p.get_height() for p in ax_ms.patches] == pytest.approx([b.ms for b in BLOCKS])
    (ax,) = fig_us_per_mmac(d).axes
    assert [p.get_height() for p in ax.patches] == pytest.approx([10850.7, 9765.6, float("nan"), 50000.0],
                                                                 rel=1e-4, nan_ok=True)  # fmt: skip
    assert ax.lines[0].get_ydata()[0] == pytest.approx(0.3e3 / 0.025168)  # the whole network's µs/MMAC
    field, jump = fig_rf_growth(d).axes[0].lines[:2]
    # global pooling and the classifier see the whole input: drawn at max(input side 16, last conv field 7)
    assert list(field.get_ydata()) == [3.0, 7.0, 16.0, 16.0]
    assert list(jump.get_ydata()) == [2.0, 2.0, 16.0, 16.0]


def test_report_without_matplotlib_has_a_note(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes `import` raise ImportError
    text = render_html(_result())
    _check_html(text)
    assert IMG not in text and "pip install 'edgecnn[plot]'" in text
    assert "<td>4,608</td><td>0.050</td><td>10851</td>" in text
