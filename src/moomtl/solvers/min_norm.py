r"""Minimum-norm point of the convex hull of task gradients: the sub-problem of MGDA.

MGDA (Désidéri, 2012; Sener & Koltun, 2018, eq. 3) looks for the convex combination of the task
gradients :math:`g_1, \dots, g_T` with the smallest norm,

.. math::

    \alpha^\star \in \operatorname*{arg\,min}_{\alpha \in \Delta^{T-1}}
    \Big\| \sum_{t=1}^T \alpha_t g_t \Big\|_2^2 = \alpha^\top M \alpha,
    \qquad M_{ij} = g_i^\top g_j,

which only needs the :math:`T \times T` Gramian :math:`M`. Either :math:`M\alpha^\star = 0`
(the parameters are Pareto stationary) or :math:`d = \sum_t \alpha^\star_t g_t` satisfies
:math:`g_t^\top d \ge \|d\|^2 > 0` for every task, so :math:`-d` decreases all losses. The optimality
(KKT) conditions are :math:`\min_t (M\alpha)_t \ge \alpha^\top M \alpha` with equality on the support.

* :func:`min_norm` returns :math:`\alpha^\star` (exact active-set solver by default, the paper's
  Frank-Wolfe on request; see its docstring for the measurements behind the choice).
* :func:`min_norm_two` is the closed form of the two-task case (paper, eq. 4).
* :func:`min_norm_direction` maps :math:`\alpha` to :math:`\sum_t \alpha_t g_t`;
  :func:`min_norm_value` evaluates :math:`\alpha^\top M \alpha`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["min_norm", "min_norm_direction", "min_norm_two", "min_norm_value"]

Method = Literal["active_set", "frank_wolfe", "away_frank_wolfe"]

# Tikhonov term added (in units where max_t M_tt = 1) before the active-set solve. It makes the QP
# strictly convex, so the Cholesky factorizations exist even for duplicated or affinely dependent
# gradients; it moves the objective and the KKT gap by at most this much (in those units).
_RIDGE = 1e-12
# Smallest squared pivot of the pivoted Cholesky factor of M + 11ᵀ + ridge·I for which the fast block
# pivoting path is trusted; below it (affinely dependent gradients, e.g. T > d + 1) Lawson-Hanson on
# the rank-revealing factor is used instead, which never forms an ill-conditioned normal equation.
_WELL_CONDITIONED_PIVOT = 1e-7
# Sign tolerance of the block-pivoting tests on x (primal) and y = Qx - 1 (dual), in the same units.
_PIVOT_EPS = 1e-13
# Weights below this are the ridge's O(ridge) footprint on tasks that the exact answer leaves out;
# they are set to 0 (moving the objective by O(1e-11) at most; the KKT check runs afterwards).
_ZERO_WEIGHT = 1e-11


def min_norm(
    gramian: Tensor,
    max_iter: int = 1000,
    tol: float = 1e-10,
    method: Method = "active_set",
) -> Tensor:
    r"""Weights :math:`\alpha \in \Delta^{T-1}` minimizing :math:`\alpha^\top M \alpha` (MGDA's QP).

    :param gramian: ``[T, T]`` Gramian :math:`M_{ij} = g_i^\top g_j` of the task gradients
        (symmetric PSD; it is symmetrized; any dtype/device).
    :param max_iter: hard cap on the iterations of every stage (block pivots, Lawson-Hanson steps,
        Frank-Wolfe steps).
    :param tol: stopping/acceptance tolerance on the Frank-Wolfe duality gap
        :math:`\alpha^\top M\alpha - \min_t (M\alpha)_t \ (\ge f(\alpha) - f^\star)`, relative to
        :math:`\max_t M_{tt}`. The active-set answer is only accepted when it meets it.
    :param method: ``"active_set"`` (default, exact), ``"frank_wolfe"`` (Sener & Koltun's
        Algorithm 2: best-pair initialization with the closed form, exact line search towards the
        vertex :math:`\arg\min_t (M\alpha)_t`, stop when the gap is below ``tol``, the step is zero, or
        after ``max_iter`` steps) or ``"away_frank_wolfe"`` (the same plus away steps, Lacoste-Julien &
        Jaggi 2015, which converges linearly).
    :returns: ``[T]`` weights (non-negative, summing to 1) with the Gramian's dtype and device; no
        gradient flows through them.
    :raises ValueError: if ``gramian`` is not a square matrix, is empty, has a NaN/inf entry or a
        negative diagonal entry.

    **Invariances and degenerate input.** The problem is solved in float64 on the CPU after dividing
    :math:`M` by :math:`\max_t M_{tt}` (a scale that, unlike a sum, cannot overflow), so the answer
    does not depend on the gradients' scale (``1e-30`` and ``1e30`` gradients give the same weights).
    All-zero gradients (:math:`M = 0`) give the uniform weights; with duplicated, colinear or
    affinely dependent gradients the minimizer is not unique and one of them is returned (how the
    weight of a duplicated gradient is split among its copies is left to round-off). The output is
    always finite and on the simplex: each stage's answer is checked and a failing stage falls back
    to the next (block pivoting → Lawson-Hanson → away-step Frank-Wolfe from the best point so far,
    or from the best pair in closed form).

    **Why an active-set QP and not Frank-Wolfe.** With :math:`x = \alpha / (1 + \alpha^\top M\alpha)`
    the problem is the non-negative least squares problem
    :math:`\min_{x \ge 0} \tfrac12 x^\top (M + \mathbf{1}\mathbf{1}^\top) x - \mathbf{1}^\top x`
    (Wolfe 1976; :math:`\alpha = x / \mathbf{1}^\top x`), whose solution is found in a few block
    principal pivots (Júdice & Pires 1994; Kim & Park 2011) starting from the full support: each
    pivot is one Cholesky solve on the current support, and generic task gradients have a large
    support, so 0-3 pivots suffice. Measured side by side (``benchmarks/min_norm_bench.py``, table in
    ``docs/benchmarks_min_norm.md``; random float32 Jacobians with d = 20k/100k, 2-core CPU, gap =
    relative objective gap to quadprog): at T = 100 the paper's Frank-Wolfe with 250 steps takes
    4-15 ms and stops at gaps up to 4 when task gradients have very different norms (its sub-linear
    rate stalls once many tasks share the support; 5,000 steps, 40-60 ms, still leave 5e-4);
    Frank-Wolfe followed by an equality-constrained polish on its support fails whenever Frank-Wolfe
    has not yet found the whole support (gaps up to 2); away steps (``"away_frank_wolfe"``) are
    exact but take 0.3-15 ms; block pivoting is exact (gaps ≤ 1e-15) in 0.1-0.2 ms. Block pivoting on
    a normal equation cycles on numerically singular problems (affinely dependent gradients, e.g.
    T > d + 1), so those go to Lawson-Hanson (scipy's ``nnls``) on a rank-revealing pivoted Cholesky
    factor, which is exact in 0.5-1.5 ms at T = 100. (quadprog's compiled dual active-set method, the
    reference, is as exact in 0.02-1.4 ms, but it is not a runtime dependency of this package.)

    >>> M = torch.tensor([[1.0, 0.0], [0.0, 4.0]])   # g1 ⟂ g2, |g2| = 2 |g1|
    >>> min_norm(M)
    tensor([0.8000, 0.2000])
    >>> J = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])   # g1 = -g2: Pareto stationary
    >>> alpha = min_norm(J @ J.T)
    >>> alpha
    tensor([0.5000, 0.5000, 0.0000])
    >>> min_norm_direction(alpha, J)
    tensor([0., 0.])
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    if not tol >= 0.0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    if method not in ("active_set", "frank_wolfe", "away_frank_wolfe"):
        raise ValueError(f"unknown method {method!r}; choose 'active_set', 'frank_wolfe' or 'away_frank_wolfe'")
    M = _as_float64_gramian(gramian)
    alpha = _solve(M, max_iter, tol, method)
    return _to_like(alpha, gramian)


