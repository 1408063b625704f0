"""``moomtl.mtl_backward`` in a hand-written loop. Reference: the trainer's own path,
``method.backward(losses, StepContext(model, losses, z))`` on the same model and batch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import moomtl
from moomtl.api import event_methods, setup_method
from moomtl.autodiff import StepContext
from moomtl.methods import available_methods, build_method
from moomtl.models.base import HardParameterSharing

TASKS = ("a", "b", "c")


def _model(seed: int = 0) -> HardParameterSharing:
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(5, 8), nn.Tanh()).double()
    return HardParameterSharing(enc, {t: nn.Linear(8, 3).double() for t in TASKS})


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16, 3), generator=g)


def _losses(model, x, y):
    z = model.encode(x)
    out = model.decode(z, x)
    return {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(TASKS)}, z


def _grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _view_losses(model, x, y):
    z = model.encode(x)
    zs = moomtl.views(z, TASKS)
    out = model.decode(zs, x)
    return {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(TASKS)}, zs


@pytest.mark.parametrize("features", ["z", "views"])
@pytest.mark.parametrize("name", sorted(available_methods()))
def test_same_gradients_as_the_trainer_path(name: str, features: str) -> None:
    """Reference: the trainer's path on the same model and batch; ``features=moomtl.views(z, ...)`` (each
    head reads its own view) gives the same update as ``features=z``."""
    x, y = _batch()
    ref_model, api_model = _model(), _model()
    ref_method, api_method = build_method(name), build_method(name)
    ref_method.setup(TASKS, ref_model)
    losses, z = _losses(ref_model, x, y)
    ref_info = ref_method.backward(losses, StepContext(ref_model, losses, z))
    if any(p.requires_grad for p in ref_method.parameters()):  # learned parameters: set up before the optimizer
        setup_method(api_method, TASKS, shared_params=api_model.shared_parameters(),
                     task_params={t: api_model.heads[t].parameters() for t in TASKS})
    losses, feats = (_losses if features == "z" else _view_losses)(api_model, x, y)
    info = moomtl.mtl_backward(losses, api_method, shared_params=api_model.shared_parameters(), features=feats,
                               task_params={t: api_model.heads[t].parameters() for t in TASKS})
    for a, b in zip(_grads(ref_model), _grads(api_model), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert set(info) == set(ref_info or {})


def test_views_give_the_rows_in_one_call_and_refuse_other_paths_to_z(monkeypatch) -> None:
    """With views, a representation-mode step is ONE engine call: the T rows, the heads' gradients and the
    encoder's backward (fused, StepContext.run), with no walk of the graph after the first call. Views are refused
    when a loss reaches z other than through its own view (its rows would miss that path), for another set
    of tasks, or as a plain mapping."""
    x, y = _batch()
    model = _model()
    method = build_method("mgda_ub")
    heads = {t: model.heads[t].parameters() for t in TASKS}
    import moomtl.autodiff.context as context_module

    walks = []
    real_walk = context_module.head_graph
    monkeypatch.setattr(context_module, "head_graph", lambda *a, **k: walks.append(1) or real_walk(*a, **k))
    real_grad, real_backward, calls = torch.autograd.grad, torch.autograd.backward, []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        losses, zs = _view_losses(model, x, y)
        monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append("grad") or real_grad(*a, **k))
        monkeypatch.setattr(torch.autograd, "backward",
                            lambda *a, **k: calls.append("backward") or real_backward(*a, **k))
        moomtl.mtl_backward(losses, method, shared_params=model.shared_parameters(), features=zs,
                            task_params={t: model.heads[t].parameters() for t in TASKS})
        monkeypatch.setattr(torch.autograd, "grad", real_grad)
        monkeypatch.setattr(torch.autograd, "backward", real_backward)
    # one engine call per step; one walk of the heads in all (the first step's, cached: which leaves they reach)
    assert calls == ["backward", "backward"] and walks == [1]
    z = model.encode(x)
    zs = moomtl.views(z, TASKS)
    out = model.decode(zs, x)
    losses = {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(TASKS)}
    losses["a"] = losses["a"] + 1e-3 * z.sum()  # task a also reads z directly
    with pytest.raises(ValueError, match="other than through its own view"):
        moomtl.mtl_backward(losses, build_method("mgda_ub"), shared_params=model.shared_parameters(), features=zs,
                            task_params=heads)
    with pytest.raises(ValueError, match="views for tasks"):
        moomtl.mtl_backward(losses, build_method("mgda_ub"), shared_params=model.shared_parameters(),
                            features=moomtl.views(z, ["a", "b"]))
    with pytest.raises(ValueError, match="not a mapping"):
        moomtl.mtl_backward(losses, build_method("mgda_ub"), shared_params=model.shared_parameters(),
                            features=dict(zs))
    with pytest.raises(ValueError, match="requires grad"):
        moomtl.views(z.detach(), TASKS)


def test_sequence_losses_equal_mapping_losses_and_the_task_count_is_fixed() -> None:
    x, y = _batch()
    grads = []
    for as_mapping in (True, False):
        model = _model()
        method = build_method("upgrad")
        losses, z = _losses(model, x, y)
        given = losses if as_mapping else list(losses.values())
        heads = {t: model.heads[t].parameters() for t in TASKS} if as_mapping else \
            [model.heads[t].parameters() for t in TASKS]
        moomtl.mtl_backward(given, method, shared_params=model.shared_parameters(), task_params=heads)
        grads.append(_grads(model))
        losses, _ = _losses(model, x, y)
        with pytest.raises(ValueError, match="set up for tasks"):
            moomtl.mtl_backward(list(losses.values())[:2], method, shared_params=model.shared_parameters())
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_clear_errors() -> None:
    x, y = _batch()
    model = _model()
    losses, z = _losses(model, x, y)
    shared = model.shared_parameters()
    cases = [
        (({"a": torch.ones(2, requires_grad=True)}, "mgda"), {"shared_params": shared}, "scalar"),
        ((losses, "mgda_ub"), {"shared_params": shared, "features": torch.zeros(3, requires_grad=True)},
         "no loss depends on features"),
        ((losses, "mgda"), {"shared_params": [*shared, shared[0]]}, "given twice"),
        ((losses, "mgda"), {"shared_params": shared, "task_params": {"a": shared, "b": [], "c": []}}, "given twice"),
        ((losses, "mgda"), {"shared_params": shared, "task_params": {"a": []}}, "task_params has tasks"),
        ((losses, "kendall"), {"shared_params": shared}, "setup_method"),
        (({"a": torch.tensor(1.0)}, "mgda"), {"shared_params": shared}, "does not require grad"),
        ((losses, "mgda"), {"shared_params": []}, "shared_params is empty"),
        ((losses, "mgda"), {"shared_params": shared, "task_params": [[]]}, "1 groups for 3 losses"),
        ((losses, "mgda_ub"), {"shared_params": shared, "features": z.detach()}, "features does not require grad"),
        ((losses, "nope"), {"shared_params": shared}, "unknown method"),
        ((losses, "mgda"), {"shared_params": [torch.zeros(2, requires_grad=True)]}, "nn.Parameter"),
    ]
    for args, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            moomtl.mtl_backward(*args, **kw)


def test_event_methods_are_the_ones_with_between_step_updates() -> None:
    names = event_methods()
    for name in ("mwc_alm", "omd_tch", "dwa"):
        assert name in names
    assert "upgrad" not in names and "mgda" not in names


def test_readme_loop_runs_and_the_loss_goes_down() -> None:
    """The README's plain-PyTorch loop, run as written."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"<!-- mtl_backward example -->\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "README lost its mtl_backward example"
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 - our own README
    first, last = scope["history"][0], scope["history"][-1]
    assert last < 0.8 * first


