"""One self-contained HTML page per run, rendered from the run's results document (SPEC §7).

:func:`render_html` takes the plain results document a command wrote
(:mod:`edgecnn.results`: a dict with ``kind`` and ``schema``) and draws every
section it has data for — the pipeline's stages, the summary, the per-block
cost table and plots, the training curve, CAM overlays, the NetAdapt
history, the search front, an analysis table — so any run (``demo``,
``train``, ``explain``, ``analyze``, later ``compress`` and ``search``) gets
a report without this module importing the code that made it. Fields of each
section: docs/report.md.

The page carries everything inline — CSS in a ``<style>`` element, figures and
overlays as base64 PNG ``data:`` URIs — so it can be mailed or archived as a
single file and opened without a network or JavaScript. Figures come from
:mod:`edgecnn.explain.plots`; without matplotlib (the ``[plot]`` extra) the
page is still written, with a note where the figures would be.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecnn.analysis.rf_math import RF
from edgecnn.atomic import atomic_write_text
from edgecnn.explain import plots
from edgecnn.results import read_results, results_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["render_html", "write_report"]

Doc = Mapping[str, Any]

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2 { font-weight: 600; } code { font-size: 0.85em; background: #f3f3f3; padding: 0 0.2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f7f7f7; } td.l, th.l { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
div.cams { display: flex; flex-wrap: wrap; gap: 1em; } div.cams figure { margin: 0; width: 270px; }
p.note { background: #fff6d6; border-left: 4px solid #e0b400; padding: 0.5em 1em; }
"""

_NO_PLOTS = "Plots need matplotlib, which is not installed: <code>pip install 'edgecnn[plot]'</code>."
_PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ small HTML pieces


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0, *, head_row: bool = True) -> str:
    """An HTML table; cells are already escaped HTML; the first ``left`` columns are left-aligned."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(f'<{tag} class="l">{v}</{tag}>' if i < left else f"<{tag}>{v}</{tag}>"
                       for i, v in enumerate(values))  # fmt: skip

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    thead = f"<thead><tr>{cells('th', head)}</tr></thead>" if head_row else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _img(b64: str, caption: str) -> str:
    return (f'<figure><img src="data:image/png;base64,{b64}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")  # fmt: skip


def _figures(makers: Sequence[tuple[str, Callable[[], Figure]]]) -> str:
    if not makers:
        return ""
    try:
        return "".join(_img(plots.png_base64(make()), caption) for caption, make in makers)
    except ImportError:
        return f'<p class="note">{_NO_PLOTS}</p>'


def _pct(v: Any) -> str:
    return f"{v:.2%}" if isinstance(v, (int, float)) else "–"


# ------------------------------------------------------------------ sections


def _stages(doc: Doc, _run: Path | None) -> str:
    stages = doc.get("stages") or []
    if not stages:
        return ""
    rows = [(escape(str(s.get("title", s.get("name", "")))), escape(str(s.get("status", ""))),
             escape(str(s.get("note") or "")), f"{s['seconds']:.1f}" if isinstance(s.get("seconds"), (int, float))
             else "–")
            for s in stages]  # fmt: skip
    return "<h2>Pipeline</h2>" + _table(("stage", "status", "note", "seconds"), rows, left=3)


def _summary(doc: Doc, _run: Path | None) -> str:
    rows: list[tuple[str, str]] = []
    if doc.get("data"):
        rows.append(("data", escape(str(doc["data"]))))
    if doc.get("arch"):
        rows.append(("arch", f"<code>{escape(str(doc['arch']))}</code>"))
    if isinstance(doc.get("params"), int):
        rows.append(("parameters", f"{doc['params']:,}"))
    if isinstance(doc.get("macs"), int):
        rows.append(("multiply-adds", f"{doc['macs']:,} per image (FLOPs = 2·MACs)"))
    if doc.get("receptive_field"):
        rows.append(("output receptive field", escape(str(doc["receptive_field"]))))
    if "top1" in doc:
        rows.append(("test accuracy", f"top-1 {_pct(doc.get('top1'))}, top-5 {_pct(doc.get('top5'))}"))
    if isinstance(doc.get("train_seconds"), (int, float)):
        ips = doc.get("images_per_s")
        rows.append(("training", f"{doc['train_seconds']:.1f} s" + (f", {ips:,.0f} img/s" if ips else "")))
    if isinstance(doc.get("eager_ms"), (int, float)):
        rows.append(("latency, PyTorch eager", f"{doc['eager_ms']:.2f} ms (batch 1)"))
    if "onnx_ms" in doc:
        onnx = doc["onnx_ms"]
        rows.append(("latency, ONNX Runtime", f"{onnx:.2f} ms" if isinstance(onnx, (int, float))
                     else "not measured (install the <code>[onnx]</code> extra)"))  # fmt: skip
    if doc.get("checkpoint"):
        rows.append(("checkpoint", f"<code>{escape(str(doc['checkpoint']))}</code>"))
    m = doc.get("machine") or {}
    if m:
        rows.append(("machine", escape(f"{m.get('cpu', '?')}, {m.get('threads', '?')} thread(s), "
                                       f"torch {m.get('torch', '?')}")))  # fmt: skip
    return "<h2>Summary</h2>" + _table(("", ""), rows, left=2, head_row=False) if rows else ""


def _block_label(b: Doc) -> str:
    return str(b["name"]).removeprefix("blocks.")


def _us_per_mmac(b: Doc) -> float:
    return b["ms"] * 1e3 / (b["macs"] / 1e6) if b.get("macs") else float("nan")


def _rf_items(doc: Doc) -> list[tuple[str, RF]]:
    """The blocks' conv-path fields for :func:`plots.plot_rf_growth`; whole-input blocks drawn at the input side."""
    blocks = doc["blocks"]
    # After global pooling the field is the whole input; drawn at the larger of the input side and the
    # last conv field (padding lets that exceed the input) so the curve does not seem to shrink.
    side = max([float(doc.get("input_size") or 0)] + [b["rf"] for b in blocks if b.get("rf") is not None])
    jump = float(doc.get("input_size") or side)  # one output left: the next one would be an input side away
    # a spatial block marked rf_whole sees the whole input only through an SE gate: drawn circled (+global)
    return [(_block_label(b), RF((b["rf"],), (b.get("rf_jump") or 1.0,), (0.0,),
                                 global_context=bool(b.get("rf_whole"))) if b.get("rf") is not None
             else RF((side,), (jump,), (0.0,), True, global_context=True))
            for b in blocks if b.get("rf") is not None or b.get("rf_whole")]  # fmt: skip


