"""Scalarization functions: map a loss vector ``f`` (shape ``[..., T]``) to a scalar per row.

Pure, differentiable torch functions (no ``nn.Module``, no training loop). ``pref`` is a preference
vector λ (non-negative; usually on the simplex), ``ideal`` a reference point z (an ideal/utopia point,
component-wise below the attainable losses). Both broadcast against ``f`` on the last dimension, so a
``[N, T]`` batch of loss vectors (e.g. a candidate front) is scalarized in one call.

Relation to LibMOON (``libmoon/util/scalarization.py``), checked against its source:

- ``tche`` there returns the *unweighted* ``f_a`` at ``a = argmax_i λ_i (f_i − z_i)``; here
  :func:`tchebycheff` returns ``λ_a (f_a − z_a)`` (the textbook value; gradients differ by λ_a > 0).
- LibMOON's ``mtche`` is ``max_i (f_i − z_i)/λ_i`` (inverse weights, MOEA/D usage); our
  :func:`modified_tchebycheff` is the *modified weighted Chebyshev* (MWC) of Hotegni et al. (seed 000).
- LibMOON's ``aasf`` is a smoothed ``max_i (f_i − z_i)/λ_i`` plus ``ρ Σ λ_i (f_i − z_i)``; our
  :func:`augmented_tchebycheff` is the classical augmented Tchebycheff (Steuer & Choo, 1983).
- LibMOON's ``pbi`` ignores ``z``; :func:`pbi` measures distances from ``z``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _shift(f: Tensor, pref: Tensor, ideal: Tensor | float | None) -> tuple[Tensor, Tensor]:
    """Validate shapes and return ``(f − z, λ)`` as tensors of ``f``'s dtype/device."""
    if f.ndim == 0:
        raise ValueError("f must have at least one dimension (the objectives on the last one)")
    pref = torch.as_tensor(pref, dtype=f.dtype, device=f.device)
    if pref.shape[-1:] != f.shape[-1:]:
        raise ValueError(f"pref has {tuple(pref.shape)} entries for {f.shape[-1]} objectives")
    z = torch.zeros((), dtype=f.dtype, device=f.device) if ideal is None else ideal
    z = torch.as_tensor(z, dtype=f.dtype, device=f.device)
    if z.ndim > 0 and z.shape[-1] not in (1, f.shape[-1]):
        raise ValueError(f"ideal has {z.shape[-1]} entries for {f.shape[-1]} objectives")
    return f - z, pref


def linear(f: Tensor, pref: Tensor) -> Tensor:
    """Linear scalarization (weighted sum).

    .. math:: g^{\\mathrm{LS}}(f; λ) = \\sum_i λ_i f_i

    >>> linear(torch.tensor([1.0, 3.0]), torch.tensor([0.25, 0.75])).item()
    2.5
    """
    d, pref = _shift(f, pref, None)
    return (pref * d).sum(-1)


def tchebycheff(f: Tensor, pref: Tensor, ideal: Tensor | float | None = None) -> Tensor:
    """Weighted Tchebycheff (Chebyshev) scalarization.

    .. math:: g^{\\mathrm{TCH}}(f; λ, z) = \\max_i λ_i (f_i − z_i)

    Every weakly Pareto-optimal point minimizes it for some λ (Choo & Atkins, 1983), including points
    on non-convex parts of a front that linear scalarization cannot reach. At ties the gradient is
    split evenly between the maximizing objectives (a valid subgradient).

    >>> f = torch.tensor([1.0, 3.0], requires_grad=True)
    >>> v = tchebycheff(f, torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]))
    >>> v.item(), torch.autograd.grad(v, f)[0].tolist()
    (1.0, [0.0, 0.5])
    """
    d, pref = _shift(f, pref, ideal)
    return (pref * d).amax(-1)


def smooth_tchebycheff(
    f: Tensor, pref: Tensor, ideal: Tensor | float | None = None, mu: float = 0.1
) -> Tensor:
    """Smooth Tchebycheff scalarization (Lin et al., ICML 2024), computed with a stable logsumexp.

    .. math:: g^{\\mathrm{STCH}}_μ(f; λ, z) = μ \\log \\sum_i \\exp\\big(λ_i (f_i − z_i) / μ\\big)

    It is smooth and satisfies
    :math:`g^{\\mathrm{TCH}} ≤ g^{\\mathrm{STCH}}_μ ≤ g^{\\mathrm{TCH}} + μ \\log T`,
    so it tends to Tchebycheff as μ → 0. Its gradient w.r.t. ``f`` is ``λ ∘ softmax(λ(f − z)/μ)``.

    >>> v = smooth_tchebycheff(torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]), mu=1.0)
    >>> round(v.item(), 6) == round(0.5 + math.log(2), 6)
    True
    """
    if not mu > 0:
        raise ValueError(f"mu must be > 0, got {mu}")
    d, pref = _shift(f, pref, ideal)
    return mu * torch.logsumexp(pref * d / mu, dim=-1)


