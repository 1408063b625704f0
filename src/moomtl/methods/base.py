"""The one interface through which every MOO/MTL method plugs into the trainer, and the registry.

A method is an ``nn.Module`` (so its state — log-variances, duals, multipliers — is saved in
checkpoints) and a :class:`~moomtl.events.Callback` (so it can act between steps). Per step
the trainer zeroes the gradients, computes the per-task losses and calls::

    info = method.backward(losses, ctx)   # populate .grad of the model's parameters

then ``optimizer.step()``. ``ctx`` (:class:`~moomtl.autodiff.StepContext`) lazily provides the
per-task Jacobian/Gramian w.r.t. shared parameters or the shared representation. The returned dict of
detached 0-d tensors (e.g. task weights; Python floats are accepted too) is averaged per epoch and
logged. The trainer knows no method by name: methods are looked up in a
registry filled by the :func:`register` decorator, and every module of ``moomtl.methods`` is imported
on first lookup, so adding a method is adding a file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from moomtl.autodiff.context import StepContext
from moomtl.events import Callback

#: Cost classes of a step (``MethodCard.cost``), each with what it costs beyond the forward pass.
COST_CLASSES: dict[str, str] = {
    "loss": "loss weighting: 1 backward",
    "representation": ("representation Jacobian: the T rows at z from one backward through the heads (disjoint heads; "
                       "else T), then 1 backward through the encoder"),
    "layer": ("layer Jacobian: the T rows at z (as representation), then T vector-Jacobian products from z down to "
              "one shared layer's weight (one batched call), then 1 backward through the encoder"),
    "shared": "full Jacobian: T backward through the encoder",
}


@dataclass(frozen=True)
class MethodCard:
    """What ``docs/methods.md`` says about a method, declared on its class (``card = MethodCard(...)``) so
    the documentation is generated from the code (``moomtl methods --markdown``) and cannot drift.

    Attributes:
        paper: authors, year, title and venue of the paper the method follows.
        url: a link to the paper (arXiv, proceedings, DOI).
        equation: the update or objective, one line (unicode math).
        cost: the step's cost class with default hyper-parameters (a key of :data:`COST_CLASSES`).
        solver: the per-step work beyond the backward passes ("" when none: a closed form of T numbers).
        state: what the method keeps across steps ("" when stateless).
        reference: the test (``tests/<file>.py::<test>``) that checks the method against a reference,
            and the reference (the authors' code, a peer library, an optimality condition).
    """

    paper: str
    url: str
    equation: str
    cost: str
    reference: str
    solver: str = ""
    state: str = ""

    def __post_init__(self) -> None:
        if self.cost not in COST_CLASSES:
            raise ValueError(f"cost must be one of {', '.join(COST_CLASSES)}, got {self.cost!r}")
        if not self.reference.startswith("tests/") or "::" not in self.reference:
            raise ValueError(f"reference must name a test as tests/<file>.py::<test> (...), got {self.reference!r}")


class Method(nn.Module, Callback):
    """Base class of all methods. Subclasses implement :meth:`backward` and declare a :class:`MethodCard`
    (``card``, checked for every registered method in ``tests/test_method_docs.py``)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Name of the hyper-parameter holding a preference/weight vector over tasks, for methods a
    #: preference sweep can drive (``None``: the method has no preference, e.g. MGDA).
    preference_param: ClassVar[str | None] = None
    #: The method refuses a zero preference entry (EPO): a sweep's default lattice is moved inwards for it
    #: (:func:`moomtl.pareto.inward`; preferences given explicitly are used as given).
    positive_preference: ClassVar[bool] = False
    #: Paper, equation, cost class, state and reference test (``docs/methods.md``).
    card: ClassVar[MethodCard | None] = None
    #: In representation mode the method's step only combines the rows ``∂L_t/∂z`` (see
    #: :meth:`fuses_representation`).
    fuses_rows: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.task_names: tuple[str, ...] = ()

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        """Called once before training (and before a checkpoint is restored). Create state sized
        by the number of tasks here. Override and call ``super().setup(...)``."""
        self.task_names = tuple(task_names)

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor | float]:
        """Fill ``.grad``; return values to log (detached 0-d tensors, so no host sync per step)."""
        raise NotImplementedError

    def fuses_representation(self) -> bool:
        """True when :meth:`backward`, as configured, needs nothing from the graph but the rows ``∂L_t/∂z``
        (``ctx.jacobian``/``ctx.gramian("representation")``, the loss values) and ends with
        ``ctx.apply_coefficients(..., "representation")`` or ``ctx.backward_representation``: loops
        (:meth:`StepContext.run <moomtl.autodiff.context.StepContext.run>`) may then run it inside one
        backward through heads and encoder. By default: :attr:`fuses_rows` and ``wrt`` (where the method
        has one) ``"representation"``."""
        return self.fuses_rows and getattr(self, "wrt", "representation") == "representation"

    def extra_repr(self) -> str:
        params = inspect.signature(type(self).__init__).parameters
        parts = [f"{k}={getattr(self, k)!r}" for k in params if k != "self" and hasattr(self, k)]
        return ", ".join(parts)


