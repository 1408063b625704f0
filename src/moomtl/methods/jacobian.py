"""Gramian-first methods: a weighting of :mod:`moomtl.weightings` (Gramian ``G = J Jᵀ`` → task weights
``w``) composed with where the Jacobian is taken.

* ``wrt="shared"`` (default): ``w`` from ``ctx.gramian("shared")``, the gradients w.r.t. the shared
  parameters; the shared parameters get ``d = wᵀJ`` (``ctx.set_shared_direction``, no second backward
  through the encoder) and the task-specific parameters their own, **unweighted** gradients ``∇L_t``
  (``ctx.backward_task_specific(None)``). That is how TorchJD's ``mtl_backward`` and the authors' code
  of UPGrad, IMTL-G, Aligned-MTL and Nash-MTL treat the heads: the aggregation resolves conflicts
  between tasks, and a head belongs to one task only. (Weighting them by ``w`` would also rescale
  every head by weights whose scale is arbitrary — Nash-MTL's ``α`` are not on the simplex.)
* ``wrt="representation"``: ``w`` from ``ctx.gramian("representation")`` (gradients w.r.t. the shared
  representation ``z``, the cheaper MGDA-UB-style bound), then one backward of ``Σ w_t L_t`` through the
  whole network (``ctx.backward_weighted``): the heads get ``w_t ∇L_t`` there.

:class:`JacobianMethod` composes any weighting (``JacobianMethod(weighting=fn)``); the registered
methods are subclasses whose hyper-parameters are the weighting's. ``backward`` returns the weights as
detached 0-d tensors (:func:`~moomtl.methods.base.weights_info`), with no host sync in the method
itself (the weighting's small float64 solve on the CPU is the one transfer).

>>> import torch
>>> from moomtl.models.base import HardParameterSharing
>>> from moomtl.autodiff.context import StepContext
>>> _ = torch.manual_seed(0)
>>> model = HardParameterSharing(torch.nn.Linear(3, 4), {"a": torch.nn.Linear(4, 1), "b": torch.nn.Linear(4, 1)})
>>> x = torch.randn(8, 3)
>>> z = model.encode(x)
>>> out = model.decode(z, x)
>>> losses = {"a": out["a"].pow(2).mean(), "b": (out["b"] - 1).pow(2).mean()}
>>> method = UPGrad()
>>> method
UPGrad(preference=None, wrt='shared')
>>> method.setup(["a", "b"], model)
>>> sorted(method.backward(losses, StepContext(model, losses, z)))
['weight/a', 'weight/b']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext, Wrt
from moomtl.methods.base import Method, MethodCard, as_weight_vector, register, weights_info
from moomtl.weightings.aligned_mtl import SCALE_MODES, aligned_mtl_weights
from moomtl.weightings.dualproj import dualproj_weights
from moomtl.weightings.imtl_g import imtl_g_weights
from moomtl.weightings.nash_mtl import clip_to_norm, nash_mtl_weights
from moomtl.weightings.upgrad import upgrad_weights

__all__ = ["AlignedMTL", "DualProj", "IMTLG", "JacobianMethod", "NashMTL", "UPGrad"]

WRT = ("shared", "representation")


class JacobianMethod(Method):
    """A Gramian weighting applied to the task gradients w.r.t. ``wrt`` (see the module docstring).

    Args:
        weighting: ``Gramian [T, T] → weights [T]`` (for an ad-hoc composition; the registered
            subclasses implement :meth:`compute_weights` instead).
        wrt: ``"shared"`` (parameters) or ``"representation"`` (``z``).
    """

    fuses_rows = True

    def __init__(self, weighting: Callable[[Tensor], Tensor] | None = None, wrt: Wrt = "shared") -> None:
        super().__init__()
        if wrt not in WRT:
            raise ValueError(f"wrt must be one of {', '.join(WRT)}, got {wrt!r}")
        self.wrt: Wrt = wrt
        self.weighting = weighting

    def compute_weights(self, gramian: Tensor) -> Tensor:
        """Task weights from this step's Gramian (``[T, T]`` → ``[T]``)."""
        if self.weighting is None:
            raise NotImplementedError("JacobianMethod needs a weighting (or a subclass's compute_weights)")
        return self.weighting(gramian)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor | float]:
        w = self.compute_weights(ctx.gramian(self.wrt))
        self.apply_weights(w, ctx)
        return weights_info(self.task_names or ctx.task_names, w)

    def apply_weights(self, w: Tensor, ctx: StepContext) -> None:
        """Shared update ``wᵀJ`` + unweighted heads (``wrt="shared"``) or ``backward(Σ w_t L_t)``."""
        if self.wrt == "shared":
            jac = ctx.jacobian("shared")
            ctx.set_shared_direction(w.to(jac) @ jac)
            ctx.backward_task_specific(None)
        else:
            ctx.apply_coefficients(w, "representation", head_weights=w)  # = backward(Σ w_t L_t)

    def extra_repr(self) -> str:
        if type(self) is JacobianMethod:
            name = getattr(self.weighting, "__name__", repr(self.weighting))
            return f"weighting={name}, wrt={self.wrt!r}"
        return super().extra_repr()


