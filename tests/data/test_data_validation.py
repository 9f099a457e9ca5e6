"""Bad input at load time (issue 15): labels, strata, groups, option values, non-finite data.

Every case goes through `data.load` on small .npz files written in tmp_path, except the group
field (only built-in loaders make groups), which is checked on a hand-made dataset.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

from spreadcon import data
from spreadcon.data import StrataDataset, labelled_fraction, load, subsample
from spreadcon.data.validate import check_dataset

RNG = np.random.default_rng(0)


def write(path, labels, **arrays):
    labels = np.asarray(labels)
    arrays.setdefault("x", RNG.standard_normal((len(labels), 4)).astype(np.float32))
    np.savez(path, labels=labels, **arrays)
    return path


def three_classes(n=60, dtype=np.int64):
    return (np.arange(n) % 3).astype(dtype)


def test_float_labels_with_integer_values_load(tmp_path):
    ds = load("npz", root=write(tmp_path / "d.npz", three_classes(dtype=np.float32)))
    assert ds.label.dtype == torch.int64 and ds.num_classes == 3
    assert torch.bincount(ds.label).tolist() == [20, 20, 20]


def test_fractional_labels_are_refused_naming_the_file(tmp_path):
    labels = three_classes(dtype=np.float64)
    labels[7] = 0.5
    path = write(tmp_path / "half.npz", labels)
    with pytest.raises(ValueError, match=r"half\.npz: labels must be integer ids, but row 7 holds 0\.5"):
        load("npz", root=path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_labels_are_refused(tmp_path, bad):
    labels = three_classes(dtype=np.float64)
    labels[3] = bad
    with pytest.raises(ValueError, match="labels must be integer ids"):
        load("npz", root=write(tmp_path / "d.npz", labels))


def test_negative_labels_and_strata_are_refused(tmp_path):
    labels = three_classes()
    labels[4] = -1
    with pytest.raises(ValueError, match=r"d\.npz: labels must be >= 0, but row 4 holds -1"):
        load("npz", root=write(tmp_path / "d.npz", labels))
    strata = np.arange(60) % 6
    strata[0] = -3
    with pytest.raises(ValueError, match="strata must be >= 0"):
        load("npz", root=write(tmp_path / "s.npz", three_classes(), strata=strata))


def test_one_training_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least two classes"):
        load("npz", root=write(tmp_path / "d.npz", np.zeros(40, np.int64)))
    # two classes in the file, but the train split holds only one of them
    split = np.array([0] * 20 + [1] * 10 + [2] * 10)
    labels = np.array([0] * 20 + [1] * 20)
    with pytest.raises(ValueError, match="train split holds 20 points of 1 class"):
        load("npz", root=write(tmp_path / "t.npz", labels, split=split))


def test_sparse_label_ids_are_renumbered_with_a_record(tmp_path):
    labels = np.array([0, 5, 10] * 20)
    with pytest.warns(UserWarning, match="renumbered 0..2"):
        ds = load("npz", root=write(tmp_path / "d.npz", labels))
    assert ds.num_classes == 3 and ds.class_names == ["0", "5", "10"]
    assert torch.equal(ds.label, torch.tensor([0, 1, 2] * 20))
    assert ds.meta["id_maps"]["label"] == [0, 5, 10]
    assert {"transform": "renumber_ids", "field": "label", "original_ids": [0, 5, 10]} in ds.transforms
    # given names are indexed by the original ids
    names = np.array([f"c{i}" for i in range(11)])
    with pytest.warns(UserWarning):
        named = load("npz", root=write(tmp_path / "n.npz", labels, class_names=names))
    assert named.class_names == ["c0", "c5", "c10"]


def test_huge_ids_allocate_nothing_large(tmp_path):
    labels = np.array([0, 2**40] * 30, dtype=np.int64)
    strata = np.array([3, 2**40 + 7, 9, 2**41] * 15, dtype=np.int64)
    path = write(tmp_path / "d.npz", labels, strata=strata)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load("npz", root=path)
    assert time.perf_counter() - start < 20  # a bincount over 2^40 ids would never finish
    assert ds.num_classes == 2 and ds.num_strata == 4
    assert ds.meta["id_maps"]["stratum"] == [3, 9, 2**40 + 7, 2**41]
    assert torch.bincount(ds.stratum).tolist() == [15] * 4


def test_huge_float_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="too large"):
        load("npz", root=write(tmp_path / "d.npz", np.array([0.0, 1e30] * 20)))


def test_string_or_bool_labels_are_refused(tmp_path):
    with pytest.raises(ValueError, match="integer ids"):
        load("npz", root=write(tmp_path / "s.npz", np.array(["a", "b"] * 20)))
    with pytest.raises(ValueError, match="integer ids"):
        load("npz", root=write(tmp_path / "b.npz", np.array([True, False] * 20)))


@pytest.mark.parametrize("key,bad", [("x", np.nan), ("x", np.inf), ("images", np.nan)])
def test_non_finite_inputs_are_refused_naming_the_file(tmp_path, key, bad):
    folder = tmp_path / "parts"
    folder.mkdir()
    shape = (40, 4) if key == "x" else (40, 6, 6)
    for name in ("train", "test"):
        values = RNG.random(shape).astype(np.float32)
        if name == "test":
            values[11].flat[2] = bad
        np.savez(folder / f"{name}.npz", labels=np.arange(40) % 2, **{key: values})
    with pytest.raises(ValueError, match=rf"test\.npz: {key} holds 1 NaN or infinite values \(first in row 11\)"):
        load("npz", root=folder)


def test_groups_with_sparse_or_negative_ids():
    n = 40
    ds = StrataDataset(name="toy", x=torch.zeros(n, 2), label=torch.arange(n) % 2, stratum=torch.arange(n) % 2,
                       split=torch.zeros(n, dtype=torch.int64), class_names=["a", "b"], stratum_names=["a", "b"],
                       group=torch.tensor([0, 2**40] * (n // 2)))
    with pytest.warns(UserWarning, match="group"):
        check_dataset(ds, "toy")
    assert ds.group.tolist() == [0, 1] * (n // 2) and ds.meta["id_maps"]["group"] == [0, 2**40]
    ds.group = torch.tensor([-1] + [0] * (n - 1))
    with pytest.raises(ValueError, match="group must be >= 0"):
        check_dataset(ds, "toy")


# --- option values ----------------------------------------------------------------------------
@pytest.mark.parametrize("options,phrase", [
    ({"test_fraction": True}, "test_fraction must be a number"),
    ({"test_fraction": float("nan")}, "finite"),
    ({"test_fraction": float("inf")}, "finite"),
    ({"test_fraction": 2}, r"test_fraction must lie in \(0, 1\)"),
    ({"val_fraction": -0.1}, r"val_fraction must lie in \[0, 1\)"),
    ({"test_fraction": "0.2"}, "must be a number"),
    ({"coarse": 1}, "coarse must be true or false"),
])
def test_bad_option_values_are_refused_before_any_work(options, phrase):
    with pytest.raises(ValueError, match=phrase):
        load("digits", **options)


def test_bad_option_types_for_ints_and_bools():
    with pytest.raises(ValueError, match="n must be an integer"):
        load("strata", n=True)
    with pytest.raises(ValueError, match="n must be an integer"):
        load("strata", n=100.5)
    with pytest.raises(ValueError, match="must be true or false"):
        load("spurious-mnist", texture=1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        load("digits", seed=True)


def test_numpy_scalars_and_zero_d_tensors_are_numbers():
    a = load("strata", n=np.int64(300), stratum_sep=np.float32(2.0), seed=np.int64(1))
    b = load("strata", n=torch.tensor(300), stratum_sep=torch.tensor(2.0), seed=torch.tensor(1))
    c = load("strata", n=300, stratum_sep=2.0, seed=1)
    assert torch.equal(a.x, c.x) and torch.equal(b.x, c.x)
    assert a.meta["options"] == {"n": 300, "stratum_sep": 2.0} and type(a.meta["options"]["n"]) is int


def test_val_fraction_zero_trains_on_the_whole_training_pool():
    ds = load("digits", val_fraction=0)
    assert not (ds.split == 1).any() and ds.meta["val_split"].startswith("empty")
    assert int((ds.split == 0).sum()) == int((load("digits").split != 2).sum())
    assert len(ds.get_split("val")) == 0
    assert data.default_views(ds).kind == "digits"  # statistics come from train: nothing empty divides


@pytest.mark.parametrize("fraction", [2, 0, -0.5, True, float("nan"), "0.5"])
def test_transform_fractions_are_checked(fraction):
    ds = load("digits")
    with pytest.raises(ValueError, match="labelled fraction"):
        labelled_fraction(ds, fraction, seed=0)
    with pytest.raises(ValueError, match="subsample fraction"):
        subsample(ds, fraction, seed=0)


def test_transforms_accept_numpy_fractions_and_refuse_bool_seeds():
    ds = load("digits")
    assert torch.equal(labelled_fraction(ds, np.float32(0.5), seed=np.int64(0)).labelled,
                       labelled_fraction(ds, 0.5, seed=0).labelled)
    with pytest.raises(ValueError, match="seed must be an integer"):
        labelled_fraction(ds, 0.5, seed=True)
    with pytest.raises(ValueError, match="noise rate"):
        data.add_label_noise(ds, True, seed=0)


@pytest.mark.parametrize("bad,phrase", [(-1, "must be >= 0"), (0.5, "must be integer ids"), (12, "label 12 but batches.meta names 10 classes")])
def test_cifar_labels_are_checked_naming_the_batch(tmp_path, bad, phrase):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = [j % 10 for j in range(20)]
        if i == 2:
            labels[3] = bad
        with open(folder / name, "wb") as f:
            pickle.dump({"labels": labels, "data": np.zeros((20, 3072), np.uint8)}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    with pytest.raises(ValueError, match=phrase) as err:
        load("cifar10", root=tmp_path)
    assert "data_batch_3" in str(err.value)
