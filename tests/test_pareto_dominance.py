"""Dominance, non-dominated filtering and sorting against O(n²) brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.pareto import crowding_distance, dominates, non_dominated, non_dominated_sort, pareto_rank


def brute_dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def brute_mask(p: np.ndarray) -> np.ndarray:
    return np.array([not any(brute_dominates(q, x) for q in p) for x in p], dtype=bool)


def vectorized_brute_mask(p: np.ndarray) -> np.ndarray:
    # dom[i, j]: point j dominates point i.
    le = np.all(p[None, :, :] <= p[:, None, :], axis=2)
    lt = np.any(p[None, :, :] < p[:, None, :], axis=2)
    return ~np.any(le & lt, axis=1)


def brute_fronts(p: np.ndarray, mask_fn=vectorized_brute_mask) -> list[list[int]]:
    remaining = np.arange(len(p))
    fronts = []
    while remaining.size:
        m = mask_fn(p[remaining])
        fronts.append(sorted(remaining[m].tolist()))
        remaining = remaining[~m]
    return fronts


@st.composite
def int_points(draw, max_n: int = 30, max_m: int = 5, hi: int = 4):
    """Small integer coordinates, so ties and exact duplicates are frequent."""
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(0, max_n))
    rows = draw(st.lists(st.lists(st.integers(0, hi), min_size=m, max_size=m), min_size=n, max_size=n))
    return np.array(rows, dtype=float).reshape(n, m)


@st.composite
def float_points(draw, max_n: int = 30, max_m: int = 4):
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(1, max_n))
    vals = st.floats(-10, 10, allow_nan=False, width=32)
    rows = draw(st.lists(st.lists(vals, min_size=m, max_size=m), min_size=n, max_size=n))
    p = np.array(rows, dtype=float)
    # Re-use some rows verbatim so duplicates also occur with non-integer values.
    dup = draw(st.lists(st.integers(0, n - 1), max_size=5))
    return np.concatenate([p, p[dup]], axis=0) if dup else p


def test_dominates_hand_cases():
    assert dominates([1, 2], [1, 3])
    assert dominates([0, 0, 0], [1, 1, 1])
    assert not dominates([1, 2], [1, 2])  # equal points do not dominate each other
    assert not dominates([1, 3], [2, 2])  # incomparable
    assert not dominates([2, 2], [1, 3])
    assert dominates(torch.tensor([0.0, 1.0]), np.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="same number of objectives"):
        dominates([1, 2], [1, 2, 3])


@settings(max_examples=150, deadline=None)
@given(int_points())
def test_non_dominated_matches_brute_force_with_ties(p):
    np.testing.assert_array_equal(non_dominated(p), brute_mask(p))


@settings(max_examples=100, deadline=None)
@given(float_points())
def test_non_dominated_matches_brute_force_floats(p):
    np.testing.assert_array_equal(non_dominated(p), brute_mask(p))


@settings(max_examples=100, deadline=None)
@given(int_points(max_n=40))
def test_fronts_match_brute_force_peeling(p):
    fronts = [f.tolist() for f in non_dominated_sort(p)]
    assert fronts == brute_fronts(p, brute_mask)
    # Structure: a partition of all indices; front 0 is the non-dominated set; every point of front
    # k > 0 is dominated by some point of front k - 1 and by no point of fronts >= k.
    assert sorted(i for f in fronts for i in f) == list(range(len(p)))
    if fronts:
        np.testing.assert_array_equal(np.sort(fronts[0]), np.flatnonzero(brute_mask(p)))
    rank = pareto_rank(p)
    for k, front in enumerate(fronts):
        assert np.all(rank[front] == k)
        for i in front:
            if k:
                assert any(brute_dominates(p[j], p[i]) for j in fronts[k - 1])
            later = [j for f in fronts[k:] for j in f]
            assert not any(brute_dominates(p[j], p[i]) for j in later)


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("integer", [False, True])
def test_large_random_sets_match_vectorized_brute_force(m, integer):
    rng = np.random.default_rng(10 * m + integer)
    n = 1500
    p = rng.integers(0, 40, size=(n, m)).astype(float) if integer else rng.random((n, m))
    np.testing.assert_array_equal(non_dominated(p), vectorized_brute_mask(p))
    if m <= 3:  # peeling by brute force costs one n² pass per front: use a subset
        sub = p[:400]
        assert [f.tolist() for f in non_dominated_sort(sub)] == brute_fronts(sub)


def test_points_on_a_front_and_anti_chain_sizes():
    # All points of a linear front are mutually non-dominated (the sweeps' worst case).
    t = np.linspace(0, 1, 500)
    p3 = np.stack([t, 1 - t, np.zeros_like(t)], axis=1)
    assert non_dominated(p3).all()
    assert len(non_dominated_sort(p3)) == 1
    # A chain: each point dominates the next, so n fronts of one point each.
    chain = np.repeat(np.arange(50.0)[:, None], 3, axis=1)[::-1]
    assert [f.tolist() for f in non_dominated_sort(chain)] == [[i] for i in range(49, -1, -1)]


def test_duplicates_keep_every_copy():
    p = [[1, 3], [1, 3], [2, 2], [2, 3], [2, 3], [3, 1]]
    assert non_dominated(p).tolist() == [True, True, True, False, False, True]
    assert [f.tolist() for f in non_dominated_sort(p)] == [[0, 1, 2, 5], [3, 4]]


def test_signed_zero_and_infinities():
    assert non_dominated([[0.0, 1.0], [-0.0, 1.0]]).tolist() == [True, True]
    assert non_dominated([[0.0, 1.0, 2.0], [-0.0, 1.0, 2.0]]).tolist() == [True, True]
    assert non_dominated([[np.inf, 0.0], [1.0, 1.0], [np.inf, 1.0]]).tolist() == [True, True, False]


def test_input_types_and_validation():
    p = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 3.0]])
    expected = [True, True, False]
    assert non_dominated(p.tolist()).tolist() == expected
    assert non_dominated(torch.tensor(p, dtype=torch.float32, requires_grad=True)).tolist() == expected
    assert non_dominated(p.astype(int)).tolist() == expected
    assert non_dominated([]).shape == (0,)
    assert non_dominated_sort(np.zeros((0, 3))) == []
    with pytest.raises(ValueError, match="NaN"):
        non_dominated([[1.0, np.nan]])
    with pytest.raises(ValueError, match="shape"):
        non_dominated([1.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        non_dominated(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="numeric"):
        non_dominated([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="at least one objective"):
        non_dominated(np.zeros((3, 0)))


def test_crowding_distance():
    d = crowding_distance([[0, 4], [1, 2], [2, 1], [4, 0]])
    np.testing.assert_allclose(d, [np.inf, 1.25, 1.25, np.inf])
    assert np.isinf(crowding_distance([[0, 1], [1, 0]])).all()
    # Constant objective contributes nothing; the sum over objectives of normalized gaps otherwise.
    d = crowding_distance([[0, 5], [1, 5], [3, 5]])
    assert np.isinf(d[0]) and np.isinf(d[2]) and d[1] == pytest.approx(1.0)


def test_1e4_points_3d_first_front_and_a_plane():
    """10⁴ points in 3-D: the non-dominated mask is the first front of the sort; on the plane
    x+y+z=1 (the staircase's worst case) every point is non-dominated. (Timings: benchmarks, not tests.)"""
    rng = np.random.default_rng(0)
    p = rng.random((10_000, 3))
    mask = non_dominated(p)
    fronts = non_dominated_sort(p)
    q = rng.random((10_000, 2))
    plane = np.column_stack([q, 1.0 - q.sum(axis=1)])
    all_nd = non_dominated(plane)
    assert mask.sum() == len(fronts[0])
    assert all_nd.sum() == len(plane)  # the plane x+y+z=1 contains no dominated point (distinct points)
