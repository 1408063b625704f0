"""Monitored Deep Multi-Task Network (MDMTN) of Hotegni, Berkemeier & Peitz (arXiv:2308.12243), and the
hard-parameter-sharing (HPS) networks of the same paper.

An MDMTN is a shared trunk plus, per task ``t``, a **monitor** that reads the raw input in parallel and
a pair of trainable gates ``α_t = (α_t0, α_t1)`` mixing the two:

.. math:: z_t = \\alpha_{t0}\\, \\mathrm{trunk}(x) + \\alpha_{t1}\\, \\mathrm{monitor}_t(x), \\qquad
          \\hat y_t = \\mathrm{head}_t(z_t), \\qquad \\alpha_t^{(0)} = (1, 0).

Deliberate differences from the authors' code (salomonhotegni/MDMTN):

- The gates are registered parameters (``nn.ParameterDict``): they appear in ``parameters()`` and
  ``state_dict()``, so the optimizer zeroes/updates them and checkpoints keep them. In the authors'
  code they live in a plain ``dict`` (never zeroed, never saved, moved to no device).
- The Chebyshev auxiliary variable ``t`` belongs to the training method (:mod:`moomtl.methods.mwc_alm`),
  not to the network.
- Heads output logits (the trainer applies cross-entropy), not log-probabilities.
- PyTorch's default initialization unless the config says ``model.init: lsuv``
  (:func:`moomtl.models.init.lsuv_init`, which the authors' code applies before the sparsity search).

Parameter counts. The authors' reported counts (MultiMNIST: MDMTN 311,491, HPS 22,351; Cifar10Mnist:
MDMTN 505,525, HPS 42,741) are ``sum(p.numel() for p in model.parameters())`` of *their* modules, which
register ``t`` (1 scalar) but not the gates. Ours register the 2 gate scalars per task and not ``t``, so
``count_parameters(ours) = authors − 1 + 2T`` for MDMTN and ``authors − 1`` for HPS; the network weights
(trunk, monitors, heads) are identical. With ``mwc_alm`` the trainer's optimizer sees model + ``t``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from moomtl.models.base import HardParameterSharing, MultiTaskModel


class MDMTN(MultiTaskModel):
    """Generic MDMTN: ``trunk`` (shared), one ``monitor_factory()`` module and one gate pair per task,
    and ``heads`` (one per task; their keys fix the task order).

    ``encode(x) = trunk(x)``; ``decode(z, x)`` mixes ``z`` with each monitor's output through the gates
    and applies the head. A monitor's output must have the trunk output's shape. ``gate_init`` is the
    initial ``(α_t0, α_t1)``; ``train_gates=False`` freezes the gates (kept as parameters with
    ``requires_grad=False`` so they are still saved).

    >>> import torch
    >>> from torch import nn
    >>> m = MDMTN(nn.Linear(4, 3), lambda: nn.Linear(4, 3), {"a": nn.Linear(3, 2), "b": nn.Linear(3, 5)})
    >>> {k: tuple(v.shape) for k, v in m(torch.zeros(7, 4)).items()}
    {'a': (7, 2), 'b': (7, 5)}
    >>> sorted(n for n, _ in m.named_parameters() if n.startswith("gates"))
    ['gates.a', 'gates.b']
    """

    def __init__(
        self, trunk: nn.Module, monitor_factory: Callable[[], nn.Module],
        heads: Mapping[str, nn.Module] | nn.ModuleDict, gate_init: Sequence[float] = (1.0, 0.0),
        train_gates: bool = True,
    ) -> None:
        super().__init__()
        if len(heads) == 0:
            raise ValueError("a multi-task model needs at least one head")
        if len(gate_init) != 2:
            raise ValueError(f"gate_init must be a pair (α_t0, α_t1), got {list(gate_init)}")
        self.trunk = trunk
        self.heads = heads if isinstance(heads, nn.ModuleDict) else nn.ModuleDict(dict(heads))
        self.task_names = tuple(self.heads.keys())
        monitors: dict[str, nn.Module] = {}
        seen: set[int] = {id(p) for p in trunk.parameters()} | {id(p) for p in self.heads.parameters()}
        for name in self.task_names:
            monitor = monitor_factory()
            if not isinstance(monitor, nn.Module):
                raise ValueError(f"monitor_factory must return an nn.Module, got {type(monitor).__name__}")
            ids = {id(p) for p in monitor.parameters()}
            # A factory returning one shared instance would silently make the monitors shared weights.
            if ids & seen:
                raise ValueError("monitor_factory must build a new module (with new parameters) on every call")
            seen |= ids
            monitors[name] = monitor
        self.monitors = nn.ModuleDict(monitors)
        init = torch.as_tensor([float(v) for v in gate_init], dtype=torch.get_default_dtype())
        self.gates = nn.ParameterDict(
            {name: nn.Parameter(init.clone(), requires_grad=train_gates) for name in self.task_names}
        )

    def encode(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name in self.task_names:
            alpha = self.gates[name]
            m = self.monitors[name](x)
            if m.shape != z.shape:
                raise ValueError(f"monitor {name!r} outputs {tuple(m.shape)}, the trunk {tuple(z.shape)}")
            out[name] = self.heads[name](alpha[0] * z + alpha[1] * m)
        return out

    def shared_modules(self) -> nn.Module:
        return self.trunk

    def gate_values(self) -> dict[str, tuple[float, float]]:
        """Current ``(α_t0, α_t1)`` per task (for logging)."""
        return {name: (float(g[0].detach()), float(g[1].detach())) for name, g in self.gates.items()}


def _heads(width: int, task_names: Sequence[str], n_classes: int | Sequence[int]) -> dict[str, nn.Module]:
    """One ``Linear(width → n_classes_t)`` head per task (``n_classes``: one int for all, or one per task)."""
    counts = [n_classes] * len(task_names) if isinstance(n_classes, int) else list(n_classes)
    if len(counts) != len(task_names):
        raise ValueError(f"{len(counts)} class counts given for {len(task_names)} tasks")
    if len(set(task_names)) != len(task_names):
        raise ValueError(f"task names must be distinct, got {list(task_names)}")
    return {t: nn.Linear(width, c) for t, c in zip(task_names, counts, strict=True)}


# --- MultiMNIST (1×28×28) ------------------------------------------------------------------------------
def multimnist_trunk() -> nn.Sequential:
    """Conv(1→10,k5) → MaxPool2 → ReLU → Conv(10→20,k5) → MaxPool2 → ReLU → Linear(320→50) → ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(),
    )


