"""Per-task Jacobians of a vector of losses with respect to any tensors: parameters, the shared
representation ``z`` or a chosen layer's output. Pure autograd, no training loop, no method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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
        jac = _batched_rows(grads, inputs, t)
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
    parts: list[list[Tensor]] = [[] for _ in losses]
    if not live:
        return _stack_rows(parts, aliases[0]), [None] * len(extra)
    grads = torch.autograd.grad([losses[t] for t in live], [aliases[t] for t in live] + extra, retain_graph=True,
                                allow_unused=True)
    for t, g in zip(live, grads[: len(live)], strict=True):
        if g is not None:
            parts[t].append(g)
    return _stack_rows(parts, aliases[0]), list(grads[len(live):])


def _stack_rows(parts: Sequence[Sequence[Tensor]], like: Tensor) -> Tensor:
    """``[T, like.numel()]``: row t the sum of ``parts[t]`` flattened (one part is the rule: no copy into a
    buffer, one stack), zeros where a task has none."""
    zero: Tensor | None = None
    rows = []
    for gs in parts:
        if len(gs) == 1:
            rows.append(gs[0].reshape(-1))
        elif gs:
            rows.append(torch.stack(list(gs)).sum(dim=0).reshape(-1))
        else:
            if zero is None:
                zero = torch.zeros(like.numel(), dtype=like.dtype, device=like.device)
            rows.append(zero)
    return torch.stack(rows)


def pullback_rows(target: Tensor, rows: Tensor, inputs: Sequence[Tensor]) -> Tensor:
    """``[T, n]`` rows ``∂L_t/∂inputs`` (flattened, concatenated; zeros where unused) from the rows
    ``∂L_t/∂target`` (``[T, target.numel()]``), for inputs the losses reach only through ``target`` (a
    layer of the encoder below ``z``): by the chain rule row t is the vector-Jacobian product of
    ``target`` w.r.t. ``inputs`` with the cotangent ``∂L_t/∂target``, and the ``T`` products are ONE
    vmapped backward from ``target`` down to ``inputs`` (a loop of ``T`` where the graph has no batch
    rule). The graph is retained."""
    inputs = list(inputs)
    t = rows.shape[0]
    cot = rows.to(target.dtype).reshape(t, *target.shape)
    try:
        grads = list(torch.autograd.grad(target, inputs, grad_outputs=cot, retain_graph=True, is_grads_batched=True,
                                         allow_unused=True))
    except RuntimeError:
        per = [torch.autograd.grad(target, inputs, grad_outputs=cot[i], retain_graph=True, allow_unused=True)
               for i in range(t)]
        grads = [None if any(p[k] is None for p in per) else torch.stack([p[k] for p in per])
                 for k in range(len(inputs))]
    return _batched_rows(grads, inputs, t)


def _batched_rows(grads: Sequence[Tensor | None], inputs: Sequence[Tensor], t: int) -> Tensor:
    """``[t, n]``: batched gradients ``[t, *input.shape]`` per input flattened and concatenated, zeros for
    an input no output reached (``None``)."""
    return torch.cat([
        (g if g is not None else torch.zeros((t, *p.shape), dtype=p.dtype, device=p.device)).reshape(t, -1)
        for g, p in zip(grads, inputs, strict=True)
    ], dim=1)


def branch_jacobian(losses: Sequence[Tensor], target: Tensor, max_nodes: int = 50_000) -> Tensor | None:
    """Rows ``∂L_t/∂target`` (``[T, target.numel()]``) when every task reaches ``target`` through its own
    sub-graph (hard parameter sharing: ``z`` → head_t → L_t); ``None`` otherwise.

    Each row is one ``autograd.grad(L_t, target)``, which only runs the nodes reachable from ``L_t``:
    head ``t``. With disjoint sub-graphs the T calls therefore cost one backward through all heads in
    total. A vmapped backward (:func:`batched_jacobian`) instead pushes all T cotangents through all T
    heads (T² head backward passes, most of them on zeros): ~40 ms instead of ~2.5 ms for 40 LeNet
    heads at batch 256 on this CPU (``docs/benchmarks_steps.md``). :func:`hooked_rows` (what
    :class:`~moomtl.autodiff.StepContext` uses) gives the same rows from ONE backward with a hook on each
    head's read of ``target``, without the ``T − 1`` extra engine calls (an earlier measurement had found a
    hooked backward 20 % slower than this loop; the node hooks measured 1.3–1.8 ms faster per MGDA-UB step
    at T = 40). Returns ``None`` when the task sub-graphs share a node
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
    return head_graph(losses, target, max_nodes) is not None


