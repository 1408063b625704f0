"""Hypervolume against exact references (grid-cell union, inclusion-exclusion) and Monte Carlo."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.pareto import hypervolume, reference_point


def grid_union_volume(p: np.ndarray, ref: np.ndarray) -> float:
    """Exact HV for integer coordinates: count the unit cells [c, c+1] (c integer, c + 1 <= ref) that
    some point p <= c dominates. Coordinates are assumed >= 0."""
    cells = np.array(list(itertools.product(*[range(int(r)) for r in ref])), dtype=float)
    if cells.size == 0 or p.shape[0] == 0:
        return 0.0
    covered = np.any(np.all(p[None, :, :] <= cells[:, None, :], axis=2), axis=1)
    return float(covered.sum())


def inclusion_exclusion(p: np.ndarray, ref: np.ndarray) -> float:
    """HV = Σ_{S≠∅} (-1)^{|S|+1} λ(∩_{a∈S} [a, r]); the intersection is the box [max_S a, r]."""
    total = 0.0
    for k in range(1, p.shape[0] + 1):
        for s in itertools.combinations(range(p.shape[0]), k):
            corner = p[list(s)].max(axis=0)
            total += (-1) ** (k + 1) * np.prod(np.clip(ref - corner, 0, None))
    return total


def monte_carlo(p: np.ndarray, ref: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """Estimate and standard error, sampling uniformly in the box [ideal, ref]."""
    lo = p.min(axis=0)
    box = float(np.prod(ref - lo))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n // 50_000):
        x = rng.uniform(lo, ref, size=(50_000, p.shape[1]))
        hits += int(np.any(np.all(p[None, :, :] <= x[:, None, :], axis=2), axis=1).sum())
    frac = hits / (n // 50_000 * 50_000)
    return box * frac, box * np.sqrt(frac * (1 - frac) / n)


@st.composite
def grid_case(draw, min_m: int = 2, max_m: int = 3, hi: int = 5, max_n: int = 12):
    m = draw(st.integers(min_m, max_m))
    n = draw(st.integers(0, max_n))
    rows = draw(st.lists(st.lists(st.integers(0, hi), min_size=m, max_size=m), min_size=n, max_size=n))
    ref = draw(st.lists(st.integers(1, hi + 1), min_size=m, max_size=m))
    return np.array(rows, dtype=float).reshape(n, m), np.array(ref, dtype=float)


@st.composite
def float_case(draw, min_m: int = 2, max_m: int = 5, max_n: int = 12):
    m = draw(st.integers(min_m, max_m))
    n = draw(st.integers(1, max_n))
    vals = st.floats(0, 1, allow_nan=False, width=32)
    rows = draw(st.lists(st.lists(vals, min_size=m, max_size=m), min_size=n, max_size=n))
    return np.array(rows, dtype=float), np.full(m, 1.0)


def test_hand_computed():
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[2, 2]], [4, 4]) == pytest.approx(4.0)
    assert hypervolume([[0.5]], [2.0]) == pytest.approx(1.5)
    # 3-D: two boxes [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1] overlapping in a unit cube: 2 + 2 - 1.
    assert hypervolume([[0, 1, 1], [1, 0, 1]], [2, 2, 2]) == pytest.approx(3.0)
    # 4-D, inclusion-exclusion by hand: each box has volume 1·2·2·1 = 4, each pairwise intersection
    # (e.g. corner [1, 1, 0, 0]) 1·1·2·1 = 2, the triple one 1: 3·4 - 3·2 + 1.
    assert hypervolume([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], [2, 2, 2, 1]) == pytest.approx(7.0)


@settings(max_examples=120, deadline=None)
@given(grid_case(min_m=1, max_m=3))
def test_exact_on_integer_grid_low_dims(case):
    p, ref = case
    assert hypervolume(p, ref) == pytest.approx(grid_union_volume(p, ref), abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(grid_case(min_m=4, max_m=5, hi=4, max_n=10))
def test_exact_on_integer_grid_4d_5d(case):
    p, ref = case
    assert hypervolume(p, ref) == pytest.approx(grid_union_volume(p, ref), abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(grid_case(min_m=6, max_m=6, hi=3, max_n=10))
def test_exact_on_integer_grid_6d(case):
    p, ref = case
    assert hypervolume(p, ref) == pytest.approx(grid_union_volume(p, ref), abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(float_case(max_n=7))
def test_matches_inclusion_exclusion_on_floats(case):
    p, ref = case
    assert hypervolume(p, ref) == pytest.approx(inclusion_exclusion(p, ref), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("m", "n", "seed"), [(4, 25, 0), (5, 20, 1), (5, 40, 2), (6, 15, 3)])
def test_matches_monte_carlo_in_4_to_6_dims(m, n, seed):
    rng = np.random.default_rng(seed)
    # Points near the unit sphere's positive orthant: mostly mutually non-dominated, a curved front.
    p = np.abs(rng.normal(size=(n, m)))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    p += rng.uniform(0, 0.1, size=p.shape)
    ref = np.full(m, 1.2)
    est, se = monte_carlo(p, ref, n=200_000, seed=seed + 100)
    assert hypervolume(p, ref) == pytest.approx(est, abs=5 * se)


@settings(max_examples=80, deadline=None)
@given(float_case(max_n=15), st.randoms(use_true_random=False))
def test_invariant_to_order_duplicates_and_dominated_or_outside_points(case, rnd):
    p, ref = case
    base = hypervolume(p, ref)
    perm = list(range(len(p)))
    rnd.shuffle(perm)
    assert hypervolume(p[perm], ref) == pytest.approx(base, rel=1e-12, abs=1e-15)
    dup = p[[rnd.randrange(len(p)) for _ in range(4)]]
    assert hypervolume(np.concatenate([p, dup]), ref) == pytest.approx(base, rel=1e-12, abs=1e-15)
    # Points dominated by a member (worse everywhere by a bit, still inside the box) add nothing.
    dominated = np.minimum(p[[rnd.randrange(len(p)) for _ in range(3)]] + 0.01, ref - 1e-6)
    keep = np.array([np.any(np.all(p <= d, axis=1)) for d in dominated])
    extra = dominated[keep]
    assert hypervolume(np.concatenate([p, extra]), ref) == pytest.approx(base, rel=1e-12, abs=1e-15)
    # Points on or beyond the reference in some objective add nothing, however good elsewhere.
    outside = np.zeros((p.shape[1], p.shape[1]))
    outside[np.arange(p.shape[1]), np.arange(p.shape[1])] = ref + np.array([0.0] + [0.5] * (p.shape[1] - 1))
    assert hypervolume(np.concatenate([p, outside]), ref) == pytest.approx(base, rel=1e-12, abs=1e-15)
    assert hypervolume(outside, ref) == 0.0


@settings(max_examples=60, deadline=None)
@given(float_case(max_n=10), st.lists(st.floats(0, 1, width=32), min_size=5, max_size=5))
def test_monotone_under_adding_a_point(case, extra):
    p, ref = case
    q = np.array(extra[: p.shape[1]])[None]
    assert hypervolume(np.concatenate([p, q]), ref) >= hypervolume(p, ref) - 1e-12


def test_large_3d_against_slices_of_2d():
    # For points sharing one third coordinate the 3-D value is (r3 - z) times the 2-D value.
    rng = np.random.default_rng(5)
    xy = rng.random((3000, 2))
    p = np.column_stack([xy, np.full(3000, 0.25)])
    assert hypervolume(p, [1, 1, 1]) == pytest.approx(0.75 * hypervolume(xy, [1, 1]), rel=1e-12)
    # And general 3-D points against 2-D slabs: integrate the 2-D HV of {p : p3 <= z} over z.
    p = rng.random((300, 3))
    zs = np.sort(np.append(p[:, 2], 1.0))
    slabs = sum(
        (zs[i + 1] - zs[i]) * hypervolume(p[p[:, 2] <= zs[i], :2], [1, 1]) for i in range(len(zs) - 1)
    )
    assert hypervolume(p, [1, 1, 1]) == pytest.approx(slabs, rel=1e-10)


def test_input_types_and_validation():
    p = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(torch.tensor(p, requires_grad=True), torch.tensor([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(p.tolist(), (4, 4)) == pytest.approx(6.0)
    assert hypervolume([], [1.0, 1.0]) == 0.0
    assert hypervolume(np.zeros((0, 2)), [1.0, 1.0]) == 0.0
    assert hypervolume([[np.inf, 0.0]], [1.0, 1.0]) == 0.0  # +inf is simply outside the box
    assert isinstance(hypervolume(p, [4, 4]), float)
    with pytest.raises(ValueError, match="objectives but ref has"):
        hypervolume(p, [4, 4, 4])
    with pytest.raises(ValueError, match="ref must be"):
        hypervolume(p, [[4, 4]])
    with pytest.raises(ValueError, match="ref must be finite"):
        hypervolume(p, [np.inf, 4])
    with pytest.raises(ValueError, match="NaN"):
        hypervolume([[np.nan, 1.0]], [4, 4])
    with pytest.raises(ValueError, match="-inf"):
        hypervolume([[-np.inf, 1.0]], [4, 4])
    with pytest.raises(ValueError, match="shape"):
        hypervolume([1.0, 2.0], [4, 4])


def test_reference_point():
    pts = np.array([[0.0, 4.0], [2.0, 2.0], [4.0, 0.0], [5.0, 5.0]])
    np.testing.assert_allclose(reference_point(pts), [4.4, 4.4])
    np.testing.assert_allclose(reference_point(pts, front_only=False), [5.5, 5.5])
    np.testing.assert_allclose(reference_point(pts, margin=0.0), [4.0, 4.0])
    # Every non-dominated point, extremes included, contributes with a positive margin.
    ref = reference_point(pts)
    assert np.all(pts[:3] < ref)
    # Zero range: max(|nadir|, 1) stands in for the range.
    np.testing.assert_allclose(reference_point([[0.3, 20.0]]), [0.4, 22.0])
    with pytest.raises(ValueError, match="margin"):
        reference_point(pts, margin=-0.1)
    with pytest.raises(ValueError, match="at least one point"):
        reference_point(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="finite"):
        reference_point([[np.inf, 1.0]])
