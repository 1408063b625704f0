"""Cityscapes loader on a tiny Cityscapes fabricated in the exact official layout and PNG formats."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

import moomtl.data.cityscapes as cs
from moomtl.data.base import DataError
from moomtl.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_MEAN,
    CITYSCAPES_STD,
    CITYSCAPES_TRAIN_IDS,
    CITYSCAPES_URL,
    TASK_NAMES,
    build_cityscapes,
    decode_frames,
    disparity_from_png,
    downsample_nearest,
    find_cityscapes_files,
    instance_offsets,
    label_ids_to_train_ids,
    pixels,
)
from moomtl.tasks import MaskedL1, Segmentation

FULL = (64, 128)  # (H, W) of the fabricated frames: not 1024×2048, the loader must not assume it
CITIES = {"train": {"aachen": 4, "bochum": 2}, "val": {"frankfurt": 2, "lindau": 1}}
# The official table (cityscapesScripts labels.py), written out independently of the loader.
OFFICIAL_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                      26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
THINGS = (24, 25, 26, 27, 28, 31, 32, 33)


# --- fabrication -------------------------------------------------------------------------------------------
def _frame_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """labelIds, instanceIds, raw disparity and RGB pixels of one frame, consistent with each other."""
    h, w = FULL
    labels = np.kron(rng.integers(0, 34, (h // 8, w // 8)), np.ones((8, 8), dtype=np.int64))  # stuff blocks
    inst = labels.copy()
    for k in range(5):  # rectangles of thing instances, some overlapping (the later one wins)
        label = int(rng.choice(THINGS))
        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        y1, x1 = y0 + int(rng.integers(2, 24)), x0 + int(rng.integers(2, 40))
        labels[y0:y1, x0:x1] = label
        inst[y0:y1, x0:x1] = label * 1000 + k
    labels[:3, :5] = 26  # a car region without instance id (a crowd): value 26 in instanceIds
    inst[:3, :5] = 26
    labels[-4:, -6:] = 29  # a caravan instance: has an id, but no trainId
    inst[-4:, -6:] = 29000
    disparity = rng.integers(0, 30000, (h, w)).astype(np.uint16)
    disparity[rng.random((h, w)) < 0.2] = 0  # invalid measurements
    disparity[0, 0], disparity[0, 1] = 257, 0
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return {"labels": labels.astype(np.uint8), "inst": inst, "disparity": disparity, "rgb": rgb}


def _save_16bit(a: np.ndarray, path: Path, big_endian: bool = False) -> None:
    """A 16-bit grayscale PNG, the official format of instanceIds and disparity (PNG has no 32-bit gray).
    ``big_endian`` builds it from a big-endian buffer (PIL mode I;16B): the file is the same format."""
    a = np.asarray(a, dtype=np.uint16)
    if big_endian:
        im = Image.frombytes("I;16B", (a.shape[1], a.shape[0]), a.astype(">u2").tobytes())
    else:
        im = Image.fromarray(a)
        assert im.mode == "I;16"
    im.save(path)


def make_cityscapes(root: Path, seed: int = 0) -> dict:
    """Write a tiny Cityscapes under ``root``; returns ``{split: {stem: arrays}}`` and the paths."""
    rng = np.random.default_rng(seed)
    data: dict = {"root": root, "train": {}, "val": {}, "paths": {}}
    n = 0
    for split, cities in CITIES.items():
        for city, count in cities.items():
            for d in ("leftImg8bit", "gtFine", "disparity"):
                (root / d / split / city).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                stem = f"{city}_{i:06d}_{19 + 7 * i:06d}"
                arrays = _frame_arrays(rng)
                paths = {
                    "image": root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                    "labels": root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                    "inst": root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png",
                    "disparity": root / "disparity" / split / city / f"{stem}_disparity.png",
                }
                Image.fromarray(arrays["rgb"]).save(paths["image"])
                Image.fromarray(arrays["labels"]).save(paths["labels"])  # 8-bit, mode L
                _save_16bit(arrays["inst"], paths["inst"], big_endian=n % 2 == 1)
                _save_16bit(arrays["disparity"], paths["disparity"], big_endian=n % 3 == 2)
                # Distractors the loader must skip: colour/polygon files of the gtFine package.
                Image.fromarray(arrays["rgb"]).save(root / "gtFine" / split / city / f"{stem}_gtFine_color.png")
                data[split][stem] = arrays
                data["paths"][stem] = paths
                n += 1
    return data


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    return make_cityscapes(tmp_path / "cs")


def brute_force_offsets(ids: np.ndarray) -> np.ndarray:
    """Per instance, a loop over its pixels (the definition, written the slow way)."""
    out = np.full((2, *ids.shape), np.nan)
    for v in np.unique(ids):
        if v < 1000 or v // 1000 not in THINGS:
            continue
        pts = [(y, x) for y in range(ids.shape[0]) for x in range(ids.shape[1]) if ids[y, x] == v]
        my = sum(p[0] for p in pts) / len(pts)
        mx = sum(p[1] for p in pts) / len(pts)
        for y, x in pts:
            out[0, y, x], out[1, y, x] = y - my, x - mx
    return out


# --- pure functions --------------------------------------------------------------------------------------
def test_train_ids_on_every_label_id() -> None:
    ids = np.arange(-1, 300)
    got = label_ids_to_train_ids(ids)
    assert got.dtype == np.uint8
    for label, train in zip(ids.tolist(), got.tolist(), strict=True):
        assert train == OFFICIAL_TRAIN_IDS.get(label, 255), label
    assert sorted(OFFICIAL_TRAIN_IDS.values()) == list(range(19)) == sorted(set(got.tolist()) - {255})
    assert CITYSCAPES_TRAIN_IDS.shape == (256,) and CITYSCAPES_TRAIN_IDS.dtype == np.uint8
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[13] == "car" and CITYSCAPES_CLASSES[11] == "person"
    with pytest.raises(ValueError):
        CITYSCAPES_TRAIN_IDS[0] = 3  # read-only shared table
    with pytest.raises(ValueError, match="integers"):
        label_ids_to_train_ids(np.array([7.0]))


ID_POOL = [0, 7, 24, 26, 29, 33, 24000, 24001, 26001, 26002, 29001, 30000, 33999, 23001, 1000]


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 7), st.integers(1, 9)), elements=st.sampled_from(ID_POOL)))
def test_instance_offsets_match_brute_force(ids: np.ndarray) -> None:
    got = instance_offsets(ids)
    ref = brute_force_offsets(ids)
    assert got.dtype == np.float32 and got.shape == (2, *ids.shape)
    assert np.array_equal(np.isnan(got), np.isnan(ref))  # NaN exactly off instances (stuff, 26, 29001, ...)
    np.testing.assert_allclose(got, ref, atol=1e-5, equal_nan=True)
    for v in np.unique(ids[~np.isnan(got[0])]):  # the offsets of an instance sum to zero
        assert abs(float(got[:, ids == v].sum(axis=1).max())) < 1e-4


def test_instance_offsets_full_resolution_units() -> None:
    ids = np.full((40, 60), 7)
    ids[10:20, 30:50] = 26003  # centre (14.5, 39.5)
    off = instance_offsets(ids)
    assert off[0, 10, 30] == -4.5 and off[1, 10, 30] == -9.5 and off[0, 19, 49] == 4.5 and off[1, 19, 49] == 9.5
    assert np.isnan(off[:, :10]).all() and np.isnan(instance_offsets(np.full((3, 3), 26))).all()
    with pytest.raises(ValueError, match="2-D integer"):
        instance_offsets(np.zeros((2, 2, 2), dtype=int))


def test_disparity_conversion() -> None:
    p = np.array([[0, 1, 257], [513, 65535, 0]], dtype=np.uint16)
    d = disparity_from_png(p)
    assert d.dtype == np.float32
    assert np.isnan(d).tolist() == [[True, False, False], [False, False, True]]
    assert d[0, 1] == 0.0 and d[0, 2] == 1.0 and d[1, 0] == 2.0 and d[1, 1] == 65534 / 256
    with pytest.raises(ValueError, match="≥ 0"):
        disparity_from_png(np.array([-1]))


def test_downsampling_picks_the_centre_pixel() -> None:
    a = np.arange(64 * 128).reshape(64, 128)
    got = downsample_nearest(a, (8, 16))  # factor 8: pixel 4 of every 8×8 block
    assert np.array_equal(got, a[4::8, 4::8])
    assert np.array_equal(downsample_nearest(np.stack([a, -a]), (4, 4)), np.stack([a, -a])[:, 8::16, 16::32])
    # Integer factors: the same pixel as PIL's NEAREST resize.
    for size, out in ((16, 2), (24, 8), (21, 7), (10, 10), (9, 3)):
        img = np.arange(size * size, dtype=np.float32).reshape(size, size)
        ref = np.asarray(Image.fromarray(img, mode="F").resize((out, out), Image.Resampling.NEAREST))
        assert np.array_equal(downsample_nearest(img, (out, out)), ref), (size, out)
    # Any ratio: output pixel i is input pixel floor((i + 1/2) * H / h).
    for size, out in ((10, 4), (7, 3), (1024, 12)):
        picked = downsample_nearest(np.arange(size)[None, :], (1, out))[0]
        assert picked.tolist() == [int(np.floor((i + 0.5) * size / out)) for i in range(out)]
    nan = np.full((4, 4), np.nan)
    nan[1, 1] = 2.0
    assert downsample_nearest(nan, (2, 2)).tolist()[0][0] == 2.0  # values copied, never averaged


def test_pixels_reads_old_and_new_pillow_modes_alike() -> None:
    a = np.array([[7, 26001], [33999, 0]])
    old = Image.new("I", (2, 2))  # mode "I": how older Pillow opened a 16-bit PNG
    old.putdata(a.ravel().tolist())
    new = Image.fromarray(a.astype(np.uint16))  # mode "I;16": how Pillow ≥ 10 opens it
    big = Image.frombytes("I;16B", (2, 2), a.astype(">u2").tobytes())
    for im in (old, new, big):
        got = pixels(im)
        assert got.dtype == np.int64 and got.tolist() == a.tolist(), im.mode


# --- files -----------------------------------------------------------------------------------------------
def test_find_files_sorted_with_their_labels(tiny: dict, tmp_path: Path) -> None:
    frames = find_cityscapes_files(tiny["root"], "train")
    assert [f.stem for f in frames] == sorted(tiny["train"]) and len(frames) == 6
    for f in frames:
        p = tiny["paths"][f.stem]
        assert (f.image, f.label_ids, f.instance_ids, f.disparity) == (p["image"], p["labels"], p["inst"],
                                                                       p["disparity"])
    assert [f.stem for f in find_cityscapes_files(tiny["root"], "val")] == sorted(tiny["val"])
    # root/cityscapes is accepted too.
    outer = tmp_path / "outer"
    outer.mkdir()
    shutil.move(str(tiny["root"]), outer / "cityscapes")
    assert [f.stem for f in find_cityscapes_files(outer, "val")] == sorted(tiny["val"])
    with pytest.raises(ValueError, match="split must be one of"):
        find_cityscapes_files(outer, "training")


# --- building --------------------------------------------------------------------------------------------
def _expected_targets(arrays: dict, out_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Targets from the fabricated arrays, computed independently (brute-force offsets, explicit centre
    pixels of each (H/h)×(W/w) block)."""
    fy, fx = FULL[0] // out_hw[0], FULL[1] // out_hw[1]
    rows, cols = np.arange(out_hw[0]) * fy + fy // 2, np.arange(out_hw[1]) * fx + fx // 2
    pick = np.ix_(rows, cols)
    seg = np.vectorize(lambda v: OFFICIAL_TRAIN_IDS.get(int(v), 255))(arrays["labels"])[pick]
    offsets = brute_force_offsets(arrays["inst"])[:, rows][:, :, cols]
    p = arrays["disparity"][pick].astype(np.float64)
    depth = np.where(p > 0, (p - 1) / 256, np.nan)[None]
    return {"segmentation": seg, "instance": offsets, "depth": depth}


