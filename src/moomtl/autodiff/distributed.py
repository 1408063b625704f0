"""Exact multi-objective optimization across processes (``torchrun``; gloo on CPU, NCCL on GPUs).

The global batch of ``B`` samples is split over ``W`` ranks; rank ``r`` holds ``n_r`` of them and
scales its mean losses by ``n_r / B``, so the global loss of task ``t`` is the sum over ranks,
``L_t = Σ_r L_t^{(r)}``. Everything a method decides from is then reduced to its global value:

* the loss values it reads (``T`` numbers per step);
* the Jacobian w.r.t. the shared parameters: ``J = Σ_r J^{(r)}`` (``T × n`` numbers, full-Jacobian
  methods such as MGDA and UPGrad);
* the Gramian w.r.t. the shared representation: the rows of ``∂L/∂Z`` of different ranks involve
  different samples, so ``G = Σ_r J_Z^{(r)} J_Z^{(r)ᵀ}`` (``T²`` numbers: MGDA-UB and every
  ``wrt: representation`` method).

Every rank therefore solves the same problem and gets the same task weights (stateful methods keep the
same state). The gradients each rank writes are its share of the update (a global direction ``d`` is
written as ``d / W``), and one coalesced sum of all gradients after the method gives the exact update
of one process on the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class Reducer:
    """The process group a step reduces over (``torch.distributed``'s default group)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("torch.distributed is not initialized (start with torchrun)")
        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    @staticmethod
    def from_environment() -> Reducer | None:
        """A reducer when this process is one of several in an initialized group, else ``None``."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return Reducer()
        return None

    def sum_(self, tensor: Tensor) -> Tensor:
        """In-place sum over ranks (returns ``tensor``)."""
        self._dist.all_reduce(tensor)
        return tensor

    def shard(self, idx: Tensor) -> Tensor:
        """This rank's samples of a global batch (a strided split: sizes differ by at most one)."""
        return idx[self.rank :: self.world_size]

    def sum_grads_(self, params: Iterable[Tensor]) -> None:
        """Sum ``.grad`` of ``params`` over ranks with one coalesced all-reduce (missing grads count as
        zero, so every rank sends the same layout)."""
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        self.sum_(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def broadcast_(self, tensors: Iterable[Tensor], src: int = 0) -> None:
        """Make ``tensors`` equal to rank ``src``'s (parameters at the start of training)."""
        for t in tensors:
            self._dist.broadcast(t.data, src)


def init_from_environment(device: str = "cpu") -> int:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), with
    NCCL for CUDA devices and gloo otherwise; returns this process's rank (0 when not distributed).
    For CUDA, each rank uses ``cuda:LOCAL_RANK``."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return 0
    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank()


def rank() -> int:
    """This process's rank in an initialized group (0 otherwise)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
