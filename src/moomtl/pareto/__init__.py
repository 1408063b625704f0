"""Pareto-front tools (numpy; minimization everywhere): dominance and non-dominated sorting,
hypervolume, distance indicators, preference vectors and plots.

>>> from moomtl.pareto import hypervolume, non_dominated
>>> pts = [[1.0, 3.0], [2.0, 2.0], [3.0, 3.0]]
>>> non_dominated(pts).tolist(), hypervolume(pts, ref=[4.0, 4.0])
([True, True, False], 5.0)
"""

from moomtl.pareto.dominance import (
    as_points,
    crowding_distance,
    dominates,
    non_dominated,
    non_dominated_sort,
    pareto_rank,
)
from moomtl.pareto.hypervolume import hypervolume, reference_point
from moomtl.pareto.indicators import gd, gd_plus, igd, igd_plus, spacing, spread
from moomtl.pareto.plots import (
    front_table_markdown,
    plot_front_2d,
    plot_fronts_overlay,
    plot_parallel_coordinates,
    save_figure_atomic,
)
from moomtl.pareto.preferences import das_dennis, inward, lattice_for, uniform_simplex

__all__ = [
    "as_points",
    "crowding_distance",
    "das_dennis",
    "dominates",
    "front_table_markdown",
    "gd",
    "gd_plus",
    "hypervolume",
    "igd",
    "igd_plus",
    "inward",
    "lattice_for",
    "non_dominated",
    "non_dominated_sort",
    "pareto_rank",
    "plot_front_2d",
    "plot_fronts_overlay",
    "plot_parallel_coordinates",
    "reference_point",
    "save_figure_atomic",
    "spacing",
    "spread",
    "uniform_simplex",
]
