"""Statistics over seeds, Δm against single-task baselines, and the degenerate-front criterion: pure
functions on numbers (no files, no training), used by the sweep, train and compare reports.

* :func:`summarize` — mean, sample standard deviation (``ddof=1``), ``n`` and a percentile-bootstrap
  95 % interval of the mean over seeds (:func:`bootstrap_ci`; a fixed RNG seed, so a report is the
  same every time it is written; with one seed the interval is undefined, ``None``).
* :func:`delta_m` — Δm of Maninis et al. (2019) in the sign convention of Liu et al. (2021, CAGrad):
  ``Δm = (1/T) Σ_t (−1)^{h_t} (M_t − M_{b,t}) / M_{b,t} × 100 %`` with ``h_t = 1`` when higher is
  better, so **lower Δm is better** and a negative Δm is a gain over the single-task baselines.
* :func:`front_conflict` — whether the trained points' objectives are in conflict at all (Ruchte &
  Grabocka 2021 found Multi-Fashion often is not); the criterion is stated in its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moomtl.tasks import metric_higher_is_better

#: Bootstrap defaults: resamples and the RNG seed (fixed: reports are deterministic).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
#: Degenerate-front thresholds (see :func:`front_conflict`).
GAP_TOLERANCE = 0.05
RANK_CORRELATION_THRESHOLD = 0.5
MIN_POINTS_FOR_CORRELATION = 4


def higher_is_better(metric: str) -> bool:
    """Direction of a reported metric: losses and errors (``loss``, ``err``) go down, the rest as
    :func:`moomtl.tasks.metric_higher_is_better` says (``acc``, ``miou`` up; ``l1`` down).

    >>> higher_is_better("loss"), higher_is_better("err"), higher_is_better("acc"), higher_is_better("l1")
    (False, False, True, False)
    """
    return False if metric in ("loss", "err") else metric_higher_is_better(metric)


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the mean of ``values`` (one value per seed): resample the seeds
    with replacement ``n_resamples`` times (``numpy.random.default_rng(seed)``), take the means, and
    return their ``(1 − level)/2`` and ``(1 + level)/2`` quantiles. ``None`` with fewer than two values
    (undefined); a point when all values are equal. With very few seeds the interval is narrow by
    construction (2 seeds: the bootstrap means are only ``a``, ``(a+b)/2`` and ``b``).

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    >>> bootstrap_ci([2.0]) is None
    True
    """
    x = _finite(values)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x.size < 2:
        return None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(int(n_resamples), x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class SeedStats:
    """Mean, sample sd (``None`` for one seed), ``n`` and bootstrap 95 % interval (``None`` for one seed)."""

    mean: float
    sd: float | None
    n: int
    ci95: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "n": self.n,
                "ci95": list(self.ci95) if self.ci95 is not None else None}

    def text(self, fmt: str = ".4g", scale: float = 1.0) -> str:
        """``"0.512 ± 0.013"`` (``"0.512"`` for one seed), values multiplied by ``scale``."""
        mean = format(self.mean * scale, fmt)
        return mean if self.sd is None else f"{mean} ± {format(self.sd * scale, fmt.lstrip('+'))}"

    def ci_text(self, fmt: str = ".4g", scale: float = 1.0) -> str:
        if self.ci95 is None:
            return "undefined (1 seed)"
        return f"[{format(self.ci95[0] * scale, fmt)}, {format(self.ci95[1] * scale, fmt)}]"


def summarize(values: Sequence[float], seed: int = BOOTSTRAP_SEED) -> SeedStats:
    """:class:`SeedStats` of one value per seed.

    >>> s = summarize([1.0, 3.0])
    >>> s.mean, s.sd, s.n
    (2.0, 1.4142135623730951, 2)
    """
    x = _finite(values)
    if x.size == 0:
        raise ValueError("no values to summarize")
    sd = (0.0 if np.all(x == x[0]) else float(np.std(x, ddof=1))) if x.size > 1 else None
    return SeedStats(mean=float(np.mean(x)), sd=sd, n=int(x.size), ci95=bootstrap_ci(x, seed=seed))


def intervals_overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool | None:
    """Whether two closed intervals share a point (``None`` if either is undefined).

    >>> intervals_overlap((0, 1), (1, 2)), intervals_overlap((0, 1), (1.5, 2)), intervals_overlap(None, (0, 1))
    (True, False, None)
    """
    if a is None or b is None:
        return None
    return bool(a[0] <= b[1] and b[0] <= a[1])


def delta_m(
    values: Mapping[str, float], baselines: Mapping[str, float], higher: Mapping[str, bool],
) -> float:
    """Δm in percent over the keys of ``baselines`` (one metric per task):
    ``100 / T · Σ_t (−1)^{h_t} (M_t − M_{b,t}) / M_{b,t}`` with ``h_t = 1`` when ``higher[t]``
    (Liu et al. 2021's convention: lower is better, 0 at the baselines). A baseline of 0 or a
    non-finite value makes Δm undefined (``ValueError``).

    >>> delta_m({"a": 0.95, "b": 0.25}, {"a": 0.95, "b": 0.5}, {"a": True, "b": False})  # b's loss halves
    -25.0
    """
    if not baselines:
        raise ValueError("Δm needs at least one baseline")
    terms = []
    for key, base in baselines.items():
        value = values[key]
        if not (math.isfinite(base) and math.isfinite(value)):
            raise ValueError(f"Δm undefined: {key} has a non-finite value or baseline")
        if base == 0:
            raise ValueError(f"Δm undefined: the baseline of {key} is 0")
        sign = -1.0 if higher[key] else 1.0
        terms.append(sign * (value - base) / base)
    return 100.0 * float(np.mean(terms))


