"""`npz`: your own arrays in numpy's .npz format.

Arrays: `images` (uint8 [N, H, W], [N, H, W, C] or [N, C, H, W]) or `x` (float [N, D] vectors),
`labels` [N] int; optional `coarse` [N] (then the training label is coarse and `labels` the
hidden stratum), `strata` [N] (the hidden stratum), `split` [N] (0 train, 1 val, 2 test),
`class_names` and `stratum_names` (string arrays).
ROOT is the .npz file, or a folder with train.npz and test.npz (optional val.npz) or one .npz.
Without a split: a seeded, stratified test/val split; without val: 10% of train.

Every array is checked for shape and dtype, each error naming the file and the key: ids are
integer-valued, >= 0, shape (N,) (an (N, 1) column is squeezed); images uint8 (uint16 scaled to
8 bits with a warning, floats in [0, 1]); names 1-d strings; all with N >= 1 rows; split files
hold the same arrays. Explicit strata (`coarse` or `strata`) must be nested in the classes: a
stratum under two classes is refused (data/validate.py, `check_strata_nested`).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from spreadcon.data.base import SPLITS, StrataDataset
from spreadcon.data.paths import corrupt
from spreadcon.data.splits import check_fraction, hold_out, train_val_test
from spreadcon.data.validate import check_finite, check_strata_nested, compact_ids, integer_ids, record_map

LAYOUT = """  ROOT = data.npz with arrays images (or x) and labels, optional coarse, strata, split; or
  ROOT/train.npz, ROOT/test.npz (optional ROOT/val.npz) with the same arrays"""


ID_KEYS = ("labels", "coarse", "strata", "split")
NAME_KEYS = ("class_names", "stratum_names")
KEYS = ("images", "x", *ID_KEYS, *NAME_KEYS)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one .npz file that npz reads (checked next by `check_part`); unknown keys,
    and x beside images, are dropped with a warning naming them."""
    try:
        with np.load(path, allow_pickle=False) as d:
            arrays = {k: d[k] for k in d.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise corrupt(path, f"numpy cannot read it ({err})") from None
    if ("images" not in arrays and "x" not in arrays) or "labels" not in arrays:
        raise ValueError(f"{path} needs arrays images (or x) and labels; it has {sorted(arrays)}")
    unknown = sorted(set(arrays) - set(KEYS))
    unknown += ["x (images are read)"] if "images" in arrays and "x" in arrays else []
    if unknown:
        warnings.warn(f"{path}: arrays {unknown} are not read (npz reads {list(KEYS)}); rename them if they "
                      f"were meant as one of these", stacklevel=2)
    return {k: v for k, v in arrays.items() if k in KEYS and not (k == "x" and "images" in arrays)}


def as_ids_1d(a: np.ndarray, key: str, path: Path) -> np.ndarray:
    """[N] from [N] or [N, 1] (a column, as many tools save labels: squeezed); other shapes refused."""
    if a.ndim == 2 and a.shape[1] == 1:
        return a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{path}: {key} has shape {a.shape}; pass one id per row, shape (N,)")
    return a


def check_names(a: np.ndarray, key: str, path: Path) -> None:
    if a.ndim != 1 or a.dtype.kind not in "US":
        raise ValueError(f"{path}: {key} must be a 1-d array of strings, got dtype {a.dtype} shape {a.shape}")


def check_vectors(x: np.ndarray, path: Path) -> np.ndarray:
    """x as float32 [N, D]: real, finite numbers that float32 holds."""
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"{path}: x must be [N, D] vectors, got shape {x.shape} (images go in the array images)")
    if x.dtype == bool or x.dtype.kind not in "iuf":
        raise ValueError(f"{path}: x must hold real numbers, got dtype {x.dtype}")
    check_finite(x, "x", str(path))
    with np.errstate(over="ignore"):  # overflow is reported next, naming the file
        out = x.astype(np.float32, copy=False)
    check_finite(out, "x (as float32)", str(path))  # |x| > 3.4e38 overflows float32
    return out


