r"""Exact Pareto Optimal search (Mahapatra & Rajan, "Multi-Task Learning with User Preferences: Gradient
Descent with Controlled Ascent in Pareto Optimization", ICML 2020), the per-step LP of the official code
(dbmptr/EPOSearch, ``epo_lp.py``).

EPO looks for the Pareto-optimal point whose losses satisfy the preference exactly,
:math:`r_1 L_1 = r_2 L_2 = \dots = r_T L_T` (``r ⊙ L ∝ 1``). With :math:`C = G G^\top` the Gramian of the
task gradients and

.. math::

    \hat l = \frac{r \odot L}{\sum_t r_t L_t}, \qquad
    \mu_r = \sum_t \hat l_t \log(T\, \hat l_t)\ \text{(non-uniformity, a KL divergence)}, \qquad
    a = r \odot \big(\log(T \hat l) - \mu_r\big),

each step solves for :math:`\alpha \in \Delta^{T-1}`

* if :math:`\mu_r > \varepsilon` (*balance*): :math:`\max_\alpha \alpha^\top C a` s.t.
  :math:`(C\alpha)_j \ge (Ca)_j` for :math:`j \notin J`, :math:`(C\alpha)_j \ge 0` for
  :math:`j \in J^\star`, with :math:`J = \{j : (Ca)_j > 0\}`, :math:`J^\star = \arg\max_j r_j L_j`
  (no constraint on :math:`J \setminus J^\star`; all :math:`(C\alpha)_j \ge 0` when :math:`J = \emptyset`);
* else (*descent*): :math:`\max_\alpha \mathbf 1^\top C \alpha` s.t. :math:`C\alpha \ge 0` and
  :math:`\alpha^\top C a \ge \min(\max_j (Ca)_j, 0)` (the last constraint dropped with ``relax=True``);

and updates along :math:`d = \sum_t T \alpha_t \nabla L_t` (``weight/<task>`` logs :math:`T\alpha_t`, as the
official training loop scales them). If the LP has no solution the official fallback
:math:`\alpha = r / \sum r` is used (``epo/lp_failed`` logs 1).

The LP is solved with ``scipy.optimize.linprog`` (HiGHS) instead of cvxpy/GLPK, on :math:`C` divided by
its largest diagonal entry (both LPs are invariant to a positive scale of :math:`C`). **This needs the
Gramian and the losses on the host: one device→host transfer of** :math:`T^2 + T` **numbers per step**
(the only host synchronization of the method).

Deliberate differences from the official code: gradients are those of the *shared* parameters
(``ctx.jacobian("shared")``; the official MultiMNIST code stacks all parameters); the task-specific
parameters get :math:`T\alpha_t \nabla L_t`, as the official single weighted backward gives them. A zero
:math:`r_t L_t` is clamped to the smallest positive float inside the logarithm (the official code yields
NaN there). ``preference`` entries must be > 0 (the method targets :math:`L \propto 1/r`); a negative
loss is a ``ValueError`` (as in the official ``mu``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import linprog
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, as_weight_vector, register, weights_info


def epo_adjustments(losses: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """``(r ⊙ L, μ_r, a)`` of the official ``adjustments``/``mu`` (see the module docstring)."""
    if (losses < 0).any():
        raise ValueError(f"epo needs non-negative losses, got {losses.tolist()}")
    m = len(losses)
    rl = r * losses
    total = rl.sum()
    l_hat = rl / total if total > 0 else np.full(m, 1.0 / m)
    l_hat = np.maximum(l_hat, np.finfo(np.float64).tiny)
    keep = l_hat > np.finfo(np.float64).eps
    mu_r = float(np.sum(l_hat[keep] * np.log(l_hat[keep] * m)))
    a = r * (np.log(l_hat * m) - mu_r)
    return rl, mu_r, a


def epo_lp(gram: np.ndarray, losses: np.ndarray, r: np.ndarray, eps: float = 1e-4,
           relax: bool = False) -> tuple[np.ndarray | None, str, float]:
    """``(α, move, μ_r)``: the simplex weights of one EPO step (``None`` when the LP fails), ``move`` is
    ``"bal"`` or ``"dom"`` as in the official ``last_move``. A non-finite Gramian, loss or preference (a
    diverged step) gives ``(None, "none", 0.0)``: no LP is posed (scipy would raise), the caller falls back
    to ``r`` and logs the failure, and the trainer's non-finite-loss check reports the divergence.

    >>> gram = np.array([[1.0, 0.5], [0.5, 2.0]])
    >>> alpha, move, _ = epo_lp(gram, np.array([1.0, 1.0]), np.array([0.5, 0.5]))
    >>> move, alpha.round(6).tolist()   # already balanced: descent, max 1ᵀCα = 1.5 α_1 + 2.5 α_2
    ('dom', [0.0, 1.0])
    """
    m = len(losses)
    c_mat = np.asarray(gram, dtype=np.float64)
    losses, r = np.asarray(losses, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if not (np.isfinite(c_mat).all() and np.isfinite(losses).all() and np.isfinite(r).all()):
        return None, "none", 0.0
    c_mat = 0.5 * (c_mat + c_mat.T)
    scale = float(np.max(np.diag(c_mat))) if m else 0.0
    if scale > 0 and math.isfinite(scale):
        c_mat = c_mat / scale
    rl, mu_r, a = epo_adjustments(losses, r)
    ca = c_mat @ a
    a_eq, b_eq = np.ones((1, m)), np.ones(1)
    if mu_r > eps:
        move = "bal"
        jset = ca > 0
        if jset.any():
            rhs = ca.copy()
            rhs[jset] = -np.inf
            rhs[rl == rl.max()] = 0.0
        else:
            rhs = np.zeros(m)
        rows = np.isfinite(rhs)
        res = linprog(-ca, A_ub=-c_mat[rows] if rows.any() else None, b_ub=-rhs[rows] if rows.any() else None,
                      A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    else:
        move = "dom"
        a_ub, b_ub = -c_mat, np.zeros(m)
        if not relax:
            a_ub = np.vstack([-ca[None, :], a_ub])
            b_ub = np.concatenate([[-min(float(ca.max()), 0.0)], b_ub])
        res = linprog(-c_mat.sum(axis=1), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=(0, None),
                      method="highs")
    if res.status != 0 or res.x is None:
        return None, move, mu_r
    alpha = np.clip(res.x, 0.0, None)
    return alpha / alpha.sum(), move, mu_r


@register("epo", "EPO search (Mahapatra & Rajan 2020): per-step LP towards r ⊙ L ∝ 1, then Pareto descent")
class EPO(Method):
    """See the module docstring.

    Args:
        preference: ``r`` (entries > 0; ``1/T`` each when ``None``). The method targets ``r_t L_t`` equal
            across tasks: a larger ``r_t`` asks for a smaller loss of task ``t``. ``r`` is used as given,
            not renormalized, like the official code (which passes unit-norm circle points): the target
            only depends on its direction, but the balance LP's constraints ``(Cα)_j ≥ (Ca)_j`` scale
            with ``a ∝ r``.
        eps: non-uniformity ``μ_r`` below which the step is a descent step (official: 1e-4).
        relax: drop the "do not increase non-uniformity" constraint of the descent LP (official ``relax``).
    """

    card = MethodCard(
        paper=(
            "Mahapatra & Rajan, 2020, Multi-Task Learning with User Preferences: Gradient Descent with Controlled "
            "Ascent in Pareto Optimization, ICML 2020"
        ),
        url="https://proceedings.mlr.press/v119/mahapatra20a.html",
        equation=(
            "d = Jᵀ β, β from an LP that moves r ⊙ L towards the ray ∝ 1 (controlled ascent) or descends every loss"
        ),
        cost="shared",
        solver="one LP per step (scipy linprog, host)",
        reference=(
            "tests/test_methods_loss_zoo_pref.py::test_epo_lp_matches_the_official_lp_by_brute_force (the official "
            "LP)"
        ),
    )

    preference_param: ClassVar[str | None] = "preference"
    positive_preference: ClassVar[bool] = True

    def __init__(self, preference: Sequence[float] | None = None, eps: float = 1e-4, relax: bool = False) -> None:
        super().__init__()
        if preference is not None:
            r = as_weight_vector(preference)
            if bool((r <= 0).any()):
                raise ValueError(f"epo: every preference entry must be > 0, got {r.tolist()}")
        if not (isinstance(eps, int | float) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if not isinstance(relax, bool):
            raise ValueError(f"relax must be true or false, got {relax!r}")
        self.preference = None if preference is None else [float(v) for v in preference]
        self.eps = float(eps)
        self.relax = relax
        self.register_buffer("pref", torch.zeros(0, dtype=torch.float64), persistent=False)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n = len(task_names)
        r = torch.full((n,), 1.0 / n, dtype=torch.float64) if self.preference is None else (
            as_weight_vector(self.preference, n))
        self.pref = r  # as given: the balance LP depends on the scale of r (see the class docstring)

    def task_weights(self, gram: Tensor, losses: Tensor) -> tuple[Tensor, dict[str, float]]:
        """``T α`` for the Gramian and losses of a step (host LP), and what to log about it."""
        n = self.pref.numel()
        if gram.shape != (n, n) or losses.numel() != n:
            raise ValueError(f"epo: expected {n} tasks (call setup first), got a Gramian of shape {tuple(gram.shape)}")
        r = self.pref.cpu().numpy()
        alpha, move, mu_r = epo_lp(gram.detach().double().cpu().numpy(), losses.detach().double().cpu().numpy(),
                                   r, self.eps, self.relax)
        failed = alpha is None
        if failed:
            alpha = r / r.sum()
        w = n * torch.as_tensor(alpha, dtype=losses.dtype, device=losses.device)
        return w, {"epo/non_uniformity": mu_r, "epo/descent": float(move == "dom"), "epo/lp_failed": float(failed)}

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor | float]:
        jac = ctx.jacobian("shared")
        w, extra = self.task_weights(ctx.gramian("shared"), ctx.loss_values)
        ctx.set_shared_direction(w.to(jac) @ jac)
        ctx.backward_task_specific(w)
        info: dict[str, Tensor | float] = dict(weights_info(self.task_names, w))
        info.update(extra)
        return info
