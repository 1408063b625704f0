"""Step time and peak memory of every registered method on an accelerator: the CelebA ResNet-18 of Sener &
Koltun with T = 2 and T = 40 binary heads (64×64 RGB, batch 256 by default), float32 and bf16 autocast.

One process; per setting every method has its own model copy and optimizer and steps on one fixed batch
(``moomtl.experiments.paper_models.Step``: forward → task losses → ``method.backward`` → optimizer
step), methods interleaved in a shuffled order per round, wall-clock time with a device synchronize
around each step, medians. Peak memory: ``torch.cuda.max_memory_allocated`` over a method's own steps
(reset before them; "—" on CPU). A method that fails (e.g. out of memory) gets its error in the table.

Usage (on a GPU machine)::

    .venv/bin/python benchmarks/gpu_bench.py --device cuda --out docs/benchmarks_gpu.md
    .venv/bin/python benchmarks/gpu_bench.py --device cpu --tasks 2 --batch 4 --size 32 --methods uniform mgda_ub
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from moomtl.experiments.paper_models import Step, celeba_setting, interleaved_times
from moomtl.methods.base import available_methods


def device_clock(device: torch.device) -> Callable[[], float]:
    if device.type == "cuda":
        def clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return clock
    return time.perf_counter


@contextlib.contextmanager
def precision(device: torch.device, dtype: str) -> Iterator[None]:
    if dtype == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


class DeviceStep:
    """``Step`` on ``device`` under ``dtype`` (fp32 or bf16 autocast of the forward and the losses)."""

    def __init__(self, method: str, setting: tuple, device: torch.device, dtype: str) -> None:
        make_model, x, targets, tasks = setting
        self.step = Step(method, lambda: make_model().to(device), x.to(device),
                         {k: v.to(device) for k, v in targets.items()}, tasks)
        self.step.method.to(device)
        self.device, self.dtype = device, dtype

    def __call__(self) -> None:
        with precision(self.device, self.dtype):
            self.step()


def peak_memory(step: Callable[[], None], device: torch.device, steps: int) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def run_setting(methods: list[str], tasks: int, args: argparse.Namespace, device: torch.device,
                dtype: str) -> list[str]:
    setting = celeba_setting(args.batch, args.size, tasks)
    steps: dict[str, DeviceStep] = {}
    errors: dict[str, str] = {}
    for name in methods:
        try:
            steps[name] = DeviceStep(name, setting, device, dtype)
        except (RuntimeError, ValueError) as e:
            errors[name] = str(e).splitlines()[0][:80]
    memory: dict[str, float | None] = {}
    for name, step in list(steps.items()):
        try:
            memory[name] = peak_memory(step, device, 2)
        except (RuntimeError, ValueError) as e:  # out of memory, a solver failure: reported, not fatal
            errors[name] = str(e).splitlines()[0][:80]
            del steps[name]
            if device.type == "cuda":
                torch.cuda.empty_cache()
    times = interleaved_times(steps, args.rounds, args.warmup, seed=0, clock=device_clock(device)) if steps else {}
    base = statistics.median(times["uniform"]) if "uniform" in times else None
    lines = [f"### T = {tasks}, {dtype}", "", "| method | ms / step (median) | vs uniform | peak memory (MiB) |",
             "|---|---|---|---|"]
    for name in methods:
        if name in errors:
            lines.append(f"| {name} | failed: {errors[name]} | | |")
            continue
        ms = 1e3 * statistics.median(times[name])
        rel = f"{ms / (1e3 * base):.2f}×" if base else "—"
        mem = memory.get(name)
        lines.append(f"| {name} | {ms:.1f} | {rel} | {'—' if mem is None else f'{mem:.0f}'} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tasks", type=int, nargs="+", default=[2, 40])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    ap.add_argument("--out")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu for a smoke run)")
    methods = args.methods or sorted(available_methods())
    if "uniform" not in methods:
        methods = ["uniform", *methods]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = ["# Step time and peak memory per method (benchmarks/gpu_bench.py)", "",
             f"Device: {name}; torch {torch.__version__}; CelebA ResNet-18, batch {args.batch} of 3×{args.size}×"
             f"{args.size}; medians of {args.rounds} interleaved steps after {args.warmup} warm-up steps.", ""]
    for tasks in args.tasks:
        for dtype in args.dtypes:
            lines += run_setting(methods, tasks, args, device, dtype)
            print("\n".join(lines[-(len(methods) + 5):]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines))


if __name__ == "__main__":
    main()