def min_norm_two(gramian: Tensor) -> Tensor:
    r"""Closed form of the two-task case (Sener & Koltun, eq. 4):

    .. math::

        \alpha_1 = \Big[\frac{(g_2 - g_1)^\top g_2}{\|g_1 - g_2\|^2}\Big]_{[0, 1]}
                 = \Big[\frac{M_{22} - M_{12}}{M_{11} + M_{22} - 2 M_{12}}\Big]_{[0, 1]},
        \qquad \alpha_2 = 1 - \alpha_1,

    with :math:`\alpha = (\tfrac12, \tfrac12)` when :math:`g_1 = g_2` (every :math:`\alpha` is optimal).

    >>> min_norm_two(torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    tensor([0.8000, 0.2000])
    >>> min_norm_two(torch.tensor([[1.0, 2.0], [2.0, 4.0]]))   # g2 = 2 g1: all weight on g1
    tensor([1., 0.])
    """
    M = _as_float64_gramian(gramian)
    if M.shape[0] != 2:
        raise ValueError(f"min_norm_two needs a 2x2 Gramian, got shape {tuple(gramian.shape)}")
    scale = M.diagonal().max()
    if scale == 0.0:
        return _to_like(np.full(2, 0.5), gramian)
    return _to_like(_two(M / scale), gramian)


