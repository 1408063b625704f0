"""``moomtl select``: choosing a model from a tiny real sweep by preference / constraints on validation
metrics, exporting it, and the refusals. The reference for every choice is the rule of
``moomtl.experiments.select`` (weighted Chebyshev distance of the normalized val losses to the ideal)
recomputed here from the point folders' own ``final_metrics.json`` with plain loops."""

from __future__ import annotations

import importlib.machinery
import json
import shutil
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from typer.testing import CliRunner

import moomtl.experiments.select as select_mod
from moomtl.cli import app
from moomtl.config import parse_config
from moomtl.experiments.select import best_index, chebyshev_scores, normalize_losses, select_model

runner = CliRunner()
TASKS = ("left", "right")


def _linear_sweep(tmp, *, n_train: int, n_val: int, n_test: int, n_preferences: int, seeds: int = 1):
    """A real linear-scalarization sweep (1 epoch); the front plot is skipped (2 s; selection never reads it)."""
    import moomtl.experiments.report as report

    cfg = parse_config({
        "data": {"dataset": "multimnist", "source": "mnist5k", "n_train": n_train, "n_val": n_val, "n_test": n_test,
                 "cache_dir": str(tmp / "cache")},
        "method": {"name": "linear", "weights": [0.5, 0.5]},
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 1, "batch_size": 64, "progress": False},
        "out": str(tmp / "lin"),
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "_plot_front", lambda *a, **k: None)
        report.run_preference_sweep(cfg, n_preferences=n_preferences, seeds=seeds)
    return tmp / "lin"


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    """A real 3-point linear-scalarization sweep (400 training pairs): (0, 1), (0.5, 0.5), (1, 0)."""
    return _linear_sweep(tmp_path_factory.mktemp("select"), n_train=400, n_val=100, n_test=100, n_preferences=3)


def _points(folder):
    """``[(label, val metrics, test metrics)]`` read independently from the point folders' files."""
    rows = json.loads((folder / "results.json").read_text())["rows"]
    out = []
    for r in rows:
        final = json.loads((folder / r["run_dir"].rsplit("/", 1)[-1] / "final_metrics.json").read_text())
        val = {k[4:]: v for k, v in final.items() if k.startswith("val/")}
        test = {k[5:]: v for k, v in final.items() if k.startswith("test/")}
        out.append((r["label"], val, test))
    return out


def _reference_choice(points, w, allowed=None):
    """The rule written out with loops: ideal = per-task min; nadir = per-task max over points no other
    point dominates; score = max_t w_t (L_t - ideal_t) / (nadir_t - ideal_t); ties by the weighted sum."""
    L = [[p[1][f"{t}/loss"] for t in TASKS] for p in points]
    n = len(L)

    def dominated(i):
        return any(all(L[j][k] <= L[i][k] for k in range(2)) and L[j] != L[i] for j in range(n))

    ideal = [min(L[i][k] for i in range(n)) for k in range(2)]
    nadir = [max(L[i][k] for i in range(n) if not dominated(i)) for k in range(2)]
    w = [v / sum(w) for v in w]
    best = None
    for i in range(n):
        if allowed is not None and not allowed[i]:
            continue
        z = [(L[i][k] - ideal[k]) / ((nadir[k] - ideal[k]) or 1.0) for k in range(2)]
        key = (max(w[k] * z[k] for k in range(2)), sum(w[k] * z[k] for k in range(2)), i)
        best = key if best is None or key < best else best
    return points[best[2]][0]


