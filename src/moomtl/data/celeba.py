"""CelebA as 40 binary attribute tasks (Sener & Koltun 2018, Sec. 6.2), read from the official files.

Official files (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, "Align&Cropped Images"):

* ``list_attr_celeba.txt``: line 1 the number of images ``N``; line 2 the 40 attribute names; then ``N``
  lines ``000001.jpg  -1  1  1 -1 ...`` (fields separated by one or more spaces; -1 = absent, 1 = present);
* ``list_eval_partition.txt``: ``000001.jpg 0`` with 0 = train, 1 = val, 2 = test
  (162,770 / 19,867 / 19,962 images);
* ``img_align_celeba/000001.jpg``: 178×218 RGB JPEGs (``img_align_celeba_png/*.png``, the PNG copies the
  authors used, is accepted when the JPEG folder is absent).

Accepted layouts under a root: the Google-Drive one (``Anno/list_attr_celeba.txt``,
``Eval/list_eval_partition.txt``, ``Img/img_align_celeba/``) and the flat/torchvision one (all three at the
root), each also under ``root/celeba/``. There is no download: the Google-Drive files need a login.

Labels: -1 → 0, 1 → 1, one task per attribute, named after it. Splits: the official partition.

Deviation from the authors' preprocessing (``celeba_loader.py``: BGR, subtract a fixed mean, then
``scipy.misc.imresize``, which min-max stretches each image): images here are RGB, the whole aligned image
is resized to ``image_size × image_size`` with PIL bilinear filtering (antialiased when downscaling), kept
as uint8 and normalized batch by batch with the per-channel :data:`CELEBA_MEAN` / :data:`CELEBA_STD`.
Those are the ImageNet statistics, not CelebA's: computing the training-split statistics needs the
data, which this package cannot ship, and fixed constants keep every run comparable.

Subsets: ``n_train``/``n_val``/``n_test`` keep a seeded random subset of each official split (sorted back
into file order). The same ``seed`` gives nested subsets: the first ``n`` of one fixed permutation per split.

Decoding ~200k JPEGs takes minutes, so the decoded uint8 arrays are cached on disk (see
:mod:`moomtl.data.cache`), keyed by the two text files (path, size, mtime and a hash of their bytes), the
image folder's path (not the images' contents: clear the cache after replacing images), ``image_size``,
the subset sizes and ``seed``; selecting attributes needs no new entry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from moomtl.data.base import DataError, DataSplits, MultiTaskTensors
from moomtl.data.cache import cached, file_fingerprint
from moomtl.data.parallel import default_workers, run_threaded
from moomtl.io import file_digest

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# ImageNet statistics (see the module docstring for why not CelebA's own).
CELEBA_MEAN = (0.485, 0.456, 0.406)
CELEBA_STD = (0.229, 0.224, 0.225)
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIRS = (("img_align_celeba", ".jpg"), ("img_align_celeba_png", ".png"))
SPLIT_NAMES = ("train", "val", "test")
OFFICIAL_SPLIT_SIZES = (162_770, 19_867, 19_962)
_BUILD_VERSION = 1  # bump when decoding changes, so old cache entries are not reused
_PROGRESS_MIN = 10_000  # decode this many images or more → progress bar (when progress=None)


class CelebAFiles(NamedTuple):
    """Where the pieces of a CelebA root are: the two text files and the aligned-image folder."""

    attributes: Path
    partition: Path
    images: Path
    extension: str  # ".jpg", or ".png" for img_align_celeba_png

    def image_path(self, name: str) -> Path:
        """The image file for a name from the text files (``000001.jpg`` → ``.../000001.png`` for PNGs)."""
        return self.images / (Path(name).stem + self.extension)


def _read_lines(path: Path) -> list[str]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e})") from e
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines are harmless
        lines.pop()
    return lines


def read_celeba_attributes(path: str | os.PathLike[str]) -> tuple[list[str], tuple[str, ...], np.ndarray]:
    """Parse ``list_attr_celeba.txt``: ``(file names, attribute names, labels)`` with int64 labels
    ``[N, 40]`` in {0, 1} (-1 → 0). The header count must equal the number of rows, every row must have a
    file name and 40 values in {-1, 1}, the names must be the official :data:`CELEBA_ATTRIBUTES`;
    anything else raises :class:`DataError` naming the file and line.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "list_attr_celeba.txt"
    >>> _ = p.write_text("1\\n" + " ".join(CELEBA_ATTRIBUTES) + "\\n000001.jpg" + " -1  1" * 20 + "\\n")
    >>> names, attrs, labels = read_celeba_attributes(p)
    >>> names, attrs[:2], labels[0, :4].tolist(), labels.dtype
    (['000001.jpg'], ('5_o_Clock_Shadow', 'Arched_Eyebrows'), [0, 1, 0, 1], dtype('int64'))
    """
    path = Path(path)
    lines = _read_lines(path)
    if len(lines) < 2:
        raise DataError(f"{path}: expected the image count on line 1 and the 40 attribute names on line 2")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}: line 1 must be the number of images, got {lines[0].strip()[:40]!r}") from None
    attributes = tuple(lines[1].split())
    if attributes != CELEBA_ATTRIBUTES:
        diff = next((i for i, (a, b) in enumerate(zip(attributes, CELEBA_ATTRIBUTES, strict=False)) if a != b),
                    min(len(attributes), len(CELEBA_ATTRIBUTES)))
        found = attributes[diff] if diff < len(attributes) else "<end of line>"
        raise DataError(
            f"{path}: line 2 must list the 40 official CelebA attributes; found {len(attributes)} names, "
            f"name {diff + 1} is {found!r} (expected "
            f"{CELEBA_ATTRIBUTES[diff] if diff < len(CELEBA_ATTRIBUTES) else 'no more names'!r})"
        )
    rows = lines[2:]
    if len(rows) != count:
        raise DataError(f"{path}: line 1 says {count} images but the file has {len(rows)} rows")
    n_fields = len(CELEBA_ATTRIBUTES) + 1
    names: list[str] = []
    values: list[list[str]] = []
    for i, line in enumerate(rows):
        fields = line.split()
        if len(fields) != n_fields:
            raise DataError(
                f"{path}: line {i + 3} has {len(fields)} fields, expected {n_fields} "
                "(an image name and 40 values -1/1)"
            )
        names.append(fields[0])
        values.append(fields[1:])
    table = np.array(values, dtype="U2").reshape(len(rows), len(CELEBA_ATTRIBUTES))
    positive, negative = table == "1", table == "-1"
    bad = ~(positive | negative)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: line {r + 3}: value {rows[r].split()[c + 1]!r} for {CELEBA_ATTRIBUTES[c]} is not -1 or 1"
        )
    if len(set(names)) != len(names):
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in first:
                raise DataError(f"{path}: line {i + 3}: image {name} is listed twice (also on line {first[name] + 3})")
            first[name] = i
    return names, attributes, positive.astype(np.int64)


def read_celeba_partition(path: str | os.PathLike[str]) -> dict[str, int]:
    """Parse ``list_eval_partition.txt``: ``{image name: 0 (train) | 1 (val) | 2 (test)}`` in file order;
    a malformed line raises :class:`DataError` naming the file and line.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "list_eval_partition.txt"
    >>> _ = p.write_text("000001.jpg 0\\n000002.jpg 2\\n")
    >>> read_celeba_partition(p)
    {'000001.jpg': 0, '000002.jpg': 2}
    """
    path = Path(path)
    out: dict[str, int] = {}
    for i, line in enumerate(_read_lines(path)):
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(
                f"{path}: line {i + 1} must be '<image name> <0|1|2>' (0 train, 1 val, 2 test), "
                f"got {line.strip()[:60]!r}"
            )
        if fields[0] in out:
            raise DataError(f"{path}: line {i + 1}: image {fields[0]} is listed twice")
        out[fields[0]] = int(fields[1])
    if not out:
        raise DataError(f"{path}: empty (expected one '<image name> <0|1|2>' line per image)")
    return out


def find_celeba_files(root: str | os.PathLike[str]) -> CelebAFiles:
    """Resolve the layouts described in the module docstring under ``root`` (tried as is, then
    ``root/celeba``). Anything missing raises one :class:`DataError` listing what was looked for where."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"CelebA root {root} does not exist or is not a folder (expected it to hold {ATTR_FILE}, "
            f"{PARTITION_FILE} and img_align_celeba/; download CelebA from {CELEBA_URL})"
        )
    bases = [root] + ([root / "celeba"] if (root / "celeba").is_dir() else [])
    looked: list[str] = []
    for base in bases:
        attr = [base / "Anno" / ATTR_FILE, base / ATTR_FILE]
        part = [base / "Eval" / PARTITION_FILE, base / PARTITION_FILE]
        imgs = [(base / sub / d, ext) for d, ext in IMAGE_DIRS for sub in ("Img", ".")]
        found_attr = next((p for p in attr if p.is_file()), None)
        found_part = next((p for p in part if p.is_file()), None)
        found_imgs = next(((p, ext) for p, ext in imgs if p.is_dir()), None)
        if found_attr and found_part and found_imgs:
            return CelebAFiles(found_attr, found_part, found_imgs[0].resolve(), found_imgs[1])
        missing = []
        if found_attr is None:
            missing.append(" or ".join(str(p) for p in attr))
        if found_part is None:
            missing.append(" or ".join(str(p) for p in part))
        if found_imgs is None:
            missing.append(" or ".join(f"{p}/" for p, _ in imgs))
        looked.append(f"under {base}: missing {'; '.join(missing)}")
    raise DataError(
        f"CelebA not found ({' | '.join(looked)}); download the aligned images, {ATTR_FILE} and "
        f"{PARTITION_FILE} from {CELEBA_URL}"
    )