def min_norm_value(gramian: Tensor, alpha: Tensor) -> Tensor:
    r""":math:`\|\sum_t \alpha_t g_t\|^2 = \alpha^\top M \alpha` (clamped at 0 against round-off), a 0-d
    tensor with the Gramian's dtype.

    >>> min_norm_value(torch.tensor([[1.0, 0.0], [0.0, 4.0]]), torch.tensor([0.8, 0.2]))
    tensor(0.8000)
    """
    if gramian.ndim != 2 or gramian.shape[0] != gramian.shape[1]:
        raise ValueError(f"gramian must be a square matrix, got shape {tuple(gramian.shape)}")
    if alpha.ndim != 1 or alpha.shape[0] != gramian.shape[0]:
        raise ValueError(f"alpha must have shape [{gramian.shape[0]}], got {tuple(alpha.shape)}")
    a = alpha.to(gramian)
    return (a @ gramian @ a).clamp(min=0.0)


def min_norm_direction(alpha: Tensor, jacobian: Tensor) -> Tensor:
    r""":math:`d = \sum_t \alpha_t g_t` for a Jacobian whose row ``t`` (or leading slice ``t``) is
    :math:`g_t`. MGDA updates the shared parameters along :math:`-d`.

    >>> min_norm_direction(torch.tensor([0.25, 0.75]), torch.tensor([[4.0, 0.0], [0.0, 4.0]]))
    tensor([1., 3.])
    """
    if alpha.ndim != 1 or jacobian.ndim < 1 or jacobian.shape[0] != alpha.shape[0]:
        raise ValueError(
            f"alpha [T] and jacobian [T, ...] must agree on T; got {tuple(alpha.shape)} and {tuple(jacobian.shape)}"
        )
    return torch.tensordot(alpha.to(jacobian), jacobian, dims=1)


# --- numpy internals (float64, CPU: T is small, so per-call overhead matters more than flops) ----------


def check_gramian_shape(gramian: Tensor) -> int:
    """``T`` of a ``[T, T]`` real tensor (``T ≥ 1``); ``ValueError`` otherwise. Reads no values."""
    if not isinstance(gramian, Tensor):
        raise ValueError(f"gramian must be a torch.Tensor, got {type(gramian).__name__}")
    if gramian.ndim != 2 or gramian.shape[0] != gramian.shape[1]:
        raise ValueError(f"gramian must be a square [T, T] matrix, got shape {tuple(gramian.shape)}")
    if gramian.shape[0] == 0:
        raise ValueError("gramian is empty (T = 0): there is no task to weight")
    if gramian.is_complex():
        raise ValueError("gramian must be real")
    return int(gramian.shape[0])


