r"""Pareto Multi-Task Learning (Lin, Zhen, Li, Zhang & Kwong, "Pareto Multi-Task Learning", NeurIPS 2019),
following the official code (Xi-L/ParetoMTL, ``multiMNIST/train.py``).

A set of unit reference vectors :math:`u_1, \dots, u_K` splits the loss space into sub-regions; a run
targets the region of its preference :math:`u` (``preference`` or ``preference_index``):
:math:`\Omega = \{L : (u_j - u)^\top L \le 0\ \forall j\}` (the loss vector is closest in angle to
:math:`u`). With :math:`G_j(\theta) = (u_j - u)^\top \hat L`, :math:`\hat L = L / \lVert L\rVert`, and the
active constraints :math:`I = \{j : G_j > 0\}`:

* *initial feasibility phase* (at most ``init_epochs`` epochs, until :math:`I = \emptyset`): descend the
  violated constraints, :math:`d = \sum_{j \in I} \beta_j (u_j - u)^\top \nabla L` with
  :math:`\beta = \arg\min_{\beta \in \Delta} \lVert \sum_{j\in I} \beta_j \nabla G_j \rVert^2`
  (task weights :math:`w = W_I^\top \beta`, not normalized, as in the official code);
* *main phase*: the constrained MGDA sub-problem

  .. math::

      \min_{\lambda \in \Delta^{T + |I| - 1}} \Big\lVert \sum_{t} \lambda_t \nabla L_t
      + \sum_{j \in I} \lambda_{T+j} (u_j - u)^\top \nabla L \Big\rVert^2, \qquad
      w = \lambda_{1:T} + W_I^\top \lambda_{T+1:}, \quad w \leftarrow \frac{T\, w}{\sum_t |w_t|},

  solved on the :math:`(T + |I|)^2` Gramian :math:`A\,(JJ^\top) A^\top`, :math:`A = [I_T;\ W_I]`, with the
  existing min-norm solver (:func:`moomtl.solvers.min_norm.min_norm`).

The update is :math:`\sum_t w_t \nabla L_t` (``weight/<task>``): shared parameters from the Jacobian,
task-specific ones :math:`w_t \nabla L_t` (the official weighted backward).

Reference set (``n_preferences`` = K, 5 in the paper): for 2 tasks the paper's evenly spaced unit
circle points :math:`(\cos\phi, \sin\phi)`, :math:`\phi \in \operatorname{linspace}(0, \pi/2, K)`; for
:math:`T > 2` the Das–Dennis lattice with :math:`K - 1` divisions, scaled to unit norm. The preference is
a *direction in loss space* (the paper's convention): a larger :math:`u_t` allows a larger loss of task
:math:`t`. ``preference_index`` picks :math:`u = u_i`; a ``preference`` vector is scaled to unit norm and
the references parallel to it are dropped; neither: the uniform direction (the middle circle point
for an odd K).

Deliberate differences from the official code: gradients are those of the shared parameters (the
official MultiMNIST script uses all parameters); when the feasibility phase ends, the main phase
starts on the same batch (the official loop starts a new epoch). The feasibility flag ``feasible`` is
a persistent buffer (checkpoints keep the phase). The active set and the min-norm solve need the
losses and the :math:`T \times T` Gramian on the host: one device→host transfer per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, as_weight_vector, register, weights_info
from moomtl.pareto.preferences import das_dennis
from moomtl.solvers.min_norm import min_norm

_PARALLEL = 1e-9  # references with cos(u_j, u) > 1 − this are the preference itself


def pmtl_references(n_tasks: int, n_preferences: int) -> np.ndarray:
    """Unit reference vectors ``[K, T]``: circle points for 2 tasks, unit-scaled Das–Dennis otherwise.

    >>> pmtl_references(2, 3).round(4).tolist()
    [[1.0, 0.0], [0.7071, 0.7071], [0.0, 1.0]]
    """
    if n_tasks == 2:
        phi = np.linspace(0.0, 0.5 * np.pi, n_preferences)
        return np.stack([np.cos(phi), np.sin(phi)], axis=1)
    refs = das_dennis(n_preferences - 1, n_tasks)
    return refs / np.linalg.norm(refs, axis=1, keepdims=True)


def pmtl_weights(gram: Tensor, losses: Tensor, u: Tensor, others: Tensor, init_phase: bool,
                 w_mat: Tensor | None = None) -> tuple[Tensor, int]:
    """Task weights of one Pareto MTL step and the number of active constraints (CPU float64 inputs:
    ``gram`` ``[T, T]``, ``losses`` ``[T]``, unit ``u`` ``[T]``, unit ``others`` ``[K', T]``). In the
    initial phase with no active constraint the weights are all zero (feasible). ``w_mat``: ``others − u``
    computed once by the caller (at T = 40 the default reference set has 123,410 vectors)."""
    n = losses.numel()
    w_mat = others - u if w_mat is None else w_mat
    act = (w_mat @ (losses / losses.norm().clamp_min(torch.finfo(losses.dtype).tiny))) > 0
    w_act = w_mat[act]
    k = int(act.sum())
    if init_phase:
        if k == 0:
            return torch.zeros(n, dtype=gram.dtype), 0
        beta = min_norm(w_act @ gram @ w_act.T)
        return w_act.T @ beta, k
    a = torch.cat([torch.eye(n, dtype=gram.dtype), w_act])
    lam = min_norm(a @ gram @ a.T)
    w = a.T @ lam
    return w * (n / w.abs().sum().clamp_min(torch.finfo(w.dtype).tiny)), k


@register("pmtl", "Pareto MTL (Lin et al. 2019): constrained MGDA in the preference's sub-region of loss space")
class ParetoMTL(Method):
    """See the module docstring.

    Args:
        preference: the target direction in loss space (non-negative, not all zero), or ``None``.
        preference_index: instead, the index of the reference vector to target (0 … K−1).
        n_preferences: K, the size of the reference set for two tasks (paper: 5, evenly spaced on the
            quarter circle); for T > 2 the Das–Dennis lattice with K − 1 partitions, C(K + T − 2, T − 1)
            vectors (K = 5: 15 at T = 3, 123,410 at T = 40), see :func:`pmtl_references`.
        init_epochs: longest initial feasibility phase, in epochs (official: 2; 0 skips it).
    """

    card = MethodCard(
        paper="Lin et al., 2019, Pareto Multi-Task Learning, NeurIPS 2019",
        url="https://arxiv.org/abs/1912.12854",
        equation=(
            "min-norm direction subject to (u_j − u_k)ᵀ L ≤ 0 for the preference's sub-region (after a feasibility "
            "phase)"
        ),
        cost="shared",
        solver="constrained min-norm QP (host)",
        state="whether the feasibility phase is over",
        reference=(
            "tests/test_methods_loss_zoo_pref.py::test_pmtl_weights_match_the_official_direction (the official code's "
            "direction)"
        ),
    )

    preference_param: ClassVar[str | None] = "preference"

    def __init__(self, preference: Sequence[float] | None = None, preference_index: int | None = None,
                 n_preferences: int = 5, init_epochs: int = 2) -> None:
        super().__init__()
        if preference is not None and preference_index is not None:
            raise ValueError("give preference or preference_index, not both")
        if preference is not None:
            as_weight_vector(preference)
        for name, v, lo in (("n_preferences", n_preferences, 2), ("init_epochs", init_epochs, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if preference_index is not None and (isinstance(preference_index, bool)
                                             or not isinstance(preference_index, int) or preference_index < 0):
            raise ValueError(f"preference_index must be an integer >= 0, got {preference_index!r}")
        self.preference = None if preference is None else [float(v) for v in preference]
        self.preference_index = preference_index
        self.n_preferences = n_preferences
        self.init_epochs = init_epochs
        # configuration, kept on the CPU where the sub-problem is solved (plain attributes, not state)
        self.target = torch.zeros(0, dtype=torch.float64)
        self.others = torch.zeros(0, 0, dtype=torch.float64)
        self.w_mat = torch.zeros(0, 0, dtype=torch.float64)
        self.register_buffer("feasible", torch.zeros((), dtype=torch.bool))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n = len(task_names)
        if n < 2:
            raise ValueError("pmtl needs at least 2 tasks")
        refs = torch.as_tensor(pmtl_references(n, self.n_preferences), dtype=torch.float64)
        if self.preference_index is not None:
            if self.preference_index >= refs.shape[0]:
                raise ValueError(f"pmtl: preference_index {self.preference_index} is out of range for "
                                 f"{refs.shape[0]} reference vectors")
            u = refs[self.preference_index]
        else:
            u = torch.ones(n, dtype=torch.float64) if self.preference is None else as_weight_vector(self.preference, n)
            u = u / u.norm()
        self.target = u
        self.others = refs[refs @ u < 1 - _PARALLEL]
        self.w_mat = self.others - u  # the constraint directions, the same every step
        self.feasible = torch.zeros((), dtype=torch.bool)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor | float]:
        if self.target.numel() != ctx.n_tasks:
            raise ValueError(f"pmtl: expected {self.target.numel()} tasks (call setup first), got {ctx.n_tasks}")
        jac = ctx.jacobian("shared")
        gram = ctx.gramian("shared").detach().double().cpu()
        lv = ctx.loss_values.detach().double().cpu()
        init = not bool(self.feasible) and ctx.epoch < self.init_epochs
        w, k = pmtl_weights(gram, lv, self.target, self.others, init_phase=init, w_mat=self.w_mat)
        if init and k == 0:  # feasible: the main phase starts with this batch
            self.feasible.fill_(True)
            init = False
            w, k = pmtl_weights(gram, lv, self.target, self.others, init_phase=False, w_mat=self.w_mat)
        w = w.to(device=jac.device, dtype=jac.dtype)
        ctx.set_shared_direction(w @ jac)
        ctx.backward_task_specific(w)
        info: dict[str, Tensor | float] = dict(weights_info(self.task_names, w.to(ctx.loss_values)))
        info.update({"pmtl/init_phase": float(init), "pmtl/active_constraints": float(k)})
        return info

    def extra_repr(self) -> str:
        return (f"preference={self.preference}, preference_index={self.preference_index}, "
                f"n_preferences={self.n_preferences}, init_epochs={self.init_epochs}")


__all__ = ["ParetoMTL", "pmtl_references", "pmtl_weights"]
