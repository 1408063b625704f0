from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.autodiff import StepContext, batched_jacobian
from moomtl.methods import build_method
from moomtl.models.lenet import hps_lenet


def _losses(model, x, y):
    z = model.encode(x)
    out = model.decode(z, x)
    return {t: torch.nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(out)}, z


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000))
def test_batched_jacobian_matches_per_task_backward(seed):
    torch.manual_seed(seed)
    model = hps_lenet(dropout=0.0)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6, 2))
    losses, z = _losses(model, x, y)
    ctx = StepContext(model, losses, z)
    jac = ctx.jacobian("shared")
    for i, t in enumerate(ctx.task_names):
        model.zero_grad()
        losses[t].backward(retain_graph=True)
        ref = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
        torch.testing.assert_close(jac[i], ref)
    torch.testing.assert_close(ctx.gramian("shared"), jac @ jac.T)
    rep = ctx.jacobian("representation")
    assert rep.shape == (2, z.numel())


def test_unused_inputs_give_zero_rows():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    out = torch.stack([(a**2).sum(), a.sum()])
    jac = batched_jacobian(out, [a, b])
    assert jac.shape == (2, 5)
    torch.testing.assert_close(jac[:, 3:], torch.zeros(2, 2))
    torch.testing.assert_close(jac[0, :3], 2 * a.detach())


def test_weighted_backward_equals_linear_scalarization_gradient():
    torch.manual_seed(0)
    model = hps_lenet(dropout=0.0)
    x, y = torch.randn(5, 1, 28, 28), torch.randint(0, 10, (5, 2))
    losses, z = _losses(model, x, y)
    method = build_method("linear", weights=[0.2, 0.8])
    method.setup(("left", "right"), model)
    info = method.backward(losses, StepContext(model, losses, z))
    assert info == pytest.approx({"weight/left": 0.2, "weight/right": 0.8})
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    losses, _ = _losses(model, x, y)
    (0.2 * losses["left"] + 0.8 * losses["right"]).backward()
    for g, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_set_shared_direction_and_task_specific_backward():
    torch.manual_seed(0)
    model = hps_lenet(dropout=0.0)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4, 2))
    losses, z = _losses(model, x, y)
    ctx = StepContext(model, losses, z)
    n = sum(p.numel() for p in ctx.shared_params)
    ctx.set_shared_direction(torch.arange(n, dtype=torch.float32))
    assert ctx.shared_params[0].grad.reshape(-1)[1] == 1.0
    ctx.backward_task_specific()
    head_left = model.heads["left"][0].weight
    assert head_left.grad is not None and model.heads["right"][0].weight.grad is not None


@pytest.mark.parametrize("weights", [None, torch.tensor([0.3, 1.7])])
def test_head_gradients_reused_from_the_jacobian_calls_equal_a_backward_pass(weights):
    """Reference: ``autograd.grad(Σ w_t L_t, task-specific params)`` (the second pass it replaces)."""
    torch.manual_seed(0)
    model = hps_lenet(dropout=0.0).double()
    x, y = torch.randn(6, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (6, 2))
    losses, z = _losses(model, x, y)
    lv = torch.stack(list(losses.values()))
    w = torch.ones(2, dtype=torch.float64) if weights is None else weights.double()
    ref = torch.autograd.grad((w * lv).sum(), model.task_specific_parameters(), retain_graph=True)
    ctx = StepContext(model, losses, z, structure={})
    ctx.jacobian("shared")
    assert ctx._head_grads is not None  # the reuse path ran (disjoint HPS heads)
    ctx.backward_task_specific(weights)
    for p, r in zip(model.task_specific_parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, r, rtol=1e-12, atol=1e-14)


def test_jacobian_with_respect_to_any_tensors_and_cached_structure():
    """``wrt`` may be a layer's output or a subset of parameters (reference: one backward per task);
    the disjoint-heads walk is done once per ``structure`` dict."""
    torch.manual_seed(1)
    model = hps_lenet(dropout=0.0).double()
    x, y = torch.randn(5, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (5, 2))
    structure: dict = {}
    losses, z = _losses(model, x, y)
    layer = list(model.shared_parameters())[:2]
    ctx = StepContext(model, losses, z, structure=structure)
    jac = ctx.jacobian(layer)
    for i, t in enumerate(ctx.task_names):
        g = torch.autograd.grad(losses[t], layer, retain_graph=True)
        torch.testing.assert_close(jac[i], torch.cat([v.reshape(-1) for v in g]))
    torch.testing.assert_close(ctx.jacobian(z), ctx.jacobian("representation"))
    ctx.jacobian("shared")
    assert set(structure) == {"heads_disjoint", "head_owner"} and structure["heads_disjoint"] is True
    heads = model.heads
    assert structure["head_owner"] == {id(p): i for i, t in enumerate(ctx.task_names) for p in heads[t].parameters()}
    with pytest.raises(ValueError, match="wrt must be"):
        ctx.jacobian("everything")


