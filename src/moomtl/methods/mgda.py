"""MGDA and MGDA-UB (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

MGDA updates the shared parameters along the min-norm element of the convex hull of the task
gradients:

.. math::

    \\alpha^\\star = \\arg\\min_{\\alpha \\in \\Delta^{T-1}} \\Big\\lVert \\sum_{t=1}^T \\alpha_t
    \\nabla_{\\theta^{sh}} L_t \\Big\\rVert_2^2 = \\arg\\min_{\\alpha \\in \\Delta} \\alpha^\\top M \\alpha,
    \\qquad M_{st} = \\nabla L_s \\cdot \\nabla L_t,

and ``d = Σ α*_t ∇L_t`` is either 0 (Pareto stationary) or decreases every task (Désidéri, 2012).
MGDA-UB minimizes the upper bound obtained by replacing ``∇_{θ^{sh}} L_t`` with ``∇_Z L_t``, the
gradient w.r.t. the shared representation ``Z = g(x; θ^{sh})``: one backward through the heads
gives all ``T`` rows (and each head's own gradient), then the update of ``Σ α_t L_t``: the encoder gets the
cotangent ``Σ_t α_t ∇_Z L_t`` in one backward, each head ``α_t`` times its kept gradient — the gradient of
``Σ α_t L_t`` without a second pass through the heads (with shared heads: one backward of the weighted sum).

Both solve the min-norm problem on the Gramian only (:func:`moomtl.solvers.min_norm.min_norm`), after
the optional gradient normalization of the authors' code (:mod:`moomtl.methods.normalizers`).

Deliberate choices, following the authors' training code (``train_multi_task.py``): α is computed on
the *normalized* gradients, then the *raw* losses are weighted, i.e. the update is the gradient of
``Σ α_t L_t`` (for the shared parameters ``Σ α_t ∇L_t`` of the un-normalized gradients). Task-specific
parameters therefore receive ``α_t ∇_{θ^t} L_t`` by default (``scale_task_specific=True``, as the
authors' single scaled backward does); with ``scale_task_specific=False`` they get their plain
gradient ``∇_{θ^t} L_t`` as in Algorithm 2 of the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import Tensor

from moomtl.autodiff.context import StepContext, Wrt
from moomtl.methods.base import Method, MethodCard, register, weights_info
from moomtl.methods.normalizers import NORMALIZERS, gradient_scales, normalize_gramian
from moomtl.solvers.min_norm import min_norm

MIN_NORM_SOLVERS = ("active_set", "frank_wolfe", "away_frank_wolfe")


class _MinNormMethod(Method):
    """Shared part of MGDA and MGDA-UB: Gramian → normalization → min-norm weights α."""

    wrt: ClassVar[Wrt] = "shared"
    fuses_rows = True

    def __init__(
        self, normalization: str = "none", max_iter: int | None = None, tol: float | None = None,
        scale_task_specific: bool = True, solver: str | None = None,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZERS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZERS)}, got {normalization!r}")
        if max_iter is not None and max_iter < 1:
            raise ValueError(f"max_iter must be ≥ 1, got {max_iter}")
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if solver is not None and solver not in MIN_NORM_SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(MIN_NORM_SOLVERS)}, got {solver!r}")
        self.normalization = normalization
        self.max_iter = max_iter
        self.tol = tol
        self.scale_task_specific = scale_task_specific
        self.solver = solver

    def task_weights(self, ctx: StepContext) -> Tensor:
        """Min-norm weights α (``[T]``, on the simplex) of this step's (normalized) task gradients."""
        gram = ctx.gramian(self.wrt)
        if self.normalization != "none":  # "none": scales 1, G / (1·1) = G exactly; no tensor ops spent on it
            # Only the loss normalizers read the loss values (in a multi-process run: one all-reduce saved).
            values = ctx.loss_values if self.normalization in ("loss", "loss+") else ctx.local_loss_values
            gram = normalize_gramian(gram, gradient_scales(gram, values, self.normalization))
        kwargs: dict[str, float | int | str] = {}
        if self.max_iter is not None:
            kwargs["max_iter"] = self.max_iter
        if self.tol is not None:
            kwargs["tol"] = self.tol
        if self.solver is not None:
            kwargs["method"] = self.solver
        return min_norm(gram, **kwargs)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        alpha = self.task_weights(ctx)
        ctx.apply_coefficients(alpha, self.wrt, alpha if self.scale_task_specific else None)
        return weights_info(self.task_names or ctx.task_names, alpha)


