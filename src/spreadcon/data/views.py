"""Batched V-view augmentation: `views(x [B, ...], n_views, generator) -> float [B, V, ...]`.

Three families, chosen per dataset by `ds.meta["views"]` (set by the registry):

    "simclr"  SimCLR recipe for RGB images (authors' code, SPEC): random resized crop scale 0.2-1,
              horizontal flip 0.5, colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8 (random order of
              the four adjustments per image, as torchvision), grayscale p 0.2
    "digits"  crop/shift only: RandomCrop(size, padding=pad) (pad 2 px at 28 px), no flip
    "vector"  Gaussian feature noise, x + noise_std * N(0, I) (default: 0.1 x the mean per-feature
              standard deviation of the training vectors)

Images arrive raw (uint8 0..255, or float in [0, 1]); augmentation runs on [0, 1] floats, then
per-channel normalisation with the training set's mean/std. `prepare(x)` is the normalisation
alone (evaluation). out[b, v] is view v of image b. All random parameters come from
`generator` and are drawn on its device (data/augment.py), so a seeded CPU generator gives the
same views whether the images live on the CPU or on a GPU; None uses torch's default generator.
"none" applies no augmentation (normalisation only). `default_views(ds, recipe="authors")` gives
the authors' recipe (simclr family; for MNIST 28 px, no grayscale) next to ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from spreadcon.data import augment, colour
from spreadcon.data.base import StrataDataset


@dataclass
class Views:
    kind: str = "simclr"  # "simclr" | "digits" | "vector" | "none"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    jitter_random_order: bool = True  # torchvision's per-image random order of the four adjustments
    gray_p: float = 0.2
    pad: int = 2
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("simclr", "digits", "vector", "none"):
            raise ValueError(f"unknown views kind {self.kind!r}; choose simclr, digits, vector or none")

    def prepare(self, x: Tensor) -> Tensor:
        """Raw batch [B, ...] -> float [B, ...]: images scaled to [0, 1] and normalised."""
        if self.kind == "vector" or x.dim() == 2:
            return x.float()
        return self.normalise(to_unit(x))

    def normalise(self, x: Tensor) -> Tensor:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def __call__(self, x: Tensor, n_views: int = 2, generator: torch.Generator | None = None) -> Tensor:
        """Raw batch [B, ...] -> float [B, V, ...], V = n_views independent augmentations."""
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        b, rest = x.shape[0], x.shape[1:]
        if self.kind == "vector" or x.dim() == 2:
            flat = x.float().unsqueeze(1).expand(b, n_views, *rest).reshape(b * n_views, *rest)
            noise = torch.randn(flat.shape, generator=generator,
                                device=generator.device if generator is not None else "cpu").to(x.device)
            return (flat + self.noise_std * noise).view(b, n_views, *rest)
        flat = to_unit(x).unsqueeze(1).expand(b, n_views, *rest).reshape(b * n_views, *rest)
        return self.normalise(self.augment(flat, generator)).view(b, n_views, *rest)

    def augment(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """[M, C, H, W] in [0, 1] -> augmented [M, C, H, W] in [0, 1]."""
        if self.kind == "digits":
            return augment.shift(x, generator, self.pad) if self.pad > 0 else x
        if self.kind == "simclr":
            x = augment.resized_crop(x, generator, scale=self.crop_scale, flip_p=self.flip_p)
            x = colour.colour_jitter(x, generator, strength=self.jitter, p=self.jitter_p,
                                     random_order=self.jitter_random_order)
            return colour.random_grayscale(x, generator, self.gray_p) if x.shape[1] == 3 else x
        return x


def to_unit(x: Tensor) -> Tensor:
    """uint8 0..255 -> float32 0..1; float input is taken to be in [0, 1] already."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


RECIPES = ("ours", "authors")


def default_views(ds: StrataDataset, recipe: str = "ours") -> Views:
    """The dataset's default views, normalised by its train statistics.

    recipe="ours": the family in ds.meta["views"] (digits: shifts only). recipe="authors": the
    authors' image recipe for every image dataset (SPEC, recipe notes): random resized crop
    0.2-1 to the input size (28 px for MNIST), flip 0.5, colour jitter (0.4, 0.4, 0.4, 0.1)
    p 0.8, grayscale p 0.2 for RGB and none for one-channel digits (on one channel the jitter
    is brightness and contrast, as torchvision's ColorJitter does it)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown views recipe {recipe!r}; choose one of {list(RECIPES)}")
    kind = ds.meta.get("views") or ("vector" if not ds.is_image else "digits" if ds.x.shape[1] == 1 else "simclr")
    if recipe == "authors" and not ds.is_image:
        raise ValueError(f"recipe 'authors' is an image augmentation; {ds.name} holds vectors: use recipe='ours'")
    if kind == "vector":  # noise at 10% of the training features' typical spread
        train = ds.x[ds.rows("train")].float()
        scale = float(train.std(0).mean()) if len(train) > 1 else 1.0
        return Views(kind="vector", noise_std=float(ds.meta.get("noise_std", 0.1 * scale)))
    c = ds.x.shape[1]
    mean = tuple(ds.meta.get("mean", [0.5] * c))
    std = tuple(ds.meta.get("std", [0.25] * c))
    if recipe == "authors":
        return Views(kind="simclr", mean=mean, std=std, gray_p=0.2 if c == 3 else 0.0)
    pad = max(1, round(ds.x.shape[-1] / 14))  # 2 px at 28 px (MNIST), 1 px at 8 px (digits)
    return Views(kind=kind, mean=mean, std=std, pad=pad)
