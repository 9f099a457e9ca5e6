"""Coarse labels over fine classes, and the unequal-strata (-U) variants.

A coarse dataset trains on the coarse `label`; the fine class becomes the hidden `stratum`
(SPEC, Appendix E.1). The -U variants make strata unequal inside each coarse class: the fine
class with the lowest original index keeps the most training points, the next fewer, etc.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from spreadcon.data.base import SPLITS, StrataDataset

DIGIT_COARSE = [0] * 5 + [1] * 5  # digit < 5 vs >= 5 (MNIST-Coarse)
DIGIT_COARSE_NAMES = ["digit < 5", "digit >= 5"]
CIFAR10_ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
CIFAR10_COARSE_NAMES = ["vehicle", "animal"]  # airplane, automobile, ship, truck vs the rest
CIFAR100_U_COUNTS = (500, 250, 100, 50, 50)  # SPEC: per superclass, by original fine index
DIGIT_U_FRACTIONS = (1.0, 0.5, 0.2, 0.1, 0.1)  # the issue: mnist5k-coarse-u


def cifar10_coarse_map(class_names: list[str]) -> list[int]:
    """fine -> coarse for CIFAR-10: 1 for the six animals, 0 for the four vehicles."""
    return [int(name in CIFAR10_ANIMALS) for name in class_names]


def assemble(name: str, x: Tensor, fine: Tensor, split: Tensor, fine_names: list[str], *,
             fine_to_coarse: list[int] | None = None, coarse_names: list[str] | None = None,
             group: Tensor | None = None, meta: dict | None = None) -> StrataDataset:
    """A StrataDataset whose stratum is the fine class; its label is the coarse class if given."""
    meta = dict(meta or {})
    if fine_to_coarse is None:
        label, class_names = fine.clone(), list(fine_names)
    else:
        label = torch.as_tensor(fine_to_coarse, dtype=torch.int64)[fine]
        class_names = list(coarse_names)
        meta["fine_to_coarse"] = [int(c) for c in fine_to_coarse]
    return StrataDataset(name=name, x=x, label=label, stratum=fine.clone(), split=split,
                         class_names=class_names, stratum_names=list(fine_names), group=group,
                         meta=meta)


def unequal_keep(fine: Tensor, split: Tensor, fine_to_coarse: list[int], seed: int, *,
                 counts: tuple[int, ...] | None = None,
                 fractions: tuple[float, ...] | None = None) -> Tensor:
    """bool [N]: the rows kept by a -U variant (non-train rows are always kept).

    Inside each coarse class, the fine classes in increasing original index keep `counts[r]`
    training points (capped at what exists) or round(fractions[r] * n) of their n training
    points, drawn without replacement (seeded).
    """
    rng = np.random.default_rng(seed)
    fine_np, train = fine.numpy(), (split == SPLITS["train"]).numpy()
    keep = ~train
    for coarse in sorted(set(fine_to_coarse)):
        members = [f for f, c in enumerate(fine_to_coarse) if c == coarse]
        rule = counts if counts is not None else fractions
        if len(members) > len(rule):
            raise ValueError(f"coarse class {coarse} has {len(members)} fine classes; "
                             f"the -U rule names only {len(rule)}")
        for rank, f in enumerate(members):
            rows = np.flatnonzero(train & (fine_np == f))
            n = counts[rank] if counts is not None else int(round(fractions[rank] * len(rows)))
            keep[rng.permutation(rows)[: min(n, len(rows))]] = True
    return torch.from_numpy(keep)


def val_from_removed(fine: Tensor, split: Tensor, keep: Tensor, fraction: float, seed: int) -> Tensor:
    """bool [N]: a validation set drawn from the training rows a -U variant removed, so that the
    kept training rows keep their exact counts (CIFAR100-Coarse-U: 500/250/100/50/50).

    Per fine class, round(fraction * n) of its n original training rows (50 of 500 at 10%),
    capped at what was removed: the largest fine class of each superclass keeps all its rows
    and has none to give, so its validation share is empty (docs/datasets.md)."""
    rng = np.random.default_rng(seed)
    fine_np, train = fine.numpy(), (split == SPLITS["train"]).numpy()
    removed = train & ~keep.numpy()
    val = np.zeros(len(fine_np), dtype=bool)
    for f in np.unique(fine_np[train]):
        quota = int(round(fraction * int((train & (fine_np == f)).sum())))
        rows = np.flatnonzero(removed & (fine_np == f))
        val[rng.permutation(rows)[:quota]] = True
    return torch.from_numpy(val)
