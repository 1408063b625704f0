"""No host sync in the training step: every registered method's ``backward`` (and ``on_step_end``) runs
with the tensor → host conversions patched to raise.

A host sync is any read of a tensor's value into Python: ``item()``, ``tolist()``, ``numpy()``,
``float()``/``int()``/``bool()``/``index`` of a tensor (an ``if`` on a device value). On a GPU each one
waits for the queued kernels, so a step with one cannot overlap the next batch's work. The guard below
patches those entry points of ``torch.Tensor`` for the duration of the step (a Python-level check: a
read inside a C++ op is not seen). Each method takes one un-guarded step first (one-time set-up work
may read values: GradNorm's initial losses), then one guarded step.

Methods that must still read values on the host are listed in :data:`MUST_SYNC` with the reason; the
test asserts they DO sync (a listed method that stops syncing fails, so the list cannot go stale).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from moomtl.autodiff.context import StepContext
from moomtl.events import TrainState
from moomtl.methods import available_methods, build_method
from test_method_registry import _hparams, _losses, _model

_READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


class HostSync(AssertionError):
    pass


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Make every Python-level read of a tensor's value raise :class:`HostSync`."""
    saved = {n: getattr(torch.Tensor, n) for n in _READS}

    def refuse(name: str) -> Any:
        def f(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            raise HostSync(f"Tensor.{name} during the step (a host sync)")
        return f

    try:
        for n in _READS:
            setattr(torch.Tensor, n, refuse(n))
        yield
    finally:
        for n, v in saved.items():
            setattr(torch.Tensor, n, v)


#: Methods (default hyper-parameters) that read device values every step, and why.
MUST_SYNC: dict[str, str] = {
    "mgda": "min-norm QP on the T×T Gramian solved on the host (solvers.min_norm, numpy active set)",
    "mgda_ub": "min-norm QP on the T×T Gramian solved on the host (solvers.min_norm, numpy active set)",
    "upgrad": "T non-negative QPs on a float64 host copy of the Gramian (weightings.dual_cone, LAPACK)",
    "dualproj": "non-negative QP on a float64 host copy of the Gramian (weightings.dual_cone, LAPACK)",
    "imtl_g": "linear solve on a float64 host copy of the Gramian (weightings._common.as_float64_gramian)",
    "aligned_mtl": "eigendecomposition of a float64 host copy of the Gramian (weightings._common)",
    "nash_mtl": "Nash bargaining iterations on a float64 host copy of the Gramian (weightings._common)",
    "cagrad": "dual of CAGrad's inner problem solved on the host (scipy.optimize.minimize on the Gramian)",
    "pcgrad": "sequential projections in a random order, decided on the T×T Gramian on the host (numpy)",
    "epo": "exact-Pareto LP solved on the host (scipy.optimize.linprog)",
    "fairgrad": "alpha-fair weights G w = w^(-1/α) solved on the host (scipy.optimize.least_squares)",
    "pmtl": "phase switch on a device flag (`bool(self.feasible)`) and a constrained min-norm on the host",
    "pbi": "solvers.scalarizations.pbi checks `(norm == 0).any()` in an `if` (the preference norm; a "
           "check of the solver module, not the method's)",
    "omd_tch": "default conversion='adaptive' with archive_on='step': the credit archive decides dominance of "
               "batch loss vectors in Python and copies the parameters when a point enters (one T-vector read "
               "per archive_every steps); conversion 'last'/'average' and archive_on='epoch' are sync-free",
}

#: Non-default configurations of the methods this module made sync-free (each must be sync-free too).
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("omd_tch", {"conversion": "last"}),
    ("omd_tch", {"conversion": "average"}),
    ("omd_tch", {"conversion": "adaptive", "archive_on": "epoch"}),
    ("omd_tch", {"conversion": "last", "dual": "euclidean"}),
    ("omd_tch", {"conversion": "last", "ideal": "online"}),
    ("tch", {"ideal": "online"}),
    ("stch", {"ideal": [0.1, 0.1]}),
    ("mwc_alm", {"t_update": "optimizer"}),
    ("mwc_alm", {"outer_unit": "step", "outer_every": 3}),
]


def _steps(name: str, extra: dict[str, Any]) -> None:
    model = _model(2)
    method = build_method(name, **{**_hparams(name, model.task_names), **extra})
    method.setup(model.task_names, model)
    params = [p for p in (*model.parameters(), *method.parameters()) if p.requires_grad]
    # No optimizer object: building one imports torch._dynamo (seconds); no method reads state.optimizer.
    state = TrainState(model=model, optimizer=None)  # type: ignore[arg-type]
    for step in range(2):
        for p in params:
            p.grad = None
        losses, z = _losses(model, "plain", seed=step + 1)
        ctx = StepContext(model, losses, z, step=step)
        guard = no_host_sync if step > 0 else contextlib.nullcontext
        with guard():
            method.backward(losses, ctx)
        with torch.no_grad():  # plain SGD by hand
            for p in params:
                if p.grad is not None:
                    p -= 1e-3 * p.grad
        state.step += 1
        with guard():
            method.on_step_end(state)


@pytest.mark.parametrize("name", list(available_methods()))
def test_the_step_reads_no_device_value(name: str) -> None:
    if name in MUST_SYNC:
        with pytest.raises(HostSync):
            _steps(name, {})
    else:
        _steps(name, {})


@pytest.mark.parametrize(("name", "extra"), CONFIGS, ids=[f"{n}-{'-'.join(map(str, e.values()))}" for n, e in CONFIGS])
def test_sync_free_configurations(name: str, extra: dict[str, Any]) -> None:
    _steps(name, extra)


def test_must_sync_names_registered_methods_and_the_guard_catches_a_read() -> None:
    assert set(MUST_SYNC) <= set(available_methods())
    with no_host_sync(), pytest.raises(HostSync):
        float(torch.ones(()))
    with no_host_sync(), pytest.raises(HostSync):
        if torch.ones(()) > 0:
            pass
    assert float(torch.ones(())) == 1.0  # restored after the block


def test_omd_sync_free_dual_steps_equal_the_solvers_bit_for_bit() -> None:
    """Reference: :mod:`moomtl.solvers.simplex` (the checked versions); OMD-TCH calls them with
    ``check=False``, which skips only the checks and runs them without a host read."""
    from moomtl.solvers.simplex import exponentiated_gradient_step, project_simplex

    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 7):
        for _ in range(20):
            p = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
            gap = torch.randn(n, generator=g, dtype=torch.float64) * 3
            for lr in (0.1, 1.0, 1e3):
                with no_host_sync():
                    eg = exponentiated_gradient_step(p, -gap, lr, check=False)
                    proj = project_simplex(p + lr * gap, check=False)
                assert torch.equal(eg, exponentiated_gradient_step(p, -gap, lr))
                assert torch.equal(proj, project_simplex(p + lr * gap))
