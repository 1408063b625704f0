"""Baselines: PCGrad, CAGrad, Kendall uncertainty weighting, GradNorm, RLW and RGW, each on a
hand-computed or brute-force reference."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from moomtl.methods import build_method
from moomtl.methods.cagrad import cagrad_coefficients, cagrad_dual_weights, cagrad_objective
from moomtl.methods.gradnorm import gradnorm_weight_grad
from moomtl.methods.pcgrad import pcgrad_coefficients
from moomtl.methods.random_weighting import DISTRIBUTIONS, sample_simplex_weights
from moomtl.models.base import HardParameterSharing, MultiTaskModel
from moomtl.train.callbacks import TrainState
from moomtl.train.context import StepContext


class Probe(MultiTaskModel):
    """A shared vector θ and linear task losses ``L_t = g_t·θ``: task gradients are exactly ``g_t``."""

    def __init__(self, grads: Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(grads.shape[1], dtype=torch.float64))
        self.register_buffer("g", grads.to(torch.float64))
        self.task_names = tuple(f"t{i}" for i in range(grads.shape[0]))

    def encode(self, x: Tensor) -> Tensor:
        return self.theta.expand(x.shape[0], -1)

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        m = z.mean(0)
        return {t: m @ self.g[i] for i, t in enumerate(self.task_names)}

    def shared_modules(self) -> nn.Module:
        return self


def _run(method_name: str, grads: Tensor, **kw) -> tuple[dict[str, float], Tensor]:
    model = Probe(torch.as_tensor(grads, dtype=torch.float64))
    method = build_method(method_name, **kw)
    method.setup(model.task_names, model)
    x = torch.zeros(2, 1)
    z = model.encode(x)
    losses = model.decode(z, x)
    info = method.backward(losses, StepContext(model, losses, z))
    return info, model.theta.grad.clone()


# --- PCGrad ----------------------------------------------------------------------------------------
def test_pcgrad_on_two_conflicting_2d_gradients():
    # g1·g2 = -1: g1' = g1 + ½ g2 = (0.5, 0.5), g2' = g2 + g1 = (0, 1), update (0.5, 1.5).
    _, d = _run("pcgrad", torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    torch.testing.assert_close(d, torch.tensor([0.5, 1.5], dtype=torch.float64))
    # Without conflict PCGrad is the plain sum.
    _, d = _run("pcgrad", torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(d, torch.tensor([2.0, 1.0], dtype=torch.float64))


def _pcgrad_reference(jac: np.ndarray, orders: list[list[int]]) -> np.ndarray:
    """Paper's Algorithm 1 on explicit vectors."""
    out = []
    for i, order in enumerate(orders):
        gi = jac[i].copy()
        for j in order:
            dot = gi @ jac[j]
            if dot < 0:
                gi = gi - dot / (jac[j] @ jac[j]) * jac[j]
        out.append(gi)
    return np.sum(out, axis=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_pcgrad_coefficients_match_explicit_projections(n_tasks, dim, seed):
    rng = np.random.default_rng(seed)
    jac = rng.standard_normal((n_tasks, dim))
    orders = [[j for j in rng.permutation(n_tasks) if j != i] for i in range(n_tasks)]
    coef = pcgrad_coefficients(torch.from_numpy(jac @ jac.T), orders).numpy()
    np.testing.assert_allclose(coef.sum(0) @ jac, _pcgrad_reference(jac, orders), atol=1e-10)
    if n_tasks == 2 and jac[0] @ jac[1] < 0:
        projected = coef @ jac  # each projected gradient is orthogonal to the other task's
        assert abs(projected[0] @ jac[1]) < 1e-9 and abs(projected[1] @ jac[0]) < 1e-9


def test_pcgrad_random_order_is_seeded_and_checkpointed():
    a, b = build_method("pcgrad", seed=5), build_method("pcgrad", seed=5)
    assert a.random_orders(6) == b.random_orders(6)
    state = _roundtrip(a.state_dict())
    c = build_method("pcgrad", seed=0)
    c.load_state_dict(state)
    assert c.random_orders(6) == a.random_orders(6)
    assert build_method("pcgrad", seed=6).random_orders(6) != a.random_orders(6)


# --- CAGrad ----------------------------------------------------------------------------------------
def test_cagrad_with_c0_is_the_mean_gradient():
    g = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.0], [0.5, -3.0, 1.0]])
    _, d = _run("cagrad", g, c=0.0)
    torch.testing.assert_close(d, g.mean(0).double())


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10), st.floats(0.05, 2.0), st.integers(0, 2**31 - 1))
def test_cagrad_dual_beats_a_brute_force_grid_for_two_tasks(dim, c, seed):
    rng = np.random.default_rng(seed)
    jac = rng.standard_normal((2, dim)) * rng.uniform(0.1, 10, size=(2, 1))
    m = jac @ jac.T
    w = cagrad_dual_weights(m, c)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    p = np.linspace(0, 1, 20001)
    ws = np.stack([p, 1 - p], axis=1)
    g0_norm = np.sqrt(np.full(2, 0.5) @ m @ np.full(2, 0.5))
    quad = np.einsum("ij,jk,ik->i", ws, m, ws).clip(0)
    grid_values = ws @ m @ np.full(2, 0.5) + c * g0_norm * np.sqrt(quad)
    grid = grid_values.min()
    assert cagrad_objective(ws[7], m, c) == pytest.approx(grid_values[7])
    scale = float(np.abs(m).max())
    assert cagrad_objective(w, m, c) <= grid + 1e-9 * scale


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 8), st.integers(2, 12), st.floats(0.1, 1.5), st.integers(0, 2**31 - 1))
@example(n_tasks=3, dim=2, c=1.5, seed=1)  # Pareto stationary with c ≥ 1: d = 0 is optimal
@example(n_tasks=5, dim=2, c=0.5, seed=4272)  # rank-deficient: SLSQP alone missed by 3e-5 relative
def test_cagrad_matches_an_socp_and_strong_duality(n_tasks, dim, c, seed):
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(seed)
    jac = rng.standard_normal((n_tasks, dim)) + rng.standard_normal(dim)  # correlated tasks
    m = jac @ jac.T
    b = np.full(n_tasks, 1.0 / n_tasks)
    g0 = b @ jac
    w_var = cp.Variable(n_tasks)
    prob = cp.Problem(cp.Minimize(w_var @ (jac @ g0) + c * np.linalg.norm(g0) * cp.norm(jac.T @ w_var)),
                      [w_var >= 0, cp.sum(w_var) == 1])
    prob.solve()
    w = cagrad_dual_weights(m, c)
    ours = cagrad_objective(w, m, c)
    assert ours <= prob.value + 1e-6 * max(1.0, abs(prob.value))
    # Strong duality: the primal direction d* (before rescaling) attains min_t g_t·d* = F(w*), and d*
    # lies on the ball ‖d − g0‖ = c‖g0‖.
    v = cagrad_coefficients(torch.from_numpy(m), c, rescale=0).numpy()
    d = v @ jac
    scale = float(np.abs(m).max())
    if np.linalg.norm(w @ jac) > 1e-6:
        assert (jac @ d).min() == pytest.approx(ours, abs=1e-9 * scale)
        assert np.linalg.norm(d - g0) == pytest.approx(c * np.linalg.norm(g0), rel=1e-6)
    elif c >= 1:  # 0 is in the convex hull and in the ball: no direction improves every task
        assert np.abs(d).max() == 0.0
    # Random points of the ball do no better than d* (it maximizes the worst improvement).
    for _ in range(50):
        u = rng.standard_normal(dim)
        cand = g0 + c * np.linalg.norm(g0) * rng.uniform() ** (1 / dim) * u / np.linalg.norm(u)
        assert (jac @ cand).min() <= (jac @ d).min() + 1e-8


