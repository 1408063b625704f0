"""Simplex projection against a QP solver and brute force; exponentiated-gradient steps stay on the
simplex, match the textbook formula and decrease the linear objective."""

from __future__ import annotations

import numpy as np
import pytest
import quadprog
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.solvers import exponentiated_gradient_step, project_simplex


def qp_projection(v: np.ndarray) -> np.ndarray:
    """argmin_p ½||p - v||² on the simplex with quadprog (½pᵀp - vᵀp)."""
    n = v.shape[0]
    C = np.hstack([np.ones((n, 1)), np.eye(n)])
    b = np.r_[1.0, np.zeros(n)]
    return quadprog.solve_qp(np.eye(n), v.astype(np.float64), C, b, meq=1)[0]


vectors = st.integers(1, 30).flatmap(lambda n: st.lists(st.floats(-100, 100, allow_nan=False), min_size=n, max_size=n))


@settings(max_examples=150, deadline=None)
@given(vectors)
def test_projection_matches_qp(entries):
    v = np.array(entries)
    p = project_simplex(torch.from_numpy(v)).numpy()
    assert (p >= 0).all() and p.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(p, qp_projection(v), atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3))
def test_projection_beats_every_point_of_a_simplex_grid(entries):
    v = np.array(entries)
    p = project_simplex(torch.from_numpy(v)).numpy()
    grid = np.linspace(0, 1, 61)
    a, b = np.meshgrid(grid, grid)
    pts = np.stack([a.ravel(), b.ravel(), 1 - a.ravel() - b.ravel()], 1)
    pts = pts[pts[:, 2] >= -1e-12]
    assert np.sum((p - v) ** 2) <= np.min(np.sum((pts - v) ** 2, 1)) + 1e-12


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(1, 40))
def test_projection_is_batched_over_the_last_dim(seed, batch, n):
    V = torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, 2, n)) * 5)
    P = project_simplex(V)
    assert P.shape == V.shape
    for i in range(batch):
        for j in range(2):
            torch.testing.assert_close(P[i, j], project_simplex(V[i, j]))


def test_projection_properties():
    p = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    torch.testing.assert_close(project_simplex(p), p)  # idempotent on the simplex
    torch.testing.assert_close(project_simplex(p + 7.0), p)  # shift invariant
    torch.testing.assert_close(project_simplex(torch.tensor([5.0])), torch.tensor([1.0]))
    huge = project_simplex(torch.tensor([1e30, 1e30, -1e30], dtype=torch.float64))
    torch.testing.assert_close(huge, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    f32 = project_simplex(torch.tensor([3e38, 0.0, -3e38]))
    assert f32.dtype == torch.float32 and torch.isfinite(f32).all() and f32.tolist() == [1.0, 0.0, 0.0]


def test_projection_bad_input():
    with pytest.raises(ValueError, match="NaN or inf"):
        project_simplex(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="non-empty"):
        project_simplex(torch.zeros(0))
    with pytest.raises(ValueError, match="floating"):
        project_simplex(torch.tensor([1, 2]))


simplex_points = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda x: sum(x) > 1e-6),
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(simplex_points, st.sampled_from([0.0, 1e-3, 0.1, 1.0, 10.0, 1e4, 1e30]))
def test_eg_stays_on_simplex_and_decreases_the_linear_objective(pg, lr):
    p0, g = np.array(pg[0]), np.array(pg[1])
    p = torch.from_numpy(p0 / p0.sum())
    grad = torch.from_numpy(g)
    q = exponentiated_gradient_step(p, grad, lr)
    assert torch.isfinite(q).all() and (q >= 0).all()
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-12)
    assert ((q > 0) <= (p > 0)).all()  # the support never grows
    # d/dη E_{p_η}[g] = -Var_{p_η}(g) ≤ 0: a mirror step cannot increase gᵀp
    assert float(q @ grad) <= float(p @ grad) + 1e-9 * (1 + float(grad.abs().max()))
    if lr == 0.0:
        torch.testing.assert_close(q, p)


def test_eg_matches_the_formula_and_is_batched():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=(3,))
    g = rng.standard_normal((3, 5))
    q = exponentiated_gradient_step(torch.from_numpy(p), torch.from_numpy(g), 0.7).numpy()
    expected = p * np.exp(-0.7 * g)
    np.testing.assert_allclose(q, expected / expected.sum(1, keepdims=True), rtol=1e-12)


def test_eg_extreme_steps():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0])
    q = exponentiated_gradient_step(p, torch.tensor([1.0, -1000.0, 2.0, -1e9]), lr=1e6)
    torch.testing.assert_close(q, torch.tensor([0.0, 1.0, 0.0, 0.0]))  # zero entry stays 0
    # η·g overflowing float32 still gives a point of the simplex
    q = exponentiated_gradient_step(torch.tensor([0.5, 0.5]), torch.tensor([1e9, -1e9]), lr=1e38)
    torch.testing.assert_close(q, torch.tensor([0.0, 1.0]))
    # ascent on f (OMD-TCH): pass -f
    f = torch.tensor([1.0, 3.0])
    q = exponentiated_gradient_step(torch.tensor([0.5, 0.5]), -f, lr=1.0)
    assert q[1] > q[0]


def test_eg_bad_input():
    p = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="same shape"):
        exponentiated_gradient_step(p, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        exponentiated_gradient_step(p, torch.tensor([float("nan"), 0.0]), 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        exponentiated_gradient_step(torch.tensor([1.5, -0.5]), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="positive entry"):
        exponentiated_gradient_step(torch.zeros(2), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="lr"):
        exponentiated_gradient_step(p, torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="lr"):
        exponentiated_gradient_step(p, torch.zeros(2), float("inf"))
