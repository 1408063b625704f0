"""`moomtl reproduce sener2018-celeba` / `sener2018-cityscapes` on the tiny CelebA and Cityscapes that
tests/test_celeba.py and tests/test_cityscapes.py fabricate in the official formats. The entries'
sizes are patched to tiny settings and their models to small registered test models (the real
ResNet-18s take minutes on 2 CPU cores); the grid, the resume, the rows and the paper column are the
entries' own."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from torch import nn
from typer.testing import CliRunner

import moomtl.experiments.reproduce.sener2018_celeba as celeba_entry
import moomtl.experiments.reproduce.sener2018_cityscapes as cs_entry
from moomtl.cli import app
from moomtl.config import ConfigError
from moomtl.experiments.reproduce import available_entries, reproduce
from moomtl.models import registry
from moomtl.models.base import HardParameterSharing
from moomtl.models.dense import dense_hps
from moomtl.train import trainer as trainer_mod
from test_celeba import make_celeba
from test_cityscapes import make_cityscapes

METHOD_LABELS = ("single task", "uniform scaling", "Kendall et al.", "GradNorm", "MGDA-UB")


def _tiny_classifier(task_names, n_classes, input_shape=None):
    channels = int(input_shape[0]) if input_shape else 3
    encoder = nn.Sequential(nn.Conv2d(channels, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return HardParameterSharing(encoder, {t: nn.Linear(4, max(int(c), 2)) for t, c in zip(task_names, n_classes,
                                                                                           strict=True)})


def _tiny_dense(task_names, n_classes, input_shape=None):
    return dense_hps(task_names, [int(c) for c in n_classes], tuple(input_shape), widths=(4, 4, 4, 4), hidden=4,
                     num_blocks=(1, 1, 1, 1))


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(registry.MODELS, "test_tiny_classifier", (_tiny_classifier, "test only"))
    monkeypatch.setitem(registry.MODELS, "test_tiny_dense", (_tiny_dense, "test only"))
    monkeypatch.setenv("MOOMTL_CACHE", str(tmp_path / "cache"))


def _count_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real_fit = trainer_mod.Trainer.fit

    def fit(self, *args, **kwargs):
        calls.append(1)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(trainer_mod.Trainer, "fit", fit)
    return calls


def _numbers(cell: str) -> dict[str, tuple[float, float] | None]:
    """``{method label: (mean, sd) or None}`` from an ``ours`` cell ``label a ± b · ...``."""
    out: dict[str, tuple[float, float] | None] = {}
    for part in cell.split(" · "):
        label = next(lab for lab in METHOD_LABELS if part.startswith(lab + " "))
        rest = part[len(label) + 1:]
        out[label] = None if rest == "—" else tuple(float(v) for v in rest.split(" ± "))
    return out


def test_both_entries_are_registered_and_need_a_root(tmp_path: Path) -> None:
    entries = available_entries()
    for eid in ("sener2018-celeba", "sener2018-cityscapes"):
        e = entries[eid]
        assert e.needs_root and "seeds 002/003" in e.paper and "measured" in e.quick_time
        assert "not measured here" in e.full_time
        res = CliRunner().invoke(app, ["reproduce", eid, "--quick", "--out", str(tmp_path / eid)])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "--root" in res.output


def test_celeba_entry_rows_paper_column_and_resume(tiny_models, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "celeba"
    make_celeba(root, "flat")
    attrs = ("Smiling", "Young")
    monkeypatch.setattr(celeba_entry, "QUICK", dataclasses.replace(
        celeba_entry.QUICK, image_size=16, model="test_tiny_classifier", batch_size=4, attributes=attrs,
        single_tasks=("Smiling",)))
    fits = _count_fits(monkeypatch)
    out = tmp_path / "out"
    result, md = reproduce("sener2018-celeba", out, quick=True, seeds=1, root=root)
    assert len(fits) == 1 + 4  # 1 single-task run + 4 multi-task methods
    rows = {r.item: r for r in result.rows}
    for a in attrs:
        row = rows[f"{a}: test error %"]
        vals = _numbers(row.ours)
        assert (vals["single task"] is None) == (a == "Young")
        for v in vals.values():
            assert v is None or (0.0 <= v[0] <= 100.0 and math.isfinite(v[1]))
        assert row.stats["mgda_ub"].n == 1
        # 3 test images: the error is a multiple of 100/3
        k = row.stats["uniform"].mean * 3 / 100
        assert abs(k - round(k)) < 1e-9
    avg = rows["average test error % over the 2 attributes"]
    assert avg.paper.startswith("single task 8.77 · uniform scaling 9.62 · Kendall et al. 9.53 · GradNorm 8.44 · "
                                "MGDA-UB 8.25")
    assert "single" not in avg.stats and set(avg.stats) == {"uniform", "kendall", "gradnorm", "mgda_ub"}
    # the average is the mean of the per-attribute errors
    assert avg.stats["kendall"].mean == pytest.approx(sum(rows[f"{a}: test error %"].stats["kendall"].mean
                                                          for a in attrs) / 2)
    assert isinstance(rows["MGDA-UB has the lowest average error of the methods compared"].agrees, bool)
    dev = " ".join(result.deviations)
    for phrase in ("16×16", "1 epoch(s) (paper: 100)", "2 of the 40 attributes", "single-task baseline trained for 1",
                   "Adam, lr 5e-4", "Table 5"):
        assert phrase in dev
    data = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["reproduce"] == "sener2018-celeba" and data["settings"]["runs"] == 5
    assert (out / "quick" / "mgda_ub" / "seed0" / "result.json").is_file() and "| item | paper | ours | agrees |" in md
    # rerun: every run is finished, nothing trains, same numbers
    again, _ = reproduce("sener2018-celeba", out, quick=True, seeds=1, root=root)
    assert len(fits) == 5
    assert [r.ours for r in again.rows] == [r.ours for r in result.rows]
    # other settings into the same folder: refused (one ConfigError) before anything trains
    monkeypatch.setattr(celeba_entry, "QUICK", dataclasses.replace(celeba_entry.QUICK, image_size=12))
    with pytest.raises(ConfigError, match=r"single_Smiling/seed0 holds a run with other settings .*another --out"):
        reproduce("sener2018-celeba", out, quick=True, seeds=1, root=root)
    assert len(fits) == 5


def test_cityscapes_entry_rows_paper_column_and_resume(tiny_models, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cs"
    make_cityscapes(root)
    monkeypatch.setattr(cs_entry, "QUICK", dataclasses.replace(
        cs_entry.QUICK, image_size=(16, 32), model="test_tiny_dense", batch_size=2))
    fits = _count_fits(monkeypatch)
    out = tmp_path / "out"
    result, _ = reproduce("sener2018-cityscapes", out, quick=True, seeds=1, root=root)
    assert len(fits) == 7  # 3 single-task runs + 4 multi-task methods
    rows = {r.item: r for r in result.rows}
    seg, inst, disp = (rows[k] for k in ("segmentation mIoU %", "instance error (px; ours: masked L1)",
                                         "disparity error (px; ours: masked L1)"))
    assert seg.paper == "single task — · uniform scaling — · Kendall et al. — · GradNorm — · MGDA-UB 66.63"
    assert inst.paper.endswith("MGDA-UB 10.25") and disp.paper.endswith("MGDA-UB 2.54")
    for row, hi in ((seg, 100.0), (inst, 1e4), (disp, 300.0)):  # disparity ≤ 65535/256 px
        vals = _numbers(row.ours)
        assert set(vals) == set(METHOD_LABELS) and all(v is not None and 0.0 <= v[0] <= hi for v in vals.values())
        assert all(s.n == 1 and s.sd == 0.0 for s in row.stats.values())
    assert {r.item for r in result.rows if r.agrees is not None} == {
        "MGDA-UB is best of the five methods on all three tasks",
        "MGDA-UB beats single task on every task (the tasks cooperate)"}
    dev = " ".join(result.deviations)
    assert "held-out validation frames (paper: 275) (the root's official train has 6 frames)" in dev
    assert "16×32" in dev and "ResNet-50" in dev and "MSE" in dev
    assert result.settings["sizes"]["n_val_used"] == 1
    assert (out / "quick" / "single_depth" / "seed0" / "result.json").is_file()
    again, _ = reproduce("sener2018-cityscapes", out, quick=True, seeds=1, root=root)
    assert len(fits) == 7 and [r.ours for r in again.rows] == [r.ours for r in result.rows]
