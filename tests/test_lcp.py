"""moomtl.solvers.lcp: block principal pivoting solves the LCP w = Mz + q, z, w ≥ 0, wᵀz = 0."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.solvers.lcp import block_pivoting


def _psd(seed: int, n: int, rank: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, rank)) * np.exp(rng.uniform(-1, 1, size=(n, 1)))
    M = A @ A.T + ridge * np.eye(n)
    return 0.5 * (M + M.T), rng.standard_normal(n) * 3


def _assert_complementary(M: np.ndarray, q: np.ndarray, z: np.ndarray, tol: float) -> None:
    w = M @ z + q
    scale = max(1.0, float(np.abs(q).max()), float(np.abs(z).max()) * float(np.abs(M).max()))
    assert (z >= -tol * scale).all()
    assert (w >= -tol * scale).all()
    assert abs(float(w @ z)) <= tol * scale * max(1.0, float(np.abs(z).sum()))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25), solver=st.sampled_from(["dposv", "pivot"]))
def test_positive_definite_lcp_is_solved(seed: int, n: int, solver: str) -> None:
    M, q = _psd(seed, n, n, ridge=0.1)
    kw = {"min_pivot": 1e-10, "clamp": True} if solver == "pivot" else {}
    z = block_pivoting(M, q, 1000, tol=1e-12, **kw)
    assert z is not None
    _assert_complementary(M, q, z, 1e-9)
    if solver == "pivot":
        assert (z >= 0).all()  # clamp


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 25), data=st.data())
def test_singular_psd_lcp_is_solved_or_refused(seed: int, n: int, data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, n - 1))
    M, q = _psd(seed, n, rank, ridge=0.0)
    z = block_pivoting(M, q, 1000, tol=1e-12, min_pivot=1e-10, clamp=True)
    if z is not None:  # a numerically singular passive block is refused (None), never a wrong answer
        _assert_complementary(M, q, z, 1e-8)


def test_start_on_the_full_support_and_the_iteration_cap() -> None:
    M, q = _psd(0, 6, 6, ridge=1.0)
    q = -np.abs(q) - 1.0  # M z = -q with z > 0 for a diagonally dominant M: the full support is optimal
    M = M + 20.0 * np.eye(6)
    full = np.linalg.solve(M, -q)
    assert (full > 0).all()
    z = block_pivoting(M, q, 1, tol=1e-12, start=full)
    assert z is full  # accepted at the first test, no solve
    assert block_pivoting(M, q, 1, tol=1e-12) is None  # from F = ∅ one test is not enough
    np.testing.assert_allclose(block_pivoting(M, q, 10, tol=1e-12), full, rtol=1e-12)


@pytest.mark.parametrize("min_pivot", [None, 1e-10])
def test_zero_q_gives_zero(min_pivot: float | None) -> None:
    M, _ = _psd(1, 4, 4, ridge=0.1)
    np.testing.assert_array_equal(block_pivoting(M, np.zeros(4), 5, tol=0.0, min_pivot=min_pivot), np.zeros(4))
