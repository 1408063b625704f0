"""Sparse multi-task learning: GrOWL penalty and prox, layer grouping, parameter tying, metrics.

Typical use (the MDMTN recipe): select the groups, train with :class:`GrOWLProx` as a callback (and/or
:func:`growl_objective` as a sparsity objective), build a :class:`TyingPlan` from the sparse weights,
retrain with :class:`TyingEnforcer`, report :func:`sparsity_report` and export :func:`compress_model`.
scikit-learn (the ``sparse`` extra) is needed only when clustering rows for tying.
"""

from moomtl.sparsity.callbacks import GrOWLProx, TyingEnforcer, cap_zero_rows
from moomtl.sparsity.grouping import (
    InputSelect,
    RegularizedGroup,
    compress_model,
    regularized_groups,
    rows_to_weight,
    select_modules,
    weight_to_rows,
)
from moomtl.sparsity.growl import (
    group_lasso_prox,
    growl_objective,
    growl_penalty,
    growl_prox,
    growl_weights,
    l1_prox,
    validate_theta,
)
from moomtl.sparsity.metrics import SparsityReport, count_unique_rows, parameter_sparsity, sparsity_report
from moomtl.sparsity.tying import (
    GroupTying,
    TyingPlan,
    apply_tying,
    cluster_rows,
    make_tying_plan,
    row_similarity,
)

__all__ = [
    "GrOWLProx",
    "GroupTying",
    "InputSelect",
    "RegularizedGroup",
    "SparsityReport",
    "TyingEnforcer",
    "TyingPlan",
    "apply_tying",
    "cap_zero_rows",
    "cluster_rows",
    "compress_model",
    "count_unique_rows",
    "group_lasso_prox",
    "growl_objective",
    "growl_penalty",
    "growl_prox",
    "growl_weights",
    "l1_prox",
    "make_tying_plan",
    "parameter_sparsity",
    "regularized_groups",
    "row_similarity",
    "rows_to_weight",
    "select_modules",
    "sparsity_report",
    "validate_theta",
    "weight_to_rows",
]
