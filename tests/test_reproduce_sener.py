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

TINY_MM = mm.Sizes(n_train=128, n_val=32, n_test=64, epochs=1)
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
    acc["mgda_ub_none"] = acc["mgda_ub"]
    rows = mm._rows(acc)
    claims = [r for r in rows if r.agrees is not None and "trains as uniform" not in r.item]
    assert len(claims) == 4 and all(r.agrees for r in claims)
    # MGDA-UB one point below single task and below uniform on the left digit: two claims fail
    acc["mgda_ub"]["left"] = [96.23]
    by_item = {r.item: r.agrees for r in mm._rows(acc)}
    assert not by_item["MGDA-UB above uniform, Kendall et al. and GradNorm on both tasks"]
    assert not next(v for k, v in by_item.items() if k.startswith("MGDA-UB as good as single task"))
    assert by_item["static scaling below single task"]


def _check_multimnist(result, md: str, out: Path, seeds: int) -> None:  # type: ignore[no-untyped-def]
    labels = [label for label, _ in mm.METHODS.values()]
    assert [r.item.split(":")[0] for r in result.rows[:6]] == labels
    for row, m in zip(result.rows[:6], mm.METHODS, strict=True):
        assert row.paper.startswith(f"{mm.PAPER[m][0]:.2f} / {mm.PAPER[m][1]:.2f}" if m in mm.PAPER else "—")
        for t in mm.TASKS:
            s = row.stats[t]
            assert s.n == seeds and 0.0 <= s.mean <= 100.0 and math.isfinite(s.sd)
    assert sum(r.agrees is not None for r in result.rows) == 5
    identity = next(r for r in result.rows if "trains as uniform" in r.item)
    assert identity.agrees  # two tasks, l2: α = (½, ½) at every step, the same training as uniform
    assert any("5k MNIST" in d for d in result.deviations) and any("epochs: 1 " in d for d in result.deviations)
    assert "97.23 / 95.90" in md and (out / "multimnist_accuracy.png").stat().st_size > 0
    assert _strict_json(out / "results.json")["reproduce"] == "sener2018-multimnist"


def _count_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    trained: list[str] = []
    real = run_module._train_in

    def counting(cfg, *a, **k):  # type: ignore[no-untyped-def]
        trained.append(cfg.out)
        return real(cfg, *a, **k)

    monkeypatch.setattr(run_module, "_train_in", counting)
    return trained


