"""Batches for training and evaluation, from in-memory tensors or from any ``torch.utils.data.Dataset``.

Two sources give the trainer ``(n_global, x, targets)`` triples for one epoch's list of global index
batches (a seeded permutation cut into ``batch_size`` pieces, the same on every process):

* :class:`TensorBatches` — a :class:`~moomtl.data.base.MultiTaskTensors` held in memory: indexing, no
  workers (the small digit sets);
* :class:`LoaderBatches` — any map-style ``Dataset`` whose item is ``(x, targets)`` with ``targets`` a
  tuple in task order or a ``{task: target}`` dict (data on disk: CelebA and Cityscapes streamed from their
  official files): a ``DataLoader`` over exactly those index batches, with ``num_workers`` worker
  processes and pinned memory, so it sees the same examples in the same order as the tensor path.

Under several processes each rank loads only its shard of every global batch (``shard``), so the
global batch is what ``train.batch_size`` says, whichever source is used.

A dataset that is not a ``MultiTaskTensors`` names its tasks with a ``task_names`` attribute; wrap a
dataset without one in :class:`TaskDataset`. Missing labels: a classification task declared as
``Classification(ignore_index=-1)`` may carry ``-1`` where an example has no label (see
:mod:`moomtl.tasks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from moomtl.data.base import MultiTaskTensors

Batch = tuple[int, Tensor, dict[str, Tensor]]
Shard = Callable[[Tensor], Tensor]


def index_batches(n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False) -> list[Tensor]:
    """Index batches of a (shuffled when ``generator`` is given) permutation of ``range(n)``."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def task_names_of(data: Any) -> tuple[str, ...]:
    names = getattr(data, "task_names", None)
    if names is None:
        raise ValueError(f"{type(data).__name__} has no task_names: wrap it in moomtl.data.loader.TaskDataset")
    return tuple(names)


class TaskDataset(Dataset):
    """Name the tasks of a dataset whose items are ``(x, targets)`` (``targets`` in task order, or a
    ``{task: target}`` dict)."""

    def __init__(self, dataset: Dataset, task_names: Sequence[str]) -> None:
        self.dataset = dataset
        self.task_names = tuple(task_names)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]


class Collate:
    """``default_collate`` of ``(x, targets)`` items into ``(x, {task: target})`` (a picklable object, so
    worker processes can use it)."""

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = tuple(task_names)

    def __call__(self, items: list[Any]) -> tuple[Tensor, dict[str, Tensor]]:
        x, targets = default_collate(items)
        if isinstance(targets, Mapping):
            missing = [t for t in self.task_names if t not in targets]
            if missing:
                raise ValueError(f"dataset items have no target for task(s) {missing}")
            return x, {t: targets[t] for t in self.task_names}
        if len(targets) != len(self.task_names):
            raise ValueError(f"dataset items carry {len(targets)} targets for {len(self.task_names)} tasks")
        return x, dict(zip(self.task_names, targets, strict=True))


class TensorBatches:
    """Batches of an in-memory :class:`MultiTaskTensors`."""

    def __init__(self, data: MultiTaskTensors) -> None:
        self.data = data
        self.task_names = data.task_names

    def __len__(self) -> int:
        return len(self.data)

    def epoch(self, batches: Sequence[Tensor], shard: Shard | None = None, seed: int = 0) -> Iterator[Batch]:
        for idx in batches:
            n_global = len(idx)
            if shard is not None:
                idx = shard(idx)
            yield n_global, self.data.images(idx), self.data.targets(idx)


class LoaderBatches:
    """Batches of any map-style dataset through a ``DataLoader`` (``num_workers`` processes, pinned
    memory when asked) over the given index batches."""

    def __init__(self, dataset: Dataset, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be ≥ 0, got {num_workers}")
        self.dataset = dataset
        self.task_names = task_names_of(dataset)
        self.collate = Collate(self.task_names)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _empty(self) -> tuple[Tensor, dict[str, Tensor]]:
        x, targets = self.collate([self.dataset[0]])
        return x[:0], {k: v[:0] for k, v in targets.items()}

    def loader(self, batches: Sequence[Sequence[int]], seed: int = 0) -> DataLoader:
        """A ``DataLoader`` over exactly ``batches``. Its own generator (``seed``) seeds the workers, so
        creating it does not draw from the global RNG (which dropout and the methods use)."""
        return DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,  # type: ignore[arg-type]
                          pin_memory=self.pin_memory, collate_fn=self.collate, prefetch_factor=self.prefetch_factor,
                          generator=torch.Generator().manual_seed(seed))

    def epoch(self, batches: Sequence[Tensor], shard: Shard | None = None, seed: int = 0) -> Iterator[Batch]:
        """``(n_global, x, targets)`` per global batch; ``seed`` seeds this epoch's worker processes."""
        local = [(shard(idx) if shard is not None else idx).tolist() for idx in batches]
        sizes = [len(idx) for idx in batches]
        nonempty = [b for b in local if b]
        it = iter(self.loader(nonempty, seed)) if nonempty else iter(())
        for n_global, idx in zip(sizes, local, strict=True):
            yield (n_global, *next(it)) if idx else (n_global, *self._empty())


def batch_source(data: Any, num_workers: int = 0, pin_memory: bool = False) -> TensorBatches | LoaderBatches:
    """In-memory tensors are indexed directly; every other dataset goes through a ``DataLoader``."""
    if isinstance(data, MultiTaskTensors):
        return TensorBatches(data)
    if not isinstance(data, Dataset) or not hasattr(data, "__getitem__"):
        raise ValueError(f"training data must be a MultiTaskTensors or a map-style torch Dataset, "
                         f"got {type(data).__name__}")
    return LoaderBatches(data, num_workers=num_workers, pin_memory=pin_memory)


def eval_batches(data: Any, batch_size: int, num_workers: int = 0) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
    """Sequential ``(x, {task: target})`` batches of a split, for evaluation."""
    source = batch_source(data, num_workers)
    for _, x, targets in source.epoch(index_batches(len(source), batch_size, None)):
        yield x, targets


__all__ = ["Collate", "LoaderBatches", "TaskDataset", "TensorBatches", "batch_source", "eval_batches",
           "index_batches", "task_names_of"]
