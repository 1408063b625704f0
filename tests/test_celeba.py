"""CelebA loader on a tiny CelebA fabricated in the exact official formats (both folder layouts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import moomtl.data.celeba as celeba_mod
from moomtl.cli import app
from moomtl.data.base import DataError
from moomtl.data.celeba import (
    CELEBA_ATTRIBUTES,
    CELEBA_MEAN,
    CELEBA_STD,
    CELEBA_URL,
    build_celeba,
    decode_images,
    find_celeba_files,
    read_celeba_attributes,
    read_celeba_partition,
)

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "celeba.yaml"
# Partition of the 12 fabricated images: splits interleaved, so membership must come from the file.
SPLITS = [0, 1, 0, 2, 0, 0, 1, 2, 0, 1, 2, 0]
LAYOUTS = ("drive", "flat", "torchvision", "png")


def _names(n: int) -> list[str]:
    return [f"{i + 1:06d}.jpg" for i in range(n)]


def _attr_text(names: list[str], values: np.ndarray) -> str:
    """The official formatting: count, names (with the trailing space of the real file), then each row as
    the name, a space and the values right-aligned in width 2, separated by one space ("-1  1  1 -1")."""
    lines = [str(len(names)), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, values, strict=True)]
    return "\n".join(lines) + "\n"


def make_celeba(root: Path, layout: str = "drive", n: int = 12, seed: int = 0) -> dict:
    """Write a tiny CelebA under ``root``; returns its paths, the ±1 value table and the split of each image."""
    rng = np.random.default_rng(seed)
    names = _names(n)
    values = rng.choice([-1, 1], size=(n, 40))
    splits = (SPLITS * (n // len(SPLITS) + 1))[:n]
    base = root / "celeba" if layout == "torchvision" else root
    if layout == "drive":
        attr, part, imgs = base / "Anno", base / "Eval", base / "Img" / "img_align_celeba"
    else:
        attr = part = base
        imgs = base / ("img_align_celeba_png" if layout == "png" else "img_align_celeba")
    for d in (attr, part, imgs):
        d.mkdir(parents=True, exist_ok=True)
    (attr / "list_attr_celeba.txt").write_text(_attr_text(names, values))
    (part / "list_eval_partition.txt").write_text("".join(f"{a} {s}\n" for a, s in zip(names, splits, strict=True)))
    paths = []
    for name in names:
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        if layout == "png":
            path = imgs / name.replace(".jpg", ".png")
            Image.fromarray(pixels).save(path)
        else:
            path = imgs / name
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return {"root": root, "names": names, "values": values, "splits": splits, "paths": paths,
            "attr": attr / "list_attr_celeba.txt", "partition": part / "list_eval_partition.txt", "images": imgs}


def _reference(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)


def _raw_images(ds) -> torch.Tensor:
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    return ds.images(torch.arange(len(ds))) * std + mean


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    return make_celeba(tmp_path / "celeba_root")


# --- text files ------------------------------------------------------------------------------------
def test_read_attributes_row_for_row(tiny: dict) -> None:
    names, attrs, labels = read_celeba_attributes(tiny["attr"])
    assert names == tiny["names"] and attrs == CELEBA_ATTRIBUTES and len(attrs) == 40
    assert labels.dtype == np.int64 and labels.shape == (12, 40)
    # Independent reading of the file text: -1 → 0, 1 → 1.
    rows = tiny["attr"].read_text().splitlines()[2:]
    for line, got in zip(rows, labels, strict=True):
        expected = [1 if v == "1" else 0 for v in line.split()[1:]]
        assert got.tolist() == expected
    assert np.array_equal(labels, (tiny["values"] + 1) // 2)
    assert read_celeba_partition(tiny["partition"]) == dict(zip(tiny["names"], tiny["splits"], strict=True))


def _rewrite_line(path: Path, line_no: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_malformed_attribute_files(tiny: dict) -> None:
    path = tiny["attr"]
    original = path.read_text()
    fields = original.splitlines()[4].split()
    _rewrite_line(path, 5, " ".join(fields[:-1]))  # 40 fields instead of 41
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt: line 5 has 40 fields, expected 41"):
        read_celeba_attributes(path)
    path.write_text(original)
    _rewrite_line(path, 4, " ".join([fields[0], *fields[1:5], "2", *fields[6:]]))
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt: line 4: value '2' for Bald is not -1 or 1"):
        read_celeba_attributes(path)
    path.write_text(original)
    _rewrite_line(path, 1, "13")
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt: line 1 says 13 images but the file has 12 rows"):
        read_celeba_attributes(path)
    _rewrite_line(path, 1, "twelve")
    with pytest.raises(DataError, match="line 1 must be the number of images"):
        read_celeba_attributes(path)
    path.write_text(original)
    _rewrite_line(path, 2, " ".join(CELEBA_ATTRIBUTES[:39]))
    with pytest.raises(DataError, match="line 2 must list the 40 official CelebA attributes; found 39"):
        read_celeba_attributes(path)
    path.write_text(original)
    _rewrite_line(path, 6, original.splitlines()[2])
    with pytest.raises(DataError, match="line 6: image 000001.jpg is listed twice"):
        read_celeba_attributes(path)
    path.write_text(original)
    _rewrite_line(tiny["partition"], 3, "000003.jpg 3")
    with pytest.raises(DataError, match=r"list_eval_partition\.txt: line 3 must be"):
        read_celeba_partition(tiny["partition"])


# --- layouts and contents ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_build_follows_the_partition_in_every_layout(tmp_path: Path, layout: str) -> None:
    data = make_celeba(tmp_path / "root", layout)
    files = find_celeba_files(tmp_path / "root")
    assert files.attributes == data["attr"] and files.partition == data["partition"]
    assert files.images == data["images"].resolve() and files.extension == (".png" if layout == "png" else ".jpg")
    s = build_celeba(tmp_path / "root", image_size=16, cache_dir=tmp_path / "cache")
    assert s.task_names == CELEBA_ATTRIBUTES
    labels = (data["values"] + 1) // 2
    for k, part in enumerate((s.train, s.val, s.test)):
        idx = [i for i, sp in enumerate(data["splits"]) if sp == k]  # partition-file order
        assert part.x.dtype == torch.uint8 and tuple(part.x.shape) == (len(idx), 3, 16, 16)
        assert part.y.dtype == torch.int64 and part.y.tolist() == labels[idx].tolist()
        assert np.array_equal(part.x.numpy(), np.stack([_reference(data["paths"][i], 16) for i in idx]))
        assert part.mean == CELEBA_MEAN and part.std == CELEBA_STD
    assert (len(s.train), len(s.val), len(s.test)) == (6, 3, 3)
    assert s.description.startswith(f"CelebA from {tmp_path / 'root'}: 40 attributes, 16x16, used 6 train / 3 val")
    assert "of 6 / 3 / 3" in s.description


def test_image_content_and_normalization(tmp_path: Path, tiny: dict) -> None:
    color = (200, 100, 30)
    Image.new("RGB", (178, 218), color).save(tiny["paths"][0], quality=95)  # 000001.jpg: train
    s = build_celeba(tiny["root"], image_size=64, cache_dir=tmp_path / "cache")
    first = s.train.images(torch.tensor([0]))[0]
    expected = [(c / 255 - m) / sd for c, m, sd in zip(color, CELEBA_MEAN, CELEBA_STD, strict=True)]
    tol = 3 / 255 / min(CELEBA_STD)  # a few JPEG levels
    for ch in range(3):
        assert first.dtype == torch.float32 and float((first[ch] - expected[ch]).abs().max()) < tol
    # Not a trivially passing check: another train image is far from that color.
    assert float((s.train.images(torch.tensor([1]))[0][0] - expected[0]).abs().mean()) > 0.3
    assert torch.allclose(_raw_images(s.train), s.train.x.float() / 255, atol=1e-6)


def test_threaded_decoding_keeps_the_order(tiny: dict) -> None:
    ref = decode_images(tiny["paths"], 8, workers=1, progress=False)
    assert torch.equal(ref, torch.from_numpy(np.stack([_reference(p, 8) for p in tiny["paths"]])))
    threaded = decode_images(tiny["paths"], 8, workers=3, chunk=2, progress=True)
    assert torch.equal(threaded, ref)
    with pytest.raises(ValueError, match="workers and chunk must be ≥ 1"):
        decode_images(tiny["paths"], 8, workers=0)


def test_attribute_subset(tmp_path: Path, tiny: dict) -> None:
    root = tiny["root"]
    full = build_celeba(root, image_size=8, cache_dir=tmp_path / "cache")
    pick = ["Smiling", "Bald", "5_o_Clock_Shadow"]
    s = build_celeba(root, image_size=8, attributes=pick, cache_dir=tmp_path / "cache")
    assert s.task_names == tuple(pick)
    cols = [CELEBA_ATTRIBUTES.index(a) for a in pick]
    assert cols == [31, 4, 0]
    for a, b in ((s.train, full.train), (s.val, full.val), (s.test, full.test)):
        assert torch.equal(a.y, b.y[:, cols]) and torch.equal(a.x, b.x)
    assert "3 attributes" in s.description
    assert len(list((tmp_path / "cache").glob("celeba-*.pt"))) == 1  # attributes do not key the cache
    with pytest.raises(ValueError, match=r"unknown CelebA attribute 'Smile'; valid: 5_o_Clock_Shadow, .*Young"):
        build_celeba(root, attributes=["Smile"], cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="selected twice"):
        build_celeba(root, attributes=["Male", "Male"], cache_dir=tmp_path / "cache")


def test_seeded_subsets(tmp_path: Path) -> None:
    data = make_celeba(tmp_path / "root", "flat", n=36)  # 18 train / 9 val / 9 test
    refs = np.stack([_reference(p, 8) for p in data["paths"]])

    def members(part) -> list[int]:
        out = []
        for img in part.x.numpy():
            (hit,) = np.flatnonzero((refs == img).all(axis=(1, 2, 3)))
            out.append(int(hit))
        return out

    s = build_celeba(tmp_path / "root", image_size=8, n_train=5, n_val=2, n_test=0, seed=3,
                     cache_dir=tmp_path / "cache")
    assert (len(s.train), len(s.val), len(s.test)) == (5, 2, 0)
    train, val = members(s.train), members(s.val)
    assert all(data["splits"][i] == 0 for i in train) and all(data["splits"][i] == 1 for i in val)
    assert train == sorted(train)  # file order
    labels = (data["values"] + 1) // 2
    assert s.train.y.tolist() == labels[train].tolist()
    again = build_celeba(tmp_path / "root", image_size=8, n_train=5, n_val=2, n_test=0, seed=3, use_cache=False)
    assert torch.equal(again.train.x, s.train.x) and torch.equal(again.val.y, s.val.y)
    bigger = build_celeba(tmp_path / "root", image_size=8, n_train=9, seed=3, use_cache=False)
    assert set(train) <= set(members(bigger.train)) and len(bigger.val) == 9  # nested; None keeps all
    others = [members(build_celeba(tmp_path / "root", image_size=8, n_train=5, seed=k, use_cache=False).train)
              for k in range(4, 8)]
    assert any(o != train for o in others)
    assert "used 5 train / 2 val / 0 test of 18 / 9 / 9 (random subsets, seed 3)" in s.description
    assert len(build_celeba(tmp_path / "root", image_size=8, n_train=100, use_cache=False).train) == 18
    with pytest.raises(ValueError, match="n_val must be >= 0"):
        build_celeba(tmp_path / "root", n_val=-1)


def test_cache_hit_and_invalidation(tmp_path: Path, tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tiny["root"], tmp_path / "cache"
    first = build_celeba(root, image_size=8, cache_dir=cache)
    assert len(list(cache.glob("celeba-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image although the cache holds them")

    monkeypatch.setattr(celeba_mod, "decode_image", no_decoding)
    second = build_celeba(root, image_size=8, cache_dir=cache)
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert second.description == first.description
    # Flip one label of the attribute file: same size (and possibly the same mtime) -> still a new entry.
    lines = tiny["attr"].read_text().splitlines()
    fields = lines[2].split()
    fields[1] = "1" if fields[1] == "-1" else "-1"
    old_size = tiny["attr"].stat().st_size
    lines[2] = f"{fields[0]} " + " ".join(f"{int(v):2d}" for v in fields[1:])
    tiny["attr"].write_text("\n".join(lines) + "\n")
    assert tiny["attr"].stat().st_size == old_size
    with pytest.raises(AssertionError, match="decoded an image"):
        build_celeba(root, image_size=8, cache_dir=cache)
    monkeypatch.undo()
    third = build_celeba(root, image_size=8, cache_dir=cache)
    assert len(list(cache.glob("celeba-*.pt"))) == 2
    assert third.train.y[0, 0] == 1 - first.train.y[0, 0] and torch.equal(third.train.y[1:], first.train.y[1:])
    # Another image size is another entry too.
    assert build_celeba(root, image_size=12, cache_dir=cache).train.x.shape[-1] == 12
    assert len(list(cache.glob("celeba-*.pt"))) == 3


# --- errors --------------------------------------------------------------------------------------------
def test_missing_pieces_give_one_clear_error(tmp_path: Path, tiny: dict) -> None:
    root = tiny["root"]
    with pytest.raises(DataError, match=r"CelebA root .*nowhere does not exist.*" + CELEBA_URL.replace(".", r"\.")):
        build_celeba(tmp_path / "nowhere")
    tiny["attr"].rename(tmp_path / "moved.txt")
    with pytest.raises(DataError) as e:
        build_celeba(root, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "missing" in msg and str(root / "Anno" / "list_attr_celeba.txt") in msg and CELEBA_URL in msg
    assert str(root / "list_attr_celeba.txt") in msg and "Eval/list_eval_partition.txt or" not in msg
    assert "\n" not in msg
    (tmp_path / "moved.txt").rename(tiny["attr"])
    tiny["paths"][7].unlink()  # 000008.jpg, a test image
    with pytest.raises(DataError, match=r"img_align_celeba: image file 000008\.jpg is missing \(1 of the 3 test"):
        build_celeba(root, cache_dir=tmp_path / "cache")
    # A subset that does not use the missing image builds fine.
    assert len(build_celeba(root, n_test=0, image_size=8, cache_dir=tmp_path / "cache").test) == 0


def test_corrupt_image_and_inconsistent_files(tmp_path: Path, tiny: dict) -> None:
    root = tiny["root"]
    tiny["paths"][2].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"000003\.jpg: cannot decode image"):
        build_celeba(root, image_size=8, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("celeba-*.pt"))  # nothing half-built was cached
    good = tiny["paths"][3]
    tiny["paths"][2].write_bytes(good.read_bytes())
    part = tiny["partition"].read_text().splitlines()
    tiny["partition"].write_text("\n".join(part[:-1]) + "\n")
    with pytest.raises(DataError, match=r"000012\.jpg is not in .*list_eval_partition\.txt"):
        build_celeba(root, image_size=8, cache_dir=tmp_path / "cache")
    tiny["partition"].write_text("\n".join([*part, "000099.jpg 0"]) + "\n")
    with pytest.raises(DataError, match=r"000099\.jpg has no row in .*list_attr_celeba\.txt"):
        build_celeba(root, image_size=8, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        build_celeba(root, image_size=0)


# --- command line ----------------------------------------------------------------------------------------
def test_cli_trains_resnet18_on_fabricated_celeba(tmp_path: Path, tiny: dict) -> None:
    root = tiny["root"]
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--config", str(EXAMPLE), "--set", f"data.root={root}", "--set", "data.image_size=32",
        "--set", "data.attributes=[Smiling, Male, Young]", "--set", f"data.cache_dir={tmp_path / 'cache'}",
        "--set", "train.batch_size=4", "--set", "train.progress=false", "--epochs", "1", "--device", "cpu",
        "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "result.json").read_text())
    assert summary["model"] == "resnet18_celeba" and summary["method"] == "mgda_ub"
    assert summary["data"].startswith(f"CelebA from {root}: 3 attributes, 32x32, used 6 train / 3 val / 3 test")
    # Encoder + three Linear(512, 2) heads (512 features at 32x32).
    assert summary["parameters"] == 11_168_832 + 3 * (512 * 2 + 2)
    accs = [summary["final"][f"test/{task}/acc"] for task in ("Smiling", "Male", "Young")]
    assert all(0.0 <= a <= 1.0 for a in accs)
    # The paper's summary over many attributes: the mean accuracy (average error = 1 − it).
    assert summary["test_mean_acc"] == pytest.approx(sum(accs) / 3)
    assert f"mean test accuracy over the tasks: {100 * sum(accs) / 3:.2f} %" in result.output


def test_cli_celeba_config_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--config", str(EXAMPLE), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "config error: data.root:" in result.output and "CelebA root" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--config", str(EXAMPLE), "--set", f"data.root={tmp_path}",
                                 "--set", "data.attributes=[Smile]", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "data.attributes: unknown CelebA attribute 'Smile'" in result.output
    result = runner.invoke(app, ["train", "--config", str(EXAMPLE), "--set", f"data.root={tmp_path / 'none'}",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "data error:" in result.output and str(tmp_path / "none") in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["train", "--set", "data.attributes=[Male]", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "data.attributes only applies to dataset celeba" in result.output
    assert not (tmp_path / "run" / "result.json").exists()
