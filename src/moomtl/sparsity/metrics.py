"""Sparsity and sharing metrics of a (GrOWL-regularized, possibly tied) model.

Over the rows of the regularized groups (``N`` rows in total, ``Z`` of them exactly zero, ``U``
distinct non-zero rows):

- group-level sparsity ``= 100 · Z / N`` (%);
- compression rate ``= N / U`` (how many rows one stored row stands for);
- parameter sharing ``= (N − Z) / U`` (how many non-zero rows share one stored row);

and, over all ≥ 2-D parameters of the model, parameter-level sparsity = % of scalars that are zero.
Dense parameters count every scalar of the model; effective parameters drop the scalars of zero rows
and of rows that duplicate another row of the same layer (those that tying makes redundant).

The authors' code counts rows with ``np.unique`` over all rows, so a layer with zero rows has one
more "unique" row (the zero row), and it detects zero rows by ``sum(row) == 0`` (which also catches
rows such as ``[1, −1]``). We test exact zeros; ``zero_row_is_unique=True`` reproduces their count
of unique rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from moomtl.sparsity.grouping import RegularizedGroup, regularized_groups


def zero_row_mask(rows: Tensor) -> Tensor:
    """Boolean ``[n]``: rows that are exactly zero.

    >>> zero_row_mask(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
    tensor([ True, False])
    """
    if rows.ndim != 2:
        raise ValueError(f"expected a 2-D matrix of rows, got shape {tuple(rows.shape)}")
    return (rows == 0).all(dim=1)


def count_unique_rows(rows: Tensor, nonzero_only: bool = True) -> int:
    """Number of distinct rows (exact equality), ignoring zero rows when ``nonzero_only``.

    >>> count_unique_rows(torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]))
    2
    """
    r = rows.detach()
    if nonzero_only:
        r = r[~zero_row_mask(r)]
    if r.shape[0] == 0:
        return 0
    # +0.0 turns −0.0 into 0.0 so that rows equal as numbers are counted once.
    return int(torch.unique(r + 0.0, dim=0).shape[0])


@dataclass(frozen=True)
class GroupStats:
    rows: int
    zero_rows: int
    unique_nonzero_rows: int
    row_size: int


@dataclass(frozen=True)
class SparsityReport:
    """Metrics of :func:`sparsity_report`; ``as_dict()`` gives flat floats for logging."""

    group_sparsity: float  # % zero rows over the groups
    parameter_sparsity: float  # % zero scalars over all ≥2-D parameters
    compression_rate: float  # total rows / unique rows (inf when every row is zero)
    parameter_sharing: float  # non-zero rows / unique rows (nan when every row is zero)
    total_rows: int
    zero_rows: int
    unique_rows: int
    dense_parameters: int
    effective_parameters: int
    per_group: dict[str, GroupStats] = field(default_factory=dict)

    def as_dict(self, prefix: str = "sparsity/") -> dict[str, float]:
        d = asdict(self)
        d.pop("per_group")
        return {prefix + k: float(v) for k, v in d.items()}


def group_stats(rows: Tensor) -> GroupStats:
    """Row counts of one matrix of groups."""
    z = int(zero_row_mask(rows).sum())
    return GroupStats(int(rows.shape[0]), z, count_unique_rows(rows), int(rows[0].numel()) if len(rows) else 0)


def parameter_sparsity(model: nn.Module) -> float:
    """% of zero scalars over all parameters with ≥ 2 dimensions (the weights, not biases or norms)."""
    total = zeros = 0
    for p in model.parameters():
        if p.ndim >= 2:
            total += p.numel()
            zeros += int((p.detach() == 0).sum())
    return 100.0 * zeros / total if total else 0.0


@torch.no_grad()
def sparsity_report(
    model: nn.Module,
    groups: Sequence[RegularizedGroup] | None = None,
    *,
    zero_row_is_unique: bool = False,
) -> SparsityReport:
    """Sparsity, compression and sharing of ``model`` over ``groups``.

    ``groups=None`` uses every Linear/conv layer of the model grouped by input feature/channel (the
    authors' convention of measuring over all ≥ 2-D weights). ``zero_row_is_unique=True`` counts the
    zero row of each layer that has one as a unique row, as the authors' code does.

    >>> lin = nn.Linear(3, 2)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]]))
    >>> r = sparsity_report(lin)  # rows (input features): (1, 2), (1, 2), (0, 0)
    >>> round(r.group_sparsity, 2), r.compression_rate, r.parameter_sharing
    (33.33, 3.0, 2.0)
    """
    if groups is None:
        groups = regularized_groups(model, include="*", skip_input_layers=False)
    seen: set[int] = set()
    per_group: dict[str, GroupStats] = {}
    total = zero = unique = saved = 0
    for g in groups:
        if id(g.weight) in seen:
            raise ValueError(f"the weight of {g.name!r} appears in two groups; metrics would count it twice")
        seen.add(id(g.weight))
        s = group_stats(g.rows().detach())
        per_group[g.name] = s
        total += s.rows
        zero += s.zero_rows
        unique += s.unique_nonzero_rows + (1 if zero_row_is_unique and s.zero_rows else 0)
        # Stored rows are the unique non-zero ones; zero rows and duplicates cost nothing.
        saved += (s.rows - s.unique_nonzero_rows) * s.row_size
    dense = sum(p.numel() for p in model.parameters())
    return SparsityReport(
        group_sparsity=100.0 * zero / total if total else 0.0,
        parameter_sparsity=parameter_sparsity(model),
        compression_rate=total / unique if unique else math.inf,
        parameter_sharing=(total - zero) / unique if unique else math.nan,
        total_rows=total,
        zero_rows=zero,
        unique_rows=unique,
        dense_parameters=dense,
        effective_parameters=dense - saved,
        per_group=per_group,
    )
