"""Largest difference of every registered method from the reference its reference test uses.

For each method in ``moomtl.methods.available_methods()`` this script re-runs, on a seeded pool of
inputs, the comparison that the method's reference test makes (the test is named in the method's
``card.reference``), and records the largest difference seen. The references are the tests' own:
TorchJD 0.18 aggregators, quadprog / cvxpy solutions, optimality equations, closed forms and the
explicit-vector formulas the tests re-implement (mirrored here, each naming the test it mirrors).
Methods whose reference is a multi-step re-implementation of LibMTL / official code that this script
does not replicate are listed with their test and no number.

Run: ``.venv/bin/python benchmarks/reference_diffs.py`` (writes ``docs/reference_diffs.md``).
"""

from __future__ import annotations

import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import cvxpy as cp
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import least_squares
from torch import Tensor, nn
from torchjd.aggregation import IMTLG, AlignedMTL, DualProj, UPGrad
from torchjd.linalg import QuadprogProjector

from moomtl.autodiff.context import StepContext
from moomtl.events import TrainState
from moomtl.methods import available_methods, build_method
from moomtl.methods.cagrad import cagrad_dual_weights, cagrad_objective
from moomtl.methods.epo import epo_adjustments, epo_lp
from moomtl.methods.fairgrad import fairgrad_residual, fairgrad_weights
from moomtl.methods.famo import famo_weights
from moomtl.methods.imtl import _imtl_g_weights
from moomtl.methods.pareto_mtl import pmtl_weights
from moomtl.methods.pcgrad import pcgrad_coefficients
from moomtl.solvers import min_norm
from moomtl.solvers import scalarizations as S
from moomtl.weightings import (
    aligned_mtl_weights,
    dualproj_weights,
    imtl_g_weights,
    nash_mtl_weights,
    upgrad_weights,
)

# The references are the reference tests' own code, imported, not copied (run from the repository root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test_methods_loss_zoo_pref's own imports
from tests.test_baselines import _pcgrad_reference, _tiny_hps, gradnorm_step  # noqa: E402
from tests.test_baselines import _run as probe_run  # noqa: E402
from tests.test_methods_gradient_zoo import (  # noqa: E402
    _batch,
    _gradvac_reference,
    _imtl_libmtl,
    _jac,
    _loss_values,
    _losses,
    _model,
    _proj_simplex_np,
    _split,
)
from tests.test_methods_gradient_zoo import _run as zoo_run  # noqa: E402
from tests.test_methods_loss_zoo import OfficialFAMO, quad_model  # noqa: E402
from tests.test_methods_loss_zoo import losses_of as quad_losses  # noqa: E402
from tests.test_methods_loss_zoo import step as quad_step  # noqa: E402
from tests.test_methods_loss_zoo_pref import (  # noqa: E402
    brute_force_epo_lp,
    epo_case,
    official_pmtl_direction,
    pmtl_case,
)
from tests.test_min_norm import qp_reference  # noqa: E402
from tests.test_weightings import _rel  # noqa: E402

TS = (2, 5, 10)
N = 40
DRAWS = 20
KIND_OF_DRAW = ["generic"] * 14 + ["low rank"] * 3 + ["colinear"] * 3
POOL = f"T ∈ {{{', '.join(map(str, TS))}}}, n = {N}, {DRAWS} draws per T"
OUT = Path(__file__).resolve().parents[1] / "docs" / "reference_diffs.md"


