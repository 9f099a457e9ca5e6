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

A timm/torchvision encoder sees the data as its pretrained configuration expects: `fit_to_model`
records the model's input size and mean/std in `ds.meta["model_input"]` (spreadcon.build does it),
and the views then end (augmentations and `prepare` alike) with a resize to that size and the
model's normalisation. Without that record (spreadcon's own encoders) nothing is resized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from spreadcon.data import augment, colour
from spreadcon.data.base import StrataDataset

RESIZE_MODES = ("nearest", "bilinear", "bicubic")  # the interpolations torchvision's tensor resize has


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
    size: tuple[int, int] | None = None  # output H x W (a pretrained model's input size); None: the data's own
    interpolation: str = "bilinear"      # of that resize: one of RESIZE_MODES

    def __post_init__(self) -> None:
        if self.kind not in ("simclr", "digits", "vector", "none"):
            raise ValueError(f"unknown views kind {self.kind!r}; choose simclr, digits, vector or none")
        if self.size is not None:
            self.size = tuple(int(s) for s in self.size)
            if len(self.size) != 2 or min(self.size) < 1:
                raise ValueError(f"views size={self.size}: give (H, W) of positive ints, or None for the data's own")
        if self.interpolation not in RESIZE_MODES:
            raise ValueError(f"views interpolation={self.interpolation!r}; choose one of {list(RESIZE_MODES)}")

    def prepare(self, x: Tensor) -> Tensor:
        """Raw batch [B, ...] -> float [B, ...]: images scaled to [0, 1], resized to `size` (if set)
        and normalised."""
        if self.kind == "vector" or x.dim() == 2:
            return x.float()
        return self.finish(to_unit(x))

    def finish(self, x: Tensor) -> Tensor:
        """Images [..., C, H, W] in [0, 1] -> [..., C, *size] resized (if `size`) and normalised: the
        last step of `prepare` and of the views. Vectors pass unchanged."""
        if self.kind == "vector" or x.dim() < 4:
            return x
        return self.normalise(x if self.size is None else resize(x, self.size, self.interpolation))

    def normalise(self, x: Tensor) -> Tensor:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def __call__(self, x: Tensor, n_views: int = 2, generator: torch.Generator | None = None) -> Tensor:
        """Raw batch [B, ...] -> float [B, V, ...], V = n_views independent augmentations (images
        [B, V, C, *size] when `size` is set)."""
        return self.finish(self.augmented(x, n_views, generator))

    def augmented(self, x: Tensor, n_views: int = 2, generator: torch.Generator | None = None) -> Tensor:
        """The views before `finish`: raw [B, ...] -> [B, V, ...] (images in [0, 1] at the data's size,
        so that a caller holding many views can resize them batch by batch)."""
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        b, rest = x.shape[0], x.shape[1:]
        if self.kind == "vector" or x.dim() == 2:
            flat = x.float().unsqueeze(1).expand(b, n_views, *rest).reshape(b * n_views, *rest)
            noise = torch.randn(flat.shape, generator=generator,
                                device=generator.device if generator is not None else "cpu").to(x.device)
            return (flat + self.noise_std * noise).view(b, n_views, *rest)
        flat = to_unit(x).unsqueeze(1).expand(b, n_views, *rest).reshape(b * n_views, *rest)
        return self.augment(flat, generator).view(b, n_views, *rest)

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


def resize(x: Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> Tensor:
    """Images [..., C, H, W] in [0, 1] -> [..., C, *size]: torchvision.transforms.v2's Resize
    (antialiased) on the whole batch, on its device; bicubic is clamped to [0, 1] as PIL's resize
    of 8-bit images is. Not timm.data.create_transform: it builds a per-image PIL pipeline (and at
    evaluation a centre crop of crop_pct), while our images are one tensor already in memory. The
    whole image is kept (no centre crop): the data's framing stays, the training views crop on
    their own."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = TF.resize(x, list(size), interpolation=TF.InterpolationMode(interpolation), antialias=True)
    return out.clamp(0.0, 1.0) if interpolation == "bicubic" else out


def fit_to_model(ds: StrataDataset, data_config: dict[str, Any], encoder: str) -> StrataDataset:
    """`ds` whose views resize to a pretrained model's input size and normalise with its mean/std.

    data_config: spreadcon.models.data_config of `encoder` for the data's channels
    ({"input_size": (C, H, W), "mean": C floats, "std": C floats, "interpolation"}). The images
    stay as loaded (resizing happens batch by batch); ds.meta["model_input"] holds the settings
    and a "model_input" record is appended to `transforms` (part of the run's data fingerprint)."""
    if not ds.is_image:
        raise ValueError(f"{ds.name} holds vectors; only images can be fitted to encoder {encoder!r}'s input size")
    c, h, w = (int(s) for s in data_config["input_size"])
    mean, std = [float(m) for m in data_config["mean"]], [float(s) for s in data_config["std"]]
    if c != ds.x.shape[1] or len(mean) != c or len(std) != c:
        raise ValueError(f"encoder {encoder!r}: its input config {data_config} is for {c} channels, the images "
                         f"of {ds.name} have {ds.x.shape[1]}; take models.data_config(name, in_chans={ds.x.shape[1]})")
    mode = str(data_config.get("interpolation", "bilinear"))
    fit = {"size": [h, w], "mean": mean, "std": std,
           "interpolation": mode if mode in RESIZE_MODES else "bilinear"}  # PIL-only modes (lanczos, box) -> bilinear
    record = {"transform": "model_input", "encoder": encoder, **fit}
    return ds.with_transform(record, meta={**ds.meta, "model_input": fit})


RECIPES = ("ours", "authors")


def default_views(ds: StrataDataset, recipe: str = "ours", *, model_input: bool = True) -> Views:
    """The dataset's default views, normalised by its train statistics, or, where `fit_to_model`
    set ds.meta["model_input"] (and model_input=True), resized to the model's input size and
    normalised with its mean/std.

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
    fit = ds.meta.get("model_input") if model_input else None
    mean = tuple((fit or ds.meta).get("mean", [0.5] * c))
    std = tuple((fit or ds.meta).get("std", [0.25] * c))
    resize_to = {"size": tuple(fit["size"]), "interpolation": fit["interpolation"]} if fit else {}
    if recipe == "authors":
        return Views(kind="simclr", mean=mean, std=std, gray_p=0.2 if c == 3 else 0.0, **resize_to)
    pad = max(1, round(ds.x.shape[-1] / 14))  # 2 px at 28 px (MNIST), 1 px at 8 px (digits)
    return Views(kind=kind, mean=mean, std=std, pad=pad, **resize_to)
