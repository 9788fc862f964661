"""The demo's report as one self-contained HTML page: summary, per-block table and plots (SPEC §7).

The page carries everything inline — CSS in a ``<style>`` element, figures as
base64 PNG ``data:`` URIs — so it can be mailed or archived as a single file and
opened without a network or JavaScript. The figures show what the tables make
hard to see: multiply-adds do not predict latency (Howard et al. 2019, §4;
Tan et al. 2019, §1 — depthwise and memory-bound layers cost far more per MAC
than dense convolutions), the training curve, and how the receptive field
grows block by block (Luo et al. 2016).

Figures are drawn with matplotlib's Agg canvas, without pyplot (no global
state, no display). matplotlib is optional (``pip install 'edgecnn[plot]'``):
without it the page is still written, with a note where the figures would be.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING

from edgecnn.analysis.plots import plot_rf_growth
from edgecnn.analysis.rf_math import RF

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from edgecnn.demo import DemoResult

__all__ = ["fig_block_costs", "fig_rf_growth", "fig_training", "fig_us_per_mmac", "figures", "render_html"]

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2 { font-weight: 600; } code { font-size: 0.85em; background: #f3f3f3; padding: 0 0.2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f7f7f7; } td.l, th.l { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
p.note { background: #fff6d6; border-left: 4px solid #e0b400; padding: 0.5em 1em; }
"""

_NO_PLOTS = "Plots need matplotlib, which is not installed: <code>pip install 'edgecnn[plot]'</code>."


# ------------------------------------------------------------------ figures


def _figure(**kwargs: object) -> Figure:
    from matplotlib.figure import Figure  # ImportError without the [plot] extra: the page gets a note instead

    return Figure(**kwargs)  # type: ignore[arg-type]


def _labels(result: DemoResult) -> list[str]:
    return [b.name.removeprefix("blocks.") for b in result.blocks]


def fig_block_costs(result: DemoResult) -> Figure:
    """MACs (left axis) and measured latency (right axis) per block, side by side."""
    fig = _figure(figsize=(9, 3.8))
    ax = fig.add_subplot()
    xs = range(len(result.blocks))
    ax.bar([x - 0.2 for x in xs], [b.macs / 1e6 for b in result.blocks], width=0.4, color="tab:blue", label="MACs")
    ax.set_ylabel("M MACs", color="tab:blue")
    ms = ax.twinx()
    ms.bar([x + 0.2 for x in xs], [b.ms for b in result.blocks], width=0.4, color="tab:orange", label="latency")
    ms.set_ylabel("ms (eager, block alone)", color="tab:orange")
    ax.set_xticks(list(xs), _labels(result), fontsize="small")
    ax.set_xlabel("block")
    ax.set_title("multiply-adds vs measured latency per block")
    fig.legend(loc="upper right", bbox_to_anchor=(0.9, 0.88))
    fig.tight_layout()
    return fig


def fig_us_per_mmac(result: DemoResult) -> Figure:
    """Microseconds per million MACs per block (log scale); the whole network's figure as a dashed line."""
    fig = _figure(figsize=(9, 3.5))
    ax = fig.add_subplot()
    xs = range(len(result.blocks))
    ax.bar(list(xs), [b.us_per_mmac for b in result.blocks], color="tab:purple")  # nan (no MACs) draws nothing
    if result.macs:
        ax.axhline(result.eager_ms * 1e3 / (result.macs / 1e6), ls="--", c="grey", label="whole network")
        ax.legend()
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    ax.yaxis.set_major_formatter(ScalarFormatter())  # plain 300, 1000 rather than 3×10²
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xticks(list(xs), _labels(result), fontsize="small")
    ax.set_xlabel("block")
    ax.set_ylabel("µs per million MACs")
    ax.set_title("time per multiply-add (higher = the block is slower than its MACs suggest)")
    fig.tight_layout()
    return fig


