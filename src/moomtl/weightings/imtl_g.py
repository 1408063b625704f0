r"""IMTL-G, the gradient part of impartial multi-task learning (Liu, Li, Kuang, Xue, Chen, Yang, Liao &
Zhang, "Towards Impartial Multi-task Learning", ICLR 2021, section 3.2; TorchJD's ``IMTLG``).

The aggregated gradient :math:`d = J^\top w` must have equal projections on every unit task gradient
:math:`u_t = g_t / \lVert g_t \rVert`, with :math:`\sum_t w_t = 1`:

.. math::

    u_t^\top d = c \ \ \forall t
    \iff \frac{(G w)_t}{\sqrt{G_{tt}}} = c
    \iff G w = c\, \delta, \quad \delta_t = \sqrt{G_{tt}} = \lVert g_t \rVert ,
    \qquad\text{so}\qquad
    w = \frac{G^{+} \delta}{\mathbf{1}^\top G^{+} \delta} .

The paper's closed form (eq. 12, :math:`\alpha_{2:T} = g_1 U_\perp^\top (D U_\perp^\top)^{-1}`) is the same
solution for linearly independent gradients; in Gramian form it is one solve with :math:`G`.

**Rank deficiency.** For linearly dependent gradients (duplicated, colinear, :math:`T > n`) :math:`G` is
singular and :math:`G^{+}` is its Moore-Penrose pseudo-inverse (eigenvalues below
:math:`T \epsilon_{64} \lambda_{max}` treated as zero, as ``torch.linalg.pinv``'s default): :math:`w` is
then the minimum-norm least-squares solution of :math:`Gw = \delta`, and the projections are equal
exactly when :math:`\delta` lies in the range of :math:`G` (as with duplicated tasks), otherwise only in
the least-squares sense (this is TorchJD's generalization). When :math:`\mathbf{1}^\top G^{+}\delta`
vanishes (all gradients zero, or below :math:`T \epsilon_{64}\lVert G^{+}\delta \rVert_1`) the weights are
zero, i.e. no update, as in TorchJD. The solve runs on :math:`G / \max_t G_{tt}` (the weights are
invariant to the Gramian's scale).

>>> import torch
>>> J = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
>>> w = imtl_g_weights(J @ J.T)
>>> w
tensor([0.6667, 0.3333])
>>> (J / J.norm(dim=1, keepdim=True)) @ (w @ J)   # equal projections on the unit gradients
tensor([0.6667, 0.6667])
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from moomtl.weightings._common import as_float64_gramian, to_like

__all__ = ["imtl_g_weights"]


def imtl_g_weights(gramian: Tensor) -> Tensor:
    """IMTL-G weights ``w`` (``[T]``, summing to 1, or all zero; Gramian's dtype and device)."""
    g = as_float64_gramian(gramian)
    t = g.shape[0]
    scale = float(g.diagonal().max())
    if scale == 0.0:
        return to_like(np.zeros(t), gramian)
    g = g / scale
    delta = np.sqrt(np.maximum(g.diagonal(), 0.0))
    v = np.linalg.pinv(g, hermitian=True) @ delta
    total = float(v.sum())
    if not np.isfinite(total) or abs(total) <= t * np.finfo(np.float64).eps * float(np.abs(v).sum()):
        return to_like(np.zeros(t), gramian)
    return to_like(v / total, gramian)
