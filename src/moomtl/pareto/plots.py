"""Plots and tables of Pareto fronts (minimization).

matplotlib is imported lazily inside the plotting functions and drives a ``Figure`` with the Agg
canvas directly, so importing this module is cheap and never touches pyplot's global backend. Images
are written atomically: to a temporary file in the target directory, then ``os.replace``-d over the
target, so a failed write leaves no partial file (and keeps any previous one).

Rows of results are mappings of metric name to value, e.g. a trainer's final metrics plus a label::

    {"label": "w=(0.5, 0.5)", "method": "linear", "test/left/loss": 0.31, "test/left/acc": 0.91, ...}

A key ``".../error"`` absent from a row is derived from ``".../acc"`` as ``1 - acc`` (``100 - acc``
when the accuracy is a percentage, i.e. above 1).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moomtl.pareto.dominance import PointsLike, as_points, non_dominated

Rows = Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]

_TEST_LOSS = re.compile(r"^test/([^/]+)/loss$")


def _rows(results: Rows, label_key: str) -> list[dict[str, Any]]:
    """Normalize ``{label: metrics}`` or a sequence of metric dicts to a list of dicts."""
    if isinstance(results, Mapping):
        return [{label_key: str(k), **dict(v)} for k, v in results.items()]
    return [dict(r) for r in results]


def metric_value(row: Mapping[str, Any], key: str) -> float | None:
    """``row[key]`` as a float, deriving ``.../error`` from ``.../acc``; ``None`` if missing or not finite.

    >>> metric_value({"test/a/acc": 0.75}, "test/a/error")
    0.25
    """
    value: Any = row.get(key)
    if value is None and key.endswith("/error"):
        acc = row.get(key[: -len("error")] + "acc")
        if acc is not None:
            acc = float(acc)
            value = (100.0 if acc > 1.0 else 1.0) - acc
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def default_panels(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Panels for two tasks found as ``test/<task>/loss`` keys: test loss, then test error when an
    ``error`` or ``acc`` metric exists for both tasks."""
    tasks: list[str] = []
    for row in rows:
        for key in row:
            m = _TEST_LOSS.match(key)
            if m and m.group(1) not in tasks:
                tasks.append(m.group(1))
    if len(tasks) != 2:
        raise ValueError(
            f"cannot infer the two tasks to plot (found test losses for {tasks}); pass panels=[(x_key, y_key)]"
        )
    a, b = tasks
    panels = [(f"test/{a}/loss", f"test/{b}/loss")]
    err = (f"test/{a}/error", f"test/{b}/error")
    if any(metric_value(r, err[0]) is not None and metric_value(r, err[1]) is not None for r in rows):
        panels.append(err)
    return panels


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure_atomic(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Save a matplotlib figure to ``path`` atomically (temporary file in the same directory, then
    ``os.replace``). The format follows the suffix (PNG when there is none). Parents are created."""
    from moomtl.io import atomic_path

    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format=fmt, dpi=dpi)
    return path


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _draw_front(ax: Any, xy: np.ndarray, label: str | None = "Pareto front", color: Any = "black") -> None:
    """Join the non-dominated points of ``xy`` (sorted by x) and ring them."""
    if xy.shape[0] == 0:
        return
    front = xy[non_dominated(xy)]
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    ax.plot(front[:, 0], front[:, 1], "-", color=color, lw=1.2, zorder=2, label=label)
    ax.scatter(front[:, 0], front[:, 1], s=110, facecolors="none", edgecolors=color, lw=1.3, zorder=4)


def plot_front_2d(
    results: Rows,
    path: str | os.PathLike[str],
    *,
    panels: Sequence[tuple[str, str]] | None = None,
    label_key: str = "label",
    group_key: str | None = "method",
    title: str | None = None,
    annotate: bool = True,
    dpi: int = 120,
    context_groups: Sequence[str] = ("single_task",),
) -> Path:
    """Scatter task-1 vs task-2 metrics, one panel per ``(x_key, y_key)`` pair, with the non-dominated
    points (minimization, computed per panel) ringed and joined.

    The axes zoom on the trade-off region: points of ``context_groups`` (the single-task end points,
    whose other task is at chance) do not set the limits; when they fall outside, they are drawn as
    arrows at the panel's edge with their values in the label. Labels are placed so that none overlap.

    ``results``: a sequence of metric dicts or a mapping ``label -> metrics``. ``panels`` defaults to
    :func:`default_panels` (test loss, then test error, for the two tasks found). Points are labelled
    with ``row[label_key]`` and coloured by ``row[group_key]`` (e.g. the method) when present. Rows
    missing a panel's value are left out of that panel. Returns the written path.
    """
    rows = _rows(results, label_key)
    if not rows:
        raise ValueError("results is empty: nothing to plot")
    panels = list(panels) if panels is not None else default_panels(rows)
    if not panels:
        raise ValueError("panels is empty")
    groups: list[str] = []
    for r in rows:
        g = str(r.get(group_key, "")) if group_key else ""
        if g not in groups:
            groups.append(g)
    colors = dict(zip(groups, _colors(len(groups)), strict=True))

    fig = _new_figure(5.2 * len(panels), 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (xk, yk) in zip(axes, panels, strict=True):
        pts, kept = [], []
        for r in rows:
            x, y = metric_value(r, xk), metric_value(r, yk)
            if x is not None and y is not None:
                pts.append((x, y))
                kept.append(r)
        xy = np.array(pts, dtype=float).reshape(-1, 2)
        group_of = [(str(r.get(group_key, "")) if group_key else "") for r in kept]
        focus = np.array([g not in context_groups for g in group_of], dtype=bool)
        limits = _zoom_limits(xy, focus)
        shown_xy, off = _clip_to(xy, limits)
        for g in groups:
            sel = [i for i, gg in enumerate(group_of) if gg == g]
            inside = [i for i in sel if not off[i]]
            outside = [i for i in sel if off[i]]
            if inside:
                ax.scatter(xy[inside, 0], xy[inside, 1], s=36, color=colors[g], zorder=3, label=g or None)
            if outside:
                ax.scatter(shown_xy[outside, 0], shown_xy[outside, 1], s=60, marker=">", color=colors[g], zorder=3,
                           label=f"{g} (off scale, at the edge)" if g else "off scale")
        _draw_front(ax, xy)
        if limits is not None:
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
        if annotate:
            labels = []
            for i, r in enumerate(kept):
                if r.get(label_key) is None:
                    continue
                text = str(r[label_key])
                if off[i]:
                    text += f" ({_fmt(xy[i, 0])}, {_fmt(xy[i, 1])})"
                labels.append((shown_xy[i], text))
            place_labels(ax, labels)
        ax.set_xlabel(xk)
        ax.set_ylabel(yk)
        ax.grid(alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return save_figure_atomic(fig, path, dpi=dpi)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _zoom_limits(xy: np.ndarray, focus: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Axis limits around the ``focus`` points (10 % margin), or ``None`` (autoscale) when every point is
    in focus or fewer than two are."""
    if focus.all() or focus.sum() < 2:
        return None
    lo, hi = xy[focus].min(axis=0), xy[focus].max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1e-12) * 0.1)
    lo, hi = lo - 0.12 * span, hi + 0.12 * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def _clip_to(xy: np.ndarray, limits: Any) -> tuple[np.ndarray, np.ndarray]:
    """Points moved onto the limits' box where they lie outside, and which ones were moved."""
    if limits is None or len(xy) == 0:
        return xy, np.zeros(len(xy), dtype=bool)
    lo = np.array([limits[0][0], limits[1][0]])
    hi = np.array([limits[0][1], limits[1][1]])
    inset = 0.02 * (hi - lo)
    clipped = np.clip(xy, lo + inset, hi - inset)
    return clipped, ((xy < lo) | (xy > hi)).any(axis=1)


