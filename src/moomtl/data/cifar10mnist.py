"""Cifar10Mnist (MDMTN, Hotegni et al.): an MNIST digit blended onto a CIFAR-10 image; tasks
``("cifar", "digit")``. Construction as in the authors' ``Create_Cifar10Mnist_dataset.py``:

* color image ``i`` is paired with gray image ``i`` (train with train, test with test; with sources of
  different sizes only the first ``min`` images are used);
* the 28×28 digit is resized to 32×32 with PIL's default filter (bicubic), then pasted onto the color image
  with alpha 128 wherever the resized digit pixel is > 0: ``out = round((c·(255−m) + d·m) / 255)`` per
  channel with ``m = 128·[d > 0]`` (PIL's ``paste`` arithmetic, ≈ a 50 % blend of the gray digit);
* the train pairs are split 80/20 into train/val by ``torch.randperm`` seeded with 42 (what
  ``random_split`` does); test = color test images paired with gray test images;
* normalized with mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010).

Training augmentation (``RandomRotation(20)``) is *not* baked into the data: a training loop applies
:func:`augment_train_batch` to training batches only (the authors' code also augmented validation).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from moomtl.data.base import DataError, DataSplits, MultiTaskTensors, labels_in_range
from moomtl.data.cache import cached, file_fingerprint
from moomtl.data.cifar import ColorSource, cifar10, cifar10_files
from moomtl.data.sources import GraySource, gray_source_files, load_gray_source
from moomtl.data.transforms import random_rotation, uint8_to_normalized

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# A black pixel after normalization: the fill that matches rotating before normalizing.
CIFAR10_BLACK = tuple(-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD, strict=True))
TASK_NAMES = ("cifar", "digit")
SPLIT_NAMES = ("train", "val", "test")
_BUILD_VERSION = 1


def resize_digits(digits: np.ndarray | Tensor, size: int = 32) -> Tensor:
    """uint8 ``[N, h, w]`` → uint8 ``[N, size, size]`` with PIL bicubic, the filter the authors' code got
    from ``Image.resize`` by default (Pillow ≥ 7)."""
    arr = digits.numpy() if isinstance(digits, Tensor) else np.asarray(digits)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise ValueError(f"expected uint8 [N, H, W] gray images, got {arr.dtype} {arr.shape}")
    out = np.empty((arr.shape[0], size, size), dtype=np.uint8)
    for i, img in enumerate(arr):
        out[i] = np.asarray(Image.fromarray(img, mode="L").resize((size, size), Image.Resampling.BICUBIC))
    return torch.from_numpy(out)


def blend_digits(color: Tensor, digits: Tensor, alpha: int = 128) -> Tensor:
    """Paste gray ``digits`` ``[N, H, W]`` onto ``color`` ``[N, H, W, 3]`` (both uint8) with opacity
    ``alpha``/255 where the digit pixel is > 0, exactly as PIL's ``paste(gray, mask=alpha_mask)``.

    >>> c = torch.full((1, 1, 2, 3), 200, dtype=torch.uint8); d = torch.tensor([[[0, 100]]], dtype=torch.uint8)
    >>> blend_digits(c, d)[0, 0].tolist()
    [[200, 200, 200], [150, 150, 150]]
    """
    if color.dtype != torch.uint8 or digits.dtype != torch.uint8:
        raise ValueError(f"expected uint8 tensors, got {color.dtype} and {digits.dtype}")
    if color.ndim != 4 or color.shape[-1] != 3 or tuple(color.shape[:3]) != tuple(digits.shape):
        raise ValueError(
            f"expected color [N, H, W, 3] and digits [N, H, W], got {tuple(color.shape)} and {tuple(digits.shape)}"
        )
    if not 0 <= alpha <= 255:
        raise ValueError(f"alpha must be in 0..255, got {alpha}")
    m = (digits > 0).to(torch.int32).mul_(alpha).unsqueeze(-1)
    blend = color.to(torch.int32) * (255 - m) + digits.to(torch.int32).unsqueeze(-1) * m
    # PIL's DIV255: exact rounding of blend / 255 in integer arithmetic.
    t = blend + 128
    return ((t + (t >> 8)) >> 8).to(torch.uint8)


def pair_color_gray(
    color_images: np.ndarray,
    color_labels: np.ndarray,
    gray_images: np.ndarray,
    gray_labels: np.ndarray,
    alpha: int = 128,
) -> tuple[Tensor, Tensor]:
    """Blend gray image ``i`` onto color image ``i`` for ``i < min(len(color), len(gray))``: uint8 images
    ``[N, 32, 32, 3]`` and labels ``[N, 2]`` (color class, gray class)."""
    n = min(len(color_images), len(gray_images))
    color = torch.from_numpy(np.ascontiguousarray(color_images[:n]))
    if color.ndim != 4 or color.shape[-1] != 3 or color.dtype != torch.uint8:
        raise ValueError(f"expected uint8 color images [N, H, W, 3], got {color.dtype} {tuple(color.shape)}")
    if color.shape[1] != color.shape[2]:
        raise ValueError(f"expected square color images, got {tuple(color.shape[1:3])}")
    digits = resize_digits(gray_images[:n], size=int(color.shape[1]))
    labels = torch.from_numpy(np.stack([np.asarray(color_labels[:n]), np.asarray(gray_labels[:n])], 1))
    return blend_digits(color, digits, alpha), labels.to(torch.int64)


def build_cifar10mnist_arrays(
    color: ColorSource,
    gray: GraySource,
    *,
    train_fraction: float = 0.8,
    split_seed: int = 42,
    alpha: int = 128,
) -> dict[str, Any]:
    """The uint8 splits as a dict ``{"description", "splits": {split: {"images", "labels", "index"}}}``;
    ``index`` is the position of each pair in the source's train (train, val) or test arrays."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    images, labels = pair_color_gray(
        color.train_images, color.train_labels, gray.train_images, gray.train_labels, alpha
    )
    n = len(labels)
    # Same permutation as torch.utils.data.random_split(ds, [k, n - k], generator=manual_seed(split_seed)).
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    k = int(train_fraction * n)
    train_idx, val_idx = perm[:k], perm[k:]
    test_images, test_labels = pair_color_gray(
        color.test_images, color.test_labels, gray.test_images, gray.test_labels, alpha
    )
    splits = {
        "train": {"images": images[train_idx], "labels": labels[train_idx], "index": train_idx},
        "val": {"images": images[val_idx], "labels": labels[val_idx], "index": val_idx},
        "test": {"images": test_images, "labels": test_labels, "index": torch.arange(len(test_labels))},
    }
    desc = (
        f"Cifar10Mnist: color images from {color.description}; digits from {gray.description}. "
        f"Image i blended with digit i (alpha {alpha}): {n} train pairs split {len(train_idx)} train / "
        f"{len(val_idx)} val (randperm seed {split_seed}), {len(test_labels)} test pairs from the test sets."
    )
    return {"description": desc, "splits": splits}


