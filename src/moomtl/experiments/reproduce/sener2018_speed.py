"""Entry ``sener2018-speed``: Sener & Koltun (NeurIPS'18, seeds 002/003), the speed claim of the MGDA-UB
approximation (Sec. 3.3 and 6.4, Table 2): training with MGDA-UB instead of MGDA is 25× faster at 40 tasks
(CelebA, ResNet-18: 429.9 h → 16.1 h) and about 40 % faster at 3 tasks (Cityscapes: 38.6 h → 23.3 h),
because MGDA needs one backward pass through the shared encoder per task and MGDA-UB one in all.

Measured here as per-step CPU-time RATIOS in one process (:mod:`._sener_speed`: the training step of
``moomtl.experiments.paper_models`` (as ``benchmarks/paper_models_bench.py``), methods interleaved,
medians of ``time.process_time``, one torch
thread) on the papers' models from the registry: the CelebA ResNet-18 with 40 heads, the Cityscapes
dense model with three tasks, the MultiMNIST LeNet (two tasks; the paper gives no time for it) and the
CelebA model with fewer tasks to show how the ratio grows with the number of tasks. Inputs are random
tensors of the papers' shapes (a step's cost does not depend on the pixel values).

Nothing is trained, so there is nothing to resume: a rerun measures again (ratios from different
processes, under different machine load, must not be mixed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from moomtl.config import ConfigError
from moomtl.experiments.paper_models import celeba_setting
from moomtl.experiments.reproduce import _sener_speed as sp
from moomtl.experiments.reproduce.base import ReproResult, ReproRow, Stat, register

#: label → registered method (the timing loop's names); MGDA and MGDA-UB as registered (no gradient
#: normalization: it costs O(T²) on the Gramian, nothing next to the backward passes).
METHODS = {"uniform": "uniform", "MGDA-UB": "mgda_ub", "MGDA": "mgda"}
#: The paper's Table 2 training hours (MGDA, MGDA-UB).
PAPER_HOURS = {"CelebA": (429.9, 16.1), "Cityscapes": (38.6, 23.3)}
#: ``agrees``: our ratio within this factor of the paper's (either way) and above 1.
AGREE_FACTOR = 2.0


@dataclass(frozen=True)
class Plan:
    celeba_batch: int
    celeba_size: int
    celeba_tasks: int  # the paper: 40
    task_counts: tuple[int, ...]  # extra CelebA-model task counts for the scaling row
    city_batch: int
    city_height: int  # width = 2 × height
    mm_batch: int
    rounds: int
    warmup: int
    threads: int = 1


FULL = Plan(celeba_batch=8, celeba_size=64, celeba_tasks=40, task_counts=(2, 10), city_batch=2, city_height=128,
            mm_batch=256, rounds=2, warmup=1)
QUICK = Plan(celeba_batch=4, celeba_size=32, celeba_tasks=40, task_counts=(2, 10), city_batch=1, city_height=64,
             mm_batch=64, rounds=2, warmup=1)


def _settings(plan: Plan) -> dict[str, tuple[str, sp.Setting]]:
    """name → (description, setting); CelebA first, then the task-count sweep, Cityscapes, MultiMNIST."""
    from moomtl.experiments import paper_models as bench

    b, s, t = plan.celeba_batch, plan.celeba_size, plan.celeba_tasks
    out = {"CelebA": (f"resnet18_celeba, {t} binary heads, batch {b} of 3×{s}×{s}", celeba_setting(b, s, t))}
    for n in plan.task_counts:
        out[f"CelebA T={n}"] = (f"resnet18_celeba, {n} binary heads, batch {b} of 3×{s}×{s}",
                                celeba_setting(b, s, n))
    h = plan.city_height
    out["Cityscapes"] = (f"resnet18_dense, 3 dense tasks (19-class segmentation, instance offsets, disparity), batch "
                         f"{plan.city_batch} of 3×{h}×{2 * h}", bench.cityscapes_setting(plan.city_batch, h))
    out["MultiMNIST"] = (f"hps_lenet, 2 digit tasks, batch {plan.mm_batch} of 1×28×28",
                         sp.multimnist_setting(plan.mm_batch))
    return out


def _within(ours: float, paper: float) -> bool:
    return ours > 1.0 and paper / AGREE_FACTOR <= ours <= paper * AGREE_FACTOR


def _plot(counts: list[int], by_t: list[Stat], city: Stat, mm: Stat) -> Callable[[Path], None]:
    def draw(path: Path) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from moomtl.io import atomic_path

        fig = Figure(figsize=(6.0, 4.4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.errorbar(counts, [s.mean for s in by_t], yerr=[s.sd for s in by_t], fmt="o-", color="tab:red", capsize=3,
                    label="ours, CelebA ResNet-18 with T heads")
        ax.errorbar([3], [city.mean], yerr=[city.sd], fmt="D", color="tab:purple", capsize=3,
                    label="ours, Cityscapes model (3 tasks)")
        ax.errorbar([2], [mm.mean], yerr=[mm.sd], fmt="s", color="tab:green", capsize=3,
                    label="ours, MultiMNIST LeNet (2 tasks)")
        for name, t, color in (("CelebA", 40, "black"), ("Cityscapes", 3, "grey")):
            mg, u = PAPER_HOURS[name]
            ax.scatter([t], [mg / u], marker="*", s=150, color=color, zorder=3,
                       label=f"paper, {name} training time ({mg / u:.2f}×)")
        ax.axhline(1.0, color="lightgrey", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("number of tasks T")
        ax.set_ylabel("MGDA / MGDA-UB time (per-step median CPU time)")
        ax.set_title("MGDA vs MGDA-UB cost (ours: mean ± sd over seeds)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)

    return draw


def _measure(plan: Plan, seeds: int, console: Console) -> tuple[dict[str, dict[str, list[float]]], dict[str, str]]:
    """``{setting: {"MGDA/MGDA-UB": [per seed], "MGDA/uniform": [...], "MGDA-UB/uniform": [...],
    "<label> s": [median seconds per seed]}}`` and the settings' descriptions."""
    out: dict[str, dict[str, list[float]]] = {}
    descriptions: dict[str, str] = {}
    for seed in range(seeds):
        torch.manual_seed(seed)  # the random inputs
        for name, (description, setting) in _settings(plan).items():
            descriptions[name] = description
            times = sp.time_steps(setting, METHODS, plan.rounds, plan.warmup, seed, threads=plan.threads)
            rec = out.setdefault(name, {})
            for num, den in (("MGDA", "MGDA-UB"), ("MGDA", "uniform"), ("MGDA-UB", "uniform")):
                rec.setdefault(f"{num}/{den}", []).append(sp.ratio(times, num, den))
            for label, med in sp.medians(times).items():
                rec.setdefault(f"{label} s", []).append(med)
            console.print(f"seed {seed + 1}/{seeds} {name}: MGDA/MGDA-UB {rec['MGDA/MGDA-UB'][-1]:.2f}x "
                          f"(median CPU s: " + ", ".join(f"{k} {v:.3f}" for k, v in sp.medians(times).items())
                          + ")", highlight=False)
    return out, descriptions


