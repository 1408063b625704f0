"""In-memory multi-task data sets: images and one integer label per task."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset


class DataError(Exception):
    """Missing or corrupt data: the message says which file and what was expected."""


@dataclass
class MultiTaskTensors(Dataset):
    """``x``: ``[N, C, H, W]`` images; ``y``: ``[N, T]`` int64 labels, column t for task
    ``task_names[t]``. ``ds[i]`` is ``(image, (label_0, ..., label_{T-1}))`` with a float image.

    ``x`` is either float32, already normalized, or ``uint8`` with per-channel ``mean``/``std`` (on the
    [0, 1] scale), normalized batch by batch in :meth:`images`: a large data set (CelebA: 200k RGB
    images) then takes a quarter of the memory.

    >>> ds = MultiTaskTensors(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.long),
    ...                       ("a",), mean=(0.5,), std=(0.25,))
    >>> ds.images(torch.tensor([0]))[0, 0, 0].tolist()   # (1 - 0.5) / 0.25
    [2.0, 2.0]
    """

    x: Tensor
    y: Tensor
    task_names: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.x.shape[0]} images but {self.y.shape[0]} label rows")
        if self.y.ndim != 2 or self.y.shape[1] != len(self.task_names):
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
        return self.images(torch.tensor([i]))[0], tuple(self.y[i])

    def images(self, idx: Tensor) -> Tensor:
        """The float32, normalized images ``x[idx]``."""
        x = self.x[idx]
        if x.dtype != torch.uint8:
            return x
        assert self.mean is not None and self.std is not None
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def subset(self, n: int) -> MultiTaskTensors:
        """The first ``n`` examples (splits are already shuffled at build time)."""
        return MultiTaskTensors(self.x[:n], self.y[:n], self.task_names, self.mean, self.std)


@dataclass
class DataSplits:
    train: MultiTaskTensors
    val: MultiTaskTensors
    test: MultiTaskTensors
    description: str  # human-readable: which data/source was used, sizes

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.train.task_names

    def n_classes(self) -> list[int]:
        ys = torch.cat([self.train.y, self.val.y, self.test.y])
        return [int(ys[:, t].max()) + 1 for t in range(ys.shape[1])]
