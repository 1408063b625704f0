"""Entry ``sener2018-cityscapes``: Sener & Koltun (NeurIPS'18, seeds 002/003), scene understanding on
Cityscapes (Sec. 6.3, App. C.3): semantic-segmentation mIoU, instance error and disparity error of
single task, uniform scaling, Kendall et al., GradNorm and MGDA-UB on the official val split.

Model and data as ``examples/cityscapes.yaml``: a dilated ResNet-18 encoder shared by the three tasks
with one small conv head per task (``resnet18_dense``; ``resnet18_dense_small`` in ``--quick``),
Cityscapes read from ``--root`` by :mod:`moomtl.data.cityscapes` (official val is our test; a held-out
part of official train our val). Every (method, seed) trains in its own sub-folder of ``out/quick`` or
``out/full`` (:mod:`._sener_dense_runs`), so a rerun skips finished runs and a ``--quick`` run never
collides with the full one.

The paper's numbers (its scene-understanding table): mIoU %, instance error and disparity error in
pixels. The seed text lost its tables; only the MGDA-UB row is available (the project's notes on the
seeds): the other methods' paper cells are empty (the ``deviations`` say so).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from moomtl.data.cityscapes import TASK_NAMES, find_cityscapes_files
from moomtl.experiments.reproduce import _sener_dense_runs as grid
from moomtl.experiments.reproduce.base import ReproResult, ReproRow, Stat, register

#: (item, metric key of the task, scale, higher is better, the paper's values per method). Only MGDA-UB's
#: row is in the project's notes (from the paper); the other methods' cells are left empty ("—") rather
#: than quoted from memory.
METRICS: tuple[tuple[str, str, str, float, bool, dict[str, float]], ...] = (
    ("segmentation mIoU %", "segmentation", "miou", 100.0, True,
     {"mgda_ub": 66.63}),
    ("instance error (px; ours: masked L1)", "instance", "l1", 1.0, False,
     {"mgda_ub": 10.25}),
    ("disparity error (px; ours: masked L1)", "depth", "l1", 1.0, False,
     {"mgda_ub": 2.54}),
)

#: The configuration of ``examples/cityscapes.yaml``; the sizes below replace its data sizes and epochs.
BASE: dict[str, Any] = {
    "data": {"dataset": "cityscapes", "image_size": [256, 512], "n_val": 275, "seed": 0},
    "model": {"name": "resnet18_dense"},
    "optimizer": {"name": "SGD", "lr": 0.001, "momentum": 0.9},
    "scheduler": {"name": "StepLR", "step_size": 30, "gamma": 0.5},
    "train": {"epochs": 250, "batch_size": 8, "device": "auto", "progress": False},
}


@dataclass(frozen=True)
class Sizes:
    image_size: tuple[int, int]
    model: str
    n_train: int | None  # None: all of official train minus the held-out val
    n_val: int
    n_test: int | None  # None: all 500 frames of official val
    epochs: int
    batch_size: int


FULL = Sizes(image_size=(256, 512), model="resnet18_dense", n_train=None, n_val=275, n_test=None, epochs=250,
             batch_size=8)
QUICK = Sizes(image_size=(128, 256), model="resnet18_dense_small", n_train=100, n_val=25, n_test=50, epochs=1,
              batch_size=8)


def _config(sizes: Sizes, root: Path, n_val: int) -> dict[str, Any]:
    return grid.deep_merge(BASE, {
        "data": {"root": str(root), "image_size": list(sizes.image_size), "n_train": sizes.n_train, "n_val": n_val,
                 "n_test": sizes.n_test},
        "model": {"name": sizes.model},
        "train": {"epochs": sizes.epochs, "batch_size": sizes.batch_size},
    })


def _held_out(sizes: Sizes, root: Path) -> tuple[int, int]:
    """(our val size, frames of official train): the paper's 275 (or the sizes' n_val), at most a quarter
    of official train when the root holds fewer frames (a small or fabricated root)."""
    n_official = len(find_cityscapes_files(root, "train"))
    return min(sizes.n_val, max(1, n_official // 4)), n_official


def _deviations(sizes: Sizes, n_val: int, n_official: int) -> list[str]:
    dev = []
    if sizes.image_size != (256, 512):
        dev.append(f"images resized to {sizes.image_size[0]}×{sizes.image_size[1]} (paper: 256×512)")
    if sizes.n_train is not None or sizes.n_test is not None:
        dev.append(f"seeded random subsets: {sizes.n_train if sizes.n_train is not None else 'all'} training frames, "
                   f"{sizes.n_test if sizes.n_test is not None else 'all'} of official val (paper: all 2,975 − 275 "
                   "and all 500; fewer where the root has fewer)")
    if n_val != 275:
        why = f" (the root's official train has {n_official} frames)" if n_val < sizes.n_val else ""
        dev.append(f"{n_val} held-out validation frames (paper: 275){why}")
    if sizes.epochs != 250:
        dev.append(f"{sizes.epochs} epoch(s) (paper: 250)" + ("; the learning-rate halving every 30 epochs never "
                                                              "acts" if sizes.epochs <= 30 else ""))
    if sizes.batch_size != 8:
        dev.append(f"batch size {sizes.batch_size} (paper: 8)")
    dev += [
        f"model {sizes.model}: a randomly initialized dilated ResNet-18 (output stride 8) with one small conv head "
        "per task, predicting at 1/8 resolution (paper: ImageNet-pretrained ResNet-50 with pyramid-pooling decoders "
        "at full resolution)",
        "losses: cross-entropy and masked L1 for instance offsets and disparity (the authors' code; the paper's "
        "text says MSE); reported errors are the masked L1 in pixels of the full-resolution frame",
        "disparity target: the physical disparity (p − 1)/256 of the official PNGs (the authors subtract a "
        "per-pixel mean disparity that is not public)",
        "every method trains with SGD, momentum 0.9, lr 1e-3, halved every 30 epochs; no learning-rate search "
        "(paper: lr chosen on the held-out frames from {1e-4, …, 5e-2}, then retrained on all of train)",
        "the reported model is the last epoch's; GradNorm α = 1.5 and Kendall's 'simple' form: the paper gives "
        "neither setting",
        "paper column: the seed text has no tables; only the MGDA-UB row (66.63 / 10.25 / 2.54) is available "
        "(the project's notes), the other methods' paper cells are empty",
    ]
    return dev


@register(
    "sener2018-cityscapes",
    paper="Sener & Koltun, NeurIPS'18 (seeds 002/003)",
    target="Cityscapes: segmentation mIoU, instance and disparity error (scene-understanding table)",
    data="Cityscapes at --root (leftImg8bit/, gtFine/, disparity/)",
    quick_time="8 s on the 9-frame fabricated Cityscapes of the tests, 5 seeds (measured, 2 CPU cores, idle; "
               "3 min 27 s at load ≈ 6–8, 13 min at load ≈ 14); not measured on real Cityscapes",
    full_time="not measured here (needs Cityscapes); est. from the paper's 23.3 h per 250-epoch run on a Titan Xp "
              "(its ResNet-50, not our ResNet-18): 7 runs per seed ≈ 7 Titan-Xp days per seed",
    needs_root=True,
)
def run(out: Path, quick: bool, seeds: int, root: Path | None, console: Console) -> ReproResult:
    assert root is not None  # needs_root: the framework refuses a missing --root
    sizes = QUICK if quick else FULL
    n_val, n_official = _held_out(sizes, root)
    runs = grid.plan_runs(_config(sizes, root, n_val), out / ("quick" if quick else "full"),
                          seeds, single_tasks=TASK_NAMES)
    summaries = grid.train_all(runs, console)

    rows: list[ReproRow] = []
    ours: dict[str, dict[str, Stat]] = {}
    for item, task, metric, scale, _, paper in METRICS:
        stats = {m: grid.metric_stat(summaries, f"single_{task}" if m == "single" else m, seeds,
                                     f"test/{task}/{metric}", scale=scale) for m in grid.METHODS}
        ours[task] = {m: s for m, s in stats.items() if s is not None}
        rows.append(ReproRow(item=item, paper=grid.paper_cell(paper), ours=grid.cell(stats), stats=ours[task]))

    def best(task: str, up: bool) -> str:
        vals = ours[task]
        return max(vals, key=lambda m: vals[m].mean) if up else min(vals, key=lambda m: vals[m].mean)

    winners = {task: best(task, up) for _, task, _, _, up, _ in METRICS}
    rows.append(ReproRow(
        item="MGDA-UB is best of the five methods on all three tasks",
        paper="yes (the paper's claim; MGDA-UB 66.63 % / 10.25 px / 2.54 px, the other rows not available offline)",
        ours="best: " + ", ".join(f"{t} {grid.METHODS[m][0]}" for t, m in winners.items()),
        agrees=all(m == "mgda_ub" for m in winners.values()),
    ))
    better = [task for _, task, _, _, up, _ in METRICS
              if (ours[task]["mgda_ub"].mean > ours[task]["single"].mean) == up]
    rows.append(ReproRow(
        item="MGDA-UB beats single task on every task (the tasks cooperate)",
        paper="yes (the paper's claim; its single-task numbers are not available offline)",
        ours=f"better on {len(better)}/3: {', '.join(better) or 'none'}",
        agrees=len(better) == 3,
    ))
    notes = [
        f"data: {summaries[(runs[0].key, 0)]['data']}",
        f"{len(runs)} training runs ({len(runs) // seeds} per seed: one single-task run per task and one per "
        f"multi-task method); cells are mean ± sd over {seeds} seed(s) (training seeds 0…{seeds - 1}, one fixed "
        "split); single task: each task's metric from the run trained on that task alone",
    ]
    return ReproResult(rows=rows, deviations=_deviations(sizes, n_val, n_official), notes=notes,
                       settings={"sizes": asdict(sizes) | {"n_val_used": n_val},
                                 "methods": {m: spec for m, (_, spec) in grid.METHODS.items()},
                                 "runs": len(runs)})
