"""Run one configured experiment: build data, model and method from an :class:`ExperimentConfig`,
train, and write ``config.yaml``, metrics, checkpoint and ``result.json`` under ``cfg.out``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from moomtl import io as mio
from moomtl.autodiff.distributed import rank as distributed_rank
from moomtl.config import ConfigError, ExperimentConfig, dump_config
from moomtl.data.base import DataSplits
from moomtl.data.streaming import input_shape_of
from moomtl.methods.base import Method, build_method
from moomtl.models.base import MultiTaskModel, count_parameters
from moomtl.models.registry import build_model
from moomtl.rundir import RunFolderError, check_output_dir, has_state, locked, read_folder_json, settings_diff
from moomtl.train.trainer import (
    CHECKPOINT,
    Trainer,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    resolve_device,
)

RESULT = "result.json"


def build_data(cfg: ExperimentConfig) -> DataSplits:
    """The configured data splits. Bad data settings (a source the data set does not read, more samples
    than the source gives) are :class:`ConfigError`; missing or corrupt files are ``DataError``."""
    try:
        return _build_data(cfg)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"data ({cfg.data.dataset}): {e}") from None


def _build_data(cfg: ExperimentConfig) -> DataSplits:
    from moomtl.data.sets import get_dataset

    d = cfg.data
    try:
        spec = get_dataset(d.dataset)
    except KeyError as e:
        raise ConfigError(f"data.dataset: {e.args[0]}") from None
    if spec.needs_root is not None and d.root is None:
        raise ConfigError(f"data.root: dataset {d.dataset} needs {spec.needs_root}")
    return spec.build(d)


def build_model_from(cfg: ExperimentConfig, splits: DataSplits) -> MultiTaskModel:
    """The configured model, sized for ``splits`` (tasks, classes, image shape) and initialized as
    ``model.init`` says (LSUV uses one seeded batch of training images)."""
    try:
        model = build_model(cfg.model.name, splits.task_names, splits.output_sizes(),
                            input_shape=input_shape_of(splits.train), dropout=cfg.model.dropout)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
    check_model_fits(model, splits, cfg.model.name)
    if cfg.model.init == "lsuv":
        from moomtl.models.init import lsuv_init

        gen = torch.Generator().manual_seed(cfg.train.seed)
        idx = torch.randperm(len(splits.train), generator=gen)[: cfg.train.batch_size]
        lsuv_init(model, splits.train.images(idx), generator=gen)
    return model


def check_model_fits(model: MultiTaskModel, splits: DataSplits, name: str) -> None:
    """One forward pass of one training image (eval mode, no gradients) before any training: a model
    built for other channels or image sizes fails here with one line, not mid-epoch with a traceback."""
    x = splits.train.images(torch.arange(min(1, len(splits.train))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError) as e:
        shape = "×".join(map(str, input_shape_of(splits.train)))
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.name={name} does not fit this data set's {shape} inputs ({first}); "
                          "choose a model for this data set (see README)") from None
    finally:
        model.train(was_training)
    missing = [t for t in splits.task_names if t not in out]
    if missing:
        raise ConfigError(f"model.name={name} has no output for task(s) {', '.join(missing)}")


def build_method_from(cfg: ExperimentConfig) -> Method:
    try:
        return build_method(cfg.method_name, **cfg.method_params)
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None


def make_trainer(cfg: ExperimentConfig, model: Any, method: Method, out_dir: Path, **extra: Any) -> Trainer:
    """The configured :class:`Trainer`; data sets with training-time augmentation get it here, so every
    caller (single runs, sweeps, the sparse pipeline) trains the same way."""
    from moomtl.data.sets import get_dataset

    transform = get_dataset(cfg.data.dataset).train_transform  # e.g. cifar10mnist's RandomRotation(20)
    if transform is not None and "train_transform" not in extra:
        extra["train_transform"] = transform
    if cfg.train.tensorboard and distributed_rank() == 0:
        from moomtl.train.tensorboard import TensorBoardLogger

        try:
            logger = TensorBoardLogger(out_dir / "tensorboard")
        except ImportError as e:
            raise ConfigError(str(e)) from None
        extra["callbacks"] = [*extra.get("callbacks", []), logger]
    opt = dict(cfg.optimizer)
    sched = dict(cfg.scheduler) if cfg.scheduler else None
    try:
        trainer = Trainer(
            model, method, optimizer=opt.pop("name"), optimizer_kwargs=opt,
            scheduler=sched.pop("name") if sched else None, scheduler_kwargs=sched,
            epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
            device=cfg.train.device, out_dir=out_dir, progress=cfg.train.progress, amp=cfg.train.amp,
            num_workers=cfg.train.num_workers, pin_memory=cfg.train.pin_memory, **extra,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.train.select_epoch == "pareto":
        from moomtl.engine import ParetoCheckpoint

        ParetoCheckpoint(out_dir).attach(trainer.engine)
    return trainer


def validate_optimization(cfg: ExperimentConfig) -> None:
    """Fail on bad optimizer/scheduler settings before any data work (they are user input)."""
    opt = dict(cfg.optimizer)
    sched = dict(cfg.scheduler) if cfg.scheduler else {}
    try:
        optimizer = build_optimizer(opt.pop("name"), [torch.nn.Parameter(torch.zeros(1))], opt)
        build_scheduler(sched.pop("name", None), optimizer, sched)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _mean_over_tasks(metrics: dict[str, Any], split: str, task_names: Sequence[str], metric: str) -> float | None:
    """Mean of ``<split>/<task>/<metric>`` over the tasks (``None`` when the split was not evaluated)."""
    values = [metrics.get(f"{split}/{t}/{metric}") for t in task_names]
    return None if any(v is None for v in values) else float(sum(values)) / len(values)


#: The files a training run writes into its folder (what "the folder holds a run" means).
RUN_FILES = ("config.yaml", "checkpoint.pt", "metrics.json", "metrics.csv", "final_metrics.json", "model.pt", RESULT)


def read_run_config(folder: Path) -> dict[str, Any]:
    """The settings a run folder was started with (its ``config.yaml``), read safely."""
    path = folder / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RunFolderError(f"{path} is unreadable ({type(e).__name__}); it is not a moomtl run config") from None
    if not isinstance(raw, dict):
        raise RunFolderError(f"{path} does not hold a config mapping; it is not a moomtl run config")
    return raw


def read_run_result(folder: Path) -> dict[str, Any]:
    """A finished run's ``result.json`` (strict JSON, a mapping with ``final`` metrics)."""
    return read_folder_json(folder / RESULT, lambda r: isinstance(r, dict) and isinstance(r.get("final"), dict),
                            "is not a moomtl run result (no 'final' metrics)")


