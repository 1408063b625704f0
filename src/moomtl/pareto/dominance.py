"""Pareto dominance, non-dominated filtering and sorting (minimization everywhere).

A point :math:`a \\in \\mathbb{R}^m` *dominates* :math:`b` (written :math:`a \\prec b`) when

.. math:: a_i \\le b_i \\ \\forall i \\quad\\text{and}\\quad a_j < b_j \\ \\text{for some } j.

Equal points do not dominate each other, so every copy of a non-dominated point is non-dominated.

Inputs may be numpy arrays, nested lists or torch tensors of shape ``[n_points, n_objectives]``;
outputs are numpy arrays.

Algorithms. All routines first sort the points lexicographically and merge exact duplicates (copies
share one verdict). Among distinct, lexicographically sorted points, ``q`` dominates ``p`` iff ``q``
comes earlier and ``q <= p`` componentwise, which allows sweeps:

* 2 objectives: a prefix minimum of the second objective (vectorized, :math:`O(n \\log n)`); the
  sort into fronts keeps the minimum second objective of each front, which is non-decreasing across
  fronts, and binary-searches it (:math:`O(n \\log n)` in total, Jensen 2003).
* 3 objectives: a staircase of the minimal (f2, f3) pairs seen so far, queried and updated by
  bisection (Kung, Luccio and Preparata 1975); for the sort, one staircase per front and a binary
  search over fronts, since a point dominated by front ``k`` is also dominated by front ``k - 1``.
* 4+ objectives: vectorized elimination — take the next surviving point in lexicographic order (it is
  non-dominated) and drop every later point it dominates; fronts are peeled one at a time.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

import numpy as np

#: Anything :func:`as_points` accepts: numpy array, nested sequence or torch tensor.
PointsLike = Any


def as_points(points: PointsLike, name: str = "points", n_obj: int | None = None) -> np.ndarray:
    """Convert ``points`` to a float64 array of shape ``[n_points, n_objectives]``.

    Torch tensors are detached and moved to the CPU (torch is not imported here). An empty 1-D input
    (``[]``) means zero points. ``+inf``/``-inf`` are kept (callers that need finite values check);
    NaN is rejected because it makes every comparison false.

    >>> as_points([[1, 2], [3, 4]]).shape
    (2, 2)
    """
    if hasattr(points, "detach") and hasattr(points, "cpu"):
        points = points.detach().cpu().double().numpy()
    try:
        arr = np.array(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape [n_points, n_objectives]: {exc}") from None
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, n_obj if n_obj is not None else 1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [n_points, n_objectives], got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one objective (column), got shape {arr.shape}")
    if n_obj is not None and arr.shape[1] != n_obj:
        raise ValueError(f"{name} has {arr.shape[1]} objectives (columns), expected {n_obj}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    # -0.0 and 0.0 compare equal but differ bytewise; normalize so sorting/dedup treat them alike.
    arr += 0.0
    return arr


def _as_vector(v: PointsLike, name: str) -> np.ndarray:
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().double().numpy()
    try:
        arr = np.array(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric vector: {exc}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr + 0.0


def dominates(a: PointsLike, b: PointsLike) -> bool:
    """Whether ``a`` Pareto-dominates ``b`` (minimization): ``a <= b`` everywhere and ``a < b`` somewhere.

    >>> dominates([1, 2], [1, 3]), dominates([1, 2], [1, 2]), dominates([1, 3], [2, 2])
    (True, False, False)
    """
    a_ = _as_vector(a, "a")
    b_ = _as_vector(b, "b")
    if a_.shape != b_.shape:
        raise ValueError(f"a and b must have the same number of objectives, got {a_.size} and {b_.size}")
    return bool(np.all(a_ <= b_) and np.any(a_ < b_))


def lex_unique(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows in lexicographic order (first column is the primary key) and, for each input row,
    the index of its distinct row (``unique[inverse] == points``)."""
    n = points.shape[0]
    if n == 0:
        return points.copy(), np.zeros(0, dtype=np.intp)
    order = np.lexsort(points.T[::-1])
    s = points[order]
    new = np.ones(n, dtype=bool)
    new[1:] = np.any(s[1:] != s[:-1], axis=1)
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return s[new], inverse


def _first_front_sorted(u: np.ndarray) -> np.ndarray:
    """Non-dominated mask of distinct, lexicographically sorted points ``u`` (shape [n, m])."""
    n, m = u.shape
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    if m == 1:
        mask[0] = True
    elif m == 2:
        # An earlier point q (q1 <= p1, q != p) dominates p iff q2 <= p2.
        mask[0] = True
        mask[1:] = u[1:, 1] < np.minimum.accumulate(u[:-1, 1])
    elif m == 3:
        ys: list[float] = []  # staircase of minimal (f2, f3) pairs: ys increasing, zs decreasing
        zs: list[float] = []
        for k, (y, z) in enumerate(u[:, 1:].tolist()):
            if _staircase_insert(ys, zs, y, z):
                mask[k] = True
    else:
        idx = np.arange(n)
        c = u
        i = 0
        while i < c.shape[0]:
            # c[i] survived every earlier non-dominated point, so it is non-dominated; it can only
            # dominate later points (it is lexicographically smaller than them).
            dominated = np.all(c[i + 1 :] >= c[i], axis=1)
            if dominated.any():
                keep = np.ones(c.shape[0], dtype=bool)
                keep[i + 1 :] = ~dominated
                c = c[keep]
                idx = idx[keep]
            i += 1
        mask[idx] = True
    return mask