@pytest.mark.parametrize("name", ["pcgrad", "cagrad", "rgw", "mgda"])
def test_representation_variant_of_gramian_methods(name):
    """``wrt: representation`` (LibMTL's ``rep_grad``): the coefficients come from the Gramian of ∂L/∂z
    and the shared parameters get ``∇ Σ_t c_t L_t`` (reference: autograd of that sum); for MGDA this is
    exactly MGDA-UB."""
    torch.manual_seed(3)
    model = hps_lenet(dropout=0.0).double()
    x, y = torch.randn(6, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (6, 2))
    kw = {} if name == "mgda" else {"wrt": "representation"}
    method = build_method("mgda_ub" if name == "mgda" else name, **kw)
    method.setup(model.task_names, model)
    losses, z = _losses(model, x, y)
    ctx = StepContext(model, losses, z)
    info = method.backward(losses, ctx)
    got = [p.grad.clone() for p in model.shared_parameters()]
    # Coefficients the method applied to the losses: re-derive them from its logged weights.
    lam = torch.stack([info[f"weight/{t}"] for t in model.task_names]).double()
    if name == "rgw":
        lam = lam / ctx.gramian("representation").diagonal().sqrt()
    model.zero_grad(set_to_none=True)
    losses, z = _losses(model, x, y)
    ref = torch.autograd.grad((lam * torch.stack(list(losses.values()))).sum(), model.shared_parameters())
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="wrt must be"):
        build_method("pcgrad", wrt="layer")


def _hps_and_loop_view(seed: int, batch: int):
    """A float64 HPS LeNet, a batch, its heads' parameters in task order, and the ``mtl_backward`` adapter
    over the same parameters (a model view without a ``heads`` mapping)."""
    from moomtl.api import _LoopModel

    torch.manual_seed(seed)
    model = hps_lenet(dropout=0.0).double()
    x, y = torch.randn(batch, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (batch, 2))
    specific = [p for t in model.task_names for p in model.heads[t].parameters()]
    return model, x, y, specific, _LoopModel(model.task_names, list(model.shared_parameters()), specific)


@pytest.mark.parametrize("owner_known", [True, False])
@pytest.mark.parametrize("head_weights", ["coef", "ones"])
def test_representation_rows_keep_head_gradients_without_aliases(owner_known, head_weights, monkeypatch):
    """One z fed to every head (no aliases, as a user's loop does with ``mtl_backward(features=z)``): ONE
    autograd call (hooks on the heads' reads of z) gives the rows ∂L_t/∂z and each head's own gradient, and
    ``apply_coefficients`` then needs no second pass through the heads. Reference: T separate
    ``autograd.grad(L_t, z)`` for the rows, autograd of Σ_t c_t L_t (shared) and of Σ_t w_t L_t (heads),
    w = c or 1. With ``owner_known=False`` the model has no ``heads`` mapping (the ``mtl_backward``
    adapter): each head's parameters are the leaves its graph reaches above z."""
    model, x, y, specific, loop_view = _hps_and_loop_view(seed=5, batch=6)
    names = model.task_names
    view = model if owner_known else loop_view
    structure: dict = {}
    coef = torch.tensor([0.3, 1.7], dtype=torch.float64)
    real, calls = torch.autograd.grad, []

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    for _step in range(2):
        model.zero_grad(set_to_none=True)
        losses, z = _losses(model, x, y)
        ctx = StepContext(view, losses, z, structure=structure)
        calls.clear()
        monkeypatch.setattr(torch.autograd, "grad", counting)
        rows = ctx.jacobian("representation")
        monkeypatch.setattr(torch.autograd, "grad", real)
        assert len(calls) == 1
        for i, t in enumerate(names):
            torch.testing.assert_close(rows[i], torch.autograd.grad(losses[t], z, retain_graph=True)[0].reshape(-1),
                                       rtol=1e-12, atol=1e-14)
        assert ctx._head_grads is not None and all(len(pairs) == 4 for pairs in ctx._head_grads)
        hw = coef if head_weights == "coef" else None
        ctx.apply_coefficients(coef, "representation", head_weights=hw)
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        losses, z = _losses(model, x, y)
        lv = torch.stack([losses[t] for t in names])
        w = coef if hw is not None else torch.ones(2, dtype=torch.float64)
        ref_shared = torch.autograd.grad((coef * lv).sum(), list(model.shared_parameters()), retain_graph=True)
        ref_heads = torch.autograd.grad((w * lv).sum(), specific)
        for g, r in zip(got, [*ref_shared, *ref_heads], strict=True):
            torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)


