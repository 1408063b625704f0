"""A method-agnostic multi-task trainer, built on the event engine of :mod:`moomtl.engine`.

The loop itself only trains: per batch ``zero_grad`` → ``z = model.encode(x)``, ``out = model.decode(z, x)``
→ per-task losses → ``method.backward(losses, ctx)`` fills the gradients → ``optimizer.step()`` → the
``STEP_END`` event. Everything else is a named handler on an event of ``trainer.engine`` that a user can
re-filter (``every=``, ``start=``), replace or remove: ``progress``, ``evaluate`` (val and test: per-task
loss and the metrics of each task's :class:`~moomtl.tasks.Task`), ``lr_scheduler``, the method's and the
callbacks' events, ``checkpoint`` (atomic; ``resume=True`` continues bit-for-bit on the same device) and
``metrics_log`` (CSV + JSON); :class:`~moomtl.engine.handlers.EarlyStopping` and
:class:`~moomtl.engine.handlers.BestCheckpoint` are optional.

Training data is a :class:`~moomtl.data.base.MultiTaskTensors` in memory or any map-style dataset
(through a ``DataLoader`` with ``num_workers`` workers; see :mod:`moomtl.data.loader`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from moomtl import io as mio
from moomtl.autodiff.context import StepContext
from moomtl.autodiff.distributed import Reducer
from moomtl.data.base import DataSplits
from moomtl.data.loader import batch_source
from moomtl.data.loader import index_batches as iterate_batches
from moomtl.engine.evaluation import evaluate, evaluate_splits, task_losses
from moomtl.engine.events import Event, EventEngine
from moomtl.engine.handlers import (
    Evaluate,
    LRSchedule,
    MetricsLog,
    Progress,
    attach_callback,
    history_csv,
    plateau_metric,
)
from moomtl.events import Callback, TrainingError, TrainState
from moomtl.methods.base import Method
from moomtl.models.base import MultiTaskModel, decode_with_aliases
from moomtl.train.amp import MixedPrecision

CHECKPOINT = "checkpoint.pt"
LossFn = Callable[[Tensor, Tensor], Tensor]
BatchTransform = Callable[[Tensor, torch.Generator], Tensor]
OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
_to_csv = history_csv  # moved to moomtl.engine.handlers; the old name stays


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the per-epoch ``history``, the val/test ``metrics`` of the model
    ``fit`` returns (evaluated after ``on_train_end``, so also for methods that swap in averaged
    parameters at the end), ``resumed_from`` (the epoch training continued from; 0 for a fresh run) and
    ``stopped_early`` (an early-stopping handler ended training before ``epochs``)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0
    stopped_early: bool = False

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's row, with its val/test entries replaced by those of the returned model."""
        return {**(self.history[-1] if self.history else {}), **self.metrics}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device=cpu")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_numeric_kwargs(section: str, cls: type, kwargs: Mapping[str, Any]) -> None:
    """``ValueError`` naming the key when a keyword whose default is a number got something else
    (``lr: fast``), instead of the ``'<' not supported`` deep inside ``torch.optim``."""
    import inspect

    params = inspect.signature(cls).parameters
    for key, value in kwargs.items():
        default = params[key].default if key in params else inspect.Parameter.empty
        numeric_default = isinstance(default, int | float) and not isinstance(default, bool)
        if numeric_default and (isinstance(value, bool) or not isinstance(value, int | float | Tensor)):
            raise ValueError(f"{section}.{key}: expected a number, got {value!r}")


