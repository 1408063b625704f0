"""Parameter tying: cluster similar rows after the GrOWL search, then retrain with the rows tied.

Similarity of two rows (the authors' choice; 1 for identical rows, 0 for orthogonal ones):

.. math::

    S_{ij} = \\frac{\\langle w_i, w_j \\rangle}{\\max(\\|w_i\\|^2, \\|w_j\\|^2)}

The non-zero rows of each group are clustered by affinity propagation on ``S`` (scikit-learn; the
``preference`` sets how readily a row becomes its own exemplar, higher → more clusters). A
:class:`TyingPlan` records, per group, the zero rows and the cluster of every other row;
:func:`apply_tying` projects the weights onto the plan in place: zero rows are set to zero and each
cluster's rows are replaced by their mean. Zero rows are never clustered (the authors' code clusters
them with the others, so a zero row can be revived by its cluster's mean).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from moomtl.sparsity.grouping import RegularizedGroup


def row_similarity(rows: Tensor) -> Tensor:
    """``S_ij = <w_i, w_j> / max(||w_i||², ||w_j||²)``; two zero rows have similarity 1.

    >>> row_similarity(torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]))
    tensor([[1.0000, 0.5000, 0.0000],
            [0.5000, 1.0000, 0.0000],
            [0.0000, 0.0000, 1.0000]])
    """
    if rows.ndim != 2:
        raise ValueError(f"expected a 2-D matrix of rows, got shape {tuple(rows.shape)}")
    r = rows.detach()
    sq = (r * r).sum(dim=1)
    denom = torch.maximum(sq.unsqueeze(0), sq.unsqueeze(1))
    both_zero = denom == 0
    s = (r @ r.T) / torch.where(both_zero, torch.ones_like(denom), denom)
    return torch.where(both_zero, torch.ones_like(s), s)


def _affinity_propagation():  # noqa: ANN202 - the class is only known once imported
    try:
        from sklearn.cluster import AffinityPropagation
    except ImportError as e:
        raise ImportError(
            "parameter tying clusters rows with scikit-learn's AffinityPropagation; install the `sparse` "
            "extra: pip install 'moomtl[sparse]'"
        ) from e
    return AffinityPropagation


def cluster_rows(
    rows: Tensor,
    preference: float = 0.75,
    *,
    damping: float = 0.5,
    max_iter: int = 500,
    random_state: int = 0,
) -> Tensor:
    """Affinity-propagation labels ``[n]`` (``0..K-1``) of the rows, on the similarity ``S``.

    If affinity propagation does not converge, every row gets its own cluster (no tying) and a
    warning is issued. Needs scikit-learn (the ``sparse`` extra).
    """
    if not 0.5 <= damping < 1:
        raise ValueError(f"damping must be in [0.5, 1), got {damping}")
    n = rows.shape[0]
    if n <= 1:
        return torch.zeros(n, dtype=torch.long)
    AffinityPropagation = _affinity_propagation()
    from sklearn.exceptions import ConvergenceWarning

    s = row_similarity(rows).to(device="cpu", dtype=torch.float64).numpy()
    ap = AffinityPropagation(
        affinity="precomputed", preference=preference, damping=damping, max_iter=max_iter,
        random_state=random_state,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # With two rows (or all similarities equal) scikit-learn decides directly and warns; the
        # decision (one cluster iff the similarity exceeds the preference) is the one we want.
        warnings.filterwarnings("ignore", message="All samples have mutually equal similarities")
        labels = torch.as_tensor(ap.fit_predict(s), dtype=torch.long)
    if bool((labels < 0).any()):
        warnings.warn(
            f"affinity propagation did not converge on {n} rows; leaving them untied "
            "(raise max_iter or damping)", RuntimeWarning, stacklevel=2,
        )
        return torch.arange(n)
    # Renumber 0..K-1 in order of first appearance (deterministic, independent of exemplar order).
    _, first = torch.unique(labels, return_inverse=True)
    return first


@dataclass
class GroupTying:
    """The tying of one group: ``zero_mask[i]`` → row ``i`` is pruned; otherwise it belongs to
    cluster ``labels[i]`` (``labels`` is ``-1`` on zero rows)."""

    group: RegularizedGroup
    zero_mask: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        n = self.group.n_rows
        if self.zero_mask.shape != (n,) or self.labels.shape != (n,):
            raise ValueError(f"{self.group.name}: zero_mask and labels must have shape ({n},)")
        if bool((self.labels[~self.zero_mask] < 0).any()) or bool((self.labels[self.zero_mask] != -1).any()):
            raise ValueError(f"{self.group.name}: labels must be ≥ 0 on kept rows and -1 on zero rows")

    @property
    def n_clusters(self) -> int:
        kept = self.labels[~self.zero_mask]
        return int(kept.max()) + 1 if kept.numel() else 0


@dataclass
class TyingPlan:
    """Per-group pruning masks and clusters, applied by :func:`apply_tying`."""

    entries: list[GroupTying]

    @classmethod
    def from_masks(cls, groups: Sequence[RegularizedGroup]) -> TyingPlan:
        """Keep the current zero rows at zero and tie nothing (each non-zero row its own cluster)."""
        entries = []
        for g in groups:
            zero = g.zero_mask().cpu()
            labels = torch.full((g.n_rows,), -1, dtype=torch.long)
            labels[~zero] = torch.arange(int((~zero).sum()))
            entries.append(GroupTying(g, zero, labels))
        return cls(entries)

    def summary(self) -> dict[str, tuple[int, int, int]]:
        """``{group name: (rows, zero rows, clusters)}``."""
        return {e.group.name: (e.group.n_rows, int(e.zero_mask.sum()), e.n_clusters) for e in self.entries}


def make_tying_plan(
    groups: Sequence[RegularizedGroup],
    preference: float = 0.75,
    *,
    damping: float = 0.5,
    max_iter: int = 500,
    random_state: int = 0,
) -> TyingPlan:
    """Cluster the non-zero rows of every group from the current weights (call after the search)."""
    entries = []
    for g in groups:
        with torch.no_grad():
            rows = g.rows().detach().cpu()
        zero = (rows == 0).all(dim=1)
        labels = torch.full((g.n_rows,), -1, dtype=torch.long)
        labels[~zero] = cluster_rows(
            rows[~zero], preference, damping=damping, max_iter=max_iter, random_state=random_state
        )
        entries.append(GroupTying(g, zero, labels))
    return TyingPlan(entries)


@torch.no_grad()
def apply_tying(plan: TyingPlan) -> None:
    """In place: zero rows of the plan → 0, rows of each cluster → the cluster's mean row.

    >>> from torch import nn
    >>> from moomtl.sparsity.grouping import RegularizedGroup
    >>> lin = nn.Linear(3, 2)
    >>> g = RegularizedGroup("", lin)
    >>> plan = TyingPlan([GroupTying(g, torch.tensor([False, False, True]), torch.tensor([0, 0, -1]))])
    >>> apply_tying(plan)
    >>> bool((g.rows()[0] == g.rows()[1]).all()), bool((g.rows()[2] == 0).all())
    (True, True)
    """
    for e in plan.entries:
        g = e.group
        rows = g.rows().detach().clone()
        zero = e.zero_mask.to(rows.device)
        labels = e.labels.to(rows.device)
        rows[zero] = 0
        kept = ~zero
        if bool(kept.any()):
            lab = labels[kept]
            k = int(lab.max()) + 1
            sums = torch.zeros(k, rows.shape[1], dtype=rows.dtype, device=rows.device).index_add_(0, lab, rows[kept])
            counts = torch.bincount(lab, minlength=k).to(rows.dtype).unsqueeze(1)
            # One mean per cluster, copied to every member: members are then bit-identical.
            rows[kept] = (sums / counts.clamp_min(1))[lab]
        g.set_rows(rows)
