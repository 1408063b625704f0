"""Per-task Jacobians and Gramians with respect to shared parameters or any tensors (the shared
representation, a chosen layer), and the per-step context methods read them from."""

from moomtl.autodiff.context import StepContext, Wrt
from moomtl.autodiff.jacobian import batched_jacobian, branch_jacobian, task_jacobian

__all__ = ["StepContext", "Wrt", "batched_jacobian", "branch_jacobian", "task_jacobian"]
