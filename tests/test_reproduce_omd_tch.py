"""Reproduce entry ``zhao2024-omd-tch``: its measures against direct formulas, the rotation tasks against
numpy's rot90, the epoch-by-epoch trajectory runs (resume), and the whole entry on tiny settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from moomtl.data import rotations as rot
from moomtl.experiments.reproduce import _omd_metrics as om
from moomtl.experiments.reproduce import available_entries, reproduce
from moomtl.experiments.reproduce import zhao2024_omd_tch as entry
from moomtl.models.rotation_mlp import RotationMLP

ENTRY = "zhao2024-omd-tch"


def test_measures_against_direct_formulas() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        loss, pref = rng.uniform(0.1, 2.0, 3), rng.dirichlet(np.ones(3))
        w = pref * loss
        assert om.tch_value(loss, pref) == pytest.approx(w.max())
        assert om.ray_gap(loss, pref) == pytest.approx(1 - w.min() / w.max())
    # on the ray: L ∝ 1/λ
    assert om.ray_gap(1 / np.array([0.2, 0.3, 0.5]), [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-12)
    # the authors' accuracy parity: np.sqrt(np.var(accuracys) * 10000) (tables.ipynb)
    accs = rng.uniform(0.8, 1.0, 3)
    assert om.accuracy_parity(accs) == pytest.approx(math.sqrt(np.var(accs) * 10000))
    # roughness: sd (ddof 1) of the differences of the second half, by hand
    v = [9.0, 7.0, 5.0, 4.0, 4.5, 3.5, 4.0]
    d = np.diff(v[3:])
    assert om.roughness(v) == pytest.approx(math.sqrt(((d - d.mean()) ** 2).sum() / (len(d) - 1)))
    assert om.roughness(np.linspace(5, 1, 10)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        om.roughness([1.0, 2.0, 3.0, 4.0])
    prefs = [[0.25, 0.75], [0.5, 0.5], [0.75, 0.25]]
    assert om.follows_preferences(prefs, [[3, 1], [2, 2], [1, 3]])
    assert not om.follows_preferences(prefs, [[3, 1], [1, 3], [2, 2]])
    pool = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [3.0, 0.5]])
    assert om.non_dominated_fraction(pool[[0, 2]], pool) == 0.5
    assert om.non_dominated_fraction(pool[[1, 3]], pool) == 1.0


def test_rotation_tasks_are_the_same_images_turned() -> None:
    splits = rot.build_rotation_tasks((0, 1, 2), "mnist5k", seed=1, n_train=90, n_test=40)
    assert splits.task_names == ("rot0", "rot90", "rot180")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 40)
    for part in (splits.train, splits.val, splits.test):
        x = part.x.numpy()
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 28, 28)
        for t, k in enumerate((0, 1, 2)):
            np.testing.assert_array_equal(x[:, t], np.rot90(x[:, 0], k=k, axes=(1, 2)))  # numpy's rotation
        y = part.y.numpy()
        assert (y == y[:, :1]).all() and y.min() >= 0 and y.max() <= 9
    assert len(np.unique(splits.train.y[:, 0].numpy())) == 10  # a real, class-mixed subset
    # no image is in two splits
    flat = {s: {bytes(r) for r in getattr(splits, s).x[:, 0].reshape(-1, 784).numpy()} for s in ("train", "test")}
    assert not flat["train"] & flat["test"]


def test_rotation_mlp_is_one_network_for_every_task() -> None:
    torch.manual_seed(0)
    model = RotationMLP(("a", "b"), 10, hidden=16)
    x = torch.randn(5, 2, 28, 28)
    out = model(x)
    ref = torch.nn.Sequential(torch.nn.Flatten(), model.fc1, torch.nn.ReLU(), model.fc2)
    for t, name in enumerate(("a", "b")):
        assert (out[name] - ref(x[:, t])).abs().max() < 1e-6  # the same weights on each task's own image
    assert model.task_specific_parameters() == [] and len(model.shared_parameters()) == 4
    with pytest.raises(ValueError, match="one channel per task"):
        model(torch.zeros(5, 3, 28, 28))


@pytest.mark.slow
def test_trajectory_resumes_epoch_by_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import moomtl.experiments.run as run_mod

    trained: list[int] = []
    real = run_mod._train_in

    def counting(cfg, *args, **kwargs):  # type: ignore[no-untyped-def]
        trained.append(cfg.train.epochs)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(run_mod, "_train_in", counting)
    splits = rot.build_rotation_tasks((0, 2), "mnist5k", seed=0, n_train=64, n_test=32)
    sizes = entry.Sizes(epochs_a=1, epochs_b=3, n_train=64, n_test=32, batch_size=32)
    spec = next(m for m in entry.METHODS if m.key == "adaomd")
    record = tmp_path / "traj.json"
    cfg = entry._config(spec, [0.5, 0.5], 0, sizes, 3, tmp_path / "run", "mnist5k")
    summary, rec = entry.train_trajectory(cfg, splits, record)
    assert trained == [1, 2, 3] and [p["epoch"] for p in rec] == [1, 2, 3]
    assert all(len(p["output"]) == 2 and all(v > 0 and math.isfinite(v) for v in p["output"]) for p in rec)
    assert json.loads(record.read_text()) == rec
    # the same again: nothing trains; one epoch more: only that epoch
    again, rec2 = entry.train_trajectory(cfg, splits, record)
    assert trained == [1, 2, 3] and rec2 == rec and again["final"] == summary["final"]
    cfg.train.epochs = 4
    _, rec3 = entry.train_trajectory(cfg, splits, record)
    assert trained == [1, 2, 3, 4] and rec3[:3] == rec and len(rec3) == 4


@pytest.mark.slow
def test_entry_on_tiny_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import moomtl.experiments.run as run_mod

    assert ENTRY in available_entries()
    e = available_entries()[ENTRY]
    assert "measured, 2 CPU cores" in e.quick_time and "measured, 2 CPU cores" in e.full_time
    monkeypatch.setitem(entry.SIZES, "quick", entry.Sizes(epochs_a=1, epochs_b=6, n_train=120, n_test=60))
    res, md = reproduce(ENTRY, tmp_path / "r", quick=True, seeds=2)
    items = [r.item for r in res.rows]
    for spec in entry.METHODS:
        assert any(i.startswith(f"(a) {spec.label}") for i in items)
        assert any(i.startswith(f"(b) {spec.label}") for i in items)
    assert any("adaptive vs uniform-average" in i for i in items) and any("stability" in i for i in items)
    rows = {r.item: r for r in res.rows}
    ada_b = next(r for i, r in rows.items() if i.startswith("(b) AdaOMD-TCH"))
    assert "92.58 ± 0.18" in ada_b.paper and "0.334" in ada_b.paper  # the authors' MNIST-rotation numbers
    assert "92.58 ± 0.27" in next(r for i, r in rows.items() if i.startswith("(b) TCH")).paper
    for r in res.rows:
        for name, s in r.stats.items():
            assert s.n == 2 and math.isfinite(s.mean) and math.isfinite(s.sd) and s.sd >= 0, (r.item, name)
        if "avg_acc" in r.stats:
            assert 0 <= r.stats["avg_acc"].mean <= 100 and r.stats["agnostic_loss"].mean > 0
        if "ray_gap" in r.stats:
            assert 0 <= r.stats["ray_gap"].mean <= 1 and 0 <= r.stats["non_dominated"].mean <= 1
    assert any("5k MNIST subset" in d for d in res.deviations) and any("epochs" in d for d in res.deviations)
    assert (tmp_path / "r" / "omd_tch_preferences.png").stat().st_size > 0
    assert (tmp_path / "r" / "omd_tch_trajectories.png").stat().st_size > 0
    data = json.loads((tmp_path / "r" / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["reproduce"] == ENTRY and len(data["rows"]) == len(res.rows)
    # rerun: every run is finished, nothing trains, same numbers
    trained: list[str] = []
    real = run_mod._train_in
    monkeypatch.setattr(run_mod, "_train_in", lambda cfg, *a, **k: trained.append(cfg.out) or real(cfg, *a, **k))
    res2, _ = reproduce(ENTRY, tmp_path / "r", quick=True, seeds=2)
    assert trained == []
    assert [r.ours for r in res2.rows] == [r.ours for r in res.rows]
