"""Step time of MGDA and MGDA-UB vs linear scalarization on the papers' *architectures*: the CelebA
ResNet-18 with 40 binary heads (64×64 RGB) and the dense dilated ResNet-18 with Cityscapes' three tasks
(19-class segmentation, 2-channel instance offsets, 1-channel disparity at 1/8 resolution).

Sener & Koltun report that MGDA-UB cut CelebA training from 429.9 h (MGDA) to 16.1 h (26.7x) and scene
understanding from 38.6 h to 23.3 h (1.7x). This script measures the per-step ratios on this machine:
one training step as the trainer runs it (forward → task losses → ``method.backward`` with a
``StepContext`` → optimizer step), synthetic inputs (the cost does not depend on pixel values), all
methods of a setting in ONE process, interleaved round-robin in a shuffled order per round; medians.

Usage::

    .venv/bin/python benchmarks/paper_models_bench.py --out docs/benchmarks_paper_models.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from moomtl.experiments.paper_models import (
    METHODS,
    PAPER_RATIO,
    Step,
    celeba_setting,
    cityscapes_setting,
    interleaved_times,
)


def time_setting(setting: tuple, repeats: int, warmup: int, seed: int) -> dict[str, list[float]]:
    make_model, x, targets, tasks = setting
    steps = {label: Step(name, make_model, x, targets, tasks) for label, name in METHODS.items()}
    return interleaved_times(steps, repeats, warmup, seed, clock=time.perf_counter)


def report(name: str, description: str, times: dict[str, list[float]]) -> str:
    base = statistics.median(times["linear (uniform)"])
    lines = [f"### {name}: {description}", "",
             "| method | median step (s) | range (s) | ratio to linear |", "|---|---|---|---|"]
    for label, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"| {label} | {med:.3f} | {min(ts):.3f}–{max(ts):.3f} | {med / base:.2f}x |")
    mgda, ub = statistics.median(times["MGDA"]), statistics.median(times["MGDA-UB"])
    lines += ["", f"MGDA / MGDA-UB step-time ratio: **{mgda / ub:.1f}x** here; the paper's training-time "
              f"ratio: {PAPER_RATIO[name]:.1f}x.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--celeba-batch", type=int, default=8)
    ap.add_argument("--celeba-size", type=int, default=64)
    ap.add_argument("--cityscapes-batch", type=int, default=2)
    ap.add_argument("--cityscapes-height", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = (f" --threads {args.threads}" if args.threads else "") + (f" --out {args.out}" if args.out else "")
    parts = [
        "# Step time on the papers' architectures (MGDA vs MGDA-UB vs linear scalarization)", "",
        f"Command: `.venv/bin/python benchmarks/paper_models_bench.py{flags}`; "
        f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU; {args.repeats} timed steps per "
        f"method after {args.warmup} warm-up, interleaved in one process; synthetic inputs.", "",
    ]
    b, s = args.celeba_batch, args.celeba_size
    times = time_setting(celeba_setting(b, s), args.repeats, args.warmup, args.seed)
    parts.append(report("CelebA", f"resnet18_celeba, 40 binary heads, batch {b} of 3×{s}×{s}", times))
    b, hgt = args.cityscapes_batch, args.cityscapes_height
    times = time_setting(cityscapes_setting(b, hgt), args.repeats, args.warmup, args.seed)
    parts.append(report("Cityscapes", f"resnet18_dense, 3 dense tasks, batch {b} of 3×{hgt}×{2 * hgt}", times))
    text = "\n".join(parts)
    print(text)
    if args.out:
        from moomtl import io as mio

        mio.write_text(args.out, text)


if __name__ == "__main__":
    main()
