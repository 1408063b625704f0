"""Train methods once each on MultiMNIST (real 5k MNIST source) with the settings of
``examples/multimnist.yaml`` (HPS LeNet, 20k/2k/5k pairs, SGD momentum 0.9, batch 256), plus the two
single-task baselines, and write a table: left/right test accuracy, Δm against single task, and the
median training step time (epoch seconds / steps).

Δm (Maninis et al. 2019; Liu et al. 2021): ``Δm = (1/T) Σ_t (−1)^{h_t} (M_t − M_t^{single}) / M_t^{single}``
with ``h_t = 1`` when higher is better (``moomtl.experiments.stats.delta_m``, the convention of every
moomtl report): lower is better, a negative Δm is a gain over single task.

Usage::

    .venv/bin/python benchmarks/method_table.py --epochs 10 --lr 0.03 --out docs/method_table.md \\
        --methods upgrad dualproj ...

Every run goes to ``runs/method_table/<method>`` and resumes (a rerun trains only what is missing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moomtl.config import load_config
from moomtl.experiments.run import run_experiment
from moomtl.experiments.stats import delta_m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--runs", type=Path, default=Path("runs/method_table"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows: dict[str, dict[str, float]] = {}
    failures: dict[str, str] = {}
    plan = [("single_task", {"task": t}, f"single-task {t}") for t in ("left", "right")]
    plan += [(m, {}, m) for m in args.methods]
    for name, params, label in plan:
        cfg = load_config(Path("examples/multimnist.yaml"), [
            f"method={{name: {name}}}", f"train.epochs={args.epochs}", f"optimizer.lr={args.lr}",
            "train.progress=false", "data.source=mnist5k",
            *[f"method.{k}={v}" for k, v in params.items()],
        ])
        cfg.out = str(args.runs / label.replace(" ", "_"))
        try:
            summary = run_experiment(cfg, resume=True)
        except Exception as e:  # noqa: BLE001 - a failing method is a row of the table, not the end of it
            failures[label] = f"{type(e).__name__}: {e}"
            print(f"{label}: FAILED {failures[label]}", flush=True)
            continue
        f = summary["final"]
        rows[label] = {"left": f["test/left/acc"], "right": f["test/right/acc"],
                       "seconds": summary["wall_seconds"]}
        print(f"{label}: {100 * f['test/left/acc']:.2f} / {100 * f['test/right/acc']:.2f}", flush=True)
    base = {"left": rows["single-task left"]["left"], "right": rows["single-task right"]["right"]}
    steps_per_epoch = -(-20000 // 256)
    lines = [
        "# Every method once on MultiMNIST (benchmarks/method_table.py)", "",
        f"MultiMNIST from the real 5k MNIST subset (20k/2k/5k pairs), HPS LeNet, SGD lr {args.lr} momentum 0.9, "
        f"StepLR(30, 0.5), batch 256, {args.epochs} epochs, seed 0, one run per method (no seeds spread: "
        "differences under ~0.5 points are within seed noise). Δm against the single-task baselines "
        "(moomtl's convention, as Liu et al. 2021: lower is better, negative Δm is a gain). "
        "Step time: training wall time / steps, "
        "measured while other jobs shared the 2 cores, so compare ratios within this table only.", "",
        f"Command: `.venv/bin/python benchmarks/method_table.py --epochs {args.epochs} --lr {args.lr} "
        f"--out {args.out} --methods {' '.join(args.methods)}`", "",
        "| method | left acc % | right acc % | Δm % | wall time per step (ms, incl. per-epoch evaluation) |",
        "|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        dm = delta_m(r, base, {"left": True, "right": True})
        dm_text = "—" if label.startswith("single-task") else f"{dm:+.2f}"
        step_ms = 1e3 * r["seconds"] / (args.epochs * steps_per_epoch)
        lines.append(f"| {label} | {100 * r['left']:.2f} | {100 * r['right']:.2f} | {dm_text} | {step_ms:.1f} |")
    lines += [f"| {label} | failed: {msg} | | | |" for label, msg in failures.items()]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
