"""Modified Weighted Chebyshev (MWC) scalarization solved by an augmented Lagrangian (Hotegni, Berkemeier
& Peitz, "Multi-Objective Optimization for Sparse Deep Multi-Task Learning", arXiv:2308.12243).

Objectives ``f = (f_1, ..., f_m)`` are the task losses, optionally preceded by a sparsity objective
``f_0 = Ω(W)`` (the GrOWL penalty of the regularized weights). With preference ``k ≥ 0``, reference
point ``a`` and augmentation ``ε`` the MWC problem in epigraph form is

.. math::
    \\min_{\\theta, t}\\ t \\quad \\text{s.t.}\\quad
    c_i(\\theta, t) = k_i\\Big[(f_i - a_i) + \\varepsilon \\sum_j (f_j - a_j)\\Big] - t \\le 0,

i.e. :math:`\\min_\\theta \\max_i k_i[(f_i - a_i) + \\varepsilon \\sum_j (f_j - a_j)]`; the ε-term makes
every solution Pareto optimal (not only weakly). It is solved with the Powell–Hestenes–Rockafellar
augmented Lagrangian for inequality constraints,

.. math::
    L(\\theta, t; \\lambda, \\mu) = t + \\frac{1}{2\\mu} \\sum_i \\big[\\max(0, \\lambda_i + \\mu c_i)^2
    - \\lambda_i^2\\big],

whose inner minimization over ``(θ, t)`` is done by the trainer's optimizer steps (``θ``) and, by
default, exactly in ``t`` (:func:`phr_optimal_t`, a 1-D water-filling), and whose outer updates are

.. math:: \\lambda_i \\leftarrow \\max(0, \\lambda_i + \\mu \\bar c_i), \\qquad
          \\mu \\leftarrow \\min(\\rho\\mu, \\mu_{\\max}),

every ``outer_every`` epochs (``on_epoch_end``) or steps (``on_step_end``). ``c̄`` is the mean of the
batch constraint vectors (detached) over the **last epoch** (epoch mode) or over the last
``outer_every`` steps (step mode): a running estimate, since the constraints of the full training set
are not re-evaluated. At a KKT point ``∂L/∂t = 0`` gives ``Σ λ_i = 1``, and the network is trained on
``Σ_i λ_i k_i ∇[(f_i − a_i) + ε Σ_j (f_j − a_j)]``: λ are the Chebyshev dual weights.

``t`` is an ``nn.Parameter`` of this method (saved in checkpoints). With ``t_update="optimizer"`` (the
paper's scheme) it is trainable, so the optimizer the trainer builds over ``model.parameters() +
method.parameters()`` updates and zeroes it, and it starts at the first batch's ``max_i s_i`` (every
constraint feasible, the largest active) unless ``t_init`` is given. Then ``t`` moves at most about
``lr`` per Adam step (``|∂L/∂t| ≤ 1`` away from the optimum), so the losses cannot fall faster than
``t`` follows; when they do, every ``λ_i + μc_i`` turns negative, the network gets no gradient and the
next outer update sets ``λ = 0``. Measured on the tiny real MultiMNIST (2,000 train images, HPS,
k = (0.01, 0.8, 0.19), 6 epochs of 32 steps, Adam lr 2.5e-3): ``"optimizer"`` ends with test accuracy
0.47/0.11 and λ = 0, ``"exact"`` with 0.89/0.72 (linear scalarization (0.8, 0.19): 0.89/0.81). Hence
the default ``t_update="exact"``: ``t`` is set every step to its exact minimizer (``requires_grad``
off, so the optimizer leaves it alone); by the envelope theorem the network's gradient is then that of
the inner problem minimized over ``t``. Both modes converge on the convex toy problems of the tests.

Scale of the sparsity objective: ``f_0`` is a sum of row norms, ≈ 237 for the MDMTN of MultiMNIST and
≈ 20 for its HPS network at PyTorch's initialization, against cross-entropies ≈ 2.3, so ``k_0`` must be
small for a trade-off. Measured (MDMTN, tiny real MultiMNIST, 6 epochs, Adam 2.5e-3, ``k = (k_0, 0.8,
0.19)``): ``k_0 = 0`` → f_0 237, test acc 0.91/0.77; ``1e-3`` → 189, 0.91/0.75; ``5e-3`` → 49,
0.90/0.63; ``0.1`` → 6.3, 0.83/0.12 (the sparsity objective dominates the max). The paper's k_0 values
(0.1 … 1e-4) were chosen for code in which ``f_0`` had no gradient, so they do not carry over.

Deliberate differences from the authors' code (salomonhotegni/MDMTN):

- The inequalities are treated as inequalities (PHR): λ stays ≥ 0. The code uses the equality-type
  penalty ``λᵀc + μ/2 ||c||²`` and ``λ ← λ + μc`` (λ may turn negative).
- The sparsity objective is differentiable (``growl_penalty`` on the live weights): the code computes it
  from ``state_dict()`` (detached tensors), so no gradient reaches it.
- The trainer zeroes every gradient each step (the code never zeroes ``t`` nor the gates).
- ``t`` is minimized exactly by default (see above); with ``t_update="optimizer"`` it starts at the
  first batch's ``max_i s_i`` instead of the code's ``N(0, 1)`` draw.
- Scale of μ: the code's ``μ0 ≈ 1e-8`` makes the penalty vanish (with ``λ0 = 1/m`` the method is then a
  fixed linear scalarization). Here ``μ0 = 1`` by default. With ``t_update="optimizer"``, plain gradient
  descent on ``t`` is stable for ``lr · μ · m < 2`` (``∂²L/∂t² = μ · #active``; divide by
  ``1 − momentum`` for heavy-ball), hence the cap ``mu_max``; Adam is insensitive to it.

The multipliers ``λ`` (buffer ``multipliers``), the penalty ``μ`` (buffer ``penalty``) and the
constraint accumulator are buffers, so checkpoints keep them; the list of outer steps (``history``:
constraint mean, violation, KKT residual, λ, μ) is saved as the module's extra state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.events import TrainState
from moomtl.methods.base import Method, MethodCard, as_weight_vector, parameter_dtype, register

OuterUnit = Literal["epoch", "step"]
TUpdate = Literal["exact", "optimizer"]


# --- pure tensor math ----------------------------------------------------------------------------------
def mwc_scalarized(f: Tensor, k: Tensor, a: Tensor, epsilon: float = 1e-4) -> Tensor:
    """``s_i = k_i[(f_i − a_i) + ε Σ_j (f_j − a_j)]`` (the MWC value is ``max_i s_i``).

    >>> import torch
    >>> mwc_scalarized(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.25]), torch.zeros(2), 0.1)
    tensor([0.6500, 0.5750])
    """
    d = f - a
    return k * (d + epsilon * d.sum())


def mwc_constraints(f: Tensor, t: Tensor, k: Tensor, a: Tensor, epsilon: float = 1e-4) -> Tensor:
    """Epigraph constraints ``c_i = k_i[(f_i − a_i) + ε Σ_j (f_j − a_j)] − t`` (feasible when ``≤ 0``)."""
    return mwc_scalarized(f, k, a, epsilon) - t


def phr_augmented_lagrangian(t: Tensor, c: Tensor, lam: Tensor, mu: Tensor | float) -> Tensor:
    """PHR augmented Lagrangian of ``min t s.t. c ≤ 0``:
    ``L = t + (1/(2μ)) Σ_i [max(0, λ_i + μ c_i)² − λ_i²]``.

    Its gradients are ``∂L/∂t = 1 − Σ_i max(0, λ_i + μc_i)`` (through ``c = s − t``) and
    ``∂L/∂c_i = max(0, λ_i + μc_i)``.

    >>> import torch
    >>> phr_augmented_lagrangian(torch.tensor(0.3), torch.tensor([0.35, 0.275]), torch.tensor([0.2, 0.0]), 2.0)
    tensor(0.5681)
    """
    if not isinstance(mu, Tensor) and mu <= 0:  # a tensor μ (the method's buffer) is > 0 by construction
        raise ValueError(f"the penalty μ must be > 0, got {mu}")
    shifted = torch.clamp(lam + mu * c, min=0.0)
    return t + (shifted.square() - lam.square()).sum() / (2 * mu)


def phr_multiplier_update(lam: Tensor, c: Tensor, mu: Tensor | float) -> Tensor:
    """First-order multiplier update for inequalities: ``λ ← max(0, λ + μ c)`` (always ``≥ 0``).

    >>> import torch
    >>> phr_multiplier_update(torch.tensor([0.5, 0.5]), torch.tensor([0.1, -1.0]), 2.0)
    tensor([0.7000, 0.0000])
    """
    return torch.clamp(lam + mu * c, min=0.0)


def phr_optimal_t(s: Tensor, lam: Tensor, mu: Tensor | float) -> Tensor:
    """Exact minimizer over ``t`` of the PHR Lagrangian with ``c = s − t``:
    ``argmin_t t + (1/(2μ)) Σ_i max(0, λ_i + μ(s_i − t))²``.

    Stationarity is ``Σ_i max(0, λ_i + μ(s_i − t)) = 1``; with breakpoints ``b_i = s_i + λ_i/μ`` sorted
    decreasingly the solution is ``t = (Σ_{i≤j} b_(i) − 1/μ)/j`` for the largest ``j`` with
    ``b_(j) > t_j`` (the same water-filling as a simplex projection). At this ``t`` the weights
    ``max(0, λ_i + μc_i)`` sum to 1. Returned detached.

    >>> import torch
    >>> phr_optimal_t(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), 1.0)  # only b_1 = 1 active
    tensor(0.)
    >>> phr_optimal_t(torch.tensor([1.0, 0.9]), torch.tensor([0.0, 0.0]), 10.0)  # (1.9 − 0.1)/2
    tensor(0.9000)
    """
    b = (s + lam / mu).detach().reshape(-1)
    b_sorted = torch.sort(b, descending=True).values
    j = torch.arange(1, b.numel() + 1, dtype=b.dtype, device=b.device)
    t_j = (torch.cumsum(b_sorted, 0) - 1.0 / mu) / j
    # The qualifying j form a prefix 1..J (as in simplex projection) and j = 1 always qualifies
    # (b_(1) − t_1 = 1/μ > 0), so J = count; indexing with a tensor avoids a device sync.
    n_active = (b_sorted > t_j).sum()
    return t_j[n_active - 1]


def phr_residual(c: Tensor, lam: Tensor, mu: Tensor | float) -> Tensor:
    """KKT residual of the inequality constraints ``max_i |max(c_i, −λ_i/μ)|``: zero iff ``c ≤ 0``,
    ``λ ≥ 0`` and ``λ_i c_i = 0`` (feasibility and complementarity)."""
    return torch.maximum(c, -lam / mu).abs().max()


# --- the sparsity objective ---------------------------------------------------------------------------
class _SparsityObjective:
    """``f_0 = Σ_g Ω_θ(W_g)``: the GrOWL penalty of the selected layers' row matrices, read live from the
    parameters (so ``f_0`` has real gradients). The layers are resolved once, at set-up."""

    def __init__(
        self, model: nn.Module, kind: str, beta1: float, beta2: float, include: Sequence[str] | None
    ) -> None:
        # Imported here: the sparsity package is only needed when the sparsity objective is used.
        from moomtl.sparsity.grouping import regularized_groups
        from moomtl.sparsity.growl import WEIGHT_KINDS, growl_weights

        if kind not in WEIGHT_KINDS:
            raise ValueError(f"unknown GrOWL weight sequence {kind!r}; choose one of {', '.join(WEIGHT_KINDS)}")
        growl_weights(1, kind, beta1, beta2)  # validates β1, β2 now rather than at the first step
        self.kind, self.beta1, self.beta2 = kind, beta1, beta2
        self.groups = regularized_groups(model, include)
        if not self.groups:
            raise ValueError(
                "mwc_alm: the sparsity objective has no layer to regularize "
                f"(regularize={None if include is None else list(include)})"
            )

    def value(self) -> Tensor:
        from moomtl.sparsity.growl import growl_objective

        return growl_objective(self.groups, self.kind, self.beta1, self.beta2)  # type: ignore[arg-type]


# --- the training method -------------------------------------------------------------------------------
@register("mwc_alm", "modified weighted Chebyshev scalarization solved by a PHR augmented Lagrangian")
class MWCALM(Method):
    """MWC scalarization + PHR augmented Lagrangian (see the module docstring for the equations).

    Args:
        preference: ``k``, one weight per task, or ``1 + T`` weights whose first is the sparsity
            objective's ``k_0`` (then ``f_0`` = GrOWL penalty of the regularized weights is added).
        reference: reference point ``a`` (same length as ``preference``; zeros by default).
        epsilon: augmentation coefficient ``ε`` (``1e-4`` in the paper).
        mu, rho, mu_max: initial penalty ``μ``, its growth factor ``ρ ≥ 1`` per outer step, and its cap.
        outer_every, outer_unit: an outer (λ, μ) update every ``outer_every`` epochs or steps.
        lambda_init: initial λ (scalar or one per objective); ``1/m`` by default (as in the paper's code).
        t_init: initial ``t`` (``t_update="optimizer"``); by default the first batch's ``max_i s_i``.
        t_update: ``"exact"`` (default): ``t`` is set every step to the exact minimizer of ``L`` over ``t``
            (:func:`phr_optimal_t`), the network gets ``∇_θ L(θ, t*)``; ``"optimizer"``: ``t`` is a
            trainable parameter updated by the trainer's optimizer, as in the paper.
        growl_weights, growl_beta1, growl_beta2: the GrOWL weight sequence θ of ``f_0`` (``"spike"``,
            ``"linear"``, ``"oscar"`` or ``"ramp"``, see :func:`moomtl.sparsity.growl.growl_weights`;
            the paper's code uses spike with ``β1 = 0.8``, ``β2 = 0.2``).
        regularize: modules whose weights enter ``f_0`` (names or prefixes of ``model.named_modules()``);
            ``None``: the default selection of :mod:`moomtl.sparsity.grouping` (shared trunk and
            monitors, not the input layer nor the heads).

    >>> import torch
    >>> m = MWCALM(preference=[0.8, 0.2])
    >>> m.setup(["a", "b"], torch.nn.Linear(1, 1))
    >>> m.multipliers.tolist(), float(m.penalty)
    ([0.5, 0.5], 1.0)
    """

    card = MethodCard(
        paper=(
            "Hotegni, Berkemeier & Peitz, 2024, Multi-Objective Optimization for Sparse Deep Multi-Task Learning, "
            "IJCNN 2024"
        ),
        url="https://arxiv.org/abs/2308.12243",
        equation=(
            "min t s.t. k_i[(f_i − a_i) + ε Σ_j (f_j − a_j)] ≤ t by a PHR augmented Lagrangian; λ ← max(0, λ + μ c̄), "
            "μ ← min(ρμ, μ_max)"
        ),
        cost="loss",
        solver="exact minimizer in t (sort of m numbers, device)",
        state="multipliers λ, penalty μ, t, the constraint accumulator, the outer-step history",
        reference=(
            "tests/test_mwc_alm.py::test_alm_converges_to_the_pareto_point_of_the_preference (the Pareto point of the "
            "preference on convex quadratics)"
        ),
    )

    preference_param = "preference"

    def __init__(
        self, preference: Sequence[float] | None = None, reference: Sequence[float] | None = None,
        epsilon: float = 1e-4,
        mu: float = 1.0, rho: float = 2.0, mu_max: float = 10.0, outer_every: int = 1,
        outer_unit: OuterUnit = "epoch", lambda_init: float | Sequence[float] | None = None,
        t_init: float | None = None, growl_weights: str = "spike", growl_beta1: float = 0.8,
        growl_beta2: float = 0.2, regularize: Sequence[str] | None = None, t_update: TUpdate = "exact",
    ) -> None:
        super().__init__()
        if preference is None:  # uniform over the tasks, sized in setup()
            if reference is not None:
                raise ValueError("reference needs a preference of the same length")
            k = torch.zeros(0, dtype=torch.float64)
        else:
            try:
                k = as_weight_vector(preference)
            except ValueError as e:
                raise ValueError(f"preference: {e}") from None
        a = torch.zeros_like(k) if reference is None else torch.as_tensor(reference, dtype=torch.float64)
        if a.shape != k.shape or not torch.isfinite(a).all():
            raise ValueError(f"reference must be finite with one entry per preference ({k.numel()}), got {a.tolist()}")
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"epsilon must be ≥ 0, got {epsilon}")
        if not (math.isfinite(mu) and mu > 0):
            raise ValueError(f"mu must be > 0, got {mu}")
        if not (math.isfinite(rho) and rho >= 1):
            raise ValueError(f"rho must be ≥ 1 (μ must not shrink), got {rho}")
        if not (mu_max >= mu):
            raise ValueError(f"mu_max must be ≥ mu, got mu_max={mu_max}, mu={mu}")
        if int(outer_every) != outer_every or outer_every < 1:
            raise ValueError(f"outer_every must be a positive integer, got {outer_every}")
        if outer_unit not in ("epoch", "step"):
            raise ValueError(f"outer_unit must be 'epoch' or 'step', got {outer_unit!r}")
        if t_update not in ("exact", "optimizer"):
            raise ValueError(f"t_update must be 'exact' or 'optimizer', got {t_update!r}")
        if t_init is not None and not math.isfinite(t_init):
            raise ValueError(f"t_init must be finite, got {t_init}")
        self.preference = k.tolist()
        self.reference = a.tolist()
        self.epsilon = float(epsilon)
        self.mu = float(mu)
        self.rho = float(rho)
        self.mu_max = float(mu_max)
        self.outer_every = int(outer_every)
        self.outer_unit: OuterUnit = outer_unit
        self.lambda_init = lambda_init
        self.t_init = t_init
        self.t_update: TUpdate = t_update
        self.growl_weights = growl_weights
        self.growl_beta1 = float(growl_beta1)
        self.growl_beta2 = float(growl_beta2)
        self.regularize = None if regularize is None else list(regularize)
        self.register_buffer("k", k)
        self.register_buffer("a", a)
        # The auxiliary epigraph variable: a parameter, so checkpoints keep it and, with
        # t_update="optimizer", the trainer's optimizer updates (and zeroes) it; with "exact" it is set to
        # its inner minimizer every step and left out of the optimizer (requires_grad=False).
        self.t = nn.Parameter(
            torch.tensor(0.0 if t_init is None else float(t_init)), requires_grad=t_update == "optimizer"
        )
        self.register_buffer("t_initialized", torch.tensor(t_init is not None))
        self.history: list[dict[str, Any]] = []
        self._sparsity: _SparsityObjective | None = None
        # Host-side mirrors of device state, re-read from the buffers after set-up or a restore (None).
        self._t_ready = False  # t_initialized has been applied (t_update="optimizer")
        self._n_since_outer: int | None = None  # batches accumulated since the last outer step (c_count)

    # --- set-up -----------------------------------------------------------------------------------
    @property
    def with_sparsity(self) -> bool:
        return len(self.preference) == self.n_tasks + 1

    @property
    def objective_names(self) -> tuple[str, ...]:
        return ("sparsity", *self.task_names) if self.with_sparsity else self.task_names

    @property
    def sparsity_groups(self) -> list[Any]:
        """The :class:`~moomtl.sparsity.grouping.RegularizedGroup` s of ``f_0`` (empty without it)."""
        return [] if self._sparsity is None else list(self._sparsity.groups)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        # t in the model's precision; in place, so an optimizer already holding t keeps the same object
        self.t.data = self.t.data.to(parameter_dtype(model))
        if not self.preference:  # preference=None: 1/T on each task, reference 0
            n = len(task_names)
            self.k = torch.full((n,), 1.0 / n, dtype=torch.float64, device=self.k.device)
            self.a = torch.zeros(n, dtype=torch.float64, device=self.a.device)
            self.preference, self.reference = self.k.tolist(), self.a.tolist()
        m, n = len(self.preference), self.n_tasks
        if m not in (n, n + 1):
            raise ValueError(
                f"mwc_alm: {m} preferences for {n} tasks; give {n} (tasks) or {n + 1} (sparsity first, then tasks)"
            )
        if self.lambda_init is None:
            lam = torch.full((m,), 1.0 / m, dtype=torch.float64)
        else:
            lam = torch.as_tensor(self.lambda_init, dtype=torch.float64).reshape(-1)
            if lam.numel() not in (1, m):
                raise ValueError(f"lambda_init needs 1 or {m} entries (one per objective), got {lam.numel()}")
            lam = lam.expand(m).clone()
            if not torch.isfinite(lam).all() or (lam < 0).any():
                raise ValueError(f"lambda_init must be finite and ≥ 0, got {lam.tolist()}")
        self.register_buffer("multipliers", lam)
        self.register_buffer("penalty", torch.tensor(self.mu, dtype=torch.float64))
        self.register_buffer("c_sum", torch.zeros(m, dtype=torch.float64))
        self.register_buffer("c_count", torch.tensor(0, dtype=torch.int64))
        self.history = []
        self._t_ready, self._n_since_outer = False, 0
        self._sparsity = (
            _SparsityObjective(model, self.growl_weights, self.growl_beta1, self.growl_beta2, self.regularize)
            if self.with_sparsity else None
        )

    # --- one step ---------------------------------------------------------------------------------
    def objectives(self, ctx: StepContext) -> Tensor:
        """``f`` of this batch, attached to the graph: ``(Ω(W), L_1, ..., L_T)`` or ``(L_1, ..., L_T)``."""
        losses = ctx.loss_vector
        if self._sparsity is None:
            return losses
        return torch.cat([self._sparsity.value().to(losses).reshape(1), losses])

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        if not hasattr(self, "multipliers"):
            raise RuntimeError("mwc_alm: call setup(task_names, model) before training")
        f = self.objectives(ctx)
        k, a = self.k.to(f), self.a.to(f)
        lam, mu = self.multipliers.to(f), self.penalty.to(f)
        s = mwc_scalarized(f, k, a, self.epsilon)
        if self.t_update == "exact":
            # Exact minimization over t (a 1-D convex piecewise quadratic); by the envelope theorem the
            # gradient w.r.t. θ at t* is that of L(θ, t*) with t* held fixed.
            with torch.no_grad():
                self.t.copy_(phr_optimal_t(s, lam, mu))
                self.t_initialized.fill_(True)
        elif not self._t_ready:
            # t starts at the first batch's max_i s_i unless t_init (or a checkpoint) set it: decided on
            # the device (where), so no host read of ``t_initialized``; after one step it is set for good.
            with torch.no_grad():
                self.t.copy_(torch.where(self.t_initialized, self.t, s.detach().max().to(self.t)))
                self.t_initialized.fill_(True)
            self._t_ready = True
        t = self.t.to(f.dtype)
        c = s - t
        lagrangian = phr_augmented_lagrangian(t, c, lam, mu)
        lagrangian.backward()
        with torch.no_grad():
            self.c_sum += c.detach().to(self.c_sum)
            self.c_count += 1
        # Detached copies (t, μ and λ change in place later), left on the device: no host sync per step.
        lam_now = self.multipliers.detach().clone()
        info = {
            "mwc_alm/t": self.t.detach().clone(),
            "mwc_alm/lagrangian": lagrangian.detach(),
            "mwc_alm/chebyshev": s.detach().max(),
            "mwc_alm/max_c": c.detach().max(),
            "mwc_alm/mu": self.penalty.detach().clone(),
        }
        info.update({f"mwc_alm/lambda/{n}": lam_now[i] for i, n in enumerate(self.objective_names)})
        if self._sparsity is not None:
            info["mwc_alm/sparsity_objective"] = f[0].detach()
        return info

    # --- outer loop -------------------------------------------------------------------------------
    def mean_constraints(self) -> Tensor | None:
        """Mean of the batch constraint vectors accumulated since the last outer update (or epoch)."""
        n = int(self.c_count)
        return None if n == 0 else self.c_sum / n

    @torch.no_grad()
    def outer_update(self, epoch: int | None = None, step: int | None = None) -> dict[str, Any] | None:
        """``λ ← max(0, λ + μ c̄)``, ``μ ← min(ρμ, μ_max)`` with ``c̄`` the accumulated mean constraints;
        returns (and appends to :attr:`history`) the record of this outer step, or ``None`` when no
        batch was seen since the last one."""
        c = self.mean_constraints()
        if c is None:
            return None
        lam, mu = self.multipliers, self.penalty
        record: dict[str, Any] = {
            "outer": len(self.history) + 1,
            "epoch": epoch,
            "step": step,
            "mu": float(mu),
            "violation": float(torch.clamp(c, min=0.0).max()),
            "residual": float(phr_residual(c, lam, mu)),
            "constraints": c.tolist(),
            "lambda_before": lam.tolist(),
        }
        lam.copy_(phr_multiplier_update(lam, c, mu))
        mu.fill_(min(self.rho * float(mu), self.mu_max))
        record["lambda"] = lam.tolist()
        record["mu_next"] = float(mu)
        record["t"] = float(self.t.detach())
        self.history.append(record)
        self._reset_accumulator()
        return record

    def _reset_accumulator(self) -> None:
        self.c_sum.zero_()
        self.c_count.zero_()
        self._n_since_outer = 0

    def on_step_end(self, state: TrainState) -> None:
        if self.outer_unit != "step":
            return
        # Counted on the host (the c_count buffer is read once after set-up or a restore), so only the
        # outer steps themselves read device values.
        if self._n_since_outer is None:
            self._n_since_outer = int(self.c_count)
        else:
            self._n_since_outer += 1
        if self._n_since_outer >= self.outer_every:
            self.outer_update(epoch=state.epoch, step=state.step)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.outer_unit == "epoch":
            if (state.epoch + 1) % self.outer_every == 0:
                self.outer_update(epoch=state.epoch, step=state.step)
            else:
                # c̄ is the mean over the *last* epoch only: older batches saw older weights.
                self._reset_accumulator()
        # Log the latest outer step with the epoch's metrics (the full list is in ``history``).
        if self.history:
            record = self.history[-1]
            state.epoch_metrics["mwc_alm/outer_steps"] = len(self.history)
            state.epoch_metrics["mwc_alm/violation"] = record["violation"]
            state.epoch_metrics["mwc_alm/residual"] = record["residual"]
            state.epoch_metrics["mwc_alm/mu_used"] = record["mu"]
            new = dict(zip(self.objective_names, record["lambda"], strict=True))
            state.epoch_metrics.update({f"mwc_alm/lambda_new/{n}": v for n, v in new.items()})

    # --- checkpointing ----------------------------------------------------------------------------
    def get_extra_state(self) -> Any:
        return {"history": list(self.history)}

    def set_extra_state(self, state: Any) -> None:
        self.history = list(state.get("history", [])) if isinstance(state, dict) else []
        self._t_ready, self._n_since_outer = False, None  # restored buffers: read them again

    def extra_repr(self) -> str:
        return (
            f"preference={self.preference}, reference={self.reference}, epsilon={self.epsilon}, mu={self.mu}, "
            f"rho={self.rho}, mu_max={self.mu_max}, outer_every={self.outer_every}, outer_unit={self.outer_unit!r}, "
            f"t_update={self.t_update!r}"
        )
