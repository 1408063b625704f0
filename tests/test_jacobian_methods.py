"""The Gramian-first methods of moomtl.methods.jacobian: what they write into .grad, for both ``wrt``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.methods import build_method
from moomtl.methods.jacobian import JacobianMethod, NashMTL
from moomtl.models.base import HardParameterSharing
from moomtl.weightings import (
    aligned_mtl_weights,
    dualproj_weights,
    imtl_g_weights,
    mean_weights,
    nash_mtl_weights,
    upgrad_weights,
)

WEIGHTINGS = {"upgrad": upgrad_weights, "dualproj": dualproj_weights, "imtl_g": imtl_g_weights,
              "aligned_mtl": aligned_mtl_weights, "nash_mtl": lambda g: nash_mtl_weights(g, max_norm=1.0)}


def _model(n_tasks: int, seed: int = 0) -> HardParameterSharing:
    torch.manual_seed(seed)
    heads = {f"t{i}": nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double() for i in range(n_tasks)}
    return HardParameterSharing(nn.Sequential(nn.Linear(3, 5), nn.Tanh()).double(), heads)


def _data(n_tasks: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (7, n_tasks), generator=g)


def _losses(model: HardParameterSharing, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    z = model.encode(x)
    out = model.decode(z, x)
    return {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}, z


def _rows(losses: dict[str, Tensor], params: list[Tensor]) -> Tensor:
    rows = []
    for loss in losses.values():
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(gs, params, strict=True)]))
    return torch.stack(rows)


def _run(method, model, x, y) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    losses, z = _losses(model, x, y)
    return method.backward(losses, StepContext(model, losses, z))


@pytest.mark.parametrize("name", list(WEIGHTINGS))
@pytest.mark.parametrize("wrt", ["shared", "representation"])
def test_gradients_are_the_weighted_update(name, wrt):
    """shared: d = wᵀJ on the shared parameters and unweighted head gradients; representation:
    the gradient of Σ w_t L_t everywhere, w from the Gramian of ∇_z L."""
    model = _model(3)
    x, y = _data(3)
    method = build_method(name, wrt=wrt)
    method.setup(model.task_names, model)
    info = _run(method, model, x, y)
    w = torch.stack([info[f"weight/{t}"] for t in model.task_names])
    assert all(isinstance(v, Tensor) and v.ndim == 0 and not v.requires_grad for v in info.values())
    losses, z = _losses(model, x, y)
    shared, heads = model.shared_parameters(), model.task_specific_parameters()
    jac = _rows(losses, shared)
    if wrt == "shared":
        torch.testing.assert_close(w, WEIGHTINGS[name](jac @ jac.T))
        expected_shared, expected_heads = w @ jac, torch.ones(3, dtype=torch.float64) @ _rows(losses, heads)
    else:
        jz = _rows(losses, [z])
        torch.testing.assert_close(w, WEIGHTINGS[name](jz @ jz.T))
        expected_shared, expected_heads = w @ jac, w @ _rows(losses, heads)
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in shared]), expected_shared)
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in heads]), expected_heads)


def test_generic_composition_and_reprs():
    model = _model(2)
    x, y = _data(2)
    method = JacobianMethod(weighting=mean_weights)
    assert repr(method) == "JacobianMethod(weighting=mean_weights, wrt='shared')"
    method.setup(model.task_names, model)
    info = _run(method, model, x, y)
    assert [float(v) for v in info.values()] == [0.5, 0.5]
    assert repr(build_method("upgrad")) == "UPGrad(preference=None, wrt='shared')"
    assert repr(build_method("aligned_mtl", preference=[1, 3])) == (
        "AlignedMTL(preference=[1.0, 3.0], scale_mode='min', wrt='shared')")
    assert repr(build_method("nash_mtl")) == "NashMTL(max_norm=1.0, update_weights_every=1, wrt='shared')"
    assert repr(build_method("imtl_g", wrt="representation")) == "IMTLG(wrt='representation')"


@pytest.mark.parametrize(("name", "kw"), [
    ("upgrad", {"wrt": "params"}), ("dualproj", {"preference": [1.0, -1.0]}),
    ("aligned_mtl", {"scale_mode": "max"}), ("nash_mtl", {"max_norm": -1.0}),
    ("nash_mtl", {"update_weights_every": 0}), ("nash_mtl", {"update_weights_every": 1.5}),
])
def test_bad_hyperparameters_are_rejected(name, kw):
    with pytest.raises(ValueError):
        build_method(name, **kw)


def test_preference_length_is_checked_at_setup():
    method = build_method("upgrad", preference=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="preference"):
        method.setup(("a", "b"), _model(2))


def test_nash_mtl_reuses_weights_and_resumes_bit_identically():
    """update_weights_every=3: α is solved at steps 0, 3, … and reused in between (the clipping uses
    each step's Gramian); a fresh instance loading the state_dict mid-run continues identically."""
    model = _model(3)
    xs = [_data(3, seed) for seed in range(6)]

    def steps(method: NashMTL, batches) -> list[Tensor]:
        out = []
        for x, y in batches:
            info = _run(method, model, x, y)
            out.append(torch.stack(list(info.values())).clone())
        return out

    ref = build_method("nash_mtl", update_weights_every=3, max_norm=0.0)
    ref.setup(model.task_names, model)
    ws = steps(ref, xs)
    assert torch.equal(ws[0], ws[1]) and torch.equal(ws[1], ws[2]) and not torch.equal(ws[2], ws[3])
    first = build_method("nash_mtl", update_weights_every=3, max_norm=0.0)
    first.setup(model.task_names, model)
    steps(first, xs[:2])
    state = first.state_dict()
    assert set(state) == {"last_weights", "_extra_state"}
    resumed = build_method("nash_mtl", update_weights_every=3, max_norm=0.0)
    resumed.setup(model.task_names, model)
    resumed.load_state_dict(state)
    for a, b in zip(steps(resumed, xs[2:]), ws[2:], strict=True):
        assert torch.equal(a, b)
