"""The accuracy-against-latency plot of a search (SPEC §7): every candidate, the Pareto front, the zoo's references.

Read from the plain results document (``kind: "search"``), so a finished run
can be re-plotted without re-running it. matplotlib is optional (the
``[plot]`` extra); drawn on its Agg canvas, without pyplot's global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write


def plot_search(doc: dict[str, Any], path: str | Path) -> Path | None:
    """Write the plot of ``doc`` to ``path`` (PNG); None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    if doc.get("kind") != "search":
        raise ValueError(f"not a search results document (kind {doc.get('kind')!r})")
    fig = Figure(figsize=(7.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    hist = doc["history"]
    ax.scatter([c["lat_ms"] for c in hist], [100 * c["acc"] for c in hist], s=10, c="#bbbbbb",
               label=f"candidates ({doc['search']['algorithm']}, table latency)")  # fmt: skip
    front = [hist[i] for i in doc["front"]]
    ax.plot([c["lat_ms"] for c in front], [100 * c["acc"] for c in front], "o-", c="#1f77b4", ms=4,
            drawstyle="steps-post", label="Pareto front")  # fmt: skip
    fin = doc.get("finalists") or []
    if fin:
        ax.scatter([f["measured_ms"] for f in fin], [100 * f["acc"] for f in fin], marker="D", c="#d62728", s=30,
                   label="finalists, measured latency", zorder=3)  # fmt: skip
    target = doc["objective"]["target_ms"]
    ax.axvline(target, ls="--", c="k", lw=1, label=f"target {target:g} ms")
    for ref in doc.get("references") or []:
        lat = ref.get("measured_ms") or ref.get("table_ms")
        if ref.get("acc") is not None:
            ax.scatter([lat], [100 * ref["acc"]], marker="s", s=36, zorder=3, label=f"{ref['label']} ({ref['what']})")
        else:
            ax.axvline(lat, ls=":", lw=1, c="#2ca02c")
            ax.annotate(ref["label"], (lat, ax.get_ylim()[0]), rotation=90, fontsize=7, va="bottom", ha="right")
    final = doc.get("final")
    if final and final.get("measured_ms"):
        ax.scatter([final["measured_ms"]], [100 * final["top1"]], marker="*", s=120, c="#ff7f0e", zorder=4,
                   label="chosen network, trained (test top-1)")  # fmt: skip
    ax.set_xlabel(f"latency (ms, {doc['latency']['backend']}, {doc['latency']['threads']} thread(s))")
    ax.set_ylabel("top-1 (%) — candidates: validation estimate")
    ax.set_title(f"search on {doc['space']['name']}: {doc['objective']['formula']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
