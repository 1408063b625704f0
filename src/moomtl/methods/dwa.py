r"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
CVPR 2019, Eq. 7).

The weights of epoch :math:`e` follow the rate at which each task's loss fell over the two previous
epochs:

.. math::

    r_t(e - 1) = \frac{\bar L_t(e - 1)}{\bar L_t(e - 2)}, \qquad
    w_t(e) = T\, \frac{\exp(r_t(e - 1) / \tau)}{\sum_s \exp(r_s(e - 1) / \tau)},

with :math:`\bar L_t(e)` the average training loss of task :math:`t` over the batches of epoch :math:`e`
and temperature :math:`\tau` (``temperature``, 2 in the paper). The first two epochs use
:math:`w_t = 1`, as in the official code (lorenmt/mtan) and LibMTL. The weights are constant within an
epoch and applied in one backward pass of :math:`\sum_t w_t L_t`.

Bookkeeping: :meth:`backward` adds the batch losses (pre-update, the trainer's own ``train/<task>/loss``)
to ``epoch_loss_sum``/``epoch_steps``; the ``on_epoch_end`` event (called by the trainer after each
epoch, before the checkpoint) turns them into the epoch average and shifts the two-epoch history
(``last_avg``, ``prev_avg``, ``epochs_done``). All are persistent buffers, so a resumed run continues bit
for bit. Outside the trainer, call :meth:`end_epoch` after each epoch. No host synchronization: the
first-two-epochs rule is a ``torch.where`` on ``epochs_done``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.events import TrainState
from moomtl.methods.base import Method, MethodCard, parameter_dtype, register, weights_info


def dwa_weights(last_avg: Tensor, prev_avg: Tensor, temperature: float) -> Tensor:
    """``T softmax((L̄(e−1) / L̄(e−2)) / τ)``.

    >>> w = dwa_weights(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 1.0]), 2.0)  # task 0 fell faster
    >>> [round(v, 4) for v in w.tolist()]
    [0.8756, 1.1244]
    """
    return last_avg.numel() * torch.softmax((last_avg / prev_avg) / temperature, dim=-1)


@register("dwa", "Dynamic Weight Average (Liu et al. 2019): T·softmax of the last two epochs' loss ratios")
class DWA(Method):
    """DWA; see the module docstring.

    Args:
        temperature: the softmax temperature τ (paper: 2); larger is closer to equal weights.
    """

    card = MethodCard(
        paper="Liu, Johns & Davison, 2019, End-to-End Multi-Task Learning with Attention, CVPR 2019",
        url="https://arxiv.org/abs/1803.10704",
        equation="w_t = T softmax_t(r_t / τ), r_t = L̄_t(e−1) / L̄_t(e−2) (epoch-mean losses)",
        cost="loss",
        state="the last two epochs' mean losses and this epoch's running sums",
        reference="tests/test_methods_loss_zoo.py::test_dwa_matches_libmtl_on_recorded_epoch_losses (LibMTL DWA)",
    )

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        for name in ("epoch_loss_sum", "last_avg", "prev_avg"):
            self.register_buffer(name, torch.zeros(0))
        self.register_buffer("epoch_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.int64))

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n, dtype = len(task_names), parameter_dtype(model)
        self.epoch_loss_sum = torch.zeros(n, dtype=dtype)
        self.last_avg = torch.ones(n, dtype=dtype)
        self.prev_avg = torch.ones(n, dtype=dtype)
        self.epoch_steps = torch.zeros((), dtype=torch.int64)
        self.epochs_done = torch.zeros((), dtype=torch.int64)

    def current_weights(self) -> Tensor:
        """The weights of the running epoch (``[T]``, all 1 during the first two epochs)."""
        w = dwa_weights(self.last_avg, self.prev_avg, self.temperature)
        return torch.where(self.epochs_done >= 2, w, torch.ones_like(w))

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        lv = ctx.loss_values
        if self.last_avg.numel() != lv.numel():
            raise ValueError(f"dwa: expected {self.last_avg.numel()} losses (call setup first), got {lv.numel()}")
        with torch.no_grad():
            self.epoch_loss_sum += lv.to(self.epoch_loss_sum)
            self.epoch_steps += 1
        w = self.current_weights().to(lv)
        ctx.backward_weighted(w)
        return weights_info(self.task_names, w)

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Close the running epoch: its average loss becomes ``L̄(e−1)`` (an epoch without steps is skipped)."""
        seen = self.epoch_steps > 0
        avg = (self.epoch_loss_sum / self.epoch_steps.clamp_min(1)).to(self.last_avg)
        self.prev_avg.copy_(torch.where(seen, self.last_avg, self.prev_avg))
        self.last_avg.copy_(torch.where(seen, avg, self.last_avg))
        self.epochs_done += seen.to(self.epochs_done.dtype)
        self.epoch_loss_sum.zero_()
        self.epoch_steps.zero_()

    def on_epoch_end(self, state: TrainState) -> None:
        self.end_epoch()

