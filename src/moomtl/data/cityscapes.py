"""Cityscapes "scene understanding" (Sener & Koltun 2018, Sec. 6.3): three dense tasks read from the
official files: semantic segmentation (19 classes), instance segmentation (per-pixel offset to the
instance centroid) and depth (disparity).

Official files (https://www.cityscapes-dataset.com/downloads/, a login is needed: packages
``leftImg8bit_trainvaltest.zip``, ``gtFine_trainvaltest.zip``, ``disparity_trainvaltest.zip``), with
``stem = {city}_{seq}_{frame}``:

* ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png``: RGB, 2048×1024;
* ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``: 8-bit label ids 0..33;
* ``gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png``: 16-bit PNG (PIL mode ``I;16``, or ``I`` with
  older Pillow): ``labelId * 1000 + k`` on the pixels of instance ``k`` of a "thing" class, else the labelId;
* ``disparity/{split}/{city}/{stem}_disparity.png``: 16-bit PNG ``p``; disparity ``d = (p - 1) / 256`` for
  ``p > 0``, ``p = 0`` is invalid.

The folders may sit at ``root`` or at ``root/cityscapes``. Splits: official train (2,975 frames) and val
(500); the official test split has no public labels and is not used.

Targets, as in the authors' loader (``cityscapes_loader.py`` of isl-org/MultiObjectiveOptimization):

* computed at full resolution, then taken at ``1/8`` of the resized image's resolution with
  :func:`downsample_nearest` (the same pixel for every target);
* ``segmentation``: trainIds (:data:`CITYSCAPES_TRAIN_IDS`), 255 = ignore;
* ``instance``: ``(y - ȳ, x - x̄)`` to the mean coordinate of the pixel's instance, in pixels of the
  full-resolution image, NaN off instances (:func:`instance_offsets`);
* ``depth``: disparity in pixels of the full-resolution image (:func:`disparity_from_png`), NaN where
  invalid. Deviation: the authors subtract a per-pixel mean disparity file (``depth_mean.npy``, not
  public) from the raw PNG values and divide by 2729.07; here the target is the physical disparity, so it
  needs no extra file and its L1 error has a unit.

Images: RGB, resized to ``image_size = (H, W)`` with PIL bilinear filtering, stored uint8 and normalized
batch by batch with :data:`CITYSCAPES_MEAN` / :data:`CITYSCAPES_STD`, the ImageNet statistics (the
authors subtract the same mean, ×255, without dividing by a std).

Splits used here: the paper reports on the official val split, so **official val is our test**; **our
val** is a seeded random subset of official train (``n_val`` frames, 500 by default, as large as the
official val) held out from training; **train** is the rest of official train. ``n_train`` / ``n_test``
keep seeded random subsets of those (nested for growing ``n``, as in :mod:`moomtl.data.celeba`).

Decoding ~3,500 frames of four full-resolution PNGs takes minutes, so the decoded arrays are cached on
disk (:mod:`moomtl.data.cache`), keyed by the chosen frames' files (path, size, mtime), ``image_size``,
the subset sizes and ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from moomtl.data.base import DataError, DataSplits, MultiTaskTensors, normalize_uint8
from moomtl.data.cache import cached
from moomtl.data.celeba import select_indices
from moomtl.data.parallel import default_workers, run_threaded
from moomtl.tasks import MaskedL1, Segmentation

TASK_NAMES: tuple[str, ...] = ("segmentation", "instance", "depth")
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
#: The labelIds of the 19 evaluated classes, in trainId order (labelId ``_EVAL_LABEL_IDS[t]`` → trainId t).
_EVAL_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
#: labelIds of the "thing" classes whose instances get an offset target (trainIds 11..18). Caravan (29) and
#: trailer (30) have instances too but no trainId: ignored, as in the authors' loader.
CITYSCAPES_THING_LABEL_IDS: tuple[int, ...] = (24, 25, 26, 27, 28, 31, 32, 33)
IGNORE_INDEX = 255


def _train_id_table() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[list(_EVAL_LABEL_IDS)] = np.arange(len(_EVAL_LABEL_IDS), dtype=np.uint8)
    table.flags.writeable = False  # a shared constant: never modified in place
    return table


#: labelId → trainId lookup (256 entries, uint8): the 19 evaluated classes → 0..18, everything else → 255.
CITYSCAPES_TRAIN_IDS: np.ndarray = _train_id_table()
#: ImageNet per-channel statistics on the [0, 1] scale (RGB); not Cityscapes' own (fixed constants keep
#: every run comparable and need no pass over the data).
CITYSCAPES_MEAN = (0.485, 0.456, 0.406)
CITYSCAPES_STD = (0.229, 0.224, 0.225)
CITYSCAPES_URL = "https://www.cityscapes-dataset.com/downloads/"
#: top-level folder → the official package that provides it.
PACKAGES = {
    "leftImg8bit": "leftImg8bit_trainvaltest.zip",
    "gtFine": "gtFine_trainvaltest.zip",
    "disparity": "disparity_trainvaltest.zip",
}
OFFICIAL_SPLITS = ("train", "val", "test")
TARGET_STRIDE = 8  # targets are at 1/8 of the image resolution (as the authors' loader)
_IMAGE_SUFFIX = "_leftImg8bit.png"
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # how PIL opens a 16-bit grayscale PNG (by version)
_BUILD_VERSION = 1  # bump when decoding changes, so old cache entries are not reused
_PROGRESS_MIN = 200  # decode this many frames or more → progress bar (when progress=None)


class CityscapesFrame(NamedTuple):
    """The four files of one frame."""

    stem: str
    image: Path
    label_ids: Path
    instance_ids: Path
    disparity: Path


# --- pure functions -----------------------------------------------------------------------------------
def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes labelIds to the 19 trainIds (uint8; 255 = ignore, also for ids outside 0..255).

    >>> label_ids_to_train_ids(np.array([[7, 8, 0], [33, 29, 24]])).tolist()
    [[0, 1, 255], [18, 255, 11]]
    """
    a = np.asarray(label_ids)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"label ids must be integers, got dtype {a.dtype}")
    inside = (a >= 0) & (a < 256)
    return np.where(inside, CITYSCAPES_TRAIN_IDS[np.where(inside, a, 0)], np.uint8(IGNORE_INDEX)).astype(np.uint8)


