"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks", ICML 2018).

The network minimizes ``Σ_t w_t L_t`` with learnable weights ``w_t`` (renormalized to ``Σ_t w_t = T``
after every step). The weights minimize, with the target treated as a constant,

.. math::

    L_{grad}(w) = \\sum_{t=1}^T \\big| G_W^{(t)} - \\bar G_W \\, [r_t]^{\\alpha} \\big|_1, \\qquad
    G_W^{(t)} = \\lVert \\nabla_W\\, w_t L_t \\rVert_2, \\quad
    \\tilde L_t = \\frac{L_t}{L_t(0)}, \\quad r_t = \\frac{\\tilde L_t}{\\operatorname{mean}_s \\tilde L_s},

where ``W`` is the last shared layer's weight, ``\\bar G_W`` the mean of the ``G_W^{(t)}`` and
``L_t(0)`` the loss of the first training step (kept in the ``initial_losses`` buffer, so it
survives checkpoints). ``α`` sets how strongly training rates are equalized.

Implementation notes. ``G_W^{(t)} = w_t \\lVert \\nabla_W L_t \\rVert`` is linear in ``w_t``, so the
gradient of ``L_grad`` w.r.t. ``w`` is ``sign(G^{(t)} − target_t) · ‖∇_W L_t‖`` in closed form — no
second-order backward is needed. The weights are an ``nn.Parameter`` of the method, stepped by the
trainer's optimizer (the paper uses the model's optimizer as well); after each step they are clipped at
0 and rescaled to sum to ``T`` (reset to 1 if they all reach 0). ``W`` is the shared parameter named
``layer``, by default the last shared parameter tensor with at least two dimensions (the last shared
layer's weight matrix, e.g. ``encoder.fc.weight`` of the HPS LeNet; a bias is skipped because its
gradient is a poor proxy for the layer's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff import StepContext
from moomtl.events import TrainState
from moomtl.methods.base import Method, MethodCard, parameter_dtype, register, weights_info
from moomtl.models.base import MultiTaskModel


def gradnorm_weight_grad(
    weights: Tensor, grad_norms: Tensor, losses: Tensor, initial_losses: Tensor, alpha: float
) -> Tensor:
    """``∂L_grad/∂w`` with the target held constant (see the module docstring).

    Args:
        weights: ``w`` (``[T]``); grad_norms: ``‖∇_W L_t‖`` (``[T]``); losses: ``L_t`` (``[T]``);
        initial_losses: ``L_t(0)`` (``[T]``); alpha: the asymmetry hyper-parameter.

    >>> gradnorm_weight_grad(torch.ones(2), torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]),
    ...                      torch.tensor([1.0, 1.0]), alpha=1.5)   # target 2 for both tasks
    tensor([-1.,  3.])
    """
    g = weights * grad_norms
    inv_rate = losses / initial_losses.clamp_min(torch.finfo(losses.dtype).tiny)
    r = inv_rate / inv_rate.mean().clamp_min(torch.finfo(losses.dtype).tiny)
    target = g.mean() * r.pow(alpha)
    return torch.sign(g - target) * grad_norms


def last_shared_weight_name(model: nn.Module) -> str:
    """Name (in ``model.named_parameters()``) of the last shared parameter with ≥ 2 dimensions, or of
    the last shared parameter if none has."""
    if not isinstance(model, MultiTaskModel):
        raise ValueError("gradnorm needs a MultiTaskModel (it reads shared_parameters())")
    shared = {id(p) for p in model.shared_parameters()}
    named = [(n, p) for n, p in model.named_parameters() if id(p) in shared]
    if not named:
        raise ValueError("gradnorm: the model has no shared parameters")
    matrices = [n for n, p in named if p.ndim >= 2]
    return matrices[-1] if matrices else named[-1][0]


@register("gradnorm", "GradNorm (Chen et al. 2018): learned weights equalizing task gradient norms (α)")
class GradNorm(Method):
    """GradNorm; see the module docstring.

    Args:
        alpha: the restoring-force strength ``α`` (paper: 0.12–3; 1.5 in its NYUv2 experiments).
        layer: name of the shared parameter ``W`` whose gradient norms are balanced (default: the last
            shared parameter tensor with ≥ 2 dimensions).
    """

    card = MethodCard(
        paper=(
            "Chen et al., 2018, GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask "
            "Networks, ICML 2018"
        ),
        url="https://arxiv.org/abs/1711.02257",
        equation=(
            "backward Σ_t w_t L_t; w descends Σ_t |w_t ‖∇_W L_t‖ − mean_s(w_s ‖∇_W L_s‖) r_t^α|, r_t the relative "
            "inverse training rate"
        ),
        cost="layer",
        solver="the T gradients w.r.t. the last shared layer W: the rows at z, then one batched product down to W",
        state="learned task weights w (a parameter) and the first step's losses",
        reference=(
            "tests/test_baselines.py::test_gradnorm_weight_gradient_and_update_on_a_tiny_model (the weight gradient "
            "by hand)"
        ),
    )

    def __init__(self, alpha: float = 1.5, layer: str | None = None) -> None:
        super().__init__()
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be finite and ≥ 0, got {alpha}")
        self.alpha = float(alpha)
        self.layer = layer
        self.layer_name: str | None = None
        self.loss_weights = nn.Parameter(torch.ones(0))
        self.register_buffer("initial_losses", torch.zeros(0))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        t, dtype = len(task_names), parameter_dtype(model)
        self.loss_weights = nn.Parameter(torch.ones(t, dtype=dtype))
        self.initial_losses = torch.full((t,), float("nan"), dtype=dtype)
        if self.layer is None:
            self.layer_name = last_shared_weight_name(model)
        else:
            names = dict(model.named_parameters())
            if self.layer not in names:
                raise ValueError(f"gradnorm: model has no parameter {self.layer!r}")
            if not isinstance(model, MultiTaskModel):
                raise ValueError("gradnorm needs a MultiTaskModel (it reads shared_parameters())")
            shared = {id(p) for p in model.shared_parameters()}
            if id(names[self.layer]) not in shared:
                raise ValueError(f"gradnorm: parameter {self.layer!r} is not a shared parameter")
            self.layer_name = self.layer

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        if self.layer_name is None:
            raise ValueError("gradnorm: call setup() before backward()")
        lv = ctx.loss_values
        # L_t(0): recorded on the first step (entries still NaN), on the device: no host read per step
        self.initial_losses = torch.where(torch.isnan(self.initial_losses), lv.to(self.initial_losses.dtype),
                                          self.initial_losses)
        w_param = ctx.model.get_parameter(self.layer_name)
        # ∇_W L_t: rows at z in one call, then one batched product down to W when W reaches the losses only
        # through z (the last shared layer); else T calls (StepContext.jacobian)
        jac = ctx.jacobian([w_param])
        norms = jac.norm(dim=1)
        w = self.loss_weights.detach()
        gw = gradnorm_weight_grad(w.to(norms), norms, lv.to(norms), self.initial_losses.to(norms), self.alpha)
        gw = gw.to(self.loss_weights)
        self.loss_weights.grad = gw if self.loss_weights.grad is None else self.loss_weights.grad + gw
        # ∇(Σ w_t L_t): from the rows at z and the heads' gradients already taken (no second pass through the
        # heads) when there are any, else one backward
        ctx.apply_coefficients(w, "representation", head_weights=w)
        info = weights_info(self.task_names, w)
        info.update({f"grad_norm/{t}": v for t, v in zip(self.task_names, norms.unbind(), strict=True)})
        return info

    def on_step_end(self, state: TrainState) -> None:
        self.renormalize()

    @torch.no_grad()
    def renormalize(self) -> None:
        """Clip the weights at 0 and rescale them to sum to ``T`` (all ones if they all vanished)."""
        w = self.loss_weights
        w.clamp_(min=0.0)
        total = w.sum()
        ok = torch.isfinite(total) & (total > 0)  # on the device: no host read per step
        scale = w.numel() / torch.where(ok, total, torch.ones_like(total))  # finite where it is used
        w.copy_(torch.where(ok, w * scale, torch.ones_like(w)))