def check_resumable(folder: Path, cfg: ExperimentConfig) -> None:
    """Refuse (``ConfigError``, one line) to continue ``folder`` with settings other than its own."""
    if not (folder / "config.yaml").is_file():
        return
    diffs = settings_diff(read_run_config(folder), cfg.to_dict())
    if diffs:
        raise ConfigError(
            f"{folder} holds a run with other settings ({'; '.join(diffs)}); resume only allows more "
            "train.epochs: give the same settings, another --out, or --overwrite to start it over"
        )


def prepare_run_folder(out: Path, cfg: ExperimentConfig, resume: bool, overwrite: bool) -> None:
    """Decide what may happen to ``out`` (call with its lock held): continue a run with the same
    settings, refuse to touch a run that is there, or (``overwrite``) delete that run's files."""
    present = has_state(out, RUN_FILES)
    if not present:
        return
    if resume:
        check_resumable(out, cfg)
        return
    if not overwrite:
        raise ConfigError(
            f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it or --overwrite "
            "to replace it"
        )
    for name in present:
        (out / name).unlink()


def run_experiment(
    cfg: ExperimentConfig, resume: bool = False, splits: DataSplits | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Train one model as configured; return (and write to ``<out>/result.json``) a summary with the
    final test/val metrics. ``splits`` lets callers reuse data already built.

    The folder is locked while this runs. A folder that holds a run is refused unless ``resume`` (same
    settings; only ``train.epochs`` may grow) or ``overwrite``. A finished run resumed with the same
    number of epochs is not trained again: its stored summary is returned (``"resumed_from"`` equal to
    its epochs)."""
    out = Path(cfg.out)
    method = build_method_from(cfg)  # validate the method and optimizer before any data work
    validate_optimization(cfg)
    if distributed_rank() != 0:  # torchrun: rank 0 owns the folder; the others train and read only
        if resume and run_finished(out, cfg):
            return {**read_run_result(out), "resumed_from": cfg.train.epochs}
        return _train_in(cfg, out, method, resume, splits, writer=False)
    check_output_dir(out)
    with locked(out):
        prepare_run_folder(out, cfg, resume, overwrite)
        if resume and run_finished(out, cfg):
            return {**read_run_result(out), "resumed_from": cfg.train.epochs}
        return _train_in(cfg, out, method, resume, splits, writer=True)


def run_finished(out: Path, cfg: ExperimentConfig) -> bool:
    """``out`` holds a finished run of exactly ``cfg.train.epochs`` epochs."""
    return (out / RESULT).is_file() and (out / "config.yaml").is_file() \
        and read_run_config(out).get("train", {}).get("epochs") == cfg.train.epochs


def _train_in(
    cfg: ExperimentConfig, out: Path, method: Method, resume: bool, splits: DataSplits | None, writer: bool
) -> dict[str, Any]:
    checkpoint = None
    if resume and (out / CHECKPOINT).exists():
        checkpoint = load_checkpoint(out / CHECKPOINT, resolve_device(cfg.train.device))
    splits = splits if splits is not None else build_data(cfg)
    torch.manual_seed(cfg.train.seed)  # model init depends on the run seed only
    model = build_model_from(cfg, splits)
    trainer = make_trainer(cfg, model, method, out)
    try:
        method.setup(splits.task_names, model)  # e.g. weights of the wrong length
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None
    if writer:
        mio.write_text(out / "config.yaml", dump_config(cfg))
        if (out / RESULT).exists():  # continuing a finished run for more epochs: it is unfinished again
            (out / RESULT).unlink()
    t0 = time.perf_counter()
    result = trainer.fit(splits, resume=resume, checkpoint=checkpoint)
    final = result.metrics
    summary = {
        "method": cfg.method_name,
        "method_params": cfg.method_params,
        "method_repr": repr(method),
        "model": cfg.model.name,
        "parameters": count_parameters(model),
        "data": splits.description,
        "epochs": cfg.train.epochs,
        "wall_seconds": time.perf_counter() - t0,
        "final": final,
        # The paper's summary for many tasks (CelebA: "average error" over 40 attributes).
        "test_mean_acc": _mean_over_tasks(final, "test", splits.task_names, "acc"),
        "history_last": result.history[-1] if result.history else {},
    }
    if writer:
        mio.write_json(out / RESULT, summary)
    return {**summary, "resumed_from": result.resumed_from}
