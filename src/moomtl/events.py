"""Trainer events. Per-method quirks (prox steps, dual updates, archives) attach here, so the training
loop never names a method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer


class TrainingError(RuntimeError):
    """Training cannot continue (diverged loss, unusable checkpoint, a callback's unmet requirement)."""


@dataclass
class TrainState:
    """What a callback may read (and, for ``model``, modify in place) at each event."""

    model: nn.Module
    optimizer: Optimizer
    epoch: int = 0  # 0-based index of the current epoch
    step: int = 0  # global optimizer steps taken so far
    # Losses of the last step (pre-update), detached 0-d tensors on the training device.
    step_losses: dict[str, Tensor] = field(default_factory=dict)
    epoch_metrics: dict[str, Any] = field(default_factory=dict)  # metrics of the last finished epoch
    lr: float = 0.0
    # Set by a handler (early stopping) to end training after the current epoch's handlers.
    should_stop: bool = False
    # What the engine's handlers work on (set by the trainer for the run in progress): the LR scheduler
    # (or None), the TrainResult being filled, the DataSplits and the {task: Task} specs.
    scheduler: Any = None
    result: Any = None
    splits: Any = None
    tasks: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base class with no-op events. Override what you need."""

    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState) -> None:
        """After ``optimizer.step()`` (e.g. a proximal step, a projection, an archive update)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After evaluation of an epoch (e.g. outer multiplier updates)."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last epoch (e.g. replace parameters by an online-to-batch average)."""
