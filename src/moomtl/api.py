"""Use any moomtl method in your own training loop (plain PyTorch, Lightning manual optimization,
Hugging Face): one call in place of ``loss.backward()``.

.. code-block:: python

    method = moomtl.methods.build_method("upgrad")          # once; the number of tasks comes on first use
    for x, y in loader:
        opt.zero_grad()
        z = encoder(x)
        losses = {t: F.cross_entropy(heads[t](z), y[t]) for t in heads}
        moomtl.mtl_backward(losses, method, shared_params=encoder.parameters(), features=z,
                            task_params={t: heads[t].parameters() for t in heads})
        opt.step()

For the representation-mode methods (``mgda_ub``, ``graddrop``, every ``wrt: representation`` variant)
the whole step is ONE backward: hooks keep the ``T`` rows ``∂L_t/∂z`` as the heads send them, the method
decides from them inside the backward, and the encoder receives its cotangent in the same engine call
(:meth:`~moomtl.autodiff.StepContext.run`). With one ``z`` fed to every head the hooks are found by a
walk of the heads' graph every step (~0.2 ms at 40 heads); with each head reading its own view of ``z``
(:func:`views`, as in :class:`~moomtl.train.trainer.Trainer`) nothing is looked up in the graph — the
two forms measure the same within this machine's noise (``docs/benchmarks_steps.md``):

.. code-block:: python

    zs = moomtl.views(z, heads)                              # {task: a view of z}, one per head
    losses = {t: F.cross_entropy(heads[t](zs[t]), y[t]) for t in heads}
    moomtl.mtl_backward(losses, method, shared_params=encoder.parameters(), features=zs,
                        task_params={t: heads[t].parameters() for t in heads})

The call fills ``.grad`` of the shared and task-specific parameters with the method's update
(accumulating, as ``backward`` does) and returns what the method logs (detached tensors). Exactly the
step :class:`~moomtl.train.trainer.Trainer` takes: the trainer calls ``method.backward`` on the same
:class:`~moomtl.autodiff.StepContext` (``tests/test_api.py`` checks the gradients are identical).

Methods that act between steps through trainer events — ``mwc_alm`` (multiplier updates per epoch),
``omd_tch`` (online-to-batch conversion at the end), ``dwa`` (epoch-average losses), ``gradnorm``
(initial losses), ``famo`` (the previous step's losses) and the others that override
:class:`~moomtl.events.Callback` hooks — still work step by step here, but their between-step updates
run only when your loop calls those hooks (``method.on_step_end(state)``, ...) as the trainer does;
:func:`event_methods` lists them.

Methods with learned parameters of their own (``kendall``'s log-variances, ``imtl``/``imtl_l``'s loss
scales, ``gradnorm``'s weights) create them when they are set up, after your optimizer was built, so they
would never be trained: on first use :func:`mtl_backward` refuses them with a ``ValueError``. Set such a
method up first with :func:`setup_method` and give the optimizer ``method.parameters()`` as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from moomtl.autodiff import StepContext
from moomtl.autodiff.jacobian import graph_has, head_graph
from moomtl.events import Callback
from moomtl.methods.base import Method, available_methods, build_method
from moomtl.models.base import MultiTaskModel

ParamsLike = Iterable[nn.Parameter]


class _LoopModel(MultiTaskModel):
    """The two parameter groups of the caller's loop, shaped as the model interface methods read
    (``shared_parameters()``, ``task_specific_parameters()``, ``named_parameters()``); the forward pass
    stays in the caller's loop."""

    def __init__(self, tasks: Sequence[str], shared: Sequence[nn.Parameter], specific: Sequence[nn.Parameter]) -> None:
        super().__init__()
        self.task_names = tuple(tasks)
        self.shared = nn.ParameterList(shared)
        self.heads = nn.ParameterList(specific)
        # plain lists as well: a ParameterList is read element by element in Python (~3 µs a parameter),
        # and every step's context asks for both groups
        self._shared_list, self._specific_list = list(shared), list(specific)

    def shared_modules(self) -> nn.Module:
        return self.shared

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self._shared_list)

    def task_specific_parameters(self) -> list[nn.Parameter]:
        return list(self._specific_list)


