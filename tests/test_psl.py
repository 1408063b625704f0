"""Pareto-set learning (moomtl.psl): conditioning modules, per-batch preferences driving moomtl's methods,
and a tiny real `moomtl psl` run (report, resume/refusal, load/evaluate/export)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

from moomtl import io as mio
from moomtl.autodiff.context import StepContext
from moomtl.cli import app
from moomtl.config import ConfigError, load_config
from moomtl.data.base import DataSplits
from moomtl.events import TrainState
from moomtl.methods.base import build_method
from moomtl.models.base import HardParameterSharing
from moomtl.models.registry import build_model
from moomtl.pareto import lattice_for
from moomtl.psl import load_psl_run, run_psl
from moomtl.psl.conditioning import (
    PreferenceConditionedModel,
    conditionable_layers,
    film_parameters,
    low_rank_parameters,
)
from moomtl.psl.config import split_psl_config
from moomtl.psl.objectives import ConditionedMethod, PreferenceSampler
from moomtl.rundir import RunFolderError
from moomtl.train.trainer import evaluate

runner = CliRunner()


def _conv_model(n_tasks: int) -> HardParameterSharing:
    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3, bias=False), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 8), nn.ReLU())
    heads = {f"t{i}": nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2 + i)) for i in range(n_tasks)}
    return HardParameterSharing(enc, heads)


def _perturb(model: PreferenceConditionedModel) -> None:
    """Move the hypernetworks away from their identity initialization."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("base."):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))


