"""What exact multi-process MOO costs in communication, against plain data parallelism (linear).

Two ranks (gloo on 127.0.0.1 here; ``--backend nccl`` on a GPU machine), the HPS LeNet with T binary
heads on a synthetic global batch (``--batch``, default 256: 128 per rank), one full training step exactly as
:class:`~moomtl.train.trainer.Trainer` runs it under ``torchrun``: local forward and per-task losses
(scaled to this rank's share) → ``method.backward`` on a :class:`~moomtl.autodiff.StepContext` with a
reducer → one coalesced gradient sum → ``optimizer.step``. Methods are interleaved round-robin in one
process group; the table gives medians of the wall time per step (both ranks wait on each other, so
the slower rank sets it) and, for each method, the time spent inside its *extra* reductions (loss
values, Gramians, Jacobians: everything but the gradient sum that linear also does), measured around
the reducer's calls.

Usage::

    .venv/bin/python benchmarks/ddp_bench.py --tasks 40 --steps 30 --out docs/benchmarks_ddp.md
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

METHODS = ["uniform", "mgda_ub", "mgda", "upgrad", "nash_mtl"]
NO_COMM = " (no extra collectives)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimedReducer:
    """Wraps a Reducer: accumulates the seconds spent in ``sum_`` (the extra MOO reductions). With
    ``presync`` an (untimed) barrier first lines the ranks up, so the time is the collective itself and not
    one rank waiting for the other (a wait DDP linear pays too, in its gradient sum)."""

    def __init__(self, inner, presync: bool = False, skip: bool = False) -> None:
        self.inner = inner
        self.rank, self.world_size = inner.rank, inner.world_size
        self.extra_seconds = 0.0
        self.presync = presync
        self.skip = skip

    def sum_(self, t):
        if self.skip:  # ablation: the same computation without the collective (each rank solves its local problem)
            return t
        if self.presync:
            import torch.distributed as dist

            dist.barrier()
        t0 = time.perf_counter()
        out = self.inner.sum_(t)
        self.extra_seconds += time.perf_counter() - t0
        return out

    def sum_grads_(self, params):
        self.inner.sum_grads_(params)


def _worker(rank: int, world: int, port: int, backend: str, tasks: int, steps: int, out: str,
            presync: bool = False, methods: tuple[str, ...] = tuple(METHODS), batch: int = 256) -> None:
    import torch.distributed as dist

    from moomtl.autodiff import StepContext
    from moomtl.autodiff.distributed import Reducer
    from moomtl.methods import build_method
    from moomtl.models.lenet import hps_lenet

    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    names = [f"t{i}" for i in range(tasks)]
    torch.manual_seed(0)
    runs = {}
    variants = [*methods, *(f"{m}{NO_COMM}" for m in methods if m != "uniform")]
    for m in variants:
        model = hps_lenet(names, n_classes=2, dropout=0.0)
        method = build_method(m.removesuffix(NO_COMM))
        method.setup(names, model)
        opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.01)
        runs[m] = (model, method, opt, [], [])
    x = torch.randn(batch // world, 1, 28, 28)
    y = torch.randint(0, 2, (batch // world, tasks))
    reducer = Reducer()
    for step in range(steps + 2):
        for m in variants:
            model, method, opt, walls, extras = runs[m]
            timed = TimedReducer(reducer, presync, skip=m.endswith(NO_COMM))
            dist.barrier()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            z = model.encode(x)
            o = model.decode(z, x)
            losses = {t: F.cross_entropy(o[t], y[:, i]) * 0.5 for i, t in enumerate(names)}
            ctx = StepContext(model, losses, z, structure={}, reducer=timed)
            method.backward(losses, ctx)
            timed.sum_grads_([p for g in opt.param_groups for p in g["params"]])
            opt.step()
            wall = torch.tensor([time.perf_counter() - t0])
            dist.all_reduce(wall, op=dist.ReduceOp.MAX)
            if step >= 2:  # warm-up
                walls.append(float(wall))
                extras.append(timed.extra_seconds)
    if rank == 0:
        rows = {m: (statistics.median(runs[m][3]), statistics.median(runs[m][4])) for m in methods}
        # the paired (same round) difference between a method and its ablation without the extra collectives:
        # what exact MOO's communication adds to the step, whatever rank waits where
        paired = {m: statistics.median(a - b for a, b in zip(runs[m][3], runs[f"{m}{NO_COMM}"][3], strict=True))
                  for m in methods if m != "uniform"}
        rows = {m: (*rows[m], paired.get(m, 0.0)) for m in methods}
        torch.save(rows, Path(out) / "rows.pt")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--backend", default="gloo")
    ap.add_argument("--batch", type=int, default=256, help="global batch (split evenly over the 2 ranks)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--presync", action="store_true", help="time each extra collective after an untimed barrier "
                    "(the collective alone, without the ranks' imbalance)")
    ap.add_argument("--methods", nargs="+", default=METHODS, help="methods to time (uniform, the DDP-linear "
                    "baseline, is always included)")
    args = ap.parse_args()
    methods = ("uniform", *(m for m in args.methods if m != "uniform"))
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, _free_port(), args.backend, args.tasks, args.steps, tmp, args.presync, methods,
                                    args.batch),
                 nprocs=2,
                 join=True)
        rows = torch.load(Path(tmp) / "rows.pt", weights_only=True)
    base = rows["uniform"][0]
    lines = [
        "# Exact multi-process MOO: communication cost (benchmarks/ddp_bench.py)", "",
        f"2 ranks, backend {args.backend}, {platform.machine()}, torch {torch.__version__}, 1 thread per rank, "
        f"HPS LeNet with T = {args.tasks} binary heads, global batch {args.batch} ({args.batch // 2} per rank), "
        f"{args.steps} timed steps "
        "per method after 2 warm-up steps, interleaved round-robin; medians. `extra reductions` is the time in "
        "the reductions exact MOO adds (loss values, Gramian or Jacobian), beyond the gradient sum plain "
        "data parallelism does too. `added by exact MOO` is the median over rounds of the step time minus that "
        "of the same method run in the same round with its extra collectives skipped (each rank then solves its "
        "local problem: the same computation, wrong weights): the communication cost itself, wherever the ranks "
        "wait on each other.", "",
        f"Command: `.venv/bin/python benchmarks/ddp_bench.py --tasks {args.tasks} --steps {args.steps} "
        f"--backend {args.backend}{' --presync' if args.presync else ''}"
        f"{'' if args.batch == 256 else f' --batch {args.batch}'}"
        f"{'' if list(methods) == METHODS else ' --methods ' + ' '.join(methods[1:])}`", "",
        "| method | step (ms) | × DDP linear | extra reductions (ms) | extra / DDP-linear step "
        "| added by exact MOO (ms) | added / DDP-linear step |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, (wall, extra, added) in rows.items():
        lines.append(f"| {m} | {1e3 * wall:.2f} | {wall / base:.3f} | {1e3 * extra:.3f} | {100 * extra / base:.2f} % "
                     f"| {1e3 * added:.3f} | {100 * added / base:.2f} % |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
