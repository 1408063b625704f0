"""The method documentation is generated from the classes (``Method.card``), so these tests hold the cards
to the code: every registered method declares its own card, the reference test it names exists, and the
cost class it declares is what one step does (counted backward passes through the encoder and a head)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moomtl.autodiff.context import StepContext
from moomtl.methods import available_methods, build_method
from moomtl.methods.base import COST_CLASSES, MethodCard
from moomtl.models.base import HardParameterSharing
from test_method_registry import _hparams

ROOT = Path(__file__).parents[1]
NAMES = list(available_methods())


@functools.cache
def _test_names(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("name", NAMES)
def test_every_method_declares_its_own_card_naming_an_existing_test(name: str) -> None:
    cls = available_methods()[name]
    assert "card" in cls.__dict__, f"{name}: declare `card = MethodCard(...)` on {cls.__name__} itself"
    card = cls.card
    assert isinstance(card, MethodCard) and card.cost in COST_CLASSES
    assert card.paper and card.equation and card.url.startswith("https://")
    assert str(ROOT) not in card.reference  # docs carry no paths of this machine
    node = card.reference.split(" ", 1)[0]
    file, test = node.split("::")
    path = ROOT / file
    assert path.is_file(), f"{name}: reference file {file} does not exist"
    assert test in _test_names(path), f"{name}: {file} has no test {test}"


def test_card_rejects_unknown_cost_and_untestable_reference() -> None:
    with pytest.raises(ValueError, match="cost"):
        MethodCard(paper="p", url="https://x", equation="e", cost="cheap", reference="tests/a.py::t")
    with pytest.raises(ValueError, match="reference"):
        MethodCard(paper="p", url="https://x", equation="e", cost="loss", reference="checked by hand")


def _counting_model(n_tasks: int) -> HardParameterSharing:
    torch.manual_seed(0)
    heads = {f"t{i}": nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double() for i in range(n_tasks)}
    # Two shared layers: GradNorm's layer is the last one, so the hook on the first counts encoder passes.
    encoder = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh()).double()
    return HardParameterSharing(encoder, heads)


@pytest.mark.parametrize("name", NAMES)
def test_declared_cost_class_is_what_a_step_does(name: str) -> None:
    """Backward passes of the second step (the first may set up state): ``E`` through the encoder's first
    layer (a hook on its weight), ``H`` through task 0's head (a hook on its output), ``Z`` gradients
    arriving at the shared representation (a hook on z). A loss weighting has E = H = Z = 1; a
    representation-Jacobian method E = 1 and Z ≥ 2: the rows ∂L_t/∂z are taken first (one call for
    disjoint heads, hooks on their reads of z; else one per task) and the update reaches z once more (the
    heads' own gradients come from the rows' call, so H may be 1); a full-Jacobian method E ≥ T."""
    n_tasks = 3
    model = _counting_model(n_tasks)
    method = build_method(name, **_hparams(name, model.task_names))
    method.setup(model.task_names, model)
    counts = {"E": 0, "H": 0, "Z": 0}

    def bump(key: str):
        def hook(g: torch.Tensor) -> None:
            counts[key] += 1
        return hook

    model.encoder[0].weight.register_hook(bump("E"))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6, n_tasks), generator=g)
    for step in range(2):
        model.zero_grad(set_to_none=True)
        counts.update(E=0, H=0, Z=0)
        z = model.encode(x)
        z.register_hook(bump("Z"))
        out = model.decode(z, x)
        out["t0"].register_hook(bump("H"))
        losses = {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}
        method.backward(losses, StepContext(model, losses, z, step=step))
    cost = available_methods()[name].card.cost
    if cost == "loss":
        assert counts == {"E": 1, "H": 1, "Z": 1}, f"{name} is declared a loss weighting but a step did {counts}"
    elif cost in ("representation", "layer"):  # layer: the products from z down to W stay above the first layer
        assert counts["E"] == 1 and counts["Z"] >= 2, f"{name} is declared {cost} but did {counts}"
    else:
        assert counts["E"] >= n_tasks, f"{name} is declared full-Jacobian but did {counts}"


def test_uniform_and_single_task_are_their_plain_losses() -> None:
    """Reference: autograd of the mean of the losses (``uniform``) and of one task's loss (``single_task``)."""
    model = _counting_model(3)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.randint(0, 3, (6, 3), generator=torch.Generator().manual_seed(3))

    def losses() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        z = model.encode(x)
        out = model.decode(z, x)
        return {t: F.cross_entropy(out[t], y[:, i]) for i, t in enumerate(model.task_names)}, z

    for name, kw, ref in (("uniform", {}, lambda ls: sum(ls.values()) / 3), ("single_task", {"task": "t1"},
                                                                                lambda ls: ls["t1"])):
        method = build_method(name, **kw)
        method.setup(model.task_names, model)
        model.zero_grad(set_to_none=True)
        ls, z = losses()
        method.backward(ls, StepContext(model, ls, z))
        got = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        ref(losses()[0]).backward()
        for a, p in zip(got, model.parameters(), strict=True):
            b = p.grad
            if a is None or b is None:
                assert (a is None or not a.any()) and (b is None or not b.any())
            else:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
