"""MWC scalarization + PHR augmented Lagrangian (moomtl.methods.mwc_alm)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from moomtl.methods.base import build_method
from moomtl.methods.mwc_alm import (
    MWCALM,
    mwc_constraints,
    mwc_scalarized,
    phr_augmented_lagrangian,
    phr_multiplier_update,
    phr_optimal_t,
    phr_residual,
)
from moomtl.models.base import MultiTaskModel
from moomtl.train.callbacks import TrainState
from moomtl.train.context import StepContext

D = torch.float64


# --- hand-computed values -------------------------------------------------------------------------------
def test_constraints_by_hand() -> None:
    f = torch.tensor([1.0, 2.0], dtype=D)
    k = torch.tensor([0.5, 0.25], dtype=D)
    # a = 0: Σ(f − a) = 3; s = (0.5·1.3, 0.25·2.3) = (0.65, 0.575); c = s − 0.3.
    c = mwc_constraints(f, torch.tensor(0.3, dtype=D), k, torch.zeros(2, dtype=D), epsilon=0.1)
    torch.testing.assert_close(c, torch.tensor([0.35, 0.275], dtype=D))
    # a = (0.5, 1): f − a = (0.5, 1), Σ = 1.5; s = (0.5·0.65, 0.25·1.15) = (0.325, 0.2875).
    s = mwc_scalarized(f, k, torch.tensor([0.5, 1.0], dtype=D), epsilon=0.1)
    torch.testing.assert_close(s, torch.tensor([0.325, 0.2875], dtype=D))


def test_scalarized_max_is_the_modified_tchebycheff_value() -> None:
    from moomtl.solvers.scalarizations import modified_tchebycheff

    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        f, k, a = (torch.rand(4, generator=gen, dtype=D) for _ in range(3))
        torch.testing.assert_close(
            mwc_scalarized(f, k, a, 0.01).max(), modified_tchebycheff(f, k, a, eps=0.01)
        )


def test_lagrangian_by_hand() -> None:
    t = torch.tensor(0.3, dtype=D)
    # Both active: λ + μc = (0.2 + 0.7, 0 + 0.55); L = 0.3 + ¼[(0.81 − 0.04) + (0.3025 − 0)].
    L = phr_augmented_lagrangian(t, torch.tensor([0.35, 0.275], dtype=D), torch.tensor([0.2, 0.0], dtype=D), 2.0)
    assert float(L) == pytest.approx(0.568125, abs=1e-12)
    # First inactive: λ + μc = (0.1 − 2, 0.5 + 0.4) → (0, 0.9); L = t + ¼[(0 − 0.01) + (0.81 − 0.25)].
    L = phr_augmented_lagrangian(t, torch.tensor([-1.0, 0.2], dtype=D), torch.tensor([0.1, 0.5], dtype=D), 2.0)
    assert float(L) == pytest.approx(0.3 + 0.1375, abs=1e-12)
    with pytest.raises(ValueError, match="μ must be > 0"):
        phr_augmented_lagrangian(t, torch.zeros(2), torch.zeros(2), 0.0)


def test_multiplier_update_and_residual_by_hand() -> None:
    lam = torch.tensor([0.5, 0.5, 0.0], dtype=D)
    c = torch.tensor([0.1, -1.0, -0.2], dtype=D)
    torch.testing.assert_close(phr_multiplier_update(lam, c, 2.0), torch.tensor([0.7, 0.0, 0.0], dtype=D))
    # max(c, −λ/μ) = (0.1, −0.25, 0) → residual 0.25 (λ_2 > 0 on an inactive constraint).
    assert float(phr_residual(c, lam, 2.0)) == pytest.approx(0.25)
    # A KKT pair: active constraints with λ > 0, inactive ones with λ = 0.
    assert float(phr_residual(torch.tensor([0.0, -3.0]), torch.tensor([0.4, 0.0]), 5.0)) == 0.0


# --- gradients: autograd vs closed form -----------------------------------------------------------------
finite = st.floats(-3.0, 3.0, allow_nan=False)
positive = st.floats(0.0, 2.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 4), data=st.data(), mu=st.floats(0.01, 50.0), eps=st.floats(0.0, 0.5),
    t=finite,
)
def test_gradient_of_lagrangian_matches_closed_form(
    m: int, data: st.DataObject, mu: float, eps: float, t: float
) -> None:
    vec = lambda s: torch.tensor(data.draw(st.lists(s, min_size=m, max_size=m)), dtype=D)  # noqa: E731
    f, k, a, lam = vec(finite).requires_grad_(), vec(positive), vec(finite), vec(positive)
    tt = torch.tensor(t, dtype=D, requires_grad=True)
    c = mwc_constraints(f, tt, k, a, eps)
    L = phr_augmented_lagrangian(tt, c, lam, mu)
    g_f, g_t = torch.autograd.grad(L, [f, tt])
    w = torch.clamp(lam + mu * c.detach(), min=0.0)  # ∂L/∂c_i
    # ∂c_i/∂f_j = k_i(δ_ij + ε), ∂c_i/∂t = −1.
    expected_f = (w * k) + eps * (w * k).sum()
    torch.testing.assert_close(g_f, expected_f, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(g_t, 1.0 - w.sum(), atol=1e-10, rtol=1e-10)


@settings(max_examples=80, deadline=None)
@given(m=st.integers(1, 5), data=st.data(), mu=st.floats(0.01, 100.0))
def test_optimal_t_is_the_exact_minimizer(m: int, data: st.DataObject, mu: float) -> None:
    from scipy.optimize import brentq

    vec = lambda s: torch.tensor(data.draw(st.lists(s, min_size=m, max_size=m)), dtype=D)  # noqa: E731
    s, lam = vec(finite), vec(positive)
    t_star = float(phr_optimal_t(s, lam, mu))
    # φ'(t) = 1 − Σ max(0, λ + μ(s − t)) is increasing; its root lies in [max b − 1/μ, max b], b = s + λ/μ
    # (bracket widened so rounding at an end point cannot hide the sign change).
    dphi = lambda t: 1.0 - float(torch.clamp(lam + mu * (s - t), min=0.0).sum())  # noqa: E731
    b_max = float((s + lam / mu).max())
    ref = brentq(dphi, b_max - 1.0 / mu - 1.0, b_max + 1.0, xtol=1e-14)
    assert t_star == pytest.approx(ref, abs=1e-9 * max(1.0, abs(ref)))
    # The weights max(0, λ + μc) at t* sum to 1 (∂L/∂t = 0) and L is not lower nearby.
    assert float(torch.clamp(lam + mu * (s - t_star), min=0.0).sum()) == pytest.approx(1.0, abs=1e-9)
    L = lambda t: float(phr_augmented_lagrangian(torch.tensor(t, dtype=D), s - t, lam, mu))  # noqa: E731
    for dt in (1e-3, -1e-3, 0.5, -0.5):
        assert L(t_star) <= L(t_star + dt) + 1e-12


# --- the method -----------------------------------------------------------------------------------------
class PointModel(MultiTaskModel):
    """A model that is just a point ``x`` (the toy problems' decision variable)."""

    def __init__(self, x0: list[float], task_names: tuple[str, ...] = ("f1", "f2")) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.tensor(x0, dtype=D))
        self.task_names = task_names

    def shared_modules(self) -> nn.Module:
        return self


