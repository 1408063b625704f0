"""What a task *is* to the trainer: its loss and its evaluation metrics.

A data set declares one :class:`Task` per task name (``DataSplits.tasks``; classification by default),
so the trainer trains and evaluates image-level classification and dense prediction (segmentation,
per-pixel regression) the same way:

* ``loss(output, target)``: the scalar training loss of a batch;
* ``init_state()`` / ``update(state, output, target)`` / ``compute(state)``: metrics accumulated over a
  whole split (sums and counts, or a confusion matrix), so they are exact, not means of batch means.

Metric names are reported as ``<split>/<task>/<metric>``. Each task declares its metrics as
:class:`MetricSpec` objects (name, direction, how to show it): reports, sweeps, Δm, model selection and
the sparse pipeline read direction and format from there (:func:`metric_spec`), so a new task's metric
is handled everywhere by being declared. :attr:`Task.higher_is_better` is the same information as a dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class MetricSpec:
    """A reported metric: its ``name``, its direction, and how reports show it (``percent``: as
    ``100·v`` with a ``%`` header; else with ``fmt``).

    >>> acc = MetricSpec("acc", higher_is_better=True, percent=True)
    >>> acc.format(0.98765), acc.header("left"), acc.better(0.9, 0.8)
    ('98.77', 'left acc %', True)
    """

    name: str
    higher_is_better: bool
    percent: bool = False
    fmt: str = ".4g"
    description: str = ""

    def format(self, value: float) -> str:
        return f"{100 * value:.2f}" if self.percent else f"{value:{self.fmt}}"

    def header(self, task: str) -> str:
        return f"{task} {self.name}{' %' if self.percent else ''}"

    def better(self, a: float, b: float) -> bool:
        """Is ``a`` strictly better than ``b``?"""
        return a > b if self.higher_is_better else a < b


#: Every metric name reports may meet: the losses and errors moomtl adds, and each Task's declared ones.
_METRICS: dict[str, MetricSpec] = {
    "loss": MetricSpec("loss", False, description="the task's training loss on the split"),
    "err": MetricSpec("err", False, percent=True, description="1 − accuracy"),
}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Make ``spec`` known to reports; a name registered with another direction or format is an error."""
    known = _METRICS.get(spec.name)
    if known is not None and (known.higher_is_better, known.percent) != (spec.higher_is_better, spec.percent):
        raise ValueError(f"metric {spec.name!r} is already declared as {known}, not {spec}")
    _METRICS.setdefault(spec.name, spec)
    return _METRICS[spec.name]


def metric_spec(name: str) -> MetricSpec:
    """The :class:`MetricSpec` of a metric name; an undeclared name counts as higher-is-better, shown
    with 4 significant digits."""
    return _METRICS.get(name) or MetricSpec(name, True)


