"""MDMTN and the HPS networks of the MDMTN paper (moomtl.models.mdmtn)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moomtl.methods.mwc_alm import MWCALM
from moomtl.models.base import HardParameterSharing, count_parameters
from moomtl.models.mdmtn import (
    MDMTN,
    hps_cifar10mnist,
    hps_multimnist,
    mdmtn_cifar10mnist,
    mdmtn_multimnist,
)
from moomtl.train.context import StepContext

MULTIMNIST = (1, 28, 28)
CIFAR10MNIST = (3, 32, 32)


@pytest.mark.parametrize(
    ("builder", "shape", "tasks"),
    [(mdmtn_multimnist, MULTIMNIST, ("left", "right")), (hps_multimnist, MULTIMNIST, ("left", "right")),
     (mdmtn_cifar10mnist, CIFAR10MNIST, ("cifar", "digit")), (hps_cifar10mnist, CIFAR10MNIST, ("cifar", "digit"))],
)
def test_forward_shapes(builder, shape: tuple[int, ...], tasks: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = builder()
    assert model.task_names == tasks
    x = torch.randn(5, *shape)
    z = model.encode(x)
    width = 50 if shape == MULTIMNIST else 32
    assert z.shape == (5, width)
    out = model.decode(z, x)
    assert list(out) == list(tasks) and all(v.shape == (5, 10) for v in out.values())
    torch.testing.assert_close(model(x)[tasks[0]], out[tasks[0]])


# Authors' counts (salomonhotegni/MDMTN: sum of numel over their model.parameters()) include their
# Chebyshev variable t (1 scalar) and exclude the gates (kept in a plain dict, not registered).
PAPER_COUNTS = {
    mdmtn_multimnist: 311_491, hps_multimnist: 22_351, mdmtn_cifar10mnist: 505_525, hps_cifar10mnist: 42_741,
}


@pytest.mark.parametrize("builder", list(PAPER_COUNTS))
def test_parameter_counts_match_the_paper(builder) -> None:
    model = builder()
    n_gates = sum(p.numel() for n, p in model.named_parameters() if n.startswith("gates."))
    assert n_gates == (4 if isinstance(model, MDMTN) else 0)
    network = count_parameters(model) - n_gates  # trunk + monitors + heads
    assert network + 1 == PAPER_COUNTS[builder]
    # The same total as the authors' optimizer sees: network + t (the t of mwc_alm).
    method = MWCALM(preference=[0.5, 0.5])
    assert count_parameters(method) == 1
    assert count_parameters(model) + count_parameters(method) - n_gates == PAPER_COUNTS[builder]


def test_exact_parameter_counts() -> None:
    assert count_parameters(mdmtn_multimnist()) == 311_494
    assert count_parameters(hps_multimnist()) == 22_350
    assert count_parameters(mdmtn_cifar10mnist()) == 505_528
    assert count_parameters(hps_cifar10mnist()) == 42_740
    # Layer by layer (MultiMNIST): trunk 260 + 5,020 + 16,050; monitor 520 + 144,050; head 510.
    m = mdmtn_multimnist()
    assert count_parameters(m.trunk) == 21_330
    assert count_parameters(m.monitors["left"]) == 144_570
    assert count_parameters(m.heads["left"]) == 510


def test_gates_are_registered_trained_and_saved() -> None:
    torch.manual_seed(0)
    model = mdmtn_multimnist()
    names = [n for n, _ in model.named_parameters()]
    assert "gates.left" in names and "gates.right" in names
    assert {"gates.left", "gates.right"} <= set(model.state_dict())
    for g in model.gates.values():
        assert g.requires_grad and g.tolist() == [1.0, 0.0]
    x = torch.randn(3, *MULTIMNIST)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(x)
    (out["left"].square().mean() + out["right"].abs().mean()).backward()
    assert all(g.grad is not None and bool(g.grad.abs().sum() > 0) for g in model.gates.values())
    opt.step()
    assert model.gates["left"].tolist() != [1.0, 0.0]
    # They follow the model across dtype changes and into a fresh copy.
    other = mdmtn_multimnist()
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.gates["left"], model.gates["left"])
    assert model.double().gates["left"].dtype == torch.float64


def test_gates_mix_trunk_and_monitor() -> None:
    torch.manual_seed(0)
    model = mdmtn_multimnist()
    x = torch.randn(4, *MULTIMNIST)
    z = model.trunk(x)
    # α = (1, 0) at initialization: the monitor has no effect yet.
    torch.testing.assert_close(model(x)["left"], model.heads["left"](z))
    with torch.no_grad():
        model.gates["right"].copy_(torch.tensor([0.25, 2.0]))
    expected = model.heads["right"](0.25 * z + 2.0 * model.monitors["right"](x))
    torch.testing.assert_close(model(x)["right"], expected)
    assert model.gate_values()["right"] == (0.25, 2.0)


@pytest.mark.parametrize("builder", [mdmtn_multimnist, mdmtn_cifar10mnist, hps_multimnist, hps_cifar10mnist])
def test_shared_and_task_specific_partition(builder) -> None:
    model = builder()
    shared = {id(p) for p in model.shared_parameters()}
    specific = {id(p) for p in model.task_specific_parameters()}
    trunk = model.trunk if isinstance(model, MDMTN) else model.encoder
    assert shared == {id(p) for p in trunk.parameters()}
    assert not shared & specific
    assert shared | specific == {id(p) for p in model.parameters()}
    if isinstance(model, MDMTN):
        expected = {id(p) for mod in (model.monitors, model.heads) for p in mod.parameters()}
        expected |= {id(g) for g in model.gates.values()}
        assert specific == expected
    else:
        assert isinstance(model, HardParameterSharing)
        assert specific == {id(p) for p in model.heads.parameters()}


def test_step_context_jacobians_on_mdmtn() -> None:
    torch.manual_seed(0)
    model = mdmtn_multimnist()
    x, y = torch.randn(6, *MULTIMNIST), torch.randint(0, 10, (6, 2))
    z = model.encode(x)
    out = model.decode(z, x)
    losses = {t: nn.functional.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}
    ctx = StepContext(model, losses, z)
    assert ctx.jacobian("shared").shape == (2, 21_330)
    assert ctx.jacobian("representation").shape == (2, 6 * 50)
    # A task's loss does not depend on the other task's monitor: backward_task_specific fills both exactly.
    ctx.backward_task_specific()
    g_left = torch.autograd.grad(losses["left"], list(model.monitors["left"].parameters()), retain_graph=True)
    for p, g in zip(model.monitors["left"].parameters(), g_left, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_generic_builder_validation() -> None:
    shared_monitor = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="new module"):
        MDMTN(nn.Linear(4, 3), lambda: shared_monitor, {"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)})
    trunk = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="new module"):
        MDMTN(trunk, lambda: trunk, {"a": nn.Linear(3, 2)})
    with pytest.raises(ValueError, match="at least one head"):
        MDMTN(nn.Linear(4, 3), lambda: nn.Linear(4, 3), {})
    with pytest.raises(ValueError, match="gate_init"):
        MDMTN(nn.Linear(4, 3), lambda: nn.Linear(4, 3), {"a": nn.Linear(3, 2)}, gate_init=(1.0,))
    with pytest.raises(ValueError, match="nn.Module"):
        MDMTN(nn.Linear(4, 3), lambda: None, {"a": nn.Linear(3, 2)})  # type: ignore[arg-type, return-value]
    bad = MDMTN(nn.Linear(4, 3), lambda: nn.Linear(4, 5), {"a": nn.Linear(3, 2)})
    with pytest.raises(ValueError, match="monitor 'a' outputs"):
        bad(torch.zeros(2, 4))
    frozen = MDMTN(nn.Linear(4, 3), lambda: nn.Linear(4, 3), {"a": nn.Linear(3, 2)}, gate_init=(0.5, 0.5),
                   train_gates=False)
    assert "gates.a" in frozen.state_dict() and frozen.gates["a"].tolist() == [0.5, 0.5]
    assert all(p is not frozen.gates["a"] for p in frozen.task_specific_parameters())


def test_class_counts_per_task() -> None:
    model = hps_cifar10mnist(task_names=("x", "y", "z"), n_classes=[10, 2, 7])
    out = model(torch.zeros(2, *CIFAR10MNIST))
    assert [v.shape[1] for v in out.values()] == [10, 2, 7]
    with pytest.raises(ValueError, match="class counts"):
        mdmtn_multimnist(n_classes=[10, 10, 10])
    with pytest.raises(ValueError, match="distinct"):
        mdmtn_multimnist(task_names=("a", "a"))
