"""The sparse multi-task pipeline of Hotegni et al. (seeds 000/001), done as the paper intends:

1. **search** — train with MWC + Augmented Lagrangian (``mwc_alm``) whose first objective is the GrOWL
   penalty (with real gradients), and apply the exact GrOWL prox after every step (threshold
   ``lr × strength × k0``) once ``warmup_epochs`` have passed;
2. **tying** — cluster the surviving rows of every regularized layer by affinity propagation;
3. **retraining** — train again with pruned rows held at zero and each cluster tied to its mean.

For a sweep over the sparsity weight ``k0`` each point is one full pipeline; the results form a
3-objective front (task-1 test loss, task-2 test loss, density = 100 − group sparsity %), drawn as 2-D
projections and accuracy-vs-sparsity plots.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from moomtl import io as mio
from moomtl.config import ConfigError, ExperimentConfig, dump_config
from moomtl.data.base import DataSplits
from moomtl.events import Callback, TrainState
from moomtl.experiments.run import (
    RUN_FILES,
    build_data,
    build_model_from,
    make_trainer,
    read_run_result,
    validate_optimization,
)
from moomtl.experiments.sweep import check_same_config, point_dir_name
from moomtl.methods.base import build_method
from moomtl.models.base import count_parameters
from moomtl.rundir import check_output_dir, locked
from moomtl.tasks import Classification

RESULT = "result.json"


class StartAtEpoch(Callback):
    """Forward events to ``inner`` only from epoch ``start`` on (0-based)."""

    def __init__(self, inner: Callback, start: int) -> None:
        self.inner, self.start = inner, start

    def on_step_end(self, state: TrainState) -> None:
        if state.epoch >= self.start:
            self.inner.on_step_end(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch >= self.start:
            self.inner.on_epoch_end(state)


def _task_preference(cfg: ExperimentConfig, n_tasks: int) -> list[float]:
    if cfg.method_name != "mwc_alm":
        raise ConfigError(f"the sparse pipeline trains with method mwc_alm, got method.name={cfg.method_name!r}")
    pref = cfg.method_params.get("preference")
    if pref is None:
        return [1.0 / n_tasks] * n_tasks
    if len(pref) != n_tasks:
        raise ConfigError(f"method.preference: give one weight per task ({n_tasks}); k0 comes from sparsity.k0")
    return [float(v) for v in pref]


def run_sparse_point(cfg: ExperimentConfig, k0: float, splits: DataSplits, out: Path) -> dict[str, Any]:
    """One search → tying → retraining pipeline for sparsity weight ``k0``; writes ``out/result.json``."""
    from moomtl.sparsity import (
        GrOWLProx,
        TyingEnforcer,
        TyingPlan,
        compress_model,
        make_tying_plan,
        regularized_groups,
        sparsity_report,
    )

    sp = cfg.sparsity
    task_pref = _task_preference(cfg, len(splits.task_names))
    params = {**cfg.method_params, "preference": [float(k0), *task_pref]}
    torch.manual_seed(cfg.train.seed)
    model = build_model_from(cfg, splits)
    dense_params = count_parameters(model)
    groups = regularized_groups(model)

    search_cfg = copy.deepcopy(cfg)
    search_cfg.train.epochs = sp.search_epochs
    method = build_method("mwc_alm", **params)
    prox = GrOWLProx(groups, sp.theta, strength=sp.strength * k0, beta1=sp.beta1, beta2=sp.beta2,
                     max_zero_fraction=sp.max_zero_fraction)
    callbacks = [StartAtEpoch(prox, sp.warmup_epochs)] if k0 > 0 else []
    search = make_trainer(search_cfg, model, method, out / "search", callbacks=callbacks).fit(splits)
    after_search = sparsity_report(model, groups)

    if sp.tying and k0 > 0:
        plan = make_tying_plan(groups, preference=sp.tying_preference, random_state=cfg.train.seed)
    else:
        plan = TyingPlan.from_masks(groups)  # keeps pruned rows at zero, no tying
    history = search.history
    if sp.retrain_epochs > 0:
        retrain_cfg = copy.deepcopy(cfg)
        retrain_cfg.train.epochs = sp.retrain_epochs
        retrain_cfg.train.seed = cfg.train.seed + 1
        method = build_method("mwc_alm", **params)
        retrain = make_trainer(retrain_cfg, model, method, out / "retrain",
                               callbacks=[TyingEnforcer(plan, every=sp.tying_every)]).fit(splits)
        history = retrain.history
    final = retrain.metrics if sp.retrain_epochs > 0 else search.metrics
    report = sparsity_report(model, groups)
    compressed = compress_model(model, groups)
    summary = {
        "k0": float(k0),
        "preference": params["preference"],
        "model": cfg.model.name,
        "data": splits.description,
        "final": final,
        "sparsity": report.as_dict(prefix=""),
        "sparsity_after_search": after_search.as_dict(prefix=""),
        "tying_clusters": {name: list(v) for name, v in plan.summary().items()},
        "dense_parameters": dense_params,
        "compressed_parameters": count_parameters(compressed),
        "alm_last": {k: v for k, v in history[-1].items() if k.startswith("train/")},
    }
    # A state dict (tensors only), loadable with torch.load(weights_only=True); its shapes are the
    # compressed architecture.
    mio.torch_save(compressed.state_dict(), out / "compressed_model.pt")
    mio.write_json(out / RESULT, summary)
    return summary


def run_sparse(cfg: ExperimentConfig, console: Console | None = None) -> dict[str, Any]:
    """The pipeline for every ``k0`` in ``cfg.sparsity.k0`` (finished points are skipped), then the
    3-objective front report in ``cfg.out``: ``results.json``, ``results.md``, ``sparsity_front.png``."""
    console = console or Console()
    validate_optimization(cfg)
    out = check_output_dir(cfg.out)
    splits = build_data(cfg)
    dense = [t for t, spec in splits.task_specs().items() if not isinstance(spec, Classification)]
    if dense:  # its tables and plots are per-task accuracy, as in the paper
        raise ConfigError(f"moomtl sparse supports classification tasks only; {', '.join(dense)} are not")
    task_pref = _task_preference(cfg, len(splits.task_names))
    try:  # validate the method's hyper-parameters before any training
        build_method("mwc_alm", **{**cfg.method_params, "preference": [cfg.sparsity.k0[0], *task_pref]})
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None
    console.print(f"data: {splits.description}")
    with locked(out):
        return _run_sparse_points(cfg, splits, out, console)


def _run_sparse_points(cfg: ExperimentConfig, splits: DataSplits, out: Path, console: Console) -> dict[str, Any]:
    points = []
    for k0 in cfg.sparsity.k0:
        point = out / point_dir_name("k0", [k0])
        point_cfg = copy.deepcopy(cfg)
        point_cfg.sparsity.k0 = [k0]
        point_cfg.out = str(point)
        check_same_config(point, point_cfg)  # every point with any state, before anything is trained
        points.append((k0, point, point_cfg))
    mio.write_text(out / "config.yaml", dump_config(cfg))
    rows = []
    for k0, point, point_cfg in points:
        if (point / RESULT).is_file():
            summary = read_run_result(point)
            console.print(f"k0={k0}: already done")
        else:
            with locked(point):
                for stage in ("search", "retrain"):  # an interrupted point restarts from scratch
                    for name in RUN_FILES:
                        (point / stage / name).unlink(missing_ok=True)
                mio.write_text(point / "config.yaml", dump_config(point_cfg))
                summary = run_sparse_point(cfg, k0, splits, point)
        f = summary["final"]
        accs = ", ".join(f"{t} {100 * f[f'test/{t}/acc']:.2f}%" for t in splits.task_names)
        console.print(f"k0={k0}: test acc {accs}; group sparsity {summary['sparsity']['group_sparsity']:.1f}%, "
                      f"parameter sparsity {summary['sparsity']['parameter_sparsity']:.1f}%")
        rows.append(summary)
    return write_sparse_report(rows, list(splits.task_names), out, title=f"{cfg.model.name}: MWC+ALM+GrOWL")


def write_sparse_report(rows: list[dict[str, Any]], task_names: list[str], out: Path, title: str) -> dict[str, Any]:
    from moomtl.pareto import hypervolume, non_dominated, reference_point
    from moomtl.pareto.plots import plot_parallel_coordinates

    objs = np.array([[r["final"][f"test/{t}/loss"] for t in task_names] + [100.0 - r["sparsity"]["group_sparsity"]]
                     for r in rows])
    mask = non_dominated(objs)
    ref = reference_point(objs, margin=0.1)
    hv = float(hypervolume(objs, ref))
    head = ["k0", *[f"{t} acc %" for t in task_names], *[f"{t} loss" for t in task_names], "group sparsity %",
            "param sparsity %", "compression", "sharing", "params (compressed/dense)", "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, nd in zip(rows, mask, strict=True):
        s, f = r["sparsity"], r["final"]
        lines.append("| " + " | ".join([
            f"{r['k0']:g}", *[f"{100 * f[f'test/{t}/acc']:.2f}" for t in task_names],
            *[f"{f[f'test/{t}/loss']:.4f}" for t in task_names], f"{s['group_sparsity']:.1f}",
            f"{s['parameter_sparsity']:.1f}", f"{s['compression_rate']:.2f}", f"{s['parameter_sharing']:.2f}",
            f"{r['compressed_parameters']:,}/{r['dense_parameters']:,}", "yes" if nd else "",
        ]) + " |")
    md = "\n".join([f"## {title}", "", *lines, "",
                    f"3-objective hypervolume (test losses, density = 100 − group sparsity %): {hv:.6g} "
                    f"(reference {np.round(ref, 4).tolist()})."])
    labels = [f"k0={r['k0']:g}" for r in rows]
    names = [f"{t} test loss" for t in task_names] + ["density %"]
    _plot_projections(objs, rows, task_names, labels, names, out / "sparsity_front.png", title)
    plot_parallel_coordinates(objs, out / "sparsity_parallel.png", labels=labels, objective_names=names, title=title)
    marked = [{**r, "pareto": bool(m)} for r, m in zip(rows, mask, strict=True)]
    payload = {"title": title, "task_names": task_names, "objectives": names, "hypervolume": hv,
               "reference_point": ref.tolist(), "rows": marked}
    mio.write_json(out / "results.json", payload)
    mio.write_text(out / "results.md", md + "\n")
    return {"markdown": md, **payload}


def _plot_projections(objs: np.ndarray, rows: list[dict[str, Any]], task_names: list[str], labels: list[str],
                      names: list[str], path: Path, title: str) -> None:
    """2-D projections of the 3-objective front plus test accuracy vs group sparsity."""
    from matplotlib.figure import Figure

    from moomtl.pareto import non_dominated
    from moomtl.pareto.plots import save_figure_atomic

    fig = Figure(figsize=(17, 4.2))
    axes = fig.subplots(1, 4)
    for ax, (i, j) in zip(axes[:3], [(0, 1), (0, 2), (1, 2)], strict=True):
        nd = non_dominated(objs[:, [i, j]])
        ax.scatter(objs[:, i], objs[:, j], c=["C3" if m else "C0" for m in nd])
        for (x, y), lab in zip(objs[:, [i, j]], labels, strict=True):
            ax.annotate(lab, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
    sparsity = [r["sparsity"]["group_sparsity"] for r in rows]
    for t in task_names:
        axes[3].plot(sparsity, [100 * r["final"][f"test/{t}/acc"] for r in rows], "o-", label=t)
    axes[3].set_xlabel("group sparsity %")
    axes[3].set_ylabel("test accuracy %")
    axes[3].legend()
    axes[3].grid(alpha=0.3)
    fig.suptitle(f"{title} (red: non-dominated in that projection)")
    save_figure_atomic(fig, path)
