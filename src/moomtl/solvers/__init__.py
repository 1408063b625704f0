"""Pure tensor math shared by the methods (no ``nn.Module``, no training loop).

* :mod:`~moomtl.solvers.min_norm`: MGDA's min-norm point of the convex hull of task gradients.
* :mod:`~moomtl.solvers.simplex`: Euclidean projection onto the simplex, exponentiated-gradient step.

Other modules of this package (scalarizations, isotonic regression, ...) are imported by name.
"""

from moomtl.solvers.min_norm import min_norm, min_norm_direction, min_norm_two, min_norm_value
from moomtl.solvers.simplex import exponentiated_gradient_step, project_simplex

__all__ = [
    "exponentiated_gradient_step",
    "min_norm",
    "min_norm_direction",
    "min_norm_two",
    "min_norm_value",
    "project_simplex",
]
