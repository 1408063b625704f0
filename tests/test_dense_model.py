"""Dilated ResNet-18 dense multi-task model (segmentation / instance offsets / depth, Cityscapes-shaped)."""

from __future__ import annotations

import numpy as np
import pytest
import quadprog
import torch
from torch import Tensor, nn

from moomtl.data.base import DataSplits, MultiTaskTensors
from moomtl.methods import build_method
from moomtl.models.base import count_parameters
from moomtl.models.dense import DenseHead, DilatedResNetEncoder, dense_hps
from moomtl.models.registry import MODELS, build_model
from moomtl.models.resnet import BasicBlock
from moomtl.tasks import MaskedL1, Segmentation
from moomtl.train.context import StepContext
from moomtl.train.trainer import Trainer

TASKS = ("segmentation", "instance", "depth")
CHANNELS = (19, 2, 1)
SMALL = (16, 32, 64, 128)


def _conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c  # weight and bias (running statistics are buffers)


def _expected_encoder_params(widths: tuple[int, ...], in_channels: int = 3, blocks: int = 2) -> int:
    total = _conv(in_channels, widths[0], 7) + _bn(widths[0])  # 7x7 stem, no bias
    cin = widths[0]
    for stage, w in enumerate(widths):
        for b in range(blocks):
            total += _conv(cin, w, 3) + _bn(w) + _conv(w, w, 3) + _bn(w)
            if b == 0 and (stage == 1 or cin != w):  # 1x1 conv + BN shortcut where stride or width changes
                total += _conv(cin, w, 1) + _bn(w)
            cin = w
    return total


def _expected_head_params(cin: int, cout: int, hidden: int) -> int:
    return _conv(cin, hidden, 3) + _bn(hidden) + _conv(hidden, cout, 1, bias=True)