class _PreferenceMethod(JacobianMethod):
    """A weighting with a preference vector ``p`` over tasks (``1/T`` each by default, TorchJD's)."""

    preference_param: ClassVar[str | None] = "preference"

    def __init__(self, preference: Sequence[float] | None = None, wrt: Wrt = "shared") -> None:
        super().__init__(wrt=wrt)
        if preference is not None:
            as_weight_vector(preference)  # finite, non-negative, not all zero
        self.preference = None if preference is None else [float(v) for v in preference]

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        if self.preference is not None and len(self.preference) != len(task_names):
            raise ValueError(f"{self.name}: {len(self.preference)} preference entries for {len(task_names)} tasks")


@register("upgrad", "UPGrad (Quinton & Rey 2024): each gradient projected onto the dual cone, averaged")
class UPGrad(_PreferenceMethod):
    """UPGrad (:mod:`moomtl.weightings.upgrad`): ``d = Σ_i p_i π_J(g_i)``, exact projections."""

    card = MethodCard(
        paper="Quinton & Rey, 2024, Jacobian Descent for Multi-Objective Optimization, arXiv:2406.16232",
        url="https://arxiv.org/abs/2406.16232",
        equation="d = Σ_t p_t π_J(g_t), each task gradient projected onto the dual cone {x : J x ≥ 0} (p = 1/T)",
        cost="shared",
        solver="T non-negative QPs on the T×T Gramian (host)",
        reference="tests/test_weightings.py::test_upgrad_and_dualproj_match_torchjd (TorchJD UPGrad)",
    )

    def compute_weights(self, gramian: Tensor) -> Tensor:
        return upgrad_weights(gramian, self.preference)


@register("dualproj", "DualProj (Quinton & Rey 2024): mean gradient projected onto the dual cone")
class DualProj(_PreferenceMethod):
    """DualProj (:mod:`moomtl.weightings.dualproj`): ``d = π_J(Σ_t p_t g_t)``, exact projection."""

    card = MethodCard(
        paper="Quinton & Rey, 2024, Jacobian Descent for Multi-Objective Optimization, arXiv:2406.16232",
        url="https://arxiv.org/abs/2406.16232",
        equation="d = π_J(Σ_t p_t g_t): the preference-weighted gradient projected onto the dual cone {x : J x ≥ 0}",
        cost="shared",
        solver="one non-negative QP on the T×T Gramian (host)",
        reference="tests/test_weightings.py::test_upgrad_and_dualproj_match_torchjd (TorchJD DualProj)",
    )

    def compute_weights(self, gramian: Tensor) -> Tensor:
        return dualproj_weights(gramian, self.preference)


@register("aligned_mtl", "Aligned-MTL (Senushkin et al. 2023): gradients aligned to condition number 1")
class AlignedMTL(_PreferenceMethod):
    """Aligned-MTL (:mod:`moomtl.weightings.aligned_mtl`). ``scale_mode``: ``"min"`` (paper, TorchJD),
    ``"median"`` or ``"rmse"`` (authors' code)."""

    card = MethodCard(
        paper="Senushkin et al., 2023, Independent Component Alignment for Multi-Task Learning, CVPR 2023",
        url="https://arxiv.org/abs/2305.19000",
        equation=(
            "d = Jᵀ w with G = V Σ² Vᵀ, aligned gradients B = σ_min V Σ⁻¹ Vᵀ J (condition number 1), w = B-weights of "
            "the preference"
        ),
        cost="shared",
        solver="eigendecomposition of the T×T Gramian (host)",
        reference="tests/test_weightings.py::test_imtl_g_aligned_mtl_mean_sum_match_torchjd (TorchJD AlignedMTL)",
    )

    def __init__(self, preference: Sequence[float] | None = None, scale_mode: str = "min",
                 wrt: Wrt = "shared") -> None:
        super().__init__(preference, wrt)
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {', '.join(SCALE_MODES)}, got {scale_mode!r}")
        self.scale_mode = scale_mode

    def compute_weights(self, gramian: Tensor) -> Tensor:
        return aligned_mtl_weights(gramian, self.preference, self.scale_mode)


