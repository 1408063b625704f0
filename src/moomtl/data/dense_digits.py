"""Dense MultiMNIST: a small two-task *dense* benchmark built offline from real digit images.

A synthetic composition of real 28×28 digits, like MultiMNIST itself, but with per-cell targets in the
style of the MGDA paper's Cityscapes experiment (semantic segmentation + instance centroid offsets), so
dense multi-task methods can be exercised and compared on a CPU in minutes.

Pairs and splits are exactly MultiMNIST's (:func:`~moomtl.data.multimnist.build_multitask_arrays` with the
same ``kind``, ``source``, ``n_*`` and ``seed``: splits by source image, the same left/right partners).
Each pair is composed on a ``canvas × canvas`` black canvas (``canvas`` a multiple of 8, ≥ 48) with
``o = canvas // 8``:

* the left digit at rows/cols ``[o, o + 28)``, the right digit at ``[p, p + 28)`` with
  ``p = canvas − 28 − o``; where the two 28×28 frames overlap the pixelwise maximum is kept (as in
  MultiMNIST). The frames overlap on a square of side ``56 + 2·o − canvas`` (:func:`frame_overlap`):
  8×8 pixels at canvas 64 (canvas rows/cols 28..35), i.e. the bottom-right 8×8 corner of the left frame
  on the top-left 8×8 corner of the right one; MNIST digits sit in the central 20×20 of their frame, so
  the strokes themselves rarely touch. No resize: the canvas is the image, uint8 ``[N, 1, canvas, canvas]``,
  normalized with MNIST's mean/std (:data:`~moomtl.data.multimnist.MNIST_MEAN`, also for Fashion-MNIST
  items: the repository has no Fashion-MNIST constants).
* Ownership (full resolution): a canvas pixel belongs to digit ``d`` if ``d``'s own pixel there is
  ≥ :data:`FOREGROUND` (64) and ≥ the other digit's pixel there (ties → left); otherwise background.
* Targets, one per 8×8 cell (``h = w = canvas / 8``, the output stride of
  :func:`~moomtl.models.dense.dense_hps`):

  - ``"segmentation"`` (int64 ``[N, h, w]``, 11 classes): 0 = background; ``1 + class`` of the digit
    owning the most pixels of the cell (ties → left) if the cell has ≥ :data:`MIN_CELL_FOREGROUND` (8 of
    64) owned pixels, else 0. The ignore index 255 never occurs.
  - ``"instance"`` (float32 ``[N, 2, h, w]``): for a cell labelled with digit ``d``,
    ``(dy, dx) = (ȳ_d − (8i + 3.5), x̄_d − (8j + 3.5))``: the centroid of ``d``'s foreground (the mean
    canvas coordinate of *its own* pixels ≥ 64, before ownership) minus the centre of cell ``(i, j)``, in
    canvas pixels; NaN on background cells. Note the sign: centroid − position, the opposite of
    :func:`~moomtl.data.cityscapes.instance_offsets` (position − centroid); the cell centre stands in
    for the pixel.

Built splits are cached on disk (:mod:`moomtl.data.cache`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from moomtl.data.base import DataSplits, MultiTaskTensors, labels_in_range
from moomtl.data.cache import cached
from moomtl.data.multimnist import MNIST_MEAN, MNIST_STD, build_multitask_arrays, resolve_kind_sources
from moomtl.tasks import MaskedL1, Segmentation

TASK_NAMES: tuple[str, ...] = ("segmentation", "instance")
KINDS: tuple[str, ...] = ("multimnist", "multifashion")
SPLIT_NAMES = ("train", "val", "test")
DIGIT = 28  # side of a source image
CELL = 8  # side of a target cell (the dense models' output stride)
MIN_CANVAS = 48
FOREGROUND = 64  # a pixel ≥ this is foreground
MIN_CELL_FOREGROUND = 8  # owned pixels (of 64) a cell needs to get a digit's label
N_CLASSES = 11  # background + 10 digit classes
_TITLES = {"multimnist": ("MultiMNIST", "digits"), "multifashion": ("MultiFashion", "Fashion-MNIST items")}
_BUILD_VERSION = 1  # bump when the construction changes, so old cache entries are not reused
_CHUNK = 1024  # pairs composed at once (bounds the temporary canvases' memory)


def check_canvas(canvas: int) -> int:
    """``canvas`` as an int if it is a multiple of 8 and ≥ 48, else ``ValueError``."""
    if isinstance(canvas, bool) or not isinstance(canvas, (int, np.integer)):
        raise ValueError(f"canvas must be an integer, got {canvas!r}")
    if canvas % CELL or canvas < MIN_CANVAS:
        raise ValueError(f"canvas must be a multiple of {CELL} and ≥ {MIN_CANVAS}, got {canvas}")
    return int(canvas)


def digit_offsets(canvas: int) -> tuple[int, int]:
    """Top-left corners ``(o, p)``: the left digit at ``(o, o)``, the right one at ``(p, p)``.

    >>> digit_offsets(64), digit_offsets(48)
    ((8, 28), (6, 14))
    """
    canvas = check_canvas(canvas)
    o = canvas // 8
    return o, canvas - DIGIT - o


def frame_overlap(canvas: int) -> int:
    """Side of the square where the two 28×28 frames overlap (0 if they do not).

    >>> frame_overlap(64), frame_overlap(48), frame_overlap(80)
    (8, 20, 0)
    """
    o, p = digit_offsets(canvas)
    return max(0, o + DIGIT - p)


def compose_dense(
    left: np.ndarray,
    right: np.ndarray,
    left_labels: np.ndarray,
    right_labels: np.ndarray,
    canvas: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compose pairs and their dense targets (see the module docstring for the exact definitions).

    Args:
        left, right: uint8 ``[N, 28, 28]`` source images.
        left_labels, right_labels: ``[N]`` classes 0..9.

    Returns:
        ``(image, segmentation, instance)``: uint8 ``[N, 1, canvas, canvas]``, int64 ``[N, h, w]`` and
        float32 ``[N, 2, h, w]`` with ``h = w = canvas / 8``.

    >>> a = np.zeros((1, 28, 28), np.uint8); a[0, 10:14, 12:16] = 255   # 4×4 block → canvas 18..21, 20..23
    >>> img, seg, inst = compose_dense(a, np.zeros_like(a), np.array([3]), np.array([5]))
    >>> img.shape, int(img.sum() // 255), np.argwhere(seg[0]).tolist(), int(seg[0, 2, 2])
    ((1, 1, 64, 64), 16, [[2, 2]], 4)
    >>> inst[0, :, 2, 2].tolist(), bool(np.isnan(inst[0, :, 0, 0]).all())   # centroid (19.5, 21.5)
    ([0.0, 2.0], True)
    """
    canvas = check_canvas(canvas)
    left, right = np.asarray(left), np.asarray(right)
    for name, a in (("left", left), ("right", right)):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[1:] != (DIGIT, DIGIT):
            raise ValueError(f"{name} images must be uint8 [N, {DIGIT}, {DIGIT}], got {a.dtype} {a.shape}")
    n = left.shape[0]
    left_labels, right_labels = np.asarray(left_labels), np.asarray(right_labels)
    if right.shape[0] != n or left_labels.shape != (n,) or right_labels.shape != (n,):
        raise ValueError(
            f"need N left/right images and N labels each, got {left.shape[0]}, {right.shape[0]}, "
            f"{left_labels.shape} and {right_labels.shape}"
        )
    for labels in (left_labels, right_labels):
        if n and (labels.min() < 0 or labels.max() > N_CLASSES - 2):
            raise ValueError(f"classes must be in 0..{N_CLASSES - 2}, got {labels.min()}..{labels.max()}")
    h = canvas // CELL
    image = np.empty((n, 1, canvas, canvas), np.uint8)
    seg = np.empty((n, h, h), np.int64)
    inst = np.empty((n, 2, h, h), np.float32)
    for s in range(0, n, _CHUNK):
        e = min(s + _CHUNK, n)
        image[s:e, 0], seg[s:e], inst[s:e] = _compose_chunk(
            left[s:e], right[s:e], left_labels[s:e], right_labels[s:e], canvas
        )
    return image, seg, inst


