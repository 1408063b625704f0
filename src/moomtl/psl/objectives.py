"""Training objectives of Pareto-set learning: moomtl's own preference methods, driven by a preference
drawn per batch.

Each step the preference λ the model is conditioned on (drawn from a Dirichlet distribution by
:class:`PreferenceSampler` after every step) is written into a registered method's preference buffer,
then that method's ``backward`` runs unchanged: the scalarizations of
:mod:`moomtl.solvers.scalarizations` through their gradient weights (``linear``, ``tch``, ``stch``, the
other Chebyshev variants), the COSMOS loss, and EPO's per-step LP direction for that batch's λ.

:data:`PSL_METHODS` is the registry of methods that can be trained this way: ``{method name: name of
the buffer holding its preference}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.events import Callback, TrainState
from moomtl.methods.base import Method

#: ``{method: preference buffer}`` of the registered methods a preference-conditioned model trains with.
PSL_METHODS: dict[str, str] = {
    "linear": "w",
    "tch": "pref",
    "stch": "pref",
    "aug_tch": "pref",
    "mod_tch": "pref",
    "pbi": "pref",
    "epo": "pref",
    "cosmos": "pref",
}


def dirichlet_sample(concentration: Tensor) -> Tensor:
    """One draw from ``Dir(concentration)`` (global torch RNG, on the concentration's device; no host sync)."""
    return torch.distributions.Dirichlet(concentration).sample()


class ConditionedMethod(Method):
    """Run ``inner`` (a registered method, see :data:`PSL_METHODS`) with the preference of the model
    being trained (``ctx.model.preference``) as its own, step by step. State of ``inner`` (an online
    ideal point) is a sub-module, so checkpoints keep it; its events are forwarded."""

    def __init__(self, inner: Method) -> None:
        super().__init__()
        if inner.name not in PSL_METHODS:
            raise ValueError(f"method {inner.name!r} cannot train a preference-conditioned model; "
                             f"choose one of: {', '.join(PSL_METHODS)}")
        self.inner = inner
        self.buffer = PSL_METHODS[inner.name]

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        self.inner.setup(task_names, model)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor | float]:
        pref = getattr(ctx.model, "preference", None)
        if pref is None:
            raise ValueError("a preference-conditioned method needs a model with a preference buffer")
        getattr(self.inner, self.buffer).copy_(pref.detach())
        return self.inner.backward(losses, ctx)

    def fuses_representation(self) -> bool:
        return self.inner.fuses_representation()

    def on_train_begin(self, state: TrainState) -> None:
        self.inner.on_train_begin(state)

    def on_step_end(self, state: TrainState) -> None:
        self.inner.on_step_end(state)

    def on_epoch_end(self, state: TrainState) -> None:
        self.inner.on_epoch_end(state)

    def on_train_end(self, state: TrainState) -> None:
        self.inner.on_train_end(state)

    def extra_repr(self) -> str:
        return f"inner={self.inner!r}"


class PreferenceSampler(Callback):
    """Draw the model's preference ``λ ~ Dir(α, ..., α)`` before the first step and after every step.
    The draw uses the global torch RNG and the preference is a model buffer, so both are in the trainer's
    checkpoint and a resumed run continues with the same preferences."""

    def __init__(self, alpha: float = 1.0) -> None:
        if not alpha > 0:
            raise ValueError(f"the Dirichlet concentration must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def _draw(self, model: nn.Module) -> None:
        pref: Tensor = model.preference  # type: ignore[assignment]
        conc = torch.full(pref.shape, self.alpha, dtype=torch.float32, device=pref.device)
        with torch.no_grad():
            pref.copy_(dirichlet_sample(conc))

    def on_train_begin(self, state: TrainState) -> None:
        self._draw(state.model)

    def on_step_end(self, state: TrainState) -> None:
        self._draw(state.model)


__all__ = ["PSL_METHODS", "ConditionedMethod", "PreferenceSampler", "dirichlet_sample"]
