import subprocess
import sys
import warnings

import pytest
import torch
from torch import Tensor, nn

from moomtl.sparsity.callbacks import GrOWLProx, TyingEnforcer
from moomtl.sparsity.grouping import RegularizedGroup, compress_model, regularized_groups
from moomtl.sparsity.metrics import count_unique_rows, sparsity_report
from moomtl.sparsity.tying import (
    GroupTying,
    TyingPlan,
    apply_tying,
    cluster_rows,
    make_tying_plan,
    row_similarity,
)
from moomtl.train.callbacks import TrainState


def clustered_rows(seed: int = 0, sizes: tuple[int, ...] = (4, 3, 5), dim: int = 6, noise: float = 0.01):
    """Rows around ``len(sizes)`` orthogonal directions, shuffled; returns rows and true labels."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0][: len(sizes)]
    labels = torch.cat([torch.full((s,), k) for k, s in enumerate(sizes)])
    rows = centers[labels] * 2.0 + noise * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    perm = torch.randperm(len(labels), generator=g)
    return rows[perm], labels[perm]


def same_partition(a: Tensor, b: Tensor) -> bool:
    return bool(((a.unsqueeze(0) == a.unsqueeze(1)) == (b.unsqueeze(0) == b.unsqueeze(1))).all())


def test_similarity_hand_case_and_properties() -> None:
    rows = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
    S = row_similarity(rows)
    expected = torch.tensor([
        [1.0, 0.5, 0.0, -1.0, 0.0],
        [0.5, 1.0, 0.0, -0.5, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0],
        [-1.0, -0.5, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ])
    torch.testing.assert_close(S, expected)
    R = torch.randn(10, 4, dtype=torch.float64)
    S = row_similarity(R)
    torch.testing.assert_close(S, S.T)
    assert bool((S.abs() <= 1 + 1e-12).all())
    torch.testing.assert_close(S.diagonal(), torch.ones(10, dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1])
def test_affinity_propagation_recovers_clear_clusters(seed: int) -> None:
    rows, truth = clustered_rows(seed)
    labels = cluster_rows(rows, preference=0.75)
    assert same_partition(labels, truth)
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    assert torch.equal(cluster_rows(rows, preference=0.75), labels)  # deterministic
    assert cluster_rows(rows[:1]).tolist() == [0] and cluster_rows(rows[:0]).numel() == 0


def test_non_convergence_leaves_rows_untied() -> None:
    rows, _ = clustered_rows(0)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        labels = cluster_rows(rows, max_iter=1)
    assert torch.equal(labels, torch.arange(len(rows)))


def make_group(rows: Tensor) -> RegularizedGroup:
    lin = nn.Linear(rows.shape[1], rows.shape[0], bias=False).double()
    g = RegularizedGroup("lin", lin, by="output")
    g.set_rows(rows)
    return g


def test_plan_and_apply() -> None:
    rows, truth = clustered_rows(2)
    rows[[0, 5]] = 0  # pruned rows
    group = make_group(rows)
    plan = make_tying_plan([group])
    (entry,) = plan.entries
    assert entry.zero_mask.tolist() == [i in (0, 5) for i in range(len(rows))]
    assert bool((entry.labels[entry.zero_mask] == -1).all())
    assert same_partition(entry.labels[~entry.zero_mask], truth[~entry.zero_mask])
    assert plan.summary() == {"lin": (12, 2, 3)}
    before = group.rows().detach().clone()
    apply_tying(plan)
    after = group.rows().detach()
    assert bool((after[entry.zero_mask] == 0).all())
    for k in range(entry.n_clusters):
        members = (entry.labels == k).nonzero().flatten()
        assert bool((after[members] == after[members[0]]).all())  # bit-identical
        torch.testing.assert_close(after[members[0]], before[members].mean(0))
    assert count_unique_rows(after) == 3
    snapshot = after.clone()
    apply_tying(plan)
    assert torch.equal(group.rows().detach(), snapshot)  # a projection: idempotent


def test_zero_rows_are_not_revived() -> None:
    # A zero row that the plan marks as pruned stays zero even if the training step moved it, and
    # a revived row does not join any cluster's mean.
    group = make_group(torch.tensor([[1.0, 0.0], [1.1, 0.0], [0.0, 0.0]], dtype=torch.float64))
    plan = make_tying_plan([group])
    rows = group.rows().detach().clone()
    rows[2] = torch.tensor([5.0, 5.0])
    group.set_rows(rows)
    apply_tying(plan)
    torch.testing.assert_close(
        group.rows().detach(), torch.tensor([[1.05, 0.0], [1.05, 0.0], [0.0, 0.0]], dtype=torch.float64)
    )


def test_from_masks_only_keeps_zeros() -> None:
    rows = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    group = make_group(rows)
    plan = TyingPlan.from_masks([group])
    moved = rows + 0.5
    group.set_rows(moved)
    apply_tying(plan)
    expected = moved.clone()
    expected[1] = 0
    torch.testing.assert_close(group.rows().detach(), expected)


def test_group_tying_validation() -> None:
    g = make_group(torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        GroupTying(g, torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="-1 on zero rows"):
        GroupTying(g, torch.tensor([True, False, False]), torch.tensor([0, 0, 1]))


def test_missing_scikit_learn_gives_helpful_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    rows, _ = clustered_rows(0)
    with pytest.raises(ImportError, match=r"moomtl\[sparse\]"):
        cluster_rows(rows)


def test_package_import_does_not_import_scikit_learn() -> None:
    code = "import sys, moomtl.sparsity; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


@pytest.mark.parametrize("every", ["step", "epoch"])
def test_search_tie_retrain(every: str) -> None:
    # Search with the prox, cluster, retrain with ties enforced (momentum moves tied rows apart
    # within a step; the projection brings them back), then export.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 12, generator=g)
    y = x[:, :3].sum(1, keepdim=True).repeat(1, 2)  # only 3 of 12 input features matter
    model = Net()
    groups = regularized_groups(model, skip_input_layers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    prox = GrOWLProx(groups, "spike", strength=0.5)
    state = TrainState(model=model, optimizer=opt)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        prox.on_step_end(state)
    report = sparsity_report(model, groups)
    assert report.group_sparsity > 20.0
    assert not bool(groups[0].zero_mask()[:3].any())  # the relevant input features survive
    assert bool(groups[0].zero_mask()[3:].any())
    plan = make_tying_plan(groups, preference=0.75)
    enforcer = TyingEnforcer(plan, every=every)
    enforcer.on_train_begin(state)
    for _epoch in range(3):
        for _ in range(5):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            enforcer.on_step_end(state)
            if every == "step":
                check_tied(plan)
        enforcer.on_epoch_end(state)
        check_tied(plan)
    enforcer.on_train_end(state)
    tied = sparsity_report(model, groups)
    assert tied.zero_rows == report.zero_rows
    assert tied.unique_rows == sum(e.n_clusters for e in plan.entries)
    model.eval()
    small = compress_model(model, groups)
    torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in small.parameters()) < tied.dense_parameters


def check_tied(plan: TyingPlan) -> None:
    for e in plan.entries:
        rows = e.group.rows().detach()
        assert bool((rows[e.zero_mask] == 0).all())
        for k in range(e.n_clusters):
            members = (e.labels == k).nonzero().flatten()
            assert bool((rows[members] == rows[members[0]]).all())


def test_enforcer_validation() -> None:
    with pytest.raises(ValueError, match="every"):
        TyingEnforcer(TyingPlan([]), every="batch")  # type: ignore[arg-type]


def test_no_warnings_on_clear_clusters() -> None:
    rows, _ = clustered_rows(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cluster_rows(rows)


def test_callbacks_in_the_trainer() -> None:
    # The same recipe through the real trainer: prox during the search, ties during retraining.
    from moomtl.data.base import DataSplits, MultiTaskTensors
    from moomtl.methods.linear import Uniform
    from moomtl.models.base import HardParameterSharing
    from moomtl.train.trainer import Trainer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 1, 4, 4, generator=g)
    flat = x.flatten(1)
    y = torch.stack([(flat[:, 0] > 0).long(), (flat[:, 1] + flat[:, 2] > 0).long()], dim=1)
    data = MultiTaskTensors(x, y, ("a", "b"))
    splits = DataSplits(data, data.subset(128), data.subset(128), "synthetic")
    torch.manual_seed(0)
    model = HardParameterSharing(
        nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU()),
        {"a": nn.Linear(8, 2), "b": nn.Linear(8, 2)},
    )
    groups = regularized_groups(model, skip_input_layers=False)
    assert [grp.name for grp in groups] == ["encoder.1", "encoder.3"]
    opt_kw = {"lr": 0.05, "momentum": 0.9}
    Trainer(model, Uniform(), optimizer_kwargs=opt_kw, epochs=10, batch_size=32,
            callbacks=[GrOWLProx(groups, "spike", strength=0.5)]).fit(splits)
    search = sparsity_report(model, groups)
    assert search.zero_rows > 0
    plan = make_tying_plan(groups)
    result = Trainer(model, Uniform(), optimizer_kwargs=opt_kw, epochs=2, batch_size=32,
                     callbacks=[TyingEnforcer(plan, every="epoch")]).fit(splits)
    check_tied(plan)
    assert sparsity_report(model, groups).zero_rows == search.zero_rows
    assert result.final["test/a/acc"] > 0.9 and result.final["test/b/acc"] > 0.9
