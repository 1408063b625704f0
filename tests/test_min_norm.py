"""MGDA's min-norm solver: simplex feasibility, KKT optimality, agreement with an independent QP solver
(quadprog's Goldfarb-Idnani dual active set), invariances, the two-task closed form, common descent,
and degenerate/non-finite input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import quadprog
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.solvers import min_norm, min_norm_direction, min_norm_two, min_norm_value

KINDS = ("independent", "correlated", "low_rank", "duplicates", "scales", "opposite")


def make_jacobian(seed: int, T: int, kind: str, d: int, rank: int) -> np.ndarray:
    """Task gradients as rows: generic, strongly correlated, rank-deficient (T > d possible), duplicated
    (up to positive scale), norms spread over 1e-6..1e6, or containing opposite pairs."""
    rng = np.random.default_rng(seed)
    if kind == "independent":
        return rng.standard_normal((T, d))
    if kind == "correlated":
        return rng.standard_normal((1, d)) + rng.uniform(0.05, 1.0) * rng.standard_normal((T, d))
    if kind == "low_rank":
        return rng.standard_normal((T, rank)) @ rng.standard_normal((rank, d))
    if kind == "duplicates":
        base = rng.standard_normal((max(1, rank // 2), d))
        return base[rng.integers(0, len(base), T)] * rng.choice([1.0, 2.0, 0.5], (T, 1))
    if kind == "scales":
        return rng.standard_normal((T, d)) * 10.0 ** rng.uniform(-6, 6, (T, 1))
    if kind == "opposite":
        J = rng.standard_normal((T, d))
        J[1::2] = -J[0::2][: T // 2] * rng.uniform(0.5, 2.0, (T // 2, 1))
        return J
    raise AssertionError(kind)


def gramian_of(J: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(J @ J.T)


def qp_reference(M: np.ndarray) -> np.ndarray:
    """argmin αᵀMα on the simplex with quadprog (needs a PD matrix: a 1e-10 ridge, relative to the
    largest diagonal entry, on the normalized Gramian)."""
    T = M.shape[0]
    Mn = M / M.diagonal().max()
    G = Mn + 1e-10 * np.eye(T)
    C = np.hstack([np.ones((T, 1)), np.eye(T)])
    b = np.r_[1.0, np.zeros(T)]
    alpha = quadprog.solve_qp(G, np.zeros(T), C, b, meq=1)[0]
    alpha = np.maximum(alpha, 0.0)
    return alpha / alpha.sum()


def normalized_objective(M: np.ndarray, alpha: np.ndarray) -> float:
    return float(alpha @ (M / M.diagonal().max()) @ alpha)


def kkt_gap(M: np.ndarray, alpha: np.ndarray) -> float:
    """αᵀMα - min_t (Mα)_t relative to max_t M_tt: ≥ f(α) - f*, zero exactly at a minimizer."""
    v = (M / M.diagonal().max()) @ alpha
    return float(alpha @ v - v.min())


problems = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.integers(1, 100),  # T
    st.sampled_from(KINDS),
    st.integers(1, 300),  # d
    st.integers(1, 100),  # rank
)


@settings(max_examples=80, deadline=None)
@given(problems)
def test_on_simplex_and_kkt_optimal(problem):
    seed, T, kind, d, rank = problem
    J = make_jacobian(seed, T, kind, d, rank)
    M = J @ J.T
    alpha = min_norm(torch.from_numpy(M))
    a = alpha.numpy()
    assert alpha.shape == (T,) and alpha.dtype == torch.float64
    assert np.isfinite(a).all()
    assert (a >= 0).all()
    assert abs(a.sum() - 1.0) < 1e-12
    assert kkt_gap(M, a) <= 1e-9


@settings(max_examples=60, deadline=None)
@given(problems)
def test_objective_matches_qp_reference(problem):
    seed, T, kind, d, rank = problem
    J = make_jacobian(seed, T, kind, d, rank)
    M = J @ J.T
    if T == 1 or M.diagonal().max() == 0:
        return
    ours = normalized_objective(M, min_norm(torch.from_numpy(M)).numpy())
    ref = normalized_objective(M, qp_reference(M))
    assert ours <= ref * (1 + 1e-6) + 1e-12, (ours, ref)
    # and the reference cannot beat a KKT point by more than its certified gap
    assert ref >= ours - kkt_gap(M, min_norm(torch.from_numpy(M)).numpy()) - 1e-12


@settings(max_examples=40, deadline=None)
@given(problems, st.integers(0, 2**31 - 1))
def test_permutation_equivariance(problem, perm_seed):
    seed, T, kind, d, rank = problem
    J = make_jacobian(seed, T, kind, d, rank)
    perm = np.random.default_rng(perm_seed).permutation(T)
    M = J @ J.T
    a = min_norm(torch.from_numpy(M)).numpy()
    a_perm = min_norm(torch.from_numpy(M[np.ix_(perm, perm)])).numpy()
    assert normalized_objective(M, a) == pytest.approx(
        normalized_objective(M, a_perm[np.argsort(perm)]), rel=1e-9, abs=1e-12
    )
    # with affinely independent gradients (generic, d ≥ T) the minimizer is unique and must permute
    if kind in ("independent", "correlated") and d >= T + 5:
        np.testing.assert_allclose(a_perm, a[perm], atol=1e-8)


def test_duplicated_tasks():
    """A repeated gradient makes the minimizer non-unique, but the total weight of each distinct
    gradient is unique (for generic distinct gradients) and must match the de-duplicated problem."""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        T = int(rng.integers(2, 20))
        G = rng.standard_normal((T, 60))
        idx = rng.permutation(np.r_[np.arange(T), rng.integers(0, T, 2 * T)])  # every row at least once
        a = min_norm(gramian_of(G[idx])).numpy()
        a_unique = min_norm(gramian_of(G)).numpy()
        np.testing.assert_allclose(np.bincount(idx, weights=a, minlength=T), a_unique, atol=1e-8)


def _brute_force_two(g1: np.ndarray, g2: np.ndarray) -> float:
    grid = np.linspace(0.0, 1.0, 20001)
    return float(np.min(np.sum((grid[:, None] * g1 + (1 - grid[:, None]) * g2) ** 2, axis=1)))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=6, max_size=6),
    st.sampled_from(["free", "colinear", "opposite", "equal"]),
)
def test_two_tasks_closed_form(entries, relation):
    g1, g2 = np.array(entries[:3]), np.array(entries[3:])
    if relation == "colinear":
        g2 = 3.0 * g1
    elif relation == "opposite":
        g2 = -0.5 * g1
    elif relation == "equal":
        g2 = g1.copy()
    M = gramian_of(np.stack([g1, g2]))
    a = min_norm(M).numpy()
    np.testing.assert_allclose(a, min_norm_two(M).numpy(), atol=1e-15)
    assert (a >= 0).all() and a.sum() == pytest.approx(1.0, abs=1e-15)
    # eq. 4 by hand
    den = float(np.sum((g1 - g2) ** 2))
    if den > 1e-12 * max(g1 @ g1, g2 @ g2, 1e-300):
        expected = np.clip((g2 - g1) @ g2 / den, 0.0, 1.0)
        assert a[0] == pytest.approx(expected, abs=1e-9)
    value = float(min_norm_value(M, torch.from_numpy(a)))
    scale = max(g1 @ g1, g2 @ g2, 1e-300)
    assert value <= _brute_force_two(g1, g2) + 1e-12 * scale
    if relation == "colinear" and g1 @ g1 > 1e-280:  # all weight on the shorter one (M not underflowed)
        assert a[0] == pytest.approx(1.0)
    if relation == "opposite" and g1.any():
        assert value <= 1e-12 * scale


@settings(max_examples=60, deadline=None)
@given(problems)
def test_common_descent_direction(problem):
    """Désidéri's property: with d = Σ α_t g_t, every task has g_t·d ≥ ||d||²."""
    seed, T, kind, d, rank = problem
    J = make_jacobian(seed, T, kind, d, rank)
    alpha = min_norm(gramian_of(J))
    direction = min_norm_direction(alpha, torch.from_numpy(J)).numpy()
    scale = (J * J).sum(1).max()
    assert (J @ direction >= direction @ direction - 1e-9 * scale).all()


