"""Reader and writer for IDX files, the format of the official MNIST and Fashion-MNIST files.

Layout (big-endian): two zero bytes, one dtype code, one byte ``ndim``, then ``ndim`` uint32 sizes, then
the ``prod(sizes)`` values in C order. ``train-images-idx3-ubyte`` has magic ``0x00000803`` (uint8, 3-D),
``train-labels-idx1-ubyte`` has ``0x00000801`` (uint8, 1-D). Files may be gzip-compressed (``.gz``).

>>> import tempfile, pathlib, numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "toy-idx2-ubyte.gz"
>>> write_idx(path, np.arange(6, dtype=np.uint8).reshape(2, 3))
>>> read_idx(path).tolist()
[[0, 1, 2], [3, 4, 5]]
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from moomtl.data.base import DataError
from moomtl.io import atomic_path

# IDX dtype codes → big-endian numpy dtypes (the format stores multi-byte values big-endian).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {
    ("u", 1): 0x08,
    ("i", 1): 0x09,
    ("i", 2): 0x0B,
    ("i", 4): 0x0C,
    ("f", 4): 0x0D,
    ("f", 8): 0x0E,
}


#: Deflate cannot expand data by more than ~1032:1; a .gz that declares more is lying about its size.
GZIP_MAX_RATIO = 1100


def _open(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected an IDX file, raw or .gz)")
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _read_exact(f: IO[bytes], n: int, path: Path) -> bytes:
    try:
        return f.read(n)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}); the file is corrupt or truncated") from e


def read_idx(
    path: str | os.PathLike[str],
    *,
    expected_dtype: np.dtype | type | None = None,
    expected_ndim: int | None = None,
    expected_shape: tuple[int | None, ...] | None = None,
) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a native-endian, writable numpy array.

    Checks the magic number, the dtype code, the number of dimensions and that the payload has exactly
    ``prod(dims) * itemsize`` bytes. ``expected_shape`` may hold ``None`` for free sizes. Any problem
    raises :class:`DataError` naming the file and what was expected. The header is read first and the
    payload size it declares is checked against the file's size before anything large is read, and at
    most one byte more than declared is ever inflated (a small .gz cannot grow the process by GBs).
    """
    path = Path(path)
    try:
        with _open(path) as f:
            head = _read_exact(f, 4, path)
            if len(head) < 4:
                raise DataError(f"{path}: {len(head)} bytes, too short for an IDX header (expected at least 4)")
            zero, code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or code not in IDX_DTYPES:
                raise DataError(
                    f"{path}: bad IDX magic number 0x{head.hex()} (expected 0x0000 then a dtype code among "
                    f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}, then ndim; MNIST images are 0x00000803)"
                )
            dtype = IDX_DTYPES[code]
            if expected_dtype is not None and dtype.newbyteorder("=") != np.dtype(expected_dtype).newbyteorder("="):
                raise DataError(f"{path}: IDX dtype {dtype} but expected {np.dtype(expected_dtype)}")
            if expected_ndim is not None and ndim != expected_ndim:
                raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
            header = 4 + 4 * ndim
            dim_bytes = _read_exact(f, 4 * ndim, path)
            if len(dim_bytes) < 4 * ndim:
                raise DataError(f"{path}: truncated header ({4 + len(dim_bytes)} bytes, expected {header} for "
                                f"{ndim} dims)")
            dims = struct.unpack(f">{ndim}I", dim_bytes)
            if expected_shape is not None:
                ok = len(expected_shape) == ndim and all(
                    e is None or e == d for e, d in zip(expected_shape, dims, strict=True))
                if not ok:
                    shown = tuple("*" if e is None else e for e in expected_shape)
                    raise DataError(f"{path}: IDX dims {dims}, expected {shown}")
            payload = int(np.prod(dims, dtype=object)) * dtype.itemsize
            expected_bytes = header + payload
            size = path.stat().st_size
            limit = size * GZIP_MAX_RATIO if path.suffix == ".gz" else size
            if expected_bytes > limit:
                raise DataError(f"{path}: truncated: dims {dims} of {dtype} need {expected_bytes} bytes, more than "
                                f"a {size}-byte file can hold")
            data = _read_exact(f, payload + 1, path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    if len(data) != payload:
        got = header + len(data)
        if len(data) > payload:
            raise DataError(f"{path}: has trailing bytes: more bytes than dims {dims} of {dtype} declare "
                            f"({expected_bytes})")
        raise DataError(f"{path}: truncated: {got} bytes but dims {dims} of {dtype} need exactly {expected_bytes}")
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` in the official IDX format (gzip-compressed when ``path`` ends with ``.gz``).

    The file is written to a temporary name and moved into place, so a reader never sees half a file.
    """
    path = Path(path)
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _CODE_OF_KIND:
        raise ValueError(f"dtype {array.dtype} has no IDX code (supported: uint8, int8, int16, int32, f32, f64)")
    if array.ndim > 255:
        raise ValueError(f"IDX supports at most 255 dimensions, got {array.ndim}")
    code = _CODE_OF_KIND[key]
    payload = (
        struct.pack(">HBB", 0, code, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        if path.suffix == ".gz":
            # mtime=0 keeps the bytes reproducible.
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                gz.write(payload)
        else:
            raw.write(payload)


def find_idx(root: str | os.PathLike[str], stem: str) -> Path:
    """``root/stem`` or ``root/stem.gz``, whichever exists (raw first); DataError naming both otherwise."""
    root = Path(root)
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root}: missing {stem} (expected {stem} or {stem}.gz in this folder)")


def read_idx_images_labels(
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    image_shape: tuple[int, int] = (28, 28),
    n_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-style pair: uint8 images ``[N, H, W]`` and uint8 labels ``[N]`` (returned as int64).

    Checks the magic numbers (0x803 / 0x801), the image size, that both files hold the same ``N`` and
    that labels lie in ``[0, n_classes)``.
    """
    images = read_idx(images_path, expected_dtype=np.uint8, expected_shape=(None, *image_shape))
    labels = read_idx(labels_path, expected_dtype=np.uint8, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels "
            "(expected the same count)"
        )
    if labels.size and int(labels.max()) >= n_classes:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range (expected 0..{n_classes - 1})")
    return images, labels.astype(np.int64)
