"""PCGrad, "projecting conflicting gradients" (Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient
Surgery for Multi-Task Learning", NeurIPS 2020).

For every task ``i`` (starting from ``g_i^{PC} = g_i``) and every other task ``j`` in a random order:

.. math::

    \\text{if } g_i^{PC} \\cdot g_j < 0: \\quad
    g_i^{PC} \\leftarrow g_i^{PC} - \\frac{g_i^{PC} \\cdot g_j}{\\lVert g_j \\rVert^2}\\, g_j ,

and the shared update is ``Σ_i g_i^{PC}``. Task-specific parameters get their own gradients (no other
task touches them, so nothing conflicts there).

Every ``g_i^{PC}`` stays in the span of the task gradients, ``g_i^{PC} = Σ_k C_{ik} g_k``, and every
inner product it needs is ``(C M)_{ij}`` with the Gramian ``M``: the projections run on the ``T×T``
coefficient matrix and the update ``(1ᵀC) J`` touches the Jacobian once. The random order is drawn
per task ``i`` from the method's seeded generator (checkpointed, see
:class:`~moomtl.methods.random_weighting.SeededMethod`). Unlike the authors' code, which shuffles all
tasks including ``i`` itself, ``j`` runs over the other tasks only, as in the paper's Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import MethodCard, check_wrt, register, weights_info
from moomtl.methods.random_weighting import SeededMethod


def pcgrad_coefficients(gramian: Tensor, orders: Sequence[Sequence[int]]) -> Tensor:
    """``C`` (``[T, T]``, float64) with ``g_i^{PC} = Σ_k C_{ik} g_k``; ``orders[i]`` lists the tasks
    ``j ≠ i`` in the order they are projected out of ``g_i``.

    >>> J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])   # g1·g2 = -1 < 0
    >>> C = pcgrad_coefficients(J @ J.T, [[1], [0]])
    >>> (C @ J.double()).tolist()   # g1 - (-1/2) g2, g2 - (-1/1) g1
    [[0.5, 0.5], [0.0, 1.0]]
    """
    m = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    t = m.shape[0]
    if m.shape != (t, t):
        raise ValueError(f"gramian must be square, got shape {tuple(gramian.shape)}")
    if len(orders) != t:
        raise ValueError(f"need one order per task ({t}), got {len(orders)}")
    if not np.isfinite(m).all():
        raise ValueError("gramian has NaN/inf entries")
    c = np.eye(t)
    for i in range(t):
        row = c[i]
        for j in orders[i]:
            if j == i or m[j, j] <= 0:
                continue
            dot = float(row @ m[:, j])
            if dot < 0:
                row[j] -= dot / m[j, j]
    return torch.from_numpy(c)


@register("pcgrad", "PCGrad (Yu et al. 2020): project each task gradient off conflicting ones, sum")
class PCGrad(SeededMethod):
    """PCGrad (see the module docstring). ``seed`` drives the random orders. ``wrt="representation"``
    runs the projections on the gradients w.r.t. the shared representation (one backward through the
    encoder, like MGDA-UB) instead of the shared parameters."""

    fuses_rows = True
    card = MethodCard(
        paper="Yu et al., 2020, Gradient Surgery for Multi-Task Learning, NeurIPS 2020",
        url="https://arxiv.org/abs/2001.06782",
        equation="g_i ← g_i − (g_iᵀ g_j / ‖g_j‖²) g_j for every j (random order) with g_iᵀ g_j < 0; d = Σ_i g_i",
        cost="shared",
        solver="sequential projections on the T×T Gramian (host)",
        state="its random generator (seed)",
        reference=(
            "tests/test_baselines.py::test_pcgrad_coefficients_match_explicit_projections (explicit projections of "
            "the gradients)"
        ),
    )

    def __init__(self, seed: int = 0, wrt: str = "shared") -> None:
        super().__init__(seed=seed)
        self.wrt = check_wrt(wrt)

    def random_orders(self, n_tasks: int) -> list[list[int]]:
        return [[j for j in self.rng.permutation(n_tasks).tolist() if j != i] for i in range(n_tasks)]

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        gram = ctx.gramian(self.wrt)
        coef = pcgrad_coefficients(gram, self.random_orders(gram.shape[0]))
        w = coef.sum(dim=0).to(gram)
        ctx.apply_coefficients(w, self.wrt)
        return weights_info(self.task_names or ctx.task_names, w)