def _bilinear(path: Path, hw: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((hw[1], hw[0]), Image.Resampling.BILINEAR)).transpose(2, 0, 1)


def test_build_targets_splits_and_tasks(tiny: dict, tmp_path: Path) -> None:
    s = build_cityscapes(tiny["root"], image_size=(32, 64), n_val=2, seed=0, cache_dir=tmp_path / "cache")
    assert s.task_names == TASK_NAMES == ("segmentation", "instance", "depth")
    assert s.tasks == {"segmentation": Segmentation(19), "instance": MaskedL1(), "depth": MaskedL1()}
    assert (len(s.train), len(s.val), len(s.test)) == (4, 2, 3)
    stems = {k: [] for k in ("train", "val", "test")}
    for name, part in (("train", s.train), ("val", s.val), ("test", s.test)):
        n = len(part)
        assert part.x.dtype == torch.uint8 and tuple(part.x.shape) == (n, 3, 32, 64)
        assert part.mean == CITYSCAPES_MEAN and part.std == CITYSCAPES_STD
        seg, inst, depth = (part.y[t] for t in TASK_NAMES)
        assert seg.dtype == torch.int64 and tuple(seg.shape) == (n, 4, 8)
        assert inst.dtype == torch.float32 and tuple(inst.shape) == (n, 2, 4, 8)
        assert depth.dtype == torch.float32 and tuple(depth.shape) == (n, 1, 4, 8)
        # Identify each example by its image, then compare every target with the independent reference.
        source = tiny["val"] if name == "test" else tiny["train"]
        for i in range(n):
            stem = next(st for st in source if np.array_equal(_bilinear(tiny["paths"][st]["image"], (32, 64)),
                                                              part.x[i].numpy()))
            stems[name].append(stem)
            ref = _expected_targets(source[stem], (4, 8))
            assert seg[i].tolist() == ref["segmentation"].tolist()
            np.testing.assert_allclose(inst[i].numpy(), ref["instance"], atol=1e-4, equal_nan=True)
            np.testing.assert_allclose(depth[i].numpy(), ref["depth"], equal_nan=True)
    # Official val is our test (all of it, in stem order); our val is held out of official train.
    assert stems["test"] == sorted(tiny["val"])
    assert not set(stems["train"]) & set(stems["val"])
    assert sorted(stems["train"] + stems["val"]) == sorted(tiny["train"])
    assert stems["train"] == sorted(stems["train"]) and stems["val"] == sorted(stems["val"])
    # The fabricated targets exercise every case: labelled/ignored pixels, instance/no instance, NaN depth.
    all_seg = torch.cat([p.y["segmentation"] for p in (s.train, s.val, s.test)])
    all_inst = torch.cat([p.y["instance"] for p in (s.train, s.val, s.test)])
    all_depth = torch.cat([p.y["depth"] for p in (s.train, s.val, s.test)])
    assert (all_seg == 255).any() and (all_seg < 19).any() and int(all_seg[all_seg != 255].max()) <= 18
    assert torch.isnan(all_inst).any() and (~torch.isnan(all_inst)).any()
    assert torch.isnan(all_depth).any() and (~torch.isnan(all_depth)).any()
    # The declared tasks' losses are finite on these targets.
    g = torch.Generator().manual_seed(0)
    seg_loss = Segmentation(19).loss(torch.randn(4, 19, 4, 8, generator=g), s.train.y["segmentation"])
    inst_loss = MaskedL1().loss(torch.randn(4, 2, 4, 8, generator=g), s.train.y["instance"])
    depth_loss = MaskedL1().loss(torch.randn(4, 1, 4, 8, generator=g), s.train.y["depth"])
    assert all(bool(torch.isfinite(v)) and float(v) > 0 for v in (seg_loss, inst_loss, depth_loss))
    # A batch as the trainer sees it.
    x, ys = s.train[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 32, 64) and len(ys) == 3
    assert s.description == (
        f"Cityscapes from {tiny['root']}: 32x64 images, targets 4x8, used 4 train / 2 val / 3 test "
        "(official train 6 minus a held-out val; test = official val 3; seed 0)"
    )


