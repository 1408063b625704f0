"""MGDA, MGDA-UB, gradient normalizers and the per-task Jacobian engine of the step context."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from moomtl.methods import available_methods, build_method
from moomtl.methods.base import method_hyperparameters
from moomtl.methods.normalizers import NORMALIZERS, gradient_scales, normalize_gramian, normalize_jacobian
from moomtl.models.base import HardParameterSharing, MultiTaskModel
from moomtl.models.lenet import hps_lenet
from moomtl.train.context import StepContext, batched_jacobian, branch_jacobian, task_jacobian


# --- helpers ---------------------------------------------------------------------------------------
class AddParameter(nn.Module):
    """An identity encoder with a shared parameter: ``z = x + θ`` with ``θ`` shaped like ``z``, so
    ``∂z/∂θ = I`` and the gradients w.r.t. ``z`` and ``θ`` coincide."""

    def __init__(self, batch: int, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(0.1 * torch.randn(batch, dim, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.theta


def _mlp_heads(n_tasks: int, dim: int, classes: int = 3) -> dict[str, nn.Module]:
    return {
        f"t{i}": nn.Sequential(nn.Linear(dim, 5), nn.Tanh(), nn.Linear(5, classes)).double()
        for i in range(n_tasks)
    }


def _losses(model: MultiTaskModel, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    z = model.encode(x)
    out = model.decode(z, x)
    return {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}, z


def _step(model: MultiTaskModel, method_name: str, x: Tensor, y: Tensor, **kw) -> tuple[dict, list[Tensor]]:
    method = build_method(method_name, **kw)
    method.setup(model.task_names, model)
    model.zero_grad(set_to_none=True)
    losses, z = _losses(model, x, y)
    info = method.backward(losses, StepContext(model, losses, z))
    return info, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def per_task_rows(losses: dict[str, Tensor], params: list[Tensor]) -> Tensor:
    """``[T, n]``: row t is one ``autograd.grad(L_t, params)`` flattened (zeros where unused) — the
    reference Jacobian of the tests, independent of the context's engine."""
    rows = []
    for loss in losses.values():
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(gs, params, strict=True)]))
    return torch.stack(rows)


def _per_task_grads(model: MultiTaskModel, x: Tensor, y: Tensor, params: list[Tensor]) -> Tensor:
    return per_task_rows(_losses(model, x, y)[0], params)


# --- normalizers -----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_normalizers_match_their_definitions(n_tasks, dim, seed):
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(n_tasks, dim, generator=g, dtype=torch.float64)
    losses = torch.rand(n_tasks, generator=g, dtype=torch.float64) + 0.1
    gram = jac @ jac.T
    norms = jac.norm(dim=1)
    ones = torch.ones(n_tasks, dtype=torch.float64)
    expected = {"l2": norms, "loss": losses, "loss+": losses * norms, "none": ones}
    for kind in NORMALIZERS:
        s = gradient_scales(gram, losses, kind)
        torch.testing.assert_close(s, expected[kind])
        nj = normalize_jacobian(jac, s)
        torch.testing.assert_close(normalize_gramian(gram, s), nj @ nj.T)
    unit = normalize_jacobian(jac, gradient_scales(gram, losses, "l2"))
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(n_tasks, dtype=torch.float64))


def test_normalizers_never_divide_by_zero_and_reject_bad_input():
    jac = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    gram = jac @ jac.T
    for kind in NORMALIZERS:
        s = gradient_scales(gram, torch.tensor([0.0, 2.0]), kind)
        assert torch.isfinite(normalize_gramian(gram, s)).all()
        assert (s > 0).all()
    assert gradient_scales(gram, torch.tensor([1.0, 2.0]), "l2").tolist() == [1.0, 5.0]
    with pytest.raises(ValueError, match="unknown gradient normalizer"):
        gradient_scales(gram, torch.ones(2), "max")
    with pytest.raises(ValueError, match="non-negative losses"):
        gradient_scales(gram, torch.tensor([-1.0, 1.0]), "loss")
    with pytest.raises(ValueError, match="3 losses for a 2×2"):
        gradient_scales(gram, torch.ones(3), "none")
    with pytest.raises(ValueError, match="normalization must be one of"):
        build_method("mgda", normalization="L2")
    with pytest.raises(ValueError, match="solver must be one of"):
        build_method("mgda_ub", solver="cvx")


