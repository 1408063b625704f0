"""GradVac, "Gradient Vaccine" (Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021).

PCGrad only acts when two task gradients conflict (negative cosine); GradVac instead keeps, for every
ordered pair ``(i, j)``, an exponential moving average ``φ̂_ij`` of their observed cosine similarity and
pulls ``g_i`` towards ``g_j`` whenever the current similarity falls below that target. For every task
``i`` (starting from ``g_i^{PC} = g_i``) and every other task ``j`` in a random order, with
``φ_ij = cos(g_i^{PC}, g_j)``:

.. math::

    \\text{if } \\phi_{ij} < \\hat\\phi_{ij}: \\quad
    g_i^{PC} \\leftarrow g_i^{PC} + \\frac{\\lVert g_i^{PC} \\rVert
        \\big(\\hat\\phi_{ij}\\sqrt{1-\\phi_{ij}^2} - \\phi_{ij}\\sqrt{1-\\hat\\phi_{ij}^2}\\big)}
        {\\lVert g_j \\rVert \\sqrt{1-\\hat\\phi_{ij}^2}}\\, g_j ,
    \\qquad
    \\hat\\phi_{ij} \\leftarrow (1-\\beta)\\,\\hat\\phi_{ij} + \\beta\\, \\phi_{ij},

and the shared update is ``Σ_i g_i^{PC}``. The coefficient is the one that makes
``cos(g_i^{PC}, g_j) = φ̂_ij`` exactly after the step (the paper's Eq. 3). The targets start at 0, so
the first steps behave like PCGrad. With ``group_type`` the cosines are taken per block of the shared
parameters (LibMTL's granularity: 0 the whole shared model, 1 each leaf module, 2 each parameter
tensor); ``φ̂`` is a ``T × T × K`` buffer (``K`` blocks) created in :meth:`GradVac.setup`.

Everything stays in the span of the task gradients, ``g_i^{PC} = Σ_k C_ik g_k`` per block, and every
inner product it needs comes from the per-block Gramians, so the loop runs on ``T × T`` coefficient
matrices on the device (the conditions are ``torch.where``, no host sync) and the update touches the
Jacobian once. Task-specific parameters get their plain gradients ``∇L_t`` (as in LibMTL).

Differences from LibMTL's ``GradVac`` (``LibMTL/weighting/GradVac.py``), deliberate:

* the random orders come from the method's seeded generator (checkpointed,
  :class:`~moomtl.methods.random_weighting.SeededMethod`), not Python's global ``random``;
* ``ema="conditional"`` (default) is LibMTL's rule: ``φ̂_ij`` is only updated when the condition fires.
  ``ema="always"`` updates it every step, as the paper's Algorithm 1 writes it;
* LibMTL's ``1e-8`` guards in the cosine and the coefficient are kept, and ``1 − φ²`` is clamped at 0
  (rounding can make ``|φ|`` exceed 1 by an ulp).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import MethodCard, register, shared_parameters_of, weights_info
from moomtl.methods.pcgrad import PCGrad
from moomtl.methods.random_weighting import SeededMethod

_EPS = 1e-8  # LibMTL's guard in the cosine and in the coefficient's denominator
GROUP_TYPES = (0, 1, 2)
EMA_RULES = ("conditional", "always")



def parameter_blocks(model: nn.Module, group_type: int) -> tuple[int, ...]:
    """Sizes of the consecutive blocks of the flattened shared parameters GradVac takes cosines over:
    one block (0), one per leaf module (1: consecutive parameters owned by the same module) or one per
    parameter tensor (2)."""
    params = shared_parameters_of(model)
    if group_type == 0:
        return (sum(p.numel() for p in params),)
    if group_type == 2:
        return tuple(p.numel() for p in params)
    owner: dict[int, int] = {}
    for k, module in enumerate(model.modules()):
        for p in module.parameters(recurse=False):
            owner.setdefault(id(p), k)
    sizes: list[int] = []
    last = None
    for p in params:
        o = owner.get(id(p), -1)
        if sizes and o == last:
            sizes[-1] += p.numel()
        else:
            sizes.append(p.numel())
        last = o
    return tuple(sizes)


def gradvac_coefficients(
    gramians: Tensor, targets: Tensor, orders: Sequence[Sequence[int]], beta: float, ema: str = "conditional"
) -> tuple[Tensor, Tensor]:
    """One GradVac pass in coefficient space.

    Args:
        gramians: ``[K, T, T]`` per-block Gramians ``M_k = J_k J_kᵀ``.
        targets: ``[T, T, K]`` current targets ``φ̂``.
        orders: ``orders[i]`` lists the tasks ``j ≠ i`` in the order they are processed for ``g_i``.
        beta, ema: the EMA rate and rule (see the module docstring).

    Returns:
        ``C`` (``[K, T, T]``, ``g_i^{PC} = Σ_k C[b, i, k] g_k`` on block ``b``) and the new targets.
    """
    if gramians.ndim != 3 or gramians.shape[1] != gramians.shape[2]:
        raise ValueError(f"gramians must be [K, T, T], got shape {tuple(gramians.shape)}")
    n_blocks, t, _ = gramians.shape
    if targets.shape != (t, t, n_blocks):
        raise ValueError(f"targets must be [{t}, {t}, {n_blocks}], got shape {tuple(targets.shape)}")
    if len(orders) != t:
        raise ValueError(f"need one order per task ({t}), got {len(orders)}")
    m = gramians
    phi_hat = targets.to(m.dtype).clone()
    coef = torch.eye(t, dtype=m.dtype, device=m.device).expand(n_blocks, t, t).clone()
    norms = torch.diagonal(m, dim1=1, dim2=2).clamp_min(0).sqrt()  # [K, T]
    zero = torch.zeros((), dtype=m.dtype, device=m.device)
    # The T sequences (one per g_i) are independent: position p of every task's order is processed at
    # once, batched over i (T−1 rounds of small tensor ops instead of T(T−1)); a shorter order (or j = i)
    # leaves its task untouched in a round.
    seqs = [[j for j in order if j != i] for i, order in enumerate(orders)]
    length = max((len(q) for q in seqs), default=0)
    cols = torch.tensor([q + [i] * (length - len(q)) for i, q in enumerate(seqs)], dtype=torch.long,
                        device=m.device).reshape(t, length)
    live = torch.tensor([[p < len(q) for p in range(length)] for q in seqs], dtype=torch.bool,
                        device=m.device).reshape(t, length)
    rows = torch.arange(t, device=m.device)
    for p in range(length):
        j, act = cols[:, p], live[:, p]  # [T]: the task each g_i meets now, and whether it meets one
        dot = (coef * m[:, :, j].transpose(1, 2)).sum(-1)  # [K, T]: g_i^{PC} · g_j
        pc_norm = ((coef @ m) * coef).sum(-1).clamp_min(0).sqrt()  # [K, T]: ‖g_i^{PC}‖
        gj = norms[:, j]
        rho = dot / (pc_norm * gj + _EPS)
        target = phi_hat[rows, j].T  # [K, T]
        cond = rho < target
        sq_rho = (1 - rho**2).clamp_min(0).sqrt()
        sq_tgt = (1 - target**2).clamp_min(0).sqrt()
        w = pc_norm * (target * sq_rho - rho * sq_tgt) / (gj * sq_tgt + _EPS)
        coef[:, rows, j] = coef[:, rows, j] + torch.where(cond & act, w, zero)
        updated = (1 - beta) * target + beta * rho
        moved = act if ema == "always" else cond & act
        phi_hat[rows, j] = torch.where(moved, updated, target).T
    return coef, phi_hat


@register("gradvac", "GradVac (Wang et al. 2021): pull task gradients towards EMA targets of their cosines")
class GradVac(SeededMethod):
    """Gradient Vaccine on the shared parameters (see the module docstring).

    Args:
        beta: EMA rate of the cosine targets, in ``[0, 1]`` (LibMTL's ``GradVac_beta``, default 0.5).
        group_type: granularity of the cosines: 0 whole shared model (default), 1 each leaf module,
            2 each parameter tensor (LibMTL's ``GradVac_group_type``).
        ema: ``"conditional"`` (LibMTL) or ``"always"`` (the paper's Algorithm 1).
        seed: seed of the random task orders.
    """

    card = MethodCard(
        paper=(
            "Wang et al., 2021, Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively "
            "Multilingual Models, ICLR 2021"
        ),
        url="https://arxiv.org/abs/2010.05874",
        equation=(
            "if cos(g_i, g_j) < φ̂_ij: g_i += ‖g_i‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) g_j; "
            "φ̂ ← EMA_β(φ)"
        ),
        cost="shared",
        state="EMA targets φ̂ of the pairwise cosines and its random generator",
        reference="tests/test_methods_gradient_zoo.py::test_gradvac_matches_libmtl_loop_over_steps (LibMTL GradVac)",
    )

    def __init__(self, beta: float = 0.5, group_type: int = 0, ema: str = "conditional", seed: int = 0) -> None:
        super().__init__(seed)
        if not (isinstance(beta, int | float) and math.isfinite(beta) and 0.0 <= beta <= 1.0):
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        if group_type not in GROUP_TYPES or isinstance(group_type, bool):
            raise ValueError(f"group_type must be 0 (whole model), 1 (per layer) or 2 (per tensor), got {group_type!r}")
        if ema not in EMA_RULES:
            raise ValueError(f"ema must be one of {', '.join(EMA_RULES)}, got {ema!r}")
        self.beta = float(beta)
        self.group_type = group_type
        self.ema = ema
        self.blocks: tuple[int, ...] = ()
        self.register_buffer("targets", torch.zeros(0, 0, 0))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        self.blocks = parameter_blocks(model, self.group_type)
        params = shared_parameters_of(model)
        dtype = params[0].dtype if params else torch.get_default_dtype()
        device = params[0].device if params else None
        t = len(task_names)
        self.targets = torch.zeros(t, t, len(self.blocks), dtype=dtype, device=device)

    #: PCGrad's draw: for each task i, its own random permutation of the other tasks
    random_orders = PCGrad.random_orders

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        jac = ctx.jacobian("shared")
        t = jac.shape[0]
        if self.targets.shape[:2] != (t, t) or sum(self.blocks) != jac.shape[1]:
            raise ValueError(
                f"GradVac was set up for {self.targets.shape[0]} tasks and {sum(self.blocks)} shared parameters, "
                f"the step has {t} and {jac.shape[1]} (call setup with this model)"
            )
        if len(self.blocks) == 1:
            gramians = ctx.gramian("shared").unsqueeze(0)
        else:
            gramians = torch.stack([b @ b.T for b in torch.split(jac, list(self.blocks), dim=1)])
        coef, new_targets = gradvac_coefficients(gramians, self.targets, self.random_orders(t), self.beta, self.ema)
        self.targets.copy_(new_targets)
        w = coef.sum(dim=1)  # [K, T]: block b's update is w[b] @ J_b
        if len(self.blocks) == 1:
            direction = w[0] @ jac
        else:
            direction = torch.cat([wb @ b for wb, b in zip(w, torch.split(jac, list(self.blocks), dim=1), strict=True)])
        ctx.set_shared_direction(direction)
        ctx.backward_task_specific(None)
        return weights_info(self.task_names or ctx.task_names, w.mean(dim=0))
