"""Statistics of reports (moomtl.experiments.stats): Δm against its definition (Liu et al. 2021's sign
convention), the percentile bootstrap, the degenerate-front criterion on constructed fronts; and a tiny
end-to-end ``sweep --seeds 2`` + ``compare`` on real MultiMNIST."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from moomtl.cli import app
from moomtl.experiments import stats

positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
ratio = st.floats(min_value=-0.9, max_value=10.0, allow_nan=False, allow_infinity=False)
values_list = st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False),
                       min_size=2, max_size=12)
FAST = settings(max_examples=15, deadline=None)  # pure math on a few numbers; 15 examples keep the file fast


# --- Δm -----------------------------------------------------------------------------------------


@FAST
@given(st.dictionaries(st.sampled_from("abcd"), st.tuples(positive, st.booleans()), min_size=1))
def test_delta_m_is_zero_at_the_baselines(tasks):
    base = {k: v for k, (v, _) in tasks.items()}
    higher = {k: h for k, (_, h) in tasks.items()}
    assert stats.delta_m(base, base, higher) == 0.0


@FAST
@given(positive, ratio, st.booleans())
def test_delta_m_sign_follows_the_metric_direction(base, r, higher):
    """One task: Δm = (−1)^h · r · 100 for M = M_b (1 + r) (the definition with T = 1); better than the
    baseline (higher acc, lower loss) is negative."""
    value = base * (1 + r)
    d = stats.delta_m({"t": value}, {"t": base}, {"t": higher})
    assert d == pytest.approx((-100.0 if higher else 100.0) * (value - base) / base, rel=1e-12, abs=1e-9)
    better = value > base if higher else value < base
    if abs(r) > 1e-9:
        assert (d < 0) == better


@FAST
@given(st.lists(st.tuples(positive, ratio, st.booleans(), positive), min_size=1, max_size=5))
def test_delta_m_is_invariant_to_each_metric_scale_and_averages_tasks(tasks):
    """Scaling a task's metric and baseline by c > 0 leaves Δm unchanged; Δm is the mean of the
    one-task Δm's (the 1/T Σ_t of the definition)."""
    keys = [f"t{i}" for i in range(len(tasks))]
    base = {k: b for k, (b, _, _, _) in zip(keys, tasks, strict=True)}
    vals = {k: b * (1 + r) for k, (b, r, _, _) in zip(keys, tasks, strict=True)}
    higher = {k: h for k, (_, _, h, _) in zip(keys, tasks, strict=True)}
    scaled = {k: c * vals[k] for k, (_, _, _, c) in zip(keys, tasks, strict=True)}
    scaled_base = {k: c * base[k] for k, (_, _, _, c) in zip(keys, tasks, strict=True)}
    d = stats.delta_m(vals, base, higher)
    assert stats.delta_m(scaled, scaled_base, higher) == pytest.approx(d, rel=1e-9, abs=1e-9)
    one = [stats.delta_m({k: vals[k]}, {k: base[k]}, {k: higher[k]}) for k in keys]
    assert d == pytest.approx(np.mean(one), rel=1e-12, abs=1e-9)


def test_delta_m_by_hand_and_undefined_baseline():
    # Liu et al. 2021: acc 0.95 vs 0.90 (higher better) → −5.556 %; loss 0.3 vs 0.2 (lower better) → +50 %.
    d = stats.delta_m({"a": 0.95, "b": 0.3}, {"a": 0.90, "b": 0.2}, {"a": True, "b": False})
    assert d == pytest.approx((-100 * 0.05 / 0.90 + 100 * 0.1 / 0.2) / 2)
    with pytest.raises(ValueError, match="baseline of a is 0"):
        stats.delta_m({"a": 1.0}, {"a": 0.0}, {"a": True})
    assert stats.higher_is_better("acc") and not stats.higher_is_better("loss")
    assert not stats.higher_is_better("l1") and stats.higher_is_better("miou")


# --- bootstrap ----------------------------------------------------------------------------------


