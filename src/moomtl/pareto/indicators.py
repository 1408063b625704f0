"""Distance-based quality indicators of an approximation set ``A`` (minimization).

With :math:`Z` a reference front (e.g. samples of the true Pareto front) and :math:`d` the Euclidean
distance:

* GD (generational distance), mean distance of each point to the reference front:
  :math:`\\mathrm{GD}(A) = \\frac{1}{|A|} \\sum_{a \\in A} \\min_{z \\in Z} d(a, z)`.
* IGD (inverted GD), mean distance of each reference point to the set:
  :math:`\\mathrm{IGD}(A) = \\frac{1}{|Z|} \\sum_{z \\in Z} \\min_{a \\in A} d(a, z)`.
* IGD+ (Ishibuchi et al., 2015, "Modified distance calculation in generational distance and inverted
  generational distance") counts only the amount by which ``a`` is *worse* than ``z``:
  :math:`d^+(a, z) = \\sqrt{\\sum_i \\max(a_i - z_i, 0)^2}`, :math:`\\mathrm{IGD}^+(A) =
  \\frac{1}{|Z|} \\sum_{z} \\min_{a} d^+(a, z)`; it is weakly Pareto compliant, unlike IGD.
  GD+ is the analogue of GD with :math:`d^+`.

These are the ``p = 1`` (mean) forms used by pymoo; the original GD of Van Veldhuizen used
:math:`\\sqrt{\\sum d^2}/|A|`. Lower is better for all four.

Uniformity: :func:`spread` is Deb's :math:`\\Delta` for 2 objectives and :func:`spacing` Schott's
spacing for any number of objectives; both use the distinct non-dominated points of ``A``.
"""

from __future__ import annotations

import numpy as np

from moomtl.pareto.dominance import PointsLike, _first_front_sorted, as_points, lex_unique

# Bound the [chunk, n, m] difference tensors to about this many float64 entries (~32 MB).
_CHUNK_ELEMENTS = 4_000_000


def _pair(points: PointsLike, reference_front: PointsLike) -> tuple[np.ndarray, np.ndarray]:
    a = as_points(points, "points")
    z = as_points(reference_front, "reference_front")
    if a.shape[0] == 0:
        raise ValueError("points must contain at least one point")
    if z.shape[0] == 0:
        raise ValueError("reference_front must contain at least one point")
    if a.shape[1] != z.shape[1]:
        raise ValueError(f"points have {a.shape[1]} objectives but reference_front has {z.shape[1]}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(z))):
        raise ValueError("points and reference_front must be finite")
    return a, z


def _min_distances(a: np.ndarray, z: np.ndarray, *, plus: bool, over: str) -> np.ndarray:
    """``over="points"``: for each z, min over a of d(a, z); ``over="reference"``: for each a, min over z.
    ``d`` is Euclidean, or :math:`d^+` (only the parts where ``a`` is worse than ``z``) when ``plus``."""
    keep, other = (z, a) if over == "points" else (a, z)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, other.shape[0] * other.shape[1]))
    out = np.empty(keep.shape[0])
    for s in range(0, keep.shape[0], chunk):
        block = keep[s : s + chunk]
        # diff[i, j] = a - z for the (kept row i, other row j) pair.
        diff = other[None, :, :] - block[:, None, :] if over == "points" else block[:, None, :] - other[None]
        if plus:
            diff = np.maximum(diff, 0.0)
        out[s : s + chunk] = np.sqrt(np.min(np.sum(diff * diff, axis=2), axis=1))
    return out


def gd(points: PointsLike, reference_front: PointsLike) -> float:
    """Generational distance: mean over ``points`` of the distance to the nearest reference point.

    >>> gd([[0, 1], [1, 1]], reference_front=[[0, 1], [1, 0]])
    0.5
    """
    a, z = _pair(points, reference_front)
    return float(np.mean(_min_distances(a, z, plus=False, over="reference")))


def gd_plus(points: PointsLike, reference_front: PointsLike) -> float:
    """GD+: mean over ``points`` of :math:`\\min_z d^+(a, z)`.

    >>> gd_plus([[0, 1], [1, 1]], reference_front=[[0, 1], [1, 0]])
    0.5
    """
    a, z = _pair(points, reference_front)
    return float(np.mean(_min_distances(a, z, plus=True, over="reference")))