def build_optimizer(name: str | OptimizerFactory, params: Sequence[Tensor],
                    kwargs: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``torch.optim.<name>(params, **kwargs)`` with a clear ``ValueError`` for bad names/arguments; a
    callable ``name`` is a factory called as ``name(params, **kwargs)``."""
    if callable(name):
        opt = name(list(params), **kwargs)
        if not isinstance(opt, torch.optim.Optimizer):
            raise ValueError(f"the optimizer factory returned a {type(opt).__name__}, not a torch Optimizer")
        return opt
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"unknown optimizer {name!r} (any torch.optim class, e.g. SGD, Adam)")
    check_numeric_kwargs("optimizer", cls, kwargs)
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"optimizer {name}: {e}") from None


def build_scheduler(name: str | SchedulerFactory | None, opt: torch.optim.Optimizer, kwargs: Mapping[str, Any]) -> Any:
    """``torch.optim.lr_scheduler.<name>(opt, **kwargs)`` or ``None``; clear ``ValueError`` otherwise;
    a callable ``name`` is a factory called as ``name(opt, **kwargs)``."""
    if name is None:
        return None
    if callable(name):
        return name(opt, **kwargs)
    cls = getattr(torch.optim.lr_scheduler, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"unknown scheduler {name!r} (any torch.optim.lr_scheduler class)")
    check_numeric_kwargs("scheduler", cls, kwargs)
    try:
        return cls(opt, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"scheduler {name}: {e}") from None


class Trainer:
    """Train a :class:`MultiTaskModel` with any registered :class:`Method`.

    Args:
        optimizer: name of a ``torch.optim`` class, or a factory ``f(params, **optimizer_kwargs)``;
            ``optimizer_kwargs`` go to its constructor.
        scheduler: name of a ``torch.optim.lr_scheduler`` class stepped once per epoch, a factory
            ``f(optimizer, **scheduler_kwargs)``, or ``None``. ``ReduceLROnPlateau`` is stepped with
            ``scheduler_monitor`` (a metric key, or ``val/loss``: the mean validation loss, the default).
        callbacks: extra :class:`Callback` objects (prox steps, tying, ...), called after the method.
        train_transform: optional batch augmentation ``f(x, generator) -> x`` for training batches only.
        loss_fns: ``{task: f(output, target)}`` overriding the tasks' own losses (the data's
            :class:`~moomtl.tasks.Task` specs; cross-entropy for classification).
        out_dir: where metrics and the checkpoint go (nothing is written when ``None``).
        num_workers, pin_memory: ``DataLoader`` settings for data that is not a ``MultiTaskTensors``.

    ``trainer.engine`` holds the handlers (see :mod:`moomtl.engine.handlers` for the defaults);
    change them before :meth:`fit`.
    """

    def __init__(
        self, model: MultiTaskModel, method: Method, *, optimizer: str | OptimizerFactory = "SGD",
        optimizer_kwargs: Mapping[str, Any] | None = None, scheduler: str | SchedulerFactory | None = None,
        scheduler_kwargs: Mapping[str, Any] | None = None, epochs: int = 1, batch_size: int = 256,
        seed: int = 0, device: str = "cpu", callbacks: Sequence[Callback] = (),
        train_transform: BatchTransform | None = None, loss_fns: Mapping[str, LossFn] | None = None,
        out_dir: str | Path | None = None, progress: bool = False, eval_batch_size: int = 1024,
        distributed: bool | None = None, amp: str | None = None, scheduler_monitor: str | None = None,
        num_workers: int = 0, pin_memory: bool = False,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be ≥ 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be ≥ 0, got {num_workers}")
        self.model = model
        self.method = method
        self.optimizer_name = optimizer
        default_lr = {"lr": 0.01} if isinstance(optimizer, str) else {}
        self.optimizer_kwargs = dict(optimizer_kwargs if optimizer_kwargs is not None else default_lr)
        self.scheduler_name = scheduler
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.device = resolve_device(device)
        self.callbacks = list(callbacks)
        self.train_transform = train_transform
        self.loss_fns = dict(loss_fns) if loss_fns is not None else None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        # Mixed precision of the training forward pass (None: float32); see moomtl.train.amp.
        self.amp = MixedPrecision(amp, self.device) if amp is not None else None
        # Several processes (torchrun): exact multi-objective steps over the global batch (see
        # moomtl.autodiff.distributed); None = whenever torch.distributed is initialized with > 1 rank.
        self.reducer = None if distributed is False else Reducer.from_environment()
        if distributed and self.reducer is None:
            raise ValueError("distributed=True needs an initialized torch.distributed group of > 1 process")
        if self.reducer is not None and batch_size < self.reducer.world_size:
            raise ValueError(f"batch_size ({batch_size}) is the global batch: it must be ≥ the number of "
                             f"processes ({self.reducer.world_size})")
        self._batches_per_epoch = 0
        self.evaluator = Evaluate(eval_batch_size, self.device, self.loss_fns, num_workers)
        self.engine = self._default_engine(scheduler_monitor)

    def _default_engine(self, scheduler_monitor: str | None) -> EventEngine:
        eng = EventEngine()
        if self.progress:
            bar = Progress(self.epochs, lambda: self._batches_per_epoch)
            eng.on(Event.EPOCH_BEGIN, bar.open, name="progress")
            eng.on(Event.STEP_END, bar, name="progress")
            eng.on(Event.EPOCH_END, bar.close, name="progress")
        eng.on(Event.EPOCH_END, self.evaluator, name="evaluate")
        eng.on(Event.EPOCH_END, LRSchedule(scheduler_monitor), name="lr_scheduler")
        attach_callback(eng, self.method, "method")
        for i, cb in enumerate(self.callbacks):
            attach_callback(eng, cb, f"callback:{i}")
        if self.writes:
            eng.on(Event.EPOCH_END, self._save, name="checkpoint")  # atomic; resume continues from the last one
            eng.on(Event.EPOCH_END, MetricsLog(self.out_dir), name="metrics_log")  # type: ignore[arg-type]
        return eng

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder (rank 0 of a multi-process run, or the only one)."""
        return self.out_dir is not None and (self.reducer is None or self.reducer.rank == 0)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in list(self.model.parameters()) + list(self.method.parameters()) if p.requires_grad]
        return build_optimizer(self.optimizer_name, params, self.optimizer_kwargs)

    def _build_scheduler(self, opt: torch.optim.Optimizer) -> Any:
        return build_scheduler(self.scheduler_name, opt, self.scheduler_kwargs)

    # --- training ----------------------------------------------------------------------------------
    def fit(self, splits: DataSplits, resume: bool = False, checkpoint: Mapping[str, Any] | None = None) -> TrainResult:
        """Train; with ``resume`` continue from ``out_dir``'s checkpoint (or from ``checkpoint``, one
        already read with :func:`load_checkpoint`) when there is one. ``result.resumed_from`` says from
        which epoch (0: a fresh start)."""
        task_names = splits.task_names
        model_tasks = tuple(getattr(self.model, "task_names", task_names))
        if set(model_tasks) != set(task_names):
            raise ValueError(f"model tasks {list(model_tasks)} do not match data tasks {list(task_names)}")
        tasks = splits.task_specs()
        loss_fns = task_losses(tasks, self.loss_fns)
        source = batch_source(splits.train, self.num_workers, self.pin_memory)
        seed_everything(self.seed)
        self.model.to(self.device)
        self.method.setup(task_names, self.model)
        self.method.to(self.device)
        if self.reducer is not None:  # every rank starts from rank 0's parameters and method state
            self.reducer.broadcast_([*self.model.parameters(), *self.model.buffers(), *self.method.parameters(),
                                     *self.method.buffers()])
        opt = self._build_optimizer()
        sched = self._build_scheduler(opt)
        result = TrainResult()
        state = TrainState(model=self.model, optimizer=opt, scheduler=sched, result=result, splits=splits,
                           tasks=tasks)
        self.evaluator.last = None
        start_epoch = 0
        if resume:
            start_epoch = self._load_checkpoint(opt, sched, state, result, checkpoint)
        result.resumed_from = start_epoch
        if start_epoch == 0:
            self.engine.fire(Event.TRAIN_BEGIN, state)
        for epoch in range(start_epoch, self.epochs):
            state.epoch = epoch
            self.engine.fire(Event.EPOCH_BEGIN, state)
            if state.should_stop:
                break
            t0 = time.perf_counter()
            train_metrics = self._train_epoch(source, loss_fns, opt, state)
            row: dict[str, Any] = {"epoch": epoch + 1, "step": state.step}
            row.update({f"train/{k}": v for k, v in train_metrics.items()})
            row["lr"] = float(opt.param_groups[0]["lr"])
            row["epoch_seconds"] = time.perf_counter() - t0
            state.epoch_metrics = row
            result.history.append(row)
            self.engine.fire(Event.EPOCH_END, state)
            if state.should_stop:
                break
        result.stopped_early = state.should_stop
        # Methods may swap in other parameters at the end (an online-to-batch average); their state
        # is in the checkpoint, so this also holds for a resumed run that had no epoch left.
        self.engine.fire(Event.TRAIN_END, state)
        # The last evaluation is reused when nothing wrote the weights since; else evaluate again.
        current = self.evaluator.current(self.model)
        result.metrics = dict(current) if current is not None else evaluate_splits(
            self.model, splits, tasks, self.eval_batch_size, self.device, self.loss_fns, self.num_workers)
        bad = sorted(k for k, v in result.metrics.items() if not math.isfinite(v))
        if bad:
            raise TrainingError(
                f"the final evaluation is not finite ({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}); "
                "the run is not marked finished; lower the learning rate or check the data"
            )
        if self.writes:
            mio.write_json(self.out_dir / "final_metrics.json", result.metrics)
            mio.torch_save(self.model.state_dict(), self.out_dir / "model.pt")
        return result

    def _train_epoch(self, source: Any, loss_fns: Mapping[str, LossFn], opt: torch.optim.Optimizer,
                     state: TrainState) -> dict[str, float]:
        self.model.train()
        epoch_seed = self.seed * 100_003 + state.epoch  # this epoch's order, augmentation and worker seeds
        gen = torch.Generator().manual_seed(epoch_seed)
        batches = iterate_batches(len(source), self.batch_size, gen)
        self._batches_per_epoch = len(batches)
        sums: dict[str, Any] = {}
        counts = 0
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        structure: dict[str, Any] = {}  # static graph facts, found on the first step of the epoch
        step_losses: dict[str, Tensor] = {}
        reducer = self.reducer
        params = [p for group in opt.param_groups for p in group["params"]]
        task_names = source.task_names
        non_blocking = self.pin_memory and self.device.type == "cuda"
        shard = reducer.shard if reducer is not None else None
        for n_global, x, targets in source.epoch(batches, shard, seed=epoch_seed):
            n_local = len(x)
            if self.train_transform is not None:
                x = self.train_transform(x, gen)
            x = x.to(self.device, non_blocking=non_blocking)
            targets = {k: v.to(self.device, non_blocking=non_blocking) for k, v in targets.items()}
            opt.zero_grad(set_to_none=True)
            with self.amp.autocast() if self.amp is not None else nullcontext():
                z = self.model.encode(x)
                # One alias of z per head (hard parameter sharing): all T rows ∂L_t/∂z in one autograd call.
                out, aliases = decode_with_aliases(self.model, z, x, task_names)
                losses = {name: loss_fns[name](out[name], targets[name]).float() for name in task_names}
            if reducer is not None:  # this rank's share of the global mean losses
                share = n_local / n_global
                losses = {n: v * share if n_local else out[n].sum() * 0.0 for n, v in losses.items()}
            scale = self.amp.scale if self.amp is not None else 1.0
            if scale != 1.0:
                losses = {n: v * scale for n, v in losses.items()}
            ctx = StepContext(self.model, losses, z, state.step, state.epoch, structure=structure, reducer=reducer,
                              loss_scale=scale, z_aliases=aliases)
            # Logged losses: under several processes this rank's share (no per-step communication: the
            # epoch sums are reduced once at the end; methods that decide from the global losses read
            # ctx.loss_values, reduced when they ask). Finiteness is tracked on the device and read once
            # per epoch (no host sync per step); a method failing on non-finite input gets the same message.
            values = ctx.local_loss_values if reducer is not None else ctx.loss_values
            step_losses = dict(zip(task_names, values, strict=True))
            finite = finite & torch.isfinite(values).all()
            try:
                info = ctx.run(self.method)
            except (ValueError, RuntimeError):
                if not bool(finite):
                    raise self._diverged(step_losses, state) from None
                raise
            if reducer is not None:
                reducer.sum_grads_(params)
            if self.amp is None or self.amp.unscale_(params):
                opt.step()  # else: a float16 step with non-finite gradients is skipped, its scale halved
            state.step += 1
            state.step_losses = step_losses
            state.lr = opt.param_groups[0]["lr"]
            self.engine.fire(Event.STEP_END, state)
            for k, v in {**{f"{n}/loss": v for n, v in step_losses.items()}, **info}.items():
                v = v.detach().to(torch.float64) if isinstance(v, Tensor) else float(v)
                sums[k] = sums[k] + v if k in sums else v
            counts += 1
        loss_keys = [f"{n}/loss" for n in task_names]
        if reducer is not None and counts:  # one reduction per epoch: the global loss sums and finiteness
            packed = reducer.sum_(torch.stack([*(sums[k].to(self.device) for k in loss_keys),
                                               (~finite).to(torch.float64)]))
            sums.update(zip(loss_keys, packed[:-1], strict=True))
            finite = packed[-1] == 0
        if not bool(finite):  # the one host read of the epoch's finiteness
            raise self._diverged(step_losses, state)
        return {k: float(v) / max(counts, 1) for k, v in sums.items()}

    @staticmethod
    def _diverged(step_losses: Mapping[str, Tensor], state: TrainState) -> TrainingError:
        bad = [n for n, v in step_losses.items() if not bool(torch.isfinite(v))] or ["(an earlier step)"]
        return TrainingError(
            f"loss of task(s) {', '.join(bad)} is not finite at epoch {state.epoch + 1}, "
            f"step {state.step}; lower the learning rate or check the data"
        )

    # --- checkpoint --------------------------------------------------------------------------------
    def _save(self, state: TrainState) -> None:
        if not self.writes:
            return
        sched = state.scheduler
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "epochs_done": state.epoch + 1,
            "step": state.step,
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks],
            "handlers": self.engine.state_dict(),
            "history": state.result.history,
            "rng": rng_state(),
            "amp": self.amp.state_dict() if self.amp is not None else None,
        }
        mio.torch_save(ckpt, self.out_dir / CHECKPOINT)

    def _load_checkpoint(self, opt: Any, sched: Any, state: TrainState, result: TrainResult,
                         ckpt: Mapping[str, Any] | None) -> int:
        if ckpt is None:
            if self.out_dir is None:
                raise ValueError("resume=True needs out_dir (where the checkpoint is)")
            path = self.out_dir / CHECKPOINT
            if not path.exists():
                return 0  # nothing to resume: start from scratch
            ckpt = load_checkpoint(path, self.device)
        where = self.out_dir / CHECKPOINT if self.out_dir is not None else "the given checkpoint"
        try:
            self.model.load_state_dict(ckpt["model"])
            self.method.load_state_dict(ckpt["method"])
            opt.load_state_dict(ckpt["optimizer"])
            if sched is not None and ckpt["scheduler"] is not None:
                sched.load_state_dict(ckpt["scheduler"])
            for cb, cb_state in zip(self.callbacks, ckpt.get("callbacks", []), strict=False):
                if cb_state is not None and hasattr(cb, "load_state_dict"):
                    cb.load_state_dict(cb_state)
            self.engine.load_state_dict(ckpt.get("handlers") or {})
            set_rng_state(ckpt["rng"])
            if self.amp is not None and ckpt.get("amp") is not None:
                self.amp.load_state_dict(ckpt["amp"])
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise TrainingError(f"cannot resume from {where}: {_one_line(e)}") from None
        state.step = int(ckpt["step"])
        result.history.extend(ckpt["history"])
        return int(ckpt["epochs_done"])


