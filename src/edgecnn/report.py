"""One self-contained HTML page per run, rendered from the run's results document (docs/design.md §7).

:func:`render_html` takes the plain results document a command wrote
(:mod:`edgecnn.run_document`: a dict with ``kind`` and ``schema``) and draws every
section it has data for — the pipeline's stages, the summary, the per-block
cost table and plots, the training curve, CAM overlays, the NetAdapt
history, the search front, an analysis table — so any run (``demo``,
``train``, ``explain``, ``analyze``, ``compress``, ``search``) gets a report
without this module importing the code that made it. Fields of each
section: docs/report.md.

The page carries everything inline — CSS in a ``<style>`` element, figures and
overlays as base64 PNG ``data:`` URIs — so it can be mailed or archived as a
single file and opened without a network or JavaScript. Figures come from
:mod:`edgecnn.plots`; without matplotlib (the ``[plot]`` extra) the
page is still written, with a note where the figures would be.

**A results document is untrusted input** (run folders are shared). Two
rules keep a hostile one from doing more than spoil its own sections:

* every section is checked against its schema first
  (:func:`edgecnn.report_schema.validate`); a malformed one is left out with a
  note on the page (and in ``notes`` for the CLI's stderr), never a traceback;
* every value is escaped where it enters markup, whatever type it claims.
  Markup is an :class:`Html` string, and only :func:`html` (a ``str.format``
  whose every field is escaped after formatting) and :func:`esc` make one;
  concatenating or joining an ``Html`` escapes the other side. A section that
  forgets shows ``&lt;`` on the page — it cannot inject a tag.

:func:`markdown` and :func:`md_code` do the same for Markdown (the demo's
``report.md``): HTML and Markdown syntax in a value is backslash-escaped.
"""

from __future__ import annotations

import base64
import os
import re
import string
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edgecnn.analysis.rf_math import RF
from edgecnn.atomic import atomic_write_text
from edgecnn import plots
from edgecnn.run_folder import check_writable
from edgecnn.report_schema import validate
from edgecnn.run_document import read_results, results_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Html", "Md", "esc", "html", "markdown", "md_code", "md_link", "md_text", "render_html", "write_report"]

Doc = Mapping[str, Any]

# ------------------------------------------------------------------ markup that cannot be forgotten


class Html(str):
    """A fragment of HTML this module vouches for; anything that meets it is escaped first.

    Only :func:`esc`, :func:`html` and the page's constant parts make one.
    ``Html + x``, ``x + Html`` and ``Html.join(xs)`` escape every ``x`` that is not
    ``Html`` itself, so a plain string can never slip into the page as markup.
    """

    __slots__ = ()

    def __add__(self, other: object) -> Html:
        return Html(str.__add__(self, esc(other)))

    def __radd__(self, other: object) -> Html:
        return Html(str.__add__(esc(other), self))

    def join(self, parts: Iterable[object]) -> Html:  # type: ignore[override]
        return Html(str.join(self, [esc(p) for p in parts]))


def esc(value: object) -> Html:
    """``value`` as HTML text: ``Html`` as is, anything else ``str()``-ed and escaped (quotes too)."""
    return value if isinstance(value, Html) else Html(escape(str(value), quote=True))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _EscapingFormatter(string.Formatter):
    """``str.format`` whose every replacement field is formatted, then escaped (``Html`` fields placed as is).

    A format spec that does not fit the value (``{x:.3f}`` of a string a
    hostile document put where a number belongs) shows the value as text
    instead of raising: the type is the schema's job, the escaping is this one's.
    """

    def __init__(self, escape_text: Callable[[str], str], trusted: type[str]) -> None:
        super().__init__()
        self.escape_text, self.trusted = escape_text, trusted

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, self.trusted):
            return value
        try:
            text = format(value, format_spec)
        except (TypeError, ValueError):
            text = "–" if value is None else str(value)
        return self.escape_text(text)


