"""Linear scalarization and its special cases (uniform weights, single task).

Linear scalarization minimizes

.. math:: \\min_\\theta \\sum_{t=1}^T w_t L_t(\\theta), \\qquad w \\in \\Delta^{T-1}\\ (\\text{or } w \\ge 0),

whose minimizers are Pareto optimal but which reaches only the convex part of a Pareto front.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import MethodCard, Weighting, as_weight_vector, register


@register("linear", "fixed linear scalarization Σ w_t L_t with user weights")
class LinearScalarization(Weighting):
    """Fixed user weights ``w`` (one per task, ≥ 0). ``normalize=True`` rescales them to sum to 1.
    ``weights=None``: ``1/T`` each, sized when the number of tasks is known (``setup``).

    >>> LinearScalarization(weights=[3.0, 1.0], normalize=True).w.tolist()
    [0.75, 0.25]
    """

    reads_losses = False  # fixed weights: no all-reduce of the loss values under torchrun

    card = MethodCard(
        paper="Miettinen, 1999, Nonlinear Multiobjective Optimization (weighted-sum method), Kluwer",
        url="https://doi.org/10.1007/978-1-4615-5563-6",
        equation="min_θ Σ_t w_t L_t (fixed w; uniform when not given)",
        cost="loss",
        reference=(
            "tests/test_context.py::test_weighted_backward_equals_linear_scalarization_gradient (autograd of the "
            "weighted sum)"
        ),
    )

    preference_param = "weights"

    def __init__(self, weights: Sequence[float] | None = None, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize
        w = as_weight_vector(weights) if weights is not None else torch.zeros(0, dtype=torch.float64)
        self.register_buffer("w", w / w.sum() if normalize and w.numel() else w, persistent=False)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        if self.w.numel() == 0:
            self.w = torch.full((len(task_names),), 1.0 / len(task_names), dtype=torch.float64, device=self.w.device)
        if self.w.numel() != len(task_names):
            raise ValueError(f"linear: {self.w.numel()} weights given for {len(task_names)} tasks")

    def weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        return self.w.to(losses)

    def extra_repr(self) -> str:
        return f"weights={self.w.tolist()}, normalize={self.normalize}"


@register("uniform", "equal weights 1/T on every task loss")
class Uniform(Weighting):
    """``w_t = 1/T`` (the mean of the task losses)."""

    reads_losses = False  # fixed weights: no all-reduce of the loss values under torchrun

    card = MethodCard(
        paper="Miettinen, 1999, Nonlinear Multiobjective Optimization (weighted-sum method), Kluwer",
        url="https://doi.org/10.1007/978-1-4615-5563-6",
        equation="min_θ (1/T) Σ_t L_t",
        cost="loss",
        reference=(
            "tests/test_method_docs.py::test_uniform_and_single_task_are_their_plain_losses (autograd of the plain "
            "loss)"
        ),
    )

    def weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        return torch.full_like(losses, 1.0 / losses.numel())


@register("single_task", "train on one task only (the others get weight 0)")
class SingleTask(Weighting):
    """Weight 1 on ``task`` and 0 elsewhere: the single-task baseline on the shared architecture
    (``task=None``: the first task)."""

    reads_losses = False  # fixed weights: no all-reduce of the loss values under torchrun

    card = MethodCard(
        paper="Caruana, 1997, Multitask Learning, Machine Learning 28 (the single-task baseline)",
        url="https://doi.org/10.1023/A:1007379606734",
        equation="min_θ L_task (weight 1 on one task, 0 on the others)",
        cost="loss",
        reference=(
            "tests/test_method_docs.py::test_uniform_and_single_task_are_their_plain_losses (autograd of the plain "
            "loss)"
        ),
    )

    def __init__(self, task: str | None = None) -> None:
        super().__init__()
        self.task = task

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        if self.task is None:
            self.task = task_names[0]
        if self.task not in task_names:
            raise ValueError(f"single_task: unknown task {self.task!r}; tasks are {list(task_names)}")

    def weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        w = torch.zeros_like(losses)
        w[self.task_names.index(self.task)] = 1.0
        return w
