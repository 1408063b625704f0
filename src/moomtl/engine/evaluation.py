"""Evaluation of a multi-task model on a split: per-task loss and each task's metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from moomtl.data.loader import eval_batches, task_names_of
from moomtl.tasks import Classification, Task

LossFn = Callable[[Tensor, Tensor], Tensor]


def task_losses(tasks: Mapping[str, Task], loss_fns: Mapping[str, LossFn] | None) -> dict[str, LossFn]:
    """Each task's training loss: ``loss_fns[task]`` when given, else the :class:`Task`'s own."""
    return {name: (loss_fns[name] if loss_fns is not None else task.loss) for name, task in tasks.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Any, tasks: Mapping[str, Task] | None = None, batch_size: int = 1024,
    device: torch.device | str = "cpu", loss_fns: Mapping[str, LossFn] | None = None, num_workers: int = 0,
) -> dict[str, float]:
    """Per-task loss (mean over batches, weighted by batch size) and the task's metrics over the whole
    split ``data`` (a :class:`~moomtl.data.base.MultiTaskTensors` or any dataset the trainer accepts):
    ``{"<task>/loss": ..., "<task>/acc": ...}`` (``tasks``: classification for all by default)."""
    names = task_names_of(data)
    specs = dict(tasks) if tasks is not None else {n: Classification() for n in names}
    losses = task_losses(specs, loss_fns)
    was_training = model.training
    model.eval()
    loss_sum = dict.fromkeys(names, 0.0)
    states = {name: specs[name].init_state() for name in names}
    n = 0
    for x, targets in eval_batches(data, batch_size, num_workers):
        x = x.to(device)
        targets = {k: v.to(device) for k, v in targets.items()}
        out = model(x)
        for name in names:
            loss_sum[name] += float(losses[name](out[name], targets[name])) * len(x)
            specs[name].update(states[name], out[name], targets[name])
        n += len(x)
    model.train(was_training)
    n = max(n, 1)
    metrics: dict[str, float] = {}
    for name in names:
        metrics[f"{name}/loss"] = loss_sum[name] / n
        metrics.update({f"{name}/{k}": v for k, v in specs[name].compute(states[name]).items()})
    return metrics


def evaluate_splits(
    model: nn.Module, splits: Any, tasks: Mapping[str, Task], batch_size: int, device: torch.device | str,
    loss_fns: Mapping[str, LossFn] | None = None, num_workers: int = 0,
) -> dict[str, float]:
    """``{"val/<task>/loss": ..., "test/<task>/acc": ...}`` over the non-empty val and test splits."""
    out: dict[str, float] = {}
    for split_name, data in (("val", splits.val), ("test", splits.test)):
        if data is not None and len(data):
            ev = evaluate(model, data, tasks, batch_size, device, loss_fns, num_workers)
            out.update({f"{split_name}/{k}": v for k, v in ev.items()})
    return out


def weights_version(model: nn.Module) -> tuple[int, ...]:
    """Identity and in-place version counter of every parameter and buffer: it changes whenever any of
    them is written (``optimizer.step``, ``load_state_dict``, ``copy_``), so equal versions mean the
    model computes what it computed when the version was taken (no tensor data is read)."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple(v for t in tensors for v in (id(t), t._version))