_HTML_FMT = _EscapingFormatter(lambda s: escape(s, quote=True), Html)


def html(template: str, /, *args: Any, **kwargs: Any) -> Html:
    """``template.format(*args, **kwargs)`` with every field escaped; ``template`` itself is trusted markup.

    Only ever pass a literal from this module as ``template``.
    """
    return Html(_HTML_FMT.vformat(template, args, kwargs))


class Md(str):
    """A fragment of Markdown this module vouches for (see :class:`Html`)."""

    __slots__ = ()

    def __add__(self, other: object) -> Md:
        return Md(str.__add__(self, md_text(other)))

    def __radd__(self, other: object) -> Md:
        return Md(str.__add__(md_text(other), self))

    def join(self, parts: Iterable[object]) -> Md:  # type: ignore[override]
        return Md(str.join(self, [md_text(p) for p in parts]))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|!&#~$])")
_LINE_BREAKS = re.compile(r"\s*[\r\n\x0b\x0c\x85\u2028\u2029]+\s*")


def md_text(value: object) -> Md:
    """``value`` as Markdown text: ``Md`` as is; else one line with HTML and Markdown syntax backslash-escaped.

    ``<img onerror=…>`` becomes ``\\<img onerror=…\\>`` (CommonMark shows it as
    text, no inline HTML), ``|`` cannot split a table cell, ``[x](javascript:…)``
    makes no link, and a line break cannot start a new block.
    """
    if isinstance(value, Md):
        return value
    return Md(_MD_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value))))


def md_code(value: object) -> Md:
    """``value`` as an inline code span (HTML inside one is inert); escaped text where a span cannot hold it."""
    text = _LINE_BREAKS.sub(" ", str(value))
    if not text.strip() or "`" in text or "|" in text or text != text.strip():
        return md_text(text)
    return Md("`" + text + "`")


def md_link(text: object, target: object) -> Md:
    """A link to a relative file: the text escaped, the target percent-encoded (no ``javascript:``, no ``)``)."""
    return Md("".join(("[", md_text(text), "](", quote(str(target), safe="/._-~"), ")")))


_MD_FMT = _EscapingFormatter(lambda s: md_text(s), Md)


def markdown(template: str, /, *args: Any, **kwargs: Any) -> Md:
    """``template.format(...)`` for Markdown: every field escaped by :func:`md_text` (``Md`` fields as is)."""
    return Md(_MD_FMT.vformat(template, args, kwargs))


# ------------------------------------------------------------------ the page's constant parts

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
_STYLE = Html("<style>" + _CSS + "</style>")  # a constant of this module: no value of a document in it
_NO_PLOTS = Html('<p class="note">Plots need matplotlib, which is not installed: '
                 "<code>pip install 'edgecnn[plot]'</code>.</p>")  # fmt: skip
_PNG = b"\x89PNG\r\n\x1a\n"
MAX_OVERLAY_BYTES = 8 * 2**20  # one CAM overlay inlined (ours are a few kB)
MAX_INLINED_BYTES = 64 * 2**20  # all overlays of one page together


@dataclass
class _Page:
    """What the sections share while one page is drawn: the run folder and the notes so far."""

    run: Path | None
    notes: list[str] = field(default_factory=list)
    inlined: int = 0  # overlay bytes inlined so far


# ------------------------------------------------------------------ small HTML pieces


def _fmt(v: Any, spec: str, missing: str = "–") -> str:
    """A number formatted by ``spec``; ``missing`` for anything else (null, a string)."""
    return format(v, spec) if _is_number(v) else missing


def _pct(v: Any) -> str:
    return _fmt(v, ".2%")


def _ms(v: Any) -> str:
    return _fmt(v, ".3f")


def _nan(v: Any) -> float:
    return float(v) if _is_number(v) else float("nan")


