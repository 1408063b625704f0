"""OMD-TCH: online mirror descent for Tchebycheff scalarization, with (adaptive) online-to-batch output.

Liu, Zhang, Xie, Donahue & Zhao, "Online Mirror Descent for Tchebycheff Scalarization in
Multi-Objective Optimization" (arXiv:2410.21764; code: uiuctml/AdaOMD-TCH). The Tchebycheff problem is
written as a min-max over the simplex,

.. math:: \\min_θ \\max_t λ_t (L_t(θ) − z_t) = \\min_θ \\max_{p ∈ Δ} \\sum_t p_t λ_t (L_t(θ) − z_t),

and each step plays both sides against the same batch losses ``L^{(s)} = L(θ^{(s)})``:

- **primal**: the trainer's optimizer steps on :math:`\\sum_t p_t λ_t (L_t − z_t)` with ``p`` held
  fixed (this method backpropagates it, i.e. task weights ``w = p ∘ λ``);
- **dual** (ascent on ``p``): exponentiated gradient :math:`p_t ← p_t \\exp(η_p λ_t (L_t − z_t)) / Σ`
  (``dual="eg"``, default) or Euclidean :math:`p ← Π_Δ(p + η_p λ ∘ (L − z))` (``dual="euclidean"``).

Output (online-to-batch conversion, applied in :meth:`OMDTCH.on_train_end`):

- ``"last"``: keep the last iterate;
- ``"average"``: the mean of the iterates :math:`\\bar θ = \\frac1S \\sum_s θ^{(s)}` (a running
  average of every floating-point entry of the model's state dict);
- ``"adaptive"`` (the paper's AdaOMD-TCH): a :class:`CreditArchive` of iterates that are
  non-dominated w.r.t. their measured task losses, output :math:`\\sum_k c_k θ_k / \\sum_k c_k`.

``θ^{(s)}`` is the parameter vector *at which* the batch losses ``L^{(s)}`` were measured: the method
records it in :meth:`backward`, before the optimizer step (``TrainState.step_losses`` holds the same
losses, but at ``on_step_end`` the model already holds ``θ^{(s+1)}``). Differences from the authors'
code: their archive stores ``model.state_dict()`` *references* (which later in-place updates
overwrite) — we store copies; and their dominance losses come from separately evaluated local models
— by default (``archive_on="step"``) we use the batch losses of every ``archive_every``-th step, which
are noisy, so dominance is partly decided by the batch; ``archive_on="epoch"`` offers the end-of-epoch
model with its *validation* losses instead (few, low-noise comparisons on held-out data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.events import TrainingError, TrainState
from moomtl.methods.base import MethodCard, register, weights_info
from moomtl.methods.chebyshev import IdealSpec, PreferenceMethod, active_info
from moomtl.solvers.simplex import exponentiated_gradient_step, project_simplex

DUALS = ("eg", "euclidean")
CONVERSIONS = ("last", "average", "adaptive")
ARCHIVE_ON = ("step", "epoch")


@dataclass(frozen=True)
class ArchiveUpdate:
    """What one :meth:`CreditArchive.update` did. Positions refer to the archive *before* the update,
    except ``evicted``/``merged_into``, which refer to it after the insertion, before the eviction."""

    entered: bool
    credited: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    evicted: int | None = None
    merged_into: int | None = None


class CreditArchive:
    """Archive of non-dominated points with credit weights (AdaOMD-TCH's adaptive online-to-batch).

    For a new loss vector ``x`` (smaller is better):

    - if members weakly dominate it (``D = {k : L_k ≤ x}``, component-wise, equality included), ``x``
      is discarded and each member of ``D`` gets credit ``1/|D|``;
    - otherwise ``x`` enters with credit ``1 + Σ_{k ∈ R} c_k``, absorbing the members it dominates,
      ``R = {k : x ≤ L_k}``, which are removed.

    So the total credit equals the number of updates and the archive stays mutually non-dominated.

    **Capacity** (``capacity=None``: unbounded): when an entry makes the archive exceed it, the member
    with the lowest credit (ties: the oldest) is evicted and its credit merged into its nearest
    neighbour in loss space (Euclidean distance; ties: the oldest), so no credit is lost and the mass
    stays near where it was earned. The evicted member's loss vector is forgotten, so later points
    are compared against fewer members (the archive is then an approximation of the uncapped one).

    Payloads (e.g. parameter copies) are created lazily by a factory called only when a point enters.

    >>> a = CreditArchive()
    >>> [a.update(x).entered for x in ([3, 3], [4, 4], [2, 5], [1, 2])]
    [True, False, True, True]
    >>> a.losses, a.credits
    ([(1.0, 2.0)], [4.0])
    """

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be a positive integer or None, got {capacity!r}")
        self.capacity = capacity
        self.losses: list[tuple[float, ...]] = []
        self.credits: list[float] = []
        self.payloads: list[Any] = []

    def __len__(self) -> int:
        return len(self.losses)

    @property
    def total_credit(self) -> float:
        return float(sum(self.credits))

    def weights(self) -> list[float]:
        """Normalized credits ``c_k / Σ c``."""
        total = self.total_credit
        return [c / total for c in self.credits] if total > 0 else []

    def update(self, losses: Sequence[float] | Tensor, payload: Callable[[], Any] | None = None) -> ArchiveUpdate:
        """Offer the point with loss vector ``losses``; ``payload()`` is stored if it enters."""
        x = tuple(float(v) for v in (losses.tolist() if isinstance(losses, Tensor) else losses))
        if not x or not all(math.isfinite(v) for v in x):
            raise ValueError(f"archive losses must be a non-empty vector of finite numbers, got {x}")
        if self.losses and len(x) != len(self.losses[0]):
            raise ValueError(f"archive holds {len(self.losses[0])}-objective points, got {len(x)}")
        dominators = [k for k, m in enumerate(self.losses) if all(a <= b for a, b in zip(m, x, strict=True))]
        if dominators:
            share = 1.0 / len(dominators)
            for k in dominators:
                self.credits[k] += share
            return ArchiveUpdate(entered=False, credited=tuple(dominators))
        removed = [k for k, m in enumerate(self.losses) if all(b <= a for a, b in zip(m, x, strict=True))]
        credit = 1.0 + sum(self.credits[k] for k in removed)
        gone = set(removed)
        keep = [k for k in range(len(self.losses)) if k not in gone]
        self.losses = [self.losses[k] for k in keep] + [x]
        self.credits = [self.credits[k] for k in keep] + [credit]
        self.payloads = [self.payloads[k] for k in keep] + [payload() if payload is not None else None]
        evicted = merged = None
        if self.capacity is not None and len(self.losses) > self.capacity:
            evicted, merged = self._evict()
        return ArchiveUpdate(entered=True, removed=tuple(removed), evicted=evicted, merged_into=merged)

    def _evict(self) -> tuple[int, int]:
        victim = min(range(len(self.credits)), key=lambda k: (self.credits[k], k))
        lv = self.losses[victim]

        def dist(k: int) -> float:
            return math.dist(lv, self.losses[k])

        target = min((k for k in range(len(self.losses)) if k != victim), key=lambda k: (dist(k), k))
        self.credits[target] += self.credits[victim]
        del self.losses[victim], self.credits[victim], self.payloads[victim]
        return victim, target

    def shrink_to(self, capacity: int) -> None:
        """Set the cap to ``capacity`` and evict (by the same policy) until the archive fits."""
        if capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity}")
        self.capacity = capacity
        while len(self.losses) > capacity:
            self._evict()

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "losses": [list(v) for v in self.losses],
            "credits": list(self.credits),
            "payloads": list(self.payloads),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        losses, credits, payloads = state["losses"], state["credits"], state["payloads"]
        if not len(losses) == len(credits) == len(payloads):
            raise ValueError("corrupt archive state: losses, credits and payloads differ in length")
        self.capacity = state["capacity"]
        self.losses = [tuple(float(v) for v in x) for x in losses]
        self.credits = [float(c) for c in credits]
        self.payloads = list(payloads)


def copy_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy (not a view) of every entry of ``model.state_dict()``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def weighted_average_state(states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> dict[str, Tensor]:
    """``Σ_k w_k s_k / Σ_k w_k`` for every floating-point entry; other entries (integer counters such as
    BatchNorm's ``num_batches_tracked``) are taken from the last state.

    >>> weighted_average_state([{"w": torch.tensor([0.0])}, {"w": torch.tensor([4.0])}], [3, 1])
    {'w': tensor([1.])}
    """
    if not states or len(states) != len(weights):
        raise ValueError(f"need as many weights as states (≥ 1), got {len(weights)} and {len(states)}")
    total = float(sum(weights))
    if not total > 0:
        raise ValueError("weights must have a positive sum")
    out: dict[str, Tensor] = {}
    for key, last in states[-1].items():
        if torch.is_floating_point(last):
            acc = torch.zeros_like(last, dtype=torch.float64)
            for s, w in zip(states, weights, strict=True):
                acc += (w / total) * s[key].to(acc)
            out[key] = acc.to(last.dtype)
        else:
            out[key] = last.clone()
    return out


@register("omd_tch", "online mirror descent for Tchebycheff (primal step on Σ p_t λ_t L_t, dual step on p)")
class OMDTCH(PreferenceMethod):
    """(Ada)OMD-TCH. See the module docstring for the algorithm.

    Args:
        preference: ``λ`` (normalized; uniform when ``None``). ideal, margin: the reference point ``z``
            (see :mod:`moomtl.methods.chebyshev`; ``z = 0`` by default, as in the authors' code).
        dual_lr: the dual step size ``η_p``.
        dual: ``"eg"`` (exponentiated gradient) or ``"euclidean"`` (projected gradient ascent).
        conversion: ``"last"``, ``"average"`` or ``"adaptive"`` (see the module docstring).
        archive_size: cap on the number of parameter copies the adaptive archive keeps.
        archive_every: offer every ``archive_every``-th iterate to the archive (fewer comparisons
            and copies; each offered iterate carries credit 1).
        archive_on: ``"step"`` (offer iterates with their batch losses) or ``"epoch"`` (offer the model
            at each epoch's end with its validation losses; needs a validation split).
        burn_in: the first ``burn_in`` steps' iterates are left out of the ``"average"`` and
            ``"adaptive"`` outputs. The average of *every* iterate includes the random initialization
            and the early, far-from-optimal iterates, which the ``1/S`` rate only slowly washes out.

    State (in ``state_dict``): the dual ``p`` and step counter as buffers; the archive (loss vectors,
    credits, parameter copies) and the running average as extra state.
    """

    card = MethodCard(
        paper=(
            "Liu et al., 2024, Online Mirror Descent for Tchebycheff Scalarization in Multi-Objective Optimization, "
            "arXiv:2410.21764 (v3: Adaptive Online Mirror Descent for Tchebycheff Scalarization in Multi-Objective "
            "Learning, TMLR 2026)"
        ),
        url="https://arxiv.org/abs/2410.21764",
        equation=(
            "backward Σ_t p_t λ_t L_t; p ← p ⊙ exp(η λ ⊙ (L − z)) / Σ; output: credit-weighted average of "
            "non-dominated iterates"
        ),
        cost="loss",
        solver="archive update on the host every archive_every steps (conversion='adaptive', archive_on='step')",
        state="dual p, step count, the archive of parameter copies with credits (or the running average)",
        reference=(
            "tests/test_omd_tch.py::test_converted_output_approaches_the_tch_optimum (the Tchebycheff optimum of a "
            "convex problem)"
        ),
    )

    def __init__(
        self, preference: Sequence[float] | None = None, ideal: IdealSpec = None, margin: float = 1e-3,
        dual_lr: float = 0.1, dual: str = "eg", conversion: str = "adaptive", archive_size: int = 16,
        archive_every: int = 1, burn_in: int = 0, archive_on: str = "step",
    ) -> None:
        super().__init__(preference, ideal, margin)
        if not (isinstance(dual_lr, int | float) and 0 < dual_lr < float("inf")):
            raise ValueError(f"dual_lr must be a positive number, got {dual_lr!r}")
        if dual not in DUALS:
            raise ValueError(f"dual must be one of {DUALS}, got {dual!r}")
        if conversion not in CONVERSIONS:
            raise ValueError(f"conversion must be one of {CONVERSIONS}, got {conversion!r}")
        if not isinstance(archive_size, int) or archive_size < 1:
            raise ValueError(f"archive_size must be a positive integer, got {archive_size!r}")
        if not isinstance(archive_every, int) or archive_every < 1:
            raise ValueError(f"archive_every must be a positive integer, got {archive_every!r}")
        if not isinstance(burn_in, int) or burn_in < 0:
            raise ValueError(f"burn_in must be a non-negative integer (steps), got {burn_in!r}")
        if archive_on not in ARCHIVE_ON:
            raise ValueError(f"archive_on must be one of {ARCHIVE_ON}, got {archive_on!r}")
        self.dual_lr = float(dual_lr)
        self.burn_in = burn_in
        self.archive_on = archive_on
        self.dual = dual
        self.conversion = conversion
        self.archive_size = archive_size
        self.archive_every = archive_every
        self.archive = CreditArchive(archive_size)
        self._average: dict[str, Tensor] | None = None
        self._n_averaged = 0
        self._n_steps: int | None = None  # host copy of ``steps_seen`` (None: read the buffer)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n = len(task_names)
        self.register_buffer("p", torch.full((n,), 1.0 / n, dtype=torch.float64))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.archive = CreditArchive(self.archive_size)
        self._average = None
        self._n_averaged = 0
        self._n_steps = 0

    # --- one step -----------------------------------------------------------------------------------
    def weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        """Primal task weights ``p ∘ λ`` (no side effects)."""
        self._require_setup()
        return (self.p * self.pref.to(self.p)).to(losses)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        f = ctx.loss_values
        z = self.current_ideal(f)
        w = self.weights(f, ctx)
        if ctx.model is not None:
            self._record_iterate(ctx.model, f)
        ctx.backward_weighted(w)
        gap = (self.pref.to(f) * (f - z)).to(self.p)  # ∂/∂p of Σ p_t λ_t (L_t − z_t)
        self.dual_step(gap)
        info: dict[str, Tensor] = weights_info(self.task_names, w)
        p = self.p.detach().clone()  # the dual after this step's update (p changes in place next step)
        info.update({f"dual/{t}": p[i] for i, t in enumerate(self.task_names)})
        info["scalarized"] = gap.max().detach()  # the batch's Tchebycheff value max_t λ_t (L_t − z_t)
        info.update(active_info(self.task_names, gap))
        info.update(self._ideal_info(z))
        if self.conversion == "adaptive":
            info["archive_size"] = torch.tensor(float(len(self.archive)))  # host count: a CPU tensor, no copy
        return info

    def dual_step(self, gap: Tensor) -> None:
        """Ascent step on ``p`` for the linear dual objective ``p ↦ Σ_t p_t gap_t``."""
        self._require_setup()
        gap = gap.to(self.p)
        # check=False: the solvers' value checks read device values (a host sync per step). The dual ``p``
        # is this method's own simplex buffer and a non-finite gap comes from non-finite losses, which
        # the trainer detects once per epoch.
        if self.dual == "eg":
            new = exponentiated_gradient_step(self.p, -gap, self.dual_lr, check=False)
        else:
            new = project_simplex(self.p + self.dual_lr * gap, check=False)
        self.p.copy_(new)

    def _steps_host(self) -> int:
        """``steps_seen`` as a host integer, read from the buffer once after set-up or a restore and
        counted on the host after that (no device read per step)."""
        if self._n_steps is None:
            self._n_steps = int(self.steps_seen)
        return self._n_steps

    def _record_iterate(self, model: nn.Module, losses: Tensor) -> None:
        self.steps_seen.add_(1)
        self._n_steps = self._steps_host() + 1
        seen = self._n_steps - self.burn_in  # 1 for the first iterate after the burn-in
        if seen < 1:
            return
        if self.conversion == "average":
            state = model.state_dict()
            self._n_averaged += 1
            if self._average is None:
                self._average = {k: v.detach().clone() for k, v in state.items() if torch.is_floating_point(v)}
            else:
                for k, avg in self._average.items():
                    avg.add_(state[k].detach() - avg, alpha=1.0 / self._n_averaged)
        elif self.conversion == "adaptive" and self.archive_on == "step" and (seen - 1) % self.archive_every == 0:
            self.archive.update(losses, lambda: copy_state(model))

    # --- output ------------------------------------------------------------------------------------
    def converted_state(self, model: nn.Module) -> dict[str, Tensor] | None:
        """The state dict the conversion outputs for ``model`` (``None``: keep the model as is)."""
        current = model.state_dict()
        if self.conversion == "average" and self._average is not None:
            out = {k: v.detach().clone() for k, v in current.items()}
            out.update({k: v.to(current[k]) for k, v in self._average.items()})
            return out
        if self.conversion == "adaptive" and len(self.archive) > 0:
            states = [{k: v.to(current[k].device) for k, v in s.items()} for s in self.archive.payloads]
            return weighted_average_state(states, self.archive.credits)
        return None

    def on_epoch_end(self, state: TrainState) -> None:
        if self.conversion != "adaptive" or self.archive_on != "epoch" or self._steps_host() <= self.burn_in:
            return
        keys = [f"val/{t}/loss" for t in self.task_names]
        missing = [k for k in keys if k not in state.epoch_metrics]
        if missing:
            raise TrainingError(
                "omd_tch with archive_on='epoch' compares validation losses, but this run has none "
                f"({', '.join(missing)}): give it a validation split or use archive_on='step'"
            )
        self.archive.update([float(state.epoch_metrics[k]) for k in keys], lambda: copy_state(state.model))

    def on_train_end(self, state: TrainState) -> None:
        new = self.converted_state(state.model)
        if new is not None:
            state.model.load_state_dict(new)

    # --- checkpointing -----------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"archive": self.archive.state_dict(), "average": self._average, "n_averaged": self._n_averaged}

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        self.archive = CreditArchive(self.archive_size)
        self.archive.load_state_dict(state["archive"])
        # The configured cap wins over the checkpoint's (resuming with a smaller archive_size).
        self.archive.shrink_to(self.archive_size)
        self._average = state["average"]
        self._n_averaged = int(state["n_averaged"])
        self._n_steps = None  # the restored steps_seen buffer is read at the next step


__all__ = ["OMDTCH", "ArchiveUpdate", "CreditArchive", "copy_state", "weighted_average_state"]
