"""Step time and peak memory of gradient-based MTL methods relative to linear scalarization.

One training step exactly as the trainer runs it (``zero_grad`` → ``encode``/``decode`` → per-task
cross-entropy → ``method.backward(losses, StepContext)`` → ``optimizer.step()`` → ``on_step_end``) on
the HPS LeNet with a MultiMNIST-shaped batch (``[256, 1, 28, 28]``, synthetic normal inputs: the cost
does not depend on pixel values), for

* T = 2 ten-way heads (MultiMNIST), and
* T = 40 binary heads (CelebA-shaped task count).

All methods of a setting are timed in ONE process, interleaved round-robin in a shuffled order per
round (so machine load drifts hit all methods alike); the table reports medians and ratios to the
median of linear scalarization (uniform weights). Peak memory is the peak resident set size of a fresh
process that builds the model and runs a few steps of one method (``VmHWM``), so it includes the
Python/torch baseline; the Δ column subtracts linear scalarization's.

A second table times the per-task Jacobian strategies alone (on one retained graph): the vmapped
backward (``is_grads_batched``), a Python loop of ``T`` backward passes, ``torch.func`` (``vjp`` of the
encoder, vmapped over the ``T`` cotangents), and the two-stage engine used by ``StepContext``.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/step_overhead_bench.py --out docs/benchmarks_steps.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from moomtl.methods import build_method
from moomtl.methods.base import Method
from moomtl.models.base import MultiTaskModel
from moomtl.models.lenet import hps_lenet
from moomtl.train.callbacks import TrainState
from moomtl.train.context import StepContext, batched_jacobian, branch_jacobian, task_jacobian

METHODS: dict[str, dict] = {
    "linear (uniform)": {"name": "uniform"},
    "MGDA-UB": {"name": "mgda_ub"},
    "MGDA": {"name": "mgda"},
    "PCGrad": {"name": "pcgrad"},
    "CAGrad": {"name": "cagrad"},
    "GradNorm": {"name": "gradnorm"},
    "Kendall": {"name": "kendall"},
    "RLW": {"name": "rlw"},
}
SETTINGS = {2: 10, 40: 2}  # number of tasks -> classes per head
TARGETS = {(2, "MGDA-UB"): 1.10, (2, "MGDA"): 1.30, (40, "MGDA-UB"): 1.5, (40, "MGDA"): 6.0}


def make_setting(
    n_tasks: int, batch: int, seed: int = 0
) -> tuple[MultiTaskModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    names = ("left", "right") if n_tasks == 2 else tuple(f"attr{i:02d}" for i in range(n_tasks))
    model = hps_lenet(names, n_classes=SETTINGS[n_tasks])
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, SETTINGS[n_tasks], (batch, n_tasks))
    return model, x, y


class Stepper:
    """One method with its own model copy and optimizer, stepping on a fixed batch."""

    def __init__(self, method_spec: dict, n_tasks: int, batch: int) -> None:
        self.model, self.x, self.y = make_setting(n_tasks, batch)
        spec = dict(method_spec)
        self.method: Method = build_method(spec.pop("name"), **spec)
        self.method.setup(self.model.task_names, self.model)
        params = [*self.model.parameters(), *self.method.parameters()]
        self.opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)  # tiny lr: the model stays put
        self.state = TrainState(model=self.model, optimizer=self.opt)
        self.model.train()

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        z = self.model.encode(self.x)
        out = self.model.decode(z, self.x)
        losses = {t: F.cross_entropy(out[t], self.y[:, i]) for i, t in enumerate(self.model.task_names)}
        self.method.backward(losses, StepContext(self.model, losses, z, self.state.step))
        self.opt.step()
        self.state.step += 1
        self.method.on_step_end(self.state)


class FloorStepper(Stepper):
    """Linear scalarization plus ``T − 1`` extra vector-Jacobian products of the encoder: the least
    work of any exact method that needs the ``T`` per-task gradients of the shared parameters (one
    backward gives one encoder VJP; the heads are cheap)."""

    def __init__(self, n_tasks: int, batch: int) -> None:
        super().__init__({"name": "uniform"}, n_tasks, batch)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        z = self.model.encode(self.x)
        out = self.model.decode(z, self.x)
        losses = {t: F.cross_entropy(out[t], self.y[:, i]) for i, t in enumerate(self.model.task_names)}
        shared = self.model.shared_parameters()
        cot = torch.ones_like(z)
        for _ in range(len(losses) - 1):
            torch.autograd.grad(z, shared, cot, retain_graph=True)
        torch.stack(list(losses.values())).mean().backward()
        self.opt.step()


FLOOR = "floor: linear + (T−1) encoder VJPs"


NOTES = """Every setting's table ends with a *floor* row and the Jacobian strategies are timed alone below
it. The run below uses 1 torch thread: this 2-core machine was shared with other jobs, and 2-thread
runs were dominated by OpenMP threads waiting for a descheduled peer (IQRs of seconds in one run; in a
quieter one, 2 threads gave MGDA-UB 1.05x / 1.22x and MGDA 1.63x / 11.1x at T = 2 / 40). Add one with
``--threads 2 --append``.

