"""IMTL, impartial multi-task learning (Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial
Multi-task Learning", ICLR 2021): IMTL-L on the losses, IMTL-G on the shared gradients, and both (IMTL).

**IMTL-L** (``imtl_l``) learns a log-scale ``s_t`` per task (an ``nn.Parameter`` trained by the model's
optimizer) and minimizes

.. math:: \\mathcal{L}(\\theta, s) = \\sum_t e^{s_t} L_t(\\theta) - s_t ,

whose optimum over ``s_t`` is ``e^{s_t} L_t = 1``: every scaled loss is driven to the same value.

**IMTL-G** picks the aggregation ``g = Σ_t α_t g_t`` with ``Σ_t α_t = 1`` whose projections on the unit
task gradients ``u_t = g_t/‖g_t‖`` are all equal, ``g·u_1 = g·u_t``. With ``D_t = g_1 − g_t`` and
``U_t = u_1 − u_t`` (``t = 2..T``, rows) this is the closed form (the paper's Eq. 9)

.. math:: \\alpha_{2:T} = g_1 U^\\top (D U^\\top)^{-1}, \\qquad \\alpha_1 = 1 - \\textstyle\\sum_{t\\ge2} \\alpha_t ,

computed here from the Gramian alone (``g_i·u_j = G_ij/√G_jj``) by :func:`_imtl_g_weights`.

**IMTL** (``imtl``, the hybrid, as LibMTL's ``IMTL``): the losses are IMTL-L scaled, ``L̃_t = e^{s_t}L_t −
s_t``, and the shared parameters get the IMTL-G aggregation of the scaled gradients ``g̃_t = e^{s_t} g_t``;
the heads get ``e^{s_t}∇L_t`` and ``s_t`` gets ``e^{s_t}L_t − 1``.

Differences from LibMTL (``LibMTL/weighting/IMTL.py``), deliberate: ``(DUᵀ)^{-1}`` is a pseudo-inverse
(``torch.linalg.pinv``; equal to the inverse when it exists, and no error or host sync when two unit
gradients coincide), and a zero task gradient has ``u_t = 0`` instead of NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, register, weights_info


def _imtl_g_weights(gramian: Tensor) -> Tensor:
    """IMTL-G's ``α`` (``[T]``, summing to 1; same dtype and device, no host sync) from the Gramian
    ``G = JJᵀ`` of the task gradients: ``(αᵀJ)·u_t`` is the same for every ``t``.

    >>> w = _imtl_g_weights(torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    >>> [round(v, 12) for v in w.tolist()]   # ‖g_1‖ = 2, ‖g_2‖ = 1, orthogonal: 2α_1 = α_2
    [0.333333333333, 0.666666666667]
    """
    if gramian.ndim != 2 or gramian.shape[0] != gramian.shape[1] or gramian.shape[0] == 0:
        raise ValueError(f"gramian must be a non-empty square matrix, got shape {tuple(gramian.shape)}")
    t = gramian.shape[0]
    g = (gramian + gramian.T) / 2
    if t == 1:
        return torch.ones(1, dtype=g.dtype, device=g.device)
    norms = torch.diagonal(g).clamp_min(0).sqrt()
    inv = torch.where(norms > 0, 1.0 / norms.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(norms))
    k = g * inv.unsqueeze(0)  # k[i, j] = g_i · u_j
    a = k[0, 0] - k[0, 1:]  # (g_1 Uᵀ)_t = g_1·(u_1 − u_t)
    du = a.unsqueeze(0) - k[1:, 0:1] + k[1:, 1:]  # (D Uᵀ)[s, t] = (g_1 − g_s)·(u_1 − u_t)
    rest = a @ torch.linalg.pinv(du)
    return torch.cat([(1 - rest.sum()).reshape(1), rest])


class _LossScales(Method):
    """Learned log-scales ``s_t`` (``loss_scale``, an ``nn.Parameter`` created in :meth:`setup`)."""

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        if isinstance(init, bool) or not (isinstance(init, int | float) and math.isfinite(init)):
            raise ValueError(f"init must be a finite number, got {init!r}")
        self.init = float(init)
        self.loss_scale = nn.Parameter(torch.zeros(0))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        ref = next(iter(model.parameters()), None)  # the model's dtype and device
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
        device = ref.device if ref is not None else None
        self.loss_scale = nn.Parameter(torch.full((len(task_names),), self.init, dtype=dtype, device=device))

    def _scales(self, losses: Tensor) -> Tensor:
        if losses.shape != self.loss_scale.shape:
            raise ValueError(f"expected {self.loss_scale.numel()} losses (call setup first), got {tuple(losses.shape)}")
        return self.loss_scale.to(losses.dtype)

    def _info(self, w: Tensor) -> dict[str, Tensor]:
        info = weights_info(self.task_names, w)
        info.update({f"loss_scale/{t}": v for t, v in zip(self.task_names, self.loss_scale.detach(), strict=True)})
        return info


@register("imtl_l", "IMTL-L (Liu et al. 2021): learned loss scales, Σ exp(s_t) L_t − s_t")
class IMTLL(_LossScales):
    """IMTL-L (see the module docstring). ``init``: initial ``s_t`` (LibMTL: 0, i.e. scale 1).

    >>> m = IMTLL()
    >>> m.setup(["a", "b"], torch.nn.Linear(1, 1))
    >>> m.objective(torch.tensor([2.0, 0.5])).item()   # e^0·2 − 0 + e^0·0.5 − 0
    2.5
    """

    card = MethodCard(
        paper="Liu et al., 2021, Towards Impartial Multi-task Learning, ICLR 2021",
        url="https://openreview.net/forum?id=IMPnRXEWpvr",
        equation="min_{θ,s} Σ_t e^(s_t) L_t − s_t",
        cost="loss",
        state="learned log-scales s (a parameter)",
        reference="tests/test_methods_gradient_zoo.py::test_imtl_l_gradients (the gradients by hand)",
    )

    def objective(self, losses: Tensor, share: float = 1.0) -> Tensor:
        """``Σ e^{s_t} L_t − share·s_t`` (``share = 1/W`` on each of ``W`` ranks, whose objectives are summed)."""
        s = self._scales(losses)
        return (torch.exp(s) * losses - share * s).sum()

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        # Under a loss scale S the losses are S·L: the s-only term is scaled by S too (the loop unscales all).
        scale = float(getattr(ctx, "loss_scale", 1.0))
        self.objective(ctx.loss_vector, share=scale / ctx.world_size).backward()
        return self._info(torch.exp(self.loss_scale.detach()))


@register("imtl", "IMTL (Liu et al. 2021): IMTL-L loss scales + IMTL-G equal-projection gradient weights")
class IMTL(_LossScales):
    """IMTL hybrid (see the module docstring); the logged weights are ``α_t e^{s_t}``, the coefficients
    of the raw gradients ``g_t`` in the shared update. ``init``: initial ``s_t``."""

    card = MethodCard(
        paper="Liu et al., 2021, Towards Impartial Multi-task Learning, ICLR 2021",
        url="https://openreview.net/forum?id=IMPnRXEWpvr",
        equation="IMTL-L scales e^(s_t) L_t − s_t, and IMTL-G equal-projection weights of the scaled shared gradients",
        cost="shared",
        solver="T×T linear solve (host)",
        state="learned log-scales s (a parameter)",
        reference="tests/test_methods_gradient_zoo.py::test_imtl_hybrid_matches_libmtl (LibMTL IMTL)",
    )

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        jac = ctx.jacobian("shared")
        s = self._scales(ctx.loss_values).detach().to(jac.dtype)
        e = torch.exp(s)
        gram = ctx.gramian("shared") * e.unsqueeze(0) * e.unsqueeze(1)  # Gramian of the scaled gradients
        alpha = _imtl_g_weights(gram)
        coef = alpha * e
        ctx.set_shared_direction(coef @ jac)
        ctx.backward_task_specific(e)
        # s_t's own gradient, e^{s_t} L_t − 1 (the loss-free term shared over ranks and loss-scaled like the rest).
        lv = ctx.loss_vector.detach()
        scale = float(getattr(ctx, "loss_scale", 1.0))
        sp = self._scales(lv)
        (torch.exp(sp) * lv - (scale / ctx.world_size) * sp).sum().backward()
        return self._info(coef)