def pbi(f: Tensor, pref: Tensor, ideal: Tensor | float | None = None, theta: float = 5.0) -> Tensor:
    """Penalty-based boundary intersection (Zhang & Li, MOEA/D, 2007).

    .. math::
        d_1 = \\frac{(f − z)^\\top λ}{\\|λ\\|}, \\quad
        d_2 = \\Big\\| f − z − d_1 \\frac{λ}{\\|λ\\|} \\Big\\|, \\quad
        g^{\\mathrm{PBI}}(f; λ, z) = d_1 + θ d_2

    ``d1`` is the progress along the preference ray from ``z``, ``d2`` the distance to that ray. PBI
    is not a Pareto-compliant scalarization (its minimizers need not be Pareto optimal for small θ).
    ``theta=5`` is MOEA/D's default (LibMOON uses 1).

    >>> v = pbi(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0]), theta=2.0)
    >>> round(v.item(), 6) == round(4 / math.sqrt(2) + 2 * math.sqrt(2), 6)
    True
    """
    if not theta >= 0:
        raise ValueError(f"theta must be >= 0, got {theta}")
    d, pref = _shift(f, pref, ideal)
    norm = torch.linalg.vector_norm(pref, dim=-1, keepdim=True)
    if (norm == 0).any():
        raise ValueError("pbi needs a non-zero preference vector")
    u = pref / norm
    d1 = (d * u).sum(-1)
    d2 = torch.linalg.vector_norm(d - d1.unsqueeze(-1) * u, dim=-1)
    return d1 + theta * d2


def augmented_tchebycheff(
    f: Tensor, pref: Tensor, ideal: Tensor | float | None = None, rho: float = 0.01
) -> Tensor:
    """Augmented Tchebycheff scalarization (Steuer & Choo, 1983).

    .. math:: g^{\\mathrm{ATCH}}(f; λ, z) = \\max_i λ_i (f_i − z_i) + ρ \\sum_i (f_i − z_i)

    The small ``ρ > 0`` term removes weakly (but not properly) Pareto-optimal minimizers. LibMOON's
    closest function, ``aasf``, uses a smoothed max with inverse weights and a λ-weighted sum instead.

    >>> round(augmented_tchebycheff(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5]), rho=0.1).item(), 6)
    1.9
    """
    if not rho >= 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    d, pref = _shift(f, pref, ideal)
    return (pref * d).amax(-1) + rho * d.sum(-1)


def modified_tchebycheff(
    f: Tensor, pref: Tensor, ideal: Tensor | float | None = None, eps: float = 1e-4
) -> Tensor:
    """Modified weighted Chebyshev (MWC) scalarization of Hotegni et al. (seed 000, MDMTN).

    .. math:: g^{\\mathrm{MWC}}(f; λ, z) = \\max_i λ_i \\Big[(f_i − z_i) + ε \\sum_j (f_j − z_j)\\Big]

    The ε-augmentation *inside* the weighted max makes every minimizer Pareto optimal, not only
    weakly. (MDMTN solves it in epigraph form ``min t s.t. λ_i[...] ≤ t``; the value is the same.)

    >>> round(modified_tchebycheff(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5]), eps=0.1).item(), 6)
    1.7
    """
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    d, pref = _shift(f, pref, ideal)
    return (pref * (d + eps * d.sum(-1, keepdim=True))).amax(-1)


def stch_gap_bound(n_objectives: int, mu: float) -> float:
    """Upper bound ``μ log T`` on ``STCH − TCH`` (used to choose μ for a target accuracy).

    >>> round(stch_gap_bound(2, 0.1), 6)
    0.069315
    """
    return mu * math.log(n_objectives)


__all__ = [
    "augmented_tchebycheff",
    "linear",
    "modified_tchebycheff",
    "pbi",
    "smooth_tchebycheff",
    "stch_gap_bound",
    "tchebycheff",
]
