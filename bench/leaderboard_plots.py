"""The leaderboard page's plots, drawn by matplotlib as inline SVG with the text kept as
text: accuracy against training cost (95% intervals as error bars, colour for the row's
standing against the floors) and, for tuned models, budget curves (the best validation
score so far against the CPU seconds of tuning). Element ids name the table and model,
so that a browser test can find each point and line.
"""

from __future__ import annotations

import io
import math
import re
from contextlib import contextmanager

import numpy as np

from bench.leaderboard_tables import FLOORS, PRIMARY, _quantiles, run_seconds

STATUS_COLOURS = {
    "beats floors": "#2b6cb0",
    None: "#2b6cb0",
    "floor": "#718096",
    "below floor": "#dd6b20",
    "untested": "#dd6b20",
}
STATUS_LABELS = {
    "beats floors": "beats every floor",
    None: "model (no floor in table)",
    "floor": "floor model",
    "below floor": "below the best floor",
    "untested": "not tested against floors",
}
CURVE_COLOURS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16")
PLOT_STYLE = {
    "svg.fonttype": "none",  # text stays text: searchable, selectable, testable
    "svg.hashsalt": "bench-leaderboard",  # the same tables give the same page
    "path.simplify": False,  # every point of a curve is drawn (and countable)
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e2e8f0",
    "grid.linewidth": 0.6,
}


def _gid(prefix: str, kind: str, model: str) -> str:
    return f"{prefix}-{kind}-{re.sub(r'[^A-Za-z0-9_-]', '_', model)}"


def _svg(fig) -> str:
    """The figure as an inline <svg> element (no XML prolog, no creation date)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


# where a point's label may go, in points from the point, nearest first
LABEL_SPOTS = [
    (dx, dy, "left" if dx > 0 else "right")
    for dy in (3, -11, 13, -21, 23, -31, 33)
    for dx in (6, -6)
]


def _place_labels(fig, ax, texts: list) -> None:
    """Put each point's label at the nearest spot (right or left, above or below) where
    it covers no other label and no point and stays inside the axes, so that models close
    in accuracy and cost stay readable; the least crowded spot when none is free."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # the layout first: positions are final after it
    radius = 4 * fig.dpi / 72
    taken = []
    for text in texts:
        x, y = ax.transData.transform(text.xy)
        taken.append(Bbox.from_extents(x - radius, y - radius, x + radius, y + radius))
    frame = ax.get_window_extent(renderer)
    for text in sorted(texts, key=lambda t: -ax.transData.transform(t.xy)[1]):
        best = None
        for dx, dy, ha in LABEL_SPOTS:
            text.xyann = (dx, dy)
            text.set_horizontalalignment(ha)
            box = text.get_window_extent(renderer)
            outside = not (frame.x0 <= box.x0 and box.x1 <= frame.x1)
            outside = outside or not (frame.y0 <= box.y0 and box.y1 <= frame.y1)
            cost = sum(box.overlaps(other) for other in taken) + 2 * outside
            if best is None or cost < best[0]:
                best = (cost, dx, dy, ha)
            if cost == 0:
                break
        _, dx, dy, ha = best
        text.xyann = (dx, dy)
        text.set_horizontalalignment(ha)
        taken.append(text.get_window_extent(renderer))


def _log_limits(ax, xs: list[float]) -> None:
    """x limits around the points on a log axis, with room for the labels right of them;
    points at one cost (every model fitted in the same second) get a decade around it."""
    low, high = min(xs), max(xs)
    pad = max(0.12 * math.log10(high / low), 0.3)
    ax.set_xlim(low / 10**pad, high * 10 ** (1.5 * pad))


def _seconds_axis(ax) -> None:
    """Plain numbers on the log seconds axis (30, 1,000, 0.5, not 3×10¹); within about
    a decade, the 2, 3 and 5 between the powers of ten are labelled too."""
    from matplotlib.ticker import FuncFormatter

    def plain(v: float, _=None) -> str:
        return f"{v:,.0f}" if v >= 1 else f"{v:.3g}"

    low, high = ax.get_xlim()
    few = math.log10(max(high, 1e-9) / max(low, 1e-9)) < 1.5

    def minor(v: float, _=None) -> str:
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
        return plain(v) if few and lead in (2, 3, 5) else ""

    ax.xaxis.set_major_formatter(FuncFormatter(plain))
    ax.xaxis.set_minor_formatter(FuncFormatter(minor))


@contextmanager
def _log_seconds_axes():
    """(figure, axes) in the page's plot style, x on a log scale of seconds."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(PLOT_STYLE):
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        ax.set_xscale("log")
        ax.set_autoscalex_on(False)  # `_log_limits` sets x: one cost for all is no warning
        yield fig, ax


def _label(ax, text: str, xy: tuple[float, float], colour: str):
    """A point's name just right of and above it (moved apart later by `_place_labels`)."""
    return ax.annotate(
        text, xy, xytext=(6, 3), textcoords="offset points", fontsize=8, color=colour
    )


def _finish(fig, ax, texts: list, xs: list[float]) -> str:
    """The SVG of a seconds plot: x limits around `xs`, y from 0, labels kept apart."""
    _log_limits(ax, xs)
    ax.set_ylim(bottom=0)
    _seconds_axis(ax)
    _place_labels(fig, ax, texts)
    return _svg(fig)