# --- pure math: the parameter forms equal the feature-wise definitions ---------------------------
@settings(max_examples=10, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.booleans(), st.integers(0, 10_000))
def test_film_parameters_equal_featurewise_modulation(out, inp, conv, seed):
    """Reference: FiLM's definition y ⊙ (1 + γ) + β applied to the layer's output (Perez et al. 2018)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn((out, inp, 3, 3) if conv else (out, inp), generator=g, dtype=torch.float64)
    b, gamma, beta = (torch.randn(out, generator=g, dtype=torch.float64) for _ in range(3))
    x = torch.randn((2, inp, 5, 5) if conv else (2, inp), generator=g, dtype=torch.float64)
    op = F.conv2d if conv else F.linear
    shape = (1, -1, 1, 1) if conv else (1, -1)
    p = film_parameters(w, b, gamma, beta)
    assert torch.allclose(op(x, p["weight"], p["bias"]), op(x, w, b) * (1 + gamma).view(shape) + beta.view(shape))


def test_low_rank_parameters_equal_explicit_update():
    """Reference: W + Σ_k c_k u_k v_kᵀ written as a sum of outer products."""
    g = torch.Generator().manual_seed(0)
    w, u, v, bb = (torch.randn(s, generator=g, dtype=torch.float64) for s in ((4, 2, 3, 3), (4, 2), (18, 2), (4, 2)))
    b, c = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)
    p = low_rank_parameters(w, b, u, v, c, bb)
    explicit = w.reshape(4, 18) + sum(c[k] * torch.outer(u[:, k], v[:, k]) for k in range(2))
    assert torch.allclose(p["weight"], explicit.view(4, 2, 3, 3))
    assert torch.allclose(p["bias"], b + bb @ c)


# --- conditioning modules -------------------------------------------------------------------------
@pytest.mark.parametrize("n_tasks", [1, 3])
@pytest.mark.parametrize(("encoder", "heads"), [("film", "lowrank"), ("lora", "lowrank"), ("film", "none"),
                                                ("none", "lowrank")])
def test_conditioned_model_shapes_and_identity_at_init(n_tasks, encoder, heads):
    torch.manual_seed(0)
    base = _conv_model(n_tasks)
    model = PreferenceConditionedModel(base, encoder=encoder, heads=heads, hidden=8, rank=2)
    x = torch.randn(5, 1, 8, 8)
    expected = base(x)
    for pref in ([1.0] * n_tasks, np.arange(1, n_tasks + 1)):
        model.set_preference(pref)
        out = model(x)
        assert {k: v.shape for k, v in out.items()} == {f"t{i}": (5, 2 + i) for i in range(n_tasks)}
        for k in out:  # zero-initialized hypernetwork outputs: exactly the base model
            assert torch.equal(out[k], expected[k])


def test_parameter_split_follows_the_base_model():
    base = _conv_model(2)
    enc, heads = conditionable_layers(base)
    assert list(enc) == ["encoder.0", "encoder.2", "encoder.4"]
    assert list(heads) == ["heads.t0.0", "heads.t0.2", "heads.t1.0", "heads.t1.2"]
    model = PreferenceConditionedModel(base, hidden=8, rank=2)
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in base.shared_parameters()} <= shared
    assert {id(p) for p in model.encoder_conditioning.parameters()} <= shared
    assert not shared & {id(p) for p in model.head_conditioning.parameters()}  # one hypernetwork per head layer


def test_gradients_reach_the_hypernetworks_and_a_preference_changes_the_output():
    torch.manual_seed(0)
    model = PreferenceConditionedModel(_conv_model(2), hidden=8, rank=2)
    x = torch.randn(6, 1, 8, 8)
    model.set_preference([0.3, 0.7])
    out = model(x)
    (out["t0"].square().sum() + out["t1"].square().sum()).backward()
    film_out = model.encoder_conditioning.net[2].weight.grad
    u = model.head_conditioning.layers["heads__t0__2"].u.grad
    assert film_out is not None and film_out.abs().sum() > 0
    assert u is not None and u.abs().sum() > 0
    _perturb(model)
    a = model(x)["t0"]
    model.set_preference([0.9, 0.1])
    assert (model(x)["t0"] - a).abs().max() > 1e-3


@pytest.mark.parametrize("encoder", ["film", "lora"])
def test_specialised_state_dict_is_a_plain_model_computing_the_same(encoder):
    torch.manual_seed(0)
    model = PreferenceConditionedModel(_conv_model(3), encoder=encoder, hidden=8, rank=2)
    _perturb(model)
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    model.set_preference([0.2, 0.5, 0.3])
    state = model.specialised_state_dict([0.6, 0.3, 0.1])
    assert model.preference.tolist() == pytest.approx([0.2, 0.5, 0.3])  # left unchanged
    plain = _conv_model(3)
    plain.load_state_dict(state)  # strict: exactly the base model's keys
    model.set_preference([0.6, 0.3, 0.1])
    for k, v in model(x).items():
        assert torch.allclose(plain.eval()(x)[k], v, rtol=1e-6, atol=1e-6)


def test_bad_preferences_and_settings_are_refused():
    model = PreferenceConditionedModel(_conv_model(2), hidden=4, rank=1)
    for bad in ([1.0], [-1.0, 2.0], [0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="preference"):
            model.set_preference(bad)
    with pytest.raises(ValueError, match="unknown encoder conditioning"):
        PreferenceConditionedModel(_conv_model(2), encoder="spline")
    with pytest.raises(ConfigError, match="both none"):
        split_psl_config({"psl": {"encoder": "none", "heads": "none"}})
    with pytest.raises(ConfigError, match="unknown config key psl.rnak"):
        split_psl_config({"psl": {"rnak": 3}})


# --- per-batch preferences driving moomtl's methods -------------------------------------------------
def _step(model, x, targets, method):
    out = model(x)
    losses = {t: F.cross_entropy(out[t], targets[t]) for t in model.task_names}
    model.zero_grad()
    info = method.backward(losses, StepContext(model, losses, None))
    return losses, info


def test_conditioned_linear_step_is_the_gradient_of_the_preference_weighted_sum():
    """Reference: autograd of Σ_t λ_t L_t at the model's current λ."""
    torch.manual_seed(0)
    model = PreferenceConditionedModel(_conv_model(2), hidden=8, rank=2)
    _perturb(model)
    x, targets = torch.randn(8, 1, 8, 8), {"t0": torch.randint(0, 2, (8,)), "t1": torch.randint(0, 3, (8,))}
    method = ConditionedMethod(build_method("linear"))
    method.setup(model.task_names, model)
    model.set_preference([0.25, 0.75])
    losses, _ = _step(model, x, targets, method)
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = model(x)
    (0.25 * F.cross_entropy(out["t0"], targets["t0"]) + 0.75 * F.cross_entropy(out["t1"], targets["t1"])).backward()
    for g, p in zip(got, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["tch", "stch", "epo", "cosmos"])