def _table(head: Sequence[object], rows: Sequence[Sequence[object]], left: int = 0, *,
           head_row: bool = True) -> Html:  # fmt: skip
    """An HTML table; every cell is escaped (``Html`` cells placed as is); the first ``left`` columns left-aligned."""

    def cells(tag: str, values: Sequence[object]) -> Html:
        return Html("").join(html('<{0} class="l">{1}</{0}>', tag, v) if i < left else html("<{0}>{1}</{0}>", tag, v)
                             for i, v in enumerate(values))  # fmt: skip

    body = Html("").join(html("<tr>{}</tr>", cells("td", r)) for r in rows)
    thead = html("<thead><tr>{}</tr></thead>", cells("th", head)) if head_row else Html("")
    return html("<table>{}<tbody>{}</tbody></table>", thead, body)


def _img(b64: str, caption: str) -> Html:
    return html('<figure><img src="data:image/png;base64,{b64}" alt="{cap}"><figcaption>{cap}</figcaption></figure>',
                b64=b64, cap=caption)  # fmt: skip


def _note(text: str) -> Html:
    return html('<p class="note">{}</p>', text)


def _figures(makers: Sequence[tuple[str, Callable[[], Figure]]], page: _Page) -> Html:
    """Each figure as an inline PNG; one that cannot be drawn from the document's numbers becomes a note."""
    out: list[Html] = []
    for caption, make in makers:
        try:
            with warnings.catch_warnings():  # matplotlib's layout and log-scale grumbles about odd numbers: not ours
                warnings.simplefilter("ignore")
                out.append(_img(plots.png_base64(make()), caption))
        except ImportError:
            return _NO_PLOTS
        except Exception as exc:  # noqa: BLE001 - a figure of untrusted numbers fails alone, never the page
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            msg = f"figure not drawn ({type(exc).__name__}: {first}): {caption[:60]}"
            page.notes.append(msg)
            out.append(_note(msg))
    return Html("").join(out)


def _code(v: Any) -> Html:
    return html("<code>{}</code>", v)


# ------------------------------------------------------------------ sections


def _stages(doc: Doc, _page: _Page) -> Html:
    stages = doc.get("stages") or []
    if not stages:
        return Html("")
    rows = [(s.get("title", s.get("name", "")), s.get("status", ""), s.get("note") or "", _fmt(s.get("seconds"), ".1f"))
            for s in stages]  # fmt: skip
    return html("<h2>Pipeline</h2>{}", _table(("stage", "status", "note", "seconds"), rows, left=3))


def _summary(doc: Doc, _page: _Page) -> Html:
    rows: list[tuple[str, object]] = []
    if doc.get("data"):
        rows.append(("data", str(doc["data"])))
    if doc.get("arch"):
        rows.append(("arch", _code(doc["arch"])))
    if isinstance(doc.get("params"), int):
        rows.append(("parameters", format(doc["params"], ",")))
    if isinstance(doc.get("macs"), int):
        rows.append(("multiply-adds", html("{:,} per image (FLOPs = 2·MACs)", doc["macs"])))
    if doc.get("receptive_field"):
        rows.append(("output receptive field", str(doc["receptive_field"])))
    if "top1" in doc:
        rows.append(("test accuracy", html("top-1 {}, top-5 {}", _pct(doc.get("top1")), _pct(doc.get("top5")))))
    if _is_number(doc.get("train_seconds")):
        ips = doc.get("images_per_s")
        rows.append(("training", _fmt(doc["train_seconds"], ".1f") + " s" + (", " + _fmt(ips, ",.0f") + " img/s"
                                                                            if ips else "")))  # fmt: skip
    if _is_number(doc.get("eager_ms")):
        rows.append(("latency, PyTorch eager", _fmt(doc["eager_ms"], ".2f") + " ms (batch 1)"))
    if "onnx_ms" in doc:
        onnx = doc["onnx_ms"]
        rows.append(("latency, ONNX Runtime", _fmt(onnx, ".2f") + " ms" if _is_number(onnx)
                     else html("not measured (install the <code>[onnx]</code> extra)")))  # fmt: skip
    if doc.get("checkpoint"):
        rows.append(("checkpoint", _code(doc["checkpoint"])))
    m = doc.get("machine") or {}
    if m:
        rows.append(("machine", f"{m.get('cpu', '?')}, {m.get('threads', '?')} thread(s), torch {m.get('torch', '?')}"))
    return html("<h2>Summary</h2>{}", _table(("", ""), rows, left=2, head_row=False)) if rows else Html("")


