"""The accuracy-against-latency plot of a search (docs/design.md §7), written next to its results document as ``pareto.png``.

Drawn from the plain results document (``kind: "search"``) by
:func:`edgecnn.plots.plot_search_run` — the same figure the HTML
report inlines — so a finished run can be re-plotted without re-running it.
matplotlib is optional (the ``[plot]`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecnn.atomic import atomic_write
from edgecnn import plots


def plot_search(doc: dict[str, Any], path: str | Path) -> Path | None:
    """Write the plot of ``doc`` to ``path`` (PNG); None when matplotlib is not installed."""
    if doc.get("kind") != "search":
        raise ValueError(f"not a search results document (kind {doc.get('kind')!r})")
    try:
        fig = plots.plot_search_run(doc)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        return None
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