def igd(points: PointsLike, reference_front: PointsLike) -> float:
    """Inverted generational distance: mean over the reference front of the distance to the nearest point.

    >>> igd([[0, 1]], reference_front=[[0, 1], [1, 0]])  # (0 + sqrt(2)) / 2
    0.7071067811865476
    """
    a, z = _pair(points, reference_front)
    return float(np.mean(_min_distances(a, z, plus=False, over="points")))


def igd_plus(points: PointsLike, reference_front: PointsLike) -> float:
    """IGD+ (Ishibuchi et al., 2015): mean over the reference front of :math:`\\min_a d^+(a, z)`,
    :math:`d^+(a, z) = \\sqrt{\\sum_i \\max(a_i - z_i, 0)^2}`.

    >>> igd_plus([[0, 1]], reference_front=[[0, 1], [1, 0]])  # (0 + 1) / 2
    0.5
    """
    a, z = _pair(points, reference_front)
    return float(np.mean(_min_distances(a, z, plus=True, over="points")))


def _front(points: PointsLike) -> np.ndarray:
    p = as_points(points, "points")
    if not np.all(np.isfinite(p)):
        raise ValueError("points must be finite")
    u, _ = lex_unique(p)
    return u[_first_front_sorted(u)]


def spread(points: PointsLike, reference_front: PointsLike | None = None) -> float:
    """Deb's spread :math:`\\Delta` (Deb et al., 2002, NSGA-II) of a 2-objective front:

    .. math:: \\Delta = \\frac{d_f + d_l + \\sum_{i=1}^{N-1} |d_i - \\bar d|}{d_f + d_l + (N - 1)\\bar d}

    over the distinct non-dominated points sorted by the first objective, with :math:`d_i` the
    Euclidean distances between consecutive points, :math:`\\bar d` their mean, and :math:`d_f, d_l`
    the distances from the two end points to the extreme points of ``reference_front`` (0 without
    one). 0 for a perfectly even front that reaches the extremes; lower is better. ``nan`` when fewer
    than two distinct non-dominated points remain. For more objectives use :func:`spacing`.

    >>> spread([[0, 2], [1, 1], [2, 0]])
    0.0
    >>> round(spread([[0, 2], [1, 1], [2, 0]], reference_front=[[0, 3], [3, 0]]), 4)
    0.4142
    """
    f = _front(points)
    if f.shape[1] != 2:
        raise ValueError(f"spread (Deb's Δ) needs 2 objectives, got {f.shape[1]}; use spacing() instead")
    if f.shape[0] < 2:
        return float("nan")
    d = np.linalg.norm(np.diff(f, axis=0), axis=1)
    d_mean = d.mean()
    d_f = d_l = 0.0
    if reference_front is not None:
        zf = _front(reference_front)
        if zf.shape[1] != 2:
            raise ValueError(f"reference_front must have 2 objectives, got {zf.shape[1]}")
        if zf.shape[0] == 0:
            raise ValueError("reference_front must contain at least one point")
        # Sorted by f1, the first point is the extreme of objective 1 and the last that of objective 2.
        d_f = float(np.linalg.norm(f[0] - zf[0]))
        d_l = float(np.linalg.norm(f[-1] - zf[-1]))
    return float((d_f + d_l + np.abs(d - d_mean).sum()) / (d_f + d_l + (f.shape[0] - 1) * d_mean))


def spacing(points: PointsLike) -> float:
    """Schott's spacing of the distinct non-dominated points, any number of objectives:

    .. math:: S = \\sqrt{\\frac{1}{N - 1} \\sum_{i=1}^N (\\bar d - d_i)^2}, \\qquad
              d_i = \\min_{j \\ne i} \\sum_k |a^i_k - a^j_k|.

    0 for evenly spaced points; ``nan`` with fewer than two distinct non-dominated points.

    >>> spacing([[0, 2], [1, 1], [2, 0]])
    0.0
    """
    f = _front(points)
    n = f.shape[0]
    if n < 2:
        return float("nan")
    d = np.empty(n)
    chunk = max(1, _CHUNK_ELEMENTS // (n * f.shape[1]))
    for s in range(0, n, chunk):
        dist = np.abs(f[s : s + chunk, None, :] - f[None, :, :]).sum(axis=2)
        dist[np.arange(dist.shape[0]), np.arange(s, s + dist.shape[0])] = np.inf  # exclude j == i
        d[s : s + chunk] = dist.min(axis=1)
    return float(np.sqrt(np.sum((d - d.mean()) ** 2) / (n - 1)))
