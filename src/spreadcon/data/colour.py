"""Batched colour augmentations (torchvision's ColorJitter and RandomGrayscale, per image
factors, one call per batch). Images x [M, C, H, W] float in [0, 1]; formulas as
torchvision.transforms.v2.functional (adjust_brightness, _contrast, _saturation, _hue).
"""

from __future__ import annotations

import torch
from torch import Tensor

from spreadcon.data.augment import bernoulli, uniform

GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, the constants of torchvision's rgb_to_grayscale


def grayscale(x: Tensor) -> Tensor:
    """[M, 3, H, W] -> [M, 1, H, W] luma."""
    weights = torch.tensor(GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """clamp(factor * x + (1 - factor) * other), factor [M] (torchvision's _blend)."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """[M, 3, H, W] RGB in [0, 1] -> HSV with hue in [0, 1) (torchvision's _rgb_to_hsv)."""
    r, g, b = x.unbind(1)
    minc, maxc = torch.aminmax(x, dim=1)
    delta = maxc - minc
    sat = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    is_r, is_g = maxc == r, (maxc == g) & (maxc != r)
    hue = torch.where(is_r, g - b, torch.where(is_g, 2.0 * safe + b - r, 4.0 * safe + r - g)) / safe
    return torch.stack([(hue / 6.0) % 1.0, sat, maxc], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Inverse of rgb_to_hsv: channel n of (R, G, B) = v - v s clamp(min(k, 4 - k), 0, 1),
    k = (n' + 6 h) mod 6 with n' = 5, 3, 1 (a closed form without the six-sector table)."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + 6.0 * h) % 6.0
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def colour_jitter(x: Tensor, generator: torch.Generator | None, *,
                  strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1), p: float = 1.0,
                  random_order: bool = True) -> Tensor:
    """ColorJitter with probability p per image (torchvision's RandomApply([ColorJitter(...)], p)):
    factors ~ U(1 - v, 1 + v), hue shift ~ U(-hue, hue), the four adjustments in a random order
    per image as torchvision draws it (random_order=False: always brightness, contrast,
    saturation, hue, which saves a few kernel launches). strength = (brightness, contrast,
    saturation, hue) as torchvision's ColorJitter arguments."""
    brightness, contrast, saturation, hue = strength
    m, device = x.shape[0], x.device
    apply = bernoulli(m, p, generator, device)
    factors = torch.stack([uniform((m,), 1 - brightness, 1 + brightness, generator, device),
                           uniform((m,), 1 - contrast, 1 + contrast, generator, device),
                           uniform((m,), 1 - saturation, 1 + saturation, generator, device),
                           uniform((m,), -hue, hue, generator, device)], 1)  # [M, 4]
    order = uniform((m, 4), 0.0, 1.0, generator, device).argsort(1)  # a uniform permutation per image
    rows = torch.nonzero(apply).squeeze(1)  # adjust only the images drawn for jitter
    out = x.clone()
    out[rows] = adjust_colour(x[rows], factors[rows], order[rows] if random_order else None)
    return out


def adjust_colour(x: Tensor, factors: Tensor, order: Tensor | None = None) -> Tensor:
    """Apply the adjustments OPS[j] with per-image factors[:, j] ([M, 4]: brightness, contrast,
    saturation, hue shift), image i in the order order[i] ([M, 4] permutations; None = 0, 1, 2, 3).
    Each stage runs one batched call per adjustment on the images due for it."""
    if order is None:
        for j, op in enumerate(OPS):
            x = op(x, factors[:, j])
        return x
    out = x.clone()
    for stage in range(4):
        for j, op in enumerate(OPS):
            rows = torch.nonzero(order[:, stage] == j).squeeze(1)
            if len(rows):
                out[rows] = op(out[rows], factors[rows, j])
    return out


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    return blend(x, torch.zeros_like(x), f)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    gray = grayscale(x) if x.shape[1] == 3 else x
    return blend(x, gray.mean((1, 2, 3), keepdim=True), f)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    return blend(x, grayscale(x), f) if x.shape[1] == 3 else x


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    if x.shape[1] != 3 or not shift.any():
        return x
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([(hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
    return hsv_to_rgb(hsv)


OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # as torchvision's adjust_* (saturation, hue: RGB only)


def random_grayscale(x: Tensor, generator: torch.Generator | None, p: float) -> Tensor:
    """RandomGrayscale(p) for 3-channel images: the luma copied to all three channels."""
    apply = bernoulli(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(apply, grayscale(x).expand_as(x), x)