## How to read this

* **MGDA-UB** needs ``∂L_t/∂z`` only: ``branch_jacobian`` checks (graph walk, ~0.2 ms at T=40) that
  the heads share no node above ``z`` and then runs one ``autograd.grad(L_t, z)`` per task, each of
  which executes head ``t`` only — one pass through all heads in total. The vmapped backward pushes
  every cotangent through every head (T² head passes) and is an order of magnitude slower at T=40.
  The update is then ONE backward of ``Σ α_t L_t``, so MGDA-UB costs linear scalarization plus one
  extra pass through the heads (input gradients only), a graph walk and a T×T min-norm solve.
  (Also returning the head parameters' gradients from the per-task calls, to skip the heads in the
  final backward, measured slower: +6.4 ms instead of +3.3 ms per step at T = 40, per-call overhead.)
* **Full MGDA / PCGrad / CAGrad** need the T gradients w.r.t. the shared parameters. Any exact method
  needs T vector-Jacobian products of the encoder for that (the Jacobian has rank T in 21,330
  dimensions); the *floor* row runs exactly linear scalarization plus T − 1 extra encoder VJPs and is
  therefore a lower bound for them on this machine. These methods sit on that floor: the shared update
  ``Σ_t v_t g_t`` is formed from the Jacobian already computed (no further encoder backward) and the
  heads get one extra head-only backward. Batching the T encoder VJPs does not help on CPU: the
  vmapped backward and ``torch.func`` (``vjp`` + ``vmap``) are slower than a loop because
  ``max_pool2d_with_indices_backward`` has no vmap batch rule (it falls back to a per-sample loop and
  ``cat``), and the convolution backward does the same FLOPs either way.
* The targets for full MGDA (≤ 1.30x at T = 2, ≤ 6x at T = 40) are below that floor here: with
  ``F`` the forward and ``E`` one encoder VJP (E ≈ 0.8 F for this LeNet on CPU), an exact full-Jacobian
  step costs at least ``F + T·E`` against ``F + E``.
* Memory: peak RSS of a fresh process (python + torch ≈ 330 MiB of it); the Jacobian itself is
  T × 21,330 floats (3.4 MiB at T = 40), the rest is allocator noise of a few MiB.
