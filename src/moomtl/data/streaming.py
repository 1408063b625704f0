"""Data sets that stay on disk: images decoded from their files when a batch needs them (in
``DataLoader`` worker processes when the trainer has ``num_workers``), labels in memory.

:class:`ImageFiles` is the streaming counterpart of :class:`~moomtl.data.base.MultiTaskTensors`: the same
``task_names`` / ``y`` / ``images(idx)`` / ``targets(idx)`` interface and the same item ``(image, targets)``
(float32, normalized with ``mean``/``std`` exactly as ``MultiTaskTensors`` normalizes uint8 images), so
the trainer, evaluation and model checks take either; only the memory differs (CelebA's 162,770 training
images at 64×64 are 2 GB as uint8 in memory, 0 here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from moomtl.data.base import normalize_uint8

Decode = Callable[[Path], np.ndarray]  # one file → uint8 [C, H, W]


class ImageFiles(Dataset):
    """Images read by ``decode(path)`` (uint8 ``[C, H, W]``; a module-level function or a
    ``functools.partial`` of one, so worker processes can use it) and labels ``y`` ``[N, T]``."""

    def __init__(self, paths: Sequence[Path], y: Tensor, task_names: Sequence[str], decode: Decode,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        if len(paths) != y.shape[0]:
            raise ValueError(f"{len(paths)} image files but {y.shape[0]} label rows")
        if y.ndim != 2 or y.shape[1] != len(task_names):
            raise ValueError(f"labels must be [N, {len(task_names)}], got {tuple(y.shape)}")
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"need one mean and one positive std per channel, got {mean} and {std}")
        self.paths = [Path(p) for p in paths]
        self.y = y
        self.task_names = tuple(task_names)
        self.decode = decode
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        x = torch.from_numpy(np.ascontiguousarray(self.decode(self.paths[i])))[None]
        return normalize_uint8(x, self.mean, self.std)[0], tuple(self.y[i, t] for t in range(len(self.task_names)))

    def images(self, idx: Tensor) -> Tensor:
        """The float32, normalized images of ``idx``, decoded now (model checks, LSUV batches)."""
        raw = [torch.from_numpy(np.ascontiguousarray(self.decode(self.paths[int(i)]))) for i in idx]
        if not raw:
            return torch.empty(0, len(self.mean), *self.input_shape[1:])
        return normalize_uint8(torch.stack(raw), self.mean, self.std)

    def targets(self, idx: Tensor) -> dict[str, Tensor]:
        rows = self.y[idx]
        return {name: rows[:, t] for t, name in enumerate(self.task_names)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(np.asarray(self.decode(self.paths[0])).shape) if self.paths else (len(self.mean), 0, 0)


def input_shape_of(data: object) -> tuple[int, ...]:
    """``[C, H, W]`` of one example of a split, in memory or on disk."""
    shape = getattr(data, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    x = getattr(data, "x", None)
    if x is not None:
        return tuple(x.shape[1:])
    return tuple(data[0][0].shape)  # type: ignore[index]