def _blocks(doc: Doc, _run: Path | None) -> str:
    blocks = doc.get("blocks") or []
    if not blocks:
        return ""
    head = ("block", "arch", "params", "MACs", "ms (eager, alone)", "µs per M MACs", "receptive field")
    rows = []
    for b in blocks:
        rf, jump, whole = b.get("rf"), b.get("rf_jump"), b.get("rf_whole")
        cell = "" if rf is None else f"{rf:g} J{jump:g}" if jump is not None else f"{rf:g}"
        cell = f"{cell} (whole input via SE)" if cell and whole else "whole input" if whole else cell
        eff = f"{_us_per_mmac(b):.0f}" if b.get("macs") else "–"
        rows.append((escape(str(b["name"])), f"<code>{escape(str(b['block']))}</code>", f"{b['params']:,}",
                     f"{b['macs']:,}", f"{b['ms']:.3f}", eff, cell))  # fmt: skip
    names = [_block_label(b) for b in blocks]
    macs, ms = [b["macs"] for b in blocks], [b["ms"] for b in blocks]
    makers: list[tuple[str, Callable[[], Figure]]] = [
        ("Multiply-adds and measured latency per block: the two bars would have the same shape if MACs "
         "predicted time.", lambda: plots.plot_block_costs(names, macs, ms)),
        ("Microseconds per million MACs: depthwise, SE and pooling blocks do little arithmetic per byte moved, "
         "so they cost far more per MAC than dense convolutions.",
         lambda: plots.plot_us_per_mmac(names, macs, ms, total_ms=doc.get("eager_ms"), total_macs=doc.get("macs"))),
    ]  # fmt: skip
    if any(b.get("rf") is not None for b in blocks):
        makers.append(("Receptive field R and jump J after each block along the convolution path (SE gates left "
                       "out); circled blocks also see the whole input through an SE gate, shaded ones through "
                       "global pooling.",
                       lambda: plots.plot_rf_growth(_rf_items(doc), input_size=doc.get("input_size"))))  # fmt: skip
    return ("<h2>Per block: cost vs measured latency</h2>"
            "<p>Each block timed alone, batch 1, median of repeated runs; MACs counted exactly from the spec.</p>"
            f"{_table(head, rows, left=2)}{_figures(makers)}")  # fmt: skip


