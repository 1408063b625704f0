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
``M``, so this only conditions the problem), then polished by exact min-norm QPs (see ``_polish``:
SLSQP alone leaves relative errors ~1e-6); the best of that and the uniform start is kept. The tests
check it against a brute-force grid (T=2), an SOCP solved by cvxpy, and strong duality (the primal
``d`` attains ``F(w*)``). Task-specific parameters get their own gradients ``∇L_t``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, check_wrt, register, weights_info
from moomtl.solvers.min_norm import min_norm

# ‖g_w‖² (relative to max_t ‖g_t‖²) below which a min-norm point counts as zero: Pareto stationarity.
_STATIONARY_TOL = 1e-14


def cagrad_objective(w: np.ndarray, gramian: np.ndarray, c: float) -> float:
    """``F(w) = wᵀMb + c ‖g_0‖ √(wᵀMw)`` of the dual (``b = 1/T``; ``‖g_0‖² = bᵀMb``)."""
    t = gramian.shape[0]
    b = np.full(t, 1.0 / t)
    g0_norm = math.sqrt(max(float(b @ gramian @ b), 0.0))
    return float(w @ gramian @ b) + c * g0_norm * math.sqrt(max(float(w @ gramian @ w), 0.0))


def _min_norm_np(m: np.ndarray) -> np.ndarray:
    return min_norm(torch.from_numpy(m)).numpy()


def cagrad_dual_weights(gramian: np.ndarray, c: float) -> np.ndarray:
    """``w* = argmin_{w ∈ Δ} F(w)`` (float64). Uniform for ``c = 0`` or a zero mean gradient.

    For ``c ≥ 1`` and gradients whose convex hull holds 0 (Pareto stationarity), the min-norm weights
    are returned: ``F ≥ (c − 1)‖g_0‖‖g_w‖ ≥ 0`` by Cauchy-Schwarz, so they are optimal with ``F = 0``.
    """
    t = gramian.shape[0]
    b = np.full(t, 1.0 / t)
    scale = float(np.max(np.diag(gramian))) if t else 0.0
    if c == 0 or t == 1 or scale <= 0:
        return b
    m = gramian / scale
    mb = m @ b
    g0_sq = max(float(b @ mb), 0.0)
    if g0_sq == 0.0:
        return b
    k = c * math.sqrt(g0_sq)
    if c >= 1:
        # SLSQP would only get near the stationary point, and the ‖g_w‖ ≈ 1e-9 it leaves would be
        # blown up into a noise direction by d = g_0 + c‖g_0‖ g_w / ‖g_w‖.
        alpha = _min_norm_np(m)
        if float(alpha @ m @ alpha) <= _STATIONARY_TOL:
            return alpha

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
    w = _polish(m, mb, g0_sq, k, w)
    return w if fun(w)[0] <= fun(b)[0] else b


def _polish(m: np.ndarray, mb: np.ndarray, g0_sq: float, k: float, w: np.ndarray, max_iter: int = 8) -> np.ndarray:
    """Refine SLSQP's answer (relative error ~1e-6) to ~1e-11 with exact QPs.

    With ``√x = min_{s>0} (x/s + s)/2`` the dual is ``min_{w,s} wᵀMb + (k/2)(wᵀMw/s + s)``; for a fixed
    ``s`` it is, up to a constant, the min-norm problem of the shifted gradients ``g_t + β g_0``
    (``β = s/k``), solved exactly by :func:`~moomtl.solvers.min_norm.min_norm`, and at the optimum
    ``s = ‖g_w‖``. So ``β*`` is the root of ``h(β) = ‖g_{w(β)}‖ − kβ``, found by secant steps from
    SLSQP's ``β``. The ``w`` with the smallest ``|h|`` is kept unless it is worse than SLSQP's by ``F``.
    """

    def f(w: np.ndarray) -> float:
        return float(w @ mb) + k * math.sqrt(max(float(w @ m @ w), 0.0))

    def h(beta: float) -> tuple[float, np.ndarray]:
        shifted = m + beta * (mb[:, None] + mb[None, :]) + beta**2 * g0_sq
        w = _min_norm_np(shifted)
        return math.sqrt(max(float(w @ m @ w), 0.0)) - k * beta, w

    b0 = math.sqrt(max(float(w @ m @ w), 0.0)) / k
    h0, w0 = h(b0)
    best_h, best = abs(h0), w0  # the smallest |h| is the best KKT residual (F is flat near w*)
    b1 = b0 + h0 / k  # the fixed-point step β ← ‖g_w‖ / k
    for _ in range(max_iter):
        if not (math.isfinite(b1) and b1 >= 0) or best_h <= 1e-15:
            break
        h1, w1 = h(b1)
        if abs(h1) < best_h:
            best_h, best = abs(h1), w1
        if h1 == h0:
            break
        b0, h0, b1 = b1, h1, b1 - h1 * (b1 - b0) / (h1 - h0)
    return best if f(best) <= f(w) + 1e-12 * (abs(f(w)) + 1.0) else w