def _members(part) -> list[bytes]:
    return [bytes(img.numpy().tobytes()) for img in part.x]


def test_seeded_held_out_val_and_subsets(tiny: dict, tmp_path: Path) -> None:
    root, cache = tiny["root"], tmp_path / "cache"
    a = build_cityscapes(root, image_size=(8, 16), n_val=3, seed=1, cache_dir=cache)
    b = build_cityscapes(root, image_size=(8, 16), n_val=3, seed=1, use_cache=False)
    assert _members(a.val) == _members(b.val) and _members(a.train) == _members(b.train)
    vals = [set(_members(build_cityscapes(root, image_size=(8, 16), n_val=3, seed=k, use_cache=False).val))
            for k in range(2, 7)]
    assert any(v != set(_members(a.val)) for v in vals)  # the seed moves the held-out val
    sub = build_cityscapes(root, image_size=(8, 16), n_train=2, n_val=3, n_test=1, seed=1, use_cache=False)
    assert (len(sub.train), len(sub.val), len(sub.test)) == (2, 3, 1)
    assert set(_members(sub.train)) <= set(_members(a.train)) and _members(sub.val) == _members(a.val)
    assert set(_members(sub.test)) <= set(_members(a.test))
    assert sub.description.endswith("seed 1, random subsets)")
    none = build_cityscapes(root, image_size=(8, 16), n_val=0, use_cache=False)
    assert (len(none.train), len(none.val), len(none.test)) == (6, 0, 3)
    with pytest.raises(ValueError, match="n_val=6 held-out frames leave none to train on: official train has 6"):
        build_cityscapes(root, image_size=(8, 16), n_val=6)
    with pytest.raises(ValueError, match="n_train must be an integer >= 0"):
        build_cityscapes(root, image_size=(8, 16), n_val=1, n_train=-1)
    for bad in ((30, 64), (32, 4), (32,), (0, 0), (True, 8)):
        with pytest.raises(ValueError, match="image_size"):
            build_cityscapes(root, image_size=bad, n_val=1)