class Weighting(Method):
    """A method that reduces to one backward pass of a weighted sum of losses, Σ_t w_t L_t.
    Subclasses implement :meth:`weights` (``losses`` detached, shape ``[T]``)."""

    #: whether :meth:`weights` reads the loss values; when not (fixed weights), it gets this process's
    #: share of them (same shape, dtype, device) and a multi-process run skips their all-reduce.
    reads_losses: bool = True

    def weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        w = self.weights(ctx.loss_values if self.reads_losses else ctx.local_loss_values, ctx)
        ctx.backward_weighted(w)
        return weights_info(self.task_names or ctx.task_names, w)


def shared_parameters_of(model: nn.Module) -> list[nn.Parameter]:
    """The shared parameters of ``model`` (``model.shared_parameters()`` of a MultiTaskModel, else every
    trainable parameter): what per-task state sized by the shared parameters is sized from."""
    if hasattr(model, "shared_parameters"):
        return list(model.shared_parameters())
    return [p for p in model.parameters() if p.requires_grad]


def parameter_dtype(model: nn.Module | None) -> torch.dtype:
    """The dtype of ``model``'s shared parameters (:func:`shared_parameters_of`; torch's default dtype for
    ``None`` or a model without any): the dtype a method stores its configuration (preference, ideal
    point) and small learned state in, so that a float64 model's preference is not rounded to float32."""
    params = [] if model is None else shared_parameters_of(model)
    return params[0].dtype if params else torch.get_default_dtype()


def shared_size(model: nn.Module) -> tuple[int, torch.dtype, torch.device | None]:
    """``(number of shared parameter entries, their dtype, their device)`` for sizing buffers in setup."""
    params = shared_parameters_of(model)
    return sum(p.numel() for p in params), parameter_dtype(model), (params[0].device if params else None)


WRT_CHOICES = ("shared", "representation")


def check_wrt(wrt: str) -> str:
    """Validate a method's ``wrt`` hyper-parameter (what its task gradients are taken with respect to)."""
    if wrt not in WRT_CHOICES:
        raise ValueError(f"wrt must be 'shared' or 'representation', got {wrt!r}")
    return wrt


def weights_info(task_names: Sequence[str], w: Tensor) -> dict[str, Tensor]:
    """``{"weight/<task>": w_t}`` as detached 0-d tensors on ``w``'s device: logging them costs no host
    sync per step (the trainer averages them on the device and reads them once per epoch)."""
    w = w.detach()
    if w.shape != (len(task_names),):
        raise ValueError(f"expected {len(task_names)} weights (one per task), got shape {tuple(w.shape)}")
    return {f"weight/{t}": v for t, v in zip(task_names, w.unbind(), strict=True)}  # one op, not T selects


