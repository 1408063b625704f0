"""CIFAR-style ResNet-18 with hard parameter sharing, the CelebA model of Sener & Koltun (2018, App. C.2;
``multi_faces_resnet.py`` in isl-org/MultiObjectiveOptimization).

Encoder: conv 3×3 (stride 1, padding 1, 64 channels, no bias) → BN → ReLU, *no* max-pool; four stages of
:class:`BasicBlock` s (``[2, 2, 2, 2]`` blocks, 64/128/256/512 channels, strides 1/2/2/2; a 1×1 conv + BN
shortcut wherever the shape changes); then ``avg_pool2d(·, 4)`` and flatten. At 64×64 input the last
stage is 8×8, pooled to 2×2: ``512·2·2 = 2048`` features (at 32×32: ``512``). Heads: one
``Linear(2048, 2)`` per attribute. The authors apply ``log_softmax`` + NLL; the heads here return logits
for cross-entropy, which is the same loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from moomtl.models.base import HardParameterSharing


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3×3 convs; the shortcut is the identity,
    or a 1×1 conv (stride ``stride``) + BN when the stride or the channel count changes.

    ``dilation`` > 1 gives both 3×3 convs that dilation (and padding, so a stride-1 block keeps the
    spatial size): the atrous blocks of DeepLab's dilated encoders. It adds no parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        if dilation < 1:
            raise ValueError(f"dilation must be ≥ 1, got {dilation}")
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, 3, stride=1, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def resnet_feature_dim(image_size: int, widths: Sequence[int] = (64, 128, 256, 512), pool: int = 4) -> int:
    """Length of the flattened features of :class:`ResNetEncoder` for a square ``image_size`` input: every
    stage after the first halves the side (rounding up, as a 3×3 stride-2 conv with padding 1 does), then
    ``avg_pool2d(pool)`` divides it (rounding down).

    >>> resnet_feature_dim(64), resnet_feature_dim(32), resnet_feature_dim(48)
    (2048, 512, 512)
    """
    side = image_size
    for _ in range(len(widths) - 1):
        side = (side + 1) // 2
    pooled = side // pool
    if pooled < 1:
        factor = 2 ** (len(widths) - 1)
        raise ValueError(
            f"image_size {image_size} is too small: the last stage is {side}x{side}, smaller than the "
            f"{pool}x{pool} average pool (need image_size ≥ {(pool - 1) * factor + 1})"
        )
    return widths[-1] * pooled * pooled


class ResNetEncoder(nn.Module):
    """The shared CIFAR-style ResNet trunk (see the module docstring); ``forward`` returns flattened
    features ``[N, widths[-1] · (side // pool)²]``.

    >>> import torch
    >>> ResNetEncoder(widths=(4, 8, 8, 16))(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 16])
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        pool: int = 4,
    ) -> None:
        super().__init__()
        if len(num_blocks) != len(widths) or not widths:
            raise ValueError(f"need one width per stage, got {len(num_blocks)} stages and {len(widths)} widths")
        if min(num_blocks) < 1 or min(widths) < 1 or pool < 1:
            raise ValueError(f"blocks, widths and pool must be ≥ 1, got {num_blocks}, {widths}, {pool}")
        self.widths = tuple(widths)
        self.pool = pool
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        channels = widths[0]
        for i, (n, width) in enumerate(zip(num_blocks, widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(channels, width, stride=2 if i > 0 and j == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)

    def feature_dim(self, image_size: int) -> int:
        return resnet_feature_dim(image_size, self.widths, self.pool)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.avg_pool2d(out, self.pool).flatten(1)


def resnet18_hps(
    task_names: Sequence[str], n_classes: int | Sequence[int] = 2, image_size: int = 64, in_channels: int = 3
) -> HardParameterSharing:
    """ResNet-18 encoder shared by all tasks, one linear head per task (``Linear(2048, c)`` at 64×64).

    >>> import torch
    >>> m = resnet18_hps(("Smiling", "Male"), 2, image_size=32)
    >>> {k: tuple(v.shape) for k, v in m(torch.zeros(2, 3, 32, 32)).items()}
    {'Smiling': (2, 2), 'Male': (2, 2)}
    """
    classes = [n_classes] * len(task_names) if isinstance(n_classes, int) else list(n_classes)
    if len(classes) != len(task_names):
        raise ValueError(f"{len(task_names)} tasks but {len(classes)} class counts")
    encoder = ResNetEncoder(in_channels=in_channels)
    feat = encoder.feature_dim(image_size)
    return HardParameterSharing(encoder, {t: nn.Linear(feat, c) for t, c in zip(task_names, classes, strict=True)})