def test_orthonormal_gradients_give_uniform_weights():
    for T in (3, 7, 100):
        a = min_norm(torch.eye(T, dtype=torch.float64))
        torch.testing.assert_close(a, torch.full((T,), 1.0 / T, dtype=torch.float64), atol=1e-12, rtol=0)


def test_hand_computed_three_tasks():
    # g1 = (1, 0), g2 = (0, 1), g3 = (1, 1): min-norm point (1/2, 1/2) is the midpoint of g1, g2.
    J = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(min_norm(J @ J.T), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    # g3 = (-1, -1) puts the origin inside the hull: weights (1/3, 1/3, 1/3), min-norm 0
    J[2] = -1.0
    alpha = min_norm(J @ J.T)
    torch.testing.assert_close(alpha, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert float(min_norm_value(J @ J.T, alpha)) < 1e-24


def test_single_task():
    for g in (torch.tensor([[4.0]]), torch.zeros(1, 1)):
        assert min_norm(g).tolist() == [1.0]


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1.0, 1e10, 1e30])
def test_scale_invariance(scale):
    J = make_jacobian(3, 12, "correlated", 40, 12)
    base = min_norm(gramian_of(J))
    torch.testing.assert_close(min_norm(gramian_of(J * scale)), base, atol=1e-9, rtol=0)


