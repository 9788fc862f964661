"""Every figure edgecnn draws (docs/design.md §7), each a ``matplotlib.figure.Figure`` built without pyplot.

No global state and no display: save with ``fig.savefig(path)`` or inline with
:func:`png_base64`. matplotlib is optional (``pip install 'edgecnn[plot]'``);
without it every function raises ``ImportError`` naming the extra, which the
report turns into a note.

* analysis: :func:`plot_erf` (effective receptive field, Luo et al. 2016),
  :func:`plot_gradient_flow` (with and without skips, He et al. 2016),
  :func:`plot_rf_growth` (receptive field and jump along the conv path);
* cost: :func:`plot_block_costs` (MACs next to measured latency per block) and
  :func:`plot_us_per_mmac` (time per multiply-add: why latency is measured,
  Howard et al. 2019 §4, Tan et al. 2019 §1);
* runs: :func:`plot_training`, :func:`plot_pareto` (accuracy vs latency with
  reference points), :func:`plot_netadapt_history` (Yang et al. 2018, Alg. 1),
  :func:`plot_search_front` (Tan et al. 2019's accuracy–latency front) and
  :func:`plot_search_run` (a whole ``edgecnn search`` document: candidates,
  front, measured finalists, the trained choice and the zoo's reference networks).

The run plots take plain lists of dicts — the rows of a results document
(docs/report.md lists their fields) — so they draw any run, old or new,
without importing the code that made it.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgecnn.analysis.erf import ERF
from edgecnn.analysis.gradflow import GradFlow
from edgecnn.analysis.receptive import RF

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Row = Mapping[str, Any]

__all__ = ["pareto_front", "plot_block_costs", "plot_erf", "plot_gradient_flow", "plot_netadapt_history",
           "plot_pareto", "plot_rf_growth", "plot_search_front", "plot_search_run", "plot_training", "plot_us_per_mmac",
           "png_base64"]  # fmt: skip


def _figure(**kwargs: object) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'edgecnn[plot]'") from None
    return Figure(**kwargs)  # type: ignore[arg-type]


def png_base64(fig: Figure, *, dpi: int = 100) -> str:
    """The figure as a base64 PNG, rendered on an Agg canvas (no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # binds the canvas to the figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_erf(erf: ERF | Row, *, title: str = "effective receptive field") -> Figure:
    """The ERF map (2D) or profile (1D), with circles at the 50% and 95% mass radii.

    ``erf`` is an :class:`~edgecnn.analysis.erf.ERF` or the ``erf`` section of a results document
    (``map``, ``centre``, ``radius50``, ``radius95``; :mod:`edgecnn.analysis.dynamics`).
    """
    import numpy as np

    if isinstance(erf, ERF):
        data, centre = erf.map.detach().cpu().numpy(), erf.centre
        radii = {0.5: erf.radius(0.5), 0.95: erf.radius(0.95)}
    else:
        data, centre = np.asarray(erf["map"], dtype=float), tuple(erf["centre"])
        radii = {0.5: float(erf["radius50"]), 0.95: float(erf["radius95"])}
    fig = _figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    if data.ndim == 1:
        ax.plot(data)
        for (share, r), style in zip(radii.items(), ("--", ":")):
            ax.axvspan(centre[0] - r, centre[0] + r, alpha=0.1, ls=style, label=f"{share:.0%}: r = {r:.1f}")
    elif data.ndim == 2:
        im = ax.imshow(data, cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.046)
        from matplotlib.patches import Circle

        for (share, r), style in zip(radii.items(), ("--", ":")):
            ax.add_patch(Circle((centre[1], centre[0]), r, fill=False, ls=style, ec="white",
                                label=f"{share:.0%} of mass: r = {r:.1f}"))  # fmt: skip
    else:
        raise ValueError(f"can only draw 1D or 2D maps, got {data.ndim}D")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()  # room for the colour bar's tick labels
    return fig


def _grad_norms(flow: GradFlow | Row, weights: bool) -> list[float]:
    """Per-layer norms of a :class:`GradFlow` or of its plain form (``{"layers": [{output_grad_norm, ...}]}``)."""
    key = "weight_grad_norm" if weights else "output_grad_norm"
    rows = [vars(l) for l in flow.layers] if isinstance(flow, GradFlow) else list(flow["layers"])
    return [_nan(r.get(key)) for r in rows]


def plot_gradient_flow(flows: Mapping[str, GradFlow | Row], *, weights: bool = False) -> Figure:
    """Per-layer gradient norms (log scale), one curve per run: e.g. ``{"skip": f1, "no skip": f2}``.

    Each run is a :class:`GradFlow` or its plain form from a results document (the ``gradflow`` section's ``runs``).
    """
    if not flows:
        raise ValueError("give at least one GradFlow to plot")
    fig = _figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for label, flow in flows.items():
        values = _grad_norms(flow, weights)
        ax.plot(range(len(values)), values, marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer (input side first)")
    ax.set_ylabel("‖∂L/∂W‖" if weights else "‖∂L/∂output‖")
    ax.set_title("gradient flow")
    ax.legend()
    return fig


def plot_rf_growth(fields: Mapping[str, RF] | Sequence[tuple[str, RF]], *, input_size: int | None = None) -> Figure:
    """Receptive field size and jump per layer (first axis), log scale; whole-input layers are shaded, layers
    whose output also depends on global context (the ``+global`` flag) circled."""
    items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    if not items:
        raise ValueError("no receptive fields to plot")
    fig = _figure(figsize=(7, 4))
    ax = fig.add_subplot()
    xs = range(len(items))
    ax.plot(xs, [float(rf.size[0]) for _, rf in items], marker="o", label="field R")
    ax.plot(xs, [float(rf.jump[0]) for _, rf in items], marker=".", label="jump J")
    gated = [i for i, (_, rf) in enumerate(items) if rf.global_context and not rf.whole]
    if gated:  # the conv-path field, and global context (SE gates, attention) reaches these outputs too
        ax.scatter(gated, [float(items[i][1].size[0]) for i in gated], s=90, facecolors="none", edgecolors="C3",
                   label="+ global context", zorder=3)  # fmt: skip
    whole = [i for i, (_, rf) in enumerate(items) if rf.whole]
    if whole:
        ax.axvspan(whole[0] - 0.5, len(items) - 0.5, alpha=0.15, label="whole input")
    if input_size:
        ax.axhline(input_size, ls="--", c="grey", label="input size")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), [name for name, _ in items], rotation=90, fontsize="x-small")
    ax.set_ylabel("input pixels")
    ax.set_title("receptive-field growth")
    ax.legend()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ cost per block