def test_every_scalarization_gets_the_batch_preference(name):
    torch.manual_seed(0)
    model = PreferenceConditionedModel(_conv_model(2), hidden=8, rank=2)
    x, targets = torch.randn(8, 1, 8, 8), {"t0": torch.randint(0, 2, (8,)), "t1": torch.randint(0, 3, (8,))}
    method = ConditionedMethod(build_method(name))
    method.setup(model.task_names, model)
    for pref in ([0.2, 0.8], [0.7, 0.3]):
        model.set_preference(pref)
        _, info = _step(model, x, targets, method)
        assert method.inner.pref.tolist() == pytest.approx(pref)
        assert all(p.grad is not None for p in model.base.parameters())
    if name == "tch":  # Tchebycheff weights: λ_a on the active task only
        w = [float(info["weight/t0"]), float(info["weight/t1"])]
        assert sorted(w) == pytest.approx([0.0, 0.3]) or sorted(w) == pytest.approx([0.0, 0.7])


def test_preference_sampler_draws_on_the_simplex_per_step():
    model = PreferenceConditionedModel(_conv_model(3), hidden=4, rank=1)
    sampler = PreferenceSampler(alpha=0.5)
    state = TrainState(model=model, optimizer=None)  # the sampler reads the model only
    torch.manual_seed(3)
    draws = []
    sampler.on_train_begin(state)
    for _ in range(4):
        draws.append(model.preference.clone())
        sampler.on_step_end(state)
    stacked = torch.stack(draws)
    assert (stacked >= 0).all() and torch.allclose(stacked.sum(1), torch.ones(4))
    assert len({tuple(d.tolist()) for d in draws}) == 4
    torch.manual_seed(3)
    sampler.on_train_begin(state)
    assert model.preference.tolist() == draws[0].tolist()  # the global RNG: a checkpoint restores it


# --- a tiny real run ---------------------------------------------------------------------------------
def _raw(tmp_path, out, **train):
    return {
        "data": {"dataset": "multimnist", "source": "mnist5k", "n_train": 2000, "n_val": 300, "n_test": 500},
        "method": {"name": "linear"},
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 1, "batch_size": 128, "progress": False, **train},
        "psl": {"hidden": 16, "rank": 2},
        "out": str(tmp_path / out),
    }


@pytest.fixture(scope="module")
def tiny_splits(tiny_multimnist):
    """512 training pairs of the session's tiny real MultiMNIST (4 steps of 128), 100 val, 200 test."""
    d = tiny_multimnist
    return DataSplits(d.train.subset(512), d.val.subset(100), d.test.subset(200), d.description, d.tasks)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_splits):
    tmp = tmp_path_factory.mktemp("psl")
    cfg, pcfg = split_psl_config(_raw(tmp, "run"))
    rep = run_psl(cfg, pcfg, n_preferences=3, splits=tiny_splits)
    return tmp, cfg, pcfg, rep


def test_psl_run_writes_a_strict_json_front_on_the_lattice(tiny_run):
    tmp, cfg, _, rep = tiny_run
    res = mio.read_json(tmp / "run" / "results.json")  # strict: no NaN/Infinity
    assert res["kind"] == "psl" and res["method"] == "psl:linear" and res["task_names"] == ["left", "right"]
    assert [r["preference"] for r in res["rows"]] == lattice_for(3, 2).tolist()
    assert res["train_steps"] == 4 and rep.summary["train_steps"] == 4  # 512 pairs / batch 128, one epoch
    assert all(set(r["val"]) >= {"left/loss", "right/acc"} for r in res["rows"])
    assert res["hypervolume"] == pytest.approx(rep.report.hypervolume)
    losses = np.array([[r["left/loss"], r["right/loss"]] for r in res["rows"]])
    assert np.ptp(losses, axis=0).max() > 0  # the preference changes the learned model's losses
    for name in ("config.yaml", "model.pt", "result.json", "results.md", "pareto.png", "checkpoint.pt"):
        assert (tmp / "run" / name).is_file()


