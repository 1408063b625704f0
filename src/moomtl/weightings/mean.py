r"""Constant weightings: the mean and the sum of the task gradients.

.. math::

    w^{\text{mean}} = \tfrac{1}{T}\mathbf{1}, \qquad w^{\text{sum}} = \mathbf{1},
    \qquad d = J^\top w ,

i.e. gradient descent on :math:`\tfrac1T \sum_t L_t` (TorchJD's ``Mean``) or :math:`\sum_t L_t`
(``Sum``). They do not read the Gramian's values, so only its shape is validated (no host sync).

>>> import torch
>>> mean_weights(torch.eye(4))
tensor([0.2500, 0.2500, 0.2500, 0.2500])
>>> sum_weights(torch.eye(2, dtype=torch.float64))
tensor([1., 1.], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

from moomtl.weightings._common import check_shape

__all__ = ["mean_weights", "sum_weights"]


def _dtype(gramian: Tensor) -> torch.dtype:
    return gramian.dtype if gramian.is_floating_point() else torch.float64


def mean_weights(gramian: Tensor) -> Tensor:
    """``1/T`` per task, on the Gramian's device and dtype."""
    t = check_shape(gramian)
    return torch.full((t,), 1.0 / t, dtype=_dtype(gramian), device=gramian.device)


def sum_weights(gramian: Tensor) -> Tensor:
    """``1`` per task, on the Gramian's device and dtype."""
    t = check_shape(gramian)
    return torch.ones(t, dtype=_dtype(gramian), device=gramian.device)
