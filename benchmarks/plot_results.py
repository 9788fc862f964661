"""Figures of the long benchmarks' committed results, for docs/search.md and docs/compress.md.

Accuracy against measured latency is what both benchmarks compare, and a table of shares and top-1s hides the
geometry a reader wants (which point lies above which line, how far each is from the budget). So:

- :func:`search_seeds_figure` — ``benchmarks/search_seeds.py``: per seed, the MobileNetV3-Small bracket's line
  (the two widths whose measured latencies enclose the search's choice, trained with the same recipe and seed)
  and the networks chosen by evolution, by random search (and by any further evolution variant, e.g. ``+novel``),
  each at its share of the target network's latency measured in the closing sitting (Howard et al. 2019 compare
  MobileNetV3 with the width-scaled family the same way: accuracy at equal measured latency).
- :func:`netadapt_figure` — ``benchmarks/netadapt_cifar.py``: every finished network (NetAdapt, Torch-Pruning,
  aligned Torch-Pruning, uniform width; one point per seed) at its measured share of the baseline's latency, with
  the budgets as vertical lines (Yang et al. 2018, NetAdapt: accuracy against measured latency on the target).

The figures are drawn from the results documents only (the report's rule: a plain results document in, a
figure out); ``python benchmarks/plot_results.py`` redraws every figure of the committed results into
``docs/img/``. Needs matplotlib (``pip install 'edgecnn[plot]'``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgecnn.plots import _figure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img"

Doc = Mapping[str, Any]
METHOD_STYLE = {  # netadapt_cifar's stage prefixes: label, marker, colour
    "na": ("NetAdapt", "o", "tab:blue"),
    "na8": ("NetAdapt, aligned", "D", "tab:cyan"),
    "tp": ("Torch-Pruning", "s", "tab:red"),
    "tp8": ("Torch-Pruning, aligned", "P", "tab:orange"),
    "uni": ("uniform width", "^", "tab:green"),
}
STAGE = re.compile(r"^(?P<method>[a-z0-9]+)-(?P<pct>\d+)-s(?P<seed>\d+)$")


def search_seeds_points(doc: Doc, *, extra: Mapping[str, Doc] | None = None) -> list[dict[str, Any]]:
    """Every plotted point of a ``search_seeds`` document: ``seed``, ``what`` (``evolution``, ``random``, a key of
    ``extra`` for its evolution, ``x<width>`` for a bracket width), ``share`` of the target network's latency (the
    closing sitting's) and ``top1`` in %. ``extra`` runs must share ``doc``'s seeds (a run such as ``+novel``
    that reuses its random searches and brackets)."""
    points: list[dict[str, Any]] = []
    for row in doc["rows"]:
        line = row["bracket_line"]
        for width, share, top1 in zip(line["widths"], line["remeasured_share"], line["top1"], strict=True):
            points.append({"seed": row["seed"], "what": f"x{width:g}", "share": share, "top1": 100 * top1})
        for what in ("evolution", "random"):
            points.append({"seed": row["seed"], "what": what, "share": row[what]["remeasured_share"],
                           "top1": 100 * row[what]["top1"]})  # fmt: skip
    for label, other in (extra or {}).items():
        seeds = {r["seed"]: r for r in other["rows"]}
        if set(seeds) != {r["seed"] for r in doc["rows"]}:
            raise ValueError(f"{label}: seeds {sorted(seeds)} differ from the main run's; plot runs of the same seeds")
        for seed, row in sorted(seeds.items()):
            points.append({"seed": seed, "what": label, "share": row["evolution"]["remeasured_share"],
                           "top1": 100 * row["evolution"]["top1"]})  # fmt: skip
    return points


def search_seeds_figure(doc: Doc, *, extra: Mapping[str, Doc] | None = None, title: str | None = None) -> Any:
    """Top-1 against the share of the target network's latency, one colour per seed (see the module doc)."""
    points = search_seeds_points(doc, extra=extra)
    fig = _figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    markers = {"evolution": "o", "random": "^"} | {label: "s" for label in (extra or {})}
    seeds = sorted({p["seed"] for p in points})
    for i, seed in enumerate(seeds):
        colour = f"C{i}"
        mine = [p for p in points if p["seed"] == seed]
        bracket = sorted((p for p in mine if p["what"].startswith("x")), key=lambda p: p["share"])
        ax.plot([p["share"] for p in bracket], [p["top1"] for p in bracket], "--", color=colour, marker="x",
                label=f"seed {seed}: MobileNetV3-Small " + " / ".join(p["what"][1:] for p in bracket))  # fmt: skip
        for p in mine:
            if not p["what"].startswith("x"):
                ax.scatter(p["share"], p["top1"], marker=markers[p["what"]], color=colour, s=55, zorder=3,
                           edgecolors="black", linewidths=0.6)  # fmt: skip
    for what, marker in markers.items():  # one legend entry per method, in black
        ax.scatter([], [], marker=marker, color="white", edgecolors="black", label=what)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("measured latency, share of the target network's (MobileNetV3-Small x0.75)")
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_title(title or f"search vs the MobileNetV3-Small bracket, {len(seeds)} seeds\n({doc.get('estimator', '')})",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def netadapt_points(doc: Doc) -> list[dict[str, Any]]:
    """Every finished network of a ``netadapt_cifar`` document with a closing measurement: ``method``, ``pct``
    (the budget), ``seed``, ``share`` of the baseline's latency (back to back on the target) and ``top1`` in %."""
    rows = doc.get("rows")
    if not rows:
        raise ValueError("the document has no measured rows yet (its closing measurement has not run); "
                         "plot a file whose 'rows' are filled, e.g. a --measure-here one")  # fmt: skip
    points = []
    for name, row in rows.items():
        m = STAGE.match(name)
        if m is None or m["method"] not in METHOD_STYLE:
            continue  # the baseline, and any row this figure does not know
        points.append({"method": m["method"], "pct": int(m["pct"]), "seed": int(m["seed"]), "share": row["ratio"],
                       "top1": 100 * row["top1"]})  # fmt: skip
    return sorted(points, key=lambda p: (p["pct"], p["method"], p["seed"]))


def netadapt_figure(doc: Doc, *, title: str | None = None) -> Any:
    """Top-1 against the measured share of the baseline's latency, every method and seed, the budgets as lines."""
    points = netadapt_points(doc)
    fig = _figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    for method, (label, marker, colour) in METHOD_STYLE.items():
        mine = [p for p in points if p["method"] == method]
        if mine:
            ax.scatter([p["share"] for p in mine], [p["top1"] for p in mine], marker=marker, color=colour, s=55,
                       edgecolors="black", linewidths=0.6, label=label, zorder=3)  # fmt: skip
    for pct in sorted({p["pct"] for p in points}):
        ax.axvline(pct / 100, color="grey", lw=0.8, ls=":")
        ax.text(pct / 100, ax.get_ylim()[1], f" {pct}% budget", fontsize=7, va="top", color="grey")
    base = doc["rows"].get("baseline", {}).get("top1")
    if base is not None:
        ax.axhline(100 * base, color="black", lw=0.8, ls="--", label=f"baseline {100 * base:.2f}%")
    ax.set_xlabel(f"measured latency, share of the baseline's ({doc.get('target', '')}, back to back)")
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_title(title or f"NetAdapt vs Torch-Pruning vs uniform width ({doc.get('scale', '')})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# (image, results file, extra runs as (label, file), title or None for the default)
FIGURES: Sequence[tuple[str, str, Sequence[tuple[str, str]], str | None]] = (
    ("search_seeds-vnni4.png", "search_seeds-full-proxy-naswot+rerank8-speed+correct2-vnni4.json",
     (("evolution-novel", "search_seeds-full-proxy-naswot+rerank8-speed+correct2+novel-vnni4.json"),),
     "searched network vs MobileNetV3-Small at equal measured latency, 3 seeds\n"
     "(NASWOT + training-speed re-rank; ONNX Runtime, 1 thread, AVX-512/VNNI EPYC)"),
    ("netadapt_cifar-full-on-vnni.png", "netadapt_cifar-full-onnxruntime-on-vnni.json", (),
     "from ResNet-20 (87.84%): NetAdapt vs Torch-Pruning vs uniform width\n"
     "(chosen on the AVX2 EPYC, measured on the AVX-512/VNNI EPYC; ONNX Runtime, 1 thread)"),
)


def draw(image: str, results: str, extra: Sequence[tuple[str, str]] = (), title: str | None = None, *,
         out: Path = IMG) -> Path:  # fmt: skip
    """One figure of :data:`FIGURES` from the committed results into ``out``."""
    doc = json.loads((RESULTS / results).read_text())
    if doc.get("benchmark") == "search_seeds":
        fig = search_seeds_figure(doc, extra={k: json.loads((RESULTS / f).read_text()) for k, f in extra},
                                  title=title)  # fmt: skip
    else:
        fig = netadapt_figure(doc, title=title)
    out.mkdir(parents=True, exist_ok=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(out / image, dpi=110)
    return out / image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(IMG), help="folder of the images (default docs/img)")
    a = p.parse_args()
    for image, results, extra, title in FIGURES:
        print(draw(image, results, extra, title, out=Path(a.out)))


if __name__ == "__main__":
    main()
