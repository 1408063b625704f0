"""LSUV initialization: orthonormal weights, unit output variance per layer in execution order."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from moomtl.models.init import lsuv_init, orthonormal_


def _output_stds(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Every Conv/Linear output std, measured independently of the implementation."""
    stds: dict[str, float] = {}

    def hook(name: str):
        def record(_m, _i, out) -> None:  # returns None: the output is not replaced
            stds.setdefault(name, float(out.double().std()))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return stds


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_orthonormal_rows_or_columns(out, cin, k, seed):
    w = orthonormal_(torch.empty(out, cin, k, k), torch.Generator().manual_seed(seed)).reshape(out, -1).double()
    small = min(w.shape)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    torch.testing.assert_close(gram, torch.eye(small, dtype=torch.float64), atol=1e-5, rtol=0)


class Reversed(nn.Module):
    """Layers registered in the opposite order to the one the forward pass runs them in."""

    def __init__(self) -> None:
        super().__init__()
        self.last = nn.Linear(16, 4)
        self.middle = nn.Linear(32, 16)
        self.first = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.first(x)).mean(dim=(2, 3))  # [N, 8]
        h = torch.cat([h, h * 2], dim=1)  # [N, 16] -> padded to 32 below
        h = torch.relu(self.middle(torch.cat([h, h], dim=1)))
        return self.last(h)


def test_every_layer_ends_near_unit_variance_even_when_registered_out_of_order():
    x = torch.randn(128, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 5 + 2
    model = Reversed()
    report = lsuv_init(model, x, tol=0.05, generator=torch.Generator().manual_seed(1))
    assert model.training  # the mode is given back
    assert [r.name for r in report] == ["first", "middle", "last"]  # execution order, not registration
    assert any(r.attempts > 0 for r in report)
    stds = _output_stds(model, x)
    assert all(abs(s - 1.0) <= 0.05 for s in stds.values()), stds


def test_mdmtn_after_lsuv_and_determinism():
    from moomtl.models.registry import build_model

    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a = build_model("mdmtn_multimnist", ("left", "right"), [10, 10])
    b = build_model("mdmtn_multimnist", ("left", "right"), [10, 10])
    lsuv_init(a, x, generator=torch.Generator().manual_seed(3))
    lsuv_init(b, x, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert all(abs(s - 1.0) <= 0.1 for s in _output_stds(a, x).values())


def test_bad_arguments_and_no_layers():
    with pytest.raises(ValueError, match="target_std"):
        lsuv_init(nn.Linear(2, 2), torch.randn(4, 2), target_std=0.0)
    with pytest.raises(ValueError, match="no Conv/Linear"):
        lsuv_init(nn.ReLU(), torch.randn(4, 2))


def test_config_model_init_lsuv(tiny_multimnist, tmp_path):
    from moomtl.config import ConfigError, parse_config
    from moomtl.experiments.run import build_model_from

    cfg = parse_config({"model": {"name": "mdmtn_multimnist", "init": "lsuv"}, "train": {"batch_size": 64}})
    model = build_model_from(cfg, tiny_multimnist)
    x = tiny_multimnist.train.images(torch.arange(256))
    assert all(abs(s - 1.0) <= 0.25 for s in _output_stds(model, x).values())  # another batch: close to 1
    with pytest.raises(ConfigError, match="model.init must be default or lsuv"):
        parse_config({"model": {"init": "xavier"}})