def test_a_task_without_a_graph_in_the_first_step_is_found_later():
    """Without a ``heads`` mapping, the parameters each task reaches are found on the first step and cached;
    a task whose loss had no graph in that step (no label in the batch) must not be cached as reaching
    nothing: on the next step its head gets its gradient. Reference: autograd of L_t w.r.t. head t."""
    model, x, y, _, view = _hps_and_loop_view(seed=6, batch=4)
    names = model.task_names
    structure: dict = {}
    losses, z = _losses(model, x, y)
    losses[names[1]] = torch.tensor(0.0, dtype=torch.float64)  # no label of task 1 in this batch
    ctx = StepContext(view, losses, z, structure=structure)
    rows = ctx.jacobian("representation")
    assert torch.equal(rows[1], torch.zeros_like(rows[1])) and ctx._head_grads[1] == []
    model.zero_grad(set_to_none=True)
    losses, z = _losses(model, x, y)
    ctx = StepContext(view, losses, z, structure=structure)
    ctx.jacobian("representation")
    ctx.apply_coefficients(torch.tensor([0.5, 0.5], dtype=torch.float64), "representation")
    ref = torch.autograd.grad(losses[names[1]], list(model.heads[names[1]].parameters()))
    for p, r in zip(model.heads[names[1]].parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n_tasks", [2, 5])
def test_representation_rows_come_from_one_call_with_or_without_aliases(n_tasks):
    """Reference: the T separate autograd.grad(L_t, z) calls (``branch_jacobian``). With one alias of z per
    head (what the trainer passes for hard parameter sharing), and with one z fed to every head (hooks on
    the heads' reads of z), one engine call gives bit-identical rows."""
    from moomtl.autodiff import branch_jacobian
    from moomtl.models.registry import build_model

    names = tuple(f"t{i}" for i in range(n_tasks))
    model = build_model("hps_lenet", names, [10] * n_tasks, input_shape=(1, 28, 28)).eval()
    assert model.decodes_per_task
    x = torch.randn(8, 1, 28, 28)
    y = {t: torch.randint(0, 10, (8,)) for t in names}
    calls = []
    real = torch.autograd.grad

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    rows = []
    for alias in (False, True):
        z = model.encode(x)
        aliases = {t: z.view_as(z) for t in names} if alias else None
        out = model.decode(aliases if alias else z, x)
        losses = {t: torch.nn.functional.cross_entropy(out[t], y[t]) for t in names}
        ctx = StepContext(model, losses, z, z_aliases=[aliases[t] for t in names] if alias else None)
        calls.clear()
        torch.autograd.grad = counting
        try:
            rows.append(ctx.jacobian("representation"))
        finally:
            torch.autograd.grad = real
        assert len(calls) == 1
        ref = branch_jacobian(list(losses.values()), z)
        assert ref is not None and torch.equal(rows[-1], ref)
    assert torch.equal(rows[0], rows[1])
    with pytest.raises(ValueError, match="one per task"):
        StepContext(model, losses, z, z_aliases=[z])


def test_trainer_with_aliases_equals_trainer_without(tiny_multimnist):  # reference: the path without aliases
    from moomtl.data.base import DataSplits
    from moomtl.train.trainer import Trainer

    d = tiny_multimnist
    small = DataSplits(d.train.subset(128), d.val.subset(16), d.test.subset(16), d.description)
    params = []
    for per_task in (True, False):
        torch.manual_seed(0)
        model = hps_lenet()
        model.decodes_per_task = per_task  # instance attribute: the trainer's switch
        Trainer(model, build_method("mgda_ub"), epochs=1, batch_size=32).fit(small)
        params.append(model.state_dict())
    # With aliases the encoder gets Σ_t α_t ∂L_t/∂z as one cotangent and the heads their kept gradients
    # (no second pass through the heads); without, one backward of Σ_t α_t L_t: equal up to rounding.
    for k, a in params[0].items():
        assert torch.allclose(a, params[1][k], rtol=1e-5, atol=1e-7), k


@pytest.mark.parametrize("aliases", [False, True])
@pytest.mark.parametrize("batched_fails", [False, True])
def test_rows_of_a_layer_below_z_come_from_the_rows_at_z(aliases, batched_fails, monkeypatch):
    """Rows w.r.t. the encoder's last layer (GradNorm's W) for disjoint heads: the rows at z from one call,
    then one batched product from z down to W (or T products where the batched backward fails). Reference:
    T separate ``autograd.grad(L_t, W)``. A head's parameter is reached above z: that request takes the
    per-task path and still equals its reference."""
    model, x, y, _, _ = _hps_and_loop_view(seed=7, batch=5)
    names = model.task_names
    w = model.encoder.fc.weight
    if batched_fails:
        real = torch.autograd.grad

        def no_batched(*a, **k):
            if k.get("is_grads_batched"):
                raise RuntimeError("no batch rule")
            return real(*a, **k)

        monkeypatch.setattr(torch.autograd, "grad", no_batched)
    z = model.encode(x)
    al = {t: z.view_as(z) for t in names} if aliases else None
    out = model.decode(al if aliases else z, x)
    losses = {t: torch.nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(names)}
    ctx = StepContext(model, losses, z, z_aliases=[al[t] for t in names] if aliases else None)
    rows = ctx.jacobian([w])
    assert "representation" in ctx._jac  # went through the rows at z
    head_w = model.heads[names[0]][0].weight
    head_rows = ctx.jacobian([head_w])
    for i, t in enumerate(names):
        ref = torch.autograd.grad(losses[t], w, retain_graph=True)[0].reshape(-1)
        torch.testing.assert_close(rows[i], ref, rtol=1e-12, atol=1e-14)
        ref_h = torch.autograd.grad(losses[t], head_w, retain_graph=True, allow_unused=True)[0]
        ref_h = torch.zeros_like(head_w) if ref_h is None else ref_h
        torch.testing.assert_close(head_rows[i], ref_h.reshape(-1), rtol=1e-12, atol=1e-14)
    assert torch.count_nonzero(head_rows[1]) == 0  # task 1 does not reach task 0's head


def test_one_call_rows_sum_a_head_that_reads_z_twice():
    """A head reading z in two places (a residual ``lin1(z) + lin2(tanh(z))``): the one-call rows add both
    reads. Reference: T separate ``autograd.grad(L_t, z)``."""
    from torch import nn

    from moomtl.models.base import HardParameterSharing

    class TwoReads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()

        def forward(self, z):
            return self.a(z) + self.b(torch.tanh(z))

    torch.manual_seed(3)
    model = HardParameterSharing(nn.Sequential(nn.Linear(5, 4), nn.Tanh()).double(),
                                 {t: TwoReads() for t in ("p", "q", "r")})
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 3, (7, 3))
    losses, z = _losses(model, x, y)
    ctx = StepContext(model, losses, z)
    rows = ctx.jacobian("representation")
    for i, t in enumerate(model.task_names):
        torch.testing.assert_close(rows[i], torch.autograd.grad(losses[t], z, retain_graph=True)[0].reshape(-1),
                                   rtol=1e-12, atol=1e-14)
    assert all(len(pairs) == 4 for pairs in ctx._head_grads)