@register("imtl_g", "IMTL-G (Liu et al. 2021): equal projections of the update on every unit gradient")
class IMTLG(JacobianMethod):
    """IMTL-G (:mod:`moomtl.weightings.imtl_g`), pseudo-inverse for linearly dependent gradients."""

    card = MethodCard(
        paper="Liu et al., 2021, Towards Impartial Multi-task Learning, ICLR 2021",
        url="https://openreview.net/forum?id=IMPnRXEWpvr",
        equation="d = Jᵀ w with equal projections dᵀ u_t on every unit gradient u_t = g_t/‖g_t‖",
        cost="shared",
        solver="T×T linear solve (host)",
        reference="tests/test_weightings.py::test_imtl_g_aligned_mtl_mean_sum_match_torchjd (TorchJD IMTLG)",
    )

    def __init__(self, wrt: Wrt = "shared") -> None:
        super().__init__(wrt=wrt)

    def compute_weights(self, gramian: Tensor) -> Tensor:
        return imtl_g_weights(gramian)


@register("nash_mtl", "Nash-MTL (Navon et al. 2022): Nash bargaining weights, α ⊙ Gα = 1 solved exactly")
class NashMTL(JacobianMethod):
    """Nash-MTL (:mod:`moomtl.weightings.nash_mtl`).

    Args:
        max_norm: scale ``α`` so that ``‖αᵀJ‖ ≤ max_norm`` (``0``: off); 1.0 as in the authors' code,
            which clips the norm of the shared gradients (here ``J`` is w.r.t. ``wrt``, so with
            ``wrt="representation"`` it is the norm of the update of ``z``).
        update_weights_every: solve for ``α`` every this many steps and reuse the last ``α`` in
            between (the authors' ``update_weights_every``); the clipping uses each step's Gramian.
        wrt: as :class:`JacobianMethod`.

    State created in :meth:`setup` and saved with the method: the buffer ``last_weights`` (the last
    unclipped ``α``, float64) and the step counter (extra state), so a resumed run reuses exactly
    the weights an uninterrupted one would.
    """

    card = MethodCard(
        paper="Navon et al., 2022, Multi-Task Learning as a Bargaining Game, ICML 2022",
        url="https://arxiv.org/abs/2202.01017",
        equation="d = Jᵀ α with α ⊙ G α = 1 (the Nash bargaining solution), norm clipped at max_norm",
        cost="shared",
        solver="Newton solve of α ⊙ Gα = 1 on the T×T Gramian (host)",
        state="the last weights (reused for update_weights_every steps)",
        reference="tests/test_weightings.py::test_nash_mtl_solves_its_equation (the optimality equation α ⊙ Gα = 1)",
    )

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1, wrt: Wrt = "shared") -> None:
        super().__init__(wrt=wrt)
        if isinstance(max_norm, bool) or not isinstance(max_norm, int | float) or not (
            math.isfinite(max_norm) and max_norm >= 0
        ):
            raise ValueError(f"max_norm must be a finite number ≥ 0, got {max_norm!r}")
        if isinstance(update_weights_every, bool) or not isinstance(update_weights_every, int) or (
            update_weights_every < 1
        ):
            raise ValueError(f"update_weights_every must be an integer ≥ 1, got {update_weights_every!r}")
        self.max_norm = float(max_norm)
        self.update_weights_every = update_weights_every
        self._steps = 0

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        self.register_buffer("last_weights", torch.ones(len(task_names), dtype=torch.float64))
        self._steps = 0

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor | float]:
        if not hasattr(self, "last_weights"):
            self.setup(ctx.task_names, ctx.model)
        gram = ctx.gramian(self.wrt)
        if self._steps % self.update_weights_every == 0:
            alpha = nash_mtl_weights(gram)  # unclipped: the clipping below uses each step's norm
            self.last_weights.copy_(alpha.to(self.last_weights))
        self._steps += 1
        w = clip_to_norm(self.last_weights.to(device=gram.device, dtype=gram.dtype), gram, self.max_norm)
        self.apply_weights(w, ctx)
        return weights_info(self.task_names or ctx.task_names, w)

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps": self._steps}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("steps"), int):
            raise ValueError("checkpoint has no Nash-MTL step counter")
        self._steps = state["steps"]