def _one_line_error(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def test_preference_picks_the_rules_argmin(front):
    points = _points(front)
    assert len(points) == 3
    for w in ([1, 0], [0, 1], [0.5, 0.5], [0.2, 0.8], [3, 1]):
        sel = select_model(front, ",".join(map(str, w)))
        assert sel.chosen.label == _reference_choice(points, w), w
        assert sel.chosen.val == pytest.approx({**points[sel.index][1],
                                                **{f"{t}/err": 1 - points[sel.index][1][f"{t}/acc"] for t in TASKS}})
    # w = (1, 0) asks for the lowest left val loss only
    sel = select_model(front, [1, 0])
    assert sel.chosen.val["left/loss"] == min(p[1]["left/loss"] for p in points)
    result = runner.invoke(app, ["select", str(front), "--preference", "0.2,0.8"])
    assert result.exit_code == 0, result.output
    assert f"selected: {_reference_choice(points, [0.2, 0.8])}" in result.output


def test_constraints_met_and_unmet(front):
    points = _points(front)
    accs = sorted(p[1]["left/acc"] for p in points)
    bound = accs[1]  # the two points with the higher left val accuracy meet it
    allowed = [p[1]["left/acc"] >= bound for p in points]
    sel = select_model(front, None, minimums=[f"left/acc={bound}"])
    assert sel.chosen.label == _reference_choice(points, [1, 1], allowed)
    assert sel.feasible.tolist() == allowed and sel.chosen.val["left/acc"] >= bound
    top = max(p[1]["right/loss"] for p in points)
    sel = select_model(front, "0,1", maximums=[f"right/loss={top}"], minimums=[f"left/acc={bound}"])
    assert sel.chosen.label == _reference_choice(points, [0, 1], allowed)

    closest = max(points, key=lambda p: p[1]["left/acc"])[0]
    result = runner.invoke(app, ["select", str(front), "--min", "left/acc=1.01", "--preference", "1,1"])
    line = _one_line_error(result, 1, "no point meets the constraints", "left/acc ≥ 1.01", f"closest: {closest}")
    assert "needs ≥ 1.01" in line


def test_export_loads_into_a_fresh_model_with_the_reported_test_metrics(front, tmp_path):
    from moomtl.config import load_config
    from moomtl.experiments.run import build_data, build_model_from
    from moomtl.train.trainer import evaluate

    target = tmp_path / "out" / "best.pt"
    result = runner.invoke(app, ["select", str(front), "--preference", "0.3,0.7", "--export", str(target)])
    assert result.exit_code == 0, result.output
    info = json.loads(target.with_suffix(".json").read_text())
    reported = info["chosen"]["test"]
    cfg = load_config(target.with_suffix(".yaml"))
    splits = build_data(cfg)
    model = build_model_from(cfg, splits)
    model.load_state_dict(torch.load(target, weights_only=True))
    measured = evaluate(model, splits.test, splits.task_specs())
    assert set(measured) <= set(reported)
    for k, v in measured.items():
        assert reported[k] == pytest.approx(v, abs=1e-6), k
        assert f"{k}{'↑' if k.endswith('acc') else '↓'} {v:.4f}" in result.output  # the printed test line
    assert info["chosen"]["label"] == _reference_choice(_points(front), [0.3, 0.7])

    again = runner.invoke(app, ["select", str(front), "--preference", "0.3,0.7", "--export", str(target)])
    _one_line_error(again, 2, "already exist", "--overwrite")
    again = runner.invoke(app, ["select", str(front), "--preference", "1,0", "--export", str(target), "--overwrite"])
    assert again.exit_code == 0, again.output
    inside = runner.invoke(app, ["select", str(front), "--preference", "1,0", "--export", str(front / "x.pt")])
    _one_line_error(inside, 2, "holds a moomtl run or report")


def test_bad_inputs_are_one_line(front, tmp_path, monkeypatch):
    def run(*args):
        return runner.invoke(app, ["select", *map(str, args)])

    _one_line_error(run(tmp_path / "nothing", "--preference", "1,1"), 2, "is not a folder")
    _one_line_error(run(front, "--min", "middle/acc=0.5"), 2, "unknown task 'middle'", "left, right")
    _one_line_error(run(front, "--max", "left/miou=0.5"), 2, "no validation metric 'miou'")
    _one_line_error(run(front, "--min", "left/acc"), 2, "TASK/METRIC=VALUE")
    _one_line_error(run(front, "--preference", "1,2,3"), 2, "one weight per task (2")
    _one_line_error(run(front, "--preference", "-1,2"), 2, "non-negative")
    _one_line_error(run(front, "--preference", "0,0"), 2, "positive")
    _one_line_error(run(front, "--preference", "a,b"), 2, "comma-separated numbers")
    _one_line_error(run(front), 2, "--preference")
    _one_line_error(run(front, "--preference", "1,1", "--export", tmp_path / "best.yaml"), 2, "state-dict file")
    _one_line_error(run(tmp_path, "--preference", "1,1"), 2, "holds no finished moomtl runs")

    # A sweep trained without validation data: refused, never selected on test.
    noval = tmp_path / "noval"
    shutil.copytree(front, noval, ignore=shutil.ignore_patterns("*.pt", "*.png", "tensorboard"))
    for path in [*noval.glob("*/final_metrics.json"), *noval.glob("*/result.json")]:
        raw = json.loads(path.read_text())
        final = raw["final"] if "final" in raw else raw
        for k in [k for k in final if k.startswith("val/")]:
            del final[k]
        path.write_text(json.dumps(raw))
    _one_line_error(run(noval, "--preference", "1,1"), 2, "no validation metrics", "never test")

    psl = tmp_path / "psl"
    psl.mkdir()
    (psl / "results.json").write_text(json.dumps({"kind": "psl", "task_names": list(TASKS)}))
    monkeypatch.setattr(select_mod, "psl_available", lambda: False)
    _one_line_error(run(psl, "--preference", "1,1"), 2, "Pareto-set-learning run", "moomtl.psl")


def test_a_folder_holding_runs_is_a_front(front, tmp_path):
    """A reproduce-style folder (its own results.json, runs in sub-folders) gives the same choice."""
    repro = tmp_path / "repro"
    shutil.copytree(front, repro / "grid", ignore=shutil.ignore_patterns("results.json", "*.png"))
    (repro / "results.json").write_text(json.dumps({"reproduce": "some-entry", "rows": []}))
    points = _points(front)
    sel = select_model(repro, "0.2,0.8")
    assert sel.kind == "runs" and len(sel.candidates) == 3
    expected = next(r["run_dir"] for r in json.loads((front / "results.json").read_text())["rows"]
                    if r["label"] == _reference_choice(points, [0.2, 0.8]))
    assert sel.chosen.label == "grid/" + expected.rsplit("/", 1)[-1]


class _FakePSL:
    """A Pareto set known in closed form: at preference p the val losses are (1 - p0, p0) and the test
    losses (1 - p0 + 0.01, p0 + 0.01)."""

    def evaluate(self, preference, split):
        p0 = float(preference[0]) / float(sum(preference))
        shift = 0.01 if split == "test" else 0.0
        return {"left/loss": 1 - p0 + shift, "right/loss": p0 + shift}

    def export(self, preference, path, overwrite=False):
        torch.save({"w": torch.tensor(preference)}, path)
        path.with_suffix(".yaml").write_text("method: {name: tch}\n")


def test_psl_runs_through_moomtl_psl(tmp_path, monkeypatch):
    fake = types.ModuleType("moomtl.psl")
    fake.__spec__ = importlib.machinery.ModuleSpec("moomtl.psl", None)
    fake.load_psl_run = lambda folder: _FakePSL()
    monkeypatch.setitem(sys.modules, "moomtl.psl", fake)
    folder = tmp_path / "psl"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"kind": "psl", "task_names": list(TASKS)}))
    sel = select_model(folder, "0.3,0.7")  # a preference alone: the model the set maps it to
    assert sel.chosen.preference == pytest.approx([0.3, 0.7])
    assert sel.chosen.test == pytest.approx({"left/loss": 0.71, "right/loss": 0.31})
    # left val loss ≤ 0.3 needs p0 ≥ 0.7; uniform Chebyshev max(1 - p0, p0) / 2 is smallest at p0 = 0.7
    sel = select_model(folder, None, maximums=["left/loss=0.3"])
    assert sel.chosen.preference == pytest.approx([0.7, 0.3])
    written = select_mod.export_selection(sel, tmp_path / "m.pt")
    assert [p.name for p in written] == ["m.pt", "m.yaml", "m.json"]
    assert torch.load(tmp_path / "m.pt", weights_only=True)["w"].tolist() == pytest.approx([0.7, 0.3])


