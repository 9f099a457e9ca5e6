"""`isic`: ISIC skin-lesion images with a CSV of labels (benign vs malignant).

The CSV (option csv, default metadata.csv or the only *.csv in ROOT) names each image by id
(column image / image_id / image_name / isic_id / id) and its label (label_malignant /
benign_malignant / target / label: "benign"/"malignant" or 0/1). Images are ROOT/<id>.<ext>
or anywhere below ROOT. An optional stratum column (option stratum_column, default "patch" if
present; the paper's stratum is "benign with a coloured patch") splits each class by its values:
stratum = (label, value). An optional `split` column (train/val/test or 0/1/2) is used as is;
otherwise a seeded, stratified test_fraction is held out, then val_fraction of the rest.

    x [N, 3, S, S] uint8, label 1 = malignant
"""

from __future__ import annotations

from pathlib import Path

import torch

from spreadcon.data.base import StrataDataset
from spreadcon.data.images import IMAGE_SUFFIXES, read_images
from spreadcon.data.paths import corrupt
from spreadcon.data.splits import check_fraction, train_val_test
from spreadcon.data.tables import parse_split, pick_column, read_csv

LAYOUT = """  ROOT/metadata.csv      one row per image: image id, benign/malignant label, optional stratum and split columns
  ROOT/<id>.jpg          the images (any sub-folder of ROOT; .jpg, .jpeg or .png)"""
CLASS_NAMES = ["benign", "malignant"]
LABELS = {"benign": 0, "0": 0, "false": 0, "malignant": 1, "1": 1, "true": 1}


def find_csv(root: Path, csv: str | None) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder. Expected layout:\n{LAYOUT}")
    if csv is not None:
        path = root / csv
        if not path.exists():
            raise FileNotFoundError(f"missing file {path}. Expected layout:\n{LAYOUT}")
        return path
    if (root / "metadata.csv").exists():
        return root / "metadata.csv"
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise FileNotFoundError(f"{root} holds {len(found)} CSV files ({[p.name for p in found]}): "
                                f"pass csv=NAME. Expected layout:\n{LAYOUT}")
    return found[0]


def isic(root: Path, seed: int = 0, *, csv: str | None = None, id_column: str | None = None,
         label_column: str | None = None, stratum_column: str | None = None, image_size: int = 224,
         test_fraction: float = 0.2, val_fraction: float = 0.1) -> StrataDataset:
    table = find_csv(root, csv)
    rows = read_csv(table)
    columns = list(rows[0])
    id_col = pick_column(columns, id_column, ("image", "image_id", "image_name", "isic_id", "id"), "id", table)
    label_col = pick_column(columns, label_column, ("label_malignant", "benign_malignant", "target", "label"),
                            "label", table)
    if stratum_column is None and "patch" in columns:
        stratum_column = "patch"
    try:
        label = torch.tensor([LABELS[r[label_col].strip().lower()] for r in rows])
    except KeyError as err:
        raise corrupt(table, f"label {err.args[0]!r} in column {label_col} is not benign/malignant or 0/1") from None

    images = {p.stem: p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [r[id_col] for r in rows if r[id_col] not in images]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images named in {table} are not under {root} "
                                f"(first: {missing[:3]}). Expected layout:\n{LAYOUT}")

    if stratum_column is None:
        stratum, stratum_names = label.clone(), list(CLASS_NAMES)
    else:
        pick_column(columns, stratum_column, (), "stratum", table)
        keys = [(int(y), r[stratum_column]) for y, r in zip(label, rows)]
        order = sorted(set(keys))
        index = {k: i for i, k in enumerate(order)}
        stratum = torch.tensor([index[k] for k in keys])
        stratum_names = [f"{CLASS_NAMES[y]} / {stratum_column}={v}" for y, v in order]

    if "split" in columns:
        split = torch.tensor([parse_split(r["split"], table) for r in rows])
    else:
        check_fraction("test_fraction", test_fraction)
        check_fraction("val_fraction", val_fraction, allow_zero=True)
        split = train_val_test(stratum, test_fraction, val_fraction, seed)
    x = read_images([images[r[id_col]] for r in rows], image_size)
    return StrataDataset(name="isic", x=x, label=label, stratum=stratum, split=split, class_names=CLASS_NAMES,
                         stratum_names=stratum_names, meta={"image_size": image_size, "csv": table.name})