@FAST
@given(values_list)
def test_bootstrap_interval_contains_the_mean_and_is_deterministic(values):
    s = stats.summarize(values)
    lo, hi = s.ci95
    tol = 1e-9 * (1 + max(abs(v) for v in values))
    assert lo - tol <= s.mean <= hi + tol
    assert min(values) - tol <= lo <= hi <= max(values) + tol  # means of resamples stay in the data's range
    assert stats.bootstrap_ci(values) == (lo, hi)  # fixed RNG seed: the same interval every time
    assert s.sd == pytest.approx(np.std(values, ddof=1))


@FAST
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.integers(min_value=2, max_value=10))
def test_bootstrap_of_identical_seeds_is_a_point(value, n):
    s = stats.summarize([value] * n)
    assert s.ci95 == (value, value) and s.sd == 0.0 and s.n == n


def test_bootstrap_one_seed_undefined_and_percentiles_match_numpy():
    s = stats.summarize([0.3])
    assert s.ci95 is None and s.sd is None and s.ci_text() == "undefined (1 seed)" and s.text() == "0.3"
    # Reference: the same resampling written out with numpy (percentiles of 10 000 resampled means).
    x = np.array([0.1, 0.4, 0.35, 0.2, 0.9])
    rng = np.random.default_rng(0)
    means = x[rng.integers(0, 5, size=(10_000, 5))].mean(axis=1)
    assert stats.bootstrap_ci(x) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    lo, hi = stats.bootstrap_ci(x)
    assert hi - lo > 0.2  # a spread-out sample gives a wide interval (the sd of the mean is 0.14)
    assert stats.intervals_overlap((0.0, 1.0), (0.5, 2.0)) and not stats.intervals_overlap((0.0, 1.0), (1.5, 2.0))


# --- degenerate fronts --------------------------------------------------------------------------


@FAST
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=10, unique=True), positive, positive)
def test_a_trade_off_front_is_not_degenerate(k, sx, sy):
    """Points (t, 1 − t) with distinct t trade off: ideal gap ≥ 0.5, Spearman −1 (any positive scales)."""
    t = [v / 1000 for v in k]
    pts = np.array([[sx * v, 3.0 + sy * (1 - v)] for v in t])
    c = stats.front_conflict(pts)
    assert not c.degenerate and c.ideal_gap >= 0.5 - 1e-12
    assert c.rank_correlation == (pytest.approx(-1.0) if len(t) >= 4 else None)


@FAST
@given(st.lists(st.tuples(positive, positive), min_size=1, max_size=10), st.floats(0.0, 0.04))
def test_a_nearly_dominating_point_makes_the_front_degenerate(others, slack):
    """Add a point at the ideal corner of the others plus ``slack`` × their range (< 5 %): degenerate."""
    pts = np.array(others + [(0.0, 0.0)])
    pts[-1] = pts[:-1].min(axis=0) + slack * np.ptp(pts[:-1], axis=0)
    c = stats.front_conflict(pts)
    assert c.degenerate and c.ideal_gap <= 0.05 + 1e-12


@FAST
@given(st.lists(st.integers(0, 1000), min_size=4, max_size=10, unique=True), positive, positive)
def test_objectives_that_rise_together_are_degenerate(x, scale, shift):
    """Objective 2 ranks the points like objective 1 except the first two (one adjacent swap): Spearman
    ρ = 1 − 6·2 / (n(n² − 1)) ≥ 0.8 (the rank-difference formula), so degenerate."""
    x = np.sort(np.array(x, dtype=float))
    y = x.copy()
    y[[0, 1]] = y[[1, 0]]
    c = stats.front_conflict(np.stack([x, shift + scale * y], axis=1))
    n = len(x)
    assert c.degenerate and c.rank_correlation == pytest.approx(1 - 12 / (n * (n * n - 1)))


