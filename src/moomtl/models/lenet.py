"""HPS LeNet for MultiMNIST, as in Sener & Koltun's code (isl-org/MultiObjectiveOptimization).

Encoder: conv(1→10, k5) → maxpool2 → relu → conv(10→20, k5) → dropout2d → maxpool2 → relu →
flatten(320) → fc(320→50) → relu. Head per task: fc(50→50) → relu → fc(50→10) (logits).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from moomtl.models.base import HardParameterSharing


class LeNetEncoder(nn.Module):
    def __init__(self, in_channels: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.drop = nn.Dropout2d(dropout)
        self.fc = nn.Linear(320, 50)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.pool(self.conv1(x)))
        x = self.act(self.pool(self.drop(self.conv2(x))))
        return self.act(self.fc(x.flatten(1)))


def lenet_head(n_classes: int = 10, width: int = 50) -> nn.Module:
    return nn.Sequential(nn.Linear(50, width), nn.ReLU(), nn.Linear(width, n_classes))


def hps_lenet(
    task_names: Sequence[str] = ("left", "right"), n_classes: int = 10, dropout: float = 0.5
) -> HardParameterSharing:
    """HPS LeNet with one 10-way head per task (28×28 gray input).

    >>> import torch
    >>> m = hps_lenet()
    >>> m(torch.zeros(2, 1, 28, 28))["left"].shape
    torch.Size([2, 10])
    """
    return HardParameterSharing(
        LeNetEncoder(dropout=dropout), {name: lenet_head(n_classes) for name in task_names}
    )