# --- the pool ----------------------------------------------------------------------------------------
def jacobian(t: int, draw: int) -> tuple[Tensor, str]:
    """float64 T×n Jacobian: 14 generic draws (row norms e^N(0,1), as tests/test_weightings.py::_jac),
    3 of rank max(1, T//2) (rank-deficient), 3 with colinear rows (positive multiples of one gradient
    plus, for T ≥ 3, one independent row), as in tests/test_min_norm.py's pool kinds."""
    g = torch.Generator().manual_seed(1000 * t + draw)
    kind = KIND_OF_DRAW[draw]
    scales = torch.exp(torch.randn(t, 1, generator=g, dtype=torch.float64))
    if kind == "generic":
        jac = torch.randn(t, N, generator=g, dtype=torch.float64)
    elif kind == "low rank":
        r = max(1, t // 2)
        jac = torch.randn(t, r, generator=g, dtype=torch.float64) @ torch.randn(r, N, generator=g, dtype=torch.float64)
    else:
        jac = torch.randn(1, N, generator=g, dtype=torch.float64).expand(t, N).clone()
        if t >= 3:
            jac[-1] = torch.randn(N, generator=g, dtype=torch.float64)
    return jac * scales, kind


def pool(kinds: tuple[str, ...] = ("generic", "low rank", "colinear")):
    for t in TS:
        for draw in range(DRAWS):
            jac, kind = jacobian(t, draw)
            if kind in kinds:
                yield t, draw, jac


def zoo_pool(steps: int) -> str:
    return (f"tests/test_methods_gradient_zoo.py::_model (tanh MLP encoder, 61 shared parameters, T heads), batches of "
            f"7, T ∈ {{{', '.join(map(str, TS))}}}, {DRAWS} seeds per T, {steps} step(s) each")


def n_draws(kinds: tuple[str, ...]) -> int:
    return len(TS) * sum(k in kinds for k in KIND_OF_DRAW)


# --- TorchJD 0.18 (tests/test_weightings.py) -----------------------------------------------------------
def torchjd_projection(ours, ref_cls) -> tuple[float, float]:
    """Mirrors test_upgrad_and_dualproj_match_torchjd: exact QuadprogProjector(0, 0) with the default
    and a random preference (generic draws: quadprog needs a positive definite Gramian), and reg_eps=1e-4
    against TorchJD's default projector (every draw). Returns (exact, regularized)."""
    exact = QuadprogProjector(norm_eps=0.0, reg_eps=0.0)
    worst_exact = worst_reg = 0.0
    for t, draw, jac in pool():
        gram = jac @ jac.T
        pref = torch.rand(t, generator=torch.Generator().manual_seed(draw + 7), dtype=torch.float64) + 0.1
        if KIND_OF_DRAW[draw] == "generic":
            worst_exact = max(worst_exact, _rel(ours(gram) @ jac, ref_cls(projector=exact)(jac)),
                              _rel(ours(gram, pref) @ jac, ref_cls(pref_vector=pref, projector=exact)(jac)))
        worst_reg = max(worst_reg, _rel(ours(gram, reg_eps=1e-4) @ jac, ref_cls()(jac)))
    return worst_exact, worst_reg


def torchjd_imtlg() -> float:
    return max(_rel(imtl_g_weights(j @ j.T) @ j, IMTLG()(j)) for _, _, j in pool())


def torchjd_aligned() -> float:
    worst = 0.0
    for t, draw, jac in pool():
        gram = jac @ jac.T
        pref = torch.rand(t, generator=torch.Generator().manual_seed(draw), dtype=torch.float64) + 0.1
        for mode in ("min", "median", "rmse"):
            worst = max(worst, _rel(aligned_mtl_weights(gram, scale_mode=mode) @ jac, AlignedMTL(scale_mode=mode)(jac)),
                        _rel(aligned_mtl_weights(gram, pref, mode) @ jac, AlignedMTL(pref, mode)(jac)))
    return worst


# --- MGDA: quadprog and KKT (tests/test_min_norm.py) ---------------------------------------------------
def mgda_min_norm() -> tuple[float, float]:
    """(largest objective excess over quadprog, largest KKT gap), both on G / max_t G_tt."""
    excess = gap = 0.0
    for _, _, jac in pool():
        m = (jac @ jac.T).numpy()
        mn = m / m.diagonal().max()
        a = min_norm(torch.from_numpy(m)).numpy()
        r = qp_reference(m)
        excess = max(excess, float(a @ mn @ a - r @ mn @ r))
        v = mn @ a
        gap = max(gap, float(a @ v - v.min()))
    return excess, gap


# --- on tests/test_baselines.py::Probe: the task gradients of θ are exactly the rows of J ---------------
def mgda_ub_vs_mgda() -> float:
    """Mirrors tests/test_mgda.py::test_mgda_ub_with_identity_encoder_equals_mgda: z = θ, so MGDA-UB's
    update must equal MGDA's. Difference of the updates relative to max_t ‖g_t‖ (the min-norm d is ≈ 0 when
    0 is in the convex hull, as on rank-deficient draws, so ‖d_MGDA‖ is no scale)."""
    return max(float((probe_run("mgda_ub", j)[1] - probe_run("mgda", j)[1]).norm() / j.norm(dim=1).max())
               for _, _, j in pool())


def nash_residual() -> tuple[float, float]:
    """max_t |α_t (Ĝα)_t − 1| with Ĝ = G/‖G‖_F (authors' normalization) and the coefficient of variation
    of α ⊙ Ĝα that tests/test_weightings.py::test_nash_mtl_solves_its_equation asserts (≤ 1e-8)."""
    res = cv = 0.0
    for _, _, jac in pool(("generic", "colinear")):
        gram = jac @ jac.T
        a = nash_mtl_weights(gram)
        r = a * ((gram / gram.norm()) @ a)
        res, cv = max(res, float((r - 1).abs().max())), max(cv, float(r.std() / r.mean()))
    return res, cv


def cagrad_vs_socp(c: float = 0.4) -> float:
    """Mirrors tests/test_baselines.py::test_cagrad_matches_an_socp_and_strong_duality: the dual objective
    F(w) of our weights minus the cvxpy optimum of the same program, relative to max(1, |optimum|)."""
    worst = 0.0
    for t, _, jac in pool():
        j = jac.numpy()
        m = j @ j.T
        g0 = np.full(t, 1.0 / t) @ j
        w = cp.Variable(t)
        prob = cp.Problem(cp.Minimize(w @ (j @ g0) + c * np.linalg.norm(g0) * cp.norm(j.T @ w)),
                          [w >= 0, cp.sum(w) == 1])
        prob.solve()
        ours = cagrad_objective(cagrad_dual_weights(m, c), m, c)
        worst = max(worst, (ours - prob.value) / max(1.0, abs(prob.value)))
    return worst


def fairgrad_checks(alpha: float = 1.0) -> tuple[float, float]:
    """tests/test_methods_gradient_zoo.py: the residual of G w = w^(−1/α) relative to max(1, max w^(−1/α))
    (test_fairgrad_solves_its_optimality_equation, ≤ 1e-8) and the relative difference from LibMTL's
    least_squares call (test_fairgrad_closed_form_scaling_and_libmtl_least_squares, rtol 1e-4).
    Generic draws only (G positive definite, as in those tests)."""
    res = lib = 0.0
    for t, _, jac in pool(("generic",)):
        gram = (jac @ jac.T).numpy()
        w = fairgrad_weights(gram, alpha)
        scale = max(1.0, float(np.abs(w ** (-1 / alpha)).max()))
        res = max(res, float(np.abs(fairgrad_residual(gram, w, alpha)).max()) / scale)
        ref = least_squares(lambda v, m=gram: m @ v - v ** (-1 / alpha), np.full(t, 1.0 / t), bounds=(0, np.inf)).x
        lib = max(lib, float(np.abs(w - ref).max() / np.abs(ref).max()))
    return res, lib


def pcgrad_vs_projections() -> float:
    worst = 0.0
    for t, draw, jac in pool():
        j = jac.numpy()
        rng = np.random.default_rng(draw)
        orders = [[k for k in rng.permutation(t) if k != i] for i in range(t)]
        got = pcgrad_coefficients(torch.from_numpy(j @ j.T), orders).numpy().sum(0) @ j
        ref = _pcgrad_reference(j, orders)
        worst = max(worst, float(np.linalg.norm(got - ref) / np.linalg.norm(j, axis=1).max()))
    return worst


def rgw_definition() -> float:
    """Mirrors tests/test_baselines.py::test_rgw_weights_normalized_gradients: d = Σ_t λ_t g_t/‖g_t‖ with
    λ the method's own seeded draw."""
    worst = 0.0
    for t, draw, jac in pool():
        _, d = probe_run("rgw", jac, seed=draw)
        lam = torch.from_numpy(np.asarray(build_method("rgw", seed=draw).sample(t), dtype=np.float64))
        ref = lam @ (jac / jac.norm(dim=1, keepdim=True))
        worst = max(worst, _rel(d, ref))
    return worst


def imtl_vs_libmtl() -> float:
    """IMTL's gradient half vs LibMTL's closed form (test_imtl_g_closed_form_equal_projections, rtol 1e-7):
    largest |α − α_LibMTL| / max|α_LibMTL|. Generic draws only (LibMTL inverts D Uᵀ)."""
    worst = 0.0
    for _, _, jac in pool(("generic",)):
        a = _imtl_g_weights(jac @ jac.T).numpy()
        ref = _imtl_libmtl(jac.numpy())
        worst = max(worst, float(np.abs(a - ref).max() / np.abs(ref).max()))
    return worst


# --- methods on a small hard-sharing model (tests/test_methods_gradient_zoo.py's helpers) --------------
def rel_inf(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


STEPS = 4


def zoo_check(name: str) -> float:
    """max over draws and steps of max|∇_method − ∇_ref| / max|∇_ref| over all model parameters, each
    reference the NumPy re-derivation in the test named in the row."""
    worst = 0.0
    for t in TS:
        for draw in range(DRAWS):
            model = _model(t, draw)
            kw = {"imtl_l": {}, "imtl": {}, "excess_mtl": {"robust_step_size": 0.5},
                  "sdmgrad": {"lamda": 0.4, "niter": 7},
                  "moco": dict(beta=0.6, beta_sigma=0.4, gamma=0.3, gamma_sigma=0.7, rho=0.1),
                  "moco_projection": dict(beta=0.6, beta_sigma=0.4, gamma=0.3, gamma_sigma=0.7, rho=0.1,
                                          lambda_update="projection"),
                  "graddrop": {"leak": 0.3 * (draw % 2), "seed": draw},
                  "db_mtl": {"beta": 0.9, "beta_sigma": 0.5},
                  "gradvac": {"beta": 0.3, "group_type": 2 * (draw % 2), "seed": draw}}[name]
            method = build_method(name.split("_projection")[0], **kw)
            method.setup(model.task_names, model)
            ones = np.ones(t)
            if name in ("imtl_l", "imtl"):
                s = np.random.default_rng(draw).uniform(-0.7, 0.7, t)
                with torch.no_grad():
                    method.loss_scale.copy_(torch.from_numpy(s))
            n = sum(p.numel() for p in model.shared_parameters())
            grad_sum, weight, initial = None, np.ones(t), None  # excess_mtl
            yy, lam = np.zeros((t, n)), np.full(t, 1 / t)  # moco
            w = np.full(t, 1 / t)  # sdmgrad
            rng = np.random.default_rng(draw)  # graddrop
            buf = np.zeros((t, n))  # db_mtl
            if name == "gradvac":
                shared = model.shared_parameters()
                blocks = [n] if kw["group_type"] == 0 else [p.numel() for p in shared]
                rho_t = np.zeros((t, t, len(blocks)))
            for step in range(1 if name in ("imtl_l", "imtl") else STEPS):
                x, y = _batch(t, 100 * draw + step)
                g = _jac(model, x, y, model.shared_parameters())
                heads = _jac(model, x, y, model.task_specific_parameters())
                if name == "imtl_l":  # test_imtl_l_gradients
                    ref_s, ref_h = np.exp(s) @ g, np.exp(s) @ heads
                elif name == "imtl":  # test_imtl_hybrid_matches_libmtl
                    e = np.exp(s)
                    ref_s, ref_h = _imtl_libmtl(e[:, None] * g) @ (e[:, None] * g), e @ heads
                elif name == "excess_mtl":  # test_excess_mtl_matches_libmtl_over_steps
                    grad_sum = g**2 if grad_sum is None else grad_sum + g**2
                    risk = (g * (1 / np.sqrt(grad_sum + 1e-7)) * g).sum(1)
                    if initial is None:
                        initial = risk
                    else:
                        weight = weight * np.exp(0.5 * risk / initial)
                        weight = weight / weight.sum() * t
                    ref_s, ref_h = weight @ g, weight @ heads
                elif name.startswith("moco"):  # test_moco_matches_libmtl_over_steps
                    k = step + 1
                    g_hat = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8) * _loss_values(model, x, y)[:, None]
                    yy = yy - 0.6 / k**0.4 * (yy - g_hat)
                    raw = lam - 0.3 / k**0.7 * (yy @ yy.T + 0.1 * np.eye(t)) @ lam
                    lam = (np.exp(raw - raw.max()) / np.exp(raw - raw.max()).sum() if name == "moco"
                           else _proj_simplex_np(raw))
                    ref_s, ref_h = lam @ yy, ones @ heads
                elif name == "sdmgrad":  # test_sdmgrad_matches_libmtl_over_steps
                    gg = g @ g.T
                    gg = gg / (np.mean(np.sqrt(np.clip(np.diag(gg), 0, None))) ** 2 + 1e-8)
                    buf = None
                    for _ in range(7):
                        grad = gg @ w + 0.4 * gg.mean(1)
                        buf = grad if buf is None else 0.5 * buf + grad
                        w = _proj_simplex_np(w - 5 * buf)
                    ref_s, ref_h = (w @ g + 0.4 * g.mean(0)) / 1.4, ones @ heads
                elif name == "gradvac":  # test_gradvac_matches_libmtl_loop_over_steps
                    orders = [[j for j in rng.permutation(t).tolist() if j != i] for i in range(t)]
                    ref_s, rho_t = _gradvac_reference(g, rho_t, orders, 0.3, blocks)
                    ref_h = ones @ heads
                elif name == "db_mtl":  # tests/test_methods_loss_zoo.py::libmtl_db_mtl_steps
                    k = step + 1
                    inv = 1.0 / (_loss_values(model, x, y) + 1e-8)  # ∇ log(L + 1e-8) = ∇L / (L + 1e-8)
                    glog = inv[:, None] * g
                    buf = glog + (0.9 / k**0.5) * (buf - glog)
                    norms = np.linalg.norm(buf, axis=1)
                    ref_s, ref_h = (norms.max() / (norms + 1e-8)) @ buf, inv @ heads
                else:  # graddrop: test_graddrop_matches_libmtl_rep_formula
                    leak = kw["leak"]
                    losses, z = _losses(model, x, y)
                    per = np.stack([torch.autograd.grad(losses[k], z, retain_graph=True)[0].numpy()
                                    for k in model.task_names])
                    sc = (per * np.sign(z.detach().numpy())[None]).sum(1)
                    purity = 0.5 * (1 + sc.sum(0) / (np.abs(sc).sum(0) + 1e-7))
                    u = rng.random(z.shape[1:])
                    mask = ((purity > u) & (sc > 0)) | ((purity < u) & (sc < 0))
                    grad_z = (per * (leak + (1 - leak) * mask)[:, None]).sum(0)
                    ref_s = torch.cat([q.reshape(-1) for q in torch.autograd.grad(
                        z, model.shared_parameters(), grad_outputs=torch.from_numpy(grad_z))]).numpy()
                    ref_h = ones @ heads
                got_s, got_h = _split(model, zoo_run(model, method, x, y)[1])
                worst = max(worst, rel_inf(np.concatenate([got_s, got_h]), np.concatenate([ref_s, ref_h])))
    return worst


# --- FAMO against the official update (tests/test_methods_loss_zoo.py::OfficialFAMO) ------------------
def famo_vs_official(n_steps: int = 30) -> float:
    """Mirrors test_famo_matches_the_official_update_sequence (asserts < 1e-5, float32 logits): largest
    absolute difference of the loss weights and of the logits over a 30-step random loss sequence."""
    worst = 0.0
    for t in TS:
        for draw in range(DRAWS):
            seq = torch.rand(n_steps, t, generator=torch.Generator().manual_seed(1000 * t + draw)) * 2 + 0.05
            ours = build_method("famo", w_lr=0.1, gamma=0.01)
            ours.setup([f"t{i}" for i in range(t)], nn.Linear(1, 1))
            ref = OfficialFAMO(t, gamma=0.01, w_lr=0.1)
            for k, losses in enumerate(seq):
                if k > 0:
                    ref.update(losses)
                w_ref = ref.weights(losses)
                ours.update_logits(losses)
                w = famo_weights(ours.logits, losses)
                worst = max(worst, float((w - w_ref).abs().max()), float((ours.logits - ref.w.detach()).abs().max()))
    return worst


# --- loss-level scalarizations (tests/test_scalarizations.py, tests/test_method_docs.py) ---------------
class Heads(nn.Module):
    """tests/test_scalarizations.py::TwoHeads with T heads: L_t = (a_t(tanh(body x)) − c_t)²."""

    def __init__(self, t: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(4, 3).double()
        self.heads = nn.ModuleList(nn.Linear(3, 1).double() for _ in range(t))
        self.targets = torch.randn(t, dtype=torch.float64) * 2

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        h = torch.tanh(self.body(x))
        return {f"t{i}": (head(h) - self.targets[i]).pow(2).mean() for i, head in enumerate(self.heads)}


SCALARIZED = {
    "tch": (S.tchebycheff, {}), "stch": (S.smooth_tchebycheff, {"mu": 0.3}), "pbi": (S.pbi, {"theta": 2.0}),
    "aug_tch": (S.augmented_tchebycheff, {"rho": 0.1}), "mod_tch": (S.modified_tchebycheff, {"eps": 0.1}),
}


def loss_level(name: str) -> tuple[float, float]:
    """Largest |method gradient − autograd of the objective| over all parameters, relative to the largest
    entry of the autograd gradient. Mirrors test_method_gradient_equals_backprop_of_the_scalarized_objective
    (atol 1e-6, float32 model) for the Chebyshev family, test_uniform_and_single_task_are_their_plain_losses
    for uniform / single_task and tests/test_context.py's weighted sum for linear. Returns (against λ, z in
    float64, against λ, z as the method stores them: its ``pref`` / ``ideal_point`` buffers, when it has them)."""
    worst = worst_stored = 0.0
    for t in TS:
        for draw in range(DRAWS):
            g = torch.Generator().manual_seed(1000 * t + draw)
            x = torch.randn(16, 4, generator=g, dtype=torch.float64)
            pref = (torch.rand(t, generator=g, dtype=torch.float64) + 0.1).tolist()
            model = Heads(t, draw)
            names = list(model.losses(x))
            with torch.no_grad():
                lv0 = torch.stack(list(model.losses(x).values()))
            ideal = (lv0 - 0.5 * torch.rand(t, generator=g, dtype=torch.float64)).tolist()
            if name in SCALARIZED:
                method = build_method(name, preference=pref, ideal=ideal, **SCALARIZED[name][1])
            elif name == "linear":
                method = build_method("linear", weights=pref)
            elif name == "uniform":
                method = build_method("uniform")
            elif name in ("gls", "kendall"):
                method = build_method(name)
            elif name == "cosmos":
                method = build_method("cosmos", preference=(lam0 := [p / sum(pref) for p in pref]), mu=2.0)
            else:
                method = build_method("single_task", task=names[draw % t])
            method.setup(names, model)
            if name == "kendall":
                with torch.no_grad():
                    method.log_vars.copy_(torch.rand(t, generator=g, dtype=torch.float64) * 2 - 1)
                s_ref = method.log_vars.detach().double().requires_grad_(True)
            losses = model.losses(x)
            method.backward(losses, StepContext(model, losses))
            got = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            if name == "kendall":
                got = torch.cat([got, method.log_vars.grad.double()])
            lam = torch.tensor(pref, dtype=torch.float64)
            z = torch.tensor(ideal, dtype=torch.float64)
            stored = (getattr(method, "pref", lam / lam.sum()), getattr(method, "ideal_point", z))
            for which, (lam_ref, z_ref) in enumerate(((lam / lam.sum(), z), stored)):
                lam_ref, z_ref = lam_ref.double(), z_ref.double()
                model.zero_grad()
                lv = torch.stack(list(model.losses(x).values()))
                if name in SCALARIZED:
                    fn, kw = SCALARIZED[name]
                    obj = fn(lv, lam_ref, z_ref, **kw)
                elif name == "linear":
                    obj = (lam * lv).sum()
                elif name == "uniform":
                    obj = lv.mean()
                elif name == "gls":  # LibMTL GLS: losses.prod() ** (1/T)
                    obj = lv.prod() ** (1.0 / t)
                elif name == "cosmos":  # official COSMOS loss Σ α_t L_t − μ cos(L, α)
                    alpha = torch.tensor(lam0, dtype=torch.float64)
                    obj = (alpha * lv).sum() - 2.0 * F.cosine_similarity(lv, alpha, dim=0)
                elif name == "kendall":  # variant 'simple': Σ e^(−s_t) L_t + s_t, gradients w.r.t. θ and s
                    s_ref.grad = None
                    obj = (torch.exp(-s_ref) * lv + s_ref).sum()
                else:
                    obj = lv[draw % t]
                obj.backward()
                ref = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
                if name == "kendall":
                    ref = torch.cat([ref, s_ref.grad])
                d = float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-300))
                if which == 0:
                    worst = max(worst, d)
                else:
                    worst_stored = max(worst_stored, d)
    return worst, worst_stored