def test_export_loads_weights_only_into_a_plain_model_reproducing_evaluate(tiny_run, tiny_splits):
    tmp, cfg, _, _ = tiny_run
    run = load_psl_run(tmp / "run", splits=tiny_splits)
    pref = [0.3, 0.7]
    reported = run.evaluate(pref, "test")
    written = run.export(pref, tmp / "export" / "picked.pt")
    state = torch.load(written["model"], weights_only=True)
    plain = build_model("hps_lenet", ["left", "right"], [10, 10])
    plain.load_state_dict(state)
    assert evaluate(plain, tiny_splits.test, tiny_splits.task_specs()) == pytest.approx(reported, rel=1e-6, abs=1e-7)
    exported_cfg = load_config(written["config"])  # a plain moomtl config: `moomtl train` reads it
    assert exported_cfg.method == {"name": "linear", "weights": [0.3, 0.7]}
    with pytest.raises(RunFolderError, match="already exists"):
        run.export(pref, tmp / "export" / "picked.pt")
    row = next(r for r in mio.read_json(tmp / "run" / "results.json")["rows"] if r["preference"] == [0.5, 0.5])
    assert run.evaluate([0.5, 0.5], "test")["left/loss"] == pytest.approx(row["left/loss"], rel=1e-9)
    with pytest.raises(RunFolderError, match="no finished psl run"):
        load_psl_run(tmp / "export")


def test_refusals_are_one_line(tiny_run, tmp_path):
    tmp, cfg, _, _ = tiny_run
    folder = str(tmp / "run")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_raw(tmp, "run")))
    r = runner.invoke(app, ["psl", "--config", str(cfg_path), "--out", folder])
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = runner.invoke(app, ["psl", "--config", str(cfg_path), "--out", folder, "--resume", "--set", "psl.rank=3"])
    assert r.exit_code == 2 and "psl.rank: 2 → 3" in r.output
    r = runner.invoke(app, ["psl", "--config", str(cfg_path), "--out", folder, "--method", "mgda"])
    assert r.exit_code == 2 and "cannot train a preference-conditioned model" in r.output
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    mio.write_json(sweep_dir / "results.json", {"task_names": ["left", "right"], "rows": [], "method": "linear"})
    r = runner.invoke(app, ["psl", "--config", str(cfg_path), "--out", str(sweep_dir), "--resume"])
    assert r.exit_code == 2 and "report of a sweep" in r.output


def test_resume_continues_with_more_epochs(tiny_run, tiny_splits):
    tmp, cfg, pcfg, _ = tiny_run
    more = copy.deepcopy(cfg)
    more.train.epochs = 2
    rep = run_psl(more, pcfg, n_preferences=2, resume=True, splits=tiny_splits)
    assert rep.resumed_from == 1 and rep.summary["train_steps"] == 8
    res = mio.read_json(tmp / "run" / "results.json")
    assert res["train_steps"] == 8 and len(res["rows"]) == 2


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_splits):
    """Reference: the same two epochs trained without a stop (bit for bit: the preference draws come from
    the checkpointed RNG state and model buffer)."""
    a_cfg, pcfg = split_psl_config(_raw(tmp_path, "a", epochs=2))
    run_psl(a_cfg, pcfg, n_preferences=3, splits=tiny_splits)
    b_cfg, _ = split_psl_config(_raw(tmp_path, "b", epochs=1))
    run_psl(b_cfg, pcfg, n_preferences=3, splits=tiny_splits)
    b_cfg.train.epochs = 2
    run_psl(b_cfg, pcfg, n_preferences=3, resume=True, splits=tiny_splits)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
