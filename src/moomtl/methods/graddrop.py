"""GradDrop, gradient sign dropout (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a
Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020).

GradDrop acts on the gradients w.r.t. the shared representation ``Z`` (``[B, ...]``). With
``∇_t = ∂L_t/∂Z`` and the batch marginalized with the sign of the input (the paper's Eq. 2-3),

.. math::

    s_t = \\sum_{b} \\operatorname{sign}(Z_b) \\odot \\nabla_{t,b}, \\qquad
    \\mathcal{P} = \\frac12 \\Big(1 + \\frac{\\sum_t s_t}{\\sum_t |s_t| + 10^{-7}}\\Big), \\qquad
    M_t = \\mathbb{1}[\\mathcal{P} > U]\\, \\mathbb{1}[s_t > 0] + \\mathbb{1}[\\mathcal{P} < U]\\, \\mathbb{1}[s_t < 0],

with ``U ~ Uniform(0, 1)`` drawn once per element of a sample's representation (shared by the batch and
the tasks). ``𝒫`` is the "sign purity": where most tasks push an element up, only the tasks agreeing with
the kept sign pass. The encoder is then back-propagated with

.. math:: \\frac{\\partial}{\\partial Z} = \\sum_t \\big(\\ell + (1-\\ell) M_t\\big) \\odot \\nabla_t ,

``ℓ`` the ``leak`` (``ℓ = 1`` is plain gradient descent on ``Σ_t L_t``). Task-specific parameters get
their plain gradients ``∇L_t``.

Follows LibMTL's representation-gradient ``GradDrop`` (``LibMTL/weighting/GradDrop.py``). Differences,
deliberate: ``U`` comes from the method's seeded NumPy generator (its state is checkpointed,
:class:`~moomtl.methods.random_weighting.SeededMethod`) instead of ``torch.rand_like``, so a resumed run
drops the same signs; in a multi-process run the batch sums ``s_t`` are summed over ranks (every rank
draws the same ``U``), so the masks are those of one process on the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import MethodCard, register, weights_info
from moomtl.methods.random_weighting import SeededMethod

_PURITY_EPS = 1e-7  # LibMTL's guard in the purity's denominator


def graddrop_masks(per_grads: Tensor, z: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """``(P, M)``: sign purity (``z.shape[1:]``) and the keep masks ``M`` (``[T, *z.shape[1:]]``, bool) for
    the per-task representation gradients ``per_grads`` (``[T, *z.shape]``) and uniform draws ``u``.

    >>> z = torch.ones(1, 2)
    >>> g = torch.tensor([[[1.0, -1.0]], [[1.0, 1.0]]])   # both tasks push element 0 up; element 1 is split
    >>> P, M = graddrop_masks(g, z, torch.tensor([0.9, 0.5]))
    >>> P.tolist(), M.tolist()
    ([1.0, 0.5], [[True, False], [True, False]])
    """
    s = (per_grads * z.sign().unsqueeze(0)).sum(dim=1)
    return _purity_and_masks(s, u)


def _purity_and_masks(s: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    purity = 0.5 * (1 + s.sum(dim=0) / (s.abs().sum(dim=0) + _PURITY_EPS))
    masks = ((purity > u) & (s > 0)) | ((purity < u) & (s < 0))
    return purity, masks


@register("graddrop", "GradDrop (Chen et al. 2020): drop representation-gradient signs by their purity (leak)")
class GradDrop(SeededMethod):
    """Gradient sign dropout on the shared representation (see the module docstring).

    Args:
        leak: fraction of every task's gradient that always passes, in ``[0, 1]`` (LibMTL's ``leak``,
            default 0).
        seed: seed of the uniform draws ``U``.
    """

    fuses_rows = True
    card = MethodCard(
        paper=(
            "Chen et al., 2020, Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout, "
            "NeurIPS 2020"
        ),
        url="https://arxiv.org/abs/2010.06808",
        equation=(
            "P = ½(1 + Σ_t ∇_z L_t / Σ_t |∇_z L_t|); per entry of z keep the positive task gradients where U < P, the "
            "negative ones elsewhere"
        ),
        cost="representation",
        state="its random generator (seed)",
        reference="tests/test_methods_gradient_zoo.py::test_graddrop_matches_libmtl_rep_formula (LibMTL GradDrop)",
    )

    def __init__(self, leak: float = 0.0, seed: int = 0) -> None:
        super().__init__(seed)
        if not (isinstance(leak, int | float) and math.isfinite(leak) and 0.0 <= leak <= 1.0):
            raise ValueError(f"leak must be in [0, 1], got {leak!r}")
        self.leak = float(leak)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        z = ctx.z
        if z is None or not z.requires_grad:
            raise ValueError("GradDrop needs the shared representation z of the step (a model with encode())")
        jac = ctx.jacobian("representation")
        t = jac.shape[0]
        per_grads = jac.reshape(t, *z.shape)
        s = (per_grads * z.detach().sign().to(per_grads.dtype).unsqueeze(0)).sum(dim=1)
        if ctx.reducer is not None:  # the batch sum over the global batch: every rank gets the same masks
            s = ctx.reducer.sum_(s.contiguous())
        u = torch.as_tensor(self.rng.random(tuple(z.shape[1:])), dtype=s.dtype).to(s.device)
        purity, masks = _purity_and_masks(s, u)
        keep = self.leak + (1.0 - self.leak) * masks.to(per_grads.dtype)
        grad_z = (per_grads * keep.unsqueeze(1)).sum(dim=0)
        ctx.backward_representation(grad_z, None)  # scaled like the rest under a loss scale
        kept = masks.to(per_grads.dtype).flatten(1).mean(dim=1)
        info = weights_info(self.task_names or ctx.task_names, self.leak + (1.0 - self.leak) * kept)
        info["graddrop/purity"] = purity.detach().mean()
        return info