class FeatureViews(dict):  # type: ignore[type-arg]
    """``{task: view of z}`` made by :func:`views`; ``base`` is ``z`` itself."""

    base: Tensor


def views(z: Tensor, tasks: Iterable[str] | Mapping[str, Any] | int) -> FeatureViews:
    """One view of the shared representation ``z`` per task (``z.view_as(z)``: the same values, no copy),
    to feed head t its own: pass the result as ``features`` of :func:`mtl_backward`. A gradient arriving
    at view t then comes from task t alone, so one backward through the heads gives every row
    ``∂L_t/∂z`` (and each head's gradient) of a representation-mode method. ``tasks``: the task names, a
    mapping keyed by them (the heads), or their number (``task0``, ``task1``, ...)."""
    if not isinstance(z, Tensor) or not z.requires_grad:
        raise ValueError("views: z must be the encoder's output (a tensor that requires grad)")
    names = [f"task{i}" for i in range(tasks)] if isinstance(tasks, int) else list(tasks)
    if not names:
        raise ValueError("views: no tasks")
    out = FeatureViews({t: z.view_as(z) for t in names})
    out.base = z
    return out


def _parameters(params: ParamsLike, what: str) -> list[nn.Parameter]:
    out = list(params)
    for p in out:
        if not isinstance(p, nn.Parameter):
            raise ValueError(f"{what} must hold nn.Parameter objects (module.parameters()), got {type(p).__name__}")
    return [p for p in out if p.requires_grad]


def _losses(losses: Mapping[str, Tensor] | Sequence[Tensor]) -> dict[str, Tensor]:
    named = dict(losses) if isinstance(losses, Mapping) else {f"task{i}": v for i, v in enumerate(losses)}
    if not named:
        raise ValueError("losses is empty: give one scalar loss per task")
    for name, v in named.items():
        if not isinstance(v, Tensor) or v.numel() != 1:
            raise ValueError(f"loss of task {name!r} must be a scalar tensor, got "
                             f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}")
        if not v.requires_grad:
            raise ValueError(f"loss of task {name!r} does not require grad (computed under no_grad, or detached?)")
    return {k: v if v.dim() == 0 else v.reshape(()) for k, v in named.items()}  # no view node for a 0-d loss


