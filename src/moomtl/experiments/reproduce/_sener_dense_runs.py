"""The training grid shared by the Sener & Koltun (2018) data-set entries (``sener2018-celeba``,
``sener2018-cityscapes``): one run per (method, seed), each in its own sub-folder of the entry's
``out`` and trained through :func:`moomtl.experiments.run.run_experiment` with ``resume=True``, so a
rerun returns the finished runs' summaries without training them again and continues interrupted ones
from their checkpoints. The data splits are built once, and only when some run still has to train.

The paper's five rows: single task (one network per task: the ``single_task`` weighting trains only
that task's head and the encoder), uniform scaling (``uniform``, the mean of the losses), Kendall et
al.'s uncertainty weighting (``kendall``), GradNorm (``gradnorm``, α = 1.5) and MGDA-UB (``mgda_ub``
with the authors' ``loss+`` gradient normalization).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from moomtl.config import ConfigError, ExperimentConfig, parse_config
from moomtl.data.base import DataSplits
from moomtl.experiments.reproduce.base import Stat
from moomtl.experiments.run import build_data, read_run_config, run_experiment, run_finished
from moomtl.rundir import settings_diff

#: The paper's columns, in its order: key → (label, method config). Single task is expanded per task.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "single": ("single task", {"name": "single_task"}),
    "uniform": ("uniform scaling", {"name": "uniform"}),
    "kendall": ("Kendall et al.", {"name": "kendall"}),
    "gradnorm": ("GradNorm", {"name": "gradnorm", "alpha": 1.5}),
    "mgda_ub": ("MGDA-UB", {"name": "mgda_ub", "normalization": "loss+"}),
}


@dataclass(frozen=True)
class Run:
    """One (method, seed) training run: ``key`` names its folder (``single_<task>`` for single task)."""

    key: str
    method: str  # a key of METHODS
    seed: int
    cfg: ExperimentConfig
    task: str | None = None  # single task: the task it trains


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, section by section (a new dict; neither input changes).

    >>> deep_merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}})
    {'a': {'x': 1, 'y': 3}, 'b': 1}
    """
    out = copy.deepcopy(dict(base))
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def folder_name(task: str) -> str:
    """A folder-safe form of a task name (``Wearing_Hat`` stays, ``a b`` → ``a_b``)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in task)


def plan_runs(raw: Mapping[str, Any], out: Path, seeds: int, single_tasks: Sequence[str],
              methods: Sequence[str] = tuple(METHODS)) -> list[Run]:
    """Every run of the grid: for each seed, one single-task run per task of ``single_tasks`` and one
    run per other method; ``raw`` is the shared config (its ``train.seed`` is replaced by the seed)."""
    runs: list[Run] = []
    for seed in range(seeds):
        for m in methods:
            tasks: Sequence[str | None] = list(single_tasks) if m == "single" else [None]
            for task in tasks:
                key = f"single_{folder_name(task)}" if task is not None else m
                method = dict(METHODS[m][1], **({"task": task} if task is not None else {}))
                cfg = parse_config(deep_merge(raw, {"method": method, "train": {"seed": seed},
                                                    "out": str(out / key / f"seed{seed}")}))
                runs.append(Run(key=key, method=m, seed=seed, cfg=cfg, task=task))
    return runs


def train_all(
    runs: Sequence[Run], console: Console, splits_for: Callable[[ExperimentConfig], DataSplits] = build_data,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Train (or resume) every run; ``{(key, seed): run summary}`` (the dict run_experiment returns).
    Settings of a folder that holds another run are refused before anything trains."""
    for r in runs:
        folder = Path(r.cfg.out)
        if (folder / "config.yaml").is_file():
            diffs = settings_diff(read_run_config(folder), r.cfg.to_dict())
            if diffs:
                raise ConfigError(
                    f"{folder} holds a run with other settings ({'; '.join(diffs[:3])}); choose another --out "
                    "(--overwrite does not delete the runs of an entry's folder)")
    cache: dict[str, DataSplits] = {}
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for i, r in enumerate(runs):
        splits = None
        if not run_finished(Path(r.cfg.out), r.cfg):
            data_key = repr(r.cfg.data)
            if data_key not in cache:
                cache[data_key] = splits_for(r.cfg)
            splits = cache[data_key]
        summary = run_experiment(r.cfg, resume=True, splits=splits)
        done = summary.get("resumed_from") == r.cfg.train.epochs
        console.print(f"[{i + 1}/{len(runs)}] {r.key} seed {r.seed}: "
                      f"{'finished before, not retrained' if done else 'trained'}", highlight=False)
        out[(r.key, r.seed)] = summary
    return out


def metric_stat(summaries: Mapping[tuple[str, int], Mapping[str, Any]], key: str, seeds: int, metric: str,
                scale: float = 1.0, transform: Callable[[float], float] = lambda v: v) -> Stat | None:
    """Mean ± sd over seeds of ``transform(final[metric]) * scale`` for run ``key`` (None when absent)."""
    vals = []
    for s in range(seeds):
        summary = summaries.get((key, s))
        if summary is None or metric not in summary["final"]:
            return None
        v = transform(float(summary["final"][metric])) * scale
        if not math.isfinite(v):
            raise ValueError(f"{key} seed {s}: {metric} is not finite")
        vals.append(v)
    return Stat.of(vals)


def cell(stats: Mapping[str, Stat | None], fmt: str = ".2f") -> str:
    """``single a ± b · uniform ...`` (methods without a value: ``—``), in the paper's column order."""
    parts = []
    for m, (label, _) in METHODS.items():
        s = stats.get(m)
        parts.append(f"{label} {s.mean:{fmt}} ± {s.sd:{fmt}}" if s is not None else f"{label} —")
    return " · ".join(parts)


def paper_cell(values: Mapping[str, float | None], fmt: str = ".2f") -> str:
    return " · ".join(f"{label} {values[m]:{fmt}}" if values.get(m) is not None else f"{label} —"
                      for m, (label, _) in METHODS.items())
