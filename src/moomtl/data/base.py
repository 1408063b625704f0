"""In-memory multi-task data sets: images and, per task, one integer label or a dense target."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset

from moomtl.tasks import Classification, Task


class DataError(Exception):
    """Missing or corrupt data: the message says which file and what was expected."""


def labels_in_range(labels: Tensor, n_classes: int) -> bool:
    """Cached or fresh class labels: int64, every entry in ``0 .. n_classes − 1`` (a tampered cache entry
    with label 99 would otherwise build a 100-class head)."""
    return isinstance(labels, Tensor) and labels.dtype == torch.int64 and (
        labels.numel() == 0 or (int(labels.min()) >= 0 and int(labels.max()) < n_classes))


def physical_memory_bytes() -> int | None:
    """Installed RAM (``None`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def check_fits_in_memory(n_bytes: int, what: str) -> None:
    """``ValueError`` before allocating ``n_bytes`` for ``what`` when that exceeds the machine's RAM."""
    ram = physical_memory_bytes()
    if ram is not None and n_bytes > ram:
        raise ValueError(f"{what} needs {n_bytes / 2**30:.1f} GiB, more than this machine's {ram / 2**30:.1f} GiB "
                         "of memory; ask for fewer samples")


def normalize_uint8(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images ``[N, C, H, W]`` → float32 ``(x / 255 − mean_c) / std_c`` (per channel, [0, 1] scale):
    the one normalization of images kept as uint8, in memory or decoded from disk."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


@dataclass
class MultiTaskTensors(Dataset):
    """``x``: ``[N, C, H, W]`` images; ``y``: ``[N, T]`` int64 labels, column t for task
    ``task_names[t]``, or ``{task: [N, ...] target}`` for tasks whose targets are not one label
    (segmentation maps, per-pixel regression). ``ds[i]`` is ``(image, (target_0, ..., target_{T-1}))``
    with a float image; :meth:`targets` gives a batch's targets by task name.

    ``x`` is either float32, already normalized, or ``uint8`` with per-channel ``mean``/``std`` (on the
    [0, 1] scale), normalized batch by batch in :meth:`images`: a large data set (CelebA: 200k RGB
    images) then takes a quarter of the memory.

    >>> ds = MultiTaskTensors(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.long),
    ...                       ("a",), mean=(0.5,), std=(0.25,))
    >>> ds.images(torch.tensor([0]))[0, 0, 0].tolist()   # (1 - 0.5) / 0.25
    [2.0, 2.0]
    """

    x: Tensor
    y: Tensor | dict[str, Tensor]
    task_names: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.y, Mapping):
            if tuple(self.y) != tuple(self.task_names):
                raise ValueError(f"targets are for tasks {tuple(self.y)}, expected {tuple(self.task_names)}")
            for name, target in self.y.items():
                if target.shape[0] != self.x.shape[0]:
                    raise ValueError(f"{self.x.shape[0]} images but {target.shape[0]} targets for task {name!r}")
        elif self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.x.shape[0]} images but {self.y.shape[0]} label rows")
        elif self.y.ndim != 2 or self.y.shape[1] != len(self.task_names):
            raise ValueError(f"labels must be [N, {len(self.task_names)}], got {tuple(self.y.shape)}")
        if self.x.dtype == torch.uint8:
            channels = self.x.shape[1] if self.x.ndim == 4 else -1
            if self.mean is None or self.std is None or not len(self.mean) == len(self.std) == channels:
                raise ValueError(f"uint8 images need a mean and a std per channel ({channels})")
            if min(self.std) <= 0:
                raise ValueError(f"std must be positive, got {self.std}")
        elif self.mean is not None or self.std is not None:
            raise ValueError("mean/std are only used with uint8 images; float images are already normalized")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.images(torch.tensor([i]))[0], tuple(t[0] for t in self.targets(torch.tensor([i])).values())

    def targets(self, idx: Tensor) -> dict[str, Tensor]:
        """``{task: target[idx]}`` in task order."""
        if isinstance(self.y, Mapping):
            return {name: self.y[name][idx] for name in self.task_names}
        rows = self.y[idx]
        return {name: rows[:, t] for t, name in enumerate(self.task_names)}

    def images(self, idx: Tensor) -> Tensor:
        """The float32, normalized images ``x[idx]``."""
        x = self.x[idx]
        if x.dtype != torch.uint8:
            return x
        assert self.mean is not None and self.std is not None
        return normalize_uint8(x, self.mean, self.std)

    def subset(self, n: int) -> MultiTaskTensors:
        """The first ``n`` examples (splits are already shuffled at build time)."""
        y = {k: v[:n] for k, v in self.y.items()} if isinstance(self.y, Mapping) else self.y[:n]
        return MultiTaskTensors(self.x[:n], y, self.task_names, self.mean, self.std)


@dataclass
class DataSplits:
    train: MultiTaskTensors
    val: MultiTaskTensors
    test: MultiTaskTensors
    description: str  # human-readable: which data/source was used, sizes
    #: ``{task: Task}`` (loss and metrics, see :mod:`moomtl.tasks`); empty means classification for all.
    tasks: dict[str, Task] = field(default_factory=dict)

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.train.task_names

    def task_specs(self) -> dict[str, Task]:
        """The :class:`~moomtl.tasks.Task` of every task, in task order."""
        missing = [t for t in self.task_names if t not in self.tasks]
        if self.tasks and missing:
            raise ValueError(f"no Task for {missing} in DataSplits.tasks")
        return {t: self.tasks.get(t, Classification()) for t in self.task_names}

    def output_sizes(self) -> list[int]:
        """Output channels per task that a model needs (classes, or target channels), in task order."""
        splits = [d for d in (self.train, self.val, self.test) if len(d)]
        sizes = []
        for name, task in self.task_specs().items():
            if all(hasattr(d, "example_targets") for d in splits):  # data on disk: one decoded example
                targets = [d.example_targets()[name] for d in splits]
            elif isinstance(self.train.y, Mapping):
                targets = [d.y[name] for d in splits]  # type: ignore[index]
            else:
                col = self.task_names.index(name)
                targets = [d.y[:, col] for d in splits]  # type: ignore[call-overload]
            sizes.append(task.output_size(targets))
        return sizes

    def n_classes(self) -> list[int]:
        """Classes per task (largest label + 1), for one-label-per-task data."""
        if isinstance(self.train.y, Mapping):
            raise ValueError("n_classes() is for one-label-per-task data; use output_sizes() for dense tasks")
        return self.output_sizes()
