"""Isotonic regression by the pool-adjacent-violators algorithm (PAVA).

The Euclidean projection onto the monotone non-increasing cone

.. math::

    \\Pi(v) = \\arg\\min_{x} \\tfrac12 \\|x - v\\|_2^2 \\quad \\text{s.t.}\\quad x_1 \\ge x_2 \\ge \\dots \\ge x_n
    \\;(\\,\\ge 0\\,)

is the core of the OWL / GrOWL proximal operator (Zeng & Figueiredo, 2014; Oswal et al., 2016).
PAVA scans ``v`` once and keeps a stack of pooled blocks; each element is pushed once and merged at
most once, so it runs in O(n). With the extra constraint ``x ≥ 0`` the projection onto the
intersection is the unconstrained solution clipped at zero (the pooled means are a monotone
function of the data, so clipping keeps the order and the KKT conditions of both constraints hold).
"""

from __future__ import annotations

import torch
from torch import Tensor


def project_monotone_nonincreasing(v: Tensor, nonnegative: bool = True) -> Tensor:
    """Project a 1-D tensor onto ``{x : x_1 ≥ … ≥ x_n}`` (and ``x ≥ 0`` when ``nonnegative``).

    The computation runs in float64 on the CPU (the vector is a list of row norms, small next to the
    rows themselves); the result has the dtype and device of ``v``. Not differentiable (the output is
    detached): it is used inside a proximal step.

    >>> project_monotone_nonincreasing(torch.tensor([1.0, 3.0, 2.0, -1.0]))
    tensor([2., 2., 2., 0.])
    >>> project_monotone_nonincreasing(torch.tensor([1.0, 3.0, 2.0, -1.0]), nonnegative=False)
    tensor([ 2.,  2.,  2., -1.])
    """
    if v.ndim != 1:
        raise ValueError(f"expected a 1-D tensor, got shape {tuple(v.shape)}")
    if not v.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got dtype {v.dtype}")
    if v.numel() == 0:
        return v.detach().clone()
    values = v.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("the vector to project contains NaN or infinite entries")
    sums: list[float] = []
    counts: list[int] = []
    for y in values.tolist():
        s, c = y, 1
        # Pool while the previous block's mean is below the new one (a violation of x_{i-1} ≥ x_i).
        # Comparing s_prev / c_prev < s / c as s_prev * c < s * c_prev avoids divisions in the loop.
        while sums and sums[-1] * c < s * counts[-1]:
            s += sums.pop()
            c += counts.pop()
        sums.append(s)
        counts.append(c)
    means = torch.tensor(sums, dtype=torch.float64) / torch.tensor(counts, dtype=torch.float64)
    x = torch.repeat_interleave(means, torch.tensor(counts))
    if nonnegative:
        x = x.clamp_min(0.0)
    return x.to(device=v.device, dtype=v.dtype)