@settings(max_examples=50, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 12), st.integers(1, 4)), elements=st.integers(0, 20)),
       st.lists(st.floats(0.01, 1), min_size=4, max_size=4))
def test_chosen_point_is_pareto_optimal_and_matches_brute_force(grid, w):
    """Lexicographic (augmented) weighted Chebyshev with positive weights selects a Pareto-optimal
    point (Miettinen, Nonlinear Multiobjective Optimization, 1999, Thm 3.4.5), and it is the brute-force
    minimizer of (max, sum) of w_t z_t."""
    losses = grid / 4.0  # on a grid, so distinct losses stay distinct after normalizing
    w = np.array(w[: losses.shape[1]])
    z, ideal, _ = normalize_losses(losses)
    score, tie = chebyshev_scores(z, w)
    i = best_index(score, tie, np.ones(len(losses), dtype=bool))
    assert not any((losses[j] <= losses[i]).all() and (losses[j] < losses[i]).any() for j in range(len(losses)))
    keys = [((w * z[j]).max(), (w * z[j]).sum(), j) for j in range(len(losses))]
    assert min(keys)[2] == i
    assert (z >= 0).all() and (z.min(axis=0) == 0).all() and np.array_equal(ideal, losses.min(axis=0))


@pytest.mark.slow
def test_real_psl_run_select_and_export(tmp_path):
    """A tiny real `moomtl psl` run: the exported plain model has the test metrics select reported."""
    from moomtl.config import load_config
    from moomtl.experiments.run import build_data, build_model_from
    from moomtl.train.trainer import evaluate

    sets = ["data.dataset=multimnist", "data.source=mnist5k", "data.n_train=400", "data.n_val=100",
            "data.n_test=100", f"data.cache_dir={tmp_path / 'cache'}", "method={name: tch}", "train.epochs=1",
            "train.batch_size=64", "train.progress=false", "optimizer={name: SGD, lr: 0.05, momentum: 0.9}"]
    args = ["psl", "--preferences", "3", "--out", str(tmp_path / "psl")]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    target = tmp_path / "best.pt"
    result = runner.invoke(app, ["select", str(tmp_path / "psl"), "--preference", "0.3,0.7", "--export", str(target)])
    assert result.exit_code == 0, result.output
    info = json.loads(target.with_suffix(".json").read_text())
    assert info["kind"] == "psl" and info["chosen"]["preference"] == pytest.approx([0.3, 0.7])
    cfg = load_config(target.with_suffix(".yaml"))
    splits = build_data(cfg)
    model = build_model_from(cfg, splits)
    model.load_state_dict(torch.load(target, weights_only=True))
    measured = evaluate(model, splits.test, splits.task_specs())
    for k, v in measured.items():
        assert info["chosen"]["test"][k] == pytest.approx(v, abs=1e-5), k
    constrained = select_model(tmp_path / "psl", None, minimums=["left/acc=0"])
    assert len(constrained.candidates) == 21 and constrained.feasible.all()


