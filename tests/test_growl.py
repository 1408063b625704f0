import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from moomtl.sparsity.callbacks import GrOWLProx, cap_zero_rows
from moomtl.sparsity.grouping import RegularizedGroup
from moomtl.sparsity.growl import (
    group_lasso_prox,
    growl_objective,
    growl_penalty,
    growl_prox,
    growl_weights,
    l1_prox,
    validate_theta,
)
from moomtl.train.callbacks import TrainState


def growl_cvx(X: cp.Expression, theta: np.ndarray) -> cp.Expression:
    """Σ_i θ_i ||x_[i]|| = Σ_k (θ_k − θ_{k+1}) · (sum of the k largest row norms), θ_{n+1} = 0: a
    non-negative combination of convex functions when θ is non-increasing."""
    norms = cp.norm(X, 2, axis=1)
    diffs = theta - np.append(theta[1:], 0.0)
    return sum(float(d) * cp.sum_largest(norms, k + 1) for k, d in enumerate(diffs) if d > 0)


def prox_cvx(V: np.ndarray, theta: np.ndarray, step: float) -> np.ndarray:
    X = cp.Variable(V.shape)
    pen = growl_cvx(X, theta)
    obj = 0.5 * cp.sum_squares(X - V) + (step * pen if not isinstance(pen, int) else 0)
    cp.Problem(cp.Minimize(obj)).solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return X.value


@st.composite
def prox_problems(draw):
    n = draw(st.integers(1, 5))
    d = draw(st.integers(1, 3))
    vals = st.floats(-3, 3, allow_nan=False, allow_infinity=False)
    V = np.array(draw(st.lists(vals, min_size=n * d, max_size=n * d))).reshape(n, d)
    theta = np.sort(np.array(draw(st.lists(st.floats(0, 2), min_size=n, max_size=n))))[::-1].copy()
    step = draw(st.floats(0.0, 2.0))
    return V, theta, step


@settings(max_examples=40, deadline=None)
@given(prox_problems())
def test_prox_matches_convex_solver(problem) -> None:
    V, theta, step = problem
    ours = growl_prox(torch.from_numpy(V), torch.from_numpy(theta), step).numpy()
    ref = prox_cvx(V, theta, step)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


@settings(max_examples=30, deadline=None)
@given(prox_problems())
def test_prox_objective_not_beaten_by_perturbations(problem) -> None:
    # Independent of any solver: the prox minimizes ½||X − V||² + step·Ω(X).
    V, theta, step = problem
    Vt, th = torch.from_numpy(V), torch.from_numpy(theta)

    def obj(X: torch.Tensor) -> float:
        return float(0.5 * ((X - Vt) ** 2).sum() + step * growl_penalty(X, th))

    P = growl_prox(Vt, th, step)
    g = torch.Generator().manual_seed(0)
    best = obj(P)
    for scale in (1e-1, 1e-3):
        for _ in range(20):
            assert obj(P + scale * torch.randn(P.shape, generator=g, dtype=P.dtype)) >= best - 1e-12


def test_constant_theta_is_group_soft_threshold() -> None:
    g = torch.Generator().manual_seed(1)
    V = torch.randn(20, 4, generator=g, dtype=torch.float64)
    lam = 1.3
    torch.testing.assert_close(growl_prox(V, torch.full((20,), lam, dtype=torch.float64)), group_lasso_prox(V, lam))
    torch.testing.assert_close(growl_prox(V, torch.full((20,), 0.5, dtype=torch.float64), 2.6),
                               group_lasso_prox(V, lam))


@pytest.mark.parametrize("norm_scale", [0.2, 1.0, 5.0])
def test_single_row_is_l2_prox(norm_scale: float) -> None:
    v = torch.tensor([[3.0, -4.0]], dtype=torch.float64) * norm_scale  # ||v|| = 5·scale
    theta, step = torch.tensor([2.0], dtype=torch.float64), 0.5
    expected = v * max(0.0, 1 - step * 2.0 / (5 * norm_scale))
    torch.testing.assert_close(growl_prox(v, theta, step), expected)


def test_zero_rows_stay_zero_without_nan() -> None:
    V = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    out = growl_prox(V, growl_weights(3, "linear").float(), 0.1)
    assert torch.isfinite(out).all()
    assert (out[[0, 2]] == 0).all()
    out = growl_prox(torch.zeros(4, 3), growl_weights(4), 1.0)
    assert torch.equal(out, torch.zeros(4, 3))


