"""One config schema (dataclasses) shared by the CLI and the library.

A YAML file has the sections below; every key is optional. ``--set section.key=value`` overrides
(values parsed as YAML). Unknown keys, wrong types and bad values raise :class:`ConfigError` with one
line saying which key and what is expected.

.. code-block:: yaml

    data: {dataset: multimnist, source: auto, n_train: 20000, n_val: 2000, n_test: 5000, seed: 0}
    # or: data: {dataset: celeba, root: /data/celeba, image_size: 64, attributes: [Smiling, Male]}
    model: {name: hps_lenet}
    method: {name: linear, weights: [0.5, 0.5]}      # every key but `name` is a method hyper-parameter
    optimizer: {name: SGD, lr: 0.01, momentum: 0.9}  # every key but `name` goes to torch.optim.<name>
    scheduler: {name: StepLR, step_size: 30, gamma: 0.5}   # optional
    train: {epochs: 10, batch_size: 256, seed: 0, device: cpu, progress: true}
    sparsity: {k0: [0.0, 0.001, 0.01], search_epochs: 4, retrain_epochs: 2}   # `moomtl sparse` only
    out: runs/example
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one actionable line."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats such as ``1e-3`` and ``1E4`` as numbers
    (PyYAML's YAML 1.1 resolver wants a dot in the mantissa and a sign in the exponent, so ``lr: 1e-3``
    would silently be the string ``"1e-3"``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML safely (no Python objects), numbers in scientific notation as numbers.

    >>> parse_yaml("lr: 1e-3")
    {'lr': 0.001}
    """
    loader = _Loader(text)  # a SafeLoader: plain data only, never Python objects
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@dataclass
class DataConfig:
    # multimnist | multifashion | multifashion+mnist | cifar10mnist | celeba | cityscapes |
    # dense_multimnist | dense_multifashion
    dataset: str = "multimnist"
    source: str = "auto"  # gray digits: auto | mnist | mnist5k | fashion
    # Folder with the official MNIST files (source=mnist); for dataset=celeba the CelebA root (holding
    # list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba/, or Anno/ Eval/ Img/).
    root: str | None = None
    cifar_root: str | None = None  # folder holding cifar-10-batches-py (dataset=cifar10mnist)
    n_train: int | None = None  # celeba: seeded random subsets of the official splits
    n_val: int | None = None
    n_test: int | None = None
    seed: int = 0
    cache_dir: str | None = None
    # celeba: side of the square images (default 64); cityscapes: [H, W], multiples of 8 (default
    # [128, 256]); dense_*: canvas side (default 64); other data sets have a fixed size.
    image_size: int | list[int] | None = None
    attributes: list[str] | None = None  # celeba only: the attribute tasks (all 40 when null)
    # Digit pairs (multimnist, multifashion, multifashion+mnist): how the 36×36 canvas is resized to 28×28.
    # nearest is the MGDA code's choice (scipy.misc.imresize interp='nearest'); bilinear (antialiased)
    # trains ~0.8/1.2 points higher on MultiMNIST (docs/results.md).
    interpolation: str = "nearest"
    # celeba, cityscapes: keep the images on disk and decode each batch when needed (in train.num_workers DataLoader
    # workers) instead of decoding the whole data set into memory first.
    stream: bool = False


@dataclass
class ModelConfig:
    name: str = "hps_lenet"
    # "default" (PyTorch's layer defaults) or "lsuv" (orthonormal + layer-sequential unit variance on one
    # training batch, as the MDMTN code; see moomtl.models.init).
    init: str = "default"
    dropout: float | None = None  # models that have dropout (hps_lenet): its rate; null = the model's default


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    amp: str | None = None  # mixed precision of the forward pass: bf16 | fp16 (null: float32)
    tensorboard: bool = False  # event files under <out>/tensorboard (needs the tensorboard extra)
    # Which epoch's model a run keeps: last, or pareto (the non-dominated epoch of the per-task validation
    # losses that adds the most hypervolume; moomtl.engine.ParetoCheckpoint).
    select_epoch: str = "last"
    num_workers: int = 0  # DataLoader worker processes for data on disk (data.stream)
    pin_memory: bool = False  # page-locked batches for faster host-to-GPU copies (data on disk)


@dataclass
class SparsityConfig:
    """The sparse MTL pipeline (``moomtl sparse``): search (training + GrOWL prox) → tying → retraining.

    The prox after each step has threshold ``lr × strength × k0``: it scales with the step size and with
    the sparsity weight ``k0`` of the MWC preference, so ``k0 = 0`` trains a dense model.
    """

    k0: list[float] = field(default_factory=lambda: [0.01])  # sparsity weights; several = a sweep
    theta: str = "spike"  # GrOWL weights: spike | linear | oscar | ramp
    beta1: float = 0.8
    beta2: float = 0.2
    strength: float = 1000.0
    max_zero_fraction: float | None = None  # per-layer cap on zero rows during the search
    warmup_epochs: int = 1  # search epochs before the prox starts (MDMTN monitors start gated off)
    search_epochs: int = 4
    tying: bool = True
    tying_preference: float = 0.75  # affinity-propagation preference
    tying_every: str = "epoch"  # step | epoch
    retrain_epochs: int = 2


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "uniform"})
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "SGD", "lr": 0.01, "momentum": 0.9})
    scheduler: dict[str, Any] | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    out: str = "runs/experiment"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def method_name(self) -> str:
        return str(self.method["name"])

    @property
    def method_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.method.items() if k != "name"}


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Validate ``value`` against a (simple) annotation; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_check_type(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    names = [getattr(a, "__name__", str(a)) for a in args]
    return " or ".join(names) + (" or null" if len(args) < len(typing.get_args(tp)) else "")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]}; valid keys{' in ' + prefix if prefix else ''}: "
            f"{', '.join(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _check_type(key, value, tp)
    return cls(**kwargs)


