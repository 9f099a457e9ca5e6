"""CIFAR-10 and CIFAR-100 from the python pickle batches (cifar-10-batches-py/, cifar-100-python/).

We read the pickles ourselves: torchvision's classes check the original download's md5 and refuse
re-encoded copies. A batch is a dict with `data` [N, 3072] uint8 (the R plane, then G, then B,
each 32 x 32 row-major) and `labels` (CIFAR-10) or `fine_labels` and `coarse_labels`
(CIFAR-100). Pickles can run code: load only files you trust. No validation split exists:
10% of train is held out, seeded and stratified by the fine class.

    cifar10, cifar10-coarse (animals vs vehicles), cifar100, cifar100-coarse (20 superclasses),
    cifar100-coarse-u (per superclass 500/250/100/50/50 training points by original fine index,
    exactly: its validation images are drawn from the training images the rule removed)
    x [N, 3, 32, 32] uint8
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from spreadcon.data.base import SPLITS, StrataDataset
from spreadcon.data.coarse import (CIFAR100_U_COUNTS, CIFAR10_COARSE_NAMES, assemble, cifar10_coarse_map,
                                    unequal_keep, val_from_removed)
from spreadcon.data.paths import corrupt, find_dir, require
from spreadcon.data.splits import check_fraction, hold_out
from spreadcon.data.validate import integer_ids

LAYOUT_10 = """  ROOT/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
(the python version of CIFAR-10, as torchvision.datasets.CIFAR10(ROOT, download=True) leaves it)"""
LAYOUT_100 = """  ROOT/cifar-100-python/train, test, meta
(the python version of CIFAR-100, as torchvision.datasets.CIFAR100(ROOT, download=True) leaves it)"""
# The official CIFAR-100 fine class -> superclass map (fine classes in alphabetical order).
CIFAR100_FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13]


def read_pickle(path: Path, layout: str) -> dict:
    """A CIFAR pickle as a dict with str keys (python-2 pickles are read with latin1)."""
    try:
        with open(require(path, layout), "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise corrupt(path, f"not a readable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(d, dict):
        raise corrupt(path, f"expected a dict, found {type(d).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def batch_arrays(path: Path, keys: tuple[str, ...], layout: str) -> tuple[np.ndarray, ...]:
    """(images [N, 3, 32, 32] uint8, *labels [N] int64) of one batch file."""
    d = read_pickle(path, layout)
    missing = [k for k in ("data", *keys) if k not in d]
    if missing:
        raise corrupt(path, f"the batch has no {missing} (keys: {sorted(d)})")
    data = pixels(d["data"], path)
    try:
        labels = [integer_ids(d[k], k, str(path)) for k in keys]
    except ValueError as err:
        raise corrupt(path, str(err)) from None
    if data.ndim != 2 or data.shape[1] != 3072 or any(y.shape != (len(data),) for y in labels):
        raise corrupt(path, f"data {data.shape} should be [N, 3072] with {keys} of length N")
    return (data.reshape(-1, 3, 32, 32), *labels)


def pixels(values: object, path: Path) -> np.ndarray:
    """`data` as uint8 without wrapping: integers in 0..255 only (a cast would turn 300 into 44)."""
    try:
        raw = np.asarray(values)
    except ValueError as err:  # ragged rows
        raise corrupt(path, f"its data is not an array ({err})") from None
    if raw.dtype == np.uint8:
        return raw
    if raw.dtype.kind not in "iu" or (raw.size and (raw.min() < 0 or raw.max() > 255)):
        low_high = f"{raw.min()}..{raw.max()}" if raw.size and raw.dtype.kind in "iuf" else "?"
        raise corrupt(path, f"its data has dtype {raw.dtype} (values {low_high}); expected uint8 pixels 0..255")
    return raw.astype(np.uint8)


def fetch(root: Path, which: str) -> None:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if which == "10" else torchvision.datasets.CIFAR100
    cls(root, train=True, download=True)


def read_cifar10(root: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray], list[str]]:
    """The five training batches and the test batch of `cifar-10-batches-py` under root, each
    (images [N, 3, 32, 32] uint8, labels [N]), and the 10 class names; corrupt files are named."""
    folder = find_dir(root, "data_batch_1", ("cifar-10-batches-py", ""), LAYOUT_10)
    parts = [batch_arrays(folder / f"data_batch_{i}", ("labels",), LAYOUT_10) for i in range(1, 6)]
    test = batch_arrays(folder / "test_batch", ("labels",), LAYOUT_10)
    names = read_pickle(folder / "batches.meta", LAYOUT_10).get("label_names")
    if names is None or len(names) != 10:
        raise corrupt(folder / "batches.meta", "it has no list of 10 label_names")
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for file, (_, labels) in zip(files, [*parts, test]):
        if labels.max(initial=0) >= len(names):
            raise corrupt(folder / file, f"label {labels.max()} but batches.meta names {len(names)} classes")
    return parts, test, list(names)


def cifar10(root: Path, seed: int = 0, *, coarse: bool = False, val_fraction: float = 0.1,
            download: bool = False) -> StrataDataset:
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    if download:
        fetch(root, "10")
    parts, test, names = read_cifar10(root)
    x = np.concatenate([p[0] for p in parts] + [test[0]])
    fine = torch.from_numpy(np.concatenate([p[1] for p in parts] + [test[1]]))
    split = torch.cat([torch.zeros(len(x) - len(test[0]), dtype=torch.int64), torch.full((len(test[0]),), 2)])
    split = hold_out(split, fine, val_fraction, seed)
    return assemble("cifar10-coarse" if coarse else "cifar10", torch.from_numpy(x), fine, split, list(names),
                    fine_to_coarse=cifar10_coarse_map(list(names)) if coarse else None,
                    coarse_names=CIFAR10_COARSE_NAMES if coarse else None)


def cifar100(root: Path, seed: int = 0, *, coarse: bool = False, unequal: bool = False,
             val_fraction: float = 0.1, download: bool = False) -> StrataDataset:
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    if download:
        fetch(root, "100")
    folder = find_dir(root, "train", ("cifar-100-python", ""), LAYOUT_100)
    keys = ("fine_labels", "coarse_labels")
    train, test = (batch_arrays(folder / s, keys, LAYOUT_100) for s in ("train", "test"))
    for file, (_, fine_ids, coarse_ids) in (("train", train), ("test", test)):
        if fine_ids.max(initial=0) >= 100 or coarse_ids.max(initial=0) >= 20:
            raise corrupt(folder / file, f"labels up to fine {fine_ids.max(initial=0)}, coarse "
                                         f"{coarse_ids.max(initial=0)}; CIFAR-100 has fine ids 0..99, coarse 0..19")
    meta = read_pickle(folder / "meta", LAYOUT_100)
    fine_names, coarse_names = meta.get("fine_label_names"), meta.get("coarse_label_names")
    if fine_names is None or coarse_names is None or (len(fine_names), len(coarse_names)) != (100, 20):
        raise corrupt(folder / "meta", "it needs fine_label_names (100) and coarse_label_names (20)")
    x = np.concatenate([train[0], test[0]])
    fine_np, coarse_np = np.concatenate([train[1], test[1]]), np.concatenate([train[2], test[2]])
    if (np.asarray(CIFAR100_FINE_TO_COARSE)[fine_np] != coarse_np).any():
        raise corrupt(folder / "train", "its coarse_labels disagree with the standard CIFAR-100 superclasses")
    fine = torch.from_numpy(fine_np)
    split = torch.cat([torch.zeros(len(train[0]), dtype=torch.int64), torch.full((len(test[0]),), 2)])
    info = {}
    if unequal:  # SPEC: per superclass 500/250/100/50/50 trained on, seeded, indices kept
        keep = unequal_keep(fine, split, CIFAR100_FINE_TO_COARSE, seed + 2, counts=CIFAR100_U_COUNTS)
        val = val_from_removed(fine, split, keep, val_fraction, seed)
        split = torch.where(val, torch.tensor(SPLITS["val"]), split)
        keep = keep | val
        info["source_index"] = torch.nonzero(keep).squeeze(1).tolist()  # rows of train ++ test
        info["val_rule"] = "drawn from the training images the -U rule removed"
        x, fine, split = x[keep.numpy()], fine[keep], split[keep]
    else:
        split = hold_out(split, fine, val_fraction, seed)
    name = "cifar100" + ("-coarse" if coarse else "") + ("-u" if unequal else "")
    return assemble(name, torch.from_numpy(x), fine, split, list(fine_names), meta=info,
                    fine_to_coarse=CIFAR100_FINE_TO_COARSE if coarse else None,
                    coarse_names=list(coarse_names) if coarse else None)