@FAST
@given(st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_average_ranks_match_their_definition(v):
    """Average rank of v_i = #{j: v_j < v_i} + (#{j: v_j = v_i} + 1) / 2 (what scipy's rankdata computes)."""
    expected = [sum(w < x for w in v) + (sum(w == x for w in v) + 1) / 2 for x in v]
    assert stats.average_ranks(v).tolist() == expected


def test_front_conflict_edge_cases_by_hand():
    # A 4-point convex front: gap 0.6 (point (0.4, 0.6) normalized), ρ = −1 → in conflict.
    front = [[0.0, 1.0], [0.4, 0.6], [0.6, 0.3], [1.0, 0.0]]
    c = stats.front_conflict(front)
    assert not c.degenerate and c.ideal_gap == pytest.approx(0.6) and c.rank_correlation == pytest.approx(-1.0)
    # Same but one point moved into the ideal corner within 3 % of the range: degenerate by the gap.
    c = stats.front_conflict([[0.0, 1.0], [0.03, 0.02], [0.6, 0.3], [1.0, 0.0]])
    assert c.degenerate and c.ideal_gap == pytest.approx(0.03) and "nearly dominates" in c.reason
    # A blob whose losses move together (ρ = 0.8) with no dominating point: degenerate by correlation.
    blob = [[0.30, 0.31], [0.31, 0.30], [0.33, 0.34], [0.35, 0.36]]
    c = stats.front_conflict(blob)
    assert c.degenerate and c.rank_correlation == pytest.approx(0.8) and "rise and fall together" in c.reason
    # Identical points; one point; too few points for a correlation.
    assert stats.front_conflict([[1.0, 2.0], [1.0, 2.0]]).degenerate
    one = stats.front_conflict([[1.0, 2.0]])
    assert not one.degenerate and "not assessed" in one.reason
    assert stats.front_conflict([[0, 1], [1, 0], [0.5, 0.5]]).rank_correlation is None
    assert stats.front_conflict(front).to_dict()["criterion"] == stats.CRITERION


# --- end to end: sweep --seeds 2, compare, train --seeds 2 (tiny real MultiMNIST) ------------------


def _tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "data: {dataset: multimnist, source: mnist5k, n_train: 128, n_val: 32, n_test: 64, cache_dir: "
        f"{tmp_path / 'cache'}}}\n"
        "method: {name: linear, weights: [0.5, 0.5]}\n"
        "optimizer: {name: SGD, lr: 0.05, momentum: 0.9}\n"
        "train: {epochs: 1, batch_size: 64, progress: false}\n"
    )
    return str(path)