class HeadGraph(NamedTuple):
    """The disjoint task heads above a tensor, as :func:`head_graph` finds them in one step's graph."""

    #: per task, the backward nodes of its head that read the tensor: ``(node, i)``, ``node.next_functions[i]``
    #: being the edge into it
    reads: list[list[tuple[Any, int]]]
    #: per task, the leaf tensors (parameters) its head reaches above the tensor
    leaves: list[list[Tensor]]
    #: every backward node above the tensor, with the task whose head it belongs to
    nodes: dict[Any, int]


def head_graph(losses: Sequence[Tensor], target: Tensor, max_nodes: int = 50_000) -> HeadGraph | None:
    """Walk each loss's graph down to ``target`` (not below: the encoder is not visited) and return, per
    task, the nodes of its head that read ``target`` and the parameters the head reaches — or ``None``
    when the heads are not disjoint above ``target`` (a node reached from two tasks, a loss that is
    ``target`` itself, another output of the op that produced ``target`` used) or the walk exceeds
    ``max_nodes``."""
    edge = torch.autograd.graph.get_gradient_edge(target)
    owner: dict[Any, int] = {}
    found = HeadGraph([], [], owner)
    for task, loss in enumerate(losses):
        mine: list[tuple[Any, int]] = []
        leaves: list[Tensor] = []
        found.reads.append(mine)
        found.leaves.append(leaves)
        root = loss.grad_fn
        if root is None:
            continue
        if root is edge.node or owner.get(root, task) != task:
            return None
        owner[root] = task
        stack = [root]
        while stack:
            node = stack.pop()
            for i, (nxt, nr) in enumerate(node.next_functions):
                if nxt is None:
                    continue
                if nxt is edge.node:
                    if nr != edge.output_nr:  # another output of the op that made target: shared sub-graph
                        return None
                    mine.append((node, i))
                    continue
                seen = owner.get(nxt)
                if seen is None:
                    owner[nxt] = task
                    stack.append(nxt)
                    leaf = getattr(nxt, "variable", None)  # AccumulateGrad: a leaf (parameter) of this head
                    if leaf is not None:
                        leaves.append(leaf)
                    if len(owner) > max_nodes:
                        return None
                elif seen != task:
                    return None
    return found


def graph_has(roots: Sequence[Any], match: Callable[[Any], bool], max_nodes: int | None = None) -> bool:
    """Does a backward node reachable from ``roots`` (``grad_fn`` nodes; ``None`` entries skipped) satisfy
    ``match``? A depth-first walk of the graph, no backward pass, that checks at most ``max_nodes`` nodes
    (``None``: no bound; ``False`` when the bound is hit)."""
    stack = [n for n in roots if n is not None]
    seen: set[Any] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        if match(node):
            return True
        seen.add(node)
        if max_nodes is not None and len(seen) >= max_nodes:
            return False
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return False


def _keep_read(parts: list[Tensor], i: int) -> Any:
    """A node hook appending what the node sends into its ``i``-th input (a head's share of ``∂L/∂target``)."""
    def hook(grad_inputs: tuple[Tensor | None, ...], _grad_outputs: tuple[Tensor | None, ...]) -> None:
        g = grad_inputs[i]
        if g is not None:
            parts.append(g)
    return hook


