"""MoCo, multi-objective gradient correction (Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating
Gradient Bias in Multi-objective Learning: A Provably Convergent Approach", ICLR 2023).

Stochastic MGDA is biased: the min-norm weights of noisy gradients are not the min-norm weights of the
true ones. MoCo tracks the task gradients with a moving average ``Y`` (``T × n_shared``) and updates the
weights ``λ`` by one gradient step on ``½ ‖Yᵀλ‖² + (ρ/2)‖λ‖²`` per training step. At step ``k ≥ 1``, with
the loss-scaled unit gradients ``ĝ_t = L_t\\, g_t / (‖g_t‖ + 10^{-8})`` (LibMTL's normalization),

.. math::

    Y \\leftarrow Y - \\beta_k (Y - \\hat G), \\qquad
    \\lambda \\leftarrow \\Pi\\big(\\lambda - \\gamma_k (Y Y^\\top + \\rho I)\\, \\lambda\\big), \\qquad
    d = Y^\\top \\lambda ,

with ``β_k = β / k^{σ_β}``, ``γ_k = γ / k^{σ_γ}``; ``Y`` starts at 0 and ``λ`` at ``1/T``. ``Π`` maps back to
the simplex: ``"softmax"`` (default, LibMTL's ``MoCo``: ``softmax`` of the updated vector) or
``"projection"`` (the paper's Euclidean projection ``Π_Δ``). ``d`` is written to the shared parameters;
task-specific parameters get their plain gradients ``∇L_t`` (as in LibMTL). ``Y``, ``λ`` and ``k`` are
buffers created in :meth:`MoCo.setup` (``Y`` sized from the model's shared parameters); the step sizes are
computed on the device, so no step reads a value on the host.

Differences from LibMTL (``LibMTL/weighting/MoCo.py``), deliberate: the paper's projection is available as
``lambda_update="projection"``; LibMTL's softmax (a softmax of ``λ`` itself, not of ``log λ``, so not an
exponentiated-gradient step) stays the default for comparability.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, register, shared_size, weights_info
from moomtl.solvers.simplex import project_simplex

LAMBDA_UPDATES = ("softmax", "projection")



def _finite(name: str, value: float, positive: bool = False) -> float:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value)) or value < 0 or (
            positive and value == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '≥ 0'}, got {value!r}")
    return float(value)


@register("moco", "MoCo (Fernando et al. 2023): tracked gradients + stochastic MGDA weights (beta, gamma, rho)")
class MoCo(Method):
    """MoCo (see the module docstring).

    Args:
        beta: step size of the gradient tracking ``Y`` (``MoCo_beta``, default 0.5), in ``(0, 1]``.
        beta_sigma: decay exponent of ``β_k`` (``MoCo_beta_sigma``, default 0.5).
        gamma: step size of the weights ``λ`` (``MoCo_gamma``, default 0.1).
        gamma_sigma: decay exponent of ``γ_k`` (``MoCo_gamma_sigma``, default 0.5).
        rho: ℓ2 regularization of ``λ``'s update (``MoCo_rho``, default 0).
        lambda_update: ``"softmax"`` (LibMTL) or ``"projection"`` (the paper).
    """

    card = MethodCard(
        paper=(
            "Fernando et al., 2023, Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent "
            "Approach, ICLR 2023"
        ),
        url="https://openreview.net/forum?id=dLAYGdKTi2",
        equation="Y ← Y − β_k (Y − J) (tracked gradients), λ ← Π_Δ(λ − γ_k (Y Yᵀ + ρ I) λ), d = Yᵀ λ",
        cost="shared",
        state="tracked gradients Y (T × n), weights λ and the step count",
        reference="tests/test_methods_gradient_zoo.py::test_moco_matches_libmtl_over_steps (LibMTL MoCo)",
    )

    def __init__(self, beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1, gamma_sigma: float = 0.5,
                 rho: float = 0.0, lambda_update: str = "softmax") -> None:
        super().__init__()
        self.beta = _finite("beta", beta, positive=True)
        if self.beta > 1:
            raise ValueError(f"beta must be in (0, 1] (Y moves towards the gradients), got {beta!r}")
        self.beta_sigma = _finite("beta_sigma", beta_sigma)
        self.gamma = _finite("gamma", gamma)
        self.gamma_sigma = _finite("gamma_sigma", gamma_sigma)
        self.rho = _finite("rho", rho)
        if lambda_update not in LAMBDA_UPDATES:
            raise ValueError(f"lambda_update must be one of {', '.join(LAMBDA_UPDATES)}, got {lambda_update!r}")
        self.lambda_update = lambda_update
        self.register_buffer("y", torch.zeros(0, 0))
        self.register_buffer("lambd", torch.zeros(0))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n, dtype, device = shared_size(model)
        t = len(task_names)
        self.y = torch.zeros(t, n, dtype=dtype, device=device)
        self.lambd = torch.full((t,), 1.0 / t, dtype=dtype, device=device)
        self.step = torch.zeros((), dtype=torch.int64, device=device)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        jac = ctx.jacobian("shared")
        if jac.shape != self.y.shape:
            raise ValueError(f"MoCo was set up for a {tuple(self.y.shape)} Jacobian, the step has "
                             f"{tuple(jac.shape)} (call setup with this model)")
        y = self.y
        norms = torch.diagonal(ctx.gramian("shared")).clamp_min(0).sqrt().to(y.dtype)
        g_hat = jac.to(y.dtype) * (ctx.loss_values.to(y.dtype) / (norms + 1e-8)).unsqueeze(1)
        self.step.add_(1)
        k = self.step.to(y.dtype)
        beta_k = self.beta * k.pow(-self.beta_sigma)
        gamma_k = self.gamma * k.pow(-self.gamma_sigma)
        y.sub_(beta_k * (y - g_hat))
        t = y.shape[0]
        reg = y @ y.T + self.rho * torch.eye(t, dtype=y.dtype, device=y.device)
        raw = self.lambd - gamma_k * (reg @ self.lambd)
        lam = torch.softmax(raw, dim=-1) if self.lambda_update == "softmax" else project_simplex(raw, check=False)
        self.lambd.copy_(lam)
        ctx.set_shared_direction((lam @ y).to(jac.dtype))
        ctx.backward_task_specific(None)
        return weights_info(self.task_names or ctx.task_names, lam)
