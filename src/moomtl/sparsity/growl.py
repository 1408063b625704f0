"""GrOWL: the group ordered weighted ℓ1 penalty, its proximal operator and weight sequences.

For a matrix ``W`` whose rows ``w_i`` are the groups (see :mod:`moomtl.sparsity.grouping`),

.. math::

    \\Omega_\\theta(W) = \\sum_{i=1}^{n} \\theta_i \\, \\|w_{[i]}\\|_2, \\qquad
    \\|w_{[1]}\\| \\ge \\|w_{[2]}\\| \\ge \\dots \\ge \\|w_{[n]}\\|,
    \\qquad \\theta_1 \\ge \\theta_2 \\ge \\dots \\ge \\theta_n \\ge 0,

i.e. the OWL norm (Zeng & Figueiredo, 2014) of the vector of row norms (Oswal et al., 2016). A large
``θ_1`` drives whole rows to zero (sparsity); the spread of ``θ`` makes rows of correlated inputs
equal (grouping), which parameter tying (:mod:`moomtl.sparsity.tying`) then exploits.

Proximal operator (Oswal et al., 2016, Thm. 1):

.. math::

    \\operatorname{prox}_{s\\Omega_\\theta}(V)_i = \\frac{u_i}{\\|v_i\\|}\\, v_i, \\qquad
    u = \\operatorname{prox}_{s\\,\\mathrm{OWL}_\\theta}(\\|v_1\\|, \\dots, \\|v_n\\|),

and the OWL prox of a non-negative vector ``z`` sorted decreasingly is the projection of ``z − sθ``
onto the non-increasing non-negative cone (:func:`~moomtl.solvers.isotonic.project_monotone_nonincreasing`),
undone from the sorting permutation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

import torch
from torch import Tensor

from moomtl.solvers.isotonic import project_monotone_nonincreasing

WeightKind = Literal["spike", "linear", "oscar", "ramp"]
WEIGHT_KINDS: tuple[str, ...] = ("spike", "linear", "oscar", "ramp")


class HasRows(Protocol):
    """Anything that exposes its groups as the rows of a matrix (e.g. a ``RegularizedGroup``)."""

    def rows(self) -> Tensor: ...


# --- weight sequences -------------------------------------------------------------------------------


def growl_weights(
    n: int,
    kind: WeightKind = "spike",
    beta1: float = 0.8,
    beta2: float = 0.2,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """The GrOWL weight sequence ``θ ∈ R^n`` (non-increasing, ≥ 0), with ``i = 1, …, n``:

    - ``"spike"``: ``θ_1 = β1 + β2``, ``θ_i = β2`` for ``i ≥ 2`` (group lasso ``β2`` plus an extra
      ``β1`` on the largest row: the authors' default).
    - ``"linear"``: ``θ_i = β1 + β2 (n − i) / n`` (the authors' "linear", an OSCAR-like ramp whose
      spread ``β2`` does not grow with ``n``).
    - ``"oscar"``: ``θ_i = β1 + β2 (n − i)`` (OSCAR written as an OWL norm; Bondell & Reich, 2008;
      Zeng & Figueiredo, 2014).
    - ``"ramp"``: with ``p = ⌊n / 2⌋``, ``θ_i = β1 + β2 (p − i + 1)`` for ``i ≤ p`` and ``θ_i = β2``
      for ``i > p`` (the authors' "Dejiao" sequence, after Zhang et al.'s GrOWL code).

    >>> growl_weights(4, "spike")
    tensor([1.0000, 0.2000, 0.2000, 0.2000], dtype=torch.float64)
    >>> growl_weights(4, "ramp", beta1=1.0, beta2=0.5)
    tensor([2.0000, 1.5000, 0.5000, 0.5000], dtype=torch.float64)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of groups), got {n!r}")
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not (value >= 0 and value < float("inf")):
            raise ValueError(f"{name} must be finite and ≥ 0, got {value!r}")
    i = torch.arange(1, n + 1, dtype=dtype, device=device)
    if kind == "spike":
        theta = torch.full((n,), beta2, dtype=dtype, device=device)
        theta[0] = beta1 + beta2
    elif kind == "linear":
        theta = beta1 + beta2 * (n - i) / n
    elif kind == "oscar":
        theta = beta1 + beta2 * (n - i)
    elif kind == "ramp":
        p = n // 2
        theta = torch.where(i <= p, beta1 + beta2 * (p - i + 1), torch.full_like(i, beta2))
    else:
        raise ValueError(f"unknown GrOWL weight kind {kind!r}; expected one of {WEIGHT_KINDS}")
    return theta


def validate_theta(theta: Tensor | Sequence[float], n: int | None = None) -> Tensor:
    """Check a user-supplied weight sequence: 1-D, finite, ``≥ 0``, non-increasing, length ``n``.

    Returns it as a floating-point tensor (float64 unless it already is floating point).
    """
    t = torch.as_tensor(theta)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.ndim != 1:
        raise ValueError(f"theta must be a 1-D sequence, got shape {tuple(t.shape)}")
    if n is not None and t.numel() != n:
        raise ValueError(f"theta has {t.numel()} entries but there are {n} groups (rows)")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("theta contains NaN or infinite entries")
    if bool((t < 0).any()):
        raise ValueError(f"theta must be ≥ 0, got min {float(t.min())}")
    if t.numel() > 1 and bool((t[1:] > t[:-1]).any()):
        raise ValueError("theta must be non-increasing (θ_1 ≥ θ_2 ≥ … ≥ θ_n); sort it decreasingly")
    return t


