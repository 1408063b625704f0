r"""Exact projection onto the dual cone of the task gradients, from the Gramian only.

For a Jacobian :math:`J \in \mathbb{R}^{T \times n}` (row :math:`t` is :math:`g_t`) the dual cone of its
rows is :math:`\{x : Jx \succeq 0\}`, the directions that do not increase any loss to first order.
Quinton & Rey (2024, "Jacobian Descent for Multi-Objective Optimization", Proposition 1) show that the
projection of :math:`J^\top u` onto it is :math:`J^\top w` with

.. math::

    w \in \operatorname*{arg\,min}_{w \succeq u} \; w^\top G w, \qquad G = J J^\top ,

a :math:`T`-dimensional box-constrained QP whose KKT conditions are

.. math::

    \mu = G w \succeq 0, \qquad w - u \succeq 0, \qquad \mu_t (w_t - u_t) = 0 \ \ \forall t ,

(:math:`Gw \succeq 0` says that :math:`J^\top w` lies in the dual cone). The projected vector
:math:`J^\top w` is unique; :math:`w` itself is unique only when :math:`G` is non-singular.

**Exact solver.** With :math:`v = w - u \succeq 0` and a factor :math:`G = A^\top A`
(:math:`A = \Lambda^{1/2} V^\top` from the eigendecomposition, eigenvalues below
:math:`T \epsilon_{64} \lambda_{max}` dropped), the QP is the non-negative least-squares problem
:math:`\min_{v \succeq 0} \lVert A v + A u \rVert^2`, solved by the Lawson-Hanson active-set method
(Lawson & Hanson, "Solving Least Squares Problems", 1974, ch. 23) in float64 on the CPU: each step
solves a least-squares problem on the current passive set exactly (SVD-based ``lstsq``), the method
terminates in finitely many steps, and its passive columns stay linearly independent, so a singular
:math:`G` (duplicated, colinear, zero or more than :math:`n` gradients) is handled without any
regularization. The problem is solved on :math:`G / \operatorname{tr} G` (the answer is invariant to
the Gramian's scale), and :math:`w(c\,u) = c\,w(u)` for :math:`c \ge 0` is used to solve it for a
unit-scale :math:`u`.

``reg_eps > 0`` instead solves it for :math:`G / \operatorname{tr} G + \text{reg\_eps}\, I`, which is what
TorchJD 0.18's default ``QuadprogProjector(norm_eps=1e-4, reg_eps=1e-4)`` does (for
:math:`\operatorname{tr} G \ge 10^{-4}`); ``reg_eps = 0`` (the default here) is the exact projection.

>>> import torch
>>> J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])        # conflicting gradients
>>> w = project_weights(J @ J.T, torch.tensor([1.0, 0.0]))   # project g1 onto the dual cone
>>> w
tensor([1.0000, 0.5000])
>>> J @ (w @ J)                                       # both inner products are ≥ 0
tensor([0.5000, 0.0000])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from moomtl.solvers.lcp import block_pivoting, cholesky_solve
from moomtl.weightings._common import as_float64_gramian, to_like

__all__ = ["project_weights", "project_weights_np"]

_EPS = float(np.finfo(np.float64).eps)


def project_weights(gramian: Tensor, u: Tensor, reg_eps: float = 0.0) -> Tensor:
    """Weights ``w`` with ``Jᵀw`` the projection of ``Jᵀu`` onto the dual cone of the rows of ``J``.

    :param gramian: ``[T, T]`` Gramian ``J Jᵀ`` (validated: square, finite, symmetric PSD).
    :param u: ``[T]`` or ``[k, T]`` (one projection per row).
    :param reg_eps: see the module docstring (``0``: exact).
    :returns: the weights, shaped like ``u``, with the Gramian's dtype and device.
    """
    g = as_float64_gramian(gramian)
    t = g.shape[0]
    if not isinstance(u, Tensor) or u.ndim not in (1, 2) or u.shape[-1] != t:
        raise ValueError(f"u must be a [{t}] or [k, {t}] tensor, got {getattr(u, 'shape', type(u).__name__)}")
    un = u.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(un).all():
        raise ValueError("u has NaN/inf entries")
    _check_reg_eps(reg_eps)
    w = project_weights_np(g, un.reshape(-1, t), reg_eps).reshape(un.shape)
    return to_like(w, gramian)


def _check_reg_eps(reg_eps: float) -> None:
    if not (np.isfinite(reg_eps) and reg_eps >= 0):
        raise ValueError(f"reg_eps must be finite and ≥ 0, got {reg_eps!r}")


def project_weights_np(gramian: np.ndarray, us: np.ndarray, reg_eps: float = 0.0) -> np.ndarray:
    """float64 core of :func:`project_weights`: ``gramian`` validated ``[T, T]``, ``us`` ``[k, T]``."""
    t = gramian.shape[0]
    trace = float(np.trace(gramian))
    out = us.copy()
    if trace <= 0.0 and reg_eps == 0.0:
        return out  # every gradient is zero: Jᵀw = 0 for every w, and w = u is the least change
    g = gramian / trace if trace > 0.0 else np.zeros_like(gramian)
    if reg_eps > 0.0:
        g = g + reg_eps * np.eye(t)
    a = _factor(g)
    for i, u in enumerate(us):
        scale = float(np.abs(u).max())
        if scale == 0.0:
            continue
        un = u / scale
        v = _nnqp(g, a, un)
        out[i] = scale * (un + v)
    return out


def _factor(g: np.ndarray) -> np.ndarray:
    """``A`` (``[r, T]``) with ``AᵀA = g`` up to the eigenvalues below ``T·eps·λ_max``."""
    lam, vec = np.linalg.eigh(g)
    top = float(lam[-1])
    keep = lam > max(top, 0.0) * g.shape[0] * _EPS
    return np.sqrt(lam[keep])[:, None] * vec[:, keep].T


def _nnqp(g: np.ndarray, a: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``v = argmin_{v ≥ 0} (u + v)ᵀ g (u + v)``: block principal pivoting, else Lawson-Hanson."""
    v = _block_pivoting(g, g @ u)
    if v is None:
        v = _nnls(a, -(a @ u))
    return v


