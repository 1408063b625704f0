"""CIFAR-10 python batches (safe loading), Cifar10Mnist blending/splits/normalization, rotation augmentation."""

from __future__ import annotations

import codecs
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moomtl.data import (
    DataError,
    augment_train_batch,
    build_cifar10mnist,
    build_cifar10mnist_from_roots,
    cifar10,
    write_idx,
)
from moomtl.data.cifar import TEST_BATCH, TRAIN_BATCHES, ColorSource, read_cifar_batch
from moomtl.data.cifar10mnist import (
    CIFAR10_BLACK,
    CIFAR10_MEAN,
    CIFAR10_STD,
    blend_digits,
    build_cifar10mnist_arrays,
    resize_digits,
)
from moomtl.data.sources import IDX_STEMS, GraySource
from moomtl.data.transforms import random_rotation, rotate


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _write_batches(folder: Path, n: int = 4, protocol: int = 2) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for k, name in enumerate((*TRAIN_BATCHES, TEST_BATCH)):
        batches[name] = _batch(n, k)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_read_batch_official_layout(tmp_path: Path, protocol: int) -> None:
    batch = _batch(5, 0)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    images, labels = read_cifar_batch(tmp_path / "data_batch_1")
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == batch[b"labels"]
    data = batch[b"data"]
    # Rows are channel-major: 1024 red, then green, then blue values, each row-major over 32x32.
    for n, y, x, c in [(0, 0, 0, 0), (1, 5, 7, 1), (4, 31, 31, 2), (2, 10, 3, 2)]:
        assert images[n, y, x, c] == data[n, c * 1024 + y * 32 + x]


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the official files were (Python 2, protocol 2): str opcodes for keys and for
    the array bytes, numpy.core.multiarray._reconstruct for the array."""

    def s(b: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b

    raw = data.tobytes()
    arr = (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        b"cnumpy\nndarray\n"
        b"K\x00\x85"
        + s(b"b")
        + b"\x87R"
        + b"(K\x01M"
        + struct.pack("<H", data.shape[0])
        + b"M"
        + struct.pack("<H", 3072)
        + b"\x86"
        + b"cnumpy\ndtype\n"
        + s(b"u1")
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + s(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89T"
        + struct.pack("<I", len(raw))
        + raw
        + b"tb"
    )
    labs = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + arr + s(b"labels") + labs + b"u."


def test_read_python2_style_batch(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (3, 3072)).astype(np.uint8)
    (tmp_path / "test_batch").write_bytes(_py2_batch(data, [7, 0, 9]))
    images, labels = read_cifar_batch(tmp_path / "test_batch")
    assert labels.tolist() == [7, 0, 9]
    assert np.array_equal(images, data.reshape(3, 3, 32, 32).transpose(0, 2, 3, 1))


def test_cifar10_folder_and_archive(tmp_path: Path) -> None:
    batches = _write_batches(tmp_path / "cifar-10-batches-py")
    src = cifar10(tmp_path)
    assert isinstance(src, ColorSource)
    assert src.train_images.shape == (20, 32, 32, 3) and src.test_images.shape == (4, 32, 32, 3)
    assert src.train_labels.tolist() == sum((batches[n][b"labels"] for n in TRAIN_BATCHES), [])
    assert src.test_labels.tolist() == batches[TEST_BATCH][b"labels"]
    archive = tmp_path / "arch" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = cifar10(archive.parent)
    assert np.array_equal(from_tar.train_images, src.train_images)
    assert np.array_equal(from_tar.test_labels, src.test_labels)


def test_missing_and_corrupt_batches(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere does not exist.*data_batch_1"):
        cifar10(tmp_path / "nowhere")
    _write_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing data_batch_3"):
        cifar10(tmp_path)
    good = pickle.dumps(_batch(3, 0), protocol=2)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="data_batch_3.*not a valid CIFAR python batch"):
        cifar10(tmp_path)
    bad = _batch(3, 0)
    bad[b"data"] = bad[b"data"].astype(np.float32)
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: b'data' must be a uint8 array"):
        cifar10(tmp_path)
    bad = _batch(3, 0)
    bad[b"labels"] = [1, 2]
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: b'labels' must be a list of 3 ints"):
        cifar10(tmp_path)
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DataError, match="expected a dict"):
        cifar10(tmp_path)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.target,))


def test_malicious_pickle_is_rejected_without_running_it(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    batch = _batch(2, 0)
    batch[b"labels"] = _Evil(str(target))
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1.*posix\.mkdir|data_batch_1.*os\.mkdir"):
        read_cifar_batch(path)
    assert not target.exists()
    # The same payload inside an archive.
    folder = tmp_path / "c" / "cifar-10-batches-py"
    _write_batches(folder)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(DataError, match="test_batch.*not allowed"):
        cifar10(archive)
    assert not target.exists()

    # _codecs.encode is only accepted as the latin-1 bytes encoding of protocol-2 pickles.
    class _Codec:
        def __reduce__(self) -> tuple:
            return (codecs.encode, ("abc", "rot13"))

    path.write_bytes(pickle.dumps({b"data": _Codec()}, protocol=2))
    with pytest.raises(DataError, match="rot13.*not allowed"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    # Plain pickle would have run it: the test above is meaningful.
    pickle.loads(path.read_bytes())
    assert target.exists()


def _pil_pad_image(color: np.ndarray, digit: np.ndarray, alpha: int = 128) -> np.ndarray:
    """Reference: the authors' PIL pipeline (default resize, alpha mask where pixel > 0, paste)."""
    base = Image.new("RGB", (32, 32), (0, 0, 0))
    base.paste(Image.fromarray(color), (0, 0))
    d = Image.fromarray(digit, mode="L").resize((32, 32))
    mask = d.point(lambda v: alpha if v > 0 else 0)
    base.paste(d, (0, 0), mask=mask)
    return np.asarray(base)