def instance_offsets(instance_ids: np.ndarray) -> np.ndarray:
    """Per-pixel offsets ``[2, H, W]`` float32 from each pixel to the mean coordinate of its instance:
    channel 0 is :math:`y - \\bar y_k`, channel 1 is :math:`x - \\bar x_k`, where :math:`(\\bar y_k, \\bar x_k)`
    is the mean (row, column) of the pixels of instance ``k``, in pixels of ``instance_ids``.

    Instances are the values ``labelId * 1000 + k`` (≥ 1000) whose labelId is a "thing" class with a
    trainId (:data:`CITYSCAPES_THING_LABEL_IDS`); every other pixel (stuff, a thing region without an
    instance id, caravan/trailer, unlabelled) is NaN.

    >>> ids = np.array([[26001, 26001, 7, 24005],
    ...                 [26001, 26001, 26, 24005]])   # car 1: a 2×2 block, person 5: a column; 7, 26: none
    >>> off = instance_offsets(ids)
    >>> off[0].tolist()   # y − ȳ
    [[-0.5, -0.5, nan, -0.5], [0.5, 0.5, nan, 0.5]]
    >>> off[1].tolist()   # x − x̄
    [[-0.5, 0.5, nan, 0.0], [-0.5, 0.5, nan, 0.0]]
    """
    ids = np.asarray(instance_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"instance ids must be a 2-D integer array, got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    thing = np.zeros(max(CITYSCAPES_THING_LABEL_IDS) + 2, dtype=bool)
    thing[list(CITYSCAPES_THING_LABEL_IDS)] = True
    valid = (ids >= 1000) & thing[np.clip(ids // 1000, 0, len(thing) - 1)]
    out = np.full((2, *ids.shape), np.nan, dtype=np.float32)
    ys, xs = np.nonzero(valid)  # row-major, the same order as ids[valid]
    if ys.size == 0:
        return out
    # Valid ids are < 34000, so they index the bins directly: one O(pixels) bincount per coordinate sums
    # each instance's coordinates (np.unique would sort, several times slower on 2-megapixel frames).
    instance = ids[ys, xs]
    counts = np.maximum(np.bincount(instance), 1)  # ids that do not occur: count 0, never looked up
    mean_y = np.bincount(instance, weights=ys) / counts
    mean_x = np.bincount(instance, weights=xs) / counts
    out[0, ys, xs] = ys - mean_y[instance]
    out[1, ys, xs] = xs - mean_x[instance]
    return out


def disparity_from_png(p: np.ndarray) -> np.ndarray:
    """Disparity (in pixels of the full-resolution image) from the 16-bit PNG values: ``(p - 1) / 256`` for
    ``p > 0``, NaN for ``p = 0`` (no measurement). float32, same shape.

    >>> disparity_from_png(np.array([0, 1, 257, 65535])).tolist()
    [nan, 0.0, 1.0, 255.9921875]
    """
    a = np.asarray(p)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"disparity PNG values must be integers, got dtype {a.dtype}")
    if a.size and int(a.min()) < 0:
        raise ValueError("disparity PNG values must be ≥ 0")
    d = (a.astype(np.float64) - 1.0) / 256.0  # exact in float64; float32 keeps 1/256 steps up to 256
    return np.where(a > 0, d, np.nan).astype(np.float32)


def sample_positions(size: int, out_size: int) -> np.ndarray:
    """The input positions :func:`downsample_nearest` keeps along one axis: ``⌊(i + ½)·size / out⌋``, the
    pixel under the centre of output cell ``i``, in exact integer arithmetic. For an integer factor
    ``f = size / out`` that is ``f·i + f//2`` (pixel 4 of every block of 8), the pixel PIL's NEAREST resize
    picks too (for other ratios PIL's float rounding sometimes picks a neighbour).

    >>> sample_positions(16, 2).tolist(), sample_positions(5, 2).tolist()
    ([4, 12], [1, 3])
    """
    if size < 1 or out_size < 1:
        raise ValueError(f"sizes must be ≥ 1, got {size} → {out_size}")
    i = np.arange(out_size, dtype=np.int64)
    return (2 * i + 1) * size // (2 * out_size)  # exact integer form of floor((i + 0.5) * size / out_size)


def downsample_nearest(a: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of the last two axes of ``a`` to ``out_hw = (h, w)``: output pixel
    ``(i, j)`` is input pixel ``(sample_positions(H, h)[i], sample_positions(W, w)[j])``, the one under
    its centre. Values are copied, never mixed (labels and NaN masks survive).

    >>> a = np.arange(16).reshape(4, 4)
    >>> downsample_nearest(a, (2, 2)).tolist()   # rows 1, 3 and columns 1, 3
    [[5, 7], [13, 15]]
    """
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"need at least 2 axes, got shape {a.shape}")
    h, w = (int(v) for v in out_hw)
    rows = sample_positions(a.shape[-2], h)
    cols = sample_positions(a.shape[-1], w)
    return a[..., rows[:, None], cols[None, :]]


# --- files ----------------------------------------------------------------------------------------------
def _resolve_root(root: Path) -> Path:
    """``root`` if it holds one of the official folders, else ``root/cityscapes`` if that does."""
    for base in (root, root / "cityscapes"):
        if any((base / d).is_dir() for d in PACKAGES):
            return base
    return root


def _download_hint(folders: Collection[str]) -> str:
    packages = ", ".join(PACKAGES[f] for f in PACKAGES if f in folders)
    return f"download {packages} from {CITYSCAPES_URL} and unzip them into the root"


def find_cityscapes_files(root: str | os.PathLike[str], split: str) -> list[CityscapesFrame]:
    """The frames of an official ``split`` under ``root`` (or ``root/cityscapes``), sorted by stem: every
    ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with its ``gtFine`` labelIds and instanceIds and its
    ``disparity`` file. A missing folder or file raises one :class:`DataError` that says what is missing
    where and which official package provides it."""
    if split not in OFFICIAL_SPLITS:
        raise ValueError(f"split must be one of {OFFICIAL_SPLITS}, got {split!r}")
    given = Path(root).expanduser()
    if not given.is_dir():
        raise DataError(
            f"Cityscapes root {given} does not exist or is not a folder (expected it to hold leftImg8bit/, "
            f"gtFine/ and disparity/; {_download_hint(PACKAGES)})"
        )
    base = _resolve_root(given)
    dirs = {name: base / name / split for name in PACKAGES}
    absent = [name for name, d in dirs.items() if not d.is_dir()]
    if absent:
        where = f"{given}" + (f" (nor under {given / 'cityscapes'})" if base == given else "")
        raise DataError(
            f"Cityscapes {split} split incomplete under {where}: missing folder(s) "
            f"{', '.join(f'{name}/{split}/' for name in absent)}; {_download_hint(absent)}"
        )
    images = sorted(dirs["leftImg8bit"].glob(f"*/*{_IMAGE_SUFFIX}"), key=lambda p: p.name)
    if not images:
        raise DataError(
            f"{dirs['leftImg8bit']}: no images (expected {{city}}/{{city}}_{{seq}}_{{frame}}{_IMAGE_SUFFIX}); "
            f"{_download_hint(['leftImg8bit'])}"
        )
    frames: list[CityscapesFrame] = []
    missing: dict[str, list[Path]] = {name: [] for name in ("gtFine", "disparity")}
    seen: dict[str, Path] = {}
    for image in images:
        stem, city = image.name[: -len(_IMAGE_SUFFIX)], image.parent.name
        if stem in seen:
            raise DataError(f"frame {stem} appears twice: {seen[stem]} and {image}")
        seen[stem] = image
        frame = CityscapesFrame(
            stem, image,
            dirs["gtFine"] / city / f"{stem}_gtFine_labelIds.png",
            dirs["gtFine"] / city / f"{stem}_gtFine_instanceIds.png",
            dirs["disparity"] / city / f"{stem}_disparity.png",
        )
        for name, path in (("gtFine", frame.label_ids), ("gtFine", frame.instance_ids),
                           ("disparity", frame.disparity)):
            if not path.is_file():
                missing[name].append(path)
        frames.append(frame)
    lacking = {name: paths for name, paths in missing.items() if paths}
    if lacking:
        parts = [f"{len(paths)} {name} file(s) (first: {paths[0]})" for name, paths in lacking.items()]
        raise DataError(
            f"Cityscapes {split} split under {base}: {len(images)} images but missing {'; '.join(parts)}; "
            f"{_download_hint(lacking)}"
        )
    return frames


# --- decoding -------------------------------------------------------------------------------------------
def _open_png(path: Path, modes: Sequence[str], what: str) -> np.ndarray:
    """The pixels of a single-channel PNG whose PIL mode is one of ``modes``; DataError otherwise."""
    try:
        with Image.open(path) as im:
            if im.mode not in modes:
                raise DataError(
                    f"{path}: {what} must be a single-channel PNG (PIL mode {' or '.join(modes)}), "
                    f"got PIL mode {im.mode}"
                )
            return pixels(im)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file missing") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # PIL reports truncated/corrupt files as OSError (UnidentifiedImageError included) or SyntaxError.
        raise DataError(f"{path}: cannot decode {what} ({type(e).__name__}: {e})") from e


def pixels(im: Image.Image) -> np.ndarray:
    """A single-channel PIL image as a native-endian integer array (int64 for 16/32-bit modes: PIL opens a
    16-bit PNG as ``I;16`` (Pillow ≥ 10) or ``I`` (older), both read the same here)."""
    a = np.asarray(im)
    return a if a.dtype == np.uint8 else a.astype(np.int64)


def decode_frame(frame: CityscapesFrame, image_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """One frame → ``image`` uint8 ``[3, H, W]`` and the targets at ``(H/8, W/8)``: ``segmentation``
    uint8 ``[h, w]`` (255 ignore), ``instance`` float32 ``[2, h, w]`` and ``depth`` float32 ``[1, h, w]``
    (NaN ignore), see the module docstring. Label files must have the image's size."""
    height, width = image_size
    out_hw = (height // TARGET_STRIDE, width // TARGET_STRIDE)
    try:
        with Image.open(frame.image) as im:
            full = im.size
            rgb = im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    except FileNotFoundError as e:
        raise DataError(f"{frame.image}: file missing") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{frame.image}: cannot decode image ({type(e).__name__}: {e})") from e
    labels = _open_png(frame.label_ids, ("L",), "an 8-bit labelIds map")
    instances = _open_png(frame.instance_ids, _SIXTEEN_BIT_MODES, "a 16-bit instanceIds map")
    disparity = _open_png(frame.disparity, _SIXTEEN_BIT_MODES, "a 16-bit disparity map")
    for path, a in ((frame.label_ids, labels), (frame.instance_ids, instances), (frame.disparity, disparity)):
        if (a.shape[1], a.shape[0]) != full:
            raise DataError(
                f"{path}: size {a.shape[1]}x{a.shape[0]} differs from its image {frame.image.name} "
                f"({full[0]}x{full[1]})"
            )
    return {
        "image": np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1),
        "segmentation": downsample_nearest(label_ids_to_train_ids(labels), out_hw),
        # Offsets and disparity first at full resolution (instance means need every pixel), then sampled.
        "instance": downsample_nearest(instance_offsets(instances), out_hw),
        "depth": downsample_nearest(disparity_from_png(disparity), out_hw)[None],
    }


def decode_frames(
    frames: Sequence[CityscapesFrame], image_size: tuple[int, int], *, workers: int | None = None,
    progress: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Decode ``frames`` (row ``i`` from ``frames[i]`` whatever the thread count) into ``image`` uint8
    ``[N, 3, H, W]``, ``segmentation`` int64 ``[N, h, w]``, ``instance`` float32 ``[N, 2, h, w]``, ``depth``
    float32 ``[N, 1, h, w]``. ``workers`` threads (PIL and numpy release the GIL for most of the work;
    default ``min(8, cpu_count)``); a rich progress bar on stderr when ``progress`` is True, or None and
    there are many frames."""
    height, width = image_size
    h, w = height // TARGET_STRIDE, width // TARGET_STRIDE
    n = len(frames)
    out = {
        "image": np.empty((n, 3, height, width), dtype=np.uint8),
        "segmentation": np.empty((n, h, w), dtype=np.uint8),
        "instance": np.empty((n, 2, h, w), dtype=np.float32),
        "depth": np.empty((n, 1, h, w), dtype=np.float32),
    }
    workers = workers if workers is not None else default_workers()

    def work(i: int) -> int:
        for key, value in decode_frame(frames[i], image_size).items():
            out[key][i] = value
        return 1

    show = n >= _PROGRESS_MIN if progress is None else progress
    run_threaded(work, list(range(n)), workers=workers, total=n, label="decoding Cityscapes", show=show)
    tensors = {k: torch.from_numpy(v) for k, v in out.items()}
    tensors["segmentation"] = tensors["segmentation"].long()
    return tensors


class CityscapesFrames(Dataset):
    """Cityscapes frames kept on disk: each item decoded when its batch is loaded (in ``DataLoader``
    workers), exactly as :func:`decode_frames` decodes them into memory — the image normalized with
    :data:`CITYSCAPES_MEAN`/:data:`CITYSCAPES_STD` as ``MultiTaskTensors`` does, the targets with the
    same dtypes (``segmentation`` int64, ``instance``/``depth`` float32)."""

    def __init__(self, frames: Sequence[CityscapesFrame], image_size: tuple[int, int]) -> None:
        self.frames = list(frames)
        self.image_size = tuple(image_size)
        self.task_names = TASK_NAMES
        self.mean, self.std = CITYSCAPES_MEAN, CITYSCAPES_STD

    def __len__(self) -> int:
        return len(self.frames)

    def _decode(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        d = decode_frame(self.frames[i], self.image_size)  # type: ignore[arg-type]
        x = normalize_uint8(torch.from_numpy(d["image"])[None], self.mean, self.std)[0]
        targets = {"segmentation": torch.from_numpy(d["segmentation"]).long(),
                   "instance": torch.from_numpy(d["instance"]), "depth": torch.from_numpy(d["depth"])}
        return x, targets

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self._decode(int(i))

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        items = [self._decode(int(i))[0] for i in idx]
        return torch.stack(items) if items else torch.empty(0, 3, *self.image_size)

    def targets(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        items = [self._decode(int(i))[1] for i in idx]
        return {t: torch.stack([it[t] for it in items]) for t in self.task_names}

    def example_targets(self) -> dict[str, torch.Tensor]:
        """The first frame's targets with a batch axis (what output sizes are read from)."""
        return self.targets(torch.arange(min(1, len(self))))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, *self.image_size)


# --- building ---------------------------------------------------------------------------------------------
def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` as ints; ``ValueError`` unless both are positive multiples of 8.

    >>> check_image_size([128, 256])
    (128, 256)
    """
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    for v in (height, width):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < TARGET_STRIDE or v % TARGET_STRIDE:
            raise ValueError(
                f"image_size must be two positive multiples of {TARGET_STRIDE} (targets are at 1/"
                f"{TARGET_STRIDE} resolution), got {tuple(image_size)!r}"
            )
    return int(height), int(width)


def _frames_digest(chosen: dict[str, list[CityscapesFrame]]) -> str:
    """Hash of every chosen file's path, size and mtime: replacing any file makes a new cache entry."""
    h = hashlib.sha256()
    for split, frames in chosen.items():
        for frame in frames:
            for path in frame[1:]:
                st = path.stat()
                h.update(json.dumps([split, str(path.resolve()), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()


def _valid_payload(payload: Any, image_size: tuple[int, int], expected: dict[str, list[str]]) -> bool:
    height, width = image_size
    h, w = height // TARGET_STRIDE, width // TARGET_STRIDE
    try:
        for split, stems in expected.items():
            p = payload["splits"][split]
            n = len(stems)
            shapes = {
                "image": ((n, 3, height, width), torch.uint8),
                "segmentation": ((n, h, w), torch.int64),
                "instance": ((n, 2, h, w), torch.float32),
                "depth": ((n, 1, h, w), torch.float32),
            }
            for key, (shape, dtype) in shapes.items():
                if p[key].dtype != dtype or tuple(p[key].shape) != shape:
                    return False
            if list(p["stems"]) != stems:
                return False
        return True
    except (KeyError, TypeError, AttributeError):
        return False


def build_cityscapes(
    root: str | os.PathLike[str],
    image_size: Sequence[int] = (128, 256),
    n_train: int | None = None,
    n_val: int = 500,
    n_test: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    use_cache: bool = True,
    workers: int | None = None,
    progress: bool | None = None,
    stream: bool = False,
) -> DataSplits:
    """Cityscapes at ``root`` as :class:`DataSplits` with tasks :data:`TASK_NAMES`: uint8 images
    ``[N, 3, H, W]`` (normalized per batch with :data:`CITYSCAPES_MEAN` / :data:`CITYSCAPES_STD`) and
    targets at ``(h, w) = (H/8, W/8)``: ``segmentation`` int64 ``[N, h, w]`` (255 ignore), ``instance``
    float32 ``[N, 2, h, w]`` and ``depth`` float32 ``[N, 1, h, w]`` (NaN ignore).

    Args:
        root: a folder holding ``leftImg8bit/``, ``gtFine/`` and ``disparity/`` (or ``root/cityscapes``).
        image_size: ``(H, W)``, both multiples of 8 (the official frames are 1024×2048).
        n_train: seeded random subset of the training frames (all when None).
        n_val: frames of official train held out as our val (seeded, 500 by default; 0 for none).
        n_test: seeded random subset of official val, our test (all 500 when None).
        seed: drives the held-out val and the subsets.
        cache_dir, use_cache: see :func:`moomtl.data.cache.cached`.
        workers, progress: see :func:`decode_frames`.
    """
    image_size = check_image_size(image_size)
    for key, v in {"n_train": n_train, "n_val": n_val, "n_test": n_test}.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise ValueError(f"{key} must be an integer >= 0, got {v!r}")
    if n_val is None:
        raise ValueError("n_val must be an integer >= 0 (the size of the val split held out from train)")
    official = {split: find_cityscapes_files(root, split) for split in ("train", "val")}
    n_official = len(official["train"])
    if n_val >= n_official:
        raise ValueError(
            f"n_val={n_val} held-out frames leave none to train on: official train has {n_official} frames"
        )
    # Our val: a seeded subset of official train; train: the rest (then the optional n_train subset).
    val_pos = select_indices(n_official, n_val, seed, 1)
    rest = np.setdiff1d(np.arange(n_official), val_pos)
    train_pos = rest[select_indices(len(rest), n_train, seed, 0)]
    test_pos = select_indices(len(official["val"]), n_test, seed, 2)
    chosen = {
        "train": [official["train"][i] for i in train_pos],
        "val": [official["train"][i] for i in val_pos],
        "test": [official["val"][i] for i in test_pos],
    }
    stems = {split: [f.stem for f in frames] for split, frames in chosen.items()}
    tasks = {"segmentation": Segmentation(len(CITYSCAPES_CLASSES)), "instance": MaskedL1(), "depth": MaskedL1()}
    height, width = image_size
    subsets = ", random subsets" if n_train is not None or n_test is not None else ""
    if stream:  # frames stay on disk, decoded per batch (no cache)
        streamed = [CityscapesFrames(chosen[s], image_size) for s in ("train", "val", "test")]
        used = " / ".join(f"{len(p)} {s}" for p, s in zip(streamed, ("train", "val", "test"), strict=True))
        desc = (f"Cityscapes from {Path(root).expanduser()} (streamed from disk): {height}x{width} images, "
                f"used {used} (official train {n_official} minus a held-out val; test = official val "
                f"{len(official['val'])}; seed {seed}{subsets})")
        return DataSplits(*streamed, description=desc, tasks=tasks)  # type: ignore[arg-type]
    params = {
        "version": _BUILD_VERSION,
        "files": _frames_digest(chosen),
        "image_size": list(image_size),
        "subsets": [n_train, n_val, n_test],
        "seed": seed,
    }

    def build() -> dict[str, Any]:
        splits = {}
        for split, frames in chosen.items():
            arrays = decode_frames(frames, image_size, workers=workers, progress=progress)
            splits[split] = {**arrays, "stems": stems[split]}
        return {"splits": splits}

    payload = cached(
        "cityscapes", params, build, cache_dir=cache_dir, enabled=use_cache,
        validate=lambda p: _valid_payload(p, image_size, stems),
    )
    parts = []
    for split in ("train", "val", "test"):
        p = payload["splits"][split]
        targets = {"segmentation": p["segmentation"], "instance": p["instance"], "depth": p["depth"]}
        parts.append(MultiTaskTensors(p["image"], targets, TASK_NAMES, mean=CITYSCAPES_MEAN, std=CITYSCAPES_STD))
    used = " / ".join(f"{len(part)} {split}" for part, split in zip(parts, ("train", "val", "test"), strict=True))
    desc = (
        f"Cityscapes from {Path(root).expanduser()}: {height}x{width} images, targets "
        f"{height // TARGET_STRIDE}x{width // TARGET_STRIDE}, used {used} (official train {n_official} "
        f"minus a held-out val; test = official val {len(official['val'])}; seed {seed}{subsets})"
    )
    return DataSplits(*parts, description=desc, tasks=tasks)


__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_MEAN",
    "CITYSCAPES_STD",
    "CITYSCAPES_THING_LABEL_IDS",
    "CITYSCAPES_TRAIN_IDS",
    "CITYSCAPES_URL",
    "TASK_NAMES",
    "CityscapesFrame",
    "CityscapesFrames",
    "build_cityscapes",
    "check_image_size",
    "decode_frame",
    "decode_frames",
    "disparity_from_png",
    "downsample_nearest",
    "find_cityscapes_files",
    "instance_offsets",
    "label_ids_to_train_ids",
    "pixels",
    "sample_positions",
]