def check_images(images: np.ndarray, path: Path) -> np.ndarray:
    """images as uint8 (or float in [0, 1]) [N, C, H, W]. uint16 is scaled to 8 bits (value / 257)
    with a warning, as 16-bit image files are (data/images.py); other integers must lie in 0..255."""
    images = channels_first(images, path)
    kind = images.dtype.kind
    if images.dtype == bool or kind not in "iuf":
        raise ValueError(f"{path}: images must be uint8 0..255 or float 0..1, got dtype {images.dtype}")
    if kind == "f":
        check_finite(images, "images", str(path))
        low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
        if low < 0 or high > 1:
            raise ValueError(f"{path}: images are floats in {low:g}..{high:g}; float images must lie in [0, 1] "
                             f"(or store uint8 0..255)")
        return images.astype(np.float32, copy=False)
    if images.dtype == np.uint16:
        warnings.warn(f"{path}: images are 16-bit (uint16); they were scaled to 8 bits (value / 257, nothing "
                      f"clipped). Store uint8 to silence this warning", stacklevel=2)
        return np.round(images / 257.0).astype(np.uint8)
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"{path}: images of dtype {images.dtype} hold {images.min()}..{images.max()}; store "
                         f"uint8 0..255 (or uint16, scaled by 1/257, or floats in [0, 1])")
    return images.astype(np.uint8, copy=False)


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
    """In place: every array checked for shape and dtype, naming `path` and the key: ids as int64
    [N] (integer-valued, >= 0; an [N, 1] column is squeezed), images uint8 [N, C, H, W] (or float
    in [0, 1]), x float32 [N, D], all with the N rows of labels, N >= 1."""
    for key in NAME_KEYS:
        if key in d:
            check_names(d[key], key, path)
    for key in ID_KEYS:
        if key in d:
            d[key] = as_ids_1d(d[key], key, path)
    n = len(d["labels"])
    if n == 0:
        raise ValueError(f"{path}: labels has 0 rows; the file holds no data")
    if split is not None:
        d["split"] = np.full(n, SPLITS[split])
    for key, value in d.items():
        if key not in NAME_KEYS and (value.ndim == 0 or len(value) != n):
            raise ValueError(f"{path}: {key} has shape {value.shape} but labels has {n} rows; give every array "
                             f"one row per point")
    for key in ID_KEYS:
        if key in d:
            d[key] = integer_ids(d[key], key, str(path))
    if "split" in d and d["split"].max() > 2:
        raise ValueError(f"{path}: split holds {d['split'].max()}; use 0 train, 1 val, 2 test")
    if "images" in d:
        d["images"] = check_images(d["images"], path)
    else:
        d["x"] = check_vectors(d["x"], path)


def check_parts(parts: dict[str | None, dict[str, np.ndarray]], found: dict[str | None, Path]) -> None:
    """The split files of one dataset hold the same arrays, of the same shape past the first axis."""
    first = next(iter(parts))
    for s, d in parts.items():
        keys, want = sorted(set(d) - {"split"}), sorted(set(parts[first]) - {"split"})
        if keys != want:
            raise ValueError(f"{found[s]} holds arrays {keys} but {found[first]} holds {want}; give every split "
                             f"file the same arrays")
        for key in ("images", "x"):
            if key in d and d[key].shape[1:] != parts[first][key].shape[1:]:
                raise ValueError(f"{found[s]}: {key} has shape {d[key].shape} but {found[first]} has "
                                 f"{parts[first][key].shape}; every split needs the same {key} shape past N")


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
    for s, d in parts.items():
        check_part(d, found[s], s)
    first = parts[next(iter(parts))]
    names = {k: [str(v) for v in first[k]] for k in NAME_KEYS if k in first}
    for d in parts.values():
        for k in NAME_KEYS:
            d.pop(k, None)
    check_parts(parts, found)
    joined = {k: np.concatenate([d[k] for d in parts.values()]) for k in first}
    path = next(iter(found.values()))
    source = str(path if len(found) == 1 else root)
    x = joined["images"] if "images" in joined else joined["x"]
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
    if "coarse" in ids or "strata" in ids:  # explicit strata: one under two classes is a mistake in the arrays
        check_strata_nested(ds, f"{source} (classes from {label_key}, strata from {stratum_key})", refuse=True)
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
