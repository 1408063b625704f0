"""The papers' settings and one timed training step, shared by ``benchmarks/paper_models_bench.py`` and
the ``sener2018-speed`` reproduction: the CelebA ResNet-18 with 40 binary heads (64×64 RGB) and the dense
dilated ResNet-18 with Cityscapes' three tasks (19-class segmentation, 2-channel instance offsets, 1-channel
disparity at 1/8 resolution), on synthetic inputs (the cost of a step does not depend on pixel values), and
:class:`Step`: one method stepping its own model copy as the trainer does (forward → task losses →
``method.backward`` with a ``StepContext`` → optimizer step)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

import torch

from moomtl.autodiff.context import StepContext
from moomtl.methods import build_method
from moomtl.models.base import MultiTaskModel, decode_with_aliases
from moomtl.models.registry import build_model
from moomtl.tasks import Classification, MaskedL1, Segmentation, Task

METHODS = {"linear (uniform)": "uniform", "MGDA-UB": "mgda_ub", "MGDA": "mgda"}
PAPER_RATIO = {"CelebA": 429.9 / 16.1, "Cityscapes": 38.6 / 23.3}  # MGDA / MGDA-UB training time


def celeba_setting(batch: int, size: int, n_tasks: int = 40, model: str = "resnet18_celeba",
                   ) -> tuple[Callable[[], MultiTaskModel], torch.Tensor, dict, dict]:
    """The CelebA ResNet-18 with ``n_tasks`` binary attributes (the paper: 40) on a random batch."""
    names = tuple(f"attr{i:02d}" for i in range(n_tasks))
    x = torch.randn(batch, 3, size, size)
    targets = {t: torch.randint(0, 2, (batch,)) for t in names}
    tasks: dict[str, Task] = {t: Classification() for t in names}
    return (lambda: build_model(model, names, [2] * n_tasks, input_shape=(3, size, size))), x, targets, tasks


def cityscapes_setting(batch: int, height: int) -> tuple[Callable[[], MultiTaskModel], torch.Tensor, dict, dict]:
    width = 2 * height
    h, w = height // 8, width // 8
    x = torch.randn(batch, 3, height, width)
    depth = torch.rand(batch, 1, h, w) * 50
    depth[:, :, : h // 4] = float("nan")  # sky: no disparity
    instance = torch.randn(batch, 2, h, w) * 20
    instance[:, :, h // 2 :] = float("nan")  # pixels off instances
    targets = {"segmentation": torch.randint(0, 19, (batch, h, w)), "instance": instance, "depth": depth}
    tasks: dict[str, Task] = {"segmentation": Segmentation(19), "instance": MaskedL1(), "depth": MaskedL1()}
    names = tuple(targets)
    return (lambda: build_model("resnet18_dense", names, [19, 2, 1], input_shape=(3, height, width))), x, targets, tasks


class Step:
    """One method, its own model copy and optimizer, stepping on a fixed batch."""

    def __init__(self, method: str, make_model: Callable[[], MultiTaskModel], x: torch.Tensor, targets: dict,
                 tasks: dict) -> None:
        torch.manual_seed(0)
        self.model, self.x, self.targets, self.tasks = make_model(), x, targets, tasks
        self.method = build_method(method)
        self.method.setup(self.model.task_names, self.model)
        self.opt = torch.optim.SGD([*self.model.parameters(), *self.method.parameters()], lr=1e-5, momentum=0.9)
        self.step = 0
        self.structure: dict = {}  # static graph facts, as the trainer keeps them across steps
        self.model.train()

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        z = self.model.encode(self.x)
        names = self.model.task_names
        out, aliases = decode_with_aliases(self.model, z, self.x, names)  # as the trainer: one alias per head
        losses = {t: self.tasks[t].loss(out[t], self.targets[t]) for t in names}
        ctx = StepContext(self.model, losses, z, self.step, structure=self.structure, z_aliases=aliases)
        ctx.run(self.method)
        self.opt.step()
        self.step += 1


def interleaved_times(steps: Mapping[str, Callable[[], None]], rounds: int, warmup: int, seed: int,
                      clock: Callable[[], float] = time.process_time) -> dict[str, list[float]]:
    """``{label: [seconds per step]}``: every step run ``warmup`` times untimed, then ``rounds`` times
    interleaved in a seeded shuffled order per round, timed with ``clock`` (process time by default:
    other processes on a shared machine do not inflate it)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(steps)
        rng.shuffle(order)
        for label in order:
            t0 = clock()
            steps[label]()
            times[label].append(clock() - t0)
    return times