def _block_label(b: Doc) -> str:
    return str(b["name"]).removeprefix("blocks.")


def _us_per_mmac(b: Doc) -> float:
    return _nan(b.get("ms")) * 1e3 / (b["macs"] / 1e6) if b.get("macs") else float("nan")


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


def _blocks(doc: Doc, page: _Page) -> Html:
    blocks = doc.get("blocks") or []
    if not blocks:
        return Html("")
    head = ("block", "arch", "params", "MACs", "ms (eager, alone)", "µs per M MACs", "receptive field")
    rows = []
    for b in blocks:
        rf, jump, whole = b.get("rf"), b.get("rf_jump"), b.get("rf_whole")
        cell = "" if rf is None else f"{rf:g} J{jump:g}" if jump is not None else f"{rf:g}"
        cell = f"{cell} (whole input via SE)" if cell and whole else "whole input" if whole else cell
        eff = _fmt(_us_per_mmac(b), ".0f") if b.get("macs") else "–"
        rows.append((b["name"], _code(b["block"]), format(b["params"], ","), format(b["macs"], ","), _ms(b["ms"]),
                     eff, cell))  # fmt: skip
    names = [_block_label(b) for b in blocks]
    macs, ms = [b["macs"] for b in blocks], [_nan(b["ms"]) for b in blocks]
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
    return html("<h2>Per block: cost vs measured latency</h2>"
                "<p>Each block timed alone, batch 1, median of repeated runs; MACs counted exactly from the spec.</p>"
                "{}{}", _table(head, rows, left=2), _figures(makers, page))  # fmt: skip


def _training(doc: Doc, page: _Page) -> Html:
    history = doc.get("history") or []
    if not history or not all(isinstance(e, Mapping) and "epoch" in e for e in history):
        return Html("")  # a search's "history" holds its candidates, drawn by _search_run
    return html("<h2>Training</h2>{}", _figures([("Training loss and test top-1 after each epoch.",
                                                  lambda: plots.plot_training(history))], page))  # fmt: skip


def _weights(section: Doc) -> Html:
    return html(" ({})", section["weights"]) if section.get("weights") else Html("")


def _erf(doc: Doc, page: _Page) -> Html:
    e = doc.get("erf")
    if not e or not e.get("map"):
        return Html("")
    field = ("the whole input" if e.get("rf_whole") else
             "×".join(_fmt(v, "g") for v in e["rf_size"]) + " pixels" if e.get("rf_size") else "not traced")
    gate = " (plus the whole input through SE gates)" if e.get("rf_global") and not e.get("rf_whole") else ""
    shape = "×".join(str(v) for v in e.get("input_shape") or e.get("shape") or [])
    intro = html("<p>Effective receptive field (Luo et al. 2016) of the central unit {index} of <code>{layer}</code>, "
                 "the last feature map before global pooling: |∂y/∂x| averaged over {samples} random {shape} "
                 "inputs, normalised to sum 1{weights}. Half its mass lies within {r50:.1f} pixels of the centre, "
                 "95% within {r95:.1f}; the theoretical field is {field}{gate}.</p>",
                 index=str(tuple(e.get("output_index") or ())), layer=e.get("layer", ""),
                 samples=e.get("samples", "?"), shape=shape, weights=_weights(e), r50=e["radius50"],
                 r95=e["radius95"], field=field, gate=gate)  # fmt: skip
    title = f"ERF of {e.get('layer', '')}"
    return html("<h2>Effective receptive field</h2>{}{}", intro, _figures([(
        "ERF map: how much each input pixel moves the central output; circles hold 50% and 95% of the mass.",
        lambda: plots.plot_erf(e, title=title))], page))  # fmt: skip