# --- stateful and LP/QP references (dwa, gradnorm, epo, pmtl) --------------------------------------------
SEEDS = 60


def dwa_vs_libmtl() -> float:
    """Mirrors test_dwa_matches_libmtl_on_recorded_epoch_losses over seeds and T: LibMTL's
    ``T softmax((buf[e−1] / buf[e−2]) / temp)`` from the epoch means of the losses the steps saw;
    largest |w − w_ref| (absolute, weights sum to T) over epochs 2–4."""
    worst = 0.0
    for t_count in TS:
        for seed in range(DRAWS):
            model = quad_model(seed=seed, n_tasks=t_count)
            m = build_method("dwa", temperature=2.0)
            m.setup(model.task_names, model)
            history: list[Tensor] = []
            for epoch in range(5):
                seen = []
                for _ in range(4):
                    seen.append(quad_losses(model))
                    info = quad_step(m, model, lr=0.02, epoch=epoch)
                    if epoch >= 2:
                        w = torch.stack([info[f"weight/{t}"] for t in model.task_names])
                        ref = t_count * torch.softmax((history[epoch - 1] / history[epoch - 2]) / 2.0, dim=-1)
                        worst = max(worst, float((w - ref).abs().max()))
                history.append(torch.stack(seen).mean(0))
                m.end_epoch()
    return worst


