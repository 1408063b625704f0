"""Registry-wide properties: every registered method (so a new one is tested by being registered).

Each method is built with its defaults; required hyper-parameters without a default get a documented
minimal value (:func:`_hparams`): the preference hyper-parameter (``Method.preference_param``) a
uniform vector of the right length (also when it has a default, so every preference method sees
``T`` entries), ``task`` the first task. Then, on a tiny hard-parameter-sharing model (float64):
one backward gives finite ``.grad`` on every shared parameter, for T = 2 and T = 5 and losses that
include identical tasks and a task with a zero gradient; the ``state_dict`` loads into a fresh
instance after ``setup`` and both then take the identical next step; the same seed gives the same
gradients twice; float64 stays float64.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods import available_methods, build_method
from moomtl.methods.base import method_hyperparameters
from moomtl.models.base import HardParameterSharing

NAMES = list(available_methods())

# Known bugs, named (a method listed here fails one of these properties; see the reason).
XFAIL: dict[tuple[str, str], str] = {}

POOLS = ("plain", "identical", "zero_grad")


def _hparams(name: str, task_names: tuple[str, ...]) -> dict[str, Any]:
    cls = available_methods()[name]
    hp = method_hyperparameters(name)
    kw: dict[str, Any] = {}
    if cls.preference_param is not None and cls.preference_param in hp:
        kw[cls.preference_param] = [1.0 / len(task_names)] * len(task_names)
    for k, default in hp.items():
        if default is inspect.Parameter.empty and k not in kw:
            if k == "task":
                kw[k] = task_names[0]
            else:
                pytest.fail(f"{name}: required hyper-parameter {k!r} has no default and no minimal value here")
    return kw


def _model(n_tasks: int, seed: int = 0) -> HardParameterSharing:
    torch.manual_seed(seed)
    heads = {f"t{i}": nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double() for i in range(n_tasks)}
    return HardParameterSharing(nn.Sequential(nn.Linear(3, 5), nn.Tanh()).double(), heads)


def _losses(model: HardParameterSharing, pool: str, seed: int = 1) -> tuple[dict[str, Tensor], Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6, len(model.task_names)), generator=g)
    z = model.encode(x)
    out = model.decode(z, x)
    names = model.task_names
    losses = {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(names)}
    if pool == "identical":  # the last task repeats the first one's loss (own graph, same value)
        losses[names[-1]] = F.cross_entropy(out[names[0]], y[:, 0])
    elif pool == "zero_grad":  # the last task's loss does not depend on any parameter
        losses[names[-1]] = 0.0 * out[names[-1]].sum() + 1.0
    return losses, z


def _step(method, model, pool: str, seed: int = 1) -> tuple[dict[str, Any], list[Tensor | None]]:
    model.zero_grad(set_to_none=True)
    losses, z = _losses(model, pool, seed)
    info = method.backward(losses, StepContext(model, losses, z))
    return info, [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _build(name: str, model: HardParameterSharing):
    method = build_method(name, **_hparams(name, model.task_names))
    method.setup(model.task_names, model)
    return method


def _maybe_xfail(name: str, prop: str) -> None:
    if (name, prop) in XFAIL:
        pytest.xfail(XFAIL[name, prop])


@pytest.mark.parametrize("name", NAMES)
def test_buildable_with_defaults(name):
    method = build_method(name, **_hparams(name, ("t0", "t1")))
    assert type(method).name == name and type(method).description
    assert repr(method)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_tasks", [2, 5])
@pytest.mark.parametrize("pool", POOLS)
def test_one_backward_gives_finite_float64_shared_gradients(name, n_tasks, pool):
    _maybe_xfail(name, f"finite/{pool}")
    model = _model(n_tasks)
    method = _build(name, model)
    info, grads = _step(method, model, pool)
    shared = {id(p) for p in model.shared_parameters()}
    for p, g in zip(model.parameters(), grads, strict=True):
        if id(p) in shared:
            assert g is not None, f"{name}: a shared parameter got no gradient"
            assert torch.isfinite(g).all(), f"{name}: non-finite shared gradient ({pool}, T={n_tasks})"
        if g is not None:
            assert g.dtype == torch.float64
    for k, v in info.items():
        if isinstance(v, Tensor):
            assert v.ndim == 0 and not v.requires_grad, k
            assert torch.isfinite(v), f"{name}: logged {k} = {v}"


@pytest.mark.parametrize("name", NAMES)
def test_no_floating_state_below_the_model_precision(name):
    """On a float64 model no buffer or parameter of the method is float32/16 before or after a step: a
    preference or ideal point rounded to float32 shifts a float64 model's gradients by ~1e-6 relative
    (seen for pbi/stch in docs/reference_diffs.md before this was enforced)."""
    model = _model(3)
    method = _build(name, model)
    for when in ("after setup", "after one step"):
        low = [k for k, v in [*method.named_buffers(), *method.named_parameters()]
               if v.is_floating_point() and v.dtype != torch.float64]
        assert not low, f"{name}: {low} not float64 on a float64 model ({when})"
        _step(method, model, "plain")


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_the_identical_next_step(name):
    _maybe_xfail(name, "state_dict")
    model = _model(3)
    method = _build(name, model)
    _step(method, model, "plain", seed=1)
    state = method.state_dict()
    fresh = _build(name, model)
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        if isinstance(v, Tensor):
            assert torch.equal(v, state[k]), k
    _, a = _step(method, model, "plain", seed=2)
    _, b = _step(fresh, model, "plain", seed=2)
    for ga, gb in zip(a, b, strict=True):
        assert (ga is None and gb is None) or torch.equal(ga, gb)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_gradients(name):
    _maybe_xfail(name, "determinism")
    runs = []
    for _ in range(2):
        model = _model(3, seed=0)
        torch.manual_seed(123)
        method = _build(name, model)
        runs.append([_step(method, model, "plain", seed=s)[1] for s in (1, 2)])
    for step_a, step_b in zip(*runs, strict=True):
        for ga, gb in zip(step_a, step_b, strict=True):
            assert (ga is None and gb is None) or torch.equal(ga, gb)


@pytest.mark.parametrize("name", NAMES)
def test_buildable_with_no_arguments_and_sized_on_first_use(name):
    """``build_method(name)`` with nothing else works for every method: sizes come from ``setup``."""
    method = build_method(name)
    model = HardParameterSharing(torch.nn.Linear(3, 4), {t: torch.nn.Linear(4, 1) for t in ("a", "b", "c")})
    method.setup(("a", "b", "c"), model)
    assert repr(method)