def _as_float64_gramian(gramian: Tensor) -> np.ndarray:
    check_gramian_shape(gramian)
    M = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(M).all():
        raise ValueError(
            "gramian contains NaN or inf (a loss or gradient is not finite, or the Gramian overflowed "
            "its dtype: compute it in float64 or normalize the gradients)"
        )
    if (M.diagonal() < 0).any():
        raise ValueError(f"gramian has a negative diagonal entry ({M.diagonal().min()}): not a Gramian")
    check_gramian_structure(M)
    return 0.5 * M + 0.5 * M.T  # (M + Mᵀ)/2 could overflow for entries near the float64 maximum


#: Relative tolerances of a Gramian computed in float32 (``J Jᵀ`` need not be bitwise symmetric).
SYMMETRY_RTOL = 1e-4
PSD_RTOL = 1e-5


def check_gramian_structure(M: np.ndarray) -> None:
    """``ValueError`` unless ``M`` (float64, finite) is symmetric and positive semi-definite up to
    float32 rounding: ``|M − Mᵀ| ≤ 1e-4 · max|M|`` and ``λ_min(M) ≥ −1e-5 · λ_max(M)``. A matrix that is
    not a Gramian has no min-norm meaning, and the solvers would return a wrong answer for it."""
    scale = float(np.abs(M).max())
    if scale == 0.0:
        return
    S = M / scale
    asym = float(np.abs(S - S.T).max())
    if asym > SYMMETRY_RTOL:
        raise ValueError(f"gramian is not symmetric (max |M - Mᵀ| is {asym:.3g} of max |M|): not a Gramian J Jᵀ")
    eig = np.linalg.eigvalsh(0.5 * (S + S.T))
    if eig[0] < -PSD_RTOL * max(eig[-1], 0.0) or eig[-1] <= 0.0:
        raise ValueError(f"gramian is not positive semi-definite (eigenvalues {eig[0]:.3g} … {eig[-1]:.3g} of "
                         "max |M|): not a Gramian J Jᵀ")


def _to_like(alpha: np.ndarray, like: Tensor) -> Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float64
    return torch.from_numpy(alpha).to(device=like.device, dtype=dtype)


def _solve(M: np.ndarray, max_iter: int, tol: float, method: str) -> np.ndarray:
    T = M.shape[0]
    if T == 1:
        return np.ones(1)
    scale = M.diagonal().max()
    if scale == 0.0:  # every gradient is zero: every α is optimal, uniform is the symmetric choice
        return np.full(T, 1.0 / T)
    M = M / scale
    if T == 2:
        return _two(M)
    if method == "frank_wolfe":
        return _frank_wolfe(M, _best_pair(M), max_iter, tol)
    if method == "away_frank_wolfe":
        return _away_frank_wolfe(M, _best_pair(M), max_iter, tol)
    return _active_set(M, max_iter, tol)


def _two(M: np.ndarray) -> np.ndarray:
    """Eq. 4 on a 2x2 Gramian normalized to max diagonal 1."""
    den = M[0, 0] + M[1, 1] - 2.0 * M[0, 1]  # ||g1 - g2||²
    if den <= 1e-14:  # identical gradients (up to round-off): the midpoint, symmetric in the two tasks
        return np.full(2, 0.5)
    a = min(max((M[1, 1] - M[0, 1]) / den, 0.0), 1.0)
    return np.array([a, 1.0 - a])


def _gap(M: np.ndarray, alpha: np.ndarray) -> float:
    """Frank-Wolfe duality gap αᵀMα - min_t (Mα)_t, an upper bound on αᵀMα - f*."""
    v = M @ alpha
    return float(alpha @ v - v.min())


def _objective(M: np.ndarray, alpha: np.ndarray) -> float:
    return float(alpha @ M @ alpha)


