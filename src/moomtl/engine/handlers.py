"""The trainer's built-in handlers: each is one concern a user can replace, remove or re-filter.

Default order at ``EPOCH_END``: ``progress`` (close the bar) → ``evaluate`` (val/test metrics into the
epoch's row) → ``lr_scheduler`` → ``method`` and the user's callbacks (``callback:<i>``) →
``checkpoint`` (the trainer's own atomic write; filter it with ``every=`` to checkpoint less often) →
``metrics_log``. Optional ones: :class:`EarlyStopping`, :class:`BestCheckpoint` and
:class:`ParetoCheckpoint` (``handler.attach(trainer.engine)`` places them before ``checkpoint``, so
their state is checkpointed).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from moomtl import io as mio
from moomtl.engine.evaluation import evaluate_splits, weights_version
from moomtl.engine.events import Event, EventEngine
from moomtl.events import TrainState
from moomtl.tasks import metric_higher_is_better


def monitored(metrics: Mapping[str, Any], key: str, task_names: Sequence[str]) -> float:
    """``metrics[key]``, or for ``"<split>/loss"`` (``val/loss``, ``train/loss``) the mean of the
    split's per-task losses."""
    if key in metrics:
        return float(metrics[key])
    split, _, metric = key.partition("/")
    values = [metrics.get(f"{split}/{t}/{metric}") for t in task_names]
    if metric and all(v is not None for v in values):
        return float(sum(values)) / len(values)
    raise KeyError(f"monitored metric {key!r} is not in this epoch's metrics (e.g. {', '.join(list(metrics)[:6])})")


def plateau_metric(metrics: Mapping[str, Any], task_names: Sequence[str]) -> float:
    """What ``ReduceLROnPlateau`` watches by default: the mean validation loss over the tasks (the mean
    training loss when there is no validation split)."""
    split = "val" if all(f"val/{t}/loss" in metrics for t in task_names) else "train"
    return monitored(metrics, f"{split}/loss", task_names)


class Evaluate:
    """Per-task loss and metrics on the non-empty val and test splits, merged into the epoch's row. It
    remembers the weights' version (:func:`weights_version`) and the metrics of its last evaluation, so
    the trainer re-evaluates at the end only when something changed the weights afterwards."""

    def __init__(self, batch_size: int, device: torch.device, loss_fns: Mapping[str, Any] | None,
                 num_workers: int = 0) -> None:
        self.batch_size = batch_size
        self.device = device
        self.loss_fns = loss_fns
        self.num_workers = num_workers
        self.last: tuple[tuple[int, ...], dict[str, float]] | None = None

    def evaluate(self, state: TrainState) -> dict[str, float]:
        metrics = evaluate_splits(state.model, state.splits, state.tasks, self.batch_size, self.device,
                                  self.loss_fns, self.num_workers)
        self.last = (weights_version(state.model), metrics)
        return metrics

    def __call__(self, state: TrainState) -> None:
        t0 = time.perf_counter()
        state.epoch_metrics.update(self.evaluate(state))
        state.epoch_metrics["epoch_seconds"] = state.epoch_metrics.get("epoch_seconds", 0.0) + time.perf_counter() - t0

    def current(self, model: nn.Module) -> dict[str, float] | None:
        """The last evaluation's metrics if the weights have not changed since, else ``None``."""
        if self.last is not None and self.last[0] == weights_version(model):
            return self.last[1]
        return None


class LRSchedule:
    """Step the LR scheduler once per epoch; ``ReduceLROnPlateau`` with its metric (``monitor``: any
    key of the epoch's metrics or ``val/loss``; default the mean validation loss)."""

    def __init__(self, monitor: str | None = None) -> None:
        self.monitor = monitor

    def __call__(self, state: TrainState) -> None:
        sched = state.scheduler
        metrics = state.epoch_metrics
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            names = state.splits.task_names
            value = monitored(metrics, self.monitor, names) if self.monitor else plateau_metric(metrics, names)
            sched.step(value)
        elif sched is not None:
            sched.step()
        metrics["lr"] = float(state.optimizer.param_groups[0]["lr"])


class CallbackEvent:
    """One :class:`~moomtl.events.Callback` event (``on_step_end`` ...) as a handler."""

    def __init__(self, callback: Any, event: str) -> None:
        self.callback = callback
        self.event = event

    def __call__(self, state: TrainState) -> None:
        getattr(self.callback, self.event)(state)


def attach_callback(engine: EventEngine, callback: Any, name: str, before: str | None = None) -> None:
    """Attach the four events of a ``Callback`` under one name (``before`` another handler of
    ``EPOCH_END`` when given)."""
    for event, hook in ((Event.TRAIN_BEGIN, "on_train_begin"), (Event.STEP_END, "on_step_end"),
                        (Event.EPOCH_END, "on_epoch_end"), (Event.TRAIN_END, "on_train_end")):
        where = before if event is Event.EPOCH_END and before in engine.names(Event.EPOCH_END) else None
        engine.on(event, CallbackEvent(callback, hook), name=name, before=where)