# --- architecture ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("h", "w"), [(64, 128), (32, 64)])
def test_output_shapes_are_at_one_eighth_resolution(h: int, w: int) -> None:
    torch.manual_seed(0)
    model = build_model("resnet18_dense_small", list(TASKS), list(CHANNELS), input_shape=(3, h, w))
    x = torch.randn(2, 3, h, w)
    z = model.encode(x)
    assert z.shape == (2, SMALL[-1], h // 8, w // 8)
    out = model.decode(z, x)
    assert list(out) == list(TASKS)
    for t, c in zip(TASKS, CHANNELS, strict=True):
        assert out[t].shape == (2, c, h // 8, w // 8), t
    assert model.encoder.output_stride == 8


def test_full_size_encoder_is_torchvision_resnet18_without_classifier() -> None:
    enc = DilatedResNetEncoder()
    # torchvision's resnet18 has 11,689,512 parameters, of which 512*1000 + 1000 in the classifier.
    assert count_parameters(enc) == _expected_encoder_params((64, 128, 256, 512)) == 11_689_512 - 513_000
    # Strides 1, 2, 1, 1 and dilations 1, 1, 2, 4 per stage (DeepLab: the last two stages dilate).
    firsts = [stage[0] for stage in enc.layers]
    assert [b.conv1.stride[0] for b in firsts] == [1, 2, 1, 1]
    for stage, d in zip(enc.layers, (1, 1, 2, 4), strict=True):
        for block in stage:
            assert block.conv1.dilation == block.conv2.dilation == (d, d)
            assert block.conv1.padding == block.conv2.padding == (d, d)
    assert enc.conv1.kernel_size == (7, 7) and enc.conv1.stride == (2, 2) and enc.conv1.bias is None
    assert isinstance(enc.maxpool, nn.MaxPool2d) and enc.maxpool.stride == 2


def test_small_model_parameter_count_by_hand() -> None:
    model = build_model("resnet18_dense_small", list(TASKS), list(CHANNELS), input_shape=(3, 32, 64))
    enc = _expected_encoder_params(SMALL)
    heads = sum(_expected_head_params(SMALL[-1], c, 32) for c in CHANNELS)
    assert count_parameters(model.encoder) == enc
    assert count_parameters(model) == enc + heads
    # Written out for the 19-class head: 128*32*9 (3x3 conv) + 2*32 (BN) + 32*19 + 19 (1x1 conv).
    assert count_parameters(model.heads["segmentation"]) == 36_864 + 64 + 608 + 19
    # Different input channels only change the stem.
    gray = build_model("resnet18_dense_small", ["a"], [1], input_shape=(1, 32, 64))
    assert count_parameters(gray.encoder) == enc - 2 * 16 * 49


def test_shared_and_task_specific_parameters() -> None:
    model = dense_hps(TASKS, list(CHANNELS), (3, 32, 64), widths=SMALL, hidden=32)
    shared = {id(p) for p in model.shared_parameters()}
    specific = {id(p) for p in model.task_specific_parameters()}
    assert shared == {id(p) for p in model.encoder.parameters()}
    assert specific == {id(p) for p in model.heads.parameters()} and not shared & specific
    assert len(shared) + len(specific) == len(list(model.parameters()))
    assert count_parameters(model, model.task_specific_parameters()) == sum(
        _expected_head_params(128, c, 32) for c in CHANNELS
    )
    # Every head reads the same representation: perturbing a head changes only its own output.
    model.eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        before = model(x)
        model.heads["instance"][3].bias.add_(1.0)
        after = model(x)
    torch.testing.assert_close(after["instance"], before["instance"] + 1.0)
    torch.testing.assert_close(after["segmentation"], before["segmentation"])
    torch.testing.assert_close(after["depth"], before["depth"])


def test_bad_sizes_and_arguments_raise() -> None:
    enc = DilatedResNetEncoder(widths=(4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"multiples of the output stride 8.*got 36x64"):
        enc(torch.zeros(1, 3, 36, 64))
    with pytest.raises(ValueError, match=r"multiples of the output stride 8.*got 32x60"):
        enc(torch.zeros(1, 3, 32, 60))
    with pytest.raises(ValueError, match=r"images \[N, C, H, W\]"):
        enc(torch.zeros(3, 32, 64))
    with pytest.raises(ValueError, match="multiples of the output stride 8"):
        build_model("resnet18_dense_small", ["a"], [1], input_shape=(3, 100, 64))
    with pytest.raises(ValueError, match="2 tasks but 1 output channel counts"):
        dense_hps(("a", "b"), [1])
    with pytest.raises(ValueError, match="output channel counts must be ≥ 1"):
        build_model("resnet18_dense", ["a"], [0])
    with pytest.raises(ValueError, match="one width, block count, stride and dilation per stage"):
        DilatedResNetEncoder(widths=(4, 4, 4))
    with pytest.raises(ValueError, match="dilation must be ≥ 1"):
        BasicBlock(4, 4, dilation=0)
    with pytest.raises(ValueError, match="channel counts must be ≥ 1"):
        DenseHead(4, 0)


def test_registry_entries() -> None:
    assert "output stride 8" in MODELS["resnet18_dense"][1]
    big = build_model("resnet18_dense", list(TASKS), list(CHANNELS))  # default (3, 128, 256)
    assert count_parameters(big.encoder) == 11_176_512
    assert [h[3].out_channels for h in big.heads.values()] == list(CHANNELS)
    assert all(h[0].out_channels == 128 for h in big.heads.values())
    small = build_model("resnet18_dense_small", list(TASKS), list(CHANNELS), input_shape=(3, 32, 64))
    assert small.encoder.widths == SMALL and all(h[0].out_channels == 32 for h in small.heads.values())


# --- BasicBlock dilation ---------------------------------------------------------------------------
@pytest.mark.parametrize("dilation", [1, 2, 4])
@pytest.mark.parametrize(("cin", "cout"), [(4, 4), (4, 6)])
def test_basic_block_dilation_keeps_size_and_parameter_count(dilation: int, cin: int, cout: int) -> None:
    block = BasicBlock(cin, cout, dilation=dilation)
    assert count_parameters(block) == count_parameters(BasicBlock(cin, cout))
    assert block(torch.randn(2, cin, 9, 11)).shape == (2, cout, 9, 11)
    assert BasicBlock(cin, cout, stride=2, dilation=dilation)(torch.randn(1, cin, 16, 12)).shape == (1, cout, 8, 6)


def test_basic_block_dilation_is_a_dilated_convolution() -> None:
    """A dilated block equals the plain block run on the polyphase components of its input: dilation d
    with padding d is a dilation-1 conv applied to each of the d×d interleaved sub-grids."""
    torch.manual_seed(0)
    d = 2
    plain, dilated = BasicBlock(3, 3).double().eval(), BasicBlock(3, 3, dilation=d).double().eval()
    dilated.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 8, 10, dtype=torch.float64)
    y = dilated(x)
    for i in range(d):
        for j in range(d):
            torch.testing.assert_close(y[..., i::d, j::d], plain(x[..., i::d, j::d]))


# --- losses and one optimization step --------------------------------------------------------------
def _dense_batch(h: int, w: int, n: int = 2, seed: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
    """Images and Cityscapes-like targets at 1/8: labels with some ignored pixels, offsets and disparity
    with half of their entries NaN (unlabelled)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, h, w, generator=g, dtype=torch.float64)
    hs, ws = h // 8, w // 8
    seg = torch.randint(0, 19, (n, hs, ws), generator=g)
    seg[:, 0] = 255
    inst = torch.randn(n, 2, hs, ws, generator=g, dtype=torch.float64)
    depth = torch.rand(n, 1, hs, ws, generator=g, dtype=torch.float64)
    for target in (inst, depth):
        mask = torch.rand(target.shape, generator=g) < 0.5
        target[mask] = float("nan")
    return x, {"segmentation": seg, "instance": inst, "depth": depth}


SPECS = {"segmentation": Segmentation(19), "instance": MaskedL1(), "depth": MaskedL1()}


def test_masked_l1_ignores_nan_targets() -> None:
    torch.manual_seed(0)
    model = dense_hps(TASKS, list(CHANNELS), (3, 32, 64), widths=(4, 4, 8, 8), hidden=4).double()
    x, y = _dense_batch(32, 64)
    out = model(x)
    for t in ("instance", "depth"):
        valid = ~torch.isnan(y[t])
        assert 0.3 < valid.double().mean() < 0.7
        loss = SPECS[t].loss(out[t], y[t])
        expected = sum(abs(float(o) - float(v)) for o, v in zip(out[t].detach()[valid], y[t][valid], strict=True))
        assert loss.item() == pytest.approx(expected / int(valid.sum()), rel=1e-12)
        (grad,) = torch.autograd.grad(loss, out[t], retain_graph=True)
        assert torch.isfinite(grad).all() and bool((grad[~valid] == 0).all())
        assert bool((grad[valid].abs() == 1 / int(valid.sum())).all())  # d|o - y| / do = ±1, over the mean


def _reference_min_norm(gram: Tensor) -> np.ndarray:
    """min αᵀMα over the simplex by quadprog (an independent solver), M regularized to be definite."""
    m = gram.double().numpy()
    t = m.shape[0]
    scale = float(np.trace(m)) / t
    G = m / scale + 1e-9 * np.eye(t)
    C = np.hstack([np.ones((t, 1)), np.eye(t)])
    b = np.concatenate([[1.0], np.zeros(t)])
    return quadprog.solve_qp(G, np.zeros(t), C, b, meq=1)[0]


@pytest.mark.parametrize("name", ["mgda_ub", "mgda"])
def test_one_min_norm_step_on_the_dense_tasks(name: str) -> None:
    """One MGDA-UB / MGDA step with the Cityscapes losses: α is on the simplex and matches a QP solver on
    the per-task gradients the method uses; every gradient is finite and equals ∇(Σ α_t L_t)."""
    torch.manual_seed(0)
    model = dense_hps(TASKS, list(CHANNELS), (3, 32, 64), widths=(4, 4, 8, 8), hidden=4).double()
    x, y = _dense_batch(32, 64)
    z = model.encode(x)
    out = model.decode(z, x)
    losses = {t: SPECS[t].loss(out[t], y[t]) for t in TASKS}
    assert all(torch.isfinite(v) for v in losses.values())
    wrt = list(model.shared_parameters()) if name == "mgda" else [z]
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], wrt, retain_graph=True)]) for t in TASKS]
    jac = torch.stack(rows)
    expected_alpha = _reference_min_norm(jac @ jac.T)
    params = list(model.parameters())
    full = [
        [torch.zeros_like(p) if g is None else g
         for p, g in zip(params, torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True),
                         strict=True)]
        for t in TASKS
    ]
    method = build_method(name)
    method.setup(TASKS, model)
    model.zero_grad(set_to_none=True)
    info = method.backward(losses, StepContext(model, losses, z))
    alpha = np.array([info[f"weight/{t}"] for t in TASKS])
    assert (alpha >= -1e-12).all() and alpha.sum() == pytest.approx(1.0, abs=1e-9)
    assert (expected_alpha > 0.05).all()  # an interior point: not a corner the solvers agree on trivially
    np.testing.assert_allclose(alpha, expected_alpha, atol=1e-5)
    for p, *grads in zip(params, *full, strict=True):
        assert p.grad is not None and torch.isfinite(p.grad).all()
        torch.testing.assert_close(p.grad, sum(a * g for a, g in zip(alpha, grads, strict=True)), rtol=1e-6, atol=1e-9)
    assert any(p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_a_few_sgd_steps_decrease_the_losses() -> None:
    """Plain equal weighting on one fixed batch: the small model can fit all three dense tasks."""
    torch.manual_seed(0)
    model = build_model("resnet18_dense_small", list(TASKS), list(CHANNELS), input_shape=(3, 32, 64))
    x, y = _dense_batch(32, 64, n=4)
    x = x.float()
    y = {t: v.float() if v.is_floating_point() else v for t, v in y.items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        opt.zero_grad(set_to_none=True)
        out = model(x)
        losses = torch.stack([SPECS[t].loss(out[t], y[t]) for t in TASKS])
        losses.sum().backward()
        opt.step()
        first = losses.detach() if first is None else first
    assert (losses.detach() < first).all(), (first, losses)


def test_trainer_runs_mgda_ub_on_the_dense_tasks() -> None:
    """One epoch through the trainer with dense targets and the tasks' own losses and metrics."""
    torch.manual_seed(0)

    def part(n: int, seed: int) -> MultiTaskTensors:
        x, y = _dense_batch(32, 64, n=n, seed=seed)
        return MultiTaskTensors(x.float(), {t: v.float() if v.is_floating_point() else v for t, v in y.items()}, TASKS)

    splits = DataSplits(part(8, 0), part(4, 1), part(4, 2), description="random dense", tasks=dict(SPECS))
    model = build_model("resnet18_dense_small", list(TASKS), list(CHANNELS), input_shape=(3, 32, 64))
    before = [p.detach().clone() for p in model.encoder.parameters()]
    result = Trainer(model, build_method("mgda_ub"), optimizer="SGD", optimizer_kwargs={"lr": 0.01},
                     epochs=1, batch_size=4).fit(splits)
    row = result.final
    assert 0.0 <= row["test/segmentation/miou"] <= 1.0 and 0.0 <= row["val/segmentation/pixel_acc"] <= 1.0
    assert np.isfinite(row["test/instance/l1"]) and np.isfinite(row["test/depth/l1"])
    alpha = [row[f"train/weight/{t}"] for t in TASKS]
    assert min(alpha) >= 0.0 and sum(alpha) == pytest.approx(1.0)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.encoder.parameters(), strict=True))
