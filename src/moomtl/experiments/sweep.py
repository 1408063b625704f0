"""Preference sweeps: train one model per preference vector (sequentially or in worker processes),
collect the test metrics of every point into one results file, and resume a half-finished sweep
without retraining finished points (a point is finished when its ``result.json`` exists; that file
is written atomically as the very last step of a run)."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from moomtl.config import ConfigError, ExperimentConfig
from moomtl.experiments.run import RESULT, run_experiment
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
        if not (Path(self.cfg.out) / RESULT).is_file():
            return False
        check_same_config(Path(self.cfg.out), self.cfg)
        return True


def check_same_config(folder: Path, cfg: ExperimentConfig) -> None:
    saved = folder / "config.yaml"
    if saved.is_file() and _settings(yaml.safe_load(saved.read_text())) != _settings(cfg.to_dict()):
        raise ConfigError(
            f"{folder} holds a finished run with other settings (see its config.yaml); "
            "choose another --out or delete that folder"
        )


def _settings(raw: dict[str, Any]) -> dict[str, Any]:
    """What determines a run's result: everything but display options."""
    out = copy.deepcopy(raw)
    out.get("train", {}).pop("progress", None)
    return out


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


def _run_point(point: SweepPoint, threads: int | None) -> dict[str, Any]:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    summary = run_experiment(point.cfg, resume=True)
    return summary


def run_points(
    points: Sequence[SweepPoint], workers: int = 1, on_done: Callable[[SweepPoint, dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Train every unfinished point (skipping those with a ``result.json``); return all summaries
    in the order of ``points``. With ``workers > 1`` points run in separate processes, each with
    ``cores // workers`` torch threads."""
    todo = [p for p in points if not p.done]
    if workers <= 1 or len(todo) <= 1:
        for p in todo:
            summary = _run_point(p, None)
            if on_done:
                on_done(p, summary)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        for p in todo:
            p.cfg.train.progress = False  # progress bars from several processes garble the terminal
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_point, p, threads): p for p in todo}
            for fut, p in futures.items():
                summary = fut.result()
                if on_done:
                    on_done(p, summary)
    return [json.loads((Path(p.cfg.out) / RESULT).read_text()) for p in points]


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
    return row
