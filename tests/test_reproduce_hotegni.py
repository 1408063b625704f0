"""`moomtl reproduce hotegni2023-multimnist` / `hotegni2023-cifar10mnist` on tiny plans: the rows, the
paper column (the authors' parameter counts and k0 grid), finite in-range measurements, deviations, plots,
and that a rerun skips every finished (model, seed, k0) run."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moomtl.cli import app
from moomtl.data.cifar import TEST_BATCH, TRAIN_BATCHES
from moomtl.experiments.reproduce import _hotegni as h
from moomtl.experiments.reproduce import available_entries, hotegni2023_cifar10mnist, hotegni2023_multimnist
from moomtl.experiments.reproduce.base import reproduce

K0 = (0.0, 0.05)


def _tiny(plan: h.Plan, retrain_epochs: int = 1, **data) -> h.Plan:
    # one search epoch with the prox from the first step; strength high enough to prune in ~2 steps
    return h.Plan(models=plan.models, k0=K0, data={**plan.data, **data}, search_epochs=1, warmup_epochs=0,
                  retrain_epochs=retrain_epochs, strength=20000.0, batch_size=64)


@pytest.fixture
def fast_sparse_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-(model, seed) `moomtl sparse` reports draw two figures each; the entry's rows and its own
    plot do not use them, so the tiny runs skip drawing them (test time only)."""
    import moomtl.experiments.sparse as sparse
    import moomtl.pareto.plots as plots

    monkeypatch.setattr(sparse, "_plot_projections", lambda *a, **k: None)
    monkeypatch.setattr(plots, "plot_parallel_coordinates", lambda *a, **k: None)


def _k0_results(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(out.glob("quick/*/seed_*/k0_*/result.json"))}


def _check_result(out: Path, result, md: str, entry: str, tasks: tuple[str, str], params: tuple[int, int],
                  seeds: int) -> None:
    items = [r.item for r in result.rows]
    assert items[0] == "dense parameter count (MDMTN, HPS)"
    assert f"{params[0]:,}" in result.rows[0].paper and f"{params[1]:,}" in result.rows[0].paper
    assert result.rows[0].agrees is True  # ours = authors − 1 + 2T (MDMTN) and authors − 1 (HPS)
    for label in ("MDMTN", "HPS"):
        for k0 in K0:
            (row,) = [r for r in result.rows if r.item.split(" (")[0] == f"{label}, k0 = {k0:g}"]
            assert "0, 0.1, 0.01, 0.001, 0.0001" in row.paper  # the authors' k0 grid
            for t in tasks:
                s = row.stats[f"acc_{t}"]
                assert s.n == seeds and 0.0 <= s.mean <= 100.0 and math.isfinite(s.sd)
            g = row.stats["group_sparsity"]
            assert 0.0 <= g.mean <= 100.0 and (g.mean == 0.0) == (k0 == 0.0)
    claims = [r for r in result.rows if r.paper.startswith(("adaptive", "MDMTN's", "the task-specific", "a larger"))]
    assert len(claims) == 4 and all(isinstance(r.agrees, bool) for r in claims)
    assert len(items) == 1 + 2 * len(K0) + 4
    assert any("5k MNIST subset" in d for d in result.deviations)
    assert any("search 1 epochs" in d and "10 × 3 epochs" in d for d in result.deviations)
    assert any(f"{seeds} seed(s)" in d for d in result.deviations)
    assert any("single-task, MGDA" in d for d in result.deviations)
    data = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["reproduce"] == entry and data["seeds"] == seeds and len(data["rows"]) == len(items)
    assert (out / "sparsity_front.png").stat().st_size > 0
    assert "| item | paper | ours | agrees |" in md and "Deviations:" in md


def _run_multimnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeds: int, retrain_epochs: int) -> None:
    plan = _tiny(hotegni2023_multimnist.QUICK, retrain_epochs=retrain_epochs, n_train=96, n_val=32, n_test=64,
                 cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(hotegni2023_multimnist, "QUICK", plan)
    out = tmp_path / "r"
    result, md = reproduce("hotegni2023-multimnist", out, quick=True, seeds=seeds)
    _check_result(out, result, md, "hotegni2023-multimnist", ("left", "right"), (311_491, 22_351), seeds=seeds)
    first = _k0_results(out)
    assert len(first) == 2 * seeds * len(K0)  # models × seeds × k0, each in its own folder
    again, _ = reproduce("hotegni2023-multimnist", out, quick=True, seeds=seeds)
    assert _k0_results(out) == first  # nothing retrained
    assert [r.ours for r in again.rows] == [r.ours for r in result.rows]


def test_multimnist_entry_tiny_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fast_sparse_reports: None) -> None:
    _run_multimnist(tmp_path, monkeypatch, seeds=1, retrain_epochs=0)


