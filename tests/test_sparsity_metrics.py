import math

import pytest
import torch
from torch import nn

from moomtl.sparsity.grouping import RegularizedGroup
from moomtl.sparsity.metrics import (
    count_unique_rows,
    parameter_sparsity,
    sparsity_report,
    zero_row_mask,
)


def test_zero_rows_are_exact_zeros() -> None:
    rows = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.0, 1e-30], [-0.0, 0.0]])
    # [1, −1] sums to 0 but is not a zero row (the authors' `sum == 0` test would count it).
    assert zero_row_mask(rows).tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="2-D"):
        zero_row_mask(torch.zeros(3))


def test_unique_rows() -> None:
    rows = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, 0.0], [3.0, -0.0], [0.0, 0.0]])
    assert count_unique_rows(rows) == 2
    assert count_unique_rows(rows, nonzero_only=False) == 3
    assert count_unique_rows(torch.zeros(3, 2)) == 0
    assert count_unique_rows(torch.zeros(0, 2)) == 0


def model_with_known_rows() -> tuple[nn.Module, list[RegularizedGroup]]:
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, -1.0, 0.0])
    lin = nn.Linear(4, 3)  # rows (input features): a, a, 0, b
    conv = nn.Conv2d(2, 1, 1, bias=False)  # rows (input channels): [5], [5]
    with torch.no_grad():
        lin.weight.copy_(torch.stack([a, a, torch.zeros(3), b]).T)
        lin.bias.copy_(torch.tensor([1.0, 0.0, 1.0]))
        conv.weight.copy_(torch.tensor([5.0, 5.0]).reshape(1, 2, 1, 1))
    model = nn.Sequential(lin, nn.ReLU(), nn.Unflatten(1, (3, 1, 1)), nn.Identity())
    model.extra = conv  # not used in forward; only its weight matters here
    return model, [RegularizedGroup("0", lin), RegularizedGroup("extra", conv)]


def test_report_on_hand_made_matrices() -> None:
    model, groups = model_with_known_rows()
    r = sparsity_report(model, groups)
    # Rows: a, a, 0, b | 5, 5 → N = 6, Z = 1, U = 3 (a, b, [5]).
    assert (r.total_rows, r.zero_rows, r.unique_rows) == (6, 1, 3)
    assert r.group_sparsity == pytest.approx(100 / 6)
    assert r.compression_rate == pytest.approx(6 / 3)
    assert r.parameter_sharing == pytest.approx(5 / 3)
    # ≥2-D weights: 12 + 2 scalars, zeros: row 0 (3) + the two zeros of b + a has none = 5.
    assert r.parameter_sparsity == pytest.approx(100 * 5 / 14)
    assert r.dense_parameters == 12 + 3 + 2
    # Stored: a and b (3 scalars each) of the linear, [5] of the conv; the rest of the 14 weights go.
    assert r.effective_parameters == 17 - (4 - 2) * 3 - (2 - 1) * 1
    assert r.per_group["0"].zero_rows == 1 and r.per_group["extra"].unique_nonzero_rows == 1
    # The authors' count: the zero row of the linear is one more unique row.
    paper = sparsity_report(model, groups, zero_row_is_unique=True)
    assert paper.unique_rows == 4
    assert paper.compression_rate == pytest.approx(6 / 4) and paper.parameter_sharing == pytest.approx(5 / 4)
    d = r.as_dict()
    assert d["sparsity/group_sparsity"] == pytest.approx(100 / 6) and "sparsity/per_group" not in d


def test_report_defaults_to_all_layers() -> None:
    model, groups = model_with_known_rows()
    r_all = sparsity_report(model)
    assert r_all.total_rows == 6 and r_all.unique_rows == 3
    only_linear = sparsity_report(model, groups[:1])
    assert (only_linear.total_rows, only_linear.zero_rows, only_linear.unique_rows) == (4, 1, 2)
    assert only_linear.compression_rate == pytest.approx(2.0) and only_linear.parameter_sharing == pytest.approx(1.5)


def test_all_zero_and_dense_cases() -> None:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.zero_()
    r = sparsity_report(lin)
    assert r.group_sparsity == 100.0 and r.parameter_sparsity == 100.0
    assert math.isinf(r.compression_rate) and math.isnan(r.parameter_sharing)
    assert r.effective_parameters == 2  # the bias
    torch.manual_seed(0)
    dense = nn.Linear(5, 4)
    r = sparsity_report(dense)
    assert (r.group_sparsity, r.compression_rate, r.parameter_sharing) == (0.0, 1.0, 1.0)
    assert r.effective_parameters == r.dense_parameters == 24


def test_parameter_sparsity_ignores_vectors() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
        model[0].bias.zero_()
        model[1].weight.zero_()
    assert parameter_sparsity(model) == 50.0
    assert parameter_sparsity(nn.BatchNorm1d(3)) == 0.0


def test_duplicate_groups_are_rejected() -> None:
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="two groups"):
        sparsity_report(lin, [RegularizedGroup("", lin), RegularizedGroup("", lin, by="output")])