def gradnorm_vs_double_backward() -> float:
    """Mirrors test_gradnorm_weight_gradient_and_update_on_a_tiny_model over seeds: the gradient of the
    GradNorm loss w.r.t. the loss weights against the paper's double backward (``_gradnorm_reference``),
    3 steps per seed; largest max|g − g_ref| / max|g_ref|."""
    worst = 0.0
    for seed in range(DRAWS):
        model = _tiny_hps()
        torch.manual_seed(seed)
        for p in model.parameters():
            p.data.normal_(0, 0.5)
        method = build_method("gradnorm", alpha=1.5)
        method.setup(model.task_names, model)
        opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.1)
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(16, 4, dtype=torch.float64, generator=g), torch.randint(0, 3, (16, 3), generator=g)
        first = None
        for step_i in range(3):
            _, first, ref = gradnorm_step(model, method, opt, x, y, step_i, first)
            worst = max(worst, float((method.loss_weights.grad.double() - ref).abs().max() / ref.abs().max()))
            opt.step()
            method.on_step_end(TrainState(model=model, optimizer=opt))
    return worst


def epo_vs_brute_force() -> tuple[float, int]:
    """Mirrors test_epo_lp_matches_the_official_lp_by_brute_force over 60 seeds (2 tasks: the grid
    reference is over α ∈ Δ¹): (largest |objective − grid optimum|, number of seeds where the move differs)."""
    worst, moves = 0.0, 0
    for seed in range(SEEDS):
        gram, losses, r = epo_case(seed)
        alpha, move, _ = epo_lp(gram, losses, r, eps=1e-4)
        scaled = gram / np.max(np.diag(gram))
        best, ref_move = brute_force_epo_lp(scaled, losses, r, 1e-4)
        moves += move != ref_move
        if alpha is None:
            worst = max(worst, 0.0 if best == -np.inf else float("inf"))
            continue
        _, _, a = epo_adjustments(losses, r)
        value = alpha @ (scaled @ a) if move == "bal" else (alpha @ scaled).sum()
        worst = max(worst, abs(float(value) - best))
    return worst, moves