def _training(doc: Doc, _run: Path | None) -> str:
    history = doc.get("history") or []
    if not history or not all(isinstance(e, Mapping) and "epoch" in e for e in history):
        return ""  # a search's "history" holds its candidates, drawn by _search_run
    return "<h2>Training</h2>" + _figures([("Training loss and test top-1 after each epoch.",
                                            lambda: plots.plot_training(history))])  # fmt: skip


def _weights(section: Doc) -> str:
    return f" ({escape(str(section['weights']))})" if section.get("weights") else ""


def _erf(doc: Doc, _run: Path | None) -> str:
    e = doc.get("erf")
    if not e or not e.get("map"):
        return ""
    field = ("the whole input" if e.get("rf_whole") else
             "×".join(f"{v:g}" for v in e["rf_size"]) + " pixels" if e.get("rf_size") else "not traced")
    gate = " (plus the whole input through SE gates)" if e.get("rf_global") and not e.get("rf_whole") else ""
    shape = "×".join(str(v) for v in e.get("input_shape") or e.get("shape") or [])
    intro = (f"<p>Effective receptive field (Luo et al. 2016) of the central unit "
             f"{escape(str(tuple(e.get('output_index') or ())))} of <code>{escape(str(e.get('layer', '')))}</code>, "
             f"the last feature map before global pooling: |∂y/∂x| averaged over {e.get('samples', '?')} random "
             f"{escape(shape)} inputs, normalised to sum 1{_weights(e)}. Half its mass lies within "
             f"{e['radius50']:.1f} pixels of "
             f"the centre, 95% within {e['radius95']:.1f}; the theoretical field is {escape(field)}{escape(gate)}.</p>")
    return "<h2>Effective receptive field</h2>" + intro + _figures([(
        "ERF map: how much each input pixel moves the central output; circles hold 50% and 95% of the mass.",
        lambda: plots.plot_erf(e, title=f"ERF of {e.get('layer', '')}"))])  # fmt: skip


def _gradflow(doc: Doc, _run: Path | None) -> str:
    g = doc.get("gradflow")
    if not g or not g.get("runs"):
        return ""
    runs = g["runs"]
    rows = [(escape(label), str(len(r["layers"])), f"{r['loss']:.4g}",
             f"{r['layers'][0]['output_grad_norm']:.3g}", f"{r['layers'][-1]['output_grad_norm']:.3g}",
             f"{r['attenuation']:.3g}" if isinstance(r.get("attenuation"), (int, float)) else "–")
            for label, r in runs.items()]  # fmt: skip
    mode = "batch statistics (training mode)" if g.get("mode") == "train" else "running statistics (eval mode)"
    intro = (f"<p>Norm of ∂L/∂(layer output) for every conv and linear layer after one cross-entropy backward pass "
             f"on {g.get('batch', '?')} images{_weights(g)}, BN with {mode}. &quot;Without skips&quot; is a copy "
             "with the same "
             f"weights and its {g.get('skips', 0)} skip connection(s) turned off. A skip's identity term "
             "(He et al. 2016) carries the gradient past its block; without it a plain stack loses the gradient "
             "towards the input, or, with batch-statistics BN, can amplify it (Yang et al. 2019).</p>")  # fmt: skip
    table = _table(("run", "layers", "loss", "first layer", "last layer", "first / last"), rows, left=1)
    return "<h2>Gradient flow</h2>" + intro + table + _figures([(
        "Gradient norm per layer, input side first (log scale), with and without the skip connections.",
        lambda: plots.plot_gradient_flow(runs))])  # fmt: skip


def _inline_png(run: Path | None, rel: str) -> str | None:
    """The PNG at ``run/rel`` as base64, or None when missing, not a PNG, or outside the run folder."""
    if run is None:
        return None
    root = run.resolve()
    path = (root / rel).resolve()
    if root not in path.parents or not path.is_file():
        return None
    data = path.read_bytes()
    return base64.b64encode(data).decode("ascii") if data.startswith(_PNG) else None