def test_import_moomtl_stays_light_and_exposes_the_api() -> None:
    import subprocess
    import sys

    code = ("import sys, moomtl; assert 'torch' not in sys.modules; f = moomtl.mtl_backward; "
            "m = moomtl.methods.build_method('mgda'); assert 'matplotlib' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_learned_method_parameters_train_after_setup_method() -> None:
    """Kendall's log-variances exist only after set-up; ``setup_method`` before building the optimizer lets
    it train them. Reference: the trainer, which sets the method up before building its optimizer over
    ``model.parameters() + method.parameters()``; the first step's gradients match its path."""
    x, y = _batch()
    ref_model, model = _model(), _model()
    ref = build_method("kendall")
    ref.setup(TASKS, ref_model)
    losses, z = _losses(ref_model, x, y)
    ref.backward(losses, StepContext(ref_model, losses, z))
    method = setup_method(build_method("kendall"), TASKS, shared_params=model.shared_parameters())
    opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.1)
    start = method.log_vars.detach().clone()
    for step in range(3):
        opt.zero_grad()
        losses, z = _losses(model, x, y)
        info = moomtl.mtl_backward(losses, method, shared_params=model.shared_parameters(), features=z,
                                   task_params=[model.heads[t].parameters() for t in TASKS])
        if step == 0:
            torch.testing.assert_close(method.log_vars.grad, ref.log_vars.grad, rtol=1e-12, atol=1e-12)
        opt.step()
    assert not torch.equal(method.log_vars.detach(), start)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in info.values())