CHECKPOINT_FORMAT = 2
#: field → accepted types of a checkpoint; anything else is refused before any state is applied.
_CHECKPOINT_FIELDS: dict[str, tuple[type, ...]] = {
    "epochs_done": (int,), "step": (int,), "model": (dict,), "method": (dict,), "optimizer": (dict,),
    "scheduler": (dict, type(None)), "callbacks": (list,), "history": (list,), "rng": (dict,),
}
#: optional fields (absent in checkpoints written before handlers had state)
_OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {"handlers": (dict,)}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :class:`Trainer` **without running code**: ``torch.load`` with
    ``weights_only=True`` (tensors and plain Python types only), then check every field's type.
    Any problem (unreadable, truncated, a directory, not a checkpoint, a field missing or of the wrong
    type, a pickled object) raises :class:`TrainingError` ``cannot resume from <path>: <why>``."""
    path = Path(path)
    where = f"cannot resume from {path}"
    if path.is_dir():
        raise TrainingError(f"{where}: it is a directory, not a checkpoint file")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refusals, zip/EOF errors, OSError: all unusable
        raise TrainingError(f"{where}: {_one_line(e)} (only tensors and plain data are loaded)") from None
    if not isinstance(ckpt, dict):
        raise TrainingError(f"{where}: holds a {type(ckpt).__name__}, not a checkpoint")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{where}: checkpoint format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    for name, types in _CHECKPOINT_FIELDS.items():
        if name not in ckpt:
            raise TrainingError(f"{where}: the field {name!r} is missing")
        if isinstance(ckpt[name], bool) or not isinstance(ckpt[name], types):
            raise TrainingError(f"{where}: the field {name!r} is a {type(ckpt[name]).__name__}")
    for name, types in _OPTIONAL_FIELDS.items():
        if name in ckpt and not isinstance(ckpt[name], types):
            raise TrainingError(f"{where}: the field {name!r} is a {type(ckpt[name]).__name__}")
    rng = ckpt["rng"]
    if not isinstance(rng.get("torch"), Tensor) or not isinstance(rng.get("numpy"), dict) \
            or not isinstance(rng.get("python"), list | tuple):
        raise TrainingError(f"{where}: the random-number-generator states are incomplete")
    return ckpt


def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": [int(version), [int(v) for v in internal], gauss_next],
    }


def set_rng_state(rng: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    version, internal, gauss_next = rng["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))


__all__ = ["CHECKPOINT", "Callback", "TrainResult", "Trainer", "TrainingError", "build_optimizer",
           "build_scheduler", "evaluate", "iterate_batches", "load_checkpoint", "plateau_metric", "resolve_device",
           "seed_everything", "task_losses"]