@dataclass(frozen=True)
class FrontConflict:
    """The outcome of :func:`front_conflict` (``to_dict`` goes to ``results.json``)."""

    degenerate: bool
    ideal_gap: float | None
    rank_correlation: float | None
    n_points: int
    reason: str
    points_judged: str = "all points"

    def to_dict(self) -> dict[str, Any]:
        return {"degenerate": self.degenerate, "ideal_gap": self.ideal_gap,
                "rank_correlation_min": self.rank_correlation, "n_points": self.n_points, "reason": self.reason,
                "points_judged": self.points_judged, "criterion": CRITERION}


CRITERION = (
    f"degenerate when (a) one point is within {GAP_TOLERANCE:.0%} of each objective's range (over the points) "
    "of the best value in every objective (min over points of the max normalized gap to the ideal point "
    f"≤ {GAP_TOLERANCE}), or (b) with ≥ {MIN_POINTS_FOR_CORRELATION} points, every pair of objectives has "
    f"Spearman rank correlation ≥ {RANK_CORRELATION_THRESHOLD} across the points"
)


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (``scipy.stats.rankdata``'s default).

    >>> average_ranks([10, 30, 20, 20]).tolist()
    [1.0, 4.0, 2.5, 2.5]
    """
    _, inverse, counts = np.unique(np.asarray(values, dtype=float), return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse.reshape(-1)].astype(float)


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); ``None`` when either side is constant.

    >>> spearman([1, 2, 3], [30, 20, 10]), spearman([1, 2, 3], [1, 1, 1])
    (-1.0, None)
    """
    ra, rb = average_ranks(a), average_ranks(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return None
    return float(np.clip(np.corrcoef(ra, rb)[0, 1], -1.0, 1.0))


def front_conflict(objectives: np.ndarray | Sequence[Sequence[float]]) -> FrontConflict:
    """Are the objectives (rows: trained points, columns: objectives to minimize) in conflict?

    Criterion (scale-free: invariant to positive affine changes of each objective):

    * normalize each objective by its range over the points, ``g_ij = (f_ij − min_i f_ij) / range_j``
      (an objective with range 0 is 0 everywhere); the **ideal gap** is ``min_i max_j g_ij`` — 0 when one
      point is best in every objective (it weakly dominates all others), 1 at most. Degenerate when the
      ideal gap is ≤ ``GAP_TOLERANCE`` (0.05): one point is within 5 % of the spread of the best value
      in every objective, so it (nearly) dominates all others.
    * with at least ``MIN_POINTS_FOR_CORRELATION`` (4) points, the smallest Spearman rank correlation
      over pairs of non-constant objectives; degenerate when it is ≥ ``RANK_CORRELATION_THRESHOLD``
      (0.5): the objectives rise and fall together across the points instead of trading off (a
      trade-off front has correlation −1).

    Fewer than two points cannot be judged (``degenerate`` False, reason says so).
    """
    f = np.asarray(objectives, dtype=float)
    if f.ndim != 2:
        raise ValueError(f"objectives must be a 2-D array (points × objectives), got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("objectives must be finite")
    n, m = f.shape
    if n < 2 or m < 2:
        return FrontConflict(False, None, None, n, f"not assessed ({n} point(s), {m} objective(s))")
    lo, span = f.min(axis=0), np.ptp(f, axis=0)
    if not np.any(span > 0):
        return FrontConflict(True, 0.0, None, n, "all points have the same objectives")
    g = np.divide(f - lo, span, out=np.zeros_like(f), where=span > 0)
    gap = float(g.max(axis=1).min())
    rho = None
    varying = [j for j in range(m) if span[j] > 0]
    if n >= MIN_POINTS_FOR_CORRELATION and len(varying) >= 2:
        pairs = [spearman(f[:, j], f[:, k]) for i, j in enumerate(varying) for k in varying[i + 1:]]
        rho = min(p for p in pairs if p is not None)
    if gap <= GAP_TOLERANCE:
        reason = (f"one point is within {100 * gap:.1f} % of the best value in every objective "
                  "(it nearly dominates all others)")
        return FrontConflict(True, gap, rho, n, reason)
    if rho is not None and rho >= RANK_CORRELATION_THRESHOLD:
        return FrontConflict(True, gap, rho, n, "the objectives rise and fall together (smallest Spearman "
                             f"ρ {rho:.2f} ≥ {RANK_CORRELATION_THRESHOLD})")
    corr = f", Spearman ρ {rho:.2f}" if rho is not None else ""
    return FrontConflict(False, gap, rho, n, f"the objectives trade off (ideal gap {gap:.2f}{corr})")


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite")
    return x


__all__ = [
    "CRITERION", "FrontConflict", "SeedStats", "bootstrap_ci", "delta_m", "front_conflict", "higher_is_better",
    "intervals_overlap", "spearman", "summarize",
]