def test_gradients_accumulate_like_backward() -> None:
    """Two calls without ``zero_grad`` give twice one call's gradients, as two ``loss.backward()`` would
    (reference: the trainer path of one step, ``method.backward(losses, StepContext(model, losses, z))``)."""
    x, y = _batch()
    ref_model, model = _model(), _model()
    losses, z = _losses(ref_model, x, y)
    ref = build_method("mgda")
    ref.setup(TASKS, ref_model)
    ref.backward(losses, StepContext(ref_model, losses, z))
    method = build_method("mgda")
    for _ in range(2):
        losses, z = _losses(model, x, y)
        moomtl.mtl_backward(losses, method, shared_params=model.shared_parameters(), features=z,
                            task_params={t: model.heads[t].parameters() for t in TASKS})
    for a, b in zip(_grads(ref_model), _grads(model), strict=True):
        torch.testing.assert_close(b, 2 * a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_without_task_params_heads_get_what_one_weighted_backward_gives(name: str) -> None:
    """No ``task_params``: loss weightings and representation-mode methods (one backward of a weighted sum,
    or the rows at z and the encoder's cotangent) still give each head its update — the trainer's, which
    knows the heads (reference: the trainer's path); full-Jacobian methods give the shared parameters
    only, as documented."""
    x, y = _batch()
    ref_model, api_model = _model(), _model()
    ref_method, api_method = build_method(name), build_method(name)
    ref_method.setup(TASKS, ref_model)
    losses, z = _losses(ref_model, x, y)
    ref_method.backward(losses, StepContext(ref_model, losses, z))
    if any(p.requires_grad for p in ref_method.parameters()):
        setup_method(api_method, TASKS, shared_params=api_model.shared_parameters())
    losses, z = _losses(api_model, x, y)
    moomtl.mtl_backward(losses, api_method, shared_params=api_model.shared_parameters(), features=z)
    cost = available_methods()[name].card.cost
    for a, b in zip(_grads(ref_model.encoder), _grads(api_model.encoder), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    heads = [p.grad for p in api_model.heads.parameters()]
    if cost == "shared":
        assert all(g is None for g in heads)
    else:
        for a, b in zip(_grads(ref_model.heads), _grads(api_model.heads), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["mgda_ub", "graddrop", "gradnorm", "linear"])
def test_views_without_task_params_equal_z_without_task_params(name: str) -> None:
    """Views without ``task_params``: the heads still get their update (their parameters found by a walk
    of the heads' graph), the same as with ``features=z`` (reference: that path, checked against the trainer
    in the test above)."""
    x, y = _batch()
    grads = []
    for views in (False, True):
        model = _model()
        method = build_method(name)
        if any(p.requires_grad for p in method.parameters()) or name == "gradnorm":
            setup_method(method, TASKS, shared_params=model.shared_parameters())
        losses, feats = (_view_losses if views else _losses)(model, x, y)
        moomtl.mtl_backward(losses, method, shared_params=model.shared_parameters(), features=feats)
        grads.append(_grads(model))
        assert all(p.grad is not None for p in model.heads.parameters())
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
