"""``train.tensorboard``: event files with per-task losses/metrics, method weights and LR; a missing
optional package is one config line. Reference: TensorBoard's own event reader."""

from __future__ import annotations

import builtins

import pytest
import torch

from moomtl.methods import build_method
from moomtl.models.lenet import hps_lenet
from moomtl.train.trainer import Trainer


def test_event_files_hold_losses_metrics_weights_and_lr(tiny_multimnist, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from moomtl.train.tensorboard import TensorBoardLogger

    torch.manual_seed(0)
    logger = TensorBoardLogger(tmp_path / "tb")
    Trainer(hps_lenet(), build_method("mgda_ub"), epochs=2, batch_size=256, callbacks=[logger]).fit(tiny_multimnist)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/left/loss", "val/right/acc", "test/left/loss", "train/weight/left", "lr"):
        assert tag in tags, (tag, sorted(tags))
    steps = [e.step for e in acc.Scalars("test/left/loss")]
    assert steps == [1, 2]


def test_missing_tensorboard_is_one_config_line(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from moomtl.cli import app

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {dataset: multimnist, source: mnist5k, n_train: 32, n_val: 0, n_test: 8}\n"
                   f"train: {{epochs: 1, tensorboard: true, progress: false}}\nout: {tmp_path / 'run'}\n")
    result = CliRunner().invoke(app, ["train", "-c", str(cfg)])
    assert result.exit_code == 2
    assert "pip install 'moomtl[tensorboard]'" in result.output
    assert not (tmp_path / "run" / "result.json").exists()