def _fusable_configs() -> list[tuple[str, dict]]:
    """Every registered method, in each configuration with ``wrt`` representation (its default, and
    ``wrt="representation"`` where it takes one), that declares a fused representation step."""
    import inspect

    from moomtl.methods import available_methods

    out = []
    for name, cls in sorted(available_methods().items()):
        configs = [{}] + ([{"wrt": "representation"}] if "wrt" in inspect.signature(cls.__init__).parameters else [])
        out.extend((name, kw) for kw in configs if build_method(name, **kw).fuses_representation())
    return out


def _rep_step(model, x, y, aliases: bool, scale: float = 1.0):
    from moomtl.models.base import decode_with_aliases

    z = model.encode(x)
    if aliases:
        out, al = decode_with_aliases(model, z, x, model.task_names)
    else:
        out, al = model.decode(z, x), None
    losses = {t: scale * torch.nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}
    return StepContext(model, losses, z, structure={}, z_aliases=al, loss_scale=scale)


def _count_autograd_calls(monkeypatch, calls: list[str]) -> None:
    real_grad, real_backward = torch.autograd.grad, torch.autograd.backward
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append("grad") or real_grad(*a, **k))
    monkeypatch.setattr(torch.autograd, "backward", lambda *a, **k: calls.append("backward") or real_backward(*a, **k))


