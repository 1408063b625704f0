"""Preference sweeps: train one model per preference vector (sequentially or in worker processes),
collect the test metrics of every point into one results file, and resume a half-finished sweep
without retraining finished points (a point is finished when its ``result.json`` exists; that file
is written atomically as the very last step of a run).

Seeds (``--seeds N``): replicate ``i`` trains with ``train.seed + i`` (model initialization, batch
order, dropout) in its own sub-folder ``seed_<s>`` (:func:`seed_config`); the **data split stays
fixed** (``data.seed`` is not changed), so every replicate is evaluated on the same test set and the
spread over seeds is the training randomness only. Replicates resume like sweep points."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moomtl.config import ConfigError, ExperimentConfig
from moomtl.experiments.backends import check_backend, local_map, ray_map
from moomtl.experiments.run import check_resumable, read_run_result, run_experiment, run_finished
from moomtl.methods.base import get_method_class


@dataclass
class SweepPoint:
    label: str  # e.g. "w=(0.25, 0.75)" or "single:left"
    cfg: ExperimentConfig
    preference: list[float] | None = None

    @property
    def done(self) -> bool:
        """Finished: ``result.json`` exists — and was trained with this very config (a folder reused
        with other settings is an error, never silently mixed into the front)."""
        folder = Path(self.cfg.out)
        check_resumable(folder, self.cfg)
        return run_finished(folder, self.cfg)


SEED_DIR = "seed_{}"


def seed_list(base_seed: int, n_seeds: int) -> list[int]:
    """The training seeds of ``n_seeds`` replicates: ``base_seed, base_seed + 1, …``.

    >>> seed_list(3, 2)
    [3, 4]
    """
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be ≥ 1, got {n_seeds}")
    return [int(base_seed) + i for i in range(n_seeds)]


def seed_config(base: ExperimentConfig, seed: int, out: Path) -> ExperimentConfig:
    """A copy of ``base`` that trains with ``train.seed = seed`` into ``out/seed_<seed>`` (the data
    split, ``data.seed``, is unchanged)."""
    cfg = copy.deepcopy(base)
    cfg.train.seed = int(seed)
    cfg.out = str(Path(out) / SEED_DIR.format(seed))
    return cfg


def check_same_config(folder: Path, cfg: ExperimentConfig) -> None:
    """Refuse a folder that holds a run (finished or interrupted) with other settings than ``cfg``."""
    check_resumable(folder, cfg)


def point_dir_name(prefix: str, values: Sequence[float]) -> str:
    """Folder name of a sweep point from its values (not its index), so resuming with a different
    number of points reuses exactly the points that match. ``point_dir_name("tch", [0.25, 0.75])`` is
    ``"tch_0.25-0.75"``."""
    return prefix + "_" + "-".join(f"{v:.4g}" for v in values)


def preference_points(
    base: ExperimentConfig, preferences: np.ndarray, out: Path, method: str | None = None
) -> list[SweepPoint]:
    """One point per row of ``preferences``, each a copy of ``base`` whose method preference
    hyper-parameter (``Method.preference_param``) is set to that row."""
    name = method or base.method_name
    try:
        cls = get_method_class(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cls.preference_param is None:
        raise ConfigError(f"method {name!r} takes no preference vector, so it cannot be swept")
    points = []
    for pref in np.asarray(preferences, dtype=float):
        cfg = copy.deepcopy(base)
        params = cfg.method_params if cfg.method_name == name else {}
        params[cls.preference_param] = [round(float(v), 6) for v in pref]
        cfg.method = {"name": name, **params}
        cfg.out = str(out / point_dir_name(name, pref))
        label = "(" + ", ".join(f"{v:.2f}" for v in pref) + ")"
        points.append(SweepPoint(label=f"{name} {label}", cfg=cfg, preference=[float(v) for v in pref]))
    return points


def single_task_points(base: ExperimentConfig, task_names: Sequence[str], out: Path) -> list[SweepPoint]:
    points = []
    for task in task_names:
        cfg = copy.deepcopy(base)
        cfg.method = {"name": "single_task", "task": task}
        cfg.out = str(out / f"single_{task}")
        points.append(SweepPoint(label=f"single-task {task}", cfg=cfg))
    return points


def _run_point(point: SweepPoint, threads: int | None, overwrite: bool = False) -> dict[str, Any]:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if overwrite:
        return run_experiment(point.cfg, overwrite=True)
    return run_experiment(point.cfg, resume=True)


def run_points(
    points: Sequence[SweepPoint], workers: int = 1, on_done: Callable[[SweepPoint, dict[str, Any]], None] | None = None,
    overwrite: bool = False, backend: str = "process", address: str | None = None,
) -> list[dict[str, Any]]:
    """Train every unfinished point (skipping those with a ``result.json``); return all summaries
    in the order of ``points``. With ``workers > 1`` points run in separate processes, each with
    ``cores // workers`` torch threads; with ``backend="ray"`` as Ray tasks (a local Ray with ``workers``
    CPUs' worth of tasks, or the cluster at ``address``; :mod:`moomtl.experiments.backends`). Every point
    that holds any state (finished or interrupted) is compared with its settings first, before anything
    is trained (``overwrite``: retrain all) — for every backend alike."""
    check_backend(backend, address)
    todo = list(points) if overwrite else [p for p in points if not p.done]
    if backend == "ray" and todo:
        threads = max(1, (os.cpu_count() or 1) // max(workers, 1)) if address is None else 1
        for p in todo:
            p.cfg.train.progress = False
        done = ray_map(_run_point, todo, threads, overwrite, address=address)
    elif workers <= 1 or len(todo) <= 1:
        done = ((p, _run_point(p, None, overwrite)) for p in todo)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        for p in todo:
            p.cfg.train.progress = False  # progress bars from several processes garble the terminal
        done = local_map(_run_point, todo, workers, threads, overwrite)
    for p, summary in done:
        if on_done:
            on_done(p, summary)
    return [read_run_result(Path(p.cfg.out)) for p in points]


def result_row(point: SweepPoint, summary: dict[str, Any], task_names: Sequence[str]) -> dict[str, Any]:
    final = summary["final"]
    row: dict[str, Any] = {"label": point.label, "method": summary["method"], "preference": point.preference}
    for t in task_names:
        prefix = f"test/{t}/"
        row.update({f"{t}/{k[len(prefix):]}": v for k, v in final.items() if k.startswith(prefix)})
        if f"{t}/acc" in row:
            row[f"{t}/err"] = 1.0 - row[f"{t}/acc"]
    row["wall_seconds"] = summary["wall_seconds"]
    row["run_dir"] = point.cfg.out
    if summary["method"] == "single_task":  # the baseline of this task (Δm)
        row["single_task"] = point.cfg.method_params.get("task")
    return row
