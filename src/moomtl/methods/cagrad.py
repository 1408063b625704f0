"""CAGrad, conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent
for Multi-task Learning", NeurIPS 2021).

The update maximizes the worst local improvement within a ball around the average gradient
``g_0 = (1/T) Σ_t g_t``:

.. math::

    \\max_d \\min_t\\, g_t \\cdot d \\quad \\text{s.t.} \\quad
    \\lVert d - g_0 \\rVert \\le c \\lVert g_0 \\rVert .

Its dual is a problem over the simplex,

.. math::

    w^\\star = \\arg\\min_{w \\in \\Delta^{T-1}} F(w)
    = g_w \\cdot g_0 + \\sqrt{\\phi}\\, \\lVert g_w \\rVert, \\qquad
    g_w = \\sum_t w_t g_t, \\quad \\phi = c^2 \\lVert g_0 \\rVert^2 ,

and ``d = g_0 + (√φ / ‖g_{w*}‖) g_{w*}``, divided by ``1 + c²`` (``rescale=1``, the authors' default),
by ``1 + c`` (``rescale=2``) or not at all (``rescale=0``). ``c = 0`` gives plain gradient descent on the
mean loss. Everything is a function of the Gramian ``M`` (``g_w·g_0 = wᵀMb``, ``‖g_w‖² = wᵀMw``,
``b = 1/T``), so ``d = vᵀ J`` with ``v = (b + λ w*) / (1+c²)``.

The dual is solved with SciPy's SLSQP (as the authors do) but with the analytic gradient, a
``1e-12`` tolerance, on the Gramian scaled by its largest diagonal entry (``F`` is homogeneous in
``M``, so this only conditions the problem), and the best of the SLSQP answer and the uniform start is
kept; the tests check it against a brute-force grid (T=2) and an SOCP solved by cvxpy. Task-specific
parameters get their own gradients ``∇L_t``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from moomtl.methods.base import Method, register, weights_info
from moomtl.train.context import StepContext


def cagrad_objective(w: np.ndarray, gramian: np.ndarray, c: float) -> float:
    """``F(w) = wᵀMb + c ‖g_0‖ √(wᵀMw)`` of the dual (``b = 1/T``; ``‖g_0‖² = bᵀMb``)."""
    t = gramian.shape[0]
    b = np.full(t, 1.0 / t)
    g0_norm = math.sqrt(max(float(b @ gramian @ b), 0.0))
    return float(w @ gramian @ b) + c * g0_norm * math.sqrt(max(float(w @ gramian @ w), 0.0))


def cagrad_dual_weights(gramian: np.ndarray, c: float) -> np.ndarray:
    """``w* = argmin_{w ∈ Δ} F(w)`` (float64). Uniform for ``c = 0`` or a zero mean gradient."""
    t = gramian.shape[0]
    b = np.full(t, 1.0 / t)
    scale = float(np.max(np.diag(gramian))) if t else 0.0
    if c == 0 or t == 1 or scale <= 0:
        return b
    m = gramian / scale
    mb = m @ b
    g0_norm = math.sqrt(max(float(b @ mb), 0.0))
    if g0_norm == 0.0:
        return b
    k = c * g0_norm

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        mw = m @ w
        nrm = math.sqrt(max(float(w @ mw), 1e-300))
        return float(w @ mb) + k * nrm, mb + k * mw / nrm

    res = minimize(
        fun, b, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * t,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    w = np.clip(np.asarray(res.x, dtype=np.float64), 0.0, None)
    w = w / w.sum() if w.sum() > 0 else b
    return w if fun(w)[0] <= fun(b)[0] else b


def cagrad_coefficients(gramian: Tensor, c: float, rescale: int = 1) -> Tensor:
    """``v`` (``[T]``, float64) such that the CAGrad update is ``Σ_t v_t g_t``.

    >>> M = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> cagrad_coefficients(M, c=0.0).tolist()   # c = 0: the mean gradient
    [0.5, 0.5]
    """
    if rescale not in (0, 1, 2):
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"c must be finite and ≥ 0, got {c}")
    m = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    t = m.shape[0]
    if m.ndim != 2 or m.shape != (t, t):
        raise ValueError(f"gramian must be square, got shape {tuple(gramian.shape)}")
    if not np.isfinite(m).all():
        raise ValueError("gramian has NaN/inf entries")
    m = (m + m.T) / 2
    b = np.full(t, 1.0 / t)
    w = cagrad_dual_weights(m, c)
    g0_norm = math.sqrt(max(float(b @ m @ b), 0.0))
    gw_norm = math.sqrt(max(float(w @ m @ w), 0.0))
    # g_w = 0 means 0 is in the convex hull (Pareto stationary): the ball term vanishes with it.
    lam = c * g0_norm / gw_norm if gw_norm > 1e-12 * math.sqrt(max(float(np.max(np.diag(m))), 0.0)) else 0.0
    v = b + lam * w
    v = v / {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
    return torch.from_numpy(v)


@register("cagrad", "CAGrad (Liu et al. 2021): best worst-case improvement near the mean gradient (c)")
class CAGrad(Method):
    """CAGrad on the shared parameters (see the module docstring).

    Args:
        c: radius of the ball around the mean gradient, relative to its norm (the paper's ``c``; 0.4
            in its multi-task experiments; ``c = 0`` is the mean gradient).
        rescale: divide the update by ``1 + c²`` (1), ``1 + c`` (2) or nothing (0).
    """

    def __init__(self, c: float = 0.4, rescale: int = 1) -> None:
        super().__init__()
        if not (math.isfinite(c) and c >= 0):
            raise ValueError(f"c must be finite and ≥ 0, got {c}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")
        self.c = float(c)
        self.rescale = rescale

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, float]:
        jac = ctx.jacobian("shared")
        v = cagrad_coefficients(ctx.gramian("shared"), self.c, self.rescale).to(jac)
        ctx.set_shared_direction(v @ jac)
        ctx.backward_task_specific(None)
        return weights_info(self.task_names or ctx.task_names, v)
