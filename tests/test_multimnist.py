"""MultiMNIST / MultiFashion builders: geometry, labels, determinism, splits by source image, caching."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moomtl.data import DataError, build_multitask_arrays, build_multitask_digits, write_idx
from moomtl.data import multimnist as mm
from moomtl.data import sources as sources_mod
from moomtl.data.cache import cache_path
from moomtl.data.multimnist import build_from_sources, compose_canvas, compose_pairs, pair_indices
from moomtl.data.sources import IDX_STEMS, GraySource, mnist_5k
from moomtl.data.transforms import resize_uint8

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _nearest_rows(r: int) -> list[int]:
    """Output rows of a 36→28 nearest resize that copy canvas row r: floor((i + 0.5) * 36 / 28) == r."""
    return [i for i in range(28) if int((i + 0.5) * 36 // 28) == r]


def _dot(r: int, c: int, n: int = 1) -> torch.Tensor:
    x = torch.zeros(n, 28, 28, dtype=torch.uint8)
    x[:, r, c] = 255
    return x


def test_canvas_offsets_and_max_overlap() -> None:
    left = torch.zeros(1, 28, 28, dtype=torch.uint8)
    right = torch.zeros(1, 28, 28, dtype=torch.uint8)
    left[0, 10, 12], right[0, 4, 6] = 100, 200  # both land on canvas (10, 12)
    left[0, 20, 3] = 50
    right[0, 27, 27] = 70
    canvas = compose_canvas(left, right)
    assert canvas.shape == (1, 36, 36)
    assert canvas[0, 10, 12] == 200  # max of the two
    assert canvas[0, 20, 3] == 50 and canvas[0, 33, 33] == 70
    assert int((canvas > 0).sum()) == 3
    left[0, 10, 12] = 250
    assert compose_canvas(left, right)[0, 10, 12] == 250


@pytest.mark.parametrize("r,c", [(0, 0), (5, 9), (13, 13), (22, 4), (27, 27)])
def test_single_pixel_lands_where_expected(r: int, c: int) -> None:
    blank = torch.zeros(1, 28, 28, dtype=torch.uint8)
    out_left = compose_pairs(_dot(r, c), blank)[0]
    out_right = compose_pairs(blank, _dot(r, c))[0]
    for out, (cr, cc) in ((out_left, (r, c)), (out_right, (r + 6, c + 6))):
        expected = torch.zeros(28, 28, dtype=torch.uint8)
        for i in _nearest_rows(cr):
            for j in _nearest_rows(cc):
                expected[i, j] = 255
        assert torch.equal(out, expected), (r, c, cr, cc)


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    ii, jj = torch.meshgrid(
        torch.arange(28.0, dtype=torch.float64), torch.arange(28.0, dtype=torch.float64), indexing="ij"
    )
    return float((img * ii).sum() / img.sum()), float((img * jj).sum() / img.sum())


def test_block_digit_lands_and_right_is_offset_by_6_canvas_pixels() -> None:
    """A 4x4 block never vanishes under nearest resize; the right copy's centroid is 6*28/36 px further."""
    x = torch.zeros(1, 28, 28, dtype=torch.uint8)
    x[0, 8:12, 3:7] = 255
    blank = torch.zeros_like(x)
    for interp in ("nearest", "bilinear"):
        a = compose_pairs(x, blank, interpolation=interp)[0].double()
        b = compose_pairs(blank, x, interpolation=interp)[0].double()
        (ra, ca), (rb, cb) = _centroid(a), _centroid(b)
        # Block centre on the canvas is (9.5, 4.5); a resize maps canvas coordinate u to (u + .5) * 28/36 - .5.
        tol = 0.5 if interp == "nearest" else 0.1  # bilinear: uint8 rounding only
        assert abs(ra - ((9.5 + 0.5) * 28 / 36 - 0.5)) < tol and abs(ca - ((4.5 + 0.5) * 28 / 36 - 0.5)) < tol
        assert abs((rb - ra) - 6 * 28 / 36) < tol and abs((cb - ca) - 6 * 28 / 36) < tol


