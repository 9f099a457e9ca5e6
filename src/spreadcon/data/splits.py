"""Seeded, stratified splitting: every dataset gets train / val / test.

Where a source has no validation split, 10% of train is held out (SPEC: model selection uses a
seeded 10% of train). Splits are stratified by the finest label we have (the stratum), so every
class and every stratum keeps its proportion: exactly round(fraction * n) rows move, shared
out over the strata by largest remainder.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from spreadcon.data.base import SPLITS
from spreadcon.data.validate import as_fraction


def allocate(n: int, weights: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Integer counts summing to n, proportional to weights (largest remainder; ties broken by rng)."""
    share = n * np.asarray(weights, dtype=float) / np.sum(weights)
    counts = np.floor(share).astype(np.int64)
    tie = rng.random(len(share)) if rng is not None else np.zeros(len(share))
    order = np.lexsort((tie, -(share - counts)))  # largest remainder first
    counts[order[: n - counts.sum()]] += 1
    return counts


def stratified_pick(strata: Tensor, fraction: float, seed: int) -> Tensor:
    """bool [N]: round(fraction * N) rows, spread over the strata in proportion to their sizes
    (largest remainder), chosen uniformly inside each stratum (seeded)."""
    fraction = as_fraction("fraction", fraction, low_open=False, high_open=False)
    rng = np.random.default_rng(seed)
    values = strata.cpu().numpy()
    groups, sizes = np.unique(values, return_counts=True)
    quotas = allocate(int(round(fraction * len(values))), sizes, rng)
    picked = np.zeros(len(values), dtype=bool)
    for s, quota in zip(groups, quotas):
        rows = np.flatnonzero(values == s)
        picked[rng.permutation(rows)[:quota]] = True
    return torch.from_numpy(picked)


def hold_out(split: Tensor, strata: Tensor, fraction: float, seed: int,
             source: str = "train", target: str = "val") -> Tensor:
    """A copy of `split` [N] where a stratified `fraction` of the `source` rows move to `target`."""
    rows = torch.nonzero(split == SPLITS[source]).squeeze(1)
    moved = rows[stratified_pick(strata[rows], fraction, seed)]
    out = split.clone()
    out[moved] = SPLITS[target]
    return out


def train_val_test(strata: Tensor, test_fraction: float, val_fraction: float, seed: int) -> Tensor:
    """split [N] int64 for a source with no splits: test first, then val out of the rest."""
    split = torch.zeros(len(strata), dtype=torch.int64)
    split = hold_out(split, strata, test_fraction, seed, target="test")
    return hold_out(split, strata, val_fraction, seed + 1)


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Refuse a fraction outside (0, 1) (or [0, 1) with allow_zero), a bool, NaN or a non-number."""
    return as_fraction(name, value, low_open=not allow_zero)
