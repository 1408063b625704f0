"""The paper's ``MNISTFull`` of the rotation setting (Liu et al. 2024, uiuctml/AdaOMD-TCH
``FL/scripts/ds_models/MNIST.py``): ``784 → hidden (ReLU) → 10``, the *whole* network shared by all tasks
and applied to each task's own rotated image, so ``L_t(θ) = CE(f_θ(rot_t(X)), y)`` (no task-specific
parameters). Registered as ``rotation_mlp`` (:mod:`moomtl.models.registry`); the data sets are
:mod:`moomtl.data.rotations`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from moomtl.models.base import MultiTaskModel

MODEL_NAME = "rotation_mlp"


class RotationMLP(MultiTaskModel):
    """One MLP ``784 → hidden → classes`` shared by every task; task ``t`` reads input channel ``t``.

    ``encode``: ``[N, T, H, W] → [N, T, hidden]`` (the hidden ReLU features of each task's image);
    ``decode``: the shared output layer on each task's features.

    >>> import torch
    >>> m = RotationMLP(("a", "b"), 10, hidden=8, pixels=4)
    >>> {k: tuple(v.shape) for k, v in m(torch.zeros(3, 2, 2, 2)).items()}
    {'a': (3, 10), 'b': (3, 10)}
    >>> m.task_specific_parameters()
    []
    """

    def __init__(self, task_names: Sequence[str], n_classes: int, hidden: int = 200, pixels: int = 784) -> None:
        super().__init__()
        self.task_names = tuple(task_names)
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def encode(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != len(self.task_names):
            raise ValueError(f"expected [N, {len(self.task_names)}, H, W] inputs (one channel per task), "
                             f"got {tuple(x.shape)}")
        return F.relu(self.fc1(x.flatten(2)))

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        out = self.fc2(z)
        return {t: out[:, i] for i, t in enumerate(self.task_names)}

    def shared_modules(self) -> nn.Module:
        return self


def rotation_mlp(task_names: Sequence[str], n_classes: Sequence[int],
                  input_shape: Sequence[int] | None = None) -> MultiTaskModel:
    if len(set(int(c) for c in n_classes)) != 1:
        raise ValueError(f"{MODEL_NAME} shares one output layer: every task needs the same classes, got "
                         f"{list(n_classes)}")
    pixels = 784 if input_shape is None else int(np.prod(input_shape[1:]))
    return RotationMLP(task_names, int(n_classes[0]), pixels=pixels)
