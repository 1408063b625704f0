r"""DualProj: the (preference-weighted) mean gradient projected onto the dual cone of the task gradients
(Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"; the projection of GEM,
Lopez-Paz & Ranzato 2017, eq. 11; TorchJD's ``DualProj``):

.. math::

    d = \pi_J\Big(\sum_t p_t g_t\Big) = J^\top w, \qquad
    w = \operatorname*{arg\,min}_{w \succeq p} w^\top G w ,

with :math:`p = \tfrac1T \mathbf{1}` by default, solved exactly (:mod:`moomtl.weightings.dual_cone`).
KKT: :math:`Gw \succeq 0`, :math:`w \succeq p`, :math:`(Gw)_t (w_t - p_t) = 0`.

>>> import torch
>>> J = torch.tensor([[1.0, 0.0], [-2.0, 1.0]])      # the mean (-0.5, 0.5) conflicts with g1
>>> w = dualproj_weights(J @ J.T)
>>> w
tensor([1.0000, 0.5000])
>>> w @ J                                          # the closest vector with g1·d ≥ 0, g2·d ≥ 0
tensor([0.0000, 0.5000])
>>> dualproj_weights(torch.eye(3))   # orthogonal gradients: nothing to project
tensor([0.3333, 0.3333, 0.3333])
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from moomtl.weightings._common import as_float64_gramian, preference_vector, to_like
from moomtl.weightings.dual_cone import _check_reg_eps, project_weights_np

__all__ = ["dualproj_weights"]


def dualproj_weights(
    gramian: Tensor, preference: Sequence[float] | Tensor | None = None, reg_eps: float = 0.0
) -> Tensor:
    """DualProj weights ``w`` (``[T]``, Gramian's dtype and device); arguments as
    :func:`~moomtl.weightings.upgrad.upgrad_weights`."""
    g = as_float64_gramian(gramian)
    p = preference_vector(preference, g.shape[0])
    _check_reg_eps(reg_eps)
    return to_like(project_weights_np(g, p[None, :], reg_eps)[0], gramian)
