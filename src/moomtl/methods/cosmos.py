r"""COSMOS's preference-conditioned loss (Ruchte & Grabocka, "Scalable Pareto Front Approximation for Deep
Multi-Objective Learning", ICDM 2021), as a fixed-preference method.

.. math::

    \min_\theta \sum_t \lambda_t L_t(\theta) - \mu\, \cos\big(\lambda, L(\theta)\big), \qquad
    \cos(\lambda, L) = \frac{\lambda^\top L}{\lVert\lambda\rVert\,\lVert L\rVert},

a linear scalarization plus a penalty that pulls the loss vector towards the ray of :math:`\lambda`
(so, in the penalty, a larger :math:`\lambda_t` favours a larger share :math:`L_t/\lVert L\rVert`). The
official default :math:`\mu` (``lamda`` in the official settings) is 2 for Multi-MNIST and
Multi-Fashion, 8 for Multi-Fashion+MNIST, 3 for CelebA, 0.01 for the tabular fairness data; ``mu=2`` here.
One backward pass of :math:`\sum_t w_t L_t` with the exact chain-rule weights
:math:`w = \lambda - \mu\, \partial \cos / \partial L` evaluated at the batch losses (``weight/<task>``,
may be negative); ``cosine`` logs :math:`\cos(\lambda, L)`. The cosine uses
``torch.nn.functional.cosine_similarity`` (its ``eps = 1e-8`` guard), as the official code does.

Deliberate difference from the official code (ruchtem/cosmos): COSMOS trains *one* network for all
preferences, sampling :math:`\lambda \sim \mathrm{Dir}(\alpha)` per batch and feeding it to the network
as an extra input. Here :math:`\lambda` is fixed per run (``preference``, normalized to the simplex;
uniform when ``None``), so a sweep trains one model per preference with the same loss; the input
conditioning is a model choice, not part of the method. No state; no host synchronization.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, as_weight_vector, parameter_dtype, register, weights_info


def cosmos_objective(losses: Tensor, pref: Tensor, mu: float) -> Tensor:
    """``Σ λ_t L_t − μ cos(λ, L)``.

    >>> round(float(cosmos_objective(torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]), 2.0)), 6)   # 1 − 2·1
    -1.0
    """
    return (pref * losses).sum() - mu * F.cosine_similarity(losses, pref, dim=0)


@register("cosmos", "COSMOS loss (Ruchte & Grabocka 2021): Σ λ_t L_t − μ cos(λ, L) for a fixed preference λ")
class COSMOS(Method):
    """See the module docstring.

    Args:
        preference: λ (non-negative, not all zero; normalized to sum to 1), uniform when ``None``.
        mu: weight μ ≥ 0 of the cosine-similarity penalty (official Multi-MNIST default 2).
    """

    card = MethodCard(
        paper=(
            "Ruchte & Grabocka, 2021, Scalable Pareto Front Approximation for Deep Multi-Objective Learning, ICDM "
            "2021"
        ),
        url="https://arxiv.org/abs/2103.13392",
        equation="min_θ Σ_t λ_t L_t − μ cos(λ, L)",
        cost="loss",
        reference=(
            "tests/test_methods_loss_zoo_pref.py::test_cosmos_gradient_matches_the_official_loss (the official loss)"
        ),
    )

    preference_param: ClassVar[str | None] = "preference"

    def __init__(self, preference: Sequence[float] | None = None, mu: float = 2.0) -> None:
        super().__init__()
        if preference is not None:
            as_weight_vector(preference)
        if not (isinstance(mu, int | float) and math.isfinite(mu) and mu >= 0):
            raise ValueError(f"mu must be a finite number >= 0, got {mu!r}")
        self.preference = None if preference is None else [float(v) for v in preference]
        self.mu = float(mu)
        self.register_buffer("pref", torch.zeros(0), persistent=False)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n = len(task_names)
        pref = torch.full((n,), 1.0 / n, dtype=torch.float64) if self.preference is None else (
            as_weight_vector(self.preference, n))
        self.pref = (pref / pref.sum()).to(parameter_dtype(model))

    def weights_and_cosine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """``(∂g/∂L, cos(λ, L))`` at the (detached) ``losses``."""
        if self.pref.numel() != losses.numel():
            raise ValueError(f"cosmos: expected {self.pref.numel()} losses (call setup first), got {losses.numel()}")
        f = losses.detach().clone().requires_grad_(True)
        pref = self.pref.to(f)
        with torch.enable_grad():
            (w,) = torch.autograd.grad(cosmos_objective(f, pref, self.mu), f)
        return w, F.cosine_similarity(losses.detach(), pref, dim=0)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        lv = ctx.loss_values
        w, cos = self.weights_and_cosine(lv)
        ctx.backward_weighted(w)
        info = weights_info(self.task_names, w)
        info["cosine"] = cos
        return info