def plot_block_costs(names: Sequence[str], macs: Sequence[float], ms: Sequence[float]) -> Figure:
    """MACs (left axis) and measured latency (right axis) per block, side by side."""
    if not (len(names) == len(macs) == len(ms)) or not names:
        raise ValueError(f"need one name, MAC count and latency per block, got {len(names)}/{len(macs)}/{len(ms)}")
    fig = _figure(figsize=(9, 3.8))
    ax = fig.add_subplot()
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [m / 1e6 for m in macs], width=0.4, color="tab:blue", label="MACs")
    ax.set_ylabel("M MACs", color="tab:blue")
    right = ax.twinx()
    right.bar([x + 0.2 for x in xs], list(ms), width=0.4, color="tab:orange", label="latency")
    right.set_ylabel("ms (eager, block alone)", color="tab:orange")
    ax.set_xticks(list(xs), list(names), fontsize="small")
    ax.set_xlabel("block")
    ax.set_title("multiply-adds vs measured latency per block")
    fig.legend(loc="upper right", bbox_to_anchor=(0.9, 0.88))
    fig.tight_layout()
    return fig


def plot_us_per_mmac(names: Sequence[str], macs: Sequence[float], ms: Sequence[float], *,
                     total_ms: float | None = None, total_macs: float | None = None) -> Figure:  # fmt: skip
    """Microseconds per million MACs per block (log scale); the whole network's figure as a dashed line."""
    if not (len(names) == len(macs) == len(ms)) or not names:
        raise ValueError(f"need one name, MAC count and latency per block, got {len(names)}/{len(macs)}/{len(ms)}")
    fig = _figure(figsize=(9, 3.5))
    ax = fig.add_subplot()
    xs = range(len(names))
    ax.bar(list(xs), [t * 1e3 / (m / 1e6) if m else math.nan for t, m in zip(ms, macs)], color="tab:purple")
    if total_ms is not None and total_macs:
        ax.axhline(total_ms * 1e3 / (total_macs / 1e6), ls="--", c="grey", label="whole network")
        ax.legend()
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    ax.yaxis.set_major_formatter(ScalarFormatter())  # plain 300, 1000 rather than 3×10²
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xticks(list(xs), list(names), fontsize="small")
    ax.set_xlabel("block")
    ax.set_ylabel("µs per million MACs")
    ax.set_title("time per multiply-add (higher = the block is slower than its MACs suggest)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ runs


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def plot_training(history: Sequence[Row]) -> Figure:
    """Training loss (left axis) and test top-1 (right axis) per epoch (rows: ``epoch``, ``train_loss``, ``test_top1``)."""
    if not history:
        raise ValueError("no training history to plot")
    fig = _figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    epochs = [e["epoch"] for e in history]
    ax.plot(epochs, [_nan(e.get("train_loss")) for e in history], marker="o", c="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    acc = ax.twinx()
    acc.plot(epochs, [100 * _nan(e.get("test_top1")) for e in history], marker="s", c="tab:green", label="test top-1")
    acc.set_ylabel("test top-1 (%)", color="tab:green")
    ax.set_title("training curve")
    fig.legend(loc="center right", bbox_to_anchor=(0.85, 0.5))
    fig.tight_layout()
    return fig


def pareto_front(points: Sequence[Row]) -> list[int]:
    """Indices of the points that no other point beats on ``latency_ms`` (lower) and ``top1`` (higher), by latency.

    A point is on the front when every faster-or-equal point is less accurate; of identical points the first counts.
    """
    order = sorted(range(len(points)), key=lambda i: (float(points[i]["latency_ms"]), -float(points[i]["top1"])))
    front: list[int] = []
    for i in order:
        if not front or float(points[i]["top1"]) > float(points[front[-1]]["top1"]):
            front.append(i)
    return front


def _scatter_front(ax: Any, points: Sequence[Row], reference: Sequence[Row], *, colour_by: str | None) -> None:
    xs = [float(p["latency_ms"]) for p in points]
    ys = [100 * float(p["top1"]) for p in points]
    if colour_by and points and all(colour_by in p for p in points):
        sc = ax.scatter(xs, ys, c=[p[colour_by] for p in points], cmap="viridis", s=18, label="candidates")
        ax.figure.colorbar(sc, ax=ax, label=colour_by)
    elif points:
        ax.scatter(xs, ys, s=18, c="tab:blue", alpha=0.6, label="candidates")
    front = pareto_front(points)
    if front:
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "-o", c="tab:red", ms=5, label="Pareto front")
    for r in reference:
        x, y = float(r["latency_ms"]), 100 * float(r["top1"])
        ax.scatter([x], [y], marker="*", s=120, c="black", zorder=3)
        ax.annotate(str(r.get("name", "")), (x, y), textcoords="offset points", xytext=(5, 4), fontsize="small")
    if reference:
        ax.scatter([], [], marker="*", s=120, c="black", label="reference (zoo)")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.legend(loc="lower right", fontsize="small")


def plot_pareto(points: Sequence[Row], *, reference: Sequence[Row] = (),
                title: str = "accuracy vs measured latency") -> Figure:  # fmt: skip
    """Points (``name``, ``latency_ms``, ``top1``) with their Pareto front, and reference networks as stars."""
    if not points and not reference:
        raise ValueError("no points to plot")
    fig = _figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    _scatter_front(ax, points, reference, colour_by=None)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_netadapt_history(history: Sequence[Row], *, budget_ms: float | None = None) -> Figure:
    """NetAdapt's iterations: measured latency (left) and top-1 after the short fine-tune (right), with the budget.

    Rows have ``iteration`` (0 = the baseline), ``latency_ms`` and ``top1``, optionally ``block`` (what was pruned).
    """
    if not history:
        raise ValueError("no NetAdapt iterations to plot")
    fig = _figure(figsize=(8, 3.8))
    ax = fig.add_subplot()
    its = [int(h["iteration"]) for h in history]
    ax.plot(its, [float(h["latency_ms"]) for h in history], marker="o", c="tab:orange", label="latency")
    if budget_ms is not None:
        ax.axhline(budget_ms, ls="--", c="tab:orange", alpha=0.6, label="budget")
    ax.set_xlabel("iteration")
    ax.set_ylabel("measured latency (ms)", color="tab:orange")
    acc = ax.twinx()
    acc.plot(its, [100 * _nan(h.get("top1")) for h in history], marker="s", c="tab:green", label="top-1")
    acc.set_ylabel("top-1 after short fine-tune (%)", color="tab:green")
    for it, h in zip(its, history):
        if h.get("block"):
            ax.annotate(str(h["block"]), (it, float(h["latency_ms"])), textcoords="offset points", xytext=(0, 6),
                        fontsize="x-small", ha="center", rotation=45)  # fmt: skip
    ax.set_title("NetAdapt: one block narrowed per iteration")
    fig.legend(loc="upper right", bbox_to_anchor=(0.88, 0.88))
    fig.tight_layout()
    return fig


def plot_search_front(candidates: Sequence[Row], *, reference: Sequence[Row] = ()) -> Figure:
    """Every evaluated search candidate (``latency_ms``, ``top1``, optionally ``generation``) and their front."""
    if not candidates:
        raise ValueError("no search candidates to plot")
    fig = _figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    _scatter_front(ax, candidates, reference, colour_by="generation")
    ax.set_title("architecture search: candidates and their accuracy–latency front")
    fig.tight_layout()
    return fig


def _ref_top1(ref: Row) -> float | None:
    v = ref.get("top1", ref.get("acc"))  # "acc" in documents written before the references were trained
    return None if v is None else float(v)


def plot_search_run(doc: Row) -> Figure:
    """The plot of a search's results document (``kind: "search"``, docs/search.md).

    Every candidate at its table latency and estimated accuracy, their Pareto
    front, the finalists at their measured latency, the chosen network after
    its final training (test top-1), and each zoo reference network labelled:
    a star at its measured latency and test top-1 after the same training, or
    a dotted line at its measured latency when it was not trained.
    """
    if doc.get("kind") != "search":
        raise ValueError(f"not a search results document (kind {doc.get('kind')!r})")
    fig = _figure(figsize=(7.5, 5))
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
    final = doc.get("final")
    if final and final.get("measured_ms"):
        ax.scatter([final["measured_ms"]], [100 * final["top1"]], marker="*", s=140, c="#ff7f0e", zorder=4,
                   label="chosen network, trained (test top-1)")  # fmt: skip
    refs = doc.get("references") or []
    trained = [r for r in refs if _ref_top1(r) is not None]
    families: dict[str, list[Row]] = {}
    for r in trained:
        families.setdefault(str(r["label"]).partition("@")[0], []).append(r)
    for i, (family, members) in enumerate(families.items()):
        members = sorted(members, key=lambda r: float(r["measured_ms"]))
        xs = [float(r["measured_ms"]) for r in members]
        ys = [100 * float(r.get("top1", r.get("acc"))) for r in members]  # trained: top1 is set
        ax.plot(xs, ys, ":", marker="*", ms=11, c=f"C{2 + i}", zorder=3,
                label=f"{family} (zoo, same training)")  # fmt: skip
        for r, x, y in zip(members, xs, ys):
            ax.annotate(str(r["label"]).replace(f"{family}@", "×"), (x, y), textcoords="offset points",
                        xytext=(5, -10), fontsize=7)  # fmt: skip
    for r in refs:
        if _ref_top1(r) is None:
            lat = r.get("measured_ms") or r.get("table_ms")
            ax.axvline(lat, ls=":", lw=1, c="#2ca02c")
            ax.annotate(f"{r['label']} (untrained)", (lat, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=7, va="bottom", ha="right")  # fmt: skip
    ax.set_xlabel(f"latency (ms, {doc['latency']['backend']}, {doc['latency']['threads']} thread(s))")
    ax.set_ylabel("top-1 (%): candidates validation estimate; trained: test")
    ax.set_title(f"search on {doc['space']['name']}: {doc['objective']['formula']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
