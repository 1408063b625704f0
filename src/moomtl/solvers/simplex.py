r"""Two ways of staying on the probability simplex :math:`\Delta^{n-1} = \{p \ge 0,\ \sum_i p_i = 1\}`.

* :func:`project_simplex`: Euclidean projection (the prox of the simplex indicator), used by
  projected-gradient updates of task weights (e.g. CAGrad's dual, OMD-TCH with a Euclidean mirror map).
* :func:`exponentiated_gradient_step`: the mirror-descent step under the entropy mirror map
  (multiplicative weights), used by OMD-TCH's dual update.

Both act on the last dimension and broadcast over the leading ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["exponentiated_gradient_step", "project_simplex"]


def project_simplex(v: Tensor, *, check: bool = True) -> Tensor:
    r"""Euclidean projection of each row onto the simplex,
    :math:`\arg\min_{p \in \Delta^{n-1}} \|p - v\|_2`, by sorting (Held et al. 1974; Duchi et al. 2008):

    .. math::

        p_i = \max(v_i - \theta, 0), \quad \theta = \frac{1}{\rho}\Big(\sum_{j \le \rho} u_j - 1\Big),
        \quad \rho = \max\Big\{k : u_k - \frac{1}{k}\Big(\sum_{j \le k} u_j - 1\Big) > 0\Big\},

    where :math:`u` is :math:`v` sorted in decreasing order. :math:`O(n \log n)` per row.

    :param v: ``[..., n]`` real tensor (floating point), ``n ≥ 1``.
    :param check: validate ``v``. ``False`` skips the finiteness check, which reads a device value
        (a host sync: an ``if`` on ``isfinite(v).all()``), for callers that step every batch on their
        own buffers (OMD-TCH's dual); the checks on shape and dtype read no value and always run.
    :returns: a tensor of the same shape, dtype and device, each row on the simplex.
    :raises ValueError: for an empty last dimension, a non-floating dtype or (``check=True``) a
        NaN/inf entry.

    >>> project_simplex(torch.tensor([0.75, 1.25, 0.0]))
    tensor([0.2500, 0.7500, 0.0000])
    >>> project_simplex(torch.tensor([[2.0, 0.0], [0.3, 0.3]]))
    tensor([[1.0000, 0.0000],
            [0.5000, 0.5000]])
    """
    if not v.is_floating_point():
        raise ValueError(f"project_simplex needs a floating-point tensor, got {v.dtype}")
    if v.ndim == 0 or v.shape[-1] == 0:
        raise ValueError(f"project_simplex needs a non-empty last dimension, got shape {tuple(v.shape)}")
    if check and not torch.isfinite(v).all():
        raise ValueError("project_simplex got a NaN or inf entry")
    n = v.shape[-1]
    # Shift each row by its max first: the projection commutes with adding a constant to every
    # entry, and the shift keeps the cumulative sums small (no cancellation for huge entries).
    shift = v.amax(dim=-1, keepdim=True)
    w = v - shift
    u, _ = torch.sort(w, dim=-1, descending=True)
    css = u.cumsum(dim=-1) - 1.0
    k = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    # ρ: the largest k passing the test (k = 1 always passes: u_1 - (u_1 - 1) = 1 > 0).
    rho = torch.where(u - css / k > 0, k, 0).amax(dim=-1, keepdim=True).clamp(min=1).to(torch.int64)
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (w - theta).clamp(min=0.0)


def exponentiated_gradient_step(p: Tensor, grad: Tensor, lr: float | Tensor, *, check: bool = True) -> Tensor:
    r"""One exponentiated-gradient (entropic mirror descent) step on the simplex,

    .. math:: p_i^+ = \frac{p_i \exp(-\eta g_i)}{\sum_j p_j \exp(-\eta g_j)}
              = \operatorname{softmax}(\log p - \eta g)_i,

    computed in log space (log-sum-exp), so large :math:`\eta g` neither overflows nor underflows to
    0/0. It *decreases* the linear function :math:`g^\top p`; for an ascent step (e.g. OMD-TCH's max
    over the simplex, :math:`p_i \propto p_i \exp(\eta \lambda_i f_i)`) pass ``-grad``. A zero entry of
    ``p`` stays zero (it is outside the support of the mirror map's domain).

    :param p: ``[..., n]`` points on the simplex (non-negative, floating point; each row is
        renormalized).
    :param grad: gradient of the same shape (finite).
    :param lr: step size :math:`\eta \ge 0`.
    :param check: validate the values of ``p``, ``grad`` and ``lr``. ``False`` skips those checks, which
        read device values (host syncs), for callers that step every batch on their own simplex buffer
        (OMD-TCH's dual); the checks on shape and dtype read no value and always run.
    :raises ValueError: on shape mismatch, a non-floating ``p``, or (``check=True``) a negative/NaN entry
        of ``p``, a row of zeros, a NaN/inf gradient, or a negative/non-finite ``lr``.

    >>> exponentiated_gradient_step(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), lr=1.0)
    tensor([0.7311, 0.2689])
    """
    if p.shape != grad.shape:
        raise ValueError(f"p and grad must have the same shape, got {tuple(p.shape)} and {tuple(grad.shape)}")
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError(f"p needs a non-empty last dimension, got shape {tuple(p.shape)}")
    if not p.is_floating_point():
        raise ValueError(f"p must be a floating-point tensor, got {p.dtype}")
    lr_t = torch.as_tensor(lr, dtype=p.dtype, device=p.device)
    if check:
        if not (torch.isfinite(lr_t).all() and (lr_t >= 0).all()):
            raise ValueError(f"lr must be finite and non-negative, got {lr}")
        if not torch.isfinite(grad).all():
            raise ValueError("exponentiated_gradient_step got a NaN or inf gradient")
        if not torch.isfinite(p).all() or (p < 0).any():
            raise ValueError("p must be finite and non-negative")
        if (p.sum(dim=-1) <= 0).any():
            raise ValueError("every row of p needs a positive entry")
    # η·g can overflow (huge η); clamping it to the dtype's range keeps the ordering that decides the
    # (then one-hot) answer and avoids inf - inf in the softmax.
    big = torch.finfo(p.dtype).max
    step = (lr_t * grad.to(p.dtype)).nan_to_num(posinf=big, neginf=-big)
    logits = torch.log(p) - step  # log 0 = -inf: zero entries stay zero
    return torch.softmax(logits, dim=-1)