def test_sweep_with_seeds_then_compare_end_to_end(tmp_path, monkeypatch):
    import moomtl.experiments.report as report_mod
    import moomtl.pareto.plots as plots_mod
    from moomtl.experiments.run import read_run_config
    from moomtl.pareto import hypervolume

    # Plots (11 PNGs here, ~0.3 s each) are checked in test_sweep/test_plots; this test checks numbers.
    plotted = []
    monkeypatch.setattr(report_mod, "_plot_front", lambda rows, tasks, mask, out, title: plotted.append(title))
    monkeypatch.setattr(plots_mod, "plot_fronts_overlay", lambda fronts, path, **kw: plotted.append(path))

    cfg, runner = _tiny_config(tmp_path), CliRunner()
    lin, tch, cmp = tmp_path / "lin", tmp_path / "tch", tmp_path / "cmp"
    common = ["sweep", "-c", cfg, "--preferences", "1", "--seeds", "2"]
    r = runner.invoke(app, [*common, "--single-task", "--out", str(lin)])
    assert r.exit_code == 0, r.output
    assert "(2 seeds: 0, 1)" in r.output and "Δm" in r.output
    r = runner.invoke(app, ["sweep", "-c", cfg, "--preferences", "1", "--method", "tch", "--out", str(tch)])
    assert r.exit_code == 0, r.output  # one seed: the layout of before (no seed folders)
    assert {"linear sweep on multimnist (mean of 2 seeds)", "linear sweep on multimnist (seed 1)"} <= set(plotted)

    res = json.loads((lin / "results.json").read_text())
    # The keys of a one-seed report stay; seed keys are added.
    assert {"title", "task_names", "objective", "hypervolume", "reference_point", "rows", "method", "data"} <= set(res)
    assert res["seeds"] == [0, 1] and res["n_seeds"] == 2 and isinstance(res["degenerate_front"], bool)
    for s in (0, 1):  # every seed is a whole sweep folder; training seed varies, the data split does not
        point = read_run_config(lin / f"seed_{s}" / "linear_0.5-0.5")
        assert point["train"]["seed"] == s and point["data"]["seed"] == 0
        assert json.loads((lin / f"seed_{s}" / "results.json").read_text())["seed"] == s
    # Hypervolume per seed on the one shared reference point (checked with moomtl.pareto.hypervolume).
    ref = np.array(res["reference_point"])
    hvs = [hypervolume([[r["left/loss"], r["right/loss"]] for r in e["rows"]], ref) for e in res["per_seed"]]
    assert [e["hypervolume"] for e in res["per_seed"]] == pytest.approx(hvs)
    assert res["hypervolume_stats"]["mean"] == pytest.approx(np.mean(hvs)) == pytest.approx(res["hypervolume"])
    assert res["hypervolume_stats"]["sd"] == pytest.approx(np.std(hvs, ddof=1)) and res["hypervolume_stats"]["n"] == 2
    # Seed-mean rows and Δm from the definition: baselines = seed-mean single-task accuracies.
    point = next(r for r in res["rows"] if r["method"] == "linear")
    per_seed = [next(r for r in e["rows"] if r["method"] == "linear") for e in res["per_seed"]]
    assert point["left/loss"] == pytest.approx(np.mean([p["left/loss"] for p in per_seed]))
    assert point["seed_stats"]["left/acc"]["sd"] == pytest.approx(np.std([p["left/acc"] for p in per_seed], ddof=1))
    base = {t: np.mean([r[f"{t}/acc"] for e in res["per_seed"] for r in e["rows"] if r.get("single_task") == t])
            for t in ("left", "right")}
    dms = [np.mean([-(p[f"{t}/acc"] - base[t]) / base[t] for t in base]) * 100 for p in per_seed]
    assert point["delta_m"] == pytest.approx(np.mean(dms))
    assert res["delta_m"]["mean_over_points"]["sd"] == pytest.approx(np.std(dms, ddof=1))

    r = runner.invoke(app, [*common, "--single-task", "--out", str(lin)])  # a rerun resumes: nothing trains
    assert r.exit_code == 0 and "resuming: 6 of 6 points already trained" in r.output and "model 1/" not in r.output
    r = runner.invoke(app, ["sweep", "-c", cfg, "--preferences", "1", "--out", str(lin)])  # one seed: other layout
    assert r.exit_code == 2 and "would mix the layouts" in r.output

    r = runner.invoke(app, ["compare", str(lin), str(tch), "--out", str(cmp)])
    assert r.exit_code == 0, r.output
    out = json.loads((cmp / "comparison.json").read_text())
    assert out["hypervolume_stats"]["lin"]["n"] == 2 and out["hypervolume_stats"]["tch"]["n"] == 1
    assert out["hypervolume_stats"]["tch"]["ci95"] is None and out["hypervolume_stats"]["lin"]["ci95"] is not None
    assert out["hypervolume"]["lin"] == pytest.approx(np.mean(
        [hypervolume([[r["left/loss"], r["right/loss"]] for r in e["rows"] if r["method"] == "linear"],
                     np.array(out["reference_point"])) for e in res["per_seed"]]))  # baselines are not in the front
    assert out["delta_m"]["tch"]["baselines_from"] == "lin"  # tch has no baselines: lin's, same data
    md = (cmp / "comparison.md").read_text()
    assert [o["overlap"] for o in out["overlap"]] == [None, None]
    assert "lin vs tch (hypervolume): the interval of tch is undefined (1 seed)" in md
    assert "Caution: with fewer than 5 seeds" in md
    first = (cmp / "comparison.json").read_text()
    assert runner.invoke(app, ["compare", str(lin), str(tch), "--out", str(cmp)]).exit_code == 0
    assert (cmp / "comparison.json").read_text() == first  # fixed bootstrap seed: the same report


def test_interval_sentences():
    from moomtl.experiments.report import _overlap_sentence

    a, b, c = stats.summarize([1.0, 1.2, 1.1]), stats.summarize([1.15, 1.3, 1.25]), stats.summarize([2.0, 2.1, 2.2])
    assert stats.intervals_overlap(a.ci95, b.ci95) and not stats.intervals_overlap(a.ci95, c.ci95)
    assert "not distinguishable at 95 %" in _overlap_sentence("A", "B", "hypervolume", a, b, higher=True)
    assert "disjoint — C is better" in _overlap_sentence("A", "C", "hypervolume", a, c, higher=True)
    assert "disjoint — A is better" in _overlap_sentence("A", "C", "IGD+", a, c, higher=False)