def test_nearest_resize_matches_pil_nearest() -> None:
    """The MGDA code resized with scipy.misc.imresize(interp='nearest'), i.e. PIL NEAREST."""
    x = torch.randint(0, 256, (20, 36, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = resize_uint8(x, (28, 28), "nearest").numpy()
    pil = np.stack(
        [np.asarray(Image.fromarray(a, mode="L").resize((28, 28), Image.Resampling.NEAREST)) for a in x.numpy()]
    )
    assert np.array_equal(ours, pil)
    ours_bl = resize_uint8(x, (28, 28), "bilinear").numpy().astype(int)
    pil_bl = np.stack(
        [np.asarray(Image.fromarray(a, mode="L").resize((28, 28), Image.Resampling.BILINEAR)) for a in x.numpy()]
    ).astype(int)
    assert np.abs(ours_bl - pil_bl).max() <= 1


def _toy_source(n_train: int = 40, n_test: int = 20, seed: int = 0) -> GraySource:
    rng = np.random.default_rng(seed)
    return GraySource(
        rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        rng.integers(0, 10, n_test),
        "toy source",
    )


def test_digit_alone_with_blank_partner_through_the_builder() -> None:
    """Only train image 0 has ink (a dot); wherever it is paired, it lands at its left or right spot."""
    src = _toy_source()
    imgs = np.zeros_like(src.train_images)
    imgs[0, 5, 9] = 255
    src = src._replace(train_images=imgs)
    b = build_from_sources(src, n_train=400, val_fraction=0.0, seed=3)
    li, ri, x = b.train.left_index, b.train.right_index, b.train.images
    assert bool((li == 0).any()) and bool((ri == 0).any())
    as_left = x[li == 0]
    as_right = x[ri == 0]
    for img in as_left:
        assert img.nonzero().tolist() == [[i, j] for i in _nearest_rows(5) for j in _nearest_rows(9)]
    for img in as_right:
        assert img.nonzero().tolist() == [[i, j] for i in _nearest_rows(11) for j in _nearest_rows(15)]
    assert int(x[(li != 0) & (ri != 0)].sum()) == 0


def test_labels_indices_and_images_match_the_sources() -> None:
    src = _toy_source()
    b = build_from_sources(src, n_train=100, n_val=30, n_test=50, val_fraction=0.25, seed=1)
    for split, imgs, labs in (
        ("train", src.train_images, src.train_labels),
        ("val", src.train_images, src.train_labels),
        ("test", src.test_images, src.test_labels),
    ):
        p = getattr(b, split)
        li, ri = p.left_index.numpy(), p.right_index.numpy()
        assert p.labels[:, 0].tolist() == labs[li].tolist() and p.labels[:, 1].tolist() == labs[ri].tolist()
        assert torch.equal(p.images, compose_pairs(torch.from_numpy(imgs[li]), torch.from_numpy(imgs[ri])))
        assert not np.any(li == ri), "an image is never paired with itself"
    # Source images: val held out of train (10 of 40), test from the test set only.
    train_src = set(b.train.left_index.tolist()) | set(b.train.right_index.tolist())
    val_src = set(b.val.left_index.tolist()) | set(b.val.right_index.tolist())
    assert len(train_src) == 30 and len(val_src) == 10 and not train_src & val_src
    assert len(b.train.labels) == 100 and len(b.val.labels) == 30 and len(b.test.labels) == 50


def test_left_usage_is_balanced() -> None:
    pool = np.arange(7, 107)
    li, ri = pair_indices(pool, None, 250, np.random.default_rng(0))
    counts = np.bincount(li - 7, minlength=100)
    assert set(counts.tolist()) <= {2, 3} and counts.sum() == 250
    assert set(ri.tolist()) <= set(pool.tolist()) and not np.any(li == ri)
    li, ri = pair_indices(pool, np.array([1000, 1001]), 10, np.random.default_rng(0))
    assert set(ri.tolist()) <= {1000, 1001}
    with pytest.raises(ValueError, match="not enough source images"):
        pair_indices(np.array([3]), None, 5, np.random.default_rng(0))


def test_determinism_and_seed_sensitivity() -> None:
    src = _toy_source()
    a = build_from_sources(src, n_train=60, seed=5).to_splits()
    b = build_from_sources(src, n_train=60, seed=5).to_splits()
    c = build_from_sources(src, n_train=60, seed=6).to_splits()
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
        assert not torch.equal(getattr(a, s).x, getattr(c, s).x)
    # Changing the number of training pairs does not move the test pairs (independent streams).
    d = build_from_sources(src, n_train=80, seed=5).to_splits()
    assert torch.equal(a.test.x, d.test.x)


def test_normalization_and_shapes() -> None:
    b = build_from_sources(_toy_source(), n_train=10, seed=0)
    splits = b.to_splits()
    assert splits.task_names == ("left", "right")
    x = splits.train.x
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32
    expected = (b.train.images.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x[:, 0], expected, atol=1e-6)
    img, (yl, yr) = splits.train[0]
    assert img.shape == (1, 28, 28) and int(yl) == int(splits.train.y[0, 0]) and int(yr) == int(splits.train.y[0, 1])


def test_real_mnist5k_no_test_or_val_digit_in_training(tmp_path: Path) -> None:
    b = build_multitask_arrays("multimnist", "mnist5k", n_train=4000, cache_dir=tmp_path)
    src = mnist_5k()

    def keys(images: np.ndarray, idx: torch.Tensor) -> set[bytes]:
        return {images[i].tobytes() for i in idx.tolist()}

    train_keys = keys(src.train_images, b.train.left_index) | keys(src.train_images, b.train.right_index)
    val_keys = keys(src.train_images, b.val.left_index) | keys(src.train_images, b.val.right_index)
    test_keys = keys(src.test_images, b.test.left_index) | keys(src.test_images, b.test.right_index)
    assert len(train_keys) == 3600 and len(val_keys) == 400 and len(test_keys) == 1000
    assert not train_keys & test_keys and not train_keys & val_keys and not val_keys & test_keys
    # Labels are balanced like the source (about 10 % per class for each task).
    for t in range(2):
        freq = torch.bincount(b.train.labels[:, t], minlength=10).double() / 4000
        assert float(freq.min()) > 0.07 and float(freq.max()) < 0.13
    assert "MNIST 5k subset" in build_multitask_digits(n_train=4000, cache_dir=tmp_path).description


def test_mnist_root_through_the_builder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (30, 28, 28)).astype(np.uint8)
    te = rng.integers(0, 256, (10, 28, 28)).astype(np.uint8)
    for stem, arr in zip(
        IDX_STEMS,
        (tr, rng.integers(0, 10, 30).astype(np.uint8), te, rng.integers(0, 10, 10).astype(np.uint8)),
        strict=True,
    ):
        write_idx(tmp_path / "root" / f"{stem}.gz", arr)
    s = build_multitask_digits(source="auto", root=tmp_path / "root", cache_dir=tmp_path / "cache")
    assert (len(s.train), len(s.val), len(s.test)) == (27, 3, 10)  # one pair per source image (MGDA)
    assert "MultiMNIST" in s.description and "MNIST from" in s.description
    with pytest.raises(DataError, match="missing"):
        build_multitask_digits(source="mnist", root=tmp_path, cache_dir=tmp_path / "cache")


def test_cache_hit_and_corrupt_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = dict(kind="multimnist", source="mnist5k", n_train=300, n_val=50, n_test=100, seed=2)
    first = build_multitask_digits(**kwargs, cache_dir=tmp_path)
    files = list(tmp_path.glob("multidigits-*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob(".*tmp"))

    def boom(*args: object, **kw: object) -> None:
        raise AssertionError("rebuilt although cached")

    with monkeypatch.context() as m:
        m.setattr(mm, "build_from_sources", boom)
        hit = build_multitask_digits(**kwargs, cache_dir=tmp_path)
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(first, s).x, getattr(hit, s).x) and torch.equal(
            getattr(first, s).y, getattr(hit, s).y
        )
    assert hit.description == first.description
    # Another parameter → another entry.
    build_multitask_digits(**{**kwargs, "seed": 3}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("multidigits-*.pt"))) == 2
    # Corrupt the first entry: garbage, then a truncated file, then a valid file with wrong content.
    good = files[0].read_bytes()
    for bad in (b"garbage", good[: len(good) // 2]):
        files[0].write_bytes(bad)
        with pytest.warns(UserWarning, match="rebuilding"):
            again = build_multitask_digits(**kwargs, cache_dir=tmp_path)
        assert torch.equal(again.train.x, first.train.x) and torch.equal(again.test.y, first.test.y)
        assert files[0].read_bytes() != bad
    entry = torch.load(files[0], weights_only=True)
    entry["payload"]["splits"]["train"]["labels"] = torch.zeros(3)
    torch.save(entry, files[0])
    with pytest.warns(UserWarning, match="invalid data"):
        again = build_multitask_digits(**kwargs, cache_dir=tmp_path)
    assert torch.equal(again.train.y, first.train.y)


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOOMTL_CACHE", str(tmp_path / "envcache"))
    kwargs = dict(source="mnist5k", n_train=20, n_val=5, n_test=5)
    build_multitask_digits(**kwargs)
    assert len(list((tmp_path / "envcache").glob("multidigits-*.pt"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_multitask_digits(**kwargs, use_cache=False)
    assert cache_path("x", {}, tmp_path).parent == tmp_path


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        build_multitask_digits("multicifar")
    with pytest.raises(ValueError, match="source names the digit source"):
        build_multitask_digits(source="fashion")
    with pytest.raises(ValueError, match="multifashion reads Fashion-MNIST"):
        build_multitask_digits("multifashion", source="mnist5k")
    with pytest.raises(ValueError, match="interpolation"):
        build_from_sources(_toy_source(), interpolation="cubic")
    with pytest.raises(ValueError, match="val_fraction"):
        build_from_sources(_toy_source(), val_fraction=1.0)


def test_fashion_kinds_need_the_debian_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sources_mod, "FASHION_DEBIAN_ROOT", tmp_path / "absent")
    for kind in ("multifashion", "multifashion+mnist"):
        with pytest.raises(DataError, match="needs Fashion-MNIST.*apt-get install dataset-fashion-mnist"):
            build_multitask_digits(kind, cache_dir=tmp_path)
    # A user root with the official files replaces the Debian package (root or fashion_root).
    rng = np.random.default_rng(0)
    for stem, arr in zip(
        IDX_STEMS,
        (
            rng.integers(0, 256, (20, 28, 28)),
            rng.integers(0, 10, 20),
            rng.integers(0, 256, (5, 28, 28)),
            rng.integers(0, 10, 5),
        ),
        strict=True,
    ):
        write_idx(tmp_path / "fm" / stem, arr.astype(np.uint8))
    s = build_multitask_digits("multifashion", source="fashion", root=tmp_path / "fm", cache_dir=tmp_path)
    assert (len(s.train), len(s.val), len(s.test)) == (18, 2, 5) and "Fashion-MNIST from" in s.description
    s = build_multitask_digits("multifashion+mnist", fashion_root=tmp_path / "fm", n_train=10, cache_dir=tmp_path)
    assert "Fashion-MNIST from" in s.description and "MNIST 5k" in s.description


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_kinds(tmp_path: Path) -> None:
    fm = sources_mod.fashion_mnist()
    five = mnist_5k()
    b = build_multitask_arrays("multifashion", n_train=200, n_val=50, n_test=80, cache_dir=tmp_path)
    assert b.train.labels[:, 1].tolist() == fm.train_labels[b.train.right_index.numpy()].tolist()
    assert b.test.labels[:, 0].tolist() == fm.test_labels[b.test.left_index.numpy()].tolist()
    assert "MultiFashion" in b.description and "Fashion-MNIST" in b.description
    assert torch.equal(
        b.test.images,
        compose_pairs(
            torch.from_numpy(fm.test_images[b.test.left_index.numpy()]),
            torch.from_numpy(fm.test_images[b.test.right_index.numpy()]),
        ),
    )
    m = build_multitask_arrays("multifashion+mnist", n_train=200, n_val=50, n_test=80, cache_dir=tmp_path)
    assert m.train.labels[:, 0].tolist() == five.train_labels[m.train.left_index.numpy()].tolist()
    assert m.train.labels[:, 1].tolist() == fm.train_labels[m.train.right_index.numpy()].tolist()
    assert torch.equal(
        m.val.images,
        compose_pairs(
            torch.from_numpy(five.train_images[m.val.left_index.numpy()]),
            torch.from_numpy(fm.train_images[m.val.right_index.numpy()]),
        ),
    )
    # Held-out validation items of either source never appear in training pairs.
    assert not set(m.val.left_index.tolist()) & set(m.train.left_index.tolist())
    assert not set(m.val.right_index.tolist()) & set(m.train.right_index.tolist())
    assert "Multi-(Fashion+MNIST)" in m.description
