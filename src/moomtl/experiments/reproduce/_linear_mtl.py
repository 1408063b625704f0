r"""Exact Pareto fronts of linear two-layer multi-task networks (pure math, no I/O).

Setting (Hu, Zhang, Liu, Zhao, NeurIPS'23; seed 004). Inputs :math:`X\in\mathbb R^{n\times p}`, targets
:math:`Y=[y_1,\dots,y_k]`, a shared layer :math:`W_1\in\mathbb R^{q\times p}` (width :math:`q`) and heads
:math:`W_2\in\mathbb R^{k\times q}` (row :math:`a_i` for task :math:`i`), :math:`f(x)=W_2W_1x`, losses
:math:`\ell_i=\|XW_1^\top a_i-y_i\|^2`.

Reduction. With :math:`\hat y_i=P_Xy_i` (the best linear fit) and :math:`c_i=\|y_i-\hat y_i\|^2`,
:math:`\ell_i=\|Za_i-\hat y_i\|^2+c_i` for :math:`Z=XW_1^\top`. The best head is the projection,
so with :math:`P=P_Z` (any projection of rank :math:`\le q` onto a subspace of :math:`\mathrm{Col}(X)`)

.. math:: \ell_i(P) = c_i + G_{ii} - \hat y_i^\top P\,\hat y_i,\qquad G=\hat Y^\top\hat Y .

Write :math:`\hat Y=USV^\top` (thin SVD, rank :math:`r`) and :math:`B=SV^\top\in\mathbb R^{r\times k}`, so
:math:`B^\top B=G` and column :math:`b_i` of :math:`B` stands for :math:`\hat y_i`. The gain
:math:`u_i=\hat y_i^\top P\hat y_i=b_i^\top Mb_i` with :math:`M=U^\top PU`, :math:`0\preceq M\preceq I`,
:math:`\mathrm{rank}\,M\le q`. Gains grow with :math:`M` in the Loewner order, so every Pareto point is
reached by a rank-:math:`q` projection :math:`\Pi` of :math:`\mathbb R^r`: the front depends on :math:`G` only.
Below, *excess loss* means :math:`e_i=\ell_i-c_i=G_{ii}-u_i\ge 0` (the ideal point is :math:`e=0`).

Linear scalarization (LS) at :math:`\lambda\in\Delta_{k-1}`: :math:`\min\sum_i\lambda_ie_i` is
:math:`\max_\Pi\mathrm{tr}(\Pi B\Lambda B^\top)`, solved by the top-:math:`q` eigenvectors of
:math:`B\Lambda B^\top` (Ky Fan; equivalently Eckart–Young on :math:`\hat Y\Lambda^{1/2}`):

.. math:: \mathrm{LS}(\lambda)=\lambda^\top\mathrm{diag}\,G-\textstyle\sum_{j\le q}\mu_j(B\Lambda B^\top).

(a) :math:`q\ge k\ge r`: :math:`\Pi=I` gives :math:`u_i=G_{ii}`, every task's own optimum: the front is the
single point :math:`\ell=c`.

(b) :math:`q=1`: :math:`\Pi=vv^\top`, :math:`s=B^\top v`, :math:`u=s\odot s`; :math:`s` ranges over the
ellipsoid :math:`\{s: s^\top Qs\le1\}`, :math:`Q=G^{-1}` (:math:`G` full rank). The Chebyshev problem
from the ideal point, :math:`\min_\Pi\max_i e_i/d_i` (:math:`d=1/w`), is
:math:`\min\tau` such that some :math:`s` with :math:`s^\top Qs\le1` has :math:`|s_i|\ge a_i(\tau)=
\sqrt{(G_{ii}-\tau d_i)_+}`. For each sign pattern :math:`\sigma` this is a convex QP,
:math:`\min x^\top D_\sigma QD_\sigma x` s.t. :math:`x\ge a`, solved exactly by enumerating active sets
(:math:`k\le 5`); feasibility is monotone in :math:`\tau`, so bisection gives :math:`\tau^*` to machine
precision.

(c) :math:`q=k-1` (:math:`r=k`): :math:`\Pi=I-ww^\top`, :math:`t=B^\top w`, :math:`e=t\odot t` with
:math:`t^\top Qt=1`. The box :math:`|t_i|\le\sqrt{\tau d_i}` meets this surface iff the maximum of the convex
:math:`t^\top Qt` over the box (at a vertex) is :math:`\ge1`, so in closed form

.. math:: \tau^*=1\Big/\max_{\sigma\in\{\pm1\}^k}(\sigma\odot\sqrt d)^\top Q(\sigma\odot\sqrt d),\qquad
          e^*=\tau^*d .

Scanning :math:`d` over the open simplex traces the whole front (every Pareto point with :math:`e>0` is a
Chebyshev solution, Choo & Atkins 1983).

Which front points LS reaches. For a front point with all :math:`s_i\ne0` (resp. :math:`t_i\ne0`) the front
is locally the smooth image of the ellipsoid surface, so an LS weight supporting it must be its normal,
:math:`\lambda_i\propto(Qs)_i/s_i` (resp. :math:`(Qt)_i/t_i`). The point is LS-reachable iff this
:math:`\lambda` lies in the simplex and the gap :math:`\lambda^\top e^*-\mathrm{LS}(\lambda)` (always
:math:`\ge0`) is zero. (d) Chebyshev solutions failing this test are Pareto points LS cannot reach.

The theorem checked: for :math:`q=1`, LS reaches every Pareto point iff :math:`G` is doubly non-negative
after flipping the signs of some tasks; for :math:`q=k-1`, iff :math:`Q=G^{-1}` is.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Instance:
    """A synthetic linear multi-task regression problem and its reduction."""

    X: np.ndarray  # (n, p)
    Y: np.ndarray  # (n, k)
    Yhat: np.ndarray  # (n, k) best linear fits
    c: np.ndarray  # (k,) residual of each task's own least squares
    B: np.ndarray  # (r, k), B^T B = G
    G: np.ndarray  # (k, k)

    @property
    def k(self) -> int:
        return self.Y.shape[1]


def make_instance(rng: np.random.Generator, k: int, n: int = 40, p: int = 8, noise: float = 0.5) -> Instance:
    """Gaussian inputs, targets = random linear maps of the inputs plus noise."""
    X = rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, k)) + noise * rng.standard_normal((n, k))
    return reduce_instance(X, Y)


def reduce_instance(X: np.ndarray, Y: np.ndarray) -> Instance:
    coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
    Yhat = X @ coef
    c = ((Y - Yhat) ** 2).sum(axis=0)
    U, S, Vt = np.linalg.svd(Yhat, full_matrices=False)
    r = int((S > S[0] * 1e-12).sum())
    B = S[:r, None] * Vt[:r]
    return Instance(X=X, Y=Y, Yhat=Yhat, c=c, B=B, G=Yhat.T @ Yhat)


# --- linear scalarization ------------------------------------------------------------------------
def ls_projection(B: np.ndarray, lam: np.ndarray, q: int) -> np.ndarray:
    """Top-``q`` eigenprojection of ``B Λ Bᵀ``: an LS optimum ``Π`` (r × r)."""
    _, vecs = np.linalg.eigh((B * lam) @ B.T)
    V = vecs[:, ::-1][:, :q]
    return V @ V.T


def ls_solutions(B: np.ndarray, lam: np.ndarray, q: int) -> np.ndarray:
    """Excess losses of the LS optima for a batch of weights ``lam`` (m, k) (one optimum per weight)."""
    _, vecs = np.linalg.eigh(np.einsum("rk,mk,sk->mrs", B, lam, B))
    V = vecs[:, :, ::-1][:, :, :q]  # (m, r, q)
    proj = np.einsum("rk,mrq->mqk", B, V)
    return (B * B).sum(axis=0)[None, :] - (proj**2).sum(axis=1)


def dominating_margin(e: np.ndarray, pool: np.ndarray) -> float:
    """Certificate that LS never reaches ``e``: the largest ``m`` such that a convex combination of the
    feasible points ``pool`` is ≤ ``e − m·|e|`` componentwise (an LP). ``m > 0`` proves that
    ``λᵀe > min_feasible λᵀe'`` for every ``λ`` in the simplex."""
    from scipy.optimize import linprog

    n_pool, k = pool.shape
    scale = np.abs(e) + 1e-300
    # variables (α_1..α_N, m): maximize m s.t. Σ α_j pool_j + m·scale ≤ e, Σ α = 1, α ≥ 0
    A_ub = np.hstack([pool.T, scale[:, None]])
    A_eq = np.hstack([np.ones((1, n_pool)), np.zeros((1, 1))])
    c = np.zeros(n_pool + 1)
    c[-1] = -1.0
    res = linprog(c, A_ub=A_ub, b_ub=e, A_eq=A_eq, b_eq=[1.0], bounds=[(0, None)] * n_pool + [(None, None)],
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"dominance LP failed: {res.message}")
    return float(-res.fun)


