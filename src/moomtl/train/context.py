"""Moved to :mod:`moomtl.autodiff` (methods no longer import the training package); these names stay
importable from here."""

from moomtl.autodiff.context import StepContext, Wrt
from moomtl.autodiff.jacobian import (
           _heads_are_disjoint,
           _rows_of_losses,
           batched_jacobian,
           branch_jacobian,
           task_jacobian,
)

__all__ = ["StepContext", "Wrt", "_heads_are_disjoint", "_rows_of_losses", "batched_jacobian", "branch_jacobian",
           "task_jacobian"]
