"""Per-step CPU time of every registered method through ``moomtl.mtl_backward``, against a hand-written
loop doing the same update and against TorchJD 0.18's ``mtl_backward`` for the methods TorchJD has.

One step is ``zero_grad`` → ``encode``/``decode`` → per-task cross-entropy → *the backward* →
``optimizer.step()`` (SGD, tiny lr so the model stays put), on the HPS LeNet with a MultiMNIST-shaped
batch (``[256, 1, 28, 28]``, synthetic normal inputs: the cost does not depend on pixel values), for

* T = 2 ten-way heads (MultiMNIST),
* T = 10 ten-way heads (the same LeNet trunk with ten heads), and
* T = 40 ten-way heads (the issue's scale for the representation-mode target).

Targets (issue 10): a loss-weighting or full-Jacobian method's moomtl step ≤ 1.05× its hand-written
floor (the plain loss sum; the ``T`` per-task backward passes with the same weighting); a
representation-mode method's step ≤ 1.10× *linear* (the plain loss sum: the mean of ``uniform``'s and
``linear``'s hand steps, the same computation) at
T = 40 (at T = 2 and 10 against its own hand floor).

*The backward* is, per variant:

* ``moomtl``: ``moomtl.mtl_backward(losses, method, shared_params=encoder, features=z,
  task_params=heads)`` then ``method.on_step_end(state)`` (what a loop must call for the methods with
  between-step updates); for representation-mode methods also ``moomtl (views)``: the same call with
  each head reading its own view of z (``features=moomtl.views(z, heads)``, what the trainer does),
  whose *hand* is one ``autograd.grad`` over the views and the heads' parameters (the rows and the heads'
  gradients), the Gramian, the weighting and ``z.backward(Σ_t w_t ∂L_t/∂z)``;
* ``hand``: the least a hand-written loop does for the method's cost class (``Method.card.cost``):
  *loss weighting*: ``sum(losses).backward()`` (the plain loss sum); *representation Jacobian*: ``T``
  ``autograd.grad(L_t, z)``, the ``T×T`` Gramian, the weighting, one backward of ``Σ_t w_t L_t``;
  *layer Jacobian* (GradNorm): the same with the rows taken on down to the last shared layer's weight by one
  batched vector-Jacobian product from z;
  *full Jacobian*: ``T`` ``autograd.grad(L_t, shared + head_t)``, the Gramian, the weighting, ``.grad``
  of the shared parameters ``= wᵀJ`` and each head its own gradient. "The weighting" is the method's own
  pure function of the Gramian where it has one (``HAND_WEIGHTINGS``: the same solver moomtl's step
  calls, so the ratio isolates the framework's overhead); for the other methods the mean
  (``w = 1/T``), so the ratio then also contains the method's own per-step work (marked *floor*);
* ``torchjd``: ``torchjd.autojac.mtl_backward(losses, z, tasks_params=..., shared_params=...)`` then
  ``torchjd.autojac.jac_to_grad(shared, aggregator)``, in TorchJD's default mode
  (``parallel_chunk_size=None``: all ``T`` rows in one vmapped backward) and with
  ``parallel_chunk_size=1`` (``T`` sequential backward passes).

All variants of a setting live in ONE process, each with its own model copy and optimizer, and are
stepped round-robin in a shuffled order per round (machine load drifts hit all alike). The time of a
step is ``time.process_time`` (CPU time of this process: another job on the machine does not count,
cache and memory-bandwidth contention still does); the table reports medians over the rounds.

A last table measures the trainer: the per-step CPU time inside ``Trainer.fit`` (between consecutive
``on_step_end`` events: batching, forward, the method, optimizer, logging) against a loop that takes the
same batches from the same tensors and calls ``mtl_backward``, one epoch each, alternated.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_overhead_bench.py --threads 1 --out docs/benchmarks_steps.md
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import moomtl
from moomtl.api import setup_method
from moomtl.data.base import DataSplits, MultiTaskTensors
from moomtl.events import Callback, TrainState
from moomtl.methods import available_methods, build_method
from moomtl.methods.base import Method
from moomtl.models.base import HardParameterSharing
from moomtl.models.lenet import hps_lenet
from moomtl.train.trainer import Trainer

SETTINGS = {2: 10, 10: 10, 40: 10}  # number of tasks -> classes per head
TARGETS = {"loss": 1.05, "representation": 1.10, "shared": 1.05}
LINEAR_TARGET_TASKS = 40  # from this T on, representation-mode methods are held to TARGETS × linear
TRAINER_TARGET = 1.02


def _mean(g: Tensor, m: Method) -> Tensor:
    return torch.full((g.shape[0],), 1.0 / g.shape[0], dtype=g.dtype)


def _hand_weightings() -> dict[str, Callable[[Tensor, Method], Tensor]]:
    from moomtl.methods.cagrad import cagrad_coefficients
    from moomtl.methods.fairgrad import fairgrad_weights
    from moomtl.methods.pcgrad import pcgrad_coefficients
    from moomtl.solvers.min_norm import min_norm

    def compute(g: Tensor, m: Method) -> Tensor:
        return m.compute_weights(g)  # type: ignore[attr-defined]

    return {
        "mgda": lambda g, m: min_norm(g),
        "mgda_ub": lambda g, m: min_norm(g),
        "upgrad": compute, "dualproj": compute, "imtl_g": compute, "aligned_mtl": compute,
        "cagrad": lambda g, m: cagrad_coefficients(g, m.c, m.rescale),  # type: ignore[attr-defined]
        "pcgrad": lambda g, m: pcgrad_coefficients(g, m.random_orders(g.shape[0])).sum(dim=0),  # type: ignore
        "fairgrad": lambda g, m: torch.as_tensor(fairgrad_weights(g, m.alpha), dtype=g.dtype),  # type: ignore
        "rgw": lambda g, m: torch.softmax(torch.randn(g.shape[0], dtype=g.dtype), 0) / g.diagonal().sqrt(),
    }


def _torchjd_aggregators(n_tasks: int) -> dict[str, Callable[[], Any]]:
    import torchjd.aggregation as A

    return {
        "upgrad": A.UPGrad, "dualproj": A.DualProj, "mgda": A.MGDA, "imtl_g": A.IMTLG,
        "aligned_mtl": A.AlignedMTL, "nash_mtl": lambda: A.NashMTL(n_tasks=n_tasks), "cagrad": lambda: A.CAGrad(c=0.4),
        "pcgrad": A.PCGrad, "graddrop": A.GradDrop, "gradvac": A.GradVac, "fairgrad": lambda: A.FairGrad(alpha=1.0),
    }


def make_setting(n_tasks: int, batch: int, seed: int = 0) -> tuple[HardParameterSharing, Tensor, Tensor]:
    torch.manual_seed(seed)
    names = ("left", "right") if n_tasks == 2 else tuple(f"task{i}" for i in range(n_tasks))
    model = hps_lenet(names, n_classes=SETTINGS[n_tasks])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, SETTINGS[n_tasks], (batch, n_tasks), generator=g)
    return model, x, y


class Stepper:
    """One variant of one method: its own model copy, optimizer and (where it has one) method."""

    def __init__(self, n_tasks: int, batch: int, method: str | None) -> None:
        self.model, self.x, self.y = make_setting(n_tasks, batch)
        self.model.train()
        self.names = self.model.task_names
        self.shared = list(self.model.encoder.parameters())
        self.heads = {t: list(self.model.heads[t].parameters()) for t in self.names}
        self.method: Method | None = None
        extra: list[nn.Parameter] = []
        if method is not None:
            self.method = build_method(method)
            setup_method(self.method, self.names, shared_params=self.shared, task_params=self.heads)
            extra = [p for p in self.method.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD([*self.model.parameters(), *extra], lr=1e-6, momentum=0.9)
        self.state = TrainState(model=self.model, optimizer=self.opt)

    def forward(self) -> tuple[Tensor, dict[str, Tensor]]:
        self.opt.zero_grad(set_to_none=True)
        z = self.model.encode(self.x)
        out = self.model.decode(z, self.x)
        return z, {t: F.cross_entropy(out[t], self.y[:, i]) for i, t in enumerate(self.names)}

    def backward(self, z: Tensor, losses: dict[str, Tensor]) -> None:
        raise NotImplementedError

    def step(self) -> None:
        z, losses = self.forward()
        self.backward(z, losses)
        self.opt.step()
        self.state.step += 1


class MoomtlStep(Stepper):
    def backward(self, z: Tensor, losses: dict[str, Tensor]) -> None:
        assert self.method is not None
        moomtl.mtl_backward(losses, self.method, shared_params=self.shared, features=z, task_params=self.heads)
        self.method.on_step_end(self.state)


class _ViewsForward(Stepper):
    """The forward pass with each head reading its own view of z; returns the views (``.base`` is z)."""

    def forward(self) -> tuple[Any, dict[str, Tensor]]:
        self.opt.zero_grad(set_to_none=True)
        zs = moomtl.views(self.model.encode(self.x), self.names)
        out = self.model.decode(zs, self.x)
        return zs, {t: F.cross_entropy(out[t], self.y[:, i]) for i, t in enumerate(self.names)}


class MoomtlViewsStep(_ViewsForward, MoomtlStep):
    """``moomtl`` with each head reading its own view of z (``features=moomtl.views(z, heads)``): the
    representation-mode methods' cheaper form of the call."""


