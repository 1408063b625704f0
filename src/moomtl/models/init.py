"""LSUV: layer-sequential unit-variance initialization (Mishkin & Matas, "All you need is a good init",
ICLR 2016), which the MDMTN code applies before its sparse search phase.

1. Every ``Conv*d`` / ``Linear`` weight gets an orthonormal matrix (rows or columns of the flattened
   ``[out, in·k·k]`` weight orthonormal, from the SVD of a Gaussian matrix) and a zero bias.
2. From the first layer the data reaches to the last, the layer's weight is rescaled by
   ``target_std / std(output)`` on one batch until ``|std(output) − target_std| ≤ tol`` (at most
   ``max_attempts`` rescalings per layer).

The order of step 2 is the order in which a forward pass *executes* the layers (recorded with hooks), not
the order in which they were registered: a layer's output depends on every layer run before it, so
rescaling in execution order leaves the earlier layers' variances intact. (The adapted code the MDMTN
authors use walks ``model.apply`` order, which differs for models whose forward order differs from
their attribute order.) Layers that run several times in one forward pass are scaled on their first
call's output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class LayerScaling:
    """What LSUV did to one layer."""

    name: str
    std_before: float
    std_after: float
    attempts: int


@torch.no_grad()
def orthonormal_(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``weight`` (``[out, ...]``, flattened to ``[out, fan_in]``) with orthonormal rows (if
    ``out ≤ fan_in``) or columns, in place.

    >>> w = orthonormal_(torch.empty(3, 2, 2, 2), torch.Generator().manual_seed(0)).reshape(3, -1)
    >>> torch.allclose(w @ w.T, torch.eye(3), atol=1e-6)
    True
    """
    rows, cols = weight.shape[0], math.prod(weight.shape[1:])
    gauss = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(gauss, full_matrices=False)
    q = u @ vh  # the orthonormal factor of the polar decomposition: [rows, cols], orthonormal rows or columns
    weight.copy_(q.reshape(weight.shape).to(weight.dtype))
    return weight


def _execution_order(model: nn.Module, x: Tensor) -> list[tuple[str, nn.Module]]:
    names = {id(m): n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def record(module: nn.Module, _inputs: object, _output: object) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            order.append((names[id(module)], module))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, _LAYERS)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return order


def _output_std(model: nn.Module, layer: nn.Module, x: Tensor) -> float:
    """Standard deviation of ``layer``'s (first) output when ``model`` runs on ``x``."""
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        model(x)
    finally:
        handle.remove()
    return float(captured[0].double().std())


@torch.no_grad()
def lsuv_init(
    model: nn.Module, x: Tensor, target_std: float = 1.0, tol: float = 0.1, max_attempts: int = 10,
    orthonormal: bool = True, generator: torch.Generator | None = None,
) -> list[LayerScaling]:
    """LSUV-initialize ``model`` in place on the input batch ``x`` (see the module docstring); returns one
    :class:`LayerScaling` per layer, in execution order. The model runs in eval mode (batch-norm layers
    use their running statistics, dropout is off) and gets its training mode back afterwards.

    >>> net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    >>> report = lsuv_init(net, torch.randn(256, 20, generator=torch.Generator().manual_seed(0)),
    ...                    generator=torch.Generator().manual_seed(1))
    >>> [r.name for r in report], all(abs(r.std_after - 1.0) <= 0.1 for r in report)
    (['0', '2'], True)
    """
    if not (target_std > 0 and tol >= 0 and max_attempts >= 0):
        raise ValueError(f"need target_std > 0, tol ≥ 0, max_attempts ≥ 0; got {target_std}, {tol}, {max_attempts}")
    was_training = model.training
    model.eval()
    try:
        layers = _execution_order(model, x)
        if not layers:
            raise ValueError("the model has no Conv/Linear layer that the input reaches")
        if orthonormal:
            for _, layer in layers:
                orthonormal_(layer.weight, generator)
                if layer.bias is not None:
                    layer.bias.zero_()
        report = []
        for name, layer in layers:
            std = before = _output_std(model, layer, x)
            attempts = 0
            while abs(std - target_std) > tol and attempts < max_attempts and std > 0:
                # The bias is zero after the orthonormal step, so the output scales with the weight.
                layer.weight.mul_(target_std / std)
                if layer.bias is not None and not orthonormal:
                    layer.bias.mul_(target_std / std)
                std = _output_std(model, layer, x)
                attempts += 1
            report.append(LayerScaling(name, before, std, attempts))
        return report
    finally:
        model.train(was_training)


__all__ = ["LayerScaling", "lsuv_init", "orthonormal_"]
