"""`moomtl reproduce sener2018-multimnist` and `sener2018-speed` on tiny settings: rows, the paper's
numbers, finite measured values, deviations, resume; the claim checks against the paper's own table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from moomtl.experiments import run as run_module
from moomtl.experiments.reproduce import _sener_speed as sp
from moomtl.experiments.reproduce import available_entries, reproduce
from moomtl.experiments.reproduce import sener2018_multimnist as mm
from moomtl.experiments.reproduce import sener2018_speed as speed

TINY_MM = mm.Sizes(n_train=256, n_val=64, n_test=128, epochs=1)
TINY_SPEED = speed.Plan(celeba_batch=1, celeba_size=25, celeba_tasks=4, task_counts=(2,), city_batch=1,
                        city_height=16, mm_batch=4, rounds=1, warmup=0)


def _strict_json(path: Path) -> dict:
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_entries_registered_with_measured_times() -> None:
    entries = available_entries()
    for eid in ("sener2018-multimnist", "sener2018-speed"):
        e = entries[eid]
        assert "seeds 002/003" in e.paper and not e.needs_root
        assert "measured" in e.quick_time and "measured" in e.full_time


def test_claim_rows_hold_on_the_papers_own_table() -> None:
    """Reference: the paper's MultiMNIST table (PAPER) satisfies every claim its text draws from it."""
    acc = {m: {t: [v[i]] for i, t in enumerate(mm.TASKS)} for m, v in mm.PAPER.items()}
    rows = mm._rows(acc)
    claims = [r for r in rows if r.agrees is not None]
    assert len(claims) == 4 and all(r.agrees for r in claims)
    # MGDA-UB one point below single task and below uniform on the left digit: two claims fail
    acc["mgda_ub"]["left"] = [96.23]
    by_item = {r.item: r.agrees for r in mm._rows(acc)}
    assert not by_item["MGDA-UB above uniform, Kendall et al. and GradNorm on both tasks"]
    assert not next(v for k, v in by_item.items() if k.startswith("MGDA-UB as good as single task"))
    assert by_item["static scaling below single task"]


def test_multimnist_entry_tiny_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mm, "QUICK", TINY_MM)
    out = tmp_path / "mm"
    result, md = reproduce("sener2018-multimnist", out, quick=True, seeds=1)
    labels = [label for label, _ in mm.METHODS.values()]
    assert [r.item.split(":")[0] for r in result.rows[:5]] == labels
    for row, m in zip(result.rows[:5], mm.METHODS, strict=True):
        assert row.paper.startswith(f"{mm.PAPER[m][0]:.2f} / {mm.PAPER[m][1]:.2f}")
        for t in mm.TASKS:
            s = row.stats[t]
            assert s.n == 1 and 0.0 <= s.mean <= 100.0 and math.isfinite(s.sd)
    assert sum(r.agrees is not None for r in result.rows) == 4
    assert any("5k MNIST" in d for d in result.deviations) and any("epochs: 1" in d for d in result.deviations)
    assert "97.23 / 95.90" in md and (out / "multimnist_accuracy.png").stat().st_size > 0
    assert _strict_json(out / "results.json")["reproduce"] == "sener2018-multimnist"
    assert (out / "single_left" / "seed0" / "result.json").is_file()
    # a second seed: the first seed's six finished runs are not trained again
    trained: list[str] = []
    real = run_module._train_in

    def counting(cfg, *a, **k):  # type: ignore[no-untyped-def]
        trained.append(cfg.out)
        return real(cfg, *a, **k)

    monkeypatch.setattr(run_module, "_train_in", counting)
    result2, _ = reproduce("sener2018-multimnist", out, quick=True, seeds=2)
    assert len(trained) == 6 and all(Path(p).name == "seed1" for p in trained)
    assert result2.rows[0].stats["left"].n == 2
    assert result2.rows[0].stats["left"].mean == pytest.approx(
        (result.rows[0].stats["left"].mean + 100 * _strict_json(out / "single_left" / "seed1" / "result.json")
         ["final"]["test/left/acc"]) / 2)


def test_speed_entry_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "QUICK", TINY_SPEED)
    result, md = reproduce("sener2018-speed", tmp_path / "sp", quick=True, seeds=1)
    items = [r.item for r in result.rows]
    assert items[0].startswith("CelebA") and items[1].startswith("Cityscapes") and items[-1].startswith("MultiMNIST")
    assert "429.9 h vs 16.1 h: 26.7×" in result.rows[0].paper and "38.6 h vs 23.3 h: 1.7×" in result.rows[1].paper
    for r in result.rows:
        assert r.stats and all(math.isfinite(s.mean) and s.mean > 0 for s in r.stats.values())
    assert any("random input" in d for d in result.deviations)
    assert any("4 tasks instead of the paper's 40" in d for d in result.deviations)
    assert (tmp_path / "sp" / "speed_ratios.png").stat().st_size > 0 and "| item | paper | ours | agrees |" in md


def test_ratio_of_medians_and_agreement_band() -> None:
    times = {"a": [3.0, 1.0, 2.0], "b": [1.0, 0.5, 9.0]}
    assert sp.ratio(times, "a", "b") == pytest.approx(2.0 / 1.0)  # medians 2 and 1
    with pytest.raises(ValueError):
        sp.ratio({"a": [1.0], "b": [0.0]}, "a", "b")
    assert speed._within(26.7, 429.9 / 16.1) and speed._within(14.0, 26.7) and not speed._within(12.0, 26.7)
    assert not speed._within(0.9, 1.66) and speed._within(1.2, 1.66)