def test_prox_is_permutation_equivariant_and_shrinks() -> None:
    g = torch.Generator().manual_seed(2)
    V = torch.randn(30, 5, generator=g, dtype=torch.float64)
    theta = growl_weights(30, "oscar", 0.1, 0.02)
    perm = torch.randperm(30, generator=g)
    P = growl_prox(V, theta, 0.7)
    torch.testing.assert_close(growl_prox(V[perm], theta, 0.7), P[perm])
    assert bool((P.norm(dim=1) <= V.norm(dim=1) + 1e-12).all())
    # Each row keeps its direction: P_i = c_i V_i with 0 ≤ c_i ≤ 1.
    cos = (P * V).sum(1) / (V.norm(dim=1) ** 2)
    torch.testing.assert_close(P, cos.unsqueeze(1) * V)


def test_prox_on_ties_gives_equal_norms() -> None:
    # Two rows of equal norm and distinct θ are pooled: the result cannot depend on the tie order.
    V = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    out = growl_prox(V, torch.tensor([0.6, 0.2], dtype=torch.float64))
    torch.testing.assert_close(out.norm(dim=1), torch.tensor([0.6, 0.6], dtype=torch.float64))


def test_penalty_value_and_gradient() -> None:
    W = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])
    assert float(growl_penalty(W, [2.0, 1.0, 1.0])) == pytest.approx(11.0)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    theta = growl_weights(6, "ramp", 0.5, 0.3)
    assert torch.autograd.gradcheck(lambda x: growl_penalty(x, theta), (X,))
    # Closed form: row i's gradient is θ_rank(i) · w_i / ||w_i||.
    growl_penalty(X, theta).backward()
    rank = torch.argsort(torch.argsort(X.detach().norm(dim=1), descending=True))
    expected = theta[rank].unsqueeze(1) * X.detach() / X.detach().norm(dim=1, keepdim=True)
    torch.testing.assert_close(X.grad, expected)


def test_penalty_gradient_is_zero_on_zero_rows() -> None:
    X = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    growl_penalty(X, [1.0, 0.5]).backward()
    assert torch.equal(X.grad, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_objective_sums_groups_and_reaches_parameters() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Conv2d(2, 3, 3)
    groups = [RegularizedGroup("a", a), RegularizedGroup("b", b)]
    total = growl_objective(groups, "linear")
    expected = sum(growl_penalty(g.rows(), growl_weights(g.n_rows, "linear").float()) for g in groups)
    torch.testing.assert_close(total, expected)
    total.backward()
    assert a.weight.grad is not None and a.weight.grad.abs().sum() > 0
    assert b.weight.grad is not None and b.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least one group"):
        growl_objective([])


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("spike", [1.0, 0.2, 0.2, 0.2]),
        ("linear", [0.8 + 0.2 * 3 / 4, 0.8 + 0.2 * 2 / 4, 0.8 + 0.2 / 4, 0.8]),
        ("oscar", [0.8 + 0.6, 0.8 + 0.4, 0.8 + 0.2, 0.8]),
        ("ramp", [0.8 + 0.4, 0.8 + 0.2, 0.2, 0.2]),
    ],
)
def test_weight_sequences(kind: str, expected: list[float]) -> None:
    theta = growl_weights(4, kind)
    torch.testing.assert_close(theta, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["spike", "linear", "oscar", "ramp"])
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_weight_sequences_are_valid(kind: str, n: int) -> None:
    theta = growl_weights(n, kind, 0.3, 0.1)
    assert theta.shape == (n,)
    validate_theta(theta, n)


def test_weight_and_theta_validation() -> None:
    with pytest.raises(ValueError, match="unknown GrOWL weight kind"):
        growl_weights(3, "cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive integer"):
        growl_weights(0)
    with pytest.raises(ValueError, match="beta2"):
        growl_weights(3, beta2=-1.0)
    with pytest.raises(ValueError, match="non-increasing"):
        validate_theta([1.0, 2.0])
    with pytest.raises(ValueError, match="≥ 0"):
        validate_theta([1.0, -0.5])
    with pytest.raises(ValueError, match="3 groups"):
        validate_theta([1.0, 0.5], 3)
    with pytest.raises(ValueError, match="NaN"):
        validate_theta([float("nan")])
    with pytest.raises(ValueError, match="2-D"):
        growl_prox(torch.zeros(3), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="step"):
        growl_prox(torch.zeros(1, 3), [1.0], step=-1.0)
    with pytest.raises(ValueError, match="non-increasing"):
        growl_prox(torch.ones(2, 3), [0.1, 0.2])


