"""Every file format, through tiny fixture files written in the exact standard layout."""

from __future__ import annotations

import csv
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spreadcon.data import load
from spreadcon.data.cifar import CIFAR100_FINE_TO_COARSE

RNG = np.random.default_rng(0)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- MNIST IDX ------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def write_mnist(root: Path, n_train: int = 50, n_test: int = 20, compress: bool = False) -> dict:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_matches_torchvision_reader(tmp_path, compress):
    arrays = write_mnist(tmp_path, compress=compress)
    ds = load("mnist", root=tmp_path)
    assert ds.x.shape == (70, 1, 28, 28) and ds.x.dtype == torch.uint8
    train = (ds.split == 0) | (ds.split == 1)  # val is held out of train
    assert torch.equal(ds.x[train][:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(ds.x[ds.split == 2][:, 0], torch.from_numpy(arrays["t10k"][0]))
    assert int((ds.split == 1).sum()) == 5 and torch.equal(ds.label, ds.stratum)
    if not compress:  # torchvision reads the same raw files: an independent oracle
        import torchvision

        tv = torchvision.datasets.MNIST(tmp_path, train=True, download=False)
        assert torch.equal(tv.data, ds.x[train][:, 0]) and torch.equal(tv.targets, ds.label[train])
    coarse = load("mnist-coarse", root=tmp_path)
    assert torch.equal(coarse.label, (coarse.stratum >= 5).long()) and coarse.num_classes == 2


def test_mnist_truncated_and_wrong_files_are_named(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte is truncated or corrupt.*header promises"):
        load("mnist", root=tmp_path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*IDX header"):
        load("mnist", root=tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing file .*t10k-images-idx3-ubyte"):
        load("mnist", root=tmp_path)


# --- CIFAR pickles --------------------------------------------------------------------------
def dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 20) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows, labels = [], []
    for b in range(1, 6):
        data = RNG.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in RNG.permutation(np.arange(per_batch) % 10)]
        dump(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": y, "data": data,
                                          "filenames": [f"{b}_{i}.png" for i in range(per_batch)]})
        rows.append(data)
        labels += y
    test = RNG.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": [i % 10 for i in range(n_test)],
                                 "data": test, "filenames": []})
    dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return np.concatenate(rows), np.array(labels)


def test_cifar10_pickles_planes_and_coarse_map(tmp_path):
    rows, labels = write_cifar10(tmp_path)
    ds = load("cifar10", root=tmp_path)
    assert ds.x.shape == (120, 3, 32, 32) and ds.class_names == CIFAR10_NAMES
    train = ds.split != 2
    # the row is the R plane, then G, then B, each 32 x 32 row-major
    first = ds.x[train][0]
    assert torch.equal(first[0], torch.from_numpy(rows[0, :1024].reshape(32, 32)))
    assert torch.equal(first[2, 5, 7], torch.tensor(rows[0, 2048 + 5 * 32 + 7]))
    assert torch.equal(ds.label[train], torch.from_numpy(labels))
    assert torch.bincount(ds.label[ds.split == 1]).tolist() == [1] * 10  # 10% of train, stratified
    coarse = load("cifar10-coarse", root=tmp_path)
    animal = torch.tensor([n in ("bird", "cat", "deer", "dog", "frog", "horse") for n in CIFAR10_NAMES]).long()
    assert torch.equal(coarse.label, animal[coarse.stratum]) and coarse.class_names == ["vehicle", "animal"]


def test_cifar_corrupt_pickle_is_named(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="data_batch_3 is truncated or corrupt"):
        load("cifar10", root=tmp_path)
    dump(path, {"labels": [0], "data": np.zeros((1, 100), np.uint8)})
    with pytest.raises(ValueError, match=r"data_batch_3.*\[N, 3072\]"):
        load("cifar10", root=tmp_path)


def write_cifar100(root: Path, per_fine: dict[int, int], n_test: int = 20) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, counts in (("train", per_fine), ("test", {f: 1 for f in range(n_test)})):
        fine = np.repeat(list(counts), list(counts.values()))
        fine = fine[RNG.permutation(len(fine))]
        dump(folder / split, {"filenames": [], "batch_label": split, "fine_labels": fine.tolist(),
                              "coarse_labels": [CIFAR100_FINE_TO_COARSE[f] for f in fine],
                              "data": RNG.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)})
    dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                           "coarse_label_names": [f"super{i}" for i in range(20)]})