def pmtl_vs_official() -> float:
    """Mirrors test_pmtl_weights_match_the_official_direction over 60 seeds: the official
    get_d_paretomtl direction (its min-norm QP by SLSQP from every vertex) against ours; largest |w − w_ref|."""
    worst = 0.0
    for seed in range(SEEDS):
        grads, value, refs, i = pmtl_case(seed)
        ref = official_pmtl_direction(grads, value, refs, i)
        w, _ = pmtl_weights(torch.as_tensor(grads @ grads.T), torch.as_tensor(value), torch.as_tensor(refs[i]),
                            torch.as_tensor(np.delete(refs, i, axis=0)), init_phase=False)
        worst = max(worst, float(np.abs(w.numpy() - ref).max()))
    return worst


# --- the table -------------------------------------------------------------------------------------------
ALL = ("generic", "low rank", "colinear")
GENERIC = ("generic",)


def fmt(x: float) -> str:
    return f"{x:.1e}"


def pool_text(kinds: tuple[str, ...] = ALL, what: str = "random Jacobians") -> str:
    parts = {"generic": "generic", "low rank": "rank ⌊T/2⌋", "colinear": "colinear rows"}
    return f"{what}, {POOL} ({', '.join(parts[k] for k in kinds)}; {n_draws(kinds)} inputs)"