def mtl_backward(
    losses: Mapping[str, Tensor] | Sequence[Tensor], method: Method | str, *, shared_params: ParamsLike,
    features: Tensor | FeatureViews | None = None,
    task_params: Mapping[str, ParamsLike] | Sequence[ParamsLike] | None = None,
) -> dict[str, Any]:
    """Fill ``.grad`` with ``method``'s multi-task update; return its logged values.

    Args:
        losses: one scalar loss per task, a mapping ``{task: loss}`` or a sequence (tasks ``task0``,
            ``task1``, ...). The number and names of tasks are fixed by the first call.
        method: a :class:`~moomtl.methods.base.Method` (keep the instance across steps: many methods
            have state) or a registered name (a fresh method with defaults each call: only for stateless
            methods).
        shared_params: the parameters every task uses (the encoder's).
        features: the shared representation ``z`` the heads read (needed by representation-mode methods:
            ``mgda_ub`` and every ``wrt: representation`` variant), or :func:`views` of it when each head
            read its own view (no graph walk per step; checked on the first call: no loss may reach ``z``
            other than through its own task's view).
        task_params: each task's own parameters (its head), as a mapping by task or a sequence in task
            order; ``None``: no task-specific parameters. Then methods that form per-task gradients of
            the shared parameters (``mgda``, ``pcgrad``, ``upgrad``, ...) give gradients to
            ``shared_params`` only, while the loss weightings (``linear``, ``kendall``, ...), ``gradnorm`` and
            the representation-mode methods (``mgda_ub``, ``graddrop``, ``wrt: representation``) reach every
            parameter of the graph, as ``loss.backward()`` does (the heads' parameters are then found by a
            walk of the heads' graph): pass ``task_params`` to get the heads' update from every method, at
            the least cost.

    Returns:
        what the method logs (task weights, ...), as detached 0-d tensors.

    Raises:
        ValueError: on a non-scalar loss or one without grad, empty ``shared_params``, a parameter given
            twice, ``task_params`` not one group per loss, ``features`` no loss depends on, another set
            of tasks than the first call's, or (first use only) a method that learns parameters of its
            own and was not set up with :func:`setup_method`.
    """
    named = _losses(losses)
    if isinstance(method, str):
        method = build_method(method)
    if not isinstance(method, Method):
        raise ValueError(f"method must be a moomtl Method or a registered name, got {type(method).__name__}")
    shared = _parameters(shared_params, "shared_params")
    if not shared:
        raise ValueError("shared_params is empty: give the parameters every task uses (e.g. encoder.parameters())")
    if isinstance(task_params, Mapping) and set(task_params) != set(named):
        raise ValueError(f"task_params has tasks {sorted(task_params)}, the losses {sorted(named)}")
    specific, groups_of = _task_parameters(task_params, tuple(named), "losses")
    z, aliases = features, None
    if isinstance(features, FeatureViews):
        if set(features) != set(named):
            raise ValueError(f"features are views for tasks {sorted(features)}, the losses are for {sorted(named)}")
        z, aliases = features.base, [features[t] for t in named]
    elif isinstance(features, Mapping):
        raise ValueError("features: pass z itself or moomtl.views(z, tasks), not a mapping of your own")
    if z is not None:
        if not isinstance(z, Tensor):
            raise ValueError("features must be one tensor: the shared representation the heads read")
        if not z.requires_grad:
            raise ValueError("features does not require grad: pass the encoder's output z itself, not a detached copy")
        if not _reaches(list(named.values()), z):
            raise ValueError("no loss depends on features: pass the tensor the heads read (z = encoder(x))")
    _check_disjoint(shared, specific)
    model = _loop_model(method, tuple(named), shared, specific, lazy=True, groups=groups_of)
    structure = method.__dict__["_api_structure"]
    if aliases is not None and not structure.get("views_checked"):
        _check_views(named, z, aliases)
        structure["views_checked"] = True
    ctx = StepContext(model, named, z, structure=structure, z_aliases=aliases)
    info = ctx.run(method)
    ref = next(iter(named.values()))
    return {k: v.detach() if isinstance(v, Tensor) else torch.tensor(float(v), device=ref.device)
            for k, v in info.items()}


def setup_method(
    method: Method, tasks: Sequence[str] | int, *, shared_params: ParamsLike,
    task_params: Mapping[str, ParamsLike] | Sequence[ParamsLike] | None = None,
) -> Method:
    """Set ``method`` up for :func:`mtl_backward` now rather than on first use, and return it.

    Needed before building the optimizer for methods with learned parameters (``kendall``, ``imtl``,
    ``imtl_l``, ``gradnorm``): they exist only after set-up, and the optimizer must hold
    ``method.parameters()``. ``tasks``: the task names (the keys of the losses you will pass) or their
    number (then ``task0``, ``task1``, ...). Setting a method up again resets its state.
    """
    names = tuple(f"task{i}" for i in range(tasks)) if isinstance(tasks, int) else tuple(tasks)
    if not names:
        raise ValueError("tasks is empty: give the task names or their number")
    shared = _parameters(shared_params, "shared_params")
    if not shared:
        raise ValueError("shared_params is empty: give the parameters every task uses (e.g. encoder.parameters())")
    specific, groups_of = _task_parameters(task_params, names, "tasks")
    _check_disjoint(shared, specific)
    method.__dict__.pop("_api_tasks", None)
    _loop_model(method, names, shared, specific, lazy=False, groups=groups_of)
    return method