def _gradflow(doc: Doc, page: _Page) -> Html:
    g = doc.get("gradflow")
    if not g or not g.get("runs"):
        return Html("")
    runs = g["runs"]
    rows = [(label, str(len(r["layers"])), _fmt(r.get("loss"), ".4g"),
             _fmt(r["layers"][0].get("output_grad_norm"), ".3g"), _fmt(r["layers"][-1].get("output_grad_norm"), ".3g"),
             _fmt(r.get("attenuation"), ".3g"))
            for label, r in runs.items()]  # fmt: skip
    mode = "batch statistics (training mode)" if g.get("mode") == "train" else "running statistics (eval mode)"
    intro = html("<p>Norm of ∂L/∂(layer output) for every conv and linear layer after one cross-entropy backward "
                 "pass on {batch} images{weights}, BN with {mode}. &quot;Without skips&quot; is a copy with the same "
                 "weights and its {skips} skip connection(s) turned off. A skip's identity term (He et al. 2016) "
                 "carries the gradient past its block; without it a plain stack loses the gradient towards the "
                 "input, or, with batch-statistics BN, can amplify it (Yang et al. 2019).</p>",
                 batch=g.get("batch", "?"), weights=_weights(g), mode=mode, skips=g.get("skips", 0))  # fmt: skip
    table = _table(("run", "layers", "loss", "first layer", "last layer", "first / last"), rows, left=1)
    return html("<h2>Gradient flow</h2>{}{}{}", intro, table, _figures([(
        "Gradient norm per layer, input side first (log scale), with and without the skip connections.",
        lambda: plots.plot_gradient_flow(runs))], page))  # fmt: skip


def _inline_png(page: _Page, rel: str) -> str | None:
    """The PNG at ``run/rel`` as base64, or None when missing, too large, not a PNG, or outside the run folder."""
    if page.run is None:
        return None
    try:
        root = page.run.resolve()
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            return None
        size = path.stat().st_size
        if size > MAX_OVERLAY_BYTES or page.inlined + size > MAX_INLINED_BYTES:
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_OVERLAY_BYTES + 1)
    except (OSError, ValueError):  # a name with a NUL byte, too long, a loop of links, unreadable
        return None
    if not data.startswith(_PNG) or len(data) > MAX_OVERLAY_BYTES:
        return None
    page.inlined += len(data)
    return base64.b64encode(data).decode("ascii")


def _cam(doc: Doc, page: _Page) -> Html:
    cam = doc.get("cam")
    if not cam:
        return Html("")
    papers = {"cam": "CAM (Zhou et al. 2016)", "gradcam": "Grad-CAM (Selvaraju et al. 2017)"}
    method = papers.get(cam["method"], cam["method"])
    (h, w), (H, W) = cam["map_size"], cam["image_size"]
    intro = html("<p>{method} at layer <code>{layer}</code>: a {h}×{w} map over the {H}×{W} image (scale "
                 "{scale:g}), upsampled by {interp} interpolation under the {convention} convention. Each pair: the "
                 "image, then the map of the explained class over it (bright = evidence for the class).</p>",
                 method=method, layer=cam["layer"], h=h, w=w, H=H, W=W, scale=cam["scale"][0],
                 interp=cam["interp"], convention=cam["convention"])  # fmt: skip
    figs, missing = [], []
    for r in cam["images"]:
        b64 = _inline_png(page, r["file"])
        if b64 is None:
            missing.append(r["file"])
            continue
        label = f"label {r['label']}, " if r.get("label") is not None else (f"{r['name']}, " if r.get("name") else "")
        figs.append(_img(b64, f"{label}predicted {r['predicted']} (p {_fmt(r['probability'], '.2f')}), map of "
                              f"{r['explained']}, peak at cell {tuple(r['peak_cell'])}"))  # fmt: skip
    note = Html("")
    if missing:
        text = "Missing overlay files: " + ", ".join(missing)
        page.notes.append(text[:300])
        note = _note(text)
    return html('<h2>Where the network looks</h2>{}<div class="cams">{}</div>{}', intro, Html("").join(figs), note)