def rows() -> dict[str, tuple[str, str, str, str]]:
    r: dict[str, tuple[str, str, str, str]] = {}
    for name, fn, cls in (("upgrad", upgrad_weights, UPGrad), ("dualproj", dualproj_weights, DualProj)):
        ex, reg = torchjd_projection(fn, cls)
        r[name] = (f"TorchJD 0.18 `{cls.__name__}`: exact `QuadprogProjector(0, 0)` (generic draws; it rejects "
                   "singular Gramians) and, for reg_eps=1e-4, TorchJD's default projector (all draws)",
                   "‖d − d_ref‖/‖d_ref‖, d = wᵀJ; default and random preference", pool_text(),
                   f"exact {fmt(ex)}; reg_eps=1e-4 {fmt(reg)}")
    r["imtl_g"] = ("TorchJD 0.18 `IMTLG`", "‖d − d_ref‖/‖d_ref‖", pool_text(), fmt(torchjd_imtlg()))
    r["aligned_mtl"] = ("TorchJD 0.18 `AlignedMTL` (scale modes min/median/rmse, default and random preference)",
                        "‖d − d_ref‖/‖d_ref‖", pool_text(), fmt(torchjd_aligned()))
    ex, gap = mgda_min_norm()
    r["mgda"] = ("its card's TorchJD MGDA converges only on some inputs, so here: the independent quadprog QP "
                 "(tests/test_min_norm.py::test_objective_matches_qp_reference) and the KKT condition "
                 "(test_on_simplex_and_kkt_optimal, gap ≤ 1e-9)",
                 "objective excess αᵀĜα − α_qpᵀĜα_qp; KKT gap αᵀĜα − min_t (Ĝα)_t (Ĝ = G / max G_tt)",
                 pool_text(), f"excess {fmt(ex)}; KKT gap {fmt(gap)}")
    r["mgda_ub"] = ("MGDA's update on the same problem with z = θ",
                    "‖d_UB − d_MGDA‖ / max_t ‖g_t‖ (method updates on a probe model)", pool_text(),
                    fmt(mgda_ub_vs_mgda()))
    res, cv = nash_residual()
    r["nash_mtl"] = ("its optimality equation α ⊙ Ĝα = 1 (Ĝ = G/‖G‖_F)", "max_t |α_t(Ĝα)_t − 1|; CV of α ⊙ Ĝα",
                     pool_text(("generic", "colinear")), f"residual {fmt(res)}; CV {fmt(cv)}")
    r["cagrad"] = ("the primal SOCP solved by cvxpy (c = 0.4)", "(F(w) − F_cvxpy) / max(1, |F_cvxpy|)",
                   pool_text(), fmt(cagrad_vs_socp()))
    fr, fl = fairgrad_checks()
    r["fairgrad"] = ("Eq. 8 G w = w^(−1/α) and LibMTL's `least_squares` call (α = 1)",
                     "residual / max(1, max w^(−1/α)); max|w − w_LibMTL| / max w_LibMTL",
                     pool_text(GENERIC), f"residual {fmt(fr)}; vs LibMTL {fmt(fl)}")
    r["pcgrad"] = ("the paper's Algorithm 1 on explicit vectors (tests/test_baselines.py::_pcgrad_reference)",
                   "‖d − d_ref‖ / max_t ‖g_t‖ (same random orders; d can be ≈ 0 for opposite colinear rows)",
                   pool_text(), fmt(pcgrad_vs_projections()))
    r["rgw"] = ("its definition Σ_t λ_t g_t/‖g_t‖ with the method's seeded λ",
                "‖d − d_ref‖/‖d_ref‖ (method update on a probe model)", pool_text(), fmt(rgw_definition()))
    r["imtl"] = ("LibMTL's IMTL (scaled losses e^s L − s, IMTL-G closed form of the scaled shared gradients, "
                 "heads e^s ∇L), as re-derived in test_imtl_hybrid_matches_libmtl; and the IMTL-G closed form alone "
                 "(tests/test_methods_gradient_zoo.py::_imtl_libmtl) on the random-Jacobian pool",
                 "step: max|∇ − ∇_ref| / max|∇_ref| (all parameters, one step, random s); closed form: "
                 "max|α − α_LibMTL| / max|α_LibMTL|",
                 f"{zoo_pool(1)}; closed form: {pool_text(GENERIC)}",
                 f"step {fmt(zoo_check('imtl'))}; closed form {fmt(imtl_vs_libmtl())}")
    zoo = {
        "imtl_l": ("the gradients by hand Σ e^(s_t) ∇L_t (test_imtl_l_gradients; the s-gradient not compared)", 1),
        "excess_mtl": ("LibMTL ExcessMTL re-derived in NumPy (robust_step_size = 0.5)", STEPS),
        "sdmgrad": ("LibMTL SDMGrad re-derived in NumPy (λ = 0.4, niter = 7, warm-started w)", STEPS),
        "graddrop": ("LibMTL's representation-gradient GradDrop re-derived in NumPy (leak 0 and 0.3, same seed)",
                     STEPS),
        "gradvac": ("LibMTL's GradVac loop on vectors (β = 0.3, group_type 0 and 2 alternating, same seeded orders)",
                    STEPS),
        "db_mtl": ("LibMTL DB_MTL re-stated (tests/test_methods_loss_zoo.py::libmtl_db_mtl_steps; β = 0.9, σ = 0.5)",
                   STEPS),
    }
    for name, (ref, steps) in zoo.items():
        r[name] = (ref, "max|∇ − ∇_ref| / max|∇_ref| (all parameters, every step)", zoo_pool(steps),
                   fmt(zoo_check(name)))
    r["moco"] = ("LibMTL MoCo re-derived in NumPy (β = 0.6, σ_β = 0.4, γ = 0.3, σ_γ = 0.7, ρ = 0.1)",
                 "max|∇ − ∇_ref| / max|∇_ref| (all parameters, every step)", zoo_pool(STEPS),
                 f"softmax {fmt(zoo_check('moco'))}; projection {fmt(zoo_check('moco_projection'))}")
    loss_pool = (f"a T-head tanh model (float64), 16 samples, T ∈ {{{', '.join(map(str, TS))}}}, {DRAWS} draws per T, "
                 f"random preference and ideal point where the method takes them ({len(TS) * DRAWS} inputs)")
    r["famo"] = ("the official FAMO class (Adam on the logits), mirrored from the test",
                 "max |w − w_ref| and |ξ − ξ_ref| (absolute; float32 losses and logits, as in the test)",
                 f"random loss sequences of 30 steps, T ∈ {{{', '.join(map(str, TS))}}}, {DRAWS} seeds per T "
                 f"({len(TS) * DRAWS} sequences)", fmt(famo_vs_official()))
    refs = {"linear": "autograd of the weighted sum", "uniform": "autograd of the mean loss",
            "single_task": "autograd of the one task's loss", "gls": "autograd of LibMTL's objective (Π_t L_t)^(1/T)",
            "cosmos": "autograd of the official COSMOS loss Σ α_t L_t − μ cos(L, α) (μ = 2)",
            "kendall": "autograd of Σ e^(−s_t) L_t + s_t (variant 'simple', random s), w.r.t. θ and s"}
    for name in (*SCALARIZED, "linear", "uniform", "single_task", "gls", "cosmos", "kendall"):
        full, stored = loss_level(name)
        diff = fmt(full)
        if name in SCALARIZED:
            diff = f"{fmt(full)} (λ, z in float64); {fmt(stored)} (λ, z as the method stores them)"
        r[name] = (refs.get(name, "autograd of the scalarized objective"),
                   "max|∇_method − ∇_autograd| / max|∇_autograd| (all parameters)", loss_pool, diff)
    r["dwa"] = ("LibMTL DWA: T softmax((buf[e−1] / buf[e−2]) / temp) from the epoch means of the losses the steps "
                "saw (temp = 2)", "max |w − w_ref| (absolute; weights sum to T), epochs 2–4",
                f"tests/test_methods_loss_zoo.py::quad_model (quadratic tasks with heads), T ∈ "
                f"{{{', '.join(map(str, TS))}}}, {DRAWS} seeds per T, 5 epochs of 4 steps", fmt(dwa_vs_libmtl()))
    r["gradnorm"] = ("the paper's double backward of the GradNorm loss (tests/test_baselines.py::_gradnorm_reference; "
                     "α = 1.5)", "max|∂L_grad/∂w − ref| / max|ref| (every step)",
                     f"tests/test_baselines.py::_tiny_hps (3 tasks, float64, random weights), batch 16, {DRAWS} seeds, "
                     "3 steps each", fmt(gradnorm_vs_double_backward()))
    epo_gap, epo_moves = epo_vs_brute_force()
    r["epo"] = ("the official EPO_LP problems (prob_bal / prob_dom) restated and solved on a grid of 200,001 points "
                "of Δ¹ (tests/test_methods_loss_zoo_pref.py::brute_force_epo_lp)",
                "|LP objective − grid optimum| (grid step 5e-6); seeds where the move (bal/dom) differs",
                f"random 2-task Gramians, losses and preferences, {SEEDS} seeds",
                f"{fmt(epo_gap)}; moves differ on {epo_moves} of {SEEDS}")
    r["pmtl"] = ("the official get_d_paretomtl direction with its min-norm QP by SLSQP from every vertex, normalized "
                 "T / Σ|w| (tests/test_methods_loss_zoo_pref.py::official_pmtl_direction)",
                 "max |w − w_ref| (absolute; SLSQP's ftol 1e-15)",
                 f"random 2-task gradients (n = 6), losses, one of 5 circle references, {SEEDS} seeds",
                 fmt(pmtl_vs_official()))
    r["rlw"] = ("no numeric reference; properties checked by tests/test_baselines.py (simplex, seeding, "
                "distribution means)", "—", "—", "—")
    r["tch_ma"] = ("no numeric reference; optimality property (equal active terms) checked by "
                   "tests/test_methods_loss_zoo_pref.py::test_tch_ma_equalizes_active_terms_at_the_optimum",
                   "—", "—", "—")
    r["omd_tch"] = ("no numeric reference per input; convergence to the Tchebycheff optimum checked by "
                    "tests/test_omd_tch.py::test_converted_output_approaches_the_tch_optimum", "—", "—", "—")
    r["mwc_alm"] = ("no numeric reference per input; convergence to the preference's Pareto point checked by "
                    "tests/test_mwc_alm.py::test_alm_converges_to_the_pareto_point_of_the_preference",
                    "—", "—", "—")
    return r


