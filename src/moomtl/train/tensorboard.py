"""TensorBoard event files for a run (``train.tensorboard: true``): per epoch every logged scalar —
per-task train/val/test losses and metrics, the method's weights (``train/weight/<task>``), the
learning rate and the epoch time — under the run folder's ``tensorboard/``; for sweeps, the front image.

The ``tensorboard`` package is an optional extra (``pip install moomtl[tensorboard]``); without it,
asking for event files is one clear error, and nothing else imports it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from moomtl.events import Callback, TrainState

INSTALL_HINT = "train.tensorboard needs the tensorboard package: pip install 'moomtl[tensorboard]'"


def _summary_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return SummaryWriter(log_dir=str(log_dir))


class TensorBoardLogger(Callback):
    """Write each epoch's metrics as scalars (step = epoch) to ``log_dir``. Non-numeric and non-finite
    values are left out (TensorBoard would draw NaN as a gap anyway)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer = _summary_writer(self.log_dir)  # fails here, before training, when not installed

    def on_epoch_end(self, state: TrainState) -> None:
        metrics = state.epoch_metrics
        epoch = int(metrics.get("epoch", state.epoch + 1))
        for key, value in metrics.items():
            if key in ("epoch",) or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(key, value, global_step=epoch)
        self._writer.flush()

    def on_train_end(self, state: TrainState) -> None:
        self._writer.close()


def log_image(log_dir: str | Path, tag: str, png: str | Path) -> None:
    """Add a PNG (e.g. a sweep's front plot) to the event files in ``log_dir``."""
    import numpy as np
    from PIL import Image

    writer = _summary_writer(Path(log_dir))
    try:
        with Image.open(png) as im:
            writer.add_image(tag, np.asarray(im.convert("RGB")), dataformats="HWC")
    finally:
        writer.close()