def test_cagrad_rescaling_and_degenerate_input():
    m = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # g2 = -g1: mean gradient 0
    torch.testing.assert_close(cagrad_coefficients(m, 0.5), torch.tensor([0.4, 0.4], dtype=torch.float64))
    assert torch.isfinite(cagrad_coefficients(torch.zeros(3, 3), 0.5)).all()
    v0 = cagrad_coefficients(torch.eye(3), 0.5, rescale=0)
    torch.testing.assert_close(cagrad_coefficients(torch.eye(3), 0.5, rescale=1), v0 / 1.25)
    torch.testing.assert_close(cagrad_coefficients(torch.eye(3), 0.5, rescale=2), v0 / 1.5)
    with pytest.raises(ValueError, match="c must be"):
        build_method("cagrad", c=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        cagrad_coefficients(torch.full((2, 2), float("nan")), 0.5)


# --- Kendall ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("variant", "c", "r"), [("simple", 1.0, 1.0), ("regression", 0.5, 0.5),
                                                 ("classification", 1.0, 0.5)])
def test_kendall_gradients_of_log_variances_and_model(variant, c, r):
    g = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    model = Probe(g)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([0.5, 0.25]))  # losses g·θ = (1.0, 1.25)
    method = build_method("kendall", variant=variant, init=0.3)
    method.setup(model.task_names, model)
    with torch.no_grad():
        method.log_vars.copy_(torch.tensor([0.3, -0.7]))
    x = torch.zeros(1, 1)
    z = model.encode(x)
    losses = model.decode(z, x)
    info = method.backward(losses, StepContext(model, losses, z))
    s = torch.tensor([0.3, -0.7], dtype=torch.float64)  # the log-variances take the (float64) model's dtype
    lv = torch.tensor([1.0, 1.25], dtype=torch.float64)
    # d/ds_t [c e^{-s_t} L_t + r s_t] = r − c e^{-s_t} L_t
    torch.testing.assert_close(method.log_vars.grad, r - c * torch.exp(-s) * lv)
    weights = c * torch.exp(-s)
    torch.testing.assert_close(model.theta.grad, weights @ g.double())
    assert info["weight/t0"] == pytest.approx(float(weights[0]))
    with pytest.raises(ValueError, match="variant"):
        build_method("kendall", variant="poisson")