def _block_pivoting(g: np.ndarray, gu: np.ndarray, max_iter: int = 200) -> np.ndarray | None:
    """Block principal pivoting (:func:`moomtl.solvers.lcp.block_pivoting`) for the LCP of
    ``min_{v ≥ 0} ½ vᵀgv + (gu)ᵀv``: ``y = gv + gu ≥ 0``, ``v ≥ 0``, ``vᵀy = 0``.

    Each iteration solves ``g_FF v_F = −(gu)_F`` on the current passive set ``F`` (start: ``F = ∅``) and
    exchanges all the infeasible indices at once, so a problem with many active tasks takes a few
    Cholesky solves rather than one Lawson-Hanson step per task. It is exact when it stops (the KKT
    conditions hold to round-off, ``64·T·eps·max(1, max|gu|)``; negatives within it are set to 0); it
    returns ``None`` when a ``g_FF`` is numerically singular (a squared Cholesky pivot ≤ 1e-10 of the
    largest diagonal entry: a singular Gramian) or it does not finish, and the caller then uses
    Lawson-Hanson."""
    tol = 64.0 * gu.shape[0] * _EPS * max(1.0, float(np.abs(gu).max()))
    return block_pivoting(g, gu, max_iter, tol=tol, min_pivot=1e-10, clamp=True)


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Lawson-Hanson: ``argmin_{v ≥ 0} ‖a v − b‖`` (``a`` is ``[r, T]``, ``‖a_t‖ ≤ 1``, ``‖b‖ ≲ 1``).

    The passive-set least-squares problems are solved through the normal equations with a Cholesky
    factorization of ``(aᵀa)_PP`` (positive definite: Lawson-Hanson keeps the passive columns linearly
    independent), falling back to an SVD ``lstsq`` on ``a_P`` when that factorization fails."""
    n = a.shape[1]
    gram = a.T @ a
    atb = a.T @ b
    v = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)  # entered and left at once (round-off): not retried until v moves
    tol = 64.0 * n * _EPS * max(1.0, float(np.linalg.norm(b)))
    grad = atb.copy()
    for _ in range(3 * n + 10):
        cand = ~passive & ~blocked & (grad > tol)
        if not cand.any():
            break
        j = int(np.argmax(np.where(cand, grad, -np.inf)))
        passive[j] = True
        moved = False
        for _inner in range(3 * n + 10):
            idx = np.flatnonzero(passive)
            z = _passive_solve(a, b, gram, atb, idx)
            if (z > 0).all():
                v[:] = 0.0
                v[idx] = z
                moved = True
                break
            neg = z <= 0
            vi = v[idx]
            step = float(np.min(vi[neg] / (vi[neg] - z[neg])))
            if step > 0:
                moved = True
            vi = vi + step * (z - vi)
            vi[neg & (vi <= _EPS * max(1.0, float(vi.max(initial=0.0))))] = 0.0
            vi[vi < 0] = 0.0
            v[:] = 0.0
            v[idx] = vi
            passive[:] = v > 0
        blocked = np.zeros(n, dtype=bool) if moved else blocked
        if not moved:
            blocked[j] = True
        grad = atb - gram @ v
    return v


def _passive_solve(a: np.ndarray, b: np.ndarray, gram: np.ndarray, atb: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``argmin_z ‖a_P z − b‖`` for the passive columns ``idx``."""
    z = cholesky_solve(gram[np.ix_(idx, idx)], atb[idx], float(np.max(np.diag(gram))))
    return np.linalg.lstsq(a[:, idx], b, rcond=None)[0] if z is None else z
