"""Per-task Jacobians of a vector of losses with respect to any tensors: parameters, the shared
representation ``z`` or a chosen layer's output. Pure autograd, no training loop, no method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


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


def _rows_of_losses(losses: Sequence[Tensor], inputs: Sequence[Tensor]) -> Tensor:
    """``[T, n]``: row t is ``autograd.grad(L_t, inputs)`` flattened (zeros where unused).

    The rows are copied into one preallocated matrix as they come and each call's gradients are freed
    at once: keeping T sets of small gradient tensors alive between the large transient buffers of the
    backward passes fragments glibc's heap (peak RSS +200 MiB for 40 LeNet encoder VJPs, vs +35 MiB).
    """
    inputs = list(inputs)
    ref = inputs[0] if inputs else losses[0]
    out = torch.zeros((len(losses), sum(p.numel() for p in inputs)), dtype=ref.dtype, device=ref.device)
    for t, loss in enumerate(losses):
        if loss.grad_fn is None or not inputs:
            continue
        grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
        offset = 0
        for g, p in zip(grads, inputs, strict=True):
            if g is not None:
                out[t, offset : offset + p.numel()].copy_(g.reshape(-1))
            offset += p.numel()
        del grads
    return out


def alias_rows(losses: Sequence[Tensor], aliases: Sequence[Tensor],
               extra: Sequence[Tensor] = ()) -> tuple[Tensor, list[Tensor | None]]:
    """``[T, n]`` rows ``∂L_t/∂z`` in ONE autograd call, when head t read ``z`` only through its own alias
    ``aliases[t]`` (``z.view_as(z)``): the gradient of ``Σ_s L_s`` w.r.t. ``aliases[t]`` is then
    ``∂L_t/∂z`` (no other loss reaches that alias), so one backward through all heads gives every row,
    instead of T engine calls. Tasks whose loss does not reach its alias give zero rows. The same call
    also returns the gradients of ``Σ_s L_s`` w.r.t. the tensors ``extra`` (``None`` where unused): for
    a parameter of one head, that head's own ``∂L_t/∂θ``."""
    extra = list(extra)
    live = [t for t, loss in enumerate(losses) if loss.grad_fn is not None]
    ref = aliases[0]
    out = torch.zeros((len(losses), ref.numel()), dtype=ref.dtype, device=ref.device)
    if not live:
        return out, [None] * len(extra)
    grads = torch.autograd.grad([losses[t] for t in live], [aliases[t] for t in live] + extra, retain_graph=True,
                                allow_unused=True)
    for t, g in zip(live, grads[: len(live)], strict=True):
        if g is not None:
            out[t].copy_(g.reshape(-1))
    return out, list(grads[len(live):])


def branch_jacobian(losses: Sequence[Tensor], target: Tensor, max_nodes: int = 50_000) -> Tensor | None:
    """Rows ``∂L_t/∂target`` (``[T, target.numel()]``) when every task reaches ``target`` through its own
    sub-graph (hard parameter sharing: ``z`` → head_t → L_t); ``None`` otherwise.

    Each row is one ``autograd.grad(L_t, target)``, which only runs the nodes reachable from ``L_t``:
    head ``t``. With disjoint sub-graphs the T calls therefore cost one backward through all heads in
    total. A vmapped backward (:func:`batched_jacobian`) instead pushes all T cotangents through all T
    heads (T² head backward passes, most of them on zeros): ~40 ms instead of ~2.5 ms for 40 LeNet
    heads at batch 256 on this CPU (``docs/benchmarks_steps.md``; one backward of ``Σ L_t`` with a hook
    per head was 20% slower than this loop). Returns ``None`` when the task sub-graphs share a node
    above ``target`` (a shared decoder trunk, a skip connection into the encoder: the loop would repeat
    the shared part) or the graph walk exceeds ``max_nodes``; the caller then falls back to
    :func:`batched_jacobian`.
    """
    if not target.requires_grad:
        raise ValueError("the target of a Jacobian must require grad")
    return _rows_of_losses(losses, [target]) if _heads_are_disjoint(losses, target, max_nodes) else None


def _heads_are_disjoint(losses: Sequence[Tensor], target: Tensor, max_nodes: int) -> bool:
    """Walk each loss's graph down to ``target`` (not below): True if no node is reached from two
    tasks (nor is a loss ``target`` itself, nor another output of the op that produced it used), and
    the walk stays under ``max_nodes``."""
    edge = torch.autograd.graph.get_gradient_edge(target)
    owner: dict[Any, int] = {}
    for task, loss in enumerate(losses):
        root = loss.grad_fn
        if root is None:
            continue
        if root is edge.node or owner.get(root, task) != task:
            return False
        owner[root] = task
        stack = [root]
        while stack:
            for nxt, nr in stack.pop().next_functions:
                if nxt is None:
                    continue
                if nxt is edge.node:
                    if nr != edge.output_nr:  # another output of the op that made target: shared sub-graph
                        return False
                    continue
                seen = owner.get(nxt)
                if seen is None:
                    owner[nxt] = task
                    stack.append(nxt)
                    if len(owner) > max_nodes:
                        return False
                elif seen != task:
                    return False
    return True


def task_jacobian(
    losses: Sequence[Tensor], inputs: Sequence[Tensor], through: Tensor | None = None
) -> Tensor:
    """``[T, n]`` Jacobian of the task losses w.r.t. ``inputs`` (flattened, concatenated).

    When ``through`` (the shared representation ``z``) is given and the losses reach it through
    disjoint heads, row t is one ``autograd.grad(L_t, inputs)``: it runs head t and then the encoder
    once with the cotangent ``∂L_t/∂z``, so the T rows cost one pass through all heads plus T encoder
    vector-Jacobian products — the least any exact method needs. On this CPU (torch 2.13, HPS LeNet,
    batch 256) that beat the vmapped backward (:func:`batched_jacobian`) at T=2 and T=40: vmap pushes
    every cotangent through every head (T² head passes) and max-pool backward has no vmap batch rule;
    ``torch.func`` (``vjp`` of the encoder vmapped over the cotangents) was slower too (see
    ``docs/benchmarks_steps.md``). Otherwise (no ``through``, or heads sharing nodes above ``z``, where a
    loop would repeat the shared part) it is :func:`batched_jacobian`.
    """
    inputs = list(inputs)
    if through is not None and through.requires_grad and _heads_are_disjoint(losses, through, 50_000):
        return _rows_of_losses(losses, inputs)
    return batched_jacobian(torch.stack(list(losses)), inputs)
