"""Trainer callbacks: the GrOWL proximal step after each optimizer step, and tying during retraining.

Proximal SGD on ``f(θ) + s·Ω(W)``: after the gradient step ``W ← W − η∇f``, ``W ← prox_{η s Ω}(W)``.
The prox threshold is the step size ``η`` (read from the optimizer) times the strength ``s``, so it
follows any LR schedule. (With adaptive optimizers such as Adam the per-coordinate step is not ``η``;
there the rule is the usual heuristic.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.optim import Optimizer

from moomtl.events import Callback, TrainingError, TrainState
from moomtl.sparsity.grouping import RegularizedGroup
from moomtl.sparsity.growl import WEIGHT_KINDS, growl_prox, growl_weights, validate_theta
from moomtl.sparsity.tying import TyingPlan, apply_tying

ThetaSpec = str | Callable[[int], Tensor] | Sequence[Tensor]


def cap_zero_rows(before: Tensor, after: Tensor, max_zero_fraction: float) -> Tensor:
    """Limit the fraction of zero rows that a prox step leaves, deterministically.

    If ``after`` has more than ``⌊max_zero_fraction · n⌋`` zero rows, the rows it newly zeroed with
    the largest norms in ``before`` get their ``before`` values back (ties broken by index), until
    the cap holds or no newly zeroed row is left (rows already zero before the step stay zero).
    The authors' code restores randomly chosen rows instead.

    >>> before = torch.tensor([[3.0], [2.0], [1.0], [0.5]])
    >>> cap_zero_rows(before, torch.zeros(4, 1), 0.5)
    tensor([[3.],
            [2.],
            [0.],
            [0.]])
    """
    if not 0.0 <= max_zero_fraction <= 1.0:
        raise ValueError(f"max_zero_fraction must be in [0, 1], got {max_zero_fraction}")
    n = after.shape[0]
    zero_after = (after == 0).all(dim=1)
    excess = int(zero_after.sum()) - math.floor(max_zero_fraction * n + 1e-9)
    if excess <= 0:
        return after
    norms = torch.linalg.vector_norm(before, dim=1)
    newly = zero_after & (norms > 0)
    candidates = newly.nonzero().flatten()
    if candidates.numel() == 0:
        return after
    order = torch.sort(norms[candidates], descending=True, stable=True).indices
    restore = candidates[order[:excess]]
    out = after.clone()
    out[restore] = before[restore]
    return out


class GrOWLProx(Callback):
    """Apply ``prox_{η·s·Ω_θ}`` to every group after each optimizer step (η = the group's LR).

    Args:
        groups: the :class:`RegularizedGroup` objects to sparsify.
        theta: a weight kind (``"spike"``, ``"linear"``, ``"oscar"``, ``"ramp"``; with ``beta1``,
            ``beta2``), a function ``n -> θ`` or one explicit sequence per group.
        strength: ``s`` (e.g. the sparsity weight of the scalarization).
        max_zero_fraction: optional per-layer cap on the fraction of zero rows (see
            :func:`cap_zero_rows`); ``None`` for no cap.

    After each step, ``last_zero_fraction`` maps group names to their fraction of zero rows.
    """

    def __init__(
        self,
        groups: Sequence[RegularizedGroup],
        theta: ThetaSpec = "spike",
        strength: float = 1.0,
        *,
        beta1: float = 0.8,
        beta2: float = 0.2,
        max_zero_fraction: float | None = None,
    ) -> None:
        if not (strength >= 0 and math.isfinite(strength)):
            raise ValueError(f"strength must be finite and ≥ 0, got {strength}")
        if max_zero_fraction is not None and not 0.0 <= max_zero_fraction <= 1.0:
            raise ValueError(f"max_zero_fraction must be in [0, 1], got {max_zero_fraction}")
        self.groups = list(groups)
        if not self.groups:
            raise ValueError("GrOWLProx needs at least one group")
        self.strength = float(strength)
        self.max_zero_fraction = max_zero_fraction
        self.thetas = self._resolve_theta(theta, beta1, beta2)
        self.last_zero_fraction: dict[str, float] = {}
        self._group_index: tuple[Optimizer | None, dict[int, int]] = (None, {})

    def _resolve_theta(self, theta: ThetaSpec, beta1: float, beta2: float) -> list[Tensor]:
        if isinstance(theta, str):
            if theta not in WEIGHT_KINDS:
                raise ValueError(f"unknown GrOWL weight kind {theta!r}; expected one of {WEIGHT_KINDS}")
            return [growl_weights(g.n_rows, theta, beta1, beta2) for g in self.groups]  # type: ignore[arg-type]
        if callable(theta):
            return [validate_theta(theta(g.n_rows), g.n_rows) for g in self.groups]
        seqs = list(theta)
        if len(seqs) != len(self.groups):
            raise ValueError(f"got {len(seqs)} theta sequences for {len(self.groups)} groups")
        return [validate_theta(t, g.n_rows) for t, g in zip(seqs, self.groups, strict=True)]

    def _lr_of(self, optimizer: Optimizer, param: Tensor) -> float:
        # Map parameters to their optimizer group once per optimizer (groups can have their own LR).
        if self._group_index[0] is not optimizer:
            index = {id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]}
            self._group_index = (optimizer, index)
        i = self._group_index[1].get(id(param), 0)
        return float(optimizer.param_groups[i]["lr"])

    @torch.no_grad()
    def apply(self, lr: float | Callable[[Tensor], float]) -> dict[str, float]:
        """One prox step with threshold ``lr × strength``; returns the fraction of zero rows per group."""
        for g, theta in zip(self.groups, self.thetas, strict=True):
            step = (lr(g.weight) if callable(lr) else float(lr)) * self.strength
            before = g.rows().detach()
            after = growl_prox(before, theta, step)
            if self.max_zero_fraction is not None:
                after = cap_zero_rows(before, after, self.max_zero_fraction)
            g.set_rows(after)
            self.last_zero_fraction[g.name] = float((after == 0).all(dim=1).float().mean())
        return dict(self.last_zero_fraction)

    def on_step_end(self, state: TrainState) -> None:
        try:
            self.apply(lambda p: self._lr_of(state.optimizer, p))
        except ValueError:  # the prox's own finiteness check: the step before it diverged
            if not all(bool(torch.isfinite(g.rows().double().norm(dim=1) * self.strength).all()
                            and torch.isfinite(g.rows().norm(dim=1)).all()) for g in self.groups):
                raise TrainingError(
                    f"parameters are not finite after step {state.step} (epoch {state.epoch + 1}; their row norms "
                    "overflow), so the GrOWL prox cannot run; lower the learning rate"
                ) from None
            raise

    def __repr__(self) -> str:
        return (f"GrOWLProx(groups={len(self.groups)}, strength={self.strength}, "
                f"max_zero_fraction={self.max_zero_fraction})")


class TyingEnforcer(Callback):
    """Keep the weights on a :class:`TyingPlan` during retraining: pruned rows stay zero, each
    cluster's rows equal their mean.

    The projection runs at the start of training, after every optimizer step (``every="step"``) or
    every epoch (``every="epoch"``), and at the end of training, so the final model is always tied.
    With ``"epoch"`` the trainer's per-epoch evaluation happens before the projection of that epoch.
    """

    def __init__(self, plan: TyingPlan, every: Literal["step", "epoch"] = "step") -> None:
        if every not in ("step", "epoch"):
            raise ValueError(f"every must be 'step' or 'epoch', got {every!r}")
        self.plan = plan
        self.every = every

    def on_train_begin(self, state: TrainState) -> None:
        apply_tying(self.plan)

    def on_step_end(self, state: TrainState) -> None:
        if self.every == "step":
            apply_tying(self.plan)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.every == "epoch":
            apply_tying(self.plan)

    def on_train_end(self, state: TrainState) -> None:
        apply_tying(self.plan)

    def __repr__(self) -> str:
        return f"TyingEnforcer(groups={len(self.plan.entries)}, every={self.every!r})"