def _cam(doc: Doc, run: Path | None) -> str:
    cam = doc.get("cam")
    if not cam:
        return ""
    papers = {"cam": "CAM (Zhou et al. 2016)", "gradcam": "Grad-CAM (Selvaraju et al. 2017)"}
    method = papers.get(cam["method"], cam["method"])
    (h, w), (H, W) = cam["map_size"], cam["image_size"]
    intro = (f"<p>{escape(method)} at layer <code>{escape(str(cam['layer']))}</code>: a {h}×{w} map over the "
             f"{H}×{W} image (scale {cam['scale'][0]:g}), upsampled by {escape(cam['interp'])} interpolation "
             f"under the {escape(cam['convention'])} convention. Each pair: the image, then the map of the explained class "
             "over it (bright = evidence for the class).</p>")  # fmt: skip
    figs, missing = [], []
    for r in cam["images"]:
        b64 = _inline_png(run, r["file"])
        if b64 is None:
            missing.append(r["file"])
            continue
        label = f"label {r['label']}, " if r.get("label") is not None else (f"{r['name']}, " if r.get("name") else "")
        figs.append(_img(b64, f"{label}predicted {r['predicted']} (p {r['probability']:.2f}), map of "
                              f"{r['explained']}, peak at cell {tuple(r['peak_cell'])}"))  # fmt: skip
    note = f'<p class="note">Missing overlay files: {escape(", ".join(missing))}</p>' if missing else ""
    return f"<h2>Where the network looks</h2>{intro}<div class=\"cams\">{''.join(figs)}</div>{note}"


def _netadapt(doc: Doc, _run: Path | None) -> str:
    na = doc.get("netadapt")
    if not na or not na.get("history"):
        return ""
    rows = [(str(h["iteration"]), escape(str(h.get("block") or "")), f"{h['latency_ms']:.3f}", _pct(h.get("top1")))
            for h in na["history"]]  # fmt: skip
    fig = _figures([("NetAdapt: measured latency and short-fine-tuned top-1 after each iteration.",
                     lambda: plots.plot_netadapt_history(na["history"], budget_ms=na.get("budget_ms")))])  # fmt: skip
    return "<h2>NetAdapt</h2>" + _table(("iteration", "block narrowed", "ms", "top-1"), rows, left=2) + fig


def _search(doc: Doc, _run: Path | None) -> str:
    s = doc.get("search")
    if not s or not s.get("candidates"):
        return ""
    return "<h2>Architecture search</h2>" + _figures([(
        "Every evaluated candidate, coloured by generation where recorded, and the accuracy–latency front.",
        lambda: plots.plot_search_front(s["candidates"], reference=s.get("reference") or ()))])  # fmt: skip