@register("mgda", "MGDA: min-norm combination of per-task gradients of the shared parameters")
class MGDA(_MinNormMethod):
    """Full MGDA on the gradients w.r.t. the shared parameters (``ctx.jacobian("shared")``).

    The shared update ``Σ α_t ∇_{θ^{sh}} L_t`` is formed from the Jacobian already computed for the
    Gramian, so no extra backward through the encoder is needed; the task-specific parameters get
    one backward through the heads.

    Args:
        normalization: ``"none"`` (the paper), ``"l2"``, ``"loss"`` or ``"loss+"`` (authors' code).
        max_iter, tol, solver: passed to :func:`~moomtl.solvers.min_norm.min_norm` as ``max_iter``,
            ``tol`` and ``method`` (``"active_set"``, ``"frank_wolfe"``, ``"away_frank_wolfe"``);
            the solver's defaults when ``None``.
        scale_task_specific: heads get ``α_t ∇L_t`` (True, authors' code) or ``∇L_t`` (False, paper).
    """

    card = MethodCard(
        paper="Sener & Koltun, 2018, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018",
        url="https://arxiv.org/abs/1810.04650",
        equation="d = Jᵀ α, α = argmin_{α∈Δ} ‖Jᵀ α‖² (the min-norm point of the gradients' convex hull)",
        cost="shared",
        solver="min-norm QP on the T×T Gramian (active set, host)",
        reference="tests/test_weightings.py::test_mgda_matches_torchjd_where_its_frank_wolfe_converges (TorchJD MGDA)",
    )

    wrt: ClassVar[Wrt] = "shared"


@register("mgda_ub", "MGDA-UB: min-norm weights from gradients w.r.t. the shared representation")
class MGDAUB(_MinNormMethod):
    """MGDA-UB: α from ``∇_Z L_t`` (``ctx.jacobian("representation")``), then the gradient of ``Σ α_t L_t``
    (``ctx.apply_coefficients(α, "representation")``: the encoder's backward from z with the cotangent
    ``Σ α_t ∇_Z L_t``). Arguments as :class:`MGDA`.

    >>> import torch
    >>> from moomtl.models.base import HardParameterSharing
    >>> from moomtl.autodiff import StepContext
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> heads = {"a": torch.nn.Linear(4, 1), "b": torch.nn.Linear(4, 1)}
    >>> model = HardParameterSharing(torch.nn.Linear(3, 4), heads)
    >>> x = torch.randn(8, 3)
    >>> z = model.encode(x)
    >>> out = model.decode(z, x)
    >>> losses = {"a": out["a"].pow(2).mean(), "b": (out["b"] - 1).pow(2).mean()}
    >>> method = MGDAUB()
    >>> method.setup(["a", "b"], model)
    >>> info = method.backward(losses, StepContext(model, losses, z))
    >>> round(float(info["weight/a"] + info["weight/b"]), 6)
    1.0
    """

    card = MethodCard(
        paper="Sener & Koltun, 2018, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018",
        url="https://arxiv.org/abs/1810.04650",
        equation="α = argmin_{α∈Δ} ‖Σ_t α_t ∇_z L_t‖², then backward Σ_t α_t L_t (upper bound through z)",
        cost="representation",
        solver="min-norm QP on the T×T Gramian of ∂L/∂z (active set, host)",
        reference=(
            "tests/test_mgda.py::test_mgda_ub_with_identity_encoder_equals_mgda (MGDA, which it equals when z is the "
            "parameters)"
        ),
    )

    wrt: ClassVar[Wrt] = "representation"