def excess_losses(B: np.ndarray, Pi: np.ndarray) -> np.ndarray:
    """``e_i = G_ii − b_iᵀ Π b_i``."""
    return (B * B).sum(axis=0) - (B * (Pi @ B)).sum(axis=0)


def ls_value(B: np.ndarray, lam: np.ndarray, q: int) -> np.ndarray:
    """``min_Π Σ λ_i e_i`` for a batch of weights ``lam`` (m, k)."""
    lam = np.atleast_2d(lam)
    mats = np.einsum("rk,mk,sk->mrs", B, lam, B)
    top = np.linalg.eigvalsh(mats)[:, ::-1][:, :q].sum(axis=1)
    return lam @ (B * B).sum(axis=0) - top


def network_losses(inst: Instance, Pi: np.ndarray) -> np.ndarray:
    """Build the actual network ``f(x) = W₂W₁x`` whose representation spans ``U Π Uᵀ`` and return its
    per-task squared losses on (X, Y) — an end-to-end check of the reduction."""
    U, S, _ = np.linalg.svd(inst.Yhat, full_matrices=False)
    U = U[:, : inst.B.shape[0]]
    vals, vecs = np.linalg.eigh(Pi)
    Vq = U @ vecs[:, vals > 0.5]  # orthonormal basis of the representation, in Col(Ŷ) ⊂ Col(X)
    W1 = (np.linalg.pinv(inst.X) @ Vq).T  # (q, p): X W₁ᵀ = V_q
    Z = inst.X @ W1.T
    W2 = np.linalg.lstsq(Z, inst.Y, rcond=None)[0].T  # (k, q) heads
    return ((inst.X @ W1.T @ W2.T - inst.Y) ** 2).sum(axis=0)


