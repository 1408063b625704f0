"""Representation-mode step with and without the fused backward, on the SAME model copy.

``StepContext.run`` runs a method whose representation-mode update only combines the rows ``∂L_t/∂z``
(``Method.fuses_representation()``) inside one backward (``moomtl.autodiff.jacobian.fused_backward``); the
two-call step takes the rows in one autograd call and then backpropagates the encoder from ``z``. Here each
``moomtl`` stepper is stepped both ways, the way chosen per step (``step_overhead_bench.TwoCalls`` for the
two-call step), so the two share one model copy, one optimizer and one heap: on this machine a second copy of
the *same* step can differ by a few percent (``docs/benchmarks_steps.md``, page faults), which is the size
of the difference measured. Also in the process: the plain loss sum (``linear``, the target's reference)
and, for ``mgda_ub``, the hand-written views loop of ``step_overhead_bench.py`` (two calls) and its fused
hand-written twin (one ``backward`` with the same hooks, nothing of moomtl).

Per-step CPU time (``time.process_time``), all variants in a seeded shuffled order per round, medians.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fused_step_bench.py --tasks 40 --rounds 60
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_overhead_bench as sob  # noqa: E402


class HandFusedViewsStep(sob.HandViewsStep):
    """The hand-written views loop in ONE backward: a hook on each view keeps its row, a hook on z returns
    ``Σ_t w_t ∂L_t/∂z`` (w from the Gramian), then each head's gradient is scaled by its ``w_t``."""

    def backward(self, zs: Any, losses: dict[str, Tensor]) -> None:
        names, z = self.names, zs.base
        rows: list[Tensor | None] = [None] * len(names)
        box: dict[str, Tensor] = {}

        def keep(i: int) -> Any:
            def hook(g: Tensor) -> None:
                rows[i] = g
            return hook

        def replace(g: Tensor) -> Tensor:
            r = torch.stack([x.reshape(-1) for x in rows if x is not None])
            w = self.weighting(r @ r.T, self.solver_method).to(r)
            box["w"] = w
            return (w @ r).view_as(z)

        hs = [zs[t].register_hook(keep(i)) for i, t in enumerate(names)] + [z.register_hook(replace)]
        torch.stack([losses[t] for t in names]).sum().backward()
        for h in hs:
            h.remove()
        w = box["w"].unbind()
        torch._foreach_mul_([p.grad for t in names for p in self.heads[t]],
                            [w[i] for i, t in enumerate(names) for _ in self.heads[t]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=40, choices=sorted(sob.SETTINGS))
    ap.add_argument("--methods", default="mgda_ub,graddrop")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t, b = args.tasks, args.batch
    steppers: dict[str, sob.Stepper] = {"linear": sob.HandStep(t, b, "linear", "loss", None)}
    hand_w = sob._hand_weightings()["mgda_ub"]
    steppers["mgda_ub hand views (two calls)"] = sob.HandViewsStep(t, b, "mgda_ub", "representation", hand_w)
    steppers["mgda_ub hand views (fused)"] = HandFusedViewsStep(t, b, "mgda_ub", "representation", hand_w)
    moomtl_steppers: dict[str, sob.Stepper] = {}
    for name in args.methods.split(","):
        moomtl_steppers[f"{name} views"] = sob.MoomtlViewsStep(t, b, name)
        moomtl_steppers[f"{name} features=z"] = sob.MoomtlStep(t, b, name)
    for s in [*steppers.values(), *moomtl_steppers.values()]:
        for _ in range(3):
            s.step()
    keys: list[tuple[str, bool | None]] = [(k, None) for k in steppers]
    keys += [(k, fused) for k in moomtl_steppers for fused in (True, False)]
    times: dict[tuple[str, bool | None], list[float]] = {k: [] for k in keys}
    rng = random.Random(args.seed)
    for _ in range(args.rounds):
        rng.shuffle(keys)
        for key in keys:
            name, fused = key
            s = steppers.get(name) or moomtl_steppers[name]
            step = sob.TwoCalls(s).step if fused is False else s.step  # two calls: fusing off for that step
            t0 = time.process_time()
            step()
            times[key].append(time.process_time() - t0)
    lin = statistics.median(times[("linear", None)])
    print(f"T = {t}, batch {b}, {args.rounds} rounds, 1 thread; linear {1000 * lin:.2f} ms\n")
    print("| step | ms | / linear |\n|---|---:|---:|")
    for key in sorted(times, key=lambda k: (k[0], k[1] is False)):
        name, fused = key
        label = name if fused is None else f"moomtl {name} ({'fused' if fused else 'two calls'})"
        m = statistics.median(times[key])
        print(f"| {label} | {1000 * m:.2f} | {m / lin:.3f}x |")


if __name__ == "__main__":
    main()
