"""Turn finished runs into a front: results.json, a markdown table, PNG plots, hypervolume and IGD+.

Objectives are the per-task **test losses** (minimized). Hypervolumes that are compared with each
other must share one reference point: :func:`compare_sweeps` takes the nadir of the pooled non-dominated points
plus 10 % of their range (``moomtl.pareto.reference_point``), and records it next to the numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from moomtl import io as mio
from moomtl.config import ConfigError, ExperimentConfig
from moomtl.experiments.sweep import (
    SweepPoint,
    preference_points,
    result_row,
    run_points,
    single_task_points,
)
from moomtl.rundir import RunFolderError, check_output_dir, locked
from moomtl.tasks import metric_higher_is_better

RESULTS_JSON = "results.json"


@dataclass
class SweepReport:
    rows: list[dict[str, Any]]
    task_names: list[str]
    hypervolume: float
    reference_point: list[float]
    markdown: str


def objective_matrix(rows: Sequence[dict[str, Any]], task_names: Sequence[str], key: str = "loss") -> np.ndarray:
    return np.array([[r[f"{t}/{key}"] for t in task_names] for r in rows], dtype=float)


def shown_metric(row: dict[str, Any], task: str) -> str:
    """The metric a report shows for ``task``: ``acc`` when there is one, else the task's first metric
    (``miou`` for segmentation, ``l1`` for regression)."""
    names = [k[len(task) + 1:] for k in row if k.startswith(f"{task}/")]
    names = [m for m in names if m not in ("loss", "err")]
    return "acc" if "acc" in names else (names[0] if names else "loss")


def shown_metrics(rows: Sequence[dict[str, Any]], task_names: Sequence[str]) -> list[str]:
    """:func:`shown_metric` of every task, read from the first row (all rows of a sweep share keys)."""
    return [shown_metric(rows[0], t) if rows else "acc" for t in task_names]


def metric_header(task: str, metric: str) -> str:
    return f"{task} acc %" if metric == "acc" else f"{task} {metric}"


def format_metric(metric: str, value: float) -> str:
    return f"{100 * value:.2f}" if metric == "acc" else f"{value:.4g}"


def front_markdown(rows: Sequence[dict[str, Any]], task_names: Sequence[str], mask: np.ndarray) -> str:
    shown = shown_metrics(rows, task_names)
    head = ["run", *[f"{t} loss" for t in task_names],
            *[metric_header(t, m) for t, m in zip(task_names, shown, strict=True)], "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, nd in zip(rows, mask, strict=True):
        cells = [r["label"], *[f"{r[f'{t}/loss']:.4f}" for t in task_names],
                 *[format_metric(m, r[f"{t}/{m}"]) for t, m in zip(task_names, shown, strict=True)],
                 "yes" if nd else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_reference_front(path: Path, task_names: Sequence[str]) -> np.ndarray:
    """Points of a reference front: another sweep's ``results.json`` (its per-task test losses) or a
    CSV file with one row per point and one column per task (no header)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"reference front {path} not found")
    try:
        if path.suffix == ".json":
            res = json.loads(path.read_text())
            if list(res.get("task_names", [])) != list(task_names):
                raise ConfigError(
                    f"reference front {path} has tasks {res.get('task_names')}, expected {list(task_names)}"
                )
            points = objective_matrix(res["rows"], task_names)
        else:
            points = np.loadtxt(path, delimiter=",", ndmin=2)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"reference front {path} is not readable: {e}") from None
    if points.ndim != 2 or points.shape[1] != len(task_names) or len(points) == 0:
        raise ConfigError(f"reference front {path} must have one column per task ({len(task_names)}), "
                          f"got shape {points.shape}")
    return points


def write_front(
    rows: list[dict[str, Any]], task_names: list[str], out: Path, title: str, extra: dict[str, Any] | None = None,
    reference_front: np.ndarray | None = None,
) -> SweepReport:
    """Write ``results.json``, ``results.md`` and ``pareto.png`` (2 tasks) or ``parallel.png``
    (more tasks) for one set of runs; with a ``reference_front`` also IGD and IGD+ to it."""
    from moomtl.pareto import hypervolume, igd, igd_plus, non_dominated, reference_point

    losses = objective_matrix(rows, task_names)
    mask = non_dominated(losses)
    ref = reference_point(losses, margin=0.1)
    hv = float(hypervolume(losses, ref))
    indicators: dict[str, float] = {}
    if reference_front is not None:
        indicators = {"igd": float(igd(losses, reference_front)), "igd_plus": float(igd_plus(losses, reference_front))}
    data_line = [f"Data: {extra['data']}", ""] if extra and "data" in extra else []
    md = "\n".join([
        f"## {title}", "", *data_line,
        front_markdown(rows, task_names, mask), "",
        f"Hypervolume of the test-loss front: **{hv:.6g}** (reference point {np.round(ref, 4).tolist()}: "
        "nadir of the non-dominated runs + 10 % of their range; objectives = per-task test loss).",
        *([f"IGD to the reference front: {indicators['igd']:.4g}; IGD+: {indicators['igd_plus']:.4g} "
           f"({len(reference_front)} reference points)."] if reference_front is not None else []),
    ])
    _plot_front(rows, task_names, mask, out, title)
    marked = [{**r, "pareto": bool(m)} for r, m in zip(rows, mask, strict=True)]
    payload = {"title": title, "task_names": task_names, "objective": "test loss", "hypervolume": hv,
               "reference_point": ref.tolist(), **indicators, "rows": marked, **(extra or {})}
    mio.write_json(out / RESULTS_JSON, payload)
    mio.write_text(out / "results.md", md + "\n")
    return SweepReport(rows=rows, task_names=task_names, hypervolume=hv, reference_point=ref.tolist(), markdown=md)


