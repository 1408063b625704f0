r"""Geometric loss strategy (Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019).

The network minimizes the geometric mean of the task losses,

.. math::

    \mathcal{L}_{GLS}(\theta) = \Big(\prod_{t=1}^T L_t(\theta)\Big)^{1/T}, \qquad
    \frac{\partial \mathcal{L}_{GLS}}{\partial L_t} = \frac{\mathcal{L}_{GLS}}{T\, L_t},

which is invariant to rescaling any one loss (up to a constant factor of the whole objective). It is
applied as one backward pass of :math:`\sum_t w_t L_t` with the exact chain-rule weights
:math:`w_t = G / (T L_t)` (``weight/<task>``), :math:`G` computed as :math:`\exp(\frac1T \sum_t \log L_t)`
(no overflow/underflow of the product for many tasks).

Difference from LibMTL's ``GLS``: LibMTL backpropagates ``losses.prod() ** (1/T)`` (the same gradient)
but *logs* ``L_t / (T Π_s L_s)``, which is not the gradient weight; the weights logged here are. The
losses must be positive (a zero loss gives that task weight 0 and the others 0 as well, since G = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import MethodCard, Weighting, register


def gls_weights(losses: Tensor) -> Tensor:
    """``∂/∂L_t (Π_s L_s)^{1/T} = G / (T L_t)``.

    >>> gls_weights(torch.tensor([1.0, 4.0])).tolist()   # G = 2
    [1.0, 0.25]
    """
    tiny = torch.finfo(losses.dtype).tiny
    safe = losses.clamp_min(tiny)
    positive = losses > 0
    g = torch.where(positive.all(), torch.exp(torch.log(safe).mean()), torch.zeros_like(safe[0]))
    return torch.where(positive, g / (losses.numel() * safe), torch.zeros_like(losses))


@register("gls", "geometric loss strategy (Chennupati et al. 2019): minimize (Π_t L_t)^(1/T)")
class GeometricLossStrategy(Weighting):
    """GLS; see the module docstring. No hyper-parameters."""

    card = MethodCard(
        paper=(
            "Chennupati et al., 2019, MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy for "
            "Multi-Task Learning, CVPR Workshops 2019"
        ),
        url="https://arxiv.org/abs/1904.08492",
        equation="min_θ (Π_t L_t)^(1/T), i.e. w_t = (Π_s L_s)^(1/T) / (T L_t)",
        cost="loss",
        reference="tests/test_methods_loss_zoo.py::test_gls_gradient_matches_libmtl_objective (LibMTL GLS)",
    )

    def weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        return gls_weights(losses)
