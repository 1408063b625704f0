"""GradVac, GradDrop, FairGrad, IMTL-L / IMTL, ExcessMTL, MoCo and SDMGrad: each against LibMTL's formula
re-derived in NumPy on a small model, optimality conditions, invariances, bit-identical resume from a
``state_dict`` and a short training run on real MultiMNIST."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import least_squares
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods import build_method
from moomtl.methods.fairgrad import fairgrad_residual, fairgrad_weights
from moomtl.methods.gradvac import gradvac_coefficients
from moomtl.methods.imtl import _imtl_g_weights
from moomtl.models.base import HardParameterSharing, MultiTaskModel
from moomtl.solvers.simplex import project_simplex
from test_mgda import per_task_rows

ZOO = ("gradvac", "graddrop", "fairgrad", "imtl_l", "imtl", "excess_mtl", "moco", "sdmgrad")


# --- helpers ---------------------------------------------------------------------------------------
def _model(n_tasks: int = 3, seed: int = 0, dim: int = 6) -> MultiTaskModel:
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, dim), nn.Tanh()).double()
    heads = {f"t{i}": nn.Sequential(nn.Linear(dim, 4), nn.Tanh(), nn.Linear(4, 3)).double() for i in range(n_tasks)}
    return HardParameterSharing(enc, heads)


def _batch(n_tasks: int, seed: int, batch: int = 7) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (batch, n_tasks), generator=g)


def _losses(model: MultiTaskModel, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    z = model.encode(x)
    out = model.decode(z, x)
    return {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}, z


def _run(model: MultiTaskModel, method, x: Tensor, y: Tensor) -> tuple[dict, Tensor]:
    """One ``method.backward``; returns its info and all model gradients flattened."""
    model.zero_grad(set_to_none=True)
    losses, z = _losses(model, x, y)
    info = method.backward(losses, StepContext(model, losses, z))
    return info, _flat_grads(model)


def _flat_grads(model: nn.Module) -> Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])


def _jac(model: MultiTaskModel, x: Tensor, y: Tensor, params: list[Tensor]) -> np.ndarray:
    """Per-task gradients by one ``autograd.grad`` per task (independent of the context's engine)."""
    return per_task_rows(_losses(model, x, y)[0], params).numpy()


def _loss_values(model: MultiTaskModel, x: Tensor, y: Tensor) -> np.ndarray:
    losses, _ = _losses(model, x, y)
    return torch.stack(list(losses.values())).detach().numpy()


def _split(model: MultiTaskModel, flat: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(shared part, head part) of a flat gradient, in ``model.parameters()`` order."""
    shared = {id(p) for p in model.shared_parameters()}
    mask = torch.cat([torch.full((p.numel(),), id(p) in shared) for p in model.parameters()])
    return flat[mask].numpy(), flat[~mask].numpy()


def _setup(name: str, model: MultiTaskModel, **kw):
    m = build_method(name, **kw)
    m.setup(model.task_names, model)
    return m


def _head_grads(model: MultiTaskModel, x: Tensor, y: Tensor, w: np.ndarray) -> np.ndarray:
    return w @ _jac(model, x, y, model.task_specific_parameters())


# --- GradVac -------------------------------------------------------------------------------------------
def _gradvac_reference(g: np.ndarray, rho_t: np.ndarray, orders, beta: float, blocks) -> tuple[np.ndarray, np.ndarray]:
    """LibMTL's GradVac loop (``LibMTL/weighting/GradVac.py``) on explicit gradient vectors."""
    pc = g.copy()
    rho_t = rho_t.copy()
    edges = np.cumsum([0, *blocks])
    for i in range(g.shape[0]):
        for j in orders[i]:
            for k in range(len(blocks)):
                sl = slice(edges[k], edges[k + 1])
                a, b = pc[i, sl], g[j, sl]
                r = a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8)
                if r < rho_t[i, j, k]:
                    tgt = rho_t[i, j, k]
                    w = np.linalg.norm(a) * (tgt * np.sqrt(1 - r**2) - r * np.sqrt(1 - tgt**2)) / (
                        np.linalg.norm(b) * np.sqrt(1 - tgt**2) + 1e-8)
                    pc[i, sl] = a + w * b
                    rho_t[i, j, k] = (1 - beta) * tgt + beta * r
    return pc.sum(0), rho_t


@pytest.mark.parametrize("group_type", [0, 2])
def test_gradvac_matches_libmtl_loop_over_steps(group_type):
    """Reference: LibMTL's GradVac (targets updated when ``φ < φ̂``), re-derived on vectors, 4 steps."""
    model = _model(3)
    method = _setup("gradvac", model, beta=0.3, group_type=group_type, seed=5)
    shared = model.shared_parameters()
    blocks = [sum(p.numel() for p in shared)] if group_type == 0 else [p.numel() for p in shared]
    rng = np.random.default_rng(5)
    rho_t = np.zeros((3, 3, len(blocks)))
    worst = 0.0
    for step in range(4):
        x, y = _batch(3, step)
        g = _jac(model, x, y, shared)
        orders = [[j for j in rng.permutation(3).tolist() if j != i] for i in range(3)]
        ref, rho_t = _gradvac_reference(g, rho_t, orders, 0.3, blocks)
        _, got = _run(model, method, x, y)
        got_shared, got_heads = _split(model, got)
        worst = max(worst, float(np.abs(got_shared - ref).max()))
        np.testing.assert_allclose(got_shared, ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(method.targets.numpy(), rho_t, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got_heads, _head_grads(model, x, y, np.ones(3)), rtol=1e-12, atol=1e-14)
    assert (rho_t != 0).any()  # the targets moved, so the test exercised the EMA


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.sampled_from([[11], [4, 7]]), st.sampled_from(["conditional", "always"]),
       st.integers(0, 2**31 - 1))
def test_gradvac_coefficients_match_libmtl_loop_on_vectors(t, blocks, ema, seed):
    """Reference: LibMTL's sequential loop (``_gradvac_reference``, conditional EMA) on explicit random
    gradients — the coefficient form processes the T independent sequences batched over i. Random orders
    (each task's own permutation), targets in (−0.6, 0.6) so that both branches of ``φ < φ̂`` occur; with
    ``ema="always"`` the targets are checked against the loop's cosines directly."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((t, sum(blocks)))
    g[rng.integers(t)] *= 10.0 ** rng.uniform(-3, 3)  # one row of another scale
    targets = rng.uniform(-0.6, 0.6, (t, t, len(blocks)))
    orders = [[j for j in rng.permutation(t).tolist() if j != i] for i in range(t)]
    edges = np.cumsum([0, *blocks])
    gram = torch.stack([torch.from_numpy(g[:, a:b] @ g[:, a:b].T) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    coef, new_t = gradvac_coefficients(gram, torch.from_numpy(targets), orders, 0.3, ema)
    got = np.concatenate([coef[k].sum(0).numpy() @ g[:, a:b] for k, (a, b) in enumerate(zip(edges[:-1], edges[1:],
                                                                                          strict=True))])
    if ema == "conditional":
        ref, ref_t = _gradvac_reference(g, targets, orders, 0.3, blocks)
        np.testing.assert_allclose(new_t.numpy(), ref_t, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9 * np.abs(g).max())
    else:  # targets move on every visit, whether or not the gradient was changed
        assert not np.allclose(new_t.numpy(), targets)


def test_gradvac_with_beta_zero_is_pcgrad():
    """Invariance: with ``β = 0`` the targets stay 0 and GradVac's step is PCGrad's projection
    (Wang et al. 2021, Sec. 3: PCGrad is the special case ``φ̂ = 0``), same seed → same orders."""
    model = _model(4)
    gv, pc = _setup("gradvac", model, beta=0.0, seed=2), _setup("pcgrad", model, seed=2)
    for step in range(3):
        x, y = _batch(4, 10 + step)
        _, a = _run(model, gv, x, y)
        _, b = _run(model, pc, x, y)
        # equal up to LibMTL's 1e-8 guards in the cosine and coefficient (relative effect ~1e-6 here)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    assert (gv.targets == 0).all()


def test_gradvac_always_ema_moves_targets_every_step():
    """The paper's Algorithm 1 rule: ``φ̂ ← (1−β)φ̂ + βφ`` every step, so one step from 0 gives ``βφ``."""
    model = _model(2)
    method = _setup("gradvac", model, beta=0.25, ema="always")
    x, y = _batch(2, 0)
    g = _jac(model, x, y, model.shared_parameters())
    _run(model, method, x, y)
    cos = g[0] @ g[1] / (np.linalg.norm(g[0]) * np.linalg.norm(g[1]) + 1e-8)
    # for (0, 1) the first cosine is taken before any change; for (1, 0) g_1 is unchanged too (T = 2)
    np.testing.assert_allclose(method.targets[0, 1, 0].item(), 0.25 * cos, rtol=1e-9)
    np.testing.assert_allclose(method.targets[1, 0, 0].item(), 0.25 * cos, rtol=1e-9)


# --- GradDrop ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_graddrop_matches_libmtl_rep_formula(leak):
    """Reference: LibMTL's representation-gradient GradDrop (purity of the sign-corrected batch sums,
    masks from one uniform draw per representation element), re-derived in NumPy."""
    model = _model(3)
    method = _setup("graddrop", model, leak=leak, seed=4)
    rng = np.random.default_rng(4)
    for step in range(2):
        x, y = _batch(3, step)
        losses, z = _losses(model, x, y)
        per = np.stack([torch.autograd.grad(losses[t], z, retain_graph=True)[0].numpy() for t in model.task_names])
        s = (per * np.sign(z.detach().numpy())[None]).sum(1)
        purity = 0.5 * (1 + s.sum(0) / (np.abs(s).sum(0) + 1e-7))
        u = rng.random(z.shape[1:])
        mask = ((purity > u) & (s > 0)) | ((purity < u) & (s < 0))
        grad_z = (per * (leak + (1 - leak) * mask)[:, None]).sum(0)
        ref_shared = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            z, model.shared_parameters(), grad_outputs=torch.from_numpy(grad_z))]).numpy()
        info, got = _run(model, method, x, y)
        got_shared, got_heads = _split(model, got)
        np.testing.assert_allclose(got_shared, ref_shared, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(got_heads, _head_grads(model, x, y, np.ones(3)), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(info["graddrop/purity"].item(), purity.mean(), rtol=1e-12)


def test_graddrop_with_full_leak_is_the_sum_of_losses():
    """Invariance: ``leak = 1`` passes every gradient, i.e. plain descent on ``Σ_t L_t``."""
    model = _model(3)
    x, y = _batch(3, 1)
    _, got = _run(model, _setup("graddrop", model, leak=1.0), x, y)
    _, ref = _run(model, _setup("linear", model, weights=[1.0, 1.0, 1.0]), x, y)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)


# --- FairGrad ------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.sampled_from([0.2, 0.5, 1.0, 2.0, 5.0]), st.integers(0, 2**31 - 1))
def test_fairgrad_solves_its_optimality_equation(n_tasks, alpha, seed):
    """Ban & Ji 2024, Eq. 8: ``G w = w^{-1/α}``, ``w > 0``; residual ≤ 1e-8 (G positive definite)."""
    rng = np.random.default_rng(seed)
    jac = rng.standard_normal((n_tasks, n_tasks + 3))
    gram = jac @ jac.T
    w = fairgrad_weights(gram, alpha)
    assert (w > 0).all()
    assert np.abs(fairgrad_residual(gram, w, alpha)).max() <= 1e-8 * max(1.0, np.abs(w ** (-1 / alpha)).max())


def test_fairgrad_closed_form_scaling_and_libmtl_least_squares():
    """References: orthogonal gradients give ``w_t = ‖g_t‖^{-2α/(1+α)}``; ``G → cG`` scales ``w`` by
    ``c^{-α/(1+α)}``; LibMTL's ``least_squares`` call (default tolerances) agrees to its accuracy."""
    alpha = 2.0
    w = fairgrad_weights(np.diag([4.0, 0.25, 1.0]), alpha)
    np.testing.assert_allclose(w, np.array([4.0, 0.25, 1.0]) ** (-alpha / (1 + alpha)), rtol=1e-12)
    rng = np.random.default_rng(0)
    jac = rng.standard_normal((4, 9))
    gram = jac @ jac.T
    for a in (0.5, 1.0, 3.0):
        w = fairgrad_weights(gram, a)
        np.testing.assert_allclose(fairgrad_weights(7.0 * gram, a), w * 7.0 ** (-a / (1 + a)), rtol=1e-10)
        lib = least_squares(lambda v, a=a: gram @ v - v ** (-1 / a), np.full(4, 0.25), bounds=(0, np.inf)).x
        np.testing.assert_allclose(w, lib, rtol=1e-4)


def test_fairgrad_step_weights_the_losses():
    """The update is ``∇ Σ_t w_t L_t`` (task-specific parameters included), ``w`` solving Eq. 8 on the
    Jacobian computed independently."""
    model = _model(3)
    x, y = _batch(3, 0)
    info, got = _run(model, _setup("fairgrad", model, alpha=1.5), x, y)
    params = list(model.parameters())
    jac = _jac(model, x, y, params)
    shared = _jac(model, x, y, model.shared_parameters())
    w = np.array([info[f"weight/t{i}"].item() for i in range(3)])
    assert np.abs(fairgrad_residual(shared @ shared.T, w, 1.5)).max() <= 1e-8
    np.testing.assert_allclose(got.numpy(), w @ jac, rtol=1e-10, atol=1e-13)


def test_fairgrad_without_positive_solution_falls_back_to_least_squares():
    """Collinear opposite gradients have no ``w > 0`` with ``Gw = w^{-1/α}``: LibMTL's answer (bounded
    least squares) is returned, finite and non-negative."""
    w = fairgrad_weights(np.array([[1.0, -1.0], [-1.0, 1.0]]), 1.0)
    assert np.isfinite(w).all() and (w >= 0).all()


# --- IMTL ----------------------------------------------------------------------------------------------
def _imtl_libmtl(g: np.ndarray) -> np.ndarray:
    """LibMTL's IMTL-G closed form on explicit gradients (``torch.inverse`` of ``D Uᵀ``)."""
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = g[:1] - g[1:]
    uu = u[:1] - u[1:]
    a = g[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    return np.concatenate([[1 - a.sum()], a])


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_imtl_g_closed_form_equal_projections(n_tasks, seed):
    """Liu et al. 2021, Eq. 9 (LibMTL's formula): ``Σα = 1`` and ``(αᵀJ)·u_t`` equal for all ``t``."""
    rng = np.random.default_rng(seed)
    jac = rng.standard_normal((n_tasks, n_tasks + 4)) * rng.uniform(0.1, 10, (n_tasks, 1))
    alpha = _imtl_g_weights(torch.from_numpy(jac @ jac.T)).numpy()
    np.testing.assert_allclose(alpha, _imtl_libmtl(jac), rtol=1e-7, atol=1e-9)
    proj = (alpha @ jac) @ (jac / np.linalg.norm(jac, axis=1, keepdims=True)).T
    assert abs(alpha.sum() - 1) < 1e-12
    np.testing.assert_allclose(proj, np.full(n_tasks, proj.mean()), rtol=1e-8)


def test_imtl_l_gradients():
    """IMTL-L (Liu et al. 2021, Sec. 3.1): ``∇_θ = Σ e^{s_t} ∇L_t`` and ``∂/∂s_t = e^{s_t} L_t − 1``."""
    model = _model(3)
    method = _setup("imtl_l", model)
    with torch.no_grad():
        method.loss_scale.copy_(torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64))
    x, y = _batch(3, 0)
    info, got = _run(model, method, x, y)
    e = np.exp([0.3, -0.5, 1.0])
    np.testing.assert_allclose(got.numpy(), e @ _jac(model, x, y, list(model.parameters())), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(method.loss_scale.grad.numpy(), e * _loss_values(model, x, y) - 1, rtol=1e-12)
    np.testing.assert_allclose([info[f"weight/t{i}"].item() for i in range(3)], e, rtol=1e-6)


def test_imtl_hybrid_matches_libmtl():
    """Reference: LibMTL's IMTL (scaled losses ``e^{s}L − s``, IMTL-G of the scaled shared gradients,
    heads ``e^{s_t}∇L_t``), re-derived in NumPy; the update has equal projections on the unit gradients."""
    model = _model(3)
    method = _setup("imtl", model)
    s = np.array([0.2, -0.4, 0.7])
    with torch.no_grad():
        method.loss_scale.copy_(torch.from_numpy(s))
    x, y = _batch(3, 3)
    _, got = _run(model, method, x, y)
    e = np.exp(s)
    g = _jac(model, x, y, model.shared_parameters())
    alpha = _imtl_libmtl(e[:, None] * g)
    ref = alpha @ (e[:, None] * g)
    got_shared, got_heads = _split(model, got)
    np.testing.assert_allclose(got_shared, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_heads, _head_grads(model, x, y, e), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(method.loss_scale.grad.numpy(), e * _loss_values(model, x, y) - 1, rtol=1e-12)
    proj = got_shared @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    np.testing.assert_allclose(proj, np.full(3, proj.mean()), rtol=1e-8)


# --- ExcessMTL -----------------------------------------------------------------------------------------
def test_excess_mtl_matches_libmtl_over_steps():
    """Reference: LibMTL's ExcessMTL (AdaGrad-style diagonal Hessian, first step stores the risks,
    exponentiated-gradient weights renormalized to sum ``T``), re-derived in NumPy over 4 steps."""
    model = _model(3)
    method = _setup("excess_mtl", model, robust_step_size=0.5)
    grad_sum = None
    weight = np.ones(3)
    initial = None
    for step in range(4):
        x, y = _batch(3, step)
        g = _jac(model, x, y, model.shared_parameters())
        grad_sum = g**2 if grad_sum is None else grad_sum + g**2
        w = (g * (1 / np.sqrt(grad_sum + 1e-7)) * g).sum(1)
        if initial is None:
            initial = w
        else:
            weight = weight * np.exp(0.5 * w / initial)
            weight = weight / weight.sum() * 3
        info, got = _run(model, method, x, y)
        np.testing.assert_allclose([info[f"weight/t{i}"].item() for i in range(3)], weight, rtol=1e-12)
        np.testing.assert_allclose(got.numpy(), weight @ _jac(model, x, y, list(model.parameters())),
                                   rtol=1e-10, atol=1e-13)
    assert not np.allclose(weight, 1.0)


def test_excess_mtl_step_size_zero_is_equal_weighting():
    """Invariance: ``robust_step_size = 0`` keeps ``λ = 1`` (the sum of the losses) every step."""
    model = _model(2)
    method = _setup("excess_mtl", model, robust_step_size=0.0)
    for step in range(3):
        x, y = _batch(2, step)
        _, got = _run(model, method, x, y)
        _, ref = _run(model, _setup("linear", model, weights=[1.0, 1.0]), x, y)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)


# --- MoCo ----------------------------------------------------------------------------------------------
def _proj_simplex_np(v: np.ndarray) -> np.ndarray:
    """The sort-based Euclidean projection (Duchi et al. 2008), as in LibMTL's SDMGrad."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    r = np.nonzero(u * np.arange(1, len(v) + 1) > (css - 1))[0][-1]
    return np.clip(v - (css[r] - 1) / (r + 1), 0, None)


@pytest.mark.parametrize("lambda_update", ["softmax", "projection"])
def test_moco_matches_libmtl_over_steps(lambda_update):
    """Reference: LibMTL's MoCo (loss-scaled unit gradients tracked by ``Y``, ``λ`` by one step on
    ``(YYᵀ + ρI)λ`` then softmax; or the paper's simplex projection), re-derived in NumPy, 4 steps."""
    model = _model(3)
    kw = dict(beta=0.6, beta_sigma=0.4, gamma=0.3, gamma_sigma=0.7, rho=0.1, lambda_update=lambda_update)
    method = _setup("moco", model, **kw)
    n = sum(p.numel() for p in model.shared_parameters())
    yy, lam = np.zeros((3, n)), np.full(3, 1 / 3)
    for k in range(1, 5):
        x, y = _batch(3, k)
        g = _jac(model, x, y, model.shared_parameters())
        g_hat = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8) * _loss_values(model, x, y)[:, None]
        yy = yy - 0.6 / k**0.4 * (yy - g_hat)
        raw = lam - 0.3 / k**0.7 * (yy @ yy.T + 0.1 * np.eye(3)) @ lam
        lam = np.exp(raw - raw.max()) / np.exp(raw - raw.max()).sum() if lambda_update == "softmax" else (
            _proj_simplex_np(raw))
        info, got = _run(model, method, x, y)
        got_shared, got_heads = _split(model, got)
        np.testing.assert_allclose(got_shared, lam @ yy, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(got_heads, _head_grads(model, x, y, np.ones(3)), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose([info[f"weight/t{i}"].item() for i in range(3)], lam, rtol=1e-12)
    assert int(method.step) == 4


# --- SDMGrad -------------------------------------------------------------------------------------------
def test_sdmgrad_matches_libmtl_over_steps():
    """Reference: LibMTL's SDMGrad (normalized Gramian, ``niter`` SGD(lr=5, momentum=0.5) steps with
    simplex projection, warm-started ``w``, ``d = (Σ w_t g_t + λ g_0)/(1+λ)``) with one batch for ``ξ, ξ', ζ``."""
    model = _model(3)
    method = _setup("sdmgrad", model, lamda=0.4, niter=7)
    w = np.full(3, 1 / 3)
    for step in range(3):
        x, y = _batch(3, step)
        g = _jac(model, x, y, model.shared_parameters())
        gg = g @ g.T
        gg = gg / (np.mean(np.sqrt(np.clip(np.diag(gg), 0, None))) ** 2 + 1e-8)
        buf = None
        for _ in range(7):
            grad = gg @ w + 0.4 * gg.mean(1)
            buf = grad if buf is None else 0.5 * buf + grad
            w = _proj_simplex_np(w - 5 * buf)
        ref = (w @ g + 0.4 * g.mean(0)) / 1.4
        _, got = _run(model, method, x, y)
        got_shared, got_heads = _split(model, got)
        np.testing.assert_allclose(got_shared, ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(method.w.numpy(), w, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got_heads, _head_grads(model, x, y, np.ones(3)), rtol=1e-12, atol=1e-14)


def test_sdmgrad_inner_loop_reaches_the_regularized_min_norm_point():
    """Optimality: with a small step and many iterations ``w`` is a fixed point of the projected gradient
    map of ``½wᵀĜw + λ wᵀĜ1/T`` on the simplex (its KKT condition); ``λ = 0`` is MGDA's min-norm point."""
    from moomtl.methods.sdmgrad import sdmgrad_weights
    from moomtl.solvers.min_norm import min_norm

    rng = np.random.default_rng(1)
    jac = rng.standard_normal((4, 6))
    gram = torch.from_numpy(jac @ jac.T)
    w0 = torch.full((4,), 0.25, dtype=torch.float64)
    for lamda in (0.0, 0.5):
        w = sdmgrad_weights(gram, w0, lamda, niter=1000, lr=0.5, momentum=0.0)
        gg = gram / (gram.diagonal().sqrt().mean() ** 2 + 1e-8)
        fixed = project_simplex(w - 0.5 * (gg @ w + lamda * gg.mean(1)), check=False)
        torch.testing.assert_close(fixed, w, rtol=0, atol=1e-12)
    w = sdmgrad_weights(gram, w0, 0.0, niter=1000, lr=0.5, momentum=0.0)
    torch.testing.assert_close(w, min_norm(gram), rtol=0, atol=1e-8)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=7))
def test_projection_matches_sort_reference(v):
    """The device projection equals the NumPy sort-based projection and lies on the simplex."""
    got = project_simplex(torch.tensor(v, dtype=torch.float64), check=False).numpy()
    np.testing.assert_allclose(got, _proj_simplex_np(np.array(v)), atol=1e-12)
    assert abs(got.sum() - 1) < 1e-12 and (got >= 0).all()


# --- every method: contract, bad hyper-parameters, resume --------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_builds_with_defaults_and_returns_detached_scalars(name):
    """Every method builds with defaults and logs detached 0-d tensors (no host sync for logging)."""
    model = _model(3)
    x, y = _batch(3, 0)
    info, grads = _run(model, _setup(name, model), x, y)
    assert info and all(isinstance(v, Tensor) and v.ndim == 0 and not v.requires_grad for v in info.values())
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0


@pytest.mark.parametrize(("name", "kw"), [
    ("gradvac", {"beta": 1.5}), ("gradvac", {"beta": float("nan")}), ("gradvac", {"group_type": 3}),
    ("gradvac", {"ema": "sometimes"}), ("gradvac", {"seed": -1}),
    ("graddrop", {"leak": -0.1}), ("graddrop", {"leak": 2.0}),
    ("fairgrad", {"alpha": 0.0}), ("fairgrad", {"alpha": float("inf")}), ("fairgrad", {"alpha": -1.0}),
    ("imtl_l", {"init": float("nan")}), ("imtl", {"init": float("inf")}),
    ("excess_mtl", {"robust_step_size": -1.0}), ("excess_mtl", {"robust_step_size": float("nan")}),
    ("moco", {"beta": 0.0}), ("moco", {"beta": 1.5}), ("moco", {"gamma": -1.0}), ("moco", {"rho": float("nan")}),
    ("moco", {"beta_sigma": -0.5}), ("moco", {"lambda_update": "mirror"}),
    ("sdmgrad", {"lamda": -0.1}), ("sdmgrad", {"niter": -1}), ("sdmgrad", {"niter": 2.5}), ("sdmgrad", {"lr": 0.0}),
    ("sdmgrad", {"momentum": 1.0}),
])
def test_bad_hyperparameters_are_value_errors(name, kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        build_method(name, **kw)


HP = {"gradvac": {"beta": 0.5, "group_type": 1}, "excess_mtl": {"robust_step_size": 0.3},
      "moco": {"lambda_update": "projection"}}


@pytest.mark.parametrize("name", ZOO)
def test_state_dict_round_trip_gives_bit_identical_next_steps(name):
    """A fresh instance set up and loaded from a ``state_dict`` (through ``torch.save`` and a
    ``weights_only`` load) takes the same next steps, bit for bit, as the instance that kept going."""
    model = _model(3)
    opt_model = torch.optim.SGD(model.parameters(), lr=0.1)
    method = _setup(name, model, **HP.get(name, {}))
    method_opt = torch.optim.SGD(method.parameters(), lr=0.1) if list(method.parameters()) else None
    batches = [_batch(3, s) for s in range(5)]

    def step(m, opt_m, x, y):
        _, g = _run(model, m, x, y)
        opt_model.step()
        if opt_m is not None:
            opt_m.step()
            opt_m.zero_grad(set_to_none=True)
        return g

    for x, y in batches[:2]:
        step(method, method_opt, x, y)
    buf = io.BytesIO()
    torch.save({"method": method.state_dict(), "model": model.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model_state = copy.deepcopy(model.state_dict())
    cont = [step(method, method_opt, x, y) for x, y in batches[2:]]
    cont_state = copy.deepcopy(model.state_dict())

    model.load_state_dict(model_state)
    fresh = build_method(name, **HP.get(name, {}))
    fresh.setup(model.task_names, model)
    fresh.load_state_dict(saved["method"])
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1) if list(fresh.parameters()) else None
    for g, (x, y) in zip(cont, batches[2:], strict=True):
        assert torch.equal(step(fresh, fresh_opt, x, y), g), name
    for k, v in model.state_dict().items():
        assert torch.equal(v, cont_state[k]), k


def test_stateful_methods_keep_their_state_in_buffers():
    """The state named by each paper lives in the ``state_dict``, sized by ``setup``."""
    model = _model(3)
    n = sum(p.numel() for p in model.shared_parameters())
    shapes = {
        "gradvac": {"targets": (3, 3, 1)},
        "excess_mtl": {"grad_sq_sum": (3, n), "initial_risk": (3,), "loss_weight": (3,), "initialized": ()},
        "moco": {"y": (3, n), "lambd": (3,), "step": ()},
        "sdmgrad": {"w": (3,)},
        "imtl": {"loss_scale": (3,)}, "imtl_l": {"loss_scale": (3,)},
    }
    for name, expected in shapes.items():
        sd = _setup(name, model).state_dict()
        for key, shape in expected.items():
            assert tuple(sd[key].shape) == shape, (name, key)


# --- training on real data -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_short_training_and_resume_on_real_multimnist(name, tiny_multimnist, tmp_path):
    """Two short epochs of HPS-LeNet on 96 real MultiMNIST pairs: finite, the training loss goes down,
    and a run stopped after one epoch and resumed from its checkpoint ends with the same parameters."""
    from moomtl.models.lenet import hps_lenet
    from moomtl.train.trainer import Trainer

    data = tiny_multimnist
    small = type(data)(data.train.subset(96), data.val.subset(16), data.test.subset(16), data.description)

    def train(epochs: int, out, resume: bool = False):
        torch.manual_seed(0)
        trainer = Trainer(hps_lenet(), build_method(name), optimizer="SGD",
                          optimizer_kwargs={"lr": 0.05, "momentum": 0.9}, epochs=epochs, batch_size=32, seed=0,
                          out_dir=out)
        return trainer, trainer.fit(small, resume=resume)

    whole, res = train(2, tmp_path / "whole")
    first, last = res.history[0], res.history[-1]
    for t in ("left", "right"):
        assert math.isfinite(last[f"train/{t}/loss"]) and math.isfinite(last[f"val/{t}/loss"])
    total = [h["train/left/loss"] + h["train/right/loss"] for h in (first, last)]
    assert total[1] < total[0], total
    train(1, tmp_path / "split")
    resumed, _ = train(2, tmp_path / "split", resume=True)
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name}: {k} differs after resume"
    for (k, a), b in zip(whole.method.state_dict().items(), resumed.method.state_dict().values(), strict=True):
        same = torch.equal(a, b) if isinstance(a, Tensor) else a == b  # extra state: the RNG's plain dict
        assert same, f"{name}: method state {k} differs after resume"
