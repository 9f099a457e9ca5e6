"""`npz`: your own arrays in numpy's .npz format.

Arrays: `images` (uint8 [N, H, W], [N, H, W, C] or [N, C, H, W]) or `x` (float [N, D] vectors),
`labels` [N] int; optional `coarse` [N] (then the training label is coarse and `labels` the
hidden stratum), `strata` [N] (the hidden stratum), `split` [N] (0 train, 1 val, 2 test),
`class_names` and `stratum_names` (string arrays).
ROOT is the .npz file, or a folder with train.npz and test.npz (optional val.npz) or one .npz.
Without a split: a seeded, stratified test/val split; without val: 10% of train.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from spreadcon.data.base import SPLITS, StrataDataset
from spreadcon.data.paths import corrupt
from spreadcon.data.splits import check_fraction, hold_out, train_val_test

LAYOUT = """  ROOT = data.npz with arrays images (or x) and labels, optional coarse, strata, split; or
  ROOT/train.npz, ROOT/test.npz (optional ROOT/val.npz) with the same arrays"""


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as d:
            arrays = {k: d[k] for k in d.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise corrupt(path, f"numpy cannot read it ({err})") from None
    if ("images" not in arrays and "x" not in arrays) or "labels" not in arrays:
        raise ValueError(f"{path} needs arrays images (or x) and labels; it has {sorted(arrays)}")
    return arrays


def channels_first(images: np.ndarray, path: Path) -> np.ndarray:
    """[N, H, W] -> [N, 1, H, W]; [N, H, W, C] (C in 1, 3, 4) -> [N, C, H, W]; [N, C, H, W] kept."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        return images.transpose(0, 3, 1, 2)
    if images.ndim == 4:
        return images
    raise ValueError(f"{path}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W], got {images.shape}")


def npz(root: Path, seed: int = 0, *, test_fraction: float = 0.2, val_fraction: float = 0.1) -> StrataDataset:
    check_fraction("val_fraction", val_fraction)
    if root.is_dir():
        found = {s: root / f"{s}.npz" for s in SPLITS if (root / f"{s}.npz").exists()}
        if "train" not in found:
            single = sorted(root.glob("*.npz"))
            if len(single) != 1:
                raise FileNotFoundError(f"no train.npz and {len(single)} .npz files under {root}. "
                                        f"Expected layout:\n{LAYOUT}")
            found = {None: single[0]}
    elif root.exists():
        found = {None: root}
    else:
        raise FileNotFoundError(f"{root} does not exist. Expected layout:\n{LAYOUT}")
    parts = {s: read_npz(p) for s, p in found.items()}
    first = parts[next(iter(parts))]
    names = {k: [str(v) for v in first[k]] for k in ("class_names", "stratum_names") if k in first}
    for d in parts.values():
        for k in ("class_names", "stratum_names"):
            d.pop(k, None)
    for s, d in parts.items():
        n = len(d["labels"])
        if s is not None:
            d["split"] = np.full(n, SPLITS[s])
        for key, value in d.items():
            if len(value) != n:
                raise ValueError(f"{found[s]}: {key} has {len(value)} rows, labels has {n}")
    joined = {k: np.concatenate([d[k] for d in parts.values()]) for k in first}
    path = next(iter(found.values()))
    x = channels_first(joined["images"], path) if "images" in joined else joined["x"].astype(np.float32)
    labels = torch.from_numpy(joined["labels"].astype(np.int64))
    stratum = torch.from_numpy(joined["strata"].astype(np.int64)) if "strata" in joined else labels.clone()
    label = torch.from_numpy(joined["coarse"].astype(np.int64)) if "coarse" in joined else labels
    if "split" in joined:
        split = torch.from_numpy(joined["split"].astype(np.int64))
        if not (split == SPLITS["val"]).any():
            split = hold_out(split, stratum, val_fraction, seed)
    else:
        check_fraction("test_fraction", test_fraction)
        split = train_val_test(stratum, test_fraction, val_fraction, seed)
    return StrataDataset(name="npz", x=torch.from_numpy(np.ascontiguousarray(x)), label=label, stratum=stratum,
                         split=split,
                         class_names=names.get("class_names", [str(c) for c in range(int(label.max()) + 1)]),
                         stratum_names=names.get("stratum_names", [str(c) for c in range(int(stratum.max()) + 1)]))
