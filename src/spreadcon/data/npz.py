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
from spreadcon.data.validate import check_finite, compact_ids, integer_ids, record_map

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


def check_part(d: dict[str, np.ndarray], path: Path, split: str | None) -> None:
    """In place: ids as int64 (integer-valued, >= 0), finite inputs, aligned rows; errors name `path`."""
    n = len(d["labels"]) if d["labels"].ndim == 1 else -1
    if split is not None:
        d["split"] = np.full(max(n, 0), SPLITS[split])
    for key, value in d.items():
        if value.ndim == 0 or len(value) != n:
            raise ValueError(f"{path}: {key} has shape {value.shape}, labels has {n} rows (give [N] labels)")
    for key in ("labels", "coarse", "strata", "split"):
        if key in d:
            d[key] = integer_ids(d[key], key, str(path))
    if "split" in d and d["split"].max(initial=0) > 2:
        raise ValueError(f"{path}: split holds {d['split'].max()}; use 0 train, 1 val, 2 test")
    check_finite(d["images"] if "images" in d else d["x"], "images" if "images" in d else "x", str(path))


def npz(root: Path, seed: int = 0, *, test_fraction: float = 0.2, val_fraction: float = 0.1) -> StrataDataset:
    check_fraction("val_fraction", val_fraction, allow_zero=True)
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
        check_part(d, found[s], s)
    joined = {k: np.concatenate([d[k] for d in parts.values()]) for k in first}
    path = next(iter(found.values()))
    source = str(path if len(found) == 1 else root)
    x = channels_first(joined["images"], path) if "images" in joined else joined["x"].astype(np.float32)
    ids, maps = {}, {}
    for key in ("labels", "coarse", "strata"):
        if key in joined:
            ids[key], maps[key] = compact_ids(joined[key], key, source)
    labels = torch.from_numpy(ids["labels"])
    stratum = torch.from_numpy(ids["strata"]) if "strata" in ids else labels.clone()
    label = torch.from_numpy(ids["coarse"]) if "coarse" in ids else labels
    label_key, stratum_key = ("coarse" if "coarse" in ids else "labels"), ("strata" if "strata" in ids else "labels")
    if "split" in joined:
        split = torch.from_numpy(joined["split"])
        if not (split == SPLITS["val"]).any():
            split = hold_out(split, stratum, val_fraction, seed)
    else:
        check_fraction("test_fraction", test_fraction)
        split = train_val_test(stratum, test_fraction, val_fraction, seed)
    ds = StrataDataset(name="npz", x=torch.from_numpy(np.ascontiguousarray(x)), label=label, stratum=stratum,
                       split=split, class_names=id_names(names.get("class_names"), maps[label_key], label, source),
                       stratum_names=id_names(names.get("stratum_names"), maps[stratum_key], stratum, source))
    for key, field in ((label_key, "label"), (stratum_key, "stratum")):
        record_map(ds, field, maps[key])
    return ds


def id_names(given: list[str] | None, used: list[int] | None, ids: torch.Tensor, source: str) -> list[str]:
    """Names for ids 0..K-1: the given names (indexed by original id where ids were renumbered),
    else the original ids as strings. K = max(id) + 1 is bounded by the data (ids are compact)."""
    k = int(ids.max()) + 1 if len(ids) else 0
    original = used if used is not None else list(range(k))
    if given is None:
        return [str(c) for c in original]
    if len(given) == k:
        return list(given)
    if len(given) > original[-1]:
        return [given[c] for c in original]
    raise ValueError(f"{source}: {len(given)} names for ids up to {original[-1]}; give one name per id")