def _check_hyperparameters(c: float, rescale: int) -> None:
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"c must be finite and ≥ 0, got {c}")
    if rescale not in (0, 1, 2):
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")


def cagrad_coefficients(gramian: Tensor, c: float, rescale: int = 1) -> Tensor:
    """``v`` (``[T]``, float64) such that the CAGrad update is ``Σ_t v_t g_t``.

    At a Pareto-stationary point (0 in the convex hull of the gradients) with ``c ≥ 1``, ``d = 0`` lies
    in the ball and is optimal (no ``d`` improves every task), so ``v = 0``; with ``c < 1`` the mean
    gradient is returned there.

    >>> M = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> cagrad_coefficients(M, c=0.0).tolist()   # c = 0: the mean gradient
    [0.5, 0.5]
    >>> J = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])   # g2 = -g1, but g_0 ≠ 0
    >>> cagrad_coefficients(J @ J.T, c=1.0).tolist()   # c ≥ 1: no update
    [0.0, 0.0, 0.0]
    """
    _check_hyperparameters(c, rescale)
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
    gw_sq = max(float(w @ m @ w), 0.0)
    scale = max(float(np.max(np.diag(m))), 0.0)
    if gw_sq > _STATIONARY_TOL * scale:
        v = b + (c * g0_norm / math.sqrt(gw_sq)) * w
    elif c >= 1 and g0_norm > 0:
        v = np.zeros(t)
    else:
        v = b  # c < 1 (or g_0 = 0): the ball term vanishes with g_w
    v = v / {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
    return torch.from_numpy(v)


@register("cagrad", "CAGrad (Liu et al. 2021): best worst-case improvement near the mean gradient (c)")
class CAGrad(Method):
    """CAGrad on the shared parameters (see the module docstring).

    Args:
        c: radius of the ball around the mean gradient, relative to its norm (the paper's ``c``; 0.4
            in its multi-task experiments; ``c = 0`` is the mean gradient).
        rescale: divide the update by ``1 + c²`` (1), ``1 + c`` (2) or nothing (0).
        wrt: ``"shared"`` (the paper) or ``"representation"`` (decide from ∂L/∂z, then one backward).
    """

    fuses_rows = True
    card = MethodCard(
        paper="Liu et al., 2021, Conflict-Averse Gradient Descent for Multi-task Learning, NeurIPS 2021",
        url="https://arxiv.org/abs/2110.14048",
        equation="d = g₀ + √φ g_w/‖g_w‖, w = argmin_{w∈Δ} g_wᵀ g₀ + √φ ‖g_w‖, φ = c² ‖g₀‖², g₀ the mean gradient",
        cost="shared",
        solver="dual over the simplex by scipy minimize on the T×T Gramian (host)",
        reference=(
            "tests/test_baselines.py::test_cagrad_matches_an_socp_and_strong_duality (the primal SOCP solved by "
            "cvxpy)"
        ),
    )

    def __init__(self, c: float = 0.4, rescale: int = 1, wrt: str = "shared") -> None:
        super().__init__()
        _check_hyperparameters(c, rescale)
        self.c = float(c)
        self.rescale = rescale
        self.wrt = check_wrt(wrt)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        gram = ctx.gramian(self.wrt)
        v = cagrad_coefficients(gram, self.c, self.rescale).to(gram)
        ctx.apply_coefficients(v, self.wrt)
        return weights_info(self.task_names or ctx.task_names, v)