#: Label offsets tried in order (points): right/up first, then the other directions, then farther out.
_OFFSETS = [(d * dx, d * dy) for d in (1, 2, 3) for dx, dy in
            ((5, 5), (5, -11), (-5, 5), (-5, -11), (0, 9), (0, -15), (9, -3), (-9, -3))]


def place_labels(ax: Any, labels: Sequence[tuple[Any, str]], fontsize: float = 7) -> list[Any]:
    """Annotate ``(point, text)`` pairs, trying offsets around each point until its text box overlaps
    no label placed before (and stays inside the axes); the least-overlapping offset otherwise.
    Returns the annotation artists."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    placed: list[Any] = []
    artists = []
    for (x, y), text in labels:
        best, best_cost = None, math.inf
        for dx, dy in _OFFSETS:
            ha = "left" if dx >= 0 else "right"
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha,
                              arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if abs(dx) > 5 else None)
            box = ann.get_window_extent(renderer)
            cost = sum(_overlap(box, other) for other in placed)
            cost += 10 * max(0.0, axes_box.x0 - box.x0) + 10 * max(0.0, box.x1 - axes_box.x1)
            cost += 10 * max(0.0, axes_box.y0 - box.y0) + 10 * max(0.0, box.y1 - axes_box.y1)
            if cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (ann, box), cost
            else:
                ann.remove()
            if cost == 0:
                break
        assert best is not None
        placed.append(best[1])
        artists.append(best[0])
    return artists


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _parallel(
    ax: Any,
    pts: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    colors: Sequence[Any],
    labels: Sequence[str | None],
    highlight: np.ndarray,
) -> None:
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = np.where(hi > lo, (pts - lo) / span, 0.5)  # an objective with zero range sits mid-axis
    xs = np.arange(pts.shape[1])
    for i in range(pts.shape[0]):
        if highlight[i]:
            ax.plot(xs, norm[i], "-o", color=colors[i], lw=1.6, ms=3, zorder=3, label=labels[i])
        else:
            ax.plot(xs, norm[i], "-", color=colors[i], lw=0.8, alpha=0.35, zorder=2, label=labels[i])


def _decorate_parallel(ax: Any, lo: np.ndarray, hi: np.ndarray, names: Sequence[str]) -> None:
    m = lo.size
    for k in range(m):
        ax.axvline(k, color="gray", lw=0.8, zorder=1)
        ax.annotate(f"{lo[k]:.4g}", (k, 0), xytext=(0, -12), textcoords="offset points", ha="center", fontsize=7)
        ax.annotate(f"{hi[k]:.4g}", (k, 1), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(m))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, m - 0.8)
    ax.set_ylim(-0.1, 1.1)
    ax.set_ylabel("normalized value (lower is better)")


def _objective_names(names: Sequence[str] | None, m: int) -> list[str]:
    if names is None:
        return [f"f{k + 1}" for k in range(m)]
    if len(names) != m:
        raise ValueError(f"objective_names has {len(names)} names for {m} objectives")
    return [str(n) for n in names]


def plot_parallel_coordinates(
    points: PointsLike,
    path: str | os.PathLike[str],
    labels: Sequence[str] | None = None,
    *,
    objective_names: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Parallel-coordinates plot of ``points`` (shape ``[n, m]``, any ``m``): one polyline per point over
    the objective axes, each objective min-max normalized to [0, 1] (raw min/max printed on the axis).
    Non-dominated points are drawn bold and coloured, dominated ones faint. ``labels`` (one per point)
    go to the legend. Returns the written path."""
    p = as_points(points)
    n, m = p.shape
    if n == 0:
        raise ValueError("points is empty: nothing to plot")
    if not np.all(np.isfinite(p)):
        raise ValueError("points must be finite to plot")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} points")
    names = _objective_names(objective_names, m)
    nd = non_dominated(p)
    palette = _colors(n)
    colors = [palette[i] if nd[i] else (0.5, 0.5, 0.5, 1.0) for i in range(n)]
    lab = [str(labels[i]) if labels is not None else None for i in range(n)]
    lo, hi = p.min(axis=0), p.max(axis=0)
    fig = _new_figure(max(5.0, 1.6 * m + 2.5), 4.4)
    ax = fig.subplots()
    _parallel(ax, p, lo, hi, colors, lab, nd)
    _decorate_parallel(ax, lo, hi, names)
    if labels is not None and n <= 30:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        ax.set_title(title)
    return save_figure_atomic(fig, path, dpi=dpi)


