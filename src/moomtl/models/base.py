"""The multi-task model interface every method and the trainer rely on.

A multi-task model splits into a **shared** part, ``encode(x) -> z``, and a **task-specific** part,
``decode(z, x) -> {task: output}``. ``decode`` also receives the raw input so architectures whose
task branches read the input directly (MDMTN's monitors) fit the same interface. MGDA-UB differentiates
the task losses with respect to ``z``; full MGDA with respect to :meth:`shared_parameters`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn


class MultiTaskModel(nn.Module):
    """Base class: subclasses implement :meth:`encode` and :meth:`decode`.

    ``task_names`` fixes the task order used everywhere (losses, weights, Jacobian rows).
    """

    task_names: tuple[str, ...]

    def encode(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.decode(self.encode(x), x)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task depends on (the encoder's)."""
        shared = {id(p) for p in self.shared_modules().parameters()}
        return [p for p in self.parameters() if id(p) in shared and p.requires_grad]

    def task_specific_parameters(self) -> list[nn.Parameter]:
        shared = {id(p) for p in self.shared_parameters()}
        return [p for p in self.parameters() if id(p) not in shared and p.requires_grad]

    def shared_modules(self) -> nn.Module:  # pragma: no cover - abstract
        """The module holding the shared parameters (the encoder)."""
        raise NotImplementedError


def decode_with_aliases(model: nn.Module, z: Tensor, x: Tensor,
                        task_names: Sequence[str]) -> tuple[dict[str, Tensor], list[Tensor] | None]:
    """``model.decode`` as the trainer calls it: a model with ``decodes_per_task`` gets one alias
    ``z.view_as(z)`` of ``z`` per head, returned in task order so that
    :class:`~moomtl.autodiff.context.StepContext` (``z_aliases``) takes every ∂L_t/∂z in one autograd
    call; any other model gets ``z`` itself (aliases ``None``)."""
    if not getattr(model, "decodes_per_task", False):
        return model.decode(z, x), None
    aliases = {t: z.view_as(z) for t in task_names}
    return model.decode(aliases, x), [aliases[t] for t in task_names]


class HardParameterSharing(MultiTaskModel):
    """Hard parameter sharing: one shared encoder, one head per task, ``head_t(encoder(x))``.

    >>> import torch
    >>> from torch import nn
    >>> m = HardParameterSharing(nn.Linear(4, 3), {"a": nn.Linear(3, 2), "b": nn.Linear(3, 5)})
    >>> {k: tuple(v.shape) for k, v in m(torch.zeros(7, 4)).items()}
    {'a': (7, 2), 'b': (7, 5)}
    """

    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module] | nn.ModuleDict) -> None:
        super().__init__()
        if len(heads) == 0:
            raise ValueError("a multi-task model needs at least one head")
        self.encoder = encoder
        self.heads = heads if isinstance(heads, nn.ModuleDict) else nn.ModuleDict(heads)
        self.task_names = tuple(self.heads.keys())

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    #: ``decode`` accepts ``{task: z_t}`` (one alias of ``z`` per head): the trainer then takes every
    #: task's ∂L_t/∂z in one autograd call (:class:`~moomtl.autodiff.context.StepContext` ``z_aliases``).
    decodes_per_task = True

    def decode(self, z: Tensor | Mapping[str, Tensor], x: Tensor) -> dict[str, Tensor]:
        if isinstance(z, Mapping):
            return {name: head(z[name]) for name, head in self.heads.items()}
        return {name: head(z) for name, head in self.heads.items()}

    def shared_modules(self) -> nn.Module:
        return self.encoder


def count_parameters(module: nn.Module, params: Sequence[Tensor] | Iterator[Tensor] | None = None) -> int:
    """Number of scalar parameters (all trainable parameters of ``module`` by default)."""
    ps = module.parameters() if params is None else params
    return int(sum(p.numel() for p in ps))


def flatten_tensors(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])
