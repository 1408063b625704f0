"""Input validation and conversions shared by the Gramian weightings (private)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from moomtl.solvers.min_norm import check_gramian_shape, check_gramian_structure

check_shape = check_gramian_shape  # one shape check for the solvers and the weightings


def as_float64_gramian(gramian: Tensor) -> np.ndarray:
    """Validated float64 CPU copy of a Gramian (the one host transfer a weighting makes).

    ``ValueError`` unless ``gramian`` is a square real matrix with finite entries, a non-negative
    diagonal, symmetric and positive semi-definite up to float32 rounding (the tolerances of
    :func:`moomtl.solvers.min_norm.check_gramian_structure`). Returned symmetrized.
    """
    check_shape(gramian)
    m = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(m).all():
        raise ValueError(
            "gramian contains NaN or inf (a loss or gradient is not finite, or J Jᵀ overflowed its dtype)"
        )
    if (m.diagonal() < 0).any():
        raise ValueError(f"gramian has a negative diagonal entry ({m.diagonal().min():.3g}): not a Gramian")
    check_gramian_structure(m)
    return 0.5 * m + 0.5 * m.T


def preference_vector(preference: Sequence[float] | Tensor | None, n_tasks: int) -> np.ndarray:
    """The preference ``p`` as float64 (``1/T`` each when ``None``, TorchJD's default); it must be
    finite, non-negative, of length ``T`` and not all zero."""
    if preference is None:
        return np.full(n_tasks, 1.0 / n_tasks)
    if isinstance(preference, Tensor):
        p = preference.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
    else:
        p = np.asarray([float(v) for v in preference], dtype=np.float64)
    if p.shape != (n_tasks,):
        raise ValueError(f"expected a preference of {n_tasks} entries (one per task), got {p.size}")
    if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"preference must be finite, non-negative and not all zero, got {p.tolist()}")
    return p


def to_like(weights: np.ndarray, like: Tensor) -> Tensor:
    """``weights`` on ``like``'s device, with its dtype (float64 for a non-floating ``like``)."""
    dtype = like.dtype if like.is_floating_point() else torch.float64
    return torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float64)).to(device=like.device, dtype=dtype)