def plot_fronts_overlay(
    fronts: Mapping[str, PointsLike],
    path: str | os.PathLike[str],
    hv: Mapping[str, float] | None = None,
    *,
    objective_names: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Overlay several methods' points, ``{method: points [n, m]}``, in one plot; each method's own
    non-dominated points are joined and its hypervolume ``hv[method]`` (if given) is shown in the legend.
    Two objectives: a scatter plot. More: parallel coordinates on a normalization shared by all
    methods. Returns the written path."""
    if not fronts:
        raise ValueError("fronts is empty: nothing to plot")
    arrays = {str(k): as_points(v, f"fronts[{k!r}]") for k, v in fronts.items()}
    dims = {a.shape[1] for a in arrays.values()}
    if len(dims) != 1:
        raise ValueError(f"all fronts must have the same number of objectives, got {sorted(dims)}")
    m = dims.pop()
    for k, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"fronts[{k!r}] must be finite to plot")
    names = _objective_names(objective_names, m)
    colors = dict(zip(arrays, _colors(len(arrays)), strict=True))

    def legend(k: str) -> str:
        return f"{k} (HV={hv[k]:.4g})" if hv is not None and k in hv else k

    if m == 2:
        fig = _new_figure(6.0, 4.8)
        ax = fig.subplots()
        for k, a in arrays.items():
            ax.scatter(a[:, 0], a[:, 1], s=30, color=colors[k], alpha=0.8, zorder=3)
            _draw_front(ax, a, label=legend(k), color=colors[k])
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    else:
        allp = np.concatenate([a for a in arrays.values() if a.shape[0]], axis=0).reshape(-1, m)
        if allp.shape[0] == 0:
            raise ValueError("every front is empty: nothing to plot")
        lo, hi = allp.min(axis=0), allp.max(axis=0)
        fig = _new_figure(max(6.0, 1.6 * m + 3.0), 4.6)
        ax = fig.subplots()
        for k, a in arrays.items():
            if a.shape[0] == 0:
                continue
            nd = non_dominated(a)
            labels: list[str | None] = [None] * a.shape[0]
            labels[int(np.argmax(nd))] = legend(k)  # on a bold (non-dominated) line, for the legend
            _parallel(ax, a, lo, hi, [colors[k]] * a.shape[0], labels, nd)
        _decorate_parallel(ax, lo, hi, names)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title)
    return save_figure_atomic(fig, path, dpi=dpi)


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "—" if math.isnan(value) else format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def front_table_markdown(
    rows: Rows,
    columns: Sequence[str],
    *,
    headers: Mapping[str, str] | None = None,
    floatfmt: str = ".4f",
    mark_non_dominated: Sequence[str] | None = None,
    label_key: str = "label",
) -> str:
    """A GitHub-markdown table with one line per row and one column per key in ``columns``.

    Floats use ``floatfmt``; missing values print as ``—``; ``.../error`` keys may be derived from
    ``.../acc`` (see :func:`metric_value`). ``headers`` renames columns. With ``mark_non_dominated``
    (keys to minimize), a last column ``Pareto`` marks with ``✓`` the rows that are non-dominated among
    those having all these values.

    >>> print(front_table_markdown([{"m": "a", "x": 1.0, "y": 2.0}, {"m": "b", "x": 2.0, "y": 3.0}],
    ...                            ["m", "x", "y"], floatfmt=".1f", mark_non_dominated=["x", "y"]))
    | m | x | y | Pareto |
    |---|---|---|---|
    | a | 1.0 | 2.0 | ✓ |
    | b | 2.0 | 3.0 |  |
    """
    table = _rows(rows, label_key)
    if not columns:
        raise ValueError("columns is empty")
    headers = dict(headers or {})
    marks = [""] * len(table)
    if mark_non_dominated:
        vals = [[metric_value(r, k) for k in mark_non_dominated] for r in table]
        idx = [i for i, v in enumerate(vals) if all(x is not None for x in v)]
        if idx:
            nd = non_dominated(np.array([vals[i] for i in idx], dtype=float))
            for i, flag in zip(idx, nd, strict=True):
                marks[i] = "✓" if flag else ""
    head = [headers.get(c, c) for c in columns] + (["Pareto"] if mark_non_dominated else [])
    lines = ["| " + " | ".join(_cell(h, floatfmt) for h in head) + " |", "|" + "---|" * len(head)]
    for r, mark in zip(table, marks, strict=True):
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append(_cell(metric_value(r, c) if v is None else v, floatfmt))
        if mark_non_dominated:
            cells.append(mark)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
