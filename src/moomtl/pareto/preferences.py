"""Preference vectors on the probability simplex :math:`\\Delta^{m-1} = \\{\\lambda \\ge 0, \\sum_i \\lambda_i = 1\\}`.

* :func:`das_dennis`: the Das-Dennis (1998) simplex lattice, every :math:`\\lambda` with entries in
  :math:`\\{0, 1/H, \\dots, 1\\}` summing to 1: :math:`\\binom{H + m - 1}{m - 1}` vectors.
* :func:`uniform_simplex`: i.i.d. samples from the uniform distribution on the simplex, Dirichlet(1).
* :func:`lattice_for`: the smallest Das-Dennis lattice with at least ``n_points`` vectors (exactly
  ``n_points`` evenly spaced ones for 2 objectives), e.g. for a preference sweep.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def das_dennis(n_partitions: int, n_obj: int) -> np.ndarray:
    """Das-Dennis lattice: all vectors :math:`k / H` with :math:`k \\in \\mathbb{N}^m`, :math:`\\sum k = H`
    (``H = n_partitions``, ``m = n_obj``). Shape :math:`[\\binom{H+m-1}{m-1}, m]`, rows in
    lexicographic order of ``k`` (for 2 objectives: first weight increasing from 0 to 1).

    >>> das_dennis(2, 3).tolist()
    [[0.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]
    """
    h = _check_int(n_partitions, "n_partitions", 1)
    m = _check_int(n_obj, "n_obj", 1)
    # Stars and bars: m - 1 bars among H + m - 1 slots; k_i = number of stars between bars.
    bars = np.array(list(itertools.combinations(range(h + m - 1), m - 1)), dtype=np.int64)
    bars = bars.reshape(math.comb(h + m - 1, m - 1), m - 1)
    edges = np.concatenate(
        [np.full((bars.shape[0], 1), -1), bars, np.full((bars.shape[0], 1), h + m - 1)], axis=1
    )
    counts = np.diff(edges, axis=1) - 1
    return counts / h


def uniform_simplex(n: int, n_obj: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """``n`` preference vectors drawn uniformly on the simplex (Dirichlet with all concentrations 1),
    shape ``[n, n_obj]``. ``seed``: an int, a numpy ``Generator`` or ``None`` (fresh entropy).

    >>> w = uniform_simplex(4, 3, seed=0)
    >>> w.shape, bool(np.allclose(w.sum(axis=1), 1.0))
    ((4, 3), True)
    """
    n = _check_int(n, "n", 0)
    m = _check_int(n_obj, "n_obj", 1)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.dirichlet(np.ones(m), size=n)


def lattice_for(n_points: int, n_obj: int) -> np.ndarray:
    """Preference vectors for a sweep of about ``n_points`` runs over ``n_obj`` objectives.

    * ``n_obj == 2``: exactly ``n_points`` evenly spaced vectors ``(t, 1 - t)``, ``t = linspace(0, 1)``
      (the Das-Dennis lattice with ``H = n_points - 1``).
    * ``n_obj >= 3``: :func:`das_dennis` with the smallest ``H`` giving at least ``n_points`` vectors
      (lattice sizes are binomial coefficients, so usually more than asked).
    * ``n_points == 1``: the centroid ``(1/m, ..., 1/m)``; ``n_obj == 1``: ``[[1.0]]`` (only
      ``n_points == 1`` is possible).

    >>> lattice_for(3, 2).tolist()
    [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    >>> lattice_for(7, 3).shape  # H = 3 gives C(5, 2) = 10 >= 7 (H = 2 gives only 6)
    (10, 3)
    """
    n = _check_int(n_points, "n_points", 1)
    m = _check_int(n_obj, "n_obj", 1)
    if n == 1:
        return np.full((1, m), 1.0 / m)
    if m == 1:
        raise ValueError(f"a single objective has only one preference vector, cannot make {n}")
    if m == 2:
        t = np.linspace(0.0, 1.0, n)
        return np.stack([t, 1.0 - t], axis=1)
    h = 1
    while math.comb(h + m - 1, m - 1) < n:
        h += 1
    return das_dennis(h, m)


#: How far :func:`inward` moves a lattice towards its centroid (2 objectives: the corners become (0.99, 0.01)).
INWARD = 0.02


def inward(preferences: np.ndarray, eps: float = INWARD) -> np.ndarray:
    """``(1 − eps) p + eps / m`` for every row ``p``: the lattice moved towards the centroid so that no
    entry is zero — for methods that refuse a zero preference entry (EPO's balance of ``r ⊙ L``).

    >>> inward(lattice_for(3, 2)).tolist()
    [[0.01, 0.99], [0.5, 0.5], [0.99, 0.01]]
    """
    p = np.asarray(preferences, dtype=float)
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    return (1.0 - eps) * p + eps / p.shape[-1]