def _plot_front(rows: list[dict[str, Any]], task_names: list[str], mask: np.ndarray, out: Path, title: str) -> None:
    from moomtl.pareto.plots import plot_front_2d, plot_parallel_coordinates

    if len(task_names) == 2:
        a, b = task_names
        panels = [(f"{a}/loss", f"{b}/loss")]
        if rows and f"{a}/err" in rows[0] and f"{b}/err" in rows[0]:  # classification: also the test error
            panels.append((f"{a}/err", f"{b}/err"))
        # Label points by preference only; the colour already says which method.
        shown = [{**r, "point": r["label"].split(" ", 1)[-1]} for r in rows]
        plot_front_2d(shown, out / "pareto.png", panels=panels, label_key="point", title=title)
    else:
        plot_parallel_coordinates(objective_matrix(rows, task_names), out / "parallel.png",
                                  labels=[r["label"] for r in rows], objective_names=task_names, title=title)


def run_preference_sweep(
    cfg: ExperimentConfig, method: str | None = None, n_preferences: int = 11, workers: int = 1,
    single_task: bool = False, console: Console | None = None, title: str | None = None,
    preferences: np.ndarray | None = None, reference_front: Path | None = None, overwrite: bool = False,
) -> SweepReport:
    """Train ``n_preferences`` models of ``method`` (default: the config's) on a Das-Dennis lattice
    of preferences, or on the rows of ``preferences`` when given (plus single-task baselines if
    asked), then write the front report to ``cfg.out``. Finished points are skipped, so rerunning
    resumes. ``reference_front`` (see :func:`load_reference_front`) adds IGD/IGD+.

    The sweep folder is locked while it runs; a folder whose report is another method's sweep is
    refused unless ``overwrite`` (which also retrains every point)."""
    if n_preferences < 1:
        raise ConfigError(f"--preferences must be ≥ 1, got {n_preferences}")
    if workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {workers}")
    console = console or Console()
    out = Path(cfg.out)
    name = method or cfg.method_name
    with locked(out):
        if not overwrite:
            _check_report_owner(out, name)
        report = _sweep(cfg, name, n_preferences, workers, single_task, console, title, preferences,
                        reference_front, overwrite)
        if cfg.train.tensorboard and (out / "pareto.png").is_file():
            from moomtl.train.tensorboard import log_image

            log_image(out / "tensorboard", "front", out / "pareto.png")
        return report


def _duration(seconds: float) -> str:
    """``"4 min 05 s"`` / ``"35 s"``."""
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def _check_report_owner(out: Path, method: str) -> None:
    path = out / RESULTS_JSON
    if not path.exists():
        return
    res = _read_results(path)
    if res.get("method") != method:
        raise ConfigError(
            f"{out} holds the report of a {res.get('method')!r} sweep, not {method!r}; choose another "
            "--out, or pass --overwrite to replace it"
        )


def _read_results(path: Path) -> dict[str, Any]:
    """A report's ``results.json``, checked: strict JSON, ``task_names`` and per-point ``rows``."""
    try:
        res = mio.read_json(path)
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path} is unreadable: {e}") from None
    if not (isinstance(res, dict) and isinstance(res.get("task_names"), list) and isinstance(res.get("rows"), list)):
        raise RunFolderError(f"{path} is not a moomtl report (needs task_names and rows)")
    return res


