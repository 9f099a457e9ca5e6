"""`folder`: your own images, one sub-folder per class.

    ROOT/<class>/<image>                 one pool: a seeded, stratified test/val split is made
    ROOT/train/<class>/..., ROOT/test/<class>/... (+ optional ROOT/val/<class>/...)

Classes are the sub-folder names in sorted order. With coarse_csv=FILE (columns class, coarse),
the training label is the coarse class and the folder's class becomes the hidden stratum.
Images of different sizes need image_size=S (shorter side resized, centre crop S x S). 16-bit
grey images are scaled to 8 bits with one warning (data/images.py). The coarse_csv must give each
class exactly one coarse class (the folder class is the stratum, and a stratum belongs to one
class): a class mapped twice is refused. Classes with no training image are warned about at load
(data/validate.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from spreadcon.data.base import SPLITS, StrataDataset
from spreadcon.data.coarse import assemble
from spreadcon.data.images import IMAGE_SUFFIXES, check_mode, read_images
from spreadcon.data.splits import check_fraction, hold_out, train_val_test
from spreadcon.data.tables import read_csv

LAYOUT = """  ROOT/<class name>/<image>.png|jpg            (one folder per class), or
  ROOT/train/<class name>/..., ROOT/test/<class name>/..., optional ROOT/val/<class name>/...
  optional coarse_csv=FILE with columns class,coarse to train on coarse labels"""


def class_images(folder: Path) -> dict[str, list[Path]]:
    """{class name: sorted image paths} for the sub-folders of `folder` that hold images."""
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[sub.name] = files
    return out


def folder(root: Path, seed: int = 0, *, image_size: int | None = None, mode: str = "RGB",
           coarse_csv: str | None = None, test_fraction: float = 0.2, val_fraction: float = 0.1) -> StrataDataset:
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder. Expected layout:\n{LAYOUT}")
    check_mode(mode)
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    pools = {s: class_images(root / s) for s in SPLITS if (root / s).is_dir()} if presplit else {"train": class_images(root)}
    names = sorted({c for pool in pools.values() for c in pool})
    if not names:
        raise FileNotFoundError(f"no class sub-folders with images under {root}. Expected layout:\n{LAYOUT}")
    index = {c: i for i, c in enumerate(names)}  # a dict: names.index per class is O(K^2) for K classes
    paths, fine, split = [], [], []
    for s, pool in pools.items():
        for c, files in pool.items():
            paths += files
            fine += [index[c]] * len(files)
            split += [SPLITS[s]] * len(files)
    fine_t, split_t = torch.tensor(fine), torch.tensor(split)
    if not presplit:
        check_fraction("test_fraction", test_fraction)
        split_t = train_val_test(fine_t, test_fraction, val_fraction, seed)
    elif "val" not in pools:
        split_t = hold_out(split_t, fine_t, val_fraction, seed)
    to_coarse, coarse_names = coarse_map(root, coarse_csv, names) if coarse_csv else (None, None)
    x = read_images(paths, image_size, mode)
    return assemble("folder", x, fine_t, split_t, names, fine_to_coarse=to_coarse, coarse_names=coarse_names,
                    meta={"image_size": image_size, "files": [str(p.relative_to(root)) for p in paths]})


def coarse_map(root: Path, coarse_csv: str, names: list[str]) -> tuple[list[int], list[str]]:
    """fine class -> coarse index, coarse names (sorted) from a CSV with columns class, coarse."""
    path = Path(coarse_csv) if Path(coarse_csv).is_absolute() else root / coarse_csv
    if not path.exists():
        raise FileNotFoundError(f"missing coarse_csv {path}: a CSV with columns class,coarse")
    mapping: dict[str, str] = {}
    for row, r in enumerate(read_csv(path, required=("class", "coarse")), start=2):  # row 1 is the header
        fine, coarse = (r["class"] or "").strip(), (r["coarse"] or "").strip()
        if not fine or not coarse:
            raise ValueError(f"{path} line {row}: empty class or coarse value ({r['class']!r}, {r['coarse']!r})")
        if mapping.get(fine, coarse) != coarse:  # a class under two coarse classes: its strata would not nest
            raise ValueError(f"{path} maps class {fine!r} to two coarse classes, {mapping[fine]!r} and {coarse!r} "
                             f"(line {row}); every class belongs to exactly one coarse class")
        mapping[fine] = coarse
    unmapped = [c for c in names if c not in mapping]
    if unmapped:
        raise ValueError(f"{path} gives no coarse class for {unmapped}")
    coarse_names = sorted(set(mapping[c] for c in names))
    return [coarse_names.index(mapping[c]) for c in names], coarse_names
