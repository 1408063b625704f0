"""CIFAR-style ResNet-18 HPS model of the CelebA experiment."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moomtl.data.base import DataSplits, MultiTaskTensors
from moomtl.methods import build_method
from moomtl.models.base import HardParameterSharing, count_parameters
from moomtl.models.registry import build_model
from moomtl.models.resnet import BasicBlock, ResNetEncoder, resnet18_hps, resnet_feature_dim
from moomtl.train.context import StepContext
from moomtl.train.trainer import Trainer


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k  # no bias


def _bn(c: int) -> int:
    return 2 * c  # weight and bias (running stats are buffers)


def _expected_encoder_params(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), in_channels=3) -> int:
    total = _conv(in_channels, widths[0], 3) + _bn(widths[0])
    cin = widths[0]
    for stage, (w, n) in enumerate(zip(widths, blocks, strict=True)):
        for b in range(n):
            total += _conv(cin, w, 3) + _bn(w) + _conv(w, w, 3) + _bn(w)
            if b == 0 and (stage > 0 or cin != w):  # 1x1 conv + BN shortcut where the shape changes
                total += _conv(cin, w, 1) + _bn(w)
            cin = w
    return total


def test_parameter_count_by_hand() -> None:
    expected = _expected_encoder_params()
    assert expected == 11_168_832  # the usual CIFAR ResNet-18 (11,173,962) minus its 512x10 classifier
    tasks = [f"t{i}" for i in range(40)]
    model = resnet18_hps(tasks, 2, image_size=64)
    assert count_parameters(model.encoder) == expected
    assert count_parameters(model) == expected + 40 * (2048 * 2 + 2)
    # Three shortcuts (stages 2-4), none in stage 1 or in second blocks.
    blocks = [m for m in model.encoder.modules() if isinstance(m, BasicBlock)]
    shortcuts = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(shortcuts) == 3
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.encoder.conv1.kernel_size == (3, 3) and model.encoder.conv1.stride == (1, 1)
    assert model.encoder.conv1.bias is None
    small = ResNetEncoder(num_blocks=(1, 2), widths=(4, 4), in_channels=1)
    assert count_parameters(small) == _expected_encoder_params((4, 4), (1, 2), 1)


@pytest.mark.parametrize(("size", "feat"), [(64, 2048), (32, 512)])
def test_output_shapes(size: int, feat: int) -> None:
    torch.manual_seed(0)
    model = resnet18_hps(("Smiling", "Male", "Young"), [2, 2, 2], image_size=size)
    x = torch.randn(3, 3, size, size)
    z = model.encode(x)
    assert z.shape == (3, feat) and resnet_feature_dim(size) == feat
    out = model.decode(z, x)
    assert list(out) == ["Smiling", "Male", "Young"] and all(o.shape == (3, 2) for o in out.values())
    assert all(h.in_features == feat for h in model.heads.values())


def test_feature_dim_follows_the_spatial_arithmetic() -> None:
    enc = ResNetEncoder(widths=(2, 2, 2, 4)).eval()
    for size in (25, 31, 40, 48, 70):
        with torch.no_grad():
            assert enc(torch.zeros(1, 3, size, size)).shape[1] == enc.feature_dim(size), size
    with pytest.raises(ValueError, match=r"image_size 24 is too small.*need image_size ≥ 25"):
        resnet_feature_dim(24)
    with pytest.raises(ValueError, match="one width per stage"):
        ResNetEncoder(num_blocks=(2, 2), widths=(4,))
    with pytest.raises(ValueError, match="2 tasks but 1 class counts"):
        resnet18_hps(("a", "b"), [2])


def test_shared_and_task_specific_parameters() -> None:
    model = resnet18_hps(("a", "b"), 2, image_size=32)
    shared = {id(p) for p in model.shared_parameters()}
    specific = {id(p) for p in model.task_specific_parameters()}
    assert shared == {id(p) for p in model.encoder.parameters()}
    assert specific == {id(p) for p in model.heads.parameters()} and not shared & specific
    assert len(shared) + len(specific) == len(list(model.parameters()))
    assert count_parameters(model, model.task_specific_parameters()) == 2 * (512 * 2 + 2)


def test_registry_sizes_heads_from_the_input_shape() -> None:
    m64 = build_model("resnet18_celeba", ["a", "b"], [2, 2])
    m32 = build_model("resnet18_celeba", ["a", "b"], [2, 1], input_shape=(3, 32, 32))
    assert m64.heads["a"].in_features == 2048 and m32.heads["a"].in_features == 512
    assert m32.heads["b"].out_features == 2  # binary attributes keep two logits
    with pytest.raises(ValueError, match="square images"):
        build_model("resnet18_celeba", ["a"], [2], input_shape=(3, 32, 48))
    # Builders with a fixed input shape ignore it.
    assert build_model("hps_lenet", ["l", "r"], [10, 10], input_shape=(1, 28, 28)) is not None


@pytest.mark.parametrize("name", ["mgda", "mgda_ub"])
def test_mgda_step_on_a_small_resnet(name: str) -> None:
    """One MGDA / MGDA-UB step: α is the 2-task min-norm point of the gradients the method uses (w.r.t. the
    shared parameters, resp. the representation), and every parameter gets ∇(Σ α_t L_t)."""
    torch.manual_seed(0)
    enc = ResNetEncoder(widths=(4, 8, 8, 8))
    model = HardParameterSharing(enc, {"a": nn.Linear(8, 2), "b": nn.Linear(8, 2)}).double()
    x, y = torch.randn(6, 3, 32, 32, dtype=torch.float64), torch.randint(0, 2, (6, 2))
    z = model.encode(x)
    out = model.decode(z, x)
    losses = {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(("a", "b"))}
    wrt = list(model.shared_parameters()) if name == "mgda" else [z]
    g = [torch.cat([v.reshape(-1) for v in torch.autograd.grad(losses[t], wrt, retain_graph=True)]) for t in "ab"]
    params = list(model.parameters())
    full = [
        [torch.zeros_like(p) if d is None else d
         for p, d in zip(params, torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True),
                         strict=True)]
        for t in "ab"
    ]
    # Closed-form min-norm point of two vectors: α_a = clip((g_b - g_a)·g_b / |g_a - g_b|², 0, 1).
    alpha_a = float(((g[1] - g[0]) @ g[1] / (g[0] - g[1]).pow(2).sum()).clamp(0, 1))
    method = build_method(name)
    method.setup(("a", "b"), model)
    model.zero_grad(set_to_none=True)
    info = method.backward(losses, StepContext(model, losses, z))
    assert 0.05 < alpha_a < 0.95  # an interior point: the check below is not a clipped corner case
    assert info["weight/a"] == pytest.approx(alpha_a, abs=1e-6)
    assert info["weight/a"] + info["weight/b"] == pytest.approx(1.0)
    for p, ga, gb in zip(params, *full, strict=True):
        torch.testing.assert_close(p.grad, info["weight/a"] * ga + info["weight/b"] * gb, rtol=1e-6, atol=1e-9)


def test_trainer_runs_full_mgda_on_resnet18() -> None:
    """Full MGDA needs per-task gradients of all 11M shared parameters: one epoch through the trainer."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    def part(n: int) -> MultiTaskTensors:
        return MultiTaskTensors(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                                torch.randint(0, 2, (n, 2), generator=gen), ("a", "b"),
                                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    splits = DataSplits(part(8), part(4), part(4), description="random")
    model = resnet18_hps(("a", "b"), 2, image_size=32)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    result = Trainer(model, build_method("mgda"), optimizer="SGD", optimizer_kwargs={"lr": 0.01},
                     epochs=1, batch_size=4).fit(splits)
    row = result.final
    assert 0.0 <= row["test/a/acc"] <= 1.0 and torch.isfinite(torch.tensor(row["test/b/loss"]))
    moved = [not torch.equal(b, p) for b, p in zip(before, model.encoder.parameters(), strict=True)]
    assert sum(moved) > len(moved) // 2  # the shared trunk was updated
