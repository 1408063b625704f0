r"""MGDA's min-norm weighting (Désidéri 2012; Sener & Koltun, "Multi-Task Learning as Multi-Objective
Optimization", NeurIPS 2018, eq. 3) as a Gramian weighting:

.. math::

    w = \operatorname*{arg\,min}_{w \in \Delta^{T-1}} w^\top G w ,

solved exactly by :func:`moomtl.solvers.min_norm.min_norm` (active set; see its docstring). TorchJD's
``MGDA`` runs Sener & Koltun's Frank-Wolfe instead (``epsilon=1e-3``, ``max_iters=100``), which stops
early; both minimize the same QP.

>>> import torch
>>> mgda_weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]]))   # g1 ⟂ g2, |g2| = 2 |g1|
tensor([0.8000, 0.2000])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from moomtl.solvers.min_norm import min_norm
from moomtl.weightings._common import as_float64_gramian

__all__ = ["mgda_weights"]


def mgda_weights(gramian: Tensor, **solver_kwargs: Any) -> Tensor:
    """Min-norm weights on the simplex (``solver_kwargs`` go to :func:`~moomtl.solvers.min_norm.min_norm`)."""
    as_float64_gramian(gramian)  # the same validation as every weighting here
    return min_norm(gramian, **solver_kwargs)