"""


def time_steps(n_tasks: int, batch: int, repeats: int, warmup: int, seed: int) -> dict[str, list[float]]:
    steppers: dict[str, Stepper] = {label: Stepper(spec, n_tasks, batch) for label, spec in METHODS.items()}
    steppers[FLOOR] = FloorStepper(n_tasks, batch)
    for s in steppers.values():
        for _ in range(warmup):
            s.step()
    times: dict[str, list[float]] = {label: [] for label in steppers}
    order = list(steppers)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for label in order:
            t0 = time.perf_counter()
            steppers[label].step()
            times[label].append(time.perf_counter() - t0)
    return times


def peak_rss_mb(n_tasks: int, label: str, batch: int, steps: int = 5) -> float:
    """Peak RSS (MiB) of a fresh interpreter running ``steps`` steps of one method."""
    cmd = [sys.executable, __file__, "--memory-probe", str(n_tasks), label, "--batch", str(batch),
           "--probe-steps", str(steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def _probe(n_tasks: int, label: str, batch: int, steps: int) -> None:
    stepper = Stepper(METHODS[label], n_tasks, batch)
    for _ in range(steps):
        stepper.step()
    print(json.dumps({"peak_rss_mb": _peak_rss_kib() / 1024}))


def _peak_rss_kib() -> float:
    # VmHWM is this address space's high-water mark; ru_maxrss would also count the parent's RSS at
    # fork (Linux keeps it across exec), which made every probe report the parent's peak.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# --- Jacobian strategies ---------------------------------------------------------------------------
def jacobian_strategies(n_tasks: int, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    model, x, y = make_setting(n_tasks, batch)
    model.eval()  # no dropout, so the torch.func re-run of the encoder sees the same function
    shared = model.shared_parameters()
    z = model.encode(x)
    out = model.decode(z, x)
    losses = [F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)]
    lv = torch.stack(losses)
    names = [n for n, p in model.encoder.named_parameters()]

    def loop_shared() -> torch.Tensor:
        return torch.stack([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)])
            for loss in losses
        ])

    def func_shared() -> torch.Tensor:
        jz = branch_jacobian(losses, z)
        assert jz is not None
        params = {n: p.detach() for n, p in model.encoder.named_parameters()}
        _, vjp_fn = torch.func.vjp(lambda p: torch.func.functional_call(model.encoder, p, (x,)), params)
        grads = torch.vmap(vjp_fn)(jz.view(n_tasks, *z.shape))[0]
        return torch.cat([grads[n].reshape(n_tasks, -1) for n in names], dim=1)

    def two_stage_loop() -> torch.Tensor:
        jz = branch_jacobian(losses, z)
        assert jz is not None
        return torch.stack([
            torch.cat([g.reshape(-1)
                       for g in torch.autograd.grad(z, shared, jz[t].view_as(z), retain_graph=True)])
            for t in range(n_tasks)
        ])

    def two_stage_vmap() -> torch.Tensor:
        jz = branch_jacobian(losses, z)
        assert jz is not None
        gs = torch.autograd.grad(z, shared, jz.view(n_tasks, *z.shape), retain_graph=True,
                                 is_grads_batched=True)
        return torch.cat([g.reshape(n_tasks, -1) for g in gs], dim=1)

    shared_fns: dict[str, Callable[[], torch.Tensor]] = {
        "vmapped backward (is_grads_batched)": lambda: batched_jacobian(lv, shared),
        "loop over a stacked loss vector (L[t] reaches all heads)": lambda: torch.stack([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(lv[t], shared, retain_graph=True)])
            for t in range(n_tasks)
        ]),
        "loop over the T individual losses": loop_shared,
        "torch.func vjp + vmap (re-runs encoder forward)": func_shared,
        "two-stage: heads once + vmapped encoder VJPs": two_stage_vmap,
        "two-stage: heads once + loop of encoder VJPs": two_stage_loop,
        "task_jacobian: per-loss loop over disjoint heads (used)":
            lambda: task_jacobian(losses, shared, through=z),
    }
    rep_fns: dict[str, Callable[[], torch.Tensor]] = {
        "vmapped backward (is_grads_batched)": lambda: batched_jacobian(lv, [z]),
        "loop over a stacked loss vector (L[t] reaches all heads)": lambda: torch.stack([
            torch.autograd.grad(lv[t], z, retain_graph=True)[0].reshape(-1) for t in range(n_tasks)]),
        "branch_jacobian: graph walk + per-loss loop (used)": lambda: branch_jacobian(losses, z),
    }
    result: dict[str, dict[str, float]] = {}
    for wrt, fns in (("shared", shared_fns), ("representation", rep_fns)):
        ref = next(iter(fns.values()))()
        for label, fn in fns.items():
            err = (fn() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
            if err > 1e-4:
                raise AssertionError(f"{wrt}/{label}: relative error {err:.2e}")
        times = {label: [] for label in fns}
        for _ in range(repeats):
            for label, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t0)
        result[wrt] = {label: statistics.median(v) * 1e3 for label, v in times.items()}
    return result


# --- report ----------------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="2,40", help="comma-separated task counts (2 and/or 40)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed steps per method, interleaved (default: 100 at T=2, 25 at T=40)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--jac-repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-method peak-RSS subprocesses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the markdown report here")
    ap.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    ap.add_argument("--memory-probe", nargs=2, metavar=("T", "METHOD"), help=argparse.SUPPRESS)
    ap.add_argument("--probe-steps", type=int, default=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        _probe(int(args.memory_probe[0]), args.memory_probe[1], args.batch, args.probe_steps)
        return

    task_counts = [int(t) for t in args.tasks.split(",")]
    lines = [
        "# Step overhead of gradient-based methods vs linear scalarization" if not args.append else "",
        "",
        f"## {torch.get_num_threads()} torch thread(s)",
        "",
        f"Generated by `benchmarks/step_overhead_bench.py` on {cpu_name()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), batch {args.batch}; "
        "per setting, all methods' steps interleaved in one process (medians; ratios from the same run). "
        "The machine was shared with other jobs: IQRs show the noise.",
        "",
        "Command:",
        "",
        "```",
        "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "<unset>") + " .venv/bin/python "
        + " ".join(["benchmarks/step_overhead_bench.py", *sys.argv[1:]]),
        "```",
        "",
    ]
    if not args.append:
        lines[2:2] = [NOTES]
    verdicts = []
    for n_tasks in task_counts:
        print(f"timing T={n_tasks} ...", file=sys.stderr, flush=True)
        repeats = args.repeats or (100 if n_tasks <= 8 else 25)
        times = time_steps(n_tasks, args.batch, repeats, args.warmup, args.seed)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        q = {k: (sorted(v)[len(v) // 4] * 1e3, sorted(v)[(3 * len(v)) // 4] * 1e3) for k, v in times.items()}
        base = med["linear (uniform)"]
        mem = {} if args.no_memory else {label: peak_rss_mb(n_tasks, label, args.batch) for label in METHODS}
        heads = "ten-way heads (MultiMNIST shape)" if n_tasks == 2 else "binary heads (CelebA-like count)"
        lines += [f"### T = {n_tasks} {heads}, {repeats} timed steps per method", ""]
        lines += ["| method | step median (ms) | IQR (ms) | ratio vs linear | target | peak RSS (MiB) "
                  "| Δ RSS (MiB) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for label in [*METHODS, FLOOR]:
            target = TARGETS.get((n_tasks, label))
            ratio = med[label] / base
            tgt = "" if target is None else f"≤ {target:.2f}x {'met' if ratio <= target else 'NOT met'}"
            if target is not None:
                verdicts.append(f"T={n_tasks} {label}: {ratio:.2f}x (target ≤ {target:.2f}x: "
                                f"{'met' if ratio <= target else 'NOT met'})")
            m = mem.get(label)
            m_s = "" if m is None else f"{m:.0f}"
            shown = f"*{label}*" if label == FLOOR else label
            d_s = "" if m is None else f"{m - mem['linear (uniform)']:+.0f}"
            lines.append(f"| {shown} | {med[label]:.1f} | {q[label][0]:.1f}–{q[label][1]:.1f} | {ratio:.2f}x "
                         f"| {tgt} | {m_s} | {d_s} |")
        lines.append("")
        print(f"timing Jacobian strategies T={n_tasks} ...", file=sys.stderr, flush=True)
        jac = jacobian_strategies(n_tasks, args.batch, args.jac_repeats)
        lines += [f"Per-task Jacobian alone (T = {n_tasks}, one retained graph, "
                  f"median of {args.jac_repeats}):",
                  "", "| w.r.t. | strategy | time (ms) |", "|---|---|---:|"]
        for wrt, res in jac.items():
            for label, ms in res.items():
                lines.append(f"| {wrt} | {label} | {ms:.1f} |")
        lines.append("")
        print("\n".join(lines[-40:]), file=sys.stderr, flush=True)
    lines += ["### Targets", ""] + [f"- {v}" for v in verdicts] + [""]
    report = "\n".join(lines)
    if args.out:
        with open(args.out, "a" if args.append else "w") as f:
            f.write(report)
    print(report)


if __name__ == "__main__":
    main()