def _netadapt(doc: Doc, page: _Page) -> Html:
    na = doc.get("netadapt")
    if not na or not na.get("history"):
        return Html("")
    rows = [(str(h["iteration"]), h.get("block") or "", _ms(h.get("latency_ms")), _pct(h.get("top1")))
            for h in na["history"]]  # fmt: skip
    fig = _figures([("NetAdapt: measured latency and short-fine-tuned top-1 after each iteration.",
                     lambda: plots.plot_netadapt_history(na["history"], budget_ms=na.get("budget_ms")))],
                   page)  # fmt: skip
    return html("<h2>NetAdapt</h2>{}{}", _table(("iteration", "block narrowed", "ms", "top-1"), rows, left=2), fig)


def _search(doc: Doc, page: _Page) -> Html:
    s = doc.get("search")
    if not s or not s.get("candidates"):
        return Html("")
    return html("<h2>Architecture search</h2>{}", _figures([(
        "Every evaluated candidate, coloured by generation where recorded, and the accuracy–latency front.",
        lambda: plots.plot_search_front(s["candidates"], reference=s.get("reference") or ()))], page))  # fmt: skip


def _search_run(doc: Doc, page: _Page) -> Html:
    """The document ``edgecnn search`` writes (kind ``search``, docs/search.md): plot, finalists, references."""
    if doc.get("kind") != "search" or not doc.get("history"):
        return Html("")
    space, obj, lat = doc.get("space") or {}, doc.get("objective") or {}, doc.get("latency") or {}
    intro = html("<p>Space <code>{space}</code> at {size} px, objective <code>{formula}</code>, {n} candidates scored "
                 "by the {estimator} estimator; latency {backend} with {threads} thread(s), by this device's table "
                 "for the candidates, measured end to end for the finalists and the reference networks.</p>",
                 space=space.get("name", "?"), size=space.get("input_size", "?"), formula=obj.get("formula", ""),
                 n=len(doc["history"]), estimator=doc.get("estimator", "?"), backend=lat.get("backend", "?"),
                 threads=lat.get("threads", "?"))  # fmt: skip
    fig = _figures([("Candidates (table latency, estimated accuracy), their front, the finalists measured, the chosen "
                     "network and the zoo's reference networks after the same training (test top-1).",
                     lambda: plots.plot_search_run(doc))], page)  # fmt: skip
    chosen = doc.get("chosen") if isinstance(doc.get("chosen"), dict) else {}
    rows = [(f"{i}*" if chosen.get("index") == i - 1 else str(i), _code(f["arch"]), _pct(f.get("acc")),
             _ms(f.get("table_ms")), _ms(f.get("measured_ms")),
             _fmt(f.get("measured_score"), ".4f") if isinstance(f.get("measured_score"), float) else "–")
            for i, f in enumerate(doc.get("finalists") or [], 1)]  # fmt: skip
    final = doc.get("final") or {}
    fin = (html("<h3>Finalists</h3>{}", _table(("#", "arch", "est. top-1", "table ms", "measured ms", "score"), rows,
                                               left=2)) if rows else Html(""))  # fmt: skip
    if rows and chosen.get("reason"):
        warn = " The hard latency target is not met." if chosen.get("meets_target") is False else ""
        fin += html("<p>Chosen (*): {}.{}</p>", chosen["reason"], warn)
    corr = doc.get("corrections") if isinstance(doc.get("corrections"), dict) else {}
    rounds = corr.get("rounds") or []
    if rounds:
        fin += html("<p>Measured corrections (the finalists over the target as measured: the search went on under "
                    "the target divided by their measured/table ratio): {}. Stopped: {}.</p>",
                    "; ".join(f"round {r.get('round')}: ×{_fmt(r.get('ratio'), '.3f')}, "
                              f"{_ms(r.get('table_target_ms'))} ms by the table, {r.get('budget')} candidates"
                              for r in rounds), corr.get("stop", ""))  # fmt: skip
    if final:
        fin += html("<p>Chosen network trained {} epochs: test top-1 {} at {} ms measured.</p>",
                    final.get("epochs", "?"), _pct(final.get("top1")), _ms(final.get("measured_ms")))  # fmt: skip
    refs = doc.get("references") or []
    ref_rows = [(r.get("label", ""), _ms(r.get("table_ms")), _ms(r.get("measured_ms")),
                 _pct(r.get("top1", r.get("acc"))), r.get("what", "")) for r in refs]  # fmt: skip
    ref = (html("<h3>The zoo's reference networks</h3>{}",
                _table(("network", "table ms", "measured ms", "test top-1", "accuracy from"), ref_rows, left=1))
           if ref_rows else Html(""))  # fmt: skip
    return html("<h2>Architecture search</h2>{}{}{}{}", intro, fig, fin, ref)


