"""Reading image files into one uint8 tensor (at load time; the training path never sees PIL)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from spreadcon.data.paths import corrupt

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_image(path: Path, size: int | None, mode: str = "RGB") -> np.ndarray:
    """[H, W, C] uint8. With `size`: shorter side resized to `size` (bilinear), centre crop size x size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
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
    return array[:, :, None] if array.ndim == 2 else array


def read_images(paths: Sequence[Path], size: int | None, mode: str = "RGB") -> Tensor:
    """[N, C, S, S] uint8 for a list of image files (all the same size when `size` is None)."""
    if size is not None and size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {size}")
    if not paths:
        raise ValueError("no images to read")
    first = read_image(paths[0], size, mode)
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)  # filled in place: no second copy
    out[0] = first
    for i, path in enumerate(paths[1:], start=1):
        image = read_image(path, size, mode)
        if image.shape != first.shape:
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is "
                             f"{first.shape[1]}x{first.shape[0]}: pass image_size=S to resize every image")
        out[i] = image
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
