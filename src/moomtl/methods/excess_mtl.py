"""ExcessMTL, robust multi-task learning with excess risks (He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust
Multi-Task Learning with Excess Risks", ICML 2024).

Instead of weighting tasks by their loss (which favours noisy tasks), ExcessMTL weights them by an
estimate of their *excess risk* ``L_t(θ) − L_t^*``. A second-order expansion around the task optimum with a
diagonal Hessian approximation ``H_t`` gives ``L_t − L_t^* ≈ ½ g_tᵀ H_t^{-1} g_t``; the Hessian diagonal is
approximated, as in AdaGrad, by the root of the accumulated squared gradients. At step ``k``:

.. math::

    S_t \\leftarrow S_t + g_t \\odot g_t, \\qquad
    e_t = g_t^\\top \\operatorname{diag}\\big(\\sqrt{S_t + 10^{-7}}\\big)^{-1} g_t ,

the first step stores ``e^{(1)}`` (weights stay 1), and later steps update the weights by an
exponentiated-gradient (mirror ascent) step on the normalized excess risks,

.. math::

    \\lambda_t \\leftarrow \\lambda_t \\exp\\!\\big(\\eta\\, e_t / e_t^{(1)}\\big), \\qquad
    \\lambda \\leftarrow T \\lambda / \\textstyle\\sum_s \\lambda_s ,

``η`` the ``robust_step_size``. The network is trained on ``Σ_t λ_t L_t`` (one backward pass, task-specific
parameters included). The state — ``S`` (``T × n_shared``), ``e^{(1)}``, ``λ`` and whether ``e^{(1)}`` is set
— lives in buffers created in :meth:`ExcessMTL.setup` (sized from the model's shared parameters); the
first-step switch is a ``torch.where`` on the device, so no step reads a value on the host.

Follows LibMTL's ``ExcessMTL`` (``LibMTL/weighting/ExcessMTL.py``, itself from the authors' code) on the
shared-parameter gradients. Difference, deliberate: a task whose first-step ``e^{(1)}`` is 0 (a zero
gradient) gets a ratio of 0 instead of LibMTL's ``inf``/NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, register, shared_size, weights_info

_EPS = 1e-7  # LibMTL's guard under the square root



@register("excess_mtl", "ExcessMTL (He et al. 2024): weights by estimated excess risk, exponentiated gradient")
class ExcessMTL(Method):
    """ExcessMTL (see the module docstring).

    Args:
        robust_step_size: the exponentiated-gradient step ``η ≥ 0`` on the weights (LibMTL's
            ``robust_step_size``, default 0.01; 0 keeps equal weights).
    """

    card = MethodCard(
        paper="He et al., 2024, Robust Multi-Task Learning with Excess Risks, ICML 2024",
        url="https://arxiv.org/abs/2402.02009",
        equation=(
            "S_t += g_t ⊙ g_t, e_t = g_tᵀ diag(√(S_t + 10⁻⁷))⁻¹ g_t, w ← w ⊙ exp(η e/e⁽¹⁾) normalized, backward Σ_t "
            "w_t L_t"
        ),
        cost="shared",
        state="accumulated squared gradients (T × n), the first excess risks, the task weights",
        reference="tests/test_methods_gradient_zoo.py::test_excess_mtl_matches_libmtl_over_steps (LibMTL ExcessMTL)",
    )

    def __init__(self, robust_step_size: float = 1e-2) -> None:
        super().__init__()
        if isinstance(robust_step_size, bool) or not (
            isinstance(robust_step_size, int | float) and math.isfinite(robust_step_size) and robust_step_size >= 0
        ):
            raise ValueError(f"robust_step_size must be finite and ≥ 0, got {robust_step_size!r}")
        self.robust_step_size = float(robust_step_size)
        self.register_buffer("grad_sq_sum", torch.zeros(0, 0))
        self.register_buffer("initial_risk", torch.zeros(0))
        self.register_buffer("loss_weight", torch.zeros(0))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n, dtype, device = shared_size(model)
        t = len(task_names)
        self.grad_sq_sum = torch.zeros(t, n, dtype=dtype, device=device)
        self.initial_risk = torch.zeros(t, dtype=dtype, device=device)
        self.loss_weight = torch.ones(t, dtype=dtype, device=device)
        self.initialized = torch.zeros((), dtype=torch.bool, device=device)

    def excess_risks(self, jac: Tensor) -> Tensor:
        """Accumulate ``g_t²`` into ``S_t`` and return ``e_t = g_tᵀ diag(√(S_t + 1e-7))^{-1} g_t`` (``[T]``)."""
        if jac.shape != self.grad_sq_sum.shape:
            raise ValueError(f"ExcessMTL was set up for a {tuple(self.grad_sq_sum.shape)} Jacobian, "
                             f"the step has {tuple(jac.shape)} (call setup with this model)")
        self.grad_sq_sum.add_(jac.to(self.grad_sq_sum.dtype) ** 2)
        h = torch.sqrt(self.grad_sq_sum + _EPS)
        return (jac.to(h.dtype) ** 2 / h).sum(dim=1)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        risk = self.excess_risks(ctx.jacobian("shared"))
        first = ~self.initialized
        initial = torch.where(first, risk, self.initial_risk)
        ok = initial > 0
        ratio = torch.where(ok, risk / torch.where(ok, initial, torch.ones_like(initial)), torch.zeros_like(risk))
        updated = self.loss_weight * torch.exp(self.robust_step_size * ratio)
        updated = updated / updated.sum() * updated.numel()
        self.loss_weight.copy_(torch.where(first, self.loss_weight, updated))
        self.initial_risk.copy_(initial)
        self.initialized.fill_(True)
        w = self.loss_weight.detach().clone()
        ctx.apply_coefficients(w, "shared", head_weights=w)  # from the Jacobian already taken: no second pass
        return weights_info(self.task_names or ctx.task_names, self.loss_weight)
