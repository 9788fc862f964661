"""``edgecnn report`` on hostile results documents: nothing injected, nothing crashes, bad sections named.

A run folder is something people share, so ``results.json`` is untrusted. For
every kind the report knows (demo, train, explain, analyze, search,
compress) a valid document is mutated — HTML in every string, HTML in every
field (numbers included), numbers as strings, lists as dicts, dicts as lists,
keys missing, nulls, absurd numbers — and ``edgecnn report`` must exit 0 with
only warning lines on stderr, and write a page whose every tag and attribute
is one the report itself makes. A file too large, too deeply nested or not
JSON is refused in one line (exit 2). The demo's ``report.md`` escapes HTML
and Markdown in every value.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hostile import refused
from PIL import Image
from test_report import BLOCKS, HISTORY, _cam_section, _doc, dynamics_sections
from test_search_references import _search_doc

import edgecnn.report
from edgecnn.cli.main import main
from edgecnn.report import Html, Md, esc, html, markdown, md_code, md_link, md_text, render_html
from edgecnn.report_schema import validate

PAYLOAD = ("<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">\"'><svg onload=window.__pwned=3>"
           "`|[x](javascript:window.__pwned=4)")  # fmt: skip

# ------------------------------------------------------------------ one valid document per kind


@pytest.fixture(scope="module")
def dynamics() -> tuple[dict, dict]:
    return dynamics_sections()


def _netadapt() -> dict[str, Any]:
    return {"budget_ms": 2.0, "start_ms": 4.0, "history": [
        {"iteration": 0, "latency_ms": 4.0, "top1": 0.99, "block": "baseline"},
        {"iteration": 1, "latency_ms": 1.9, "top1": 0.98, "block": "blocks.1"}]}  # fmt: skip


def _stages() -> list[dict[str, Any]]:
    return [{"name": "train", "title": "training", "status": "done", "seconds": 1.0, "note": "top-1 80%"},
            {"name": "netadapt", "title": "NetAdapt", "status": "not built", "seconds": None, "note": ""}]


def _pareto() -> dict[str, Any]:
    return {"points": [{"name": "baseline", "latency_ms": 0.3, "top1": 0.8},
                       {"name": "NetAdapt result", "latency_ms": 0.2, "top1": 0.78}], "reference": []}  # fmt: skip


def _compress() -> dict[str, Any]:
    from edgecnn.compress.budget import parse_budget
    from edgecnn.compress.summary import ModelStats, compress_document

    before = ModelStats("conv_c16 gap fc", 0.9912, 4.0, 5_400_000, 409_250)
    after = ModelStats("conv_c8 gap fc", 0.9861, 1.642, 2_488_448, 217_834)
    hist = [{"iteration": 1, "resource": 1.6, "top1": 0.986, "description": "blocks.0, 16 -> 8"}]
    body = compress_document("netadapt", {**parse_budget("50%latency").to_dict(), "start": 4.0, "target": 2.0},
                             before, after, met=True, history=hist)  # fmt: skip
    return {"kind": "compress", "schema": 1, **body}


def _analyze(dynamics: tuple[dict, dict]) -> dict[str, Any]:
    from edgecnn.analysis import analyze
    from edgecnn.build import build

    doc = analyze(build("conv_c8 gap fc", num_classes=3, in_chans=1), (1, 8, 8)).to_dict()
    return {**doc, "erf": dynamics[0], "gradflow": dynamics[1]}


def valid_documents(dynamics: tuple[dict, dict]) -> dict[str, dict[str, Any]]:
    """A valid document of every kind; the demo's with every section the report draws."""
    erf, flow = dynamics
    return {
        "demo": _doc(cam=_cam_section(["cam/0.png", "cam/1.png"]), erf=erf, gradflow=flow, netadapt=_netadapt(),
                     stages=_stages(), pareto=_pareto(),
                     search={"candidates": [{"latency_ms": 1.0, "top1": 0.9, "generation": 0}], "reference": []}),
        "train": {"kind": "train", "schema": 1, "arch": "conv_c8 gap fc", "data": "digits", "config": {"epochs": 2},
                  "top1": 0.8, "top5": 0.99, "ema_top1": None, "steps": 20, "train_seconds": 5.9,
                  "images_per_s": 400.0, "checkpoint": "runs/x/last.pt", "history": HISTORY},
        "explain": {"kind": "explain", "schema": 1, "checkpoint": "runs/x/last.pt", "arch": "conv_c8 gap fc",
                    "data": "digits", "cam": _cam_section(["cam/0.png", "cam/1.png"])},
        "analyze": _analyze(dynamics),
        "search": _search_doc([{"label": "mobilenet_v3_small_cifar@0.5", "arch": "x", "table_ms": 1.1,
                                "measured_ms": 1.2, "top1": 0.83, "what": "trained 3 epochs"}]),
        "compress": _compress(),
    }  # fmt: skip


