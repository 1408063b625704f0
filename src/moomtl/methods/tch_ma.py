r"""Modified Tchebycheff of Ma et al. (Ma, Zhang, Tian, Yang & Zhu, "On Tchebycheff Decomposition
Approaches for Multiobjective Evolutionary Optimization", IEEE TEVC 22(2), 2018; LibMOON's ``mtche``).

.. math:: \min_\theta \max_t \frac{L_t(\theta) - z_t}{\lambda_t}, \qquad \lambda_t > 0,

i.e. the weighted Tchebycheff function with the preference in the *denominator*. Its minimizers on a
convex front lie on the ray :math:`z + s\,\lambda` (for every active task
:math:`(L_t - z_t)/\lambda_t` is the same value), so a larger :math:`\lambda_t` allows a larger loss of
task :math:`t` and uniformly spread :math:`\lambda` give uniformly spread solutions — the opposite
direction of ``tch`` (:math:`\max_t \lambda_t (L_t - z_t)`, optimum on :math:`L - z \propto 1/\lambda`).
It is **not** the existing ``mod_tch``, which is MDMTN's modified weighted Chebyshev
:math:`\max_t \lambda_t[(L_t - z_t) + \varepsilon \sum_j (L_j - z_j)]`.

Like the other Chebyshev methods (:mod:`moomtl.methods.chebyshev`, whose preference and reference-point
handling — ``preference=None`` → uniform, ``ideal`` None / list / ``"online"`` with ``margin`` — is
reused unchanged) one backward pass of :math:`\sum_t w_t L_t` with :math:`w = \partial g/\partial L`
(:math:`1/\lambda_a` on the active task :math:`a`, shared evenly on ties) does the step. Every entry of
the preference must be > 0 (it is a divisor): a zero entry is a ``ValueError`` in ``setup``.
Unlike ``ChebyshevFamily.backward``, the logged values (``scalarized``, ``active/<task>``,
``ideal/<task>``) stay tensors: no host synchronization per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import MethodCard, register, weights_info
from moomtl.methods.chebyshev import ChebyshevFamily, IdealSpec


def ma_tchebycheff(f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor:
    """``max_t (f_t − z_t) / λ_t``.

    >>> float(ma_tchebycheff(torch.tensor([2.0, 0.5]), torch.tensor([0.5, 0.5]), torch.zeros(2)))
    4.0
    """
    return ((f - ideal) / pref).amax(dim=-1)


@register("tch_ma", "Tchebycheff of Ma et al. 2018: max_t (L_t − z_t)/λ_t (preference in the denominator)")
class MaTchebycheff(ChebyshevFamily):
    """See the module docstring. Arguments as :class:`~moomtl.methods.chebyshev.Tchebycheff`.

    >>> m = MaTchebycheff(preference=[1.0, 3.0])
    >>> m.setup(["a", "b"], None)
    >>> m.weights(torch.tensor([2.0, 0.5]), None).tolist()   # terms (8, 0.67): task a, w = 1/λ_a
    [4.0, 0.0]
    """

    card = MethodCard(
        paper=(
            "Ma et al., 2018, On Tchebycheff Decomposition Approaches for Multiobjective Evolutionary Optimization, "
            "IEEE TEVC 22(2)"
        ),
        url="https://doi.org/10.1109/TEVC.2017.2704118",
        equation="min_θ max_t (L_t − z_t) / λ_t",
        cost="loss",
        state="running minimum of the losses when ideal='online' (else none)",
        reference=(
            "tests/test_methods_loss_zoo_pref.py::test_tch_ma_equalizes_active_terms_at_the_optimum (optimality: "
            "equal active terms)"
        ),
    )

    def __init__(self, preference: Sequence[float] | None = None, ideal: IdealSpec = None,
                 margin: float = 1e-3) -> None:
        super().__init__(preference, ideal, margin)
        if self.preference is not None and min(self.preference) <= 0:
            raise ValueError(f"tch_ma divides by the preference: every entry must be > 0, got {self.preference}")

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        if bool((self.pref <= 0).any()):  # once, at setup
            raise ValueError(f"tch_ma divides by the preference: every entry must be > 0, got {self.pref.tolist()}")

    def scalarize(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor:
        return ma_tchebycheff(f, pref, ideal)

    def terms(self, f: Tensor, pref: Tensor, ideal: Tensor) -> Tensor | None:
        return (f - ideal) / pref

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        f = ctx.loss_values
        w, value, z = self.weights_and_value(f)
        ctx.backward_weighted(w)
        info = weights_info(self.task_names, w)
        info["scalarized"] = value
        terms = self.terms(f, self.pref.to(f), z)
        active = torch.nn.functional.one_hot(torch.argmax(terms), len(self.task_names)).to(f)
        info.update({f"active/{t}": active[i] for i, t in enumerate(self.task_names)})
        if self.online_ideal:
            info.update({f"ideal/{t}": z[i].detach().clone() for i, t in enumerate(self.task_names)})
        return info