def select_indices(size: int, n: int | None, seed: int, split: int) -> np.ndarray:
    """Positions kept from a split of ``size`` images: all when ``n`` is None or ≥ ``size``, else the first
    ``n`` of a permutation seeded by ``(seed, split)``, sorted (so smaller ``n`` give nested subsets).

    >>> select_indices(5, None, 0, 0).tolist()
    [0, 1, 2, 3, 4]
    >>> set(select_indices(10, 3, 0, 0)) <= set(select_indices(10, 6, 0, 0))
    True
    """
    if n is None or n >= size:
        return np.arange(size)
    perm = np.random.default_rng([seed, split]).permutation(size)
    return np.sort(perm[:n])


def decode_image(path: Path, size: int) -> np.ndarray:
    """One aligned image → uint8 ``[3, size, size]`` (RGB, PIL bilinear resize of the whole image)."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file missing") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # PIL reports truncated/corrupt files as OSError (UnidentifiedImageError included) or SyntaxError.
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_images(
    paths: Sequence[Path], size: int, *, workers: int | None = None, progress: bool | None = None,
    chunk: int = 512,
) -> torch.Tensor:
    """Decode ``paths`` into uint8 ``[N, 3, size, size]`` (row ``i`` from ``paths[i]`` whatever the thread
    count). ``workers`` threads each decode ``chunk`` images at a time (PIL releases the GIL while
    decoding; default ``min(8, cpu_count)``); a rich progress bar on stderr when ``progress`` is True, or
    None and there are many images."""
    n = len(paths)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    workers = workers if workers is not None else default_workers()
    if workers < 1 or chunk < 1:
        raise ValueError(f"workers and chunk must be ≥ 1, got {workers} and {chunk}")

    def work(start: int) -> int:
        for i in range(start, min(start + chunk, n)):
            out[i] = decode_image(paths[i], size)
        return min(start + chunk, n) - start

    show = n >= _PROGRESS_MIN if progress is None else progress
    run_threaded(work, list(range(0, n, chunk)), workers=workers, total=n, label="decoding CelebA", show=show)
    return torch.from_numpy(out)


def check_attributes(attributes: Sequence[str] | None) -> list[int]:
    """Column indices (into :data:`CELEBA_ATTRIBUTES`) of the selected attribute names; ``ValueError`` for
    unknown or repeated names.

    >>> check_attributes(["Young", "5_o_Clock_Shadow"])
    [39, 0]
    """
    if attributes is None:
        return list(range(len(CELEBA_ATTRIBUTES)))
    if isinstance(attributes, str):
        raise ValueError(f"attributes must be a list of names, got the string {attributes!r}")
    attributes = list(attributes)
    if not attributes:
        raise ValueError("attributes must name at least one attribute (or be None for all 40)")
    unknown = [a for a in attributes if a not in CELEBA_ATTRIBUTES]
    if unknown:
        raise ValueError(f"unknown CelebA attribute {unknown[0]!r}; valid: {', '.join(CELEBA_ATTRIBUTES)}")
    if len(set(attributes)) != len(attributes):
        dup = next(a for a in attributes if attributes.count(a) > 1)
        raise ValueError(f"attribute {dup!r} is selected twice")
    return [CELEBA_ATTRIBUTES.index(a) for a in attributes]


def _valid_payload(payload: Any, size: int, expected: dict[str, list[str]]) -> bool:
    try:
        for s in SPLIT_NAMES:
            p = payload["splits"][s]
            n = len(expected[s])
            if p["images"].dtype != torch.uint8 or tuple(p["images"].shape) != (n, 3, size, size):
                return False
            if p["labels"].dtype != torch.int64 or tuple(p["labels"].shape) != (n, len(CELEBA_ATTRIBUTES)):
                return False
            if list(p["files"]) != expected[s]:
                return False
        return True
    except (KeyError, TypeError, AttributeError):
        return False


def build_celeba(
    root: str | os.PathLike[str],
    image_size: int = 64,
    attributes: Sequence[str] | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    use_cache: bool = True,
    workers: int | None = None,
    progress: bool | None = None,
    stream: bool = False,
) -> DataSplits:
    """CelebA at ``root`` as :class:`DataSplits` of uint8 images ``[N, 3, s, s]`` (normalized per batch
    with :data:`CELEBA_MEAN` / :data:`CELEBA_STD`) and int64 labels ``[N, T]`` in {0, 1}.

    Args:
        root: a folder in one of the layouts of the module docstring.
        image_size: side ``s`` of the square, bilinear-resized images (64 in the paper).
        attributes: task names, a subset of :data:`CELEBA_ATTRIBUTES` in the order wanted (all 40 when None).
        n_train, n_val, n_test: seeded random subsets of the official splits (all images when None).
        seed: drives the subsets only.
        cache_dir, use_cache: see :func:`moomtl.data.cache.cached`.
        workers, progress: see :func:`decode_images`.
        stream: keep the images on disk (:class:`~moomtl.data.streaming.ImageFiles`: each batch decoded
            when needed, in the trainer's ``DataLoader`` workers) instead of decoding all of them into
            memory first; same images, same normalization, no cache.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    columns = check_attributes(attributes)
    sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    for key, v in sizes.items():
        if v is not None and v < 0:
            raise ValueError(f"{key} must be >= 0, got {v}")
    files = find_celeba_files(root)
    names, _, labels = read_celeba_attributes(files.attributes)
    partition = read_celeba_partition(files.partition)
    row = {name: i for i, name in enumerate(names)}
    no_label = next((name for name in partition if name not in row), None)
    if no_label is not None:
        raise DataError(f"{files.partition}: image {no_label} has no row in {files.attributes}")
    no_split = next((name for name in names if name not in partition), None)
    if no_split is not None:
        raise DataError(f"{files.attributes}: image {no_split} is not in {files.partition}")
    full = {s: [name for name, k in partition.items() if k == i] for i, s in enumerate(SPLIT_NAMES)}
    chosen = {
        s: [full[s][j] for j in select_indices(len(full[s]), n, seed, i)]
        for i, (s, n) in enumerate(zip(SPLIT_NAMES, sizes.values(), strict=True))
    }
    # Check every image is present before decoding any: a missing file should not surface after minutes.
    present = set(os.listdir(files.images))
    for s in SPLIT_NAMES:
        missing = [name for name in chosen[s] if files.image_path(name).name not in present]
        if missing:
            raise DataError(
                f"{files.images}: image file {files.image_path(missing[0]).name} is missing "
                f"({len(missing)} of the {len(chosen[s])} {s} images listed in {files.partition.name} are)"
            )
    task_names = tuple(CELEBA_ATTRIBUTES[c] for c in columns)
    totals = " / ".join(f"{len(full[s]):,}" for s in SPLIT_NAMES)
    subset = f" (random subsets, seed {seed})" if any(v is not None for v in sizes.values()) else ""
    if stream:
        from functools import partial

        from moomtl.data.streaming import ImageFiles

        decode = partial(decode_image, size=image_size)
        parts = [ImageFiles([files.image_path(n) for n in chosen[s]],
                            torch.from_numpy(labels)[torch.tensor([row[n] for n in chosen[s]], dtype=torch.int64)]
                            [:, columns].contiguous(), task_names, decode, CELEBA_MEAN, CELEBA_STD)
                 for s in SPLIT_NAMES]
        used = " / ".join(f"{len(p)} {s}" for p, s in zip(parts, SPLIT_NAMES, strict=True))
        desc = (f"CelebA from {Path(root).expanduser()} (streamed from disk): {len(task_names)} attributes, "
                f"{image_size}x{image_size}, used {used} of {totals}{subset}, official partition")
        return DataSplits(*parts, description=desc)  # type: ignore[arg-type]
    params = {
        "version": _BUILD_VERSION,
        "text_files": file_fingerprint([files.attributes, files.partition]),
        "text_sha256": [file_digest(files.attributes), file_digest(files.partition)],
        "images": [str(files.images), files.extension],
        "image_size": image_size,
        "subsets": [n_train, n_val, n_test],
        "seed": seed if any(v is not None for v in sizes.values()) else None,
    }

    def build() -> dict[str, Any]:
        splits = {}
        for s in SPLIT_NAMES:
            rows = torch.tensor([row[name] for name in chosen[s]], dtype=torch.int64)
            splits[s] = {
                "images": decode_images([files.image_path(n) for n in chosen[s]], image_size,
                                        workers=workers, progress=progress),
                "labels": torch.from_numpy(labels)[rows],
                "files": list(chosen[s]),
            }
        return {"splits": splits}

    payload = cached(
        "celeba", params, build, cache_dir=cache_dir, enabled=use_cache,
        validate=lambda p: _valid_payload(p, image_size, chosen),
    )
    parts = [
        MultiTaskTensors(payload["splits"][s]["images"], payload["splits"][s]["labels"][:, columns].contiguous(),
                         task_names, mean=CELEBA_MEAN, std=CELEBA_STD)
        for s in SPLIT_NAMES
    ]
    used = " / ".join(f"{len(p)} {s}" for p, s in zip(parts, SPLIT_NAMES, strict=True))
    desc = (
        f"CelebA from {Path(root).expanduser()}: {len(task_names)} attributes, {image_size}x{image_size}, "
        f"used {used} of {totals}{subset}, official partition"
    )
    return DataSplits(*parts, description=desc)