def test_blend_matches_the_pil_pipeline() -> None:
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    digits = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    digits[digits < 120] = 0  # black background like MNIST
    ours = blend_digits(torch.from_numpy(color), resize_digits(digits)).numpy()
    ref = np.stack([_pil_pad_image(c, d) for c, d in zip(color, digits, strict=True)])
    assert np.array_equal(ours, ref)


def test_blend_geometry() -> None:
    color = torch.full((1, 32, 32, 3), 10, dtype=torch.uint8)
    color[..., 2] = 250
    digit = torch.zeros(1, 32, 32, dtype=torch.uint8)
    digit[0, 3:6, 20:25] = 255
    out = blend_digits(color, digit)
    inside = out[0, 3:6, 20:25]
    # round((c * 127 + 255 * 128) / 255) for c = 10 and c = 250.
    assert (inside[..., 0] == round((10 * 127 + 255 * 128) / 255)).all()
    assert (inside[..., 2] == round((250 * 127 + 255 * 128) / 255)).all()
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[3:6, 20:25] = True
    assert torch.equal(out[0][~mask], color[0][~mask])
    assert resize_digits(np.zeros((2, 28, 28), np.uint8)).shape == (2, 32, 32)


def test_resize_uses_pil_default_filter() -> None:
    rng = np.random.default_rng(1)
    d = rng.integers(0, 256, (3, 28, 28)).astype(np.uint8)
    ref = np.stack([np.asarray(Image.fromarray(x, mode="L").resize((32, 32))) for x in d])
    assert np.array_equal(resize_digits(d).numpy(), ref)


def _sources(n_color: int = 30, n_gray: int = 25, n_test: int = 12) -> tuple[ColorSource, GraySource]:
    rng = np.random.default_rng(0)
    color = ColorSource(
        rng.integers(0, 256, (n_color, 32, 32, 3)).astype(np.uint8),
        rng.integers(0, 10, n_color),
        rng.integers(0, 256, (n_test, 32, 32, 3)).astype(np.uint8),
        rng.integers(0, 10, n_test),
        "toy color",
    )
    gray = GraySource(
        rng.integers(0, 256, (n_gray, 28, 28)).astype(np.uint8),
        rng.integers(0, 10, n_gray),
        rng.integers(0, 256, (n_test + 3, 28, 28)).astype(np.uint8),
        rng.integers(0, 10, n_test + 3),
        "toy gray",
    )
    return color, gray


def test_pairs_splits_and_normalization() -> None:
    color, gray = _sources()
    arrays = build_cifar10mnist_arrays(color, gray)
    tr, va, te = (arrays["splits"][s] for s in ("train", "val", "test"))
    # 25 pairs (min of 30 color, 25 gray), split 80/20 exactly like random_split with seed 42.
    assert len(tr["labels"]) == 20 and len(va["labels"]) == 5 and len(te["labels"]) == 12
    ref_train, ref_val = torch.utils.data.random_split(range(25), [20, 5], generator=torch.Generator().manual_seed(42))
    assert tr["index"].tolist() == list(ref_train.indices) and va["index"].tolist() == list(ref_val.indices)
    for part, imgs_c, labs_c, imgs_g, labs_g in (
        (tr, color.train_images, color.train_labels, gray.train_images, gray.train_labels),
        (va, color.train_images, color.train_labels, gray.train_images, gray.train_labels),
        (te, color.test_images, color.test_labels, gray.test_images, gray.test_labels),
    ):
        idx = part["index"].numpy()
        assert part["labels"][:, 0].tolist() == labs_c[idx].tolist()
        assert part["labels"][:, 1].tolist() == labs_g[idx].tolist()  # image i with digit i
        expected = np.stack([_pil_pad_image(imgs_c[i], imgs_g[i]) for i in idx])
        assert np.array_equal(part["images"].numpy(), expected)
    splits = build_cifar10mnist(color, gray)
    assert splits.task_names == ("cifar", "digit")
    x = splits.train.x
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32
    u = tr["images"].permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(x, (u - mean) / std, atol=1e-6)
    assert "20 train / 5 val" in splits.description and "12 test pairs" in splits.description
    again = build_cifar10mnist(color, gray)
    assert torch.equal(again.train.x, x) and torch.equal(again.val.y, splits.val.y)