def attach_before_checkpoint(engine: EventEngine, name: str, epoch_end: Callable[[TrainState], Any],
                             *also: tuple[Event, Callable[[TrainState], Any]]) -> None:
    """Attach ``epoch_end`` to ``EPOCH_END`` just before ``checkpoint`` when the engine has one (so the
    handler's state of that epoch is in that epoch's checkpoint), last otherwise; and each ``(event, fn)``
    of ``also`` under the same name."""
    before = "checkpoint" if "checkpoint" in engine.names(Event.EPOCH_END) else None
    engine.on(Event.EPOCH_END, epoch_end, name=name, before=before)
    for event, fn in also:
        engine.on(event, fn, name=name)


class MetricsLog:
    """``metrics.json`` (strict JSON; non-finite values as null) and ``metrics.csv`` of the history."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)

    def __call__(self, state: TrainState) -> None:
        history = state.result.history
        mio.write_json(self.out_dir / "metrics.json", history, nonfinite_as_null=True)
        mio.write_text(self.out_dir / "metrics.csv", history_csv(history))


def history_csv(history: Sequence[Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


class Progress:
    """A Rich progress bar per epoch; the shown loss is read from the device every ``every_steps``
    steps only (a host sync)."""

    def __init__(self, epochs: int, batches_per_epoch: Callable[[], int], every_steps: int = 20) -> None:
        self.epochs = epochs
        self.batches_per_epoch = batches_per_epoch
        self.every_steps = every_steps
        self._bar: Any = None
        self._task: Any = None
        self._n = 0

    def __call__(self, state: TrainState) -> None:  # STEP_END
        if self._bar is None:
            return
        self._n += 1
        if self._n % self.every_steps == 0 or self._n == 1:
            losses = state.step_losses
            loss = float(sum(float(v) for v in losses.values()) / max(len(losses), 1))
            self._bar.update(self._task, advance=1, loss=loss)
        else:
            self._bar.update(self._task, advance=1)

    def open(self, state: TrainState) -> None:  # EPOCH_BEGIN
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        desc = f"epoch {state.epoch + 1}/{self.epochs}"
        self._bar = Progress(TextColumn(desc), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             TextColumn("loss {task.fields[loss]:.4f}"), transient=True)
        self._task = self._bar.add_task(desc, total=self.batches_per_epoch(), loss=float("nan"))
        self._n = 0
        self._bar.start()

    def close(self, state: TrainState) -> None:  # EPOCH_END, first
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _writes() -> bool:
    """Whether this process writes files: the only one, or rank 0 of a multi-process run."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class _Monitor:
    """Shared by early stopping and best checkpoint: which metric, which direction, what is better."""

    def __init__(self, monitor: str, mode: str | None, min_delta: float) -> None:
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number ≥ 0, got {min_delta}")
        metric = monitor.rsplit("/", 1)[-1]
        self.monitor = monitor
        self.mode = mode or ("max" if metric != "loss" and metric_higher_is_better(metric) else "min")
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch = 0

    def improved(self, state: TrainState) -> bool:
        value = monitored(state.epoch_metrics, self.monitor, state.splits.task_names)
        if not math.isfinite(value):
            return False
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best, self.best_epoch = value, state.epoch + 1
        return better

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.best = None if sd.get("best") is None else float(sd["best"])
        self.best_epoch = int(sd.get("best_epoch", 0))


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` (default the mean validation loss) has not improved by more than
    ``min_delta`` for ``patience`` evaluated epochs. ``mode`` defaults to the metric's direction."""

    def __init__(self, monitor: str = "val/loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str | None = None) -> None:
        super().__init__(monitor, mode, min_delta)
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer ≥ 1, got {patience!r}")
        self.patience = patience
        self.bad_epochs = 0
        self.stopped_epoch = 0

    def __call__(self, state: TrainState) -> None:
        self.bad_epochs = 0 if self.improved(state) else self.bad_epochs + 1
        if self.bad_epochs >= self.patience:
            self.stopped_epoch = state.epoch + 1
            state.should_stop = True

    def resume_stopped(self, state: TrainState) -> None:  # EPOCH_BEGIN: a run stopped before stays stopped
        if self.stopped_epoch:
            state.should_stop = True

    def attach(self, engine: EventEngine, name: str = "early_stopping") -> EarlyStopping:
        attach_before_checkpoint(engine, name, self, (Event.EPOCH_BEGIN, self.resume_stopped))
        return self

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "bad_epochs": self.bad_epochs, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        super().load_state_dict(sd)
        self.bad_epochs = int(sd.get("bad_epochs", 0))
        self.stopped_epoch = int(sd.get("stopped_epoch", 0))


class BestCheckpoint(_Monitor):
    """Keep the weights of the best epoch by ``monitor`` (in memory, and as ``best_model.pt`` in
    ``out_dir`` when given); with ``restore`` put them back at ``TRAIN_END``, so the trainer's result and
    ``model.pt`` are those of the best epoch."""

    def __init__(self, monitor: str = "val/loss", out_dir: str | Path | None = None, restore: bool = True,
                 mode: str | None = None, min_delta: float = 0.0, filename: str = "best_model.pt") -> None:
        super().__init__(monitor, mode, min_delta)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.restore = restore
        self.filename = filename
        self._weights: dict[str, Tensor] | None = None

    @property
    def path(self) -> Path | None:
        return self.out_dir / self.filename if self.out_dir is not None else None

    def __call__(self, state: TrainState) -> None:
        if self.improved(state):
            self._weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
            if self.path is not None and _writes():
                mio.torch_save(self._weights, self.path)

    def restore_best(self, state: TrainState) -> None:  # TRAIN_END
        if not self.restore or self.best is None:
            return
        weights = self._weights
        if weights is None and self.path is not None and self.path.is_file():  # resumed: kept on disk
            weights = torch.load(self.path, map_location="cpu", weights_only=True)
        if weights is not None:
            state.model.load_state_dict(weights)

    def attach(self, engine: EventEngine, name: str = "best_checkpoint") -> BestCheckpoint:
        attach_before_checkpoint(engine, name, self, (Event.TRAIN_END, self.restore_best))
        return self


class ParetoCheckpoint:
    """Choose the epoch by a validation Pareto criterion instead of taking the last one: at each evaluated
    epoch the per-task validation losses join an archive of the run's non-dominated epochs (their
    weights kept, dominated ones dropped); at ``TRAIN_END`` the epoch whose vector adds the most
    hypervolume to that front (exclusive contribution; reference point: the archive's nadir + 10 % of
    its range) is restored (``restore``) and, with ``out_dir``, saved as ``pareto_model.pt``. Ties and a
    single archived epoch: the latest. ``chosen_epoch`` says which (also in the checkpoint)."""

    def __init__(self, out_dir: str | Path | None = None, restore: bool = True,
                 filename: str = "pareto_model.pt") -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.restore = restore
        self.filename = filename
        self.archive: list[tuple[int, list[float], dict[str, Tensor]]] = []
        self.chosen_epoch = 0

    def __call__(self, state: TrainState) -> None:  # EPOCH_END, after evaluate
        names = state.splits.task_names
        keys = [f"val/{t}/loss" for t in names]
        if not all(k in state.epoch_metrics for k in keys):
            return  # not evaluated this epoch (or no validation split)
        v = [float(state.epoch_metrics[k]) for k in keys]
        if not all(math.isfinite(x) for x in v):
            return

        def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
            return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))

        if any(dominates(old, v) for _, old, _ in self.archive):
            return
        self.archive = [e for e in self.archive if not dominates(v, e[1])]
        weights = {k: t.detach().clone() for k, t in state.model.state_dict().items()}
        self.archive.append((state.epoch + 1, v, weights))

    def choose(self) -> int:
        """Index into the archive of the epoch with the largest exclusive hypervolume contribution."""
        import numpy as np

        from moomtl.pareto import hypervolume, reference_point

        if len(self.archive) == 1:
            return 0
        pts = np.array([v for _, v, _ in self.archive], dtype=float)
        ref = reference_point(pts, margin=0.1)
        total = hypervolume(pts, ref)
        gains = [total - hypervolume(np.delete(pts, i, axis=0), ref) for i in range(len(pts))]
        best = max(gains)
        return max(i for i, g in enumerate(gains) if g >= best - 1e-15 * max(abs(best), 1.0))

    def finish(self, state: TrainState) -> None:  # TRAIN_END
        if not self.archive:
            return
        epoch, _, weights = self.archive[self.choose()]
        self.chosen_epoch = epoch
        if self.out_dir is not None and _writes():
            mio.torch_save(weights, self.out_dir / self.filename)
        if self.restore:
            state.model.load_state_dict(weights)

    def attach(self, engine: EventEngine, name: str = "pareto_checkpoint") -> ParetoCheckpoint:
        attach_before_checkpoint(engine, name, self, (Event.TRAIN_END, self.finish))
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [e for e, _, _ in self.archive], "vectors": [v for _, v, _ in self.archive],
                "weights": [w for _, _, w in self.archive], "chosen_epoch": self.chosen_epoch}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.archive = [(int(e), [float(x) for x in v], dict(w))
                        for e, v, w in zip(sd.get("epochs", []), sd.get("vectors", []), sd.get("weights", []),
                                           strict=True)]
        self.chosen_epoch = int(sd.get("chosen_epoch", 0))


__all__ = ["BestCheckpoint", "CallbackEvent", "EarlyStopping", "Evaluate", "LRSchedule", "MetricsLog",
           "ParetoCheckpoint", "Progress", "attach_before_checkpoint", "attach_callback", "history_csv", "monitored",
           "plateau_metric"]
