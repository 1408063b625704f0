"""Chebyshev (Tchebycheff) scalarizations and their smooth/augmented/PBI relatives as methods.

Each method minimizes a scalarization :math:`g(L(θ); λ, z)` of the per-task loss vector ``L`` for a
preference vector ``λ`` on the simplex and a reference (ideal) point ``z``
(see :mod:`moomtl.solvers.scalarizations` for the equations). It does so with **one** backward pass:
by the chain rule

.. math:: ∇_θ\\, g(L(θ)) = \\sum_t \\frac{∂g}{∂L_t}\\, ∇_θ L_t,

so the method evaluates ``w = ∂g/∂L`` at the (detached) batch losses and backpropagates
``Σ_t w_t L_t``. ``w`` is what is logged as ``weight/<task>``: for Tchebycheff it is ``λ_a`` on the
active task ``a = argmax_t λ_t (L_t − z_t)`` and 0 elsewhere (``active/<task>`` logs the indicator, so
its epoch mean is the fraction of steps each task was the active one).

Ideal point ``z``:

- ``ideal=None`` (default): ``z = 0``, a valid lower bound for non-negative losses (cross-entropy);
  this is also what LibMOON and the OMD-TCH code use by default.
- ``ideal=[z_1, ..., z_T]``: a fixed, user-given point.
- ``ideal="online"``: ``z_t = min_{s ≤ step} L_t^{(s)} − margin``, the running minimum of each task's
  *batch* loss (updated with the current batch before it is used) minus ``margin``. The running
  minimum is a persistent buffer (``running_min``), so checkpoints keep it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import MethodCard, Weighting, as_weight_vector, parameter_dtype, register, weights_info
from moomtl.solvers import scalarizations as S

IdealSpec = Sequence[float] | str | None


def _parse_ideal(ideal: IdealSpec) -> Tensor | str | None:
    if ideal is None:
        return None
    if isinstance(ideal, str):
        if ideal != "online":
            raise ValueError(f"ideal must be a list of numbers, 'online' or None, got {ideal!r}")
        return "online"
    z = torch.as_tensor(ideal, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(z).all():
        raise ValueError(f"ideal point must be finite, got {z.tolist()}")
    return z


def active_info(task_names: Sequence[str], terms: Tensor) -> dict[str, Tensor]:
    """``{"active/<task>": 1 or 0}``: the indicator of ``argmax_t terms_t`` (the first maximum), as 0-d
    tensors on ``terms``' device (no host sync per step; the epoch mean is the fraction of steps each
    task was the active one)."""
    terms = terms.detach()
    onehot = (torch.arange(terms.numel(), device=terms.device) == torch.argmax(terms)).to(terms.dtype)
    return {f"active/{t}": onehot[i] for i, t in enumerate(task_names)}


class PreferenceMethod(Weighting):
    """Shared plumbing of preference-based methods: the preference ``λ`` (validated, normalized to
    the simplex; uniform ``1/T`` when ``None``) and the ideal point ``z`` (see the module docstring).

    Buffers created in :meth:`setup`: ``pref`` and, for a fixed ideal, ``ideal_point`` (both
    non-persistent: they are configuration), or, for ``ideal="online"``, ``running_min`` (persistent).
    """

    preference_param: ClassVar[str | None] = "preference"

    def __init__(self, preference: Sequence[float] | None = None, ideal: IdealSpec = None,
                 margin: float = 1e-3) -> None:
        super().__init__()
        if preference is not None:
            as_weight_vector(preference)  # fail early on negative/NaN/all-zero input
        if not (isinstance(margin, int | float) and margin >= 0 and margin < float("inf")):
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        self.preference = None if preference is None else [float(v) for v in preference]
        self._ideal = _parse_ideal(ideal)
        self.ideal = ideal if ideal is None or isinstance(ideal, str) else [float(v) for v in ideal]
        self.margin = float(margin)

    @property
    def online_ideal(self) -> bool:
        return isinstance(self._ideal, str)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n = len(task_names)
        if self.preference is None:
            pref = torch.full((n,), 1.0 / n, dtype=torch.float64)
        else:
            pref = as_weight_vector(self.preference, n)
            pref = pref / pref.sum()
        dtype = parameter_dtype(model)
        self.register_buffer("pref", pref.to(dtype), persistent=False)
        if self.online_ideal:
            self.register_buffer("running_min", torch.full((n,), float("inf"), dtype=dtype))
        else:
            z = torch.zeros(n, dtype=torch.float64) if self._ideal is None else self._ideal
            if isinstance(z, Tensor) and z.numel() != n:
                raise ValueError(f"{self.name}: ideal point has {z.numel()} entries for {n} tasks")
            self.register_buffer("ideal_point", torch.as_tensor(z).to(dtype), persistent=False)

    def _require_setup(self) -> None:
        if not hasattr(self, "pref"):
            raise RuntimeError(f"{type(self).__name__}.setup(task_names, model) must be called first")

    def current_ideal(self, losses: Tensor) -> Tensor:
        """The ideal point ``z`` to use with the (detached) batch ``losses``; in online mode this first
        folds ``losses`` into the running minimum (idempotent for repeated calls with one batch)."""
        self._require_setup()
        if self.online_ideal:
            if self.running_min.device != losses.device:
                self.running_min = self.running_min.to(losses.device)
            self.running_min.copy_(torch.minimum(self.running_min, losses.detach().to(self.running_min)))
            return (self.running_min - self.margin).to(losses)
        return self.ideal_point.to(losses)

    def _ideal_info(self, z: Tensor) -> dict[str, Tensor]:
        if not self.online_ideal:
            return {}
        z = z.detach()
        return {f"ideal/{t}": z[i] for i, t in enumerate(self.task_names)}


class ChebyshevFamily(PreferenceMethod):
    """A scalarization ``g(L; λ, z)`` minimized through its gradient weights ``w = ∂g/∂L``.

    Subclasses set :attr:`scalarization` (a function of ``(f, pref, ideal)``) and, for max-type
    scalarizations, :meth:`terms` (the per-task quantities whose max is taken; the argmax is logged
    as the active task).
    """

    def scalarize(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor:
        raise NotImplementedError

    def terms(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor | None:
        return pref * (f - ideal)

    def weights_and_value(self, losses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(w, g, z)``: gradient weights ``∂g/∂L`` at ``losses``, the scalarized value and ``z``."""
        self._require_setup()
        f = losses.detach().clone().requires_grad_(True)
        z = self.current_ideal(f.detach())
        pref = self.pref.to(f)
        with torch.enable_grad():
            value = self.scalarize(f, pref, z)
            (w,) = torch.autograd.grad(value, f)
        return w, value.detach(), z

    def weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        return self.weights_and_value(losses)[0]

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        f = ctx.loss_values
        w, value, z = self.weights_and_value(f)
        ctx.backward_weighted(w)
        info = weights_info(self.task_names, w)
        info["scalarized"] = value
        terms = self.terms(f, self.pref.to(f), z)
        if terms is not None:
            info.update(active_info(self.task_names, terms))
        info.update(self._ideal_info(z))
        return info