class Task:
    """Base class: a loss and metrics accumulated over a split. Subclasses declare ``metrics`` (a tuple
    of :class:`MetricSpec`, in the order :meth:`compute` reports them); they are registered for reports."""

    metrics: tuple[MetricSpec, ...] = ()
    #: ``{metric: True if larger is better}`` (derived from ``metrics``).
    higher_is_better: Mapping[str, bool] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "metrics" in cls.__dict__:
            cls.metrics = tuple(register_metric(m) for m in cls.metrics)
            cls.higher_is_better = {m.name: m.higher_is_better for m in cls.metrics}

    def loss(self, output: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_state(self) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, state: dict[str, Tensor], output: Tensor, target: Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def compute(self, state: dict[str, Tensor]) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_size(self, targets: Sequence[Tensor]) -> int:  # pragma: no cover - abstract
        """Output channels a model needs for this task, given its targets (one tensor per split)."""
        raise NotImplementedError

    @property
    def primary_metric(self) -> str:
        """The metric reports show first (``acc``, ``miou``, ``l1``)."""
        return next(iter(self.higher_is_better))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


def _zero_loss(output: Tensor) -> Tensor:
    """A zero that keeps the graph (a batch with no labelled element contributes no gradient, not NaN)."""
    return output.sum() * 0.0


class Classification(Task):
    """One label per example: cross-entropy, accuracy.

    ``ignore_index`` (e.g. ``-1``) marks examples without a label for this task (data where not every
    example is labelled for every task): they are left out of the loss (the mean over the labelled ones;
    a batch with none gives a zero loss with no gradient, not NaN) and of the accuracy. Computed without
    a host sync.

    >>> t = Classification()
    >>> s = t.init_state()
    >>> t.update(s, torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 1, 1]))
    >>> t.compute(s)
    {'acc': 0.6666666666666666}
    >>> m = Classification(ignore_index=-1)
    >>> float(m.loss(torch.zeros(2, 3, requires_grad=True), torch.tensor([-1, -1])))
    0.0
    """

    metrics = (MetricSpec("acc", True, percent=True, description="accuracy"),)

    def __init__(self, ignore_index: int | None = None) -> None:
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")
        if ignore_index is not None:
            self.ignore_index = ignore_index  # absent when None: equal to (and printed as) Classification()

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        ignore = getattr(self, "ignore_index", None)
        if ignore is None:
            return F.cross_entropy(output, target)
        labelled = (target != ignore).sum().clamp_min(1)
        return F.cross_entropy(output, target, ignore_index=ignore, reduction="sum") / labelled

    def output_size(self, targets: Sequence[Tensor]) -> int:
        """Largest label + 1 over all splits."""
        return max(int(t.max()) + 1 for t in targets if t.numel())

    def init_state(self) -> dict[str, Tensor]:
        return {"correct": torch.zeros((), dtype=torch.float64), "count": torch.zeros((), dtype=torch.float64)}

    def update(self, state: dict[str, Tensor], output: Tensor, target: Tensor) -> None:
        ignore = getattr(self, "ignore_index", None)
        hit = output.argmax(dim=1) == target
        if ignore is None:
            state["correct"] += float(hit.sum())
            state["count"] += target.shape[0]
        else:
            labelled = target != ignore
            state["correct"] += float((hit & labelled).sum())
            state["count"] += float(labelled.sum())

    def compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        return {"acc": float(state["correct"] / state["count"].clamp_min(1))}


class Segmentation(Task):
    """Per-pixel classes ``[N, H, W]`` (``ignore_index`` = unlabelled) against logits ``[N, C, H, W]``:
    cross-entropy over the labelled pixels; mean IoU and pixel accuracy from a confusion matrix.

    ``miou`` averages :math:`|P_c ∩ G_c| / |P_c ∪ G_c|` over the classes that occur in the ground truth
    or the predictions of the split (a class absent from both has no IoU), as the Cityscapes benchmark.

    >>> t = Segmentation(n_classes=2)
    >>> s = t.init_state()
    >>> logits = torch.tensor([[[[5.0, 5.0, -5.0]], [[-5.0, -5.0, 5.0]]]])   # predicts 0, 0, 1
    >>> t.update(s, logits, torch.tensor([[[0, 1, 255]]]))                   # third pixel unlabelled
    >>> t.compute(s)   # class 0: IoU 1/2, class 1: IoU 0/1
    {'miou': 0.25, 'pixel_acc': 0.5}
    """

    metrics = (MetricSpec("miou", True, description="mean IoU over classes present"),
               MetricSpec("pixel_acc", True, description="pixel accuracy over labelled pixels"))

    def __init__(self, n_classes: int, ignore_index: int = 255) -> None:
        if n_classes < 2:
            raise ValueError(f"n_classes must be ≥ 2, got {n_classes}")
        self.n_classes = int(n_classes)
        self.ignore_index = int(ignore_index)

    def output_size(self, targets: Sequence[Tensor]) -> int:
        return self.n_classes

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if not bool((target != self.ignore_index).any()):
            return _zero_loss(output)
        return F.cross_entropy(output, target, ignore_index=self.ignore_index)

    def init_state(self) -> dict[str, Tensor]:
        return {"confusion": torch.zeros(self.n_classes, self.n_classes, dtype=torch.int64)}

    def update(self, state: dict[str, Tensor], output: Tensor, target: Tensor) -> None:
        valid = target != self.ignore_index
        truth = target[valid].to("cpu", torch.int64)
        pred = output.argmax(dim=1)[valid].to("cpu", torch.int64)
        if truth.numel() and (truth.min() < 0 or truth.max() >= self.n_classes):
            raise ValueError(f"segmentation labels must be in [0, {self.n_classes}) or {self.ignore_index}")
        state["confusion"] += torch.bincount(truth * self.n_classes + pred, minlength=self.n_classes**2).view(
            self.n_classes, self.n_classes
        )

    def compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        cm = state["confusion"].to(torch.float64)
        tp = cm.diagonal()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        miou = float((tp[present] / union[present]).mean()) if bool(present.any()) else 0.0
        return {"miou": miou, "pixel_acc": float(tp.sum() / cm.sum().clamp_min(1))}


class MaskedL1(Task):
    """Per-pixel regression (instance offsets, disparity): targets with ``NaN`` where unlabelled; the
    loss and the metric ``l1`` are the mean absolute error over the labelled entries, in target units.

    >>> t = MaskedL1()
    >>> out, target = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.5, float("nan"), 1.0]])
    >>> float(t.loss(out, target))
    1.25
    >>> s = t.init_state(); t.update(s, out, target); t.compute(s)
    {'l1': 1.25}
    """

    metrics = (MetricSpec("l1", False, description="mean absolute error over valid pixels"),)

    def output_size(self, targets: Sequence[Tensor]) -> int:
        """Channels of the ``[N, C, ...]`` targets (1 for ``[N]`` targets)."""
        return int(targets[0].shape[1]) if targets[0].ndim > 1 else 1

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if output.shape != target.shape:
            raise ValueError(f"output shape {tuple(output.shape)} != target shape {tuple(target.shape)}")
        valid = ~torch.isnan(target)
        if not bool(valid.any()):
            return _zero_loss(output)
        return (output[valid] - target[valid].to(output.dtype)).abs().mean()

    def init_state(self) -> dict[str, Tensor]:
        return {"abs_sum": torch.zeros((), dtype=torch.float64), "count": torch.zeros((), dtype=torch.float64)}

    def update(self, state: dict[str, Tensor], output: Tensor, target: Tensor) -> None:
        valid = ~torch.isnan(target)
        state["abs_sum"] += float((output[valid].double() - target[valid].double()).abs().sum())
        state["count"] += int(valid.sum())

    def compute(self, state: dict[str, Tensor]) -> dict[str, float]:
        return {"l1": float(state["abs_sum"] / state["count"].clamp_min(1))}


def metric_higher_is_better(metric: str) -> bool:
    """Direction of a metric (:func:`metric_spec`): ``acc``, ``miou``, ``pixel_acc`` up; ``l1``,
    ``loss``, ``err`` down; an unknown name counts as higher-is-better.

    >>> metric_higher_is_better("l1"), metric_higher_is_better("acc"), metric_higher_is_better("loss")
    (False, True, False)
    """
    return metric_spec(metric).higher_is_better


__all__ = ["Classification", "MaskedL1", "MetricSpec", "Segmentation", "Task", "metric_higher_is_better", "metric_spec",
           "register_metric"]
