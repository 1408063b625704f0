"""Dense MultiMNIST: composition, per-cell targets against a plain-loop reference, MultiMNIST's pairs,
caching, argument checks, and one epoch through the trainer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import moomtl.data.dense_digits as dd
from moomtl.data.base import DataSplits
from moomtl.data.dense_digits import build_dense_digits, compose_dense, digit_offsets, frame_overlap
from moomtl.data.multimnist import MNIST_MEAN, MNIST_STD, build_multitask_arrays, build_multitask_digits
from moomtl.data.sources import load_gray_source
from moomtl.tasks import MaskedL1, Segmentation

SIZES = {"n_train": 300, "n_val": 40, "n_test": 60}
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dense_cache")


@pytest.fixture(scope="module")
def splits(cache: Path) -> DataSplits:
    return build_dense_digits(source="mnist5k", seed=3, cache_dir=cache, **SIZES)


@pytest.fixture(scope="module")
def sources(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split: (left images, right images, [N, 2] labels) from the source and MultiMNIST's pair indices."""
    src = load_gray_source("mnist5k")
    pairs = build_multitask_arrays(source="mnist5k", seed=3, cache_dir=cache, **SIZES)
    out = {}
    for name in ("train", "val", "test"):
        p = getattr(pairs, name)
        images = src.test_images if name == "test" else src.train_images
        out[name] = (images[p.left_index.numpy()], images[p.right_index.numpy()], p.labels.numpy())
    return out


def reference_targets(
    left: np.ndarray, right: np.ndarray, left_label: int, right_label: int, canvas: int
) -> tuple[np.ndarray, np.ndarray]:
    """The per-cell targets of one pair, with plain loops over pixels, straight from the definitions."""
    o = canvas // 8
    p = canvas - 28 - o
    big_l = [[0] * canvas for _ in range(canvas)]
    big_r = [[0] * canvas for _ in range(canvas)]
    for r in range(28):
        for c in range(28):
            big_l[o + r][o + c] = int(left[r, c])
            big_r[p + r][p + c] = int(right[r, c])

    def centroid(img: np.ndarray, off: int) -> tuple[float, float]:
        pts = [(r + off, c + off) for r in range(28) for c in range(28) if img[r, c] >= 64]
        if not pts:
            return (math.nan, math.nan)
        return (sum(y for y, _ in pts) / len(pts), sum(x for _, x in pts) / len(pts))

    cen_l, cen_r = centroid(left, o), centroid(right, p)
    h = canvas // 8
    seg = np.zeros((h, h), np.int64)
    inst = np.full((2, h, h), np.nan)
    for i in range(h):
        for j in range(h):
            n_l = n_r = 0
            for r in range(8 * i, 8 * i + 8):
                for c in range(8 * j, 8 * j + 8):
                    a, b = big_l[r][c], big_r[r][c]
                    if a >= 64 and a >= b:
                        n_l += 1
                    elif b >= 64 and b > a:
                        n_r += 1
            if n_l + n_r >= 8:
                label, cen = (1 + left_label, cen_l) if n_l >= n_r else (1 + right_label, cen_r)
                seg[i, j] = label
                inst[:, i, j] = (cen[0] - (8 * i + 3.5), cen[1] - (8 * j + 3.5))
    return seg, inst


def _assert_matches_reference(left, right, labels, seg, inst, canvas) -> None:  # noqa: ANN001
    for k in range(len(left)):
        ref_seg, ref_inst = reference_targets(left[k], right[k], int(labels[k, 0]), int(labels[k, 1]), canvas)
        np.testing.assert_array_equal(seg[k], ref_seg)
        np.testing.assert_allclose(inst[k], ref_inst, atol=1e-5, rtol=0)  # NaNs must coincide too


# --- geometry -----------------------------------------------------------------------------------------
def test_offsets_and_overlap_by_hand() -> None:
    assert digit_offsets(64) == (8, 28) and frame_overlap(64) == 8  # frames [8, 36) and [28, 56)
    assert digit_offsets(48) == (6, 14) and frame_overlap(48) == 20  # [6, 34) and [14, 42)
    assert digit_offsets(72) == (9, 35) and frame_overlap(72) == 2  # [9, 37) and [35, 63)
    assert frame_overlap(96) == 0