def hooked_rows(losses: Sequence[Tensor], target: Tensor, reads: list[list[tuple[Any, int]]],
                extra: Sequence[Tensor] = ()) -> tuple[Tensor, list[Tensor | None]]:
    """``[T, n]`` rows ``∂L_t/∂target`` in ONE autograd call when the heads are disjoint above ``target``
    (``reads``: :attr:`HeadGraph.reads` from :func:`head_graph`): a hook on each node of head t that reads ``target``
    keeps the gradient that node sends into ``target`` — head t's share, ``∂L_t/∂target`` — while one
    backward of ``Σ_t L_t`` runs through all heads once and stops at ``target`` (the encoder is not
    run). The same call returns the gradients of ``Σ_t L_t`` w.r.t. ``extra`` (``None`` where unused):
    for a parameter of one head, that head's own ``∂L_t/∂θ``. Same rows as ``T`` calls of
    ``autograd.grad(L_t, target)`` (:func:`branch_jacobian`), without the ``T − 1`` extra engine calls
    (40 LeNet heads on this CPU: the rows 8.2 instead of 9.5 ms, an MGDA-UB step 1.8 ms shorter)."""
    extra = list(extra)
    parts: list[list[Tensor]] = [[] for _ in losses]
    handles = []
    live = [t for t, loss in enumerate(losses) if loss.grad_fn is not None]
    try:
        for t in live:
            for node, i in reads[t]:
                handles.append(node.register_hook(_keep_read(parts[t], i)))
        grads = (torch.autograd.grad([losses[t] for t in live], [target, *extra], retain_graph=True,
                                     allow_unused=True) if live else (None,) * (1 + len(extra)))
    finally:
        for h in handles:
            h.remove()
    return _stack_rows(parts, target), list(grads[1:])


def fused_backward(losses: Sequence[Tensor], target: Tensor, decide: Callable[[Tensor], Tensor],
                   inputs: Sequence[Tensor] | None, *, aliases: Sequence[Tensor] | None = None,
                   reads: list[list[tuple[Any, int]]] | None = None) -> bool:
    """ONE backward of ``Σ_t L_t`` through the heads and on below ``target`` (the shared representation
    ``z``) in which the part below ``target`` receives the cotangent ``decide(rows)`` instead of
    ``Σ_t ∂L_t/∂z``: the rows ``∂L_t/∂z`` (``[T, target.numel()]``) are kept by a hook on each head's
    alias of ``target`` (``aliases[t]``, head t's own view, as :func:`alias_rows`) or on each node of head t
    that reads it (``reads``, as :func:`hooked_rows`), and a hook on ``target`` — which the engine runs
    once every head has sent its share — replaces the sum by what ``decide`` makes of them (shaped like
    ``target``). Leaves in ``inputs`` accumulate into ``.grad`` as ``backward`` does: the heads' parameters
    ``∂L_t/∂θ_t``, those below ``target`` the gradient of the decided cotangent (``None``: every leaf, as
    ``loss.backward()``; naming the inputs makes the engine walk the graph first: +1.5 ms of a 60 ms step at
    T = 40). Against taking the rows in one call and then a second backward from ``target`` (the split),
    this saves an engine call and keeps no graph (measured at T = 40: ``docs/benchmarks_steps.md``).

    Returns whether ``decide`` was called: False when the engine never reached ``target`` (no input lies
    below it; the heads' nodes then do not even send their rows). An exception of ``decide`` ends the backward (the
    heads' ``.grad`` may hold part of theirs, nothing below ``target`` has run)."""
    if (aliases is None) == (reads is None):
        raise ValueError("fused_backward: give the heads' aliases or their reads of target (one of the two)")
    live = [t for t, loss in enumerate(losses) if loss.grad_fn is not None]
    parts: list[list[Tensor]] = [[] for _ in losses]
    decided: list[bool] = []

    def replace(grad: Tensor) -> Tensor:
        decided.append(True)
        return decide(_stack_rows(parts, target)).reshape(grad.shape).to(grad.dtype)

    handles = []
    try:
        for t in live:
            if aliases is not None:
                handles.append(aliases[t].register_hook(parts[t].append))  # keeps the grad, returns None
            else:
                assert reads is not None
                handles.extend(node.register_hook(_keep_read(parts[t], i)) for node, i in reads[t])
        handles.append(target.register_hook(replace))
        if live:
            root = losses[live[0]] if len(live) == 1 else torch.stack([losses[t] for t in live]).sum()  # one root
            torch.autograd.backward(root, inputs=None if inputs is None else list(inputs))
    finally:
        for h in handles:
            h.remove()
    return bool(decided)


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