def test_load_from_files_with_cache(tmp_path: Path) -> None:
    _write_batches(tmp_path / "cifar" / "cifar-10-batches-py", n=3)
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (16, 28, 28)),
        rng.integers(0, 10, 16),
        rng.integers(0, 256, (3, 28, 28)),
        rng.integers(0, 10, 3),
    )
    for stem, arr in zip(IDX_STEMS, arrays, strict=True):
        write_idx(tmp_path / "mnist" / f"{stem}.gz", arr.astype(np.uint8))
    s = build_cifar10mnist_from_roots(tmp_path / "cifar", "mnist", tmp_path / "mnist", cache_dir=tmp_path / "cache")
    assert (len(s.train), len(s.val), len(s.test)) == (12, 3, 3)  # min(15 color, 16 gray) = 15 → 12/3
    assert len(list((tmp_path / "cache").glob("cifar10mnist-*.pt"))) == 1
    s2 = build_cifar10mnist_from_roots(tmp_path / "cifar", "mnist", tmp_path / "mnist", cache_dir=tmp_path / "cache")
    assert torch.equal(s.train.x, s2.train.x) and s.description == s2.description
    small = build_cifar10mnist_from_roots(
        tmp_path / "cifar", "mnist", tmp_path / "mnist", n_train=5, n_val=2, n_test=1, cache_dir=tmp_path / "cache"
    )
    assert (len(small.train), len(small.val), len(small.test)) == (5, 2, 1)
    assert torch.equal(small.train.x, s.train.x[:5]) and "Used 5 train / 2 val / 1 test" in small.description
    with pytest.raises(DataError, match="needs a CIFAR-10 root"):
        build_cifar10mnist_from_roots(None, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="CIFAR-10 root"):
        build_cifar10mnist_from_roots(tmp_path / "mnist", "mnist", tmp_path / "mnist", cache_dir=tmp_path / "cache")


def test_rotation_direction_fill_and_determinism() -> None:
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    assert torch.equal(
        rotate(x, torch.tensor([90.0, -90.0])),
        torch.stack([torch.rot90(x[0], 1, (1, 2)), torch.rot90(x[1], -1, (1, 2))]),
    )
    assert torch.equal(rotate(x, torch.zeros(2)), x)
    # Non-square images keep their centre and aspect: a 180° turn is a double flip.
    r = torch.rand(1, 1, 6, 10)
    assert torch.allclose(rotate(r, torch.tensor([180.0])), r.flip(2, 3))
    # Corners uncovered by a 45° turn get normalized black.
    white = (torch.ones(1, 3, 32, 32) - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(
        1, 3, 1, 1
    )
    out = rotate(white, torch.tensor([45.0]), fill=CIFAR10_BLACK)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(CIFAR10_BLACK))
    assert torch.allclose(out[0, :, 16, 16], white[0, :, 16, 16])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = augment_train_batch(white.repeat(8, 1, 1, 1), g1), augment_train_batch(white.repeat(8, 1, 1, 1), g2)
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])  # per-image angles
    # Black-box angle check: rotate a horizontal bar and measure its orientation by PCA of the lit pixels.
    bar = torch.zeros(300, 1, 33, 33)
    bar[:, 0, 16, 4:29] = 1.0
    rotated = random_rotation(bar, 20.0, torch.Generator().manual_seed(3))
    measured = []
    for img in rotated[:, 0]:
        ys, xs = torch.nonzero(img > 0.5, as_tuple=True)
        pts = torch.stack([xs.double(), -ys.double()], 1)
        pts = pts - pts.mean(0)
        v = torch.linalg.eigh(pts.T @ pts).eigenvectors[:, -1]
        ang = float(torch.rad2deg(torch.atan2(v[1], v[0])))
        measured.append((ang + 90) % 180 - 90)  # direction of a line is defined modulo 180°
    m = torch.tensor(measured)
    assert float(m.abs().max()) < 22 and float(m.max()) > 15 and float(m.min()) < -15
    assert torch.equal(random_rotation(bar[:2], (30.0, 30.0)), rotate(bar[:2], torch.full((2,), 30.0)))
    assert torch.equal(random_rotation(x, 0.0), x)
    with pytest.raises(ValueError, match="fill"):
        rotate(x, torch.zeros(2), fill=(1.0, 2.0))
