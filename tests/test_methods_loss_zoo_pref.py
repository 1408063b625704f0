"""Preference-driven methods EPO, Pareto MTL, COSMOS and Ma et al.'s Tchebycheff: official formulas
recomputed independently, optimality conditions on convex toy problems, invariances and resume."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from moomtl.methods import build_method
from moomtl.methods.epo import epo_adjustments, epo_lp
from moomtl.methods.pareto_mtl import pmtl_references, pmtl_weights
from moomtl.train.context import StepContext
from test_methods_loss_zoo import (
    D,
    Quad,
    assert_detached_tensors,
    assert_resume_is_bit_identical,
    assert_trainer_resume_identical,
    losses_of,
    quad_model,
    small_splits,
    step,
)


def two_targets(head: bool = False) -> Quad:
    """f_t(θ) = ||θ − a_t||² + 0.1, a_1 = (1, 0), a_2 = (0, 1): the Pareto set is the segment [a_1, a_2]."""
    return Quad(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=D), head=head)


def train(name: str, model: Quad, steps: int, lr: float, **hp) -> tuple[torch.nn.Module, list[dict]]:
    m = build_method(name, **hp)
    m.setup(model.task_names, model)
    infos = [step(m, model, lr=lr) for _ in range(steps)]
    return m, infos


# === EPO ===============================================================================================
def brute_force_epo_lp(gram: np.ndarray, losses: np.ndarray, r: np.ndarray, eps: float) -> tuple[float, str]:
    """The official EPO_LP problems (epo_lp.py: prob_bal / prob_dom) for 2 tasks, solved by a fine grid
    over α ∈ Δ¹: the optimal objective value and the move."""
    rl, mu_r, a = epo_adjustments(losses, r)
    ca = gram @ a
    x = np.linspace(0, 1, 200001)
    alpha = np.stack([x, 1 - x], axis=1)  # [N, 2]
    c_alpha = alpha @ gram
    if mu_r > eps:
        jset = ca > 0
        rhs = ca.copy() if jset.any() else np.zeros(2)
        if jset.any():
            rhs[jset] = -np.inf
            rhs[rl == rl.max()] = 0
        ok = np.all(c_alpha >= rhs - 1e-12, axis=1)
        obj = alpha @ ca
    else:
        ok = np.all(c_alpha >= -1e-12, axis=1) & (alpha @ ca >= min(ca.max(), 0) - 1e-12)
        obj = c_alpha.sum(axis=1)
    return (float(obj[ok].max()) if ok.any() else -np.inf), "bal" if mu_r > eps else "dom"


def epo_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random 2-task EPO LP input: (Gramian, losses, preference r on the simplex)."""
    g = np.random.default_rng(seed)
    grads = g.normal(size=(2, 3))
    losses = g.uniform(0.2, 2.0, size=2)
    r = g.uniform(0.2, 1.0, size=2)
    return grads @ grads.T, losses, r / r.sum()


@pytest.mark.parametrize("seed", range(6))
def test_epo_lp_matches_the_official_lp_by_brute_force(seed):
    """Reference: the official EPO_LP (cvxpy problems prob_bal / prob_dom) restated and solved on a grid;
    our HiGHS solution reaches the same optimum (on C scaled by max diag, as documented)."""
    gram, losses, r = epo_case(seed)
    alpha, move, _ = epo_lp(gram, losses, r, eps=1e-4)
    scaled = gram / np.max(np.diag(gram))
    best, ref_move = brute_force_epo_lp(scaled, losses, r, 1e-4)
    assert move == ref_move
    if alpha is None:
        assert best == -np.inf
        return
    _, _, a = epo_adjustments(losses, r)
    value = alpha @ (scaled @ a) if move == "bal" else (alpha @ scaled).sum()
    assert value == pytest.approx(best, abs=1e-4)


def test_epo_reaches_the_exact_preference_on_convex_quadratics():
    """EPO's defining condition: at the end r_1 f_1 = r_2 f_2 (r ⊙ f ∝ 1), on the Pareto set."""
    worst = {}
    for eps, tol, r in ((1e-4, 3e-2, [0.3, 0.7]), (1e-4, 3e-2, [0.8, 0.2]), (1e-7, 2e-3, [0.3, 0.7])):
        model = two_targets()
        m, infos = train("epo", model, 200, 0.05, preference=r, eps=eps)
        f = losses_of(model)
        rf = torch.tensor(r, dtype=D) * f
        gap = float((rf[0] - rf[1]).abs() / rf.mean())
        worst[eps] = max(worst.get(eps, 0.0), gap)
        assert gap < tol, (r, eps, f.tolist())
        theta = model.theta.detach()
        assert float(theta.sum()) == pytest.approx(1.0, abs=1e-3)  # on the segment [a_1, a_2]
        assert infos[-1]["epo/lp_failed"] == 0.0
    assert_detached_tensors({k: v for k, v in infos[-1].items() if k.startswith("weight/")})


