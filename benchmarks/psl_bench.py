"""Pareto-set learning vs a preference sweep: hypervolume of ONE preference-conditioned model's front
(``moomtl psl``) against an 11-model sweep of the same scalarization, at ≤ 1/5 of the sweep's total
training steps, with one shared reference point per comparison (``moomtl compare``'s: the nadir of the
pooled non-dominated points + 10 % of their range; objectives = per-task test loss).

Data sets: MultiMNIST, MultiFashion, Multi-(Fashion+MNIST) (2 tasks) and ``multimnist3``: MultiMNIST
with a third task, the sum of the two digits mod 10 (built here from the MultiMNIST splits; moomtl has
no offline 3-task data set). 2 tasks: the sweep's 11 preferences are ``lattice_for(11, 2)``; 3 tasks:
the Das-Dennis lattice H = 3 (10 points). The PSL front is evaluated at the same preferences. Every run
uses the same model (HPS LeNet), optimizer, batch size and data.

    .venv/bin/python benchmarks/psl_bench.py --out runs/psl_bench            # the docs/psl.md table
    .venv/bin/python benchmarks/psl_bench.py --quick --out runs/psl_quick    # one data set, one seed

Prints and writes ``summary.md`` / ``summary.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moomtl import io as mio
from moomtl.config import parse_config
from moomtl.data.base import DataSplits, MultiTaskTensors
from moomtl.events import TrainingError
from moomtl.experiments.report import compare_sweeps, write_front
from moomtl.experiments.run import build_data, run_experiment
from moomtl.experiments.sweep import preference_points, result_row
from moomtl.methods import get_method_class
from moomtl.pareto import das_dennis, hypervolume, inward, lattice_for
from moomtl.psl import run_psl
from moomtl.psl.config import parse_psl_config

DATASETS = ("multimnist", "multifashion", "multifashion+mnist", "multimnist3")


def with_sum_task(splits: DataSplits) -> DataSplits:
    """MultiMNIST splits plus a third classification task ``sum`` = (left + right) mod 10."""
    def add(d: MultiTaskTensors) -> MultiTaskTensors:
        y = torch.cat([d.y, ((d.y[:, 0] + d.y[:, 1]) % 10).unsqueeze(1)], dim=1)
        return MultiTaskTensors(d.x, y, (*d.task_names, "sum"), d.mean, d.std)

    return DataSplits(add(splits.train), add(splits.val), add(splits.test),
                      splits.description + " Third task: (left + right) mod 10.")


def preferences_for(n_tasks: int) -> np.ndarray:
    """The sweep's preferences: 11 for 2 tasks; for 3 tasks the Das-Dennis lattice H = 3 (10 points, the
    centroid among them: no 3-task Das-Dennis lattice has 11 points)."""
    if n_tasks == 2:
        return lattice_for(11, 2)
    return das_dennis(3, 3)


def base_config(dataset: str, seed: int, args: argparse.Namespace, out: Path) -> Any:
    return parse_config({
        "data": {"dataset": "multimnist" if dataset == "multimnist3" else dataset, "source": "auto",
                 "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test, "seed": 0,
                 "cache_dir": args.cache},
        "model": {"name": "hps_lenet"},
        "method": {"name": args.method},
        "optimizer": {"name": "SGD", "lr": args.lr, "momentum": args.momentum},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": seed, "progress": False},
        "out": str(out),
    })


def sweep(cfg: Any, splits: DataSplits, prefs: np.ndarray, out: Path) -> dict[str, Any]:
    """Train (or resume) the sweep; a sweep whose report is already there is read, not resumed (so a
    second PSL variant reuses it even when moomtl's config gained keys since)."""
    t0 = time.perf_counter()
    points = preference_points(cfg, prefs, out, cfg.method_name)
    if (out / "results.json").is_file():
        rows = json.loads((out / "results.json").read_text())["rows"]
        if {tuple(r["preference"]) for r in rows} == {tuple(p.preference) for p in points}:
            steps = sum(int(mio.read_json(Path(p.cfg.out) / "result.json")["history_last"]["step"]) for p in points)
            return {"steps": steps, "seconds": 0.0, "reused": True}
    rows, steps = [], 0
    for p in points:
        summary = run_experiment(p.cfg, resume=True, splits=splits)
        steps += int(summary["history_last"]["step"])
        rows.append(result_row(p, summary, list(splits.task_names)))
    write_front(rows, list(splits.task_names), out, f"{cfg.method_name} sweep", extra={"method": cfg.method_name})
    return {"steps": steps, "seconds": time.perf_counter() - t0}


def chance_hypervolumes(folders: list[Path]) -> list[float]:
    """Hypervolume of each folder's test-loss front w.r.t. the fixed reference ``ln 10`` per task (the
    cross-entropy of a uniform guess over 10 classes): a reference shared by every run, seed and method."""
    out = []
    for folder in folders:
        res = json.loads((folder / "results.json").read_text())
        pts = np.array([[r[f"{t}/loss"] for t in res["task_names"]] for r in res["rows"]])
        out.append(float(hypervolume(pts, np.full(pts.shape[1], np.log(10.0)))))
    return out


def _ratio_cell(values: list[float | None]) -> str:
    """``mean ± sd; per seed`` of the finite ratios; a seed whose sweep hypervolume is 0 (the PSL front
    dominates the whole sweep, so the pooled reference point leaves the sweep nothing) shows as ∞."""
    finite = [v for v in values if v is not None]
    per_seed = ", ".join("∞" if v is None else f"{v:.3f}" for v in values)
    if not finite:
        return f"∞ (every seed); {per_seed}"
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.mean(finite):.3f} ± {sd:.3f}; {per_seed}"


