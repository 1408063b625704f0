"""Image transforms in plain torch (no torchvision): normalization, resizing, random rotation.

``random_rotation`` is meant to be applied by a training loop to each *training* batch (validation and
test data stay un-augmented); it reproduces ``torchvision.transforms.RandomRotation(degrees)``: one angle
per image drawn uniformly from ``[-degrees, degrees]``, counter-clockwise for positive angles, about the
image center, same output size, nearest-neighbour sampling, uncovered corners set to ``fill``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

INTERPOLATIONS = ("nearest", "bilinear")


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean[c]) / std[c]`` per channel of an ``[N, C, H, W]`` float tensor.

    >>> normalize(torch.ones(1, 2, 1, 1), [0.5, 0.0], [0.5, 2.0]).flatten().tolist()
    [1.0, 0.5]
    """
    if x.ndim != 4 or x.shape[1] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"expected [N, {len(mean)}, H, W] and {len(mean)} means/stds, got {tuple(x.shape)}, "
            f"{len(mean)} means and {len(std)} stds"
        )
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def uint8_to_normalized(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``[N, H, W]`` (gray) or ``[N, H, W, C]`` (color) → float32 ``[N, C, H, W]``, scaled to [0, 1]
    (like ``ToTensor``) then normalized per channel."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    x = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return normalize(x.float().div_(255.0), mean, std).contiguous()


def resize_uint8(images: Tensor, size: tuple[int, int], interpolation: str = "nearest") -> Tensor:
    """Resize uint8 images ``[N, H, W]`` or ``[N, C, H, W]`` to ``size``.

    ``"nearest"`` samples source pixel ``floor((i + 0.5) * in / out)`` (PIL's ``Image.NEAREST``, which the
    MGDA code used via ``scipy.misc.imresize(..., interp='nearest')``), so values are copied exactly.
    ``"bilinear"`` is antialiased bilinear (PIL's ``Image.BILINEAR``), rounded back to uint8.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if images.dtype != torch.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"expected uint8 [N, H, W] or [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    x = images.unsqueeze(1) if images.ndim == 3 else images
    if interpolation == "nearest":
        out = F.interpolate(x.float(), size=size, mode="nearest-exact")
    else:
        out = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out.squeeze(1) if images.ndim == 3 else out


def rotate(
    x: Tensor,
    angles: Tensor,
    *,
    fill: float | Sequence[float] = 0.0,
    interpolation: str = "nearest",
) -> Tensor:
    """Rotate each image of ``x`` ``[N, C, H, W]`` by ``angles[n]`` degrees counter-clockwise about its
    center (output size unchanged); pixels that come from outside the image get ``fill`` (one value or one
    per channel).

    >>> img = torch.arange(4.0).view(1, 1, 2, 2)
    >>> torch.equal(rotate(img, torch.tensor([90.0])), torch.rot90(img, 1, dims=(2, 3)))
    True
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float [N, C, H, W] tensor, got {x.dtype} {tuple(x.shape)}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    n, c, h, w = x.shape
    if angles.shape != (n,):
        raise ValueError(f"need one angle per image: angles {tuple(angles.shape)} for {n} images")
    rad = angles.to(device=x.device, dtype=torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # Inverse map from output to input pixel coordinates (x right, y down, origin at the center): a
    # counter-clockwise turn on screen is clockwise in these axes, so p_in = R(-a)^T p_out. The aspect
    # factors convert between affine_grid's normalized coordinates and pixels for non-square images.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=x.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta.to(x.dtype), [n, c, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if fill_t.shape[1] not in (1, c):
        raise ValueError(f"fill must be one value or {c} values, got {fill_t.shape[1]}")
    if bool((fill_t != 0).any()):
        # Sampling a ones image tells how much of each output pixel came from inside the input.
        inside = F.grid_sample(
            torch.ones_like(x[:, :1]), grid, mode=interpolation, padding_mode="zeros", align_corners=False
        )
        out = out + (1.0 - inside) * fill_t
    return out


def random_rotation(
    x: Tensor,
    degrees: float | tuple[float, float],
    generator: torch.Generator | None = None,
    *,
    fill: float | Sequence[float] = 0.0,
    interpolation: str = "nearest",
) -> Tensor:
    """``RandomRotation(degrees)`` for a batch ``[N, C, H, W]``: one angle per image, uniform in
    ``[-degrees, degrees]`` (or in ``degrees = (lo, hi)``), drawn from ``generator`` (a CPU generator).

    Apply it to training batches only. When ``x`` is already normalized, pass as ``fill`` the normalized
    value of black (``-mean / std``) to match torchvision, which rotates before normalizing.
    """
    lo, hi = (-float(degrees), float(degrees)) if isinstance(degrees, (int, float)) else map(float, degrees)
    if lo > hi:
        raise ValueError(f"degrees range must satisfy lo <= hi, got ({lo}, {hi})")
    u = torch.rand(x.shape[0], generator=generator, dtype=torch.float64)
    return rotate(x, lo + (hi - lo) * u, fill=fill, interpolation=interpolation)