def test_cifar100_fine_coarse_and_unequal_counts(tmp_path):
    members = [f for f in range(100) if CIFAR100_FINE_TO_COARSE[f] == 0]  # aquatic mammals: 4, 30, 55, 72, 95
    write_cifar100(tmp_path, {f: 510 for f in members} | {f: 3 for f in range(100) if f not in members})
    fine = load("cifar100", root=tmp_path)
    assert fine.num_classes == 100 and torch.equal(fine.label, fine.stratum)
    coarse = load("cifar100-coarse", root=tmp_path)
    assert coarse.num_classes == 20 and coarse.num_strata == 100
    assert torch.equal(coarse.label, torch.tensor(CIFAR100_FINE_TO_COARSE)[coarse.stratum])
    u = load("cifar100-coarse-u", root=tmp_path, seed=5)
    kept = torch.bincount(u.stratum[u.split == 0], minlength=100)
    assert kept[members].tolist() == [500, 250, 100, 50, 50]  # exactly, in the split trained on
    assert int(kept[[f for f in range(100) if CIFAR100_FINE_TO_COARSE[f] == 1][:2]].sum()) == 6  # capped at 3 each
    # validation comes from the removed images: 10% of each class's 510, capped at what was removed
    # (the largest class keeps 500 of 510; with CIFAR's 500 per class it gives none)
    val = torch.bincount(u.stratum[u.split == 1], minlength=100)
    assert val[members].tolist() == [10, 51, 51, 51, 51] and int(val.sum()) == 10 + 4 * 51
    assert len(set(u.meta["source_index"])) == len(u)
    no_val = load("cifar100-coarse-u", root=tmp_path, seed=5, val_fraction=0)
    assert not (no_val.split == 1).any()
    assert torch.bincount(no_val.stratum[no_val.split == 0], minlength=100)[members].tolist() == [500, 250, 100, 50, 50]
    assert int((u.split == 2).sum()) == 20  # test untouched
    assert torch.equal(u.x, coarse.x[torch.tensor(u.meta["source_index"])])
    again = load("cifar100-coarse-u", root=tmp_path, seed=5)
    assert again.meta["source_index"] == u.meta["source_index"]


def test_cifar100_u_with_the_real_500_per_class_trains_on_exact_counts(tmp_path):
    members = [f for f in range(100) if CIFAR100_FINE_TO_COARSE[f] == 0]
    write_cifar100(tmp_path, {f: 500 for f in members} | {f: 2 for f in range(100) if f not in members})
    u = load("cifar100-coarse-u", root=tmp_path, seed=1)
    assert torch.bincount(u.stratum[u.split == 0], minlength=100)[members].tolist() == [500, 250, 100, 50, 50]
    assert torch.bincount(u.stratum[u.split == 1], minlength=100)[members].tolist() == [0, 50, 50, 50, 50]


def test_cifar100_inconsistent_coarse_labels_refused(tmp_path):
    write_cifar100(tmp_path, {f: 2 for f in range(100)})
    path = tmp_path / "cifar-100-python" / "train"
    d = pickle.loads(path.read_bytes())
    d["coarse_labels"] = [(c + 1) % 20 for c in d["coarse_labels"]]
    dump(path, d)
    with pytest.raises(ValueError, match="disagree with the standard CIFAR-100 superclasses"):
        load("cifar100-coarse", root=tmp_path)


# --- image folders ----------------------------------------------------------------------------
def write_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_waterbirds_metadata_and_groups(tmp_path):
    folder = tmp_path / "waterbird_complete95_forest2water2"
    rows = []
    for i in range(24):
        y, place, split = i % 2, (i // 2) % 2, [0, 0, 1, 2][i % 4] if i >= 8 else 0
        name = f"{i:03d}.Bird/bird_{i}.jpg"
        write_image(folder / name, (40 + i, 30), (10 * i, 100 * y, 200 * place))
        rows.append({"img_id": i, "img_filename": name, "y": y, "split": split, "place": place,
                     "place_filename": "/x/y.jpg"})
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ds = load("waterbirds", root=tmp_path, image_size=16)
    assert ds.x.shape == (24, 3, 16, 16) and ds.x.dtype == torch.uint8
    assert ds.label.tolist() == [r["y"] for r in rows] and ds.split.tolist() == [r["split"] for r in rows]
    assert torch.equal(ds.group, 2 * ds.label + torch.tensor([r["place"] for r in rows]))
    assert torch.equal(ds.stratum, ds.group) and ds.stratum_names[1] == "landbird / water"
    assert abs(int(ds.x[5, 0, 8, 8]) - 50) <= 2 and abs(int(ds.x[5, 2, 8, 8]) - 0) <= 2  # colours survive
    (folder / rows[3]["img_filename"]).write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="bird_3.jpg is truncated or corrupt"):
        load("waterbirds", root=folder, image_size=16)


