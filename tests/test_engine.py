"""The trainer as an engine: event filters, replaceable handlers, early stopping, best checkpoint,
optimizer factories, the final re-evaluation only when the weights changed, and the DataLoader path
(any dataset gives exactly the in-memory result; missing labels give no gradient and no NaN)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Dataset

import moomtl.engine.handlers as handlers_mod
import moomtl.train.trainer as trainer_mod
from moomtl.data.base import DataSplits
from moomtl.data.loader import LoaderBatches, TaskDataset, TensorBatches, index_batches
from moomtl.engine import BestCheckpoint, EarlyStopping, Event, EventEngine, monitored
from moomtl.events import TrainState
from moomtl.methods import build_method
from moomtl.models.lenet import hps_lenet
from moomtl.tasks import Classification
from moomtl.train.trainer import Trainer


@pytest.fixture(scope="module")
def small(tiny_multimnist):
    d = tiny_multimnist
    return DataSplits(d.train.subset(192), d.val.subset(64), d.test.subset(64), d.description)


def _trainer(out=None, epochs=2, method="uniform", **kw):
    torch.manual_seed(0)
    kw.setdefault("optimizer_kwargs", {"lr": 0.05, "momentum": 0.9})
    return Trainer(hps_lenet(), build_method(method), epochs=epochs, batch_size=64, seed=1, out_dir=out, **kw)


# --- the engine's own rules --------------------------------------------------------------------------
@pytest.mark.parametrize(("every", "start", "expected"), [(1, 1, [1, 2, 3, 4, 5, 6]), (2, 1, [2, 4, 6]),
                                                          (2, 3, [4, 6]), (1, 5, [5, 6]), (4, 1, [4])])
def test_every_and_start_filters(every, start, expected):
    seen = []
    eng = EventEngine()
    eng.on(Event.STEP_END, lambda s: seen.append(s.step), name="h", every=every, start=start)
    st = TrainState(model=None, optimizer=None)
    for step in range(1, 7):
        st.step = step
        eng.fire(Event.STEP_END, st)
    assert seen == expected


def test_order_remove_replace_and_errors():
    calls = []
    eng = EventEngine()
    eng.on(Event.EPOCH_END, lambda s: calls.append("a"), name="a")
    eng.on(Event.EPOCH_END, lambda s: calls.append("c"), name="c")
    eng.on(Event.EPOCH_END, lambda s: calls.append("b"), name="b", before="c")
    eng.on(Event.EPOCH_END, lambda s: calls.append("d"), name="d", after="c")
    eng.on(Event.STEP_END, lambda s: calls.append("step-a"), name="a")  # same name, other event: allowed
    st = TrainState(model=None, optimizer=None)
    eng.fire(Event.EPOCH_END, st)
    assert calls == ["a", "b", "c", "d"]
    eng.replace("b", lambda s: calls.append("B"))
    assert len(eng.remove("a")) == 2  # from both events
    calls.clear()
    eng.fire(Event.EPOCH_END, st)
    eng.fire(Event.STEP_END, st)
    assert calls == ["B", "c", "d"]
    with pytest.raises(ValueError, match="already attached"):
        eng.on(Event.EPOCH_END, print, name="c")
    with pytest.raises(KeyError, match="no handler named 'zz'"):
        eng.remove("zz")
    with pytest.raises(ValueError, match="every must be"):
        eng.on(Event.EPOCH_END, print, name="x", every=0)


def test_monitored_mean_loss_and_missing_key():
    m = {"val/a/loss": 1.0, "val/b/loss": 3.0, "val/a/acc": 0.5}
    assert monitored(m, "val/loss", ["a", "b"]) == 2.0 and monitored(m, "val/a/acc", ["a", "b"]) == 0.5
    with pytest.raises(KeyError, match="not in this epoch"):
        monitored(m, "test/loss", ["a", "b"])


# --- handlers in a real run --------------------------------------------------------------------------
def test_default_handlers_and_a_filtered_user_handler(small, tmp_path):
    tr = _trainer(tmp_path / "run", epochs=2)
    assert tr.engine.names(Event.EPOCH_END) == ["evaluate", "lr_scheduler", "method", "checkpoint", "metrics_log"]
    steps = []
    tr.engine.on(Event.STEP_END, lambda s: steps.append(s.step), name="every-2nd", every=2)
    tr.engine.remove("checkpoint")
    res = tr.fit(small)
    assert steps == [2, 4, 6]  # 192 / 64 = 3 steps per epoch, 2 epochs
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())) == 2
    assert "val/left/loss" in res.history[-1] and "lr" in res.history[-1]


def test_evaluation_every_second_epoch_and_final_metrics_of_the_returned_model(small, monkeypatch):
    calls = {"n": 0}
    real = handlers_mod.evaluate_splits

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(handlers_mod, "evaluate_splits", counting)
    monkeypatch.setattr(trainer_mod, "evaluate_splits", counting)
    tr = _trainer(epochs=3)
    tr.engine.get("evaluate").every = 2
    res = tr.fit(small)
    assert ["val/left/loss" in row for row in res.history] == [False, True, False]
    # evaluated at epoch 2, then the weights changed in epoch 3: one final evaluation, of the returned model
    assert calls["n"] == 2
    assert res.metrics == real(tr.model, small, small.task_specs(), 1024, "cpu")
    calls["n"] = 0
    res = _trainer(epochs=2).fit(small)  # evaluated after the last epoch, weights unchanged: reused
    assert calls["n"] == 2 and res.metrics["val/left/loss"] == res.history[-1]["val/left/loss"]


def test_early_stopping_stops_and_stays_stopped_on_resume(small, tmp_path):
    out = tmp_path / "es"
    tr = _trainer(out, epochs=6)
    # "max" of a decreasing loss never improves after the first epoch: stop after 1 + patience epochs
    es = EarlyStopping("val/loss", patience=2, mode="max").attach(tr.engine)
    assert tr.engine.names(Event.EPOCH_END).index("early_stopping") < tr.engine.names(Event.EPOCH_END).index(
        "checkpoint")
    res = tr.fit(small)
    assert res.stopped_early and len(res.history) == 3 and es.stopped_epoch == 3
    tr2 = _trainer(out, epochs=8)
    EarlyStopping("val/loss", patience=2, mode="max").attach(tr2.engine)
    res2 = tr2.fit(small, resume=True)
    assert res2.resumed_from == 3 and len(res2.history) == 3 and res2.stopped_early


def test_best_checkpoint_restores_the_best_epoch(small, tmp_path):
    tr = _trainer(tmp_path / "best", epochs=3, optimizer_kwargs={"lr": 0.2, "momentum": 0.9})
    best = BestCheckpoint("val/left/acc", out_dir=tmp_path / "best").attach(tr.engine)
    res = tr.fit(small)
    accs = [row["val/left/acc"] for row in res.history]
    assert best.mode == "max" and best.best == max(accs) and best.best_epoch == accs.index(max(accs)) + 1
    assert res.metrics["val/left/acc"] == pytest.approx(max(accs), abs=1e-12)
    saved = torch.load(tmp_path / "best" / "best_model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in tr.model.state_dict().items())


def test_optimizer_and_scheduler_factories(small):
    made = {}

    def opt_factory(params, lr):
        made["opt"] = torch.optim.Adam(params, lr=lr)
        return made["opt"]

    tr = _trainer(epochs=2, optimizer=opt_factory, optimizer_kwargs={"lr": 1e-3},
                  scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0,
                                                                                   factor=0.5),
                  scheduler_monitor="train/left/loss")  # "max" of a decreasing loss: halves every epoch
    res = tr.fit(small)
    assert isinstance(made["opt"], torch.optim.Adam)
    assert [row["lr"] for row in res.history] == pytest.approx([1e-3, 5e-4])
    with pytest.raises(ValueError, match="not a torch Optimizer"):
        _trainer(epochs=1, optimizer=lambda params: "sgd", optimizer_kwargs={}).fit(small)


# --- the DataLoader path -----------------------------------------------------------------------------
class PlainDataset(Dataset):
    """A user's dataset: items (image, (left, right)) — no moomtl type."""

    def __init__(self, data):
        self.x, self.y = data.images(torch.arange(len(data))), data.targets(torch.arange(len(data)))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {k: v[i] for k, v in self.y.items()}


