"""Embedded datasets, the registry and its errors (spreadcon.data.load)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spreadcon import data
from spreadcon.data import SPLITS, load


def split_counts(ds, by=None):
    """{split name: bincount of `by` (default: stratum) in that split}."""
    by = ds.stratum if by is None else by
    return {s: torch.bincount(by[ds.split == i], minlength=int(by.max()) + 1).tolist() for s, i in SPLITS.items()}


# --- digits -------------------------------------------------------------------------------
def test_digits_is_sklearn_digits_scaled_to_bytes():
    from sklearn.datasets import load_digits

    ds = load("digits")
    ref = load_digits()
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == torch.uint8
    assert int(ds.x.max()) == 255 and int(ds.x.min()) == 0
    assert torch.equal(ds.x[:, 0].float(), torch.from_numpy(np.round(ref.images * 255 / 16)).float())
    assert torch.equal(ds.label, torch.from_numpy(ref.target)) and torch.equal(ds.label, ds.stratum)
    assert ds.class_names == [str(d) for d in range(10)] and ds.meta["views"] == "digits"
    counts = [int((ds.split == i).sum()) for i in range(3)]
    assert sum(counts) == 1797 and counts[2] == round(0.2 * 1797) and counts[1] == round(0.1 * (1797 - counts[2]))


def test_coarse_digits_label_is_digit_at_least_five_and_stratum_is_digit():
    fine, coarse = load("digits"), load("digits-coarse")
    assert torch.equal(coarse.stratum, fine.label) and torch.equal(coarse.split, fine.split)
    assert torch.equal(coarse.label, (fine.label >= 5).long())
    assert coarse.meta["fine_to_coarse"] == [0] * 5 + [1] * 5
    assert coarse.class_names == ["digit < 5", "digit >= 5"] and coarse.num_strata == 10


# --- mnist5k ------------------------------------------------------------------------------
def test_mnist5k_split_is_exact_and_stratified():
    ds = load("mnist5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == torch.uint8 and int(ds.x.max()) == 255
    counts = split_counts(ds)
    assert counts == {"train": [360] * 10, "val": [40] * 10, "test": [100] * 10}
    # real digits: the mean image of each digit is its own nearest class mean (sanity of the pixels)
    means = torch.stack([ds.x[ds.label == d].float().mean(0).flatten() for d in range(10)])
    assert torch.equal(torch.cdist(means, means).argmin(1), torch.arange(10))


def test_mnist5k_coarse_and_seeds():
    a, b, c = load("mnist5k-coarse"), load("mnist5k-coarse"), load("mnist5k-coarse", seed=1)
    assert torch.equal(a.split, b.split) and not torch.equal(a.split, c.split)
    assert torch.equal(a.label, (a.stratum >= 5).long())
    assert split_counts(a, a.label)["train"] == [1800, 1800]


def test_mnist5k_coarse_u_counts():
    u, full = load("mnist5k-coarse-u"), load("mnist5k-coarse")
    pool = split_counts(u)  # test first (100 per digit), then 400 per digit kept 100/50/20/10/10 %
    assert pool["train"] == [400, 200, 80, 40, 40] * 2  # exactly the rule's counts are trained on
    assert pool["val"] == [0, 40, 40, 40, 40] * 2  # 10% of 400, from the removed rows (none left for the whole digit)
    assert pool["test"] == [100] * 10
    # the test split is the same as mnist5k-coarse's (same seed); kept rows are real rows of it
    index = torch.tensor(u.meta["source_index"])
    assert torch.equal(u.x, full.x[index]) and torch.equal(u.stratum, full.stratum[index])
    assert torch.equal(full.split[index][u.split == 2], u.split[u.split == 2])


# --- strata ---------------------------------------------------------------------------------
def test_strata_follows_the_generative_model():
    ds = load("strata", n=4000, K=2, m=3, d=8, rare=0.1)
    assert ds.x.shape == (4000, 8) and ds.x.dtype == torch.float32
    assert torch.equal(ds.label, ds.stratum // 3) and ds.num_strata == 6
    counts = torch.bincount(ds.stratum).tolist()
    assert counts == [953, 952, 95] * 2  # per class 2000 * (1, 1, 0.1) / 2.1, largest remainder
    assert abs(sum(ds.meta["stratum_probs"]) - 1) < 1e-5 and ds.meta["views"] == "vector"
    # strata are distinct clusters: nearest generating centre recovers the stratum
    centres = torch.tensor(ds.meta["centres"], dtype=torch.float32)
    assert (torch.cdist(ds.x, centres).argmin(1) == ds.stratum).float().mean() > 0.9


def test_strata_custom_probabilities_and_errors():
    ds = load("strata", n=600, K=3, m=2, stratum_probs=[3, 1])
    assert torch.bincount(ds.stratum).tolist() == [150, 50] * 3
    with pytest.raises(ValueError, match="stratum_probs must be 2 positive"):
        load("strata", m=2, stratum_probs=[1, 2, 3])
    with pytest.raises(ValueError, match="K >= 2"):
        load("strata", K=1)


# --- spurious-mnist -------------------------------------------------------------------------
def test_spurious_mnist_groups_and_correlation():
    ds = load("spurious-mnist")
    assert ds.x.shape == (5000, 3, 28, 28) and ds.x.dtype == torch.uint8
    digit = torch.tensor(ds.meta["digit"])
    assert torch.equal(ds.label, (digit >= 5).long())
    assert torch.equal(ds.group, ds.stratum) and ds.num_strata == 4
    place = ds.group - 2 * ds.label
    for split, p in (("train", 0.95), ("val", 0.5), ("test", 0.5)):
        for y in (0, 1):
            rows = (ds.split == SPLITS[split]) & (ds.label == y)
            assert int((place[rows] == y).sum()) == round(p * int(rows.sum()))
    # the background is visible: corner pixels are warm (red > blue) for place 0, cool for place 1
    corner = ds.x[:, :, :3, :3].float().mean((2, 3))
    assert ((corner[:, 0] > corner[:, 2]).long() == (place == 0).long()).all()
    assert ds.meta["views"] == "simclr"


# --- registry and errors --------------------------------------------------------------------
def test_meta_records_what_was_asked_for():
    ds = load("strata", seed=3, n=500)
    assert ds.meta["dataset"] == "strata" and ds.meta["seed"] == 3 and ds.meta["options"] == {"n": 500}
    json.dumps(ds.meta)  # a run config can store it
    assert torch.equal(ds.origin, torch.arange(500))
    img = load("digits")
    assert len(img.meta["mean"]) == 1 and 0 < img.meta["mean"][0] < 1 and img.meta["std"][0] > 0
    train = img.x[img.split == 0].float() / 255
    assert abs(img.meta["mean"][0] - train.mean().item()) < 1e-5
    assert abs(img.meta["std"][0] - train.std().item()) < 1e-3


def test_every_registered_dataset_describes_itself():
    for name, info in data.DATASETS.items():
        assert info.description and info.views in ("simclr", "digits", "vector", "auto"), name
        json.dumps(info.options)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'.*cifar10.*mnist5k"):
        load("cifar11")


def test_unknown_and_nonsense_options_are_refused():
    with pytest.raises(ValueError, match=r"(?s)no option\(s\) \[.colour.\].*test_fraction"):
        load("digits", colour=True)
    with pytest.raises(ValueError, match="coarse"):  # fixed by the registry entry
        load("digits-coarse", coarse=False)
    with pytest.raises(ValueError, match="test_fraction must lie in"):
        load("digits", test_fraction=0.0)
    with pytest.raises(ValueError, match="JSON"):
        load("strata", stratum_probs=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="correlation"):
        load("spurious-mnist", correlation=1.5)


def test_file_dataset_without_root_says_what_to_put_where(tmp_path):
    with pytest.raises(ValueError, match="(?s)pass root=DIR.*cifar-10-batches-py/data_batch_1"):
        load("cifar10")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load("mnist", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load("waterbirds", root=tmp_path / "nowhere")


def test_get_split_and_subset_keep_rows_aligned():
    ds = load("digits-coarse")
    val = ds.get_split("val")
    assert len(val) == int((ds.split == 1).sum()) and (val.split == 1).all()
    assert torch.equal(ds.x[val.origin], val.x) and torch.equal(ds.stratum[val.origin], val.stratum)