def _interval(e: dict) -> tuple[float, float] | None:
    """95% bootstrap interval of the row's NDCG@10 over test targets, as distances below
    and above the reported mean; None without saved per-target ranks."""
    if e.get("resampled") is None or e.get("gains") is None:
        return None
    low, high = _quantiles(e["resampled"])
    centre = float(np.mean(e["gains"]))
    return max(centre - low, 0.0), max(high - centre, 0.0)


def _cost(e: dict) -> tuple[float, float, float]:
    """Training wall seconds per seed: mean, and the lowest and highest seed."""
    seconds = [run_seconds(r) for r in e.get("runs") or []] or [e["train_seconds"]]
    floor = 1e-2  # a log axis: a fit of a few milliseconds is drawn at 0.01 s
    return max(float(np.mean(seconds)), floor), max(min(seconds), floor), max(max(seconds), floor)


def accuracy_plot(t: dict, prefix: str) -> str:
    """Test NDCG@10 against training seconds per seed (log scale), one point per model
    with its 95% bootstrap interval over test targets (± the seeds' standard deviation
    where per-target ranks were not saved), coloured by its standing against the floors."""
    rows = [e for e in t["rows"] if not math.isnan(e["mean"][PRIMARY])]
    if not rows:
        return ""
    from matplotlib.lines import Line2D

    with _log_seconds_axes() as (fig, ax):
        legend, texts = {}, []  # status -> a filled marker: the legend is about standing
        for e in rows:
            x, x_low, x_high = _cost(e)
            y = e["mean"][PRIMARY]
            spread = _interval(e)
            yerr = (
                [[spread[0]], [spread[1]]] if spread else [[e["std"][PRIMARY]], [e["std"][PRIMARY]]]
            )
            status = e.get("floor")
            colour = STATUS_COLOURS.get(status, "#2b6cb0")
            on_gpu = bool(e.get("gpu"))  # its seconds are a GPU's: drawn hollow, named
            if status not in legend and STATUS_LABELS.get(status):
                legend[status] = Line2D(
                    [],
                    [],
                    marker="o",
                    color=colour,
                    linestyle="none",
                    markersize=6,
                    label=STATUS_LABELS.get(status),
                )
            bars = ax.errorbar(
                [x],
                [y],
                yerr=yerr,
                xerr=[[x - x_low], [x_high - x]] if x_high > x_low else None,
                fmt="o",
                color=colour,
                ecolor=colour,
                markerfacecolor="white" if on_gpu else colour,
                elinewidth=1.2,
                capsize=3,
                markersize=6,
            )
            bars.lines[0].set_gid(_gid(prefix, "point", e["name"]))
            for i, collection in enumerate(bars.lines[2]):
                kind = "errorbar" if i == len(bars.lines[2]) - 1 else "costbar"
                collection.set_gid(_gid(prefix, kind, e["name"]))
            name = f"{e['name']} (GPU)" if on_gpu else e["name"]
            texts.append(_label(ax, name, (x, y), "#1a202c"))
        gpus = sorted({e["gpu"] for e in rows if e.get("gpu")})
        ax.set_xlabel(
            "training time per seed, wall-clock seconds (log scale)"
            + (f"; hollow: on {', '.join(gpus)}" if gpus else "")
        )
        ax.set_ylabel(f"test {PRIMARY.upper()} (95% interval)")
        ax.set_title(f"accuracy against training cost: {t['dataset']}, {t['protocol']}", loc="left")
        ax.legend(handles=list(legend.values()), loc="lower right", fontsize=8, frameon=False)
        xs = [_cost(e)[1] for e in rows] + [_cost(e)[2] for e in rows]
        return _finish(fig, ax, texts, xs)


def curves_plot(t: dict, prefix: str) -> str:
    """Best validation NDCG@10 so far against CPU seconds of tuning (log scale), one
    stepped line per tuned model: what the equal budget bought each one."""
    curves = t.get("curves") or {}
    if not curves:
        return ""
    with _log_seconds_axes() as (fig, ax):
        texts = []
        for i, (name, pts) in enumerate(sorted(curves.items())):
            colour = "#a0aec0" if name in FLOORS else CURVE_COLOURS[i % len(CURVE_COLOURS)]
            steps = [pts[0]]
            for (_, prev), (x, y) in zip(pts, pts[1:], strict=False):
                steps += [(x, prev), (x, y)]  # the best so far holds until a trial beats it
            xs = [max(x, 1e-3) for x, _ in steps]
            (line,) = ax.plot(xs, [y for _, y in steps], color=colour, linewidth=1.8)
            line.set_gid(_gid(prefix, "curve", name))
            last_x, last_y = pts[-1]
            ax.plot([max(last_x, 1e-3)], [last_y], "o", color=colour, markersize=4)
            texts.append(
                _label(ax, f"{name} ({len(pts)} trials)", (max(last_x, 1e-3), last_y), colour)
            )
        ax.set_xlabel("CPU seconds of tuning (log scale)")
        ax.set_ylabel(f"best validation {PRIMARY.upper()} so far")
        ax.set_title("budget curves: tuning spend against the best trial so far", loc="left")
        return _finish(fig, ax, texts, [max(x, 1e-3) for pts in curves.values() for x, _ in pts])