# --- multi-seed sweeps (sweep --seeds N: seed_<s>/<point>, rows with run_dirs) ------------------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A real 2-point, 2-seed linear-scalarization sweep (128 training pairs): (0, 1), (1, 0)."""
    return _linear_sweep(tmp_path_factory.mktemp("select_seeds"), n_train=128, n_val=32, n_test=64, n_preferences=2,
                         seeds=2)


def _seed_finals(folder):
    """``{label: [(seed, point folder, final metrics)]}`` read from each seed's own result.json."""
    res = json.loads((folder / "results.json").read_text())
    out = {}
    for row in res["rows"]:
        name = row["run_dir"].rsplit("/", 1)[-1]
        out[row["label"]] = [(s, folder / f"seed_{s}" / name,
                              json.loads((folder / f"seed_{s}" / name / "result.json").read_text())["final"])
                             for s in res["seeds"]]
    return out


def _set_val_losses(folder, label, per_seed):
    """Write controlled val losses ``per_seed`` (one ``(left, right)`` per seed) into point ``label``'s runs."""
    for (_, run_dir, _), losses in zip(_seed_finals(folder)[label], per_seed, strict=True):
        for name in ("result.json", "final_metrics.json"):
            path = run_dir / name
            raw = json.loads(path.read_text())
            final = raw["final"] if name == "result.json" else raw
            final.update({f"val/{t}/loss": v for t, v in zip(TASKS, losses, strict=True)})
            path.write_text(json.dumps(raw))


