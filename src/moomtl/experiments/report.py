"""Turn finished runs into a front: results.json, a markdown table, PNG plots, hypervolume and IGD+,
Δm against single-task baselines, the degenerate-front check, and statistics over seeds.

Objectives are the per-task **test losses** (minimized). Hypervolumes that are compared with each
other must share one reference point: :func:`compare_sweeps` takes the nadir of the pooled non-dominated points
plus 10 % of their range (``moomtl.pareto.reference_point``), and records it next to the numbers.

Seeds (``--seeds N``, see :mod:`moomtl.experiments.sweep`): every seed is a complete sweep in
``seed_<s>/`` (its own ``results.json``); the sweep folder's ``results.json`` then holds the seed-mean
rows (``seed_stats``: mean, sd, n and bootstrap interval of every metric), the hypervolume of every
seed on **one** reference point (from the points of all seeds) and its mean ± sd
(``hypervolume_stats``), and the per-seed rows under ``per_seed``. Statistics are in
:mod:`moomtl.experiments.stats` (Δm: lower is better; the degenerate-front criterion).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from moomtl import io as mio
from moomtl.config import ConfigError, ExperimentConfig
from moomtl.experiments import stats
from moomtl.experiments.sweep import (
    SEED_DIR,
    SweepPoint,
    preference_points,
    result_row,
    run_points,
    seed_config,
    seed_list,
    single_task_points,
)
from moomtl.rundir import RunFolderError, check_output_dir, has_state, locked, read_folder_json

RESULTS_JSON = "results.json"
SEEDS_JSON = "seeds.json"
#: Below this many seeds a compare report warns that the bootstrap interval undercovers.
FEW_SEEDS = 5
SEED_NOTE = ("seeds vary train.seed (model initialization, batch order); the data split (data.seed) is the "
             "same for every seed")
DELTA_M_NOTE = ("Δm = (1/T) Σ_t (−1)^{h_t} (M_t − M_{b,t}) / M_{b,t} × 100 % against the single-task baselines "
                "M_b (h_t = 1 when higher is better; Liu et al. 2021): lower is better, negative = better than "
                "single-task")


@dataclass
class SweepReport:
    rows: list[dict[str, Any]]
    task_names: list[str]
    hypervolume: float
    reference_point: list[float]
    markdown: str
    n_seeds: int = 1


def objective_matrix(rows: Sequence[dict[str, Any]], task_names: Sequence[str], key: str = "loss") -> np.ndarray:
    values = [[r[f"{t}/{key}"] for t in task_names] for r in rows]
    return np.array(values, dtype=float).reshape(len(rows), len(task_names))


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


def _sd_of(row: dict[str, Any], key: str) -> float | None:
    return row.get("seed_stats", {}).get(key, {}).get("sd")


def _cell(row: dict[str, Any], key: str, text: Any) -> str:
    """``text(value)``, with ``± text(sd)`` when the row is a seed mean."""
    sd = _sd_of(row, key)
    return text(row[key]) if sd is None else f"{text(row[key])} ± {text(sd).lstrip('+')}"


def single_task_of(row: dict[str, Any]) -> str | None:
    """The task a single-task baseline row was trained on (``None`` for every other row)."""
    if row.get("method") != "single_task":
        return None
    task = row.get("single_task")
    label = str(row.get("label", ""))
    if task is None and label.startswith("single-task "):
        task = label[len("single-task "):]
    return task


def trained_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the swept method (single-task baselines left out)."""
    return [r for r in rows if single_task_of(r) is None]


