"""Seeded transformations of a loaded dataset: label noise, subsampling, labelled fraction.

Each returns a new StrataDataset (the input is untouched) and appends a JSON record to
`transforms`, so a run's config says exactly what was done. All act on the train split only;
val and test stay as loaded. Compose them in the order subsample -> noise -> labelled fraction
(as the trainer does); each is deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
import torch

from spreadcon.data.base import StrataDataset
from spreadcon.data.splits import check_fraction, stratified_pick
from spreadcon.data.validate import as_fraction, as_number


def train_rows(ds: StrataDataset) -> torch.Tensor:
    rows = ds.rows("train")
    if len(rows) == 0:
        raise ValueError(f"{ds.name} has no training rows to transform")
    return rows


def add_label_noise(ds: StrataDataset, rate: float, seed: int) -> StrataDataset:
    """Symmetric label noise on the train split (SPEC, Section 5.2).

    Exactly round(rate * n_train) training rows, chosen uniformly, get a label drawn uniformly
    from the K - 1 other classes. `clean_label` keeps the labels as they were before the first
    noise (so evaluation can compare); strata, splits and val/test labels are unchanged.
    """
    rate = check_fraction("noise rate", rate, allow_zero=True)
    seed = as_number("seed", seed, integer=True)
    if ds.num_classes < 2:
        raise ValueError("label noise needs at least 2 classes")
    rows = train_rows(ds)
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(rows)))
    flip = torch.from_numpy(rng.permutation(len(rows))[:n_flip]).long()
    shift = torch.from_numpy(rng.integers(1, ds.num_classes, size=n_flip)).long()  # 1..K-1: never the same class
    label = ds.label.clone()
    label[rows[flip]] = (label[rows[flip]] + shift) % ds.num_classes
    clean = ds.clean_label if ds.clean_label is not None else ds.label.clone()
    record = {"transform": "label_noise", "rate": rate, "seed": seed, "flipped": n_flip}
    return ds.with_transform(record, label=label, clean_label=clean)


def subsample(ds: StrataDataset, fraction: float, seed: int, stratified: bool = True) -> StrataDataset:
    """Keep round(fraction * n_train) training rows (val/test untouched).

    stratified=True spreads the kept rows over the training classes (`label`) in proportion;
    the hidden strata are never used, so rare strata may vanish, as in Appendix C.2.
    `origin` maps the kept rows back to the dataset as loaded.
    """
    fraction = as_fraction("subsample fraction", fraction, high_open=False)
    seed = as_number("seed", seed, integer=True)
    rows = train_rows(ds)
    by = ds.label[rows] if stratified else torch.zeros(len(rows), dtype=torch.int64)
    keep = torch.ones(len(ds), dtype=torch.bool)
    keep[rows] = stratified_pick(by, fraction, seed)
    if not keep[rows].any():
        raise ValueError(f"subsample fraction {fraction} of {len(rows)} training rows keeps none of them")
    out = ds.subset(keep)
    record = {"transform": "subsample", "fraction": fraction, "seed": seed, "stratified": stratified,
              "kept": int(keep[rows].sum())}
    out.transforms = [*ds.transforms, record]
    return out


def labelled_fraction(ds: StrataDataset, fraction: float, seed: int) -> StrataDataset:
    """ds.labelled [N] bool: round(fraction * n_train) training rows, spread over the classes
    in proportion, may show their label to the cross-entropy head; val/test rows are True.

    With label noise, classes are those of `clean_label` (SPEC: the CE head trains on a clean
    fraction of the labels; the trainer reads clean_label for these rows).
    """
    fraction = as_fraction("labelled fraction", fraction, high_open=False)
    seed = as_number("seed", seed, integer=True)
    rows = train_rows(ds)
    classes = (ds.clean_label if ds.clean_label is not None else ds.label)[rows]
    labelled = torch.ones(len(ds), dtype=torch.bool)
    labelled[rows] = stratified_pick(classes, fraction, seed)
    record = {"transform": "labelled_fraction", "fraction": fraction, "seed": seed,
              "labelled": int(labelled[rows].sum())}
    return ds.with_transform(record, labelled=labelled)
