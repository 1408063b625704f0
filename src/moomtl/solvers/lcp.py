r"""Block principal pivoting for the linear complementarity problem (LCP) of a symmetric PSD matrix.

The LCP of :math:`M \in \mathbb{R}^{n \times n}` and :math:`q \in \mathbb{R}^n` asks for :math:`z` with

.. math::

    w = M z + q, \qquad w \ge 0, \qquad z \ge 0, \qquad w^\top z = 0 ;

for a symmetric PSD :math:`M` it is the KKT system of the non-negative QP
:math:`\min_{z \ge 0} \tfrac12 z^\top M z + q^\top z`. Block principal pivoting (Júdice & Pires, "A
block principal pivoting algorithm for large-scale strictly monotone linear complementarity problems",
Computers & Operations Research 21(5), 1994; with the backup rule of Kim & Park, "Fast nonnegative
matrix factorization: an active-set-like method and comparisons", SIAM J. Sci. Comput. 33(6), 2011)
keeps a passive set :math:`F`, solves :math:`M_{FF} z_F = -q_F` with :math:`z = 0` elsewhere, and
exchanges every index that violates :math:`z_F \ge 0` or :math:`w_G \ge 0` (:math:`G` the complement);
when the number of violations has not decreased for three exchanges it exchanges only the largest
violating index (Murty's rule), which makes the method finite for a positive definite :math:`M`.

Used by :mod:`moomtl.solvers.min_norm` (MGDA's min-norm QP in non-negative least-squares form) and
:mod:`moomtl.weightings.dual_cone` (the projection onto the dual cone of the task gradients).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

__all__ = ["block_pivoting", "cholesky_solve"]


def block_pivoting(
    M: np.ndarray,
    q: np.ndarray,
    max_iter: int,
    *,
    tol: float,
    start: np.ndarray | None = None,
    min_pivot: float | None = None,
    clamp: bool = False,
) -> np.ndarray | None:
    r"""Solve the LCP :math:`w = Mz + q \ge 0`, :math:`z \ge 0`, :math:`w^\top z = 0` by block principal
    pivoting (see the module docstring); ``None`` when it fails.

    :param M: ``[n, n]`` symmetric (PSD) float64 matrix.
    :param q: ``[n]`` float64 vector.
    :param max_iter: number of feasibility tests (each after one passive-set solve); ``None`` if none
        of them passes.
    :param tol: sign tolerance of the tests: index ``i`` violates when :math:`z_i < -\text{tol}`
        (:math:`i \in F`) or :math:`w_i < -\text{tol}` (:math:`i \notin F`).
    :param start: ``None``: start from :math:`F = \emptyset` (:math:`z = 0`). Otherwise the solution of
        :math:`Mz = -q` (:math:`F` = every index), e.g. from a factorization the caller already has.
    :param min_pivot: how :math:`M_{FF} z_F = -q_F` is solved. ``None``: LAPACK's ``dposv`` (upper
        Cholesky), failing only when LAPACK finds :math:`M_{FF}` not positive definite. A number:
        :func:`cholesky_solve` with ``rel_pivot=min_pivot`` relative to :math:`\max_i M_{ii}` (also fails
        on a small pivot or a non-finite solution).
    :param clamp: return :math:`\max(z, 0)` (removes the round-off negatives the tolerance lets through)
        instead of :math:`z`.
    """
    n = q.shape[0]
    rhs = -q
    if start is None:
        passive = np.zeros(n, dtype=bool)
        z = np.zeros(n)
    else:
        passive = np.ones(n, dtype=bool)
        z = start
    diag_max = None if min_pivot is None else float(np.max(np.diag(M)))
    fewest, backup = n + 1, 3
    for _ in range(max_iter):
        w = M @ z + q
        bad = (passive & (z < -tol)) | (~passive & (w < -tol))
        n_bad = int(bad.sum())
        if n_bad == 0:
            return np.maximum(z, 0.0) if clamp else z
        if n_bad < fewest:
            fewest, backup = n_bad, 3
            passive ^= bad
        elif backup > 0:
            backup -= 1
            passive ^= bad
        else:
            j = int(np.flatnonzero(bad)[-1])
            passive[j] = not passive[j]
        idx = np.flatnonzero(passive)
        z = np.zeros(n)
        if idx.size:
            sub = M[np.ix_(idx, idx)]
            if diag_max is None:
                _, sol, info = lapack.dposv(sub, rhs[idx])
                if info != 0:
                    return None
            else:
                sol = cholesky_solve(sub, rhs[idx], diag_max, rel_pivot=min_pivot)
                if sol is None:
                    return None
            z[idx] = sol
    return None


def cholesky_solve(sub: np.ndarray, rhs: np.ndarray, diag_max: float, rel_pivot: float = 1e-10) -> np.ndarray | None:
    """``sub⁻¹ rhs`` by LAPACK's (lower) Cholesky; ``None`` when ``sub`` is not numerically positive
    definite (a squared pivot ≤ ``rel_pivot · diag_max``) or the solution is not finite."""
    low, info = lapack.dpotrf(sub, lower=1, clean=0)
    if info != 0 or float(np.min(np.diag(low))) ** 2 <= rel_pivot * diag_max:
        return None
    z, info = lapack.dpotrs(low, rhs, lower=1)
    return z if info == 0 and np.isfinite(z).all() else None
