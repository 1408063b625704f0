r"""DB-MTL (Lin, Ye, Xu, Shi & Zhang, "Dual-Balancing Multi-Task Learning", 2023), as in LibMTL's
``DB_MTL``.

*Loss-scale balancing*: every task loss is log-transformed, so the task gradients of the shared
parameters are :math:`g_t = \nabla_\theta \log(L_t + \epsilon) = \nabla_\theta L_t / (L_t + \epsilon)`.
*Gradient-magnitude balancing*: an exponential moving average of each task's gradient is kept and every
average is rescaled to the largest norm:

.. math::

    \hat g_t^{(k)} = g_t^{(k)} + \beta_k\,\big(\hat g_t^{(k-1)} - g_t^{(k)}\big), \quad
    \beta_k = \beta / k^{\sigma}, \quad \hat g_t^{(0)} = 0, \qquad
    d^{(k)} = \sum_t \alpha_t \hat g_t^{(k)}, \quad
    \alpha_t = \frac{\max_s \lVert \hat g_s^{(k)} \rVert}{\lVert \hat g_t^{(k)} \rVert + \epsilon},

with :math:`\epsilon = 10^{-8}`, :math:`\beta` = ``beta`` (LibMTL: 0.9) and :math:`\sigma` =
``beta_sigma`` (LibMTL: 0). :math:`d` is the shared parameters' gradient; the task-specific parameters
get the gradient of their own log-loss, :math:`\nabla \log(L_t + \epsilon)`, as LibMTL's per-task
``backward`` of the log-losses gives them. ``weight/<task>`` logs :math:`\alpha_t`.

State: the moving averages ``grad_ema`` (``[T, n_shared]``, the size of T copies of the shared
parameters, as in LibMTL) and the step count ``steps``, both persistent buffers (bit-identical resume).
No host synchronization per step. Only gradients w.r.t. the shared parameters are supported (LibMTL
refuses ``rep_grad`` too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, register, weights_info
from moomtl.models.base import MultiTaskModel

_EPS = 1e-8


def db_mtl_direction(jac: Tensor, losses: Tensor, ema: Tensor, step: Tensor, beta: float,
                     beta_sigma: float) -> tuple[Tensor, Tensor, Tensor]:
    """One DB-MTL step: ``(d, α, new_ema)`` from the raw-loss Jacobian ``jac`` (``[T, n]``), the losses,
    the previous moving averages and the (already incremented, 1-based) step count."""
    g = jac / (losses + _EPS).unsqueeze(1)
    beta_k = beta / step.to(jac.dtype) ** beta_sigma
    new_ema = g + beta_k * (ema - g)
    norms = new_ema.norm(dim=1)
    alpha = norms.max() / (norms + _EPS)
    return alpha @ new_ema, alpha, new_ema


@register("db_mtl", "DB-MTL (Lin et al. 2023): log-losses, EMA task gradients rescaled to the largest norm")
class DBMTL(Method):
    """DB-MTL; see the module docstring.

    Args:
        beta: moving-average coefficient β ∈ [0, 1) (LibMTL default 0.9).
        beta_sigma: decay exponent σ ≥ 0 of β_k = β / k^σ (LibMTL default 0).
    """

    card = MethodCard(
        paper="Lin et al., 2023, Dual-Balancing for Multi-Task Learning, arXiv:2308.12029",
        url="https://arxiv.org/abs/2308.12029",
        equation="g_t = ∇ log(L_t + ε), ĝ_t an EMA of g_t (rate β / k^σ), d = Σ_t (max_s ‖ĝ_s‖ / ‖ĝ_t‖) ĝ_t",
        cost="shared",
        state="EMA of every task's shared gradient (T × n) and the step count",
        reference="tests/test_methods_loss_zoo.py::test_db_mtl_matches_libmtl_over_several_steps (LibMTL DB_MTL)",
    )

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0) -> None:
        super().__init__()
        if not (isinstance(beta, int | float) and 0 <= beta < 1):
            raise ValueError(f"beta must be a number in [0, 1), got {beta!r}")
        if not (isinstance(beta_sigma, int | float) and math.isfinite(beta_sigma) and beta_sigma >= 0):
            raise ValueError(f"beta_sigma must be a finite number >= 0, got {beta_sigma!r}")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)
        self.register_buffer("grad_ema", torch.zeros(0, 0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        if not isinstance(model, MultiTaskModel):
            raise ValueError("db_mtl needs a MultiTaskModel (it reads shared_parameters())")
        shared = model.shared_parameters()
        if not shared:
            raise ValueError("db_mtl: the model has no shared parameters")
        n = sum(p.numel() for p in shared)
        self.grad_ema = torch.zeros(len(task_names), n, dtype=shared[0].dtype, device=shared[0].device)
        self.steps = torch.zeros((), dtype=torch.int64, device=shared[0].device)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        jac = ctx.jacobian("shared")
        lv = ctx.loss_values.to(jac)
        if self.grad_ema.shape != jac.shape:
            raise ValueError(f"db_mtl: Jacobian of shape {tuple(jac.shape)} does not match the state "
                             f"{tuple(self.grad_ema.shape)} (call setup(task_names, model) first)")
        if self.grad_ema.device != jac.device:
            self.grad_ema = self.grad_ema.to(jac.device)
            self.steps = self.steps.to(jac.device)
        with torch.no_grad():
            self.steps += 1
            d, alpha, ema = db_mtl_direction(jac, lv, self.grad_ema.to(jac), self.steps, self.beta, self.beta_sigma)
            self.grad_ema.copy_(ema)
        ctx.set_shared_direction(d)
        ctx.backward_task_specific(1.0 / (lv + _EPS))
        return weights_info(self.task_names, alpha)