# --- sign conditions -----------------------------------------------------------------------------
def sign_patterns(k: int) -> np.ndarray:
    """All ``σ ∈ {±1}^k`` with ``σ_0 = +1`` (``σ`` and ``−σ`` act the same)."""
    return np.array([(1.0, *rest) for rest in itertools.product((1.0, -1.0), repeat=k - 1)])


def dnn_up_to_signs(A: np.ndarray, tol: float = 0.0) -> bool:
    """Some ``σ`` makes ``diag(σ) A diag(σ)`` entrywise ≥ −tol (A is PSD, so then doubly non-negative)."""
    return any(((A * np.outer(s, s)) >= -tol).all() for s in sign_patterns(A.shape[0]))


# --- Chebyshev scalarization, exact --------------------------------------------------------------
def _candidate_maps(Q: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """For ``min xᵀQx s.t. x ≥ a``: per free set F, the map ``a_A ↦ x_F = −Q_FF⁻¹ Q_FA a_A`` (A = not F)."""
    k = Q.shape[0]
    maps = []
    for free_mask in itertools.product((False, True), repeat=k):
        F = np.array(free_mask)
        K = np.zeros((k, k))  # x = K a for this candidate: identity on A, the map above on F
        A = ~F
        K[np.ix_(A, A)] = np.eye(int(A.sum()))
        if F.any() and A.any():
            K[np.ix_(F, A)] = -np.linalg.solve(Q[np.ix_(F, F)], Q[np.ix_(F, A)])
        maps.append((F, K))
    return maps


def _min_quad_above(Q: np.ndarray, maps: list[tuple[np.ndarray, np.ndarray]], a: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``min xᵀQx s.t. x ≥ a`` for each row of ``a`` (m, k), ``Q`` positive definite: the optimum is the
    KKT point of one free set, and no feasible candidate is cheaper, so take the cheapest feasible one."""
    best = np.full(len(a), np.inf)
    best_x = np.zeros_like(a)
    tol = 1e-12 * (1 + np.abs(a))
    for _, K in maps:
        x = a @ K.T
        ok = (x >= a - tol).all(axis=1)
        val = np.einsum("mi,ij,mj->m", x, Q, x)
        better = ok & (val < best)
        best[better], best_x[better] = val[better], x[better]
    return best, best_x


def chebyshev_q1(B: np.ndarray, d: np.ndarray, iters: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Exact Chebyshev solutions for width 1: ``min_v max_i e_i / d_i`` for each row of ``d`` (m, k).
    Returns ``(e, s)``: excess losses and ``s = Bᵀv`` (on the ellipsoid surface)."""
    G = B.T @ B
    Q = np.linalg.inv(G)
    g = np.diag(G)
    d = np.atleast_2d(d)
    lo, hi = np.zeros(len(d)), (g / d).max(axis=1)
    flipped = [(sig, Q * np.outer(sig, sig)) for sig in sign_patterns(B.shape[1])]
    solvers = [(sig, Qs, _candidate_maps(Qs)) for sig, Qs in flipped]

    def best_s(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.sqrt(np.clip(g - tau[:, None] * d, 0.0, None))
        val, s = np.full(len(d), np.inf), np.zeros_like(d)
        for sig, Qs, maps in solvers:
            v, x = _min_quad_above(Qs, maps, a)
            better = v < val
            val[better], s[better] = v[better], x[better] * sig
        return val, s

    val, s_hi = best_s(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        val, s = best_s(mid)
        feas = val <= 1.0
        hi, lo = np.where(feas, mid, hi), np.where(feas, lo, mid)
        s_hi[feas] = s[feas]
    norm = np.sqrt(np.einsum("mi,ij,mj->m", s_hi, Q, s_hi))
    s_hi = s_hi / np.where(norm > 0, norm, 1.0)[:, None]  # onto the surface: gains only grow
    return g - s_hi**2, s_hi


def chebyshev_qkm1(B: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form Chebyshev solutions for width k−1: returns ``(e, t)``, ``e = τ* d``, ``t = Bᵀw``."""
    Q = np.linalg.inv(B.T @ B)
    d = np.atleast_2d(d)
    root = np.sqrt(d)
    patterns = sign_patterns(B.shape[1])
    vals = np.stack([np.einsum("mi,ij,mj->m", root * s, Q, root * s) for s in patterns], axis=1)
    j = vals.argmax(axis=1)
    tau = 1.0 / vals[np.arange(len(d)), j]
    t = patterns[j] * root * np.sqrt(tau)[:, None]
    return tau[:, None] * d, t


def chebyshev_ray(B: np.ndarray, e_target: np.ndarray, q: int) -> np.ndarray:
    """``τ*`` of the Chebyshev problem along ``e_target``: 1 iff the target lies on the front."""
    e = chebyshev_q1(B, e_target)[0] if q == 1 else chebyshev_qkm1(B, e_target)[0]
    return (e / e_target).max(axis=1)


# --- LS-reachability of front points -------------------------------------------------------------
@dataclass(frozen=True)
class Reach:
    pareto: np.ndarray  # (m,) bool: locally Pareto optimal (normal in the open simplex)
    reachable: np.ndarray  # (m,) bool: Pareto and reached by LS
    gap: np.ndarray  # (m,) relative LS gap at the normal weight (inf: normal not in the simplex)
    lam: np.ndarray  # (m, k) the normal weight (nan where not in the simplex)


def ls_reachability(B: np.ndarray, e: np.ndarray, z: np.ndarray, q: int, tol: float = 1e-8) -> Reach:
    """For Chebyshev solutions ``e`` (m, k) with ``z = Bᵀv`` (q = 1) or ``z = Bᵀw`` (q = k−1): a point is
    Pareto optimal only if its normal has one sign (else some tangent move of the surface improves every
    task), and LS-reachable iff moreover the gap at the normal weight is zero."""
    Q = np.linalg.inv(B.T @ B)
    zs = np.where(np.abs(z) > 0, z, np.nan)
    n = (z @ Q) / zs
    same = np.nan_to_num((n > 0).all(axis=1) | (n < 0).all(axis=1)).astype(bool)
    lam = np.where(same[:, None], np.abs(n), np.nan)
    lam = lam / lam.sum(axis=1, keepdims=True)
    gap = np.full(len(e), np.inf)
    if same.any():
        lv = lam[same]
        scale = (lv * (B * B).sum(axis=0)).sum(axis=1)
        gap[same] = ((lv * e[same]).sum(axis=1) - ls_value(B, lv, q)) / scale
    return Reach(pareto=same, reachable=same & (gap <= tol), gap=gap, lam=lam)


def simplex_grid(k: int, h: int, interior: bool = True) -> np.ndarray:
    """Das–Dennis lattice of the simplex with ``h`` divisions (only strictly positive points if
    ``interior``)."""
    pts = [c for c in itertools.product(range(h + 1), repeat=k - 1) if sum(c) <= h]
    grid = np.array([(*c, h - sum(c)) for c in pts], dtype=float) / h
    return grid[(grid > 0).all(axis=1)] if interior else grid
