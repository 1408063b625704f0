r"""Aligned-MTL (Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for
Multi-Task Learning", CVPR 2023, Algorithm 1; TorchJD 0.18's ``AlignedMTL``).

The task gradients are replaced by the closest matrix with condition number one (all singular values
equal to the smallest one, :math:`\sigma_{min}`). From the eigendecomposition of the Gramian
:math:`G = J J^\top = V \Lambda V^\top` (:math:`\Lambda = \Sigma^2`, the :math:`r` eigenvalues above
:math:`T \epsilon_{64} \lambda_{max}` kept), the aligned update with preference :math:`p` (TorchJD's
default :math:`\tfrac1T\mathbf{1}`) is

.. math::

    d = \sigma\, U V^\top p = J^\top w, \qquad
    w = B p, \qquad B = \sqrt{\lambda_s}\; V \Lambda^{-1/2} V^\top ,

with :math:`\lambda_s = \lambda_{min}` (``scale_mode="min"``, the paper and TorchJD's default), the
(lower) median eigenvalue (``"median"``) or their mean (``"rmse"``, the authors' code). :math:`B` is
invariant to the Gramian's scale; an all-zero Gramian gives :math:`B = I`.

>>> import torch
>>> J = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
>>> w = aligned_mtl_weights(J @ J.T)
>>> w
tensor([0.5000, 0.2500])
>>> w @ J     # the two components are balanced
tensor([0.5000, 0.5000])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from moomtl.weightings._common import as_float64_gramian, preference_vector, to_like

__all__ = ["SCALE_MODES", "aligned_mtl_weights", "balance_transformation"]

SCALE_MODES = ("min", "median", "rmse")


def balance_transformation(gramian: np.ndarray, scale_mode: str = "min") -> np.ndarray:
    """``B`` (``[T, T]``, float64) of a validated float64 Gramian."""
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"scale_mode must be one of {', '.join(SCALE_MODES)}, got {scale_mode!r}")
    t = gramian.shape[0]
    top = float(gramian.diagonal().max())
    if top == 0.0:
        return np.eye(t)
    lam, vec = np.linalg.eigh(gramian / top)
    keep = lam > float(lam.max()) * t * np.finfo(np.float64).eps
    if not keep.any():
        return np.eye(t)
    lam, vec = lam[keep], vec[:, keep]  # ascending
    if scale_mode == "min":
        scale = lam[0]
    elif scale_mode == "median":
        scale = lam[(lam.size - 1) // 2]  # the lower median, as torch.median
    else:
        scale = lam.mean()
    return np.sqrt(scale) * (vec / np.sqrt(lam)) @ vec.T


def aligned_mtl_weights(
    gramian: Tensor, preference: Sequence[float] | Tensor | None = None, scale_mode: str = "min"
) -> Tensor:
    """Aligned-MTL weights ``w = B p`` (``[T]``, Gramian's dtype and device)."""
    g = as_float64_gramian(gramian)
    p = preference_vector(preference, g.shape[0])
    return to_like(balance_transformation(g, scale_mode) @ p, gramian)