@pytest.mark.slow  # ~15 s: twice the pipelines of the test above, with retraining
def test_multimnist_entry_two_seeds_with_retraining(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    fast_sparse_reports: None) -> None:
    _run_multimnist(tmp_path, monkeypatch, seeds=2, retrain_epochs=1)


def _fake_cifar(folder: Path, n: int) -> None:
    """CIFAR-10 batches in the official python format (pickled dicts with bytes keys), random pixels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.slow  # ~10 s: four more tiny pipelines of the larger Cifar10Mnist models
def test_cifar10mnist_entry_on_fabricated_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fast_sparse_reports: None) -> None:
    _fake_cifar(tmp_path / "cifar" / "cifar-10-batches-py", n=30)
    plan = _tiny(hotegni2023_cifar10mnist.QUICK, n_train=96, n_val=24, n_test=24, cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(hotegni2023_cifar10mnist, "QUICK", plan)
    out = tmp_path / "r"
    result, md = reproduce("hotegni2023-cifar10mnist", out, quick=True, seeds=1, root=tmp_path / "cifar")
    _check_result(out, result, md, "hotegni2023-cifar10mnist", ("cifar", "digit"), (505_525, 42_741), seeds=1)
    assert "Cifar10Mnist" in result.notes[0] and str(tmp_path) not in md  # no local paths in results.md
    first = _k0_results(out)
    assert len(first) == 2 * len(K0)
    reproduce("hotegni2023-cifar10mnist", out, quick=True, seeds=1, root=tmp_path / "cifar")
    assert _k0_results(out) == first


def test_cifar10mnist_entry_needs_root(tmp_path: Path) -> None:
    entry = available_entries()["hotegni2023-cifar10mnist"]
    assert entry.needs_root and "CIFAR-10" in entry.data
    res = CliRunner().invoke(app, ["reproduce", "hotegni2023-cifar10mnist", "--quick", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "--root" in res.output
    assert not (tmp_path / "o" / "quick").exists()


def test_list_lines_state_measured_times() -> None:
    entries = available_entries()
    for name in ("hotegni2023-multimnist", "hotegni2023-cifar10mnist"):
        e = entries[name]
        assert "measured, 2 CPU cores" in e.quick_time and "measured, 2 CPU cores" in e.full_time


def test_claims_on_constructed_results() -> None:
    """The claim checks against hand-made summaries whose answers are known."""
    def summary(k0: float, acc: float, sparsity: float, dense: int) -> dict:
        return {"k0": k0, "final": {"test/a/acc": acc, "test/b/acc": acc},
                "sparsity": {"group_sparsity": sparsity, "parameter_sparsity": sparsity},
                "compressed_parameters": dense, "dense_parameters": dense}

    plan = h.Plan(models=("m", "p"), k0=(0.0, 0.01, 0.02), data={}, search_epochs=1, warmup_epochs=0,
                  retrain_epochs=0)
    runs = {
        # MDMTN: 2 points lost at 40 % sparsity, collapses at 90 %
        "m": [[summary(0, 0.90, 0, 13), summary(0.01, 0.88, 40, 13), summary(0.02, 0.50, 90, 13)]] * 2,
        # HPS: dense 1.5 points better, sparsity only at a 10-point loss
        "p": [[summary(0, 0.915, 0, 9), summary(0.01, 0.91, 0, 9), summary(0.02, 0.81, 50, 9)]] * 2,
    }
    rows, table = h.paper_rows(runs, plan, ("a", "b"), {"m": "MDMTN", "p": "HPS"}, {"m": 10, "p": 10})
    by = {r.item: r for r in rows}
    assert by["dense parameter count (MDMTN, HPS)"].agrees is True  # 10 − 1 + 2·2 = 13 and 10 − 1 = 9
    assert by["MDMTN: sparsify during training without hurting accuracy"].agrees is True
    assert by["MDMTN vs HPS, dense (k0 = 0)"].agrees is False  # 1.5 points lower > 1
    assert by["MDMTN vs HPS, sparsity at the same accuracy budget"].agrees is True  # 40 % vs 0 %
    assert by["k0 traces the sparsity–accuracy front"].agrees is True
    assert table["m"][1].group_sparsity.mean == 40.0 and table["m"][1].mean_acc.sd == 0.0
    assert h.best_within_budget(table["p"]) is table["p"][1]  # 0.5 points lost, 0 % sparse
