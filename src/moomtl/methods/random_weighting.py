"""Random loss weighting (RLW) and random gradient weighting (RGW) (Lin, Ye, Xu, Shi & Zhang,
"Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022).

Every step draws fresh weights ``λ ∈ Δ^{T-1}`` and

.. math::

    \\text{RLW: } \\nabla_\\theta \\sum_t \\lambda_t L_t, \\qquad
    \\text{RGW: shared update } \\sum_t \\lambda_t \\frac{g_t}{\\lVert g_t \\rVert}, \\quad
    g_t = \\nabla_{\\theta^{sh}} L_t .

``distribution`` picks how ``λ`` is drawn:

* ``"normal"`` (default): ``λ = softmax(ζ)``, ``ζ ~ N(0, I_T)``;
* ``"dirichlet"``: ``λ ~ Dirichlet(β 1_T)``;
* ``"uniform"``: uniform on the simplex (``Dirichlet(1_T)``);
* ``"bernoulli"``: ``m_t ~ Bernoulli(½)`` i.i.d., ``λ = m / Σ m`` (redrawn while ``m = 0``).

The draws come from a NumPy ``Generator`` seeded by ``seed``; its state is part of the method's
``state_dict`` (``get_extra_state``), so a resumed run draws the same weights as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from moomtl.autodiff.context import StepContext
from moomtl.methods.base import Method, MethodCard, Weighting, check_wrt, register, weights_info

DISTRIBUTIONS = ("normal", "dirichlet", "uniform", "bernoulli")


def sample_simplex_weights(
    rng: np.random.Generator, n: int, distribution: str = "normal", beta: float = 1.0
) -> np.ndarray:
    """One draw of ``n`` random weights on the simplex (float64), see the module docstring.

    >>> w = sample_simplex_weights(np.random.default_rng(0), 3, "bernoulli")
    >>> bool(abs(w.sum() - 1) < 1e-12 and (w >= 0).all())
    True
    """
    if n < 1:
        raise ValueError(f"need at least one task, got {n}")
    if distribution == "normal":
        z = rng.standard_normal(n)
        e = np.exp(z - z.max())
        w = e / e.sum()
    elif distribution == "dirichlet":
        w = rng.dirichlet(np.full(n, float(beta)))
    elif distribution == "uniform":
        w = rng.dirichlet(np.ones(n))
    elif distribution == "bernoulli":
        m = np.zeros(n)
        while not m.any():
            m = (rng.random(n) < 0.5).astype(np.float64)
        w = m / m.sum()
    else:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    # Dirichlet draws with tiny β can underflow to all zeros: fall back to a uniformly drawn vertex.
    if not np.isfinite(w).all() or w.sum() <= 0:
        w = np.zeros(n)
        w[rng.integers(n)] = 1.0
    return w / w.sum()


class SeededMethod(Method):
    """A method with a private NumPy random generator whose state is checkpointed with the method."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def get_extra_state(self) -> dict[str, Any]:
        # Plain dicts of str/int: loadable with torch.load(weights_only=True).
        return {"seed": self.seed, "bit_generator": self.rng.bit_generator.state}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or "bit_generator" not in state:
            raise ValueError("checkpoint has no random-generator state for this method")
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["bit_generator"]


class _RandomSimplex(SeededMethod):
    def __init__(self, distribution: str = "normal", beta: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
        if not (np.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be finite and > 0, got {beta}")
        self.distribution = distribution
        self.beta = float(beta)

    def sample(self, n: int) -> np.ndarray:
        return sample_simplex_weights(self.rng, n, self.distribution, self.beta)


@register("rlw", "random loss weighting (Lin et al. 2022): fresh random simplex weights every step")
class RandomLossWeighting(_RandomSimplex, Weighting):
    """RLW: ``Σ λ_t L_t`` with ``λ`` drawn anew every step (see the module docstring).

    >>> a, b = RandomLossWeighting(seed=3), RandomLossWeighting(seed=3)
    >>> bool((a.sample(4) == b.sample(4)).all())
    True
    """

    card = MethodCard(
        paper=(
            "Lin et al., 2022, Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning, "
            "TMLR"
        ),
        url="https://arxiv.org/abs/2111.10603",
        equation="backward Σ_t λ_t L_t, λ = softmax(ε), ε ~ N(0, I) drawn each step",
        cost="loss",
        state="its random generator (seed)",
        reference=(
            "tests/test_baselines.py::test_random_weight_distributions_have_the_right_means (the distributions' "
            "means)"
        ),
    )

    def weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        return torch.as_tensor(self.sample(losses.numel()), dtype=losses.dtype, device=losses.device)


@register("rgw", "random gradient weighting (Lin et al. 2022): random weights on l2-normalized gradients")
class RandomGradientWeighting(_RandomSimplex):
    """RGW: shared update ``Σ λ_t g_t / ‖g_t‖`` (a zero gradient is left as is); the task-specific
    parameters get ``λ_t ∇L_t`` (the gradient of ``Σ λ_t L_t``, as in RLW). ``wrt="representation"``
    normalizes by ``‖∂L_t/∂z‖`` instead (no per-task encoder backward)."""

    fuses_rows = True
    card = MethodCard(
        paper=(
            "Lin et al., 2022, Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning, "
            "TMLR"
        ),
        url="https://arxiv.org/abs/2111.10603",
        equation="d = Σ_t λ_t g_t / ‖g_t‖, λ = softmax(ε), ε ~ N(0, I) each step",
        cost="shared",
        state="its random generator (seed)",
        reference=(
            "tests/test_baselines.py::test_rgw_weights_normalized_gradients (the definition on explicit gradients)"
        ),
    )

    def __init__(self, distribution: str = "normal", beta: float = 1.0, seed: int = 0, wrt: str = "shared") -> None:
        super().__init__(distribution=distribution, beta=beta, seed=seed)
        self.wrt = check_wrt(wrt)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        gram = ctx.gramian(self.wrt)
        norms = gram.diagonal().clamp_min(0).sqrt()
        norms = torch.where(norms > 0, norms, torch.ones_like(norms))
        lam = torch.as_tensor(self.sample(gram.shape[0]), dtype=gram.dtype, device=gram.device)
        ctx.apply_coefficients(lam / norms, self.wrt, head_weights=lam)
        return weights_info(self.task_names or ctx.task_names, lam)