def _pareto(doc: Doc, page: _Page) -> Html:
    p = doc.get("pareto")
    if not p or not (p.get("points") or p.get("reference")):
        return Html("")
    return html("<h2>Accuracy vs latency</h2>{}", _figures([(
        "Networks of this run with their Pareto front; stars are the zoo's reference networks.",
        lambda: plots.plot_pareto(p.get("points") or (), reference=p.get("reference") or ()))], page))  # fmt: skip


def _compress(doc: Doc, _page: _Page) -> Html:
    """The document ``edgecnn compress`` writes (kind ``compress``, docs/compress.md): budget and before → after,
    measured back to back on the target, the verdict with its noise band, int8 beside fp32, the stop reason."""
    if doc.get("kind") != "compress" or not all(isinstance(doc.get(k), dict) for k in ("before", "after")):
        return Html("")
    b, a, budget = doc["before"], doc["after"], doc.get("budget") or {}
    measured = doc.get("measured") if isinstance(doc.get("measured"), dict) else {}

    def count(v: Any) -> str:
        return format(v, ",") if isinstance(v, int) and not isinstance(v, bool) else "–"

    where = f"{doc.get('backend', '?')}, {doc.get('threads', '?')} thread(s)"
    rows = [("test top-1", _pct(b.get("top1")), _pct(a.get("top1"))),
            (f"latency, measured ({where}; ms)", _ms(b.get("latency_ms")), _ms(a.get("latency_ms"))),
            ("MACs", count(b.get("macs")), count(a.get("macs"))),
            ("params", count(b.get("params")), count(a.get("params"))),
            ("arch", *(_code(x.get("arch") or "–") for x in (b, a)))]  # fmt: skip
    head = html("<p>method <code>{}</code>, budget <code>{}</code>: {}. Stopped: {}</p>", doc.get("method", "?"),
                budget.get("text", budget.get("value", "?")),
                html("met") if doc.get("met") else html("<b>not met</b>"), doc.get("stopped", "–"))  # fmt: skip
    if measured.get("text"):
        head += html("<p>Before and after timed back to back: {}.</p>", measured["text"])
    i8 = doc.get("int8") if isinstance(doc.get("int8"), dict) else None
    int8 = Html("")
    if i8:
        r8 = [(f"{i8.get('target', '?')} fp32", _pct(i8.get("top1_fp32")), _ms(i8.get("latency_fp32_ms"))),
              (f"{i8.get('target', '?')} int8", _pct(i8.get("top1_int8")), _ms(i8.get("latency_int8_ms")))]
        int8 = html("<h3>int8</h3><p>Kept: <b>{}</b> — {}</p>{}", i8.get("kept", "?"), i8.get("reason", ""),
                    _table(("the result", "test top-1", "latency (ms)"), r8, left=1))  # fmt: skip
    return html("<h2>Compression</h2>{}{}{}", head, _table(("", "before", "after"), rows, left=1), int8)