def _task_parameters(task_params: Mapping[str, ParamsLike] | Sequence[ParamsLike] | None, names: tuple[str, ...],
                     what: str) -> tuple[list[nn.Parameter], list[int] | None]:
    """The task-specific parameters in task order and the task index of each (``None``: no groups given)."""
    if task_params is None:
        return [], None
    groups = [task_params[t] for t in names] if isinstance(task_params, Mapping) else list(task_params)
    if len(groups) != len(names):
        raise ValueError(f"task_params has {len(groups)} groups for {len(names)} {what}")
    specific: list[nn.Parameter] = []
    owners: list[int] = []
    for t, g in enumerate(groups):
        ps = _parameters(g, "task_params")
        specific.extend(ps)
        owners.extend([t] * len(ps))
    return specific, owners


def _reaches(losses: Sequence[Tensor], target: Tensor) -> bool:
    """Does any loss's graph reach ``target`` (a walk of the graph down to it, no backward pass)?"""
    node = torch.autograd.graph.get_gradient_edge(target).node
    return graph_has([v.grad_fn for v in losses], lambda n: n is node)


def _check_views(losses: Mapping[str, Tensor], z: Tensor, aliases: Sequence[Tensor]) -> None:
    """Each loss reaches ``z`` only through its own task's view (else its rows from the views would miss
    the other paths): a walk of the heads' graph down to ``z``, on the first call."""
    graph = head_graph(list(losses.values()), z)
    names = list(losses)
    if graph is None:
        raise ValueError("features: the tasks' heads share part of their graph above z (or read one another's "
                         "views); views need each head to read only its own view — pass features=z instead")
    for t, (reads, view) in enumerate(zip(graph.reads, aliases, strict=True)):
        if any(node is not view.grad_fn for node, _ in reads):
            raise ValueError(f"features: the loss of task {names[t]!r} reaches z other than through its own view "
                             "(feed head t only moomtl.views(z, ...)[t], or pass features=z)")


def _check_disjoint(shared: Sequence[nn.Parameter], specific: Sequence[nn.Parameter]) -> None:
    ids = [id(p) for p in (*shared, *specific)]
    if len(set(ids)) != len(ids):
        raise ValueError("a parameter is given twice (in shared_params and task_params, or in two groups)")


def _loop_model(method: Method, tasks: tuple[str, ...], shared: list[nn.Parameter],
                specific: list[nn.Parameter], lazy: bool, groups: Sequence[int] | None = None) -> _LoopModel:
    """The adapter of this method's loop, built (and the method set up) on first use, reused after. A new
    adapter (other parameters) starts a new ``structure`` (the static graph facts of the step), in which
    the owner of each task-specific parameter is its group's task (``groups``)."""
    key = (tuple(id(p) for p in shared), tuple(id(p) for p in specific), tuple(groups or ()))
    cached = method.__dict__.get("_api_model")
    if cached is not None and cached[0] == key:
        model = cached[1]
    else:
        model = _LoopModel(tasks, shared, specific)
        method.__dict__["_api_model"] = (key, model)
        structure: dict[str, Any] = {}
        if groups is not None:
            structure["head_owner"] = {id(p): t for p, t in zip(specific, groups, strict=True)}
        method.__dict__["_api_structure"] = structure
    seen = method.__dict__.get("_api_tasks")
    if seen is None:
        before = {id(p) for p in method.parameters()}
        method.setup(tasks, model)
        method.to(shared[0].device)
        created = [n for n, p in method.named_parameters() if p.requires_grad and id(p) not in before]
        if lazy and created:  # not set up: the next call sets it up (and refuses) again
            raise ValueError(
                f"method {method.name or type(method).__name__!r} learns parameters of its own ({', '.join(created)}), "
                "created at set-up, after your optimizer was built: call moomtl.api.setup_method(method, tasks, "
                "shared_params=...) first and give the optimizer method.parameters() too"
            )
        method.__dict__["_api_tasks"] = tasks
    elif seen != tasks:
        raise ValueError(f"this method was set up for tasks {list(seen)}; got losses for {list(tasks)} "
                         "(build a new method for another set of tasks)")
    return model


def event_methods() -> list[str]:
    """Registered methods that override trainer events (between-step updates your loop must call)."""
    hooks = ("on_train_begin", "on_step_end", "on_epoch_end", "on_train_end")
    return [name for name, cls in available_methods().items()
            if any(getattr(cls, h) is not getattr(Callback, h) for h in hooks)]
