"""Data on disk: CelebA streamed from its official files (decoded per batch, in DataLoader workers)
equals the in-memory build image for image, and training on it gives the in-memory parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.test_celeba import EXAMPLE, make_celeba
from typer.testing import CliRunner

from moomtl.cli import app
from moomtl.data.celeba import build_celeba
from moomtl.data.streaming import ImageFiles, input_shape_of
from moomtl.methods import build_method
from moomtl.models.registry import build_model
from moomtl.train.trainer import Trainer

ATTRS = ["Smiling", "Male", "Young"]


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory) -> Path:
    return make_celeba(tmp_path_factory.mktemp("celeba_stream"), n=15)["root"]


def test_streamed_splits_equal_the_in_memory_ones(celeba_root, tmp_path):
    mem = build_celeba(celeba_root, image_size=32, attributes=ATTRS, cache_dir=tmp_path, workers=1)
    disk = build_celeba(celeba_root, image_size=32, attributes=ATTRS, stream=True)
    assert "streamed from disk" in disk.description and disk.task_names == mem.task_names
    for a, b in ((mem.train, disk.train), (mem.val, disk.val), (mem.test, disk.test)):
        assert isinstance(b, ImageFiles) and len(a) == len(b)
        idx = torch.arange(len(a))
        assert torch.equal(a.images(idx), b.images(idx))  # reference: the decoded in-memory tensors
        assert all(torch.equal(a.targets(idx)[t], b.targets(idx)[t]) for t in ATTRS)
        x, targets = b[1]
        assert torch.equal(x, a.images(torch.tensor([1]))[0]) and len(targets) == 3
    assert input_shape_of(disk.train) == input_shape_of(mem.train) == (3, 32, 32)
    assert disk.output_sizes() == mem.output_sizes()


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_training_on_the_stream_equals_training_in_memory(celeba_root, tmp_path, workers):
    mem = build_celeba(celeba_root, image_size=32, attributes=ATTRS, cache_dir=tmp_path, workers=1)
    disk = build_celeba(celeba_root, image_size=32, attributes=ATTRS, stream=True)
    models = []
    for splits, nw in ((mem, 0), (disk, workers)):
        torch.manual_seed(0)
        model = build_model("resnet18_celeba", splits.task_names, splits.output_sizes(), input_shape=(3, 32, 32))
        Trainer(model, build_method("mgda_ub"), epochs=1, batch_size=2, num_workers=nw).fit(splits)
        models.append(model)
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_cli_streams_with_workers(celeba_root, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--config", str(EXAMPLE), "--set", f"data.root={celeba_root}", "--set", "data.image_size=32",
        "--set", "data.attributes=[Smiling, Male]", "--set", "data.stream=true", "--set", "train.num_workers=2",
        "--set", "train.batch_size=4", "--set", "train.progress=false", "--epochs", "1", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "result.json").read_text())
    assert "streamed from disk" in summary["data"]
    assert all(0.0 <= summary["final"][f"test/{t}/acc"] <= 1.0 for t in ("Smiling", "Male"))
    bad = CliRunner().invoke(app, ["train", "--set", "data.stream=true", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "data.stream only applies to datasets celeba and cityscapes" in bad.output


def test_cityscapes_stream_equals_the_in_memory_build(tmp_path):
    from tests.test_cityscapes import make_cityscapes

    from moomtl.data.cityscapes import CityscapesFrames, build_cityscapes

    root = make_cityscapes(tmp_path / "cs")["root"]
    mem = build_cityscapes(root, image_size=(16, 32), n_val=2, seed=0, use_cache=False, workers=1)
    disk = build_cityscapes(root, image_size=(16, 32), n_val=2, seed=0, stream=True)
    assert "streamed from disk" in disk.description and disk.task_specs() == mem.task_specs()
    assert disk.output_sizes() == mem.output_sizes()
    for a, b in ((mem.train, disk.train), (mem.val, disk.val), (mem.test, disk.test)):
        assert isinstance(b, CityscapesFrames) and len(a) == len(b)
        idx = torch.arange(len(a))
        assert torch.equal(a.images(idx), b.images(idx))  # reference: the decoded in-memory tensors
        ta, tb = a.targets(idx), b.targets(idx)
        for t in ("segmentation", "instance", "depth"):
            assert ta[t].dtype == tb[t].dtype and torch.equal(ta[t].nan_to_num(-7), tb[t].nan_to_num(-7))
