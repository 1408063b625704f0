"""Task specs (loss + split-level metrics), dense targets in the data container, and reports that show
whatever metric a task defines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.data.base import DataSplits, MultiTaskTensors
from moomtl.experiments.report import front_markdown, shown_metric
from moomtl.tasks import Classification, MaskedL1, Segmentation, metric_higher_is_better
from moomtl.train.trainer import evaluate


def _accumulate(task, pairs):
    state = task.init_state()
    for out, target in pairs:
        task.update(state, out, target)
    return task.compute(state)


# --- classification ---------------------------------------------------------------------------------
def test_classification_is_cross_entropy_and_accuracy():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(20, 5, generator=g), torch.randint(0, 5, (20,), generator=g)
    t = Classification()
    torch.testing.assert_close(t.loss(out, y), F.cross_entropy(out, y))
    acc = float((out.argmax(1) == y).float().mean())
    assert _accumulate(t, [(out[:7], y[:7]), (out[7:], y[7:])])["acc"] == pytest.approx(acc)
    assert t.output_size([y, torch.tensor([7])]) == 8 and t.primary_metric == "acc"


# --- segmentation -----------------------------------------------------------------------------------
def _brute_force_miou(pred: np.ndarray, truth: np.ndarray, n: int, ignore: int) -> tuple[float, float]:
    valid = truth != ignore
    p, g = pred[valid], truth[valid]
    ious = []
    for c in range(n):
        union = np.sum((p == c) | (g == c))
        if union:
            ious.append(np.sum((p == c) & (g == c)) / union)
    return (float(np.mean(ious)) if ious else 0.0), float(np.mean(p == g)) if len(g) else 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_segmentation_metrics_match_a_brute_force_count(n_classes, batches, seed):
    g = torch.Generator().manual_seed(seed)
    t = Segmentation(n_classes, ignore_index=255)
    pairs = []
    for _ in range(batches):
        logits = torch.randn(2, n_classes, 3, 4, generator=g)
        target = torch.randint(0, n_classes, (2, 3, 4), generator=g)
        target[torch.rand(2, 3, 4, generator=g) < 0.3] = 255
        pairs.append((logits, target))
    got = _accumulate(t, pairs)
    pred = np.concatenate([p.argmax(1).numpy().ravel() for p, _ in pairs])
    truth = np.concatenate([y.numpy().ravel() for _, y in pairs])
    miou, pixel_acc = _brute_force_miou(pred, truth, n_classes, 255)
    assert got["miou"] == pytest.approx(miou) and got["pixel_acc"] == pytest.approx(pixel_acc)


def test_segmentation_loss_ignores_unlabelled_pixels_and_never_gives_nan():
    t = Segmentation(3)
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 255], [2, 255]]])
    torch.testing.assert_close(t.loss(logits, target), F.cross_entropy(logits, target, ignore_index=255))
    none = t.loss(logits, torch.full((1, 2, 2), 255))
    none.backward()
    assert float(none.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="labels must be in"):
        t.update(t.init_state(), logits, torch.tensor([[[0, 7], [1, 1]]]))
    with pytest.raises(ValueError, match="n_classes"):
        Segmentation(1)
    assert t.output_size([target]) == 3 and t == Segmentation(3) and t != Segmentation(4)


# --- masked L1 ------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_masked_l1_is_the_mean_over_labelled_entries(batches, nan_fraction, seed):
    g = torch.Generator().manual_seed(seed)
    t = MaskedL1()
    pairs = []
    for _ in range(batches):
        out, target = torch.randn(2, 2, 3, generator=g), torch.randn(2, 2, 3, generator=g)
        target[torch.rand(2, 2, 3, generator=g) < nan_fraction] = float("nan")
        pairs.append((out, target))
    outs = torch.cat([o for o, _ in pairs]).ravel()
    targets = torch.cat([y for _, y in pairs]).ravel()
    valid = ~torch.isnan(targets)
    expected = float((outs[valid] - targets[valid]).abs().mean()) if bool(valid.any()) else 0.0
    assert _accumulate(t, pairs)["l1"] == pytest.approx(expected, abs=1e-6)
    for out, target in pairs:
        loss = t.loss(out, target)
        assert torch.isfinite(loss)


def test_masked_l1_checks_shapes_and_sizes():
    t = MaskedL1()
    with pytest.raises(ValueError, match="output shape"):
        t.loss(torch.zeros(2, 1, 4), torch.zeros(2, 4))
    assert t.output_size([torch.zeros(5, 2, 3, 3)]) == 2 and t.output_size([torch.zeros(5)]) == 1
    assert not metric_higher_is_better("l1") and metric_higher_is_better("miou")
    assert t.primary_metric == "l1"


# --- dense targets in the data container and the evaluation -------------------------------------------
def _dense_data(n: int = 10, seed: int = 0) -> MultiTaskTensors:
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, 3, (n, 2, 4), generator=g)
    seg[0, 0, 0] = 255
    depth = torch.randn(n, 1, 2, 4, generator=g)
    depth[:, :, 0, 0] = float("nan")
    x = torch.randint(0, 256, (n, 1, 2, 4), generator=g, dtype=torch.uint8)
    return MultiTaskTensors(x, {"seg": seg, "depth": depth}, ("seg", "depth"), mean=(0.5,), std=(0.5,))


class _PixelModel(torch.nn.Module):
    """A 1x1-conv 'dense' model: enough to check the evaluation plumbing."""

    task_names = ("seg", "depth")

    def __init__(self) -> None:
        super().__init__()
        self.seg = torch.nn.Conv2d(1, 3, 1)
        self.depth = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return {"seg": self.seg(x), "depth": self.depth(x)}


def test_dense_targets_subset_and_task_specs():
    data = _dense_data()
    t = data.targets(torch.tensor([1, 3]))
    assert list(t) == ["seg", "depth"] and t["seg"].shape == (2, 2, 4) and t["depth"].shape == (2, 1, 2, 4)
    small = data.subset(4)
    assert len(small) == 4 and small.y["depth"].shape[0] == 4 and small.mean == (0.5,)
    image, (seg, depth) = data[2]
    assert image.dtype == torch.float32 and seg.shape == (2, 4) and depth.shape == (1, 2, 4)
    tasks = {"seg": Segmentation(3), "depth": MaskedL1()}
    splits = DataSplits(data, data.subset(3), data.subset(3), "dense", tasks=tasks)
    assert splits.task_specs() == tasks and splits.output_sizes() == [3, 1]
    with pytest.raises(ValueError, match="output_sizes"):
        splits.n_classes()
    with pytest.raises(ValueError, match="no Task for"):
        DataSplits(data, data, data, "d", tasks={"seg": Segmentation(3)}).task_specs()
    with pytest.raises(ValueError, match="targets are for tasks"):
        MultiTaskTensors(data.x, {"depth": data.y["depth"]}, ("seg", "depth"), mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="targets for task 'seg'"):
        MultiTaskTensors(data.x, {"seg": data.y["seg"][:3], "depth": data.y["depth"]}, ("seg", "depth"),
                         mean=(0.5,), std=(0.5,))
    # One-label data: default classification specs, sizes = classes.
    y = torch.tensor([[0, 4], [2, 1]])
    cls = MultiTaskTensors(torch.zeros(2, 1, 2, 2), y, ("a", "b"))
    plain = DataSplits(cls, cls, cls, "c")
    assert plain.task_specs() == {"a": Classification(), "b": Classification()}
    assert plain.n_classes() == plain.output_sizes() == [3, 5]


def test_evaluation_metrics_do_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    data = _dense_data(n=13)
    tasks = {"seg": Segmentation(3), "depth": MaskedL1()}
    model = _PixelModel()
    whole = evaluate(model, data, tasks, batch_size=1000)
    pieces = evaluate(model, data, tasks, batch_size=3)
    for key in ("seg/miou", "seg/pixel_acc", "depth/l1"):
        assert pieces[key] == pytest.approx(whole[key])
    assert set(whole) == {"seg/loss", "seg/miou", "seg/pixel_acc", "depth/loss", "depth/l1"}


def test_reports_show_each_tasks_own_metric():
    rows = [{"label": "p1", "seg/loss": 0.5, "seg/miou": 0.41, "seg/pixel_acc": 0.8, "depth/loss": 2.0,
             "depth/l1": 2.0},
            {"label": "p2", "seg/loss": 0.6, "seg/miou": 0.39, "seg/pixel_acc": 0.7, "depth/loss": 1.5,
             "depth/l1": 1.5}]
    assert shown_metric(rows[0], "seg") == "miou" and shown_metric(rows[0], "depth") == "l1"
    md = front_markdown(rows, ["seg", "depth"], np.array([True, True]))
    assert "| run | seg loss | depth loss | seg miou | depth l1 | Pareto |" in md
    assert "| p1 | 0.5000 | 2.0000 | 0.41 | 2 | yes |" in md
    cls = [{"label": "q", "a/loss": 0.3, "a/acc": 0.9, "a/err": 0.1}]
    assert "| q | 0.3000 | 90.00 | yes |" in front_markdown(cls, ["a"], np.array([True]))


def test_metric_specs_declare_direction_and_format_for_every_task():
    from moomtl.tasks import MaskedL1, MetricSpec, Segmentation, Task, metric_spec, register_metric

    for task in (Classification(), Segmentation(3), MaskedL1()):
        assert task.metrics and task.higher_is_better == {m.name: m.higher_is_better for m in task.metrics}
        for m in task.metrics:
            assert metric_spec(m.name) is m  # declared metrics are what reports look up
    assert metric_spec("acc").format(0.5) == "50.00" and metric_spec("l1").format(0.123456) == "0.1235"
    assert not metric_spec("loss").higher_is_better and not metric_spec("err").higher_is_better

    class Ranking(Task):  # a user's task: its metric is known to reports by being declared
        metrics = (MetricSpec("ndcg_test_only", True, fmt=".3f"),)

    assert metric_spec("ndcg_test_only").format(0.71234) == "0.712" and Ranking.higher_is_better == {
        "ndcg_test_only": True}
    with pytest.raises(ValueError, match="already declared"):
        register_metric(MetricSpec("acc", False))
