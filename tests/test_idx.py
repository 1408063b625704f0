"""IDX reader/writer: round trips in the official byte format, and clear errors on bad files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.data import DataError
from moomtl.data.idx import find_idx, read_idx, read_idx_images_labels, write_idx


def _official_bytes(images: np.ndarray) -> bytes:
    """The MNIST image file layout written by hand: magic 0x00000803, N, rows, cols (big-endian), pixels."""
    n, r, c = images.shape
    return struct.pack(">IIII", 0x803, n, r, c) + images.astype(np.uint8).tobytes()


def test_writer_produces_the_official_header(tmp_path: Path) -> None:
    imgs = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    write_idx(tmp_path / "x-idx3-ubyte", imgs)
    raw = (tmp_path / "x-idx3-ubyte").read_bytes()
    assert raw[:16] == bytes.fromhex("00000803000000020000001c0000001c")
    assert raw == _official_bytes(imgs)
    write_idx(tmp_path / "y-idx1-ubyte.gz", np.array([7, 2, 1], dtype=np.uint8))
    assert gzip.decompress((tmp_path / "y-idx1-ubyte.gz").read_bytes()) == bytes.fromhex("0000080100000003070201")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_reads_files_written_by_hand(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    img_bytes = _official_bytes(imgs)
    lab_bytes = struct.pack(">II", 0x801, 5) + labels.tobytes()
    ip, lp = tmp_path / f"imgs{suffix}", tmp_path / f"labs{suffix}"
    ip.write_bytes(gzip.compress(img_bytes) if suffix else img_bytes)
    lp.write_bytes(gzip.compress(lab_bytes) if suffix else lab_bytes)
    got_imgs, got_labels = read_idx_images_labels(ip, lp)
    assert got_imgs.dtype == np.uint8 and np.array_equal(got_imgs, imgs)
    assert got_labels.dtype == np.int64 and got_labels.tolist() == labels.tolist()
    # Cross-check against the classic one-liner reader (offset 16 / 8).
    raw = gzip.decompress(ip.read_bytes()) if suffix else ip.read_bytes()
    assert np.array_equal(np.frombuffer(raw, np.uint8, offset=16).reshape(5, 28, 28), got_imgs)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
    gz=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip(
    tmp_path_factory: pytest.TempPathFactory, shape: list[int], dtype: type, gz: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path_factory.mktemp("rt") / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == tuple(shape)
    assert np.array_equal(back, arr)
    assert back.flags.writeable


def _write_images(tmp_path: Path, name: str, n: int = 3) -> Path:
    path = tmp_path / name
    write_idx(path, np.zeros((n, 28, 28), dtype=np.uint8))
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope-idx3-ubyte.*not found"):
        read_idx(tmp_path / "nope-idx3-ubyte")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_wrong_magic(tmp_path: Path, suffix: str) -> None:
    payload = struct.pack(">IIII", 0x12345678, 1, 28, 28) + bytes(784)
    path = tmp_path / f"bad-magic{suffix}"
    path.write_bytes(gzip.compress(payload) if suffix else payload)
    with pytest.raises(DataError, match=r"bad-magic.*magic number 0x12345678"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_payload(tmp_path: Path, suffix: str) -> None:
    payload = _official_bytes(np.ones((3, 28, 28), np.uint8))[:-10]
    path = tmp_path / f"short-idx3-ubyte{suffix}"
    path.write_bytes(gzip.compress(payload) if suffix else payload)
    with pytest.raises(DataError, match=r"short-idx3-ubyte.*truncated.*\(3, 28, 28\).*2368"):
        read_idx(path)


def test_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "long-idx3-ubyte"
    path.write_bytes(_official_bytes(np.ones((1, 28, 28), np.uint8)) + b"xx")
    with pytest.raises(DataError, match="long-idx3-ubyte.*trailing bytes"):
        read_idx(path)


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "hdr"
    path.write_bytes(bytes.fromhex("00000803000000"))
    with pytest.raises(DataError, match="hdr.*truncated header"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="hdr.*too short"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(_official_bytes(np.ones((4, 28, 28), np.uint8)))[:-20])
    with pytest.raises(DataError, match="cut.gz.*corrupt or truncated"):
        read_idx(path)
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(path)


def test_dims_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "imgs-idx3-ubyte"
    write_idx(path, np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"imgs-idx3-ubyte.*dims \(2, 32, 32\), expected \('\*', 28, 28\)"):
        read_idx_images_labels(path, path)
    with pytest.raises(DataError, match="imgs-idx3-ubyte.*3 dimensions, expected 1"):
        read_idx(path, expected_ndim=1)
    write_idx(path, np.zeros((2, 28, 28), np.float32))
    with pytest.raises(DataError, match="imgs-idx3-ubyte.*dtype"):
        read_idx(path, expected_dtype=np.uint8)


def test_count_mismatch_and_label_range(tmp_path: Path) -> None:
    imgs = _write_images(tmp_path, "i-idx3-ubyte", n=3)
    labs = tmp_path / "l-idx1-ubyte"
    write_idx(labs, np.array([1, 2], np.uint8))
    with pytest.raises(DataError, match=r"i-idx3-ubyte holds 3 images but .*l-idx1-ubyte holds 2 labels"):
        read_idx_images_labels(imgs, labs)
    write_idx(labs, np.array([1, 2, 10], np.uint8))
    with pytest.raises(DataError, match=r"l-idx1-ubyte: label 10 out of range"):
        read_idx_images_labels(imgs, labs)


def test_find_idx_prefers_raw_and_names_both(tmp_path: Path) -> None:
    _write_images(tmp_path, "f-idx3-ubyte.gz")
    assert find_idx(tmp_path, "f-idx3-ubyte").name == "f-idx3-ubyte.gz"
    _write_images(tmp_path, "f-idx3-ubyte")
    assert find_idx(tmp_path, "f-idx3-ubyte").name == "f-idx3-ubyte"
    with pytest.raises(DataError, match=r"missing g-idx3-ubyte \(expected g-idx3-ubyte or g-idx3-ubyte.gz"):
        find_idx(tmp_path, "g-idx3-ubyte")


def test_writer_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no IDX code"):
        write_idx(tmp_path / "x", np.zeros(3, np.uint16))