@register("tch", "Tchebycheff scalarization max_t λ_t (L_t − z_t) for a preference λ")
class Tchebycheff(ChebyshevFamily):
    """Weighted Tchebycheff scalarization :math:`\\min_θ \\max_t λ_t (L_t(θ) − z_t)`.

    Every weakly Pareto-optimal point is a minimizer for some λ (Choo & Atkins, 1983), also on
    non-convex parts of the front where linear scalarization only finds endpoints. Each step
    descends the currently active (largest weighted) task only.

    >>> m = Tchebycheff(preference=[1.0, 3.0])
    >>> m.setup(["a", "b"], None)
    >>> m.weights(torch.tensor([2.0, 0.5]), None).tolist()
    [0.25, 0.0]
    """

    card = MethodCard(
        paper=(
            "Choo & Atkins, 1983, Proper efficiency in nonconvex multicriteria programming, Mathematics of Operations "
            "Research 8(3)"
        ),
        url="https://doi.org/10.1287/moor.8.3.467",
        equation="min_θ max_t λ_t (L_t − z_t)",
        cost="loss",
        state="running minimum of the losses when ideal='online' (else none)",
        reference=(
            "tests/test_scalarizations.py::test_method_gradient_equals_backprop_of_the_scalarized_objective (autograd "
            "of the scalarization)"
        ),
    )

    def __init__(self, preference: Sequence[float] | None = None, ideal: IdealSpec = None,
                 margin: float = 1e-3) -> None:
        super().__init__(preference, ideal, margin)

    def scalarize(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor:
        return S.tchebycheff(f, pref, ideal)


@register("stch", "smooth Tchebycheff μ log Σ_t exp(λ_t (L_t − z_t)/μ) (Lin et al., 2024)")
class SmoothTchebycheff(ChebyshevFamily):
    """Smooth Tchebycheff :math:`\\min_θ μ \\log \\sum_t \\exp(λ_t (L_t − z_t)/μ)`: weights are
    ``λ ∘ softmax(λ (L − z)/μ)``, between linear-like (large μ) and Tchebycheff (μ → 0).

    >>> m = SmoothTchebycheff(preference=[1.0, 1.0], mu=1e-3)
    >>> m.setup(["a", "b"], None)
    >>> [round(v, 4) for v in m.weights(torch.tensor([2.0, 0.5]), None).tolist()]
    [0.5, 0.0]
    """

    card = MethodCard(
        paper="Lin et al., 2024, Smooth Tchebycheff Scalarization for Multi-Objective Optimization, ICML 2024",
        url="https://arxiv.org/abs/2402.19078",
        equation="min_θ μ log Σ_t exp(λ_t (L_t − z_t) / μ)",
        cost="loss",
        state="running minimum of the losses when ideal='online' (else none)",
        reference=(
            "tests/test_scalarizations.py::test_method_gradient_equals_backprop_of_the_scalarized_objective (autograd "
            "of the scalarization)"
        ),
    )

    def __init__(self, preference: Sequence[float] | None = None, ideal: IdealSpec = None,
                 margin: float = 1e-3, mu: float = 0.1) -> None:
        super().__init__(preference, ideal, margin)
        if not mu > 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        self.mu = float(mu)

    def scalarize(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor:
        return S.smooth_tchebycheff(f, pref, ideal, self.mu)


@register("pbi", "penalty-based boundary intersection d1 + θ d2 along the preference ray")
class PBI(ChebyshevFamily):
    """Penalty-based boundary intersection :math:`\\min_θ d_1 + θ_{\\mathrm{pbi}} d_2` (MOEA/D):
    ``d1`` progress along the ray ``z + s λ/||λ||``, ``d2`` distance to it (``theta`` is the penalty).

    >>> m = PBI(preference=[1.0, 1.0], theta=0.0)
    >>> m.setup(["a", "b"], None)
    >>> [round(v, 4) for v in m.weights(torch.tensor([2.0, 0.5]), None).tolist()]
    [0.7071, 0.7071]
    """

    card = MethodCard(
        paper=(
            "Zhang & Li, 2007, MOEA/D: A Multiobjective Evolutionary Algorithm Based on Decomposition, IEEE TEVC "
            "11(6)"
        ),
        url="https://doi.org/10.1109/TEVC.2007.892759",
        equation="min_θ d₁ + θ d₂, d₁ = (L − z)ᵀ λ/‖λ‖, d₂ = ‖L − z − d₁ λ/‖λ‖‖",
        cost="loss",
        state="running minimum of the losses when ideal='online' (else none)",
        reference=(
            "tests/test_scalarizations.py::test_method_gradient_equals_backprop_of_the_scalarized_objective (autograd "
            "of the scalarization)"
        ),
    )

    def __init__(self, preference: Sequence[float] | None = None, ideal: IdealSpec = None,
                 margin: float = 1e-3, theta: float = 5.0) -> None:
        super().__init__(preference, ideal, margin)
        if not theta >= 0:
            raise ValueError(f"theta must be >= 0, got {theta}")
        self.theta = float(theta)

    def scalarize(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor:
        return S.pbi(f, pref, ideal, self.theta)

    def terms(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor | None:
        return None


@register("aug_tch", "augmented Tchebycheff max_t λ_t (L_t − z_t) + ρ Σ_t (L_t − z_t)")
class AugmentedTchebycheff(ChebyshevFamily):
    """Augmented Tchebycheff :math:`\\min_θ \\max_t λ_t (L_t − z_t) + ρ \\sum_t (L_t − z_t)`
    (Steuer & Choo, 1983): the ``ρ`` term gives every task a small gradient and rules out weakly
    Pareto-optimal solutions.

    >>> m = AugmentedTchebycheff(preference=[1.0, 3.0], rho=0.1)
    >>> m.setup(["a", "b"], None)
    >>> [round(v, 4) for v in m.weights(torch.tensor([2.0, 0.5]), None).tolist()]
    [0.35, 0.1]
    """

    card = MethodCard(
        paper=(
            "Steuer & Choo, 1983, An interactive weighted Tchebycheff procedure for multiple objective programming, "
            "Mathematical Programming 26"
        ),
        url="https://doi.org/10.1007/BF02591870",
        equation="min_θ max_t λ_t (L_t − z_t) + ρ Σ_t (L_t − z_t)",
        cost="loss",
        state="running minimum of the losses when ideal='online' (else none)",
        reference=(
            "tests/test_scalarizations.py::test_method_gradient_equals_backprop_of_the_scalarized_objective (autograd "
            "of the scalarization)"
        ),
    )

    def __init__(self, preference: Sequence[float] | None = None, ideal: IdealSpec = None,
                 margin: float = 1e-3, rho: float = 0.01) -> None:
        super().__init__(preference, ideal, margin)
        if not rho >= 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        self.rho = float(rho)

    def scalarize(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor:
        return S.augmented_tchebycheff(f, pref, ideal, self.rho)


@register("mod_tch", "modified weighted Chebyshev max_t λ_t[(L_t − z_t) + ε Σ_j (L_j − z_j)] (MDMTN)")
class ModifiedTchebycheff(ChebyshevFamily):
    """Modified weighted Chebyshev (MWC) of Hotegni et al. (seed 000):
    :math:`\\min_θ \\max_t λ_t [(L_t − z_t) + ε \\sum_j (L_j − z_j)]`, minimized directly (MDMTN
    uses an epigraph form with an augmented Lagrangian; the objective is the same).

    >>> m = ModifiedTchebycheff(preference=[1.0, 3.0], eps=0.1)
    >>> m.setup(["a", "b"], None)
    >>> [round(v, 4) for v in m.weights(torch.tensor([2.0, 0.4]), None).tolist()]
    [0.275, 0.025]
    """

    card = MethodCard(
        paper=(
            "Hotegni, Berkemeier & Peitz, 2024, Multi-Objective Optimization for Sparse Deep Multi-Task Learning, "
            "IJCNN 2024"
        ),
        url="https://arxiv.org/abs/2308.12243",
        equation="min_θ max_t λ_t [(L_t − z_t) + ε Σ_j (L_j − z_j)]",
        cost="loss",
        state="running minimum of the losses when ideal='online' (else none)",
        reference=(
            "tests/test_scalarizations.py::test_method_gradient_equals_backprop_of_the_scalarized_objective (autograd "
            "of the scalarization)"
        ),
    )

    def __init__(self, preference: Sequence[float] | None = None, ideal: IdealSpec = None,
                 margin: float = 1e-3, eps: float = 1e-4) -> None:
        super().__init__(preference, ideal, margin)
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)

    def scalarize(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor:
        return S.modified_tchebycheff(f, pref, ideal, self.eps)

    def terms(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor | None:
        d = f - ideal
        return pref * (d + self.eps * d.sum())


__all__ = [
    "PBI",
    "AugmentedTchebycheff",
    "ChebyshevFamily",
    "ModifiedTchebycheff",
    "PreferenceMethod",
    "SmoothTchebycheff",
    "Tchebycheff",
    "active_info",
]