def as_weight_vector(weights: Sequence[float] | Tensor, n_tasks: int | None = None) -> Tensor:
    """Validate a user weight vector: finite, non-negative, not all zero, right length."""
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if n_tasks is not None and w.numel() != n_tasks:
        raise ValueError(f"expected {n_tasks} weights (one per task), got {w.numel()}")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w


# --- registry -----------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register(name: str, description: str) -> Callable[[M], M]:
    """Class decorator: make a method constructible by ``name`` from configs and the CLI."""

    def deco(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} registered twice")
        cls.name = name
        cls.description = description
        _REGISTRY[name] = cls
        return cls

    return deco


def _import_all_methods() -> None:
    import moomtl.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"moomtl.methods.{info.name}")


def available_methods() -> dict[str, type[Method]]:
    """``{name: class}`` of every registered method, sorted by name."""
    _import_all_methods()
    return dict(sorted(_REGISTRY.items()))


def method_hyperparameters(name: str) -> dict[str, Any]:
    """``{hyper-parameter: default}`` of a method (``inspect.Parameter.empty`` when required)."""
    cls = get_method_class(name)
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {k: p.default for k, p in sig.parameters.items() if k != "self" and p.kind in kinds}


def method_catalogue() -> list[dict[str, str]]:
    """One row per registered method: ``name``, ``description``, ``hyperparameters`` (``k=default``,
    a bare ``k`` when required) and ``preference`` (the hyper-parameter a sweep sets, or ``""``)."""
    rows = []
    for name, cls in available_methods().items():
        hp = method_hyperparameters(name)
        shown = ", ".join(k if d is inspect.Parameter.empty else f"{k}={d!r}" for k, d in hp.items())
        rows.append({"name": name, "description": cls.description, "hyperparameters": shown,
                     "preference": cls.preference_param or ""})
    return rows


def method_catalogue_markdown() -> str:
    """:func:`method_catalogue` as markdown tables (``moomtl methods --markdown``, ``docs/methods.md``): the
    hyper-parameters, then each method's :class:`MethodCard` (paper, equation, cost, state, reference)."""

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    lines = ["| method | description | hyper-parameters (default) | swept by |", "|---|---|---|---|"]
    for r in method_catalogue():
        lines.append(row([f"`{r['name']}`", r["description"],
                          f"`{r['hyperparameters']}`" if r["hyperparameters"] else "",
                          f"`{r['preference']}`" if r["preference"] else "—"]))
    lines += ["", "Cost classes: " + "; ".join(f"**{k}** = {v}" for k, v in COST_CLASSES.items()) + ".", "",
              "| method | paper | equation | cost | + per-step solver | state | preference | reference checked in |",
              "|---|---|---|---|---|---|---|---|"]
    for name, cls in available_methods().items():
        c = cls.card
        if c is None:
            lines.append(row([f"`{name}`", "(no card)", "", "", "", "", "", ""]))
            continue
        lines.append(row([f"`{name}`", f"[{c.paper}]({c.url})", c.equation, c.cost, c.solver or "—",
                          c.state or "stateless", f"`{cls.preference_param}`" if cls.preference_param else "no",
                          c.reference]))
    return "\n".join(lines) + "\n"


def get_method_class(name: str) -> type[Method]:
    methods = available_methods()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(methods)}")
    return methods[name]


def build_method(name: str, **hparams: Any) -> Method:
    """Instantiate a registered method, with a clear ``ValueError`` for unknown/missing/bad
    hyper-parameters (configs are user input)."""
    cls = get_method_class(name)
    allowed = method_hyperparameters(name)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(
            f"method {name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(allowed) or '(none)'}"
        )
    missing = [k for k, d in allowed.items() if d is inspect.Parameter.empty and k not in hparams]
    if missing:
        raise ValueError(f"method {name!r} needs hyper-parameter(s): {', '.join(missing)}")
    try:
        return cls(**hparams)
    except (TypeError, ValueError) as e:
        raise ValueError(f"method {name!r}: {e}") from None
