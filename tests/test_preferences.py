"""Das-Dennis lattice, Dirichlet(1) sampling and the lattice-size helper."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.pareto import das_dennis, lattice_for, uniform_simplex


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5))
def test_das_dennis_count_sum_and_grid(h, m):
    w = das_dennis(h, m)
    assert w.shape == (math.comb(h + m - 1, m - 1), m)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(w >= 0)
    k = w * h
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)  # entries are multiples of 1/H
    assert len({tuple(r) for r in np.round(k).astype(int).tolist()}) == w.shape[0]  # all distinct


def test_das_dennis_matches_enumeration():
    h, m = 4, 3
    expected = sorted(c for c in itertools.product(range(h + 1), repeat=m) if sum(c) == h)
    np.testing.assert_allclose(das_dennis(h, m), np.array(expected) / h)
    np.testing.assert_allclose(das_dennis(3, 1), [[1.0]])
    np.testing.assert_allclose(das_dennis(2, 2), [[0, 1], [0.5, 0.5], [1, 0]])


def test_uniform_simplex():
    w = uniform_simplex(20_000, 3, seed=0)
    assert w.shape == (20_000, 3)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.mean(axis=0), 1 / 3, atol=0.01)
    # Dirichlet(1) marginals are Beta(1, m-1): P(w_1 <= x) = 1 - (1-x)^(m-1).
    assert np.mean(w[:, 0] <= 0.5) == pytest.approx(1 - 0.5**2, abs=0.01)
    np.testing.assert_array_equal(uniform_simplex(5, 4, seed=3), uniform_simplex(5, 4, seed=3))
    assert not np.array_equal(uniform_simplex(5, 4, seed=3), uniform_simplex(5, 4, seed=4))
    rng = np.random.default_rng(1)
    assert uniform_simplex(2, 2, seed=rng).shape == (2, 2)
    assert uniform_simplex(0, 3, seed=0).shape == (0, 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(3, 5))
def test_lattice_for_is_the_smallest_sufficient_lattice(n, m):
    w = lattice_for(n, m)
    assert w.shape[0] >= n
    h = round(1 / np.min(w[w > 0]))  # the lattice's partition count
    np.testing.assert_allclose(w, das_dennis(h, m))
    assert h == 1 or math.comb(h - 1 + m - 1, m - 1) < n


@pytest.mark.parametrize("n", [2, 5, 11])
def test_lattice_for_two_objectives_is_exact(n):
    w = lattice_for(n, 2)
    assert w.shape == (n, 2)
    np.testing.assert_allclose(w[:, 0], np.linspace(0, 1, n))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w, das_dennis(n - 1, 2), atol=1e-12)


def test_lattice_for_edge_cases_and_validation():
    np.testing.assert_allclose(lattice_for(1, 3), [[1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(lattice_for(1, 1), [[1.0]])
    with pytest.raises(ValueError, match="single objective"):
        lattice_for(3, 1)
    with pytest.raises(ValueError, match="n_points"):
        lattice_for(0, 2)
    with pytest.raises(ValueError, match="n_partitions"):
        das_dennis(0, 3)
    with pytest.raises(ValueError, match="n_obj"):
        das_dennis(3, 0)
    with pytest.raises(ValueError, match="n_partitions"):
        das_dennis(2.5, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_obj"):
        uniform_simplex(3, 0)