def test_multimnist_entry_rows_from_given_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry on stand-in run summaries (accuracy 0.9 + 0.01·seed, single task 0.95): the rows, stats
    over seeds, claims and files; real training is in the slow tests below."""
    monkeypatch.setattr(mm, "QUICK", TINY_MM)
    planned: list[str] = []

    def fake_train_all(runs, console):  # type: ignore[no-untyped-def]
        planned.extend(r.cfg.out for r in runs)
        acc = {(r.key, r.seed): 0.95 if r.method == "single" else 0.9 + 0.01 * r.seed for r in runs}
        return {k: {"data": "stand-in", "final": {f"test/{t}/acc": v for t in mm.TASKS}} for k, v in acc.items()}

    monkeypatch.setattr(mm.grid, "train_all", fake_train_all)
    out = tmp_path / "mm"
    result, md = reproduce("sener2018-multimnist", out, quick=True, seeds=2)
    assert len(planned) == 14 and len(set(planned)) == 14  # (7 runs) × (2 seeds), one folder each
    _check_multimnist(result, md, out, seeds=2)
    uniform = result.rows[1].stats["left"]
    assert uniform.mean == pytest.approx(90.5) and uniform.sd == pytest.approx(0.7071, abs=1e-4)
    by = {r.item: r.agrees for r in result.rows}
    assert by["static scaling below single task"] and not by["MGDA-UB above uniform, Kendall et al. and GradNorm on "
                                                              "both tasks"]


@pytest.mark.slow
def test_multimnist_entry_tiny_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mm, "QUICK", TINY_MM)
    out = tmp_path / "mm"
    trained = _count_training(monkeypatch)
    result, md = reproduce("sener2018-multimnist", out, quick=True, seeds=1)
    _check_multimnist(result, md, out, seeds=1)
    assert len(trained) == 7 and (out / "single_left" / "seed0" / "result.json").is_file()
    # rerun: the seven finished runs are not trained again, and give the same numbers
    again, _ = reproduce("sener2018-multimnist", out, quick=True, seeds=1)
    assert len(trained) == 7 and [r.ours for r in again.rows] == [r.ours for r in result.rows]


@pytest.mark.slow
def test_multimnist_entry_more_seeds_trains_only_the_new_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mm, "QUICK", TINY_MM)
    out = tmp_path / "mm"
    one, _ = reproduce("sener2018-multimnist", out, quick=True, seeds=1)
    trained = _count_training(monkeypatch)
    two, md = reproduce("sener2018-multimnist", out, quick=True, seeds=2)
    _check_multimnist(two, md, out, seeds=2)
    assert len(trained) == 7 and all(Path(p).name == "seed1" for p in trained)
    seed1 = 100 * _strict_json(out / "single_left" / "seed1" / "result.json")["final"]["test/left/acc"]
    assert two.rows[0].stats["left"].mean == pytest.approx((one.rows[0].stats["left"].mean + seed1) / 2)


def _check_speed(result, md: str) -> None:  # type: ignore[no-untyped-def]
    items = [r.item for r in result.rows]
    assert items[0].startswith("CelebA") and items[1].startswith("Cityscapes") and items[-1].startswith("MultiMNIST")
    assert "429.9 h vs 16.1 h: 26.7×" in result.rows[0].paper and "38.6 h vs 23.3 h: 1.7×" in result.rows[1].paper
    for r in result.rows:
        assert r.stats and all(math.isfinite(s.mean) and s.mean > 0 for s in r.stats.values())
    assert any("random input" in d for d in result.deviations)
    assert any("4 tasks instead of the paper's 40" in d for d in result.deviations)
    assert "| item | paper | ours | agrees |" in md


def test_speed_entry_rows_from_given_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry's arithmetic on stand-in step times (MGDA costs 1 + T/2 units, MGDA-UB and uniform 1):
    ratio 1 + T/2, linear in T."""
    monkeypatch.setattr(speed, "QUICK", TINY_SPEED)

    def fake(setting, methods, rounds, warmup, seed, threads=1):  # type: ignore[no-untyped-def]
        n = len(setting[3])
        return {"uniform": [1.0], "MGDA-UB": [1.0], "MGDA": [1.0 + n / 2]}

    monkeypatch.setattr(sp, "time_steps", fake)
    result, md = reproduce("sener2018-speed", tmp_path / "sp", quick=True, seeds=2)
    _check_speed(result, md)
    by = {r.item.split(":")[0].split(" (")[0]: r for r in result.rows}
    assert by["CelebA"].stats["MGDA/MGDA-UB"].mean == 3.0 and by["Cityscapes"].stats["MGDA/MGDA-UB"].mean == 2.5
    assert not by["CelebA"].agrees and by["Cityscapes"].agrees  # 3× vs the paper's 26.7×; 2.5× vs 1.66×
    assert by["MGDA-UB vs uniform scaling, 4 tasks"].agrees
    scaling = next(r for r in result.rows if r.item.startswith("MGDA / MGDA-UB vs number of tasks"))
    assert scaling.agrees and "R² 1.000" in scaling.ours
    assert (tmp_path / "sp" / "speed_ratios.png").stat().st_size > 0


@pytest.mark.slow
def test_speed_entry_tiny_real_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "QUICK", TINY_SPEED)
    result, md = reproduce("sener2018-speed", tmp_path / "sp", quick=True, seeds=1)
    _check_speed(result, md)
    assert (tmp_path / "sp" / "speed_ratios.png").stat().st_size > 0


def test_ratio_of_medians_and_agreement_band() -> None:
    times = {"a": [3.0, 1.0, 2.0], "b": [1.0, 0.5, 9.0]}
    assert sp.ratio(times, "a", "b") == pytest.approx(2.0 / 1.0)  # medians 2 and 1
    with pytest.raises(ValueError):
        sp.ratio({"a": [1.0], "b": [0.0]}, "a", "b")
    assert speed._within(26.7, 429.9 / 16.1) and speed._within(14.0, 26.7) and not speed._within(12.0, 26.7)
    assert not speed._within(0.9, 1.66) and speed._within(1.2, 1.66)