def test_isic_csv_labels_patch_strata_and_split(tmp_path):
    rows = []
    for i in range(40):
        malignant = i % 4 == 0
        patch = (not malignant) and i % 2 == 1
        write_image(tmp_path / "images" / f"ISIC_{i:07d}.jpg", (30, 24), (200 if patch else 90, 60, 60))
        rows.append({"image": f"ISIC_{i:07d}", "benign_malignant": "malignant" if malignant else "benign",
                     "patch": int(patch)})
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ds = load("isic", root=tmp_path, image_size=20)
    assert ds.x.shape == (40, 3, 20, 20)
    assert ds.label.tolist() == [int(r["benign_malignant"] == "malignant") for r in rows]
    assert ds.stratum_names == ["benign / patch=0", "benign / patch=1", "malignant / patch=0"]
    assert torch.bincount(ds.stratum).tolist() == [10, 20, 10]
    assert [int((ds.split == i).sum()) for i in range(3)] == [29, 3, 8]
    with pytest.raises(ValueError, match="no column 'lesion' for the stratum"):
        load("isic", root=tmp_path, image_size=20, stratum_column="lesion")
    (tmp_path / "images" / "ISIC_0000007.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 images named in .*metadata.csv.*ISIC_0000007"):
        load("isic", root=tmp_path, image_size=20)


def test_isic_shared_folder_reads(shared_data):
    ds = load("isic", root=shared_data / "isic_uda1_557", image_size=32)
    assert ds.x.shape == (557, 3, 32, 32) and ds.num_classes == 2 and int(ds.label.sum()) > 0


def test_folder_pools_presplit_coarse_and_sizes(tmp_path):
    for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 255, 0)), ("car", (0, 0, 255))):
        for i in range(10):
            write_image(tmp_path / "pool" / c / f"{i}.png", (12, 12), colour)
            write_image(tmp_path / "split" / ("train" if i < 8 else "test") / c / f"{i}.png", (12, 12), colour)
    ds = load("folder", root=tmp_path / "pool")
    assert ds.x.shape == (30, 3, 12, 12) and ds.class_names == ["car", "cat", "dog"]
    assert ds.x[ds.label == 0][:, 2].float().mean() == 255  # car is blue
    assert [int((ds.split == i).sum()) for i in range(3)] == [22, 2, 6]
    pre = load("folder", root=tmp_path / "split")
    assert [int((pre.split == i).sum()) for i in range(3)] == [22, 2, 6] and pre.meta["files"][0].startswith("t")
    (tmp_path / "map.csv").write_text("class,coarse\ncat,animal\ndog,animal\ncar,vehicle\n")
    coarse = load("folder", root=tmp_path / "pool", coarse_csv=str(tmp_path / "map.csv"))
    assert coarse.class_names == ["animal", "vehicle"] and coarse.stratum_names == ["car", "cat", "dog"]
    assert torch.equal(coarse.label, torch.tensor([1, 0, 0])[coarse.stratum])
    write_image(tmp_path / "pool" / "cat" / "big.png", (20, 16), (255, 0, 0))
    with pytest.raises(ValueError, match="pass image_size=S"):
        load("folder", root=tmp_path / "pool")
    assert load("folder", root=tmp_path / "pool", image_size=8).x.shape == (31, 3, 8, 8)


def test_npz_single_file_split_files_and_layouts(tmp_path):
    images = RNG.integers(0, 256, size=(60, 10, 10, 3), dtype=np.uint8)  # NHWC
    fine = np.arange(60) % 6
    np.savez(tmp_path / "data.npz", images=images, labels=fine, coarse=fine // 3)
    ds = load("npz", root=tmp_path / "data.npz")
    assert ds.x.shape == (60, 3, 10, 10) and torch.equal(ds.x[7], torch.from_numpy(images[7]).permute(2, 0, 1))
    assert torch.equal(ds.label, torch.from_numpy(fine // 3)) and torch.equal(ds.stratum, torch.from_numpy(fine))
    assert ds.meta["views"] == "simclr"
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    np.savez(split_dir / "train.npz", x=RNG.normal(size=(40, 5)), labels=np.arange(40) % 2,
             class_names=np.array(["no", "yes"]))
    np.savez(split_dir / "test.npz", x=RNG.normal(size=(10, 5)), labels=np.arange(10) % 2,
             class_names=np.array(["no", "yes"]))
    vec = load("npz", root=split_dir)
    assert vec.x.shape == (50, 5) and vec.x.dtype == torch.float32 and vec.class_names == ["no", "yes"]
    assert [int((vec.split == i).sum()) for i in range(3)] == [36, 4, 10] and vec.meta["views"] == "vector"
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.npz is truncated or corrupt"):
        load("npz", root=tmp_path / "bad.npz")
    np.savez(tmp_path / "nolabels.npz", images=images)
    with pytest.raises(ValueError, match="needs arrays images .* and labels"):
        load("npz", root=tmp_path / "nolabels.npz")