def _centroids(images: np.ndarray, offset: int) -> np.ndarray:
    """``[N, 2]`` (row, col) mean canvas coordinate of each image's pixels ≥ FOREGROUND (0 if none: such a
    digit owns no pixel, so its centroid is never read)."""
    fg = images >= FOREGROUND
    count = np.maximum(fg.sum(axis=(1, 2)), 1)
    coords = np.arange(DIGIT, dtype=np.float64)
    cy = (fg.sum(axis=2) * coords).sum(axis=1) / count
    cx = (fg.sum(axis=1) * coords).sum(axis=1) / count
    return np.stack([cy, cx], axis=1) + offset


def _compose_chunk(
    left: np.ndarray, right: np.ndarray, left_labels: np.ndarray, right_labels: np.ndarray, canvas: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, h = left.shape[0], canvas // CELL
    o, p = digit_offsets(canvas)
    lc = np.zeros((n, canvas, canvas), np.uint8)
    rc = np.zeros((n, canvas, canvas), np.uint8)
    lc[:, o : o + DIGIT, o : o + DIGIT] = left
    rc[:, p : p + DIGIT, p : p + DIGIT] = right
    image = np.maximum(lc, rc)
    own_left = (lc >= FOREGROUND) & (lc >= rc)
    own_right = (rc >= FOREGROUND) & (rc > lc)  # strict: ties go to the left digit
    # Owned pixels per 8×8 cell: [N, h, 8, w, 8] summed over the in-cell axes.
    n_left = own_left.reshape(n, h, CELL, h, CELL).sum(axis=(2, 4))
    n_right = own_right.reshape(n, h, CELL, h, CELL).sum(axis=(2, 4))
    labelled = n_left + n_right >= MIN_CELL_FOREGROUND
    left_wins = n_left >= n_right
    owner_class = np.where(left_wins, left_labels[:, None, None], right_labels[:, None, None])
    seg = np.where(labelled, 1 + owner_class, 0).astype(np.int64)
    cl, cr = _centroids(left, o), _centroids(right, p)  # [N, 2] each
    centroid = np.where(left_wins[:, None], cl[:, :, None, None], cr[:, :, None, None])  # [N, 2, h, w]
    centre = CELL * np.arange(h, dtype=np.float64) + (CELL - 1) / 2
    offsets = centroid - np.stack(np.meshgrid(centre, centre, indexing="ij"))[None]
    inst = np.where(labelled[:, None], offsets, np.nan).astype(np.float32)
    return image, seg, inst


def _valid_payload(payload: Any, canvas: int) -> bool:
    try:
        h = canvas // CELL
        for s in SPLIT_NAMES:
            p = payload["splits"][s]
            n = p["image"].shape[0]
            ok = (
                p["image"].dtype == torch.uint8
                and tuple(p["image"].shape) == (n, 1, canvas, canvas)
                and tuple(p["segmentation"].shape) == (n, h, h)
                and labels_in_range(p["segmentation"], N_CLASSES)
                and labels_in_range(p["labels"], N_CLASSES - 1)
                and p["instance"].dtype == torch.float32
                and tuple(p["instance"].shape) == (n, 2, h, h)
                and tuple(p["labels"].shape) == (n, 2)
            )
            if not ok:
                return False
        return isinstance(payload["description"], str)
    except (KeyError, TypeError, AttributeError):
        return False


def build_dense_digits(
    kind: str = "multimnist",
    source: str = "auto",
    root: str | os.PathLike[str] | None = None,
    *,
    canvas: int = 64,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> DataSplits:
    """Dense MultiMNIST (or MultiFashion): tasks ``("segmentation", "instance")`` on ``[N, 1, canvas,
    canvas]`` images, targets at ``canvas / 8`` (definitions in the module docstring).

    Args:
        kind: ``"multimnist"`` or ``"multifashion"`` (``"multifashion+mnist"`` mixes digit and item
            classes, which one 11-class segmentation cannot tell apart: not supported).
        source, root, n_train, n_val, n_test, seed: as :func:`~moomtl.data.multimnist.build_multitask_digits`
            (the same pairs and splits; ``n_*`` count pairs).
        canvas: side of the canvas, a multiple of 8 and ≥ 48.
        cache_dir, use_cache: on-disk cache (default ``$MOOMTL_CACHE`` or ``~/.cache/moomtl``).

    Raises:
        ValueError: bad ``kind``, ``source`` or ``canvas``.
        DataError: missing or corrupt source files.
    """
    if kind not in KINDS:
        raise ValueError(
            f"dense digits support kind {' or '.join(map(repr, KINDS))}, got {kind!r} (multifashion+mnist "
            "would put digit and Fashion classes in the same 11 segmentation labels)"
        )
    canvas = check_canvas(canvas)
    # The same sources, validation and loading as the MultiMNIST build whose pairs are reused below.
    sources = resolve_kind_sources(kind, source, root)
    role = sources.roles[0]
    params = {
        "version": _BUILD_VERSION,
        "kind": kind,
        "source": sources.resolved[role],
        "files": sources.files[role],
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "seed": seed,
        "canvas": canvas,
    }

    def build() -> dict[str, Any]:
        pairs = build_multitask_arrays(
            kind=kind, source=source, root=root, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed,
            cache_dir=cache_dir, use_cache=use_cache,
        )
        src = sources.load(role)
        splits: dict[str, dict[str, torch.Tensor]] = {}
        for name in SPLIT_NAMES:
            split = getattr(pairs, name)
            images, labels = (
                (src.test_images, src.test_labels) if name == "test" else (src.train_images, src.train_labels)
            )
            li, ri = split.left_index.numpy(), split.right_index.numpy()
            if not (np.array_equal(labels[li], split.labels[:, 0].numpy())
                    and np.array_equal(labels[ri], split.labels[:, 1].numpy())):
                raise RuntimeError(f"{name} split: source labels disagree with the MultiMNIST build's labels")
            image, seg, inst = compose_dense(images[li], images[ri], labels[li], labels[ri], canvas)
            splits[name] = {
                "image": torch.from_numpy(image),
                "segmentation": torch.from_numpy(seg),
                "instance": torch.from_numpy(inst),
                "labels": split.labels.clone(),
                "left_index": split.left_index.clone(),
                "right_index": split.right_index.clone(),
            }
        title, what = _TITLES[kind]
        o, p = digit_offsets(canvas)
        k, h = frame_overlap(canvas), canvas // CELL
        sizes = ", ".join(f"{name} {len(splits[name]['labels'])}" for name in SPLIT_NAMES)
        desc = (
            f"dense {title}: real {what} composed on a {canvas}x{canvas} canvas; segmentation "
            f"({N_CLASSES} classes) and centroid offsets at {CELL}x{CELL} cells ({h}x{h} targets). Left at "
            f"({o},{o}), right at ({p},{p}), pixelwise max (frames overlap {k}x{k}); foreground ≥ "
            f"{FOREGROUND}. Images from {src.description}. Pairs {sizes} (MultiMNIST's pairs and splits by "
            f"source image, seed {seed}). Normalized with MNIST mean/std. Synthetic composition of real images."
        )
        return {"description": desc, "splits": splits}

    payload = cached(
        "dense_digits", params, build, cache_dir=cache_dir, enabled=use_cache,
        validate=lambda pl: _valid_payload(pl, canvas),
    )
    parts = []
    for name in SPLIT_NAMES:
        p = payload["splits"][name]
        targets = {"segmentation": p["segmentation"], "instance": p["instance"]}
        parts.append(MultiTaskTensors(p["image"], targets, TASK_NAMES, mean=MNIST_MEAN, std=MNIST_STD))
    tasks = {"segmentation": Segmentation(N_CLASSES), "instance": MaskedL1()}
    return DataSplits(*parts, description=payload["description"], tasks=tasks)


__all__ = [
    "FOREGROUND",
    "KINDS",
    "MIN_CELL_FOREGROUND",
    "N_CLASSES",
    "TASK_NAMES",
    "build_dense_digits",
    "check_canvas",
    "compose_dense",
    "digit_offsets",
    "frame_overlap",
]
