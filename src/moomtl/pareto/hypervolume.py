"""Hypervolume indicator (minimization) and a reference-point helper.

The hypervolume of a set :math:`A \\subset \\mathbb{R}^m` w.r.t. a reference point :math:`r` is the
Lebesgue measure of the region the set dominates inside the box bounded by :math:`r`:

.. math:: \\mathrm{HV}(A; r) = \\lambda\\Big(\\bigcup_{a \\in A,\\ a < r} [a_1, r_1] \\times \\dots \\times
          [a_m, r_m]\\Big).

Reference point. ``ref`` must always be given explicitly: hypervolumes are only comparable under the
same reference point, so compare methods with one shared ``ref`` (e.g. :func:`reference_point` of the
union of all their points). A point contributes only if it is *strictly* better than ``ref`` in every
objective; points on or beyond the reference box add nothing (they would add zero or negative volume).
The value is invariant to point order, duplicates and dominated points.

Algorithms (exact in every dimension; only the cost grows with the number of objectives):

* 1-D: ``r - min a``.
* 2-D: sort by the first objective and sum the rectangles of the staircase, :math:`O(n \\log n)`.
* 3-D: sweep over the third objective, maintaining the 2-D staircase of the slice and its area
  incrementally (each insertion adds the area it newly dominates), :math:`O(n \\log n)` searches
  (Beume et al., 2009, "On the complexity of computing the hypervolume indicator").
* 4-D and more: WFG (While, Bradstreet and Barone, 2012): with the points sorted by the last objective
  from worst to best, :math:`\\mathrm{HV}(A) = \\sum_k \\big[\\prod_i (r_i - a^k_i) -
  \\mathrm{HV}(\\{a^k \\vee a^j\\}_{j > k})\\big]` (:math:`\\vee` = componentwise max), where every
  point of the limit set :math:`\\{a^k \\vee a^j\\}` shares the last coordinate :math:`a^k_m`, so its
  volume is :math:`(r_m - a^k_m)` times an :math:`(m-1)`-dimensional hypervolume; the recursion ends
  in the exact 3-D sweep. Exponential in ``m`` in the worst case: fine for up to 6 objectives and a few
  hundred points, slow beyond.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from moomtl.pareto.dominance import PointsLike, _as_vector, _first_front_sorted, as_points, lex_unique


def hypervolume(points: PointsLike, ref: PointsLike) -> float:
    """Exact hypervolume (minimization) of ``points`` (shape ``[n, m]``) w.r.t. the reference ``ref``
    (shape ``[m]``). See the module docstring for the definition and the reference-point rules.

    >>> hypervolume([[1, 3], [2, 2], [3, 1]], ref=[4, 4])
    6.0
    >>> hypervolume([[1, 3], [2, 2], [3, 1], [2, 2], [3, 3], [5, 0]], ref=[4, 4])  # dup, dominated, outside
    6.0
    >>> hypervolume([[0, 0, 0]], ref=[1, 2, 3])
    6.0
    """
    r = _as_vector(ref, "ref")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"ref must be finite, got {r.tolist()}")
    p = as_points(points, "points")
    if p.shape[0] == 0:
        return 0.0
    if p.shape[1] != r.size:
        raise ValueError(f"points have {p.shape[1]} objectives but ref has {r.size}")
    if np.isneginf(p).any():
        raise ValueError("points contain -inf: the hypervolume would be infinite")
    p = p[np.all(p < r, axis=1)]
    if p.shape[0] == 0:
        return 0.0
    return float(_hv(p, r))


def _hv(p: np.ndarray, r: np.ndarray) -> float:
    """Hypervolume of points all strictly inside the reference box (``p < r``)."""
    u, _ = lex_unique(p)
    u = u[_first_front_sorted(u)]  # sorted lexicographically, distinct, non-dominated
    n, m = u.shape
    if n == 1:
        return float(np.prod(r - u[0]))
    if m == 1:
        return float(r[0] - u[0, 0])
    if m == 2:
        return _hv2d(u, r)
    if m == 3:
        return _hv3d(u, r)
    return _wfg(u, r)


def _hv2d(u: np.ndarray, r: np.ndarray) -> float:
    # u: non-dominated, f1 increasing, hence f2 decreasing. Rectangle k spans [x_k, x_{k+1}] × [y_k, r2].
    x = np.append(u[:, 0], r[0])
    return float(np.sum((x[1:] - x[:-1]) * (r[1] - u[:, 1])))


def _hv3d(u: np.ndarray, r: np.ndarray) -> float:
    r1, r2, r3 = (float(v) for v in r)
    order = np.lexsort((u[:, 1], u[:, 0], u[:, 2]))  # by f3, ties by f1 then f2
    pts = u[order].tolist()
    xs: list[float] = []  # the slice's 2-D staircase: xs increasing, ys decreasing
    ys: list[float] = []
    area = 0.0
    vol = 0.0
    n = len(pts)
    for k in range(n):
        x, y, z = pts[k]
        area += _insert_area(xs, ys, x, y, r1, r2)
        z_next = pts[k + 1][2] if k + 1 < n else r3
        vol += area * (z_next - z)
    return vol


def _insert_area(xs: list[float], ys: list[float], x: float, y: float, r1: float, r2: float) -> float:
    """Insert (x, y) into the staircase; return the area it adds to the dominated region (0 if it is
    weakly dominated by a staircase point)."""
    i = bisect_left(xs, x)
    if i and ys[i - 1] <= y:
        return 0.0
    if i < len(xs) and xs[i] == x and ys[i] <= y:
        return 0.0
    # Walk right from x over the steps the new point covers: on [cur, next) the region already
    # dominated reaches down to `level`; the new point extends it down to y.
    level = ys[i - 1] if i else r2
    cur = x
    added = 0.0
    j = i
    while j < len(xs) and ys[j] >= y:  # xs[j] >= x and ys[j] >= y: dominated by the new point
        added += (xs[j] - cur) * (level - y)
        level = ys[j]
        cur = xs[j]
        j += 1
    end = xs[j] if j < len(xs) else r1
    added += (end - cur) * (level - y)
    xs[i:j] = [x]
    ys[i:j] = [y]
    return added


def _wfg(u: np.ndarray, r: np.ndarray) -> float:
    # Worst last objective first: every later point q has q_m <= p_m, so the limit set max(p, q) has
    # last coordinate p_m and its volume factorizes into (r_m - p_m) · HV_{m-1}(projection).
    u = u[np.argsort(-u[:, -1], kind="stable")]
    total = 0.0
    for k in range(u.shape[0]):
        p = u[k]
        inclusive = float(np.prod(r - p))
        if k + 1 < u.shape[0]:
            limit = np.maximum(u[k + 1 :, :-1], p[:-1])
            inclusive -= float(r[-1] - p[-1]) * _hv(limit, r[:-1])
        total += inclusive
    return total


def reference_point(points: PointsLike, margin: float = 0.1, *, front_only: bool = True) -> np.ndarray:
    """A reference point slightly worse than the nadir point: ``nadir + margin · (nadir - ideal)``.

    ``nadir`` is the componentwise maximum over the non-dominated points (over all points when
    ``front_only=False``) and ``ideal`` the componentwise minimum. With ``margin > 0`` every
    non-dominated point, the extreme ones included, is strictly better than the result and contributes
    to the hypervolume. Where an objective has zero range (e.g. a single point), ``max(|nadir|, 1)``
    replaces the range so that the reference still lies strictly beyond the points.

    To compare several methods, compute one reference from the union of all their points and pass it
    to every :func:`hypervolume` call.

    >>> reference_point([[0, 4], [2, 2], [4, 0], [5, 5]]).tolist()
    [4.4, 4.4]
    """
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    p = as_points(points, "points")
    if p.shape[0] == 0:
        raise ValueError("reference_point needs at least one point")
    if not np.all(np.isfinite(p)):
        raise ValueError("points must be finite to derive a reference point")
    if front_only:
        u, _ = lex_unique(p)
        p = u[_first_front_sorted(u)]
    nadir = p.max(axis=0)
    span = nadir - p.min(axis=0)
    span = np.where(span > 0, span, np.maximum(np.abs(nadir), 1.0))
    return nadir + margin * span