def _secs(rec: Mapping[str, list[float]]) -> str:
    return ", ".join(f"{label} {Stat.of(rec[f'{label} s']).mean:.3g} s" for label in METHODS)


@register(
    "sener2018-speed",
    paper="Sener & Koltun, NeurIPS'18 (arXiv 1810.04650, seeds 002/003)",
    target="Sec. 6.4 / Table 2: MGDA-UB vs MGDA training time (25× at 40 tasks, ~40 % at 3 tasks)",
    data="none (random tensors of the papers' input shapes)",
    quick_time="2.4 min wall, 2.4 min CPU, --seeds 5 (measured, 2 CPU cores, idle, 1 torch thread; 20 min wall "
               "at load 12–15)",
    full_time="6.6 min CPU with --seeds 2 (measured, 2 cores, 1 thread; 20 min wall at load 8–14); 5 seeds ≈ 16 min",
)
def run(out: Path, quick: bool, seeds: int, root: Path | None, console: Console) -> ReproResult:
    if root is not None:
        raise ConfigError("sener2018-speed times steps on random inputs; it takes no --root")
    plan = QUICK if quick else FULL
    rec, descriptions = _measure(plan, seeds, console)
    st = {name: {k: Stat.of(v) for k, v in r.items()} for name, r in rec.items()}
    rows = []
    for name in ("CelebA", "Cityscapes"):
        mg, u = PAPER_HOURS[name]
        paper_ratio = mg / u
        r = st[name]["MGDA/MGDA-UB"]
        rows.append(ReproRow(
            item=f"{name}: MGDA / MGDA-UB time ({descriptions[name]})",
            paper=f"training {mg} h vs {u} h: {paper_ratio:.1f}× ({100 * (1 - u / mg):.0f} % less time)"
                  + ("; text: 'accelerates learning by a factor of 25'" if name == "CelebA" else
                     "; text: 'training time is reduced by 40%'"),
            ours=f"per-step ratio {r.text('.3g')} ({100 * (1 - 1 / r.mean):.0f} % less time); median step "
                 f"{_secs(rec[name])}",
            stats={k: v for k, v in st[name].items() if "/" in k},
            agrees=_within(r.mean, paper_ratio),
        ))
    counts = sorted({*plan.task_counts, plan.celeba_tasks})
    keys = {n: ("CelebA" if n == plan.celeba_tasks else f"CelebA T={n}") for n in counts}
    by_t = [st[keys[n]]["MGDA/MGDA-UB"] for n in counts]
    mgda_s = [Stat.of(rec[keys[n]]["MGDA s"]).mean for n in counts]
    ub_s = [Stat.of(rec[keys[n]]["MGDA-UB s"]).mean for n in counts]
    slope_mgda, icpt_mgda = np.polyfit(counts, mgda_s, 1)
    slope_ub, _ = np.polyfit(counts, ub_s, 1)
    pred = np.polyval([slope_mgda, icpt_mgda], counts)
    r2 = 1.0 - float(np.sum((np.array(mgda_s) - pred) ** 2) / max(np.sum((np.array(mgda_s) - np.mean(mgda_s)) ** 2),
                                                                   1e-300))
    increasing = all(b.mean > a.mean for a, b in zip(by_t, by_t[1:], strict=False))
    rows.append(ReproRow(
        item=f"MGDA / MGDA-UB vs number of tasks (CelebA model, T = {', '.join(map(str, counts))})",
        paper="MGDA needs a backward pass over the shared parameters per task: 'linear scaling of the training "
              "time'; MGDA-UB needs one ('a single backward pass')",
        ours=("ratio " + ", ".join(f"T={n}: {s.mean:.2f}×" for n, s in zip(counts, by_t, strict=True))
              + f"; MGDA step time ≈ {slope_mgda:.3g} s per task (linear fit R² {r2:.3f}), MGDA-UB "
              f"{slope_ub:.3g} s per task"),
        stats={f"T{n}": s for n, s in zip(counts, by_t, strict=True)},
        agrees=increasing and slope_mgda > 0 and r2 >= 0.9 and slope_mgda > 5 * abs(slope_ub),
    ))
    ub_lin = st["CelebA"]["MGDA-UB/uniform"]
    rows.append(ReproRow(
        item=f"MGDA-UB vs uniform scaling, {plan.celeba_tasks} tasks (CelebA model)",
        paper="'a deep MTL algorithm with almost no computational overhead' (Conclusion); no number",
        ours=f"per-step ratio MGDA-UB / uniform {ub_lin.text('.3g')}; MGDA / uniform "
             f"{st['CelebA']['MGDA/uniform'].text('.3g')}",
        stats={"MGDA-UB/uniform": ub_lin},
        agrees=ub_lin.mean <= 1.5,
    ))
    mm = st["MultiMNIST"]["MGDA/MGDA-UB"]
    rows.append(ReproRow(
        item=f"MultiMNIST: MGDA / MGDA-UB time ({descriptions['MultiMNIST']})",
        paper="— (the paper times only CelebA and Cityscapes)",
        ours=f"per-step ratio {mm.text('.3g')}; median step {_secs(rec['MultiMNIST'])}",
        stats={k: v for k, v in st["MultiMNIST"].items() if "/" in k},
    ))
    deviations = [
        "per-step CPU time of one training step (forward, losses, the method's backward, SGD step) instead of the "
        "paper's total training time on a Titan Xp GPU: data loading and evaluation, which dilute the paper's "
        "ratios, are left out",
        "random input tensors of the papers' shapes and random labels instead of CelebA / Cityscapes images",
        f"small batches for a CPU: CelebA {plan.celeba_batch}, Cityscapes {plan.city_batch}, MultiMNIST "
        f"{plan.mm_batch}",
        "Cityscapes model: the registry's dilated ResNet-18 with one conv head per task instead of the paper's "
        f"dilated ResNet-50 with pyramid-pooling decoders; input 3×{plan.city_height}×{2 * plan.city_height}",
        f"{plan.rounds} timed steps per method and seed after {plan.warmup} warm-up step(s), {plan.threads} torch "
        "thread(s)",
    ]
    if plan.celeba_size != 64:
        deviations.append(f"CelebA images {plan.celeba_size}×{plan.celeba_size} instead of the paper's 64×64")
    if plan.celeba_tasks != 40:
        deviations.append(f"CelebA model with {plan.celeba_tasks} tasks instead of the paper's 40")
    notes = [
        "Ratios are medians of time.process_time per step, methods interleaved in one process in a shuffled order "
        "per round; ours: mean ± sd over seeds (each seed: fresh inputs, its own order), n = seeds.",
        f"agrees: ratio above 1 and within a factor {AGREE_FACTOR:g} of the paper's (time-per-step ratios leave out "
        "the per-epoch costs both methods share, so they run higher than training-time ratios); the task-count row: "
        "the ratio grows with T and MGDA's step time is linear in T (R² ≥ 0.9) with a slope over 5× MGDA-UB's; "
        "the overhead row: MGDA-UB within 1.5× of uniform scaling.",
        "Paper hours are Table 2 of the paper as recorded in the project's notes on the seeds (the seed text lost "
        "its tables; the text's 'factor of 25' and '40%' are quoted).",
    ]
    return ReproResult(
        rows=rows, deviations=deviations, notes=notes,
        plots={"speed_ratios.png": _plot(counts, by_t, st["Cityscapes"]["MGDA/MGDA-UB"], mm)},
        settings={**asdict(plan), "seeds": seeds, "methods": METHODS,
                  "settings": descriptions, "torch": torch.__version__},
    )