# --- GradNorm --------------------------------------------------------------------------------------
def _tiny_hps(n_tasks: int = 3) -> HardParameterSharing:
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.Tanh()).double()
    heads = {f"t{i}": nn.Linear(5, 3).double() for i in range(n_tasks)}
    return HardParameterSharing(enc, heads)


def _gradnorm_reference(model, losses, w, initial, alpha):
    """L_grad with the double backward of the paper, for the gradient w.r.t. w."""
    w = w.clone().requires_grad_(True)
    W = model.encoder[2].weight
    norms = torch.stack([
        torch.autograd.grad(w[i] * losses[t], W, retain_graph=True, create_graph=True)[0].norm()
        for i, t in enumerate(model.task_names)
    ])
    lv = torch.stack([losses[t] for t in model.task_names]).detach()
    ratio = lv / initial
    target = (norms.mean() * (ratio / ratio.mean()) ** alpha).detach()
    return torch.autograd.grad((norms - target).abs().sum(), w)[0]


def gradnorm_step(model, method, opt, x, y, step: int, first):
    """One GradNorm step up to the method's backward: ``(w_before, first, ref)`` with ``ref`` the paper's
    double-backward gradient of the GradNorm loss w.r.t. the weights (``first``: the step-0 losses)."""
    opt.zero_grad(set_to_none=True)
    z = model.encode(x)
    out = model.decode(z, x)
    losses = {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}
    w_before = method.loss_weights.detach().clone()
    if first is None:
        first = torch.tensor([float(losses[t].detach()) for t in model.task_names])
    ref = _gradnorm_reference(model, losses, w_before.double(), first.double(), 1.5)
    method.backward(losses, StepContext(model, losses, z, step=step))
    return w_before, first, ref


def test_gradnorm_weight_gradient_and_update_on_a_tiny_model():
    model = _tiny_hps()
    method = build_method("gradnorm", alpha=1.5)
    method.setup(model.task_names, model)
    assert method.layer_name == "encoder.2.weight"  # last shared weight matrix, not its bias
    opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.1)
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16, 3))
    first = None
    for step in range(3):
        w_before, first, ref = gradnorm_step(model, method, opt, x, y, step, first)
        torch.testing.assert_close(method.initial_losses, first.to(method.initial_losses))
        torch.testing.assert_close(method.loss_weights.grad.double(), ref, rtol=1e-5, atol=1e-7)
        opt.step()
        method.on_step_end(TrainState(model=model, optimizer=opt))
        expected = (w_before - 0.1 * method.loss_weights.grad).clamp_min(0)
        expected = expected * 3 / expected.sum()
        torch.testing.assert_close(method.loss_weights.detach(), expected)
        assert method.loss_weights.sum().item() == pytest.approx(3.0)
        x = x + 0.05 * torch.randn_like(x)
    assert not torch.equal(method.loss_weights.detach(), torch.ones(3))


