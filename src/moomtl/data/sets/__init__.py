"""The registry of data sets: one module of this package per data set (or family), each registering a
:class:`DataSet` — the ``data.*`` keys it reads, its validation, its defaults (inside ``build``) and its
training-time transform. Adding a data set is adding a file here; nothing else names data sets.

>>> "celeba" in dataset_names() and get_dataset("celeba").reads("attributes")
True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: keys of ``DataConfig`` every data set accepts
COMMON_KEYS = frozenset({"dataset", "n_train", "n_val", "n_test", "seed", "cache_dir"})


@dataclass(frozen=True)
class DataSet:
    """A registered data set.

    ``keys``: the ``data.*`` settings it reads beyond :data:`COMMON_KEYS` (any other one set away from its
    default is a config error naming the data sets that do read it); ``validate(d)`` raises
    ``ValueError`` with the message for bad values (checked with the config, before any data work);
    ``build(d)`` returns the :class:`~moomtl.data.base.DataSplits` (its own default sizes applied);
    ``train_transform``: an optional ``f(x, generator) -> x`` applied to training batches only.
    """

    name: str
    summary: str
    build: Callable[[Any], Any]
    keys: frozenset[str] = frozenset()
    validate: Callable[[Any], None] | None = None
    train_transform: Callable[..., Any] | None = None
    needs_root: str | None = None  # what data.root must hold when the data set cannot do without it

    def reads(self, key: str) -> bool:
        return key in COMMON_KEYS or key in self.keys


_REGISTRY: dict[str, DataSet] = {}


def register_dataset(spec: DataSet) -> DataSet:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"data set {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load() -> dict[str, DataSet]:
    import moomtl.data.sets as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"moomtl.data.sets.{info.name}")
    return _REGISTRY


def dataset_names() -> tuple[str, ...]:
    """Registered names, in registration order (module order)."""
    return tuple(_load())


def get_dataset(name: str) -> DataSet:
    specs = _load()
    if name not in specs:
        raise KeyError(f"unknown data set {name!r}; choose one of {', '.join(specs)}")
    return specs[name]


def datasets_reading(key: str) -> list[str]:
    return [n for n, s in _load().items() if s.reads(key)]


__all__ = ["COMMON_KEYS", "DataSet", "dataset_names", "datasets_reading", "get_dataset", "register_dataset"]