def test_multi_seed_point_is_the_mean_of_its_seeds(seeded):
    res = json.loads((seeded / "results.json").read_text())
    assert res["seeds"] == [0, 1] and all(len(r["run_dirs"]) == 2 for r in res["rows"])
    finals = _seed_finals(seeded)
    sel = select_model(seeded, "1,1")
    assert sel.kind == "sweep" and len(sel.candidates) == 2
    for c in sel.candidates:
        runs = finals[c.label]
        assert [r.seed for r in c.seeds] == [0, 1] and [r.run_dir for r in c.seeds] == [d for _, d, _ in runs]
        vals = {k[4:]: [f[k] for _, _, f in runs] for k in runs[0][2] if k.startswith("val/")}
        tests = {k[5:]: [f[k] for _, _, f in runs] for k in runs[0][2] if k.startswith("test/")}
        assert vals and tests
        for k, v in vals.items():
            assert c.val[k] == pytest.approx(np.mean(v)), k
        for k, v in tests.items():
            assert c.test[k] == pytest.approx(np.mean(v)), k
            assert c.test_sd[k] == pytest.approx(np.std(v, ddof=1)), k
        # the seeds differ (train.seed 0 and 1), so the mean is not seed 0's value
        assert vals["left/loss"][0] != vals["left/loss"][1]
    result = runner.invoke(app, ["select", str(seeded), "--preference", "1,1"])
    assert result.exit_code == 0, result.output
    c = sel.chosen
    key = "left/loss"
    assert f"{key}↓ {c.test[key]:.4f} ± {c.test_sd[key]:.4f}" in result.output
    assert "mean ± sd, n = 2 seeds" in result.output and f"selected: {c.label} (mean of 2 seeds" in result.output


def test_multi_seed_choice_uses_the_seed_mean_and_exports_the_stated_seed(seeded, tmp_path):
    """Seed 0 alone prefers A; the seed mean prefers B; B's seed 1 (own Chebyshev value smaller) is exported."""
    sweep = tmp_path / "sweep"
    shutil.copytree(seeded, sweep, ignore=shutil.ignore_patterns("*.png", "tensorboard"))
    a, b = [r["label"] for r in json.loads((sweep / "results.json").read_text())["rows"]]
    _set_val_losses(sweep, a, [(1.0, 1.0), (5.0, 5.0)])  # mean (3, 3)
    _set_val_losses(sweep, b, [(2.4, 2.4), (1.6, 1.6)])  # mean (2, 2): dominates A on the means
    assert select_model(sweep / "seed_0", "1,1").chosen.label == a  # seed 0's own sweep: A
    sel = select_model(sweep, "1,1")
    assert sel.chosen.label == b
    assert sel.chosen.val["left/loss"] == pytest.approx(2.0)
    assert sel.candidates[0].val["left/loss"] == pytest.approx(3.0)
    assert sel.export_seed.seed == 1

    target = tmp_path / "out" / "best.pt"
    result = runner.invoke(app, ["select", str(sweep), "--preference", "1,1", "--export", str(target)])
    assert result.exit_code == 0, result.output
    b_dirs = {s: d for s, d, _ in _seed_finals(sweep)[b]}
    assert f"export: seed 1 ({b_dirs[1]})" in result.output
    info = json.loads(target.with_suffix(".json").read_text())
    chosen = info["chosen"]
    assert chosen["label"] == b and chosen["n_seeds"] == 2
    assert chosen["exported_seed"]["seed"] == 1 and chosen["exported_seed"]["run_dir"] == str(b_dirs[1])
    assert "smallest weighted Chebyshev" in chosen["exported_seed"]["reason"]
    assert chosen["seeds"][1]["score"] < chosen["seeds"][0]["score"]
    exported = torch.load(target, weights_only=True)
    seed1 = torch.load(b_dirs[1] / "model.pt", weights_only=True)
    seed0 = torch.load(b_dirs[0] / "model.pt", weights_only=True)
    assert exported.keys() == seed1.keys() and all(torch.equal(exported[k], seed1[k]) for k in seed1)
    assert not all(torch.equal(exported[k], seed0[k]) for k in seed0)
    assert target.with_suffix(".yaml").read_text() == (b_dirs[1] / "config.yaml").read_text()


def test_multi_seed_missing_or_unfinished_seed_is_one_line(seeded, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(seeded, sweep, ignore=shutil.ignore_patterns("*.png", "tensorboard", "*.pt"))
    label = json.loads((sweep / "results.json").read_text())["rows"][1]["label"]
    _, run_dir, _ = _seed_finals(sweep)[label][1]
    for name in ("result.json", "final_metrics.json"):  # interrupted: the run's folder is there, unfinished
        (run_dir / name).unlink()
    result = runner.invoke(app, ["select", str(sweep), "--preference", "1,1"])
    _one_line_error(result, 1, "output error", f"point {label!r}", "seed 1", "missing or unfinished")
    shutil.rmtree(run_dir)
    result = runner.invoke(app, ["select", str(sweep), "--preference", "1,1"])
    _one_line_error(result, 1, "seed 1", "missing or unfinished")