def main() -> None:
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    methods = available_methods()
    table = rows()
    missing = sorted(set(methods) - set(table))
    for name in missing:
        table[name] = ("not covered by this script", "—", "—", "—")
    unmeasured = sorted(k for k, v in table.items() if v[3] == "not measured by this script")
    lines = [
        "# Largest difference from each method's reference",
        "",
        f"Generated by `.venv/bin/python benchmarks/reference_diffs.py` (torch {torch.__version__}, torchjd "
        f"{version('torchjd')}, cvxpy {cp.__version__}, quadprog {version('quadprog')}, Python "
        f"{sys.version.split()[0]}; {time.perf_counter() - start:.0f} s on 2 CPU cores). Float64 unless a row says "
        "otherwise. For every registered method, the row re-runs on a seeded pool of inputs the comparison that the "
        "method's reference test makes (the test named in its `card.reference`, as in `docs/methods.md`), using the "
        "same reference. The last column is the largest difference over the pool. Relative differences have no unit. "
        "Reruns on one machine are identical; on another CPU the round-off-level values change in their leading "
        "digits (different BLAS kernels), never by more than an order of magnitude in our reruns.",
        "",
        "Notes:",
        "",
        "- `tch`, `stch`, `pbi`, `aug_tch`, `mod_tch`, `cosmos`, `kendall`: until commit ea63347 these methods "
        "stored the preference λ and the ideal point z (kendall: the log-variances s) in float32 even on a "
        "float64 model, so their gradients differed from the float64 objective's by float32 rounding, amplified "
        "by the scalarization: 5.1e-6 relative for `pbi` (θ = 2), 1.0e-6 for `stch` (μ = 0.3), ~5e-8 for the "
        "others. The tests compared on float32 models (atol 1e-6) and could not see it. The methods now keep "
        "that state in the model's dtype (`moomtl.methods.base.parameter_dtype`), the rows above read 0 to 5e-16, "
        "and tests/test_method_registry.py::test_no_floating_state_below_the_model_precision holds every "
        "registered method to it.",
        "- TorchJD's exact `QuadprogProjector(0, 0)` rejects singular Gramians. So the exact UPGrad/DualProj "
        "comparison runs on the generic draws only, and the rank-deficient and colinear draws are compared "
        "through reg_eps = 1e-4 against TorchJD's default projector.",
        "- `pcgrad` and `mgda_ub` are scaled by max_t ‖g_t‖, not by ‖d_ref‖. On the rank-deficient draws the exact "
        "update is ≈ 0 (PCGrad of opposite colinear rows; the min-norm point when 0 is in the convex hull), so "
        "‖d_ref‖ is rounding noise. Divided by it, the same differences read 1.8 and 4.4e-4 on this pool.",
        (f"- Not measured here (the reference is only inside the test, and this script does not replicate it): "
         f"{', '.join(f'`{k}`' for k in unmeasured)}. " if unmeasured else "- ")
        + "Rows marked 'no numeric reference' have only property or convergence tests, so they get no number.",
        "",
        "| method | reference | quantity compared | inputs (pool: T values, n, number of draws) | largest difference |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(methods):
        ref, qty, inputs, diff = table[name]
        card = getattr(methods[name], "card", None)
        test = card.reference.split(" (")[0] if card is not None else ""
        cells = [f"`{name}`", f"{ref} (test: {test})", qty, inputs, diff]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
