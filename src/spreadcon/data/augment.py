"""Batched geometric augmentations on tensors (crops, flips, shifts): one call per batch.

Every function takes images x [M, C, H, W] float in [0, 1] (any device) and a torch.Generator
(or None for torch's default one). Random parameters are drawn on the generator's device, then
moved to x's device, so a CPU generator drives CUDA data and results do not depend on where the
images live. Formulas follow torchvision.transforms.v2 (references per function).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None,
            device: torch.device) -> Tensor:
    """U(low, high) of `shape`, drawn on the generator's device, returned on `device`."""
    where = generator.device if generator is not None else torch.device("cpu")
    return (low + (high - low) * torch.rand(shape, generator=generator, device=where)).to(device)


def bernoulli(m: int, p: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """bool [M] with P(True) = p."""
    return uniform((m,), 0.0, 1.0, generator, device) < p


def resized_crop(x: Tensor, generator: torch.Generator | None, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.0,
                 size: tuple[int, int] | None = None) -> Tensor:
    """RandomResizedCrop (+ horizontal flip) for a whole batch via one affine_grid/grid_sample.

    Per image: area fraction s ~ U(scale), log aspect ratio r ~ U(log ratio), r then clamped to
    the ratios for which a box of area s fits in the image (torchvision instead redraws up to 10
    times, then falls back to a centre crop; both keep the area, ours in one pass); the box is
    placed uniformly and resized bilinearly to `size` (default: the input size) without
    antialiasing (crops of CIFAR-size images are only ever enlarged).
    """
    m, c, h, w = x.shape
    out_h, out_w = size or (h, w)
    s = uniform((m,), *scale, generator, x.device)
    r = torch.exp(uniform((m,), math.log(ratio[0]), math.log(ratio[1]), generator, x.device))
    r = torch.minimum(torch.maximum(r, s * w / h), w / (s * h))  # pixel aspect w/h that fits
    box_w = torch.sqrt(s * r * h / w).clamp(max=1.0)  # fractions of the width / height
    box_h = (s / box_w).clamp(max=1.0)
    cx = (1 - box_w) * uniform((m,), -1.0, 1.0, generator, x.device)  # centre in [-1, 1] coordinates
    cy = (1 - box_h) * uniform((m,), -1.0, 1.0, generator, x.device)
    flip = bernoulli(m, flip_p, generator, x.device)
    return crop_resize(x, cx, cy, box_w, box_h, flip, size=(out_h, out_w))


def crop_resize(x: Tensor, cx: Tensor, cy: Tensor, box_w: Tensor, box_h: Tensor, flip: Tensor, *,
                size: tuple[int, int]) -> Tensor:
    """Crop box b (centre cx, cy in [-1, 1] image coordinates, width/height as fractions of the
    image) out of image b, mirror it where flip[b], resize bilinearly to `size`. All [M]."""
    m, c = x.shape[:2]
    sign = 1.0 - 2.0 * flip.to(x.dtype)
    theta = torch.zeros(m, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = box_w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = box_h, cy
    grid = F.affine_grid(theta, [m, c, *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def shift(x: Tensor, generator: torch.Generator | None, pad: int) -> Tensor:
    """RandomCrop(size, padding=pad) with zero padding: each image moves by whole pixels in [-pad, pad]."""
    m, _, h, w = x.shape
    where = generator.device if generator is not None else torch.device("cpu")
    moves = torch.randint(-pad, pad + 1, (m, 2), generator=generator, device=where).to(x.device, x.dtype)
    theta = torch.zeros(m, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2], theta[:, 1, 2] = 2 * moves[:, 0] / w, 2 * moves[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