def _step(method: MWCALM, model: nn.Module, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    return method.backward(losses, StepContext(model, losses))  # type: ignore[arg-type]


def test_t_initialized_from_first_batch_and_registered() -> None:
    model = PointModel([1.0, 2.0])
    method = MWCALM(preference=[0.6, 0.4], epsilon=0.1, t_update="optimizer")
    method.setup(model.task_names, model)
    assert any(p is method.t for p in method.parameters())
    losses = {n: torch.tensor(v, dtype=D, requires_grad=True) for n, v in (("f1", 2.0), ("f2", 1.0))}
    info = _step(method, model, losses)
    # s = (0.6·(2 + 0.3), 0.4·(1 + 0.3)) = (1.38, 0.52); t = max s, so c = (0, −0.86).
    assert float(method.t.detach()) == pytest.approx(1.38)
    assert info["mwc_alm/max_c"] == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(method.mean_constraints(), torch.tensor([0.0, -0.86], dtype=D), atol=1e-6, rtol=0)
    # With λ = (½, ½), μ = 1: w = max(0, λ + c) = (0.5, 0) → ∂L/∂t = 1 − 0.5.
    assert float(method.t.grad) == pytest.approx(0.5, abs=1e-6)
    given_t = MWCALM(preference=[0.6, 0.4], t_init=7.0, t_update="optimizer")
    given_t.setup(model.task_names, model)
    _step(given_t, model, {k: v.detach().requires_grad_() for k, v in losses.items()})
    assert float(given_t.t.detach()) == 7.0


def test_exact_t_update_solves_the_inner_problem_in_t() -> None:
    model = PointModel([1.0, 2.0])
    method = MWCALM(preference=[0.6, 0.4], epsilon=0.1)  # t_update="exact" by default
    method.setup(model.task_names, model)
    assert not method.t.requires_grad  # the trainer's optimizer leaves it alone
    assert any(p is method.t for p in method.parameters()) and "t" in method.state_dict()
    losses = {n: torch.tensor(v, dtype=D, requires_grad=True) for n, v in (("f1", 2.0), ("f2", 1.0))}
    _step(method, model, losses)
    # s = (1.38, 0.52), λ = (½, ½), μ = 1: b = s + λ/μ = (1.88, 1.02); one active: t = 1.88 − 1 = 0.88
    # (b_2 = 1.02 > 0.88 too, so two active: t = (1.88 + 1.02 − 1)/2 = 0.95).
    assert float(method.t.detach()) == pytest.approx(0.95)
    w = torch.clamp(method.multipliers + method.penalty * method.mean_constraints(), min=0.0)
    assert float(w.sum()) == pytest.approx(1.0)
    # ∂L/∂f = w⊙k + ε Σ(w⊙k) reaches the losses.
    G = w * method.k + 0.1 * (w * method.k).sum()
    torch.testing.assert_close(torch.stack([losses["f1"].grad, losses["f2"].grad]), G)


def _kkt_point(
    k: tuple[float, float], a: torch.Tensor, b: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimizer of max_i k_i[f_i + ε(f_1 + f_2)], f_1 = ||x − a||², f_2 = ||x − b||², and its multipliers.

    The minimizer lies on the segment [a, b] where the two scalarized objectives are equal (one
    increases, the other decreases along it); bisection on s ∈ [0, 1] finds it to machine precision.
    """
    d2 = float(((b - a) ** 2).sum())

    def gap(s: float) -> float:
        f1, f2 = s * s * d2, (1 - s) ** 2 * d2
        return k[0] * (f1 + eps * (f1 + f2)) - k[1] * (f2 + eps * (f1 + f2))

    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    x = a + lo * (b - a)
    # Stationarity λ_1 ∇s_1 + λ_2 ∇s_2 = 0 with λ_1 + λ_2 = 1 (∂L/∂t = 0).
    g1 = k[0] * (2 * (x - a) * (1 + eps) + 2 * eps * (x - b))
    g2 = k[1] * (2 * eps * (x - a) + 2 * (x - b) * (1 + eps))
    lam1 = float(-(g2 @ (g1 - g2)) / ((g1 - g2) @ (g1 - g2)))
    return x, torch.tensor([lam1, 1 - lam1], dtype=D)


@pytest.mark.parametrize("t_update", ["exact", "optimizer"])
@pytest.mark.parametrize(("k", "eps"), [((0.7, 0.3), 1e-4), ((0.2, 0.8), 1e-4), ((0.5, 0.5), 0.1)])
def test_alm_converges_to_the_pareto_point_of_the_preference(
    k: tuple[float, float], eps: float, t_update: str
) -> None:
    a, b = torch.tensor([0.0, 0.0], dtype=D), torch.tensor([2.0, 1.0], dtype=D)
    x_star, lam_star = _kkt_point(k, a, b, eps)
    model = PointModel([1.5, -1.0])
    method = MWCALM(preference=list(k), epsilon=eps, mu=1.0, rho=2.0, mu_max=10.0, t_update=t_update)  # type: ignore[arg-type]
    method.setup(model.task_names, model)
    # The trainer's loop: zero_grad → losses → method.backward → optimizer.step → events.
    trainable = [p for p in (*model.parameters(), *method.parameters()) if p.requires_grad]
    assert any(p is method.t for p in trainable) == (t_update == "optimizer")
    opt = torch.optim.SGD(trainable, lr=0.05)
    state = TrainState(model=model, optimizer=opt)
    for epoch in range(15):
        state.epoch = epoch
        for _ in range(100):
            opt.zero_grad()
            losses = {"f1": ((model.x - a) ** 2).sum(), "f2": ((model.x - b) ** 2).sum()}
            _step(method, model, losses)
            opt.step()
            state.step += 1
            method.on_step_end(state)
        method.on_epoch_end(state)
    hist = method.history
    assert len(hist) == 15
    assert all(min(h["lambda"]) >= 0 for h in hist)
    assert hist[0]["residual"] > 1e-3  # the first inner solve is not a KKT point (wrong λ) …
    assert hist[-1]["violation"] < 1e-6 and hist[-1]["residual"] < 1e-6  # … the last one is KKT
    assert [h["mu"] for h in hist[:5]] == [1.0, 2.0, 4.0, 8.0, 10.0]
    torch.testing.assert_close(model.x.detach(), x_star, atol=1e-6, rtol=0)
    torch.testing.assert_close(method.multipliers, lam_star, atol=1e-6, rtol=0)
    # At the optimum the scalarized objectives are equal (k1 f1 = k2 f2 up to the ε-term) and t equals them.
    f = torch.stack([((x_star - a) ** 2).sum(), ((x_star - b) ** 2).sum()])
    s = mwc_scalarized(f, torch.tensor(k, dtype=D), torch.zeros(2, dtype=D), eps)
    assert float(method.t.detach()) == pytest.approx(float(s[0]), abs=1e-6)
    assert float(k[0] * f[0]) == pytest.approx(float(k[1] * f[1]), abs=3 * eps + 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    seq=st.lists(st.lists(st.floats(-5.0, 5.0), min_size=3, max_size=3), min_size=1, max_size=12),
    mu=st.floats(0.01, 10.0), rho=st.floats(1.0, 3.0), lam0=st.floats(0.0, 2.0),
)
def test_multipliers_stay_nonnegative(seq: list[list[float]], mu: float, rho: float, lam0: float) -> None:
    """Random loss vectors and t, one outer update per step: λ ≥ 0 and equals the PHR update."""
    model = PointModel([0.0], task_names=("a", "b", "c"))
    method = MWCALM(preference=[0.5, 0.3, 0.2], mu=mu, rho=rho, mu_max=5 * mu, outer_every=1,
                    outer_unit="step", lambda_init=lam0, epsilon=0.01)
    method.setup(model.task_names, model)
    state = TrainState(model=model, optimizer=torch.optim.SGD(method.parameters(), lr=0.1))
    for values in seq:
        named = zip(model.task_names, values, strict=True)
        losses = {n: torch.tensor(v, dtype=D, requires_grad=True) for n, v in named}
        lam_before, mu_before = method.multipliers.clone(), float(method.penalty)
        _step(method, model, losses)
        c = method.mean_constraints()
        assert c is not None
        method.on_step_end(state)
        assert (method.multipliers >= 0).all()
        torch.testing.assert_close(method.multipliers, torch.clamp(lam_before + mu_before * c, min=0.0))
        assert float(method.penalty) == pytest.approx(min(rho * mu_before, 5 * mu))
    assert len(method.history) == len(seq)
    assert all(min(h["lambda"]) >= 0 for h in method.history)


def test_outer_schedule_epoch_and_step_modes() -> None:
    model = PointModel([0.0, 0.0])
    losses = lambda: {"f1": (model.x ** 2).sum() + 1, "f2": ((model.x - 1) ** 2).sum()}  # noqa: E731
    # Epoch mode, every 2 epochs; c̄ is the mean over the last epoch only.
    method = MWCALM(preference=[0.5, 0.5], outer_every=2)
    method.setup(model.task_names, model)
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    for epoch in range(4):
        state.epoch = epoch
        for _ in range(3):
            _step(method, model, losses())
        assert int(method.c_count) == 3
        method.on_epoch_end(state)
        assert int(method.c_count) == 0
    assert [h["epoch"] for h in method.history] == [1, 3]
    assert "mwc_alm/violation" in state.epoch_metrics and "mwc_alm/lambda_new/f1" in state.epoch_metrics
    # Step mode, every 4 steps; epoch ends do not reset the window.
    method = MWCALM(preference=[0.5, 0.5], outer_every=4, outer_unit="step")
    method.setup(model.task_names, model)
    for _ in range(10):
        _step(method, model, losses())
        method.on_step_end(state)
        method.on_epoch_end(state)
    assert len(method.history) == 2 and int(method.c_count) == 2
    assert method.outer_update() is not None and method.outer_update() is None  # nothing new measured


def test_state_dict_round_trip_keeps_multipliers_and_history() -> None:
    model = PointModel([0.3, 0.1])
    method = MWCALM(preference=[0.5, 0.5], outer_unit="step")
    method.setup(model.task_names, model)
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    for _ in range(3):
        _step(method, model, {"f1": (model.x ** 2).sum() + 2, "f2": ((model.x - 1) ** 2).sum()})
        method.on_step_end(state)
    sd = method.state_dict()
    assert {"t", "multipliers", "penalty", "c_sum", "c_count", "t_initialized", "k", "a"} <= set(sd)
    other = MWCALM(preference=[0.5, 0.5], outer_unit="step")
    other.setup(model.task_names, model)
    other.load_state_dict(sd)
    torch.testing.assert_close(other.multipliers, method.multipliers)
    assert float(other.penalty) == float(method.penalty) == 8.0
    assert other.history == method.history and len(other.history) == 3
    assert bool(other.t_initialized) and float(other.t.detach()) == float(method.t.detach())


def test_validation_and_registry() -> None:
    m = build_method("mwc_alm", preference=[0.1, 0.6, 0.3], mu=0.5)
    assert isinstance(m, MWCALM) and "preference=[0.1, 0.6, 0.3]" in repr(m)
    model = PointModel([0.0])
    with pytest.raises(ValueError, match="3 preferences for 1 tasks"):
        MWCALM(preference=[0.1, 0.6, 0.3]).setup(["a"], model)
    for bad in ({"preference": [-1.0, 1.0]}, {"preference": [1.0, 1.0], "reference": [0.0]},
                {"preference": [1.0], "rho": 0.5}, {"preference": [1.0], "mu": 0.0},
                {"preference": [1.0], "mu": 2.0, "mu_max": 1.0}, {"preference": [1.0], "outer_every": 0},
                {"preference": [1.0], "outer_unit": "batch"}, {"preference": [1.0], "epsilon": -1.0},
                {"preference": [1.0], "t_update": "adam"}):
        with pytest.raises(ValueError):
            MWCALM(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lambda_init"):
        MWCALM(preference=[1.0, 1.0], lambda_init=-1.0).setup(["a", "b"], model)
    with pytest.raises(ValueError, match="lambda_init needs 1 or 2"):
        MWCALM(preference=[1.0, 1.0], lambda_init=[0.1, 0.2, 0.3]).setup(["a", "b"], model)
    with pytest.raises(ValueError, match="preference: "):
        build_method("mwc_alm", preference=[0.0, 0.0])
    custom = MWCALM(preference=[1.0, 1.0], lambda_init=[0.2, 0.0])
    custom.setup(["a", "b"], model)
    assert custom.multipliers.tolist() == [0.2, 0.0]
    with pytest.raises(RuntimeError, match="setup"):
        losses = {"a": torch.tensor(1.0, requires_grad=True)}
        MWCALM(preference=[1.0]).backward(losses, StepContext(model, losses))


def test_trains_a_network_with_the_trainer() -> None:
    """End to end through the trainer on fabricated data: t, λ, μ are updated and logged."""
    from moomtl.data.base import DataSplits, MultiTaskTensors
    from moomtl.models.mdmtn import hps_multimnist
    from moomtl.train.trainer import Trainer

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (96, 2), generator=gen)
    data = MultiTaskTensors(x, y, ("left", "right"))
    splits = DataSplits(data, data.subset(16), data.subset(16), "fabricated")
    torch.manual_seed(0)
    model = hps_multimnist()
    method = MWCALM(preference=[0.8, 0.2])
    result = Trainer(model, method, optimizer="Adam", optimizer_kwargs={"lr": 1e-3}, epochs=2,
                     batch_size=32).fit(splits)
    assert len(method.history) == 2
    assert all(min(h["lambda"]) >= 0 for h in method.history)
    last = result.final
    assert math.isfinite(last["train/mwc_alm/t"]) and "mwc_alm/violation" in last
    assert last["mwc_alm/mu_used"] == 2.0 and float(method.penalty) == 4.0


# --- the sparsity objective -----------------------------------------------------------------------------
def _mdmtn_step(method: MWCALM, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from moomtl.models.mdmtn import mdmtn_multimnist

    torch.manual_seed(seed)
    model = mdmtn_multimnist()
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(4, 1, 28, 28, generator=gen), torch.randint(0, 10, (4, 2), generator=gen)
    method.setup(model.task_names, model)
    z = model.encode(x)
    out = model.decode(z, x)
    losses = {t: nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}
    method.backward(losses, StepContext(model, losses, z))
    return model, x, y


def test_sparsity_objective_has_real_gradients() -> None:
    from moomtl.sparsity.growl import growl_objective

    method = MWCALM(preference=[0.3, 0.4, 0.3], epsilon=0.1)
    model, x, y = _mdmtn_step(method)
    assert method.objective_names == ("sparsity", "left", "right")
    assert [g.name for g in method.sparsity_groups] == ["trunk.3", "trunk.7", "monitors.left.4", "monitors.right.4"]
    # Closed form: grad = Σ_j G_j ∇f_j with G = w⊙k + ε Σ(w⊙k), w = max(0, λ + μc).
    c = method.mean_constraints()
    assert c is not None
    w = torch.clamp(method.multipliers + method.penalty * c, min=0.0)
    G = (w * method.k) + method.epsilon * (w * method.k).sum()
    params = dict(model.named_parameters())
    out = model(x)
    f = [
        growl_objective(method.sparsity_groups),
        *(nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)),
    ]
    expected = torch.autograd.grad(sum(float(g) * fj for g, fj in zip(G, f, strict=True)), list(params.values()))
    for (name, p), e in zip(params.items(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, atol=1e-6, rtol=1e-5, msg=name)
    # f_0 reaches the regularized layers and only them (not input layers, not heads, not gates).
    f0 = growl_objective(method.sparsity_groups)
    g0 = dict(zip(params, torch.autograd.grad(f0, list(params.values()), allow_unused=True), strict=True))
    regularized = {f"{g.name}.weight" for g in method.sparsity_groups}
    for name, g in g0.items():
        assert (g is not None and bool(g.abs().sum() > 0)) == (name in regularized), name
    assert float(G[0]) > 0


def test_sparsity_objective_value_selection_and_errors() -> None:
    from moomtl.models.mdmtn import mdmtn_multimnist
    from moomtl.sparsity.grouping import regularized_groups
    from moomtl.sparsity.growl import growl_objective

    method = MWCALM(preference=[0.1, 0.5, 0.4], growl_weights="linear", regularize=["trunk"])
    model, x, y = _mdmtn_step(method)
    assert [g.name for g in method.sparsity_groups] == ["trunk.3", "trunk.7"]
    out = model(x)
    losses = {t: nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}
    info = method.backward(losses, StepContext(model, losses))
    ref = growl_objective(regularized_groups(model, ["trunk"]), "linear")
    assert info["mwc_alm/sparsity_objective"] == pytest.approx(float(ref.detach()), rel=1e-6)
    assert set(info) >= {"mwc_alm/lambda/sparsity", "mwc_alm/lambda/left", "mwc_alm/t", "mwc_alm/mu"}
    with pytest.raises(ValueError, match="no layer"):
        MWCALM(preference=[0.1, 0.5, 0.4], regularize=["nothing_here"]).setup(model.task_names, model)
    with pytest.raises(ValueError, match="GrOWL weight sequence"):
        MWCALM(preference=[0.1, 0.5, 0.4], growl_weights="cubic").setup(model.task_names, mdmtn_multimnist())
    # Without the extra preference entry there is no sparsity objective.
    plain = MWCALM(preference=[0.5, 0.4])
    plain.setup(model.task_names, model)
    assert plain.objective_names == ("left", "right") and plain.sparsity_groups == []


def test_dominant_sparsity_preference_shrinks_the_penalty() -> None:
    """k_0 ≫ k_1, k_2: a few optimizer steps on L lower Ω(W) (its gradient is real)."""
    from moomtl.models.mdmtn import hps_multimnist
    from moomtl.sparsity.growl import growl_objective

    torch.manual_seed(0)
    model = hps_multimnist()
    method = MWCALM(preference=[0.98, 0.01, 0.01])
    method.setup(model.task_names, model)
    opt = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16, 2), generator=gen)
    start = float(growl_objective(method.sparsity_groups).detach())
    for _ in range(30):
        opt.zero_grad()
        out = model(x)
        losses = {t: nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}
        method.backward(losses, StepContext(model, losses))
        opt.step()
    assert float(growl_objective(method.sparsity_groups).detach()) < 0.9 * start


@pytest.mark.parametrize("t_update", ["exact", "optimizer"])
def test_resume_from_checkpoint_is_bit_identical(tmp_path, t_update: str) -> None:
    """λ, μ, t, the accumulator and the outer history survive the trainer's checkpoint."""
    from moomtl.data.base import DataSplits, MultiTaskTensors
    from moomtl.models.mdmtn import hps_multimnist
    from moomtl.train.trainer import Trainer

    gen = torch.Generator().manual_seed(1)
    data = MultiTaskTensors(torch.randn(48, 1, 28, 28, generator=gen), torch.randint(0, 10, (48, 2), generator=gen),
                            ("left", "right"))
    splits = DataSplits(data, data.subset(8), data.subset(8), "fabricated")

    def run(epochs: int, out: str, resume: bool = False) -> tuple[MWCALM, list[dict]]:
        torch.manual_seed(0)
        method = MWCALM(preference=[0.1, 0.5, 0.4], outer_every=5, outer_unit="step", t_update=t_update)  # type: ignore[arg-type]
        trainer = Trainer(hps_multimnist(), method, optimizer="Adam", optimizer_kwargs={"lr": 1e-3},
                          epochs=epochs, batch_size=16, out_dir=tmp_path / out)
        return method, trainer.fit(splits, resume=resume).history

    full, hist_full = run(3, "full")
    run(2, "split")
    resumed, hist_resumed = run(3, "split", resume=True)
    assert len(full.history) == 1  # 9 steps, an outer update every 5; the split run stops with 1 step pending
    assert resumed.history == full.history and int(resumed.c_count) == int(full.c_count) == 4
    torch.testing.assert_close(resumed.multipliers, full.multipliers, rtol=0, atol=0)
    assert float(resumed.t.detach()) == float(full.t.detach())
    assert hist_resumed[-1]["mwc_alm/violation"] == hist_full[-1]["mwc_alm/violation"]
