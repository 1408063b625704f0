"""FairGrad, α-fair resource allocation among tasks (Ban & Ji, "Fair Resource Allocation in Multi-Task
Learning", ICML 2024).

The update ``d = Σ_t w_t g_t = Jᵀw`` gives task ``t`` the first-order improvement ``g_t·d = (Gw)_t``
(``G = JJᵀ``, the Gramian). FairGrad asks for the ``d`` maximizing the α-fair utility
``Σ_t u_α(g_t·d)`` over a ball, whose optimality condition is (the paper's Eq. 8)

.. math:: G\\, w = w^{-1/\\alpha} \\quad (\\text{elementwise}), \\qquad w > 0 ,

``α → 0``: equal improvements (IMTL-G-like); ``α = 1``: proportional fairness (Nash-MTL's
``Gw = 1/w``); ``α → ∞``: max-min fairness (MGDA-like). The losses are then weighted by ``w``
(``∇ Σ_t w_t L_t``, task-specific parameters included, as in LibMTL).

**Solver.** The equation is the stationarity condition of the strictly convex problem

.. math:: \\min_{w > 0}\\; \\tfrac12 w^\\top G w - \\sum_t f_\\alpha(w_t), \\qquad
          f_\\alpha'(w) = w^{-1/\\alpha}

(``f_α = log`` for ``α = 1``), so it is solved exactly by damped Newton steps (Hessian
``G + (1/α) diag(w^{-1/α-1})``, positive definite), with a backtracking line search that keeps ``w > 0``,
on the Gramian scaled by its largest diagonal entry (the solution scales as ``s^{-α/(1+α)}``), until the
relative residual is ``≤ 1e-13``. When no positive solution exists (e.g. some direction ``v ≥ 0`` with
``Gv = 0`` for ``α ≥ 1``, or collinear conflicting gradients), Newton cannot converge; then the answer is
LibMTL's: SciPy's ``least_squares`` on ``Gw − w^{-1/α}`` with ``w ≥ 0`` from the uniform start (with tight
tolerances). The solve runs on the host in float64: it reads the ``T×T`` Gramian once per step (one device
sync, as in LibMTL and the authors' code, which also solve with SciPy).

Differences from LibMTL's ``FairGrad`` (``LibMTL/weighting/FairGrad.py``), deliberate: LibMTL calls
``least_squares`` with its default tolerances (residuals ~1e-8 relative); the Newton solve above reaches
round-off and is checked against the equation in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from scipy.optimize import least_squares
from torch import Tensor

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, register, weights_info

_RTOL = 1e-13


def fairgrad_residual(gramian: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """``G w − w^{-1/α}`` (the optimality equation's residual)."""
    return gramian @ w - np.power(w, -1.0 / alpha)


def _newton(m: np.ndarray, alpha: float, max_iter: int = 200) -> np.ndarray | None:
    t = m.shape[0]
    p = 1.0 / alpha

    def objective(w: np.ndarray) -> float:
        f = np.sum(np.log(w)) if alpha == 1.0 else np.sum(np.power(w, 1.0 - p)) / (1.0 - p)
        return 0.5 * float(w @ m @ w) - float(f)

    s = float(np.ones(t) @ m @ np.ones(t))
    w = np.full(t, (t / s) ** (alpha / (alpha + 1.0)) if s > 0 else 1.0)  # the best multiple of 1
    for _ in range(max_iter):
        r = m @ w - np.power(w, -p)
        if np.linalg.norm(r) <= _RTOL * (np.linalg.norm(np.power(w, -p)) + 1.0):
            return w
        h = m + np.diag(p * np.power(w, -p - 1.0))
        try:
            step = -np.linalg.solve(h, r)
        except np.linalg.LinAlgError:
            return None
        if not np.isfinite(step).all():
            return None
        neg = step < 0
        lr = min(1.0, 0.99 * float(np.min(-w[neg] / step[neg]))) if neg.any() else 1.0
        f0, slope = objective(w), float(r @ step)
        while lr > 1e-16:
            cand = w + lr * step
            if (cand > 0).all() and objective(cand) <= f0 + 1e-4 * lr * slope + 1e-15 * abs(f0):
                break
            lr *= 0.5
        else:
            return None
        w = cand
        if not np.isfinite(w).all() or w.max() > 1e150:
            return None
    r = m @ w - np.power(w, -p)
    return w if np.linalg.norm(r) <= 1e-10 * (np.linalg.norm(np.power(w, -p)) + 1.0) else None


def fairgrad_weights(gramian: Tensor | np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``w > 0`` with ``G w = w^{-1/α}`` (float64; see the module docstring for the solver).

    >>> w = fairgrad_weights(np.eye(2), alpha=1.0)   # orthonormal gradients: w_t = 1/w_t
    >>> np.round(w, 12).tolist()
    [1.0, 1.0]
    """
    _check_alpha(alpha)
    m = gramian.detach().to("cpu", torch.float64).numpy() if isinstance(gramian, Tensor) else np.asarray(
        gramian, dtype=np.float64)
    t = m.shape[0]
    if m.ndim != 2 or m.shape != (t, t) or t == 0:
        raise ValueError(f"gramian must be a non-empty square matrix, got shape {tuple(m.shape)}")
    if not np.isfinite(m).all():
        raise ValueError("gramian has NaN/inf entries")
    m = (m + m.T) / 2
    scale = float(np.max(np.diag(m)))
    if scale <= 0:
        raise ValueError("FairGrad needs at least one non-zero task gradient (the Gramian is zero)")
    w = _newton(m / scale, alpha)
    if w is None:  # no positive solution: LibMTL's least-squares answer
        res = least_squares(lambda x: fairgrad_residual(m / scale, x, alpha), np.full(t, 1.0 / t),
                            bounds=(0.0, np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=10_000)
        w = np.asarray(res.x, dtype=np.float64)
    return w * scale ** (-alpha / (alpha + 1.0))


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be finite and > 0, got {alpha!r}")


@register("fairgrad", "FairGrad (Ban & Ji 2024): α-fair task improvements, G w = w^(-1/α) (alpha)")
class FairGrad(Method):
    """FairGrad (see the module docstring).

    Args:
        alpha: the fairness parameter ``α > 0`` (LibMTL's ``FairGrad_alpha``, default 1: proportional
            fairness).
    """

    card = MethodCard(
        paper="Ban & Ji, 2024, Fair Resource Allocation in Multi-Task Learning, ICML 2024",
        url="https://arxiv.org/abs/2402.15638",
        equation="backward Σ_t w_t L_t with G w = w^(−1/α) (α-fair task improvements)",
        cost="shared",
        solver="G w = w^(−1/α) by scipy least_squares (host)",
        reference=(
            "tests/test_methods_gradient_zoo.py::test_fairgrad_closed_form_scaling_and_libmtl_least_squares (LibMTL "
            "FairGrad)"
        ),
    )

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        _check_alpha(alpha)
        self.alpha = float(alpha)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        gram = ctx.gramian("shared")
        w = torch.as_tensor(fairgrad_weights(gram, self.alpha), dtype=gram.dtype).to(gram.device)
        ctx.apply_coefficients(w, "shared", head_weights=w)  # from the Jacobian already taken: no second pass
        return weights_info(self.task_names or ctx.task_names, w)
