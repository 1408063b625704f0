from __future__ import annotations

import json

import pytest
import torch

from moomtl.methods import build_method
from moomtl.models.lenet import hps_lenet
from moomtl.train.trainer import Trainer, TrainingError, iterate_batches


def _trainer(out, epochs, method="uniform", **kw):
    torch.manual_seed(0)
    return Trainer(hps_lenet(), build_method(method, **kw), optimizer="SGD",
                   optimizer_kwargs={"lr": 0.05, "momentum": 0.9}, scheduler="StepLR",
                   scheduler_kwargs={"step_size": 1, "gamma": 0.8}, epochs=epochs, batch_size=32,
                   seed=3, out_dir=out)


def test_loss_decreases_and_beats_chance_on_real_data(tiny_multimnist, tmp_path):
    res = _trainer(tmp_path, 3).fit(tiny_multimnist)
    first, last = res.history[0], res.history[-1]
    for t in ("left", "right"):
        assert last[f"train/{t}/loss"] < first[f"train/{t}/loss"]
        assert last[f"val/{t}/loss"] < 1.5  # chance-level cross-entropy is ln 10 ≈ 2.30
        assert last[f"test/{t}/acc"] > 0.3  # chance is 0.1
    logged = json.loads((tmp_path / "metrics.json").read_text())
    assert len(logged) == 3 and (tmp_path / "metrics.csv").read_text().count("\n") == 4
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "final_metrics.json").exists()


def test_resume_gives_identical_parameters(tiny_multimnist, tmp_path):
    data = tiny_multimnist
    # Short epochs keep this fast; dropout makes the RNG state part of what must be restored.
    small = type(data)(data.train.subset(600), data.val.subset(100), data.test.subset(100), data.description)
    full = _trainer(tmp_path / "full", 3, method="linear", weights=[0.3, 0.7])
    full.fit(small)
    interrupted = _trainer(tmp_path / "part", 2, method="linear", weights=[0.3, 0.7])
    interrupted.fit(small)
    resumed = _trainer(tmp_path / "part", 3, method="linear", weights=[0.3, 0.7])
    res = resumed.fit(small, resume=True)
    assert len(res.history) == 3
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # A run resumed from scratch (no checkpoint) differs from nothing: it equals the full run too.
    fresh = _trainer(tmp_path / "fresh", 3, method="linear", weights=[0.3, 0.7])
    fresh.fit(small, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(),
                                                 fresh.model.state_dict().values(), strict=True))


def test_diverging_loss_is_reported(tiny_multimnist, tmp_path):
    data = tiny_multimnist
    small = type(data)(data.train.subset(256), data.val.subset(10), data.test.subset(10), data.description)
    t = Trainer(hps_lenet(), build_method("uniform"), optimizer_kwargs={"lr": 1e6}, epochs=3, batch_size=32)
    with pytest.raises(TrainingError, match="not finite"):
        t.fit(small)


def test_bad_optimizer_and_device_are_clear_errors():
    with pytest.raises(ValueError, match="unknown optimizer"):
        Trainer(hps_lenet(), build_method("uniform"), optimizer="Nope")._build_optimizer()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Trainer(hps_lenet(), build_method("uniform"), device="cuda")


def test_iterate_batches_covers_every_index_once():
    g = torch.Generator().manual_seed(0)
    batches = iterate_batches(103, 10, g)
    assert sorted(torch.cat(batches).tolist()) == list(range(103))
    assert [len(b) for b in batches][-1] == 3


def test_uint8_storage_trains_exactly_like_normalized_floats(tmp_path):
    """Images kept as uint8 (normalized per batch) give the same run as images normalized up front."""
    from moomtl.data.base import DataSplits, MultiTaskTensors

    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (96, 1, 28, 28), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (96, 2), generator=gen)
    mean, std = (0.2,), (0.3,)
    stored = MultiTaskTensors(raw, y, ("left", "right"), mean=mean, std=std)
    floats = MultiTaskTensors((raw.float() / 255 - 0.2) / 0.3, y, ("left", "right"))
    assert torch.equal(stored.images(torch.arange(96)), floats.x)
    assert torch.equal(stored[5][0], floats[5][0]) and stored.subset(10).mean == mean
    runs = []
    for data in (stored, floats):
        res = _trainer(None, 2).fit(DataSplits(data, data.subset(32), data.subset(32), "random"))
        runs.append({k: v for k, v in res.final.items() if not k.endswith("seconds")})
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="mean and a std per channel"):
        MultiTaskTensors(raw, y, ("left", "right"))
    with pytest.raises(ValueError, match="only used with uint8"):
        MultiTaskTensors(floats.x, y, ("left", "right"), mean=mean, std=std)
    with pytest.raises(ValueError, match="positive"):
        MultiTaskTensors(raw, y, ("left", "right"), mean=mean, std=(0.0,))


def test_reduce_lr_on_plateau_is_stepped_with_the_mean_validation_loss(tiny_multimnist):
    """``ReduceLROnPlateau`` needs a metric: the trainer gives it the mean val loss (patience 0 and a
    huge threshold make every epoch a plateau, so the lr halves each epoch)."""
    import torch

    from moomtl.methods import build_method
    from moomtl.models.lenet import hps_lenet
    from moomtl.train.trainer import Trainer

    torch.manual_seed(0)
    trainer = Trainer(hps_lenet(), build_method("uniform"), epochs=2, batch_size=512,
                      optimizer_kwargs={"lr": 0.01}, scheduler="ReduceLROnPlateau",
                      scheduler_kwargs={"patience": 0, "factor": 0.5, "threshold": 10.0})
    history = trainer.fit(tiny_multimnist).history
    assert [round(h["lr"], 6) for h in history] == [0.005, 0.0025]
