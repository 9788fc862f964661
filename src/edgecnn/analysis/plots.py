"""Figures for the receptive-field and gradient analyses (SPEC §7): ERF maps, gradient-flow curves, RF growth.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (no
global state, no display needed); save it with ``fig.savefig(path)``.
matplotlib is optional (``pip install edgecnn[plot]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from edgecnn.analysis.erf import ERF
from edgecnn.analysis.gradflow import GradFlow
from edgecnn.analysis.receptive import RF

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(**kwargs: object) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'edgecnn[plot]'") from None
    return Figure(**kwargs)  # type: ignore[arg-type]


def plot_erf(erf: ERF, *, title: str = "effective receptive field") -> Figure:
    """The ERF map (2D) or profile (1D), with circles at the 50% and 95% mass radii."""
    fig = _figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    data = erf.map.detach().cpu().numpy()
    if data.ndim == 1:
        ax.plot(data)
        for share, style in ((0.5, "--"), (0.95, ":")):
            r = erf.radius(share)
            ax.axvspan(erf.centre[0] - r, erf.centre[0] + r, alpha=0.1, ls=style, label=f"{share:.0%}: r = {r:.1f}")
    elif data.ndim == 2:
        im = ax.imshow(data, cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.046)
        from matplotlib.patches import Circle

        for share, style in ((0.5, "--"), (0.95, ":")):
            r = erf.radius(share)
            ax.add_patch(Circle((erf.centre[1], erf.centre[0]), r, fill=False, ls=style, ec="white",
                                label=f"{share:.0%} of mass: r = {r:.1f}"))  # fmt: skip
    else:
        raise ValueError(f"can only draw 1D or 2D maps, got {data.ndim}D")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return fig


def plot_gradient_flow(flows: Mapping[str, GradFlow], *, weights: bool = False) -> Figure:
    """Per-layer gradient norms (log scale), one curve per run: e.g. ``{"skip": f1, "no skip": f2}``."""
    if not flows:
        raise ValueError("give at least one GradFlow to plot")
    fig = _figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for label, flow in flows.items():
        values = [l.weight_grad_norm if weights else l.output_grad_norm for l in flow.layers]
        ax.plot(range(len(values)), [v if v is not None else float("nan") for v in values], marker="o", label=label)
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
