"""Scalarization functions (values, gradients, limits) and the Chebyshev-family methods, including the
key claim: Tchebycheff reaches the concave part of a Pareto front that linear scalarization cannot."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from moomtl.methods import build_method
from moomtl.methods.chebyshev import (
    PBI,
    AugmentedTchebycheff,
    ModifiedTchebycheff,
    SmoothTchebycheff,
    Tchebycheff,
)
from moomtl.solvers import scalarizations as S
from moomtl.train.context import StepContext

D = torch.float64


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=D)


def value_and_grad(fn, f: torch.Tensor, *args, **kw) -> tuple[float, list[float]]:
    f = f.clone().requires_grad_(True)
    v = fn(f, *args, **kw)
    (g,) = torch.autograd.grad(v, f)
    return float(v.detach()), g.tolist()


# --- hand-computed values and gradients -------------------------------------------------------------
def test_linear_value_and_gradient():
    v, g = value_and_grad(S.linear, t(1.0, 3.0, 2.0), t(0.2, 0.3, 0.5))
    assert v == pytest.approx(0.2 + 0.9 + 1.0)
    assert g == pytest.approx([0.2, 0.3, 0.5])


def test_tchebycheff_value_and_gradient():
    # λ(f - z) = (0.2*0.5, 0.3*2.5, 0.5*1.0) = (0.1, 0.75, 0.5): task 1 is active.
    v, g = value_and_grad(S.tchebycheff, t(1.0, 3.0, 2.0), t(0.2, 0.3, 0.5), t(0.5, 0.5, 1.0))
    assert v == pytest.approx(0.75)
    assert g == pytest.approx([0.0, 0.3, 0.0])


def test_tchebycheff_tie_gives_a_subgradient():
    _, g = value_and_grad(S.tchebycheff, t(1.0, 1.0), t(0.5, 0.5))
    assert g == pytest.approx([0.25, 0.25])  # a convex combination of the two active gradients


def test_smooth_tchebycheff_value_and_gradient():
    f, lam, z, mu = t(1.0, 3.0), t(0.5, 0.5), t(0.0, 1.0), 0.5
    a = torch.tensor([0.5 * 1.0 / mu, 0.5 * 2.0 / mu], dtype=D)  # (1, 2)
    v, g = value_and_grad(S.smooth_tchebycheff, f, lam, z, mu)
    assert v == pytest.approx(mu * math.log(math.exp(1.0) + math.exp(2.0)))
    soft = torch.softmax(a, 0)
    assert g == pytest.approx((lam * soft).tolist())


def test_pbi_value_and_gradient():
    # f − z = (3, 1), u = (1, 1)/√2: d1 = 4/√2 = 2√2, residual (1, −1), d2 = √2.
    f, lam, z, theta = t(4.0, 3.0), t(2.0, 2.0), t(1.0, 2.0), 3.0
    v, g = value_and_grad(S.pbi, f, lam, z, theta)
    assert v == pytest.approx(2 * math.sqrt(2) + theta * math.sqrt(2))
    # ∂d1/∂f = u; ∂d2/∂f = (I − uuᵀ) r/||r|| = (1, −1)/√2.
    u = 1 / math.sqrt(2)
    assert g == pytest.approx([u + theta * u, u - theta * u])


def test_pbi_is_differentiable_on_the_ray():
    v, g = value_and_grad(S.pbi, t(2.0, 2.0), t(1.0, 1.0), None, 5.0)
    assert v == pytest.approx(2 * math.sqrt(2))
    assert all(math.isfinite(x) for x in g)


def test_augmented_tchebycheff_value_and_gradient():
    v, g = value_and_grad(S.augmented_tchebycheff, t(1.0, 3.0), t(0.5, 0.5), t(0.0, 1.0), 0.1)
    assert v == pytest.approx(1.0 + 0.1 * 3.0)  # max(0.5, 1.0) + 0.1 (1 + 2)
    assert g == pytest.approx([0.1, 0.6])


def test_modified_tchebycheff_value_and_gradient():
    # d = (1, 2), Σd = 3, ε = 0.1: terms 0.25 (1.3) = 0.325 and 0.75 (2.3) = 1.725 → task 1.
    v, g = value_and_grad(S.modified_tchebycheff, t(1.0, 3.0), t(0.25, 0.75), t(0.0, 1.0), 0.1)
    assert v == pytest.approx(1.725)
    assert g == pytest.approx([0.75 * 0.1, 0.75 * 1.1])


def test_augmentations_vanish_at_zero():
    f, lam, z = t(1.0, 3.0, 0.5), t(0.2, 0.3, 0.5), t(0.1, 0.2, 0.0)
    tch = S.tchebycheff(f, lam, z)
    assert S.augmented_tchebycheff(f, lam, z, 0.0) == pytest.approx(float(tch))
    assert S.modified_tchebycheff(f, lam, z, 0.0) == pytest.approx(float(tch))


def test_batched_rows_match_single_rows():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(7, 3, generator=g, dtype=D)
    lam, z = t(0.2, 0.3, 0.5), t(0.0, 0.1, 0.0)
    fns = [
        lambda x: S.linear(x, lam),
        lambda x: S.tchebycheff(x, lam, z),
        lambda x: S.smooth_tchebycheff(x, lam, z, 0.05),
        lambda x: S.pbi(x, lam, z, 2.0),
        lambda x: S.augmented_tchebycheff(x, lam, z, 0.1),
        lambda x: S.modified_tchebycheff(x, lam, z, 0.1),
    ]
    for fn in fns:
        batched = fn(f)
        assert batched.shape == (7,)
        assert torch.allclose(batched, torch.stack([fn(row) for row in f]))


def test_input_validation():
    with pytest.raises(ValueError, match="entries"):
        S.tchebycheff(t(1.0, 2.0), t(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="ideal"):
        S.tchebycheff(t(1.0, 2.0), t(0.5, 0.5), t(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="mu"):
        S.smooth_tchebycheff(t(1.0, 2.0), t(0.5, 0.5), mu=0.0)
    with pytest.raises(ValueError, match="theta"):
        S.pbi(t(1.0, 2.0), t(0.5, 0.5), theta=-1.0)
    with pytest.raises(ValueError, match="non-zero"):
        S.pbi(t(1.0, 2.0), t(0.0, 0.0))
    with pytest.raises(ValueError, match="rho"):
        S.augmented_tchebycheff(t(1.0, 2.0), t(0.5, 0.5), rho=-0.1)
    with pytest.raises(ValueError, match="eps"):
        S.modified_tchebycheff(t(1.0, 2.0), t(0.5, 0.5), eps=-0.1)


# --- STCH → TCH ---------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    f=st.lists(st.floats(-50, 50), min_size=2, max_size=6),
    seed=st.integers(0, 2**16),
    mu=st.floats(1e-4, 10.0),
)
def test_stch_is_sandwiched_between_tch_and_tch_plus_mu_log_t(f, seed, mu):
    ft = torch.tensor(f, dtype=D)
    lam = torch.rand(len(f), generator=torch.Generator().manual_seed(seed), dtype=D) + 1e-3
    lam = lam / lam.sum()
    tch = float(S.tchebycheff(ft, lam))
    stch = float(S.smooth_tchebycheff(ft, lam, mu=mu))
    assert tch - 1e-9 <= stch <= tch + mu * math.log(len(f)) + 1e-9


def test_stch_converges_to_tch_and_its_gradient_to_the_active_task():
    f, lam, z = t(1.0, 3.0, 2.0), t(0.2, 0.3, 0.5), t(0.5, 0.5, 1.0)
    tch = float(S.tchebycheff(f, lam, z))
    gaps = []
    for mu in (1.0, 0.1, 0.01, 1e-3, 1e-4):
        v, g = value_and_grad(S.smooth_tchebycheff, f, lam, z, mu)
        gaps.append(v - tch)
    # Non-increasing as μ ↓ (equal once exp(−gap/μ) underflows), within μ log T, and → 0.
    assert all(a >= b >= 0 for a, b in zip(gaps, gaps[1:], strict=False)) and gaps[0] > gaps[1]
    assert all(gap <= mu * math.log(3) for gap, mu in zip(gaps, (1.0, 0.1, 0.01, 1e-3, 1e-4), strict=True))
    assert gaps[-1] < 1e-4
    assert g == pytest.approx([0.0, 0.3, 0.0], abs=1e-6)


def test_stch_is_stable_for_large_losses_and_tiny_mu():
    v = S.smooth_tchebycheff(torch.tensor([1e4, 2e4]), torch.tensor([0.5, 0.5]), mu=1e-4)
    assert torch.isfinite(v) and float(v) == pytest.approx(1e4)


# --- methods -----------------------------------------------------------------------------------------
class Angle(nn.Module):
    """θ ∈ [0, π/2] with losses (sin θ, cos θ): a concave (non-convex) Pareto front, the quarter circle
    bulging away from the ideal point 0. Every θ is Pareto optimal."""

    def __init__(self, theta: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=D))

    def losses(self) -> dict[str, torch.Tensor]:
        return {"a": torch.sin(self.theta), "b": torch.cos(self.theta)}


def run_on_angle(method, theta0: float, steps: int = 400, lr: float = 0.2) -> float:
    model = Angle(theta0)
    method.setup(["a", "b"], model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        opt.zero_grad()
        losses = model.losses()
        method.backward(losses, StepContext(model, losses, step=step))
        opt.step()
        with torch.no_grad():  # projected gradient descent onto the feasible interval
            model.theta.clamp_(0.0, math.pi / 2)
    return float(model.theta.detach())


@pytest.mark.parametrize("lam1", [0.3, 0.5, 0.7])
def test_tchebycheff_reaches_the_concave_front_where_linear_cannot(lam1):
    lam = [lam1, 1 - lam1]
    target = math.atan(lam[1] / lam[0])  # λ1 sin θ = λ2 cos θ: the TCH optimum, an interior point
    for theta0 in (0.2, math.pi / 4 - 0.05, math.pi / 4 + 0.05, 1.3):
        # Linear scalarization: the objective is concave in θ, so gradient descent leaves the interior
        # and stops at an endpoint of the front (one task solved, the other at its worst).
        th_lin = run_on_angle(build_method("linear", weights=lam), theta0)
        assert min(math.sin(th_lin), math.cos(th_lin)) < 1e-9
        # Tchebycheff from the same start lands in the interior, on the point its preference asks for.
        # (a subgradient method: the step size bounds how far it zig-zags around the optimum)
        th_tch = run_on_angle(Tchebycheff(preference=lam), theta0, steps=800, lr=0.01)
        assert th_tch == pytest.approx(target, abs=0.02)
        assert 0.2 < math.sin(th_tch) < 0.95
    # Not an artefact of the optimizer: for *every* weight the linear minimizer over a dense grid of
    # the front is an endpoint, while TCH's minimizer is interior.
    grid = torch.linspace(0, math.pi / 2, 2001, dtype=D)
    front = torch.stack([torch.sin(grid), torch.cos(grid)], dim=1)
    for w1 in torch.linspace(0.01, 0.99, 99, dtype=D):
        w = torch.stack([w1, 1 - w1])
        i_lin = int(torch.argmin(S.linear(front, w)))
        assert i_lin in (0, len(grid) - 1)
        i_tch = int(torch.argmin(S.tchebycheff(front, w)))
        assert 0 < i_tch < len(grid) - 1


@pytest.mark.parametrize(
    "method",
    [
        SmoothTchebycheff(preference=[0.5, 0.5], mu=0.01),
        AugmentedTchebycheff(preference=[0.5, 0.5], rho=0.01),
        ModifiedTchebycheff(preference=[0.5, 0.5], eps=1e-3),
        PBI(preference=[0.5, 0.5], theta=2.0),
    ],
    ids=repr,
)
def test_tchebycheff_relatives_also_reach_the_middle_of_the_concave_front(method):
    th = run_on_angle(method, 0.3, steps=800, lr=0.01)
    assert th == pytest.approx(math.pi / 4, abs=0.03)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(4, 3)
        self.a = nn.Linear(3, 1)
        self.b = nn.Linear(3, 1)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.body(x))
        return {"a": (self.a(h) - 1).pow(2).mean(), "b": (self.b(h) + 2).pow(2).mean()}


@pytest.mark.parametrize(
    ("name", "fn", "kw"),
    [
        ("tch", S.tchebycheff, {}),
        ("stch", S.smooth_tchebycheff, {"mu": 0.3}),
        ("pbi", S.pbi, {"theta": 2.0}),
        ("aug_tch", S.augmented_tchebycheff, {"rho": 0.1}),
        ("mod_tch", S.modified_tchebycheff, {"eps": 0.1}),
    ],
)
def test_method_gradient_equals_backprop_of_the_scalarized_objective(name, fn, kw):
    """The one weighted backward pass (weights ∂g/∂L) gives exactly ∇θ g(L(θ)) (chain rule)."""
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    pref, ideal = [1.0, 3.0], [0.1, -0.2]
    model = TwoHeads()
    method = build_method(name, preference=pref, ideal=ideal, **kw)
    method.setup(["a", "b"], model)
    losses = model.losses(x)
    info = method.backward(losses, StepContext(model, losses))
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    lv = torch.stack(list(model.losses(x).values()))
    lam = torch.tensor([0.25, 0.75])
    fn(lv, lam, torch.tensor(ideal), **kw).backward()
    for g, p in zip(got, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-6)
    assert info["scalarized"] == pytest.approx(float(fn(lv.detach(), lam, torch.tensor(ideal), **kw)), rel=1e-6)
    assert set(info) >= {"weight/a", "weight/b", "scalarized"}


def test_tch_info_reports_active_task_and_implied_weights():
    m = Tchebycheff(preference=[1.0, 1.0])
    model = Angle(0.3)  # sin 0.3 < cos 0.3: task b is active
    m.setup(["a", "b"], model)
    losses = model.losses()
    info = m.backward(losses, StepContext(model, losses))
    assert info["active/a"] == 0.0 and info["active/b"] == 1.0
    assert info["weight/a"] == 0.0 and info["weight/b"] == pytest.approx(0.5)
    assert float(model.theta.grad) == pytest.approx(-0.5 * math.sin(0.3))


def test_preference_is_validated_and_normalized():
    m = build_method("tch", preference=[2.0, 6.0])
    m.setup(["a", "b"], None)
    assert m.pref.tolist() == pytest.approx([0.25, 0.75])
    u = build_method("stch")
    u.setup(["a", "b", "c"], None)
    assert u.pref.tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="non-negative"):
        build_method("tch", preference=[-1.0, 2.0])
    with pytest.raises(ValueError, match="expected 3 weights"):
        build_method("pbi", preference=[1.0, 1.0]).setup(["a", "b", "c"], None)
    with pytest.raises(ValueError, match="ideal"):
        build_method("tch", ideal="nadir")
    with pytest.raises(ValueError, match="ideal point has 3"):
        build_method("tch", ideal=[0.0, 0.0, 0.0]).setup(["a", "b"], None)
    with pytest.raises(ValueError, match="mu"):
        build_method("stch", mu=0.0)
    with pytest.raises(ValueError, match="margin"):
        build_method("tch", margin=-1.0)
    with pytest.raises(RuntimeError, match="setup"):
        Tchebycheff().weights(t(1.0, 2.0), None)
    assert "preference=[2.0, 6.0]" in repr(m)


def test_online_ideal_is_running_min_minus_margin_and_checkpointed():
    m = Tchebycheff(preference=[0.5, 0.5], ideal="online", margin=0.1)
    m.setup(["a", "b"], None)
    for f in ([3.0, 2.0], [2.5, 4.0], [2.8, 1.0]):
        z = m.current_ideal(torch.tensor(f))
    assert z.tolist() == pytest.approx([2.4, 0.9])
    # z is updated with the batch before use, so f − z ≥ margin > 0 for the current batch.
    w = m.weights(torch.tensor([2.45, 1.2]), None)  # terms 0.5·(0.05), 0.5·(0.3) → b active
    assert w.tolist() == pytest.approx([0.0, 0.5])
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)
    assert sd["running_min"].tolist() == pytest.approx([2.45, 1.0])
    fresh = Tchebycheff(preference=[0.5, 0.5], ideal="online", margin=0.1)
    fresh.setup(["a", "b"], None)
    fresh.load_state_dict(sd)
    assert fresh.current_ideal(torch.tensor([9.0, 9.0])).tolist() == pytest.approx([2.35, 0.9])
    # A fixed ideal is configuration, not state: it is not in the state dict.
    fixed = Tchebycheff(ideal=[0.0, 1.0])
    fixed.setup(["a", "b"], None)
    assert "ideal_point" not in fixed.state_dict() and "running_min" not in fixed.state_dict()


def test_registered_with_preference_param():
    for name in ("tch", "stch", "pbi", "aug_tch", "mod_tch"):
        cls = type(build_method(name))
        assert cls.preference_param == "preference"
        assert cls.description
