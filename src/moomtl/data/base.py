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
    """``x``: ``[N, C, H, W]`` float32 (already normalized); ``y``: ``[N, T]`` int64 labels, column t
    for task ``task_names[t]``. ``ds[i]`` is ``(image, (label_0, ..., label_{T-1}))``."""

    x: Tensor
    y: Tensor
    task_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.x.shape[0]} images but {self.y.shape[0]} label rows")
        if self.y.ndim != 2 or self.y.shape[1] != len(self.task_names):
            raise ValueError(f"labels must be [N, {len(self.task_names)}], got {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.x[i], tuple(self.y[i])

    def subset(self, n: int) -> MultiTaskTensors:
        """The first ``n`` examples (splits are already shuffled at build time)."""
        return MultiTaskTensors(self.x[:n], self.y[:n], self.task_names)


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