def summary_lines(records: list[dict[str, Any]]) -> list[str]:
    """The markdown table of docs/psl.md, one row per data set."""
    lines = ["| data set | tasks | seeds | sweep models, steps | PSL steps (ratio) | HV sweep (pooled ref.) | "
             "HV PSL (pooled ref.) | HV PSL / sweep, pooled ref. (mean ± sd; per seed) | HV PSL / sweep, "
             "ref. ln 10 per task |", "|---|---|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        every = [r for r in records if r["dataset"] == dataset]
        rs = [r for r in every if "diverged" not in r]
        if not rs:
            lines.append(f"| {dataset} | {every[0]['tasks']} | 0 of {len(every)} (every PSL run diverged) "
                         "| | | | | | |")
            continue
        diverged = [str(r["seed"]) for r in every if "diverged" in r]
        note = f" (PSL diverged on seed {', '.join(diverged)}: non-finite loss)" if diverged else ""
        lines.append(
            f"| {dataset} | {rs[0]['tasks']} | {len(rs)}{note} | {rs[0]['points']}, {rs[0]['sweep_steps']} | "
            f"{rs[0]['psl_steps']} "
            f"({rs[0]['step_ratio']:.3f}) | {statistics.mean(r['hv_sweep'] for r in rs):.4g} | "
            f"{statistics.mean(r['hv_psl'] for r in rs):.4g} | {_ratio_cell([r['hv_ratio'] for r in rs])} | "
            f"{_ratio_cell([r['hv_chance_ratio'] for r in rs])} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/psl_bench"))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--method", default="linear")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each sweep model")
    ap.add_argument("--n-train", type=int, default=3840)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (sweep and PSL)")
    ap.add_argument("--encoder", default="film")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--gain", type=float, default=1.0)
    ap.add_argument("--cache", default=None, help="data cache folder (default: moomtl's)")
    ap.add_argument("--quick", action="store_true", help="MultiMNIST, one seed")
    ap.add_argument("--table-from", type=Path, default=None,
                    help="only print the table of the JSON records (one per line) in this log")
    args = ap.parse_args(argv)
    if args.table_from is not None:
        lines = [ln for ln in args.table_from.read_text().splitlines() if ln.startswith("{")]
        print("\n".join(summary_lines([json.loads(ln) for ln in lines])))
        return 0
    if args.quick:
        args.datasets, args.seeds = ["multimnist"], 1
    torch.set_num_threads(1)
    records = []
    t_all = time.perf_counter()
    for dataset in args.datasets:
        for seed in range(args.seeds):
            where = args.out / dataset.replace("+", "_") / f"seed{seed}"
            cfg = base_config(dataset, seed, args, where / "sweep")
            splits = build_data(cfg)
            if dataset == "multimnist3":
                splits = with_sum_task(splits)
            prefs = preferences_for(len(splits.task_names))
            if get_method_class(args.method).positive_preference:  # EPO: no zero entries (as `moomtl sweep`)
                prefs = inward(prefs)
            sw = sweep(cfg, splits, prefs, where / "sweep")
            # PSL epochs: the largest count with ≤ 1/5 of the sweep's total training steps.
            steps_per_epoch = sw["steps"] // (len(prefs) * args.epochs)
            psl_epochs = max(1, (sw["steps"] // 5) // steps_per_epoch)
            pcfg = copy.deepcopy(cfg)
            pcfg.train.epochs = psl_epochs
            tag = f"psl-{args.encoder}-a{args.alpha:g}" + (f"-g{args.gain:g}" if args.gain != 1.0 else "")
            pcfg.out = str(where / tag)
            t0 = time.perf_counter()
            settings = parse_psl_config({"encoder": args.encoder, "alpha": args.alpha, "gain": args.gain})
            rec = {"dataset": dataset, "seed": seed, "tasks": len(splits.task_names), "points": len(prefs),
                   "sweep_steps": sw["steps"], "psl_epochs": psl_epochs}
            try:
                rep = run_psl(pcfg, settings, resume=True, splits=splits, preferences=prefs)
            except TrainingError as e:  # a diverged PSL run is a result of the comparison, not a crash of it
                rec["diverged"] = str(e)
            else:
                psl_seconds = time.perf_counter() - t0
                compare_sweeps([where / "sweep", where / tag], where / f"compare-{tag}")
                hv = json.loads((where / f"compare-{tag}" / "comparison.json").read_text())["hypervolume"]
                chance = chance_hypervolumes([where / "sweep", where / tag])
                rec |= {"psl_steps": rep.summary["train_steps"], "step_ratio": rep.summary["train_steps"] / sw["steps"],
                        "hv_sweep": hv["sweep"], "hv_psl": hv[tag],
                        "hv_ratio": hv[tag] / hv["sweep"] if hv["sweep"] else None,
                        "hv_chance_sweep": chance[0], "hv_chance_psl": chance[1],
                        "hv_chance_ratio": chance[1] / chance[0] if chance[0] else None,
                        "sweep_seconds": sw["seconds"], "psl_seconds": psl_seconds}
            records.append(rec)
            print(json.dumps(rec), flush=True)
    total = time.perf_counter() - t_all
    lines = summary_lines(records)
    md = "\n".join(lines) + f"\n\nTotal wall time {total / 60:.1f} min (torch 1 thread).\n"
    print(md)
    mio.write_text(args.out / "summary.md", md)
    mio.write_json(args.out / "summary.json", {"args": {k: v for k, v in vars(args).items() if k != "out"}
                                               | {"out": str(args.out)}, "records": records,
                                               "wall_seconds": total})
    return 0


if __name__ == "__main__":
    sys.exit(main())
