"""Run one configured experiment: build data, model and method from an :class:`ExperimentConfig`,
train, and write ``config.yaml``, metrics, checkpoint and ``result.json`` under ``cfg.out``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from moomtl import io as mio
from moomtl.config import ConfigError, ExperimentConfig, dump_config
from moomtl.data.base import DataSplits
from moomtl.methods.base import Method, build_method
from moomtl.models.base import MultiTaskModel, count_parameters
from moomtl.models.registry import build_model
from moomtl.train.trainer import Trainer, build_optimizer, build_scheduler

RESULT = "result.json"


def build_data(cfg: ExperimentConfig) -> DataSplits:
    d = cfg.data
    # Split sizes the user set (the digit builders have their own defaults for the others).
    sizes: dict[str, Any] = {k: v for k, v in (("n_train", d.n_train), ("n_val", d.n_val), ("n_test", d.n_test))
                             if v is not None}
    if d.dataset in ("multimnist", "multifashion", "multifashion+mnist"):
        from moomtl.data.multimnist import build_multitask_digits

        return build_multitask_digits(
            kind=d.dataset, source=d.source, root=d.root, seed=d.seed, cache_dir=d.cache_dir, **sizes
        )
    if d.dataset == "cifar10mnist":
        from moomtl.data.cifar10mnist import build_cifar10mnist_from_roots

        return build_cifar10mnist_from_roots(
            cifar_root=d.cifar_root, mnist_source=d.source, mnist_root=d.root, seed=d.seed,
            n_train=d.n_train, n_val=d.n_val, n_test=d.n_test, cache_dir=d.cache_dir,
        )
    if d.dataset == "celeba":
        from moomtl.data.celeba import build_celeba, check_attributes

        if d.root is None:
            raise ConfigError(
                "data.root: dataset celeba needs the CelebA root (the folder holding list_attr_celeba.txt, "
                "list_eval_partition.txt and img_align_celeba/, or Anno/, Eval/ and Img/)"
            )
        try:
            check_attributes(d.attributes)
        except ValueError as e:
            raise ConfigError(f"data.attributes: {e}") from None
        return build_celeba(
            d.root, image_size=d.image_size if d.image_size is not None else 64, attributes=d.attributes,
            n_train=d.n_train, n_val=d.n_val, n_test=d.n_test, seed=d.seed, cache_dir=d.cache_dir,
        )
    if d.dataset in ("dense_multimnist", "dense_multifashion"):
        from moomtl.data.dense_digits import build_dense_digits

        return build_dense_digits(
            kind=d.dataset.removeprefix("dense_"), source=d.source, root=d.root, seed=d.seed, cache_dir=d.cache_dir,
            canvas=d.image_size if isinstance(d.image_size, int) else 64, **sizes,
        )
    if d.dataset == "cityscapes":
        from moomtl.data.cityscapes import build_cityscapes

        if d.root is None:
            raise ConfigError(
                "data.root: dataset cityscapes needs the Cityscapes root (the folder holding leftImg8bit/, "
                "gtFine/ and disparity/)"
            )
        size = tuple(d.image_size) if isinstance(d.image_size, list) else (128, 256)
        n_val = d.n_val if d.n_val is not None else 275  # the paper's held-out validation images
        return build_cityscapes(d.root, image_size=size, n_train=d.n_train, n_val=n_val, n_test=d.n_test,
                                seed=d.seed, cache_dir=d.cache_dir)
    raise ConfigError(
        f"data.dataset: unknown data set {d.dataset!r}; choose multimnist, multifashion, "
        "multifashion+mnist, cifar10mnist, celeba, cityscapes, dense_multimnist or dense_multifashion"
    )


def build_model_from(cfg: ExperimentConfig, splits: DataSplits) -> MultiTaskModel:
    """The configured model, sized for ``splits`` (tasks, classes, image shape) and initialized as
    ``model.init`` says (LSUV uses one seeded batch of training images)."""
    try:
        model = build_model(cfg.model.name, splits.task_names, splits.output_sizes(),
                            input_shape=tuple(splits.train.x.shape[1:]))
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
    if cfg.model.init == "lsuv":
        from moomtl.models.init import lsuv_init

        gen = torch.Generator().manual_seed(cfg.train.seed)
        idx = torch.randperm(len(splits.train), generator=gen)[: cfg.train.batch_size]
        lsuv_init(model, splits.train.images(idx), generator=gen)
    return model


def build_method_from(cfg: ExperimentConfig) -> Method:
    try:
        return build_method(cfg.method_name, **cfg.method_params)
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None


def make_trainer(cfg: ExperimentConfig, model: Any, method: Method, out_dir: Path, **extra: Any) -> Trainer:
    """The configured :class:`Trainer`; data sets with training-time augmentation get it here, so every
    caller (single runs, sweeps, the sparse pipeline) trains the same way."""
    if cfg.data.dataset == "cifar10mnist" and "train_transform" not in extra:
        from moomtl.data.cifar10mnist import augment_train_batch

        extra["train_transform"] = augment_train_batch  # RandomRotation(20), training batches only
    opt = dict(cfg.optimizer)
    sched = dict(cfg.scheduler) if cfg.scheduler else None
    try:
        return Trainer(
            model, method, optimizer=opt.pop("name"), optimizer_kwargs=opt,
            scheduler=sched.pop("name") if sched else None, scheduler_kwargs=sched,
            epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
            device=cfg.train.device, out_dir=out_dir, progress=cfg.train.progress, **extra,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


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


def run_experiment(cfg: ExperimentConfig, resume: bool = False, splits: DataSplits | None = None) -> dict[str, Any]:
    """Train one model as configured; return (and write to ``<out>/result.json``) a summary with the
    final test/val metrics. ``splits`` lets callers reuse data already built."""
    out = Path(cfg.out)
    method = build_method_from(cfg)  # validate the method and optimizer before any data work
    validate_optimization(cfg)
    splits = splits if splits is not None else build_data(cfg)
    torch.manual_seed(cfg.train.seed)  # model init depends on the run seed only
    model = build_model_from(cfg, splits)
    trainer = make_trainer(cfg, model, method, out)
    try:
        method.setup(splits.task_names, model)  # e.g. weights of the wrong length
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    mio.write_text(out / "config.yaml", dump_config(cfg))
    t0 = time.perf_counter()
    result = trainer.fit(splits, resume=resume)
    final_path = out / "final_metrics.json"
    final = json.loads(final_path.read_text())
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
        "history_last": result.final,
    }
    mio.write_json(out / RESULT, summary)
    return summary
