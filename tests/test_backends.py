"""Sweep backends: Ray tasks train exactly what the in-process backend trains, resume and refuse alike;
bad backend settings are one clear line."""

from __future__ import annotations

import builtins
import json

import pytest
from tests.test_sweep import _cfg
from typer.testing import CliRunner

from moomtl.cli import app
from moomtl.config import ConfigError
from moomtl.experiments.backends import check_backend
from moomtl.experiments.report import run_preference_sweep


def test_backend_settings_are_checked():
    with pytest.raises(ConfigError, match="--backend must be one of process, ray"):
        check_backend("slurm", None)
    with pytest.raises(ConfigError, match="--address .* needs --backend ray"):
        check_backend("process", "auto")
    res = CliRunner().invoke(app, ["sweep", "--backend", "dask", "--out", "unused"])
    assert res.exit_code == 2 and "--backend must be one of" in res.output


def test_missing_ray_is_one_line(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"needs the ray package: pip install 'moomtl\[ray\]'"):
        check_backend("ray", None)


@pytest.mark.slow
def test_ray_sweep_equals_the_in_process_sweep_and_resumes(tmp_path):
    pytest.importorskip("ray")
    local = run_preference_sweep(_cfg(tmp_path, "local", {"name": "linear", "weights": [0.5, 0.5]}), n_preferences=2)
    cfg = _cfg(tmp_path, "ray", {"name": "linear", "weights": [0.5, 0.5]})
    via_ray = run_preference_sweep(cfg, n_preferences=2, workers=2, backend="ray")
    for a, b in zip(local.rows, via_ray.rows, strict=True):
        assert a["label"] == b["label"] and a["left/loss"] == pytest.approx(b["left/loss"], rel=1e-6)
    assert via_ray.hypervolume == pytest.approx(local.hypervolume, rel=1e-6)
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*/result.json")}
    again = run_preference_sweep(cfg, n_preferences=2, backend="ray")  # everything finished: nothing retrains
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp and len(again.rows) == 2
    cfg.optimizer["lr"] = 0.5
    with pytest.raises(ConfigError, match="optimizer.lr"):
        run_preference_sweep(cfg, n_preferences=2, backend="ray")
    assert json.loads((tmp_path / "ray" / "results.json").read_text())["rows"]