KINDS = ["demo", "train", "explain", "analyze", "search", "compress"]


def _run_folder(tmp_path: Path, doc: dict[str, Any]) -> Path:
    """``tmp_path/run`` holding ``doc`` as results.json (NaN written as JSON's NaN literal) and two overlays."""
    run = tmp_path / "run"
    (run / "cam").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 4), (200, 10 * i, 10)).save(run / "cam" / f"{i}.png")
    (run / "results.json").write_text(json.dumps(doc))
    return run


# ------------------------------------------------------------------ the page holds only the report's own markup

ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b", "code", "table", "thead",
                "tbody", "tr", "th", "td", "figure", "img", "figcaption", "div"}  # fmt: skip
ALLOWED_ATTRS = {"lang", "charset", "class", "src", "alt"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bad: list[str] = []
        self.styles = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.bad.append(f"<{tag}>")
        self.styles += tag == "style"
        for name, value in attrs:
            if name not in ALLOWED_ATTRS:
                self.bad.append(f"<{tag} {name}=...>")
            if name == "src" and not (value or "").startswith("data:image/png;base64,"):
                self.bad.append(f"<{tag} src={value!r}>")


def assert_inert(text: str) -> None:
    """Every tag and attribute of the page is one the report makes; one style element; no script anywhere."""
    p = _Tags()
    p.feed(text)
    p.close()
    assert p.bad == [] and p.styles == 1, p.bad[:5]
    assert "<script" not in text.lower() and "<svg" not in text.lower()


def _h2(text: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", text)


# ------------------------------------------------------------------ mutations of a document


def _walk(v: Any, leaf: Callable[[Any], Any] | None = None, lst: Callable[[list], Any] | None = None,
          dct: Callable[[dict], Any] | None = None) -> Any:  # fmt: skip
    if isinstance(v, dict):
        out = {k: _walk(x, leaf, lst, dct) for k, x in v.items()}
        return dct(out) if dct else out
    if isinstance(v, list):
        out_l = [_walk(x, leaf, lst, dct) for x in v]
        return lst(out_l) if lst else out_l
    return leaf(v) if leaf else v


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


MUTATIONS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "html-in-every-string": {"leaf": lambda v: PAYLOAD if isinstance(v, str) else v},
    "html-in-every-field": {"leaf": lambda v: PAYLOAD},
    "numbers-as-strings": {"leaf": lambda v: str(v) if _number(v) else v},
    "lists-as-dicts": {"lst": lambda v: {str(i): x for i, x in enumerate(v)}},
    "dicts-as-lists": {"dct": lambda v: list(v.values())},
    "keys-missing": {"dct": lambda v: {k: x for i, (k, x) in enumerate(v.items()) if i % 2}},
    "nulls": {"leaf": lambda v: None},
    "absurd-numbers": {"leaf": lambda v: (-(10**30) if isinstance(v, int) else math.nan) if _number(v) else v},
}


def mutate(doc: dict[str, Any], how: str) -> dict[str, Any]:
    """Every value but the top-level ``kind`` and ``schema`` mutated by ``how`` (the top level stays a dict)."""
    fns = MUTATIONS[how]
    body = {k: _walk(v, fns.get("leaf"), fns.get("lst"), fns.get("dct"))
            for k, v in doc.items() if k not in ("kind", "schema")}  # fmt: skip
    return {"kind": doc["kind"], "schema": doc["schema"], **body}


def _report(run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str]]:
    """``edgecnn report run``: exit 0, stderr only warning lines; the page and those lines."""
    capsys.readouterr()
    assert main(["report", str(run)]) == 0  # in-process: any exception but a handled one fails the test
    cap = capsys.readouterr()
    warnings = cap.err.splitlines()
    assert all(w.startswith("edgecnn report: warning: ") for w in warnings), warnings[:3]
    assert "Traceback" not in cap.err and cap.out.startswith("wrote ")
    return (run / "report.html").read_text(encoding="utf-8"), warnings


@pytest.mark.parametrize("kind", KINDS)
def test_valid_documents_draw_every_section_without_a_note(kind, dynamics, tmp_path, capsys):
    doc = valid_documents(dynamics)[kind]
    assert validate(doc)[1] == []
    text, warnings = _report(_run_folder(tmp_path, doc), capsys)
    assert warnings == [] and "Not drawn" not in text
    assert_inert(text)
    assert len(_h2(text)) >= 1