def multimnist_monitor() -> nn.Sequential:
    """Conv(1→20,k5) → MaxPool2 → ReLU → Linear(2880→50) → ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(2880, 50), nn.ReLU(),
    )


def mdmtn_multimnist(
    task_names: Sequence[str] = ("left", "right"), n_classes: int | Sequence[int] = 10
) -> MDMTN:
    """MDMTN for MultiMNIST: 311,490 network weights + 2 gates per task (authors' count 311,491
    includes their ``t`` and excludes the unregistered gates).

    >>> import torch
    >>> mdmtn_multimnist()(torch.zeros(2, 1, 28, 28))["right"].shape
    torch.Size([2, 10])
    """
    return MDMTN(multimnist_trunk(), multimnist_monitor, _heads(50, task_names, n_classes))


def hps_multimnist(
    task_names: Sequence[str] = ("left", "right"), n_classes: int | Sequence[int] = 10
) -> HardParameterSharing:
    """HPS network of the MDMTN paper for MultiMNIST (the MDMTN trunk + Linear(50→10) heads; not the
    Sener & Koltun LeNet of :mod:`moomtl.models.lenet`): 22,350 weights (authors: 22,351 with ``t``)."""
    return HardParameterSharing(multimnist_trunk(), _heads(50, task_names, n_classes))


# --- Cifar10Mnist (3×32×32) ----------------------------------------------------------------------------
def cifar10mnist_trunk() -> nn.Sequential:
    """Conv(3→16,k3) → MaxPool2 → BN → ReLU → Conv(16→32,k3) → MaxPool2 → BN → ReLU → Linear(1152→32)
    → ReLU."""
    return nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=3), nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3), nn.MaxPool2d(2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(1152, 32), nn.ReLU(),
    )


def cifar10mnist_monitor() -> nn.Sequential:
    """Conv(3→32,k3) → MaxPool2 → BN → ReLU → Linear(7200→32) → ReLU."""
    return nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=3), nn.MaxPool2d(2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(7200, 32), nn.ReLU(),
    )


def mdmtn_cifar10mnist(
    task_names: Sequence[str] = ("cifar", "digit"), n_classes: int | Sequence[int] = 10
) -> MDMTN:
    """MDMTN for Cifar10Mnist: 505,524 network weights + 2 gates per task (authors: 505,525).

    >>> import torch
    >>> mdmtn_cifar10mnist()(torch.zeros(2, 3, 32, 32))["digit"].shape
    torch.Size([2, 10])
    """
    return MDMTN(cifar10mnist_trunk(), cifar10mnist_monitor, _heads(32, task_names, n_classes))


def hps_cifar10mnist(
    task_names: Sequence[str] = ("cifar", "digit"), n_classes: int | Sequence[int] = 10
) -> HardParameterSharing:
    """HPS network of the MDMTN paper for Cifar10Mnist: 42,740 weights (authors: 42,741 with ``t``)."""
    return HardParameterSharing(cifar10mnist_trunk(), _heads(32, task_names, n_classes))