@pytest.mark.parametrize("workers", [0, 2])
def test_any_dataset_trains_exactly_like_the_in_memory_tensors(small, workers):
    names = small.task_names
    wrapped = DataSplits(TaskDataset(PlainDataset(small.train), names), TaskDataset(PlainDataset(small.val), names),
                         TaskDataset(PlainDataset(small.test), names), "wrapped")
    ref = _trainer(epochs=1, method="mgda")
    ref_res = ref.fit(small)
    via = _trainer(epochs=1, method="mgda", num_workers=workers)
    via_res = via.fit(wrapped)
    for (name, a), b in zip(ref.model.state_dict().items(), via.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert via_res.metrics == pytest.approx(ref_res.metrics, rel=1e-6)


def test_loader_shards_match_the_tensor_shards(small):
    batches = index_batches(len(small.train), 50, torch.Generator().manual_seed(0))

    def shard(idx):  # rank 1 of 2, as Reducer.shard cuts a global batch
        return idx[len(idx) // 2:]

    a = list(TensorBatches(small.train).epoch(batches, shard))
    b = list(LoaderBatches(TaskDataset(PlainDataset(small.train), small.task_names)).epoch(batches, shard))
    assert [n for n, _, _ in a] == [n for n, _, _ in b] == [50, 50, 50, 42]
    for (_, xa, ta), (_, xb, tb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_missing_labels_give_no_gradient_and_no_nan():
    task = Classification(ignore_index=-1)
    out = torch.randn(4, 3, requires_grad=True)
    none = task.loss(out, torch.tensor([-1, -1, -1, -1]))
    none.backward()
    assert float(none) == 0.0 and torch.equal(out.grad, torch.zeros_like(out))
    out.grad = None
    some = task.loss(out, torch.tensor([2, -1, 0, -1]))
    ref = torch.nn.functional.cross_entropy(out[[0, 2]], torch.tensor([2, 0]))  # reference: only labelled rows
    assert torch.allclose(some, ref)
    some.backward()
    assert torch.equal(out.grad[[1, 3]], torch.zeros(2, 3))
    state = task.init_state()
    task.update(state, torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, -1, 1]))
    assert task.compute(state) == {"acc": 0.5}
    assert Classification() == Classification() and repr(Classification()) == "Classification()"
    with pytest.raises(ValueError, match="ignore_index"):
        Classification(ignore_index=1.5)


def test_pareto_checkpoint_keeps_the_non_dominated_epoch_adding_most_hypervolume(small, tmp_path):
    """Reference: the exclusive hypervolume contributions recomputed here from the logged val losses."""
    import numpy as np

    from moomtl.engine import ParetoCheckpoint
    from moomtl.pareto import hypervolume, non_dominated, reference_point

    tr = _trainer(tmp_path / "p", epochs=4, optimizer_kwargs={"lr": 0.3, "momentum": 0.9})
    pc = ParetoCheckpoint(out_dir=tmp_path / "p").attach(tr.engine)
    res = tr.fit(small)
    vals = np.array([[row["val/left/loss"], row["val/right/loss"]] for row in res.history])
    front = np.flatnonzero(non_dominated(vals))
    assert sorted(e for e, _, _ in pc.archive) == sorted(int(i) + 1 for i in front)
    pts = vals[front]
    if len(pts) == 1:
        expected = int(front[0]) + 1
    else:
        ref = reference_point(pts, margin=0.1)
        gains = [hypervolume(pts, ref) - hypervolume(np.delete(pts, i, axis=0), ref) for i in range(len(pts))]
        expected = int(front[int(np.argmax(gains))]) + 1
    assert pc.chosen_epoch == expected
    chosen = vals[expected - 1]
    assert [res.metrics["val/left/loss"], res.metrics["val/right/loss"]] == pytest.approx(chosen.tolist(), rel=1e-6)
    saved = torch.load(tmp_path / "p" / "pareto_model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in tr.model.state_dict().items())


def test_pareto_checkpoint_archive_drops_dominated_epochs_and_round_trips():
    from types import SimpleNamespace

    from moomtl.engine import ParetoCheckpoint

    model = torch.nn.Linear(2, 1)
    pc = ParetoCheckpoint(restore=True)
    state = TrainState(model=model, optimizer=None, splits=SimpleNamespace(task_names=("a", "b")))
    for epoch, (a, b) in enumerate([(3.0, 1.0), (1.0, 3.0), (2.0, 2.0), (1.5, 1.5), (float("nan"), 0.0)]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        state.epoch, state.epoch_metrics = epoch, {"val/a/loss": a, "val/b/loss": b}
        pc(state)
    assert [e for e, _, _ in pc.archive] == [1, 2, 4]  # (2, 2) is dominated by (1.5, 1.5); NaN skipped
    clone = ParetoCheckpoint()
    clone.load_state_dict(pc.state_dict())
    pc.finish(state)
    assert pc.chosen_epoch == 4 and torch.equal(model.weight, torch.full((1, 2), 3.0))  # epoch 4's weights
    assert clone.archive[2][0] == 4 and torch.equal(clone.archive[2][2]["weight"], torch.full((1, 2), 3.0))


@pytest.mark.parametrize(("method", "reduces"), [("uniform", 0), ("linear", 0), ("single_task", 0), ("tch", 1)])
def test_fixed_weightings_skip_the_loss_all_reduce(method, reduces):
    """Under several processes, methods whose weights do not read the losses do not reduce them."""
    from moomtl.autodiff import StepContext

    class CountingReducer:
        world_size, rank = 2, 0

        def __init__(self):
            self.calls = 0

        def sum_(self, t):
            self.calls += 1
            return t * 2  # as if the other rank held the same share

    torch.manual_seed(0)
    model = hps_lenet()
    m = build_method(method) if method != "single_task" else build_method(method, task="left")
    m.setup(model.task_names, model)
    x = torch.randn(4, 1, 28, 28)
    z = model.encode(x)
    out = model.decode(z, x)
    losses = {t: torch.nn.functional.cross_entropy(out[t], torch.tensor([1, 2, 3, 4])) for t in model.task_names}
    red = CountingReducer()
    m.backward(losses, StepContext(model, losses, z, reducer=red))
    assert red.calls == reduces
