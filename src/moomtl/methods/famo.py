r"""FAMO (Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023).

Task weights come from logits :math:`\xi \in \mathbb{R}^T`, :math:`z = \operatorname{softmax}(\xi)`. The
network minimizes the weighted log-losses, normalized so that the weights of the raw losses sum to 1:

.. math::

    \mathcal{L}(\theta) = \sum_t \frac{z_t}{c} \log\big(L_t(\theta) - L_t^\star + \epsilon\big),
    \qquad c = \sum_t \frac{z_t}{L_t - L_t^\star + \epsilon}\ \text{(a constant)},

i.e. one backward pass of :math:`\sum_t w_t L_t` with :math:`w_t = z_t / (c\,(L_t - L_t^\star + \epsilon))`
(``weight/<task>``). The logits follow their own Adam step (learning rate ``w_lr``, coupled weight decay
``gamma``, Adam's default betas and eps) on the change of the log-losses caused by the last update:

.. math::

    \delta = \log(L^{(k)} - L^\star + \epsilon) - \log(L^{(k+1)} - L^\star + \epsilon), \qquad
    \xi \leftarrow \operatorname{Adam}\big(\xi,\ J_{\operatorname{softmax}}(\xi)^\top \delta + \gamma\,\xi\big),

where :math:`J_{\operatorname{softmax}} = \operatorname{diag}(z) - z z^\top`. :math:`L^\star = 0` and
:math:`\epsilon = 10^{-8}` as in the official code and LibMTL.

Deliberate difference from the official code (Cranial-XIX/FAMO) and LibMTL: both evaluate
:math:`L^{(k+1)}` with an extra forward pass on the *same* batch right after ``optimizer.step()``. A
method here sees no batch after the step (``on_step_end`` only carries the pre-update losses), so
:math:`L^{(k+1)}` is the loss of the *next* step's batch at the updated parameters: the logits are
updated at the start of step ``k + 1``, before its weights are computed (the same order as the
official code: the update of step ``k``'s result precedes step ``k + 1``'s weights). This costs no extra
forward pass but adds batch-to-batch noise to :math:`\delta`; the first step has no previous loss and
leaves :math:`\xi` at 0. The official ``max_norm`` gradient clipping is not part of the method (LibMTL
omits it too).

State (persistent buffers, so a resumed run continues bit for bit): ``logits`` (ξ), the Adam moments
``exp_avg``/``exp_avg_sq`` and step count ``adam_steps``, ``prev_losses`` and ``has_prev``. The
conditional first-step logic uses ``torch.where``: no host synchronization per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, parameter_dtype, register, weights_info

_EPS = 1e-8  # the official code's ε inside the logarithm
_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, as the official code uses
_ADAM_EPS = 1e-8


def famo_weights(logits: Tensor, losses: Tensor) -> Tensor:
    """``w_t = z_t / (c (L_t + ε))`` with ``z = softmax(ξ)`` and ``c = Σ_t z_t / (L_t + ε)``: the gradient
    of ``Σ_t (z_t / c) log(L_t + ε)`` w.r.t. the losses (``c`` held constant); the weights sum to 1.

    >>> famo_weights(torch.zeros(2), torch.tensor([1.0, 3.0])).tolist()   # ∝ 1 / L
    [0.75, 0.25]
    """
    z = torch.softmax(logits, dim=-1)
    d = losses + _EPS
    c = (z / d).sum()
    return z / (c * d)


@register("famo", "FAMO (Liu et al. 2023): softmax-logit weights of log-losses, logits stepped by loss decrease")
class FAMO(Method):
    """FAMO; see the module docstring.

    Args:
        w_lr: learning rate of the logits' Adam step (official and LibMTL: 0.025).
        gamma: weight decay of the logits (official code: 0.01; LibMTL's default: 0.001).
    """

    card = MethodCard(
        paper="Liu et al., 2023, FAMO: Fast Adaptive Multitask Optimization, NeurIPS 2023",
        url="https://arxiv.org/abs/2306.03792",
        equation="w_t ∝ softmax(ξ)_t / L_t (log-loss balancing); ξ stepped by the decrease of the log-losses",
        cost="loss",
        state="the logits ξ, their Adam state and the previous step's losses",
        reference=(
            "tests/test_methods_loss_zoo.py::test_famo_matches_the_official_update_sequence (the official FAMO code)"
        ),
    )

    def __init__(self, w_lr: float = 0.025, gamma: float = 0.01) -> None:
        super().__init__()
        if not (isinstance(w_lr, int | float) and math.isfinite(w_lr) and w_lr > 0):
            raise ValueError(f"w_lr must be a finite number > 0, got {w_lr!r}")
        if not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        self.w_lr = float(w_lr)
        self.gamma = float(gamma)
        for name in ("logits", "exp_avg", "exp_avg_sq", "prev_losses"):
            self.register_buffer(name, torch.zeros(0))
        self.register_buffer("adam_steps", torch.zeros(()))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n, dtype = len(task_names), parameter_dtype(model)
        for name in ("logits", "exp_avg", "exp_avg_sq", "prev_losses"):
            setattr(self, name, torch.zeros(n, dtype=dtype))
        self.adam_steps = torch.zeros((), dtype=dtype)
        self.has_prev = torch.zeros((), dtype=torch.bool)

    def _require_setup(self, losses: Tensor) -> None:
        if self.logits.numel() != losses.numel():
            raise ValueError(f"famo: expected {self.logits.numel()} losses (call setup first), got {losses.numel()}")

    @torch.no_grad()
    def update_logits(self, losses: Tensor) -> None:
        """Fold the current losses in: an Adam step of ξ on ``δ = log L_prev − log L`` (skipped, without
        a host sync, when there is no previous loss), then remember ``losses`` as the previous ones."""
        self._require_setup(losses)
        cur = losses.detach().to(self.logits)
        xi = self.logits
        z = torch.softmax(xi, dim=-1)
        delta = torch.log(self.prev_losses + _EPS) - torch.log(cur + _EPS)
        grad = z * (delta - (z * delta).sum()) + self.gamma * xi  # J_softmax^T δ + γ ξ (Adam's L2 decay)
        b1, b2 = _BETAS
        step = self.adam_steps + 1
        m = b1 * self.exp_avg + (1 - b1) * grad
        v = b2 * self.exp_avg_sq + (1 - b2) * grad * grad
        bc1 = 1 - b1**step
        bc2_sqrt = torch.sqrt(1 - b2**step)
        new_xi = xi - (self.w_lr / bc1) * m / (torch.sqrt(v) / bc2_sqrt + _ADAM_EPS)
        go = self.has_prev
        self.logits.copy_(torch.where(go, new_xi, xi))
        self.exp_avg.copy_(torch.where(go, m, self.exp_avg))
        self.exp_avg_sq.copy_(torch.where(go, v, self.exp_avg_sq))
        self.adam_steps.copy_(torch.where(go, step, self.adam_steps))
        self.prev_losses.copy_(cur)
        self.has_prev.fill_(True)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        lv = ctx.loss_values
        self.update_logits(lv)
        w = famo_weights(self.logits, lv.to(self.logits)).to(lv)
        ctx.backward_weighted(w)
        info = weights_info(self.task_names, w)
        info.update({f"logit/{t}": v for t, v in zip(self.task_names, self.logits.detach().clone(), strict=True)})
        return info