# --- Jacobian engine -------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_branch_and_two_stage_jacobians_match_per_task_backward(n_tasks, seed):
    torch.manual_seed(seed)
    model = HardParameterSharing(nn.Sequential(nn.Linear(4, 6), nn.ReLU()).double(), _mlp_heads(n_tasks, 6))
    x = torch.randn(7, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (7, n_tasks))
    losses, z = _losses(model, x, y)
    ctx = StepContext(model, losses, z)
    ref_z = batched_jacobian(ctx.loss_vector, [z])
    jz = branch_jacobian(list(losses.values()), z)
    assert jz is not None
    torch.testing.assert_close(jz, ref_z)
    torch.testing.assert_close(ctx.jacobian("representation"), ref_z)
    ref = _per_task_grads(model, x, y, model.shared_parameters())
    torch.testing.assert_close(ctx.jacobian("shared"), ref)
    torch.testing.assert_close(ctx.gramian("shared"), ref @ ref.T)


class SharedTrunk(MultiTaskModel):
    """Tasks share a decoder layer after z (so their sub-graphs share nodes) and one of them reads a
    shared parameter directly (a path that bypasses z)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, 4).double()
        self.trunk = nn.Linear(4, 4).double()
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 1).double(), "b": nn.Linear(4, 1).double()})
        self.task_names = ("a", "b")

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        h = torch.tanh(self.trunk(z))
        return {"a": self.heads["a"](h), "b": self.heads["b"](h) + self.encoder.bias.sum()}

    def shared_modules(self) -> nn.Module:
        return self.encoder


class Bypass(SharedTrunk):
    """Disjoint heads, but head "b" also reads a shared parameter directly."""

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        return {"a": self.heads["a"](z), "b": self.heads["b"](torch.tanh(z)) * self.encoder.weight.sum()}


@pytest.mark.parametrize("model_cls", [SharedTrunk, Bypass])
def test_jacobian_falls_back_when_heads_share_nodes_or_bypass_z(model_cls):
    torch.manual_seed(0)
    model = model_cls()
    x = torch.randn(5, 3, dtype=torch.float64)
    z = model.encode(x)
    out = model.decode(z, x)
    losses = {t: out[t].pow(2).mean() for t in ("a", "b")}
    if model_cls is SharedTrunk:
        assert branch_jacobian(list(losses.values()), z) is None
    shared = model.shared_parameters()
    jac = task_jacobian(list(losses.values()), shared, through=z)
    ref = torch.stack([
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], shared, retain_graph=True)])
        for t in ("a", "b")
    ])
    torch.testing.assert_close(jac, ref)
    torch.testing.assert_close(StepContext(model, losses, z).jacobian("representation"),
                               batched_jacobian(torch.stack(list(losses.values())), [z]))


def test_lenet_jacobians_match_and_graph_is_kept():
    torch.manual_seed(1)
    model = hps_lenet(("a", "b", "c"), dropout=0.0)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4, 3))
    losses, z = _losses(model, x, y)
    ctx = StepContext(model, losses, z)
    torch.testing.assert_close(ctx.jacobian("shared"), batched_jacobian(ctx.loss_vector, ctx.shared_params))
    torch.testing.assert_close(ctx.jacobian("representation"), batched_jacobian(ctx.loss_vector, [z]))
    ctx.loss_vector.sum().backward()  # the graph is still there for the method's own backward


@pytest.mark.parametrize("model_name", ["lenet", "trunk", "bypass"])
@pytest.mark.parametrize("wrt", ["representation", "shared", None])
def test_weighted_and_task_specific_backward_after_a_jacobian_match_plain_autograd(model_name, wrt):
    """A per-task Jacobian pass (retained graph) leaves the weighted and task-specific backward passes
    exact, whichever Jacobian path (per-loss loop or vmap fallback) was taken."""
    torch.manual_seed(3)
    if model_name == "lenet":
        model = hps_lenet(("a", "b", "c"), dropout=0.0).double()
        x, y = torch.randn(5, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (5, 3))
    else:
        model = SharedTrunk() if model_name == "trunk" else Bypass()
        x, y = torch.randn(5, 3, dtype=torch.float64), None
    w = torch.rand(len(model.task_names), dtype=torch.float64)

    def fresh() -> tuple[dict[str, Tensor], Tensor]:
        model.zero_grad(set_to_none=True)
        if y is not None:
            return _losses(model, x, y)
        z = model.encode(x)
        out = model.decode(z, x)
        return {t: out[t].pow(2).mean() for t in model.task_names}, z

    for action in ("weighted", "task_specific"):
        losses, _ = fresh()
        lv = torch.stack([losses[t] for t in model.task_names])
        if action == "weighted":
            (w * lv).sum().backward()
        else:
            params = model.task_specific_parameters()
            grads = torch.autograd.grad((w * lv).sum(), params, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        expected = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        losses, z = fresh()
        ctx = StepContext(model, losses, z)
        if wrt is not None:
            ctx.jacobian(wrt)
        ctx.backward_weighted(w) if action == "weighted" else ctx.backward_task_specific(w)
        for e, p in zip(expected, model.parameters(), strict=True):
            if e is None:
                assert p.grad is None or not p.grad.any()
            else:
                torch.testing.assert_close(p.grad, e)


# --- MGDA and MGDA-UB ------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(st.integers(2, 5), st.sampled_from(NORMALIZERS), st.booleans(), st.integers(0, 2**31 - 1))
def test_mgda_ub_with_identity_encoder_equals_mgda(n_tasks, normalization, scale_heads, seed):
    torch.manual_seed(seed)
    batch, dim = 6, 4
    model = HardParameterSharing(AddParameter(batch, dim), _mlp_heads(n_tasks, dim))
    x = torch.randn(batch, dim, dtype=torch.float64)
    y = torch.randint(0, 3, (batch, n_tasks))
    kw = {"normalization": normalization, "scale_task_specific": scale_heads}
    info_full, grads_full = _step(model, "mgda", x, y, **kw)
    info_ub, grads_ub = _step(model, "mgda_ub", x, y, **kw)
    assert info_full.keys() == info_ub.keys()
    for k in info_full:
        assert float(info_ub[k]) == pytest.approx(float(info_full[k]), abs=1e-7)
    for a, b in zip(grads_full, grads_ub, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_mgda_direction_is_a_common_descent_direction(n_tasks, seed):
    torch.manual_seed(seed)
    model = HardParameterSharing(nn.Sequential(nn.Linear(3, 5), nn.Tanh()).double(), _mlp_heads(n_tasks, 5))
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (8, n_tasks))
    info, _ = _step(model, "mgda", x, y)
    alpha = torch.tensor([info[f"weight/{t}"] for t in model.task_names], dtype=torch.float64)
    assert (alpha >= 0).all() and alpha.sum().item() == pytest.approx(1.0)
    shared = model.shared_parameters()
    d = torch.cat([p.grad.reshape(-1) for p in shared])
    jac = _per_task_grads(model, x, y, shared)
    torch.testing.assert_close(d, alpha @ jac)
    # Min-norm optimality (KKT): g_t·d ≥ ‖d‖² for every task, so −d decreases every loss.
    scale = jac.norm(dim=1).max().item() ** 2
    assert (jac @ d >= d @ d - 1e-7 * scale).all()
    if d.norm() > 1e-6:
        before = torch.stack(list(_losses(model, x, y)[0].values()))
        with torch.no_grad():
            offset = 0
            for p in shared:
                p -= 1e-4 / d.norm() * d[offset: offset + p.numel()].view_as(p)
                offset += p.numel()
        after = torch.stack(list(_losses(model, x, y)[0].values()))
        assert (after < before).all()


def test_mgda_on_hand_computed_two_task_case():
    """g1 = (1, 0), g2 = (0, 2): α = (0.8, 0.2), d = (0.8, 0.4) with g1·d = g2·d = ‖d‖² = 0.8."""

    class Probe(MultiTaskModel):
        def __init__(self) -> None:
            super().__init__()
            self.theta = nn.Parameter(torch.zeros(2, dtype=torch.float64))
            self.task_names = ("a", "b")

        def encode(self, x: Tensor) -> Tensor:
            return self.theta.expand(x.shape[0], 2)

        def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
            return {"a": z[:, 0].mean(), "b": 2 * z[:, 1].mean()}

        def shared_modules(self) -> nn.Module:
            return self

    for name in ("mgda", "mgda_ub"):
        model = Probe()
        method = build_method(name)
        method.setup(model.task_names, model)
        x = torch.zeros(3, 1)
        z = model.encode(x)
        losses = model.decode(z, x)
        info = method.backward(losses, StepContext(model, losses, z))
        assert info == pytest.approx({"weight/a": 0.8, "weight/b": 0.2})
        torch.testing.assert_close(model.theta.grad, torch.tensor([0.8, 0.4], dtype=torch.float64))


def test_mgda_task_specific_gradients_are_scaled_or_not():
    torch.manual_seed(0)
    model = hps_lenet(dropout=0.0).double()
    x, y = torch.randn(5, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (5, 2))
    heads = model.task_specific_parameters()
    plain = _per_task_grads(model, x, y, heads)
    for name in ("mgda", "mgda_ub"):
        for scaled in (True, False):
            info, _ = _step(model, name, x, y, scale_task_specific=scaled)
            alpha = torch.tensor([info["weight/left"], info["weight/right"]], dtype=torch.float64)
            got = torch.cat([p.grad.reshape(-1) for p in heads])
            expected = (alpha if scaled else torch.ones(2, dtype=torch.float64)) @ plain
            torch.testing.assert_close(got, expected)


# --- registry --------------------------------------------------------------------------------------
def test_all_methods_are_registered_with_descriptions_and_defaults():
    """Over the whole registry: a method is checked by being registered (no hand-kept list)."""
    methods = available_methods()
    assert {"mgda", "mgda_ub"} <= set(methods)  # this module's methods
    for name in methods:
        assert methods[name].description and methods[name].name == name
        hp = method_hyperparameters(name)
        build_method(name, **{k: v for k, v in hp.items()})  # every hyper-parameter has a default
    assert "normalization" in method_hyperparameters("mgda")
    assert set(method_hyperparameters("rlw")) == {"distribution", "beta", "seed"}
    with pytest.raises(ValueError, match="no hyper-parameter"):
        build_method("cagrad", alpha=0.5)


def test_cli_lists_the_methods():
    typer_testing = pytest.importorskip("typer.testing")
    from moomtl.cli import app

    result = typer_testing.CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    for name in available_methods():
        assert name in result.output


# --- end to end ------------------------------------------------------------------------------------
def test_mgda_ub_trains_hps_lenet_on_real_multimnist_above_chance(tiny_multimnist):
    from moomtl.train.trainer import Trainer

    data = tiny_multimnist
    small = type(data)(data.train, data.val.subset(100), data.test.subset(400), data.description)
    torch.manual_seed(0)
    trainer = Trainer(hps_lenet(), build_method("mgda_ub", normalization="loss+"), optimizer="SGD",
                      optimizer_kwargs={"lr": 0.1, "momentum": 0.9}, epochs=4, batch_size=64, seed=0)
    res = trainer.fit(small)
    first, last = res.history[0], res.history[-1]
    for t in ("left", "right"):
        assert last[f"test/{t}/acc"] > 0.4, res.final  # chance is 0.1
        assert last[f"train/{t}/loss"] < first[f"train/{t}/loss"]
        assert 0.0 <= last[f"train/weight/{t}"] <= 1.0
    assert math.isclose(last["train/weight/left"] + last["train/weight/right"], 1.0, rel_tol=1e-5)
