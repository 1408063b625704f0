"""Mixed precision for multi-objective steps (``train.amp: bf16 | fp16``).

The forward pass runs under ``torch.autocast``; everything a method decides from is float32:

* **bf16** has float32's exponent range, so no loss scaling is needed; Jacobian rows that come out of
  autocast regions in bfloat16 are cast to float32 before Gramians and solves
  (:class:`~moomtl.autodiff.StepContext`).
* **fp16** needs loss scaling against underflow, as ``torch.amp.GradScaler`` does: the step's losses
  are multiplied by ``S``; the step context divides Jacobian rows and loss values by ``S`` (in float32)
  before any weighting solves; afterwards every gradient is unscaled by ``1/S``. A step whose unscaled
  gradients are not all finite is skipped and ``S`` halves; after ``growth_interval`` good steps ``S``
  doubles. ``S`` is saved in the checkpoint so a resumed run continues identically.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """Autocast + (for fp16) dynamic loss scaling; see the module docstring."""

    def __init__(self, kind: str, device: torch.device, init_scale: float = 2.0**16,
                 growth_interval: int = 2000) -> None:
        if kind not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)} (or null), got {kind!r}")
        self.kind = kind
        self.dtype = AMP_DTYPES[kind]
        self.device = torch.device(device)
        self.scaling = kind == "fp16"
        self.scale = float(init_scale) if self.scaling else 1.0
        self.growth_interval = int(growth_interval)
        self.good_steps = 0
        self.skipped_steps = 0

    @contextmanager
    def autocast(self) -> Iterator[None]:
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield

    def unscale_(self, params: Iterable[Tensor]) -> bool:
        """Divide every ``.grad`` by ``S``; ``True`` when all are finite (then the step may run). Without
        scaling (bf16) nothing is read from the device."""
        if not self.scaling:
            return True
        grads = [p.grad for p in params if p.grad is not None]
        inv = 1.0 / self.scale
        for g in grads:
            g.mul_(inv)
        finite = all(bool(torch.isfinite(g).all()) for g in grads)  # one host read per step, as GradScaler
        if finite:
            self.good_steps += 1
            if self.good_steps % self.growth_interval == 0:
                self.scale *= 2.0
        else:
            self.skipped_steps += 1
            self.good_steps = 0
            self.scale /= 2.0
        return finite

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "good_steps": self.good_steps,
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"the checkpoint was trained with amp={state.get('kind')!r}, not {self.kind!r}")
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped_steps = int(state["skipped_steps"])