def fig_training(result: DemoResult) -> Figure:
    """Training loss (left axis) and test top-1 (right axis) per epoch."""
    if not result.history:
        raise ValueError("no training history to plot")
    fig = _figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    epochs = [e.epoch for e in result.history]
    ax.plot(epochs, [e.train_loss for e in result.history], marker="o", c="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    acc = ax.twinx()
    top1 = [100 * e.test_top1 if e.test_top1 is not None else math.nan for e in result.history]
    acc.plot(epochs, top1, marker="s", c="tab:green", label="test top-1")
    acc.set_ylabel("test top-1 (%)", color="tab:green")
    ax.set_title("training curve")
    fig.legend(loc="center right", bbox_to_anchor=(0.85, 0.5))
    fig.tight_layout()
    return fig


def fig_rf_growth(result: DemoResult) -> Figure:
    """Receptive field and jump after each block along the conv path (see ``BlockRow.rf``); global pooling shaded."""
    # After global pooling the field is the whole input; drawn at the larger of the input side and the
    # last conv field (padding lets that exceed the input) so the curve does not seem to shrink.
    side = max([float(result.input_size or 0)] + [b.rf for b in result.blocks if b.rf is not None])
    jump = float(result.input_size or side)  # one output left: the next one would be an input side away
    items = [
        (label, RF((b.rf,), (b.rf_jump or 1.0,), (0.0,)) if b.rf is not None else RF((side,), (jump,), (0.0,), True))
        for label, b in zip(_labels(result), result.blocks)
        if b.rf is not None or b.rf_whole
    ]
    return plot_rf_growth(items, input_size=result.input_size)


def figures(result: DemoResult) -> list[tuple[str, Figure]]:
    """Every figure the result has data for, with its caption. Raises ImportError without matplotlib."""
    makers: list[tuple[str, Callable[[DemoResult], Figure], bool]] = [
        ("Multiply-adds and measured latency per block: the two bars would have the same shape if MACs "
         "predicted time.", fig_block_costs, bool(result.blocks)),
        ("Microseconds per million MACs: depthwise, SE and pooling blocks do little arithmetic per byte moved, "
         "so they cost far more per MAC than dense convolutions.", fig_us_per_mmac, bool(result.blocks)),
        ("Training loss and test top-1 after each epoch.", fig_training, bool(result.history)),
        ("Receptive field R and jump J after each block along the convolution path (SE gates left out); "
         "blocks marked in the table see the whole input through an SE gate or global pooling.",
         fig_rf_growth, any(b.rf is not None for b in result.blocks)),
    ]  # fmt: skip
    return [(caption, make(result)) for caption, make, has_data in makers if has_data]


def png_base64(fig: Figure, *, dpi: int = 100) -> str:
    """The figure as a base64 PNG, rendered on an Agg canvas (no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # binds the canvas to the figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------ HTML


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0, *, head_row: bool = True) -> str:
    """An HTML table; cells are already escaped HTML; the first ``left`` columns are left-aligned."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(f'<{tag} class="l">{v}</{tag}>' if i < left else f"<{tag}>{v}</{tag}>"
                       for i, v in enumerate(values))  # fmt: skip

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    thead = f"<thead><tr>{cells('th', head)}</tr></thead>" if head_row else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _summary(d: DemoResult) -> str:
    onnx = f"{d.onnx_ms:.2f} ms" if d.onnx_ms is not None else "not measured (install the <code>[onnx]</code> extra)"
    m = d.machine
    rows = [
        ("data", escape(d.data)),
        ("arch", f"<code>{escape(d.arch)}</code>"),
        ("parameters", f"{d.params:,}"),
        ("multiply-adds", f"{d.macs:,} per image (FLOPs = 2·MACs)"),
        ("output receptive field", escape(d.receptive_field)),
        ("test accuracy", f"top-1 {d.top1:.2%}, top-5 {d.top5:.2%}"),
        ("training", f"{d.train_seconds:.1f} s, {d.images_per_s:,.0f} img/s"),
        ("latency, PyTorch eager", f"{d.eager_ms:.2f} ms (batch 1)"),
        ("latency, ONNX Runtime", onnx),
        ("machine", escape(f"{m.get('cpu', '?')}, {m.get('threads', '?')} thread(s), torch {m.get('torch', '?')}")),
    ]
    return _table(("", ""), rows, left=2, head_row=False)


def _blocks(d: DemoResult) -> str:
    head = ("block", "arch", "params", "MACs", "ms (eager, alone)", "µs per M MACs", "receptive field")
    rows = []
    for b in d.blocks:
        rf = "" if b.rf is None else f"{b.rf:g} J{b.rf_jump:g}" if b.rf_jump is not None else f"{b.rf:g}"
        rf = f"{rf} (whole input via SE)" if rf and b.rf_whole else "whole input" if b.rf_whole else rf
        eff = f"{b.us_per_mmac:.0f}" if b.macs else "–"
        rows.append((escape(b.name), f"<code>{escape(b.block)}</code>", f"{b.params:,}", f"{b.macs:,}",
                     f"{b.ms:.3f}", eff, rf))  # fmt: skip
    return _table(head, rows, left=2)


def _plots(d: DemoResult) -> str:
    try:
        figs = figures(d)
    except ImportError:
        return f'<p class="note">{_NO_PLOTS}</p>'
    return "".join(f'<figure><img src="data:image/png;base64,{png_base64(f)}" alt="{escape(c)}">'
                   f"<figcaption>{escape(c)}</figcaption></figure>" for c, f in figs)  # fmt: skip


def render_html(result: DemoResult) -> str:
    """The demo's report as a self-contained HTML page (inline CSS, figures as base64 PNG, no scripts)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>edgecnn demo report</title><style>{_CSS}</style></head><body>"
        "<h1>edgecnn demo report</h1>"
        f"<h2>Summary</h2>{_summary(result)}"
        "<h2>Per block: cost vs measured latency</h2>"
        "<p>Each block timed alone, batch 1, median of repeated runs; MACs counted exactly from the spec.</p>"
        f"{_blocks(result)}"
        f"<h2>Plots</h2>{_plots(result)}"
        "</body></html>\n"
    )