@pytest.mark.parametrize("canvas", [60, 40, 63, 0, -8, 64.0, True])
def test_bad_canvas_raises(canvas: object, cache: Path) -> None:
    with pytest.raises(ValueError, match="canvas"):
        build_dense_digits(source="mnist5k", canvas=canvas, cache_dir=cache, **SIZES)  # type: ignore[arg-type]


def test_bad_kind_and_source_raise(cache: Path) -> None:
    with pytest.raises(ValueError, match="multifashion\\+mnist"):
        build_dense_digits("multifashion+mnist", cache_dir=cache)
    with pytest.raises(ValueError, match="source"):
        build_dense_digits("multimnist", source="fashion", cache_dir=cache)


# --- built splits -----------------------------------------------------------------------------------------
def test_shapes_dtypes_tasks(splits: DataSplits) -> None:
    assert splits.task_names == ("segmentation", "instance")
    assert splits.tasks == {"segmentation": Segmentation(11), "instance": MaskedL1()}
    assert splits.output_sizes() == [11, 2]
    for part, n in zip((splits.train, splits.val, splits.test), SIZES.values(), strict=True):
        assert part.x.dtype == torch.uint8 and tuple(part.x.shape) == (n, 1, 64, 64)
        assert part.mean == MNIST_MEAN and part.std == MNIST_STD
        seg, inst = part.y["segmentation"], part.y["instance"]  # type: ignore[index]
        assert seg.dtype == torch.int64 and tuple(seg.shape) == (n, 8, 8)
        assert inst.dtype == torch.float32 and tuple(inst.shape) == (n, 2, 8, 8)
        assert int(seg.min()) >= 0 and int(seg.max()) <= 10
        # NaN offsets exactly on background cells, in both channels.
        assert torch.equal(torch.isnan(inst), (seg == 0).unsqueeze(1).expand_as(inst))
        assert part.images(torch.arange(2)).dtype == torch.float32
    assert "dense MultiMNIST" in splits.description and "64x64" in splits.description


def test_image_is_max_composition(splits: DataSplits, sources: dict) -> None:
    for name in ("train", "val", "test"):
        left, right, _ = sources[name]
        # Independently: paste each digit on its own zero canvas with torch slicing, take the max.
        n = len(left)
        a = torch.zeros(n, 64, 64, dtype=torch.uint8)
        b = torch.zeros(n, 64, 64, dtype=torch.uint8)
        a[:, 8:36, 8:36] = torch.from_numpy(left)
        b[:, 28:56, 28:56] = torch.from_numpy(right)
        assert torch.equal(getattr(splits, name).x[:, 0], torch.maximum(a, b)), name


def test_targets_match_plain_loop_reference(splits: DataSplits, sources: dict) -> None:
    for name, take in (("train", slice(0, 4)), ("val", slice(5, 7)), ("test", slice(10, 13))):
        left, right, labels = (s[take] for s in sources[name])
        part = getattr(splits, name)
        seg, inst = part.y["segmentation"][take].numpy(), part.y["instance"][take].numpy()
        _assert_matches_reference(left, right, labels, seg, inst, 64)


def test_same_pairs_as_multimnist(splits: DataSplits, cache: Path) -> None:
    mm = build_multitask_digits(source="mnist5k", seed=3, cache_dir=cache, **SIZES)
    for name in ("train", "val", "test"):
        labels = getattr(mm, name).y
        seg = getattr(splits, name).y["segmentation"]
        assert len(seg) == len(labels)
        present = torch.stack([torch.bincount(s.flatten(), minlength=11) > 0 for s in seg])  # [N, 11]
        owners = torch.zeros_like(present)
        owners[torch.arange(len(labels)), 1 + labels[:, 0]] = True
        owners[torch.arange(len(labels)), 1 + labels[:, 1]] = True
        owners[:, 0] = True
        assert not (present & ~owners).any(), f"{name}: a cell labelled with neither digit of its pair"
        # Real digits own cells: nearly every pair shows its left and its right digit.
        left_seen = present[torch.arange(len(labels)), 1 + labels[:, 0]].float().mean()
        right_seen = present[torch.arange(len(labels)), 1 + labels[:, 1]].float().mean()
        assert left_seen > 0.9 and right_seen > 0.9, (name, left_seen, right_seen)


