"""SDMGrad, stochastic direction-oriented multi-objective gradient descent (Xiao, Ban & Ji,
"Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms", NeurIPS 2023).

SDMGrad looks for the update closest to the MGDA direction while staying near the mean gradient
``g_0 = (1/T) Σ_t g_t``; its weights solve, on the simplex,

.. math::

    w^\\star = \\arg\\min_{w \\in \\Delta^{T-1}} \\tfrac12 \\lVert G^\\top w \\rVert^2 + \\lambda\\, w^\\top G g_0 ,
    \\qquad d = \\frac{G^\\top w^\\star + \\lambda g_0}{1 + \\lambda} ,

(``G`` the ``T × n`` Jacobian, ``λ`` the regularization toward the mean: ``λ = 0`` is MGDA, ``λ → ∞``
the mean gradient). As in LibMTL, the weights are not solved to optimality but improved by ``niter``
projected heavy-ball steps per training step, warm-started from the previous step's ``w`` (a buffer,
initialized to ``1/T``): with the Gramian normalized by the squared mean gradient norm,
``Ĝ = GGᵀ / ((mean_t ‖g_t‖)² + 10^{-8})``,

.. math::

    b \\leftarrow \\mu b + (\\hat G w + \\lambda \\hat G \\mathbf 1 / T), \\qquad
    w \\leftarrow \\Pi_{\\Delta}(w - \\eta\\, b),

``η = lr`` (5) and ``μ = momentum`` (0.5), the momentum ``b`` starting at 0 every training step (LibMTL
builds a fresh ``torch.optim.SGD`` per step). The Euclidean projection
:func:`~moomtl.solvers.simplex.project_simplex` (``check=False``) runs on the device without a host
sync. Task-specific parameters get their plain gradients ``∇L_t``.

Differences from LibMTL's ``SDMGrad`` (``LibMTL/weighting/SDMGrad.py``), deliberate: LibMTL (like the
paper) uses three independent mini-batches — ``ξ, ξ'`` for the unbiased estimate ``G_ξ G_{ξ'}ᵀ`` of the
Gramian and ``ζ`` for the update — and back-propagates the heads three times; here all three are the
step's one batch (so ``GGᵀ``, and the heads get ``∇L_t`` once). ``lr`` and ``momentum`` of the inner loop,
hard-coded in LibMTL, are hyper-parameters with LibMTL's values as defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, register, weights_info
from moomtl.solvers.simplex import project_simplex


def sdmgrad_weights(gramian: Tensor, w: Tensor, lamda: float, niter: int, lr: float = 5.0,
                    momentum: float = 0.5) -> Tensor:
    """``niter`` projected heavy-ball steps on the SDMGrad dual from ``w`` (see the module docstring)."""
    g = (gramian + gramian.T) / 2
    scale = torch.diagonal(g).clamp_min(0).sqrt().mean()
    g = g / (scale**2 + 1e-8)
    gg0 = g.mean(dim=1)
    w = w.to(g.dtype)
    buf = torch.zeros_like(w)
    for _ in range(niter):
        buf = momentum * buf + (g @ w + lamda * gg0)
        w = project_simplex(w - lr * buf, check=False)
    return w


def _check(name: str, value: float, low: float, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}{']' if high < math.inf else ')'}, "
                         f"got {value!r}")
    return float(value)


@register("sdmgrad", "SDMGrad (Xiao et al. 2023): MGDA regularized toward the mean gradient (lamda, niter)")
class SDMGrad(Method):
    """SDMGrad (see the module docstring).

    Args:
        lamda: regularization toward the mean gradient, ``λ ≥ 0`` (LibMTL's ``SDMGrad_lamda``, default 0.3).
        niter: projected-gradient steps on the weights per training step (``SDMGrad_niter``, default 20).
        lr: step size of those steps (LibMTL: 5).
        momentum: their heavy-ball momentum, in ``[0, 1)`` (LibMTL: 0.5).
    """

    card = MethodCard(
        paper=(
            "Xiao, Ban & Ji, 2023, Direction-oriented Multi-objective Learning: Simple and Provable Stochastic "
            "Algorithms, NeurIPS 2023"
        ),
        url="https://arxiv.org/abs/2305.18409",
        equation="w = argmin_{w∈Δ} ½ ‖Jᵀ w‖² + λ wᵀ J g₀ (g₀ the mean gradient), d = Jᵀ (w + λ/T) / (1 + λ)",
        cost="shared",
        solver="niter projected-gradient steps with momentum on the simplex (device)",
        state="the weights w (warm start)",
        reference="tests/test_methods_gradient_zoo.py::test_sdmgrad_matches_libmtl_over_steps (LibMTL SDMGrad)",
    )

    def __init__(self, lamda: float = 0.3, niter: int = 20, lr: float = 5.0, momentum: float = 0.5) -> None:
        super().__init__()
        self.lamda = _check("lamda", lamda, 0.0)
        if isinstance(niter, bool) or not isinstance(niter, int) or niter < 0:
            raise ValueError(f"niter must be a non-negative integer, got {niter!r}")
        self.niter = niter
        self.lr = _check("lr", lr, 0.0, low_open=True)
        self.momentum = _check("momentum", momentum, 0.0, 1.0)
        if self.momentum == 1.0:
            raise ValueError("momentum must be < 1, got 1.0")
        self.register_buffer("w", torch.zeros(0))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        params = list(model.parameters())
        dtype = params[0].dtype if params else torch.get_default_dtype()
        device = params[0].device if params else None
        t = len(task_names)
        self.w = torch.full((t,), 1.0 / t, dtype=dtype, device=device)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        jac = ctx.jacobian("shared")
        if self.w.shape != (jac.shape[0],):
            raise ValueError(f"SDMGrad was set up for {self.w.numel()} tasks, the step has {jac.shape[0]}")
        w = sdmgrad_weights(ctx.gramian("shared"), self.w, self.lamda, self.niter, self.lr, self.momentum)
        self.w.copy_(w)
        coef = (w + self.lamda / w.numel()) / (1.0 + self.lamda)
        ctx.set_shared_direction(coef.to(jac.dtype) @ jac)
        ctx.backward_task_specific(None)
        return weights_info(self.task_names or ctx.task_names, coef)
