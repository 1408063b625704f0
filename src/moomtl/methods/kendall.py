"""Uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics", CVPR 2018).

Each task gets a learned log-variance ``s_t = log σ_t²`` (an ``nn.Parameter`` of the method, trained by
the same optimizer as the model) and the network minimizes

.. math:: \\mathcal{L}(\\theta, s) = \\sum_{t=1}^T c\\, e^{-s_t} L_t(\\theta) + r\\, s_t .

``variant`` picks ``(c, r)``:

* ``"simple"`` (default): ``c = 1, r = 1`` — ``Σ exp(−s_t) L_t + s_t``, the widely used form (e.g.
  LibMTL), equal to twice the regression form;
* ``"regression"``: ``c = ½, r = ½`` — the paper's Gaussian likelihood, ``L/(2σ²) + log σ``;
* ``"classification"``: ``c = 1, r = ½`` — the paper's softmax-with-temperature approximation for
  classification losses (its Eq. 10), ``L/σ² + log σ``.

At the optimum over ``s_t`` (for fixed θ), ``c e^{-s_t} L_t = r``: tasks with a large loss get a small
weight. The log-variances start at ``init`` (0 gives weight ``c``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, parameter_dtype, register, weights_info

KENDALL_VARIANTS = {"simple": (1.0, 1.0), "regression": (0.5, 0.5), "classification": (1.0, 0.5)}


@register("kendall", "uncertainty weighting (Kendall et al. 2018): Σ exp(−s_t) L_t + s_t, learned s_t")
class UncertaintyWeighting(Method):
    """Learned homoscedastic-uncertainty weights; see the module docstring for the equation.

    >>> import torch
    >>> m = UncertaintyWeighting()
    >>> m.setup(["a", "b"], torch.nn.Linear(1, 1))
    >>> m.log_vars.tolist()
    [0.0, 0.0]
    >>> m.objective(torch.tensor([2.0, 0.5])).item()   # e^0·2 + 0 + e^0·0.5 + 0
    2.5
    """

    card = MethodCard(
        paper=(
            "Kendall, Gal & Cipolla, 2018, Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry "
            "and Semantics, CVPR 2018"
        ),
        url="https://arxiv.org/abs/1705.07115",
        equation="min_{θ,s} Σ_t e^(−s_t) L_t + s_t",
        cost="loss",
        state="learned log-variances s (a parameter)",
        reference="tests/test_baselines.py::test_kendall_gradients_of_log_variances_and_model (the gradients by hand)",
    )

    def __init__(self, variant: str = "simple", init: float = 0.0) -> None:
        super().__init__()
        if variant not in KENDALL_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(KENDALL_VARIANTS)}, got {variant!r}")
        if not torch.isfinite(torch.tensor(float(init))):
            raise ValueError(f"init must be finite, got {init}")
        self.variant = variant
        self.init = float(init)
        self.log_vars = nn.Parameter(torch.zeros(0))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        self.log_vars = nn.Parameter(torch.full((len(task_names),), self.init, dtype=parameter_dtype(model)))

    def objective(self, losses: Tensor, share: float = 1.0) -> Tensor:
        """``Σ c e^{-s_t} L_t + r s_t`` for the loss vector ``losses`` (``[T]``); ``share`` scales the
        loss-free term ``r s_t`` (``1/W`` on each of ``W`` ranks, whose objectives are summed)."""
        if losses.shape != self.log_vars.shape:
            raise ValueError(
                f"expected {self.log_vars.numel()} losses (call setup first), got {tuple(losses.shape)}"
            )
        c, r = KENDALL_VARIANTS[self.variant]
        s = self.log_vars.to(losses.dtype)
        return (c * torch.exp(-s) * losses + share * r * s).sum()

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        # One backward gives the model Σ c e^{-s_t} ∇L_t and s_t its own gradient r − c e^{-s_t} L_t.
        self.objective(ctx.loss_vector, share=1.0 / ctx.world_size).backward()
        c, _ = KENDALL_VARIANTS[self.variant]
        w = c * torch.exp(-self.log_vars.detach())
        info = weights_info(self.task_names, w)
        info.update({f"log_var/{t}": v for t, v in zip(self.task_names, self.log_vars.detach(), strict=True)})
        return info
