"""Pure measures for the ``zhao2024-omd-tch`` entry (numpy in, floats out; no training here).

Preference control (the talk's "controlled PO solution"; ideal point ``z = 0`` as in the authors' code):

- :func:`tch_value`: the Tchebycheff value ``max_t λ_t L_t`` of a solution;
- :func:`ray_gap`: how far a loss vector is from the preference ray ``{L : λ_1 L_1 = … = λ_T L_T}``, where
  the exact TCH solution lies whenever the front crosses the ray: ``(max_t λ_t L_t − min_t λ_t L_t) /
  max_t λ_t L_t`` (0 on the ray, 1 when some weighted loss is 0);
- :func:`follows_preferences`: whether the loss ratio ``L_1 / L_2`` falls as ``λ_1`` grows (two tasks);
- :func:`non_dominated_fraction`: the share of a method's solutions that no solution of the pool dominates.

Convergence (the talk's "convergence speed and stability"), on an objective trajectory ``v_1 … v_E`` (one
value per epoch): :func:`roughness` (sd of the epoch-to-epoch changes over the second half: a steady trend
has sd 0, oscillation does not) and :func:`mean_level` (the mean over all epochs: lower is faster).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moomtl.pareto import non_dominated


def tch_value(losses: Sequence[float], pref: Sequence[float]) -> float:
    """``max_t λ_t L_t``.

    >>> tch_value([1.0, 3.0], [0.75, 0.25])
    0.75
    """
    return float(np.max(np.asarray(pref, float) * np.asarray(losses, float)))


def ray_gap(losses: Sequence[float], pref: Sequence[float]) -> float:
    """Relative spread of the weighted losses ``λ_t L_t`` (0: on the preference ray).

    >>> ray_gap([1.0, 3.0], [0.75, 0.25])   # λ∘L = (0.75, 0.75): on the ray
    0.0
    >>> round(ray_gap([2.0, 1.0], [0.5, 0.5]), 3)
    0.5
    """
    a = np.asarray(pref, float) * np.asarray(losses, float)
    top = float(a.max())
    if not top > 0:
        raise ValueError(f"weighted losses must have a positive maximum, got {a.tolist()}")
    return float((top - a.min()) / top)


def follows_preferences(prefs: Sequence[Sequence[float]], losses: Sequence[Sequence[float]]) -> bool:
    """Two tasks: sorted by ``λ_1``, the ratio ``L_1 / L_2`` is strictly decreasing (more weight on task 1
    → relatively smaller loss of task 1).

    >>> follows_preferences([[0.25, 0.75], [0.75, 0.25]], [[3.0, 1.0], [1.0, 3.0]])
    True
    >>> follows_preferences([[0.25, 0.75], [0.75, 0.25]], [[1.0, 3.0], [1.0, 3.0]])
    False
    """
    p = np.asarray(prefs, float)
    loss = np.asarray(losses, float)
    if p.shape != loss.shape or p.shape[1:] != (2,) or len(p) < 2:
        raise ValueError(f"need ≥ 2 two-task preferences and as many loss pairs, got {p.shape} and {loss.shape}")
    order = np.argsort(p[:, 0])
    ratio = loss[order, 0] / loss[order, 1]
    return bool(np.all(np.diff(ratio) < 0))


def non_dominated_fraction(points: np.ndarray, pool: np.ndarray) -> float:
    """Share of ``points`` (rows) that no row of ``pool`` dominates (``points`` should be part of ``pool``).

    >>> pool = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.5]])
    >>> non_dominated_fraction(pool[[0, 2]], pool)
    0.5
    """
    pts = np.asarray(points, float)
    both = np.vstack([pts, np.asarray(pool, float)])
    return float(non_dominated(both)[: len(pts)].mean())


def roughness(values: Sequence[float]) -> float:
    """Sample sd of ``v_{e+1} − v_e`` over the second half of the trajectory (needs ≥ 3 values there).

    >>> roughness([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])   # a steady trend: no oscillation
    0.0
    >>> round(roughness([1.0, 1.0, 1.0, 2.0, 1.0, 2.0]), 3)
    1.414
    """
    v = np.asarray(values, float)
    tail = v[len(v) // 2:]
    if len(tail) < 3:
        raise ValueError(f"need ≥ 3 values in the second half of the trajectory, got {len(tail)}")
    return float(np.std(np.diff(tail), ddof=1))


def mean_level(values: Sequence[float]) -> float:
    """Mean of the trajectory (the area under it per epoch).

    >>> mean_level([3.0, 2.0, 1.0])
    2.0
    """
    return float(np.mean(np.asarray(values, float)))


def accuracy_parity(accs: Sequence[float]) -> float:
    """The paper's accuracy parity: the (population) sd of the task accuracies, in percentage points.

    >>> accuracy_parity([0.9, 0.8])
    5.0
    """
    return float(np.sqrt(np.var(np.asarray(accs, float) * 100.0)))