def test_the_registry_declares_fused_representation_steps():
    configs = _fusable_configs()
    names = {n for n, _ in configs}
    assert {"mgda_ub", "graddrop", "upgrad", "pcgrad", "nash_mtl"} <= names
    assert ("mgda_ub", {}) in configs and ("upgrad", {}) not in configs  # upgrad's default is wrt="shared"
    assert not build_method("gradnorm").fuses_representation()  # its rows at W need the graph below z
    assert not build_method("mgda").fuses_representation()


@pytest.mark.parametrize("scale", [1.0, 8.0])
@pytest.mark.parametrize("aliases", [True, False])
@pytest.mark.parametrize(("name", "kw"), _fusable_configs())
def test_fused_representation_step_equals_the_two_call_step(name, kw, aliases, scale, monkeypatch):
    """Reference: the same method's backward without fusing (the rows' call, then a backward from z with
    the decided cotangent). ``StepContext.run`` takes the step in ONE engine call (no autograd.grad, one
    backward), with the same gradients bit for bit — also added to gradients already there, and under a
    loss scale."""
    import copy

    names = ("t0", "t1", "t2", "t3")
    torch.manual_seed(0)
    base = hps_lenet(names, n_classes=10).eval()
    x, y = torch.randn(12, 1, 28, 28), torch.randint(0, 10, (12, 4))
    grads = []
    for fused in (False, True):
        model = copy.deepcopy(base)
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():  # a gradient accumulated before the step
            p.grad = torch.randn(p.shape, generator=g)
        method = build_method(name, **kw)
        method.setup(names, model)
        ctx = _rep_step(model, x, y, aliases, scale)
        calls: list[str] = []
        _count_autograd_calls(monkeypatch, calls)
        info = ctx.run(method) if fused else method.backward(ctx.losses, ctx)
        monkeypatch.undo()
        if fused:
            assert calls == ["backward"]
        else:
            assert "grad" in calls
        assert all(torch.isfinite(v).all() for v in info.values())
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_a_fused_step_that_fails_leaves_the_gradients_as_they_were():
    """An error of the method inside the backward (here its weighting) reaches the caller with its own type,
    the heads' gradients are restored and nothing below z has run."""
    from moomtl.methods.jacobian import JacobianMethod

    def bad(gram):
        raise ValueError("weighting: the Gramian is not finite")

    names = ("t0", "t1", "t2")
    torch.manual_seed(0)
    model = hps_lenet(names, n_classes=10).eval()
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6, 3))
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    method = JacobianMethod(weighting=bad, wrt="representation")
    method.setup(names, model)
    for aliases in (True, False):
        ctx = _rep_step(model, x, y, aliases)
        with pytest.raises(ValueError, match="not finite"):
            ctx.run(method)
        assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def test_a_fused_method_that_reads_more_than_the_rows_is_refused():
    """A method that declares a fused step but asks for the shared-parameter Jacobian gets one clear error
    (the graph below z has not run when it decides)."""
    from moomtl.methods.jacobian import JacobianMethod

    class Claims(JacobianMethod):
        def backward(self, losses, ctx):
            ctx.jacobian("representation")
            ctx.jacobian("shared")

    names = ("t0", "t1")
    model = hps_lenet(names, n_classes=10).eval()
    method = Claims(weighting=lambda g: torch.ones(2), wrt="representation")
    method.setup(names, model)
    ctx = _rep_step(model, torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4, 2)), aliases=True)
    with pytest.raises(RuntimeError, match="not available in a fused representation step"):
        ctx.run(method)


def test_a_fused_step_with_z_a_leaf_equals_the_two_call_step():
    """z a leaf (no encoder below it): the fused step takes z's gradient as the two-call step does (its
    ``.grad`` the decided cotangent), and the heads get the same weighted gradients."""
    names = ("t0", "t1", "t2")
    torch.manual_seed(0)
    model = hps_lenet(names, n_classes=10).eval()
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6, 3))
    z0 = model.encode(x).detach()
    heads = []
    for fused in (False, True):
        model.zero_grad(set_to_none=True)
        z = z0.clone().requires_grad_()
        out = model.decode(z, x)
        losses = {t: torch.nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(names)}
        method = build_method("mgda_ub")
        method.setup(names, model)
        ctx = StepContext(model, losses, z)
        ctx.run(method) if fused else method.backward(losses, ctx)
        heads.append([p.grad.clone() for p in model.heads.parameters()] + [z.grad])
        assert all(p.grad is None for p in model.encoder.parameters())
    for a, b in zip(*heads, strict=True):
        assert torch.equal(a, b)