@pytest.mark.slow  # 2 trainings (~2.4 s); the default suite's time budget is spent by the sweep test above
def test_train_with_seeds_reports_mean_and_sd(tmp_path):
    cfg, out = _tiny_config(tmp_path), tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "-c", cfg, "--seeds", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "seeds.json").read_text())
    finals = [json.loads((out / f"seed_{s}" / "result.json").read_text())["final"] for s in (0, 1)]
    acc = [f["test/left/acc"] for f in finals]
    assert res["metrics"]["test/left/acc"]["mean"] == pytest.approx(np.mean(acc))
    assert res["metrics"]["test/left/acc"]["sd"] == pytest.approx(np.std(acc, ddof=1))
    assert res["metrics"]["test/left/acc"]["n"] == 2 and "| test/left/acc |" in r.output
    r = CliRunner().invoke(app, ["train", "-c", cfg, "--resume", "--out", str(out / "seed_0")])  # a whole run
    assert r.exit_code == 0 and "already finished, nothing to train" in r.output


def test_seed_report_igd_plus_per_seed_and_degenerate_warning(tmp_path, monkeypatch):
    """write_seed_fronts on constructed rows (no training): IGD+ per seed against a reference front
    (checked with moomtl.pareto.igd_plus), and a front where one point dominates is flagged in
    results.md (next to the hypervolume) and results.json."""
    import moomtl.experiments.report as report_mod
    from moomtl.pareto import igd_plus

    monkeypatch.setattr(report_mod, "_plot_front", lambda *a, **k: None)

    def row(label, left, right):
        return {"label": label, "method": "linear", "preference": None, "left/loss": left, "left/acc": 0.9,
                "right/loss": right, "right/acc": 0.8, "wall_seconds": 1.0, "run_dir": label}

    seeds = [(0, [row("a", 0.30, 0.31), row("b", 0.50, 0.40), row("c", 0.40, 0.60)]),
             (1, [row("a", 0.32, 0.30), row("b", 0.55, 0.45), row("c", 0.45, 0.50)])]
    ref_front = np.array([[0.2, 0.5], [0.5, 0.2]])
    report = report_mod.write_seed_fronts(seeds, ["left", "right"], tmp_path, "t", reference_front=ref_front)
    res = json.loads((tmp_path / "results.json").read_text())
    each = [igd_plus(np.array([[r["left/loss"], r["right/loss"]] for r in rows]), ref_front) for _, rows in seeds]
    assert [e["igd_plus"] for e in res["per_seed"]] == pytest.approx(each)
    assert res["igd_plus_stats"]["mean"] == pytest.approx(np.mean(each)) == pytest.approx(res["igd_plus"])
    assert res["degenerate_front"] is True and res["front_conflict"]["ideal_gap"] == pytest.approx(0.0)
    assert [e["degenerate_front"] for e in res["per_seed"]] == [True, True]
    assert "Warning: degenerate front" in report.markdown and "degenerate in 2 of 2 seeds" in report.markdown
    assert "0.3100 ± 0.0141" in report.markdown  # point a's left loss: mean ± sd of 0.30 and 0.32
    assert "delta_m" not in res  # no single-task rows, no Δm


def test_degenerate_check_judges_interior_preferences():
    """Zero-weight end points, e.g. (0, 1), do not train one task, so they always look like a trade-off;
    the check uses the interior points when there are two or more."""
    from moomtl.experiments.report import front_conflict_of

    def row(pref, left, right):
        return {"label": str(pref), "method": "linear", "preference": pref, "left/loss": left, "right/loss": right}

    rows = [row([0.0, 1.0], 1.0, 0.2), row([0.25, 0.75], 0.30, 0.31), row([0.5, 0.5], 0.35, 0.40),
            row([0.75, 0.25], 0.40, 0.35), row([1.0, 0.0], 0.2, 1.0),
            {"label": "single-task left", "method": "single_task", "single_task": "left", "preference": None,
             "left/loss": 0.1, "right/loss": 2.6}]
    c = front_conflict_of(rows, ["left", "right"])
    assert c.degenerate and c.n_points == 3 and c.points_judged.startswith("interior")
    all_trained = stats.front_conflict([[r["left/loss"], r["right/loss"]] for r in rows[:5]])
    assert not all_trained.degenerate  # what the end points would have hidden
