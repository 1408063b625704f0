import numpy as np
import pytest
import quadprog
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.solvers.isotonic import project_monotone_nonincreasing

floats = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
vectors = st.lists(floats, min_size=1, max_size=12)


def qp_projection(v: np.ndarray, nonnegative: bool) -> np.ndarray:
    """min ½||x − v||² s.t. x_i ≥ x_{i+1} (and x ≥ 0), by quadprog (C^T x ≥ b)."""
    n = v.size
    cols = []
    for i in range(n - 1):
        c = np.zeros(n)
        c[i], c[i + 1] = 1.0, -1.0
        cols.append(c)
    if nonnegative:
        cols.extend(np.eye(n))
    if not cols:  # n == 1, no constraints
        return v.copy()
    C = np.stack(cols, axis=1)
    return quadprog.solve_qp(np.eye(n), v.astype(np.float64), C, np.zeros(C.shape[1]), 0)[0]


@settings(max_examples=150, deadline=None)
@given(vectors, st.booleans())
def test_matches_qp_and_is_feasible(values: list[float], nonnegative: bool) -> None:
    v = torch.tensor(values, dtype=torch.float64)
    x = project_monotone_nonincreasing(v, nonnegative)
    assert x.shape == v.shape and x.dtype == torch.float64
    assert bool((x[1:] <= x[:-1] + 1e-12).all())
    if nonnegative:
        assert bool((x >= 0).all())
    ref = qp_projection(v.numpy(), nonnegative)
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-7)


@settings(max_examples=50, deadline=None)
@given(vectors)
def test_unconstrained_projection_preserves_sum_and_is_idempotent(values: list[float]) -> None:
    # Each pooled block is replaced by its mean, so the total is unchanged.
    v = torch.tensor(values, dtype=torch.float64)
    x = project_monotone_nonincreasing(v, nonnegative=False)
    assert float(x.sum()) == pytest.approx(float(v.sum()), abs=1e-9)
    torch.testing.assert_close(project_monotone_nonincreasing(x, nonnegative=False), x)


def test_hand_cases() -> None:
    p = project_monotone_nonincreasing
    torch.testing.assert_close(p(torch.tensor([1.0, 3.0, 2.0, -1.0])), torch.tensor([2.0, 2.0, 2.0, 0.0]))
    torch.testing.assert_close(p(torch.tensor([1.0, 2.0, 3.0]), False), torch.tensor([2.0, 2.0, 2.0]))
    torch.testing.assert_close(p(torch.tensor([3.0, 2.0, 1.0])), torch.tensor([3.0, 2.0, 1.0]))
    torch.testing.assert_close(p(torch.tensor([-1.0, -2.0])), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(p(torch.tensor([-1.0, -2.0]), False), torch.tensor([-1.0, -2.0]))
    torch.testing.assert_close(p(torch.tensor([5.0])), torch.tensor([5.0]))
    assert p(torch.empty(0)).numel() == 0


def test_keeps_dtype_device_and_float64_precision() -> None:
    # Differences of 1e-9 on values near 1e8 are lost in float32 but kept in float64.
    v = torch.tensor([1e8, 1e8 + 2e-6, 1e8 - 1e-6], dtype=torch.float64)
    x = project_monotone_nonincreasing(v)
    assert x.dtype == torch.float64
    expected = torch.tensor([1e8 + 1e-6, 1e8 + 1e-6, 1e8 - 1e-6], dtype=torch.float64)
    assert torch.equal(x, expected) or float((x - expected).abs().max()) < 1e-8
    assert project_monotone_nonincreasing(torch.tensor([1.0, 2.0], dtype=torch.float32)).dtype == torch.float32


def test_large_input_is_monotone_and_sum_preserving() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(100_000, generator=g, dtype=torch.float64)
    x = project_monotone_nonincreasing(v, nonnegative=False)
    assert bool((x[1:] <= x[:-1]).all())
    assert float(x.sum()) == pytest.approx(float(v.sum()), abs=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(2, 2), "1-D"),
        (torch.tensor([1, 2]), "floating-point"),
        (torch.tensor([1.0, float("nan")]), "NaN"),
    ],
)
def test_rejects_bad_input(bad: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        project_monotone_nonincreasing(bad)
