r"""UPGrad, "unconflicting projection of gradients" (Quinton & Rey, "Jacobian Descent for
Multi-Objective Optimization", 2024, eq. 4; TorchJD's ``UPGrad``).

Every task gradient is projected onto the dual cone :math:`\{x : Jx \succeq 0\}` of all task gradients
and the projections are combined with a preference :math:`p` (TorchJD's default :math:`p = \tfrac1T
\mathbf{1}`):

.. math::

    d = \sum_{i=1}^T p_i\, \pi_J(g_i) = J^\top w, \qquad
    w = \sum_{i=1}^T w^{(i)}, \qquad
    w^{(i)} = \operatorname*{arg\,min}_{v \succeq p_i e_i} v^\top G v ,

each :math:`w^{(i)}` being the exact solution of the QP of :mod:`moomtl.weightings.dual_cone`. Since
every :math:`J^\top w^{(i)}` lies in the (convex) dual cone, so does :math:`d`: :math:`G w \succeq 0`,
no task's loss increases to first order.

>>> import torch
>>> J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
>>> w = upgrad_weights(J @ J.T)
>>> w
tensor([1.0000, 0.7500])
>>> J @ (w @ J)     # G w ≥ 0: a non-conflicting update
tensor([0.2500, 0.5000])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from moomtl.weightings._common import as_float64_gramian, preference_vector, to_like
from moomtl.weightings.dual_cone import _check_reg_eps, project_weights_np

__all__ = ["upgrad_weights"]


def upgrad_weights(
    gramian: Tensor, preference: Sequence[float] | Tensor | None = None, reg_eps: float = 0.0
) -> Tensor:
    """UPGrad weights ``w`` (``[T]``, Gramian's dtype and device) with ``d = wᵀJ``.

    :param preference: ``p`` (``1/T`` each by default); used as given, not normalized.
    :param reg_eps: ``0`` for the exact projection; ``1e-4`` reproduces TorchJD 0.18's default
        projector (see :mod:`moomtl.weightings.dual_cone`).
    """
    g = as_float64_gramian(gramian)
    t = g.shape[0]
    p = preference_vector(preference, t)
    _check_reg_eps(reg_eps)
    rows = np.flatnonzero(p > 0)
    w = project_weights_np(g, np.eye(t)[rows], reg_eps)  # w(p_i e_i) = p_i w(e_i)
    return to_like(p[rows] @ w, gramian)
