"""Per-step context handed to methods: losses, the shared representation, and — computed lazily,
once per step — per-task gradients (Jacobians) and Gramians with respect to the shared parameters,
the shared representation, or any tensors the caller names."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from moomtl.autodiff.distributed import Reducer
from moomtl.autodiff.jacobian import (
    HeadGraph,
    alias_rows,
    batched_jacobian,
    fused_backward,
    graph_has,
    head_graph,
    hooked_rows,
    pullback_rows,
    task_jacobian,
)
from moomtl.models.base import MultiTaskModel

if TYPE_CHECKING:
    from moomtl.methods.base import Method

#: What a Jacobian is taken with respect to: the shared parameters, the shared representation ``z``, or
#: any tensors of the graph (a chosen layer's output, a subset of parameters).
Wrt = Literal["shared", "representation"] | Tensor | Sequence[Tensor]


class StepContext:
    """Lazily computed quantities for one training step; every method reads what it needs.

    Attributes:
        model: the multi-task model (``encode``/``decode`` split).
        losses: ``{task: scalar loss}`` still attached to the graph.
        z: the shared representation ``encode(x)`` of this batch (attached to the graph).
        step, epoch: counters of the trainer.
        structure: a dict owned by the caller's loop and kept across steps, in which static facts about
            the graph (whether the task heads above ``z`` are disjoint) are computed once instead of by a
            graph walk every step. Pass a new dict when the model's structure changes; ``None``: walk
            every step.

        reducer: in a multi-process run (:mod:`moomtl.autodiff.distributed`), the group over which loss
            values, the shared Jacobian and the representation Gramian are summed, so every rank sees the
            global quantities; ``losses`` are then this rank's share of the global losses.

        loss_scale: mixed precision with float16 (:mod:`moomtl.train.amp`): ``losses`` are the true
            losses times ``S``, so every gradient a backward pass produces is ``S``-scaled (no underflow);
            Jacobian rows, Gramians and loss values are unscaled here in float32 before any method
            decides from them, and a direction a method writes is scaled by ``S`` like the rest. The
            loop unscales all gradients by ``1/S`` and skips the step when one is not finite.

    When the heads are disjoint, the per-task calls that give the shared-parameter Jacobian also give
    each head's gradient, so :meth:`backward_task_specific` reuses them instead of a second pass
    through the heads.
    """

    def __init__(
        self, model: MultiTaskModel, losses: Mapping[str, Tensor], z: Tensor | None = None,
        step: int = 0, epoch: int = 0, structure: dict[str, Any] | None = None,
        reducer: Reducer | None = None, loss_scale: float = 1.0, z_aliases: Sequence[Tensor] | None = None,
    ) -> None:
        self.model = model
        self.losses = dict(losses)
        self.task_names = tuple(self.losses.keys())
        self.z = z
        self.step = step
        self.epoch = epoch
        self.structure = structure
        self.reducer = reducer
        self.loss_scale = float(loss_scale)
        if z_aliases is not None and len(z_aliases) != len(self.task_names):
            raise ValueError(f"z_aliases: one per task ({len(self.task_names)}), got {len(z_aliases)}")
        self.z_aliases = list(z_aliases) if z_aliases is not None else None
        self._loss_values: Tensor | None = None
        self._jac: dict[Any, Tensor] = {}
        self._gram: dict[Any, Tensor] = {}
        self._head_grads: list[list[tuple[int, Tensor]]] | None = None
        # the parameters _head_grads index: task_specific_params, or (None given) the heads' leaves found above z
        self._head_params: list[Tensor] | None = None
        self._heads: HeadGraph | None | bool = False  # False: not walked yet this step
        self._shared: list[torch.nn.Parameter] | None = None
        self._specific: list[torch.nn.Parameter] | None = None
        # inside a fused representation step (run): the method's cotangent for z and its heads' weights
        self._fusing: dict[str, Any] | None = None

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def loss_vector(self) -> Tensor:
        """Losses stacked in task order, shape ``[T]`` (attached to the graph)."""
        return torch.stack([self.losses[t] for t in self.task_names])

    @property
    def world_size(self) -> int:
        """Number of processes the step is split over (1 without a reducer). A term of a method's
        objective that does not come from the losses (a regularizer) is added with weight ``1/W`` on each
        rank, since the ranks' objectives are summed."""
        return 1 if self.reducer is None else self.reducer.world_size

    @property
    def loss_values(self) -> Tensor:
        """The losses' values (detached, ``[T]``): what a method reads to decide its weights. In a
        multi-process run, the global losses (summed over ranks)."""
        if self._loss_values is None:
            v = self.local_loss_values
            self._loss_values = self.reducer.sum_(v.clone()) if self.reducer is not None else v
        return self._loss_values

    @property
    def local_loss_values(self) -> Tensor:
        """This process's share of the losses (detached, unscaled, ``[T]``; no communication): in a
        multi-process run the sum over ranks is :attr:`loss_values`; otherwise the two are the same."""
        v = self.loss_vector.detach()
        if self.loss_scale != 1.0:
            v = v.to(torch.promote_types(v.dtype, torch.float32)) / self.loss_scale
        return v

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

    def _heads_disjoint(self) -> bool:
        """Do the losses reach ``z`` through disjoint sub-graphs (hard parameter sharing)? Cached in
        ``structure`` when the loop gives one."""
        if self.z is None or not self.z.requires_grad:
            return False
        if self.z_aliases is not None:  # each head saw only its own alias of z: disjoint by construction
            return True
        if self.structure is not None and "heads_disjoint" in self.structure:
            return bool(self.structure["heads_disjoint"])
        return self._head_graph() is not None  # the walk caches its answer in structure

    @staticmethod
    def _key(wrt: Wrt) -> Any:
        if isinstance(wrt, str):
            if wrt not in ("shared", "representation"):
                raise ValueError(f"wrt must be 'shared', 'representation' or tensors, got {wrt!r}")
            return wrt
        tensors = [wrt] if isinstance(wrt, Tensor) else list(wrt)
        if not tensors or not all(isinstance(t, Tensor) for t in tensors):
            raise ValueError("wrt must be 'shared', 'representation', a tensor or a non-empty sequence of tensors")
        return tuple(id(t) for t in tensors)

    def jacobian(self, wrt: Wrt = "shared") -> Tensor:
        """``[T, n]`` matrix whose row t is ∇ L_t w.r.t. the shared parameters (flattened), the shared
        representation ``z`` (flattened over the batch), or the given tensor(s) (any tensors of the
        graph: a layer's output, some parameters). Cached per step."""
        key = self._key(wrt)
        if key in self._jac:
            return self._jac[key]
        self._not_fusing("a Jacobian other than the rows at z")
        losses = [self.losses[t] for t in self.task_names]
        if wrt == "representation":
            if self.z is None:
                raise ValueError("this step has no shared representation z (model lacks encode())")
            if self.z_aliases is not None:
                jac = self._alias_rows_and_head_grads(losses)
            else:
                jac = self._hooked_rows_and_head_grads(losses)
            if jac is None:
                jac = batched_jacobian(self.loss_vector, [self.z])
        elif wrt == "shared":
            if self._heads_disjoint():
                jac = self._rows_and_head_grads(losses, self.shared_params)
            else:
                jac = batched_jacobian(self.loss_vector, list(self.shared_params))
        else:
            tensors = [wrt] if isinstance(wrt, Tensor) else list(wrt)
            jac = self._rows_below_z(tensors)
            if jac is None:
                z = self.z if self.z is not None and self.z.requires_grad else None
                jac = task_jacobian(losses, tensors, through=z)
        self._jac[key] = self._finish(jac, wrt)
        return self._jac[key]

    def _finish(self, jac: Tensor, wrt: Wrt) -> Tensor:
        """Rows as methods read them: detached, float32 at least, unscaled, and (parameters, several
        processes) summed over the ranks."""
        jac = jac.detach()
        if jac.dtype in (torch.float16, torch.bfloat16):  # rows through autocast regions: solve in float32
            jac = jac.float()
        if self.loss_scale != 1.0:
            jac = jac.to(torch.promote_types(jac.dtype, torch.float32)) / self.loss_scale
        if self.reducer is not None and not self._per_sample(wrt):
            jac = self.reducer.sum_(jac.contiguous())  # parameters: the global Jacobian is the sum of ranks'
        return jac

    def _head_owner(self) -> dict[int, int] | None:
        """``{id(param): task index}`` of the task-specific parameters when each belongs to one task's
        head (``model.heads[task]``, hard parameter sharing); ``None`` otherwise. Cached in ``structure``."""
        if self.structure is not None and "head_owner" in self.structure:
            return self.structure["head_owner"]
        heads = getattr(self.model, "heads", None)
        owner: dict[int, int] | None = None
        if heads is not None and all(t in heads for t in self.task_names):
            owner = {id(p): t for t, name in enumerate(self.task_names) for p in heads[name].parameters()}
            if any(id(p) not in owner for p in self.task_specific_params):
                owner = None
        if self.structure is not None:
            self.structure["head_owner"] = owner
        return owner

    def _alias_rows_and_head_grads(self, losses: Sequence[Tensor]) -> Tensor:
        """Rows ``∂L_t/∂z`` from one autograd call over the per-head aliases of ``z`` — and, in the same
        call, every head's own gradient ``∂L_t/∂θ_t`` (kept for :meth:`backward_task_specific`), so that a
        representation-mode update needs no second pass through the heads (:meth:`apply_coefficients`)."""
        assert self.z_aliases is not None
        found = self._head_parameters()
        if found is None:
            return alias_rows(losses, self.z_aliases)[0]
        idx, params, owner = found
        rows, grads = alias_rows(losses, self.z_aliases, params)
        self._keep_head_grads(idx, grads, owner)
        return rows

    def _head_parameters(self) -> tuple[list[int], list[Tensor], Mapping[int, int]] | None:
        """The heads' parameters to take gradients of in the rows' call — their indices, the parameters and
        ``{id(param): task}``: the task-specific parameters and their heads in ``model.heads`` when the model
        says; else the leaves each head's graph reaches above ``z`` (one walk per step; with no task-specific
        parameters named, those leaves are the heads' parameters, and they get their update as from one
        backward of the weighted sum). ``None`` when the heads are not disjoint."""
        specific = list(self.task_specific_params)
        owner = self._head_owner()
        if owner is not None and specific:  # the model's heads own every task-specific parameter
            return list(range(len(specific))), specific, owner
        heads = self._head_graph()
        if heads is None:
            return None
        owner = {id(p): t for t, leaves in enumerate(heads.leaves) for p in leaves}
        if not specific:
            specific = [p for leaves in heads.leaves for p in leaves if p.requires_grad]
            self._head_params = specific
        idx = [i for i, p in enumerate(specific) if id(p) in owner]
        return idx, [specific[i] for i in idx], owner

    def _hooked_rows_and_head_grads(self, losses: Sequence[Tensor]) -> Tensor | None:
        """Rows ``∂L_t/∂z`` for one ``z`` fed to every head (no aliases): when the heads are disjoint above
        ``z``, one autograd call with a hook on each head's reads of ``z``
        (:func:`~moomtl.autodiff.jacobian.hooked_rows`) gives every row and, in the same call, each head's
        own gradient ``∂L_t/∂θ_t`` (:meth:`_head_parameters`). ``None`` when the heads share nodes above
        ``z``."""
        heads = self._head_graph()
        found = self._head_parameters()
        if heads is None or found is None:  # (found is None only when heads is)
            return None
        idx, params, owner = found
        rows, grads = hooked_rows(losses, self.z, heads.reads, params)
        self._keep_head_grads(idx, grads, owner)
        return rows

    def _head_graph(self) -> HeadGraph | None:
        """The disjoint heads above ``z`` in this step's graph (:func:`~moomtl.autodiff.jacobian.head_graph`;
        its nodes are new every step, so it is walked once per step, ~0.2 ms at T = 40), or ``None``: no
        ``z`` that requires grad, or heads that share nodes (this step, or an earlier one per ``structure``)."""
        if self._heads is False:
            z = self.z
            if z is None or not z.requires_grad or (
                    self.structure is not None and self.structure.get("heads_disjoint") is False):
                self._heads = None
                return None
            self._heads = head_graph([self.losses[t] for t in self.task_names], z)
            if self.structure is not None:
                self.structure["heads_disjoint"] = self._heads is not None
        return self._heads

    def _rows_below_z(self, tensors: Sequence[Tensor]) -> Tensor | None:
        """Rows ``∂L_t/∂tensors`` for tensors the losses reach only through ``z`` (a layer of the encoder,
        GradNorm's last shared layer): the rows at ``z`` (one call, which also keeps the heads' own
        gradients), then one batched vector-Jacobian product from ``z`` down to the tensors
        (:func:`~moomtl.autodiff.jacobian.pullback_rows`) — instead of ``T`` calls each through head t and
        the layers between. ``None`` (the caller loops over tasks) without ``z``, under a loss scale, when
        the heads are not disjoint, or when a tensor is reached above ``z`` (a head parameter, a skip
        connection into a head)."""
        if self.loss_scale != 1.0 or not all(t.requires_grad for t in tensors):
            return None
        heads = self._head_graph()
        if heads is None:
            return None
        if any(torch.autograd.graph.get_gradient_edge(t).node in heads.nodes for t in tensors):
            return None
        assert self.z is not None
        return pullback_rows(self.z, self.jacobian("representation"), tensors)

    def _keep_head_grads(self, idx: Sequence[int], grads: Sequence[Tensor | None], owner: Mapping[int, int]) -> None:
        """Keep the heads' own gradients of one call (``grads[k]`` of ``task_specific_params[idx[k]]``),
        grouped by the task that owns each parameter, for :meth:`backward_task_specific`."""
        specific = self._head_params if self._head_params is not None else self.task_specific_params
        heads: list[list[tuple[int, Tensor]]] = [[] for _ in self.task_names]
        for i, g in zip(idx, grads, strict=True):
            if g is not None:
                heads[owner[id(specific[i])]].append((i, g))
        self._head_grads = heads

    def _rows_and_head_grads(self, losses: Sequence[Tensor], inputs: Sequence[Tensor]) -> Tensor:
        """``[T, n]`` rows ``∂L_t/∂inputs`` (flattened, concatenated; zeros where unused) from one
        ``autograd.grad(L_t, inputs + θ_t)`` per task — the least any exact method needs when the heads are
        disjoint (head t, then what lies below ``inputs`` once) — keeping head t's gradients ``∂L_t/∂θ_t`` of
        the same call for :meth:`backward_task_specific`, so no second pass through the heads is needed.
        ``inputs``: the shared parameters (rows at ``z`` come from :meth:`_hooked_rows_and_head_grads`). ``θ_t``: the
        task-specific parameters of head t (``model.heads``), else those the first step found ``L_t`` to
        reach (cached in ``structure``, as the disjointness is; a task whose loss had no graph on that step is
        asked again on the next).

        The rows are copied into one preallocated matrix as they come and each call's gradients are freed
        at once (see :func:`~moomtl.autodiff.jacobian._rows_of_losses`)."""
        inputs, specific = list(inputs), list(self.task_specific_params)
        owner = self._head_owner()
        cached = None if self.structure is None else self.structure.get("head_params")
        per_task: list[list[int] | None]
        if owner is not None:
            per_task = [[] for _ in losses]
            for i, p in enumerate(specific):
                per_task[owner[id(p)]].append(i)  # type: ignore[union-attr]
        elif cached is not None and len(cached) == len(losses):
            per_task = cached
        else:
            per_task = [None] * len(losses)  # discover: ask for all, keep the ones reached
        ref = inputs[0] if inputs else losses[0]
        out = torch.zeros((len(losses), sum(p.numel() for p in inputs)), dtype=ref.dtype, device=ref.device)
        heads: list[list[tuple[int, Tensor]]] = []
        for t, loss in enumerate(losses):
            if loss.grad_fn is None:  # e.g. no label of this task in the batch: no row, no head gradient
                heads.append([])
                continue
            idx = list(range(len(specific))) if per_task[t] is None else per_task[t]
            grads = torch.autograd.grad(loss, [*inputs, *(specific[i] for i in idx)], retain_graph=True,
                                        allow_unused=True)
            offset = 0
            for g, p in zip(grads[: len(inputs)], inputs, strict=True):
                if g is not None:
                    out[t, offset : offset + p.numel()].copy_(g.reshape(-1))
                offset += p.numel()
            pairs = [(i, g) for i, g in zip(idx, grads[len(inputs):], strict=True) if g is not None]
            heads.append(pairs)
            if per_task[t] is None and pairs:  # found (a task that reached none is asked again next step)
                per_task[t] = [i for i, _ in pairs]
            del grads
        if owner is None and specific and self.structure is not None:
            self.structure["head_params"] = per_task
        self._head_grads = heads
        return out

    def _per_sample(self, wrt: Wrt) -> bool:
        """Is ``wrt`` an activation (rows of different ranks are about different samples, so only the
        Gramian can be reduced) rather than parameters (shared by all ranks)?"""
        if wrt == "shared":
            return False
        if wrt == "representation":
            return True
        tensors = [wrt] if isinstance(wrt, Tensor) else list(wrt)
        return not all(isinstance(t, torch.nn.Parameter) for t in tensors)

    def gramian(self, wrt: Wrt = "shared") -> Tensor:
        """``J Jᵀ`` (``[T, T]``), the inner products of task gradients; cached per step."""
        key = self._key(wrt)
        if key not in self._gram:
            j = self.jacobian(wrt)
            g = j @ j.T
            if self.reducer is not None and self._per_sample(wrt):
                g = self.reducer.sum_(g.contiguous())  # Σ_r J_r J_rᵀ: T² numbers per step
            self._gram[key] = g
        return self._gram[key]

    # --- ways a method turns its decision into parameter gradients -------------------------------
    def backward_weighted(self, weights: Tensor) -> None:
        """Backpropagate Σ_t w_t L_t through the whole network (one backward pass)."""
        self._not_fusing("backward_weighted")
        w = weights.to(self.loss_vector.dtype).detach()
        (w * self.loss_vector).sum().backward()

    def set_shared_direction(self, direction: Tensor) -> None:
        """Write a flattened update direction (descent: the optimizer subtracts it) into the
        ``.grad`` of the shared parameters. In a multi-process run the direction (computed from global
        quantities) is written as this rank's share ``d / W``; the loop sums the gradients of all ranks."""
        self._not_fusing("set_shared_direction")
        if self.reducer is not None:
            direction = direction / self.reducer.world_size
        if self.loss_scale != 1.0:
            direction = direction * self.loss_scale
        offset = 0
        for p in self.shared_params:
            n = p.numel()
            g = direction[offset : offset + n].view_as(p).to(p.dtype)
            p.grad = g.clone() if p.grad is None else p.grad + g
            offset += n
        if offset != direction.numel():
            raise ValueError(f"direction has {direction.numel()} entries, shared parameters {offset}")

    def apply_coefficients(self, coef: Tensor, wrt: str = "shared", head_weights: Tensor | None = None) -> None:
        """The common end of a Gramian method: shared update ``Σ_t c_t ∇L_t`` and task-specific
        parameters ``w_t ∇_{θ^t} L_t`` (``head_weights``; 1 when ``None``).

        ``wrt="shared"``: the shared update is formed from the Jacobian already computed (no backward
        through the encoder). ``wrt="representation"``: ``c`` was decided from ∂L/∂z, and the shared
        update is one backward of ``Σ_t c_t L_t`` (one pass, as MGDA-UB; with ``head_weights`` equal to
        ``c`` it also gives the heads their update in the same pass)."""
        if wrt == "shared":
            jac = self.jacobian("shared")
            self.set_shared_direction(coef.to(jac) @ jac)
            self.backward_task_specific(head_weights)
            return
        if wrt != "representation":
            raise ValueError(f"wrt must be 'shared' or 'representation', got {wrt!r}")
        rows = self._jac.get("representation")
        if rows is not None and (self._head_grads is not None or self._fusing is not None) and self.z is not None:
            # Rows and head gradients came from the same calls (over the aliases, or one per disjoint head), or
            # the step is fused: the encoder gets the cotangent Σ_t c_t ∂L_t/∂z directly (no second pass
            # through the heads), the heads w_t ∇_{θ^t} L_t.
            self.backward_representation(coef.to(rows).detach() @ rows, head_weights)
            return
        self._not_fusing("apply_coefficients without the rows at z")
        if head_weights is not None and head_weights is coef:
            self.backward_weighted(coef)
            return
        lv = self.loss_vector
        shared = self.shared_params
        grads = torch.autograd.grad((coef.to(lv).detach() * lv).sum(), shared, retain_graph=True, allow_unused=True)
        for p, g in zip(shared, grads, strict=True):
            if g is not None:
                p.grad = g.clone() if p.grad is None else p.grad + g
        self.backward_task_specific(head_weights)

    def backward_representation(self, grad_z: Tensor, head_weights: Tensor | None = None) -> None:
        """The end of a representation-mode update that is not a combination of the rows (GradDrop's masked
        sum): the encoder gets the cotangent ``grad_z`` at ``z`` (unscaled, as the rows are; shaped like ``z``
        or flattened) and the task-specific parameters ``w_t ∇_{θ^t} L_t`` (:meth:`backward_task_specific`).
        In a fused step (:meth:`run`) the cotangent goes to the running backward instead."""
        if self.z is None:
            raise ValueError("this step has no shared representation z (model lacks encode())")
        cot = grad_z.detach()
        if self.loss_scale != 1.0:
            cot = cot * self.loss_scale
        cot = cot.reshape(self.z.shape).to(self.z.dtype)
        if self._fusing is not None:
            self._fusing["cot"] = cot
        else:
            self.z.backward(cot)
        self.backward_task_specific(head_weights)

    # --- one backward for a representation-mode step ------------------------------------------------
    def run(self, method: Method) -> dict[str, Any]:
        """``method.backward(losses, self)``, the way every loop calls a method (the trainer,
        :func:`moomtl.mtl_backward`). When the method's update needs nothing from the graph but the rows
        ``∂L_t/∂z`` (:meth:`Method.fuses_representation`) and the heads are disjoint above ``z``, the method
        runs INSIDE one backward of ``Σ_t L_t`` (:func:`~moomtl.autodiff.jacobian.fused_backward`): the
        moment the rows are known its decision is taken, and the encoder receives the cotangent the
        method gives, in the same engine call — instead of one call for the rows and a second from ``z``.
        Same gradients (the same operations on the same rows)."""
        found = self._fusable_heads() if method.fuses_representation() else None
        if found is not None:
            return self._fused(lambda: method.backward(self.losses, self) or {}, method.name or type(method).__name__,
                               found)
        return method.backward(self.losses, self) or {}

    def _fusable_heads(self) -> tuple[list[int], list[Tensor], Mapping[int, int]] | None:
        """:meth:`_head_parameters` when this step can be fused (disjoint heads above a ``z`` with a shared
        parameter below it, rows not taken yet, not inside a fused step already), else ``None``."""
        z = self.z
        if z is None or not z.requires_grad or "representation" in self._jac or self._fusing is not None:
            return None
        if not self.shared_params or all(v.grad_fn is None for v in self.losses.values()):
            return None
        if self.z_aliases is None and self._head_graph() is None:
            return None
        found = self._head_parameters()
        return found if found is not None and self._shared_below_z() else None

    def _heads_leaves_known(self, params: Sequence[Tensor]) -> bool:
        """Is every leaf the heads reach above ``z`` one of ``params`` (the heads' parameters the step weights)?
        Cached in ``structure`` (one walk of the heads, on the first step)."""
        if self.structure is not None and "head_leaves_known" in self.structure:
            return bool(self.structure["head_leaves_known"])
        heads = self._head_graph()
        ids = {id(p) for p in params}
        known = heads is not None and all(id(p) in ids for leaves in heads.leaves for p in leaves if p.requires_grad)
        if self.structure is not None:
            self.structure["head_leaves_known"] = known
        return known

    def _shared_below_z(self) -> bool:
        """Does a shared parameter lie below ``z`` (a leaf ``z`` counts: the fused backward then takes its
        gradient)? Else the engine would never run ``z``'s hook, and the heads' nodes would not even send
        their rows. Cached in ``structure``."""
        assert self.z is not None
        if self.z.grad_fn is None:
            return True
        if self.structure is not None and "shared_below_z" in self.structure:
            return bool(self.structure["shared_below_z"])
        shared = {id(p) for p in self.shared_params}
        found = graph_has([self.z.grad_fn], lambda node: id(getattr(node, "variable", None)) in shared, 50_000)
        if self.structure is not None:
            self.structure["shared_below_z"] = found
        return found

    def _fused(self, decide: Callable[[], dict[str, Any]], who: str,
               found: tuple[list[int], list[Tensor], Mapping[int, int]]) -> dict[str, Any]:
        """Run ``decide`` (the method's backward) inside one backward (:meth:`run`); the heads' own gradients
        (``found``: :meth:`_fusable_heads`) accumulate there unweighted and are weighted afterwards (what the
        method asked for through :meth:`backward_task_specific`); ``.grad`` the heads held before the step is
        kept and added."""
        assert self.z is not None
        _, params, owner = found
        stash = [p.grad for p in params]
        held = any(g is not None for g in stash)
        if held:
            for p in params:
                p.grad = None
        self._fusing = {"cot": None, "head_weights": False, "who": who}  # False: the heads not given theirs
        result: list[dict[str, Any]] = []

        def cotangent(rows: Tensor) -> Tensor:
            self._jac["representation"] = self._finish(rows, "representation")
            result.append(decide())
            cot = self._fusing["cot"] if self._fusing is not None else None
            if cot is None:
                raise RuntimeError(f"{who}: a fused representation step must end with apply_coefficients(..., "
                                   "'representation') or backward_representation")
            return cot

        losses = [self.losses[t] for t in self.task_names]
        heads = None if self.z_aliases is not None else self._head_graph()
        # every leaf (as loss.backward(); naming them costs the engine a walk) unless the heads reach leaves
        # the step must not touch; then the shared parameters, the heads' and z itself when it is a leaf
        below = None if self._heads_leaves_known(params) else (
            [*self.shared_params, *params] + ([self.z] if self.z.grad_fn is None else []))
        try:
            decided = fused_backward(losses, self.z, cotangent, below, aliases=self.z_aliases,
                                     reads=None if heads is None else heads.reads)
            if not decided:  # cannot happen after _fusable (a shared parameter lies below z): never guess
                raise RuntimeError(f"{who}: the fused backward did not reach z")
            weights = self._fusing["head_weights"]
        except BaseException:
            for p, g in zip(params, stash, strict=True):
                p.grad = g
            raise
        finally:
            self._fusing = None
        if weights is False:  # the method gave the heads nothing
            for p in params:
                p.grad = None
        elif weights is not None:
            fresh = [(owner[id(p)], g) for p, g in zip(params, [p.grad for p in params], strict=True) if g is not None]
            if fresh:  # the engine's own tensors: weighted in place
                _weighted([g for _, g in fresh], [t for t, _ in fresh], weights, inplace=True)
        if held:
            for p, old in zip(params, stash, strict=True):
                if old is not None:
                    p.grad = old if p.grad is None else old + p.grad
        return result[0]

    def _not_fusing(self, what: str) -> None:
        if self._fusing is not None:
            raise RuntimeError(f"{self._fusing['who']}: {what} is not available in a fused representation step "
                               "(the method's fuses_representation() must be False for this configuration)")

    def backward_task_specific(self, weights: Tensor | None = None) -> None:
        """Give task-specific parameters the gradient of Σ_t w_t L_t (w = 1 by default); since a
        task-specific parameter only affects its own task, each gets (w_t times) its own gradient."""
        if self._fusing is not None:  # the running backward gives them theirs; weighted after it (_fused)
            self._fusing["head_weights"] = weights
            return
        params = self._head_params if self._head_params is not None else self.task_specific_params
        if not params:
            return
        if self._head_grads is not None:  # kept from the Jacobian calls: no second pass
            flat = [(t, i, g) for t, pairs in enumerate(self._head_grads) for i, g in pairs]
            if not flat:
                return
            # unweighted: copies, so .grad never aliases autograd's
            gs = _weighted([g for _, _, g in flat], [t for t, _, _ in flat], weights, inplace=False)
            for (_, i, _), g in zip(flat, gs, strict=True):
                p = params[i]
                p.grad = g if p.grad is None else p.grad + g
            return
        lv = self.loss_vector
        w = torch.ones_like(lv) if weights is None else weights.to(lv.dtype).detach()
        grads = torch.autograd.grad((w * lv).sum(), params, retain_graph=True, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.grad = g.clone() if p.grad is None else p.grad + g


def _weighted(grads: list[Tensor], tasks: Sequence[int], weights: Tensor | None, inplace: bool) -> list[Tensor]:
    """``w[tasks[k]] · grads[k]`` for every k: ONE foreach product (a 0-d view of ``w`` per tensor; per tensor
    if the gradients mix dtypes, so none is promoted), in place when the gradients are the caller's own;
    ``weights=None``: the gradients themselves (copies unless ``inplace``)."""
    if weights is None:
        return grads if inplace else [g.clone() for g in grads]
    if all(g.dtype == grads[0].dtype for g in grads):
        w = weights.detach().to(grads[0].dtype).unbind()
        scalars = [w[t] for t in tasks]
        if inplace:
            torch._foreach_mul_(grads, scalars)
            return grads
        return list(torch._foreach_mul(grads, scalars))
    w = weights.detach().unbind()
    return [g.mul_(w[t].to(g.dtype)) if inplace else g * w[t].to(g.dtype) for t, g in zip(tasks, grads, strict=True)]