def _ms(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "–"


def _search_run(doc: Doc, _run: Path | None) -> str:
    """The document ``edgecnn search`` writes (kind ``search``, docs/search.md): plot, finalists, references."""
    if doc.get("kind") != "search" or not doc.get("history"):
        return ""
    space, obj, lat = doc.get("space") or {}, doc.get("objective") or {}, doc.get("latency") or {}
    intro = (f"<p>Space <code>{escape(str(space.get('name', '?')))}</code> at {space.get('input_size', '?')} px, "
             f"objective <code>{escape(str(obj.get('formula', '')))}</code>, {len(doc['history'])} candidates "
             f"scored by the {escape(str(doc.get('estimator', '?')))} estimator; latency "
             f"{escape(str(lat.get('backend', '?')))} with {lat.get('threads', '?')} thread(s), by this device's "
             "table for the candidates, measured end to end for the finalists and the reference networks.</p>")
    fig = _figures([("Candidates (table latency, estimated accuracy), their front, the finalists measured, the chosen "
                     "network and the zoo's reference networks after the same training (test top-1).",
                     lambda: plots.plot_search_run(doc))])  # fmt: skip
    rows = [(str(i), f"<code>{escape(str(f['arch']))}</code>", _pct(f.get("acc")), _ms(f.get("table_ms")),
             _ms(f.get("measured_ms")), f"{f['measured_score']:.4f}" if isinstance(f.get("measured_score"), float)
             else "–") for i, f in enumerate(doc.get("finalists") or [], 1)]  # fmt: skip
    final = doc.get("final") or {}
    fin = ("<h3>Finalists</h3>" + _table(("#", "arch", "est. top-1", "table ms", "measured ms", "score"), rows, left=2)
           if rows else "")  # fmt: skip
    if final:
        fin += (f"<p>Chosen network trained {final.get('epochs', '?')} epochs: test top-1 {_pct(final.get('top1'))} "
                f"at {_ms(final.get('measured_ms'))} ms measured.</p>")  # fmt: skip
    refs = doc.get("references") or []
    ref_rows = [(escape(str(r.get("label", ""))), _ms(r.get("table_ms")), _ms(r.get("measured_ms")),
                 _pct(r.get("top1", r.get("acc"))), escape(str(r.get("what", ""))))
                for r in refs]  # fmt: skip
    ref = ("<h3>The zoo's reference networks</h3>"
           + _table(("network", "table ms", "measured ms", "test top-1", "accuracy from"), ref_rows, left=1)
           if ref_rows else "")  # fmt: skip
    return "<h2>Architecture search</h2>" + intro + fig + fin + ref


def _pareto(doc: Doc, _run: Path | None) -> str:
    p = doc.get("pareto")
    if not p or not (p.get("points") or p.get("reference")):
        return ""
    return "<h2>Accuracy vs latency</h2>" + _figures([(
        "Networks of this run with their Pareto front; stars are the zoo's reference networks.",
        lambda: plots.plot_pareto(p.get("points") or (), reference=p.get("reference") or ()))])  # fmt: skip


def _compress(doc: Doc, _run: Path | None) -> str:
    """The document ``edgecnn compress`` writes (kind ``compress``, docs/compress.md): budget and before → after."""
    if doc.get("kind") != "compress" or not all(isinstance(doc.get(k), dict) for k in ("before", "after")):
        return ""
    b, a, budget = doc["before"], doc["after"], doc.get("budget") or {}

    def count(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) else "–"

    rows = [("test top-1", _pct(b.get("top1")), _pct(a.get("top1"))),
            ("latency, measured (ms)", _ms(b.get("latency_ms")), _ms(a.get("latency_ms"))),
            ("MACs", count(b.get("macs")), count(a.get("macs"))),
            ("params", count(b.get("params")), count(a.get("params"))),
            ("arch", *(f"<code>{escape(str(x.get('arch') or '–'))}</code>" for x in (b, a)))]  # fmt: skip
    head = (f"<p>method <code>{escape(str(doc.get('method', '?')))}</code>, budget "
            f"<code>{escape(str(budget.get('text', budget.get('value', '?'))))}</code>: "
            f"{'met' if doc.get('met') else '<b>not met</b>'}</p>")  # fmt: skip
    return "<h2>Compression</h2>" + head + _table(("", "before", "after"), rows, left=1)


def _analysis(doc: Doc, _run: Path | None) -> str:
    if doc.get("kind") != "analyze":
        return ""
    t = doc.get("totals") or {}
    head = ("layer", "op", "output", "params", "MACs", "other ops", "act. bytes")
    rows = [(escape(str(r.get("name", ""))), escape(str(r.get("op", ""))),
             "×".join(map(str, r.get("out_shape") or [])), f"{r.get('params', 0):,}", f"{r.get('macs', 0):,}",
             f"{r.get('other_ops', 0):,}", f"{r.get('activation_bytes', 0):,}")
            for r in doc.get("layers") or []]  # fmt: skip
    totals = _table(("", ""), [(escape(k), f"{v:,}" if isinstance(v, int) else escape(str(v))) for k, v in t.items()],
                    left=2, head_row=False)  # fmt: skip
    return (f"<h2>Analysis of <code>{escape(str(doc.get('model', '')))}</code></h2>"
            f"<p>{escape(str(doc.get('conventions', '')))}</p>{totals}{_table(head, rows, left=3)}")  # fmt: skip


_SECTIONS: tuple[Callable[[Doc, Path | None], str], ...] = (
    _stages, _summary, _compress, _blocks, _training, _analysis, _erf, _gradflow, _cam, _netadapt, _search, _search_run, _pareto,
)  # fmt: skip


def render_html(doc: Doc, *, run_dir: str | os.PathLike[str] | None = None) -> str:
    """A results document as a self-contained HTML page; overlay files are read from (and only from) ``run_dir``."""
    kind = str(doc.get("kind") or "run")
    run = Path(run_dir) if run_dir is not None else None
    body = "".join(section(doc, run) for section in _SECTIONS)
    if not body:
        body = '<p class="note">This results document has no section this edgecnn knows how to draw.</p>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>edgecnn {escape(kind)} report</title><style>{_CSS}</style></head><body>"
        f"<h1>edgecnn {escape(kind)} report</h1>{body}</body></html>\n"
    )


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Render the run folder's (or results file's) document to ``out`` (default: ``report.html`` beside it)."""
    path = results_path(run)
    doc = read_results(path)
    target = Path(out) if out is not None else path.parent / "report.html"
    return atomic_write_text(target, render_html(doc, run_dir=path.parent))