def _to_splits(payload: dict[str, Any]) -> DataSplits:
    parts = [
        MultiTaskTensors(
            uint8_to_normalized(payload["splits"][s]["images"], CIFAR10_MEAN, CIFAR10_STD),
            payload["splits"][s]["labels"],
            TASK_NAMES,
        )
        for s in SPLIT_NAMES
    ]
    return DataSplits(*parts, description=payload["description"])


def build_cifar10mnist(
    color: ColorSource,
    gray: GraySource,
    *,
    train_fraction: float = 0.8,
    split_seed: int = 42,
    alpha: int = 128,
) -> DataSplits:
    """Cifar10Mnist from any color source (uint8 ``[N, 32, 32, 3]``) and any gray source (uint8
    ``[N, 28, 28]``): normalized float32 ``[N, 3, 32, 32]``, labels ``[N, 2]`` for ``("cifar", "digit")``."""
    return _to_splits(
        build_cifar10mnist_arrays(color, gray, train_fraction=train_fraction, split_seed=split_seed, alpha=alpha)
    )


def _valid_payload(payload: Any) -> bool:
    try:
        for s in SPLIT_NAMES:
            p = payload["splits"][s]
            n = p["images"].shape[0]
            if p["images"].dtype != torch.uint8 or p["images"].ndim != 4 or p["labels"].shape != (n, 2):
                return False
            if not labels_in_range(p["labels"], 10):
                return False
        return isinstance(payload["description"], str)
    except (KeyError, TypeError, AttributeError):
        return False


def build_cifar10mnist_from_roots(
    cifar_root: str | os.PathLike[str] | None,
    mnist_source: str = "auto",
    mnist_root: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    train_fraction: float = 0.8,
    split_seed: int = 42,
    alpha: int = 128,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> DataSplits:
    """Cifar10Mnist from CIFAR-10 at ``cifar_root`` (the official python batches, extracted or as
    ``cifar-10-python.tar.gz``) and a gray source (see :func:`~moomtl.data.sources.load_gray_source`),
    cached on disk like MultiMNIST.

    The construction itself has no randomness but the train/val split (``split_seed``, 42 as the
    authors); ``seed`` only drives the train/test split of the ``mnist5k`` source. ``n_train``, ``n_val``,
    ``n_test`` keep the first examples of each (already shuffled) split.
    """
    if cifar_root is None:
        raise DataError(
            "Cifar10Mnist needs a CIFAR-10 root: a folder holding cifar-10-batches-py/ (the official python "
            "version: data_batch_1..5, test_batch) or cifar-10-python.tar.gz"
        )
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if v is not None and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    source_seed = seed
    files = file_fingerprint(cifar10_files(cifar_root))
    resolved, gray_files = gray_source_files(mnist_source, mnist_root)
    params = {
        "version": _BUILD_VERSION,
        "cifar": files,
        "gray": resolved,
        "gray_files": file_fingerprint(gray_files),
        "train_fraction": train_fraction,
        "split_seed": split_seed,
        "alpha": alpha,
        "source_seed": source_seed if resolved == "mnist5k" else None,
    }

    def build() -> dict[str, Any]:
        return build_cifar10mnist_arrays(
            cifar10(cifar_root),
            load_gray_source(resolved, mnist_root, seed=source_seed),
            train_fraction=train_fraction,
            split_seed=split_seed,
            alpha=alpha,
        )

    payload = cached("cifar10mnist", params, build, cache_dir=cache_dir, enabled=use_cache, validate=_valid_payload)
    splits = _to_splits(payload)
    parts = [
        part if n is None else part.subset(n)
        for part, n in ((splits.train, n_train), (splits.val, n_val), (splits.test, n_test))
    ]
    sizes = f" Used {len(parts[0])} train / {len(parts[1])} val / {len(parts[2])} test."
    return DataSplits(*parts, description=splits.description + sizes)


def augment_train_batch(x: Tensor, generator: torch.Generator | None = None, degrees: float = 20.0) -> Tensor:
    """``RandomRotation(degrees)`` of a *normalized* Cifar10Mnist training batch ``[N, 3, H, W]``; corners
    are filled with normalized black, as torchvision does when it rotates before normalizing."""
    return random_rotation(x, degrees, generator, fill=CIFAR10_BLACK)