def test_baseline_proxes() -> None:
    torch.testing.assert_close(l1_prox(torch.tensor([-2.0, 0.5, 1.5, 0.0]), 1.0),
                               torch.tensor([-1.0, 0.0, 0.5, 0.0]))
    out = group_lasso_prox(torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]), 1.0)
    torch.testing.assert_close(out, torch.tensor([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="lam"):
        l1_prox(torch.zeros(2), -1.0)


# --- the prox callback ------------------------------------------------------------------------------


def test_callback_threshold_scales_with_learning_rate() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    group = RegularizedGroup("lin", lin)
    before = group.rows().detach().clone()
    opt = torch.optim.SGD(lin.parameters(), lr=0.05)
    cb = GrOWLProx([group], "linear", strength=2.0)
    cb.on_step_end(TrainState(model=lin, optimizer=opt))
    expected = growl_prox(before, growl_weights(6, "linear"), 0.05 * 2.0)
    torch.testing.assert_close(group.rows().detach(), expected)
    # A per-parameter-group LR is honoured.
    lin2 = nn.Linear(6, 4)
    g2 = RegularizedGroup("lin2", lin2)
    before2 = g2.rows().detach().clone()
    opt2 = torch.optim.SGD([{"params": [lin2.bias]}, {"params": [lin2.weight], "lr": 0.3}], lr=0.01)
    GrOWLProx([g2], "spike").on_step_end(TrainState(model=lin2, optimizer=opt2))
    torch.testing.assert_close(g2.rows().detach(), growl_prox(before2, growl_weights(6, "spike"), 0.3))


def test_proximal_gradient_with_callback_solves_regularized_least_squares() -> None:
    # SGD (full batch, lr = 1/L) + GrOWLProx is proximal gradient descent on f + s·Ω: it must reach
    # the minimizer computed by cvxpy.
    g = torch.Generator().manual_seed(4)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    W_true = torch.tensor([[1.0, -1.0], [1.0, -1.0], [0.0, 0.0], [0.0, 0.0], [0.5, 2.0]], dtype=torch.float64)
    Y = X @ W_true + 0.1 * torch.randn(40, 2, generator=g, dtype=torch.float64)
    lin = nn.Linear(5, 2, bias=False).double()
    group = RegularizedGroup("lin", lin)
    theta, s = growl_weights(5, "oscar", 2.0, 1.0), 3.0
    lr = 1.0 / float(torch.linalg.matrix_norm(X, 2) ** 2)
    opt = torch.optim.SGD(lin.parameters(), lr=lr)
    cb = GrOWLProx([group], lambda n: theta, strength=s)
    state = TrainState(model=lin, optimizer=opt)
    for _ in range(3000):
        opt.zero_grad()
        (0.5 * ((lin(X) - Y) ** 2).sum()).backward()
        opt.step()
        cb.on_step_end(state)
    Wt = cp.Variable((5, 2))
    obj = 0.5 * cp.sum_squares(X.numpy() @ Wt - Y.numpy()) + s * growl_cvx(Wt, theta.numpy())
    cp.Problem(cp.Minimize(obj)).solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(group.rows().detach().numpy(), Wt.value, atol=1e-4)
    assert cb.last_zero_fraction["lin"] == pytest.approx(float((np.abs(Wt.value).sum(1) < 1e-6).mean()))


def test_zero_cap_keeps_largest_rows_deterministically() -> None:
    before = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.5, 0.0]])
    after = torch.zeros(5, 2)
    # At most ⌊0.4·5⌋ = 2 zero rows: restore the three largest newly zeroed rows (norms 3, 2, 1).
    out = cap_zero_rows(before, after, 0.4)
    assert torch.equal(out, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(cap_zero_rows(before, after, 0.4), out)  # no randomness
    assert torch.equal(cap_zero_rows(before, after, 1.0), after)
    # Rows that were already zero cannot be restored: the cap is then not reachable.
    assert int((cap_zero_rows(before, after, 0.0) == 0).all(1).sum()) == 1


def test_callback_cap_limits_zero_fraction() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(10, 3)
    group = RegularizedGroup("lin", lin)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    cb = GrOWLProx([group], "spike", strength=100.0, max_zero_fraction=0.3)  # would zero every row
    before = group.rows().detach().clone()
    cb.on_step_end(TrainState(model=lin, optimizer=opt))
    rows = group.rows().detach()
    zero = (rows == 0).all(1)
    assert int(zero.sum()) == 3 and cb.last_zero_fraction["lin"] == pytest.approx(0.3)
    kept = (~zero).nonzero().flatten()
    assert set(kept.tolist()) == set(torch.argsort(before.norm(dim=1), descending=True)[:7].tolist())


def test_callback_validation() -> None:
    g = RegularizedGroup("lin", nn.Linear(3, 2))
    with pytest.raises(ValueError, match="strength"):
        GrOWLProx([g], strength=-1.0)
    with pytest.raises(ValueError, match="unknown GrOWL"):
        GrOWLProx([g], "cubic")
    with pytest.raises(ValueError, match="1 groups"):
        GrOWLProx([g], [torch.ones(3), torch.ones(3)])
    with pytest.raises(ValueError, match="non-increasing"):
        GrOWLProx([g], [torch.tensor([0.1, 0.2, 0.3])])
    with pytest.raises(ValueError, match="max_zero_fraction"):
        GrOWLProx([g], max_zero_fraction=1.5)
    with pytest.raises(ValueError, match="at least one group"):
        GrOWLProx([])
