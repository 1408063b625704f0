"""CIFAR-10 from the official python batches, loaded without running arbitrary pickled code.

The official ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` with ``data_batch_1`` …
``data_batch_5`` and ``test_batch``: each a (Python 2) pickle of a dict with ``b'data'`` (uint8
``[10000, 3072]``, channel-major rows: 1024 red, 1024 green, 1024 blue values) and ``b'labels'`` (list of
ints). Plain ``pickle.load`` would execute whatever a tampered file asks for, so batches are read with a
restricted unpickler that only resolves the few numpy globals needed to rebuild an array. The batches may
be read from the extracted folder or straight from the ``.tar.gz``.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from moomtl.data.base import DataError

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
ARCHIVE_NAME = "cifar-10-python.tar.gz"

# The only globals a CIFAR batch pickle may reference: numpy's array/dtype reconstructors (old and new
# module paths; numpy 2 renamed numpy.core to numpy._core), plus ``_codecs.encode`` restricted to latin-1
# (see _latin1_encode). Everything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles written by Python 3 store ``bytes`` as
    ``_codecs.encode(text, 'latin1')``. Only that use is allowed (no arbitrary codec lookup)."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside :data:`_ALLOWED_GLOBALS` and a latin-1-only
    ``_codecs.encode`` (builtin containers, bytes, str and numbers need no globals)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :] if hasattr(np, "_core") else module
        return super().find_class(module, name)


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (bytes keys kept, as in the official files);
    any failure becomes a :class:`DataError` naming ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... all mean "not a valid batch"
        raise DataError(f"{source}: not a valid CIFAR python batch ({type(e).__name__}: {e})") from e


def parse_batch(obj: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch dict → uint8 images ``[N, 32, 32, 3]`` (HWC) and int64 labels ``[N]``."""
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a dict with b'data' and b'labels', got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shown = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{source}: b'data' must be a uint8 array [N, 3072], got {shown}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != data.shape[0]:
        raise DataError(f"{source}: b'labels' must be a list of {data.shape[0]} ints")
    try:
        lab = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{source}: b'labels' must be ints ({e})") from e
    if lab.ndim != 1 or (lab.size and (lab.min() < 0 or lab.max() > 9)):
        raise DataError(f"{source}: labels must be integers in 0..9")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), lab


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one official CIFAR-10 python batch file safely: ``(images uint8 [N,32,32,3], labels [N])``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a CIFAR-10 python batch)")
    return parse_batch(safe_unpickle(path.read_bytes(), str(path)), str(path))


class ColorSource(NamedTuple):
    """Unpacks as ``(train_images, train_labels, test_images, test_labels, description)``."""

    train_images: np.ndarray  # uint8 [N, 32, 32, 3]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    description: str


def cifar10_files(root: str | os.PathLike[str]) -> list[Path]:
    """The files that hold CIFAR-10 under ``root``: the batch files of ``root`` or ``root/cifar-10-batches-py``,
    else ``root/cifar-10-python.tar.gz`` (or ``root`` itself if it is that archive)."""
    root = Path(root).expanduser()
    names = (*TRAIN_BATCHES, TEST_BATCH)
    if root.is_file() and root.name.endswith(".tar.gz"):
        return [root]
    if not root.exists():
        raise DataError(
            f"CIFAR-10 root {root} does not exist (expected {BATCHES_DIR}/ with {', '.join(names)}, or {ARCHIVE_NAME})"
        )
    for folder in (root, root / BATCHES_DIR):
        if all((folder / n).is_file() for n in names):
            return [folder / n for n in names]
    if (root / ARCHIVE_NAME).is_file():
        return [root / ARCHIVE_NAME]
    folder = root / BATCHES_DIR if (root / BATCHES_DIR).is_dir() else root
    missing = [n for n in names if not (folder / n).is_file()]
    raise DataError(
        f"CIFAR-10 root {root}: missing {', '.join(missing)} in {folder} (expected the official "
        f"python batches {', '.join(names)} or {ARCHIVE_NAME})"
    )


def _read_from_archive(archive: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in (*TRAIN_BATCHES, TEST_BATCH):
                    f = tar.extractfile(member)
                    assert f is not None  # isfile() members always have a file object
                    where = f"{archive}:{member.name}"
                    out[name] = parse_batch(safe_unpickle(f.read(), where), where)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{archive}: cannot read the archive ({type(e).__name__}: {e})") from e
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if n not in out]
    if missing:
        raise DataError(f"{archive}: missing {', '.join(missing)} (expected the official CIFAR-10 python archive)")
    return out


def cifar10(root: str | os.PathLike[str]) -> ColorSource:
    """CIFAR-10 (50k train / 10k test, official split) from the python batches under ``root``."""
    files = cifar10_files(root)
    if len(files) == 1:
        batches = _read_from_archive(files[0])
    else:
        batches = {p.name: read_cifar_batch(p) for p in files}
    train_images = np.concatenate([batches[n][0] for n in TRAIN_BATCHES])
    train_labels = np.concatenate([batches[n][1] for n in TRAIN_BATCHES])
    test_images, test_labels = batches[TEST_BATCH]
    desc = (
        f"CIFAR-10 from {files[0].parent if len(files) > 1 else files[0]} ({len(train_labels)} train / "
        f"{len(test_labels)} test images, official split)"
    )
    return ColorSource(train_images, train_labels, test_images, test_labels, desc)
