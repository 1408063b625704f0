"""Dense multi-task model for Cityscapes-shaped scene understanding: a dilated ResNet-18 shared by all tasks
and one small convolutional head per dense task.

Sener & Koltun (NeurIPS 2018, Sec. 5.3 and App. C.3) predict three dense outputs from one shared encoder:
semantic segmentation (19 class logits per pixel), instance segmentation (2 channels: the per-pixel
offset to the centroid of the pixel's instance) and monocular depth (1 channel: disparity). Their
targets are at 1/8 of the input resolution, so the encoder here keeps an **output stride of 8**, as a
DeepLab-style dilated ResNet does: the stem (7×7 stride-2 conv and stride-2 max-pool) and the second
stage divide the side by 8, and the last two stages, instead of striding again, dilate their 3×3 convs
(dilation 2 and 4), which keeps the receptive field growing without losing resolution. The heads then
predict directly at the targets' resolution: nothing is upsampled.

Difference from the paper: the authors use a dilated ResNet-50 with a PSPNet-style decoder (pyramid
pooling) per task; here the encoder is a dilated ResNet-18 (11.2M parameters at the default widths)
and each decoder is a single 3×3 conv → BN → ReLU → 1×1 conv, so the model trains on a CPU.
``widths`` and ``hidden`` shrink it further for tests and demos.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from moomtl.models.base import HardParameterSharing
from moomtl.models.resnet import BasicBlock


class DilatedResNetEncoder(nn.Module):
    """DeepLab-style dilated ResNet: ``[N, C, H, W] -> [N, widths[-1], H / s, W / s]`` with output stride
    ``s = 4 · Π strides`` (8 by default).

    Stem: 7×7 conv (stride 2, padding 3, no bias) → BN → ReLU → 3×3 max-pool (stride 2, padding 1), then
    one stage of :class:`~moomtl.models.resnet.BasicBlock` s per width, stage ``i`` with stride
    ``strides[i]`` in its first block and dilation ``dilations[i]`` in all its blocks (a 1×1 conv + BN
    shortcut wherever the shape changes). With the defaults this is torchvision's ResNet-18 without its
    classifier, the last two strides replaced by dilations 2 and 4.

    ``H`` and ``W`` must be multiples of the output stride (checked in :meth:`forward`), so that the
    features line up exactly with targets downsampled by ``s``.

    >>> import torch
    >>> enc = DilatedResNetEncoder(widths=(4, 4, 8, 8))
    >>> enc(torch.zeros(2, 3, 32, 48)).shape
    torch.Size([2, 8, 4, 6])
    >>> enc.output_stride
    8
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        strides: Sequence[int] = (1, 2, 1, 1),
        dilations: Sequence[int] = (1, 1, 2, 4),
    ) -> None:
        super().__init__()
        if not widths or not len(widths) == len(num_blocks) == len(strides) == len(dilations):
            raise ValueError(
                f"need one width, block count, stride and dilation per stage, got {len(widths)} widths, "
                f"{len(num_blocks)} block counts, {len(strides)} strides and {len(dilations)} dilations"
            )
        if in_channels < 1 or min(widths) < 1 or min(num_blocks) < 1:
            raise ValueError(f"in_channels, widths and blocks must be ≥ 1, got {in_channels}, {widths}, {num_blocks}")
        if min(strides) < 1 or min(dilations) < 1:
            raise ValueError(f"strides and dilations must be ≥ 1, got {strides}, {dilations}")
        self.widths = tuple(int(w) for w in widths)
        self.output_stride = 4  # the stride-2 stem conv and the stride-2 max-pool
        for s in strides:
            self.output_stride *= int(s)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        channels = widths[0]
        for n, width, stride, dilation in zip(num_blocks, widths, strides, dilations, strict=True):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(channels, width, stride=stride if j == 0 else 1, dilation=dilation))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.output_stride or w % self.output_stride:
            raise ValueError(
                f"image height and width must be multiples of the output stride {self.output_stride} (the "
                f"features are at 1/{self.output_stride} resolution, like the targets), got {h}x{w}"
            )
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layers(out)


class DenseHead(nn.Sequential):
    """Per-task dense decoder: 3×3 conv (no bias) → BN → ReLU → 1×1 conv (with bias), at the input's
    resolution: ``[N, in_channels, h, w] -> [N, out_channels, h, w]``.

    >>> import torch
    >>> DenseHead(8, 19, hidden=4)(torch.zeros(2, 8, 4, 6)).shape
    torch.Size([2, 19, 4, 6])
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 128) -> None:
        if min(in_channels, out_channels, hidden) < 1:
            raise ValueError(f"channel counts must be ≥ 1, got {in_channels}, {out_channels}, hidden {hidden}")
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )


def dense_hps(
    task_names: Sequence[str],
    out_channels: int | Sequence[int],
    image_shape: Sequence[int] = (3, 128, 256),
    widths: Sequence[int] = (64, 128, 256, 512),
    hidden: int = 128,
    num_blocks: Sequence[int] = (2, 2, 2, 2),
) -> HardParameterSharing:
    """Hard parameter sharing for dense tasks: one :class:`DilatedResNetEncoder` (output stride 8) and
    one :class:`DenseHead` per task, every head reading the same features ``z``.

    ``out_channels[t]`` is task ``t``'s output channel count (Cityscapes: segmentation 19, instance
    offsets 2, disparity 1); ``image_shape`` is ``(C, H, W)`` of one image (H and W multiples of 8).
    Outputs are ``[N, out_channels[t], H / 8, W / 8]``.

    >>> import torch
    >>> m = dense_hps(("seg", "inst", "depth"), [19, 2, 1], (3, 32, 64), widths=(4, 4, 8, 8), hidden=4)
    >>> {k: tuple(v.shape) for k, v in m(torch.zeros(2, 3, 32, 64)).items()}
    {'seg': (2, 19, 4, 8), 'inst': (2, 2, 4, 8), 'depth': (2, 1, 4, 8)}
    """
    channels = [out_channels] * len(task_names) if isinstance(out_channels, int) else [int(c) for c in out_channels]
    if len(channels) != len(task_names):
        raise ValueError(f"{len(task_names)} tasks but {len(channels)} output channel counts")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
    encoder = DilatedResNetEncoder(in_channels=int(image_shape[0]), widths=widths, num_blocks=num_blocks)
    h, w = int(image_shape[1]), int(image_shape[2])
    if h % encoder.output_stride or w % encoder.output_stride:
        raise ValueError(
            f"image height and width must be multiples of the output stride {encoder.output_stride}, got {h}x{w}"
        )
    heads = {t: DenseHead(encoder.widths[-1], c, hidden) for t, c in zip(task_names, channels, strict=True)}
    return HardParameterSharing(encoder, heads)


__all__ = ["DenseHead", "DilatedResNetEncoder", "dense_hps"]
