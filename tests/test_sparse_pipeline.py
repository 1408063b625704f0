"""End to end on the tiny real MultiMNIST: MDMTN + MWC/ALM + GrOWL prox → tying → retraining."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from moomtl.cli import app
from moomtl.config import parse_config
from moomtl.experiments.sparse import run_sparse


def _cfg(tmp_path, n_train=2000, **sparsity):
    return parse_config({
        "data": {"dataset": "multimnist", "source": "mnist5k", "n_train": n_train, "n_val": 300, "n_test": 500,
                 "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "mdmtn_multimnist"},
        "method": {"name": "mwc_alm", "preference": [0.5, 0.5]},
        "optimizer": {"name": "Adam", "lr": 0.002},
        "train": {"batch_size": 64, "progress": False},
        "sparsity": {"search_epochs": 2, "warmup_epochs": 1, "retrain_epochs": 1, **sparsity},
        "out": str(tmp_path / "sparse"),
    })


@pytest.mark.slow  # ~40 % of the default suite's time; the fast pipeline check is the test below
def test_mdmtn_growl_reaches_group_sparsity_above_chance(tmp_path):
    cfg = _cfg(tmp_path, k0=[0.0, 0.01], strength=1000.0)
    report = run_sparse(cfg)
    dense, sparse = report["rows"]
    assert dense["sparsity"]["group_sparsity"] == 0.0
    assert sparse["sparsity"]["group_sparsity"] >= 20.0
    for t in ("left", "right"):
        assert sparse["final"][f"test/{t}/acc"] > 0.2  # chance is 0.1
    assert sparse["compressed_parameters"] < sparse["dense_parameters"]
    out = tmp_path / "sparse"
    for name in ("results.json", "results.md", "sparsity_front.png", "sparsity_parallel.png"):
        assert (out / name).stat().st_size > 0
    # Retraining honours the tying plan: rows pruned by the search stay zero, and tied rows are shared.
    assert sparse["sparsity"]["zero_rows"] >= sparse["sparsity_after_search"]["zero_rows"]
    assert sparse["sparsity"]["unique_rows"] <= sparse["sparsity"]["total_rows"] - sparse["sparsity"]["zero_rows"]
    assert torch.load(out / "k0_0.01" / "retrain" / "model.pt")  # the retrained weights were written
    # Rerunning skips the finished points (resume at point granularity).
    mtime = (out / "k0_0.01" / "result.json").stat().st_mtime_ns
    again = run_sparse(cfg)
    assert (out / "k0_0.01" / "result.json").stat().st_mtime_ns == mtime
    assert json.loads((out / "results.json").read_text())["hypervolume"] == again["hypervolume"]


def test_sparse_pipeline_end_to_end_small(tmp_path):
    """The whole pipeline on 256 pairs (search with prox → tying → retraining): every output written, the
    prox zeroes rows, the compressed model is a state dict loadable with weights_only, a rerun resumes."""
    cfg = _cfg(tmp_path, n_train=256, k0=[0.01], strength=20000.0, search_epochs=1, warmup_epochs=0)
    report = run_sparse(cfg)
    (row,) = report["rows"]
    assert row["sparsity_after_search"]["zero_rows"] > 0
    assert row["compressed_parameters"] < row["dense_parameters"]
    point = tmp_path / "sparse" / "k0_0.01"
    state = torch.load(point / "compressed_model.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert sum(v.numel() for v in state.values()) == row["compressed_parameters"]
    mtime = (point / "result.json").stat().st_mtime_ns
    run_sparse(cfg)
    assert (point / "result.json").stat().st_mtime_ns == mtime


def test_sparse_cli_rejects_wrong_method(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method:\n  name: uniform\n")
    result = CliRunner().invoke(app, ["sparse", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "mwc_alm" in result.output