def _staircase_insert(ys: list[float], zs: list[float], y: float, z: float) -> bool:
    """Insert (y, z) into a 2-D staircase of earlier points unless one of them weakly dominates it.
    Returns whether it was inserted (i.e. it is not dominated)."""
    i = bisect_right(ys, y)
    if i and zs[i - 1] <= z:  # the earlier point with largest y' <= y has the smallest z' among them
        return False
    lo = bisect_left(ys, y)
    hi = lo
    while hi < len(ys) and zs[hi] >= z:  # entries the new point dominates are no longer needed
        hi += 1
    ys[lo:hi] = [y]
    zs[lo:hi] = [z]
    return True


def non_dominated(points: PointsLike) -> np.ndarray:
    """Boolean mask of the non-dominated points (minimization).

    Duplicates: equal points do not dominate each other, so *all* copies of a non-dominated point are
    marked ``True`` (and all copies of a dominated one ``False``).

    >>> non_dominated([[1, 3], [2, 2], [2, 3], [1, 3], [3, 1]]).tolist()
    [True, True, False, True, True]
    """
    p = as_points(points)
    u, inverse = lex_unique(p)
    return _first_front_sorted(u)[inverse]


def _ranks_sorted(u: np.ndarray) -> np.ndarray:
    """Front index (0 = non-dominated) of each distinct, lexicographically sorted point."""
    n, m = u.shape
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    if m == 1:
        return np.arange(n, dtype=np.intp)
    rank = np.empty(n, dtype=np.intp)
    if m == 2:
        tails: list[float] = []  # tails[k] = min f2 of front k so far; non-decreasing in k
        for k, y in enumerate(u[:, 1].tolist()):
            f = bisect_right(tails, y)  # first front none of whose points has f2 <= y
            if f == len(tails):
                tails.append(y)
            else:
                tails[f] = y
            rank[k] = f
        return rank
    if m == 3:
        stairs: list[tuple[list[float], list[float]]] = []
        for k, (y, z) in enumerate(u[:, 1:].tolist()):
            # "front f dominates p" is monotone in f (a dominator in front f has one in front f-1),
            # so binary-search the first front that does not dominate p.
            lo, hi = 0, len(stairs)
            while lo < hi:
                mid = (lo + hi) // 2
                ys, zs = stairs[mid]
                i = bisect_right(ys, y)
                if i and zs[i - 1] <= z:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == len(stairs):
                stairs.append(([], []))
            _staircase_insert(*stairs[lo], y, z)
            rank[k] = lo
        return rank
    remaining = np.arange(n)
    f = 0
    while remaining.size:
        mask = _first_front_sorted(u[remaining])  # a subset of sorted rows stays sorted
        rank[remaining[mask]] = f
        remaining = remaining[~mask]
        f += 1
    return rank


def pareto_rank(points: PointsLike) -> np.ndarray:
    """Front index of every point: 0 for the non-dominated ones, 1 for those non-dominated once front 0
    is removed, and so on (NSGA-II's non-dominated sorting). Copies share their rank.

    >>> pareto_rank([[1, 1], [2, 2], [0, 3], [3, 3], [2, 2]]).tolist()
    [0, 1, 0, 2, 1]
    """
    p = as_points(points)
    u, inverse = lex_unique(p)
    return _ranks_sorted(u)[inverse]


def non_dominated_sort(points: PointsLike) -> list[np.ndarray]:
    """Split the points into Pareto fronts: a list of index arrays (ascending indices), front 0 first.

    Every index appears in exactly one front; all copies of a point are in the same front.

    >>> [f.tolist() for f in non_dominated_sort([[1, 1], [2, 2], [0, 3], [3, 3], [2, 2]])]
    [[0, 2], [1, 4], [3]]
    """
    rank = pareto_rank(points)
    if rank.size == 0:
        return []
    order = np.argsort(rank, kind="stable")
    counts = np.bincount(rank)
    return np.split(order, np.cumsum(counts)[:-1])


def crowding_distance(points: PointsLike) -> np.ndarray:
    """NSGA-II crowding distance (Deb et al., 2002) of the points of one front.

    .. math:: d_i = \\sum_{k=1}^m \\frac{f_k^{(i+1)} - f_k^{(i-1)}}{f_k^{\\max} - f_k^{\\min}}

    where :math:`i \\pm 1` are the neighbours of point ``i`` when sorted by objective ``k``. The two
    extreme points of every objective get ``inf``; an objective with zero range adds nothing.
    With ``n <= 2`` every point is extreme.

    >>> crowding_distance([[0, 4], [1, 2], [2, 1], [4, 0]]).tolist()
    [inf, 1.25, 1.25, inf]
    """
    p = as_points(points)
    n, m = p.shape
    d = np.zeros(n)
    if n <= 2:
        d[:] = np.inf
        return d
    for k in range(m):
        order = np.argsort(p[:, k], kind="stable")
        f = p[order, k]
        span = f[-1] - f[0]
        d[order[0]] = d[order[-1]] = np.inf
        if span > 0 and np.isfinite(span):
            d[order[1:-1]] += (f[2:] - f[:-2]) / span
    return d
