"""``moomtl psl``: train ONE preference-conditioned model for the whole front, then evaluate it on a
Das-Dennis lattice of preferences and write the same report as a sweep (``results.json`` with
``"kind": "psl"``, ``results.md``, the front plot), next to the trainer's files (``config.yaml`` with the
``psl`` section, ``checkpoint.pt``, ``metrics.*``, ``model.pt``: the conditioned model's state dict) and
``result.json`` (the run summary, written when training has finished).

Training is moomtl's :class:`~moomtl.train.trainer.Trainer` with a :class:`~moomtl.psl.objectives.
ConditionedMethod` (the configured scalarization, at the preference of each batch) and a
:class:`~moomtl.psl.objectives.PreferenceSampler` (``λ ~ Dir(α)`` per batch); the trainer evaluates no
split during training (a random preference would say nothing), the lattice is evaluated at the end.

A folder holds one run: a folder that holds any run is refused unless ``resume`` (the same settings;
only ``train.epochs`` may grow; the checkpoint continues bit for bit) or ``overwrite``; a sweep's folder
is refused. The folder is locked while this runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from moomtl import io as mio
from moomtl.config import ConfigError, ExperimentConfig
from moomtl.data.base import DataSplits
from moomtl.experiments.report import RESULTS_JSON, SweepReport, write_front
from moomtl.experiments.run import (
    build_data,
    build_method_from,
    build_model_from,
    make_trainer,
    read_run_config,
    validate_optimization,
)
from moomtl.models.base import count_parameters
from moomtl.psl.config import PSLConfig, dump_psl_config, settings_of
from moomtl.psl.objectives import PSL_METHODS, ConditionedMethod, PreferenceSampler
from moomtl.psl.run import MODEL, RESULT, build_conditioned, evaluate_at, model_spec
from moomtl.rundir import RunFolderError, check_output_dir, has_state, locked, settings_diff

#: What a PSL run writes into its folder.
PSL_FILES = ("config.yaml", "checkpoint.pt", "metrics.json", "metrics.csv", "final_metrics.json", MODEL, RESULT,
             RESULTS_JSON, "results.md", "pareto.png", "parallel.png")


@dataclass
class PSLReport:
    """What :func:`run_psl` returns: the front report, the run summary and where training started."""

    report: SweepReport
    summary: dict[str, Any]
    resumed_from: int


def _check_method(cfg: ExperimentConfig) -> None:
    from moomtl.methods.base import get_method_class

    name = cfg.method_name
    if name not in PSL_METHODS:
        raise ConfigError(f"method {name!r} cannot train a preference-conditioned model; choose one of: "
                          f"{', '.join(PSL_METHODS)}")
    param = get_method_class(name).preference_param
    if param in cfg.method_params:
        raise ConfigError(f"method.{param}: psl draws the preference per batch; remove it from the method section")


def _prepare_folder(out: Path, cfg: ExperimentConfig, psl: PSLConfig, resume: bool, overwrite: bool) -> None:
    present = has_state(out, PSL_FILES)
    if not present:
        return
    if (out / RESULTS_JSON).is_file() and not overwrite:
        try:
            kind = mio.read_json(out / RESULTS_JSON).get("kind")
        except (OSError, ValueError, AttributeError) as e:
            raise RunFolderError(f"{out / RESULTS_JSON} is unreadable ({e}); choose another --out") from None
        if kind != "psl":
            raise ConfigError(f"{out} holds the report of a sweep, not of a psl run; choose another --out, or pass "
                              "--overwrite to replace it")
    if resume:
        if (out / "config.yaml").is_file():
            diffs = settings_diff(read_run_config(out), settings_of(cfg, psl))
            if diffs:
                raise ConfigError(f"{out} holds a run with other settings ({'; '.join(diffs)}); resume only allows "
                                  "more train.epochs: give the same settings, another --out, or --overwrite")
        return
    if not overwrite:
        raise ConfigError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it or "
                          "--overwrite to replace it")
    for name in present:
        (out / name).unlink()


def run_psl(
    cfg: ExperimentConfig, psl: PSLConfig, n_preferences: int = 11, resume: bool = False, overwrite: bool = False,
    splits: DataSplits | None = None, console: Console | None = None, preferences: np.ndarray | None = None,
) -> PSLReport:
    """Train the preference-conditioned model of ``cfg`` (``cfg.method`` is the scalarization) into
    ``cfg.out`` and write its front on ``lattice_for(n_preferences, T)``, or on the rows of
    ``preferences`` when given (see the module docstring). ``splits`` lets callers reuse data already built."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if n_preferences < 1:
        raise ConfigError(f"--preferences must be ≥ 1, got {n_preferences}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("moomtl psl runs in one process (not under torchrun)")
    _check_method(cfg)
    inner = build_method_from(cfg)
    validate_optimization(cfg)
    out = Path(cfg.out)
    check_output_dir(out)
    with locked(out):
        _prepare_folder(out, cfg, psl, resume, overwrite)
        splits = splits if splits is not None else build_data(cfg)
        torch.manual_seed(cfg.train.seed)  # model init depends on the run seed only
        base = build_model_from(cfg, splits)
        base_parameters = count_parameters(base)
        model = build_conditioned(base, psl)
        method = ConditionedMethod(inner)
        trainer = make_trainer(cfg, model, method, out, callbacks=[PreferenceSampler(psl.alpha)])
        try:
            method.setup(splits.task_names, model)
        except ValueError as e:
            raise ConfigError(f"method: {e}") from None
        mio.write_text(out / "config.yaml", dump_psl_config(cfg, psl))
        if (out / RESULT).exists():  # a resumed run is unfinished until it is trained and evaluated again
            (out / RESULT).unlink()
        # The trainer evaluates no split while training (the preference is random per batch).
        quiet = DataSplits(splits.train, splits.val.subset(0), splits.test.subset(0), splits.description,
                           splits.tasks)
        t0 = time.perf_counter()
        result = trainer.fit(quiet, resume=resume)
        train_seconds = time.perf_counter() - t0
        steps = int(result.history[-1]["step"]) if result.history else 0
        summary = {
            "kind": "psl", "scalarization": cfg.method_name, "method_params": cfg.method_params,
            "psl": psl.to_dict(), "model": cfg.model.name, "model_spec": model_spec(splits),
            "parameters": count_parameters(model), "base_parameters": base_parameters, "data": splits.description,
            "epochs": cfg.train.epochs, "train_steps": steps, "wall_seconds": train_seconds,
            "resumed_from": result.resumed_from,
        }
        report = write_lattice_front(model, splits, cfg, n_preferences, summary, trainer.device, preferences)
        mio.write_json(out / RESULT, {**summary, "hypervolume": report.hypervolume})
        if console is not None:
            console.print(f"data: {splits.description}", highlight=False)
        return PSLReport(report=report, summary=summary, resumed_from=result.resumed_from)


def write_lattice_front(model: Any, splits: DataSplits, cfg: ExperimentConfig, n_preferences: int,
                        summary: dict[str, Any], device: Any, preferences: np.ndarray | None = None) -> SweepReport:
    """Evaluate ``model`` at every preference of ``lattice_for(n_preferences, T)`` (or of ``preferences``),
    on val and test, and write the front report."""
    from moomtl.pareto import lattice_for

    tasks = splits.task_specs()
    names = list(splits.task_names)
    prefs = np.asarray(lattice_for(n_preferences, len(names)) if preferences is None else preferences, dtype=float)
    if prefs.ndim != 2 or prefs.shape[1] != len(names):
        raise ConfigError(f"preferences must have one column per task ({len(names)}), got shape {prefs.shape}")
    name = f"psl:{cfg.method_name}"
    rows = []
    for pref in prefs:
        t0 = time.perf_counter()
        test = evaluate_at(model, splits.test, tasks, pref, device)
        val = evaluate_at(model, splits.val, tasks, pref, device) if len(splits.val) else {}
        row: dict[str, Any] = {"label": f"{name} (" + ", ".join(f"{v:.2f}" for v in pref) + ")", "method": name,
                               "preference": [float(v) for v in pref]}
        row.update(test)
        for t in names:
            if f"{t}/acc" in row:
                row[f"{t}/err"] = 1.0 - row[f"{t}/acc"]
        row["val"] = val
        row["eval_seconds"] = time.perf_counter() - t0
        row["run_dir"] = cfg.out
        rows.append(row)
    extra = {"kind": "psl", "method": name, "scalarization": cfg.method_name, "data": splits.description,
             "psl": summary["psl"], "train_steps": summary["train_steps"], "epochs": summary["epochs"],
             "train_seconds": summary["wall_seconds"], "parameters": summary["parameters"],
             "base_parameters": summary["base_parameters"]}
    return write_front(rows, names, Path(cfg.out), f"PSL ({cfg.method_name}) on {cfg.data.dataset}", extra=extra)


__all__ = ["PSL_FILES", "PSLReport", "run_psl", "write_lattice_front"]