DEGENERATE = {
    "zeros": np.zeros((4, 5)),
    "one_zero": np.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]),
    "identical": np.ones((5, 3)),
    "colinear": np.outer([1.0, 2.0, 0.5, 7.0], [1.0, -2.0, 3.0]),
    "opposite": np.outer([1.0, -1.0, 2.0, -3.0], [1.0, 1.0]),
    "huge": 1e30 * np.random.default_rng(1).standard_normal((6, 4)),
    "tiny": 1e-30 * np.random.default_rng(2).standard_normal((6, 4)),
    "mixed_1e30_1e-30": np.array([[1e30, 0.0], [0.0, 1e-30], [-1e30, 1e30]]),
    "more_tasks_than_dims": np.random.default_rng(3).standard_normal((100, 3)),
    "rank_one_100": np.outer(np.random.default_rng(4).uniform(-2, 2, 100), np.ones(7)),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
@pytest.mark.parametrize("method", ["active_set", "frank_wolfe", "away_frank_wolfe"])
def test_degenerate_inputs_give_finite_optimal_weights(name, method):
    J = DEGENERATE[name]
    M = gramian_of(J)
    a = min_norm(M, method=method).numpy()
    assert np.isfinite(a).all() and (a >= 0).all() and a.sum() == pytest.approx(1.0, abs=1e-12)
    if method == "active_set" and M.diagonal().max() > 0:
        assert kkt_gap(M.numpy(), a) <= 1e-9


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda T: st.lists(
            st.sampled_from([0.0, 1.0, -1.0, 1e-30, -1e-30, 1e30, -1e30, 1e-300, 3.0]),
            min_size=T * 2,
            max_size=T * 2,
        )
    ),
)
def test_fuzz_extreme_entries_never_nan(entries):
    J = np.array(entries, dtype=np.float64).reshape(-1, 2)
    M = gramian_of(J)
    if not torch.isfinite(M).all():  # 1e30² · 2 is fine in float64, but stay honest about the premise
        return
    a = min_norm(M).numpy()
    assert np.isfinite(a).all() and (a >= 0).all() and a.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_raises(bad):
    M = torch.eye(3)
    M[0, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        min_norm(M)


def test_float32_overflow_is_reported():
    J = torch.full((2, 4), 1e30)  # float32: J Jᵀ overflows to inf
    with pytest.raises(ValueError, match="float64"):
        min_norm(J @ J.T)
    assert torch.isfinite(min_norm(J.double() @ J.double().T)).all()


@pytest.mark.parametrize(
    "bad, msg",
    [
        (torch.ones(3), "square"),
        (torch.ones(2, 3), "square"),
        (torch.ones(0, 0), "empty"),
        (-torch.eye(2), "negative diagonal"),
    ],
)
def test_bad_shapes_and_values_raise(bad, msg):
    with pytest.raises(ValueError, match=msg):
        min_norm(bad)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="max_iter"):
        min_norm(torch.eye(2), max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        min_norm(torch.eye(2), tol=-1.0)
    with pytest.raises(ValueError, match="unknown method"):
        min_norm(torch.eye(2), method="simplex")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2x2"):
        min_norm_two(torch.eye(3))
    with pytest.raises(ValueError, match="agree on T"):
        min_norm_direction(torch.ones(2) / 2, torch.ones(3, 4))


def test_dtype_device_and_no_grad():
    J = torch.randn(5, 30, requires_grad=True)
    M = J @ J.T
    alpha = min_norm(M)
    assert alpha.dtype == torch.float32 and alpha.device == M.device and not alpha.requires_grad
    assert abs(float(alpha.sum()) - 1) < 1e-6
    alpha64 = min_norm(M.detach().double())
    torch.testing.assert_close(alpha, alpha64.float(), atol=1e-6, rtol=0)


def test_direction_and_value_helpers():
    rng = np.random.default_rng(5)
    J = torch.from_numpy(rng.standard_normal((4, 3, 5)))  # leading task dim, any trailing shape
    flat = J.reshape(4, -1)
    M = flat @ flat.T
    alpha = min_norm(M)
    d = min_norm_direction(alpha, J)
    assert d.shape == (3, 5)
    torch.testing.assert_close(d.reshape(-1), alpha @ flat)
    torch.testing.assert_close(min_norm_value(M, alpha), (d * d).sum())


@pytest.mark.parametrize("T", [3, 10, 30])
def test_frank_wolfe_variants_agree_with_active_set(T):
    J = make_jacobian(T, T, "correlated", 60, T)
    M = J @ J.T
    exact = normalized_objective(M, min_norm(torch.from_numpy(M)).numpy())
    afw = normalized_objective(M, min_norm(torch.from_numpy(M), method="away_frank_wolfe").numpy())
    fw = normalized_objective(M, min_norm(torch.from_numpy(M), method="frank_wolfe", max_iter=5000).numpy())
    assert afw == pytest.approx(exact, rel=1e-9, abs=1e-13)
    assert exact <= fw <= exact * (1 + 1e-3)


def test_frank_wolfe_first_step_by_hand():
    """Orthonormal g1, g2, g3: the best pair is (1/2, 1/2, 0); the line search towards e3 gives γ =
    (q - (Mα)_3) / (q - 2 (Mα)_3 + M_33) = (1/2) / (3/2) = 1/3, i.e. the optimum (1/3, 1/3, 1/3)."""
    M = torch.eye(3, dtype=torch.float64)
    alpha = min_norm(M, method="frank_wolfe", max_iter=1)
    sorted_alpha = alpha.sort().values
    torch.testing.assert_close(sorted_alpha, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_iteration_cap_still_returns_a_feasible_point():
    J = make_jacobian(0, 60, "scales", 10, 10)
    M = gramian_of(J)
    for method in ("active_set", "frank_wolfe", "away_frank_wolfe"):
        a = min_norm(M, max_iter=1, method=method).numpy()
        assert np.isfinite(a).all() and (a >= 0).all() and a.sum() == pytest.approx(1.0, abs=1e-12)


def test_indefinite_matrix_is_rejected():
    """Not a Gramian (symmetric, positive diagonal, but indefinite): the min-norm problem is not the
    one the caller meant, so it is refused instead of answered (issue: validate the Gramian)."""
    rng = np.random.default_rng(7)
    A = rng.standard_normal((8, 8))
    M = (A + A.T) / 2
    M[np.diag_indices(8)] = np.abs(M.diagonal()) + 0.1
    assert np.linalg.eigvalsh(M)[0] < -0.1
    with pytest.raises(ValueError, match="positive semi-definite"):
        min_norm(torch.from_numpy(M))


def test_float32_gramians_pass_the_structure_check():
    """``J Jᵀ`` in float32 (not bitwise symmetric, rank-deficient: tiny negative eigenvalues) is accepted."""
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        J = torch.randn(40, 5, generator=g)  # rank 5 of 40
        a = min_norm(J @ J.T)
        assert torch.isfinite(a).all()


def test_exhaustive_small_supports_match():
    """T = 4: enumerate every support S, solve the equality-constrained problem on S, keep the
    feasible candidates; the best one is the optimum (an independent brute force)."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        J = rng.standard_normal((4, 3))
        M = J @ J.T
        best = np.inf
        for k in range(1, 5):
            for S in itertools.combinations(range(4), k):
                S = list(S)
                K = np.zeros((k + 1, k + 1))
                K[:k, :k] = M[np.ix_(S, S)]
                K[:k, k] = K[k, :k] = 1.0
                sol = np.linalg.lstsq(K, np.r_[np.zeros(k), 1.0], rcond=None)[0][:k]
                if (sol >= -1e-12).all():
                    a = np.zeros(4)
                    a[S] = sol
                    best = min(best, a @ M @ a)
        ours = min_norm(torch.from_numpy(M)).numpy()
        assert ours @ M @ ours == pytest.approx(best, rel=1e-9, abs=1e-12)