def front_markdown(rows: Sequence[dict[str, Any]], task_names: Sequence[str], mask: np.ndarray) -> str:
    """The front table; seed-mean rows show ``mean ± sd``, and a ``Δm`` column appears when rows carry
    ``delta_m`` (single-task rows are the baselines)."""
    shown = shown_metrics(rows, task_names)
    with_dm = any("delta_m" in r for r in rows)
    head = ["run", *[f"{t} loss" for t in task_names],
            *[metric_header(t, m) for t, m in zip(task_names, shown, strict=True)],
            *(["Δm % (↓)"] if with_dm else []), "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, nd in zip(rows, mask, strict=True):
        dm = []
        if with_dm:
            dm = ["baseline" if single_task_of(r) is not None
                  else (_cell(r, "delta_m", lambda v: f"{v:+.2f}") if r.get("delta_m") is not None else "")]
        cells = [r["label"], *[_cell(r, f"{t}/loss", lambda v: f"{v:.4f}") for t in task_names],
                 *[_cell(r, f"{t}/{m}", lambda v, m=m: format_metric(m, v)) for t, m in zip(task_names, shown,
                                                                                          strict=True)],
                 *dm, "yes" if nd else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- Δm and the degenerate-front check ---------------------------------------------------------------


def baselines_of(
    seed_rows: Sequence[Sequence[dict[str, Any]]], task_names: Sequence[str], shown: Sequence[str],
) -> dict[str, float] | None:
    """``M_b,t``: the shown metric of task ``t`` of the model trained on ``t`` alone, averaged over the seeds
    (``None`` unless every task has a single-task row)."""
    values: dict[str, list[float]] = {t: [] for t in task_names}
    metric = dict(zip(task_names, shown, strict=True))
    for rows in seed_rows:
        for r in rows:
            t = single_task_of(r)
            if t in values and f"{t}/{metric[t]}" in r:
                values[t].append(float(r[f"{t}/{metric[t]}"]))
    if any(not v for v in values.values()):
        return None
    return {t: float(np.mean(v)) for t, v in values.items()}


def row_delta_m(row: dict[str, Any], baselines: dict[str, float], shown: Sequence[str]) -> float | None:
    """Δm (%) of one row against ``baselines`` on the shown metrics; ``None`` where undefined (a zero
    baseline, a missing metric)."""
    metric = dict(zip(baselines, shown, strict=True))
    try:
        return stats.delta_m({t: float(row[f"{t}/{m}"]) for t, m in metric.items()}, baselines,
                             {t: stats.higher_is_better(m) for t, m in metric.items()})
    except (KeyError, ValueError):
        return None


def delta_m_summary(
    seed_rows: Sequence[Sequence[dict[str, Any]]], task_names: Sequence[str], shown: Sequence[str],
    baselines: dict[str, float] | None = None,
) -> dict[str, Any] | None:
    """Δm of every trained point per seed (against ``baselines``, default :func:`baselines_of` the rows),
    summarized over seeds: ``points`` (label → stats), ``mean_over_points`` (the mean over the method's
    points, per seed, then over seeds) and ``best_point`` (the point with the lowest seed-mean Δm)."""
    baselines = baselines if baselines is not None else baselines_of(seed_rows, task_names, shown)
    if baselines is None:
        return None
    per_seed = [[row_delta_m(r, baselines, shown) for r in trained_rows(rows)] for rows in seed_rows]
    labels = [r["label"] for r in trained_rows(seed_rows[0])]
    if not labels or any(v is None for seed in per_seed for v in seed):
        return None
    points = {lab: stats.summarize([seed[i] for seed in per_seed]) for i, lab in enumerate(labels)}
    best = min(points, key=lambda lab: points[lab].mean)
    return {
        "convention": DELTA_M_NOTE, "metrics": dict(zip(task_names, shown, strict=True)), "baselines": baselines,
        "points": {lab: s.to_dict() for lab, s in points.items()},
        "mean_over_points": stats.summarize([float(np.mean(seed)) for seed in per_seed]).to_dict(),
        "best_point": {"label": best, **points[best].to_dict()},
        "per_seed": per_seed,
    }


def _stats_from(d: dict[str, Any]) -> stats.SeedStats:
    ci = d.get("ci95")
    return stats.SeedStats(mean=d["mean"], sd=d.get("sd"), n=d["n"], ci95=tuple(ci) if ci is not None else None)


def delta_m_line(summary: dict[str, Any]) -> str:
    mean, best = _stats_from(summary["mean_over_points"]), summary["best_point"]
    base = ", ".join(f"{t} {format_metric(m, summary['baselines'][t])}{' %' if m == 'acc' else ' ' + m}"
                     for t, m in summary["metrics"].items())
    return (f"Δm against the single-task baselines ({base}): mean over the points {mean.text('+.2f')} %, "
            f"best point {best['label']} {_stats_from(best).text('+.2f')} %. {DELTA_M_NOTE}.")


def conflict_line(conflict: stats.FrontConflict, per_seed: Sequence[stats.FrontConflict] | None = None) -> str:
    """The words next to the hypervolume: a warning when the front is degenerate."""
    seeds = ""
    if per_seed:
        k = sum(c.degenerate for c in per_seed)
        seeds = f" Per seed: degenerate in {k} of {len(per_seed)} seeds."
    if conflict.degenerate:
        return (f"**Warning: degenerate front — the objectives are not in conflict** ({conflict.reason}; judged "
                f"on {conflict.n_points} {conflict.points_judged}). The "
                "hypervolume then measures one good model rather than a trade-off (Ruchte & Grabocka 2021 found "
                f"Multi-Fashion often is not in conflict). Criterion: {stats.CRITERION}.{seeds}")
    return (f"Front conflict: {conflict.reason} on {conflict.n_points} {conflict.points_judged}; not degenerate "
            f"(criterion: {stats.CRITERION}).{seeds}")


def front_conflict_of(rows: Sequence[dict[str, Any]], task_names: Sequence[str]) -> stats.FrontConflict:
    """:func:`stats.front_conflict` of the trained points' test losses (baselines left out), judged on the
    **interior** points (every preference weight > 0) when there are at least two: a point with a zero
    weight does not train that task at all, so end points such as (0, 1) always look like a trade-off
    and would hide a front whose interior collapses onto one model."""
    trained = trained_rows(rows)
    interior = [r for r in trained if isinstance(r.get("preference"), list) and r["preference"]
                and all(float(v) > 0 for v in r["preference"])]
    judged, scope = (interior, "interior points (every preference weight > 0)") if len(interior) >= 2 \
        else (trained, "all trained points")
    return replace(stats.front_conflict(objective_matrix(judged, task_names)), points_judged=scope)


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


def _with_delta_m(rows: list[dict[str, Any]], summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows with ``delta_m`` (seed mean) on the trained points, and its sd in ``seed_stats``."""
    if summary is None:
        return rows
    out = []
    for r in rows:
        s = summary["points"].get(r["label"]) if single_task_of(r) is None else None
        if s is None:
            out.append(r)
            continue
        row = {**r, "delta_m": s["mean"]}
        if "seed_stats" in r:
            row["seed_stats"] = {**r["seed_stats"], "delta_m": s}
        out.append(row)
    return out


def write_front(
    rows: list[dict[str, Any]], task_names: list[str], out: Path, title: str, extra: dict[str, Any] | None = None,
    reference_front: np.ndarray | None = None,
) -> SweepReport:
    """Write ``results.json``, ``results.md`` and ``pareto.png`` (2 tasks) or ``parallel.png``
    (more tasks) for one set of runs; with a ``reference_front`` also IGD and IGD+ to it; with
    single-task rows also Δm; always the degenerate-front check (``degenerate_front``, ``front_conflict``)."""
    from moomtl.pareto import hypervolume, igd, igd_plus, non_dominated, reference_point

    losses = objective_matrix(rows, task_names)
    mask = non_dominated(losses)
    ref = reference_point(losses, margin=0.1)
    hv = float(hypervolume(losses, ref))
    indicators: dict[str, float] = {}
    if reference_front is not None:
        indicators = {"igd": float(igd(losses, reference_front)), "igd_plus": float(igd_plus(losses, reference_front))}
    shown = shown_metrics(rows, task_names)
    dm = delta_m_summary([rows], task_names, shown)
    rows = _with_delta_m(rows, dm)
    conflict = front_conflict_of(rows, task_names)
    data_line = [f"Data: {extra['data']}", ""] if extra and "data" in extra else []
    md = "\n".join([
        f"## {title}", "", *data_line,
        front_markdown(rows, task_names, mask), "",
        f"Hypervolume of the test-loss front: **{hv:.6g}** (reference point {np.round(ref, 4).tolist()}: "
        "nadir of the non-dominated runs + 10 % of their range; objectives = per-task test loss).",
        *([f"IGD to the reference front: {indicators['igd']:.4g}; IGD+: {indicators['igd_plus']:.4g} "
           f"({len(reference_front)} reference points)."] if reference_front is not None else []),
        "", conflict_line(conflict),
        *(["", delta_m_line(dm)] if dm is not None else []),
    ])
    _plot_front(rows, task_names, mask, out, title)
    marked = [{**r, "pareto": bool(m)} for r, m in zip(rows, mask, strict=True)]
    payload = {"title": title, "task_names": task_names, "objective": "test loss", "hypervolume": hv,
               "reference_point": ref.tolist(), **indicators, "rows": marked, **(extra or {}),
               "degenerate_front": conflict.degenerate, "front_conflict": conflict.to_dict(),
               **({"delta_m": dm} if dm is not None else {})}
    mio.write_json(out / RESULTS_JSON, payload)
    mio.write_text(out / "results.md", md + "\n")
    return SweepReport(rows=rows, task_names=task_names, hypervolume=hv, reference_point=ref.tolist(), markdown=md)


def mean_rows(seed_rows: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per point (the points of every seed, in the same order) with the seed-mean of every
    number and ``seed_stats`` (mean, sd, n, bootstrap 95 % interval) of each; ``run_dir`` is the first
    seed's folder and ``run_dirs`` lists all."""
    first = seed_rows[0]
    if any([r["label"] for r in rows] != [r["label"] for r in first] for rows in seed_rows):
        raise RunFolderError("the seeds of a sweep do not hold the same points")
    out = []
    for i, row in enumerate(first):
        group = [rows[i] for rows in seed_rows]
        numeric = [k for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "pareto"]
        per_key = {k: stats.summarize([float(g[k]) for g in group]) for k in numeric}
        mean = {k: v for k, v in row.items() if k not in ("pareto", "delta_m")}
        mean.update({k: s.mean for k, s in per_key.items()})
        mean["seed_stats"] = {k: s.to_dict() for k, s in per_key.items()}
        mean["run_dirs"] = [g.get("run_dir") for g in group]
        out.append(mean)
    return out


def write_seed_fronts(
    seed_rows: Sequence[tuple[int, list[dict[str, Any]]]], task_names: list[str], out: Path, title: str,
    extra: dict[str, Any] | None = None, reference_front: np.ndarray | None = None,
) -> SweepReport:
    """The report of a sweep over several seeds (``seed_rows``: ``(seed, rows)`` per seed): seed-mean
    rows with mean ± sd, every seed's hypervolume on one shared reference point (the nadir of the
    non-dominated points of all seeds + 10 %), IGD/IGD+ per seed, Δm and the degenerate-front check
    on the seed means (and per seed)."""
    from moomtl.pareto import hypervolume, igd, igd_plus, non_dominated, reference_point

    seeds = [s for s, _ in seed_rows]
    per_rows = [rows for _, rows in seed_rows]
    pooled = np.vstack([objective_matrix(rows, task_names) for rows in per_rows])
    ref = reference_point(pooled, margin=0.1)
    per_seed: list[dict[str, Any]] = []
    for s, rows in seed_rows:
        losses = objective_matrix(rows, task_names)
        entry: dict[str, Any] = {"seed": s, "folder": SEED_DIR.format(s),
                                 "hypervolume": float(hypervolume(losses, ref))}
        if reference_front is not None:
            entry["igd"] = float(igd(losses, reference_front))
            entry["igd_plus"] = float(igd_plus(losses, reference_front))
        c = front_conflict_of(rows, task_names)
        entry.update({"degenerate_front": c.degenerate, "front_conflict": c.to_dict(), "rows": rows})
        per_seed.append(entry)
    indicator_stats = {f"{k}_stats": stats.summarize([e[k] for e in per_seed]).to_dict()
                       for k in ("hypervolume", "igd", "igd_plus") if k in per_seed[0]}
    shown = shown_metrics(per_rows[0], task_names)
    dm = delta_m_summary(per_rows, task_names, shown)
    rows = _with_delta_m(mean_rows(per_rows), dm)
    mask = non_dominated(objective_matrix(rows, task_names))
    conflict = front_conflict_of(rows, task_names)
    hv = _stats_from(indicator_stats["hypervolume_stats"])
    n = len(seeds)
    each = ", ".join(f"{e['hypervolume']:.6g}" for e in per_seed)
    lines = [
        f"Hypervolume of the test-loss front: **{hv.text('.6g')}** (mean ± sd over {n} seeds; 95 % bootstrap "
        f"interval {hv.ci_text('.6g')}; per seed {each}; one "
        f"reference point {np.round(ref, 4).tolist()} for all seeds: nadir of the non-dominated runs of all "
        "seeds + 10 % of their range; objectives = per-task test loss).",
    ]
    if reference_front is not None:
        ig, igp = _stats_from(indicator_stats["igd_stats"]), _stats_from(indicator_stats["igd_plus_stats"])
        lines.append(f"IGD to the reference front: {ig.text()}; IGD+: {igp.text()} (mean ± sd over {n} seeds; "
                     f"IGD+ 95 % interval {igp.ci_text()}; {len(reference_front)} reference points).")
    per_conflict = [front_conflict_of(r, task_names) for r in per_rows]
    data_line = [f"Data: {extra['data']}", ""] if extra and "data" in extra else []
    md = "\n".join([
        f"## {title} ({n} seeds: {', '.join(map(str, seeds))})", "", *data_line,
        f"Cells: mean ± sd over n = {n} seeds ({SEED_NOTE}); each seed's own report is in "
        f"{SEED_DIR.format('<s>')}/results.md.", "",
        front_markdown(rows, task_names, mask), "", *lines,
        "", conflict_line(conflict, per_conflict) + " (Judged on the seed-mean losses.)",
        *(["", delta_m_line(dm)] if dm is not None else []),
    ])
    _plot_front(rows, task_names, mask, out, f"{title} (mean of {n} seeds)")
    marked = [{**r, "pareto": bool(m)} for r, m in zip(rows, mask, strict=True)]
    ind_means = {k[: -len("_stats")]: v["mean"] for k, v in indicator_stats.items() if k != "hypervolume_stats"}
    payload = {"title": title, "task_names": task_names, "objective": "test loss", "hypervolume": hv.mean,
               "reference_point": ref.tolist(), **ind_means, "rows": marked, **(extra or {}),
               "seeds": seeds, "n_seeds": n, "seed_note": SEED_NOTE, **indicator_stats,
               "degenerate_front": conflict.degenerate, "front_conflict": conflict.to_dict(),
               **({"delta_m": dm} if dm is not None else {}), "per_seed": per_seed}
    mio.write_json(out / RESULTS_JSON, payload)
    mio.write_text(out / "results.md", md + "\n")
    return SweepReport(rows=rows, task_names=task_names, hypervolume=hv.mean, reference_point=ref.tolist(),
                       markdown=md, n_seeds=n)


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
    seeds: int = 1, backend: str = "process", address: str | None = None,
) -> SweepReport:
    """Train ``n_preferences`` models of ``method`` (default: the config's) on a Das-Dennis lattice
    of preferences, or on the rows of ``preferences`` when given (plus single-task baselines if
    asked), then write the front report to ``cfg.out``. Finished points are skipped, so rerunning
    resumes. ``reference_front`` (see :func:`load_reference_front`) adds IGD/IGD+.

    ``seeds`` > 1 trains every point with ``train.seed, train.seed + 1, …`` (same data split), each
    seed a complete sweep in ``seed_<s>/``, and reports mean ± sd over seeds (:func:`write_seed_fronts`).

    The sweep folder is locked while it runs; a folder whose report is another method's sweep (or a
    sweep with the other layout: seed folders or none) is refused unless ``overwrite`` (which also
    retrains every point)."""
    if n_preferences < 1:
        raise ConfigError(f"--preferences must be ≥ 1, got {n_preferences}")
    if workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {workers}")
    from moomtl.experiments.backends import check_backend

    check_backend(backend, address)
    seed_values = seed_list(cfg.train.seed, seeds)
    console = console or Console()
    out = Path(cfg.out)
    name = method or cfg.method_name
    with locked(out):
        if not overwrite:
            _check_report_owner(out, name, len(seed_values))
            if len(seed_values) > 1:
                for s in seed_values:
                    _check_report_owner(out / SEED_DIR.format(s), name, 1)
        report = _sweep(cfg, name, n_preferences, workers, single_task, console, title, preferences,
                        reference_front, overwrite, seed_values, backend=backend, address=address)
        if cfg.train.tensorboard and (out / "pareto.png").is_file():
            from moomtl.train.tensorboard import log_image

            log_image(out / "tensorboard", "front", out / "pareto.png")
        return report


def _duration(seconds: float) -> str:
    """``"4 min 05 s"`` / ``"35 s"``."""
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def _check_report_owner(out: Path, method: str, n_seeds: int = 1) -> None:
    path = out / RESULTS_JSON
    if not path.exists():
        return
    res = _read_results(path)
    if res.get("method") != method:
        raise ConfigError(
            f"{out} holds the report of a {res.get('method')!r} sweep, not {method!r}; choose another "
            "--out, or pass --overwrite to replace it"
        )
    had = int(res.get("n_seeds", 1))
    if (had > 1) != (n_seeds > 1):
        layout = f"{had} seeds in seed_<s> folders" if had > 1 else "one seed (no seed folders)"
        raise ConfigError(
            f"{out} holds a sweep report with {layout}; --seeds {n_seeds} would mix the layouts: give "
            f"--seeds {'≥ 2' if had > 1 else '1'}, another --out, or --overwrite"
        )


def _read_results(path: Path) -> dict[str, Any]:
    """A report's ``results.json``, checked: strict JSON, ``task_names`` and per-point ``rows``."""
    def valid(r: Any) -> bool:
        return isinstance(r, dict) and isinstance(r.get("task_names"), list) and isinstance(r.get("rows"), list)

    return read_folder_json(path, valid, "is not a moomtl report (needs task_names and rows)")


def _point_line(summary: dict[str, Any], task_names: Sequence[str]) -> str:
    f = {k[len("test/"):]: v for k, v in summary["final"].items() if k.startswith("test/")}
    shown = []
    for t in task_names:
        m = shown_metric(f, t)
        shown.append(f"{t} {format_metric(m, f[f'{t}/{m}'])}{'%' if m == 'acc' else ' ' + m}")
    return ", ".join(shown)


def _positive_preference(name: str) -> bool:
    from moomtl.methods import get_method_class

    try:
        return bool(get_method_class(name).positive_preference)
    except ValueError:  # unknown method: preference_points says so in one line
        return False


def _sweep(
    cfg: ExperimentConfig, name: str, n_preferences: int, workers: int, single_task: bool, console: Console,
    title: str | None, preferences: np.ndarray | None, reference_front: Path | None, overwrite: bool,
    seeds: Sequence[int] = (), backend: str = "process", address: str | None = None,
) -> SweepReport:
    from moomtl.experiments.run import build_data
    from moomtl.pareto import lattice_for
    from moomtl.pareto.preferences import INWARD, inward

    out = Path(cfg.out)
    seeds = list(seeds) or [cfg.train.seed]
    multi = len(seeds) > 1
    splits = build_data(cfg)  # builds (or reads the cache) once, before any worker starts
    task_names = list(splits.task_names)
    ref_front = load_reference_front(reference_front, task_names) if reference_front is not None else None
    console.print(f"data: {splits.description}")
    prefs = lattice_for(n_preferences, len(task_names)) if preferences is None else np.asarray(preferences)
    if preferences is None and _positive_preference(name):
        prefs = inward(prefs)
        console.print(f"{name} refuses zero preference entries: the lattice is moved inwards, p ↦ {1 - INWARD:g} p + "
                      f"{INWARD:g} / {len(task_names)} (corners {prefs[0].round(4).tolist()}, ...)")
    if prefs.ndim != 2 or prefs.shape[1] != len(task_names):
        raise ConfigError(f"preferences must have one column per task ({len(task_names)}), got {prefs.shape}")
    groups: list[tuple[int, Path, list[SweepPoint]]] = []
    for s in seeds:
        cfg_s, out_s = (seed_config(cfg, s, out), out / SEED_DIR.format(s)) if multi else (cfg, out)
        pts = preference_points(cfg_s, prefs, out_s, name)
        if single_task:
            pts += single_task_points(cfg_s, task_names, out_s)
        groups.append((s, out_s, pts))
    points = [p for _, _, pts in groups for p in pts]
    seed_of = {id(p): s for s, _, pts in groups for p in pts}
    if multi:
        console.print(f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): {SEED_NOTE}")
    done = 0 if overwrite else sum(p.done for p in points)
    if done:
        console.print(f"resuming: {done} of {len(points)} points already trained")

    todo = len(points) - done
    finished: list[float] = []

    def report_point(p: SweepPoint, summary: dict[str, Any]) -> None:
        finished.append(float(summary["wall_seconds"]))
        k = len(finished)
        eta = "" if k == todo else f"; ETA {_duration(sum(finished) / k * (todo - k) / max(workers, 1))}"
        where = f"seed {seed_of[id(p)]} " if multi else ""
        console.print(f"  model {k}/{todo} {where}{p.label}: test {_point_line(summary, task_names)} "
                      f"({summary['wall_seconds']:.1f} s{eta})")

    summaries = run_points(points, workers=workers, on_done=report_point, overwrite=overwrite, backend=backend,
                           address=address)
    rows = [result_row(p, s, task_names) for p, s in zip(points, summaries, strict=True)]
    title = title or f"{name} sweep on {cfg.data.dataset}"
    extra = {"method": name, "data": splits.description}
    if not multi:
        return write_front(rows, task_names, out, title, extra=extra, reference_front=ref_front)
    seed_rows, start = [], 0
    for s, out_s, pts in groups:
        rows_s = rows[start:start + len(pts)]
        start += len(pts)
        with locked(out_s):
            write_front(rows_s, task_names, out_s, f"{title} (seed {s})", extra={**extra, "seed": s},
                        reference_front=ref_front)
        seed_rows.append((s, rows_s))
    return write_seed_fronts(seed_rows, task_names, out, title, extra=extra, reference_front=ref_front)


def run_seed_replicates(
    cfg: ExperimentConfig, n_seeds: int, console: Console | None = None, overwrite: bool = False,
) -> dict[str, Any]:
    """``moomtl train --seeds N``: train ``cfg`` with ``train.seed + i`` (same data split) into
    ``<out>/seed_<s>`` (each a run folder; finished ones are not trained again), then write
    ``seeds.json`` and ``seeds.md``: mean ± sd, n and bootstrap 95 % interval of every metric."""
    from moomtl.experiments.run import RUN_FILES, build_data

    console = console or Console()
    out = Path(cfg.out)
    seeds = seed_list(cfg.train.seed, n_seeds)
    with locked(out):
        present = has_state(out, RUN_FILES)
        if present or (out / RESULTS_JSON).exists():
            what = f"a single run ({', '.join(present)})" if present else "a sweep report (results.json)"
            raise ConfigError(f"{out} holds {what}; --seeds writes seed_<s> run folders and seeds.json: choose "
                              "another --out")
        if (out / SEEDS_JSON).exists() and not overwrite:
            old = mio.read_json(out / SEEDS_JSON)
            had = old.get("method") if isinstance(old, dict) else None
            if had != cfg.method_name:
                raise ConfigError(f"{out} holds the seeds of a {had!r} run, not {cfg.method_name!r}; choose "
                                  "another --out or pass --overwrite")
        splits = build_data(cfg)  # once, before the replicates (validates the data settings)
        console.print(f"data: {splits.description}")
        console.print(f"{n_seeds} seeds ({', '.join(map(str, seeds))}): {SEED_NOTE}")
        points = [SweepPoint(label=f"seed {s}", cfg=seed_config(cfg, s, out)) for s in seeds]

        def report_point(p: SweepPoint, summary: dict[str, Any]) -> None:
            console.print(f"  {p.label}: test {_point_line(summary, splits.task_names)} "
                          f"({summary['wall_seconds']:.1f} s)")

        summaries = run_points(points, on_done=report_point, overwrite=overwrite)
        return write_seed_summary(summaries, seeds, out, cfg.method_name, splits.description)


def write_seed_summary(
    summaries: Sequence[dict[str, Any]], seeds: Sequence[int], out: Path, method: str, data: str,
) -> dict[str, Any]:
    """``seeds.json`` / ``seeds.md`` of replicate runs: every final metric (``test/…``, ``val/…``) and
    ``test_mean_acc`` as mean, sd, n and bootstrap 95 % interval over the seeds."""
    finals = [dict(s["final"], **({"test_mean_acc": s["test_mean_acc"]} if s.get("test_mean_acc") is not None
                                  else {})) for s in summaries]
    keys = [k for k in finals[0] if all(isinstance(f.get(k), (int, float)) for f in finals)]
    metrics = {k: stats.summarize([float(f[k]) for f in finals]) for k in keys}
    n = len(seeds)
    lines = [f"## {method}: {n} seeds ({', '.join(map(str, seeds))})", "", f"Data: {data}", "",
             f"n = {n} seeds; {SEED_NOTE}. Interval: percentile bootstrap of the mean over seeds "
             f"({stats.BOOTSTRAP_RESAMPLES} resamples, RNG seed {stats.BOOTSTRAP_SEED}).", "",
             "| metric | mean ± sd | 95 % interval | n | per seed |", "|---|---|---|---|---|"]
    for k in sorted(metrics, key=lambda k: (not k.startswith("test"), k)):
        s = metrics[k]
        each = ", ".join(f"{float(f[k]):.4g}" for f in finals)
        lines.append(f"| {k} | {s.text()} | {s.ci_text()} | {s.n} | {each} |")
    md = "\n".join(lines)
    payload = {"kind": "seeds", "method": method, "data": data, "seeds": list(seeds), "n_seeds": n,
               "seed_note": SEED_NOTE, "metrics": {k: s.to_dict() for k, s in metrics.items()},
               "runs": [SEED_DIR.format(s) for s in seeds],
               "wall_seconds": [float(s["wall_seconds"]) for s in summaries]}
    mio.write_json(out / SEEDS_JSON, payload)
    mio.write_text(out / "seeds.md", md + "\n")
    return {**payload, "markdown": md}


def _seed_fronts(res: dict[str, Any]) -> list[tuple[Any, list[dict[str, Any]]]]:
    """``(seed, rows)`` per seed of a report (one entry for a single-seed sweep)."""
    per_seed = res.get("per_seed")
    if isinstance(per_seed, list) and per_seed:
        return [(e.get("seed"), e["rows"]) for e in per_seed]
    return [(res.get("seed"), res["rows"])]


def _unique_names(runs: Sequence[Path]) -> list[str]:
    names = [Path(r).name for r in runs]
    return [str(r) if names.count(n) > 1 else n for r, n in zip(runs, names, strict=True)]


def _overlap_sentence(a: str, b: str, what: str, sa: stats.SeedStats, sb: stats.SeedStats, higher: bool) -> str:
    over = stats.intervals_overlap(sa.ci95, sb.ci95)
    if over is None:
        few = " and ".join(n for n, s in ((a, sa), (b, sb)) if s.ci95 is None)
        return f"{a} vs {b} ({what}): the interval of {few} is undefined (1 seed), so no 95 % statement."
    if over:
        return f"{a} vs {b} ({what}): the 95 % intervals overlap — not distinguishable at 95 %."
    better = a if (sa.mean > sb.mean) == higher else b
    return f"{a} vs {b} ({what}): the 95 % intervals are disjoint — {better} is better at 95 %."


def compare_sweeps(runs: Sequence[Path], out: Path) -> str:
    """Overlay the fronts of several sweeps (each folder holds ``results.json``, with one or several
    seeds) on one shared reference point (nadir of the pooled non-dominated points of every sweep and
    seed + 10 %). Per sweep: hypervolume and IGD+ to the pooled non-dominated front as mean ± sd over
    its seeds with a percentile-bootstrap 95 % interval (fixed RNG seed), Δm against single-task
    baselines when some sweep has them (its own, else another sweep's on the same data), the
    degenerate-front check, and for every pair of sweeps whether their intervals overlap. A sweep's
    single-task baselines are not part of its front."""
    from moomtl.pareto import hypervolume, igd_plus, non_dominated, reference_point
    from moomtl.pareto.plots import plot_fronts_overlay

    if not runs:
        raise ConfigError("give at least one sweep folder to compare")
    check_output_dir(out)
    loaded = []
    for name, run in zip(_unique_names(runs), runs, strict=True):
        path = Path(run) / RESULTS_JSON
        if not path.is_file():
            raise ConfigError(f"{path} not found: run `moomtl sweep` with --out {run} first")
        loaded.append((name, _read_results(path)))
    tasks = loaded[0][1]["task_names"]
    for name, res in loaded:
        if res["task_names"] != tasks:
            raise ConfigError(f"{name} has tasks {res['task_names']}, expected {tasks}: cannot compare")
    try:
        seed_fronts = {name: [(s, trained_rows(rows)) for s, rows in _seed_fronts(res)] for name, res in loaded}
        losses = {name: [objective_matrix(rows, tasks) for _, rows in fronts] for name, fronts in seed_fronts.items()}
        means = {name: trained_rows(res["rows"]) for name, res in loaded}
        fronts = {name: objective_matrix(rows, tasks) for name, rows in means.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise RunFolderError(f"a results.json lacks per-task test losses ({type(e).__name__}: {e})") from None
    for name, mats in losses.items():
        if any(len(m) == 0 for m in mats):
            raise ConfigError(f"{name} has no trained points (only single-task baselines): nothing to compare")
    pooled = np.vstack([m for mats in losses.values() for m in mats])
    ref = reference_point(pooled, margin=0.1)
    pooled_front = pooled[non_dominated(pooled)]
    shown = shown_metrics(loaded[0][1]["rows"], tasks)
    hv = {name: stats.summarize([float(hypervolume(m, ref)) for m in mats]) for name, mats in losses.items()}
    igdp = {name: stats.summarize([float(igd_plus(m, pooled_front)) for m in mats]) for name, mats in losses.items()}
    conflicts = {name: front_conflict_of(means[name], tasks) for name in means}
    dms = _compare_delta_m(loaded, tasks, shown)
    with_dm = any(v is not None for v in dms.values())
    head = ("| sweep | method | points | Pareto points | hypervolume | IGD+ to pooled front | best "
            + " | best ".join(metric_header(t, m) for t, m in zip(tasks, shown, strict=True))
            + " | seeds | HV 95 % interval | IGD+ 95 % interval |"
            + (" Δm % (↓, mean over points) | best-point Δm % |" if with_dm else "") + " front |")
    lines = [head, "|" + "---|" * (10 + len(tasks) + (2 if with_dm else 0))]
    for name, res in loaded:
        rows = means[name]
        best = []
        for t, m in zip(tasks, shown, strict=True):
            values = [r[f"{t}/{m}"] for r in rows]
            best.append(format_metric(m, max(values) if stats.higher_is_better(m) else min(values)))
        dm_cells = ""
        if with_dm:
            d = dms[name]
            dm_cells = (" n/a (no baselines) | n/a |" if d is None else
                        f" {_stats_from(d['mean_over_points']).text('+.2f')} | "
                        f"{_stats_from(d['best_point']).text('+.2f')} ({d['best_point']['label']}) |")
        lines.append(
            f"| {name} | {res.get('method', '?')} | {len(rows)} | {int(non_dominated(fronts[name]).sum())} | "
            f"{hv[name].text('.6g')} | {igdp[name].text()} | " + " | ".join(best)
            + f" | {hv[name].n} | {hv[name].ci_text('.6g')} | {igdp[name].ci_text()} |" + dm_cells
            + f" {'**degenerate**' if conflicts[name].degenerate else 'trade-off'} |"
        )
    names = [n for n, _ in loaded]
    overlap = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            overlap.append({"a": a, "b": b, "indicator": "hypervolume",
                            "overlap": stats.intervals_overlap(hv[a].ci95, hv[b].ci95),
                            "text": _overlap_sentence(a, b, "hypervolume", hv[a], hv[b], higher=True)})
            overlap.append({"a": a, "b": b, "indicator": "igd_plus",
                            "overlap": stats.intervals_overlap(igdp[a].ci95, igdp[b].ci95),
                            "text": _overlap_sentence(a, b, "IGD+", igdp[a], igdp[b], higher=False)})
    degenerate = [f"- {n}: {conflict_line(conflicts[n])}" for n in names if conflicts[n].degenerate]
    md = "\n".join([
        "## Front comparison (objectives: per-task test loss)", "", *lines, "",
        f"Shared reference point {np.round(ref, 4).tolist()} (nadir of the pooled non-dominated points of every "
        "sweep and seed + 10 % of their range). Hypervolume and IGD+: mean ± sd over each sweep's seeds; 95 % "
        f"interval: percentile bootstrap of the mean over seeds ({stats.BOOTSTRAP_RESAMPLES} resamples, RNG seed "
        f"{stats.BOOTSTRAP_SEED}; undefined with 1 seed). Single-task baselines are not part of a sweep's front; "
        "'best' is the best trained point (seed mean).",
        *(["", f"{DELTA_M_NOTE}. The best point is the one with the lowest seed-mean test Δm (chosen on test "
               "data, so optimistic; the mean over the points is not a choice)."] if with_dm else []),
        *(["", "Intervals:", *[f"- {o['text']}" for o in overlap]] if overlap else []),
        *(["", f"Caution: with fewer than {FEW_SEEDS} seeds the percentile-bootstrap interval is narrow (with 2 "
               "seeds it spans just the two values) and covers the true mean less often than 95 %; read 'better "
               "at 95 %' as indicative."] if overlap and any(1 < s.n < FEW_SEEDS for s in hv.values()) else []),
        *(["", "Degenerate fronts:", *degenerate] if degenerate else []),
    ])
    plot_fronts_overlay(fronts, out / "comparison.png", hv={n: s.mean for n, s in hv.items()},
                        objective_names=[f"{t} test loss" for t in tasks])
    mio.write_text(out / "comparison.md", md + "\n")
    mio.write_json(out / "comparison.json", {
        "reference_point": ref.tolist(), "hypervolume": {n: s.mean for n, s in hv.items()},
        "runs": [str(r) for r in runs],
        "hypervolume_stats": {n: s.to_dict() for n, s in hv.items()},
        "igd_plus_stats": {n: s.to_dict() for n, s in igdp.items()},
        "delta_m": dms, "overlap": overlap,
        "degenerate_front": {n: c.degenerate for n, c in conflicts.items()},
        "front_conflict": {n: c.to_dict() for n, c in conflicts.items()},
        "bootstrap": {"resamples": stats.BOOTSTRAP_RESAMPLES, "seed": stats.BOOTSTRAP_SEED, "level": 0.95},
    })
    return md


def _compare_delta_m(
    loaded: Sequence[tuple[str, dict[str, Any]]], tasks: Sequence[str], shown: Sequence[str],
) -> dict[str, dict[str, Any] | None]:
    """Δm per sweep: against its own single-task baselines, else against those of another sweep on the
    same data (``data`` of the report); ``None`` when there are none."""
    own = {name: baselines_of([rows for _, rows in _seed_fronts(res)], tasks, shown) for name, res in loaded}
    out: dict[str, dict[str, Any] | None] = {}
    for name, res in loaded:
        base, source = own[name], name
        if base is None:
            source = next((n for n, r in loaded if own[n] is not None and r.get("data") == res.get("data")), None)
            base = own[source] if source is not None else None
        summary = delta_m_summary([rows for _, rows in _seed_fronts(res)], tasks, shown, base) if base else None
        out[name] = {**summary, "baselines_from": source} if summary is not None else None
    return out