def _sweep(
    cfg: ExperimentConfig, name: str, n_preferences: int, workers: int, single_task: bool, console: Console,
    title: str | None, preferences: np.ndarray | None, reference_front: Path | None, overwrite: bool,
) -> SweepReport:
    from moomtl.experiments.run import build_data
    from moomtl.pareto import lattice_for

    out = Path(cfg.out)
    splits = build_data(cfg)  # builds (or reads the cache) once, before any worker starts
    task_names = list(splits.task_names)
    ref_front = load_reference_front(reference_front, task_names) if reference_front is not None else None
    console.print(f"data: {splits.description}")
    prefs = lattice_for(n_preferences, len(task_names)) if preferences is None else np.asarray(preferences)
    if prefs.ndim != 2 or prefs.shape[1] != len(task_names):
        raise ConfigError(f"preferences must have one column per task ({len(task_names)}), got {prefs.shape}")
    points: list[SweepPoint] = preference_points(cfg, prefs, out, name)
    if single_task:
        points += single_task_points(cfg, task_names, out)
    done = 0 if overwrite else sum(p.done for p in points)
    if done:
        console.print(f"resuming: {done} of {len(points)} points already trained")

    todo = len(points) - done
    finished: list[float] = []

    def report_point(p: SweepPoint, summary: dict[str, Any]) -> None:
        f = {k[len("test/"):]: v for k, v in summary["final"].items() if k.startswith("test/")}
        shown = []
        for t in task_names:
            m = shown_metric(f, t)
            shown.append(f"{t} {format_metric(m, f[f'{t}/{m}'])}{'%' if m == 'acc' else ' ' + m}")
        finished.append(float(summary["wall_seconds"]))
        k = len(finished)
        eta = "" if k == todo else f"; ETA {_duration(sum(finished) / k * (todo - k) / max(workers, 1))}"
        console.print(f"  model {k}/{todo} {p.label}: test {', '.join(shown)} "
                      f"({summary['wall_seconds']:.1f} s{eta})")

    summaries = run_points(points, workers=workers, on_done=report_point, overwrite=overwrite)
    rows = [result_row(p, s, task_names) for p, s in zip(points, summaries, strict=True)]
    return write_front(rows, task_names, out, title or f"{name} sweep on {cfg.data.dataset}",
                       extra={"method": name, "data": splits.description}, reference_front=ref_front)


def compare_sweeps(runs: Sequence[Path], out: Path) -> str:
    """Overlay the fronts of several sweeps (each folder holds ``results.json``) with hypervolumes on
    one shared reference point and IGD+ against the pooled non-dominated front."""
    from moomtl.pareto import hypervolume, igd_plus, non_dominated, reference_point
    from moomtl.pareto.plots import plot_fronts_overlay

    if not runs:
        raise ConfigError("give at least one sweep folder to compare")
    check_output_dir(out)
    loaded = []
    for run in runs:
        path = Path(run) / RESULTS_JSON
        if not path.is_file():
            raise ConfigError(f"{path} not found: run `moomtl sweep` with --out {run} first")
        loaded.append((Path(run).name, _read_results(path)))
    tasks = loaded[0][1]["task_names"]
    for name, res in loaded:
        if res["task_names"] != tasks:
            raise ConfigError(f"{name} has tasks {res['task_names']}, expected {tasks}: cannot compare")
    try:
        fronts = {name: objective_matrix(res["rows"], tasks) for name, res in loaded}
    except (KeyError, TypeError, ValueError) as e:
        raise RunFolderError(f"a results.json lacks per-task test losses ({type(e).__name__}: {e})") from None
    pooled = np.vstack(list(fronts.values()))
    ref = reference_point(pooled, margin=0.1)
    pooled_front = pooled[non_dominated(pooled)]
    shown = shown_metrics(loaded[0][1]["rows"], tasks)
    lines = [
        "| sweep | method | points | Pareto points | hypervolume | IGD+ to pooled front | best "
        + " | best ".join(metric_header(t, m) for t, m in zip(tasks, shown, strict=True)) + " |",
        "|" + "---|" * (6 + len(tasks)),
    ]
    hvs = {}
    for name, res in loaded:
        pts = fronts[name]
        hvs[name] = float(hypervolume(pts, ref))
        best = []
        for t, m in zip(tasks, shown, strict=True):
            values = [r[f"{t}/{m}"] for r in res["rows"]]
            best.append(format_metric(m, max(values) if metric_higher_is_better(m) else min(values)))
        lines.append(
            f"| {name} | {res.get('method', '?')} | {len(pts)} | {int(non_dominated(pts).sum())} | "
            f"{hvs[name]:.6g} | {float(igd_plus(pts, pooled_front)):.4g} | " + " | ".join(best) + " |"
        )
    md = "\n".join([
        "## Front comparison (objectives: per-task test loss)", "", *lines, "",
        f"Shared reference point {np.round(ref, 4).tolist()} "
        "(nadir of the pooled non-dominated points + 10 % of their range).",
    ])
    plot_fronts_overlay(fronts, out / "comparison.png", hv=hvs, objective_names=[f"{t} test loss" for t in tasks])
    mio.write_text(out / "comparison.md", md + "\n")
    mio.write_json(out / "comparison.json", {"reference_point": ref.tolist(), "hypervolume": hvs,
                                             "runs": [str(r) for r in runs]})
    return md