def test_epo_scale_invariance_and_validation():
    """The LP is invariant to a positive scale of the Gramian (solved on C / max diag); scaling r changes
    neither the non-uniformity μ_r nor the kind of step."""
    g = np.random.default_rng(3)
    grads = g.normal(size=(3, 4))
    gram, losses, r = grads @ grads.T, g.uniform(0.5, 1.5, 3), np.array([0.2, 0.3, 0.5])
    a1, m1, mu1 = epo_lp(gram, losses, r)
    a2, m2, mu2 = epo_lp(1e6 * gram, losses, r)
    assert m1 == m2 == "bal"
    np.testing.assert_allclose(a1, a2, atol=1e-9)
    _, m3, mu3 = epo_lp(gram, losses, 5 * r)
    assert m3 == m1 and mu3 == pytest.approx(mu1)
    with pytest.raises(ValueError, match="> 0"):
        build_method("epo", preference=[0.0, 1.0])
    with pytest.raises(ValueError, match="eps"):
        build_method("epo", eps=-1.0)
    with pytest.raises(ValueError, match="non-negative losses"):
        epo_adjustments(np.array([-1.0, 1.0]), np.array([0.5, 0.5]))


def test_epo_lp_refuses_non_finite_input_without_raising():
    """A diverged step (NaN/inf in the Gramian or the losses) poses no LP (scipy's linprog raises on a
    non-finite cost): the LP reports failure, the method falls back to r and logs epo/lp_failed = 1."""
    gram, losses, r = epo_case(0)
    for bad_gram, bad_losses in ((gram * np.nan, losses), (gram, losses * np.inf), (gram, np.array([np.nan, 1.0]))):
        assert epo_lp(bad_gram, bad_losses, r) == (None, "none", 0.0)
    m = build_method("epo", preference=[0.25, 0.75])
    m.setup(("a", "b"), None)
    w, info = m.task_weights(torch.full((2, 2), float("nan"), dtype=D), torch.tensor([1.0, 2.0], dtype=D))
    torch.testing.assert_close(w, torch.tensor([0.5, 1.5], dtype=D))
    assert info["epo/lp_failed"] == 1.0 and math.isfinite(info["epo/non_uniformity"])


def test_epo_resume_is_bit_identical():
    assert_resume_is_bit_identical("epo", {"preference": [0.2, 0.3, 0.5]})


