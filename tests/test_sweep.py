"""Preference sweeps (resume, parallel workers) and the comparison report, on tiny real MultiMNIST."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import moomtl.experiments.sweep as sweep_mod
from moomtl.cli import app
from moomtl.config import ConfigError, parse_config
from moomtl.experiments.report import compare_sweeps, run_preference_sweep


def _cfg(tmp_path, out, method):
    return parse_config({
        "data": {"dataset": "multimnist", "source": "mnist5k", "n_train": 600, "n_val": 100, "n_test": 200,
                 "cache_dir": str(tmp_path / "cache")},
        "method": method,
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 1, "batch_size": 64, "progress": False},
        "out": str(tmp_path / out),
    })


def test_sweep_resume_trains_only_missing_points(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "lin", {"name": "linear", "weights": [0.5, 0.5]})
    trained = []
    real = sweep_mod.run_experiment

    def killed_after_two(point_cfg, resume=False):
        if len(trained) == 2:
            raise KeyboardInterrupt  # the sweep is killed while the third point starts
        trained.append(point_cfg.out)
        return real(point_cfg, resume=resume)

    monkeypatch.setattr(sweep_mod, "run_experiment", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_preference_sweep(cfg, n_preferences=4)
    assert len(trained) == 2 and not (tmp_path / "lin" / "results.json").exists()

    rerun = []
    monkeypatch.setattr(sweep_mod, "run_experiment", lambda c, resume=False: rerun.append(c.out) or real(c, resume))
    report = run_preference_sweep(cfg, n_preferences=4)
    assert sorted(rerun) == sorted(str(tmp_path / "lin" / name) for name in ("linear_0.6667-0.3333", "linear_1-0"))
    assert len(report.rows) == 4 and report.hypervolume >= 0
    prefs = [r["preference"] for r in report.rows]
    assert prefs[0] == [0.0, 1.0] and prefs[-1] == [1.0, 0.0]
    saved = json.loads((tmp_path / "lin" / "results.json").read_text())
    assert [r["label"] for r in saved["rows"]] == [r["label"] for r in report.rows]
    assert (tmp_path / "lin" / "pareto.png").stat().st_size > 0


def test_parallel_sweep_and_compare(tmp_path):
    lin = run_preference_sweep(_cfg(tmp_path, "lin", {"name": "linear", "weights": [0.5, 0.5]}), n_preferences=2)
    tch = run_preference_sweep(_cfg(tmp_path, "tch", {"name": "tch"}), n_preferences=2, workers=2)
    assert all(r["method"] == "tch" for r in tch.rows) and len(tch.rows) == 2
    md = compare_sweeps([tmp_path / "lin", tmp_path / "tch"], tmp_path / "cmp")
    assert "| lin | linear | 2 |" in md and "| tch | tch | 2 |" in md
    cmp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert set(cmp["hypervolume"]) == {"lin", "tch"}
    assert cmp["hypervolume_stats"]["lin"] == {"mean": cmp["hypervolume"]["lin"], "sd": None, "n": 1, "ci95": None}
    assert "the interval of lin and tch is undefined (1 seed)" in md  # one seed: no 95 % statement
    saved = json.loads((tmp_path / "tch" / "results.json").read_text())
    assert cmp["degenerate_front"]["tch"] == saved["degenerate_front"] == saved["front_conflict"]["degenerate"]
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0
    assert lin.hypervolume >= 0


def test_resume_reuses_matching_points_and_refuses_changed_settings(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "lin", {"name": "linear", "weights": [0.5, 0.5]})
    run_preference_sweep(cfg, n_preferences=2)  # (0, 1) and (1, 0)
    trained = []
    real = sweep_mod.run_experiment
    monkeypatch.setattr(sweep_mod, "run_experiment", lambda c, resume=False: trained.append(c.out) or real(c, resume))
    report = run_preference_sweep(cfg, n_preferences=3)  # adds (0.5, 0.5) only
    assert trained == [str(tmp_path / "lin" / "linear_0.5-0.5")] and len(report.rows) == 3
    cfg.optimizer["lr"] = 0.5  # other settings: refused (only more train.epochs may resume)
    with pytest.raises(ConfigError, match=r"holds a run with other settings \(optimizer.lr: 0.05 → 0.5\)"):
        run_preference_sweep(cfg, n_preferences=3)


def test_sweep_reports_igd_to_a_reference_front(tmp_path):
    cfg = _cfg(tmp_path, "lin", {"name": "linear", "weights": [0.5, 0.5]})
    ref = tmp_path / "ref.csv"
    ref.write_text("0.0,0.0\n")  # the ideal corner: IGD = distance of the closest point to the origin
    report = run_preference_sweep(cfg, n_preferences=2, reference_front=ref)
    saved = json.loads((tmp_path / "lin" / "results.json").read_text())
    losses = np.array([[r["left/loss"], r["right/loss"]] for r in report.rows])
    assert saved["igd"] == pytest.approx(np.linalg.norm(losses, axis=1).min())
    assert saved["igd_plus"] == pytest.approx(saved["igd"])  # every point is dominated by the origin
    assert "IGD+" in report.markdown
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n")
    with pytest.raises(ConfigError, match="one column per task"):
        run_preference_sweep(cfg, n_preferences=2, reference_front=bad)


def test_sweep_rejects_methods_without_preference(tmp_path):
    with pytest.raises(ConfigError, match="takes no preference"):
        run_preference_sweep(_cfg(tmp_path, "u", {"name": "uniform"}), n_preferences=2)


def test_compare_cli_missing_results_is_clear(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "results.json not found" in result.output


def test_epo_sweep_moves_the_default_lattice_inwards(tmp_path):
    """EPO refuses zero preference entries, so a default lattice (corners (0, 1), (1, 0)) would stop the sweep
    with a config error; it is moved inwards instead (corners (0.01, 0.99), (0.99, 0.01)). Preferences given
    explicitly are used as given (a zero entry stays a config error)."""
    from moomtl.pareto import inward, lattice_for

    report = run_preference_sweep(_cfg(tmp_path, "epo", {"name": "epo"}), n_preferences=2)
    got = sorted(tuple(r["preference"]) for r in report.rows)
    assert got == sorted(tuple(p) for p in inward(lattice_for(2, 2)).round(6).tolist())
    assert got[0] == pytest.approx((0.01, 0.99))
    with pytest.raises(ConfigError, match="must be > 0"):
        run_preference_sweep(_cfg(tmp_path, "epo2", {"name": "epo"}), preferences=np.array([[0.0, 1.0]]))
