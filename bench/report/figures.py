"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot state, no display) to PNG bytes.

Inputs are plain numbers already read from the store; nothing here computes a metric.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")


def text(s: str) -> str:
    """Data strings go into figures verbatim: '$' would otherwise start matplotlib mathtext."""
    return str(s).replace("$", r"\$")


def color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


# A quality axis goes logarithmic when its positive values span at least this ratio: on a linear axis
# one slow method's start (MSE 0.3) squashes every other curve (0.001-0.03) into the bottom tenth.
LOG_SPAN = 10.0


def log_if_spread(ax, values: Sequence[float], axis: str = "y") -> bool:
    """Put ``axis`` on a log scale when ``values`` are all > 0 and span a decade or more; say so."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or min(finite) <= 0 or max(finite) / min(finite) < LOG_SPAN:
        return False
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    return True


def legend_outside(fig: Figure, axes: Sequence) -> None:
    """One legend for the whole figure, right of the panels, so that no curve is hidden under it (the
    same methods and colours are in every panel)."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, frameon=False)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


@dataclass
class Point:
    label: str
    x: float
    y: float


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both axes (lower x and lower y are better), sorted by x."""
    front = []
    for p in points:
        dominated = any((q.x <= p.x and q.y <= p.y) and (q.x < p.x or q.y < p.y) for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p.x, p.y))


def runtime_quality(panels: Sequence[tuple[str, Sequence[Point]]], colors: dict[str, str]) -> bytes:
    """One panel per quality metric (lower is better): seconds per image (log) against the metric.

    Filled markers and the dashed line are the Pareto front: no method is both faster and better.
    """
    fig = Figure(figsize=(5.2 * len(panels), 4.0), layout="constrained")
    for k, (ylabel, points) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        front = pareto_front(points)
        on_front = {id(p) for p in front}
        for p in points:
            c = colors.get(p.label, "#333333")
            ax.scatter([p.x], [p.y], s=60, color=c, edgecolors=c,
                       facecolors=c if id(p) in on_front else "white", linewidths=1.8, zorder=3)
            ax.annotate(text(p.label), (p.x, p.y), textcoords="offset points", xytext=(6, 5), fontsize=8)
        if len(front) > 1:
            ax.plot([p.x for p in front], [p.y for p in front], ls="--", color="#888888", lw=1, zorder=2)
        ax.set_xscale("log")
        xs = [p.x for p in points]
        if xs:
            ax.set_xlim(min(xs) / 3, max(xs) * 6)
        ax.set_xlabel("seconds per image (log scale)")
        log = log_if_spread(ax, [p.y for p in points])
        ax.set_ylabel(text(ylabel) + (" (log scale)" if log else "") + " (lower is better)")
        ax.grid(True, which="major", alpha=0.3)
    return _png(fig)


@dataclass
class Curve:
    label: str
    precision: Sequence[float]
    recall: Sequence[float]
    ap: float | None


def pr_curves(panels: Sequence[tuple[str, Sequence[Curve]]], colors: dict[str, str]) -> bytes:
    """Paper Fig. 3: one panel per attribute, one precision-recall line per method (see pr_figure)."""
    return _png(pr_figure(panels, colors))


def pr_figure(panels: Sequence[tuple[str, Sequence[Curve]]], colors: dict[str, str]) -> Figure:
    """The panels of ``pr_curves``; the methods' legend sits outside them, the APs in the report's table."""
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.8 * ncols + 2.0, 3.4 * nrows), layout="constrained")
    axes = []
    for k, (attr, curves) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        axes.append(ax)
        for c in curves:
            ax.plot(c.recall, c.precision, lw=1.6, color=colors.get(c.label, "#333333"), label=text(c.label))
        ax.set_title(text(attr))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(True, alpha=0.3)
    legend_outside(fig, axes)
    return fig


@dataclass
class SweepSeries:
    label: str                                  # the method
    values: Sequence[str]                       # the swept value of each point, as text
    points: dict[tuple[str, str], Sequence[tuple[float | None, float | None]]]  # (x metric, y metric) -> xy


def sweep_tradeoff(param: str, xs: Sequence[tuple[str, str]], ys: Sequence[tuple[str, str]],
                   series: Sequence[SweepSeries], colors: dict[str, str]) -> bytes:
    """Paper Fig. 9: reconstruction error (x, lower is better) against editability (y, higher is better),
    one point per swept value, annotated with the value and joined in value order."""
    fig = Figure(figsize=(4.6 * len(xs), 3.8 * len(ys)), layout="constrained")
    for i, (ymetric, ylabel) in enumerate(ys):
        for j, (xmetric, xlabel) in enumerate(xs):
            ax = fig.add_subplot(len(ys), len(xs), i * len(xs) + j + 1)
            for s in series:
                pts = [(v, xy) for v, xy in zip(s.values, s.points[(xmetric, ymetric)])
                       if xy[0] is not None and xy[1] is not None]
                if not pts:
                    continue
                c = colors.get(s.label, "#333333")
                ax.plot([xy[0] for _, xy in pts], [xy[1] for _, xy in pts], "-o", color=c, lw=1.4, ms=6,
                        label=text(s.label))
                for v, (x, y) in pts:
                    ax.annotate(f"{text(param)}={text(v)}", (x, y), textcoords="offset points", xytext=(5, 5),
                                fontsize=8)
            ax.margins(x=0.18, y=0.1)  # room for the value labels
            ax.set_xlabel(text(xlabel) + " (lower is better)")
            ax.set_ylabel(text(ylabel) + " (higher is better)")
            ax.grid(True, alpha=0.3)
    if len(series) > 1:
        legend_outside(fig, fig.axes)
    return _png(fig)


def quality_vs_time(panels: Sequence[tuple[str, str, Sequence[tuple[str, Sequence[float], Sequence[float],
                                                                     Sequence[int]]]]],
                    colors: dict[str, str]) -> bytes:
    """Quality against time: one panel per metric, the metric against seconds per image (log scale), one
    line per method through its milestones (steps annotated at the ends), an encoder as a single point."""
    return _png(quality_time_figure(panels, colors))


def quality_time_figure(panels, colors: dict[str, str]) -> Figure:
    """The panels of ``quality_vs_time``: a metric spanning a decade or more gets a log axis; the
    methods' legend sits outside the panels."""
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.0 * ncols + 2.0, 3.9 * nrows), layout="constrained")
    axes = []
    for k, (ylabel, direction, series) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        axes.append(ax)
        for label, xs, ys, steps in series:
            c = colors.get(label, "#333333")
            if len(xs) == 1:
                ax.scatter(xs, ys, s=70, marker="D", color=c, label=text(label), zorder=3)
                continue
            ax.plot(xs, ys, "-o", ms=4, lw=1.5, color=c, label=text(label))
            for i in (0, len(xs) - 1):
                ax.annotate(f"{steps[i]}", (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=c)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (log scale)")
        log = log_if_spread(ax, [y for _, _, ys, _ in series for y in ys])
        ax.set_ylabel(text(ylabel) + (" (log scale)" if log else "")
                      + (" (lower is better)" if direction == "lower" else " (higher is better)"))
        ax.grid(True, which="major", alpha=0.3)
    legend_outside(fig, axes)
    return fig