def test_threaded_decoding_keeps_the_order(tiny: dict) -> None:
    frames = find_cityscapes_files(tiny["root"], "train")
    ref = decode_frames(frames, (16, 32), workers=1, progress=False)
    threaded = decode_frames(frames, (16, 32), workers=3, progress=True)
    for key in ("image", "segmentation", "instance", "depth"):
        assert torch.equal(ref[key].nan_to_num(-7.0), threaded[key].nan_to_num(-7.0)), key
    assert ref["image"][0].numpy().tolist() == _bilinear(frames[0].image, (16, 32)).tolist()
    with pytest.raises(ValueError, match="workers must be ≥ 1"):
        decode_frames(frames, (16, 32), workers=0)


def test_old_pillow_mode_i_gives_the_same_targets(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Older Pillow opens the 16-bit instanceIds/disparity PNGs as 32-bit mode "I": same result."""
    frames = find_cityscapes_files(tiny["root"], "val")
    ref = decode_frames(frames, (16, 32), workers=1)
    real_open = Image.open
    opened: list[str] = []

    def open_as_mode_i(path, *args, **kwargs):
        im = real_open(path, *args, **kwargs)
        if im.mode.startswith("I;16"):
            opened.append(im.mode)
            return im.convert("I")
        return im

    monkeypatch.setattr(cs.Image, "open", open_as_mode_i)
    old = decode_frames(frames, (16, 32), workers=1)
    assert len(opened) == 2 * len(frames)
    for key in ref:
        assert torch.equal(ref[key].nan_to_num(-7.0), old[key].nan_to_num(-7.0)), key


def test_cache_hit_and_new_entries(tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tiny["root"], tmp_path / "cache"
    first = build_cityscapes(root, image_size=(16, 32), n_val=2, cache_dir=cache)
    assert len(list(cache.glob("cityscapes-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a frame although the cache holds it")

    monkeypatch.setattr(cs, "decode_frame", no_decoding)
    second = build_cityscapes(root, image_size=(16, 32), n_val=2, cache_dir=cache)
    for p, q in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert torch.equal(p.x, q.x) and torch.equal(p.y["segmentation"], q.y["segmentation"])
        assert torch.equal(p.y["instance"].nan_to_num(-7.0), q.y["instance"].nan_to_num(-7.0))
    assert second.description == first.description
    # Another size, another held-out val or a replaced label file: a new entry, decoded again.
    for kwargs in ({"image_size": (8, 16), "n_val": 2}, {"image_size": (16, 32), "n_val": 3}):
        with pytest.raises(AssertionError, match="decoded a frame"):
            build_cityscapes(root, cache_dir=cache, **kwargs)
    stem = sorted(tiny["val"])[0]
    path = tiny["paths"][stem]["disparity"]
    _save_16bit(np.asarray(Image.open(path)) // 2, path)
    with pytest.raises(AssertionError, match="decoded a frame"):
        build_cityscapes(root, image_size=(16, 32), n_val=2, cache_dir=cache)


# --- errors ------------------------------------------------------------------------------------------------
def test_missing_pieces_give_one_clear_error(tiny: dict, tmp_path: Path) -> None:
    root = tiny["root"]
    with pytest.raises(DataError, match=r"Cityscapes root .*nowhere does not exist") as e:
        build_cityscapes(tmp_path / "nowhere", n_val=1)
    assert CITYSCAPES_URL in str(e.value) and "leftImg8bit_trainvaltest.zip" in str(e.value)
    shutil.rmtree(root / "disparity" / "val")
    with pytest.raises(DataError) as e:
        build_cityscapes(root, n_val=1, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "val split" in msg and "disparity/val/" in msg and "disparity_trainvaltest.zip" in msg
    assert "gtFine_trainvaltest.zip" not in msg and CITYSCAPES_URL in msg and "\n" not in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"missing folder\(s\) leftImg8bit/train/, gtFine/train/, disparity/train/"):
        find_cityscapes_files(empty, "train")


def test_an_image_without_its_labels(tiny: dict, tmp_path: Path) -> None:
    stems = sorted(tiny["train"])
    tiny["paths"][stems[1]]["labels"].unlink()
    tiny["paths"][stems[3]]["inst"].unlink()
    with pytest.raises(DataError) as e:
        build_cityscapes(tiny["root"], n_val=1, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "train split" in msg and "6 images but missing 2 gtFine file(s)" in msg
    assert str(tiny["paths"][stems[1]]["labels"]) in msg and "gtFine_trainvaltest.zip" in msg
    tiny["paths"][stems[0]]["disparity"].unlink()
    with pytest.raises(DataError, match=r"missing 2 gtFine file\(s\) .*; 1 disparity file\(s\) \(first: .*"
                                        + stems[0] + "_disparity.png"):
        find_cityscapes_files(tiny["root"], "train")


def test_corrupt_or_inconsistent_pngs(tiny: dict, tmp_path: Path) -> None:
    root, cache = tiny["root"], tmp_path / "cache"
    stem = sorted(tiny["val"])[1]
    paths = tiny["paths"][stem]
    good = paths["inst"].read_bytes()
    paths["inst"].write_bytes(good[: len(good) // 2])  # truncated PNG
    with pytest.raises(DataError, match=f"{stem}_gtFine_instanceIds.png: cannot decode a 16-bit instanceIds map"):
        build_cityscapes(root, image_size=(8, 16), n_val=1, cache_dir=cache)
    assert not list(cache.glob("cityscapes-*.pt"))  # nothing half-built was cached
    paths["inst"].write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="instanceIds.png: cannot decode"):
        build_cityscapes(root, image_size=(8, 16), n_val=1, cache_dir=cache)
    paths["inst"].write_bytes(good)
    paths["image"].write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=f"{stem}_leftImg8bit.png: cannot decode image"):
        build_cityscapes(root, image_size=(8, 16), n_val=1, cache_dir=cache)
    Image.fromarray(tiny["val"][stem]["rgb"]).save(paths["image"])
    Image.fromarray(tiny["val"][stem]["labels"][:, :64]).save(paths["labels"])
    with pytest.raises(DataError, match=r"labelIds.png: size 64x64 differs from its image .*\(128x64\)"):
        build_cityscapes(root, image_size=(8, 16), n_val=1, cache_dir=cache)
    Image.fromarray(tiny["val"][stem]["rgb"]).save(paths["labels"])  # a colour image where labelIds belong
    wrong_mode = r"labelIds.png: an 8-bit labelIds map must be a single-channel PNG \(PIL mode L\), got PIL mode RGB"
    with pytest.raises(DataError, match=wrong_mode):
        build_cityscapes(root, image_size=(8, 16), n_val=1, cache_dir=cache)
    Image.fromarray(tiny["val"][stem]["labels"]).save(paths["labels"])
    _save_16bit(tiny["val"][stem]["disparity"][:32], paths["disparity"])
    with pytest.raises(DataError, match="disparity.png: size 128x32 differs"):
        build_cityscapes(root, image_size=(8, 16), n_val=1, cache_dir=cache)


# --- command line ----------------------------------------------------------------------------------------
EXAMPLE = Path(__file__).parents[1] / "examples" / "cityscapes.yaml"


def test_cli_trains_and_sweeps_a_dense_model_on_fabricated_cityscapes(tiny: dict, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from moomtl.cli import app

    runner = CliRunner()
    common = ["--config", str(EXAMPLE), "--set", f"data.root={tiny['root']}", "--set", "data.image_size=[32, 64]",
              "--set", "data.n_val=2", "--set", f"data.cache_dir={tmp_path / 'cache'}",
              "--set", "model.name=resnet18_dense_small", "--set", "train.batch_size=2",
              "--set", "train.progress=false", "--set", "train.device=cpu", "--set", "train.epochs=1"]
    result = runner.invoke(app, ["train", *common, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    final = json.loads((tmp_path / "run" / "result.json").read_text())["final"]
    assert 0.0 <= final["test/segmentation/miou"] <= 1.0 and 0.0 <= final["test/segmentation/pixel_acc"] <= 1.0
    assert final["test/instance/l1"] > 0 and final["test/depth/l1"] > 0
    assert "test/segmentation/acc" not in final and "test/segmentation/miou" in result.output
    # A preference sweep over the three dense tasks: a front of test losses, a parallel-coordinates plot,
    # and a table that shows each task's own metric.
    result = runner.invoke(app, ["sweep", *common, "--method", "tch", "--preferences", "3",
                                 "--out", str(tmp_path / "sweep")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "sweep" / "results.md").read_text()
    assert "segmentation miou" in md and "depth l1" in md and (tmp_path / "sweep" / "parallel.png").is_file()
    # Without a root: one line, exit code 2.
    result = runner.invoke(app, ["train", "--config", str(EXAMPLE), "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and "data.root: dataset cityscapes" in result.output


def test_sparse_pipeline_refuses_dense_tasks(tiny: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from moomtl.cli import app

    result = CliRunner().invoke(app, [
        "sparse", "--config", str(EXAMPLE), "--set", f"data.root={tiny['root']}", "--set", "data.image_size=[32, 64]",
        "--set", "data.n_val=2", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "method={name: mwc_alm}",
        "--out", str(tmp_path / "sparse"),
    ])
    assert result.exit_code == 2, result.output
    assert "moomtl sparse supports classification tasks only; segmentation, instance, depth are not" in result.output