def test_cache_hit_returns_identical_tensors(
    splits: DataSplits, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("cache miss: the build ran again")

    monkeypatch.setattr(dd, "compose_dense", no_build)
    again = build_dense_digits(source="mnist5k", seed=3, cache_dir=cache, **SIZES)
    for name in ("train", "val", "test"):
        a, b = getattr(splits, name), getattr(again, name)
        assert torch.equal(a.x, b.x)
        assert torch.equal(a.y["segmentation"], b.y["segmentation"])
        assert torch.allclose(a.y["instance"], b.y["instance"], equal_nan=True, atol=0, rtol=0)
    assert again.description == splits.description
    with pytest.raises(AssertionError, match="cache miss"):  # another canvas is another entry
        build_dense_digits(source="mnist5k", seed=3, canvas=48, cache_dir=cache, **SIZES)


def test_other_canvas_and_uncached_build_agree(sources: dict, tmp_path: Path) -> None:
    built = build_dense_digits(source="mnist5k", seed=3, canvas=48, cache_dir=tmp_path, use_cache=False, **SIZES)
    assert not any(tmp_path.iterdir())
    left, right, labels = (s[:3] for s in sources["train"])
    assert tuple(built.train.x.shape[1:]) == (1, 48, 48)
    seg, inst = built.train.y["segmentation"][:3].numpy(), built.train.y["instance"][:3].numpy()
    _assert_matches_reference(left, right, labels, seg, inst, 48)


# --- the pure composition on arbitrary inputs (ties, faint pixels, empty digits) ---------------------------
@settings(max_examples=12, deadline=None)
@given(
    left=arrays(np.uint8, (2, 28, 28), elements=st.sampled_from([0, 10, 63, 64, 100, 200, 255])),
    right=arrays(np.uint8, (2, 28, 28), elements=st.sampled_from([0, 63, 64, 100, 200, 255])),
    labels=arrays(np.int64, (2, 2), elements=st.integers(0, 9)),
    canvas=st.sampled_from([48, 56, 64]),
)
def test_compose_dense_matches_reference(left, right, labels, canvas) -> None:  # noqa: ANN001
    image, seg, inst = compose_dense(left, right, labels[:, 0], labels[:, 1], canvas)
    o, p = digit_offsets(canvas)
    expected = np.zeros((2, canvas, canvas), np.uint8)
    expected[:, o : o + 28, o : o + 28] = left
    expected[:, p : p + 28, p : p + 28] = np.maximum(expected[:, p : p + 28, p : p + 28], right)
    np.testing.assert_array_equal(image[:, 0], expected)
    _assert_matches_reference(left, right, labels, seg, inst, canvas)


def test_ties_go_to_the_left_digit() -> None:
    # Identical 255 squares filling the 8×8 frame overlap (canvas rows/cols 28..35, split by the cell
    # borders 24..31 | 32..39): every overlap pixel ties, so the left digit owns them all.
    left = np.zeros((1, 28, 28), np.uint8)
    right = np.zeros((1, 28, 28), np.uint8)
    left[0, 20:28, 20:28] = 255  # canvas 28..35
    right[0, 0:8, 0:8] = 255  # canvas 28..35
    _, seg, inst = compose_dense(left, right, np.array([1]), np.array([7]), 64)
    # Cells (3,3), (3,4), (4,3), (4,4) each hold a 4×4 tied patch (16 pixels ≥ 8): all left (label 2).
    assert seg[0, 3:5, 3:5].tolist() == [[2, 2], [2, 2]] and int((seg[0] > 0).sum()) == 4
    assert inst[0, :, 3, 3].tolist() == [31.5 - 27.5, 31.5 - 27.5]  # left centroid (31.5, 31.5)
    # The same patches with the right digit brighter by one level: now all right (label 8).
    right[0, 0:8, 0:8], left[0, 20:28, 20:28] = 255, 254
    _, seg, _ = compose_dense(left, right, np.array([1]), np.array([7]), 64)
    assert seg[0, 3:5, 3:5].tolist() == [[8, 8], [8, 8]]


def test_tied_pixels_count_once_and_tied_cells_go_left() -> None:
    # Cell (3, 3) = canvas rows/cols 24..31; the right frame starts at canvas 28.
    left = np.zeros((2, 28, 28), np.uint8)
    right = np.zeros((2, 28, 28), np.uint8)
    # Pair 0, cell (3, 3): 5 tied pixels (both 100, owned by the left digit) and 3 right-only pixels:
    # 8 owned, 5 left vs 3 right → left. Counting tied pixels for both digits would give 5 vs 8 → right.
    left[0, 20, 20:24] = left[0, 21, 20] = 100  # canvas (28, 28..31) and (29, 28)
    right[0, 0, 0:4] = right[0, 1, 0] = 100  # the same canvas pixels
    right[0, 2, 0:3] = 100  # canvas (30, 28..30): right only
    # Pair 1: 8 left-only pixels and 8 right-only pixels in cell (3, 3): a tie of counts → left.
    left[1, 16, 16:24] = 255  # canvas (24, 24..31)
    right[1, 0:2, 0:4] = 255  # canvas (28..29, 28..31)
    _, seg, inst = compose_dense(left, right, np.array([1, 2]), np.array([7, 8]), 64)
    assert int(seg[0, 3, 3]) == 2 and int(seg[1, 3, 3]) == 3
    assert not np.isnan(inst[:, :, 3, 3]).any() and int((seg > 0).sum()) == 2


def test_cell_threshold_is_eight_pixels() -> None:
    left = np.zeros((2, 28, 28), np.uint8)
    left[0, 0, 0:7] = 64  # 7 foreground pixels in canvas cell (1, 1): background
    left[1, 0, 0:8] = 64  # 8: labelled
    left[:, 5, 5] = 63  # below the foreground threshold: counts for nothing
    _, seg, _ = compose_dense(left, np.zeros_like(left), np.array([4, 4]), np.array([0, 0]), 64)
    assert int(seg[0].sum()) == 0 and seg[1].tolist()[1][1] == 5 and int((seg[1] > 0).sum()) == 1


def test_compose_dense_rejects_bad_input() -> None:
    a = np.zeros((1, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        compose_dense(a.astype(np.float32), a, np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="labels"):
        compose_dense(a, a, np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="classes"):
        compose_dense(a, a, np.array([10]), np.array([0]))


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST (Debian dataset-fashion-mnist) not installed")
def test_multifashion_builds(tmp_path: Path) -> None:
    built = build_dense_digits("multifashion", n_train=20, n_val=5, n_test=5, cache_dir=tmp_path)
    assert "dense MultiFashion" in built.description and tuple(built.train.x.shape) == (20, 1, 64, 64)
    assert int(built.train.y["segmentation"].max()) <= 10


# --- end to end -------------------------------------------------------------------------------------------
def test_one_epoch_of_mgda_ub_with_the_dense_model(splits: DataSplits) -> None:
    from moomtl.methods.base import build_method
    from moomtl.models.registry import build_model
    from moomtl.train.trainer import Trainer

    torch.manual_seed(0)
    model = build_model("resnet18_dense_small", ("segmentation", "instance"), [11, 2], input_shape=(1, 64, 64))
    result = Trainer(model, build_method("mgda_ub"), optimizer="SGD",
                     optimizer_kwargs={"lr": 0.01, "momentum": 0.9}, epochs=1, batch_size=64).fit(splits)
    row = result.final
    assert 0.0 <= row["test/segmentation/miou"] <= 1.0
    assert math.isfinite(row["test/instance/l1"]) and row["test/instance/l1"] > 0.0


def test_config_and_cli_train_dense_multimnist(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from moomtl.cli import app

    example = Path(__file__).parents[1] / "examples" / "dense_multimnist.yaml"
    result = CliRunner().invoke(app, [
        "train", "--config", str(example), "--set", "data.n_train=300", "--set", "data.n_val=50",
        "--set", "data.n_test=100", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.epochs=1",
        "--set", "train.progress=false", "--out", str(tmp_path / "run"),
    ])
    assert result.exit_code == 0, result.output
    final = json.loads((tmp_path / "run" / "result.json").read_text())["final"]
    assert 0.0 <= final["test/segmentation/miou"] <= 1.0 and final["test/instance/l1"] > 0
    bad = CliRunner().invoke(app, ["train", "--config", str(example), "--set", "data.image_size=60",
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "multiple of 8" in bad.output