# --- penalty and prox -------------------------------------------------------------------------------


def _check_rows(rows: Tensor) -> None:
    if rows.ndim != 2:
        raise ValueError(f"rows must be a 2-D matrix (one group per row), got shape {tuple(rows.shape)}")
    if not rows.is_floating_point():
        raise ValueError(f"rows must be floating point, got dtype {rows.dtype}")


def growl_penalty(rows: Tensor, theta: Tensor | Sequence[float]) -> Tensor:
    """``Ω_θ(W) = Σ_i θ_i ||w_[i]||`` (rows sorted by decreasing norm), differentiable in ``rows``.

    The gradient is ``θ_{π(i)} w_i / ||w_i||`` for the rank ``π(i)`` of row ``i`` (a subgradient,
    0 at zero rows), so it can serve as a real training objective (e.g. the sparsity objective of the
    MWC scalarization).

    >>> W = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])
    >>> growl_penalty(W, [2.0, 1.0, 1.0])  # 2·5 + 1·1 + 1·0
    tensor(11.)
    """
    _check_rows(rows)
    t = validate_theta(theta, rows.shape[0]).to(device=rows.device, dtype=rows.dtype)
    norms = torch.linalg.vector_norm(rows, dim=1)
    sorted_norms = torch.sort(norms, descending=True).values
    return torch.dot(sorted_norms, t)


def growl_prox(rows: Tensor, theta: Tensor | Sequence[float], step: float = 1.0) -> Tensor:
    """Exact ``prox_{step·Ω_θ}(V) = argmin_X ½||X − V||_F² + step Σ_i θ_i ||x_[i]||``.

    Sort the row norms decreasingly (O(n log n)), subtract ``step·θ``, project onto the
    non-increasing non-negative cone (PAVA, O(n)), undo the sort and rescale every row to its new
    norm. Rows whose new norm is 0 are pruned; zero rows stay zero (no division by zero, no NaN).
    Returns a new tensor (no autograd graph).

    >>> V = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]])
    >>> growl_prox(V, [1.0, 1.0, 1.0])  # constant θ: group soft-thresholding at 1
    tensor([[2.4000, 3.2000],
            [0.0000, 0.0000],
            [0.0000, 0.0000]])
    """
    _check_rows(rows)
    if not (step >= 0 and step < float("inf")):
        raise ValueError(f"step must be finite and ≥ 0, got {step!r}")
    t = validate_theta(theta, rows.shape[0])
    rows = rows.detach()
    if rows.shape[0] == 0:
        return rows.clone()
    norms = torch.linalg.vector_norm(rows, dim=1)
    norms64 = norms.to(device="cpu", dtype=torch.float64)
    # A stable sort makes the result independent of how ties are broken (the prox is unique anyway).
    order = torch.sort(norms64, descending=True, stable=True).indices
    shrunk = project_monotone_nonincreasing(norms64[order] - step * t.to("cpu", torch.float64), True)
    new_norms = torch.empty_like(norms64)
    new_norms[order] = shrunk
    # The ratio is ≤ 1 by construction; rows with zero norm get 0 instead of 0/0.
    safe = norms64 > 0
    scale = torch.where(safe, new_norms / torch.where(safe, norms64, torch.ones_like(norms64)), 0.0)
    return rows * scale.to(device=rows.device, dtype=rows.dtype).unsqueeze(1)


def growl_objective(
    groups: Iterable[HasRows],
    kind: WeightKind = "spike",
    beta1: float = 0.8,
    beta2: float = 0.2,
) -> Tensor:
    """``Σ_g Ω_{θ(n_g)}(W_g)`` over several groups (each with its own sequence of length ``n_g``).

    Differentiable in the model parameters the groups read from: use it as the sparsity objective.
    """
    total: Tensor | None = None
    for g in groups:
        r = g.rows()
        term = growl_penalty(r, growl_weights(r.shape[0], kind, beta1, beta2, dtype=r.dtype, device=r.device))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("growl_objective needs at least one group")
    return total


# --- baselines --------------------------------------------------------------------------------------


def l1_prox(w: Tensor, lam: float) -> Tensor:
    """Soft-thresholding, ``prox_{λ||·||_1}(w) = sign(w) max(|w| − λ, 0)`` (element-wise sparsity).

    >>> l1_prox(torch.tensor([-2.0, 0.5, 1.5]), 1.0)
    tensor([-1.0000,  0.0000,  0.5000])
    """
    if not (lam >= 0 and lam < float("inf")):
        raise ValueError(f"lam must be finite and ≥ 0, got {lam!r}")
    w = w.detach()
    return torch.sign(w) * (w.abs() - lam).clamp_min(0.0)


def group_lasso_prox(rows: Tensor, lam: float) -> Tensor:
    """Group soft-thresholding, ``prox_{λ Σ_i ||w_i||}(W)_i = max(0, 1 − λ / ||w_i||) w_i``.

    Equal to :func:`growl_prox` with a constant ``θ = λ``.

    >>> group_lasso_prox(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    tensor([[2.4000, 3.2000],
            [0.0000, 0.0000]])
    """
    _check_rows(rows)
    if not (lam >= 0 and lam < float("inf")):
        raise ValueError(f"lam must be finite and ≥ 0, got {lam!r}")
    rows = rows.detach()
    norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    safe = norms > 0
    scale = torch.where(safe, (1 - lam / torch.where(safe, norms, torch.ones_like(norms))).clamp_min(0.0), 0.0)
    return rows * scale