# === Pareto MTL ========================================================================================
def qp_min_norm(m: np.ndarray) -> np.ndarray:
    """Brute-force reference of the min-norm QP: SLSQP from every vertex, best kept."""
    n = m.shape[0]
    best = None
    for start in np.eye(n):
        res = minimize(lambda x: x @ m @ x, start, jac=lambda x: 2 * m @ x, bounds=[(0, None)] * n,
                       constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}], method="SLSQP",
                       options={"ftol": 1e-15, "maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    return best.x


def official_pmtl_direction(grads: np.ndarray, value: np.ndarray, refs: np.ndarray, i: int) -> np.ndarray:
    """Restatement of the official get_d_paretomtl (Xi-L/ParetoMTL, multiMNIST/train.py) for 2 tasks,
    with the min-norm element of [grads; w_I grads] found by the brute-force QP, then the official
    normalization T / Σ|w|."""
    w = refs - refs[i]
    gx = w @ (value / np.linalg.norm(value))
    idx = gx > 0
    vec = np.concatenate([grads, w[idx] @ grads])
    sol = qp_min_norm(vec @ vec.T)
    weight = sol[:2] + sol[2:] @ w[idx]
    return weight * (2 / np.abs(weight).sum())


def pmtl_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A random 2-task Pareto MTL input: (gradients [2, 6], losses, the 5 circle references, preference index)."""
    g = np.random.default_rng(seed)
    grads = g.normal(size=(2, 6))
    value = g.uniform(0.2, 3.0, size=2)
    return grads, value, pmtl_references(2, 5), int(g.integers(0, 5))


@pytest.mark.parametrize("seed", range(5))
def test_pmtl_weights_match_the_official_direction(seed):
    """Reference: official get_d_paretomtl + normalization (main phase), 5 circle references."""
    grads, value, refs, i = pmtl_case(seed)
    ref = official_pmtl_direction(grads, value, refs, i)
    u = torch.as_tensor(refs[i])
    others = torch.as_tensor(np.delete(refs, i, axis=0))
    w, _ = pmtl_weights(torch.as_tensor(grads @ grads.T), torch.as_tensor(value), u, others, init_phase=False)
    np.testing.assert_allclose(w.numpy(), ref, atol=2e-5)


def test_pmtl_init_phase_matches_the_official_feasibility_direction():
    """Reference: official get_d_paretomtl_init: with one violated constraint the weights are u_j − u_i."""
    refs = pmtl_references(2, 5)
    value = np.array([1.0, 0.05])  # far in the first task's region, preference index 4 = (0, 1)
    w = refs - refs[4]
    idx = (w @ (value / np.linalg.norm(value))) > 0
    grads = np.array([[1.0, 0.2], [0.1, 1.0]])
    gram = grads @ grads.T
    sub = w[idx] @ gram @ w[idx].T
    ref = qp_min_norm(sub) @ w[idx] if idx.sum() > 1 else w[idx][0]
    ours, k = pmtl_weights(torch.as_tensor(gram), torch.as_tensor(value), torch.as_tensor(refs[4]),
                           torch.as_tensor(refs[:4]), init_phase=True)
    assert k == int(idx.sum()) >= 1
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-5)


@pytest.mark.parametrize("index", [1, 3])
def test_pmtl_ends_pareto_optimal_inside_its_sub_region(index):
    """Pareto MTL's guarantee on a convex problem: the solution lies in the preference's sub-region (its
    normalized loss vector is closest in angle to u_index) and on the Pareto set; the feasibility phase
    ends (starting from outside the region)."""
    model = two_targets()
    with torch.no_grad():
        model.theta.copy_(torch.tensor([0.95, 0.0], dtype=D) if index == 3 else torch.tensor([0.0, 0.95], dtype=D))
    m, infos = train("pmtl", model, 600, 0.05, preference_index=index)
    assert infos[0]["pmtl/init_phase"] == 1.0 and bool(m.feasible)
    f = losses_of(model)
    refs = torch.as_tensor(pmtl_references(2, 5))
    cos = refs @ (f / f.norm())
    assert int(torch.argmax(cos)) == index
    assert float(model.theta.detach().sum()) == pytest.approx(1.0, abs=2e-3)


def test_pmtl_references_validation_and_resume():
    refs = pmtl_references(3, 3)  # Das–Dennis with 2 divisions: 6 unit vectors
    assert refs.shape == (6, 3)
    np.testing.assert_allclose(np.linalg.norm(refs, axis=1), 1.0)
    for hp, msg in (({"preference": [1.0, 1.0], "preference_index": 0}, "not both"),
                    ({"n_preferences": 1}, "n_preferences"), ({"init_epochs": -1}, "init_epochs"),
                    ({"preference_index": -2}, "preference_index")):
        with pytest.raises(ValueError, match=msg):
            build_method("pmtl", **hp)
    m = build_method("pmtl", preference_index=5)
    with pytest.raises(ValueError, match="out of range"):
        m.setup(["a", "b"], None)
    assert_resume_is_bit_identical("pmtl", {"preference": [0.2, 0.3, 0.5], "init_epochs": 1})


# === COSMOS ============================================================================================
def test_cosmos_gradient_matches_the_official_loss():
    """Reference: the official COSMOS step loss Σ α_t L_t − λ cos(L, α) (cosmos.py, with
    torch.nn.functional.cosine_similarity) backpropagated on a twin model."""
    model, twin = quad_model(seed=4), quad_model(seed=4)
    pref = [0.2, 0.5, 0.3]
    m = build_method("cosmos", preference=pref, mu=2.0)
    m.setup(model.task_names, model)
    x = torch.zeros(1, 1)
    z = model.encode(x)
    losses = model.decode(z, x)
    info = m.backward(losses, StepContext(model, losses, z))
    assert_detached_tensors(info)
    lt = torch.stack(list(twin(x).values()))
    alpha = torch.tensor(pref, dtype=D)
    ((alpha * lt).sum() - 2.0 * F.cosine_similarity(lt, alpha, dim=0)).backward()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9)
    assert float(info["cosine"]) == pytest.approx(float(F.cosine_similarity(lt.detach(), alpha, dim=0)), rel=1e-6)


def test_cosmos_limits_and_invariances():
    """μ = 0 is linear scalarization; the penalty's gradient is orthogonal to L (cos is scale-invariant in
    L) and vanishes when L is on the preference ray."""
    f = torch.tensor([0.4, 1.2, 0.7], dtype=D)
    m = build_method("cosmos", preference=[1.0, 2.0, 1.0], mu=0.0)
    m.setup(["a", "b", "c"], None)
    w, _ = m.weights_and_cosine(f)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.5, 0.25], dtype=D))
    m3 = build_method("cosmos", preference=[1.0, 2.0, 1.0], mu=3.0)
    m3.setup(["a", "b", "c"], None)
    w3, _ = m3.weights_and_cosine(f)
    assert float((w3 - w) @ f) == pytest.approx(0.0, abs=1e-6)
    on_ray, _ = m3.weights_and_cosine(torch.tensor([0.25, 0.5, 0.25], dtype=D) * 3)
    torch.testing.assert_close(on_ray, w, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="mu"):
        build_method("cosmos", mu=-1.0)
    with pytest.raises(ValueError):
        build_method("cosmos", preference=[-1.0, 1.0])


# === Ma et al.'s Tchebycheff ===========================================================================
def test_tch_ma_equalizes_active_terms_at_the_optimum():
    """Optimality condition of min max_t (L_t − z_t)/λ_t on a convex toy: at the end the terms of the
    active tasks are equal and the value matches an epigraph SLSQP reference optimum."""
    lam = np.array([0.25, 0.75])
    model = two_targets()
    m = build_method("tch_ma", preference=lam.tolist())
    m.setup(model.task_names, model)
    for k in range(1500):
        step(m, model, lr=0.02 / (1 + k) ** 0.5)
    f = losses_of(model).numpy()
    terms = (f - 0.0) / lam
    assert abs(terms[0] - terms[1]) / terms.mean() < 1e-2

    def value(x: np.ndarray) -> float:
        return max((np.sum((x[:2] - a) ** 2) + 0.1) / w for a, w in zip(np.eye(2), lam, strict=True))

    ref = minimize(lambda v: v[2], np.array([0.5, 0.5, 5.0]), method="SLSQP", constraints=[
        {"type": "ineq", "fun": lambda v, a=a, w=w: v[2] - (np.sum((v[:2] - a) ** 2) + 0.1) / w}
        for a, w in zip(np.eye(2), lam, strict=True)])
    assert value(model.theta.detach().numpy()) == pytest.approx(ref.fun, rel=5e-3)
    # the Ma form puts L − z ∝ λ: the larger preference entry gets the larger loss
    assert f[1] > f[0]


def test_tch_ma_weights_ideal_and_validation():
    """Weights are 1/λ_a on the active task (hand-computed); same reference-point handling as tch;
    logged values are detached tensors (no host sync); a zero preference entry is refused."""
    m = build_method("tch_ma", preference=[1.0, 3.0], ideal=[0.5, 0.0])
    m.setup(["a", "b"], None)
    # λ = (0.25, 0.75): terms (2 − 0.5)/0.25 = 6, 3/0.75 = 4 → task a, w = 4
    torch.testing.assert_close(m.weights(torch.tensor([2.0, 3.0]), None), torch.tensor([4.0, 0.0]))
    model = quad_model(seed=1)
    online = build_method("tch_ma", ideal="online")
    online.setup(model.task_names, model)
    info = step(online, model)
    assert_detached_tensors(info)
    assert sum(float(info[f"active/{t}"]) for t in model.task_names) == 1.0
    assert {f"ideal/{t}" for t in model.task_names} <= info.keys()
    with pytest.raises(ValueError, match="> 0"):
        build_method("tch_ma", preference=[0.0, 1.0])
    assert_resume_is_bit_identical("tch_ma", {"ideal": "online"})


# === shared ============================================================================================
@pytest.mark.parametrize("name", ["famo", "dwa", "gls", "db_mtl", "epo", "pmtl", "cosmos", "tch_ma"])
def test_every_new_method_builds_with_defaults_and_steps(name):
    """``build_method(name)`` with defaults (preference methods size a uniform preference at setup), one
    step on three tasks fills finite gradients and returns detached 0-d tensors (Python floats only for
    the solver-side diagnostics of EPO and Pareto MTL)."""
    model = quad_model(seed=6)
    m = build_method(name)
    m.setup(model.task_names, model)
    info = step(m, model)
    for k, v in info.items():
        if isinstance(v, float):
            assert name in ("epo", "pmtl") and "/" in k and not k.startswith("weight/")
        else:
            assert v.ndim == 0 and not v.requires_grad
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for (a, b) in itertools.combinations(model.task_names, 2):
        assert f"weight/{a}" in info and f"weight/{b}" in info


@pytest.mark.parametrize("name", ["famo", "gls", "db_mtl", "epo", "pmtl", "cosmos", "tch_ma"])
def test_every_new_method_resumes_bit_identically_through_the_trainer(name, tiny_multimnist, tmp_path):
    """The trainer's checkpoint (weights_only load): 2 epochs == 1 epoch + resume, on real MultiMNIST
    (96 images; DWA has its own 3-epoch version)."""
    hist = assert_trainer_resume_identical(name, small_splits(tiny_multimnist, 96), tmp_path)
    assert all(math.isfinite(v) for row in hist for k, v in row.items() if k.startswith("train/"))
