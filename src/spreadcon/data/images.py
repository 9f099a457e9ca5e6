"""Reading image files into one uint8 tensor (at load time; the training path never sees PIL).

Every image becomes 8 bits per channel. 16-bit grey files (PNG, TIFF) are scaled, value / 257,
with one warning per dataset naming the first such file (Pillow's own conversion would clip them
at 255); Pillow already reads 16-bit colour PNGs as 8-bit. Float images are refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from spreadcon.data.paths import corrupt

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


MODES = ("RGB", "L")  # what a dataset can be read as: 3 channels or 1
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's 16- and 32-bit integer grey images


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"dataset option mode must be one of {list(MODES)} (colour or grey), got {mode!r}")
    return mode


def to_8bit(im: Any, path: Path) -> tuple[Any, bool]:
    """(an 8-bit image, whether it was 16-bit). Pillow's convert() clips a 16-bit grey image at
    255, so its values are scaled here instead: value / 257 (65535 -> 255, rounded), no
    information clipped. 32-bit integer images holding values beyond 0..65535, and float
    images, have no one 8-bit reading: refused naming the file."""
    from PIL import Image

    if im.mode == "F":
        raise ValueError(f"{path} is a floating-point image (Pillow mode F); save it as an 8-bit or 16-bit image")
    if im.mode not in WIDE_MODES:
        return im, False
    a = np.asarray(im)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"{path} is a 32-bit integer image with values {a.min()}..{a.max()}, outside the 16-bit "
                         f"range 0..65535; save it as an 8-bit or 16-bit image")
    return Image.fromarray(np.round(a.astype(np.float64) / 257.0).astype(np.uint8), mode="L"), True


def decode(path: Path, size: int | None, mode: str = "RGB") -> tuple[np.ndarray, bool]:
    """([H, W, C] uint8, whether the file was 16-bit). With `size`: shorter side resized to `size`
    (bilinear), centre crop size x size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im, wide = to_8bit(im, path)
            im = im.convert(mode)
            if size is not None:
                w, h = im.size
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
                left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
                im = im.crop((left, top, left + size, top + size))
            array = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"missing image {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise corrupt(path, f"PIL cannot decode it ({err})") from None
    return (array[:, :, None] if array.ndim == 2 else array), wide


def warn_16bit(wide: list[Path], total: int) -> None:
    """One warning for all the 16-bit files of a dataset, naming the first."""
    if wide:
        warnings.warn(f"{len(wide)} of {total} images are 16-bit (first: {wide[0]}); they were scaled to 8 bits "
                      f"(value / 257, nothing clipped). Save them as 8-bit images to silence this warning",
                      stacklevel=3)


def read_image(path: Path, size: int | None, mode: str = "RGB") -> np.ndarray:
    """[H, W, C] uint8 (see `decode`); a 16-bit file is scaled to 8 bits with a warning."""
    array, wide = decode(path, size, check_mode(mode))
    warn_16bit([path] if wide else [], 1)
    return array


def read_images(paths: Sequence[Path], size: int | None, mode: str = "RGB") -> Tensor:
    """[N, C, S, S] uint8 for a list of image files (all the same size when `size` is None).
    16-bit files are scaled to 8 bits, with one warning for all of them."""
    if size is not None and size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {size}")
    if not paths:
        raise ValueError("no images to read")
    check_mode(mode)
    first, wide = decode(paths[0], size, mode)
    seen_wide = [paths[0]] if wide else []
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)  # filled in place: no second copy
    out[0] = first
    for i, path in enumerate(paths[1:], start=1):
        image, wide = decode(path, size, mode)
        if image.shape != first.shape:
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is "
                             f"{first.shape[1]}x{first.shape[0]}: pass image_size=S to resize every image")
        out[i] = image
        if wide:
            seen_wide.append(path)
    warn_16bit(seen_wide, len(paths))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