def test_gradnorm_closed_form_hand_case_and_validation():
    # G = (1, 3), mean 2, equal training rates: target 2 for both → grad = sign(G − 2)·‖∇L‖.
    got = gradnorm_weight_grad(torch.ones(2), torch.tensor([1.0, 3.0]), torch.ones(2), torch.ones(2), 1.5)
    torch.testing.assert_close(got, torch.tensor([-1.0, 3.0]))
    with pytest.raises(ValueError, match="alpha"):
        build_method("gradnorm", alpha=-1.0)
    method = build_method("gradnorm", layer="heads.t0.weight")
    with pytest.raises(ValueError, match="not a shared parameter"):
        method.setup(("t0", "t1", "t2"), _tiny_hps())


# --- RLW / RGW -------------------------------------------------------------------------------------
def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.sampled_from(DISTRIBUTIONS), st.floats(0.01, 5.0), st.integers(0, 2**31 - 1))
def test_random_weights_lie_on_the_simplex_and_are_reproducible(n, distribution, beta, seed):
    w1 = sample_simplex_weights(np.random.default_rng(seed), n, distribution, beta)
    w2 = sample_simplex_weights(np.random.default_rng(seed), n, distribution, beta)
    assert w1.shape == (n,) and (w1 >= 0).all() and w1.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(w1, w2)
    if distribution == "normal":
        assert (w1 > 0).all()
    if distribution == "bernoulli":
        nz = w1[w1 > 0]
        np.testing.assert_allclose(nz, 1.0 / nz.size)


def test_random_weight_distributions_have_the_right_means():
    rng = np.random.default_rng(0)
    for distribution in DISTRIBUTIONS:
        draws = np.stack([sample_simplex_weights(rng, 4, distribution, 2.0) for _ in range(4000)])
        np.testing.assert_allclose(draws.mean(0), 0.25, atol=0.02)  # exchangeable: mean 1/T
    uniform = np.stack([sample_simplex_weights(rng, 3, "uniform") for _ in range(4000)])
    assert np.mean(uniform[:, 0] > 0.5) == pytest.approx(0.25, abs=0.03)  # Dirichlet(1): P(w1>½)=¼
    with pytest.raises(ValueError, match="distribution"):
        build_method("rlw", distribution="gamma")


def test_rlw_draws_are_seeded_and_survive_a_checkpoint():
    model = Probe(torch.eye(3))
    a = build_method("rlw", distribution="dirichlet", beta=0.5, seed=7)
    a.setup(model.task_names, model)
    seq = [a.sample(3) for _ in range(3)]
    b = build_method("rlw", distribution="dirichlet", beta=0.5, seed=7)
    np.testing.assert_array_equal(np.stack([b.sample(3) for _ in range(3)]), np.stack(seq))
    state = _roundtrip(a.state_dict())
    c = build_method("rlw", distribution="dirichlet", beta=0.5, seed=123)
    c.load_state_dict(state)
    np.testing.assert_array_equal(c.sample(3), a.sample(3))
    info, d = _run("rlw", torch.tensor([[1.0, 0.0], [0.0, 2.0]]), seed=3)
    lam = build_method("rlw", seed=3).sample(2)
    assert [info["weight/t0"], info["weight/t1"]] == pytest.approx(lam.tolist())
    torch.testing.assert_close(d, torch.tensor([lam[0], 2 * lam[1]], dtype=torch.float64))


def test_rgw_weights_normalized_gradients():
    g = torch.tensor([[3.0, 4.0], [0.0, -2.0], [0.0, 0.0]])
    info, d = _run("rgw", g, distribution="uniform", seed=11)
    lam = build_method("rgw", distribution="uniform", seed=11).sample(3)
    expected = lam[0] * np.array([0.6, 0.8]) + lam[1] * np.array([0.0, -1.0])
    torch.testing.assert_close(d, torch.from_numpy(expected))
    assert sum(info.values()) == pytest.approx(1.0)


def test_random_methods_resume_identically_in_the_trainer(tiny_multimnist, tmp_path):
    from moomtl.models.lenet import hps_lenet
    from moomtl.train.trainer import Trainer

    data = tiny_multimnist
    small = type(data)(data.train.subset(256), data.val.subset(20), data.test.subset(20), data.description)

    def trainer(out, epochs):
        torch.manual_seed(0)
        return Trainer(hps_lenet(), build_method("rlw", seed=4), epochs=epochs, batch_size=64, seed=1,
                       out_dir=out)

    full = trainer(tmp_path / "full", 2)
    full.fit(small)
    trainer(tmp_path / "part", 1).fit(small)
    resumed = trainer(tmp_path / "part", 2)
    resumed.fit(small, resume=True)
    for a, b in itertools.zip_longest(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert full.method.rng.bit_generator.state == resumed.method.rng.bit_generator.state