class HandStep(Stepper):
    """The least a hand-written loop does for the method's cost class (see the module docstring)."""

    def __init__(self, n_tasks: int, batch: int, method: str, cost: str,
                 weighting: Callable[[Tensor, Method], Tensor] | None) -> None:
        super().__init__(n_tasks, batch, method)
        self.cost = cost
        self.weighting = weighting or _mean
        assert self.method is not None
        self.solver_method: Method = self.method

    def rows_at_layer(self, z: Tensor, rows: Tensor) -> Tensor:
        """*layer* class: the rows ``∂L_t/∂W`` of the last shared layer's weight from the rows at z, by ONE
        batched vector-Jacobian product from z down to W (``T`` products)."""
        from moomtl.methods.gradnorm import last_shared_weight_name

        weight = self.model.get_parameter(last_shared_weight_name(self.model))
        (g,) = torch.autograd.grad(z, weight, grad_outputs=rows.view(rows.shape[0], *z.shape), retain_graph=True,
                                   is_grads_batched=True)
        return g.reshape(rows.shape[0], -1)

    def backward(self, z: Tensor, losses: dict[str, Tensor]) -> None:
        lv = torch.stack([losses[t] for t in self.names])
        if self.cost == "loss":
            lv.sum().backward()
            return
        if self.cost in ("representation", "layer"):
            # losses[t], not lv[t]: a row of the stacked vector reaches every head (T² head passes).
            jac = torch.stack([torch.autograd.grad(losses[t], z, retain_graph=True)[0].reshape(-1)
                               for t in self.names])
            if self.cost == "layer":
                jac = self.rows_at_layer(z, jac)
            w = self.weighting(jac @ jac.T, self.solver_method).to(lv)
            (w.detach() * lv).sum().backward()
            return
        rows, head_grads = [], []
        for t in self.names:
            gs = torch.autograd.grad(losses[t], [*self.shared, *self.heads[t]], retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in gs[: len(self.shared)]]))
            head_grads.append(gs[len(self.shared):])
        jac = torch.stack(rows)
        w = self.weighting(jac @ jac.T, self.solver_method).to(jac)
        d = w @ jac
        offset = 0
        for p in self.shared:
            p.grad = d[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        for t, gs in zip(self.names, head_grads, strict=True):
            for p, g in zip(self.heads[t], gs, strict=True):
                p.grad = g


class HandViewsStep(_ViewsForward, HandStep):
    """The least a hand-written representation-mode loop does when each head reads its own view of z:
    ONE ``autograd.grad`` over the views and the heads' parameters gives the T rows and the heads' own
    gradients, then the Gramian, the weighting, ``z.backward(Σ_t w_t ∂L_t/∂z)`` and each head ``w_t``
    times its gradient — the floor of the ``moomtl (views)`` rows (the views are plain ``z.view_as(z)``;
    nothing of moomtl runs in the backward)."""

    def backward(self, zs: Any, losses: dict[str, Tensor]) -> None:  # zs: the views of _ViewsForward
        n = len(self.names)
        heads = [p for t in self.names for p in self.heads[t]]
        z = zs.base
        gs = torch.autograd.grad([losses[t] for t in self.names], [*(zs[t] for t in self.names), *heads],
                                 retain_graph=True)
        rows = torch.stack([g.reshape(-1) for g in gs[:n]])
        decide = self.rows_at_layer(z, rows) if self.cost == "layer" else rows
        w = self.weighting(decide @ decide.T, self.solver_method).to(rows)
        z.backward((w @ rows).view_as(z))
        k = n
        for i, t in enumerate(self.names):
            for p in self.heads[t]:
                p.grad = gs[k] * w[i]
                k += 1


class TorchJDStep(Stepper):
    def __init__(self, n_tasks: int, batch: int, make_aggregator: Callable[[], Any], chunk: int | None) -> None:
        super().__init__(n_tasks, batch, None)
        self.aggregator = make_aggregator()
        self.chunk = chunk

    def backward(self, z: Tensor, losses: dict[str, Tensor]) -> None:
        from torchjd.autojac import jac_to_grad, mtl_backward

        mtl_backward([losses[t] for t in self.names], z, tasks_params=[self.heads[t] for t in self.names],
                     shared_params=self.shared, parallel_chunk_size=self.chunk)
        jac_to_grad(self.shared, self.aggregator)


class TwoCalls:
    """A ``moomtl`` stepper's step WITHOUT the fused backward (``fuses_representation`` patched to False for
    the step): the rows' call, then a backward from z — on the same model copy as the fused step."""

    def __init__(self, inner: Stepper) -> None:
        self.inner = inner

    def step(self) -> None:
        method = self.inner.method
        assert method is not None
        method.fuses_representation = lambda: False  # type: ignore[method-assign]
        try:
            self.inner.step()
        finally:
            del method.fuses_representation  # back to the class's


def variants_of(name: str, n_tasks: int, batch: int, with_torchjd: bool) -> dict[str, Stepper | TwoCalls]:
    cls = available_methods()[name]
    cost = cls.card.cost
    hand_w = _hand_weightings().get(name)
    out: dict[str, Stepper | TwoCalls] = {"moomtl": MoomtlStep(n_tasks, batch, name),
                                          "hand": HandStep(n_tasks, batch, name, cost, hand_w)}
    if cost in ("representation", "layer"):
        out["views"] = MoomtlViewsStep(n_tasks, batch, name)
        out["hand_views"] = HandViewsStep(n_tasks, batch, name, cost, hand_w)
    if build_method(name).fuses_representation():  # the same steps without the fused backward (before it)
        out["two_calls"] = TwoCalls(out["moomtl"])  # type: ignore[arg-type]
        out["views_two_calls"] = TwoCalls(out["views"])  # type: ignore[arg-type]
    if with_torchjd and name in _torchjd_aggregators(n_tasks):
        make = _torchjd_aggregators(n_tasks)[name]
        out["torchjd"] = TorchJDStep(n_tasks, batch, make, None)
        out["torchjd_seq"] = TorchJDStep(n_tasks, batch, make, 1)
    return out


def time_setting(names: Sequence[str], n_tasks: int, batch: int, rounds: int, warmup: int, seed: int,
                 with_torchjd: bool) -> tuple[dict[tuple[str, str], list[float]], dict[str, str]]:
    steppers: dict[tuple[str, str], Stepper | TwoCalls] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            for var, s in variants_of(name, n_tasks, batch, with_torchjd).items():
                for _ in range(warmup):
                    s.step()
                steppers[(name, var)] = s
        except Exception as e:  # a variant that cannot run is reported, not hidden
            failed[name] = f"{type(e).__name__}: {e}"
            for key in [k for k in steppers if k[0] == name]:
                del steppers[key]
    times: dict[tuple[str, str], list[float]] = {k: [] for k in steppers}
    order = list(steppers)
    rng = random.Random(seed)
    for r in range(rounds):
        rng.shuffle(order)
        for key in order:
            t0 = time.process_time()
            steppers[key].step()
            times[key].append(time.process_time() - t0)
        print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return times, failed


# --- trainer vs loop ------------------------------------------------------------------------------
class _StepClock(Callback):
    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_step_end(self, state: TrainState) -> None:
        self.marks.append(time.process_time())


def trainer_vs_loop(method_name: str, n_tasks: int, batch: int, steps: int, rounds: int) -> tuple[float, float]:
    """Median per-step CPU time (ms) inside ``Trainer.fit`` and in a loop calling ``mtl_backward`` on the
    same batches (one epoch each per round, alternated)."""
    model, _, _ = make_setting(n_tasks, batch)
    names = model.task_names
    g = torch.Generator().manual_seed(1)
    n = batch * steps
    train = MultiTaskTensors(torch.randn(n, 1, 28, 28, generator=g),
                             torch.randint(0, SETTINGS[n_tasks], (n, n_tasks), generator=g), names)
    tiny = MultiTaskTensors(train.x[:8], train.y[:8], names)
    splits = DataSplits(train, tiny, tiny, "synthetic MultiMNIST-shaped")
    t_steps: list[float] = []
    l_steps: list[float] = []
    for r in range(rounds):
        for kind in (("trainer", "loop") if r % 2 == 0 else ("loop", "trainer")):
            torch.manual_seed(0)
            m = hps_lenet(names, n_classes=SETTINGS[n_tasks])
            method = build_method(method_name)
            if kind == "trainer":
                clock = _StepClock()
                trainer = Trainer(m, method, optimizer="SGD", optimizer_kwargs={"lr": 1e-6, "momentum": 0.9},
                                  epochs=1, batch_size=batch, callbacks=[clock])
                start = time.process_time()
                clock.marks.append(start)
                trainer.fit(splits)
                marks = clock.marks[: steps + 1]
                t_steps += [b - a for a, b in zip(marks, marks[1:], strict=False)]
            else:
                shared = list(m.encoder.parameters())
                heads = {t: list(m.heads[t].parameters()) for t in names}
                setup_method(method, names, shared_params=shared, task_params=heads)
                opt = torch.optim.SGD([*m.parameters(), *method.parameters()], lr=1e-6, momentum=0.9)
                state = TrainState(model=m, optimizer=opt)
                m.train()
                gen = torch.Generator().manual_seed(0)
                for idx in torch.randperm(len(train), generator=gen).split(batch):
                    t0 = time.process_time()
                    x = train.images(idx)
                    targets = train.targets(idx)
                    opt.zero_grad(set_to_none=True)
                    z = m.encode(x)
                    out = m.decode(z, x)
                    losses = {t: F.cross_entropy(out[t], targets[t]) for t in names}
                    moomtl.mtl_backward(losses, method, shared_params=shared, features=z, task_params=heads)
                    opt.step()
                    state.step += 1
                    method.on_step_end(state)
                    l_steps.append(time.process_time() - t0)
    return statistics.median(t_steps) * 1e3, statistics.median(l_steps) * 1e3


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


def _fmt_ratio(r: float | None) -> str:
    return "" if r is None else f"{r:.2f}x"


def report_setting(n_tasks: int, times: dict[tuple[str, str], list[float]], failed: dict[str, str],
                   rounds: int) -> tuple[list[str], list[str]]:
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    methods = available_methods()
    hand_w = _hand_weightings()
    heads = {2: "MultiMNIST", 10: "ten ten-way heads", 40: "forty ten-way heads"}.get(n_tasks, f"{n_tasks} heads")
    # linear scalarization's step: the plain loss sum, the hand step of both `uniform` and `linear` (the same
    # computation timed twice: their mean halves the noise of one variant)
    plain = [med[(n, "hand")] for n in ("uniform", "linear") if (n, "hand") in med]
    linear = statistics.mean(plain) if plain else None
    lines = [f"### T = {n_tasks} ({heads}), batch 256, {rounds} interleaved rounds", "",
             "| method | cost class | moomtl (ms) | hand (ms) | moomtl / hand | moomtl / linear | target "
             "| TorchJD (ms) | TorchJD seq (ms) | moomtl / TorchJD |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    misses = []
    labels = {"moomtl": "", "views": " (views)", "two_calls": " (two calls)", "views_two_calls": " (views, two calls)"}
    for name, variant in sorted({(k[0], k[1]) for k in times if k[1] in labels}):
        cost = methods[name].card.cost
        m, h = med[(name, variant)], med[(name, "hand_views" if "views" in variant else "hand")]
        label = f"`{name}`{labels[variant]}"
        ratio = m / h
        vs_linear = None if linear is None else m / linear
        exact = cost == "loss" or name in hand_w
        target = TARGETS.get(cost)  # the layer class (GradNorm) has no target of its own: against its floor
        if cost == "representation" and n_tasks >= LINEAR_TARGET_TASKS and vs_linear is not None:
            verdict = "met" if vs_linear <= target else "NOT met"
            tgt = f"≤ {target:.2f}x linear {verdict}"
            if verdict != "met":
                misses.append(f"T={n_tasks} {label} ({cost}): {vs_linear:.2f}x linear > {target:.2f}x")
        elif exact:
            verdict = "met" if ratio <= target else "NOT met"
            tgt = f"≤ {target:.2f}x {verdict}"
            if verdict != "met":
                misses.append(f"T={n_tasks} {label} ({cost}): {ratio:.2f}x > {target:.2f}x")
        else:
            tgt = "— (hand = class floor, mean weights)"
        tj = med.get((name, "torchjd")) if variant == "moomtl" else None
        tjs = med.get((name, "torchjd_seq")) if variant == "moomtl" else None
        best = min(v for v in (tj, tjs) if v is not None) if tj is not None or tjs is not None else None
        lines.append(f"| {label} | {cost} | {m:.1f} | {h:.1f} | {ratio:.2f}x | {_fmt_ratio(vs_linear)} | {tgt} | "
                     f"{'' if tj is None else f'{tj:.1f}'} | {'' if tjs is None else f'{tjs:.1f}'} | "
                     f"{_fmt_ratio(None if best is None else m / best)} |")
    for name, err in failed.items():
        lines.append(f"| `{name}` | failed | {err} | | | | | | | |")
    lines.append("")
    return lines, misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="2,10", help="comma-separated task counts (2, 10, 40)")
    ap.add_argument("--methods", default=None, help="comma-separated method names (default: every registered)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", default=None,
                    help="timed rounds, one number or one per --tasks entry (default: 30 at T=2, 15 at T≥10)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--no-torchjd", action="store_true")
    ap.add_argument("--trainer-methods", default="uniform,upgrad", help="methods of the trainer table ('' skips)")
    ap.add_argument("--trainer-steps", type=int, default=20)
    ap.add_argument("--trainer-rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the markdown report here")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = list(available_methods()) if args.methods is None else args.methods.split(",")
    from importlib.metadata import version

    lines = [
        "# Step overhead: moomtl.mtl_backward vs a hand-written loop and TorchJD",
        "",
        f"Generated by `benchmarks/step_overhead_bench.py` on {cpu_name()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, TorchJD {version('torchjd')}, {torch.get_num_threads()} torch thread(s), "
        f"batch {args.batch}. Per-step CPU time (`time.process_time`), medians; every variant of a setting "
        f"stepped round-robin in one process. Load average when the run started: {os.getloadavg()[0]:.2f}.",
        "",
        "Command:",
        "",
        "```",
        "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "<unset>") + " .venv/bin/python "
        + " ".join(["benchmarks/step_overhead_bench.py", *sys.argv[1:]]),
        "```",
        "",
        "## Results",
        "",
    ]
    misses: list[str] = []
    task_counts = [int(t) for t in args.tasks.split(",")]
    given = [int(r) for r in args.rounds.split(",")] if args.rounds else []
    for i, n_tasks in enumerate(task_counts):
        rounds = (given[i] if i < len(given) else given[-1]) if given else (30 if n_tasks <= 2 else 15)
        print(f"timing T={n_tasks} ...", file=sys.stderr, flush=True)
        times, failed = time_setting(names, n_tasks, args.batch, rounds, args.warmup, args.seed,
                                     not args.no_torchjd)
        sec, miss = report_setting(n_tasks, times, failed, rounds)
        lines += sec
        misses += miss
        print("\n".join(sec), file=sys.stderr, flush=True)
        write(args.out, lines, misses, done=False)
    if args.trainer_methods:
        lines += ["### Trainer vs a loop calling mtl_backward (T = 2)", "",
                  "| method | Trainer.fit per step (ms) | loop per step (ms) | trainer / loop | target |",
                  "|---|---:|---:|---:|---|"]
        for name in args.trainer_methods.split(","):
            print(f"trainer vs loop: {name} ...", file=sys.stderr, flush=True)
            tr, lo = trainer_vs_loop(name, 2, args.batch, args.trainer_steps, args.trainer_rounds)
            ok = tr / lo <= TRAINER_TARGET
            if not ok:
                misses.append(f"trainer {name}: {tr / lo:.3f}x > {TRAINER_TARGET:.2f}x")
            lines.append(f"| `{name}` | {tr:.1f} | {lo:.1f} | {tr / lo:.3f}x | ≤ {TRAINER_TARGET:.2f}x "
                         f"{'met' if ok else 'NOT met'} |")
        lines.append("")
    write(args.out, lines, misses, done=True)


def write(out: str | None, lines: list[str], misses: list[str], done: bool) -> None:
    """Write the report so far (after every section, so a run cut short keeps what it measured)."""
    tail = ["### Targets missed", ""] + ([f"- {m}" for m in misses] or ["- none"]) + ["", "@NOTES@", ""]
    if not done:
        tail = ["(run in progress: the sections above are complete)", ""] + tail
    report = "\n".join(lines + tail)
    if out:
        notes = ""
        if os.path.exists(out):  # keep the hand-written notes of the previous report
            old = open(out).read()
            a, b = old.find("<!-- notes -->"), old.find("<!-- /notes -->")
            if a >= 0 and b > a:
                notes = old[a: b + len("<!-- /notes -->")]
        with open(out, "w") as f:
            f.write(report.replace("@NOTES@", notes or "<!-- notes -->\n<!-- /notes -->"))
    if done:
        print(report.replace("@NOTES@", ""))


if __name__ == "__main__":
    main()