def _rf_text(rf: Any) -> str:
    """A layer's receptive field as the console's analyze table says it: ``11×11 J4``, ``… +global``, ``whole``."""
    if not isinstance(rf, dict):
        return ""
    if rf.get("whole"):
        return "whole"
    size, jump = rf.get("size"), rf.get("jump")
    if not isinstance(size, list) or not all(_is_number(v) for v in size):
        return ""
    text = "×".join(f"{v:g}" for v in size)
    if isinstance(jump, list) and jump and all(_is_number(v) for v in jump):
        text += " J" + "×".join(f"{v:g}" for v in dict.fromkeys(jump))
    return text + (" +global" if rf.get("global") else "")


def _analysis(doc: Doc, _page: _Page) -> Html:
    if doc.get("kind") != "analyze":
        return Html("")
    t = doc.get("totals") or {}
    head = ("layer", "op", "output", "params", "MACs", "other ops", "act. bytes", "receptive field")
    rows = [(r.get("name", ""), r.get("op", ""), "×".join(map(str, r.get("out_shape") or [])),
             _fmt(r.get("params", 0), ","), _fmt(r.get("macs", 0), ","), _fmt(r.get("other_ops", 0), ","),
             _fmt(r.get("activation_bytes", 0), ","), _rf_text(r.get("rf")))
            for r in doc.get("layers") or []]  # fmt: skip
    totals = _table(("", ""), [(k, format(v, ",") if isinstance(v, int) else str(v)) for k, v in t.items()],
                    left=2, head_row=False)  # fmt: skip
    return html("<h2>Analysis of <code>{}</code></h2><p>{}</p>{}{}", doc.get("model", ""), doc.get("conventions", ""),
                totals, _table(head, rows, left=3))  # fmt: skip


_SECTIONS: tuple[Callable[[Doc, _Page], Html], ...] = (
    _stages, _summary, _compress, _blocks, _training, _analysis, _erf, _gradflow, _cam, _netadapt, _search, _search_run,
    _pareto,
)  # fmt: skip


def render_html(doc: Doc, *, run_dir: str | os.PathLike[str] | None = None, notes: list[str] | None = None) -> str:
    """A results document as a self-contained HTML page; overlay files are read from (and only from) ``run_dir``.

    The document is checked section by section first (:mod:`edgecnn.report_schema`):
    a malformed section is left out with a note at the top of the page. Every
    note (sections left out, figures not drawn, overlays missing) is also
    appended to ``notes`` when given, for the CLI to print.
    """
    clean, skipped = validate(doc)
    page = _Page(Path(run_dir) if run_dir is not None else None)
    kind = clean.get("kind") or "run"
    body = Html("").join(section(clean, page) for section in _SECTIONS)
    if not body:
        body = _note("This results document has no section this edgecnn knows how to draw.")
    top = Html("").join(_note("Not drawn: " + n) for n in skipped)
    if notes is not None:
        notes.extend(skipped + page.notes)
    return html('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edgecnn {kind} report</title>'
                "{style}</head><body><h1>edgecnn {kind} report</h1>{top}{body}</body></html>\n",
                kind=kind, style=_STYLE, top=top, body=body)  # fmt: skip


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 notes: list[str] | None = None) -> Path:  # fmt: skip
    """Render the run folder's (or results file's) document to ``out`` (default: ``report.html`` beside it).

    The output is checked writable before the page is drawn; notes about
    sections left out go to ``notes`` (see :func:`render_html`).
    """
    path = results_path(run)
    doc = read_results(path)  # bounded: at most EDGECNN_MAX_RESULTS_MB, 64 levels deep
    target = Path(out) if out is not None else path.parent / "report.html"
    check_writable(target, what="report (--out)")
    return atomic_write_text(target, render_html(doc, run_dir=path.parent, notes=notes))