def parse_config(raw: dict[str, Any] | None) -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig` (raises :class:`ConfigError`).

    >>> parse_config({"train": {"epochs": 2}}).train.epochs
    2
    >>> parse_config({"train": {"epochs": "two"}})
    Traceback (most recent call last):
    ...
    moomtl.config.ConfigError: train.epochs: expected an integer, got 'two'
    """
    cfg = _build(ExperimentConfig, raw or {}, "")
    if "name" not in cfg.optimizer:  # only settings of the default optimizer given (--set optimizer.lr=0.05)
        cfg.optimizer = {**ExperimentConfig().optimizer, **cfg.optimizer}
    if "name" not in cfg.method:
        raise ConfigError("method.name is required")
    if cfg.scheduler is not None and "name" not in cfg.scheduler:
        raise ConfigError("scheduler.name is required when a scheduler is given")
    if cfg.train.epochs < 1:
        raise ConfigError(f"train.epochs must be ≥ 1, got {cfg.train.epochs}")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be ≥ 1, got {cfg.train.batch_size}")
    sp = cfg.sparsity
    if not sp.k0 or any(not (k >= 0) for k in sp.k0):
        raise ConfigError(f"sparsity.k0 must be a non-empty list of weights ≥ 0, got {sp.k0}")
    if sp.tying_every not in ("step", "epoch"):
        raise ConfigError(f"sparsity.tying_every must be step or epoch, got {sp.tying_every!r}")
    if sp.theta not in ("spike", "linear", "oscar", "ramp"):
        raise ConfigError(f"sparsity.theta must be spike, linear, oscar or ramp, got {sp.theta!r}")
    if sp.search_epochs < 1 or sp.retrain_epochs < 0 or not 0 <= sp.warmup_epochs <= sp.search_epochs:
        raise ConfigError("sparsity: need search_epochs ≥ 1, retrain_epochs ≥ 0, 0 ≤ warmup_epochs ≤ search_epochs")
    for key in ("n_train", "n_val", "n_test"):
        v = getattr(cfg.data, key)
        low = 1 if key == "n_train" else 0
        if v is not None and v < low:
            raise ConfigError(f"data.{key} must be ≥ {low}, got {v}" + (" (nothing to train on)" if low else ""))
    for key, v in (("train.seed", cfg.train.seed), ("data.seed", cfg.data.seed)):
        if not 0 <= v < SEED_LIMIT:
            raise ConfigError(f"{key} must be in [0, 2**32), got {v}")
    _check_device(cfg.train.device)
    if cfg.train.amp not in (None, "bf16", "fp16"):
        raise ConfigError(f"train.amp must be bf16, fp16 or null, got {cfg.train.amp!r}")
    _check_data(cfg.data)
    if cfg.model.init not in ("default", "lsuv"):
        raise ConfigError(f"model.init must be default or lsuv, got {cfg.model.init!r}")
    if cfg.train.select_epoch not in ("last", "pareto"):
        raise ConfigError(f"train.select_epoch must be last or pareto, got {cfg.train.select_epoch!r}")
    if cfg.train.num_workers < 0:
        raise ConfigError(f"train.num_workers must be ≥ 0, got {cfg.train.num_workers}")
    return cfg


SEED_LIMIT = 2**32


def _check_device(device: str) -> None:
    """``train.device`` names a device torch knows (``cpu``, ``cuda``, ``cuda:1``, ``mps``) or ``auto``."""
    if device == "auto":
        return
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"train.device: {device!r} is not a device; use cpu, cuda, cuda:<index> or auto") from None


def _check_data(d: DataConfig) -> None:
    """The data set is registered (:mod:`moomtl.data.sets`), every ``data.*`` key set away from its default
    is one that data set reads, and the data set's own validation passes."""
    from dataclasses import fields

    from moomtl.data.sets import datasets_reading, get_dataset

    try:
        spec = get_dataset(d.dataset)
    except KeyError as e:
        raise ConfigError(f"data.dataset: {e.args[0]}") from None
    defaults = DataConfig()
    for f in fields(DataConfig):
        if not spec.reads(f.name) and getattr(d, f.name) != getattr(defaults, f.name):
            readers = datasets_reading(f.name)
            where = f"dataset {readers[0]}" if len(readers) == 1 else \
                f"datasets {', '.join(readers[:-1])} and {readers[-1]}"
            raise ConfigError(f"data.{f.name} only applies to {where}, not {d.dataset!r}")
    if spec.validate is not None:
        try:
            spec.validate(d)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (value parsed as YAML) to a raw config mapping."""
    out = dict(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, text = item.split("=", 1)
        try:
            value = parse_yaml(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        parts = path.strip().split(".")
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            child = dict(child) if isinstance(child, dict) else {}
            node[p] = child
            node = child
        node[parts[-1]] = value
    return out


def read_config_mapping(path: str | Path | None) -> dict[str, Any]:
    """The raw mapping of a YAML config file (``{}`` for ``None``), or one clear :class:`ConfigError`."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        loaded = parse_yaml(p.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections")
    return loaded or {}


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    return parse_config(apply_overrides(read_config_mapping(path), overrides or []))


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
