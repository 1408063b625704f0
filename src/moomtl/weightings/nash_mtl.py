r"""Nash-MTL, multi-task learning as a bargaining game (Navon, Shamsian, Achituve, Maron, Kawaguchi,
Chechik & Fetaya, ICML 2022, eq. 3 / Algorithm 1; TorchJD's ``NashMTL``).

The Nash bargaining solution is :math:`d = J^\top \alpha` with :math:`\alpha \succ 0` solving

.. math::

    \alpha \odot (G \alpha) = \mathbf{1}
    \iff \nabla f(\alpha) = G\alpha - \mathbf{1} / \alpha = 0, \qquad
    f(\alpha) = \tfrac12 \alpha^\top G \alpha - \sum_t \log \alpha_t ,

i.e. the unique minimizer of the strictly convex, self-concordant :math:`f` on :math:`\alpha \succ 0`.
The authors approximate it with a sequence of convex programs (cvxpy/ECOS, 20 iterations, stopped
at :math:`\lVert G\alpha - 1/\alpha \rVert < 10^{-3}`); here it is solved **exactly** by Newton's method
in float64: with :math:`D = \operatorname{diag}(\alpha)` and :math:`r = \alpha \odot (G\alpha) - \mathbf{1}`
the Newton step is :math:`\Delta = -D (DGD + I)^{-1} r` (:math:`DGD + I \succeq I`: always
well-conditioned), damped to :math:`1/(1+\lambda)` while the Newton decrement
:math:`\lambda = \sqrt{r^\top (DGD+I)^{-1} r}` exceeds :math:`1/4` (which keeps :math:`\alpha \succ 0`
and converges globally for self-concordant functions, Nesterov & Nemirovskii 1994), full steps after
(quadratic convergence), until :math:`\max_t |r_t| \le 10^{-13}`. The start is
:math:`\alpha_t \propto 1/\sqrt{G_{tt}}` (exact for orthogonal gradients), scaled optimally.

**Scale.** As in the authors' code (and TorchJD), the problem is solved for :math:`G / \lVert G \rVert_F`,
so the weights do not depend on the gradients' scale; the update is :math:`\alpha^\top J` with the raw
:math:`J`. ``max_norm > 0`` then scales :math:`\alpha` down so that :math:`\lVert \alpha^\top J\rVert =
\sqrt{\alpha^\top G \alpha} \le` ``max_norm`` (the authors clip the shared gradients' norm to it).

**Singular Gramians.** A solution exists iff no :math:`v \succeq 0, v \ne 0` has :math:`Gv = 0`, i.e. iff
:math:`0` is not in the convex hull of the gradients (otherwise :math:`f` is unbounded below along
:math:`v`): a zero gradient, opposite gradients, a Pareto-stationary point. Duplicated or colinear
gradients alone are fine. The equation is invariant to
:math:`\alpha \mapsto S^{-1}\alpha, G \mapsto SGS` (:math:`S` positive diagonal), so existence is decided
on the unit-diagonal :math:`C = D^{-1/2} G D^{-1/2}`, :math:`D = \operatorname{diag}(G)`: when a gradient is
zero or MGDA's min-norm value of the unit gradients :math:`\min_{w \in \Delta} w^\top C w`
(:func:`moomtl.solvers.min_norm.min_norm`) is at most ``RIDGE`` :math:`= 10^{-8}`, the equation is solved
for :math:`G + \text{RIDGE}\, \operatorname{diag}(\tilde G_{tt})` instead (:math:`\tilde G_{tt} = G_{tt}`,
or :math:`\max_s G_{ss}` for a zero gradient), and only then: the residual on :math:`G` is then
:math:`\text{RIDGE}\, \tilde G_{tt}\, \alpha_t^2`, not zero, and a zero gradient gets a large weight
(it multiplies nothing in the shared update). Otherwise
:math:`\mathbf{1}^\top D^{1/2}\alpha \le \sqrt{T / \min_{w\in\Delta} w^\top C w} \le 10^4 \sqrt T`
keeps the solve bounded. An
all-zero Gramian gives :math:`\alpha = \mathbf{1}` (every weight gives the zero update).

>>> import torch
>>> G = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
>>> a = nash_mtl_weights(G)
>>> [round(v, 12) for v in (a * (G / G.norm() @ a)).tolist()]   # α ⊙ (Gα) = 1, G normalized
[1.0, 1.0]
>>> [round(v, 12) for v in (a / a[0]).tolist()]   # α_t ∝ 1/‖g_t‖ for orthogonal gradients
[1.0, 0.5]
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve
from torch import Tensor

from moomtl.solvers.min_norm import min_norm
from moomtl.weightings._common import as_float64_gramian, to_like

__all__ = ["RIDGE", "clip_to_norm", "nash_mtl_solve", "nash_mtl_weights"]

#: Ridge (relative to the largest diagonal entry) used only when the equation has no solution.
RIDGE = 1e-8


def nash_mtl_weights(gramian: Tensor, max_norm: float = 0.0) -> Tensor:
    """Nash-MTL weights ``α`` (``[T]``, positive; Gramian's dtype and device); see the module docstring."""
    if not (math.isfinite(max_norm) and max_norm >= 0):
        raise ValueError(f"max_norm must be finite and ≥ 0, got {max_norm!r}")
    g = as_float64_gramian(gramian)
    fro = float(np.linalg.norm(g))
    alpha = np.ones(g.shape[0]) if fro == 0.0 else nash_mtl_solve(g / fro)
    if max_norm > 0:
        norm = math.sqrt(max(float(alpha @ g @ alpha), 0.0))
        if norm > max_norm:
            alpha = alpha * (max_norm / norm)
    return to_like(alpha, gramian)


def clip_to_norm(weights: Tensor, gramian: Tensor, max_norm: float) -> Tensor:
    """``w`` scaled by ``min(1, max_norm / ‖wᵀJ‖)`` with ``‖wᵀJ‖ = √(wᵀGw)``, on the device and without a
    host sync (``max_norm = 0``: unchanged)."""
    if max_norm <= 0:
        return weights
    w = weights.to(gramian)
    norm = (w @ gramian @ w).clamp(min=0.0).sqrt()
    return weights * (max_norm / norm.clamp(min=max_norm)).to(weights)


def nash_mtl_solve(gramian: np.ndarray, tol: float = 1e-13, max_iter: int = 500) -> np.ndarray:
    """``α ≻ 0`` with ``α ⊙ (Gα) = 1`` for a validated, non-zero float64 Gramian (the ridge applied when
    needed; see the module docstring)."""
    t = gramian.shape[0]
    top = float(gramian.diagonal().max())
    if top <= 0.0:
        return np.ones(t)
    diag = gramian.diagonal()
    # The equation is invariant to α ↦ α / s, G ↦ SGS: decide on the unit-diagonal (correlation) form.
    root = np.sqrt(np.where(diag > 0, diag, top))
    corr = gramian / root[:, None] / root[None, :]
    w = min_norm(torch.from_numpy(corr)).numpy()
    g = gramian
    if (diag <= 0).any() or float(w @ corr @ w) <= RIDGE:
        g = g + RIDGE * np.diag(root**2)
    alpha = 1.0 / np.sqrt(g.diagonal())
    alpha *= math.sqrt(t / float(alpha @ g @ alpha))
    best, best_res = alpha, math.inf
    eye = np.eye(t)
    for _ in range(max_iter):
        r = alpha * (g @ alpha) - 1.0
        res = float(np.abs(r).max())
        if res < best_res:
            best, best_res = alpha, res
        if res <= tol:
            break
        h = alpha[:, None] * g * alpha[None, :] + eye
        y = cho_solve(cho_factor(h, check_finite=False), r, check_finite=False)
        lam = math.sqrt(max(float(r @ y), 0.0))
        step = 1.0 if lam <= 0.25 else 1.0 / (1.0 + lam)
        new = alpha * (1.0 - step * y)
        if not (np.isfinite(new).all() and (new > 0).all()):
            break
        alpha = new
    return best
