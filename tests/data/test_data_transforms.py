"""Label noise, subsampling and the labelled fraction: exact counts, seeds, records."""

from __future__ import annotations

import json

import pytest
import torch

from spreadcon.data import add_label_noise, labelled_fraction, load, subsample


@pytest.fixture(scope="module")
def ds():
    return load("strata", n=5000, K=4, m=2, d=4)


def test_noise_flips_exactly_round_rate_n_and_keeps_clean_labels(ds):
    n_train = int((ds.split == 0).sum())
    noisy = add_label_noise(ds, 0.3, seed=1)
    train = noisy.split == 0
    flipped = noisy.label != noisy.clean_label
    assert int(flipped.sum()) == round(0.3 * n_train)
    assert not flipped[~train].any()  # val / test untouched
    assert torch.equal(noisy.clean_label, ds.label) and torch.equal(noisy.stratum, ds.stratum)
    assert ds.clean_label is None and torch.equal(ds.label, load("strata", n=5000, K=4, m=2, d=4).label)
    # flipped labels go uniformly to the K - 1 other classes
    moved = (noisy.label[flipped] - noisy.clean_label[flipped]) % 4
    counts = torch.bincount(moved, minlength=4)
    assert counts[0] == 0 and (counts[1:].float() / counts[1:].sum() - 1 / 3).abs().max() < 0.05
    assert noisy.transforms == [{"transform": "label_noise", "rate": 0.3, "seed": 1, "flipped": int(flipped.sum())}]


def test_noise_is_deterministic_per_seed_and_refuses_bad_rates(ds):
    a, b, c = (add_label_noise(ds, 0.2, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.label, b.label) and not torch.equal(a.label, c.label)
    assert torch.equal(add_label_noise(ds, 0.0, seed=0).label, ds.label)
    twice = add_label_noise(a, 0.1, seed=2)
    assert torch.equal(twice.clean_label, ds.label) and len(twice.transforms) == 2
    for rate in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"noise rate must lie in \[0, 1\)"):
            add_label_noise(ds, rate, seed=0)


def test_subsample_counts_stratification_origin(ds):
    n_train = int((ds.split == 0).sum())
    sub = subsample(ds, 0.1, seed=3)
    assert int((sub.split == 0).sum()) == round(0.1 * n_train)
    for s in (1, 2):  # val / test unchanged
        assert torch.equal(sub.x[sub.split == s], ds.x[ds.split == s])
    assert torch.equal(ds.x[sub.origin], sub.x) and torch.equal(ds.label[sub.origin], sub.label)
    per_class = torch.bincount(sub.label[sub.split == 0]).float()
    full = torch.bincount(ds.label[ds.split == 0]).float()
    assert ((per_class - 0.1 * full).abs() <= 1).all()  # proportional up to rounding
    assert torch.equal(subsample(ds, 0.1, seed=3).origin, sub.origin)
    assert not torch.equal(subsample(ds, 0.1, seed=4).origin, sub.origin)
    assert int((subsample(ds, 0.1, seed=3, stratified=False).split == 0).sum()) == round(0.1 * n_train)
    assert sub.transforms[-1]["transform"] == "subsample" and sub.transforms[-1]["kept"] == round(0.1 * n_train)
    for fraction in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError, match=r"subsample fraction must lie in \(0, 1\]"):
            subsample(ds, fraction, seed=0)


def test_labelled_fraction_mask(ds):
    noisy = add_label_noise(ds, 0.4, seed=0)
    lab = labelled_fraction(noisy, 0.05, seed=0)
    train = lab.split == 0
    assert lab.labelled.dtype == torch.bool and lab.labelled[~train].all()
    assert int(lab.labelled[train].sum()) == round(0.05 * int(train.sum()))
    per_class = torch.bincount(lab.clean_label[train & lab.labelled], minlength=4)
    assert per_class.min() >= per_class.max() - 1  # spread over the clean classes
    assert torch.equal(labelled_fraction(noisy, 0.05, seed=0).labelled, lab.labelled)
    with pytest.raises(ValueError, match="labelled fraction"):
        labelled_fraction(ds, 0.0, seed=0)


def test_composed_transforms_are_recorded_as_json(ds):
    out = labelled_fraction(add_label_noise(subsample(ds, 0.5, seed=0), 0.2, seed=0), 0.1, seed=0)
    assert [t["transform"] for t in out.transforms] == ["subsample", "label_noise", "labelled_fraction"]
    json.dumps(out.transforms)
    assert ds.transforms == []  # the input is never changed