def _on_simplex(x: np.ndarray | None) -> np.ndarray | None:
    """Clip to x ≥ 0 and normalize; ``None`` if that is impossible or not finite."""
    if x is None or not np.isfinite(x).all():
        return None
    x = np.maximum(x, 0.0)
    s = x.sum()
    if not s > 0.0:
        return None
    x = x / s
    x[x < _ZERO_WEIGHT] = 0.0
    return x / x.sum()


def _best_pair(M: np.ndarray) -> np.ndarray:
    """The authors' initialization: the best two-task solution over all pairs (eq. 4, vectorized)."""
    T = M.shape[0]
    d = M.diagonal()
    den = d[:, None] + d[None, :] - 2.0 * M
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(den > 1e-14, (d[None, :] - M) / den, 0.5)  # weight on i in the pair (i, j)
    a = np.clip(a, 0.0, 1.0)
    cost = a * a * d[:, None] + 2.0 * a * (1.0 - a) * M + (1.0 - a) ** 2 * d[None, :]
    cost[np.diag_indices(T)] = np.inf
    i, j = divmod(int(np.argmin(cost)), T)
    alpha = np.zeros(T)
    alpha[i] = a[i, j]
    alpha[j] += 1.0 - a[i, j]
    return alpha


def _frank_wolfe(M: np.ndarray, alpha: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Sener & Koltun, Algorithm 2, with Mα and αᵀMα updated in O(T) per step."""
    alpha = alpha.copy()
    d = M.diagonal()
    v = M @ alpha
    q = float(alpha @ v)
    for _ in range(max_iter):
        t = int(np.argmin(v))
        vt = v[t]
        if q - vt <= tol:  # duality gap: α is tol-optimal
            break
        # exact line search on (1-γ)α + γ e_t, i.e. eq. 4 between the points α and e_t
        den = q - 2.0 * vt + d[t]
        gamma = 1.0 if den <= 0.0 else min((q - vt) / den, 1.0)
        if gamma <= 0.0:
            break
        alpha *= 1.0 - gamma
        alpha[t] += gamma
        v = (1.0 - gamma) * v + gamma * M[:, t]
        q = (1.0 - gamma) ** 2 * q + 2.0 * gamma * (1.0 - gamma) * vt + gamma * gamma * d[t]
    return alpha


def _away_frank_wolfe(M: np.ndarray, alpha: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Frank-Wolfe with away steps (Lacoste-Julien & Jaggi, 2015): besides moving towards the best
    vertex it may move away from the worst vertex of the support, which removes wrongly chosen tasks
    and gives a linear rate. Every step is an exact line search, so the objective never increases."""
    alpha = alpha.copy()
    d = M.diagonal()
    v = M @ alpha
    for _ in range(max_iter):
        q = float(alpha @ v)
        s = int(np.argmin(v))
        support = alpha > 0.0
        a = int(np.argmax(np.where(support, v, -np.inf)))
        fw_gap, away_gap = q - v[s], v[a] - q
        if fw_gap <= tol:
            break
        if fw_gap >= away_gap:  # towards e_s: α + γ(e_s - α), γ ≤ 1
            slope, curv, gmax = v[s] - q, d[s] - 2.0 * v[s] + q, 1.0
        else:  # away from e_a: α + γ(α - e_a), γ ≤ α_a / (1 - α_a)
            slope, curv = q - v[a], q - 2.0 * v[a] + d[a]
            gmax = alpha[a] / (1.0 - alpha[a]) if alpha[a] < 1.0 else np.inf
        gamma = min(-slope / curv, gmax) if curv > 0.0 else gmax
        if not np.isfinite(gamma) or gamma <= 0.0:
            break
        if fw_gap >= away_gap:
            alpha *= 1.0 - gamma
            alpha[s] += gamma
            v = (1.0 - gamma) * v + gamma * M[:, s]
        else:
            alpha *= 1.0 + gamma
            alpha[a] -= gamma
            if gamma == gmax:  # a drop step: remove a exactly
                alpha[a] = 0.0
            np.maximum(alpha, 0.0, out=alpha)
            v = (1.0 + gamma) * v - gamma * M[:, a]
    return alpha


def _active_set(M: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    from scipy.linalg import lapack

    T = M.shape[0]
    # NNLS form (see min_norm's docstring): Q = M + 11ᵀ + ridge·I, minimize ½xᵀQx - 1ᵀx over x ≥ 0.
    Q = M + 1.0
    Q[np.diag_indices(T)] += _RIDGE
    # Rank-revealing pivoted Cholesky Q[p][:, p] = L Lᵀ. Its pivots tell whether Q is well conditioned.
    c, piv, rank, info = lapack.dpstrf(Q, lower=1, tol=-1.0)
    L = np.tril(c[:, :rank])
    piv = piv - 1  # LAPACK is 1-based
    best: np.ndarray | None = None
    if rank == T and L[T - 1, T - 1] ** 2 >= _WELL_CONDITIONED_PIVOT:
        best = _on_simplex(_block_pivoting(Q, L, piv, max_iter))
        if best is not None and _gap(M, best) <= tol:
            return best
    if rank > 0:
        cand = _on_simplex(_lawson_hanson(L, piv, T, rank, max_iter))
        if cand is not None and (best is None or _objective(M, cand) < _objective(M, best)):
            best = cand
        if best is not None and _gap(M, best) <= tol:
            return best
    # Numerical trouble (e.g. an indefinite "Gramian"): refine the best point so far with away steps;
    # the best pair (closed form) guarantees a finite answer.
    pair = _best_pair(M)
    if best is None or _objective(M, pair) < _objective(M, best):
        best = pair
    return _away_frank_wolfe(M, best, max_iter, tol)


def _block_pivoting(Q: np.ndarray, L: np.ndarray, piv: np.ndarray, max_iter: int) -> np.ndarray | None:
    """Block principal pivoting (:func:`moomtl.solvers.lcp.block_pivoting`) for min ½xᵀQx - 1ᵀx, x ≥ 0,
    i.e. the LCP w = Qx - 1: sign tolerance ``_PIVOT_EPS`` on x and w, passive-set solves by LAPACK's
    ``dposv``, and the start F = all, whose solve reuses the full pivoted factor Q[p][:, p] = L Lᵀ.
    ``None`` if it does not finish within ``max_iter``."""
    from moomtl.solvers.lcp import block_pivoting

    return block_pivoting(Q, -np.ones(Q.shape[0]), max_iter, tol=_PIVOT_EPS, start=_full_support_solve(L, piv))


def _full_support_solve(L: np.ndarray, piv: np.ndarray) -> np.ndarray:
    """x with Qx = 1, from the pivoted Cholesky factor Q[p][:, p] = L Lᵀ (``piv`` 0-based)."""
    from scipy.linalg import solve_triangular

    T = L.shape[0]
    z = solve_triangular(L, np.ones(T), lower=True, check_finite=False)
    x = np.empty(T)
    x[piv] = solve_triangular(L.T, z, lower=False, check_finite=False)
    return x


def _lawson_hanson(L: np.ndarray, piv: np.ndarray, T: int, rank: int, max_iter: int) -> np.ndarray | None:
    """Lawson-Hanson NNLS on the factor: with Q[p][:, p] ≈ L Lᵀ (L of shape T x rank) and Aᵀb = 1,
    ½xᵀQx - 1ᵀx = ½||Ax - b||² + const for A = Lᵀ (columns in pivot order). Working on A instead of
    Q squares no condition number, and the truncated rank drops numerically dependent directions."""
    from scipy.linalg import solve_triangular
    from scipy.optimize import nnls

    b = solve_triangular(L[:rank, :rank], np.ones(rank), lower=True, check_finite=False)
    try:
        xp, _ = nnls(np.ascontiguousarray(L.T), b, maxiter=max(max_iter, 3 * T))
    except RuntimeError:  # iteration cap reached
        return None
    x = np.empty(T)
    x[piv] = xp
    return x
