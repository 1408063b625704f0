"""Gradient normalizers of MGDA, as in Sener & Koltun's code (``gradient_normalizers`` in
isl-org/MultiObjectiveOptimization, ``min_norm_solvers.py``).

Before the min-norm problem is solved, task gradient ``g_t`` is divided by a scale ``n_t``:

.. math::

    n_t^{\\text{l2}} = \\lVert g_t \\rVert, \\quad n_t^{\\text{loss}} = L_t, \\quad
    n_t^{\\text{loss+}} = L_t \\lVert g_t \\rVert, \\quad n_t^{\\text{none}} = 1 .

Only inner products are needed, so the normalization acts on the Gramian:
``G'_{st} = G_{st} / (n_s n_t)`` — the Jacobian is never copied. The authors' code divides by zero for
a zero gradient (``l2``, ``loss+``) or a zero loss; here a scale that is zero or not finite is replaced
by 1 (the gradient is left as it is), so the solver never sees NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

NORMALIZERS = ("l2", "loss", "loss+", "none")


def gradient_scales(gramian: Tensor, losses: Tensor, kind: str) -> Tensor:
    """Scales ``n_t`` (shape ``[T]``, dtype of ``gramian``) such that ``g_t / n_t`` is the normalized
    gradient; ``gramian[t, t] = ||g_t||²``.

    >>> g = torch.tensor([[4.0, 0.0], [0.0, 9.0]])
    >>> gradient_scales(g, torch.tensor([0.5, 2.0]), "l2").tolist()
    [2.0, 3.0]
    >>> gradient_scales(g, torch.tensor([0.5, 2.0]), "loss+").tolist()
    [1.0, 6.0]
    """
    if kind not in NORMALIZERS:
        raise ValueError(f"unknown gradient normalizer {kind!r}; choose one of {', '.join(NORMALIZERS)}")
    if gramian.ndim != 2 or gramian.shape[0] != gramian.shape[1]:
        raise ValueError(f"gramian must be a square [T, T] matrix, got shape {tuple(gramian.shape)}")
    t = gramian.shape[0]
    losses = losses.detach().reshape(-1).to(gramian)
    if losses.numel() != t:
        raise ValueError(f"{losses.numel()} losses for a {t}×{t} gramian")
    if kind in ("loss", "loss+") and bool((losses < 0).any()):
        # Dividing by a negative loss would flip the gradient: the loss normalizers assume L_t ≥ 0.
        raise ValueError(f"gradient normalizer {kind!r} needs non-negative losses, got {losses.tolist()}")
    norms = gramian.diagonal().clamp_min(0).sqrt()
    if kind == "l2":
        scales = norms
    elif kind == "loss":
        scales = losses.clone()
    elif kind == "loss+":
        scales = losses * norms
    else:
        scales = torch.ones_like(norms)
    bad = ~torch.isfinite(scales) | (scales <= 0)
    return torch.where(bad, torch.ones_like(scales), scales)


def normalize_gramian(gramian: Tensor, scales: Tensor) -> Tensor:
    """Gramian of the normalized gradients ``g_t / n_t``: ``G_{st} / (n_s n_t)``.

    >>> normalize_gramian(torch.tensor([[4.0, 2.0], [2.0, 9.0]]), torch.tensor([2.0, 3.0])).tolist()
    [[1.0, 0.3333333432674408], [0.3333333432674408, 1.0]]
    """
    s = scales.to(gramian)
    return gramian / (s[:, None] * s[None, :])


def normalize_jacobian(jacobian: Tensor, scales: Tensor) -> Tensor:
    """Rows ``g_t / n_t`` of a ``[T, n]`` Jacobian."""
    return jacobian / scales.to(jacobian)[:, None]