def _no_plots(_fig: object) -> str:
    raise ImportError("figures left out to keep the test fast")


@pytest.mark.parametrize("how", list(MUTATIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_document_spoils_only_its_sections(kind, how, dynamics, tmp_path, capsys, monkeypatch):
    valid = valid_documents(dynamics)[kind]
    if how != "html-in-every-string":  # that one draws every figure with the hostile strings in it
        monkeypatch.setattr(edgecnn.report.plots, "png_base64", _no_plots)
    text, warnings = _report(_run_folder(tmp_path, mutate(valid, how)), capsys)
    assert_inert(text)
    assert f"<title>edgecnn {kind} report</title>" in text
    skipped = [w for w in warnings if "skipped" in w or "left out" in w]
    assert len(re.findall(r'<p class="note">Not drawn: ', text)) == len(skipped)  # each on the page too
    if how == "html-in-every-string":  # strings are valid strings: every section still drawn, the HTML shown as text
        monkeypatch.setattr(edgecnn.report.plots, "png_base64", _no_plots)
        plain = [re.sub(r"<code>.*?</code>", "", h) for h in _h2(text)]  # the titles but for the values in them
        assert plain == [re.sub(r"<code>.*?</code>", "", h) for h in _h2(render_html(valid, run_dir=tmp_path / "run"))]
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in text
    elif how in ("html-in-every-field", "numbers-as-strings", "lists-as-dicts", "dicts-as-lists"):
        assert skipped, "a document of the wrong types must name what it left out"


def test_the_reported_injections_are_escaped_or_skipped(tmp_path, capsys):
    """The finding: a string in ``cam.map_size`` or the search's ``threads`` reached the page unescaped."""
    cam = _cam_section(["cam/0.png"])
    cam["map_size"] = [PAYLOAD, 4]
    text, warnings = _report(_run_folder(tmp_path, {"kind": "explain", "schema": 1, "cam": cam}), capsys)
    assert_inert(text)
    assert len(warnings) == 1 and warnings[0].startswith(
        "edgecnn report: warning: section 'cam' skipped: field 'cam.map_size[0]' must be an integer in [1, 1,048,576], "
        "got '<script>window.__pwned=1</script>")  # fmt: skip
    assert "Not drawn: section &#x27;cam&#x27; skipped" in text and "Where the network looks" not in text
    search = _search_doc([])
    search["latency"]["threads"] = PAYLOAD
    search["estimator"] = PAYLOAD
    run = tmp_path / "s"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(search))
    text, warnings = _report(run, capsys)
    assert_inert(text)
    assert len(warnings) == 1 and "field 'latency.threads' must be an integer in [1, 65,536]" in warnings[0]


def test_a_bad_summary_field_costs_only_that_field(tmp_path, capsys):
    doc = _doc(params="<b>762</b>", top1=math.nan, machine=[1, 2])
    text, warnings = _report(_run_folder(tmp_path, doc), capsys)
    assert_inert(text)
    assert len(warnings) == 3 and any("field 'params' must be an integer" in w for w in warnings)
    assert any("field 'top1' must be a finite number in [0, 1] or null, got nan" in w for w in warnings)
    assert "<td>4,608</td><td>0.050</td><td>10851</td>" in text  # the block table is still drawn
    assert "parameters" not in text and "25,168 per image" in text


def test_a_hostile_kind_is_drawn_as_an_unknown_run(tmp_path, capsys):
    text, warnings = _report(_run_folder(tmp_path, _doc(kind=PAYLOAD)), capsys)
    assert_inert(text)
    assert "<title>edgecnn run report</title>" in text and "field 'kind' must be a plain word" in warnings[0]
    text, warnings = _report(_run_folder(tmp_path / "b", _doc(kind="future")), capsys)
    assert "kind 'future' is not one this edgecnn writes" in warnings[0] and "<h2>Summary</h2>" in text


def test_a_figure_that_cannot_be_drawn_is_a_note(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    blocks = [{**b, "name": "$\\notacommand{$"} for b in BLOCKS]  # matplotlib's mathtext refuses it at draw time
    text, warnings = _report(_run_folder(tmp_path, _doc(blocks=blocks, history=[])), capsys)
    assert_inert(text)
    assert warnings and all("figure not drawn (ValueError" in w for w in warnings)
    assert "<td>4,608</td><td>0.050</td>" in text


def test_overlays_only_from_inside_the_run_folder_and_bounded(tmp_path, capsys):
    run = _run_folder(tmp_path, {})
    (tmp_path / "secret.png").write_bytes((run / "cam" / "0.png").read_bytes())
    (run / "cam" / "link.png").symlink_to(tmp_path / "secret.png")
    (run / "cam" / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (8 * 2**20))
    files = ["cam/0.png", "../secret.png", "/etc/passwd", "cam/link.png", "cam/huge.png", "a\x00b", "x" * 5000]
    (run / "results.json").write_text(json.dumps({"kind": "explain", "schema": 1, "cam": _cam_section(files)}))
    text, warnings = _report(run, capsys)
    assert_inert(text)
    assert text.count("data:image/png;base64,") == 1
    assert len(warnings) == 1 and warnings[0].startswith("edgecnn report: warning: Missing overlay files: ../secret")


# ------------------------------------------------------------------ files that are refused whole


def test_a_document_over_the_size_limit_is_refused_before_it_is_read(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "results.json", "wb") as f:  # 51 MB: over the 50 MB default
        f.write(b'{"kind": "demo", "schema": 1, "pad": "')
        f.write(b"x" * (51 * 2**20))
        f.write(b'"}')
    refused(["report", str(run)], "MB exceed the limit of 50 MB; if that is really meant, raise it with "
                                  "EDGECNN_MAX_RESULTS_MB=N", capsys, run)  # fmt: skip
    assert not (run / "report.html").exists()


def test_the_size_limit_can_be_raised(tmp_path, capsys, monkeypatch):
    run = _run_folder(tmp_path, _doc(pad="x" * (2 * 2**20)))
    monkeypatch.setenv("EDGECNN_MAX_RESULTS_MB", "1")
    refused(["report", str(run)], "exceed the limit of 1 MB", capsys, run)
    monkeypatch.setenv("EDGECNN_MAX_RESULTS_MB", "3")
    assert main(["report", str(run)]) == 0


@pytest.mark.parametrize(("text", "message"), [
    ('{"kind": "demo", "schema": 1, "erf": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "JSON nested 100001 levels deep (at most 64)"),
    ('{"kind": "demo", "schema": 1, "blocks": [', "is not valid JSON"),
    ('{"kind": "demo", "schema": 1, "params": ' + "9" * 5000 + "}", "is not valid JSON (Exceeds the limit"),
    ("[1, 2, 3]", "has no 'kind' field"),
    ('{"kind": ["demo"], "schema": 1}', "has no 'kind' field"),
    ('{"kind": "demo", "schema": "<script>"}', "has schema '<script>', this edgecnn reads up to 1"),
    ('{"kind": "demo", "schema": true}', "has schema True"),
    (b'{"kind": "demo\xff", "schema": 1}', "is not UTF-8 text"),
], ids=["deep", "truncated", "huge-int", "list", "kind-list", "schema-str", "schema-bool", "not-utf8"])  # fmt: skip
def test_documents_that_are_no_results_are_refused_in_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "results.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(["report", str(tmp_path)], message, capsys, tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_deep_nesting_within_the_limit_skips_the_section(tmp_path, capsys):
    deep: Any = 1.0
    for _ in range(60):
        deep = [deep]
    doc = _doc(erf={"map": deep, "centre": [0.0], "radius50": 1.0, "radius95": 2.0})
    text, warnings = _report(_run_folder(tmp_path, doc), capsys)
    assert len(warnings) == 1 and "section 'erf' skipped: field 'erf.map[0][0]' must be a finite number" in warnings[0]


def test_an_unwritable_report_is_found_before_drawing(tmp_path, capsys):
    run = _run_folder(tmp_path, _doc())
    (tmp_path / "file").write_text("x")
    refused(["report", str(run), "--out", str(tmp_path / "file" / "r.html")], "is a file, not a folder", capsys, run)


# ------------------------------------------------------------------ markup cannot be forgotten


def test_html_escapes_every_field_whatever_its_format():
    assert html("<td>{}</td>", "<b>") == "<td>&lt;b&gt;</td>"
    assert html("<td>{:.3f}</td>", "<script>") == "<td>&lt;script&gt;</td>"  # a string where a number belongs
    assert html("<td>{:,}</td>", None) == "<td>–</td>" and html("{:.1f}", 2) == "2.0"
    assert html("<td>{}</td>", Html("<code>x</code>")) == "<td><code>x</code></td>"
    assert html('<img alt="{}">', '" onerror="x') == '<img alt="&quot; onerror=&quot;x">'
    assert Html("<b>") + "<i>" == "<b>&lt;i&gt;" and "<i>" + Html("<b>") == "&lt;i&gt;<b>"
    assert isinstance(Html("<b>") + "x", Html) and Html("").join(["<x>", Html("<y>")]) == "&lt;x&gt;<y>"
    assert esc(3) == "3" and esc(Html("<p>")) == "<p>"


def test_only_the_helpers_make_html_and_sections_return_it():
    """Every ``Html(...)`` in report.py is in a helper or a module constant; every section returns ``Html``."""
    tree = ast.parse(Path(edgecnn.report.__file__).read_text(encoding="utf-8"))
    helpers = {"Html", "Md", "esc", "html", "md_text", "md_code", "md_link", "markdown"}
    functions = [f for f in tree.body if isinstance(f, ast.FunctionDef)] + [
        m for c in tree.body if isinstance(c, ast.ClassDef) and c.name not in helpers for m in c.body]
    checked = 0
    for fn in functions:
        if getattr(fn, "name", None) in helpers:
            continue
        calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call) and getattr(c.func, "id", "") in ("Html", "Md")]
        made = [ast.unparse(c) for c in calls if c.args and not (isinstance(c.args[0], ast.Constant)
                                                                  and c.args[0].value == "")]  # fmt: skip
        assert made == [], f"{getattr(fn, 'name', fn)} makes markup outside the helpers: {made}"
        checked += 1
    assert checked > 20
    for section in edgecnn.report._SECTIONS:
        assert isinstance(section({"kind": "demo"}, edgecnn.report._Page(None)), Html), section.__name__


def _rendered_markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def test_markdown_escapes_html_and_markdown_syntax():
    for v in (PAYLOAD, "<img src=x onerror=alert(1)>", "a | b", "x\n# heading", "[t](javascript:alert(1))"):
        out = _rendered_markdown(markdown("| {} | {} |\n|---|---|\n| {} | x |", v, md_code(v), md_link(v, v)))
        assert "<img" not in out and "<script" not in out and "<svg" not in out and "<h1" not in out
        assert 'href="javascript' not in out and out.count("<td>") == 2  # one row, two cells: no | split it
    assert md_code("conv_c8 gap") == "`conv_c8 gap`" and md_text("99.16%") == "99.16%"
    assert md_text("a<b") == "a\\<b" and isinstance(Md("x") + "<", Md) and Md("x") + "<" == "x\\<"
    assert md_link("a", "cam/0.png") == "[a](cam/0.png)"
    assert md_link("a", "javascript:x()") == "[a](javascript%3Ax%28%29)"


def test_the_demo_markdown_escapes_class_names_and_paths():
    from edgecnn.demo import BlockRow, DemoResult, to_markdown

    evil = "<img src=x onerror=alert(1)>"
    cam = _cam_section(["cam/0.png"])
    cam["images"][0].update(label=evil, predicted="a|b", explained=evil)
    d = DemoResult(arch="conv_c8 gap fc", data=f"/data/{evil}", params=762, macs=25_168, top1=0.8, top5=0.99,
                   train_seconds=5.9, images_per_s=400.0, receptive_field=evil, eager_ms=0.3, onnx_ms=None,
                   blocks=(BlockRow(f"blocks.0 | {evil}", "conv_c8`x", 88, 4_608, 0.05),),
                   machine={"cpu": evil, "threads": 1}, out_dir="/tmp/x", cam=cam,
                   result={"arch": evil, "top1": 0.7, "eager_ms": 0.2, "macs": 10, "params": 5, "bn_folded": 1,
                           "onnx": evil},
                   netadapt={"budget_ms": 0.2, "history": [{"iteration": 1, "block": evil, "latency_ms": 0.2,
                                                            "top1": 0.7}]})  # fmt: skip
    md = to_markdown(d)
    out = _rendered_markdown(md)
    assert "<img" not in out and "onerror=alert(1)&gt;" in out  # shown as text
    rows = re.findall(r"<tr>(.*?)</tr>", out, flags=re.S)
    assert [r.count("<td") for r in rows if "<td" in r] == [6, 4]  # the | in the block name split no cell
    assert "| blocks.0 \\| \\<img" in md and "[0 → 0](cam/0.png)" not in md and "](cam/0.png)" in md


def test_hostile_documents_render_in_the_library_too():
    """``render_html`` itself (the demo's path) never raises on a hostile document; notes are returned."""
    for how in MUTATIONS:
        notes: list[str] = []
        text = render_html(mutate(_doc(cam=_cam_section(["cam/0.png"])), how), notes=notes)
        assert_inert(text)
    assert copy.deepcopy(_doc())["blocks"] == BLOCKS
