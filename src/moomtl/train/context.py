"""Per-step context handed to methods: losses, the shared representation, and — computed lazily,
once per step — per-task gradients (Jacobians) and Gramians."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from moomtl.models.base import MultiTaskModel

Wrt = Literal["shared", "representation"]


def batched_jacobian(outputs: Tensor, inputs: Sequence[Tensor]) -> Tensor:
    """Jacobian of the vector ``outputs`` (shape ``[T]``) w.r.t. ``inputs`` as a ``[T, n]`` matrix.

    Uses one vmapped backward (``is_grads_batched=True``) instead of ``T`` backward passes; falls back
    to a loop for graphs vmap cannot batch. Inputs an output does not depend on give zero rows.
    The graph is retained so the method can still backpropagate afterwards.
    """
    t = outputs.shape[0]
    eye = torch.eye(t, dtype=outputs.dtype, device=outputs.device)
    try:
        grads = torch.autograd.grad(
            outputs, list(inputs), grad_outputs=eye, retain_graph=True,
            is_grads_batched=True, allow_unused=True,
        )
        rows = [
            (g if g is not None else torch.zeros((t, *p.shape), dtype=p.dtype, device=p.device)).reshape(t, -1)
            for g, p in zip(grads, inputs, strict=True)
        ]
        jac = torch.cat(rows, dim=1)
    except RuntimeError:
        per_task = []
        for i in range(t):
            gs = torch.autograd.grad(outputs[i], list(inputs), retain_graph=True, allow_unused=True)
            per_task.append(torch.cat([
                (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gs, inputs, strict=True)
            ]))
        jac = torch.stack(per_task)
    return jac


class StepContext:
    """Lazily computed quantities for one training step; every method reads what it needs.

    Attributes:
        model: the multi-task model (``encode``/``decode`` split).
        losses: ``{task: scalar loss}`` still attached to the graph.
        z: the shared representation ``encode(x)`` of this batch (attached to the graph).
        step, epoch: counters of the trainer.
    """

    def __init__(
        self, model: MultiTaskModel, losses: Mapping[str, Tensor], z: Tensor | None = None,
        step: int = 0, epoch: int = 0,
    ) -> None:
        self.model = model
        self.losses = dict(losses)
        self.task_names = tuple(self.losses.keys())
        self.z = z
        self.step = step
        self.epoch = epoch
        self._jac: dict[str, Tensor] = {}
        self._gram: dict[str, Tensor] = {}
        self._shared: list[torch.nn.Parameter] | None = None
        self._specific: list[torch.nn.Parameter] | None = None

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def loss_vector(self) -> Tensor:
        """Losses stacked in task order, shape ``[T]`` (attached to the graph)."""
        return torch.stack([self.losses[t] for t in self.task_names])

    @property
    def shared_params(self) -> list[torch.nn.Parameter]:
        if self._shared is None:
            self._shared = self.model.shared_parameters()
        return self._shared

    @property
    def task_specific_params(self) -> list[torch.nn.Parameter]:
        if self._specific is None:
            self._specific = self.model.task_specific_parameters()
        return self._specific

    def jacobian(self, wrt: Wrt = "shared") -> Tensor:
        """``[T, n]`` matrix whose row t is ∇ L_t w.r.t. the shared parameters (flattened) or w.r.t.
        the shared representation ``z`` (flattened over the batch). Cached per step."""
        if wrt not in self._jac:
            if wrt == "shared":
                inputs: Sequence[Tensor] = self.shared_params
            elif wrt == "representation":
                if self.z is None:
                    raise ValueError("this step has no shared representation z (model lacks encode())")
                inputs = [self.z]
            else:
                raise ValueError(f"wrt must be 'shared' or 'representation', got {wrt!r}")
            self._jac[wrt] = batched_jacobian(self.loss_vector, inputs).detach()
        return self._jac[wrt]

    def gramian(self, wrt: Wrt = "shared") -> Tensor:
        """``J Jᵀ`` (``[T, T]``), the inner products of task gradients; cached per step."""
        if wrt not in self._gram:
            j = self.jacobian(wrt)
            self._gram[wrt] = j @ j.T
        return self._gram[wrt]

    # --- ways a method turns its decision into parameter gradients -------------------------------
    def backward_weighted(self, weights: Tensor) -> None:
        """Backpropagate Σ_t w_t L_t through the whole network (one backward pass)."""
        w = weights.to(self.loss_vector.dtype).detach()
        (w * self.loss_vector).sum().backward()

    def set_shared_direction(self, direction: Tensor) -> None:
        """Write a flattened update direction (descent: the optimizer subtracts it) into the
        ``.grad`` of the shared parameters."""
        offset = 0
        for p in self.shared_params:
            n = p.numel()
            g = direction[offset : offset + n].view_as(p).to(p.dtype)
            p.grad = g.clone() if p.grad is None else p.grad + g
            offset += n
        if offset != direction.numel():
            raise ValueError(f"direction has {direction.numel()} entries, shared parameters {offset}")

    def backward_task_specific(self, weights: Tensor | None = None) -> None:
        """Give task-specific parameters the gradient of Σ_t w_t L_t (w = 1 by default); since a
        task-specific parameter only affects its own task, each gets (w_t times) its own gradient."""
        params = self.task_specific_params
        if not params:
            return
        lv = self.loss_vector
        w = torch.ones_like(lv) if weights is None else weights.to(lv.dtype).detach()
        grads = torch.autograd.grad((w * lv).sum(), params, retain_graph=True, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.grad = g.clone() if p.grad is None else p.grad + g
