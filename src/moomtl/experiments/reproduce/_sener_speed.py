"""Per-step CPU time of MGDA, MGDA-UB and uniform scaling on the papers' models, as RATIOS measured in one
process: every method has its own model copy and optimizer stepping on one fixed batch, the methods are
interleaved round-robin in a seeded shuffled order per round, and each step is timed with
``time.process_time`` (the CPU seconds of this process, which other processes on a shared machine do
not inflate the way they inflate wall time); medians per method.

The training step, the Cityscapes setting and the paper's ratios come from
:mod:`moomtl.experiments.paper_models` (which ``benchmarks/paper_models_bench.py`` also uses); this module adds the
MultiMNIST LeNet setting, a CelebA setting with any number of tasks, and the process-time loop.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from moomtl.experiments.paper_models import Step, interleaved_times
from moomtl.models.base import MultiTaskModel
from moomtl.models.registry import build_model
from moomtl.tasks import Classification, Task

#: (make_model, inputs, targets, tasks): the benchmark's setting tuple.
Setting = tuple[Callable[[], MultiTaskModel], torch.Tensor, dict[str, torch.Tensor], dict[str, Task]]

def multimnist_setting(batch: int) -> Setting:
    """The paper's MultiMNIST HPS LeNet: two 10-way digit tasks on 1×28×28 inputs."""
    names = ("left", "right")
    x = torch.randn(batch, 1, 28, 28)
    targets = {t: torch.randint(0, 10, (batch,)) for t in names}
    tasks: dict[str, Task] = {t: Classification() for t in names}
    return (lambda: build_model("hps_lenet", names, [10, 10], input_shape=(1, 28, 28))), x, targets, tasks


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block (``None``: unchanged). One thread keeps process time
    free of the CPU that idle OpenMP workers burn spinning when the machine is busy."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_steps(setting: Setting, methods: Mapping[str, str], rounds: int, warmup: int, seed: int,
               threads: int | None = 1) -> dict[str, list[float]]:
    """``{label: [process seconds per step]}`` for ``methods`` (label → registered method name), each
    stepped ``warmup`` times untimed, then ``rounds`` times interleaved in a shuffled order per round."""
    step_cls = Step
    make_model, x, targets, tasks = setting
    with torch_threads(threads):
        torch.manual_seed(seed)
        steps = {label: step_cls(name, make_model, x, targets, tasks) for label, name in methods.items()}
        return interleaved_times(steps, rounds, warmup, seed)


def medians(times: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {label: statistics.median(ts) for label, ts in times.items()}


def ratio(times: Mapping[str, Sequence[float]], num: str, den: str) -> float:
    """median(num) / median(den) (∞-free: a zero denominator is a ValueError)."""
    m = medians(times)
    if not m[den] > 0:
        raise ValueError(f"median step time of {den} is {m[den]}; cannot form a ratio")
    return m[num] / m[den]

