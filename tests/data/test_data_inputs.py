"""Bad or suspicious data at load time, second pass (issue 25), through `spreadcon.data.load`.

Every error is one line naming the file, key or value; every warning says what to do. Files are
written small in tmp_path: 16-bit PNGs by PIL, npz arrays of every shape, folders and CIFAR/MNIST
copies with one thing wrong.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from spreadcon.data import StrataDataset, add_label_noise, load
from spreadcon.data.validate import check_dataset

RNG = np.random.default_rng(0)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text.split(". Expected layout:")[0], text  # the layout hint may follow on its own lines
    return text


def write_npz(path, labels, **arrays):
    labels = np.asarray(labels)
    arrays.setdefault("x", RNG.standard_normal((len(labels), 4)).astype(np.float32))
    np.savez(path, labels=labels, **arrays)
    return path


def png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


# --- case 1: 16-bit images ------------------------------------------------------------------------
def test_16bit_pngs_are_scaled_to_8_bits_with_one_warning_naming_a_file(tmp_path):
    values = np.array([[0, 257, 1000, 25700], [32896, 50000, 65280, 65535]] * 2, dtype=np.uint16)  # 4 x 4
    for c in ("a", "b"):
        for i in range(10):
            png(tmp_path / c / f"{i}.png", values)
    with Image.open(tmp_path / "a" / "0.png") as im:
        assert im.mode == "I;16"  # a real 16-bit file
    with pytest.warns(UserWarning, match=r"20 of 20 images are 16-bit \(first: .*0\.png\); they were scaled to "
                                         r"8 bits \(value / 257"):
        ds = load("folder", root=tmp_path)
    expected = np.round(values / 257).astype(np.uint8)  # 1000 -> 4, 65280 -> 254: not clipped to 255
    assert ds.x.dtype == torch.uint8 and ds.x.shape == (20, 3, 4, 4)
    assert all(np.array_equal(ds.x[i, ch].numpy(), expected) for i in range(20) for ch in range(3))
    assert int(ds.x.max()) == 255 and int(ds.x.min()) == 0 and len(np.unique(ds.x.numpy())) == 8


def test_8bit_images_load_without_a_word_and_float_images_are_refused(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            png(tmp_path / "ok" / c / f"{i}.png", np.full((4, 4), 9 * i, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert int(load("folder", root=tmp_path / "ok").x.max()) == 81
    png(tmp_path / "ok" / "a" / "f.tif", np.full((4, 4), 0.5, np.float32), mode="F")
    with pytest.raises(ValueError, match=r"f\.tif is a floating-point image") as err:
        load("folder", root=tmp_path / "ok")
    one_line(err)
    with pytest.raises(ValueError, match=r"dataset option mode must be one of \['RGB', 'L'\].*'XYZ'"):
        load("folder", root=tmp_path / "ok", mode="XYZ")


def test_uint16_npz_images_follow_the_same_rule(tmp_path):
    images = np.full((40, 4, 4), 65535, np.uint16)
    images[:, 0, 0] = 1000
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(40) % 2)
    with pytest.warns(UserWarning, match=r"d\.npz: images are 16-bit"):
        ds = load("npz", root=tmp_path / "d.npz")
    assert ds.x.dtype == torch.uint8 and int(ds.x[0, 0, 0, 0]) == 4 and int(ds.x.max()) == 255


# --- case 2: npz shapes and dtypes, every key named ------------------------------------------------
def test_npz_labels_as_a_column_are_squeezed(tmp_path):
    labels = np.arange(60) % 3
    column = load("npz", root=write_npz(tmp_path / "col.npz", labels[:, None], coarse=(labels // 2)[:, None]))
    flat = load("npz", root=write_npz(tmp_path / "flat.npz", labels, coarse=labels // 2))
    assert torch.equal(column.label, flat.label) and torch.equal(column.stratum, flat.stratum)


@pytest.mark.parametrize("arrays, phrase", [
    ({"labels": np.zeros((40, 2), np.int64)}, r"labels has shape \(40, 2\); pass one id per row, shape \(N,\)"),
    ({"strata": np.zeros((40, 3))}, r"strata has shape \(40, 3\); pass one id per row"),
    ({"split": np.zeros(39, np.int64)}, r"split has shape \(39,\) but labels has 40 rows"),
    ({"x": np.zeros((40, 2, 2), np.float32)}, r"x must be \[N, D\] vectors, got shape \(40, 2, 2\)"),
    ({"x": np.array([["a", "b"]] * 40)}, r"x must hold real numbers, got dtype <U1"),
    ({"x": np.full((40, 2), 1e300)}, r"x \(as float32\) holds 80 NaN or infinite"),
    ({"class_names": np.array([1, 2])}, r"class_names must be a 1-d array of strings, got dtype int64"),
    ({"images": np.full((40, 4, 4), 2.0, np.float32)}, r"images are floats in 2..2; float images must lie in \[0, 1\]"),
    ({"images": np.full((40, 4, 4), 300, np.int64)}, r"images of dtype int64 hold 300..300; store uint8"),
    ({"images": np.zeros((40, 4, 4), bool)}, r"images must be uint8 0..255 or float 0..1, got dtype bool"),
    ({"images": np.zeros((40, 4), np.uint8)}, r"images must be \[N, H, W\]"),
    ({"labels": np.zeros(0, np.int64), "x": np.zeros((0, 2))}, r"labels has 0 rows; the file holds no data"),
    ({"split": np.array([0] * 30 + [1] * 10)}, r"dataset 'npz' from .*d\.npz came out with an empty test split"),
])
def test_npz_arrays_are_checked_naming_the_file_and_key(tmp_path, arrays, phrase):
    arrays = {"labels": np.arange(40) % 2, **arrays}
    if "images" in arrays:
        arrays.pop("x", None)
    else:
        arrays.setdefault("x", RNG.standard_normal((len(arrays["labels"]), 4)).astype(np.float32))
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=phrase) as err:
        load("npz", root=tmp_path / "d.npz")
    assert "d.npz" in one_line(err)


def test_npz_split_files_must_hold_the_same_arrays_and_unknown_arrays_are_named(tmp_path):
    write_npz(tmp_path / "train.npz", np.arange(40) % 2, coarse=np.zeros(40, np.int64))
    write_npz(tmp_path / "test.npz", np.arange(10) % 2)
    with pytest.raises(ValueError, match=r"test\.npz holds arrays \['labels', 'x'\] but .*train\.npz holds "
                                         r"\['coarse', 'labels', 'x'\]"):
        load("npz", root=tmp_path)
    with pytest.warns(UserWarning, match=r"arrays \['groups'\] are not read"):
        load("npz", root=write_npz(tmp_path / "g.npz", np.arange(40) % 2, groups=np.zeros(40)))


# --- case 3: strata nested in classes ------------------------------------------------------------
def test_npz_strata_under_two_classes_are_refused(tmp_path):
    fine = np.arange(60) % 6
    coarse = fine // 3
    coarse[fine == 2] = np.arange((fine == 2).sum()) % 2  # fine label 2 under both coarse labels
    with pytest.raises(ValueError, match=r"1 of 6 strata are not nested in one class \(stratum '2' under classes "
                                         r"\['0', '1'\]\); every stratum must belong to exactly one class: give "
                                         r"each \(class, stratum\) pair its own stratum id") as err:
        load("npz", root=write_npz(tmp_path / "c.npz", fine, coarse=coarse))
    assert "c.npz" in one_line(err)
    with pytest.raises(ValueError, match="not nested"):
        load("npz", root=write_npz(tmp_path / "s.npz", fine // 3, strata=np.arange(60) % 4))


def hand_made(label, stratum, **fields) -> StrataDataset:
    n = len(label)
    return StrataDataset(name="toy", x=torch.zeros(n, 2), label=torch.tensor(label), stratum=torch.tensor(stratum),
                         split=torch.zeros(n, dtype=torch.int64), class_names=["a", "b"],
                         stratum_names=[f"s{i}" for i in range(max(stratum) + 1)], **fields)


def test_other_datasets_warn_once_and_noisy_labels_are_judged_by_their_clean_labels():
    ds = hand_made([0, 0, 1, 1] * 5, [0, 1, 1, 2] * 5)
    with pytest.warns(UserWarning, match=r"toy: 1 of 3 strata are not nested in one class \(stratum 's1' under "
                                         r"classes \['a', 'b'\]\)") as record:
        check_dataset(ds, "toy")
    assert len([w for w in record if "not nested" in str(w.message)]) == 1
    noisy = hand_made([0, 0, 1, 1] * 5, [0, 0, 1, 1] * 5)
    noisy = add_label_noise(noisy, 0.3, seed=0)
    assert (noisy.label != noisy.clean_label).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_dataset(noisy, "noisy")  # flipped labels put strata under two classes; the clean ones do not


def test_a_folder_coarse_map_giving_a_class_two_coarse_classes_is_refused(tmp_path):
    for c in ("cat", "dog", "car"):
        for i in range(5):
            png(tmp_path / c / f"{i}.png", np.full((4, 4), i, np.uint8))
    (tmp_path / "map.csv").write_text("class,coarse\ncat,animal\ndog,animal\ncar,vehicle\ncat,vehicle\n")
    with pytest.raises(ValueError, match=r"map\.csv maps class 'cat' to two coarse classes, 'animal' and "
                                         r"'vehicle' \(line 5\)"):
        load("folder", root=tmp_path, coarse_csv="map.csv")
    (tmp_path / "map.csv").write_text("class,coarse\ncat,animal\ndog,\ncar,vehicle\n")
    with pytest.raises(ValueError, match=r"map\.csv line 3: empty class or coarse value"):
        load("folder", root=tmp_path, coarse_csv="map.csv")


# --- case 4: classes without a training point ------------------------------------------------------
def test_classes_without_a_training_image_are_counted_and_named(tmp_path):
    for split, classes in (("train", "ab"), ("test", "abcdefgh")):
        for c in classes:
            for i in range(3):
                png(tmp_path / split / c / f"{i}.png", np.full((4, 4), i, np.uint8))
    with pytest.warns(UserWarning, match=r"6 of 8 classes have no training image \('c', 'd', 'e', 'f', 'g' "
                                         r"\(\+ 1 more\)\); a model trained on this split never sees them"):
        ds = load("folder", root=tmp_path)
    assert ds.num_classes == 8
    split = np.array([0] * 40 + [2] * 20)
    labels = np.array([0, 1] * 20 + [0, 1, 2, 2] * 5)
    with pytest.warns(UserWarning, match=r"1 of 3 classes have no training point \('2'\)"):
        load("npz", root=write_npz(tmp_path / "d.npz", labels, split=split))


# --- every loader: missing files, wrong shapes, non-integer labels ---------------------------------
def idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def mnist_files(root, n_labels_test=10, test_size=28):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    idx(raw / "train-images-idx3-ubyte", np.zeros((20, 28, 28)))
    idx(raw / "train-labels-idx1-ubyte", np.arange(20) % 10)
    idx(raw / "t10k-images-idx3-ubyte", np.zeros((10, test_size, test_size)))
    idx(raw / "t10k-labels-idx1-ubyte", np.arange(n_labels_test) % 10)
    return raw


def cifar_batches(root, data=None, fine=None):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        f = np.arange(20) % 100 if fine is None or name == "test" else fine
        d = np.zeros((20, 3072), np.uint8) if data is None or name == "test" else data
        with open(folder / name, "wb") as out:
            pickle.dump({"data": d, "fine_labels": list(f), "coarse_labels": [0] * 20}, out)
    return folder


@pytest.mark.parametrize("case, phrase", [
    ("npz-missing", r"nowhere\.npz does not exist"),
    ("folder-missing", r"data root .*nowhere is not a folder"),
    ("mnist-missing", r"data root .*nowhere does not exist"),
    ("cifar-missing", r"data root .*nowhere does not exist"),
    ("mnist-labels", r"t10k-labels-idx1-ubyte labels \(9,\); expected \[N, H, W\] and \[N\]"),
    ("mnist-size", r"t10k-images-idx3-ubyte holds 32x32 images but the training images are 28x28"),
    ("cifar-pixels", r"cifar-100-python/train is truncated or corrupt: its data has dtype int64 \(values 0..300\)"),
    ("cifar-labels", r"cifar-100-python/train is truncated or corrupt: labels up to fine 100"),
    ("cifar-float-labels", r"fine_labels must be integer ids, but row 3 holds 0\.5"),
])
def test_loaders_name_the_file_and_value(tmp_path, case, phrase):
    name, root = {"npz-missing": ("npz", tmp_path / "nowhere.npz"), "folder-missing": ("folder", tmp_path / "nowhere"),
                  "mnist-missing": ("mnist", tmp_path / "nowhere"), "cifar-missing": ("cifar100", tmp_path / "nowhere"),
                  }.get(case, ("mnist" if case.startswith("mnist") else "cifar100", tmp_path))
    if case == "mnist-labels":
        mnist_files(tmp_path, n_labels_test=9)
    elif case == "mnist-size":
        mnist_files(tmp_path, test_size=32)
    elif case == "cifar-pixels":
        cifar_batches(tmp_path, data=np.full((20, 3072), 300, np.int64).clip(0, None) * (np.arange(3072) % 2))
    elif case == "cifar-labels":
        cifar_batches(tmp_path, fine=np.arange(20) + 81)
    elif case == "cifar-float-labels":
        cifar_batches(tmp_path, fine=np.array([0, 1, 2, 0.5] + [0] * 16))
    with pytest.raises((ValueError, FileNotFoundError), match=phrase) as err:
        load(name, root=root)
    one_line(err)


def test_gzipped_mnist_with_the_right_shapes_still_loads(tmp_path):
    raw = mnist_files(tmp_path)
    for f in list(raw.iterdir()):
        (raw / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    ds = load("mnist", root=tmp_path, val_fraction=0.1)
    assert ds.x.shape == (30, 1, 28, 28)
